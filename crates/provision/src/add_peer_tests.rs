use std::os::unix::fs::PermissionsExt as _;

use super::*;
use crate::files::tests::TempDir;
use crate::{init, InitOptions};

const HOME_PUB: &str = "pMe7GSRZIfTPEhITGJtPve7EX0hebHAN/1nFnUcEqAU=";

/// A relay config full of comments and hand layout, with a peer range and a forward after
/// the peers.
fn relay(extra_peers: &str) -> String {
    format!(
        "# my relay, hand-edited\n\
         [interface]\n\
         private_key = \"kJu76ItB5eMx/kpPdwx/SWBE9JnWORoU8w8orX7+3HE=\"  # keep secret\n\
         listen_port   =   51820\n\
         address = [ \"10.77.0.1/24\" ]   # subnet\n\
         \n\
         # --- peers ---\n\
         [[peer]]\n\
         name = \"home\"   # the NAS\n\
         public_key = \"{HOME_PUB}\"\n\
         allowed_ips = [\"10.77.0.2/32\", \"10.77.0.4/31\"]\n\
         {extra_peers}\
         \n\
         # forwards below: do not touch\n\
         [[forward]]\n\
         name = \"web\"\n\
         listen = \"0.0.0.0:8080\"\n\
         to = \"10.77.0.2:80\"\n\
         # end\n"
    )
}

fn opts(name: &str) -> AddPeerOptions {
    AddPeerOptions {
        name: name.into(),
        endpoint: Some("relay.example.com:51820".parse().unwrap()),
        preshared_key: false,
    }
}

fn parse(text: &str) -> Config {
    Config::parse(text, Path::new("t.toml")).unwrap().config
}

/// `new` is `old` with one block inserted: returns the block.
fn inserted<'a>(old: &str, new: &'a str) -> &'a str {
    let pre = old
        .bytes()
        .zip(new.bytes())
        .take_while(|(a, b)| a == b)
        .count();
    let post = old[pre..]
        .bytes()
        .rev()
        .zip(new[pre..].bytes().rev())
        .take_while(|(a, b)| a == b)
        .count();
    assert_eq!(
        pre + post,
        old.len(),
        "old text was changed, not only extended:\n{new}"
    );
    &new[pre..new.len() - post]
}

#[test]
fn appends_after_the_last_peer_keeping_every_other_byte() {
    let old = relay("");
    let added = add_peer(&old, Path::new("relay.toml"), &opts("phone")).unwrap();
    let block = inserted(&old, &added.relay_toml);
    assert!(block.contains("[[peer]]\nname = \"phone\""), "{block}");
    assert!(
        block.contains("allowed_ips = [\"10.77.0.3/32\"]"),
        "{block}"
    );
    assert!(!block.contains("preshared_key"));
    // Right after home's keys, before the forwards' comment.
    let at = added.relay_toml.find("name = \"phone\"").unwrap();
    assert!(at < added.relay_toml.find("# forwards below").unwrap());
    assert!(at > added.relay_toml.find("10.77.0.4/31").unwrap());
    let cfg = parse(&added.relay_toml);
    assert_eq!(cfg.peers[1].name, "phone");
    assert_eq!(added.address.to_string(), "10.77.0.3/24");
}

#[test]
fn new_peer_configs_match_the_relay() {
    let old = relay("");
    let mut o = opts("phone");
    o.preshared_key = true;
    let added = add_peer(&old, Path::new("relay.toml"), &o).unwrap();
    let relay = parse(&added.relay_toml);
    let peer = parse(&added.peer_toml);
    let new = &relay.peers[1];
    assert_eq!(new.public_key, peer.interface.private_key.public_key());
    assert_eq!(
        peer.peers[0].public_key,
        relay.interface.private_key.public_key()
    );
    assert_eq!(peer.interface.addresses[0].to_string(), "10.77.0.3/24");
    assert_eq!(peer.peers[0].allowed_ips[0].to_string(), "10.77.0.0/24");
    assert_eq!(
        peer.peers[0].endpoint.as_ref().unwrap().to_string(),
        "relay.example.com:51820"
    );
    assert_eq!(peer.peers[0].persistent_keepalive, Some(25));
    let psk = new.preshared_key.as_ref().unwrap().to_base64();
    assert_eq!(
        peer.peers[0].preshared_key.as_ref().unwrap().to_base64(),
        psk
    );
    // The wg-quick form says the same, and reads back to the same config.
    let wg = &added.peer_wg;
    assert!(wg.contains(&format!(
        "PrivateKey = {}",
        peer.interface.private_key.to_base64()
    )));
    assert!(wg.contains("Address = 10.77.0.3/24\n") && wg.contains("AllowedIPs = 10.77.0.0/24\n"));
    assert!(
        wg.contains("Endpoint = relay.example.com:51820\n")
            && wg.contains(&format!("PresharedKey = {psk}"))
    );
    assert!(wg.contains("PersistentKeepalive = 25\n"));
    // Its QR code fits an 80-column terminal, even with a preshared key.
    let qr = crate::qr_terminal(wg).unwrap();
    assert!(qr.lines().all(|l| l.chars().count() <= 80), "{qr}");
    let back = parse(&crate::import_wg(wg, Path::new("phone.conf")).unwrap().toml);
    assert_eq!(back.peers[0].name, "relay");
    assert_eq!(back.peers[0].public_key, peer.peers[0].public_key);
}

