use super::*;
use crate::{import_wg, init, InitOptions, ProvisionError};

/// A typical hand-written wg-quick file: comments, odd casing and spacing, an IPv6 endpoint,
/// AllowedIPs and Address over several lines, and keys Pinhole skips.
fn typical() -> String {
    let other = pinhole_config::keys::PrivateKey::from_bytes([7; 32]).public_key();
    format!(
        "\
# laptop tunnel
[interface]
privatekey = kJu76ItB5eMx/kpPdwx/SWBE9JnWORoU8w8orX7+3HE=   # my key
Address = 10.8.0.2/24
address=fd08::2/64
ListenPort = 51821
DNS = 1.1.1.1, 9.9.9.9
MTU = 1380
PostUp = iptables -A FORWARD -i %i -j ACCEPT # keep
Table = off

[PEER]
PublicKey = pMe7GSRZIfTPEhITGJtPve7EX0hebHAN/1nFnUcEqAU=
PresharedKey = qOLnk3M1zN/BXUr3nX/xaJDv0vRjDmJkSlbTZV6TeGc=
AllowedIPs = 10.8.0.0/24
Allowed IPs = fd08::/64, 192.168.50.0/24
Endpoint = [2001:db8::7]:51820
persistentKeepalive = 25

[Peer]
PublicKey = {other}
AllowedIPs = 10.9.0.0/24
Endpoint = vpn.example.org:443
PersistentKeepalive = off
"
    )
}

fn parse(text: &str) -> Config {
    Config::parse(text, Path::new("t.toml")).unwrap().config
}

fn cidrs(c: &[pinhole_config::Cidr]) -> Vec<String> {
    c.iter().map(|c| c.to_string()).collect()
}

#[test]
fn imports_a_typical_file() {
    let imported = import_wg(&typical(), Path::new("wg0.conf")).unwrap();
    let c = parse(&imported.toml);
    assert_eq!(
        c.interface.private_key.to_base64(),
        "kJu76ItB5eMx/kpPdwx/SWBE9JnWORoU8w8orX7+3HE="
    );
    assert_eq!(cidrs(&c.interface.addresses), ["10.8.0.2/24", "fd08::2/64"]);
    assert_eq!(c.interface.listen_port, Some(51821));
    assert_eq!(c.interface.mtu, 1380);
    assert_eq!(c.peers.len(), 2);
    let p = &c.peers[0];
    assert_eq!(
        cidrs(&p.allowed_ips),
        ["10.8.0.0/24", "fd08::/64", "192.168.50.0/24"]
    );
    assert_eq!(
        p.endpoint.as_ref().unwrap().to_string(),
        "[2001:db8::7]:51820"
    );
    assert_eq!(p.persistent_keepalive, Some(25));
    assert!(p.preshared_key.is_some());
    assert_eq!(c.peers[1].persistent_keepalive, None);
    assert_eq!(
        c.peers[1].endpoint.as_ref().unwrap().to_string(),
        "vpn.example.org:443"
    );
    // Skipped keys are reported with their lines, never silently dropped.
    let w = imported.warnings.join("\n");
    for (line, key) in [(7, "DNS"), (9, "PostUp"), (10, "Table")] {
        assert!(
            w.contains(&format!("wg0.conf:{line}: {key} skipped")),
            "{w}"
        );
    }
    assert_eq!(imported.warnings.len(), 3);
    assert!(imported.toml.contains("#   line 7: DNS = 1.1.1.1, 9.9.9.9"));
}

#[test]
fn import_errors_name_the_line_and_a_fix() {
    let cases: &[(&str, usize, &str)] = &[
        ("[Interface]\nPrivateKey = kJu76ItB5eMx/kpPdwx/SWBE9JnWORoU8w8orX7+3HE=\nAddress = 10.0.0.1/24\nFooBar = 1\n", 4, "unknown key FooBar"),
        ("[Interface]\n[Metadata]\n", 2, "unknown section"),
        ("Address = 10.0.0.1/24\n", 1, "outside any section"),
        ("[Interface]\nPrivateKey = short\n", 2, "not a private key"),
        ("[Interface]\nPrivateKey = kJu76ItB5eMx/kpPdwx/SWBE9JnWORoU8w8orX7+3HE=\n", 1, "no Address"),
        ("[Interface]\nPrivateKey = kJu76ItB5eMx/kpPdwx/SWBE9JnWORoU8w8orX7+3HE=\nAddress = 10.0.0.1/24\n[Peer]\nAllowedIPs = 10.0.0.2/32\n", 4, "no PublicKey"),
        ("[Interface]\nPrivateKey = kJu76ItB5eMx/kpPdwx/SWBE9JnWORoU8w8orX7+3HE=\nAddress = 10.0.0.1/24\n[Peer]\nPublicKey = pMe7GSRZIfTPEhITGJtPve7EX0hebHAN/1nFnUcEqAU=\nEndpoint = fd00::1:51820\n", 6, "host:port"),
        ("[Interface]\nPrivateKey = kJu76ItB5eMx/kpPdwx/SWBE9JnWORoU8w8orX7+3HE=\nListenPort = 1\nListenPort = 2\n", 4, "given twice"),
        ("[Interface]\nPublicKey = pMe7GSRZIfTPEhITGJtPve7EX0hebHAN/1nFnUcEqAU=\n", 2, "unknown key PublicKey in [Interface]"),
        ("[Interface]\njunk\n", 2, "not a `Key = Value` line"),
    ];
    for (conf, line, what) in cases {
        let e = import_wg(conf, Path::new("x.conf")).unwrap_err();
        let msg = e.to_string();
        assert!(
            matches!(e, ProvisionError::WgQuick { line: l, .. } if l == *line),
            "{conf}: {msg}"
        );
        assert!(
            msg.contains(what) && msg.contains("fix:") && msg.starts_with("x.conf:"),
            "{msg}"
        );
    }
    // Reads fine as wg-quick but not as Pinhole: two peers claim the same addresses.
    let overlap = format!("{}AllowedIPs = 10.8.0.0/24\n", typical());
    let e = import_wg(&overlap, Path::new("x.conf")).unwrap_err();
    assert!(matches!(e, ProvisionError::Converted { .. }), "{e}");
}

