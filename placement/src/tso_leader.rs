//! The placement leader's timestamp duty as a state machine without I/O:
//! store results and the clock come in, the next store operation (or
//! "serve", or "refuse") goes out. The runtime (`kvserver`'s placement
//! service) executes the operations through the node's `StoreRouter`; unit
//! tests drive it against a model store.
//!
//! The protocol, over the window key ([`TSO_WINDOW_KEY`], holding a
//! [`TsoWindow`]), makes failover safe without leases:
//! - **Rounds.** Batches are answered in rounds. A round starts with a
//!   linearizable read of the window key, issued after every batch of the
//!   round arrived (later batches wait for the next round).
//! - **Serve** only when that read shows this node's own current window;
//!   timestamps then stay below its end. A new owner's swap either precedes
//!   the read (seen: this node stops) or follows it (it starts above the
//!   window the read saw, so above everything this round hands out).
//! - **Claim** when the read shows anything else (another owner, an unknown
//!   window of this node, nothing): compare-and-swap from what was read to
//!   `{self, max(old end, now) + WINDOW_MS}` and recover the oracle above the
//!   old end, so it starts above everything any earlier owner handed out.
//! - **Renew** ahead of need: swap from the own current window to an
//!   extended one, then extend the oracle.
//! - A swap whose outcome is unknown drops the oracle and reads again; one
//!   refused because the value changed claims from the value it found. A
//!   round makes at most [`SWAPS_PER_ROUND_MAX`] swaps.
//!
//! Guarantee: every batch is answered with timestamps greater than all that
//! any node handed out before the batch arrived, whatever the clocks say.

use raftstore::command::{ReadOp, ReadResult, WriteOp, WriteResult};
use raftstore::RaftstoreError;

use crate::error::PlacementError;
use crate::system_keys::TSO_WINDOW_KEY;
use crate::tso::{TimestampBatch, TimestampOracle, WINDOW_MS};
use crate::tso_window::TsoWindow;

/// Swaps (claims and renewals) one round may make before it gives up: a
/// claim, a renewal, and a retry after a conflicting change.
pub const SWAPS_PER_ROUND_MAX: u32 = 4;

/// What the runtime does next in the current round.
#[derive(Debug)]
pub enum Step {
    /// Read [`TSO_WINDOW_KEY`] linearizably ([`TsoLeader::read_op`]), then
    /// report with [`TsoLeader::window_read`].
    ReadWindow,
    /// Execute the swap ([`WindowSwap::op`]), then report with
    /// [`TsoLeader::window_swapped`].
    SwapWindow(WindowSwap),
    /// Ownership is confirmed for this round: answer its batches with
    /// [`TsoLeader::allocate`].
    Serve,
    /// Answer the round's batches with this refusal.
    Refuse(Refusal),
}

/// Why a round is not served.
#[derive(Debug)]
pub enum Refusal {
    /// The store refused or failed the read or swap (not the leader of the
    /// system region, shutting down, ...).
    Store(RaftstoreError),
    /// The window kept changing: [`SWAPS_PER_ROUND_MAX`] swaps were not enough.
    Contended,
    /// The window key holds something that is not a window.
    Malformed(PlacementError),
    /// A batch size the oracle cannot serve.
    BadCount(PlacementError),
    /// The store answered with a result of the wrong kind.
    Unexpected(String),
}

/// A compare-and-swap of the window key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowSwap {
    /// What the key must hold (`None`: absent).
    pub expected: Option<TsoWindow>,
    pub new: TsoWindow,
    pub purpose: SwapPurpose,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SwapPurpose {
    /// Take the oracle over from whatever `expected` is.
    Claim,
    /// Extend this node's own window.
    Renew,
}

impl WindowSwap {
    /// The store operation that performs the swap.
    pub fn op(&self) -> WriteOp {
        WriteOp::CompareAndSwap {
            key: TSO_WINDOW_KEY.to_vec(),
            expected: self.expected.map(|w| w.encode()),
            new: Some(self.new.encode()),
        }
    }
}