#[test]
fn without_endpoint_writes_a_marked_placeholder() {
    let mut o = opts("phone");
    o.endpoint = None;
    let added = add_peer(&relay(""), Path::new("relay.toml"), &o).unwrap();
    assert!(added.peer_toml.contains("# FILL IN"));
    assert!(added
        .peer_toml
        .contains("# endpoint = \"your.relay.example:51820\""));
    assert!(parse(&added.peer_toml).peers[0].endpoint.is_none());
    assert!(!added.peer_wg.lines().any(|l| l.starts_with("Endpoint")));
    assert!(added
        .peer_wg
        .contains("# Endpoint = your.relay.example:51820\n"));
}

#[test]
fn skips_used_addresses_and_errors_when_full() {
    let pc = PrivateKey::generate().public_key();
    let two = format!(
        "\n[[peer]]\nname = \"pc\"\npublic_key = \"{pc}\"\nallowed_ips = [\"10.77.0.3/32\"]\n"
    );
    let added = add_peer(&relay(&two), Path::new("relay.toml"), &opts("phone")).unwrap();
    // .1 relay, .2 home, .3 pc, .4-.5 home's range.
    assert_eq!(added.address.addr().to_string(), "10.77.0.6");
    let again = add_peer(&added.relay_toml, Path::new("relay.toml"), &opts("tab")).unwrap();
    assert_eq!(again.address.addr().to_string(), "10.77.0.7");

    let full = relay("")
        .replace("10.77.0.1/24", "10.77.0.1/29")
        .replace("\"10.77.0.4/31\"", "\"10.77.0.3/32\", \"10.77.0.4/30\"");
    let e = add_peer(&full, Path::new("relay.toml"), &opts("phone")).unwrap_err();
    assert!(matches!(e, ProvisionError::SubnetFull { .. }), "{e}");
    assert!(
        e.to_string().contains("relay.toml") && e.to_string().contains("fix:"),
        "{e}"
    );
}

#[test]
fn refuses_duplicate_or_bad_names_and_invalid_relays() {
    let e = add_peer(&relay(""), Path::new("relay.toml"), &opts("home")).unwrap_err();
    assert!(matches!(e, ProvisionError::DuplicatePeer { .. }), "{e}");
    let e = add_peer(&relay(""), Path::new("relay.toml"), &opts("my phone")).unwrap_err();
    assert!(e.to_string().contains("fix:"), "{e}");
    let broken = relay("").replace("10.77.0.2:80", "10.99.0.2:80");
    let e = add_peer(&broken, Path::new("relay.toml"), &opts("phone")).unwrap_err();
    assert!(matches!(e, ProvisionError::InvalidConfig { .. }), "{e}");
    assert!(
        e.to_string().contains("relay.toml:") && e.to_string().contains("pinhole check"),
        "{e}"
    );
}

#[test]
fn works_on_inline_peers_and_on_a_relay_without_peers() {
    let inline = format!(
        "peer = [{{ name = \"home\", public_key = \"{HOME_PUB}\", allowed_ips = [\"10.77.0.2/32\"] }}]\n[interface]\nprivate_key = \"kJu76ItB5eMx/kpPdwx/SWBE9JnWORoU8w8orX7+3HE=\"\naddress = [\"10.77.0.1/24\"]\n"
    );
    let added = add_peer(&inline, Path::new("r.toml"), &opts("phone")).unwrap();
    assert_eq!(parse(&added.relay_toml).peers[1].name, "phone");
    let lonely = "# alone\n[interface]\nprivate_key = \"kJu76ItB5eMx/kpPdwx/SWBE9JnWORoU8w8orX7+3HE=\"\naddress = [\"10.77.0.1/24\"]\n# trailing\n";
    let added = add_peer(lonely, Path::new("r.toml"), &opts("phone")).unwrap();
    inserted(lonely, &added.relay_toml);
    assert_eq!(added.address.addr().to_string(), "10.77.0.2");
}

#[test]
fn add_peer_to_file_rewrites_in_place_keeping_mode() {
    let d = TempDir::new("addpeer");
    let pair = init(&InitOptions {
        endpoint: "relay.example.com:51820".parse().unwrap(),
        forwards: vec!["8080:127.0.0.1:80".parse().unwrap()],
        subnet: None,
    })
    .unwrap();
    crate::write_init(&d.0, &pair).unwrap();
    let p = d.0.join("relay.toml");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
    let added = add_peer_to_file(&p, &opts("phone")).unwrap();
    assert_eq!(std::fs::read_to_string(&p).unwrap(), added.relay_toml);
    inserted(&pair.relay_toml, &added.relay_toml);
    assert_eq!(
        std::fs::metadata(&p).unwrap().permissions().mode() & 0o7777,
        0o640
    );
    assert_eq!(added.address.addr().to_string(), "10.77.0.3");
    Config::load(&p).unwrap();
    // A failure leaves the file as it was.
    let e = add_peer_to_file(&p, &opts("phone")).unwrap_err();
    assert!(matches!(e, ProvisionError::DuplicatePeer { .. }));
    assert_eq!(std::fs::read_to_string(&p).unwrap(), added.relay_toml);
    let e = add_peer_to_file(&d.0.join("missing.toml"), &opts("x")).unwrap_err();
    assert!(e.to_string().contains("missing.toml"), "{e}");
}
