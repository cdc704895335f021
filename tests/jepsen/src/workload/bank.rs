//! The bank workload, prepared against the raw API: all accounts live in one
//! key, `bank/accounts`, as comma-separated decimal balances, so a transfer
//! is a single-key CAS (read the balances, move 1–5 from one account to
//! another without going negative, CAS). Half the steps read, half transfer.
//!
//! How accounts are stored is this module's business ([`SingleKeyLayout`]):
//! it turns the recorded history into layout-free [`Snapshot`]s, and
//! [`crate::check::bank`] checks only those. When multi-key transactions
//! exist, a second layout (one key per account, transfers as transactions,
//! reads as one snapshot read of every account) produces the same snapshots
//! and the conservation check applies unchanged.

use super::keys::KeySpace;
use super::{Step, Worker, Workload};
use crate::check::bank::{self, BankViolation, Opening, Snapshot};
use crate::check::{register, CheckResult, FinalRead};
use crate::Error;
use flotilla_tests::history::{Command, History, Outcome, Response, Value};
use rand::Rng;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

const OPENING: Opening = Opening {
    accounts: 5,
    balance_each: 100,
};
/// Largest amount one transfer moves.
const TRANSFER_MAX: i64 = 5;
/// Pause between attempts to open the bank.
const RETRY_INTERVAL: Duration = Duration::from_millis(200);

/// Every account in one key: balances in account order.
pub struct SingleKeyLayout;

impl SingleKeyLayout {
    pub const SPACE: KeySpace = KeySpace::new("bank/");
    pub const KEY: &'static [u8] = b"bank/accounts";

    pub fn encode(balances: &bank::Balances) -> Vec<u8> {
        balances
            .values()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(",")
            .into_bytes()
    }

    /// The balances a value holds; `None` (with the value, escaped) when it
    /// holds none — an absent key included: the bank is opened before any
    /// worker runs.
    pub fn decode(value: &Value) -> Result<bank::Balances, String> {
        let Some(bytes) = value else {
            return Err("(absent)".to_owned());
        };
        let garbage = || bytes.escape_ascii().to_string();
        let text = std::str::from_utf8(bytes).map_err(|_| garbage())?;
        (0u32..)
            .zip(text.split(','))
            .map(|(account, balance)| Ok((account, balance.parse().map_err(|_| garbage())?)))
            .collect()
    }

    /// Every snapshot the history holds, and what could not be decoded. The
    /// opening CAS (expecting an absent key) contributes only its new value.
    pub fn snapshots(history: &History) -> (Vec<Snapshot>, Vec<BankViolation>) {
        let mut snapshots = Vec::new();
        let mut undecodable = Vec::new();
        for op in &history.operations {
            let completed_ns = op.completed_ns.unwrap_or(u64::MAX);
            let mut observe = |value: &Value| match Self::decode(value) {
                Ok(balances) => snapshots.push(Snapshot {
                    balances,
                    invoked_ns: op.invoked_ns,
                    completed_ns,
                }),
                Err(value) => undecodable.push(BankViolation::Unparseable {
                    value,
                    at_ns: op.invoked_ns,
                }),
            };
            match (&op.command, &op.outcome) {
                (Command::Read, Outcome::Ok(Response::Read(value))) => observe(value),
                (
                    Command::Cas { expected, new },
                    Outcome::Ok(Response::Cas {
                        succeeded,
                        previous,
                    }),
                ) => {
                    if expected.is_some() {
                        observe(previous);
                    }
                    if *succeeded {
                        observe(new);
                    }
                }
                _ => {}
            }
        }
        (snapshots, undecodable)
    }
}

#[derive(Debug, Default)]
pub struct BankWorkload;

/// One worker's view: the accounts' value it last saw.
pub struct BankStep {
    last_seen: Option<Value>,
}

impl BankStep {
    async fn transfer(&mut self, worker: &mut Worker) {
        let current = match self.last_seen.take() {
            Some(value) => value,
            None => match worker.run(SingleKeyLayout::KEY, Command::Read).await {
                Outcome::Ok(Response::Read(value)) => value,
                _ => return,
            },
        };
        let Ok(mut balances) = SingleKeyLayout::decode(&current) else {
            return;
        };
        let from = worker.rng.gen_range(0..OPENING.accounts);
        let to = (from + worker.rng.gen_range(1..OPENING.accounts)) % OPENING.accounts;
        let available = balances.get(&from).copied().unwrap_or(0);
        if available <= 0 {
            self.last_seen = Some(current);
            return;
        }
        let amount = worker.rng.gen_range(1..=available.min(TRANSFER_MAX));
        *balances.entry(from).or_default() -= amount;
        *balances.entry(to).or_default() += amount;
        let new = Some(SingleKeyLayout::encode(&balances));
        let command = Command::Cas {
            expected: current,
            new: new.clone(),
        };
        self.last_seen = match worker.run(SingleKeyLayout::KEY, command).await {
            Outcome::Ok(Response::Cas {
                succeeded: true, ..
            }) => Some(new),
            Outcome::Ok(Response::Cas { previous, .. }) => Some(previous),
            _ => None,
        };
    }
}

