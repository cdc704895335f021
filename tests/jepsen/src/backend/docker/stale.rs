//! Ownership labels on every container and network a run creates, and the
//! clean-up of those whose owning process is gone (a run that was killed
//! before its teardown ran).
//!
//! The owner is `PID:STARTTIME` (start time in clock ticks since boot, from
//! `/proc/PID/stat`), so a recycled pid never passes for the old owner (and
//! an exited process not yet reaped counts as gone), and
//! resources of runs still in progress — concurrent tests, another
//! terminal — are never touched.

use super::command::{args, docker};
use crate::Error;

/// Label naming the run (`docker ps --filter label=…`).
pub(super) const RUN_LABEL: &str = "org.flotilla.jepsen.run";
/// Label naming the owning process.
pub(super) const OWNER_LABEL: &str = "org.flotilla.jepsen.owner";

/// This process's owner label value.
pub(super) fn this_owner() -> String {
    let pid = std::process::id();
    format!("{pid}:{}", start_time(pid).unwrap_or_default())
}

/// Removes the containers, then the networks, of owners that are gone.
/// Returns how many resources it removed.
pub(super) async fn clean_up() -> Result<usize, Error> {
    let containers = stale("ps", &["-a"]).await?;
    if !containers.is_empty() {
        let mut rm = args(&["rm", "-f", "-v"]);
        rm.extend(containers.iter().cloned());
        docker(&rm).await?;
    }
    let networks = stale("network", &["ls"]).await?;
    for network in &networks {
        docker(&args(&["network", "rm", network])).await?;
    }
    let removed = containers.len() + networks.len();
    if removed > 0 {
        tracing::info!(removed, "removed Docker resources of earlier runs");
    }
    Ok(removed)
}

/// Ids of the labelled resources listed by `docker <object> <list…>` whose
/// owner is gone.
async fn stale(object: &str, list: &[&str]) -> Result<Vec<String>, Error> {
    let mut command = vec![object.to_owned()];
    command.extend(list.iter().map(|arg| (*arg).to_owned()));
    command.extend(args(&[
        "--filter",
        &format!("label={OWNER_LABEL}"),
        "--format",
        &format!("{{{{.ID}}}} {{{{.Label \"{OWNER_LABEL}\"}}}}"),
    ]));
    let listing = docker(&command).await?;
    Ok(listing
        .lines()
        .filter_map(|line| line.split_once(' '))
        .filter(|(_, owner)| !is_alive(owner))
        .map(|(id, _)| id.to_owned())
        .collect())
}

/// Whether the process an owner label names still runs.
fn is_alive(owner: &str) -> bool {
    let Some((pid, started)) = owner.split_once(':') else {
        return false;
    };
    let Ok(pid) = pid.parse::<u32>() else {
        return false;
    };
    start_time(pid).is_some_and(|now| now.to_string() == started)
}

/// Field 22 of `/proc/PID/stat`: when the process started; `None` when
/// there is no such process or it has exited (a zombie not yet reaped).
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; it ends at the last ')'.
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_recycled_pid_is_not() {
        let owner = this_owner();
        assert!(is_alive(&owner), "{owner}");
        let (pid, _) = owner.split_once(':').expect("pid:start");
        assert!(!is_alive(&format!("{pid}:1")));
        assert!(!is_alive("not-an-owner"));
    }
}
