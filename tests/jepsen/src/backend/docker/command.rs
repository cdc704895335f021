//! Running the host's `docker`, `nsenter` and friends: output captured, a
//! failure turned into an [`Error::Command`] that quotes the command line
//! and its stderr.

use crate::Error;
use std::process::Output;

/// Runs `program args…` and returns its stdout, trimmed.
pub(super) async fn run(program: &str, args: &[String]) -> Result<String, Error> {
    let output = tokio::process::Command::new(program)
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .map_err(Error::io(format!("running {program}")))?;
    outcome(program, args, output)
}

/// [`run`] for places that cannot await (teardown in `Drop`).
pub(super) fn run_blocking(program: &str, args: &[String]) -> Result<String, Error> {
    let output = std::process::Command::new(program)
        .args(args)
        .output()
        .map_err(Error::io(format!("running {program}")))?;
    outcome(program, args, output)
}

/// `docker args…`.
pub(super) async fn docker(args: &[String]) -> Result<String, Error> {
    run("docker", args).await
}

/// The last `lines` lines of each of a container's output streams, labelled
/// (the server logs to stderr and prints its ready line to stdout), or why
/// they could not be read.
pub(super) async fn log_tail(container: &str, lines: u32) -> String {
    let output = tokio::process::Command::new("docker")
        .args(["logs", "--tail", &lines.to_string(), container])
        .kill_on_drop(true)
        .output()
        .await;
    match output {
        Ok(output) => format!(
            "stderr:\n{}\nstdout:\n{}",
            String::from_utf8_lossy(&output.stderr).trim(),
            String::from_utf8_lossy(&output.stdout).trim()
        ),
        Err(err) => format!("(docker logs {container} failed: {err})"),
    }
}

/// Owned arguments from string slices.
pub(super) fn args(items: &[&str]) -> Vec<String> {
    items.iter().map(|item| (*item).to_owned()).collect()
}

fn outcome(program: &str, args: &[String], output: Output) -> Result<String, Error> {
    if output.status.success() {
        return Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned());
    }
    Err(Error::Command {
        command: format!("{program} {}", args.join(" ")),
        status: output.status.to_string(),
        stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
    })
}
