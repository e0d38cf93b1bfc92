//! Loading from disk (key files, permissions, encodings) and robustness: no input, however
//! mangled, makes loading panic.

use crate::forwarding_tests::FULL;
use crate::golden_tests::{parse, GOOD, OWN_PUBLIC, PRIVATE_LINE};
use crate::{Config, ConfigError};

/// A fresh directory for files a test writes; removed by the test.
fn temp_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("pinhole-config-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[cfg(unix)]
#[test]
fn key_file_is_read_relative_to_config_and_warns_when_shared() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = temp_dir("keyfile");
    let key_path = dir.join("relay.key");
    std::fs::write(&key_path, "kJu76ItB5eMx/kpPdwx/SWBE9JnWORoU8w8orX7+3HE=\n").unwrap();
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let config_path = dir.join("relay.toml");
    std::fs::write(
        &config_path,
        GOOD.replacen(PRIVATE_LINE, "private_key_file = \"relay.key\"", 1),
    )
    .unwrap();

    let loaded = Config::load(&config_path).unwrap();
    assert_eq!(
        loaded.config.interface.private_key.public_key().to_string(),
        OWN_PUBLIC
    );
    let shown = key_path.display();
    assert_eq!(
        loaded.warnings.iter().map(ToString::to_string).collect::<Vec<_>>(),
        [format!(
            "{}:3:20: interface.private_key_file: private key file {shown} is readable by group or others (mode 644); fix: chmod 600 {shown}",
            config_path.display()
        )]
    );

    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(Config::load(&config_path).unwrap().warnings.is_empty());

    std::fs::write(&key_path, "garbage\n").unwrap();
    let Err(ConfigError::Invalid(p)) = Config::load(&config_path) else {
        panic!("accepted a bad key file")
    };
    assert_eq!(
        p[0].message,
        format!(
            "{shown} does not hold a private key: a key is 44 characters of base64, this one has 7"
        )
    );

    let _ = std::fs::remove_dir_all(&dir);
    let err = Config::load(&config_path).unwrap_err();
    assert!(matches!(err, ConfigError::Io { .. }));
    assert_eq!(
        err.to_string(),
        format!("cannot read config file {}", config_path.display())
    );
}

