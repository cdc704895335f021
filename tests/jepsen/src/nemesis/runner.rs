//! Applies planned faults to a backend and undoes them, one at a time,
//! logging each action on the history's clock. Changes of shape (splits,
//! merges, leader transfers, membership changes) go through the harness's admin
//! client ([`Reshaper`]) and are logged with the regions they left (or the
//! error); there is nothing to undo after them.

use super::events::{ChangeCount, NemesisEvent, Phase, ShapeChange};
use super::partition;
use super::reshape::Reshaper;
use super::schedule::{Fault, Shape, Target};
use crate::backend::{ClusterBackend, Control, Grudge, NodeId};
use crate::Error;
use flotilla_tests::history::HistoryRecorder;

/// How to undo the fault in effect.
#[derive(Debug)]
enum Undo {
    Heal,
    Restart(Vec<NodeId>),
    Resume(Vec<NodeId>),
    /// A change of shape: it stays.
    Nothing,
}

#[derive(Debug)]
struct Active {
    fault: &'static str,
    nodes: Vec<NodeId>,
    undo: Undo,
}

/// The fault injector of one run.
pub struct Nemesis<'a, B: ClusterBackend> {
    backend: &'a mut B,
    control: &'a Control,
    clock: HistoryRecorder,
    events: Vec<NemesisEvent>,
    active: Option<Active>,
}

impl<'a, B: ClusterBackend> Nemesis<'a, B> {
    /// A nemesis logging on `clock` (the history's recorder).
    pub fn new(backend: &'a mut B, control: &'a Control, clock: HistoryRecorder) -> Self {
        Nemesis {
            backend,
            control,
            clock,
            events: Vec::new(),
            active: None,
        }
    }

    /// Undoes the fault in effect, if any, then applies `fault`.
    pub async fn start(&mut self, fault: &Fault) -> Result<(), Error> {
        self.stop().await?;
        // The window opens when the fault is being applied: a crash takes
        // effect at the signal, not when the container has been reaped.
        let started_ns = self.clock.now_ns();
        let mut changes = Vec::new();
        let (name, nodes, detail, undo) = match fault {
            Fault::Partition { shape } => {
                let (shape_name, grudge) = self.grudge(shape).await;
                self.backend.partition(&grudge).await?;
                let detail = format!("{shape_name}: drops {}", serde_json::json!(grudge));
                (
                    "partition",
                    grudge.keys().copied().collect(),
                    detail,
                    Undo::Heal,
                )
            }
            Fault::Kill { target } => {
                let nodes = self.resolve(target).await;
                for &node in &nodes {
                    self.backend.kill(node).await?;
                }
                (
                    "kill",
                    nodes.clone(),
                    "SIGKILL".to_owned(),
                    Undo::Restart(nodes),
                )
            }
            Fault::Pause { target } => {
                let nodes = self.resolve(target).await;
                for &node in &nodes {
                    self.backend.pause(node).await?;
                }
                (
                    "pause",
                    nodes.clone(),
                    "paused".to_owned(),
                    Undo::Resume(nodes),
                )
            }
            Fault::Split { .. }
            | Fault::Merge { .. }
            | Fault::Transfer { .. }
            | Fault::Membership { .. } => {
                changes = self.reshape(fault).await;
                let summaries: Vec<String> = changes.iter().map(ShapeChange::summary).collect();
                let detail = format!(
                    "{}: {}",
                    ChangeCount::of(fault.kind(), &changes),
                    summaries.join("; ")
                );
                let mut nodes: Vec<NodeId> = changes
                    .iter()
                    .filter_map(|change| change.request.as_ref())
                    .flat_map(|request| request.stores())
                    .collect();
                nodes.sort_unstable();
                nodes.dedup();
                (fault.kind().name(), nodes, detail, Undo::Nothing)
            }
        };
        self.push(NemesisEvent {
            time_ns: started_ns,
            phase: Phase::Start,
            fault: name,
            nodes: nodes.clone(),
            detail,
            changes,
        });
        self.active = Some(Active {
            fault: name,
            nodes,
            undo,
        });
        Ok(())
    }

    /// Undoes the fault in effect, if any.
    pub async fn stop(&mut self) -> Result<(), Error> {
        let Some(Active { fault, nodes, undo }) = self.active.take() else {
            return Ok(());
        };
        let detail = match undo {
            Undo::Nothing => "not undone: a change of shape stays",
            Undo::Heal => {
                self.backend.heal_partition().await?;
                "healed"
            }
            Undo::Restart(killed) => return self.restart_recorded(fault, nodes, &killed).await,
            Undo::Resume(paused) => {
                for node in paused {
                    self.backend.resume(node).await?;
                }
                "resumed"
            }
        };
        self.record(Phase::End, fault, nodes, detail.to_owned());
        Ok(())
    }

