//! Which keys each table may have, where a key written in the wrong kind of service belongs,
//! and the near-name suggestions (`AllowedIPs` → `allowed_ips`) for the ones we do not know.

/// The top-level tables.
pub(crate) const TOP_KEYS: &[&str] = &["interface", "peer", "forward", "expose", "metrics"];
/// The keys of `[interface]`.
pub(crate) const INTERFACE_KEYS: &[&str] = &[
    "private_key",
    "private_key_file",
    "listen_port",
    "address",
    "mtu",
    "route_between_peers",
    "control_socket",
    "uapi_socket",
    "netstack",
    "tun_name",
    "max_connections",
];
/// The keys of `[metrics]`.
pub(crate) const METRICS_KEYS: &[&str] = &["listen"];
/// The keys of `[[peer]]`.
pub(crate) const PEER_KEYS: &[&str] = &[
    "name",
    "public_key",
    "preshared_key",
    "allowed_ips",
    "endpoint",
    "persistent_keepalive",
];
/// The keys every `[[forward]]` and `[[expose]]` has.
const SERVICE_KEYS: [&str; 12] = [
    "name",
    "protocol",
    "listen",
    "to",
    "connect_timeout",
    "idle_timeout",
    "max_connections",
    "max_sessions",
    "allow",
    "deny",
    "rate_limit",
    "kernel_nat",
];
/// The keys of `[[forward]]`.
pub(crate) const FORWARD_KEYS: &[&str] = &FORWARD;
const FORWARD: [&str; 14] = then(SERVICE_KEYS, ["proxy_protocol", "accept_proxy_protocol"]);
/// The keys of `[[expose]]`.
pub(crate) const EXPOSE_KEYS: &[&str] = &EXPOSE;
const EXPOSE: [&str; 16] = then(
    SERVICE_KEYS,
    [
        "username",
        "password",
        "allow_destinations",
        "deny_destinations",
    ],
);

/// `a` followed by `b` (`N` is their total length), for key lists that share a start.
const fn then<const A: usize, const B: usize, const N: usize>(
    a: [&'static str; A],
    b: [&'static str; B],
) -> [&'static str; N] {
    assert!(A + B == N, "N must be the total length");
    let mut out = [""; N];
    let mut i = 0;
    while i < A {
        out[i] = a[i];
        i += 1;
    }
    while i < N {
        out[i] = b[i - A];
        i += 1;
    }
    out
}
/// Keys of one kind of service written in the other, with where they belong.
const FORWARD_ONLY: &str = "it belongs to a TCP [[forward]] (the listener clients reach first)";
const EXPOSE_ONLY: &str = "it belongs to an [[expose]] with to = \"socks\" (a SOCKS exit)";
/// Keys refused in a `[[forward]]`, with where they belong.
pub(crate) const NOT_IN_FORWARD: &[(&str, &str)] = &[
    ("username", EXPOSE_ONLY),
    ("password", EXPOSE_ONLY),
    ("allow_destinations", EXPOSE_ONLY),
    ("deny_destinations", EXPOSE_ONLY),
];
/// Keys refused in an `[[expose]]`, with where they belong.
pub(crate) const NOT_IN_EXPOSE: &[(&str, &str)] = &[
    ("proxy_protocol", FORWARD_ONLY),
    ("accept_proxy_protocol", FORWARD_ONLY),
];

/// The valid name closest to a misspelt one: the same ignoring case, `_` and `-` (wg-quick's
/// `AllowedIPs` is our `allowed_ips`), or within two edits.
pub(crate) fn suggest<'v>(name: &str, valid: &[&'v str]) -> Option<&'v str> {
    let norm = |s: &str| -> String {
        s.chars()
            .filter(|c| *c != '_' && *c != '-')
            .flat_map(char::to_lowercase)
            .collect()
    };
    let n = norm(name);
    valid
        .iter()
        .map(|v| (edit_distance(&n, &norm(v)), *v))
        .filter(|(d, v)| *d <= 2 && *d < v.len())
        .min_by_key(|(d, _)| *d)
        .map(|(_, v)| v)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().take(64).collect();
    let b: Vec<char> = b.chars().take(64).collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let subst = prev[j] + usize::from(ca != cb);
            cur[j + 1] = subst.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_near_names() {
        assert_eq!(suggest("peers", TOP_KEYS), Some("peer"));
        assert_eq!(suggest("interfaces", TOP_KEYS), Some("interface"));
        assert_eq!(suggest("Peer", TOP_KEYS), Some("peer"));
        assert_eq!(suggest("AllowedIPs", PEER_KEYS), Some("allowed_ips"));
        assert_eq!(suggest("allowed_ip", PEER_KEYS), Some("allowed_ips"));
        assert_eq!(
            suggest("PersistentKeepalive", PEER_KEYS),
            Some("persistent_keepalive")
        );
        assert_eq!(suggest("banana", PEER_KEYS), None);
        assert_eq!(suggest("max_session", FORWARD_KEYS), Some("max_sessions"));
        assert_eq!(suggest("ratelimit", EXPOSE_KEYS), Some("rate_limit"));
    }
}
