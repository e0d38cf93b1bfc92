//! Whole-file tests for every kind of forwarding (UDP, port ranges, SOCKS exit, PROXY
//! protocol, access lists, rate limits) and for running it (control and UAPI sockets,
//! metrics, comparing configs for reload): typed values and exact problem texts.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::golden_tests::{errors, parse};
use crate::{
    Config, ConfigError, DestinationRule, Endpoint, ExposeTarget, Protocol, ProxyProtocol, Rate,
};

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
fn check(from: &str, to: &str, want: &[&str]) {
    assert!(FULL.contains(from), "{from}");
    let got = errors(&FULL.replacen(from, to, 1));
    assert_eq!(got, want, "after replacing {from:?} with {to:?}");
}

fn sa(s: &str) -> SocketAddr {
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

#[test]
fn golden_port_ranges() {
    check(
        "to = \"10.77.0.2:27015-27030\"",
        "to = \"10.77.0.2:27015-27020\"",
        &[
            "relay.toml:22:6: forward[0].to: 10.77.0.2:27015-27020 has 6 ports but listen 0.0.0.0:27015-27030 has 16 ports; fix: give both the same number of ports, e.g. to = \"10.77.0.2:27015-27030\"",
        ],
    );
    check(
        "to = \"10.77.0.2:27015-27030\"",
        "to = \"10.77.0.2:27015\"",
        &[
            "relay.toml:22:6: forward[0].to: 10.77.0.2:27015 has 1 port but listen 0.0.0.0:27015-27030 has 16 ports; fix: give both the same number of ports, e.g. to = \"10.77.0.2:27015-27030\"",
        ],
    );
    check(
        "to = \"10.77.0.2:27015-27030\"",
        "to = \"10.77.0.2:65530-65535\"",
        &[
            "relay.toml:22:6: forward[0].to: 10.77.0.2:65530-65535 has 6 ports but listen 0.0.0.0:27015-27030 has 16 ports; fix: give listen and to the same number of ports",
        ],
    );
    check(
        "to = \"media.lan:6000-6009\"",
        "to = \"media.lan:6000-6004\"",
        &[
            "relay.toml:57:6: expose[1].to: media.lan:6000-6004 has 5 ports but listen 10.77.0.1:5000-5009 has 10 ports; fix: give both the same number of ports, e.g. to = \"media.lan:6000-6009\"",
        ],
    );
    check(
        "listen = \"0.0.0.0:27015-27030\"",
        "listen = \"0.0.0.0:65530-65540\"",
        &[
            "relay.toml:21:10: forward[0].listen: port range 65530-65540 goes past port 65535; fix: end the range at port 65535 or below",
        ],
    );
    check(
        "listen = \"0.0.0.0:27015-27030\"",
        "listen = \"0.0.0.0:27030-27015\"",
        &[
            "relay.toml:21:10: forward[0].listen: port range 27030-27015 ends before it starts; fix: write the lower port first: \"0.0.0.0:27015-27030\"",
        ],
    );
    check(
        "listen = \"0.0.0.0:27015-27030\"",
        "listen = \"0.0.0.0:1000-20999\"",
        &[
            "relay.toml:21:10: forward[0].listen: port range 1000-20999 has 20000 ports; at most 10000 are allowed; fix: split it into entries of at most 10000 ports each",
        ],
    );
    check(
        "listen = \"0.0.0.0:27015-27030\"",
        "listen = \"0.0.0.0:0-15\"",
        &[
            "relay.toml:21:10: forward[0].listen: port range 0-15 starts at port 0; fix: start the range at port 1 or above",
        ],
    );
    check(
        "listen = \"0.0.0.0:27015-27030\"",
        "listen = \"0.0.0.0:27015-x\"",
        &[
            "relay.toml:21:10: forward[0].listen: port `x` is not a number from 1 to 65535; fix: write a range as FIRST-LAST, e.g. \"0.0.0.0:27015-27030\"",
        ],
    );
    check(
        "listen = \"[::]:53\"",
        "listen = \"0.0.0.0:27020\"",
        &[
            "relay.toml:40:10: forward[2].listen: 0.0.0.0:27020 clashes with 0.0.0.0:27015-27030 of forward[0] (game); fix: use a different port for one of them",
        ],
    );
    // A full range at the top of the port space is fine.
    let text = FULL
        .replacen("0.0.0.0:27015-27030", "0.0.0.0:55536-65535", 1)
        .replacen("10.77.0.2:27015-27030", "10.77.0.2:55536-65535", 1);
    let c = parse(&text).unwrap().config;
    assert_eq!(c.forwards[0].port_count, 10_000);
    assert_eq!(c.forwards[0].target_for(65535), Some(sa("10.77.0.2:65535")));
}

#[test]
fn golden_udp() {
    check(
        "max_sessions = 256",
        "max_sessions = 256\nconnect_timeout = \"5s\"",
        &[
            "relay.toml:25:19: forward[0].connect_timeout: connect_timeout does not apply to udp: there is no connection to open; fix: remove it; idle_timeout is what ends a quiet UDP session",
        ],
    );
    check(
        "max_sessions = 256",
        "max_sessions = 256\nmax_connections = 10",
        &[
            "relay.toml:25:19: forward[0].max_connections: max_connections does not apply to udp; fix: use max_sessions = 1024 to cap the number of UDP sessions",
        ],
    );
    check(
        "rate_limit = \"600/m\"",
        "rate_limit = \"600/m\"\nmax_sessions = 10",
        &[
            "relay.toml:36:16: forward[1].max_sessions: max_sessions applies only to udp; fix: use max_connections = 1024 to cap simultaneous TCP connections",
        ],
    );
    check("max_sessions = 256", "max_sessions = 0", &[
            "relay.toml:24:16: forward[0].max_sessions: max_sessions 0 is outside 1..=1000000; fix: use a positive limit, e.g. 1024 (the default)",
        ]);
    check(
        "max_sessions = 256",
        "max_sessions = 256\nproxy_protocol = \"v2\"",
        &[
            "relay.toml:25:18: forward[0].proxy_protocol: proxy_protocol applies only to tcp; fix: remove it: a PROXY header starts a TCP stream, and udp forwards send none",
        ],
    );
    check(
        "max_sessions = 256",
        "max_sessions = 256\naccept_proxy_protocol = true",
        &[
            "relay.toml:25:25: forward[0].accept_proxy_protocol: accept_proxy_protocol applies only to tcp; fix: remove it: only TCP clients send a PROXY header",
        ],
    );
}

#[test]
fn golden_proxy_protocol() {
    check(
        "proxy_protocol = \"v2\"",
        "proxy_protocol = \"v3\"",
        &[
            "relay.toml:31:18: forward[1].proxy_protocol: unknown proxy_protocol \"v3\"; fix: use proxy_protocol = \"v1\" (text) or \"v2\" (binary), as the backend expects",
        ],
    );
    check(
        "accept_proxy_protocol = true",
        "accept_proxy_protocol = \"yes\"",
        &[
            "relay.toml:32:25: forward[1].accept_proxy_protocol: expected a boolean, found a string; fix: write accept_proxy_protocol = true or false (without quotes)",
        ],
    );
}

#[test]
fn golden_access_and_rate() {
    check(
        "deny = [\"203.0.113.7\"]",
        "deny = [\"203.0.113.7/33\"]",
        &[
            "relay.toml:34:9: forward[1].deny: prefix length `33` is not between 0 and 32; fix: write a prefix such as \"203.0.113.0/24\" or one address such as \"198.51.100.7\"",
        ],
    );
    check(
        "allow = [\"203.0.113.0/24\", \"2001:db8::/32\"]",
        "allow = [\"203.0.113.0/24\", \"my-office\"]",
        &[
            "relay.toml:33:28: forward[1].allow: `my-office` is not an IP address; fix: write a prefix such as \"203.0.113.0/24\" or one address such as \"198.51.100.7\"",
        ],
    );
    check(
        "allow = [\"203.0.113.0/24\", \"2001:db8::/32\"]",
        "allow = []",
        &[
            "relay.toml:33:9: forward[1].allow: an empty allow list would let every address in; fix: list the client addresses to let in, e.g. allow = [\"203.0.113.0/24\"], or remove allow to let everyone in",
        ],
    );
    check("rate_limit = \"20/s\"", "rate_limit = \"20/h\"", &[
            "relay.toml:25:14: forward[0].rate_limit: `20/h` is not a rate like \"20/s\" or \"600/m\"; fix: write e.g. rate_limit = \"20/s\" (new sessions per second from one client address) or \"600/m\"",
        ]);
    check("rate_limit = \"20/s\"", "rate_limit = \"fast\"", &[
            "relay.toml:25:14: forward[0].rate_limit: `fast` is not a rate like \"20/s\" or \"600/m\"; fix: write e.g. rate_limit = \"20/s\" (new sessions per second from one client address) or \"600/m\"",
        ]);
    check("rate_limit = \"600/m\"", "rate_limit = \"0/m\"", &[
            "relay.toml:35:14: forward[1].rate_limit: `0/m` is outside 1 to 1000000 per second or minute; fix: write e.g. rate_limit = \"20/s\" (new connections per second from one client address) or \"600/m\"",
        ]);
    check("rate_limit = \"600/m\"", "rate_limit = 600", &[
            "relay.toml:35:14: forward[1].rate_limit: expected a string, found an integer; fix: write rate_limit = \"...\" (in double quotes)",
        ]);
}

#[test]
fn golden_socks() {
    check(
        "listen = \"10.77.0.1:1080\"",
        "listen = \"10.77.0.1:1080-1090\"",
        &[
            "relay.toml:45:10: expose[0].listen: a SOCKS exit listens on one port, not the range 10.77.0.1:1080-1090; fix: write listen = \"10.77.0.1:1080\"",
        ],
    );
    check(
        "to = \"socks\"",
        "to = \"socks\"\nprotocol = \"udp\"",
        &[
            "relay.toml:47:12: expose[0].protocol: a SOCKS exit is tcp only; fix: remove protocol = \"udp\": SOCKS5 clients connect over TCP",
        ],
    );
    check(
        "to = \"media.lan:6000-6009\"",
        "to = \"media.lan:6000-6009\"\nusername = \"bob\"\ndeny_destinations = [\"*:25\"]",
        &[
            "relay.toml:58:12: expose[1].username: username is only for a SOCKS exit (to = \"socks\"); fix: remove it, or set to = \"socks\" to make this expose a SOCKS5 exit",
            "relay.toml:59:21: expose[1].deny_destinations: deny_destinations is only for a SOCKS exit (to = \"socks\"); fix: remove it, or set to = \"socks\" to make this expose a SOCKS5 exit",
        ],
    );
    check("password = \"correct horse\"\n", "", &[
            "relay.toml:47:12: expose[0].username: username is set but password is not; fix: add password = \"...\" (SOCKS5 login needs both), or remove username",
        ]);
    check("username = \"alice\"\n", "", &[
            "relay.toml:47:12: expose[0].password: password is set but username is not; fix: add username = \"...\" (SOCKS5 login needs both), or remove password",
        ]);
    check("username = \"alice\"", &format!("username = \"{}\"", "a".repeat(256)), &[
            "relay.toml:47:12: expose[0].username: username is 256 bytes; SOCKS5 allows 1 to 255; fix: use a username of 1 to 255 bytes",
        ]);
    check("password = \"correct horse\"", "password = \"\"", &[
            "relay.toml:48:12: expose[0].password: password is 0 bytes; SOCKS5 allows 1 to 255; fix: use a password of 1 to 255 bytes",
        ]);
    check(
        "deny_destinations = [\"*:25\"]",
        "deny_destinations = [\"*:25\", \"example.com:443\", \"*\", \"10.0.0.0/8:2000-1000\"]",
        &[
            "relay.toml:50:30: expose[0].deny_destinations: bad destination rule \"example.com:443\": `example.com` is not an IP address; fix: write \"CIDR\", \"CIDR:PORT\", \"CIDR:LOW-HIGH\" or \"*:PORT\", e.g. \"10.0.0.0/8\", \"192.168.1.5:22\", \"[fd00::/8]:443\"",
            "relay.toml:50:49: expose[0].deny_destinations: bad destination rule \"*\": `*` needs a port (\"*:443\"); for every address write \"0.0.0.0/0\" and \"::/0\"; fix: write \"CIDR\", \"CIDR:PORT\", \"CIDR:LOW-HIGH\" or \"*:PORT\", e.g. \"10.0.0.0/8\", \"192.168.1.5:22\", \"[fd00::/8]:443\"",
            "relay.toml:50:54: expose[0].deny_destinations: bad destination rule \"10.0.0.0/8:2000-1000\": port range `2000-1000` ends before it starts; fix: write \"CIDR\", \"CIDR:PORT\", \"CIDR:LOW-HIGH\" or \"*:PORT\", e.g. \"10.0.0.0/8\", \"192.168.1.5:22\", \"[fd00::/8]:443\"",
        ],
    );
    check(
        "to = \"10.77.0.2:443\"",
        "to = \"socks\"",
        &[
            "relay.toml:30:6: forward[1].to: a forward cannot be a SOCKS exit; fix: to = \"socks\" belongs in an [[expose]] on the exit peer; forward to that expose's overlay address, e.g. to = \"10.77.0.1:1080\"",
        ],
    );
}

#[test]
fn golden_interface_and_metrics() {
    check(
        "route_between_peers = true",
        "route_between_peers = \"yes\"",
        &[
            "relay.toml:6:23: interface.route_between_peers: expected a boolean, found a string; fix: write route_between_peers = true or false (without quotes)",
        ],
    );
    check(
        "control_socket = \"run/relay.sock\"",
        "control_socket = \"\"",
        &[
            "relay.toml:7:18: interface.control_socket: not a usable path; fix: give a path such as \"/run/pinhole/relay.sock\", or remove the key for the default",
        ],
    );
    check(
        "control_socket = \"run/relay.sock\"",
        &format!("control_socket = \"/{}\"", "s".repeat(120)),
        &[
            "relay.toml:7:18: interface.control_socket: /ssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssss is 121 bytes; a Unix socket path holds at most 107; fix: use a shorter path (a relative path is taken from the config file's directory)",
        ],
    );
    check(
        "listen = \"127.0.0.1:9100\"",
        "listen = \"localhost:9100\"",
        &[
            "relay.toml:11:10: metrics.listen: \"localhost\" is a host name; an IP address is needed here; fix: write an IP and port, e.g. \"127.0.0.1:9100\"",
        ],
    );
    check("listen = \"127.0.0.1:9100\"", "port = 9100", &[
            "relay.toml:10:1: metrics.listen: missing required key; fix: add listen = \"127.0.0.1:9100\"",
            "relay.toml:11:1: metrics.port: unknown key `port` in [metrics]; fix: valid keys in [metrics] are: listen",
        ]);
    check("[metrics]", "[[metrics]]", &[
            "relay.toml:10:3: metrics: must be a single table; fix: write [metrics] on its own line, then listen = \"127.0.0.1:9100\"",
        ]);
    let loaded = parse(&FULL.replacen("127.0.0.1:9100", "0.0.0.0:9100", 1)).unwrap();
    assert_eq!(
        loaded.warnings.iter().map(ToString::to_string).collect::<Vec<_>>(),
        ["relay.toml:11:10: metrics.listen: metrics on 0.0.0.0:9100 can be read by anyone who can reach this host; fix: listen on \"127.0.0.1:9100\", or firewall port 9100"]
    );
}

#[test]
fn every_new_problem_is_reported_at_once() {
    let text = FULL
        .replacen("10.77.0.2:27015-27030", "10.77.0.2:27015-27031", 1)
        .replacen("proxy_protocol = \"v2\"", "proxy_protocol = \"v9\"", 1)
        .replacen("\"*:25\"", "\"*\"", 1);
    match parse(&text) {
        Err(ConfigError::Invalid(p)) => {
            let keys: Vec<&str> = p.iter().map(|p| p.key.as_str()).collect();
            assert_eq!(
                keys,
                [
                    "forward[0].to",
                    "forward[1].proxy_protocol",
                    "expose[0].deny_destinations"
                ]
            );
        }
        other => panic!("{other:?}"),
    }
}
