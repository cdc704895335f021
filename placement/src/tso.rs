//! The timestamp oracle's allocator: strictly increasing timestamps made of
//! physical milliseconds and a logical counter, handed out in batches, and
//! never going backwards across a leader change.
//!
//! A [`Timestamp`] packs `physical_ms << LOGICAL_BITS | logical`, so numeric
//! order is time order. The oracle never hands out a physical time at or
//! past its *window*: an upper bound that the placement group made durable
//! before. A new leader recovers from the last durable window and starts
//! above it, so it cannot repeat or undercut anything the old leader handed
//! out, whatever the clocks say. When the window runs low the allocator asks
//! for a new one ([`TimestampOracle::window_request`]); while none is
//! durable it refuses ([`PlacementError::WindowExhausted`]) instead of guessing.
//!
//! Pure: time comes in as arguments, persistence is the caller's job.
//!
//! Guarantee: every timestamp handed out by any oracle of one group is
//! greater than every one handed out before it, provided each oracle was
//! recovered from the latest durable window.

use crate::error::PlacementError;

/// Bits of a timestamp holding the logical counter.
pub const LOGICAL_BITS: u32 = 18;
/// Timestamps per physical millisecond.
pub const LOGICAL_PER_MS: u64 = 1 << LOGICAL_BITS;
/// How far ahead of the clock a new window reaches.
pub const WINDOW_MS: u64 = 3_000;
/// A window with less than this left is renewed ahead of need.
pub const WINDOW_RENEW_MARGIN_MS: u64 = 1_000;

/// A hybrid timestamp: physical milliseconds and a logical counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub u64);

impl Timestamp {
    pub fn new(physical_ms: u64, logical: u64) -> Timestamp {
        debug_assert!(logical < LOGICAL_PER_MS, "logical part fits its bits");
        Timestamp(physical_ms << LOGICAL_BITS | logical)
    }

    pub fn physical_ms(self) -> u64 {
        self.0 >> LOGICAL_BITS
    }

    pub fn logical(self) -> u64 {
        self.0 & (LOGICAL_PER_MS - 1)
    }
}

/// `count` consecutive timestamps: `first` and the `count - 1` after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimestampBatch {
    pub first: Timestamp,
    pub count: u32,
}

impl TimestampBatch {
    /// The largest timestamp of the batch.
    pub fn last(&self) -> Timestamp {
        Timestamp(self.first.0 + u64::from(self.count) - 1)
    }
}

/// The allocator of one placement leader.
#[derive(Debug)]
pub struct TimestampOracle {
    /// Physical part of the last timestamp handed out (or of the floor).
    physical_ms: u64,
    /// Logical part of the next timestamp to hand out.
    next_logical: u64,
    /// No timestamp with a physical part at or past this is handed out.
    window_upper_ms: u64,
}

impl TimestampOracle {
    /// An oracle for a new leader whose group last made `durable_window_ms`
    /// durable (0 for a new cluster). Its first timestamp lies above that
    /// window, and above the clock. It can hand out nothing until a window
    /// above its start is durable: call [`Self::window_request`] first.
    pub fn recover(durable_window_ms: u64, now_ms: u64) -> TimestampOracle {
        let start = now_ms.max(durable_window_ms + 1);
        TimestampOracle {
            physical_ms: start,
            next_logical: 0,
            window_upper_ms: start,
        }
    }

    /// The window to persist now, if the current one runs low (or is
    /// empty): the caller makes it durable through the placement group and
    /// then calls [`Self::window_persisted`].
    pub fn window_request(&self, now_ms: u64) -> Option<u64> {
        let base = self.physical_ms.max(now_ms);
        if self.window_upper_ms > base + WINDOW_RENEW_MARGIN_MS {
            return None;
        }
        Some(base + WINDOW_MS)
    }

    /// A window up to `upper_ms` is durable.
    pub fn window_persisted(&mut self, upper_ms: u64) {
        self.window_upper_ms = self.window_upper_ms.max(upper_ms);
    }

