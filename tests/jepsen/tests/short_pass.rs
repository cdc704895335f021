//! A short Jepsen pass for every `cargo test`: the register and set
//! workloads, 20 s each on 3 nodes, with kill and pause faults — and
//! partitions when the nodes run in Docker. Fault kinds take turns in the
//! order listed, so each run starts with a change of shape made on a
//! healthy cluster under load, which must succeed: the register run with a
//! membership change (a voter removed and added back: 3 nodes leave no
//! spare store), the set run with splits. The set run then merges regions,
//! which must succeed too: its servers also split regions by size, so the
//! merges find neighbours to join, and the clients' requests to the merged
//! regions must be routed anew. Its final scan crosses region boundaries.
//! Docker is used when
//! its daemon answers and this process may enter network namespaces (root,
//! `nsenter` and `iptables` present); otherwise the nodes are local
//! processes. The test prints which.
//!
//! - `FLOTILLA_JEPSEN_SEED=S` replays a run's schedule and client choices.
//! - `FLOTILLA_JEPSEN_BACKEND=docker|local` forces a backend.
//!
//! Longer runs (more nodes, other workloads, minutes of faults) are the
//! `flotilla-jepsen` binary's job; see docs/jepsen.md.

use flotilla_jepsen::backend::BackendKind;
use flotilla_jepsen::check::Validity;
use flotilla_jepsen::nemesis::FaultKind;
use flotilla_jepsen::run::{execute, RunOptions};
use flotilla_jepsen::workload::WorkloadKind;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

/// The register run: room for two or three fault windows.
const REGISTER_TIME_LIMIT: Duration = Duration::from_secs(20);
/// The set run: a split and a merge window (half-length, at most 4.5 s
/// each) after healthy windows (at most 7 s each) leave the third window,
/// a kill, starting by 30 s; it is planned when it starts 2 s or more
/// before the limit.
const SET_TIME_LIMIT: Duration = Duration::from_secs(32);
/// The image this test builds from its own binary, apart from the one the
/// documented command builds.
const TEST_IMAGE: &str = "flotilla:jepsen-test";

fn seed() -> u64 {
    match std::env::var("FLOTILLA_JEPSEN_SEED") {
        Ok(text) => text.parse().expect("FLOTILLA_JEPSEN_SEED is a u64"),
        Err(_) => rand::random(),
    }
}

fn succeeds(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Docker if it can be used for real partitions, local processes if not.
fn backend() -> (BackendKind, String) {
    match std::env::var("FLOTILLA_JEPSEN_BACKEND").as_deref() {
        Ok("docker") => return (BackendKind::Docker, "forced by the environment".into()),
        Ok("local") => return (BackendKind::Local, "forced by the environment".into()),
        Ok(other) => panic!("FLOTILLA_JEPSEN_BACKEND is docker or local, not {other:?}"),
        Err(_) => {}
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        return (
            BackendKind::Local,
            "not root: cannot enter namespaces".into(),
        );
    }
    if !succeeds("nsenter", &["--version"]) || !succeeds("iptables", &["--version"]) {
        return (BackendKind::Local, "nsenter or iptables missing".into());
    }
    if !succeeds("docker", &["info"]) {
        return (
            BackendKind::Local,
            "the Docker daemon does not answer".into(),
        );
    }
    (BackendKind::Docker, "the Docker daemon answers".into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_register_and_set_runs_are_valid() {
    use FaultKind::{Kill, Membership, Merge, Partition, Pause, Split, Transfer};
    let seed = seed();
    println!("seed = {seed} (replay with FLOTILLA_JEPSEN_SEED={seed})");
    let (backend, why) = backend();
    println!("backend = {backend:?} ({why})");
    if backend != BackendKind::Docker {
        println!("partitions need the Docker backend; running the other faults only");
    }
    // Each run holds two or three fault windows, so only the kinds listed
    // first run. The register run kills a node after a membership change:
    // with the final crash, that node restarts twice on a WAL that holds
    // the change's truncation records. The set run splits, merges, then
    // kills a node; the final crash restarts every node on a WAL that
    // holds the merges.
    for (workload, mut faults, time_limit) in [
        (
            WorkloadKind::Register,
            vec![Membership, Kill, Partition, Pause],
            REGISTER_TIME_LIMIT,
        ),
        (
            WorkloadKind::Set,
            vec![Split, Merge, Kill, Transfer, Pause, Partition],
            SET_TIME_LIMIT,
        ),
    ] {
        if backend != BackendKind::Docker {
            faults.retain(|&fault| fault != Partition);
        }
        // The first window's change, on a healthy cluster, must succeed,
        // and so must a merge after the splits.
        let mut required = vec![faults[0]];
        if faults.contains(&Merge) {
            required.push(Merge);
        }
        let splits = faults.contains(&Split);
        let options = RunOptions {
            workload,
            faults,
            nodes: 3,
            shards: 1,
            // Regions checkpoint every few seconds, each copied from a
            // capture while the region applies; kills recover from them.
            checkpoint_every_entries: Some(100),
            time_limit,
            seed,
            backend,
            concurrency: 6,
            rate: 60.0,
            report_root: PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("jepsen-reports"),
            server_binary: PathBuf::from(env!("CARGO_BIN_EXE_flotilla-jepsen")),
            image: TEST_IMAGE.to_owned(),
        };
        let outcome = execute(&options)
            .await
            .unwrap_or_else(|err| panic!("seed {seed}: {workload:?} run failed: {err}"));
        print!("{}", outcome.verdict.text());
        println!("report: {}", outcome.report_dir.display());
        assert_eq!(
            outcome.verdict.validity,
            Validity::Valid,
            "seed {seed}: see {}",
            outcome.report_dir.display()
        );
        assert!(
            outcome.verdict.history.ok > 100,
            "the workload ran: {:?}",
            outcome.verdict.history
        );
        // At least one planned fault plus the final crash of every node.
        assert!(
            outcome.verdict.faults_injected >= 2,
            "the nemesis acted: {} faults",
            outcome.verdict.faults_injected
        );
        for fault in required {
            let changes = outcome
                .verdict
                .shape_changes
                .iter()
                .find(|count| count.fault == fault);
            assert!(
                changes.is_some_and(|count| count.done >= 1),
                "seed {seed}: a {} succeeded: {changes:?}; see {}",
                fault.name(),
                outcome.report_dir.display()
            );
        }
        // Over a thousand adds pass the servers' small split threshold.
        assert!(
            !splits || outcome.verdict.regions_at_end >= 2,
            "the set's regions split: {} regions at the end",
            outcome.verdict.regions_at_end
        );
    }
}