#[test]
fn load_reports_non_utf8_with_a_position() {
    let dir = temp_dir("utf8");
    let path = dir.join("bad.toml");
    std::fs::write(&path, b"[interface]\nmtu = \xff\n").unwrap();
    let Err(ConfigError::Invalid(p)) = Config::load(&path) else {
        panic!("accepted non-UTF-8")
    };
    assert_eq!(
        (p[0].line, p[0].column, p[0].message.as_str()),
        (2, 7, "file is not UTF-8 text")
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A tiny deterministic generator, so the fuzz-ish test needs no extra crates and always
/// tries the same inputs.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Loading must return Ok or a non-empty list of well-placed problems, and never panic.
fn must_not_panic(text: &str) {
    match parse(text) {
        Ok(_) => {}
        Err(ConfigError::Invalid(problems)) => {
            assert!(!problems.is_empty());
            let lines = text.lines().count() + 1;
            for p in &problems {
                assert!(
                    p.line >= 1 && p.line <= lines && p.column >= 1,
                    "{p} in\n{text}"
                );
            }
        }
        Err(e) => panic!("parse gave {e}"),
    }
}

#[test]
fn mutated_configs_never_panic() {
    mutate(GOOD, 0x9E37_79B9_7F4A_7C15);
}

/// The same with every key of every kind of forwarding (UDP, ranges, SOCKS, PROXY protocol,
/// access lists, rates, metrics, sockets).
#[test]
fn mutated_full_configs_never_panic() {
    mutate(FULL, 0x2545_F491_4F6C_DD1D);
    // Hand-picked edges of the new syntax.
    for (from, to) in [
        ("27015-27030\"", "65535-65535\""),
        ("27015-27030\"", "1-\""),
        ("27015-27030\"", "-\""),
        ("27015-27030\"", "99999999999999999999-1\""),
        ("27015-27030\"", "27015-99999999999999999999\""),
        ("\"*:25\"", "\"[\""),
        ("\"*:25\"", "\"[]:\""),
        ("\"*:25\"", "\"*:-\""),
        ("\"*:25\"", "\"[::/0]:0-0\""),
        ("\"20/s\"", "\"/\""),
        ("\"20/s\"", "\"4294967296/s\""),
        ("\"alice\"", "\"é\""),
        ("\"run/relay.sock\"", "\"\\u0000\""),
        ("\"socks\"", "\"socks:1\""),
        ("\"socks\"", "\"[::1]:1-2\""),
    ] {
        assert!(FULL.contains(from), "{from}");
        must_not_panic(&FULL.replace(from, to));
    }
}

fn mutate(good: &str, seed: u64) {
    for (i, _) in good.char_indices() {
        must_not_panic(&good[..i]);
        must_not_panic(&good[i..]);
    }
    // Deep nesting is refused by the parser's depth limit, not by overflowing the stack.
    must_not_panic(&format!("a = {}", "[".repeat(100_000)));
    must_not_panic(&format!(
        "[interface]\naddress = {}",
        "{ a = ".repeat(10_000)
    ));
    let interesting = "[]{}=\"'\n#.:/,0-_x\\".as_bytes();
    let mut rng = XorShift(seed);
    for _ in 0..3000 {
        let mut bytes = good.as_bytes().to_vec();
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(bytes.len());
            match rng.below(4) {
                0 => bytes[at] ^= 1 << rng.below(8),
                1 => {
                    bytes.remove(at);
                }
                2 => bytes.insert(at, interesting[rng.below(interesting.len())]),
                _ => {
                    let end = (at + rng.below(40)).min(bytes.len());
                    let copy = bytes[at..end].to_vec();
                    let to = rng.below(bytes.len());
                    bytes.splice(to..to, copy);
                }
            }
        }
        must_not_panic(&String::from_utf8_lossy(&bytes));
    }
}

/// The examples in docs/config.md must be valid, each peer's keys must match the peers that
/// name it, every `[[forward]]`/`[[expose]]`/`[metrics]` snippet must be valid, and the printed
/// `pinhole check` outputs must be what `describe` really prints.
#[test]
fn docs_examples_are_valid() {
    let doc = include_str!("../../../docs/config.md");
    let blocks: Vec<&str> = doc
        .split("```toml\n")
        .skip(1)
        .filter_map(|b| b.split("```").next())
        .collect();
    let configs: Vec<Config> = blocks
        .iter()
        .filter(|b| b.starts_with("[interface]"))
        .map(|b| match parse(b) {
            Ok(l) => l.config,
            Err(e) => panic!("{e}\nin\n{b}"),
        })
        .collect();
    assert_eq!(
        configs.len(),
        5,
        "relay and home, then relay, home and laptop"
    );
    // Every peer named in a config is the interface of another example, and names it back.
    for (a, b) in [(0, 1), (1, 0), (2, 3), (3, 2), (2, 4), (4, 2)] {
        let (a, b) = (&configs[a], &configs[b]);
        let public = a.interface.private_key.public_key();
        assert!(b.peers.iter().any(|p| p.public_key == public));
    }
    // Snippets: forwards (and metrics) go on a relay, exposes on a peer that owns the address.
    let relay_base = format!(
        "[interface]\n{PRIVATE_LINE}\naddress = [\"10.77.0.1/24\", \"fd77::1/64\"]\n\
         [[peer]]\npublic_key = \"pMe7GSRZIfTPEhITGJtPve7EX0hebHAN/1nFnUcEqAU=\"\n\
         allowed_ips = [\"10.77.0.2/32\", \"fd77::2/128\"]\n"
    );
    let expose_base =
        format!("[interface]\n{PRIVATE_LINE}\naddress = [\"10.77.0.1/24\", \"10.77.0.2/24\"]\n");
    let mut snippets = 0;
    for b in &blocks {
        let base = if b.starts_with("[[forward]]") || b.starts_with("[metrics]") {
            &relay_base
        } else if b.starts_with("[[expose]]") {
            &expose_base
        } else {
            continue;
        };
        // A kernel NAT snippet says its [interface] has the TUN stack.
        let base = if b.contains("kernel_nat = true") {
            base.replacen("\n", "\nnetstack = \"tun\"\n", 1)
        } else {
            base.clone()
        };
        if let Err(e) = parse(&format!("{base}{b}")) {
            panic!("{e}\nin\n{b}");
        }
        snippets += 1;
    }
    assert!(snippets >= 6, "{snippets}");
    let printed = |marker: &str| {
        doc.split(&format!("{marker}\n\n```text\n"))
            .nth(1)
            .and_then(|rest| rest.split("```").next())
            .unwrap()
            .to_string()
    };
    assert_eq!(
        configs[0].describe(),
        printed("`pinhole check -c relay.toml` prints:")
    );
    assert_eq!(
        configs[2].describe(),
        printed("`pinhole check -c relay.toml` for this relay prints:")
    );
}
