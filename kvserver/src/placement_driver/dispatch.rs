//! Carrying operators out: each is sent to the node of its region's leader
//! as one admin call, bound to the epoch it was computed for (a region
//! whose epoch moved refuses it unexecuted).
//!
//! - `Split` goes through `Kv.SplitRegion` with `at_middle_key`: the leader
//!   measures its data and splits at the middle key.
//! - `TransferLeader` goes through `Kv.TransferLeader`.
//! - `AddLearner`, `PromoteLearner`, `PromoteAndRemove` and `RemovePeer` go
//!   through `Kv.ChangePeers`, which answers once the change is applied
//!   (several changes are one joint change). A change already in effect is
//!   skipped by the leader, so a retried operator is harmless.
//! - `Merge` goes to the source's leader through `Kv.MergeRegion`, which
//!   answers once the target absorbed the source (or the merge went on in
//!   the background). That call checks both regions as they are, not the
//!   epochs the operator was computed for; a retry of a merge under way or
//!   done is harmless.
//!
//! Answers that refuse the call for good (`InvalidArgument`, or
//! `FailedPrecondition` without an error detail: the checks of
//! `raftstore::merge` and `raftstore::membership`) come back as
//! [`ServerError::Refused`]; anything else (no leader there, a stale epoch,
//! a timeout) as [`ServerError::Rpc`], worth another try.

use std::time::Duration;

use flotilla_proto::kvpb::peer_change::Kind as ChangeKind;
use flotilla_proto::kvpb::{
    ChangePeersRequest, MergeRegionRequest, PeerChange, RegionEpoch as WireEpoch, RequestHeader,
    SplitRegionRequest, TransferLeaderRequest,
};
use placement::cluster::StoreRecord;
use placement::schedule::Operator;

use crate::error::ServerError;
use crate::kv_stubs::KvStubs;

/// Sends operators to region leaders.
pub struct Dispatcher {
    stubs: KvStubs,
    request_timeout: Duration,
}

impl Dispatcher {
    /// A dispatcher whose calls time out after `request_timeout`.
    pub fn new(request_timeout: Duration) -> Dispatcher {
        Dispatcher {
            // Operators are small messages.
            stubs: KvStubs::new(request_timeout, 4 << 20),
            request_timeout,
        }
    }

    /// Sends `operator` to `leader`, the node of its region's leader.
    pub async fn dispatch(
        &self,
        operator: &Operator,
        leader: &StoreRecord,
    ) -> Result<(), ServerError> {
        let rpc_error = |message: String| ServerError::Rpc {
            store_id: leader.id,
            addr: leader.client_addr.clone(),
            message,
        };
        let mut stub = self.stubs.get(&leader.client_addr).map_err(rpc_error)?;
        let header = |region: u64, epoch: raftstore::region::RegionEpoch| {
            Some(RequestHeader {
                region_id: region,
                region_epoch: Some(WireEpoch {
                    conf_ver: epoch.conf_ver,
                    version: epoch.version,
                }),
                ..RequestHeader::default()
            })
        };
        let change = |kind: ChangeKind, store_id: u64| PeerChange {
            kind: kind.into(),
            store_id,
        };
        let change_peers = |region, epoch, changes| ChangePeersRequest {
            header: header(region, epoch),
            changes,
        };
        let call = async {
            match *operator {
                Operator::Split { region, epoch } => {
                    let request = SplitRegionRequest {
                        header: header(region, epoch),
                        split_key: Vec::new(),
                        at_middle_key: true,
                    };
                    stub.split_region(self.request(request)).await.map(drop)
                }
                Operator::TransferLeader {
                    region,
                    epoch,
                    to_store,
                } => {
                    let request = TransferLeaderRequest {
                        header: header(region, epoch),
                        to_store,
                    };
                    stub.transfer_leader(self.request(request)).await.map(drop)
                }
                Operator::AddLearner {
                    region,
                    epoch,
                    store,
                } => {
                    let request =
                        change_peers(region, epoch, vec![change(ChangeKind::AddLearner, store)]);
                    stub.change_peers(self.request(request)).await.map(drop)
                }
                Operator::PromoteLearner {
                    region,
                    epoch,
                    store,
                } => {
                    let request =
                        change_peers(region, epoch, vec![change(ChangeKind::Promote, store)]);
                    stub.change_peers(self.request(request)).await.map(drop)
                }
                Operator::PromoteAndRemove {
                    region,
                    epoch,
                    promote,
                    remove,
                } => {
                    let changes = vec![
                        change(ChangeKind::Promote, promote),
                        change(ChangeKind::Remove, remove),
                    ];
                    let request = change_peers(region, epoch, changes);
                    stub.change_peers(self.request(request)).await.map(drop)
                }
                Operator::RemovePeer {
                    region,
                    epoch,
                    store,
                } => {
                    let request =
                        change_peers(region, epoch, vec![change(ChangeKind::Remove, store)]);
                    stub.change_peers(self.request(request)).await.map(drop)
                }
                Operator::Merge {
                    source,
                    source_epoch,
                    target,
                    ..
                } => {
                    let request = MergeRegionRequest {
                        header: header(source, source_epoch),
                        target_region_id: target,
                    };
                    stub.merge_region(self.request(request)).await.map(drop)
                }
            }
        };
        match tokio::time::timeout(self.request_timeout, call).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(status)) if is_refusal(&status) => Err(ServerError::Refused {
                store_id: leader.id,
                addr: leader.client_addr.clone(),
                message: status.message().to_string(),
            }),
            Ok(Err(status)) => Err(rpc_error(status.message().to_string())),
            Err(_) => Err(rpc_error(format!(
                "no answer within {:?}",
                self.request_timeout
            ))),
        }
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(self.request_timeout);
        request
    }
}

/// Whether `status` refuses the call for good (see the module comment):
/// `FailedPrecondition` with a detail says where to go instead
/// (`NotLeader`, `EpochNotMatch`, `RegionNotFound`) and is worth a retry.
fn is_refusal(status: &tonic::Status) -> bool {
    match status.code() {
        tonic::Code::InvalidArgument => true,
        tonic::Code::FailedPrecondition => status.details().is_empty(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raftstore::RaftstoreError;

    use crate::error_status::to_status;
    use crate::members::Members;

    #[test]
    fn only_final_answers_are_refusals() {
        let members = Members::default();
        let status = |err| to_status(err, &members);
        for refused in [
            RaftstoreError::Refused("region 7 has learners".into()),
            RaftstoreError::InvalidRequest("not adjacent".into()),
        ] {
            assert!(is_refusal(&status(refused)));
        }
        for transient in [
            RaftstoreError::Unavailable("a merge is under way".into()),
            RaftstoreError::NotLeader {
                region_id: 3,
                leader: Some(2),
            },
            RaftstoreError::EpochNotMatch {
                region_id: 3,
                current: Vec::new(),
            },
            RaftstoreError::RegionNotFound { region_id: 3 },
        ] {
            assert!(!is_refusal(&status(transient)));
        }
        assert!(!is_refusal(&tonic::Status::deadline_exceeded("slow")));
    }
}
