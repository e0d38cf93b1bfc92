//! Whole-file tests for every kind of forwarding (UDP, port ranges, SOCKS exit, PROXY
//! protocol, access lists, rate limits) and for running it (control and UAPI sockets,
//! metrics, comparing configs for reload): the typed values. The exact problem texts are in
//! `forwarding_golden_tests`, which starts from the same [`FULL`] config.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::golden_tests::{errors, parse};
use crate::{Config, DestinationRule, Endpoint, ExposeTarget, Protocol, ProxyProtocol, Rate};

pub(crate) const FULL: &str = r#"# every kind of forwarding
[interface]
private_key = "kJu76ItB5eMx/kpPdwx/SWBE9JnWORoU8w8orX7+3HE="
listen_port = 51820
address = ["10.77.0.1/24", "fd77::1/64"]
route_between_peers = true
control_socket = "run/relay.sock"
uapi_socket = "/var/run/wireguard/relay0.sock"

[metrics]
listen = "127.0.0.1:9100"

[[peer]]
name = "home"
public_key = "pMe7GSRZIfTPEhITGJtPve7EX0hebHAN/1nFnUcEqAU="
allowed_ips = ["10.77.0.2/32", "fd77::2/128"]

[[forward]]
name = "game"
protocol = "udp"
listen = "0.0.0.0:27015-27030"
to = "10.77.0.2:27015-27030"
idle_timeout = "2m"
max_sessions = 256
rate_limit = "20/s"

[[forward]]
name = "web"
listen = "0.0.0.0:443"
to = "10.77.0.2:443"
proxy_protocol = "v2"
accept_proxy_protocol = true
allow = ["203.0.113.0/24", "2001:db8::/32"]
deny = ["203.0.113.7"]
rate_limit = "600/m"

[[forward]]
name = "dns"
protocol = "udp"
listen = "[::]:53"
to = "[fd77::2]:53"

[[expose]]
name = "exit"
listen = "10.77.0.1:1080"
to = "socks"
username = "alice"
password = "correct horse"
allow_destinations = ["192.168.1.0/24:22", "[fd00::/8]:443"]
deny_destinations = ["*:25"]
allow = ["10.77.0.0/24"]

[[expose]]
name = "media"
protocol = "udp"
listen = "10.77.0.1:5000-5009"
to = "media.lan:6000-6009"
"#;

/// FULL with the first occurrence of `from` replaced by `to` must fail with exactly `want`.
pub(crate) fn check(from: &str, to: &str, want: &[&str]) {
    assert!(FULL.contains(from), "{from}");
    let got = errors(&FULL.replacen(from, to, 1));
    assert_eq!(got, want, "after replacing {from:?} with {to:?}");
}

