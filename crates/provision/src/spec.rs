//! `--forward PUBLIC_PORT:HOST:PORT`, as `pinhole init` takes it.

use std::fmt;
use std::str::FromStr;

use pinhole_config::Endpoint;

use crate::ProvisionError;

/// One `--forward PUBLIC_PORT:HOST:PORT`: the relay's public TCP port `public_port` reaches
/// `target` (a host name, an IPv4 address or a bracketed IPv6 address, and a port) as seen
/// from the home peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardSpec {
    /// The port the relay listens on for the public (1 to 65535); the overlay port mirrors it.
    pub public_port: u16,
    /// The service, reached from home.
    pub target: Endpoint,
}

impl FromStr for ForwardSpec {
    type Err = ProvisionError;

    /// `8080:127.0.0.1:80`, `443:nas.lan:443`, `2222:[::1]:22`.
    fn from_str(s: &str) -> Result<Self, ProvisionError> {
        let err = |reason: String| ProvisionError::ForwardSpec {
            spec: s.to_string(),
            reason,
        };
        let (port, target) = s
            .split_once(':')
            .ok_or_else(|| err("no `:` after the public port".into()))?;
        let public_port = match port.parse::<u16>() {
            Ok(p) if p != 0 && port.bytes().all(|b| b.is_ascii_digit()) => p,
            _ => {
                return Err(err(format!(
                    "public port `{port}` is not a number from 1 to 65535"
                )))
            }
        };
        let target = target
            .parse::<Endpoint>()
            .map_err(|e| err(format!("target `{target}`: {e}")))?;
        Ok(ForwardSpec {
            public_port,
            target,
        })
    }
}

impl fmt::Display for ForwardSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.public_port, self.target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_ipv4_and_bracketed_ipv6() {
        let s: ForwardSpec = "8080:127.0.0.1:80".parse().unwrap();
        assert_eq!(
            (s.public_port, s.target.host.as_str(), s.target.port),
            (8080, "127.0.0.1", 80)
        );
        let s: ForwardSpec = "443:nas.lan:8443".parse().unwrap();
        assert_eq!(s.target.host, "nas.lan");
        let s: ForwardSpec = "2222:[::1]:22".parse().unwrap();
        assert_eq!(s.target.host, "::1");
        assert_eq!(s.to_string(), "2222:[::1]:22");
    }

    #[test]
    fn refuses_bad_specs_with_the_argument_and_a_fix() {
        for bad in [
            "8080",
            "0:h:1",
            "x:h:1",
            "+1:h:1",
            "70000:h:1",
            "80:h",
            "80:::1:22",
            "80:h:0",
        ] {
            let e = bad.parse::<ForwardSpec>().unwrap_err().to_string();
            assert!(
                e.contains(&format!("{bad:?}")) && e.contains("fix:"),
                "{bad}: {e}"
            );
        }
    }
}
