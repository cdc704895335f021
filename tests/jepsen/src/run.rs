//! One run, end to end: start the cluster, drive the workload while the
//! nemesis follows its schedule, heal everything, wait for the cluster to
//! serve again, crash and restart every node, wait again, take the final
//! reads, check, and write the report.
//!
//! A run that cannot be carried out (Docker missing, a node that never
//! starts) is an [`Error`]. A node that does not come back from a crash, or
//! a cluster that does not serve again after the faults healed, is a
//! finding, not an error: the verdict gets an invalid `recovery` check.

use crate::backend::docker::{DockerBackend, DockerConfig};
use crate::backend::local::LocalBackend;
use crate::backend::{check_supported, client_config, BackendKind, ClusterBackend, Control};
use crate::check::{CheckResult, FinalRead, Validity};
use crate::nemesis::events::change_counts;
use crate::nemesis::{schedule, server_args, FaultKind, Nemesis};
use crate::report::verdict::{HistoryStats, Verdict};
use crate::report::ReportDir;
use crate::workload::bank::BankWorkload;
use crate::workload::list_append::ListAppendWorkload;
use crate::workload::register::RegisterWorkload;
use crate::workload::set::SetWorkload;
use crate::workload::{drive, Worker, Workload, WorkloadKind};
use crate::Error;
use client::Client;
use flotilla_tests::history::HistoryRecorder;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// How long the cluster may take to serve again: at the start, after the
/// faults healed, after every node restarted.
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the final reads may take, together.
const FINAL_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs started by this process, to keep their Docker names apart.
static RUNS: AtomicU32 = AtomicU32::new(0);

/// Everything a run needs to know.
#[derive(Clone, Debug, Serialize)]
pub struct RunOptions {
    pub workload: WorkloadKind,
    /// Fault kinds to inject; empty for a run without faults.
    pub faults: Vec<FaultKind>,
    pub nodes: usize,
    /// Shards per node: with more than one, a region runs on shard
    /// `id % shards` and merges cross shards.
    pub shards: usize,
    /// `flotilla server --checkpoint-every-entries`, if set.
    pub checkpoint_every_entries: Option<u64>,
    pub time_limit: Duration,
    pub seed: u64,
    pub backend: BackendKind,
    /// Concurrent logical clients.
    pub concurrency: usize,
    /// Operations per second, all clients together (at most).
    pub rate: f64,
    /// Reports go into a fresh directory under this one.
    pub report_root: PathBuf,
    /// The server binary the nodes run (the Docker image is built from it).
    pub server_binary: PathBuf,
    /// The Docker image tag.
    pub image: String,
}

impl RunOptions {
    /// What every node runs with: the faults' needs and the shard count.
    fn server_args(&self) -> Vec<String> {
        let mut args = server_args(&self.faults);
        args.extend(["--shards".to_owned(), self.shards.to_string()]);
        if let Some(entries) = self.checkpoint_every_entries {
            args.extend(["--checkpoint-every-entries".to_owned(), entries.to_string()]);
        }
        args
    }

    fn validate(&self) -> Result<(), Error> {
        let problem = if !(1..=9).contains(&self.nodes) {
            Some("--nodes must be 1 to 9")
        } else if !(1..=8).contains(&self.shards) {
            Some("--shards must be 1 to 8")
        } else if self.checkpoint_every_entries == Some(0) {
            Some("--checkpoint-every-entries must be positive")
        } else if self.concurrency == 0 {
            Some("--concurrency must be positive")
        } else if !(self.rate.is_finite() && self.rate > 0.0) {
            Some("--rate must be a positive number")
        } else if self.time_limit.is_zero() {
            Some("--time-limit must be positive")
        } else {
            None
        };
        match problem {
            Some(problem) => Err(Error::Config(problem.to_owned())),
            None => match self.backend {
                BackendKind::Docker => check_supported::<DockerBackend>(&self.faults),
                BackendKind::Local => check_supported::<LocalBackend>(&self.faults),
            },
        }
    }
}

