//! Whole-file tests: a good config parses to the expected values, and each check gives its
//! exact `file:line:col: key: message` text. Also: no input makes loading panic.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::{Config, ConfigError, Protocol};

pub(crate) const GOOD: &str = r#"# relay
[interface]
private_key = "kJu76ItB5eMx/kpPdwx/SWBE9JnWORoU8w8orX7+3HE="
listen_port = 51820
address = ["10.77.0.1/24", "fd77::1/64"]
mtu = 1400

[[peer]]
name = "home"
public_key = "pMe7GSRZIfTPEhITGJtPve7EX0hebHAN/1nFnUcEqAU="
allowed_ips = ["10.77.0.2/32", "fd77::2/128"]
endpoint = "home.example.com:51820"
persistent_keepalive = 25
preshared_key = "qOLnk3M1zN/BXUr3nX/xaJDv0vRjDmJkSlbTZV6TeGc="

[[peer]]
public_key = "hHwNLDdSNPNl5mCVUYejc1oPdhPRYJ06ak2MU66qWiI="
allowed_ips = ["10.77.0.3"]

[[forward]]
name = "web"
listen = "0.0.0.0:8080"
to = "10.77.0.2:80"

[[forward]]
name = "ssh"
protocol = "tcp"
listen = "[::]:2222"
to = "[fd77::2]:22"
connect_timeout = "500ms"
idle_timeout = 3600
max_connections = 8

[[expose]]
name = "proxy"
listen = "10.77.0.1:1080"
to = "localhost:1080"
"#;

pub(crate) fn parse(text: &str) -> Result<crate::Loaded, ConfigError> {
    Config::parse(text, Path::new("relay.toml"))
}

/// Every problem's text, for a config that must fail.
pub(crate) fn errors(text: &str) -> Vec<String> {
    match parse(text) {
        Ok(_) => panic!("config was accepted:\n{text}"),
        Err(ConfigError::Invalid(p)) => p.iter().map(ToString::to_string).collect(),
        Err(e) => panic!("unexpected {e}"),
    }
}

/// GOOD with the first occurrence of `from` replaced by `to`.
fn edit(from: &str, to: &str) -> String {
    assert!(GOOD.contains(from), "{from}");
    GOOD.replacen(from, to, 1)
}

/// GOOD with `from` replaced by `to` must fail with exactly `want`, in file order.
fn check(from: &str, to: &str, want: &[&str]) {
    let got = errors(&edit(from, to));
    assert_eq!(got, want, "after replacing {from:?} with {to:?}");
}

pub(crate) const OWN_PUBLIC: &str = "7iSDMRevjR+ygOcfi1ypPz6IMRn/GueEuAdbT/HF9mI=";
const HOME_PUBLIC: &str = "pMe7GSRZIfTPEhITGJtPve7EX0hebHAN/1nFnUcEqAU=";
const SECOND_PUBLIC: &str = "hHwNLDdSNPNl5mCVUYejc1oPdhPRYJ06ak2MU66qWiI=";
pub(crate) const PRIVATE_LINE: &str =
    "private_key = \"kJu76ItB5eMx/kpPdwx/SWBE9JnWORoU8w8orX7+3HE=\"";