impl Step for BankStep {
    async fn step(&mut self, worker: &mut Worker) {
        if worker.rng.gen_bool(0.5) {
            self.last_seen = match worker.run(SingleKeyLayout::KEY, Command::Read).await {
                Outcome::Ok(Response::Read(value)) => Some(value),
                _ => None,
            };
        } else {
            self.transfer(worker).await;
        }
    }
}

impl Workload for BankWorkload {
    type Step = BankStep;

    fn new_step(self: &Arc<Self>) -> BankStep {
        BankStep { last_seen: None }
    }

    /// Opens the accounts: CAS from absent to the opening balances, until
    /// the bank is open (an indeterminate attempt is settled by the next
    /// attempt's `previous`).
    async fn prepare(&self, worker: &mut Worker, deadline: Instant) -> Result<(), Error> {
        let opening = Some(SingleKeyLayout::encode(&OPENING.balances()));
        loop {
            let command = Command::Cas {
                expected: None,
                new: opening.clone(),
            };
            match worker.run(SingleKeyLayout::KEY, command).await {
                Outcome::Ok(Response::Cas {
                    succeeded: true, ..
                }) => return Ok(()),
                Outcome::Ok(Response::Cas { previous, .. }) if previous == opening => return Ok(()),
                Outcome::Ok(Response::Cas { .. }) => {
                    return Err(Error::Config(
                        "the bank key already holds other balances".to_owned(),
                    ))
                }
                outcome if Instant::now() >= deadline => {
                    return Err(Error::NotRecovered {
                        phase: "opening the bank",
                        missing: format!("the opening CAS ended {outcome:?}"),
                    })
                }
                _ => tokio::time::sleep(RETRY_INTERVAL).await,
            }
        }
    }

    async fn final_read(
        &self,
        worker: &mut Worker,
        _history: &History,
        deadline: Instant,
    ) -> Result<FinalRead, Error> {
        let value = worker.read_until_ok(SingleKeyLayout::KEY, deadline).await?;
        Ok(value
            .map(|value| FinalRead::from([(SingleKeyLayout::KEY.to_vec(), value)]))
            .unwrap_or_default())
    }

    /// One key, but splits at the space's bucket boundaries (all below it)
    /// keep moving it into a new region.
    fn key_space(&self) -> KeySpace {
        SingleKeyLayout::SPACE
    }

    fn check(&self, history: &History, _final_read: &FinalRead) -> Vec<CheckResult> {
        let (snapshots, undecodable) = SingleKeyLayout::snapshots(history);
        vec![
            bank::check(OPENING, &snapshots, undecodable),
            register::linearizable(history),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::Validity;
    use flotilla_tests::history::Operation;

    fn read(at: u64, balances: &[i64]) -> Operation {
        let balances: bank::Balances = (0..).zip(balances.iter().copied()).collect();
        Operation {
            process: 0,
            key: SingleKeyLayout::KEY.to_vec(),
            command: Command::Read,
            invoked_ns: at,
            completed_ns: Some(at + 1),
            outcome: Outcome::Ok(Response::Read(Some(SingleKeyLayout::encode(&balances)))),
        }
    }

    #[test]
    fn a_history_with_a_non_conserving_read_fails_the_bank_check() {
        let history = History {
            operations: vec![read(0, &[100; 5]), read(10, &[100, 100, 100, 100, 99])],
        };
        let (snapshots, undecodable) = SingleKeyLayout::snapshots(&history);
        let result = bank::check(OPENING, &snapshots, undecodable);
        assert_eq!(result.validity, Validity::Invalid);
        assert!(result.summary.contains("wrong-total"), "{}", result.summary);
    }

    #[test]
    fn an_absent_or_garbled_bank_is_unparseable() {
        let mut garbled = read(0, &[]);
        garbled.outcome = Outcome::Ok(Response::Read(Some(b"1,two".to_vec())));
        let mut absent = read(5, &[]);
        absent.outcome = Outcome::Ok(Response::Read(None));
        let history = History {
            operations: vec![garbled, absent],
        };
        let (snapshots, undecodable) = SingleKeyLayout::snapshots(&history);
        assert!(snapshots.is_empty());
        assert_eq!(undecodable.len(), 2);
    }
}