/// A finished run.
#[derive(Debug)]
pub struct RunOutcome {
    pub verdict: Verdict,
    pub report_dir: PathBuf,
}

/// Carries out a run and writes its report.
pub async fn execute(options: &RunOptions) -> Result<RunOutcome, Error> {
    options.validate()?;
    let report = ReportDir::create(&options.report_root, options.workload.name(), options.seed)?;
    report.write_text("seed", &format!("{}\n", options.seed))?;
    report.write_json("run.json", options)?;
    tracing::info!(report = %report.path().display(), seed = options.seed, "run starting");
    let verdict = match options.backend {
        BackendKind::Docker => {
            let run_id = format!(
                "{:x}-{}-{}",
                options.seed,
                std::process::id(),
                RUNS.fetch_add(1, Ordering::Relaxed)
            );
            let backend = DockerBackend::start(DockerConfig {
                server_binary: options.server_binary.clone(),
                image: options.image.clone(),
                run_id,
                data_root: report.data_dir(),
                nodes: options.nodes,
                server_args: options.server_args(),
            })
            .await?;
            run_on(backend, options, &report).await?
        }
        BackendKind::Local => {
            let backend = LocalBackend::start(
                options.server_binary.clone(),
                report.data_dir(),
                options.nodes,
                options.server_args(),
            )
            .await?;
            run_on(backend, options, &report).await?
        }
    };
    if verdict.validity == Validity::Valid {
        if let Err(err) = report.remove_data() {
            tracing::warn!(%err, "could not remove the nodes' data directories");
        }
    }
    Ok(RunOutcome {
        verdict,
        report_dir: report.path().to_owned(),
    })
}

/// Runs the chosen workload on `backend`, saves the nodes' logs whatever
/// happened, then tears the backend down (by dropping it).
async fn run_on<B: ClusterBackend>(
    mut backend: B,
    options: &RunOptions,
    report: &ReportDir,
) -> Result<Verdict, Error> {
    let verdict = match options.workload {
        WorkloadKind::Register => {
            run_workload(&mut backend, RegisterWorkload::default(), options, report).await
        }
        WorkloadKind::Set => {
            run_workload(&mut backend, SetWorkload::default(), options, report).await
        }
        WorkloadKind::ListAppend => {
            run_workload(&mut backend, ListAppendWorkload::default(), options, report).await
        }
        WorkloadKind::Bank => run_workload(&mut backend, BankWorkload, options, report).await,
    };
    let saved = match report.logs_dir() {
        Ok(dir) => backend.save_logs(&dir).await,
        Err(err) => Err(err),
    };
    if let Err(err) = saved {
        tracing::warn!(%err, "could not save the nodes' logs");
    }
    verdict
}

