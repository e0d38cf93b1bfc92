//! Golden tests for every kind of forwarding: each mistake in the [`FULL`] config (ports and
//! ranges, UDP, PROXY protocol, access lists and rates, SOCKS exit, interface and metrics)
//! and the exact problems it is reported with.

use crate::forwarding_tests::{check, sa, FULL};
use crate::golden_tests::parse;
use crate::ConfigError;

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
