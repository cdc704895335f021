//! The placement driver as a node runs it: finding out whether this node
//! is the placement leader, the leader's model of the cluster (fed by the
//! heartbeat RPCs, answered from by the metadata RPCs and the status
//! endpoint), the store registry's writes, and the scheduling loop that
//! turns the model into operators and dispatches them.
//!
//! Leadership: every store heartbeat interval the loop reads the store
//! registry linearizably through the node's store. Only the leader of the system
//! region can serve that read: success makes (or keeps) this node the
//! placement leader and refreshes its registry; `NotLeader` drops the model
//! and records the hint that other nodes' calls are refused with. Registry
//! writes (a new store, new addresses, a state change) are compare-and-swaps
//! through the same region, so a deposed leader's write fails rather than
//! overwrite its successor's; between two checks a deposed leader may still
//! accept heartbeats and answer lookups from its model, which is soft state
//! the next heartbeats correct.
//!
//! Guarantees:
//! - a new leader knows every store that ever registered (the registry) but
//!   only the regions reported to it since it took over, so it schedules
//!   nothing until it has led for a full region-heartbeat interval, by which
//!   time every region's leader has reported;
//! - at most one operator per region is in flight; one whose region's
//!   epoch moved, or that outlived the operator timeout, is dropped;
//! - a merge its source's leader refused (the driver cannot know, say, that
//!   a region has a learner it has not reported yet) is dropped at
//!   once and its pair of regions left alone for
//!   `schedule::MERGE_REFUSAL_BACKOFF_MS`, so a refusal never turns into a
//!   retry loop; other failed dispatches are retried every round.

pub mod convert;
pub mod dispatch;
pub mod heartbeat;

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use flotilla_proto::placementpb as pb;
use placement::cluster::{ClusterState, RegionUpdate, StoreRecord, StoreState, StoreStats};
use placement::schedule::{
    self, decommission, DispatchState, Operator, OperatorQueue, ScheduleConfig,
};
use placement::store_registry;
use placement::PlacementError;
use raftstore::command::{ReadResult, RequestHeader, WriteId, WriteResult};
use raftstore::{RaftstoreError, StoreRouter};
use serde_json::{json, Value};
use tonic::Status;

use crate::error_status::to_status;
use crate::members::Members;
use crate::node::SYSTEM_REGION_ID;
use convert::{region_to_proto, state_to_proto, store_to_proto};
use dispatch::Dispatcher;

/// Regions one `ScanRegions` answer holds at most.
pub const SCAN_REGIONS_MAX: usize = 10_000;

/// How the driver paces itself.
#[derive(Clone, Debug)]
pub struct PlacementDriverConfig {
    /// How often stores report themselves.
    pub store_heartbeat_interval: Duration,
    /// How often stores report the regions they lead.
    pub region_heartbeat_interval: Duration,
    /// How often the leader schedules (it checks its leadership every
    /// store heartbeat interval).
    pub schedule_interval: Duration,
    /// An operator not finished after this long is dropped (and may be
    /// scheduled again).
    pub operator_timeout: Duration,
    pub schedule: ScheduleConfig,
    /// Off: the driver schedules nothing (lookups, heartbeats and the TSO
    /// still run).
    pub scheduling: bool,
}

impl PlacementDriverConfig {
    /// Pacing from the heartbeat intervals: the driver schedules every
    /// second (or store heartbeat, if more often), and stores silent for
    /// three store heartbeats count as disconnected (overriding
    /// `schedule.store_disconnected_ms`).
    pub fn new(
        store_heartbeat_interval: Duration,
        region_heartbeat_interval: Duration,
        schedule: ScheduleConfig,
    ) -> PlacementDriverConfig {
        PlacementDriverConfig {
            store_heartbeat_interval,
            region_heartbeat_interval,
            schedule_interval: Duration::from_secs(1).min(store_heartbeat_interval),
            operator_timeout: Duration::from_secs(600),
            scheduling: true,
            schedule: ScheduleConfig {
                store_disconnected_ms: millis(store_heartbeat_interval * 3),
                ..schedule
            },
        }
    }
}

