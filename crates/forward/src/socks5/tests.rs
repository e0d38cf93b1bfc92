//! Every message in every chunking, every malformed form, replies, and a random loop.

use super::*;
use crate::test_util::data;

const GREETING: &[u8] = &[5, 1, 0];
const GREETING_AUTH: &[u8] = &[5, 2, 0, 2];
const CONNECT_V4: &[u8] = &[5, 1, 0, 1, 93, 184, 216, 34, 0x01, 0xbb];
const CONNECT_V6: &[u8] = &[
    5, 1, 0, 4, 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 80,
];
const CONNECT_NAME: &[u8] = &[
    5, 1, 0, 3, 11, b'e', b'x', b'a', b'm', b'p', b'l', b'e', b'.', b'o', b'r', b'g', 0, 80,
];

fn auth(user: &[u8], pass: &[u8]) -> Vec<u8> {
    let mut m = vec![1, user.len() as u8];
    m.extend_from_slice(user);
    m.push(pass.len() as u8);
    m.extend_from_slice(pass);
    m
}

fn creds() -> Option<Credentials> {
    Some(Credentials::new("alice", "s3cret"))
}

/// Feeds `input` in chunks of `chunk` bytes, advancing as far as possible after each;
/// returns every step, or the first error other than `Incomplete` (or `Incomplete` at the end).
fn drive(
    credentials: Option<Credentials>,
    input: &[u8],
    chunk: usize,
) -> Result<Vec<Step>, SocksError> {
    let mut hs = Handshake::new(credentials);
    let (mut buf, mut steps) = (Vec::new(), Vec::new());
    for piece in input.chunks(chunk.max(1)) {
        buf.extend_from_slice(piece);
        loop {
            match hs.advance(&buf) {
                Ok((step, n)) => {
                    buf.drain(..n);
                    let end = !matches!(step, Step::Send(_));
                    steps.push(step);
                    if end {
                        return Ok(steps);
                    }
                }
                Err(SocksError::Incomplete) => break,
                Err(e) => return Err(e),
            }
        }
    }
    Err(SocksError::Incomplete)
}

#[test]
fn no_auth_connect_in_every_chunking() {
    for (req, dest) in [
        (
            CONNECT_V4,
            Destination::Ip("93.184.216.34:443".parse().unwrap()),
        ),
        (
            CONNECT_V6,
            Destination::Ip("[2001:db8::1]:80".parse().unwrap()),
        ),
        (CONNECT_NAME, Destination::Domain("example.org".into(), 80)),
    ] {
        let input = [GREETING, req].concat();
        for chunk in 1..=input.len() {
            let steps = drive(None, &input, chunk).unwrap();
            assert_eq!(
                steps,
                vec![Step::Send(vec![5, 0]), Step::Connect(dest.clone())]
            );
        }
    }
}

#[test]
fn username_password_in_every_chunking() {
    let input = [GREETING_AUTH, &auth(b"alice", b"s3cret"), CONNECT_V4].concat();
    for chunk in 1..=input.len() {
        let steps = drive(creds(), &input, chunk).unwrap();
        assert_eq!(steps.len(), 3);
        assert_eq!(steps[0], Step::Send(vec![5, 2]));
        assert_eq!(steps[1], Step::Send(vec![1, 0]));
        assert!(matches!(steps[2], Step::Connect(_)));
    }
}

#[test]
fn wrong_credentials_are_refused() {
    for (u, p) in [
        (&b"alice"[..], &b"s3creT"[..]),
        (b"alice", b"s3cret!"),
        (b"bob", b"s3cret"),
        (b"", b""),
    ] {
        let input = [GREETING_AUTH, &auth(u, p), CONNECT_V4].concat();
        let steps = drive(creds(), &input, 64).unwrap();
        assert_eq!(steps.last(), Some(&Step::Refuse(vec![1, 1])), "{u:?} {p:?}");
    }
}

#[test]
fn no_acceptable_method_gets_ff() {
    // Credentials required, client offers only no-auth; and the other way round.
    assert_eq!(
        drive(creds(), GREETING, 8).unwrap(),
        vec![Step::Refuse(vec![5, 0xff])]
    );
    assert_eq!(
        drive(None, &[5, 1, 2], 8).unwrap(),
        vec![Step::Refuse(vec![5, 0xff])]
    );
    assert_eq!(
        drive(None, &[5, 2, 0x80, 0xfe], 8).unwrap(),
        vec![Step::Refuse(vec![5, 0xff])]
    );
}

#[test]
fn bind_udp_associate_and_unknown_types_get_their_codes() {
    for (cmd, rep) in [(2u8, 7u8), (3, 7), (9, 7)] {
        let req = [5, cmd, 0, 1, 1, 2, 3, 4, 0, 80];
        let steps = drive(None, &[GREETING, &req].concat(), 64).unwrap();
        let Step::Refuse(reply) = &steps[1] else {
            panic!("{steps:?}")
        };
        assert_eq!(reply[..2], [5, rep]);
    }
    let steps = drive(
        None,
        &[GREETING, &[5, 1, 0, 2, 1, 2, 3, 4, 0, 80]].concat(),
        64,
    )
    .unwrap();
    assert_eq!(
        steps[1],
        Step::Refuse(encode_reply(Reply::AddressTypeNotSupported, None))
    );
}

