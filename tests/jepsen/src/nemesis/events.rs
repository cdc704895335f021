//! What the nemesis did and when, on the history's clock, and the fault
//! windows derived from it (for the plot).

use crate::backend::NodeId;
use serde::Serialize;

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
    /// `partition`, `kill`, `pause` or `crash-all`.
    pub fault: &'static str,
    pub nodes: Vec<NodeId>,
    pub detail: String,
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
}
