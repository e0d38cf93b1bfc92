//! Loading from disk (key files, permissions, encodings) and robustness: no input, however
//! mangled, makes loading panic.

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
    for (i, _) in GOOD.char_indices() {
        must_not_panic(&GOOD[..i]);
        must_not_panic(&GOOD[i..]);
    }
    // Deep nesting is refused by the parser's depth limit, not by overflowing the stack.
    must_not_panic(&format!("a = {}", "[".repeat(100_000)));
    must_not_panic(&format!(
        "[interface]\naddress = {}",
        "{ a = ".repeat(10_000)
    ));
    let interesting = "[]{}=\"'\n#.:/,0-_x\\".as_bytes();
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    for _ in 0..3000 {
        let mut bytes = GOOD.as_bytes().to_vec();
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

/// The examples in docs/config.md must be valid, and the printed `pinhole check` output
/// must be what `describe` really prints.
#[test]
fn docs_examples_are_valid() {
    let doc = include_str!("../../../docs/config.md");
    let blocks: Vec<&str> = doc
        .split("```toml\n")
        .skip(1)
        .filter_map(|b| b.split("```").next())
        .filter(|b| b.starts_with("[interface]"))
        .collect();
    assert_eq!(blocks.len(), 2, "relay and home examples");
    let relay = parse(blocks[0]).unwrap().config;
    let home = parse(blocks[1]).unwrap().config;
    assert_eq!(
        relay.interface.private_key.public_key(),
        home.peers[0].public_key
    );
    assert_eq!(
        home.interface.private_key.public_key(),
        relay.peers[0].public_key
    );
    let printed = doc
        .split("`pinhole check -c relay.toml` prints:\n\n```text\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .unwrap();
    assert_eq!(relay.describe(), printed);
}