    /// Undoes the fault in effect, then crashes every node at once and
    /// starts them all again: whatever was acknowledged must survive.
    pub async fn crash_all(&mut self) -> Result<(), Error> {
        self.stop().await?;
        let nodes = self.backend.node_ids();
        let started_ns = self.clock.now_ns();
        for &node in &nodes {
            self.backend.kill(node).await?;
        }
        self.record_at(
            started_ns,
            Phase::Start,
            "crash-all",
            nodes.clone(),
            "SIGKILL".into(),
        );
        self.restart_recorded("crash-all", nodes.clone(), &nodes)
            .await
    }

    /// Starts every one of `killed` again, even after one failed to come
    /// back (so the others' state can still be seen), then records the end
    /// of `fault` (on `nodes`) and returns the first failure.
    async fn restart_recorded(
        &mut self,
        fault: &'static str,
        nodes: Vec<NodeId>,
        killed: &[NodeId],
    ) -> Result<(), Error> {
        let mut first_failure = None;
        for &node in killed {
            if let Err(err) = self.backend.restart(node).await {
                tracing::error!(node, %err, "the node did not restart");
                first_failure.get_or_insert(err);
            }
        }
        let detail = match &first_failure {
            None => "restarted".to_owned(),
            Some(err) => {
                let message = err.to_string();
                let first_line = message.lines().next().unwrap_or_default();
                format!("not every node restarted: {first_line}")
            }
        };
        self.record(Phase::End, fault, nodes, detail);
        first_failure.map_or(Ok(()), Err)
    }

    /// Everything the nemesis did, in order.
    pub fn events(&self) -> &[NemesisEvent] {
        &self.events
    }

    async fn grudge(&self, shape: &Shape) -> (&'static str, Grudge) {
        match shape {
            Shape::RandomHalves { grudge } => ("random halves", grudge.clone()),
            Shape::MajorityRing { grudge } => ("majority ring", grudge.clone()),
            Shape::Bridge { grudge } => ("bridge", grudge.clone()),
            Shape::IsolateLeader { fallback } => {
                let leader = self.leader_or(*fallback).await;
                (
                    "isolate the leader",
                    partition::isolate(leader, &self.backend.node_ids()),
                )
            }
        }
    }

    async fn resolve(&self, target: &Target) -> Vec<NodeId> {
        match target {
            Target::Node { node } => vec![*node],
            Target::Leader { fallback } => vec![self.leader_or(*fallback).await],
            Target::Minority { nodes } => nodes.clone(),
            Target::All => self.backend.node_ids(),
        }
    }

    /// Makes the changes of shape `fault` plans, in turn (none for a fault
    /// of another kind).
    async fn reshape(&self, fault: &Fault) -> Vec<ShapeChange> {
        let reshaper = Reshaper::new(self.control.admin(), self.backend.node_ids(), &self.clock);
        let mut changes = Vec::new();
        match fault {
            Fault::Split { keys } => {
                for key in keys {
                    changes.push(reshaper.split(key).await);
                }
            }
            Fault::Merge { merges } => {
                for merge in merges {
                    changes.push(reshaper.merge(merge).await);
                }
            }
            Fault::Transfer { transfers } => {
                for transfer in transfers {
                    changes.push(reshaper.transfer(transfer).await);
                }
            }
            Fault::Membership { key, change } => {
                changes.push(reshaper.membership(key, change).await);
            }
            Fault::Partition { .. } | Fault::Kill { .. } | Fault::Pause { .. } => {}
        }
        changes
    }

    async fn leader_or(&self, fallback: NodeId) -> NodeId {
        self.control.leader().await.unwrap_or(fallback)
    }

    fn record(&mut self, phase: Phase, fault: &'static str, nodes: Vec<NodeId>, detail: String) {
        self.record_at(self.clock.now_ns(), phase, fault, nodes, detail);
    }

    fn record_at(
        &mut self,
        time_ns: u64,
        phase: Phase,
        fault: &'static str,
        nodes: Vec<NodeId>,
        detail: String,
    ) {
        self.push(NemesisEvent {
            time_ns,
            phase,
            fault,
            nodes,
            detail,
            changes: Vec::new(),
        });
    }

    fn push(&mut self, event: NemesisEvent) {
        let NemesisEvent {
            phase,
            fault,
            nodes,
            detail,
            ..
        } = &event;
        tracing::info!(?phase, fault, ?nodes, %detail, "nemesis");
        self.events.push(event);
    }
}