/// `duration` in whole milliseconds (saturating).
pub fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// The model a placement leader keeps.
struct Leading {
    cluster: ClusterState,
    operators: OperatorQueue,
    since_ms: u64,
}

struct DriverState {
    leading: Option<Leading>,
    /// The placement leader's node id as last learnt, while not leading.
    leader_hint: Option<u64>,
}

/// One node's placement driver; shared by the gRPC service, the status
/// endpoint and the scheduling loop.
pub struct PlacementDriver {
    router: StoreRouter,
    members: Members,
    config: PlacementDriverConfig,
    clock: Instant,
    state: Mutex<DriverState>,
    /// Held across every registry read-and-apply and compare-and-swap, so
    /// the model's records are what the registry held last.
    registry: tokio::sync::Mutex<()>,
    dispatcher: Dispatcher,
}

impl PlacementDriver {
    pub fn new(
        router: StoreRouter,
        members: Members,
        config: PlacementDriverConfig,
        dispatcher: Dispatcher,
    ) -> PlacementDriver {
        PlacementDriver {
            router,
            members,
            config,
            clock: Instant::now(),
            state: Mutex::new(DriverState {
                leading: None,
                leader_hint: None,
            }),
            registry: tokio::sync::Mutex::new(()),
            dispatcher,
        }
    }

    fn now_ms(&self) -> u64 {
        millis(self.clock.elapsed())
    }

    fn lock(&self) -> MutexGuard<'_, DriverState> {
        // Every update leaves the state whole: a panicking holder cannot
        // leave it half-changed in a way later readers would trip on.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` on the model if this node leads; otherwise the NotLeader
    /// status naming the leader.
    fn leading<T>(&self, f: impl FnOnce(&mut Leading) -> T) -> Result<T, Status> {
        let mut state = self.lock();
        match state.leading.as_mut() {
            Some(leading) => Ok(f(leading)),
            None => {
                let leader = state.leader_hint;
                drop(state);
                Err(to_status(
                    RaftstoreError::NotLeader {
                        region_id: SYSTEM_REGION_ID,
                        leader,
                    },
                    &self.members,
                ))
            }
        }
    }

    /// Whether this node acted as placement leader at its last check.
    pub fn is_leader(&self) -> bool {
        self.lock().leading.is_some()
    }

