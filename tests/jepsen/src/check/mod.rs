//! Checkers: each turns a recorded history (and the final reads taken after
//! every fault healed) into [`CheckResult`]s.
//!
//! - [`register`]: per-key linearizability of reads, writes and CAS.
//! - [`set`]: every acknowledged add survives; nothing appears that was never
//!   added, nor anything whose add definitely failed.
//! - [`list_append`]: per key, every read is a prefix of every later read,
//!   and every acknowledged append survives.
//! - [`bank`]: every snapshot of the accounts conserves the total and has no
//!   negative balance.
//!
//! Checkers never panic on a malformed history: what they cannot interpret is
//! itself reported as a violation.

pub mod bank;
pub mod list_append;
pub mod register;
pub mod set;

use serde::Serialize;
use std::collections::BTreeMap;

/// What the final reads found: every key they found, with its value. A key
/// they looked for and did not find is absent from the map.
pub type FinalRead = BTreeMap<Vec<u8>, Vec<u8>>;

/// How many individual violations a result lists in its details.
pub(crate) const DETAILS_MAX: usize = 20;

/// Jepsen's three-valued verdict, ordered from best to worst.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Validity {
    Valid,
    /// The checker could not decide (e.g. its search budget ran out).
    Unknown,
    Invalid,
}

impl Validity {
    /// The verdict of two checks together: any invalid makes it invalid,
    /// otherwise any unknown makes it unknown.
    pub fn and(self, other: Validity) -> Validity {
        self.max(other)
    }
}

/// One checker's finding.
#[derive(Clone, Debug, Serialize)]
pub struct CheckResult {
    /// The property checked, e.g. `linearizable` or `no-lost-adds`.
    pub name: String,
    pub validity: Validity,
    /// One human-readable paragraph.
    pub summary: String,
    /// Counts and the first few violations, for the JSON verdict.
    pub details: serde_json::Value,
}

impl CheckResult {
    /// A result that is valid exactly when `violations` is empty; lists at
    /// most [`DETAILS_MAX`] of them.
    pub(crate) fn from_violations<T: Serialize>(
        name: &str,
        passed: String,
        violations: &[T],
        counts: serde_json::Value,
    ) -> CheckResult {
        let shown = &violations[..violations.len().min(DETAILS_MAX)];
        let (validity, summary) = if violations.is_empty() {
            (Validity::Valid, passed)
        } else {
            let first = serde_json::to_string(&violations[0]).unwrap_or_default();
            (
                Validity::Invalid,
                format!("{} violation(s); first: {first}", violations.len()),
            )
        };
        CheckResult {
            name: name.to_owned(),
            validity,
            summary,
            details: serde_json::json!({
                "counts": counts,
                "violations": violations.len(),
                "first_violations": shown,
            }),
        }
    }
}

/// Human-readable bytes (keys and values are ASCII in every workload).
pub(crate) fn text(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_dominates_unknown_dominates_valid() {
        assert_eq!(Validity::Valid.and(Validity::Valid), Validity::Valid);
        assert_eq!(Validity::Valid.and(Validity::Unknown), Validity::Unknown);
        assert_eq!(Validity::Unknown.and(Validity::Invalid), Validity::Invalid);
        assert_eq!(Validity::Invalid.and(Validity::Valid), Validity::Invalid);
    }
}
