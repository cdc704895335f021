//! The leader lease: how long after a quorum confirmed its leadership a
//! leader may serve reads without another ReadIndex round.
//!
//! Why it is safe (the bound; `ARCHITECTURE.md` gives the whole argument):
//! a ReadIndex round whose heartbeats left at or after `started` confirms
//! that a quorum received them, and each of those replicas reset its
//! election timer on receipt. raft-rs with check-quorum makes such a
//! replica refuse every vote and pre-vote (save the one a leadership
//! transfer asks for) until `election_ticks` ticks have passed; ticks come
//! at most two at once and otherwise one tick apart
//! (`ShardCore::on_clock`), so that is at least `election_ticks - 2` ticks
//! after `started`. A replica that restarts forgets its timer, so a store
//! refuses votes for an election timeout after it starts
//! (`ShardCore::refuses_vote`). No other leader can therefore be elected
//! before `started + (election_ticks - 2) * tick`, and the lease ends a
//! fifth earlier than that, so the leader's clock may run as slow as 0.8
//! times a voter's (the simulator's clocks run up to 10 % apart either way;
//! real ones, parts per million). The `lease` model in `specs` checks this
//! bound with this module's own code.
//!
//! The lease is revoked for good in a term in which this leader started a
//! leadership transfer (the transfer's vote ignores the timers), and
//! whenever the region's membership changes (the quorum it was confirmed
//! by may not be one any more). Pure: time is passed in.

use std::time::{Duration, Instant};

/// How long a lease lasts after the start of the round that confirmed it,
/// or `None` when the election timeout is too short to bound one.
pub fn lease_duration(tick: Duration, election_ticks: usize) -> Option<Duration> {
    let safe_ticks = election_ticks.checked_sub(2).filter(|t| *t > 0)?;
    let bound = tick * safe_ticks as u32;
    Some(bound - bound / 5)
}

/// A leader's lease on its region, in one term.
#[derive(Clone, Copy, Debug, Default, Hash, PartialEq, Eq)]
pub struct LeaderLease {
    /// The term and the instant the lease runs out.
    held: Option<(u64, Instant)>,
    /// A term in which this replica started a leadership transfer: no lease
    /// in it, whatever rounds complete.
    forbidden_term: u64,
}

impl LeaderLease {
    /// A ReadIndex round started at `started` in `term` was confirmed by a
    /// quorum: the lease runs until `started + duration`, unless it already
    /// runs longer.
    pub fn confirm(&mut self, term: u64, started: Instant, duration: Duration) {
        if term == self.forbidden_term {
            return;
        }
        let until = started + duration;
        let longer = self
            .held
            .is_some_and(|(held_term, held_until)| held_term == term && held_until >= until);
        if !longer {
            self.held = Some((term, until));
        }
    }

    /// Whether the lease holds at `now` for a leader in `term`.
    pub fn holds(&self, term: u64, now: Instant) -> bool {
        !self.remaining(term, now).is_zero()
    }

    /// How long the lease still holds at `now` in `term` (zero if it does not).
    pub fn remaining(&self, term: u64, now: Instant) -> Duration {
        match self.held {
            Some((held_term, until)) if held_term == term && term != self.forbidden_term => {
                until.saturating_duration_since(now)
            }
            _ => Duration::ZERO,
        }
    }

    /// Drops the lease; the next confirmed round grants a new one.
    pub fn revoke(&mut self) {
        self.held = None;
    }

    /// Drops the lease and refuses one for the rest of `term`.
    pub fn forbid(&mut self, term: u64) {
        self.held = None;
        self.forbidden_term = term;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TICK: Duration = Duration::from_millis(100);

    #[test]
    fn duration_is_four_fifths_of_the_ticks_a_voter_waits() {
        assert_eq!(lease_duration(TICK, 10), Some(Duration::from_millis(640)));
        assert_eq!(lease_duration(TICK, 2), None);
        assert_eq!(lease_duration(TICK, 1), None);
    }

    #[test]
    fn holds_only_in_its_term_and_before_it_runs_out() {
        let t0 = Instant::now();
        let d = Duration::from_millis(640);
        let mut lease = LeaderLease::default();
        assert!(!lease.holds(3, t0));
        lease.confirm(3, t0, d);
        assert!(lease.holds(3, t0 + Duration::from_millis(639)));
        assert!(!lease.holds(3, t0 + d));
        assert!(!lease.holds(4, t0));
        assert_eq!(
            lease.remaining(3, t0 + Duration::from_millis(620)),
            Duration::from_millis(20)
        );
        assert_eq!(lease.remaining(4, t0), Duration::ZERO);
    }

    #[test]
    fn an_older_round_never_shortens_it() {
        let t0 = Instant::now();
        let d = Duration::from_millis(640);
        let mut lease = LeaderLease::default();
        lease.confirm(3, t0 + Duration::from_millis(500), d);
        lease.confirm(3, t0, d);
        assert!(lease.holds(3, t0 + Duration::from_millis(1000)));
    }

    #[test]
    fn revoked_until_the_next_round_and_forbidden_for_a_term() {
        let t0 = Instant::now();
        let d = Duration::from_millis(640);
        let mut lease = LeaderLease::default();
        lease.confirm(3, t0, d);
        lease.revoke();
        assert!(!lease.holds(3, t0));
        lease.confirm(3, t0, d);
        assert!(lease.holds(3, t0));
        lease.forbid(3);
        assert!(!lease.holds(3, t0));
        lease.confirm(3, t0, d);
        assert!(!lease.holds(3, t0), "no lease in a term with a transfer");
        lease.confirm(4, t0, d);
        assert!(lease.holds(4, t0));
    }
}