    /// Runs the leadership checks and scheduling rounds until the task is
    /// aborted.
    pub async fn run(self: Arc<Self>) {
        let mut ticks = tokio::time::interval(self.config.schedule_interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The check is a ReadIndex round on the system region, which wakes
        // it from hibernation: once per store heartbeat interval is enough.
        let ticks_per_check = (self.config.store_heartbeat_interval.as_millis()
            / self.config.schedule_interval.as_millis().max(1))
        .max(1);
        for tick in 0u128.. {
            ticks.tick().await;
            let leading = if tick % ticks_per_check == 0 {
                self.check_leadership().await
            } else {
                self.is_leader()
            };
            if leading {
                self.schedule_round().await;
            }
        }
    }

    /// Reads the registry through the system region: leader if it answers.
    /// Returns whether this node leads.
    async fn check_leadership(&self) -> bool {
        let _registry = self.registry.lock().await;
        let read = self
            .router
            .read(RequestHeader::default(), store_registry::scan_op())
            .await;
        let records = match read {
            Ok(ReadResult::Pairs(pairs)) => store_registry::decode_scan(&pairs),
            Ok(ReadResult::Value(_)) => {
                tracing::error!("the store registry scan returned a single value");
                return false;
            }
            Err(RaftstoreError::NotLeader { leader, .. }) => {
                self.follow(leader);
                return false;
            }
            Err(RaftstoreError::RegionNotFound { .. }) => {
                self.follow(None);
                return false;
            }
            Err(err) => {
                tracing::debug!(%err, "placement leadership check failed; trying again");
                return self.is_leader();
            }
        };
        let records = match records {
            Ok(records) => records,
            Err(err) => {
                tracing::error!(%err, "the store registry holds a record this node cannot read");
                return false;
            }
        };
        let now_ms = self.now_ms();
        let mut state = self.lock();
        let leading = state.leading.get_or_insert_with(|| {
            tracing::info!(
                stores = records.len(),
                wait = ?self.config.region_heartbeat_interval,
                "this node is now the placement leader; it schedules once every region had an interval to report"
            );
            Leading {
                cluster: ClusterState::new(now_ms),
                operators: OperatorQueue::new(millis(self.config.operator_timeout)),
                since_ms: now_ms,
            }
        });
        for record in records {
            leading.cluster.put_store_record(record);
        }
        state.leader_hint = None;
        true
    }

    fn follow(&self, leader: Option<u64>) {
        let mut state = self.lock();
        if state.leading.take().is_some() {
            tracing::info!(?leader, "no longer the placement leader");
        }
        state.leader_hint = leader;
    }

    /// One scheduling round: retire finished operators, bury emptied
    /// stores, schedule, dispatch.
    async fn schedule_round(&self) {
        let now_ms = self.now_ms();
        let (emptied, to_dispatch) = {
            let mut state = self.lock();
            let Some(leading) = state.leading.as_mut() else {
                return;
            };
            // Until every region's leader had a full interval to report,
            // the model lacks regions: it would see replicas missing that
            // are not. With scheduling off, nothing is scheduled at all.
            let may_schedule = self.config.scheduling
                && now_ms.saturating_sub(leading.since_ms)
                    >= millis(self.config.region_heartbeat_interval);
            // The snapshot copies the whole model (every region): not
            // every second for nothing.
            if !may_schedule && leading.operators.is_empty() {
                return;
            }
            let snapshot = leading.cluster.snapshot(now_ms);
            let serving = |store| {
                schedule::store_health(&snapshot, &self.config.schedule, store)
                    == schedule::StoreHealth::Serving
            };
            for (operator, why) in leading.operators.retire(&snapshot, serving, now_ms) {
                tracing::info!(?operator, ?why, "operator retired");
            }
            if !may_schedule {
                return;
            }
            let emptied = decommission::emptied_stores(&snapshot, &self.config.schedule);
            for operator in schedule::schedule(&snapshot, &self.config.schedule, &leading.operators)
            {
                tracing::info!(?operator, "operator scheduled");
                leading.operators.add(operator, now_ms);
            }
            let to_dispatch: Vec<_> = leading
                .operators
                .iter()
                .filter(|p| {
                    matches!(
                        p.dispatch,
                        DispatchState::Waiting | DispatchState::Failed { .. }
                    )
                })
                .map(|p| {
                    let leader = snapshot
                        .region(p.operator.region())
                        .and_then(|r| leading.cluster.store(r.leader_store))
                        .map(|s| s.record.clone());
                    (p.operator.clone(), leader)
                })
                .collect();
            (emptied, to_dispatch)
        };
        for store_id in emptied {
            match self.set_state(store_id, StoreState::Tombstone).await {
                Ok(_) => tracing::info!(
                    store = store_id,
                    "decommissioned store emptied; it is now a tombstone"
                ),
                Err(status) => {
                    tracing::warn!(store = store_id, %status, "could not make the emptied store a tombstone")
                }
            }
        }
        for (operator, leader) in to_dispatch {
            let outcome = match &leader {
                Some(leader) => self.dispatcher.dispatch(&operator, leader).await,
                None => Err(crate::error::ServerError::UnknownStore {
                    store_id: self
                        .lock()
                        .leading
                        .as_ref()
                        .and_then(|l| l.cluster.region(operator.region()))
                        .map_or(0, |r| r.leader_store),
                }),
            };
            let dispatch = match outcome {
                Ok(()) => DispatchState::Sent {
                    at_ms: self.now_ms(),
                },
                Err(err @ crate::error::ServerError::Refused { .. })
                    if matches!(operator, Operator::Merge { .. }) =>
                {
                    self.merge_refused(&operator, &err);
                    continue;
                }
                Err(err) => {
                    tracing::warn!(?operator, %err, "operator dispatch failed; retrying next round");
                    DispatchState::Failed {
                        reason: err.to_string(),
                    }
                }
            };
            let mut state = self.lock();
            if let Some(pending) = state
                .leading
                .as_mut()
                .and_then(|l| l.operators.get_mut(operator.region()))
                .filter(|p| p.operator == operator)
            {
                pending.dispatch = dispatch;
            }
        }
    }

    /// Drops the refused merge `operator` and backs off its pair.
    fn merge_refused(&self, operator: &Operator, err: &crate::error::ServerError) {
        let Operator::Merge { source, target, .. } = *operator else {
            return;
        };
        tracing::info!(
            source,
            target,
            %err,
            backoff_ms = schedule::MERGE_REFUSAL_BACKOFF_MS,
            "merge refused; the pair is left alone for a while"
        );
        let now_ms = self.now_ms();
        let mut state = self.lock();
        if let Some(leading) = state.leading.as_mut() {
            if leading
                .operators
                .get_mut(source)
                .is_some_and(|p| p.operator == *operator)
            {
                leading.operators.remove(source);
            }
            leading.operators.refuse_merge(source, target, now_ms);
        }
    }

    /// Writes `new` to the registry by compare-and-swap from the model's
    /// record, then records it in the model.
    async fn persist_record(&self, new: StoreRecord) -> Result<(), Status> {
        let _registry = self.registry.lock().await;
        let expected = self.leading(|l| l.cluster.store(new.id).map(|s| s.record.clone()))?;
        if expected.as_ref() == Some(&new) {
            return Ok(());
        }
        let op = store_registry::swap_op(expected.as_ref(), &new);
        let written = self
            .router
            .write(RequestHeader::default(), WriteId::default(), 0, op)
            .await;
        match written {
            Ok(WriteResult::CompareAndSwap {
                succeeded: true, ..
            }) => self.leading(|l| l.cluster.put_store_record(new)),
            Ok(WriteResult::CompareAndSwap {
                succeeded: false,
                previous,
            }) => {
                // Another leader wrote meanwhile: learn what it wrote.
                if let Some(bytes) = previous {
                    let found = store_registry::decode(new.id, &bytes)
                        .map_err(|e| Status::internal(e.to_string()))?;
                    self.leading(|l| l.cluster.put_store_record(found))?;
                }
                Err(Status::unavailable(format!(
                    "store {}'s registry record changed meanwhile; retry",
                    new.id
                )))
            }
            Ok(other) => Err(Status::internal(format!(
                "a registry swap returned {other:?}"
            ))),
            Err(err) => {
                if let RaftstoreError::NotLeader { leader, .. } = &err {
                    self.follow(*leader);
                }
                Err(to_status(err, &self.members))
            }
        }
    }

    pub async fn store_heartbeat(
        &self,
        request: pb::StoreHeartbeatRequest,
    ) -> Result<pb::StoreHeartbeatResponse, Status> {
        if request.store_id == 0 || request.client_addr.is_empty() || request.peer_addr.is_empty() {
            return Err(Status::invalid_argument(
                "a store heartbeat names the store's id (at least 1) and both its addresses",
            ));
        }
        let record = self.leading(|l| {
            l.cluster.record_for_heartbeat(
                request.store_id,
                &request.peer_addr,
                &request.client_addr,
            )
        })?;
        if let Some(record) = record {
            tracing::info!(store = record.id, client = %record.client_addr, peer = %record.peer_addr, "registering store");
            self.persist_record(record).await?;
        }
        let stats = StoreStats {
            capacity_bytes: request.capacity_bytes,
            available_bytes: request.available_bytes,
            region_count: request.region_count,
            leader_count: request.leader_count,
        };
        let now_ms = self.now_ms();
        let state = self.leading(|l| {
            l.cluster
                .store_heartbeat(request.store_id, stats, now_ms)
                .map(|s| s.record.state)
        })?;
        let state = state.map_err(placement_status)?;
        Ok(pb::StoreHeartbeatResponse {
            state: state_to_proto(state).into(),
        })
    }

    pub fn region_heartbeat(
        &self,
        request: pb::RegionHeartbeatRequest,
    ) -> Result<pb::RegionHeartbeatResponse, Status> {
        let regions = request
            .regions
            .into_iter()
            .map(convert::region_from_proto)
            .collect::<Result<Vec<_>, Status>>()?;
        if let Some(region) = regions.iter().find(|r| r.leader_store != request.store_id) {
            return Err(Status::invalid_argument(format!(
                "store {} reported region {}, which store {} leads",
                request.store_id, region.id, region.leader_store
            )));
        }
        let now_ms = self.now_ms();
        self.leading(|l| {
            let stale = regions
                .into_iter()
                .map(|region| l.cluster.region_heartbeat(region, now_ms))
                .filter(|update| *update == RegionUpdate::Stale)
                .count();
            pb::RegionHeartbeatResponse {
                stale: u32::try_from(stale).unwrap_or(u32::MAX),
            }
        })
    }

    pub fn get_region(&self, key: &[u8]) -> Result<pb::GetRegionResponse, Status> {
        self.leading(|l| pb::GetRegionResponse {
            region: l.cluster.region_by_key(key).map(region_to_proto),
        })
    }

    pub fn get_region_by_id(&self, region_id: u64) -> Result<pb::GetRegionResponse, Status> {
        self.leading(|l| pb::GetRegionResponse {
            region: l.cluster.region(region_id).map(region_to_proto),
        })
    }

    pub fn scan_regions(
        &self,
        request: &pb::ScanRegionsRequest,
    ) -> Result<pb::ScanRegionsResponse, Status> {
        if !request.end_key.is_empty() && request.end_key < request.start_key {
            return Err(Status::invalid_argument(
                "end_key must not be less than start_key (or empty for unbounded)",
            ));
        }
        let limit = match request.limit {
            0 => SCAN_REGIONS_MAX,
            n => usize::try_from(n)
                .unwrap_or(SCAN_REGIONS_MAX)
                .min(SCAN_REGIONS_MAX),
        };
        self.leading(|l| pb::ScanRegionsResponse {
            regions: l
                .cluster
                .scan_regions(&request.start_key, &request.end_key, limit)
                .into_iter()
                .map(region_to_proto)
                .collect(),
        })
    }

    /// Every store, or one, for the wire.
    fn stores(&self, only: Option<u64>) -> Result<Vec<pb::Store>, Status> {
        let now_ms = self.now_ms();
        self.leading(|l| {
            let snapshot = l.cluster.snapshot(now_ms);
            l.cluster
                .stores()
                .filter(|s| only.is_none_or(|id| s.record.id == id))
                .map(|s| store_to_proto(s, &snapshot, &self.config.schedule))
                .collect()
        })
    }

    pub fn get_store(&self, store_id: u64) -> Result<pb::GetStoreResponse, Status> {
        let store = self.stores(Some(store_id))?.pop();
        match store {
            Some(store) => Ok(pb::GetStoreResponse { store: Some(store) }),
            None => Err(placement_status(PlacementError::UnknownStore { store_id })),
        }
    }

    pub fn get_all_stores(&self) -> Result<pb::GetAllStoresResponse, Status> {
        Ok(pb::GetAllStoresResponse {
            stores: self.stores(None)?,
        })
    }

    /// An operator's state change: Up and Offline only.
    pub async fn set_store_state(
        &self,
        request: pb::SetStoreStateRequest,
    ) -> Result<pb::SetStoreStateResponse, Status> {
        let state = pb::StoreState::try_from(request.state).map_err(|_| {
            Status::invalid_argument(format!("unknown store state {}", request.state))
        })?;
        let to = convert::state_from_proto(state);
        let from = self.leading(|l| l.cluster.store(request.store_id).map(|s| s.record.state))?;
        let from = from.ok_or(PlacementError::UnknownStore {
            store_id: request.store_id,
        });
        let from = from.map_err(placement_status)?;
        if from != to && !from.may_be_set_to(to) {
            return Err(placement_status(PlacementError::StoreStateChange {
                store_id: request.store_id,
                from,
                to,
            }));
        }
        let store = self.set_state(request.store_id, to).await?;
        tracing::info!(store = request.store_id, ?from, ?to, "store state set");
        Ok(pb::SetStoreStateResponse { store: Some(store) })
    }

    /// Persists `store_id`'s new state; returns the store.
    async fn set_state(&self, store_id: u64, state: StoreState) -> Result<pb::Store, Status> {
        let record = self.leading(|l| l.cluster.store(store_id).map(|s| s.record.clone()))?;
        let record =
            record.ok_or_else(|| placement_status(PlacementError::UnknownStore { store_id }))?;
        self.persist_record(StoreRecord { state, ..record }).await?;
        self.stores(Some(store_id))?
            .pop()
            .ok_or_else(|| placement_status(PlacementError::UnknownStore { store_id }))
    }

    /// The leader's view for the status endpoint: `None` when this node
    /// does not lead (with the leader it knows, if any).
    pub fn status_json(&self, what: StatusView) -> Result<Value, Option<u64>> {
        let now_ms = self.now_ms();
        let state = self.lock();
        let Some(l) = state.leading.as_ref() else {
            return Err(state.leader_hint);
        };
        Ok(match what {
            StatusView::Stores => {
                let snapshot = l.cluster.snapshot(now_ms);
                let stores: Vec<Value> = l
                    .cluster
                    .stores()
                    .map(|s| {
                        let wire = store_to_proto(s, &snapshot, &self.config.schedule);
                        json!({
                            "id": wire.id,
                            "peer_addr": wire.peer_addr,
                            "client_addr": wire.client_addr,
                            "state": wire.state().as_str_name(),
                            "liveness": wire.liveness().as_str_name(),
                            "capacity_bytes": wire.capacity_bytes,
                            "available_bytes": wire.available_bytes,
                            "region_count": wire.region_count,
                            "leader_count": wire.leader_count,
                            "heard_from": wire.heard_from,
                            "silent_ms": wire.silent_ms,
                        })
                    })
                    .collect();
                json!({ "stores": stores })
            }
            StatusView::Regions => {
                let regions: Vec<Value> = l
                    .cluster
                    .scan_regions(b"", b"", usize::MAX)
                    .into_iter()
                    .map(|r| {
                        json!({
                            "id": r.id,
                            "start_key": r.start_key.escape_ascii().to_string(),
                            "end_key": r.end_key.escape_ascii().to_string(),
                            "epoch": { "conf_ver": r.epoch.conf_ver, "version": r.epoch.version },
                            "voters": r.voters().map(|p| p.store_id).collect::<Vec<_>>(),
                            "learners": r.learners().map(|p| p.store_id).collect::<Vec<_>>(),
                            "leader": r.leader_store,
                            "term": r.term,
                            "approximate_keys": r.approximate_keys,
                            "approximate_bytes": r.approximate_bytes,
                            "written_bytes_per_sec": r.written_bytes_per_sec,
                            "written_keys_per_sec": r.written_keys_per_sec,
                            "read_keys_per_sec": r.read_keys_per_sec,
                            "pending_stores": r.pending_stores,
                        })
                    })
                    .collect();
                json!({ "regions": regions })
            }
            StatusView::Operators => {
                let operators: Vec<Value> = l
                    .operators
                    .iter()
                    .map(|p| {
                        let dispatch = match &p.dispatch {
                            DispatchState::Waiting => json!("waiting"),
                            DispatchState::Sent { at_ms } => {
                                json!({ "sent_ms_ago": now_ms.saturating_sub(*at_ms) })
                            }
                            DispatchState::Failed { reason } => json!({ "failed": reason }),
                        };
                        json!({
                            "region": p.operator.region(),
                            "regions": p.operator.regions(),
                            "kind": p.operator.kind(),
                            "operator": format!("{:?}", p.operator),
                            "age_ms": now_ms.saturating_sub(p.created_ms),
                            "dispatch": dispatch,
                        })
                    })
                    .collect();
                json!({
                    "scheduling": now_ms.saturating_sub(l.since_ms) >= millis(self.config.region_heartbeat_interval),
                    "operators": operators,
                })
            }
        })
    }
}

/// Which part of the leader's view the status endpoint shows.
#[derive(Clone, Copy, Debug)]
pub enum StatusView {
    Stores,
    Regions,
    Operators,
}

/// The status for a placement refusal.
fn placement_status(err: PlacementError) -> Status {
    match err {
        PlacementError::UnknownStore { .. } => Status::not_found(err.to_string()),
        PlacementError::StoreStateChange { .. } => Status::invalid_argument(err.to_string()),
        other => Status::internal(other.to_string()),
    }
}
