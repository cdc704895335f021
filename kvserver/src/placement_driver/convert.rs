//! Conversions between the placement driver's model (`placement::cluster`)
//! and its wire messages (`placementpb`). Wire input is checked, never
//! trusted: a region without its shape, or with a leader that is not one
//! of its voters, is refused.

use flotilla_proto::kvpb;
use flotilla_proto::placementpb as pb;
use placement::cluster::ClusterSnapshot;
use placement::cluster::{PeerInfo, RegionInfo, StoreInfo, StoreState};
use placement::schedule::ScheduleConfig;
use raftstore::region::RegionEpoch;
use tonic::Status;

pub fn state_to_proto(state: StoreState) -> pb::StoreState {
    match state {
        StoreState::Up => pb::StoreState::Up,
        StoreState::Offline => pb::StoreState::Offline,
        StoreState::Tombstone => pb::StoreState::Tombstone,
    }
}

pub fn state_from_proto(state: pb::StoreState) -> StoreState {
    match state {
        pb::StoreState::Up => StoreState::Up,
        pb::StoreState::Offline => StoreState::Offline,
        pb::StoreState::Tombstone => StoreState::Tombstone,
    }
}

/// A store for the wire, with its liveness as the schedulers judge it.
pub fn store_to_proto(
    store: &StoreInfo,
    snapshot: &ClusterSnapshot,
    config: &ScheduleConfig,
) -> pb::Store {
    let id = store.record.id;
    let silent_ms = snapshot.store(id).map_or(0, |s| s.silent_ms);
    let liveness = if silent_ms >= config.max_store_down_ms {
        pb::StoreLiveness::Down
    } else if silent_ms >= config.store_disconnected_ms {
        pb::StoreLiveness::Disconnected
    } else {
        pb::StoreLiveness::Alive
    };
    pb::Store {
        id,
        peer_addr: store.record.peer_addr.clone(),
        client_addr: store.record.client_addr.clone(),
        state: state_to_proto(store.record.state).into(),
        capacity_bytes: store.stats.capacity_bytes,
        available_bytes: store.stats.available_bytes,
        region_count: store.stats.region_count,
        leader_count: store.stats.leader_count,
        heard_from: store.last_heartbeat_ms.is_some(),
        silent_ms,
        liveness: liveness.into(),
    }
}

pub fn region_to_proto(region: &RegionInfo) -> pb::RegionInfo {
    pb::RegionInfo {
        region: Some(kvpb::Region {
            id: region.id,
            start_key: region.start_key.clone(),
            end_key: region.end_key.clone(),
            epoch: Some(kvpb::RegionEpoch {
                conf_ver: region.epoch.conf_ver,
                version: region.epoch.version,
            }),
            peers: region
                .peers
                .iter()
                .map(|p| kvpb::Peer {
                    id: p.id,
                    store_id: p.store_id,
                    is_learner: p.is_learner,
                })
                .collect(),
        }),
        learner_store_ids: region.learners().map(|p| p.store_id).collect(),
        leader_store_id: region.leader_store,
        term: region.term,
        approximate_keys: region.approximate_keys,
        approximate_bytes: region.approximate_bytes,
        written_bytes_per_sec: region.written_bytes_per_sec,
        written_keys_per_sec: region.written_keys_per_sec,
        read_keys_per_sec: region.read_keys_per_sec,
        pending_store_ids: region.pending_stores.clone(),
    }
}

/// A reported region, checked: it has a shape, an epoch, peers on distinct
/// stores, and its leader is one of its voters.
pub fn region_from_proto(info: pb::RegionInfo) -> Result<RegionInfo, Status> {
    let region = info
        .region
        .ok_or_else(|| Status::invalid_argument("a region heartbeat without its region"))?;
    let epoch = region.epoch.ok_or_else(|| {
        Status::invalid_argument(format!("region {} reported without an epoch", region.id))
    })?;
    let peers: Vec<PeerInfo> = region
        .peers
        .iter()
        .map(|p| PeerInfo {
            id: p.id,
            store_id: p.store_id,
            is_learner: info.learner_store_ids.contains(&p.store_id),
        })
        .collect();
    let mut stores: Vec<u64> = peers.iter().map(|p| p.store_id).collect();
    stores.sort_unstable();
    stores.dedup();
    if stores.len() != peers.len() {
        return Err(Status::invalid_argument(format!(
            "region {} reported with two peers on one store",
            region.id
        )));
    }
    if !peers
        .iter()
        .any(|p| p.store_id == info.leader_store_id && !p.is_learner)
    {
        return Err(Status::invalid_argument(format!(
            "region {} reported with leader store {}, which holds none of its voters",
            region.id, info.leader_store_id
        )));
    }
    if !region.end_key.is_empty() && region.end_key <= region.start_key {
        return Err(Status::invalid_argument(format!(
            "region {} reported with an empty range",
            region.id
        )));
    }
    Ok(RegionInfo {
        id: region.id,
        start_key: region.start_key,
        end_key: region.end_key,
        epoch: RegionEpoch {
            conf_ver: epoch.conf_ver,
            version: epoch.version,
        },
        peers,
        leader_store: info.leader_store_id,
        term: info.term,
        approximate_keys: info.approximate_keys,
        approximate_bytes: info.approximate_bytes,
        written_bytes_per_sec: info.written_bytes_per_sec,
        written_keys_per_sec: info.written_keys_per_sec,
        read_keys_per_sec: info.read_keys_per_sec,
        pending_stores: info.pending_store_ids,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> pb::RegionInfo {
        let region = RegionInfo {
            id: 7,
            start_key: b"a".to_vec(),
            end_key: b"m".to_vec(),
            epoch: RegionEpoch {
                conf_ver: 2,
                version: 3,
            },
            peers: vec![
                PeerInfo {
                    id: 1,
                    store_id: 1,
                    is_learner: false,
                },
                PeerInfo {
                    id: 4,
                    store_id: 4,
                    is_learner: true,
                },
            ],
            leader_store: 1,
            term: 9,
            approximate_keys: 10,
            approximate_bytes: 100,
            written_bytes_per_sec: 5,
            written_keys_per_sec: 1,
            read_keys_per_sec: 2,
            pending_stores: vec![4],
        };
        let wire = region_to_proto(&region);
        assert_eq!(region_from_proto(wire.clone()).ok(), Some(region));
        wire
    }

    #[test]
    fn regions_round_trip_and_bad_reports_are_refused() {
        let good = info();
        let mut learner_leads = good.clone();
        learner_leads.leader_store_id = 4;
        let mut stranger_leads = good.clone();
        stranger_leads.leader_store_id = 9;
        let mut no_epoch = good.clone();
        if let Some(r) = no_epoch.region.as_mut() {
            r.epoch = None;
        }
        let mut doubled = good.clone();
        if let Some(r) = doubled.region.as_mut() {
            r.peers.push(kvpb::Peer {
                id: 5,
                store_id: 1,
                is_learner: false,
            });
        }
        let mut backwards = good.clone();
        if let Some(r) = backwards.region.as_mut() {
            r.end_key = b"a".to_vec();
        }
        let no_region = pb::RegionInfo {
            region: None,
            ..good
        };
        for bad in [
            learner_leads,
            stranger_leads,
            no_epoch,
            doubled,
            backwards,
            no_region,
        ] {
            assert!(region_from_proto(bad.clone()).is_err(), "{bad:?} accepted");
        }
    }
}
