//! Many seeds of a deterministic simulated cluster (3 or 5 nodes, 2 shards
//! each, 3 regions) under random crashes, torn persists, pauses, partitions and
//! lossy links, each checked for election safety, convergence and
//! linearizability; and proof that a seed replays exactly.
//!
//! `FLOTILLA_SIM_SEED=S` runs that one seed (replaying a failure);
//! `FLOTILLA_SIM_SEEDS=N` runs N seeds instead of the default;
//! `FLOTILLA_LOG=debug` prints the nodes' and the nemesis's logs.

use flotilla_tests::sim::{simulate, SimConfig};
use std::panic::AssertUnwindSafe;

const DEFAULT_SEEDS: u64 = 24;

fn init_logs() {
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_env("FLOTILLA_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    }
}

fn seeds(default_count: u64) -> Vec<u64> {
    init_logs();
    if let Ok(seed) = std::env::var("FLOTILLA_SIM_SEED") {
        return vec![seed.parse().expect("FLOTILLA_SIM_SEED is a u64")];
    }
    let count = std::env::var("FLOTILLA_SIM_SEEDS")
        .map(|n| n.parse().expect("FLOTILLA_SIM_SEEDS is a count"))
        .unwrap_or(default_count);
    let first: u64 = rand::random::<u32>().into();
    (first..first + count).collect()
}

fn run_seeds(cfg: &SimConfig, count: u64) {
    let scratch = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("scratch dir");
    for seed in seeds(count) {
        let replay = format!(
            "replay with FLOTILLA_SIM_SEED={seed} (nodes: {})",
            cfg.nodes
        );
        // A panic inside the simulated nodes (raft-rs asserts its own
        // invariants) must name the seed too.
        let run =
            std::panic::catch_unwind(AssertUnwindSafe(|| simulate(seed, cfg, scratch.path())));
        match run {
            Ok(Ok(report)) => println!("{report:?}"),
            Ok(Err(err)) => panic!("{err}\n{replay}"),
            Err(_) => panic!("a simulated node panicked (message above)\n{replay}"),
        }
    }
}

#[test]
fn three_nodes_stay_safe_and_linearizable_under_random_faults() {
    run_seeds(&SimConfig::default(), DEFAULT_SEEDS);
}

#[test]
fn five_nodes_stay_safe_and_linearizable_under_random_faults() {
    let cfg = SimConfig {
        nodes: 5,
        ..SimConfig::default()
    };
    run_seeds(&cfg, DEFAULT_SEEDS / 3);
}

#[test]
fn a_seed_replays_exactly() {
    let scratch = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("scratch dir");
    let cfg = SimConfig {
        fault_ms: 3_000,
        ..SimConfig::default()
    };
    let seed = rand::random::<u32>().into();
    let first = simulate(seed, &cfg, &scratch.path().join("first"))
        .unwrap_or_else(|e| panic!("{e}\nreplay with FLOTILLA_SIM_SEED={seed}"));
    let second = simulate(seed, &cfg, &scratch.path().join("second"))
        .unwrap_or_else(|e| panic!("{e}\nreplay with FLOTILLA_SIM_SEED={seed}"));
    assert_eq!(
        first.digest, second.digest,
        "seed {seed} ran differently twice: {first:?} vs {second:?}"
    );
    assert!(
        first.outcomes.0 > 0,
        "the run completed operations: {first:?}"
    );
}