pub(crate) fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn full_config_parses_to_typed_values() {
    let loaded = parse(FULL).unwrap();
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let c = loaded.config;
    assert!(c.interface.route_between_peers);
    assert_eq!(
        c.interface.control_socket.as_deref(),
        Some(Path::new("run/relay.sock")),
        "relative to the config file's directory (here the current one)"
    );
    assert_eq!(c.control_socket_path(), Path::new("run/relay.sock"));
    assert_eq!(
        c.uapi_socket_path(),
        Path::new("/var/run/wireguard/relay0.sock")
    );
    assert_eq!(c.metrics.as_ref().unwrap().listen, sa("127.0.0.1:9100"));

    let game = &c.forwards[0];
    assert_eq!(game.protocol, Protocol::Udp);
    assert_eq!(
        (game.listen, game.to, game.port_count),
        (sa("0.0.0.0:27015"), sa("10.77.0.2:27015"), 16)
    );
    assert_eq!(game.idle_timeout, Duration::from_secs(120));
    assert_eq!(game.max_sessions, 256);
    assert_eq!(
        game.rate_limit,
        Some(Rate {
            count: 20,
            per: Duration::from_secs(1)
        })
    );
    assert_eq!(game.target_for(27015), Some(sa("10.77.0.2:27015")));
    assert_eq!(game.target_for(27030), Some(sa("10.77.0.2:27030")));
    assert_eq!(game.target_for(27031), None);
    assert_eq!(game.target_for(27014), None);
    assert_eq!(game.show_listen(), "0.0.0.0:27015-27030");
    assert_eq!(game.show_to(), "10.77.0.2:27015-27030");
    assert!(game.access.is_open() && game.proxy_protocol.is_none());

    let web = &c.forwards[1];
    assert_eq!(web.protocol, Protocol::Tcp);
    assert_eq!(web.port_count, 1);
    assert_eq!(web.show_listen(), "0.0.0.0:443");
    assert_eq!(web.proxy_protocol, Some(ProxyProtocol::V2));
    assert!(web.accept_proxy_protocol);
    assert_eq!(
        web.access.allow,
        vec![
            "203.0.113.0/24".parse().unwrap(),
            "2001:db8::/32".parse().unwrap()
        ]
    );
    assert_eq!(web.access.deny, vec!["203.0.113.7/32".parse().unwrap()]);
    assert!(!web.access.permits("203.0.113.7".parse().unwrap()));
    assert!(web.access.permits("::ffff:203.0.113.8".parse().unwrap()));
    assert_eq!(web.rate_limit.unwrap().per, Duration::from_secs(60));
    assert_eq!(web.idle_timeout, Duration::from_secs(300), "TCP default");

    let mut any_port = web.clone();
    any_port.listen.set_port(0);
    assert_eq!(
        any_port.target_for(40000),
        Some(sa("10.77.0.2:443")),
        "port 0: bound port"
    );

    let dns = &c.forwards[2];
    assert_eq!(dns.idle_timeout, Duration::from_secs(60), "UDP default");
    assert_eq!(dns.max_sessions, crate::DEFAULT_MAX_SESSIONS);
    assert_eq!(dns.to, sa("[fd77::2]:53"));

    let exit = &c.exposes[0];
    assert_eq!(exit.show_to(), "socks");
    assert_eq!(exit.target_for(1080), None);
    let ExposeTarget::Socks(socks) = &exit.to else {
        panic!("not socks")
    };
    let auth = socks.auth.as_ref().unwrap();
    assert_eq!(auth.username, "alice");
    assert!(auth.accepts(b"alice", b"correct horse"));
    assert!(!auth.accepts(b"alice", b"wrong"));
    assert!(
        !format!("{c:?}").contains("correct horse"),
        "password leaks"
    );
    assert_eq!(
        socks.allow_destinations,
        vec![
            DestinationRule {
                net: Some("192.168.1.0/24".parse().unwrap()),
                ports: Some((22, 22))
            },
            "[fd00::/8]:443".parse().unwrap()
        ]
    );
    assert_eq!(socks.deny_destinations, vec!["*:25".parse().unwrap()]);
    assert_eq!(exit.access.allow, vec!["10.77.0.0/24".parse().unwrap()]);

    let media = &c.exposes[1];
    assert_eq!(media.protocol, Protocol::Udp);
    assert_eq!(media.port_count, 10);
    assert_eq!(
        media.to,
        ExposeTarget::Addr(Endpoint {
            host: "media.lan".into(),
            port: 6000
        })
    );
    assert_eq!(
        media.target_for(5009).map(|e| e.to_string()).as_deref(),
        Some("media.lan:6009")
    );
    assert_eq!(media.show_to(), "media.lan:6000-6009");
}