async fn run_workload<B: ClusterBackend, W: Workload>(
    backend: &mut B,
    workload: W,
    options: &RunOptions,
    report: &ReportDir,
) -> Result<Verdict, Error> {
    let workload = Arc::new(workload);
    let recorder = HistoryRecorder::new();
    let endpoints = backend.endpoints();
    let control = Control::connect(endpoints.clone()).await?;
    control
        .wait_until_serving(RECOVERY_TIMEOUT, "initial election")
        .await?;

    let mut rng = StdRng::seed_from_u64(options.seed);
    let schedule = schedule::plan(
        &mut rng,
        &options.faults,
        &backend.node_ids(),
        workload.key_space(),
        options.time_limit,
    );
    report.write_json("schedule.json", &schedule)?;

    // Workers are processes 0..concurrency; the harness's own worker (set-up
    // and final reads) is the next one.
    let stride = options.concurrency as u64 + 1;
    let mut harness = Worker::new(
        Client::connect(client_config(endpoints.clone())).await?,
        recorder.clone(),
        options.concurrency as u64,
        stride,
        StdRng::seed_from_u64(rng.gen()),
    );
    workload
        .prepare(&mut harness, Instant::now() + RECOVERY_TIMEOUT)
        .await?;

    let period = Duration::from_secs_f64(options.concurrency as f64 / options.rate);
    let start = Instant::now();
    let deadline = start + options.time_limit;
    let mut workers = JoinSet::new();
    for process in 0..options.concurrency as u64 {
        let client = Client::connect(client_config(endpoints.clone())).await?;
        let worker = Worker::new(
            client,
            recorder.clone(),
            process,
            stride,
            StdRng::seed_from_u64(rng.gen()),
        );
        workers.spawn(drive(workload.new_step(), worker, deadline, period));
    }

    let mut nemesis = Nemesis::new(backend, &control, recorder.clone());
    // A node that does not come back from a fault is a finding: the faults
    // stop, the clients run to the time limit, and the verdict says so.
    let mut restart_failure = None;
    for window in &schedule {
        tokio::time::sleep_until(start + Duration::from_millis(window.start_ms)).await;
        let applied = async {
            nemesis.start(&window.fault).await?;
            tokio::time::sleep_until(start + Duration::from_millis(window.end_ms)).await;
            nemesis.stop().await
        };
        match applied.await {
            Ok(()) => {}
            Err(err) if err.is_node_start_failure() => {
                restart_failure = Some(err);
                break;
            }
            Err(err) => return Err(err),
        }
    }
    while let Some(joined) = workers.join_next().await {
        if let Err(err) = joined {
            if err.is_panic() {
                std::panic::resume_unwind(err.into_panic());
            }
            return Err(Error::Worker(err.to_string()));
        }
    }

    let recovery = async {
        if let Some(failure) = restart_failure {
            return Err(failure);
        }
        nemesis.stop().await?;
        control
            .wait_until_serving(RECOVERY_TIMEOUT, "after every fault healed")
            .await?;
        nemesis.crash_all().await?;
        control
            .wait_until_serving(RECOVERY_TIMEOUT, "after every node crashed and restarted")
            .await?;
        workload
            .final_read(
                &mut harness,
                &recorder.history(),
                Instant::now() + FINAL_READ_TIMEOUT,
            )
            .await
    };
    let (final_read, recovery_failure) = match recovery.await {
        Ok(final_read) => (Some(final_read), None),
        Err(err @ (Error::NotRecovered { .. } | Error::FinalRead { .. })) => (None, Some(err)),
        Err(err) if err.is_node_start_failure() => (None, Some(err)),
        Err(err) => return Err(err),
    };

    let history = recorder.history();
    let checking = std::time::Instant::now();
    let mut checks = final_read
        .as_ref()
        .map(|final_read| workload.check(&history, final_read))
        .unwrap_or_default();
    let checker_ms = u64::try_from(checking.elapsed().as_millis()).unwrap_or(u64::MAX);
    if let Some(failure) = recovery_failure {
        checks.push(CheckResult {
            name: "recovery".to_owned(),
            validity: Validity::Invalid,
            summary: failure.to_string(),
            details: serde_json::Value::Null,
        });
    }
    let regions_at_end = control.regions_holding(workload.key_space()).await;
    let end_ns = recorder.now_ns();
    let events = nemesis.events().to_vec();
    let verdict = Verdict {
        validity: Verdict::validity_of(&checks),
        workload: options.workload.name(),
        backend: B::NAME,
        seed: options.seed,
        nodes: options.nodes,
        nemesis: options.faults.clone(),
        time_limit_s: options.time_limit.as_secs(),
        history: HistoryStats::of(&history),
        faults_injected: events
            .iter()
            .filter(|event| event.phase == crate::nemesis::events::Phase::Start)
            .count(),
        shape_changes: change_counts(&events, &options.faults),
        regions_at_end,
        checker_ms,
        checks,
    };
    report.write_history(&history)?;
    report.write_events(&events)?;
    report.write_final_read(&final_read.unwrap_or_else(FinalRead::new))?;
    report.write_verdict(&verdict)?;
    report.plot(&history, &events, end_ns)?;
    Ok(verdict)
}
