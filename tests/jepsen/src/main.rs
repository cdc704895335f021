//! `flotilla-jepsen`: runs one Jepsen-style test and prints its verdict and
//! report directory.
//!
//! Exit codes: 0 valid, 1 invalid (or the cluster did not recover), 2 the
//! run could not be carried out, 3 the checkers could not decide, 130
//! interrupted (SIGINT or SIGTERM; the cluster is torn down first).
//!
//! The binary also embeds the Flotilla server: `flotilla-jepsen server …`
//! is `flotilla server …`. It is the default server binary of a run, so one
//! `cargo run` builds everything a run needs.

use clap::Parser;
use flotilla_jepsen::backend::docker::DEFAULT_IMAGE;
use flotilla_jepsen::backend::BackendKind;
use flotilla_jepsen::check::Validity;
use flotilla_jepsen::nemesis::FaultKind;
use flotilla_jepsen::run::{execute, RunOptions};
use flotilla_jepsen::workload::WorkloadKind;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

const EXIT_INVALID: u8 = 1;
const EXIT_ERROR: u8 = 2;
const EXIT_UNKNOWN: u8 = 3;
const EXIT_INTERRUPTED: u8 = 130;

#[derive(Parser, Debug)]
#[command(
    name = "flotilla-jepsen",
    about = "Jepsen-style fault injection against a Flotilla cluster"
)]
struct Args {
    /// What the clients do.
    #[arg(long, value_enum)]
    workload: WorkloadKind,
    /// Faults to inject, comma-separated; omit for none.
    #[arg(long, value_enum, value_delimiter = ',')]
    nemesis: Vec<FaultKind>,
    /// Cluster size.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Shards per node (unpinned); with more than one, merges cross shards.
    #[arg(long, default_value_t = 1)]
    shards: usize,
    /// Applied entries between a region's checkpoints (the server's default
    /// if omitted). A small number makes every region checkpoint, from a
    /// capture read while it keeps applying, many times in a run, and
    /// restarts recover from those checkpoints.
    #[arg(long)]
    checkpoint_every_entries: Option<u64>,
    /// Seconds of workload (recovery and checking come after).
    #[arg(long, default_value_t = 60)]
    time_limit: u64,
    /// Seed of the fault schedule and the clients' choices (default: random).
    #[arg(long)]
    seed: Option<u64>,
    /// Where the nodes run.
    #[arg(long, value_enum, default_value_t = BackendKind::Docker)]
    backend: BackendKind,
    /// Concurrent logical clients (default: 2 per node).
    #[arg(long)]
    concurrency: Option<usize>,
    /// Operations per second, all clients together (at most).
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// Reports go into a fresh directory under this one.
    #[arg(long, default_value = "jepsen-reports")]
    report_dir: PathBuf,
    /// The server binary the nodes run (default: this binary, which embeds
    /// the server).
    #[arg(long)]
    server_binary: Option<PathBuf>,
    /// Docker image tag, built from the server binary when missing or stale.
    #[arg(long, default_value = DEFAULT_IMAGE)]
    image: String,
}

fn main() -> ExitCode {
    if std::env::args_os()
        .nth(1)
        .is_some_and(|arg| arg == "server")
    {
        return kvserver::cli::main();
    }
    let args = Args::parse();
    kvserver::cli::init_tracing();
    let server_binary = match args
        .server_binary
        .clone()
        .map_or_else(std::env::current_exe, Ok)
    {
        Ok(path) => path,
        Err(err) => {
            eprintln!("error: cannot locate this binary: {err}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    let seed = args.seed.unwrap_or_else(rand::random);
    println!("seed {seed} (replay with --seed {seed})");
    let options = RunOptions {
        workload: args.workload,
        faults: args.nemesis,
        nodes: args.nodes,
        shards: args.shards,
        checkpoint_every_entries: args.checkpoint_every_entries,
        time_limit: Duration::from_secs(args.time_limit),
        seed,
        backend: args.backend,
        concurrency: args.concurrency.unwrap_or(2 * args.nodes),
        rate: args.rate,
        report_root: args.report_dir,
        server_binary,
        image: args.image,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    let interruptible = async {
        tokio::select! {
            outcome = execute(&options) => Some(outcome),
            // Dropping the run tears its cluster down.
            () = interrupted() => None,
        }
    };
    match runtime.block_on(interruptible) {
        None => {
            eprintln!("interrupted; the cluster was torn down");
            ExitCode::from(EXIT_INTERRUPTED)
        }
        Some(Ok(outcome)) => {
            print!("{}", outcome.verdict.text());
            println!("report: {}", outcome.report_dir.display());
            ExitCode::from(match outcome.verdict.validity {
                Validity::Valid => 0,
                Validity::Invalid => EXIT_INVALID,
                Validity::Unknown => EXIT_UNKNOWN,
            })
        }
        Some(Err(err)) => {
            eprintln!("error: {err}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

/// Resolves on SIGINT or SIGTERM (never, if neither can be watched).
async fn interrupted() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(mut interrupt), Ok(mut terminate)) => {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
        }
        _ => std::future::pending().await,
    }
}
