//! Who may open a connection (or a UDP session) on a public listener: `allow`/`deny` address
//! blocks on the client address, and a per-source rate of new connections (pure; `now` is
//! passed in, so the tests need no clock).

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::cidr::{self, Cidr};

/// At most `count` new connections per `per` from one source, with bursts of up to `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Connections allowed per period, and the burst size. Zero refuses every connection.
    pub count: u32,
    /// The period.
    pub per: Duration,
}

/// Access control of one forward, on the client's address (v4-mapped IPv6 counts as IPv4).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Admission {
    /// When not empty, only clients in these blocks are served.
    pub allow: Vec<(IpAddr, u8)>,
    /// Clients in these blocks are refused, even when `allow` names them: deny wins.
    pub deny: Vec<(IpAddr, u8)>,
    /// New connections per source; `None` is no limit.
    pub rate: Option<Rate>,
}

/// Why a client was turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Its address is in `deny`.
    Denied,
    /// `allow` is not empty and does not contain its address.
    NotAllowed,
    /// Its source opened connections faster than `rate`.
    RateLimited,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refused::Denied => "client address is in deny",
            Refused::NotAllowed => "client address is not in allow",
            Refused::RateLimited => "too many new connections from this source",
        })
    }
}

/// How many sources the rate limiter remembers at most.
///
/// Why bounded, and why evicting the oldest: every new source address adds an entry, so an
/// attacker with many addresses (trivial with IPv6, hence sources are keyed by /64 there) could
/// otherwise grow the table without end. 65,536 entries cost about 4 MiB at worst. When full,
/// the entry created first is dropped: a source forgotten that way merely gets a fresh burst,
/// so the bound can at most loosen the limit for sources seen long ago, never refuse anyone
/// wrongly, and each insert stays O(1).
pub const MAX_TRACKED_SOURCES: usize = 65_536;

/// Token buckets per source (pure).
#[derive(Debug)]
pub(crate) struct SourceRates {
    rate: Rate,
    max: usize,
    buckets: HashMap<IpAddr, Bucket>,
    /// Insertion order, for eviction: (source, serial of its bucket at insertion).
    order: VecDeque<(IpAddr, u64)>,
    serial: u64,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    updated: Instant,
    serial: u64,
}

impl SourceRates {
    pub(crate) fn new(rate: Rate, max: usize) -> Self {
        Self {
            rate,
            max: max.max(1),
            buckets: HashMap::new(),
            order: VecDeque::new(),
            serial: 0,
        }
    }

    /// Takes one token for `ip` at `now`; `false` when its bucket is empty.
    pub(crate) fn take(&mut self, ip: IpAddr, now: Instant) -> bool {
        let key = source_key(ip);
        let cap = f64::from(self.rate.count);
        let per_sec = if self.rate.per.is_zero() {
            f64::INFINITY
        } else {
            cap / self.rate.per.as_secs_f64()
        };
        if !self.buckets.contains_key(&key) {
            self.evict_for_one();
            self.serial += 1;
            self.order.push_back((key, self.serial));
            self.buckets.insert(
                key,
                Bucket {
                    tokens: cap,
                    updated: now,
                    serial: self.serial,
                },
            );
        }
        let Some(b) = self.buckets.get_mut(&key) else {
            return false;
        };
        let elapsed = now.saturating_duration_since(b.updated).as_secs_f64();
        b.tokens = (b.tokens + elapsed * per_sec).min(cap);
        b.updated = now.max(b.updated);
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn evict_for_one(&mut self) {
        while self.buckets.len() >= self.max {
            let Some((key, serial)) = self.order.pop_front() else {
                return;
            };
            if self.buckets.get(&key).is_some_and(|b| b.serial == serial) {
                self.buckets.remove(&key);
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.buckets.len()
    }
}

/// One source for rate limiting: an IPv4 address, or an IPv6 /64 (one host's usual share).
fn source_key(ip: IpAddr) -> IpAddr {
    match cidr::canonical(ip) {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !0u128 >> 64 << 64)),
        v4 => v4,
    }
}

/// [`Admission`] with its state, shared by the accept loop and the connection tasks.
#[derive(Debug)]
pub(crate) struct Gate {
    allow: Vec<Cidr>,
    deny: Vec<Cidr>,
    rates: Option<Mutex<SourceRates>>,
}

impl Gate {
    pub(crate) fn new(admission: Admission) -> Self {
        Self {
            allow: admission.allow,
            deny: admission.deny,
            rates: admission
                .rate
                .map(|r| Mutex::new(SourceRates::new(r, MAX_TRACKED_SOURCES))),
        }
    }

    /// Admits a new connection or session from `ip` at `now`, or says why not. A refused
    /// address takes no token.
    pub(crate) fn check(&self, ip: IpAddr, now: Instant) -> Result<(), Refused> {
        self.check_access(ip)?;
        self.check_rate(ip, now)
    }

    /// Only the allow/deny lists. Behind a load balancer (`accept_proxy_protocol`) they
    /// apply to the balancer's own address: a header is believed only from whom the lists
    /// admit, so nobody else can claim an address.
    pub(crate) fn check_access(&self, ip: IpAddr) -> Result<(), Refused> {
        if cidr::any_contains(&self.deny, ip) {
            return Err(Refused::Denied);
        }
        if !self.allow.is_empty() && !cidr::any_contains(&self.allow, ip) {
            return Err(Refused::NotAllowed);
        }
        Ok(())
    }

