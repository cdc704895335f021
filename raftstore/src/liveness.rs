//! [`NodeLiveness`]: when this store last heard from each other store.
//!
//! Hibernating regions send no heartbeats, so a follower cannot tell from
//! its region's traffic whether the leader is alive. Instead every store
//! pings every other store it shares regions with (one message per store,
//! not per region, from shard 0), and a hibernating follower wakes up — and
//! so can elect a new leader — once its leader's store went silent for an
//! election timeout. Time is passed in; nothing here reads a clock.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Region id of store-to-store pings: no region has it.
pub const PING_REGION: u64 = 0;

#[derive(Default)]
pub struct NodeLiveness {
    last_heard: Mutex<HashMap<u64, Instant>>,
}

impl NodeLiveness {
    pub fn new() -> NodeLiveness {
        NodeLiveness::default()
    }

    /// Store `node` was heard from at `now`.
    pub fn heard(&self, node: u64, now: Instant) {
        let mut last = self.last_heard.lock().unwrap_or_else(|p| p.into_inner());
        let at = last.entry(node).or_insert(now);
        *at = (*at).max(now);
    }

    /// Whether `node` has been silent for longer than `limit` at `now`
    /// (a store never heard from is silent).
    pub fn is_silent(&self, node: u64, limit: Duration, now: Instant) -> bool {
        let last = self.last_heard.lock().unwrap_or_else(|p| p.into_inner());
        last.get(&node)
            .is_none_or(|at| now.saturating_duration_since(*at) > limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_is_measured_from_the_latest_ping() {
        let t0 = Instant::now();
        let limit = Duration::from_secs(1);
        let live = NodeLiveness::new();
        assert!(live.is_silent(2, limit, t0), "never heard of");
        live.heard(2, t0);
        assert!(!live.is_silent(2, limit, t0 + limit));
        assert!(live.is_silent(2, limit, t0 + limit * 2));
        // A late-delivered older ping does not move the clock back.
        live.heard(2, t0 + limit * 2);
        live.heard(2, t0);
        assert!(!live.is_silent(2, limit, t0 + limit * 3));
    }
}
