//! Capped exponential backoff with jitter: the n-th delay is drawn uniformly
//! from `[base/2, base]`, where `base = min(min * 2^n, max)`. Jitter keeps many
//! clients that failed together from retrying together.

use rand::Rng;
use std::time::Duration;

#[derive(Clone, Debug)]
pub(crate) struct Backoff {
    base: Duration,
    max: Duration,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        assert!(!min.is_zero(), "backoff needs a positive minimum");
        assert!(min <= max, "backoff minimum exceeds its maximum");
        Self { base: min, max }
    }

    /// The delay before the next retry; each call doubles the base up to the cap.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.base;
        self.base = base.saturating_mul(2).min(self.max);
        let delay = rand::thread_rng().gen_range(base / 2..=base);
        debug_assert!(delay <= self.max);
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_stay_within_jitter_bounds_and_cap() {
        let min = Duration::from_millis(10);
        let max = Duration::from_millis(500);
        let mut backoff = Backoff::new(min, max);
        let mut base = min;
        for _ in 0..20 {
            let delay = backoff.next_delay();
            assert!(
                delay >= base / 2 && delay <= base,
                "{delay:?} outside [{:?}, {base:?}]",
                base / 2
            );
            base = (base * 2).min(max);
        }
        assert_eq!(base, max);
    }
}
