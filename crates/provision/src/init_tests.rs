use std::os::unix::fs::PermissionsExt as _;

use super::*;
use crate::files::tests::TempDir;

fn opts(forwards: &[&str], subnet: Option<&str>) -> InitOptions {
    InitOptions {
        endpoint: "relay.example.com:51820".parse().unwrap(),
        forwards: forwards.iter().map(|f| f.parse().unwrap()).collect(),
        subnet: subnet.map(|s| s.parse().unwrap()),
    }
}

fn parse(text: &str) -> Config {
    Config::parse(text, Path::new("t.toml")).unwrap().config
}

#[test]
fn pair_parses_and_matches() {
    let pair = init(&opts(
        &["8080:127.0.0.1:80", "443:nas.lan:8443", "2222:[::1]:22"],
        None,
    ))
    .unwrap();
    let relay = parse(&pair.relay_toml);
    let home = parse(&pair.home_toml);
    assert_eq!(relay.interface.listen_port, Some(51820));
    assert_eq!(relay.interface.addresses[0].to_string(), "10.77.0.1/24");
    assert_eq!(home.interface.addresses[0].to_string(), "10.77.0.2/24");
    assert_eq!(home.interface.listen_port, None);
    // Keys are matched both ways.
    assert_eq!(
        relay.peers[0].public_key,
        home.interface.private_key.public_key()
    );
    assert_eq!(
        home.peers[0].public_key,
        relay.interface.private_key.public_key()
    );
    assert_eq!(
        home.peers[0].endpoint.as_ref().unwrap().to_string(),
        "relay.example.com:51820"
    );
    assert_eq!(home.peers[0].persistent_keepalive, Some(25));
    // Every relay forward goes to home and lands on a home expose of the same port.
    assert_eq!(relay.forwards.len(), 3);
    for f in &relay.forwards {
        assert!(relay.peers[0]
            .allowed_ips
            .iter()
            .any(|c| c.contains(f.to.ip())));
        assert_eq!(f.listen.port(), f.to.port());
        assert!(home
            .exposes
            .iter()
            .any(|e| e.listen == f.to && e.name == f.name));
    }
    assert!(pair.home_toml.contains("to = \"[::1]:22\""));
    assert!(pair.home_toml.contains("to = \"nas.lan:8443\""));
    // Fresh keys each time.
    let again = init(&opts(&[], None)).unwrap();
    assert_ne!(
        parse(&again.relay_toml).interface.private_key.to_base64(),
        relay.interface.private_key.to_base64()
    );
}

#[test]
fn is_commented_for_people() {
    let pair = init(&opts(&["8080:127.0.0.1:80"], None)).unwrap();
    for text in [&pair.relay_toml, &pair.home_toml] {
        assert!(
            text.lines()
                .filter(|l| l.trim_start().starts_with('#'))
                .count()
                >= 8,
            "{text}"
        );
        assert!(text.contains("pinhole check"));
        assert!(!text.ends_with("\n\n") && text.ends_with('\n'));
    }
    assert!(pair.relay_toml.contains("open UDP 51820"));
    assert!(pair.relay_toml.contains("pinhole add-peer"));
}

#[test]
fn ipv6_and_small_subnets() {
    let pair = init(&opts(&["80:localhost:8000"], Some("fd77::/64"))).unwrap();
    let relay = parse(&pair.relay_toml);
    assert_eq!(relay.forwards[0].to.to_string(), "[fd77::2]:80");
    parse(&pair.home_toml);
    init(&opts(&[], Some("192.168.9.0/30"))).unwrap();
    for bad in [
        "10.0.0.0/31",
        "127.0.0.0/8",
        "0.0.0.0/0",
        "224.0.0.0/24",
        "::/127",
    ] {
        let e = init(&opts(&[], Some(bad))).unwrap_err();
        assert!(matches!(e, ProvisionError::Options { .. }), "{bad}: {e}");
    }
}

#[test]
fn refuses_a_public_port_twice() {
    let e = init(&opts(&["80:a:1", "80:b:2"], None)).unwrap_err();
    assert!(e.to_string().contains("public port 80"), "{e}");
}

#[test]
fn write_init_creates_0600_files_and_never_overwrites() {
    let d = TempDir::new("init");
    let out = d.0.join("new/dir");
    let pair = init(&opts(&["8080:127.0.0.1:80"], None)).unwrap();
    write_init(&out, &pair).unwrap();
    for name in ["relay.toml", "home.toml"] {
        let p = out.join(name);
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        Config::load(&p).unwrap();
    }
    let before = std::fs::read_to_string(out.join("relay.toml")).unwrap();
    let other = init(&opts(&[], None)).unwrap();
    let e = write_init(&out, &other).unwrap_err();
    assert!(
        e.to_string().contains("relay.toml") && e.to_string().contains("fix:"),
        "{e}"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("relay.toml")).unwrap(),
        before
    );
    // Only home.toml in the way: relay.toml is not written either.
    let d2 = TempDir::new("init2");
    std::fs::write(d2.0.join("home.toml"), "mine").unwrap();
    let e = write_init(&d2.0, &other).unwrap_err();
    assert!(matches!(e, ProvisionError::Exists { ref path } if path.ends_with("home.toml")));
    assert!(!d2.0.join("relay.toml").exists());
}
