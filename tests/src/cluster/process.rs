//! One `flotilla server` child process: launch and wait for its ready line,
//! crash it, or shut it down cleanly.
//!
//! The child's stderr goes straight to the node's log file; a reader thread
//! copies its stdout there too and reports the ready line. A `NodeProcess`
//! that is dropped kills and reaps its child, so no path — an error, a
//! failed assertion — leaves a server running. The child also gets SIGKILL
//! from the kernel if the thread that launched it dies first (as when the
//! test binary itself is killed).

use super::logs;
use crate::Error;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::Instant;

/// How often exit is polled while waiting for a signalled child.
const EXIT_POLL_INTERVAL: Duration = Duration::from_millis(20);
/// Lines of log quoted in launch errors.
const ERROR_LOG_LINES: usize = 40;

/// What to run for one node.
pub(super) struct Launch<'a> {
    pub binary: &'a Path,
    pub node: u64,
    pub initial_cluster: &'a str,
    pub client_addr: String,
    pub status_addr: String,
    pub data_dir: &'a Path,
    pub log_path: &'a Path,
    pub ready_timeout: Duration,
    /// Further `server` flags (e.g. tuning for a test).
    pub extra_args: &'a [String],
}

/// A running server child.
#[derive(Debug)]
pub(super) struct NodeProcess {
    node: u64,
    child: Child,
}

impl NodeProcess {
    /// Starts the server and waits until it prints its ready line.
    pub(super) async fn launch(launch: Launch<'_>) -> Result<NodeProcess, Error> {
        let io_error = |context: &str| {
            let context = format!("node {}: {context}", launch.node);
            move |source| Error::Io { context, source }
        };
        let log = logs::open_for_run(launch.log_path, &format!("launching node {}", launch.node))
            .map_err(io_error("opening log"))?;
        let stderr = log.try_clone().map_err(io_error("cloning log handle"))?;
        let mut command = Command::new(launch.binary);
        command
            .arg("server")
            .arg("--id")
            .arg(launch.node.to_string())
            .arg("--initial-cluster")
            .arg(launch.initial_cluster)
            .arg("--client-addr")
            .arg(&launch.client_addr)
            .arg("--status-addr")
            .arg(&launch.status_addr)
            .arg("--data-dir")
            .arg(launch.data_dir)
            .arg("--no-pin");
        // Several nodes share this machine's cores: one unpinned shard each
        // keeps them from fighting over the same cores, unless a test asks
        // for more.
        if !launch.extra_args.iter().any(|a| a == "--shards") {
            command.arg("--shards").arg("1");
        }
        command
            .args(launch.extra_args)
            .env("NO_COLOR", "1")
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr);
        // SAFETY: prctl is async-signal-safe and touches no memory of the
        // parent; it only asks the kernel to SIGKILL the child when the
        // launching thread exits.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = command.spawn().map_err(io_error("spawning server"))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut process = NodeProcess {
            node: launch.node,
            child,
        };

        let (ready_tx, ready_rx) = oneshot::channel();
        let ready_prefix = format!("flotilla server ready node={} ", launch.node);
        std::thread::Builder::new()
            .name(format!("node-{}-stdout", launch.node))
            .spawn(move || copy_stdout(stdout, log, &ready_prefix, ready_tx))
            .map_err(io_error("starting stdout reader"))?;

        match tokio::time::timeout(launch.ready_timeout, ready_rx).await {
            Ok(Ok(())) => Ok(process),
            Ok(Err(_stdout_closed)) => {
                // Closing stdout without the ready line means it is exiting.
                let status = process.wait_for_exit(launch.ready_timeout).await?;
                Err(Error::NodeExited {
                    node: launch.node,
                    status: status
                        .map_or_else(|| "still running".to_owned(), |status| status.to_string()),
                    log_tail: logs::tail(launch.log_path, ERROR_LOG_LINES),
                })
            }
            Err(_elapsed) => Err(Error::NodeNotReady {
                node: launch.node,
                waited: launch.ready_timeout,
                log_tail: logs::tail(launch.log_path, ERROR_LOG_LINES),
            }),
        }
    }

    /// The child's process id.
    pub(super) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the child has exited (and so been reaped).
    pub(super) fn has_exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGKILL: a crash. Returns once the child is reaped.
    pub(super) fn kill(mut self) -> Result<(), Error> {
        self.kill_and_reap().map_err(|source| Error::Io {
            context: format!("node {}: killing", self.node),
            source,
        })
    }

    /// SIGTERM, then waits up to `timeout` for a clean exit. A child still
    /// running after that is killed and the shutdown reported as failed.
    pub(super) async fn terminate(mut self, timeout: Duration) -> Result<ExitStatus, Error> {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pids fit pid_t");
        // SAFETY: plain syscall on our own child, which is not reaped yet
        // (we still own its `Child`), so the pid cannot have been reused.
        if unsafe { libc::kill(pid, libc::SIGTERM) } == -1 {
            return Err(Error::Io {
                context: format!("node {}: sending SIGTERM", self.node),
                source: std::io::Error::last_os_error(),
            });
        }
        match self.wait_for_exit(timeout).await? {
            Some(status) => Ok(status),
            None => Err(Error::ShutdownTimedOut {
                node: self.node,
                waited: timeout,
            }),
        }
    }

    /// Polls for exit until `timeout`; `None` if the child is still running.
    async fn wait_for_exit(&mut self, timeout: Duration) -> Result<Option<ExitStatus>, Error> {
        let deadline = Instant::now() + timeout;
        loop {
            let exited = self.child.try_wait().map_err(|source| Error::Io {
                context: format!("node {}: waiting for exit", self.node),
                source,
            })?;
            if exited.is_some() || Instant::now() >= deadline {
                return Ok(exited);
            }
            tokio::time::sleep(EXIT_POLL_INTERVAL).await;
        }
    }

    fn kill_and_reap(&mut self) -> std::io::Result<()> {
        if self.child.try_wait()?.is_none() {
            self.child.kill()?;
        }
        self.child.wait().map(drop)
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        if let Err(err) = self.kill_and_reap() {
            eprintln!("node {}: could not kill server: {err}", self.node);
        }
    }
}

/// Copies the child's stdout into its log until EOF, signalling the first
/// line that starts with `ready_prefix`.
fn copy_stdout(
    stdout: std::process::ChildStdout,
    mut log: std::fs::File,
    ready_prefix: &str,
    ready: oneshot::Sender<()>,
) {
    let mut ready = Some(ready);
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        // The log is best effort: a full disk must not stop the signal.
        let _ = writeln!(log, "{line}");
        if line.starts_with(ready_prefix) {
            if let Some(ready) = ready.take() {
                let _ = ready.send(());
            }
        }
    }
}
