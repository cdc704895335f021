//! Histories of operations on registers, as clients observed them.
//!
//! An [`Operation`] is one client call on one key: who made it, when it was
//! invoked and when it completed (monotonic nanoseconds since the recorder's
//! origin), what it asked for ([`Command`]) and what came back ([`Outcome`]).
//! The outcome follows Jepsen's convention: `Ok` happened exactly as
//! reported, `Fail` definitely did not happen, `Info` is indeterminate — it
//! may have taken effect at any moment after its invocation, or never.
//!
//! [`HistoryRecorder`] is the thread-safe log that workloads write into. An
//! invocation that is never completed stays `Info`, so a task that is
//! cancelled mid-call can never make the history look more certain than it is.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

/// A register's content: `None` means the key is absent.
pub type Value = Option<Vec<u8>>;

/// Identifies the client (logical process) that issued an operation. One
/// process has at most one operation in flight at a time.
pub type ProcessId = u64;

/// What an operation asked the register to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Read the current value.
    Read,
    /// Set the value (`None` deletes the key).
    Write(Value),
    /// If the value equals `expected` (`None`: the key is absent), replace it
    /// with `new` (`None`: delete the key).
    Cas { expected: Value, new: Value },
}

/// What an acknowledged operation reported back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    /// The value a read observed.
    Read(Value),
    /// A write was applied.
    Written,
    /// A compare-and-swap ran; `previous` is the value it compared with.
    Cas { succeeded: bool, previous: Value },
}

/// How an operation ended, from the client's point of view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The operation took effect exactly once, with this response.
    Ok(Response),
    /// The operation definitely did not take effect.
    Fail,
    /// The operation may have taken effect at any time after its invocation,
    /// or never.
    Info,
}

/// One client call on one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    pub process: ProcessId,
    pub key: Vec<u8>,
    pub command: Command,
    /// Monotonic nanoseconds since the recorder's origin.
    pub invoked_ns: u64,
    /// When the client saw the outcome; `None` if it never did.
    pub completed_ns: Option<u64>,
    pub outcome: Outcome,
}

/// A whole run's operations, in invocation order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct History {
    pub operations: Vec<Operation>,
}

impl History {
    /// Counts operations per outcome: `(ok, fail, info)`.
    pub fn outcome_counts(&self) -> (usize, usize, usize) {
        let mut counts = (0, 0, 0);
        for op in &self.operations {
            match op.outcome {
                Outcome::Ok(_) => counts.0 += 1,
                Outcome::Fail => counts.1 += 1,
                Outcome::Info => counts.2 += 1,
            }
        }
        counts
    }
}

/// Ticket for an invoked, not yet completed operation.
#[derive(Debug)]
#[must_use = "complete the invocation, or it stays indeterminate"]
pub struct Invocation {
    index: usize,
}

/// Thread-safe, cheaply cloneable log of operations with a shared clock.
#[derive(Clone, Debug)]
pub struct HistoryRecorder {
    origin: Instant,
    operations: Arc<Mutex<Vec<Operation>>>,
}

impl Default for HistoryRecorder {
    fn default() -> Self {
        Self::new()
    }
}

impl HistoryRecorder {
    pub fn new() -> Self {
        Self {
            origin: Instant::now(),
            operations: Arc::default(),
        }
    }

    /// Records that `process` is about to issue `command` on `key`. Call
    /// this immediately before sending the request.
    pub fn invoke(&self, process: ProcessId, key: &[u8], command: Command) -> Invocation {
        let mut operations = self.lock();
        let invoked_ns = self.now_ns();
        operations.push(Operation {
            process,
            key: key.to_vec(),
            command,
            invoked_ns,
            completed_ns: None,
            outcome: Outcome::Info,
        });
        Invocation {
            index: operations.len() - 1,
        }
    }

    /// Records the outcome of an invocation. Call this immediately after the
    /// response arrives.
    pub fn complete(&self, invocation: Invocation, outcome: Outcome) {
        let completed_ns = self.now_ns();
        let mut operations = self.lock();
        let operation = &mut operations[invocation.index];
        debug_assert!(
            operation.completed_ns.is_none(),
            "an invocation completes once"
        );
        assert!(
            completed_ns >= operation.invoked_ns,
            "the clock is monotonic"
        );
        operation.completed_ns = Some(completed_ns);
        operation.outcome = outcome;
    }

    /// A copy of everything recorded so far; invocations still open are
    /// indeterminate.
    pub fn history(&self) -> History {
        History {
            operations: self.lock().clone(),
        }
    }

    /// Monotonic nanoseconds since the recorder's origin: the clock of every
    /// recorded operation, for events that must be placed on the same axis.
    pub fn now_ns(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Operation>> {
        // A panic while holding the lock cannot leave the log half-written:
        // every mutation is a single push or a single field assignment.
        self.operations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Shows bytes as escaped ASCII, `∅` for an absent value.
pub struct DisplayValue<'a>(pub &'a Value);

impl fmt::Display for DisplayValue<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            None => f.write_str("∅"),
            Some(bytes) => write!(f, "{:?}", bytes.escape_ascii().to_string()),
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Read => f.write_str("read"),
            Command::Write(value) => write!(f, "write {}", DisplayValue(value)),
            Command::Cas { expected, new } => {
                write!(f, "cas {} -> {}", DisplayValue(expected), DisplayValue(new))
            }
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Ok(Response::Read(value)) => write!(f, "ok {}", DisplayValue(value)),
            Outcome::Ok(Response::Written) => f.write_str("ok"),
            Outcome::Ok(Response::Cas {
                succeeded,
                previous,
            }) => {
                let verdict = if *succeeded { "swapped" } else { "refused" };
                write!(f, "ok {verdict} (was {})", DisplayValue(previous))
            }
            Outcome::Fail => f.write_str("fail"),
            Outcome::Info => f.write_str("info"),
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let completed = match self.completed_ns {
            Some(ns) => format!("{:.6}s", ns as f64 / 1e9),
            None => "never".to_owned(),
        };
        write!(
            f,
            "[{:.6}s .. {completed}] p{} {} key={}: {}",
            self.invoked_ns as f64 / 1e9,
            self.process,
            self.command,
            self.key.escape_ascii(),
            self.outcome,
        )
    }
}