#[test]
fn good_config_parses_to_typed_values() {
    let loaded = parse(GOOD).unwrap();
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let c = loaded.config;
    assert_eq!(c.path, Path::new("relay.toml"));
    assert_eq!(c.interface.private_key.public_key().to_string(), OWN_PUBLIC);
    assert_eq!(c.interface.listen_port, Some(51820));
    assert_eq!(
        c.interface.addresses,
        vec![
            "10.77.0.1/24".parse().unwrap(),
            "fd77::1/64".parse().unwrap()
        ]
    );
    assert_eq!(c.interface.mtu, 1400);

    assert_eq!(c.peers.len(), 2);
    let home = &c.peers[0];
    assert_eq!(home.name, "home");
    assert_eq!(home.public_key.to_string(), HOME_PUBLIC);
    assert!(home.preshared_key.is_some());
    assert_eq!(
        home.allowed_ips,
        vec![
            "10.77.0.2/32".parse().unwrap(),
            "fd77::2/128".parse().unwrap()
        ]
    );
    assert_eq!(
        home.endpoint.as_ref().unwrap().to_string(),
        "home.example.com:51820"
    );
    assert_eq!(home.persistent_keepalive, Some(25));
    let second = &c.peers[1];
    assert_eq!(second.name, "peer2", "default name by position");
    assert_eq!(second.public_key.to_string(), SECOND_PUBLIC);
    assert!(second.preshared_key.is_none() && second.endpoint.is_none());
    assert_eq!(second.persistent_keepalive, None);
    assert_eq!(second.allowed_ips, vec!["10.77.0.3/32".parse().unwrap()]);

    let web = &c.forwards[0];
    assert_eq!((web.name.as_str(), web.protocol), ("web", Protocol::Tcp));
    assert_eq!(web.listen, "0.0.0.0:8080".parse::<SocketAddr>().unwrap());
    assert_eq!(web.to, "10.77.0.2:80".parse::<SocketAddr>().unwrap());
    assert_eq!(web.peer, 0);
    assert_eq!(web.connect_timeout, Duration::from_secs(10));
    assert_eq!(web.idle_timeout, Duration::from_secs(300));
    assert_eq!(web.max_connections, 1024);
    let ssh = &c.forwards[1];
    assert_eq!(ssh.listen, "[::]:2222".parse::<SocketAddr>().unwrap());
    assert_eq!(ssh.to, "[fd77::2]:22".parse::<SocketAddr>().unwrap());
    assert_eq!(ssh.peer, 0);
    assert_eq!(ssh.connect_timeout, Duration::from_millis(500));
    assert_eq!(ssh.idle_timeout, Duration::from_secs(3600));
    assert_eq!(ssh.max_connections, 8);

    let proxy = &c.exposes[0];
    assert_eq!(proxy.name, "proxy");
    assert_eq!(
        proxy.listen,
        "10.77.0.1:1080".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(proxy.to.to_string(), "localhost:1080");
    assert_eq!(proxy.max_connections, 1024);
}

#[test]
fn minimal_config_gets_defaults() {
    let text = "[interface]\nprivate_key_file = \"/dev/null\"\naddress = \"10.77.0.2\"\n";
    // /dev/null holds no key: this proves the file is read; the inline form is tested below.
    assert!(errors(text)[0].contains("does not hold a private key"));
    let text = format!("[interface]\n{PRIVATE_LINE}\naddress = \"10.77.0.2\"\nlisten_port = 0\n");
    let c = parse(&text).unwrap().config;
    assert_eq!(c.interface.listen_port, None, "0 means random");
    assert_eq!(c.interface.mtu, crate::DEFAULT_MTU);
    assert_eq!(c.interface.addresses, vec!["10.77.0.2/32".parse().unwrap()]);
    assert!(c.peers.is_empty() && c.forwards.is_empty() && c.exposes.is_empty());
    // Inline tables are the same TOML as [[peer]] sections.
    let text = format!(
        "interface = {{ {PRIVATE_LINE}, address = [\"10.77.0.1/24\"] }}\n\
         peer = [{{ public_key = \"{HOME_PUBLIC}\", allowed_ips = [\"10.77.0.2\"], persistent_keepalive = 0 }}]\n"
    );
    let c = parse(&text).unwrap().config;
    assert_eq!(c.peers[0].name, "peer1");
    assert_eq!(c.peers[0].persistent_keepalive, None, "0 means off");
}

#[test]
fn describe_shows_everything_but_secrets() {
    let c = parse(GOOD).unwrap().config;
    let text = c.describe();
    assert!(
        text.contains(&format!("public key     {OWN_PUBLIC}")),
        "{text}"
    );
    assert!(text.contains("listen port    51820"));
    assert!(text.contains("addresses      10.77.0.1/24, fd77::1/64"));
    assert!(text.contains("mtu            1400"));
    assert!(text.contains("peer home\n"));
    assert!(text.contains("allowed ips    10.77.0.2/32, fd77::2/128"));
    assert!(text.contains("endpoint       home.example.com:51820"));
    assert!(text.contains("keepalive      25s"));
    assert!(text.contains("preshared key  yes"));
    assert!(text.contains("peer peer2\n"));
    assert!(text.contains("keepalive      off"));
    assert!(text.contains("preshared key  no"));
    assert!(text.contains("web    tcp 0.0.0.0:8080 -> 10.77.0.2:80 via peer home  (connect 10s, idle 5m, max 1024)"), "{text}");
    assert!(text.contains(
        "ssh    tcp [::]:2222 -> [fd77::2]:22 via peer home  (connect 500ms, idle 1h, max 8)"
    ));
    assert!(text.contains("proxy  tcp 10.77.0.1:1080 -> localhost:1080"));
    assert!(!text.contains("kJu76ItB5eMx"), "private key printed");
    assert!(!text.contains("qOLnk3M1zN"), "preshared key printed");
    assert!(
        !format!("{c:?}").contains("kJu76ItB5eMx") && !format!("{c:?}").contains("qOLnk3M1zN"),
        "Debug leaks a secret"
    );
}

#[test]
fn golden_not_covered_matches_the_contract() {
    check(
        "to = \"10.77.0.2:80\"",
        "to = \"10.9.0.2:80\"",
        &["relay.toml:23:6: forward[0].to: 10.9.0.2:80 is not covered by any peer's allowed_ips; fix: add 10.9.0.2/32 to a peer's allowed_ips, or point `to` at a peer's overlay address"],
    );
}

#[test]
fn golden_syntax_errors() {
    check(
        "to = \"10.77.0.2:80\"",
        "to = 10.77.0.2:80",
        &["relay.toml:23:11: TOML syntax error: expected newline, `#`; fix: put string values in double quotes, e.g. to = \"10.77.0.2:80\""],
    );
    check(
        "mtu = 1400",
        "mtu = 1400\nmtu = 1500",
        &["relay.toml:7:1: TOML syntax error: duplicate key `mtu` in table `interface`; fix: each key and table may appear only once; remove or rename one of them"],
    );
}

#[test]
fn golden_unknown_keys_and_tables() {
    check(
        "[interface]",
        "[interfaces]",
        &[
            "relay.toml:1:1: interface: missing [interface] table; fix: add [interface] with private_key (or private_key_file) and address",
            "relay.toml:2:2: interfaces: unknown table [interfaces]; fix: did you mean [interface]? the file may only have [interface], [[peer]], [[forward]], [[expose]] and [metrics]",
        ],
    );
    let got = errors(&edit("[[peer]]\nname", "[[peers]]\nname"));
    assert_eq!(got[0], "relay.toml:8:3: peers: unknown table [[peers]]; fix: did you mean [[peer]]? the file may only have [interface], [[peer]], [[forward]], [[expose]] and [metrics]");
    check(
        "persistent_keepalive = 25",
        "persistent_keepalive = 25\nAllowedIPs = \"10.1.0.0/16\"",
        &["relay.toml:14:1: peer[0].AllowedIPs: unknown key `AllowedIPs` in [[peer]]; fix: did you mean `allowed_ips`? valid keys in [[peer]] are: name, public_key, preshared_key, allowed_ips, endpoint, persistent_keepalive"],
    );
    check(
        "mtu = 1400",
        "mtu = 1400\ntable = 1",
        &["relay.toml:7:1: interface.table: unknown key `table` in [interface]; fix: valid keys in [interface] are: private_key, private_key_file, listen_port, address, mtu, route_between_peers, control_socket, uapi_socket, netstack, tun_name, max_connections"],
    );
    check(
        "max_connections = 8",
        "max_connections = 8\nproxy_protcol = \"v2\"",
        &["relay.toml:33:1: forward[1].proxy_protcol: unknown key `proxy_protcol` in [[forward]]; fix: did you mean `proxy_protocol`? valid keys in [[forward]] are: name, protocol, listen, to, connect_timeout, idle_timeout, max_connections, max_sessions, allow, deny, rate_limit, kernel_nat, proxy_protocol, accept_proxy_protocol"],
    );
    check(
        "max_connections = 8",
        "max_connections = 8\nusername = \"alice\"",
        &["relay.toml:33:1: forward[1].username: unknown key `username` in [[forward]]; fix: it belongs to an [[expose]] with to = \"socks\" (a SOCKS exit); valid keys in [[forward]] are: name, protocol, listen, to, connect_timeout, idle_timeout, max_connections, max_sessions, allow, deny, rate_limit, kernel_nat, proxy_protocol, accept_proxy_protocol"],
    );
    check(
        "to = \"localhost:1080\"",
        "to = \"localhost:1080\"\nproxy_protocol = \"v1\"",
        &["relay.toml:38:1: expose[0].proxy_protocol: unknown key `proxy_protocol` in [[expose]]; fix: it belongs to a TCP [[forward]] (the listener clients reach first); valid keys in [[expose]] are: name, protocol, listen, to, connect_timeout, idle_timeout, max_connections, max_sessions, allow, deny, rate_limit, kernel_nat, username, password, allow_destinations, deny_destinations"],
    );
    check(
        "[[expose]]",
        "[expose]",
        &["relay.toml:34:2: expose: must be an array of tables, found a table; fix: write [[expose]] (double brackets), once per expose"],
    );
}

#[test]
fn golden_types_and_missing_keys() {
    check(
        "listen_port = 51820",
        "listen_port = \"51820\"",
        &["relay.toml:4:15: interface.listen_port: expected an integer, found a string; fix: write listen_port = a number without quotes"],
    );
    check(
        "allowed_ips = [\"10.77.0.3\"]",
        "allowed_ips = [\"10.77.0.3\", 7]",
        &["relay.toml:18:29: peer[1].allowed_ips: expected a string, found an integer; fix: write allowed_ips = [\"...\", \"...\"] with each entry in double quotes"],
    );
    check(
        &format!("public_key = \"{SECOND_PUBLIC}\"\n"),
        "",
        &["relay.toml:16:1: peer[1].public_key: missing required key; fix: add public_key = \"<the peer's `pinhole pubkey` output>\""],
    );
    check(
        "[[forward]]\nname = \"web\"\n",
        "[[forward]]\n",
        &["relay.toml:20:1: forward[0].name: missing required key; fix: add name = \"web\" (any short unique name)"],
    );
    check(
        "address = [\"10.77.0.1/24\", \"fd77::1/64\"]\n",
        "",
        &[
            "relay.toml:2:1: interface.address: missing required key; fix: add this peer's overlay address, e.g. address = [\"10.77.0.1/24\"]",
            // With no own addresses, nothing can be exposed; said once, at the expose.
        ],
    );
    check(
        "name = \"home\"",
        "name = \"my home\"",
        &["relay.toml:9:8: peer[0].name: name \"my home\" must be 1 to 32 letters, digits, '.', '_' or '-'; fix: choose a short name such as \"web\" or \"home-ssh\""],
    );
}

#[test]
fn golden_private_key() {
    check(
        PRIVATE_LINE,
        &format!("private_key_file = \"relay.key\"\n{PRIVATE_LINE}"),
        &["relay.toml:3:20: interface.private_key_file: both private_key and private_key_file are set; fix: keep only one of them"],
    );
    check(
        PRIVATE_LINE,
        "",
        &["relay.toml:2:1: interface.private_key: missing required key; fix: add private_key = \"<output of `pinhole genkey`>\", or private_key_file = \"FILE\""],
    );
    check(
        PRIVATE_LINE,
        "private_key = \"not a key\"",
        &["relay.toml:3:15: interface.private_key: not a private key: a key is 44 characters of base64, this one has 9; fix: paste the 44-character output of `pinhole genkey` (or `wg genkey`)"],
    );
    check(
        PRIVATE_LINE,
        "private_key = \"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\"",
        &["relay.toml:3:15: interface.private_key: the private key is all zeros (a placeholder); fix: paste the 44-character output of `pinhole genkey` (or `wg genkey`)"],
    );
    check(
        PRIVATE_LINE,
        "private_key_file = \"nope.key\"",
        &["relay.toml:3:20: interface.private_key_file: cannot read private key file nope.key: No such file or directory (os error 2); fix: create it with `pinhole genkey > nope.key && chmod 600 nope.key`, or fix the path (a relative path is taken from the config file's directory)"],
    );
}

#[test]
fn golden_public_keys() {
    let second = format!("public_key = \"{SECOND_PUBLIC}\"");
    check(
        &second,
        &format!("public_key = \"{HOME_PUBLIC}\""),
        &["relay.toml:17:14: peer[1].public_key: peers \"home\" and \"peer2\" have the same public key; fix: a peer is its key: merge the two [[peer]] entries"],
    );
    check(
        &second,
        &format!("public_key = \"{OWN_PUBLIC}\""),
        &["relay.toml:17:14: peer[1].public_key: this is our own public key (from [interface]); fix: use the other peer's public key: run `pinhole pubkey < its.key` there"],
    );
    check(
        &second,
        "public_key = \"4Ot6fDtBuK4WVuP68Z/EatoJjeucMrH9hmIFFl9JuAA=\"",
        &["relay.toml:17:14: peer[1].public_key: not a public key: a low-order public key, which would make every shared secret zero; fix: paste the 44-character output of `pinhole pubkey` (or `wg pubkey`) run on that peer"],
    );
    check(
        &second,
        "public_key = \"hHwNLDdSNPNl5mCVUYejc1oPdhPRYJ06ak2MU66qWi=\"",
        &["relay.toml:17:14: peer[1].public_key: not a public key: a key is 44 characters of base64, this one has 43; fix: paste the 44-character output of `pinhole pubkey` (or `wg pubkey`) run on that peer"],
    );
    check(
        "preshared_key = \"qOLnk3M1zN/BXUr3nX/xaJDv0vRjDmJkSlbTZV6TeGc=\"",
        "preshared_key = \"qOLnk3M1zN/BXUr3nX/xaJDv0vRjDmJkSlbTZV6T*Gc=\"",
        &["relay.toml:14:17: peer[0].preshared_key: not a preshared key: not valid base64; fix: use the output of `wg genpsk`, the same on both peers"],
    );
}

#[test]
fn golden_duplicates_and_overlaps() {
    check(
        "name = \"home\"",
        "name = \"peer2\"",
        &["relay.toml:16:1: peer[1].name: peer name \"peer2\" is used twice; fix: give each peer its own name (a peer without a name is called peer1, peer2… by its position)"],
    );
    check(
        "allowed_ips = [\"10.77.0.3\"]",
        "allowed_ips = [\"10.77.0.0/24\"]",
        &["relay.toml:18:16: peer[1].allowed_ips: 10.77.0.0/24 of peer \"peer2\" overlaps 10.77.0.2/32 of peer \"home\"; fix: give each peer its own addresses; an address must route to exactly one peer"],
    );
    check(
        "name = \"ssh\"",
        "name = \"web\"",
        &["relay.toml:26:8: forward[1].name: forward name \"web\" is also used by forward[0]; fix: give each forward its own name"],
    );
    check(
        "listen = \"[::]:2222\"",
        "listen = \"127.0.0.1:8080\"",
        &["relay.toml:28:10: forward[1].listen: 127.0.0.1:8080 clashes with 0.0.0.0:8080 of forward[0] (web); fix: use a different port for one of them"],
    );
    let two_exposes = format!(
        "{GOOD}\n[[expose]]\nname = \"proxy\"\nlisten = \"10.77.0.1:1080\"\nto = \"127.0.0.1:9\"\n"
    );
    assert_eq!(
        errors(&two_exposes),
        [
            "relay.toml:40:8: expose[1].name: expose name \"proxy\" is also used by expose[0]; fix: give each expose its own name",
            "relay.toml:41:10: expose[1].listen: 10.77.0.1:1080 clashes with 10.77.0.1:1080 of expose[0] (proxy); fix: use a different port for one of them",
        ]
    );
}

#[test]
fn golden_addresses_ports_and_values() {
    check(
        "mtu = 1400",
        "mtu = 100",
        &["relay.toml:6:7: interface.mtu: mtu 100 is outside 1280..=9000; fix: use 1420 (the default) unless the path needs less; IPv6 needs at least 1280"],
    );
    check(
        "listen_port = 51820",
        "listen_port = 70000",
        &["relay.toml:4:15: interface.listen_port: 70000 is not a UDP port (0 to 65535); fix: use a port such as 51820, or remove the key for a random port"],
    );
    check(
        "address = [\"10.77.0.1/24\", \"fd77::1/64\"]",
        "address = [\"10.77.0.1/33\", \"fd77::1/64\"]",
        &["relay.toml:5:12: interface.address: prefix length `33` is not between 0 and 32; fix: write an address with its prefix, e.g. \"10.77.0.1/24\" or \"fd77::1/64\""],
    );
    check(
        "to = \"10.77.0.2:80\"",
        "to = \"10.77.0.2:0\"",
        &["relay.toml:23:6: forward[0].to: 10.77.0.2:0 has port 0; fix: use a real port, e.g. \"10.77.0.2:80\""],
    );
    check(
        "to = \"10.77.0.2:80\"",
        "to = \"10.77.0.2\"",
        &["relay.toml:23:6: forward[0].to: `10.77.0.2` has no port; fix: add the port, e.g. \"10.77.0.2:80\""],
    );
    check(
        "listen = \"0.0.0.0:8080\"",
        "listen = \"0.0.0.0:99999\"",
        &["relay.toml:22:10: forward[0].listen: port `99999` is not a number from 1 to 65535; fix: use a port from 1 to 65535"],
    );
    check(
        "listen = \"0.0.0.0:8080\"",
        "listen = \"localhost:8080\"",
        &["relay.toml:22:10: forward[0].listen: \"localhost\" is a host name; an IP address is needed here; fix: write an IP and port, e.g. \"0.0.0.0:8080\""],
    );
    check(
        "listen = \"10.77.0.1:1080\"",
        "listen = \"10.77.0.9:1080\"",
        &["relay.toml:36:10: expose[0].listen: 10.77.0.9 is not one of this peer's addresses (10.77.0.1, fd77::1); fix: listen on an [interface] address, e.g. \"10.77.0.1:1080\", or add 10.77.0.9 to [interface] address"],
    );
    check(
        "to = \"localhost:1080\"",
        "to = \"localhost:0\"",
        &["relay.toml:37:6: expose[0].to: localhost:0 has port 0; fix: use the service's real port, e.g. \"127.0.0.1:8000\""],
    );
    check(
        "endpoint = \"home.example.com:51820\"",
        "endpoint = \"home.example.com\"",
        &["relay.toml:12:12: peer[0].endpoint: `home.example.com` has no port; fix: add the port, e.g. \"home.example.com:51820\""],
    );
    check(
        "persistent_keepalive = 25",
        "persistent_keepalive = -1",
        &["relay.toml:13:24: peer[0].persistent_keepalive: -1 is not a number of seconds (0 to 65535); fix: use 25 behind NAT, or 0 to turn it off"],
    );
}

#[test]
fn golden_forward_targets() {
    check(
        "to = \"10.77.0.2:80\"",
        "to = \"10.77.0.1:80\"",
        &["relay.toml:23:6: forward[0].to: 10.77.0.1 is this peer's own address; fix: point `to` at another peer's overlay address, e.g. \"10.77.0.2:80\""],
    );
    check(
        "to = \"10.77.0.2:80\"",
        "to = \"0.0.0.0:80\"",
        &["relay.toml:23:6: forward[0].to: 0.0.0.0 is not a peer's address; fix: point `to` at another peer's overlay address, e.g. \"10.77.0.2:80\""],
    );
}

#[test]
fn a_broken_interface_still_lets_other_checks_run() {
    let text = GOOD
        .replacen(PRIVATE_LINE, "private_key = \"short\"", 1)
        .replacen(
            "listen = \"10.77.0.1:1080\"",
            "listen = \"10.77.0.9:1080\"",
            1,
        );
    let got = errors(&text);
    assert_eq!(got.len(), 2, "{got:#?}");
    assert!(got[0].starts_with("relay.toml:3:15: interface.private_key: not a private key"));
    assert!(got[1].starts_with("relay.toml:36:10: expose[0].listen: 10.77.0.9 is not one of"));
    // Our own key is still known when the address list is what is broken.
    let text = GOOD
        .replacen(
            "address = [\"10.77.0.1/24\"",
            "address = [\"10.77.0.1/99\"",
            1,
        )
        .replacen(
            &format!("public_key = \"{SECOND_PUBLIC}\""),
            &format!("public_key = \"{OWN_PUBLIC}\""),
            1,
        );
    let got = errors(&text);
    assert_eq!(got.len(), 2, "{got:#?}");
    assert!(got[1].contains("this is our own public key"));
}

#[test]
fn golden_services() {
    check(
        "connect_timeout = \"500ms\"",
        "connect_timeout = \"0s\"",
        &["relay.toml:30:19: forward[1].connect_timeout: must be more than zero; fix: write e.g. \"10s\" (units: ms, s, m, h, d; a bare number means seconds)"],
    );
    check(
        "idle_timeout = 3600",
        "idle_timeout = \"fast\"",
        &["relay.toml:31:16: forward[1].idle_timeout: `fast` is not a duration like \"500ms\", \"10s\", \"5m\" or \"1h\"; fix: write e.g. \"5m\" (units: ms, s, m, h, d; a bare number means seconds)"],
    );
    check(
        "max_connections = 8",
        "max_connections = 0",
        &["relay.toml:32:19: forward[1].max_connections: max_connections 0 is outside 1..=1000000; fix: use a positive limit, e.g. 1024 (the default)"],
    );
    check(
        "protocol = \"tcp\"",
        "protocol = \"sctp\"",
        &["relay.toml:27:12: forward[1].protocol: unknown protocol \"sctp\"; fix: use protocol = \"tcp\" (the default) or \"udp\""],
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    let text = GOOD
        .replacen("mtu = 1400", "mtu = 1", 1)
        .replacen("name = \"home\"", "name = \"home\"\ncolour = \"red\"", 1)
        .replacen("to = \"10.77.0.2:80\"", "to = \"10.9.9.9:80\"", 1)
        .replacen("protocol = \"tcp\"", "protocol = \"sctp\"", 1)
        .replacen("to = \"localhost:1080\"", "to = \"localhost\"", 1);
    let got = errors(&text);
    let keys: Vec<&str> = got
        .iter()
        .map(|e| e.split(": ").nth(1).unwrap_or(""))
        .collect();
    assert_eq!(
        keys,
        [
            "interface.mtu",
            "peer[0].colour",
            "forward[0].to",
            "forward[1].protocol",
            "expose[0].to"
        ],
        "{got:#?}"
    );
}
