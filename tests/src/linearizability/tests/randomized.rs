//! Histories generated from a real sequential execution, with random
//! concurrency windows around each operation's linearization point. They
//! must pass; specific corruptions of them must fail.

use super::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;

const SEEDS: [u64; 4] = [1, 7, 42, 2024];

struct Shape {
    keys: usize,
    processes: u64,
    operations: usize,
    /// How far an operation's invocation and completion may lie from its
    /// linearization point.
    window_ns: u64,
}

const SMALL: Shape = Shape {
    keys: 3,
    processes: 6,
    operations: 600,
    window_ns: 400,
};

/// Runs random reads, writes and CAS on real registers. Every write carries a
/// unique value. Some operations' outcomes are hidden (`Info`), and some
/// operations that never happened are recorded as `Fail` or `Info`.
fn generate(seed: u64, shape: &Shape) -> History {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut registers: HashMap<String, Value> = HashMap::new();
    let mut free_at = vec![0u64; shape.processes as usize];
    let mut now = 0u64;
    let mut operations = Vec::with_capacity(shape.operations);
    for serial in 0..shape.operations {
        let process = rng.gen_range(0..shape.processes);
        let key = format!("k{}", rng.gen_range(0..shape.keys));
        // The linearization point, after the process's previous operation.
        now = now.max(free_at[process as usize]) + rng.gen_range(1..50);
        let invoked_ns = now
            - rng
                .gen_range(0..shape.window_ns)
                .min(now - free_at[process as usize] - 1);
        let completed_ns = now + rng.gen_range(0..shape.window_ns);
        free_at[process as usize] = completed_ns + 1;

        let fresh = value(&format!("v{serial}"));
        let current = registers.get(&key).cloned().flatten();
        let roll = rng.gen_range(0..100);
        let (command, mut outcome) = if roll < 40 {
            (Command::Read, read_ok(current))
        } else if roll < 65 {
            registers.insert(key.clone(), fresh.clone());
            (Command::Write(fresh), written())
        } else if roll < 95 {
            let expected = if rng.gen_bool(0.6) {
                current.clone()
            } else {
                None
            };
            let succeeded = expected == current;
            if succeeded {
                registers.insert(key.clone(), fresh.clone());
            }
            (cas(expected, fresh), cas_ok(succeeded, current))
        } else {
            // Never happened: the client saw it fail, or lost track of it.
            let outcome = if rng.gen_bool(0.5) {
                Outcome::Fail
            } else {
                Outcome::Info
            };
            (Command::Write(fresh), outcome)
        };
        if !matches!(command, Command::Read) && rng.gen_bool(0.05) {
            outcome = Outcome::Info;
        }
        operations.push(Operation {
            process,
            key: key.into_bytes(),
            command,
            invoked_ns,
            completed_ns: Some(completed_ns),
            outcome,
        });
    }
    operations.sort_by_key(|op| op.invoked_ns);
    History { operations }
}

fn is_acknowledged_write(op: &Operation) -> Option<&Value> {
    match (&op.command, &op.outcome) {
        (Command::Write(value), Outcome::Ok(_)) => Some(value),
        (
            Command::Cas { new, .. },
            Outcome::Ok(Response::Cas {
                succeeded: true, ..
            }),
        ) => Some(new),
        _ => None,
    }
}

fn completed(op: &Operation) -> u64 {
    op.completed_ns.expect("generated operations complete")
}

fn is_ok_read(op: &Operation) -> bool {
    matches!(op.outcome, Outcome::Ok(Response::Read(_)))
}

#[test]
fn generated_histories_are_linearizable() {
    for seed in SEEDS {
        let history = generate(seed, &SMALL);
        let (ok, fail, info) = history.outcome_counts();
        assert!(
            ok > 0 && fail > 0 && info > 0,
            "seed {seed}: the mix covers every outcome"
        );
        if let Err(err) = check(&history) {
            panic!("seed {seed}: {err}");
        }
    }
}

#[test]
fn thousands_of_concurrent_operations_on_one_key_check_quickly() {
    let shape = Shape {
        keys: 1,
        processes: 8,
        operations: 4000,
        window_ns: 300,
    };
    let history = generate(99, &shape);
    let started = std::time::Instant::now();
    let summary = check(&history).expect("linearizable");
    assert!(summary.operations_checked > 3000);
    eprintln!("checked {summary:?} in {:?}", started.elapsed());
}

#[test]
fn read_of_an_unwritten_value_fails_every_generated_history() {
    for seed in SEEDS {
        let mut history = generate(seed, &SMALL);
        let index = history
            .operations
            .iter()
            .rposition(is_ok_read)
            .expect("generated histories contain reads");
        history.operations[index].outcome = read_ok(value("never-written"));
        let violation = expect_violation(&history);
        assert_eq!(violation.key, history.operations[index].key, "seed {seed}");
    }
}

/// Turns a read into a stale one: it observes the value of acknowledged write
/// `a`, although acknowledged write `b` (another unique value) started after
/// `a` completed and completed before the read started.
#[test]
fn stale_read_fails_every_generated_history() {
    for seed in SEEDS {
        let mut history = generate(seed, &SMALL);
        let ops = &history.operations;
        let corruption = (0..ops.len())
            .filter(|&r| is_ok_read(&ops[r]))
            .find_map(|r| {
                let read = &ops[r];
                let before =
                    |op: &Operation, limit: u64| op.key == read.key && completed(op) < limit;
                let b = ops
                    .iter()
                    .filter(|op| before(op, read.invoked_ns) && is_acknowledged_write(op).is_some())
                    .max_by_key(|op| op.invoked_ns)?;
                let a = ops
                    .iter()
                    .filter(|op| before(op, b.invoked_ns))
                    .find_map(is_acknowledged_write)?;
                Some((r, a.clone()))
            });
        let (r, stale) = corruption.expect("some read follows two sequential writes");
        history.operations[r].outcome = read_ok(stale);
        let violation = expect_violation(&history);
        assert_eq!(violation.key, history.operations[r].key, "seed {seed}");
    }
}

/// Marks an acknowledged write as failed although a later acknowledged read
/// observed its value.
#[test]
fn observed_write_marked_failed_fails_every_generated_history() {
    for seed in SEEDS {
        let mut history = generate(seed, &SMALL);
        let ops = &history.operations;
        let w = (0..ops.len())
            .find(|&w| {
                matches!(ops[w].command, Command::Write(_))
                    && ops.iter().any(|op| {
                        op.key == ops[w].key
                            && is_ok_read(op)
                            && Some(&op.outcome)
                                == is_acknowledged_write(&ops[w])
                                    .map(|v| read_ok(v.clone()))
                                    .as_ref()
                    })
            })
            .expect("some acknowledged write is read");
        history.operations[w].outcome = Outcome::Fail;
        let violation = expect_violation(&history);
        assert_eq!(violation.key, history.operations[w].key, "seed {seed}");
    }
}
