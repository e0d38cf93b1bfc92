//! Spec vectors (haproxy `proxy-protocol.txt` and a haproxy capture), every truncation, every
//! malformed form, round trips, and a seeded random loop for "never panics".

use super::*;
use crate::test_util::data;

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

const FFFF6: &str = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";

/// A v2 header as haproxy 2.x sends it (captured): TCP over IPv4,
/// 172.19.0.1:42578 → 172.19.0.3:80, then the payload "GET ".
const HAPROXY_V2: &[u8] = &[
    0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a, 0x21, 0x11, 0x00, 0x0c,
    0xac, 0x13, 0x00, 0x01, 0xac, 0x13, 0x00, 0x03, 0xa6, 0x52, 0x00, 0x50, b'G', b'E', b'T', b' ',
];

fn v2(ver_cmd: u8, fam: u8, block: &[u8]) -> Vec<u8> {
    let mut h = V2_SIGNATURE.to_vec();
    h.push(ver_cmd);
    h.push(fam);
    h.extend_from_slice(&(block.len() as u16).to_be_bytes());
    h.extend_from_slice(block);
    h
}

/// Every valid header used below, with what it must parse to.
/// A header and the addresses it must parse to.
type Vector = (Vec<u8>, Option<(SocketAddr, SocketAddr)>);

fn vectors() -> Vec<Vector> {
    let mut v6_block = [0xffu8; 36].to_vec();
    v6_block[32..].copy_from_slice(&[0x01, 0xbb, 0x00, 0x50]);
    let mut v4_tlv = vec![10, 0, 0, 1, 10, 0, 0, 2, 0x1f, 0x90, 0x00, 0x16];
    v4_tlv.extend_from_slice(&[0x01, 0x00, 0x02, b'h', b'2']); // PP2_TYPE_ALPN "h2"
    vec![
        (
            b"PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n".to_vec(),
            Some((sa("255.255.255.255:65535"), sa("255.255.255.255:65535"))),
        ),
        (
            format!("PROXY TCP6 {FFFF6} {FFFF6} 65535 65535\r\n").into_bytes(),
            Some((
                sa(&format!("[{FFFF6}]:65535")),
                sa(&format!("[{FFFF6}]:65535")),
            )),
        ),
        (b"PROXY UNKNOWN\r\n".to_vec(), None),
        (
            // The spec's worst case: exactly 107 bytes.
            format!("PROXY UNKNOWN {FFFF6} {FFFF6} 65535 65535\r\n").into_bytes(),
            None,
        ),
        (
            b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n".to_vec(),
            Some((sa("192.168.0.1:56324"), sa("192.168.0.11:443"))),
        ),
        (
            b"PROXY TCP6 2001:db8::1 ::ffff:192.0.2.1 0 8080\r\n".to_vec(),
            Some((sa("[2001:db8::1]:0"), sa("[::ffff:192.0.2.1]:8080"))),
        ),
        (
            HAPROXY_V2[..28].to_vec(),
            Some((sa("172.19.0.1:42578"), sa("172.19.0.3:80"))),
        ),
        (v2(0x20, 0x00, &[]), None),        // LOCAL, health check
        (v2(0x20, 0x11, &[1, 2, 3]), None), // LOCAL ignores the block
        (v2(0x21, 0x00, &[]), None),        // PROXY over UNSPEC
        (v2(0x21, 0x31, &[0; 216]), None),  // UNIX: no IP to carry
        (
            v2(0x21, 0x21, &v6_block),
            Some((sa(&format!("[{FFFF6}]:443")), sa(&format!("[{FFFF6}]:80")))),
        ),
        (
            v2(0x21, 0x11, &v4_tlv),
            Some((sa("10.0.0.1:8080"), sa("10.0.0.2:22"))),
        ),
    ]
}

#[test]
fn spec_vectors_parse() {
    for (h, want) in vectors() {
        let (got, len) = parse(&h).unwrap_or_else(|e| panic!("{e:?} for {h:?}"));
        assert_eq!(len, h.len(), "{h:?}");
        assert_eq!(got.addresses, want, "{h:?}");
        assert_eq!(check(&h), Ok(h.len()));
    }
    assert_eq!(vectors()[3].0.len(), V1_MAX_LEN);
}

#[test]
fn the_payload_after_a_header_is_not_part_of_it() {
    assert_eq!(check(HAPROXY_V2), Ok(28));
    let mut v1 = b"PROXY UNKNOWN\r\nPROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n".to_vec();
    assert_eq!(check(&v1), Ok(15));
    v1.truncate(15);
    assert_eq!(parse(&v1).unwrap().0.addresses, None);
}

#[test]
fn every_truncation_is_incomplete() {
    for (h, _) in vectors() {
        for k in 0..h.len() {
            assert_eq!(
                check(&h[..k]),
                Err(HeaderError::Incomplete),
                "{h:?} cut at {k}"
            );
            assert_eq!(
                parse(&h[..k]),
                Err(HeaderError::Incomplete),
                "{h:?} cut at {k}"
            );
        }
    }
}

