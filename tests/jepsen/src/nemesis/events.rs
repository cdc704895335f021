//! What the nemesis did and when, on the history's clock, and the fault
//! windows derived from it (for the plot).

use crate::backend::NodeId;
use serde::Serialize;

/// One split the nemesis asked for, and what came of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SplitRecord {
    /// When the split was asked for, on the history's clock.
    pub time_ns: u64,
    /// The split key (ASCII: a key of the workload's space).
    pub key: String,
    #[serde(flatten)]
    pub outcome: SplitOutcome,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "lowercase")]
pub enum SplitOutcome {
    /// The two regions meeting at the key (also when an earlier split had
    /// already cut there).
    Split {
        left: RegionRange,
        right: RegionRange,
    },
    /// The split was not done (or its outcome is unknown).
    Error { message: String },
}

/// A region's identity and range, keys escaped (an empty end is unbounded).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RegionRange {
    pub id: u64,
    pub start: String,
    pub end: String,
    pub version: u64,
}

impl From<&client::Region> for RegionRange {
    fn from(region: &client::Region) -> RegionRange {
        RegionRange {
            id: region.id,
            start: region.start_key.escape_ascii().to_string(),
            end: region.end_key.escape_ascii().to_string(),
            version: region.epoch.as_ref().map_or(0, |epoch| epoch.version),
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
    /// `partition`, `kill`, `pause`, `split` or `crash-all`.
    pub fault: &'static str,
    pub nodes: Vec<NodeId>,
    pub detail: String,
    /// The splits a `split` start made, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub splits: Vec<SplitRecord>,
}

/// How many splits `events` record: (done, failed).
pub fn split_counts(events: &[NemesisEvent]) -> (usize, usize) {
    let splits = events.iter().flat_map(|event| &event.splits);
    splits.fold((0, 0), |(done, failed), split| match split.outcome {
        SplitOutcome::Split { .. } => (done + 1, failed),
        SplitOutcome::Error { .. } => (done, failed + 1),
    })
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
            splits: Vec::new(),
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
    fn splits_are_counted_by_outcome_and_serialised_flat() {
        let range = |id, start: &str, end: &str| RegionRange {
            id,
            start: start.into(),
            end: end.into(),
            version: 2,
        };
        let done = SplitRecord {
            time_ns: 5,
            key: "k/50".into(),
            outcome: SplitOutcome::Split {
                left: range(1, "", "k/50"),
                right: range(7, "k/50", ""),
            },
        };
        let failed = SplitRecord {
            time_ns: 6,
            key: "k/60".into(),
            outcome: SplitOutcome::Error {
                message: "timed out".into(),
            },
        };
        let mut start = event(10, Phase::Start);
        start.splits = vec![done.clone(), failed];
        assert_eq!(split_counts(&[start, event(20, Phase::End)]), (1, 1));
        let json = serde_json::to_value(&done).expect("serialisable");
        assert_eq!(json["outcome"], "split");
        assert_eq!(json["right"]["start"], "k/50");
    }
}
