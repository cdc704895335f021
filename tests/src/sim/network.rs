//! The simulated network between nodes: every Raft message is delivered
//! after a random delay (so messages reorder), or dropped, or delivered
//! twice, as the seeded fault rates say; a partition drops everything on a
//! cut link at delivery time.

use raftstore::RaftMessage;
use rand::rngs::StdRng;
use rand::Rng;
use std::collections::BTreeSet;

/// Message fault rates, in parts per thousand, and the delay range.
#[derive(Clone, Copy, Debug)]
pub struct LinkFaults {
    pub drop_per_mille: u32,
    pub duplicate_per_mille: u32,
    /// Delivery delay, uniform in `[min, max]` virtual milliseconds.
    pub delay_ms: (u64, u64),
}

impl LinkFaults {
    /// A healthy network: nothing lost or duplicated, short delays.
    pub const HEALTHY: LinkFaults = LinkFaults {
        drop_per_mille: 0,
        duplicate_per_mille: 0,
        delay_ms: (1, 3),
    };
}

/// A message on its way.
struct InFlight {
    deliver_at_ms: u64,
    /// Tie-break for equal delivery times: send order.
    sequence: u64,
    from: u64,
    to: u64,
    region_id: u64,
    message: RaftMessage,
}

/// A message that arrived at its node.
pub struct Delivery {
    pub to: u64,
    pub region_id: u64,
    pub message: RaftMessage,
}

pub struct SimNetwork {
    in_flight: Vec<InFlight>,
    next_sequence: u64,
    /// Directed links that drop everything: (from, to).
    cut: BTreeSet<(u64, u64)>,
    pub faults: LinkFaults,
    pub sent: u64,
    pub dropped: u64,
    pub duplicated: u64,
}

impl SimNetwork {
    pub fn new() -> Self {
        SimNetwork {
            in_flight: Vec::new(),
            next_sequence: 0,
            cut: BTreeSet::new(),
            faults: LinkFaults::HEALTHY,
            sent: 0,
            dropped: 0,
            duplicated: 0,
        }
    }

    /// Queues `messages` from `from` to `to`, applying the fault rates.
    pub fn send(
        &mut self,
        rng: &mut StdRng,
        now_ms: u64,
        from: u64,
        to: u64,
        messages: Vec<(u64, RaftMessage)>,
    ) {
        for (region_id, message) in messages {
            self.sent += 1;
            if rng.gen_range(0..1000) < self.faults.drop_per_mille {
                self.dropped += 1;
                continue;
            }
            let copies = if rng.gen_range(0..1000) < self.faults.duplicate_per_mille {
                self.duplicated += 1;
                2
            } else {
                1
            };
            for _ in 0..copies {
                let (lo, hi) = self.faults.delay_ms;
                let deliver_at_ms = now_ms + rng.gen_range(lo..=hi);
                self.in_flight.push(InFlight {
                    deliver_at_ms,
                    sequence: self.next_sequence,
                    from,
                    to,
                    region_id,
                    message: message.clone(),
                });
                self.next_sequence += 1;
            }
        }
    }

    /// Removes and returns the messages due by `now_ms`, in delivery order;
    /// those crossing a cut link are lost.
    pub fn deliver_due(&mut self, now_ms: u64) -> Vec<Delivery> {
        let (mut due, later): (Vec<InFlight>, Vec<InFlight>) = std::mem::take(&mut self.in_flight)
            .into_iter()
            .partition(|m| m.deliver_at_ms <= now_ms);
        self.in_flight = later;
        due.sort_by_key(|m| (m.deliver_at_ms, m.sequence));
        let mut out = Vec::with_capacity(due.len());
        for m in due {
            if self.cut.contains(&(m.from, m.to)) {
                self.dropped += 1;
                continue;
            }
            out.push(Delivery {
                to: m.to,
                region_id: m.region_id,
                message: m.message,
            });
        }
        out
    }

    /// Cuts every link between a node of `side` and a node outside it.
    pub fn partition(&mut self, nodes: &[u64], side: &[u64]) {
        for &a in nodes {
            for &b in nodes {
                if side.contains(&a) != side.contains(&b) {
                    self.cut.insert((a, b));
                }
            }
        }
    }

    pub fn heal(&mut self) {
        self.cut.clear();
    }
}

impl Default for SimNetwork {
    fn default() -> Self {
        Self::new()
    }
}
