//! Command-line entry points of the `flotilla` binary. Each subcommand lives
//! in its own module with an `Args` struct and a `run` function.

pub mod bench;
pub mod ctl;
pub mod data_dir;
pub mod playground;
pub mod server;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "flotilla",
    version,
    about = "A horizontally scalable, linearizable key-value store"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run one node of a cluster.
    Server(server::ServerArgs),
    /// Start a local 3-node cluster on loopback, like `tiup playground`.
    Playground(playground::PlaygroundArgs),
    /// Admin and data commands against a running cluster.
    Ctl(ctl::CtlArgs),
    /// Load generator: throughput and latency percentiles.
    Bench(bench::BenchArgs),
}

/// Parses the command line and runs the chosen subcommand.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let result = match cli.command {
        // The server builds its own runtimes (glommio shards + tokio).
        Command::Server(args) => server::run(args),
        Command::Playground(args) => tokio_main(playground::run(args)),
        Command::Ctl(args) => {
            end_quietly_on_closed_stdout();
            tokio_main(ctl::run(args))
        }
        Command::Bench(args) => tokio_main(bench::run(args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Lets `ctl` end like any Unix filter when the reader of its output goes
/// away (`flotilla ctl regions | head`): killed by SIGPIPE, instead of
/// `println!` panicking on the broken pipe. Only for `ctl`, whose one other
/// output is gRPC sockets, and sends on sockets never raise SIGPIPE (Rust's
/// standard library passes `MSG_NOSIGNAL`); a server keeps it ignored.
fn end_quietly_on_closed_stdout() {
    // SAFETY: restores the default disposition of one signal before any
    // other thread exists; no handler of ours is involved.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn tokio_main<F: std::future::Future<Output = anyhow::Result<()>>>(fut: F) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(fut)
}

/// Logs to stderr, filtered by `FLOTILLA_LOG` (default `info`). Used by
/// every binary of the project.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FLOTILLA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}
