//! `[interface] netstack` and `tun_name`: which TCP/IP stack carries the overlay.

use crate::error::Report;
use crate::raw::Field;
use crate::{Netstack, MAX_INTERFACE_NAME, MAX_STACK_CONNECTIONS};

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

/// The checked `[interface] max_connections`: the userspace stack's connection cap,
/// [`MAX_STACK_CONNECTIONS`] when absent. `None` when wrong (reported). `netstack` is `None`
/// when that key was wrong itself; the cap is then only range-checked.
pub(crate) fn stack_connections(
    field: &Field<i64>,
    netstack: Option<&Netstack>,
    report: &mut Report<'_>,
) -> Option<usize> {
    let v = match field {
        Field::Missing => return Some(MAX_STACK_CONNECTIONS),
        Field::Bad => return None,
        Field::Ok(v) => v,
    };
    if matches!(netstack, Some(Netstack::Tun { .. })) {
        report.error(
            &v.span,
            "interface.max_connections",
            "max_connections caps the userspace stack; with netstack = \"tun\" the kernel carries the connections",
            "remove max_connections from [interface] (each forward's and expose's own max_connections still applies)",
        );
        return None;
    }
    match usize::try_from(v.value) {
        Ok(n) if (1..=MAX_STACK_CONNECTIONS).contains(&n) => Some(n),
        _ => {
            report.error(
                &v.span,
                "interface.max_connections",
                format!(
                    "max_connections {} is outside 1..={MAX_STACK_CONNECTIONS}",
                    v.value
                ),
                format!("use at most {MAX_STACK_CONNECTIONS} (one overlay port per connection), or remove the key for that default"),
            );
            None
        }
    }
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
    use crate::{Netstack, MAX_STACK_CONNECTIONS};

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
    fn stack_connection_cap_defaults_to_the_ceiling_and_can_be_lowered() {
        let cap = |text: &str| parse(text).unwrap().config.interface.max_connections;
        assert_eq!(cap(GOOD), MAX_STACK_CONNECTIONS);
        assert_eq!(cap(&with("max_connections = 10000")), 10_000);
        assert_eq!(cap(&with("max_connections = 16384")), 16_384);
        assert_eq!(cap(&with("max_connections = 1")), 1);
        let text = parse(&with("max_connections = 2000"))
            .unwrap()
            .config
            .describe();
        assert!(
            text.contains("  max conns      2000 (all forwards and exposes)\n"),
            "{text}"
        );
        let tun = parse(&with("netstack = \"tun\""))
            .unwrap()
            .config
            .describe();
        assert!(!tun.contains("max conns"), "{tun}");
    }

    #[test]
    fn golden_stack_connection_cap_problems() {
        assert_eq!(
            errors(&with("max_connections = 16385")),
            ["relay.toml:7:19: interface.max_connections: max_connections 16385 is outside 1..=16384; fix: use at most 16384 (one overlay port per connection), or remove the key for that default"]
        );
        assert_eq!(
            errors(&with("max_connections = 0")),
            ["relay.toml:7:19: interface.max_connections: max_connections 0 is outside 1..=16384; fix: use at most 16384 (one overlay port per connection), or remove the key for that default"]
        );
        assert_eq!(errors(&with("max_connections = -5")).len(), 1);
        assert_eq!(
            errors(&with("max_connections = \"many\"")),
            ["relay.toml:7:19: interface.max_connections: expected an integer, found a string; fix: write max_connections = a number without quotes"]
        );
        assert_eq!(
            errors(&with("netstack = \"tun\"\nmax_connections = 5000")),
            ["relay.toml:8:19: interface.max_connections: max_connections caps the userspace stack; with netstack = \"tun\" the kernel carries the connections; fix: remove max_connections from [interface] (each forward's and expose's own max_connections still applies)"]
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