#[test]
fn malformed_messages_are_invalid() {
    let cases: Vec<(&str, Option<Credentials>, Vec<u8>)> = vec![
        ("socks4", None, vec![4, 1, 0, 80, 127, 0, 0, 1, 0]),
        ("http", None, b"GET / HTTP/1.1\r\n".to_vec()),
        ("nmethods 0", None, vec![5, 0]),
        (
            "request ver 4",
            None,
            [GREETING, &[4, 1, 0, 1, 1, 2, 3, 4, 0, 80]].concat(),
        ),
        (
            "request rsv 1",
            None,
            [GREETING, &[5, 1, 1, 1, 1, 2, 3, 4, 0, 80]].concat(),
        ),
        ("dlen 0", None, [GREETING, &[5, 1, 0, 3, 0, 0, 80]].concat()),
        (
            "name with NUL",
            None,
            [GREETING, &[5, 1, 0, 3, 2, b'a', 0, 0, 80]].concat(),
        ),
        (
            "name with space",
            None,
            [GREETING, &[5, 1, 0, 3, 2, b'a', b' ', 0, 80]].concat(),
        ),
        (
            "auth ver 5",
            creds(),
            [GREETING_AUTH, &[5, 5, b'a', b'l', b'i', b'c', b'e']].concat(),
        ),
    ];
    for (what, c, input) in cases {
        for chunk in [1, 3, 64] {
            assert!(
                matches!(drive(c.clone(), &input, chunk), Err(SocksError::Invalid(_))),
                "{what}"
            );
        }
    }
}

#[test]
fn every_truncation_is_incomplete() {
    let messages: [(&[u8], Phase); 5] = [
        (GREETING_AUTH, Phase::Greeting),
        (&auth(b"alice", b"s3cret"), Phase::Auth),
        (CONNECT_V4, Phase::Request),
        (CONNECT_V6, Phase::Request),
        (CONNECT_NAME, Phase::Request),
    ];
    for (m, phase) in messages {
        for k in 0..m.len() {
            let mut hs = Handshake {
                phase,
                credentials: creds(),
            };
            assert_eq!(
                hs.advance(&m[..k]),
                Err(SocksError::Incomplete),
                "{m:?} cut at {k}"
            );
        }
        let mut hs = Handshake {
            phase,
            credentials: creds(),
        };
        assert_eq!(hs.advance(m).unwrap().1, m.len());
    }
    assert!(
        CONNECT_NAME.len() <= MAX_MESSAGE && auth(&[b'u'; 255], &[b'p'; 255]).len() == MAX_MESSAGE
    );
}

#[test]
fn the_handshake_is_over_after_connect() {
    let mut hs = Handshake::new(None);
    hs.advance(GREETING).unwrap();
    hs.advance(CONNECT_V4).unwrap();
    assert!(matches!(
        hs.advance(CONNECT_V4),
        Err(SocksError::Invalid(_))
    ));
}

#[test]
fn replies_encode_the_bound_address() {
    let v4 = encode_reply(Reply::Succeeded, Some("192.0.2.1:1080".parse().unwrap()));
    assert_eq!(v4, [5, 0, 0, 1, 192, 0, 2, 1, 0x04, 0x38]);
    let v6 = encode_reply(Reply::Succeeded, Some("[2001:db8::1]:80".parse().unwrap()));
    assert_eq!(v6.len(), 22);
    assert_eq!(v6[..4], [5, 0, 0, 4]);
    assert_eq!(
        encode_reply(Reply::NotAllowed, None),
        [5, 2, 0, 1, 0, 0, 0, 0, 0, 0]
    );
}

#[test]
fn connect_errors_map_to_reply_codes() {
    use io::ErrorKind::*;
    let cases = [
        (ConnectionRefused, Reply::ConnectionRefused),
        (TimedOut, Reply::TtlExpired),
        (HostUnreachable, Reply::HostUnreachable),
        (NetworkUnreachable, Reply::NetworkUnreachable),
        (Other, Reply::GeneralFailure),
    ];
    for (kind, rep) in cases {
        assert_eq!(Reply::for_error(&io::Error::from(kind)), rep);
    }
}

#[test]
fn credentials_never_show_in_debug_output() {
    assert!(!format!("{:?}", creds()).contains("s3cret"));
    assert!(ct_eq(b"abc", b"abc") && !ct_eq(b"abc", b"abd") && !ct_eq(b"abc", b"abcd"));
}

#[test]
fn arbitrary_bytes_never_panic() {
    for seed in 0..20_000u64 {
        let mut input = data(1 + seed as usize % 600, seed);
        match seed % 3 {
            0 => input[0] = 5,
            1 => input.splice(0..0, GREETING.iter().copied()).for_each(drop),
            _ => input
                .splice(0..0, [GREETING_AUTH, &auth(b"alice", b"s3cret")].concat())
                .for_each(drop),
        }
        let c = if seed % 2 == 0 { creds() } else { None };
        let _ = drive(c, &input, 1 + seed as usize % 17);
    }
}
