//! A run's verdict: what ran, what the history holds, and every check's
//! result, as JSON and as text.

use crate::check::{CheckResult, Validity};
use crate::nemesis::events::ChangeCount;
use crate::nemesis::FaultKind;
use flotilla_tests::history::History;
use serde::Serialize;
use std::fmt::Write as _;

/// How many operations ended each way.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct HistoryStats {
    pub operations: usize,
    pub ok: usize,
    pub fail: usize,
    pub info: usize,
}

impl HistoryStats {
    pub fn of(history: &History) -> HistoryStats {
        let (ok, fail, info) = history.outcome_counts();
        HistoryStats {
            operations: history.operations.len(),
            ok,
            fail,
            info,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Verdict {
    /// Every check's validity together.
    pub validity: Validity,
    pub workload: &'static str,
    pub backend: &'static str,
    pub seed: u64,
    pub nodes: usize,
    pub nemesis: Vec<FaultKind>,
    pub time_limit_s: u64,
    pub history: HistoryStats,
    /// Faults started (the final crash of every node included).
    pub faults_injected: usize,
    /// Changes of shape the nemesis made, those that failed and those that
    /// had nothing to do, per kind the run asked for (splits, merges, leader
    /// transfers, membership changes).
    pub shape_changes: Vec<ChangeCount>,
    /// Regions holding the workload's keys at the end, in the cluster's
    /// merged view (0 when no node answered).
    pub regions_at_end: usize,
    pub checker_ms: u64,
    pub checks: Vec<CheckResult>,
}

impl Verdict {
    /// The overall validity of `checks` (valid when there are none).
    pub fn validity_of(checks: &[CheckResult]) -> Validity {
        checks
            .iter()
            .map(|check| check.validity)
            .fold(Validity::Valid, Validity::and)
    }

    /// The human-readable verdict.
    pub fn text(&self) -> String {
        let nemesis = if self.nemesis.is_empty() {
            "none".to_owned()
        } else {
            self.nemesis
                .iter()
                .map(|fault| fault.name())
                .collect::<Vec<_>>()
                .join(",")
        };
        let mut text = String::new();
        let _ = writeln!(
            text,
            "{} on {} {} nodes, nemesis {nemesis}, {} s, seed {}",
            self.workload, self.nodes, self.backend, self.time_limit_s, self.seed
        );
        let _ = writeln!(
            text,
            "history: {} operations ({} ok, {} fail, {} info); {} faults injected; checked in {} ms",
            self.history.operations,
            self.history.ok,
            self.history.fail,
            self.history.info,
            self.faults_injected,
            self.checker_ms
        );
        let changes: Vec<String> = self.shape_changes.iter().map(ToString::to_string).collect();
        let _ = writeln!(
            text,
            "changes by the nemesis: {}; regions holding the workload's keys at the end: {}",
            if changes.is_empty() {
                "none".to_owned()
            } else {
                changes.join(", ")
            },
            self.regions_at_end
        );
        for check in &self.checks {
            let _ = writeln!(
                text,
                "  [{}] {}: {}",
                label(check.validity),
                check.name,
                check.summary.trim_end()
            );
        }
        let _ = writeln!(text, "verdict: {}", label(self.validity).to_uppercase());
        text
    }
}

fn label(validity: Validity) -> &'static str {
    match validity {
        Validity::Valid => "valid",
        Validity::Unknown => "unknown",
        Validity::Invalid => "invalid",
    }
}