/// Every non-comment line of a `.conf` is a portable section or `Key = value` of its section,
/// each key once per section.
fn assert_portable(conf: &str) {
    let mut section = "";
    let mut seen = Vec::new();
    for line in conf.lines() {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        if line == "[Interface]" || line == "[Peer]" {
            section = line;
            seen.clear();
            continue;
        }
        let (key, value) = line
            .split_once(" = ")
            .unwrap_or_else(|| panic!("bad line {line:?}"));
        assert!(!value.is_empty() && !value.contains('#'), "{line}");
        let allowed: &[&str] = match section {
            "[Interface]" => &["PrivateKey", "Address", "DNS", "MTU", "ListenPort"],
            "[Peer]" => &[
                "PublicKey",
                "PresharedKey",
                "AllowedIPs",
                "Endpoint",
                "PersistentKeepalive",
            ],
            _ => panic!("{line:?} outside a section"),
        };
        assert!(allowed.contains(&key), "{key} in {section}");
        assert!(!seen.contains(&key), "{key} twice");
        seen.push(key);
    }
}

#[test]
fn export_uses_only_the_portable_subset_and_round_trips() {
    let pair = init(&InitOptions {
        endpoint: "[2001:db8::7]:51820".parse().unwrap(),
        forwards: vec![
            "8080:127.0.0.1:80".parse().unwrap(),
            "2222:[::1]:22".parse().unwrap(),
        ],
        subnet: None,
    })
    .unwrap();
    for toml in [&pair.relay_toml, &pair.home_toml] {
        let wg = export_wg(toml, Path::new("relay.toml")).unwrap();
        assert_portable(&wg);
        let before = parse(toml);
        let back = parse(&import_wg(&wg, Path::new("relay.conf")).unwrap().toml);
        assert_eq!(
            back.interface.private_key.to_base64(),
            before.interface.private_key.to_base64()
        );
        assert_eq!(
            cidrs(&back.interface.addresses),
            cidrs(&before.interface.addresses)
        );
        assert_eq!(back.interface.listen_port, before.interface.listen_port);
        assert_eq!(back.peers.len(), before.peers.len());
        for (a, b) in back.peers.iter().zip(&before.peers) {
            assert_eq!(
                (&a.name, a.public_key, &a.endpoint),
                (&b.name, b.public_key, &b.endpoint)
            );
            assert_eq!(cidrs(&a.allowed_ips), cidrs(&b.allowed_ips));
            assert_eq!(a.persistent_keepalive, b.persistent_keepalive);
        }
        // Forwards and exposes come back from the `# pinhole:` lines.
        assert_eq!(back.forwards.len(), before.forwards.len());
        assert_eq!(back.exposes.len(), before.exposes.len());
        for (a, b) in back.forwards.iter().zip(&before.forwards) {
            assert_eq!((&a.name, a.listen, a.to), (&b.name, b.listen, b.to));
        }
    }
    let home_wg = export_wg(&pair.home_toml, Path::new("home.toml")).unwrap();
    assert!(
        home_wg.contains("Endpoint = [2001:db8::7]:51820\n"),
        "{home_wg}"
    );
    assert!(
        home_wg.contains("# pinhole: [[expose]] name = \"port-2222\""),
        "{home_wg}"
    );
}

#[test]
fn export_keeps_other_settings_as_comments_and_reads_them_back() {
    let imported = import_wg(&typical(), Path::new("wg0.conf")).unwrap();
    let mut toml = imported.toml.replacen(
        "[[peer]]\npublic_key",
        "[[peer]]\nname = \"office\"\npublic_key",
        1,
    );
    toml.push_str("\n[[forward]]\nname = \"db\"\nlisten = \"127.0.0.1:5432\"\nto = \"10.8.0.9:5432\"   # note\nidle_timeout = \"1h\"\n");
    let wg = export_wg(&toml, Path::new("x.toml")).unwrap();
    assert_portable(&wg);
    assert!(wg.contains("MTU = 1380\n") && wg.contains("Address = 10.8.0.2/24, fd08::2/64\n"));
    assert!(wg.contains("AllowedIPs = 10.8.0.0/24, fd08::/64, 192.168.50.0/24\n"));
    assert!(wg.contains("# pinhole: name = \"office\""));
    assert!(wg.contains("# pinhole: [[forward]] name = \"db\", listen = \"127.0.0.1:5432\", to = \"10.8.0.9:5432\", idle_timeout = \"1h\"\n"), "{wg}");
    let back = parse(&import_wg(&wg, Path::new("x.conf")).unwrap().toml);
    assert_eq!(back.peers[0].name, "office");
    assert_eq!(
        back.forwards[0].idle_timeout,
        std::time::Duration::from_secs(3600)
    );
    // An invalid config is refused with its problems.
    let e = export_wg("[interface]\n", Path::new("bad.toml")).unwrap_err();
    assert!(
        matches!(e, ProvisionError::InvalidConfig { .. }) && e.to_string().contains("bad.toml"),
        "{e}"
    );
}