/// The oracle and the durable window it serves from.
#[derive(Debug)]
struct Serving {
    oracle: TimestampOracle,
    /// This node's window as last made durable; the key holds exactly this
    /// while nobody else took over.
    window: TsoWindow,
}

/// One node's timestamp duty: serving or not, and the swaps of the round
/// in progress.
#[derive(Debug)]
pub struct TsoLeader {
    node_id: u64,
    serving: Option<Serving>,
    swaps_left: u32,
}

impl TsoLeader {
    pub fn new(node_id: u64) -> TsoLeader {
        assert!(node_id != 0, "node ids start at 1");
        TsoLeader {
            node_id,
            serving: None,
            swaps_left: 0,
        }
    }

    /// Whether the last round confirmed ownership and nothing since dropped it.
    pub fn is_serving(&self) -> bool {
        self.serving.is_some()
    }

    /// This node's durable window while serving.
    pub fn window(&self) -> Option<TsoWindow> {
        self.serving.as_ref().map(|s| s.window)
    }

    /// The read that starts a round.
    pub fn read_op() -> ReadOp {
        ReadOp::Get {
            key: TSO_WINDOW_KEY.to_vec(),
        }
    }

    /// A round starts; every batch that arrived so far belongs to it.
    pub fn begin_round(&mut self) -> Step {
        self.swaps_left = SWAPS_PER_ROUND_MAX;
        Step::ReadWindow
    }

    /// The round's read finished.
    pub fn window_read(&mut self, result: Result<ReadResult, RaftstoreError>, now_ms: u64) -> Step {
        match result {
            Ok(ReadResult::Value(value)) => match TsoWindow::decode_stored(value.as_deref()) {
                Ok(seen) => self.observed(seen, now_ms),
                Err(err) => self.refuse(Refusal::Malformed(err)),
            },
            Ok(ReadResult::Pairs(_)) => {
                self.refuse(Refusal::Unexpected("the window read returned pairs".into()))
            }
            Err(err) => self.refuse(Refusal::Store(err)),
        }
    }

    /// A swap the machine asked for finished.
    pub fn window_swapped(
        &mut self,
        swap: WindowSwap,
        result: Result<WriteResult, RaftstoreError>,
        now_ms: u64,
    ) -> Step {
        match result {
            Ok(WriteResult::CompareAndSwap {
                succeeded: true, ..
            }) => self.swap_applied(swap, now_ms),
            Ok(WriteResult::CompareAndSwap {
                succeeded: false,
                previous,
            }) => {
                // The key changed since it was read: what it holds now is a
                // linearizable observation as good as a read.
                self.serving = None;
                match TsoWindow::decode_stored(previous.as_deref()) {
                    Ok(seen) => self.observed(seen, now_ms),
                    Err(err) => self.refuse(Refusal::Malformed(err)),
                }
            }
            Ok(other) => self.refuse(Refusal::Unexpected(format!(
                "the window swap returned {other:?}"
            ))),
            Err(err) if not_executed(&err) => self.refuse(Refusal::Store(err)),
            Err(err) => {
                // The swap may or may not apply: never serve from a window
                // whose persistence is unknown. Find out what the key holds.
                tracing::info!(%err, ?swap, "timestamp window swap outcome unknown; reading it again");
                self.serving = None;
                Step::ReadWindow
            }
        }
    }

    /// Hands out `count` timestamps for a batch of the current round, or
    /// names the step to take first (a renewal when the window ran out).
    pub fn allocate(&mut self, count: u32, now_ms: u64) -> Result<TimestampBatch, Step> {
        let Some(serving) = self.serving.as_mut() else {
            // Ownership was lost during this round: confirm it again with a
            // read issued now (after this batch arrived).
            return Err(Step::ReadWindow);
        };
        match serving.oracle.allocate(count, now_ms) {
            Ok(batch) => {
                debug_assert!(
                    batch.last().physical_ms() < serving.window.end_ms,
                    "timestamps stay below the durable window"
                );
                Ok(batch)
            }
            Err(PlacementError::WindowExhausted { needed_upper_ms }) => {
                let requested = serving.oracle.window_request(now_ms).unwrap_or(0);
                let end_ms = requested.max(needed_upper_ms);
                let expected = serving.window;
                Err(self.swap(Some(expected), end_ms, SwapPurpose::Renew))
            }
            Err(err) => Err(Step::Refuse(Refusal::BadCount(err))),
        }
    }

