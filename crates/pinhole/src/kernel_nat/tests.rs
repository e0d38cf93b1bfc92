use std::net::Ipv4Addr;
use std::path::Path;

use pinhole_config::Config;

use super::*;

const RELAY: &str = r#"[interface]
private_key = "kJu76ItB5eMx/kpPdwx/SWBE9JnWORoU8w8orX7+3HE="
address = ["10.77.0.1/24"]
netstack = "tun"

[[peer]]
name = "home"
public_key = "pMe7GSRZIfTPEhITGJtPve7EX0hebHAN/1nFnUcEqAU="
allowed_ips = ["10.77.0.2/32"]

[[forward]]
name = "web"
listen = "0.0.0.0:443"
to = "10.77.0.2:8443"
kernel_nat = true

[[forward]]
name = "game"
protocol = "udp"
listen = "203.0.113.1:27015-27016"
to = "10.77.0.2:28015-28016"
kernel_nat = true

[[forward]]
name = "same"
listen = "0.0.0.0:5000-5009"
to = "10.77.0.2:5000-5009"
kernel_nat = true

[[forward]]
name = "carried"
listen = "0.0.0.0:2222"
to = "10.77.0.2:22"
"#;

const HOME: &str = r#"[interface]
private_key = "kJu76ItB5eMx/kpPdwx/SWBE9JnWORoU8w8orX7+3HE="
address = ["10.77.0.2/24"]
netstack = "tun"

[[peer]]
name = "relay"
public_key = "pMe7GSRZIfTPEhITGJtPve7EX0hebHAN/1nFnUcEqAU="
allowed_ips = ["10.77.0.1/32"]

[[expose]]
name = "web"
listen = "10.77.0.2:8443"
to = "127.0.0.1:443"
kernel_nat = true

[[expose]]
name = "camera"
listen = "10.77.0.2:8554"
to = "192.168.1.50:554"
kernel_nat = true
"#;

fn config(text: &str) -> Config {
    Config::parse(text, Path::new("peer.toml")).unwrap().config
}

fn plan(text: &str) -> Plan {
    // In these tests only 127.0.0.0/8 is "this host".
    Plan::new(&config(text), "pinhole0", |ip: Ipv4Addr| ip.is_loopback())
}

#[test]
fn a_relay_dnats_its_public_ports_into_the_tunnel_from_its_overlay_address() {
    let p = plan(RELAY);
    assert_eq!(p.table(), "pinhole_pinhole0");
    assert!(p.needs_forwarding());
    let want = r#"table ip pinhole_pinhole0
delete table ip pinhole_pinhole0
table ip pinhole_pinhole0 {
    counter forward_web {}
    counter forward_game {}
    counter forward_same {}
    chain pre {
        type nat hook prerouting priority dstnat; policy accept;
        fib daddr type local tcp dport 443 counter name "forward_web" dnat to 10.77.0.2:8443 comment "web"
        ip daddr 203.0.113.1 udp dport 27015-27016 counter name "forward_game" dnat ip to udp dport map { 27015 : 10.77.0.2 . 28015, 27016 : 10.77.0.2 . 28016 } comment "game"
        fib daddr type local tcp dport 5000-5009 counter name "forward_same" dnat to 10.77.0.2 comment "same"
    }
    chain out {
        type nat hook output priority -100; policy accept;
        fib daddr type local ip daddr != 127.0.0.0/8 tcp dport 443 counter name "forward_web" dnat to 10.77.0.2:8443 comment "web"
        ip daddr 203.0.113.1 udp dport 27015-27016 counter name "forward_game" dnat ip to udp dport map { 27015 : 10.77.0.2 . 28015, 27016 : 10.77.0.2 . 28016 } comment "game"
        fib daddr type local ip daddr != 127.0.0.0/8 tcp dport 5000-5009 counter name "forward_same" dnat to 10.77.0.2 comment "same"
    }
    chain through {
        type filter hook forward priority filter; policy accept;
        oifname "pinhole0" tcp flags syn / syn,rst tcp option maxseg size set rt mtu
        ct status dnat ip daddr { 10.77.0.2 } oifname != "pinhole0" drop
    }
    chain post {
        type nat hook postrouting priority srcnat; policy accept;
        oifname "pinhole0" meta l4proto tcp ct original proto-dst 443 ct status dnat snat to 10.77.0.1 comment "web"
        oifname "pinhole0" meta l4proto udp ct original ip daddr 203.0.113.1 ct original proto-dst 27015-27016 ct status dnat snat to 10.77.0.1 comment "game"
        oifname "pinhole0" meta l4proto tcp ct original proto-dst 5000-5009 ct status dnat snat to 10.77.0.1 comment "same"
    }
}
"#;
    assert_eq!(p.script().unwrap(), want);
}

