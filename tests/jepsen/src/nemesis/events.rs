//! What the nemesis did and when, on the history's clock, and the fault
//! windows derived from it (for the plot).

use super::FaultKind;
use crate::backend::NodeId;
use serde::Serialize;

/// One change of shape the nemesis asked for (a split, a merge, a leader
/// transfer, a membership change), and what came of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ShapeChange {
    /// When the change was asked for, on the history's clock.
    pub time_ns: u64,
    /// When its outcome was known (or the nemesis gave up on it).
    pub completed_ns: u64,
    /// The planned key (ASCII: a key of the workload's space): the split
    /// key, or a key of the region to change.
    pub key: String,
    /// What was asked of the cluster; absent when no region, leader or
    /// candidate was found to act on, or there was nothing to do (the
    /// outcome says why).
    #[serde(flatten)]
    pub request: Option<ChangeRequest>,
    #[serde(flatten)]
    pub outcome: ChangeOutcome,
}

/// A change of shape as resolved against the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "change", rename_all = "kebab-case")]
pub enum ChangeRequest {
    /// Split the region holding the key at it.
    Split,
    /// Merge region `source` (holding the key) into its neighbour `target`.
    Merge { source: u64, target: u64 },
    /// Hand `region`'s leadership from `from` to `to`.
    TransferLeader {
        region: u64,
        from: NodeId,
        to: NodeId,
    },
    /// Move `region`'s replica on store `from` to store `to`.
    MoveReplica {
        region: u64,
        from: NodeId,
        to: NodeId,
    },
    /// Remove `region`'s voter on `store`, add it back as a learner, and
    /// promote it.
    ReAddVoter { region: u64, store: NodeId },
}

impl ChangeRequest {
    /// The stores the change involves.
    pub fn stores(&self) -> Vec<NodeId> {
        match *self {
            ChangeRequest::Split | ChangeRequest::Merge { .. } => Vec::new(),
            ChangeRequest::TransferLeader { from, to, .. }
            | ChangeRequest::MoveReplica { from, to, .. } => vec![from, to],
            ChangeRequest::ReAddVoter { store, .. } => vec![store],
        }
    }
}

impl std::fmt::Display for ChangeRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChangeRequest::Split => write!(f, "split"),
            ChangeRequest::Merge { source, target } => {
                write!(f, "region {source} into region {target}")
            }
            ChangeRequest::TransferLeader { region, from, to } => {
                write!(f, "region {region}: leader {from} -> {to}")
            }
            ChangeRequest::MoveReplica { region, from, to } => {
                write!(f, "region {region}: replica {from} -> {to}")
            }
            ChangeRequest::ReAddVoter { region, store } => {
                write!(f, "region {region}: voter {store} removed and added back")
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "lowercase")]
pub enum ChangeOutcome {
    /// The change was made. `regions`: those it left, as the cluster
    /// answered (a split: the two meeting at the key, also when an earlier
    /// split had already cut there, learners not marked; a merge: the
    /// target, grown over the source's range; a transfer: the region,
    /// unchanged but for its leader; a membership change: the region with
    /// its new members).
    Done { regions: Vec<RegionShape> },
    /// The change was not made, or its outcome is unknown.
    Error { message: String },
    /// There was nothing to change (a merge when one region holds the whole
    /// user key space); `reason` says what was found.
    Nothing { reason: String },
}

impl ShapeChange {
    /// One line: the key, the resolved request and the outcome.
    pub fn summary(&self) -> String {
        let request = self
            .request
            .as_ref()
            .map_or_else(String::new, |request| format!(" ({request})"));
        let outcome = match &self.outcome {
            ChangeOutcome::Done { .. } => "done",
            ChangeOutcome::Error { message } => message,
            ChangeOutcome::Nothing { reason } => reason,
        };
        format!("at {}{request}: {outcome}", self.key)
    }
}

/// A region's identity, range and members, keys escaped (an empty end is
/// unbounded).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RegionShape {
    pub id: u64,
    pub start: String,
    pub end: String,
    pub version: u64,
    pub conf_ver: u64,
    pub voters: Vec<NodeId>,
    pub learners: Vec<NodeId>,
}

