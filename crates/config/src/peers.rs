//! `[[peer]]`: each peer's name, keys, allowed_ips, endpoint and keepalive, and the checks
//! between peers (unique names and keys, no address routed to two peers).

use crate::error::{Report, Span};
use crate::keys::{PresharedKey, PublicKey};
use crate::raw::{RawPeer, Sp};
use crate::validate::{check_name, endpoint_fix, u16_field};
use crate::{Cidr, Endpoint, Peer};

/// What is known of one `[[peer]]` even when some of its keys are wrong, so checks across
/// peers and forwards still run (and report) in the same pass.
pub(crate) struct PeerInfo {
    /// The peer's name (given or default).
    pub name: String,
    name_span: Span,
    public_key: Option<(PublicKey, Span)>,
    /// The allowed_ips that parsed, host bits cleared, with where each was written.
    pub allowed_ips: Vec<(Cidr, Span)>,
}

/// Checks one `[[peer]]` (`own` is our public key, when it was good): the peer when all is
/// well, and what is known of it either way.
pub(crate) fn peer(
    raw: RawPeer,
    index: usize,
    own: Option<&PublicKey>,
    report: &mut Report<'_>,
) -> (Option<Peer>, PeerInfo) {
    let p = |k: &str| format!("peer[{index}].{k}");
    let span = raw.span.clone();
    let name_sp = raw.name.ok().unwrap_or(Sp {
        value: format!("peer{}", index + 1),
        span: span.clone(),
    });
    let name_ok = check_name(report, &name_sp, &p("name"));
    let public_key = raw
        .public_key
        .required(report, &span, &p("public_key"), "add public_key = \"<the peer's `pinhole pubkey` output>\"")
        .and_then(|k| {
            let parsed = k.value.trim().parse::<PublicKey>();
            match parsed {
                Ok(key) if Some(&key) == own => {
                    report.error(
                        &k.span,
                        &p("public_key"),
                        "this is our own public key (from [interface])",
                        "use the other peer's public key: run `pinhole pubkey < its.key` there",
                    );
                    None
                }
                Ok(key) => Some((key, k.span)),
                Err(e) => {
                    report.error(&k.span, &p("public_key"), format!("not a public key: {e}"), "paste the 44-character output of `pinhole pubkey` (or `wg pubkey`) run on that peer");
                    None
                }
            }
        });
    let preshared_key = match raw.preshared_key.ok() {
        None => Some(None),
        Some(k) => match PresharedKey::from_base64(k.value.trim()) {
            Ok(key) => Some(Some(key)),
            Err(e) => {
                report.error(
                    &k.span,
                    &p("preshared_key"),
                    format!("not a preshared key: {e}"),
                    "use the output of `wg genpsk`, the same on both peers",
                );
                None
            }
        },
    };
    let allowed = raw
        .allowed_ips
        .required(
            report,
            &span,
            &p("allowed_ips"),
            "add the peer's overlay address, e.g. allowed_ips = [\"10.77.0.2/32\"]",
        )
        .and_then(|list| allowed_ips(list, &p("allowed_ips"), report));
    let endpoint = match raw.endpoint.ok() {
        None => Some(None),
        Some(e) => match e.value.parse::<Endpoint>() {
            Ok(ep) => Some(Some(ep)),
            Err(err) => {
                report.error(
                    &e.span,
                    &p("endpoint"),
                    err.to_string(),
                    endpoint_fix(&err, "relay.example.com:51820"),
                );
                None
            }
        },
    };
    let keepalive = match raw.persistent_keepalive.ok() {
        None => Some(None),
        Some(v) => u16_field(
            report,
            &v,
            &p("persistent_keepalive"),
            "a number of seconds (0 to 65535)",
            "use 25 behind NAT, or 0 to turn it off",
        )
        .map(|s| (s != 0).then_some(s)),
    };
    let (allowed_ips, allowed_ok) = allowed.unwrap_or_default();
    let info = PeerInfo {
        name: name_sp.value.clone(),
        name_span: name_sp.span,
        public_key: public_key.clone(),
        allowed_ips: allowed_ips.clone(),
    };
    let peer = (|| {
        if !name_ok || !allowed_ok {
            return None;
        }
        Some(Peer {
            name: name_sp.value,
            public_key: public_key?.0,
            preshared_key: preshared_key?,
            allowed_ips: allowed_ips.into_iter().map(|(c, _)| c).collect(),
            endpoint: endpoint?,
            persistent_keepalive: keepalive?,
        })
    })();
    (peer, info)
}

/// The prefixes that parsed (with their spans), and whether all did.
fn allowed_ips(
    list: Sp<Vec<Sp<String>>>,
    key: &str,
    report: &mut Report<'_>,
) -> Option<(Vec<(Cidr, Span)>, bool)> {
    if list.value.is_empty() {
        report.error(
            &list.span,
            key,
            "no allowed_ips: this peer could send and receive nothing",
            "add the peer's overlay address, e.g. [\"10.77.0.2/32\"]",
        );
        return None;
    }
    let mut cidrs = Vec::new();
    let mut ok = true;
    for item in list.value {
        match item.value.parse::<Cidr>() {
            Ok(c) => {
                let net = c.to_network();
                if net != c {
                    report.warn(
                        &item.span,
                        key,
                        format!("{c} has host bits set and means {net}"),
                        format!(
                            "write \"{net}\", or \"{}/{}\" for the single address",
                            c.addr(),
                            if c.addr().is_ipv4() { 32 } else { 128 }
                        ),
                    );
                }
                cidrs.push((net, item.span));
            }
            Err(e) => {
                report.error(
                    &item.span,
                    key,
                    e.to_string(),
                    "write a prefix such as \"10.77.0.2/32\" or \"fd77::2/128\"",
                );
                ok = false;
            }
        }
    }
    Some((cidrs, ok))
}

/// Checks between peers: unique names, unique keys, no two peers claiming the same IPs
/// (WireGuard would silently give the address to whichever peer was configured last).
pub(crate) fn check_peers_together(peers: &[PeerInfo], report: &mut Report<'_>) {
    for (j, b) in peers.iter().enumerate() {
        for a in peers.iter().take(j) {
            if a.name == b.name {
                report.error(&b.name_span, &format!("peer[{j}].name"), format!("peer name {:?} is used twice", b.name), "give each peer its own name (a peer without a name is called peer1, peer2… by its position)");
            }
            if let (Some((ka, _)), Some((kb, kb_span))) = (&a.public_key, &b.public_key) {
                if ka == kb {
                    report.error(
                        kb_span,
                        &format!("peer[{j}].public_key"),
                        format!(
                            "peers {:?} and {:?} have the same public key",
                            a.name, b.name
                        ),
                        "a peer is its key: merge the two [[peer]] entries",
                    );
                }
            }
            for (cb, span) in &b.allowed_ips {
                if let Some((ca, _)) = a.allowed_ips.iter().find(|(ca, _)| ca.overlaps(cb)) {
                    report.error(
                        span,
                        &format!("peer[{j}].allowed_ips"),
                        format!("{cb} of peer {:?} overlaps {ca} of peer {:?}", b.name, a.name),
                        "give each peer its own addresses; an address must route to exactly one peer",
                    );
                }
            }
        }
    }
}