    /// What the round does after seeing `seen` in the window key.
    fn observed(&mut self, seen: Option<TsoWindow>, now_ms: u64) -> Step {
        if let Some(serving) = &self.serving {
            if seen == Some(serving.window) {
                return self.renew_if_due(now_ms);
            }
            tracing::info!(
                node = self.node_id,
                ours = ?serving.window,
                ?seen,
                "the timestamp window changed hands; dropping the oracle"
            );
            self.serving = None;
        }
        let old_end_ms = seen.map_or(0, |w| w.end_ms);
        self.swap(seen, old_end_ms.max(now_ms) + WINDOW_MS, SwapPurpose::Claim)
    }

    fn renew_if_due(&mut self, now_ms: u64) -> Step {
        let Some(serving) = &self.serving else {
            return Step::ReadWindow;
        };
        match serving.oracle.window_request(now_ms) {
            None => Step::Serve,
            Some(end_ms) => {
                let expected = serving.window;
                self.swap(Some(expected), end_ms, SwapPurpose::Renew)
            }
        }
    }

    fn swap(&mut self, expected: Option<TsoWindow>, end_ms: u64, purpose: SwapPurpose) -> Step {
        if self.swaps_left == 0 {
            return self.refuse(Refusal::Contended);
        }
        self.swaps_left -= 1;
        Step::SwapWindow(WindowSwap {
            expected,
            new: TsoWindow {
                owner: self.node_id,
                end_ms,
            },
            purpose,
        })
    }

    fn swap_applied(&mut self, swap: WindowSwap, now_ms: u64) -> Step {
        assert_eq!(
            swap.new.owner, self.node_id,
            "only own windows are swapped in"
        );
        match (swap.purpose, self.serving.as_mut()) {
            (SwapPurpose::Claim, _) => {
                let old_end_ms = swap.expected.map_or(0, |w| w.end_ms);
                let mut oracle = TimestampOracle::recover(old_end_ms, now_ms);
                oracle.window_persisted(swap.new.end_ms);
                tracing::info!(node = self.node_id, window = ?swap.new, previous = ?swap.expected, "claimed the timestamp oracle");
                self.serving = Some(Serving {
                    oracle,
                    window: swap.new,
                });
                self.renew_if_due(now_ms)
            }
            (SwapPurpose::Renew, Some(serving)) if swap.expected == Some(serving.window) => {
                serving.oracle.window_persisted(swap.new.end_ms);
                serving.window = swap.new;
                Step::Serve
            }
            (SwapPurpose::Renew, _) => {
                // Renewed a window this node no longer serves from (dropped
                // meanwhile): start over from what the key holds.
                self.serving = None;
                Step::ReadWindow
            }
        }
    }

    /// Stops serving and refuses the round.
    fn refuse(&mut self, refusal: Refusal) -> Step {
        if self.serving.take().is_some() {
            tracing::info!(node = self.node_id, ?refusal, "stopped serving timestamps");
        }
        Step::Refuse(refusal)
    }
}

