//! The UDP session table (pure; `now` is passed in): which public client address owns which
//! upstream session, how full the table may get, and when a session expires.
//!
//! Why expiry counts from the LAST datagram in either direction: counting from creation cuts
//! a game or a call that is still talking once the timeout passes (wstunnel#86: Apex Legends
//! dropped at 60 s). Why a full table drops new clients instead of evicting the least recently
//! used session: UDP sources are trivial to spoof, so evicting would let a flood of fake
//! sources push every real player out (reliability C10/C11); dropping keeps the established
//! sessions, and idle ones leave by themselves within `idle_timeout`.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// The sessions of one UDP forward.
#[derive(Debug)]
pub(crate) struct Sessions<K, S> {
    map: HashMap<K, Entry<S>>,
    max: usize,
    idle_timeout: Duration,
}

#[derive(Debug)]
struct Entry<S> {
    session: S,
    last: Instant,
}

impl<K: Hash + Eq + Clone, S> Sessions<K, S> {
    pub(crate) fn new(max: usize, idle_timeout: Duration) -> Self {
        Self {
            map: HashMap::new(),
            max,
            idle_timeout,
        }
    }

    /// The session of `key`, its idle clock restarted at `now`.
    pub(crate) fn touch(&mut self, key: &K, now: Instant) -> Option<&S> {
        let e = self.map.get_mut(key)?;
        e.last = e.last.max(now);
        Some(&e.session)
    }

    /// Whether another session fits.
    pub(crate) fn is_full(&self) -> bool {
        self.map.len() >= self.max
    }

    /// Adds a session, or gives it back when the table is full.
    pub(crate) fn insert(&mut self, key: K, session: S, now: Instant) -> Result<(), S> {
        if self.is_full() && !self.map.contains_key(&key) {
            return Err(session);
        }
        self.map.insert(key, Entry { session, last: now });
        Ok(())
    }

    /// Removes and returns every session idle for `idle_timeout` or more at `now`.
    pub(crate) fn expire(&mut self, now: Instant) -> Vec<S> {
        let idle = self.idle_timeout;
        let expired: Vec<K> = self
            .map
            .iter()
            .filter(|(_, e)| now.saturating_duration_since(e.last) >= idle)
            .map(|(k, _)| k.clone())
            .collect();
        expired
            .iter()
            .filter_map(|k| self.map.remove(k).map(|e| e.session))
            .collect()
    }

    /// When the next session would expire if nothing moves: the time to sweep next.
    pub(crate) fn next_expiry(&self) -> Option<Instant> {
        self.map.values().map(|e| e.last + self.idle_timeout).min()
    }

    /// Removes the session of `key`, if any.
    pub(crate) fn remove(&mut self, key: &K) -> Option<S> {
        self.map.remove(key).map(|e| e.session)
    }

    /// Removes every session (at shutdown).
    pub(crate) fn drain(&mut self) -> Vec<S> {
        self.map.drain().map(|(_, e)| e.session).collect()
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDLE: Duration = Duration::from_secs(60);

    #[test]
    fn expiry_counts_from_the_last_datagram_not_from_creation() {
        let t0 = Instant::now();
        let mut s = Sessions::new(8, IDLE);
        s.insert("a", 1, t0).unwrap();
        s.insert("b", 2, t0).unwrap();
        // "a" keeps talking every 30 s, for far longer than the timeout.
        for i in 1..=10u32 {
            assert_eq!(s.touch(&"a", t0 + Duration::from_secs(30) * i), Some(&1));
            s.expire(t0 + Duration::from_secs(30) * i);
        }
        assert_eq!(s.len(), 1, "b expired, a did not");
        assert_eq!(s.touch(&"b", t0), None);
        let last_a = t0 + Duration::from_secs(300);
        assert_eq!(s.next_expiry(), Some(last_a + IDLE));
        assert!(s
            .expire(last_a + IDLE - Duration::from_millis(1))
            .is_empty());
        assert_eq!(s.expire(last_a + IDLE), vec![1]);
        assert_eq!((s.len(), s.next_expiry()), (0, None));
    }

    #[test]
    fn a_full_table_refuses_new_keys_but_serves_known_ones() {
        let t0 = Instant::now();
        let mut s = Sessions::new(2, IDLE);
        s.insert(1, "one", t0).unwrap();
        s.insert(2, "two", t0).unwrap();
        assert!(s.is_full());
        assert_eq!(s.insert(3, "three", t0), Err("three"));
        assert_eq!(s.touch(&1, t0 + IDLE / 2), Some(&"one"));
        assert_eq!(s.expire(t0 + IDLE), vec!["two"]);
        assert!(s.insert(3, "three", t0 + IDLE).is_ok());
        assert_eq!(s.drain().len(), 2);
    }

    #[test]
    fn a_clock_that_steps_back_never_shortens_a_session() {
        let t0 = Instant::now() + IDLE;
        let mut s = Sessions::new(1, IDLE);
        s.insert(1, (), t0).unwrap();
        s.touch(&1, t0 - Duration::from_secs(30));
        assert_eq!(s.next_expiry(), Some(t0 + IDLE));
    }
}
