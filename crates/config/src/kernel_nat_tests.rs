//! `kernel_nat = true` on forwards and exposes: what it accepts, and the exact problem for
//! each key or address it cannot honour.

use crate::golden_tests::{errors, parse};
use crate::ExposeTarget;

const NAT: &str = r#"[interface]
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
listen = "0.0.0.0:27015-27030"
to = "10.77.0.2:28015-28030"
kernel_nat = true

[[expose]]
name = "ssh"
listen = "10.77.0.1:2222"
to = "127.0.0.1:22"
kernel_nat = true
"#;

/// NAT with `from` replaced by `to` must fail with exactly `want`.
fn check(from: &str, to: &str, want: &[&str]) {
    assert!(NAT.contains(from), "{from}");
    assert_eq!(
        errors(&NAT.replacen(from, to, 1)),
        want,
        "{from:?} -> {to:?}"
    );
}

#[test]
fn kernel_nat_services_parse() {
    let c = parse(NAT).unwrap().config;
    assert!(c.forwards.iter().all(|f| f.kernel_nat));
    assert_eq!(c.forwards[1].port_count, 16);
    assert!(c.exposes[0].kernel_nat);
    assert!(matches!(&c.exposes[0].to, ExposeTarget::Addr(e) if e.host == "127.0.0.1"));
    // Access lists are the rule's own match, so they stay.
    let listed = NAT.replace(
        "to = \"10.77.0.2:8443\"\n",
        "to = \"10.77.0.2:8443\"\nallow = [\"203.0.113.0/24\"]\ndeny = [\"203.0.113.7\"]\n",
    );
    let listed = parse(&listed).unwrap().config;
    assert_eq!(listed.forwards[0].access.deny.len(), 1);
    let shown = listed.describe();
    assert!(
        shown.contains("203.0.113.0/24") && shown.contains("203.0.113.7"),
        "{shown}"
    );
    let off = parse(&NAT.replace("kernel_nat = true", "kernel_nat = false")).unwrap();
    assert!(!off.config.forwards[0].kernel_nat && !off.config.exposes[0].kernel_nat);
    let shown = c.describe();
    assert!(
        shown.contains("tcp 0.0.0.0:443 -> 10.77.0.2:8443 via peer home  (kernel NAT)"),
        "{shown}"
    );
}

#[test]
fn kernel_nat_needs_the_tun_stack() {
    check(
        "netstack = \"tun\"",
        "netstack = \"userspace\"",
        &[
            "relay.toml:15:14: forward[0].kernel_nat: kernel_nat needs [interface] netstack = \"tun\": the kernel can only route a service's packets into a TUN device; fix: set netstack = \"tun\" in [interface] (needs CAP_NET_ADMIN), or remove kernel_nat",
            "relay.toml:22:14: forward[1].kernel_nat: kernel_nat needs [interface] netstack = \"tun\": the kernel can only route a service's packets into a TUN device; fix: set netstack = \"tun\" in [interface] (needs CAP_NET_ADMIN), or remove kernel_nat",
            "relay.toml:28:14: expose[0].kernel_nat: kernel_nat needs [interface] netstack = \"tun\": the kernel can only route a service's packets into a TUN device; fix: set netstack = \"tun\" in [interface] (needs CAP_NET_ADMIN), or remove kernel_nat",
        ],
    );
}

#[test]
fn kernel_nat_refuses_what_only_pinhole_does() {
    check(
        "to = \"10.77.0.2:8443\"\n",
        "to = \"10.77.0.2:8443\"\nproxy_protocol = \"v2\"\nmax_connections = 10\n",
        &[
            "relay.toml:15:18: forward[0].proxy_protocol: proxy_protocol does not apply with kernel_nat: the kernel forwards these packets and Pinhole never sees the connections; fix: remove it, or remove kernel_nat to let Pinhole carry the connections itself",
            "relay.toml:16:19: forward[0].max_connections: max_connections does not apply with kernel_nat: the kernel forwards these packets and Pinhole never sees the connections; fix: remove it, or remove kernel_nat to let Pinhole carry the connections itself",
        ],
    );
    check(
        "to = \"127.0.0.1:22\"\n",
        "to = \"127.0.0.1:22\"\nrate_limit = \"5/s\"\nidle_timeout = \"1m\"\n",
        &[
            "relay.toml:28:14: expose[0].rate_limit: rate_limit does not apply with kernel_nat: the kernel forwards these packets and Pinhole never sees the connections; fix: remove it, or remove kernel_nat to let Pinhole carry the connections itself",
            "relay.toml:29:16: expose[0].idle_timeout: idle_timeout does not apply with kernel_nat: the kernel forwards these packets and Pinhole never sees the connections; fix: remove it, or remove kernel_nat to let Pinhole carry the connections itself",
        ],
    );
}

#[test]
fn kernel_nat_is_ipv4_with_fixed_addresses() {
    check(
        "to = \"127.0.0.1:22\"",
        "to = \"localhost:22\"",
        &["relay.toml:27:6: expose[0].to: kernel_nat needs an IPv4 address as the target, not \"localhost\"; fix: write the target's IPv4 address, e.g. \"127.0.0.1:80\", or remove kernel_nat"],
    );
    check(
        "listen = \"0.0.0.0:443\"",
        "listen = \"[::]:443\"",
        &["relay.toml:13:10: forward[0].listen: kernel_nat is IPv4 only (listen is [::]:443); fix: use an IPv4 address and a port, e.g. \"0.0.0.0:8080\", or remove kernel_nat"],
    );
    check(
        "to = \"127.0.0.1:22\"",
        "to = \"socks\"",
        &["relay.toml:27:6: expose[0].to: a SOCKS exit cannot be a kernel_nat expose: the exit reads each client's request; fix: remove kernel_nat from this expose"],
    );
}