/// Whether a store error guarantees the request was not executed.
fn not_executed(err: &RaftstoreError) -> bool {
    matches!(
        err,
        RaftstoreError::NotLeader { .. }
            | RaftstoreError::EpochNotMatch { .. }
            | RaftstoreError::RegionNotFound { .. }
            | RaftstoreError::KeyNotInRegion { .. }
            | RaftstoreError::Unavailable(_)
            | RaftstoreError::ShuttingDown
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tso::Timestamp;

    /// The window key as the replicated store holds it, with the store's
    /// compare-and-swap semantics.
    #[derive(Default)]
    struct ModelStore {
        value: Option<Vec<u8>>,
    }

    impl ModelStore {
        fn read(&self) -> Result<ReadResult, RaftstoreError> {
            Ok(ReadResult::Value(self.value.clone()))
        }

        fn apply(&mut self, op: &WriteOp) -> Result<WriteResult, RaftstoreError> {
            let WriteOp::CompareAndSwap { key, expected, new } = op else {
                panic!("the machine only swaps: {op:?}");
            };
            assert_eq!(key, TSO_WINDOW_KEY);
            let previous = self.value.clone();
            let succeeded = previous == *expected;
            if succeeded {
                self.value = new.clone();
            }
            Ok(WriteResult::CompareAndSwap {
                succeeded,
                previous,
            })
        }

        fn window(&self) -> Option<TsoWindow> {
            TsoWindow::decode_stored(self.value.as_deref()).unwrap()
        }
    }

    /// Runs one round for `counts` against `store` (every operation
    /// succeeding as the model says); returns the batches, or the refusal.
    fn round(
        leader: &mut TsoLeader,
        store: &mut ModelStore,
        counts: &[u32],
        now_ms: u64,
    ) -> Result<Vec<TimestampBatch>, Refusal> {
        let mut step = leader.begin_round();
        let mut batches = Vec::new();
        let mut pending = counts.iter().copied();
        let mut current = pending.next();
        loop {
            step = match step {
                Step::ReadWindow => leader.window_read(store.read(), now_ms),
                Step::SwapWindow(swap) => {
                    let result = store.apply(&swap.op());
                    leader.window_swapped(swap, result, now_ms)
                }
                Step::Refuse(refusal) => return Err(refusal),
                Step::Serve => match current {
                    None => return Ok(batches),
                    Some(count) => match leader.allocate(count, now_ms) {
                        Ok(batch) => {
                            batches.push(batch);
                            current = pending.next();
                            Step::Serve
                        }
                        Err(step) => step,
                    },
                },
            };
        }
    }

    fn window(owner: u64, end_ms: u64) -> TsoWindow {
        TsoWindow { owner, end_ms }
    }

    #[test]
    fn a_fresh_cluster_is_claimed_then_served_after_one_read_per_round() {
        let mut leader = TsoLeader::new(1);
        assert!(matches!(leader.begin_round(), Step::ReadWindow));
        let step = leader.window_read(Ok(ReadResult::Value(None)), 10_000);
        let Step::SwapWindow(swap) = step else {
            panic!("expected a claim, got {step:?}");
        };
        assert_eq!(
            swap,
            WindowSwap {
                expected: None,
                new: window(1, 10_000 + WINDOW_MS),
                purpose: SwapPurpose::Claim,
            }
        );
        assert!(
            !leader.is_serving(),
            "nothing is served before the claim is durable"
        );
        let applied = Ok(WriteResult::CompareAndSwap {
            succeeded: true,
            previous: None,
        });
        assert!(matches!(
            leader.window_swapped(swap, applied, 10_000),
            Step::Serve
        ));
        let batch = leader.allocate(10, 10_000).unwrap();
        assert_eq!(batch.first, Timestamp::new(10_000, 0));

        // The next round reads, sees its own window, and serves.
        assert!(matches!(leader.begin_round(), Step::ReadWindow));
        let own = Ok(ReadResult::Value(Some(
            window(1, 10_000 + WINDOW_MS).encode(),
        )));
        assert!(matches!(leader.window_read(own, 10_001), Step::Serve));
        assert!(leader.allocate(1, 10_001).unwrap().first > batch.last());
    }

    #[test]
    fn a_claim_starts_above_the_old_window_even_with_a_clock_far_behind() {
        let mut store = ModelStore::default();
        let mut old = TsoLeader::new(1);
        let before = round(&mut old, &mut store, &[100, 100], 50_000).unwrap();
        let mut new = TsoLeader::new(2);
        // The new leader's clock is 40 s behind.
        let after = round(&mut new, &mut store, &[1], 10_000).unwrap();
        assert!(after[0].first > before[1].last());
        assert!(after[0].first.physical_ms() > 50_000 + WINDOW_MS - 1);
        assert_eq!(store.window().unwrap().owner, 2);
    }

    #[test]
    fn leadership_moving_between_skewed_clocks_never_takes_timestamps_back() {
        let mut store = ModelStore::default();
        // Node 2's clock runs 5 s behind node 1's, node 3's 2.5 s behind.
        let mut nodes = [
            (TsoLeader::new(1), 0),
            (TsoLeader::new(2), 5_000),
            (TsoLeader::new(3), 2_500),
        ];
        let mut handed_out: Vec<TimestampBatch> = Vec::new();
        let mut now = 100_000;
        // Leadership moves around (a node serves several rounds in a row,
        // then another takes over); every round is served by the node that
        // ran it, and timestamps only grow.
        for turn in 0u64..60 {
            let (leader, behind_ms) = &mut nodes[(turn * 7 / 5 % 3) as usize];
            let batches = round(leader, &mut store, &[7, 1, 300], now - *behind_ms).unwrap();
            handed_out.extend(batches);
            now += 400;
        }
        for pair in handed_out.windows(2) {
            assert!(pair[1].first > pair[0].last(), "{pair:?}");
        }
    }

    #[test]
    fn a_renewal_is_made_durable_before_the_window_is_extended() {
        let mut store = ModelStore::default();
        let mut leader = TsoLeader::new(1);
        round(&mut leader, &mut store, &[1], 1_000).unwrap();
        let first_end = store.window().unwrap().end_ms;
        // Near the end of the window, the round renews before serving.
        let now = first_end - 500;
        assert!(matches!(leader.begin_round(), Step::ReadWindow));
        let step = leader.window_read(store.read(), now);
        let Step::SwapWindow(swap) = step else {
            panic!("expected a renewal, got {step:?}");
        };
        assert_eq!(swap.purpose, SwapPurpose::Renew);
        assert_eq!(swap.expected, Some(window(1, first_end)));
        assert_eq!(swap.new, window(1, now + WINDOW_MS));
        let result = store.apply(&swap.op());
        assert!(matches!(
            leader.window_swapped(swap, result, now),
            Step::Serve
        ));
        assert_eq!(leader.window(), Some(window(1, now + WINDOW_MS)));
        assert_eq!(store.window(), leader.window());
    }

    #[test]
    fn an_exhausted_window_is_renewed_in_the_middle_of_a_round() {
        let mut store = ModelStore::default();
        let mut leader = TsoLeader::new(1);
        // A stalled clock: whole milliseconds are borrowed until the window
        // runs out, and the round renews it instead of failing.
        let full_ms = crate::tso::LOGICAL_PER_MS as u32;
        let counts = vec![full_ms; (WINDOW_MS + 10) as usize];
        let batches = round(&mut leader, &mut store, &counts, 1_000).unwrap();
        assert_eq!(batches.len(), counts.len());
        let last = batches.last().unwrap().last();
        assert!(last.physical_ms() < store.window().unwrap().end_ms);
    }

    #[test]
    fn a_swap_with_an_unknown_outcome_drops_the_oracle_and_reads_again() {
        let mut store = ModelStore::default();
        let mut leader = TsoLeader::new(1);
        round(&mut leader, &mut store, &[1], 1_000).unwrap();
        let now = store.window().unwrap().end_ms - 100;
        leader.begin_round();
        let Step::SwapWindow(swap) = leader.window_read(store.read(), now) else {
            panic!("expected a renewal");
        };
        // The renewal applies, but the answer is lost.
        store.apply(&swap.op()).unwrap();
        let unknown = Err(RaftstoreError::Indeterminate {
            region_id: 2,
            reason: "leader changed".into(),
        });
        assert!(matches!(
            leader.window_swapped(swap, unknown, now),
            Step::ReadWindow
        ));
        assert!(!leader.is_serving());
        assert!(matches!(leader.allocate(1, now), Err(Step::ReadWindow)));
        // The read finds the renewed window: not known as its own, so it is
        // claimed over, and serving resumes above it.
        let Step::SwapWindow(claim) = leader.window_read(store.read(), now) else {
            panic!("expected a claim");
        };
        assert_eq!(claim.purpose, SwapPurpose::Claim);
        assert_eq!(claim.expected, Some(swap.new));
        let result = store.apply(&claim.op());
        assert!(matches!(
            leader.window_swapped(claim, result, now),
            Step::Serve
        ));
        let batch = leader.allocate(1, now).unwrap();
        assert!(batch.first.physical_ms() > swap.new.end_ms);
    }

    #[test]
    fn a_lost_leadership_refuses_the_round_with_the_stores_hint() {
        let mut store = ModelStore::default();
        let mut leader = TsoLeader::new(1);
        round(&mut leader, &mut store, &[1], 1_000).unwrap();
        leader.begin_round();
        let not_leader = Err(RaftstoreError::NotLeader {
            region_id: 2,
            leader: Some(3),
        });
        let step = leader.window_read(not_leader, 1_001);
        assert!(matches!(
            step,
            Step::Refuse(Refusal::Store(RaftstoreError::NotLeader {
                leader: Some(3),
                ..
            }))
        ));
        assert!(!leader.is_serving());
    }

    #[test]
    fn a_refused_swap_claims_from_the_value_it_found() {
        let mut leader = TsoLeader::new(1);
        leader.begin_round();
        let Step::SwapWindow(claim) = leader.window_read(Ok(ReadResult::Value(None)), 1_000) else {
            panic!("expected a claim");
        };
        // Node 2 claimed in between.
        let theirs = window(2, 9_000);
        let refused = Ok(WriteResult::CompareAndSwap {
            succeeded: false,
            previous: Some(theirs.encode()),
        });
        let Step::SwapWindow(again) = leader.window_swapped(claim, refused, 1_000) else {
            panic!("expected a second claim");
        };
        assert_eq!(again.expected, Some(theirs));
        assert_eq!(again.new, window(1, 9_000 + WINDOW_MS));
    }

    #[test]
    fn a_window_that_keeps_changing_is_given_up_on_after_the_swap_budget() {
        let mut leader = TsoLeader::new(1);
        let mut step = leader.begin_round();
        let mut swaps = 0;
        let mut other_end = 5_000;
        loop {
            step = match step {
                Step::ReadWindow => leader.window_read(Ok(ReadResult::Value(None)), 1_000),
                Step::SwapWindow(swap) => {
                    swaps += 1;
                    other_end += 1;
                    let refused = Ok(WriteResult::CompareAndSwap {
                        succeeded: false,
                        previous: Some(window(2, other_end).encode()),
                    });
                    leader.window_swapped(swap, refused, 1_000)
                }
                Step::Refuse(Refusal::Contended) => break,
                other => panic!("unexpected {other:?}"),
            };
        }
        assert_eq!(swaps, SWAPS_PER_ROUND_MAX);
    }

    #[test]
    fn a_malformed_window_is_refused_not_overwritten() {
        let mut leader = TsoLeader::new(1);
        leader.begin_round();
        let garbage = Ok(ReadResult::Value(Some(b"user data".to_vec())));
        assert!(matches!(
            leader.window_read(garbage, 1_000),
            Step::Refuse(Refusal::Malformed(PlacementError::MalformedWindow {
                len: 9
            }))
        ));
    }

    #[test]
    fn a_swap_refused_before_execution_is_not_retried() {
        let mut leader = TsoLeader::new(1);
        leader.begin_round();
        let Step::SwapWindow(claim) = leader.window_read(Ok(ReadResult::Value(None)), 1_000) else {
            panic!("expected a claim");
        };
        let step = leader.window_swapped(claim, Err(RaftstoreError::ShuttingDown), 1_000);
        assert!(matches!(
            step,
            Step::Refuse(Refusal::Store(RaftstoreError::ShuttingDown))
        ));
    }
}