#[test]
fn describe_shows_every_setting() {
    let c = parse(FULL).unwrap().config;
    let want = "\
interface
  public key     7iSDMRevjR+ygOcfi1ypPz6IMRn/GueEuAdbT/HF9mI=
  listen port    51820
  addresses      10.77.0.1/24, fd77::1/64
  mtu            1420
  netstack       userspace
  max conns      16384 (all forwards and exposes)
  peer routing   on
  control socket run/relay.sock
  uapi socket    /var/run/wireguard/relay0.sock
  metrics        127.0.0.1:9100
peer home
  public key     pMe7GSRZIfTPEhITGJtPve7EX0hebHAN/1nFnUcEqAU=
  allowed ips    10.77.0.2/32, fd77::2/128
  endpoint       none (waits for the peer to connect)
  keepalive      off
  preshared key  no
forwards
  game   udp 0.0.0.0:27015-27030 -> 10.77.0.2:27015-27030 via peer home  (idle 2m, max 256 sessions, rate 20/s per client)
  web    tcp 0.0.0.0:443 -> 10.77.0.2:443 via peer home  (connect 10s, idle 5m, max 1024, rate 600/m per client, proxy protocol v2, reads proxy protocol)
         allow from 203.0.113.0/24, 2001:db8::/32
         deny from 203.0.113.7/32
  dns    udp [::]:53 -> [fd77::2]:53 via peer home  (idle 1m, max 1024 sessions)
exposes
  exit   tcp 10.77.0.1:1080 -> socks  (connect 10s, idle 5m, max 1024)
         allow from 10.77.0.0/24
         socks login user \"alice\"
         allow destinations 192.168.1.0/24:22, [fd00::/8]:443
         deny destinations *:25
  media  udp 10.77.0.1:5000-5009 -> media.lan:6000-6009  (idle 1m, max 1024 sessions)
";
    assert_eq!(c.describe(), want);
    assert!(!c.describe().contains("correct horse"));
}

#[test]
fn reload_can_compare_configs() {
    let a = parse(FULL).unwrap().config;
    let b = parse(FULL).unwrap().config;
    assert_eq!(a, b, "the same text gives equal configs");
    let c = parse(&FULL.replacen("max_sessions = 256", "max_sessions = 300", 1))
        .unwrap()
        .config;
    assert_ne!(a, c);
    assert_ne!(a.forwards[0], c.forwards[0]);
    assert_eq!(a.forwards[1..], c.forwards[1..]);
    assert_eq!(
        (&a.interface, &a.peers, &a.exposes),
        (&c.interface, &c.peers, &c.exposes)
    );
    let d = parse(&FULL.replacen("correct horse", "battery staple", 1))
        .unwrap()
        .config;
    assert_ne!(
        a.exposes[0], d.exposes[0],
        "a new SOCKS password is a change"
    );
    let e = parse(&FULL.replacen(
        "kJu76ItB5eMx/kpPdwx/SWBE9JnWORoU8w8orX7+3HE=",
        "//////////////////////////////////////////8=",
        1,
    ))
    .unwrap()
    .config;
    assert_ne!(a.interface, e.interface, "a new private key is a change");
}

#[test]
fn socket_paths() {
    // Relative paths are taken from the config file's directory.
    let c = Config::parse(FULL, Path::new("/etc/pinhole/relay.toml"))
        .unwrap()
        .config;
    assert_eq!(
        c.control_socket_path(),
        Path::new("/etc/pinhole/run/relay.sock")
    );
    assert_eq!(c.interface_name(), "relay");
    // Absent: derived (the rules themselves are tested in `paths`).
    let text = FULL
        .replacen("control_socket = \"run/relay.sock\"\n", "", 1)
        .replacen("uapi_socket = \"/var/run/wireguard/relay0.sock\"\n", "", 1);
    let c = Config::parse(&text, Path::new("/etc/pinhole/my relay.toml"))
        .unwrap()
        .config;
    assert_eq!(c.interface.control_socket, None);
    assert_eq!(
        c.control_socket_path(),
        crate::paths::default_control_socket(
            Path::new("/etc/pinhole/my relay.toml"),
            std::env::var_os("XDG_RUNTIME_DIR").as_deref(),
            crate::paths::euid()
        )
    );
    let name = c
        .control_socket_path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(
        name.starts_with("my_relay-") && name.ends_with(".sock"),
        "{name}"
    );
    assert_eq!(c.interface_name(), "my_relay");
    assert_eq!(
        c.uapi_socket_path(),
        Path::new("/var/run/wireguard/my_relay.sock")
    );
}