    /// Only the per-source rate limit (behind a balancer: per client named in the header).
    pub(crate) fn check_rate(&self, ip: IpAddr, now: Instant) -> Result<(), Refused> {
        if let Some(rates) = &self.rates {
            let mut rates = crate::lock(rates);
            if !rates.take(ip, now) {
                return Err(Refused::RateLimited);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn net(s: &str) -> Cidr {
        let (a, l) = s.split_once('/').unwrap();
        (ip(a), l.parse().unwrap())
    }

    #[test]
    fn allow_and_deny_table() {
        let now = Instant::now();
        let open = Gate::new(Admission::default());
        let gate = Gate::new(Admission {
            allow: vec![net("203.0.113.0/24"), net("2001:db8::/32")],
            deny: vec![net("203.0.113.66/32")],
            rate: None,
        });
        let only_deny = Gate::new(Admission {
            deny: vec![net("198.51.100.0/24")],
            ..Admission::default()
        });
        let cases = [
            (&open, "192.0.2.1", Ok(())),
            (&gate, "203.0.113.5", Ok(())),
            (&gate, "::ffff:203.0.113.5", Ok(())),
            (&gate, "203.0.113.66", Err(Refused::Denied)),
            (&gate, "::ffff:203.0.113.66", Err(Refused::Denied)),
            (&gate, "192.0.2.1", Err(Refused::NotAllowed)),
            (&gate, "2001:db8::9", Ok(())),
            (&gate, "2001:db9::9", Err(Refused::NotAllowed)),
            (&only_deny, "198.51.100.3", Err(Refused::Denied)),
            (&only_deny, "192.0.2.1", Ok(())),
        ];
        for (g, a, want) in cases {
            assert_eq!(g.check(ip(a), now), want, "{a}");
        }
    }

    #[test]
    fn a_burst_then_the_refill_rate() {
        let t0 = Instant::now();
        let mut r = SourceRates::new(
            Rate {
                count: 3,
                per: Duration::from_secs(3),
            },
            16,
        );
        let a = ip("192.0.2.1");
        assert!(r.take(a, t0) && r.take(a, t0) && r.take(a, t0));
        assert!(!r.take(a, t0));
        assert!(
            r.take(ip("192.0.2.2"), t0),
            "another source has its own bucket"
        );
        assert!(!r.take(a, t0 + Duration::from_millis(900)));
        assert!(
            r.take(a, t0 + Duration::from_secs(1)),
            "one token per second"
        );
        assert!(!r.take(a, t0 + Duration::from_secs(1)));
        // After a long pause the bucket holds `count`, not more.
        let later = t0 + Duration::from_secs(3600);
        assert!((0..3).all(|_| r.take(a, later)));
        assert!(!r.take(a, later));
    }

    #[test]
    fn ipv6_sources_share_a_bucket_per_64_and_mapped_is_v4() {
        let t0 = Instant::now();
        let mut r = SourceRates::new(
            Rate {
                count: 1,
                per: Duration::from_secs(60),
            },
            16,
        );
        assert!(r.take(ip("2001:db8:1:2::1"), t0));
        assert!(!r.take(ip("2001:db8:1:2:ffff::9"), t0));
        assert!(r.take(ip("2001:db8:1:3::1"), t0));
        assert!(r.take(ip("192.0.2.1"), t0));
        assert!(!r.take(ip("::ffff:192.0.2.1"), t0));
    }

    #[test]
    fn the_table_is_bounded_and_forgets_the_oldest() {
        let t0 = Instant::now();
        let mut r = SourceRates::new(
            Rate {
                count: 1,
                per: Duration::from_secs(60),
            },
            4,
        );
        let first = ip("10.0.0.0");
        assert!(r.take(first, t0));
        assert!(!r.take(first, t0));
        for i in 1..=1000u32 {
            assert!(r.take(IpAddr::from(u32::to_be_bytes(0x0a00_0000 + i)), t0));
            assert!(r.len() <= 4);
        }
        assert!(
            r.take(first, t0),
            "the oldest entry was evicted: a fresh bucket"
        );
        assert!(r.order.len() <= 4 + 1);
    }

    #[test]
    fn a_zero_rate_refuses_everyone_and_a_refused_address_takes_no_token() {
        let now = Instant::now();
        let g = Gate::new(Admission {
            rate: Some(Rate {
                count: 0,
                per: Duration::from_secs(1),
            }),
            ..Admission::default()
        });
        assert_eq!(g.check(ip("192.0.2.1"), now), Err(Refused::RateLimited));
        let g = Gate::new(Admission {
            deny: vec![net("192.0.2.0/24")],
            rate: Some(Rate {
                count: 1,
                per: Duration::from_secs(60),
            }),
            ..Admission::default()
        });
        assert_eq!(g.check(ip("192.0.2.1"), now), Err(Refused::Denied));
        let rates = g.rates.as_ref().unwrap().lock().unwrap();
        assert_eq!(rates.len(), 0);
    }
}