impl From<&client::Region> for RegionShape {
    fn from(region: &client::Region) -> RegionShape {
        let stores = |learners: bool| {
            let mut stores: Vec<NodeId> = region
                .peers
                .iter()
                .filter(|peer| peer.is_learner == learners)
                .map(|peer| peer.store_id)
                .collect();
            stores.sort_unstable();
            stores
        };
        RegionShape {
            id: region.id,
            start: region.start_key.escape_ascii().to_string(),
            end: region.end_key.escape_ascii().to_string(),
            version: region.epoch.as_ref().map_or(0, |epoch| epoch.version),
            conf_ver: region.epoch.as_ref().map_or(0, |epoch| epoch.conf_ver),
            voters: stores(false),
            learners: stores(true),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// The fault took effect.
    Start,
    /// The fault was undone.
    End,
}

/// One nemesis action.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NemesisEvent {
    /// Nanoseconds on the history's clock.
    pub time_ns: u64,
    pub phase: Phase,
    /// `partition`, `kill`, `pause`, `split`, `merge`, `transfer`,
    /// `membership` or `crash-all`.
    pub fault: &'static str,
    pub nodes: Vec<NodeId>,
    pub detail: String,
    /// The changes a `split`, `merge`, `transfer` or `membership` start
    /// made, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<ShapeChange>,
}

/// How many changes of one kind the nemesis made, how many failed, and how
/// many had nothing to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ChangeCount {
    pub fault: FaultKind,
    pub done: usize,
    pub failed: usize,
    pub nothing_to_do: usize,
}

impl ChangeCount {
    /// Counts `changes` by outcome.
    pub fn of<'c>(fault: FaultKind, changes: impl IntoIterator<Item = &'c ShapeChange>) -> Self {
        let mut count = ChangeCount {
            fault,
            done: 0,
            failed: 0,
            nothing_to_do: 0,
        };
        for change in changes {
            match change.outcome {
                ChangeOutcome::Done { .. } => count.done += 1,
                ChangeOutcome::Error { .. } => count.failed += 1,
                ChangeOutcome::Nothing { .. } => count.nothing_to_do += 1,
            }
        }
        count
    }
}

impl std::fmt::Display for ChangeCount {
    /// `merge 3 done (1 failed, 2 with nothing to do)`; the last part only
    /// when there were such changes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} done ({} failed",
            self.fault.name(),
            self.done,
            self.failed
        )?;
        if self.nothing_to_do > 0 {
            write!(f, ", {} with nothing to do", self.nothing_to_do)?;
        }
        write!(f, ")")
    }
}

/// The changes `events` record, per kind of `faults` that changes shape
/// (in the order of `faults`).
pub fn change_counts(events: &[NemesisEvent], faults: &[FaultKind]) -> Vec<ChangeCount> {
    let mut kinds: Vec<FaultKind> = Vec::new();
    for &fault in faults {
        if fault.changes_shape() && !kinds.contains(&fault) {
            kinds.push(fault);
        }
    }
    kinds
        .into_iter()
        .map(|fault| {
            let changes = events
                .iter()
                .filter(|event| event.fault == fault.name())
                .flat_map(|event| &event.changes);
            ChangeCount::of(fault, changes)
        })
        .collect()
}

/// A span of time during which a fault was in effect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultSpan {
    pub fault: &'static str,
    pub from_ns: u64,
    pub to_ns: u64,
}

