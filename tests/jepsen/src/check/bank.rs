//! The bank workload's check: conservation of money.
//!
//! Transfers move an amount between two accounts atomically, so every
//! snapshot of all accounts — every successful read, every CAS's `previous`
//! and swapped-in value, the final read — must hold exactly the accounts the
//! bank opened with, none negative, summing to the opening total.
//!
//! The check sees only [`Snapshot`]s, never keys: how accounts are stored is
//! the workload's business ([`crate::workload::bank`] keeps them all in one
//! key today). When transfers become multi-key transactions, a snapshot will
//! be one transactional read of every account key, and this check stays as
//! it is.

use super::CheckResult;
use serde::Serialize;
use std::collections::BTreeMap;

/// Account number → balance.
pub type Balances = BTreeMap<u32, i64>;

/// All accounts as one operation saw them, at some instant of
/// `[invoked_ns, completed_ns]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Snapshot {
    pub balances: Balances,
    pub invoked_ns: u64,
    pub completed_ns: u64,
}

/// What the bank opened with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Opening {
    pub accounts: u32,
    pub balance_each: i64,
}

impl Opening {
    pub fn total(&self) -> i64 {
        i64::from(self.accounts) * self.balance_each
    }

    pub fn balances(&self) -> Balances {
        (0..self.accounts)
            .map(|account| (account, self.balance_each))
            .collect()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum BankViolation {
    /// A value the layout could not decode.
    Unparseable {
        value: String,
        at_ns: u64,
    },
    WrongTotal {
        total: i64,
        snapshot: Snapshot,
    },
    Negative {
        account: u32,
        snapshot: Snapshot,
    },
    WrongAccounts {
        snapshot: Snapshot,
    },
}

/// Checks every snapshot (and reports what the layout could not decode).
pub fn check(
    opening: Opening,
    snapshots: &[Snapshot],
    undecodable: Vec<BankViolation>,
) -> CheckResult {
    let mut violations = undecodable;
    for snapshot in snapshots {
        let accounts_match = snapshot.balances.len() == opening.accounts as usize
            && snapshot.balances.keys().all(|&a| a < opening.accounts);
        if !accounts_match {
            violations.push(BankViolation::WrongAccounts {
                snapshot: snapshot.clone(),
            });
            continue;
        }
        let total: i64 = snapshot.balances.values().sum();
        if total != opening.total() {
            violations.push(BankViolation::WrongTotal {
                total,
                snapshot: snapshot.clone(),
            });
        }
        if let Some((&account, _)) = snapshot.balances.iter().find(|(_, &b)| b < 0) {
            violations.push(BankViolation::Negative {
                account,
                snapshot: snapshot.clone(),
            });
        }
    }
    let passed = format!(
        "all {} snapshots of {} accounts hold {} in total, none negative",
        snapshots.len(),
        opening.accounts,
        opening.total()
    );
    CheckResult::from_violations(
        "bank",
        passed,
        &violations,
        serde_json::json!({
            "snapshots": snapshots.len(),
            "accounts": opening.accounts,
            "total": opening.total(),
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::Validity;

    const OPENING: Opening = Opening {
        accounts: 3,
        balance_each: 10,
    };

    fn snapshot(balances: &[i64]) -> Snapshot {
        Snapshot {
            balances: (0..).zip(balances.iter().copied()).collect(),
            invoked_ns: 0,
            completed_ns: 1,
        }
    }

    #[test]
    fn conserving_snapshots_are_valid() {
        let snapshots = [snapshot(&[10, 10, 10]), snapshot(&[0, 25, 5])];
        let result = check(OPENING, &snapshots, Vec::new());
        assert_eq!(result.validity, Validity::Valid, "{}", result.summary);
    }

    #[test]
    fn a_snapshot_that_does_not_conserve_the_total_is_invalid() {
        let snapshots = [snapshot(&[10, 10, 10]), snapshot(&[10, 15, 10])];
        let result = check(OPENING, &snapshots, Vec::new());
        assert_eq!(result.validity, Validity::Invalid);
        assert!(result.summary.contains("wrong-total"), "{}", result.summary);
    }

    #[test]
    fn negative_balances_and_missing_accounts_are_invalid() {
        let result = check(OPENING, &[snapshot(&[-5, 20, 15])], Vec::new());
        assert!(result.summary.contains("negative"), "{}", result.summary);
        let result = check(OPENING, &[snapshot(&[15, 15])], Vec::new());
        assert!(
            result.summary.contains("wrong-accounts"),
            "{}",
            result.summary
        );
    }
}
