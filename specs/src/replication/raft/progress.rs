//! A leader's view of one follower's log, mirroring raft-rs 0.7's
//! `Progress` for the fields Flotilla's configuration exercises.
//!
//! Not mirrored: the in-flight window (`max_inflight_msgs` is 256, which the
//! model's few entries never fill), the follower's reported commit index
//! (only read by group commit, which Flotilla does not enable), and
//! snapshot requests (Flotilla never calls `request_snapshot`).

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProgressState {
    /// One append at a time until the follower's log position is known.
    Probe,
    /// Appends stream optimistically.
    Replicate,
    /// A snapshot was sent; nothing else until the follower catches up.
    Snapshot,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Progress {
    pub matched: u64,
    pub next_idx: u64,
    pub state: ProgressState,
    pub paused: bool,
    pub pending_snapshot: u64,
    /// Heard from since the last check-quorum round.
    pub recent_active: bool,
}

impl Progress {
    /// A progress right after the leader's `reset`.
    pub fn new(next_idx: u64) -> Progress {
        Progress {
            matched: 0,
            next_idx,
            state: ProgressState::Probe,
            paused: false,
            pending_snapshot: 0,
            recent_active: false,
        }
    }

    pub fn is_paused(&self) -> bool {
        match self.state {
            ProgressState::Probe => self.paused,
            ProgressState::Replicate => false,
            ProgressState::Snapshot => true,
        }
    }

    pub fn resume(&mut self) {
        self.paused = false;
    }

    fn reset_state(&mut self, state: ProgressState) {
        self.paused = false;
        self.pending_snapshot = 0;
        self.state = state;
    }

    pub fn become_probe(&mut self) {
        if self.state == ProgressState::Snapshot {
            let pending_snapshot = self.pending_snapshot;
            self.reset_state(ProgressState::Probe);
            self.next_idx = (self.matched + 1).max(pending_snapshot + 1);
        } else {
            self.reset_state(ProgressState::Probe);
            self.next_idx = self.matched + 1;
        }
    }

    pub fn become_replicate(&mut self) {
        self.reset_state(ProgressState::Replicate);
        self.next_idx = self.matched + 1;
    }

    pub fn become_snapshot(&mut self, snapshot_index: u64) {
        self.reset_state(ProgressState::Snapshot);
        self.pending_snapshot = snapshot_index;
    }

    pub fn is_snapshot_caught_up(&self) -> bool {
        self.state == ProgressState::Snapshot && self.matched >= self.pending_snapshot
    }

    /// Records an acknowledgement of `index`; false if it is stale.
    pub fn maybe_update(&mut self, index: u64) -> bool {
        let updated = self.matched < index;
        if updated {
            self.matched = index;
            self.resume();
        }
        if self.next_idx < index + 1 {
            self.next_idx = index + 1;
        }
        updated
    }

    /// Handles a rejection of the append at `rejected`; false if it is stale.
    pub fn maybe_decr_to(&mut self, rejected: u64, match_hint: u64) -> bool {
        if self.state == ProgressState::Replicate {
            if rejected <= self.matched {
                return false;
            }
            self.next_idx = self.matched + 1;
            return true;
        }
        if self.next_idx == 0 || self.next_idx - 1 != rejected {
            return false;
        }
        self.next_idx = rejected.min(match_hint + 1).max(1);
        self.resume();
        true
    }

    /// Entries up to `last` were just sent.
    pub fn update_state(&mut self, last: u64) {
        match self.state {
            ProgressState::Replicate => self.next_idx = last + 1,
            ProgressState::Probe => self.paused = true,
            ProgressState::Snapshot => {
                unreachable!("no entries are sent while a snapshot is pending")
            }
        }
    }
}