/// Pairs each start with the next end; a fault never ended lasts until
/// `end_ns`.
pub fn spans(events: &[NemesisEvent], end_ns: u64) -> Vec<FaultSpan> {
    let mut spans = Vec::new();
    let mut open: Option<&NemesisEvent> = None;
    for event in events {
        match event.phase {
            Phase::Start => open = Some(event),
            Phase::End => {
                if let Some(start) = open.take() {
                    spans.push(FaultSpan {
                        fault: start.fault,
                        from_ns: start.time_ns,
                        to_ns: event.time_ns,
                    });
                }
            }
        }
    }
    if let Some(start) = open {
        spans.push(FaultSpan {
            fault: start.fault,
            from_ns: start.time_ns,
            to_ns: end_ns.max(start.time_ns),
        });
    }
    spans
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(time_ns: u64, phase: Phase) -> NemesisEvent {
        NemesisEvent {
            time_ns,
            phase,
            fault: "kill",
            nodes: vec![1],
            detail: String::new(),
            changes: Vec::new(),
        }
    }

    #[test]
    fn starts_pair_with_ends_and_open_faults_run_to_the_end() {
        let events = [
            event(10, Phase::Start),
            event(20, Phase::End),
            event(30, Phase::Start),
        ];
        let spans = spans(&events, 50);
        assert_eq!(spans.len(), 2);
        assert_eq!((spans[0].from_ns, spans[0].to_ns), (10, 20));
        assert_eq!((spans[1].from_ns, spans[1].to_ns), (30, 50));
    }

    #[test]
    fn changes_are_counted_per_kind_and_serialised_flat() {
        let shape = |id, start: &str, end: &str| RegionShape {
            id,
            start: start.into(),
            end: end.into(),
            version: 2,
            conf_ver: 1,
            voters: vec![1, 2, 3],
            learners: Vec::new(),
        };
        let split = ShapeChange {
            time_ns: 5,
            completed_ns: 5_500,
            key: "k/50".into(),
            request: Some(ChangeRequest::Split),
            outcome: ChangeOutcome::Done {
                regions: vec![shape(1, "", "k/50"), shape(7, "k/50", "")],
            },
        };
        let failed_split = ShapeChange {
            time_ns: 6,
            completed_ns: 6_500,
            key: "k/60".into(),
            request: Some(ChangeRequest::Split),
            outcome: ChangeOutcome::Error {
                message: "timed out".into(),
            },
        };
        let unresolved_transfer = ShapeChange {
            time_ns: 7,
            completed_ns: 7_500,
            key: "k/10".into(),
            request: None,
            outcome: ChangeOutcome::Error {
                message: "no known leader".into(),
            },
        };
        let merge = ShapeChange {
            time_ns: 40,
            completed_ns: 40_500,
            key: "k/20".into(),
            request: Some(ChangeRequest::Merge {
                source: 7,
                target: 1,
            }),
            outcome: ChangeOutcome::Done {
                regions: vec![shape(1, "", "")],
            },
        };
        let idle_merge = ShapeChange {
            time_ns: 41,
            completed_ns: 41_000,
            key: "k/30".into(),
            request: None,
            outcome: ChangeOutcome::Nothing {
                reason: "one region".into(),
            },
        };
        let mut splits = event(10, Phase::Start);
        splits.fault = "split";
        splits.changes = vec![split.clone(), failed_split];
        let mut transfers = event(30, Phase::Start);
        transfers.fault = "transfer";
        transfers.changes = vec![unresolved_transfer.clone()];
        let mut merges = event(40, Phase::Start);
        merges.fault = "merge";
        merges.changes = vec![merge.clone(), idle_merge.clone()];
        let events = [splits, event(20, Phase::End), transfers, merges];
        let faults = [
            FaultKind::Kill,
            FaultKind::Transfer,
            FaultKind::Split,
            FaultKind::Merge,
        ];
        let count = |fault, done, failed, nothing_to_do| ChangeCount {
            fault,
            done,
            failed,
            nothing_to_do,
        };
        let counts = change_counts(&events, &faults);
        assert_eq!(
            counts,
            [
                count(FaultKind::Transfer, 0, 1, 0),
                count(FaultKind::Split, 1, 1, 0),
                count(FaultKind::Merge, 1, 0, 1),
            ]
        );
        assert_eq!(counts[1].to_string(), "split 1 done (1 failed)");
        assert_eq!(
            counts[2].to_string(),
            "merge 1 done (0 failed, 1 with nothing to do)"
        );

        let json = serde_json::to_value(&split).expect("serialisable");
        assert_eq!(json["change"], "split");
        assert_eq!(json["outcome"], "done");
        assert_eq!(json["regions"][1]["start"], "k/50");
        let json = serde_json::to_value(&unresolved_transfer).expect("serialisable");
        assert!(json.get("change").is_none(), "{json}");
        assert_eq!(json["message"], "no known leader");
        let json = serde_json::to_value(&merge).expect("serialisable");
        assert_eq!(json["change"], "merge");
        assert_eq!(
            (json["source"].as_u64(), json["target"].as_u64()),
            (Some(7), Some(1))
        );
        let json = serde_json::to_value(&idle_merge).expect("serialisable");
        assert_eq!(json["outcome"], "nothing");
        assert_eq!(json["reason"], "one region");
        let moved = ChangeRequest::MoveReplica {
            region: 1,
            from: 2,
            to: 4,
        };
        let json = serde_json::to_value(&moved).expect("serialisable");
        assert_eq!(json["change"], "move-replica");
        assert_eq!(
            (json["from"].as_u64(), json["to"].as_u64()),
            (Some(2), Some(4))
        );
    }
}