#[test]
fn a_home_dnats_its_overlay_ports_and_masquerades_only_toward_other_hosts() {
    let p = plan(HOME);
    assert!(p.exposes_loopback() && p.needs_forwarding());
    let s = p.script().unwrap();
    for line in [
        r#"iifname "pinhole0" ip daddr 10.77.0.2 tcp dport 8443 counter name "expose_web" dnat to 127.0.0.1:443 comment "web""#,
        r#"ip daddr 10.77.0.2 tcp dport 8554 counter name "expose_camera" dnat to 192.168.1.50:554 comment "camera""#,
        // Only the camera's flows, from the tunnel or from this host, and no other DNAT's.
        r#"meta l4proto tcp ct original ip daddr 10.77.0.2 ct original proto-dst 8554 ct status dnat masquerade comment "camera""#,
    ] {
        assert!(s.contains(line), "missing {line:?} in\n{s}");
    }
    // Nothing enters the tunnel by NAT here, so no source is rewritten toward it.
    assert!(!s.contains("snat to"), "{s}");

    let local_only = plan(&HOME.replace("192.168.1.50", "127.0.0.2"));
    assert!(!local_only.needs_forwarding());
    assert!(!local_only.script().unwrap().contains("masquerade"));
}

#[test]
fn services_without_kernel_nat_get_no_rules() {
    let p = plan(&RELAY.replace("kernel_nat = true\n", ""));
    assert!(p.is_empty());
    assert_eq!(
        p.script().unwrap(),
        "table ip pinhole_pinhole0\ndelete table ip pinhole_pinhole0\n"
    );
    assert!(!plan(RELAY).script().unwrap().contains("\"carried\""));
}

#[test]
fn names_nft_cannot_quote_and_a_missing_ipv4_address_are_refused() {
    let c = config(RELAY);
    let odd = Plan::new(&c, "tun\"x", |_: Ipv4Addr| false);
    let err = odd.script().unwrap_err().to_string();
    assert!(err.contains("tun_name"), "{err}");
    assert_eq!(odd.table(), "pinhole_tun_x");

    let v6 = config(&RELAY.replace("address = [\"10.77.0.1/24\"]", "address = [\"fd77::1/64\"]"));
    let err = Plan::new(&v6, "pinhole0", |_: Ipv4Addr| false)
        .script()
        .unwrap_err()
        .to_string();
    assert!(err.contains("IPv4 address in [interface] address"), "{err}");
}

/// The kernel's own parser is the judge of the scripts: `nft -c` checks without changing
/// anything. It needs root and the nft command.
#[test]
fn nft_accepts_the_scripts() {
    let root = std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false);
    let have_nft = Command::new("nft").arg("--version").output().is_ok();
    if !root || !have_nft {
        eprintln!("skipped: `nft -c` needs root and the nft command");
        return;
    }
    let listed = RELAY.replacen(
        "to = \"10.77.0.2:8443\"\n",
        "to = \"10.77.0.2:8443\"\nallow = [\"203.0.113.0/24\"]\ndeny = [\"203.0.113.7\"]\n",
        1,
    );
    for text in [RELAY, HOME, &listed] {
        let script = plan(text).script().unwrap();
        let mut child = Command::new("nft")
            .args(["-c", "-f", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}\n{script}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn access_lists_are_the_rules_own_match_and_ipv6_entries_match_no_one_here() {
    let listed = RELAY.replacen(
        "to = \"10.77.0.2:8443\"\n",
        "to = \"10.77.0.2:8443\"\nallow = [\"203.0.113.0/24\", \"2001:db8::/32\"]\ndeny = [\"203.0.113.7\"]\n",
        1,
    );
    let s = plan(&listed).script().unwrap();
    let want = r#"fib daddr type local ip saddr != { 203.0.113.7/32 } ip saddr { 203.0.113.0/24 } tcp dport 443 counter name "forward_web" dnat to 10.77.0.2:8443 comment "web""#;
    assert!(s.contains(want), "missing {want:?} in\n{s}");

    // Only IPv6 clients are allowed: no IPv4 client may use it, so no rule rewrites any.
    let v6_only = RELAY.replacen(
        "to = \"10.77.0.2:8443\"\n",
        "to = \"10.77.0.2:8443\"\nallow = [\"2001:db8::/32\"]\n",
        1,
    );
    let s = plan(&v6_only).script().unwrap();
    assert!(!s.contains("dnat to 10.77.0.2:8443"), "{s}");
    assert!(
        s.contains("comment \"game\""),
        "the other services keep their rules:\n{s}"
    );
}

#[test]
fn the_counters_nft_lists_are_read_by_name() {
    let json = br#"{"nftables": [{"metainfo": {"version": "1.0.6", "json_schema_version": 1}}, {"counter": {"family": "ip", "name": "forward_web-1.x", "table": "pinhole_x", "handle": 3, "packets": 42, "bytes": 2520}}, {"counter": {"family": "ip", "name": "expose_cam", "table": "pinhole_x", "handle": 4, "packets": 0, "bytes": 0}}]}"#;
    assert_eq!(
        parse_counters(json).unwrap(),
        vec![
            (counter_name("forward", "web-1.x"), 42),
            (counter_name("expose", "cam"), 0)
        ]
    );
    assert!(parse_counters(b"{}").is_err());
    assert!(parse_counters(b"not json").is_err());
}
