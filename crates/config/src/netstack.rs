//! `[interface] netstack` and `tun_name`: which TCP/IP stack carries the overlay.

use crate::error::Report;
use crate::raw::Field;
use crate::{Netstack, MAX_INTERFACE_NAME};

const NETSTACK_FIX: &str = "use netstack = \"userspace\" (the default: an embedded stack, no root \
     needed) or \"tun\" (a kernel TUN device: fastest, needs CAP_NET_ADMIN)";

const NAME_FIX: &str = "use 1 to 15 letters, digits, '_', '.' or '-', optionally with %d for \
     the first free number, e.g. \"pinhole0\" or \"relay%d\"";

/// The checked `netstack` (with `tun_name`); `None` when wrong (reported).
pub(crate) fn netstack(
    netstack: &Field<String>,
    tun_name: &Field<String>,
    report: &mut Report<'_>,
) -> Option<Netstack> {
    let tun = match netstack {
        Field::Missing => false,
        Field::Bad => return None,
        Field::Ok(v) => match v.value.as_str() {
            "userspace" => false,
            "tun" => true,
            other => {
                report.error(
                    &v.span,
                    "interface.netstack",
                    format!("unknown netstack {other:?}"),
                    NETSTACK_FIX,
                );
                return None;
            }
        },
    };
    let name = match tun_name {
        Field::Missing => None,
        Field::Bad => return None,
        Field::Ok(v) if !tun => {
            report.error(
                &v.span,
                "interface.tun_name",
                "tun_name is set but netstack is not \"tun\" (the userspace stack has no device)",
                "add netstack = \"tun\" to [interface], or remove tun_name",
            );
            return None;
        }
        Field::Ok(v) => match name_problem(&v.value) {
            Some(why) => {
                report.error(
                    &v.span,
                    "interface.tun_name",
                    format!("tun_name {:?} {why}", v.value),
                    NAME_FIX,
                );
                return None;
            }
            None => Some(v.value.clone()),
        },
    };
    Some(if tun {
        Netstack::Tun { name }
    } else {
        Netstack::Userspace
    })
}

/// Why `name` cannot name a network interface, if it cannot.
fn name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("is empty".into());
    }
    if name.len() > MAX_INTERFACE_NAME {
        return Some(format!(
            "is {} bytes; interface names are at most {MAX_INTERFACE_NAME}",
            name.len()
        ));
    }
    if name == "." || name == ".." {
        return Some("is not an interface name".into());
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "_.-%".contains(*c)))
    {
        return Some(format!("may not contain {c:?}"));
    }
    let percents = name.matches('%').count();
    if percents > 1 || (percents == 1 && !name.contains("%d")) {
        return Some("may use '%' only once, as %d".into());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::name_problem;
    use crate::golden_tests::{errors, parse, GOOD};
    use crate::Netstack;

    /// GOOD with `lines` added after `mtu = 1400` (line 6), so they start on line 7.
    fn with(lines: &str) -> String {
        GOOD.replacen("mtu = 1400", &format!("mtu = 1400\n{lines}"), 1)
    }

    #[test]
    fn userspace_by_default_tun_when_asked() {
        let netstack = |text: &str| parse(text).unwrap().config.interface.netstack;
        assert_eq!(netstack(GOOD), Netstack::Userspace);
        assert_eq!(
            netstack(&with("netstack = \"userspace\"")),
            Netstack::Userspace
        );
        assert_eq!(
            netstack(&with("netstack = \"tun\"")),
            Netstack::Tun { name: None }
        );
        let tun = netstack(&with("netstack = \"tun\"\ntun_name = \"relay%d\""));
        assert_eq!(
            tun,
            Netstack::Tun {
                name: Some("relay%d".into())
            }
        );
        let text = parse(&with("netstack = \"tun\"\ntun_name = \"pinhole0\""))
            .unwrap()
            .config
            .describe();
        assert!(
            text.contains("  netstack       tun (device pinhole0)\n"),
            "{text}"
        );
        let text = parse(GOOD).unwrap().config.describe();
        assert!(text.contains("  netstack       userspace\n"), "{text}");
    }

    #[test]
    fn golden_netstack_problems() {
        assert_eq!(
            errors(&with("netstack = \"kernel\"")),
            ["relay.toml:7:12: interface.netstack: unknown netstack \"kernel\"; fix: use netstack = \"userspace\" (the default: an embedded stack, no root needed) or \"tun\" (a kernel TUN device: fastest, needs CAP_NET_ADMIN)"]
        );
        assert_eq!(
            errors(&with("netstack = true")),
            ["relay.toml:7:12: interface.netstack: expected a string, found a boolean; fix: write netstack = \"...\" (in double quotes)"]
        );
        assert_eq!(
            errors(&with("tun_name = \"pinhole0\"")),
            ["relay.toml:7:12: interface.tun_name: tun_name is set but netstack is not \"tun\" (the userspace stack has no device); fix: add netstack = \"tun\" to [interface], or remove tun_name"]
        );
        assert_eq!(
            errors(&with("netstack = \"userspace\"\ntun_name = \"pinhole0\"")).len(),
            1
        );
        assert_eq!(
            errors(&with("netstack = \"tun\"\ntun_name = \"my tunnel device\"")),
            ["relay.toml:8:12: interface.tun_name: tun_name \"my tunnel device\" is 16 bytes; interface names are at most 15; fix: use 1 to 15 letters, digits, '_', '.' or '-', optionally with %d for the first free number, e.g. \"pinhole0\" or \"relay%d\""]
        );
        assert_eq!(
            errors(&with("netstack = \"tun\"\ntun_name = \"wg/0\"")),
            ["relay.toml:8:12: interface.tun_name: tun_name \"wg/0\" may not contain '/'; fix: use 1 to 15 letters, digits, '_', '.' or '-', optionally with %d for the first free number, e.g. \"pinhole0\" or \"relay%d\""]
        );
    }

    #[test]
    fn interface_names() {
        for good in [
            "pinhole0",
            "pinhole%d",
            "wg-relay.0",
            "a_b",
            "fifteen-bytes-x",
        ] {
            assert_eq!(name_problem(good), None, "{good}");
        }
        for bad in [
            "",
            "sixteen-bytes-xx",
            ".",
            "..",
            "a b",
            "a/b",
            "a:b",
            "é",
            "a%s",
            "a%d%d",
        ] {
            assert!(name_problem(bad).is_some(), "{bad:?}");
        }
    }
}