    /// Hands out `count` consecutive timestamps, all greater than any
    /// handed out before.
    pub fn allocate(&mut self, count: u32, now_ms: u64) -> Result<TimestampBatch, PlacementError> {
        if count == 0 || u64::from(count) > LOGICAL_PER_MS {
            return Err(PlacementError::BadCount {
                requested: count,
                max: LOGICAL_PER_MS,
            });
        }
        let (mut physical, mut logical) = (self.physical_ms, self.next_logical);
        if now_ms > physical {
            // The clock moved on: a fresh millisecond. (A clock that went
            // backwards is ignored: time here only moves forward.)
            physical = now_ms;
            logical = 0;
        }
        if logical + u64::from(count) > LOGICAL_PER_MS {
            // This millisecond is used up: borrow the next one.
            physical += 1;
            logical = 0;
        }
        if physical >= self.window_upper_ms {
            return Err(PlacementError::WindowExhausted {
                needed_upper_ms: physical + 1,
            });
        }
        let batch = TimestampBatch {
            first: Timestamp::new(physical, logical),
            count,
        };
        debug_assert!(
            batch.first.0 >= (self.physical_ms << LOGICAL_BITS) + self.next_logical,
            "timestamps never go backwards"
        );
        self.physical_ms = physical;
        self.next_logical = logical + u64::from(count);
        Ok(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ready oracle: recovered and with its first window durable.
    fn ready(durable_window_ms: u64, now_ms: u64) -> TimestampOracle {
        let mut tso = TimestampOracle::recover(durable_window_ms, now_ms);
        let window = tso
            .window_request(now_ms)
            .expect("a fresh oracle needs a window");
        tso.window_persisted(window);
        tso
    }

    #[test]
    fn timestamps_pack_physical_and_logical_in_order() {
        let ts = Timestamp::new(1_700_000_000_000, 5);
        assert_eq!(ts.physical_ms(), 1_700_000_000_000);
        assert_eq!(ts.logical(), 5);
        assert!(Timestamp::new(10, LOGICAL_PER_MS - 1) < Timestamp::new(11, 0));
    }

    #[test]
    fn nothing_is_handed_out_before_a_window_is_durable() {
        let mut tso = TimestampOracle::recover(0, 1_000);
        assert!(matches!(
            tso.allocate(1, 1_000),
            Err(PlacementError::WindowExhausted { .. })
        ));
        let window = tso.window_request(1_000).expect("needs a window");
        assert_eq!(window, 1_000 + WINDOW_MS);
        tso.window_persisted(window);
        assert!(tso.allocate(1, 1_000).is_ok());
    }

    #[test]
    fn batches_are_contiguous_and_increasing_even_when_the_clock_goes_back() {
        let mut tso = ready(0, 5_000);
        let mut last = Timestamp(0);
        for (i, now) in [5_000, 5_000, 4_000, 5_001, 3_000, 5_002]
            .iter()
            .enumerate()
        {
            let batch = tso
                .allocate(1 + i as u32 * 100, *now)
                .expect("within the window");
            assert!(batch.first > last, "{batch:?} after {last:?}");
            assert_eq!(batch.last().0 - batch.first.0 + 1, u64::from(batch.count));
            last = batch.last();
        }
    }

    #[test]
    fn a_full_millisecond_borrows_the_next_one() {
        let mut tso = ready(0, 7_000);
        let a = tso.allocate((LOGICAL_PER_MS - 10) as u32, 7_000).unwrap();
        let b = tso.allocate(100, 7_000).unwrap();
        assert_eq!(a.first.physical_ms(), 7_000);
        assert_eq!(b.first, Timestamp::new(7_001, 0));
        assert!(b.first > a.last());
    }

    #[test]
    fn the_window_bounds_how_far_ahead_of_the_clock_it_may_run() {
        let mut tso = ready(0, 1_000);
        let upper = 1_000 + WINDOW_MS;
        // A stalled clock: borrowing milliseconds runs into the window.
        let mut handed_out = 0u64;
        let err = loop {
            match tso.allocate(LOGICAL_PER_MS as u32, 1_000) {
                Ok(batch) => {
                    assert!(batch.last().physical_ms() < upper);
                    handed_out += 1;
                }
                Err(err) => break err,
            }
        };
        assert_eq!(
            err,
            PlacementError::WindowExhausted {
                needed_upper_ms: upper + 1
            }
        );
        assert_eq!(handed_out, WINDOW_MS);
        // Renewing the window lets it continue.
        let window = tso.window_request(1_000).expect("the window ran out");
        tso.window_persisted(window);
        assert!(tso.allocate(1, 1_000).is_ok());
    }

    #[test]
    fn a_new_leader_starts_above_everything_the_old_one_handed_out() {
        let mut old = ready(0, 10_000);
        let mut durable = 10_000 + WINDOW_MS;
        let mut highest = Timestamp(0);
        for now in 10_000..12_500 {
            if let Some(window) = old.window_request(now) {
                old.window_persisted(window);
                durable = window;
            }
            highest = old.allocate(1_000, now).unwrap().last();
        }
        // The new leader's clock is far behind the old one's.
        let mut new = ready(durable, 2_000);
        let first = new.allocate(1, 2_000).unwrap().first;
        assert!(first > highest, "{first:?} must exceed {highest:?}");
    }

    #[test]
    fn windows_are_renewed_ahead_of_need_only() {
        let tso = ready(0, 1_000);
        assert_eq!(tso.window_request(1_000), None);
        assert_eq!(
            tso.window_request(1_000 + WINDOW_MS - WINDOW_RENEW_MARGIN_MS),
            Some(1_000 + 2 * WINDOW_MS - WINDOW_RENEW_MARGIN_MS)
        );
    }

    #[test]
    fn batch_sizes_are_checked() {
        let mut tso = ready(0, 1);
        assert!(matches!(
            tso.allocate(0, 1),
            Err(PlacementError::BadCount { .. })
        ));
        assert!(matches!(
            tso.allocate(u32::MAX, 1),
            Err(PlacementError::BadCount { .. })
        ));
    }
}