#[test]
fn malformed_headers_are_invalid() {
    let long_v2 = {
        let mut h = v2(0x21, 0x11, &[0; 12]);
        h[14..16].copy_from_slice(&((V2_MAX_LEN - 16 + 1) as u16).to_be_bytes());
        h
    };
    let mut too_long_v1 = b"PROXY UNKNOWN ".to_vec();
    too_long_v1.resize(V1_MAX_LEN, b'x');
    let mut cr_at_the_limit = b"PROXY UNKNOWN ".to_vec();
    cr_at_the_limit.resize(V1_MAX_LEN - 1, b'x');
    cr_at_the_limit.push(b'\r');
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("http", b"GET / HTTP/1.1\r\n".to_vec()),
        ("ssh", b"SSH-2.0-OpenSSH_9.6\r\n".to_vec()),
        ("lower case", b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n".to_vec()),
        ("v2 version 1", v2(0x11, 0x11, &[0; 12])),
        ("v2 version 3", v2(0x31, 0x11, &[0; 12])),
        ("v2 command 2", v2(0x22, 0x11, &[0; 12])),
        ("v2 family 4", v2(0x21, 0x41, &[0; 12])),
        ("v2 protocol 3", v2(0x21, 0x13, &[0; 12])),
        ("v2 inet, proto unspec", v2(0x21, 0x10, &[0; 12])),
        ("v2 v4 block short", v2(0x21, 0x11, &[0; 11])),
        ("v2 v6 block short", v2(0x21, 0x21, &[0; 35])),
        ("v2 unix block short", v2(0x21, 0x31, &[0; 215])),
        ("v2 over the bound", long_v2),
        ("v1 LF only", b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n".to_vec()),
        (
            "v1 CR then x",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rx".to_vec(),
        ),
        ("v1 NUL", b"PROXY TCP4 1.2.3.4\0".to_vec()),
        ("v1 non-ASCII", "PROXY TCP4 1.2.3.4 é".as_bytes().to_vec()),
        ("v1 over 107", too_long_v1),
        ("v1 CRLF past 107", cr_at_the_limit),
        ("v1 TCP5", b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n".to_vec()),
        ("v1 empty proto", b"PROXY \r\n".to_vec()),
        ("v1 v6 in TCP4", b"PROXY TCP4 ::1 ::1 1 2\r\n".to_vec()),
        (
            "v1 v4 in TCP6",
            b"PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n".to_vec(),
        ),
        (
            "v1 port 65536",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n".to_vec(),
        ),
        (
            "v1 port 08",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 08 1\r\n".to_vec(),
        ),
        (
            "v1 port +1",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 1\r\n".to_vec(),
        ),
        (
            "v1 octet 01",
            b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n".to_vec(),
        ),
        (
            "v1 missing port",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n".to_vec(),
        ),
        (
            "v1 extra field",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n".to_vec(),
        ),
        (
            "v1 double space",
            b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n".to_vec(),
        ),
        (
            "v1 trailing space",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n".to_vec(),
        ),
    ];
    for (what, h) in cases {
        assert!(
            matches!(parse(&h), Err(HeaderError::Invalid(_))),
            "{what}: {:?}",
            parse(&h)
        );
    }
}

#[test]
fn encode_then_parse_round_trips() {
    let pairs = [
        ("203.0.113.7:51000", "198.51.100.1:443"),
        ("[2001:db8::7]:51000", "[2001:db8::1]:443"),
        ("[::ffff:203.0.113.7]:1", "198.51.100.1:2"),
        ("0.0.0.0:0", "255.255.255.255:65535"),
    ];
    for (s, d) in pairs {
        let (s, d) = (sa(s), sa(d));
        let want = Some((
            SocketAddr::new(canonical(s.ip()), s.port()),
            SocketAddr::new(canonical(d.ip()), d.port()),
        ));
        for version in [ProxyVersion::V1, ProxyVersion::V2] {
            let h = encode(version, s, d);
            let (got, len) = parse(&h).unwrap();
            assert_eq!((got.version, got.addresses, len), (version, want, h.len()));
        }
    }
    assert_eq!(
        encode(ProxyVersion::V1, sa("203.0.113.7:1"), sa("198.51.100.1:2")),
        b"PROXY TCP4 203.0.113.7 198.51.100.1 1 2\r\n"
    );
    assert_eq!(
        encode(
            ProxyVersion::V2,
            sa("172.19.0.1:42578"),
            sa("172.19.0.3:80")
        ),
        HAPROXY_V2[..28]
    );
}

#[test]
fn mixed_families_are_unknown_in_v1_and_mapped_in_v2() {
    let (s, d) = (sa("203.0.113.7:1"), sa("[2001:db8::1]:2"));
    assert_eq!(encode(ProxyVersion::V1, s, d), b"PROXY UNKNOWN\r\n");
    let (got, _) = parse(&encode(ProxyVersion::V2, s, d)).unwrap();
    assert_eq!(got.addresses, Some((sa("[::ffff:203.0.113.7]:1"), d)));
}

#[test]
fn arbitrary_bytes_never_panic() {
    let valid: Vec<Vec<u8>> = vectors().into_iter().map(|(h, _)| h).collect();
    for seed in 0..20_000u64 {
        let noise = data(64 + (seed as usize % 300), seed);
        let mut buf = match seed % 4 {
            0 => noise[..seed as usize % noise.len()].to_vec(),
            1 => [&V2_SIGNATURE[..], &noise].concat(),
            2 => [&b"PROXY "[..], &noise].concat(),
            _ => valid[seed as usize % valid.len()].clone(),
        };
        // Flip one to three bytes.
        for k in 0..=(seed % 3) as usize {
            if !buf.is_empty() {
                let i = usize::from(noise[k]) * 7 % buf.len();
                buf[i] ^= noise[k + 10] | 1;
            }
        }
        let checked = check(&buf);
        match parse(&buf) {
            Ok((_, len)) => {
                assert!(len <= buf.len() && len <= V2_MAX_LEN);
                assert_eq!(checked, Ok(len));
            }
            Err(HeaderError::Incomplete) => assert_eq!(checked, Err(HeaderError::Incomplete)),
            Err(HeaderError::Invalid(_)) => {}
        }
    }
}
