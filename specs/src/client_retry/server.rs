//! The server of the client-retry model: one region's state machine, applied
//! through raftstore's real [`apply_write`] on a real [`KvStore`] and
//! [`SessionTable`].
//!
//! Neither `KvStore` nor `SessionTable` can be hashed, which the checker
//! needs, so between steps the server keeps them in the forms Flotilla
//! itself checkpoints them in: the store's pairs and the session table's
//! encoding. Every step rebuilds the real objects from those, runs the real
//! decision code, and takes the forms again. Replication is abstracted
//! away: Raft's contribution here is one total order of delivered writes,
//! and every delivery (a retry, or the network's duplicate) is a log entry
//! that goes through `apply_write`.

use engine::store::KvStore;
use raftstore::apply::{apply_write, ApplyRejection, SessionTable};
use raftstore::codec::{Decoder, Encoder};
use raftstore::command::{RequestHeader, WriteCommand, WriteId, WriteResult};
use raftstore::region::RegionMeta;
use stateright::actor::{Id, Out};

use super::messages::{RegisterMsg, RegisterWrite, REGISTER_KEY};
use super::node::RegisterNode;
use crate::register_spec::{RegisterRet, Value};

/// The region the register lives in.
const REGION_ID: u64 = 1;
/// The store the single modelled replica of the region lives on.
const STORE_ID: u64 = 1;

/// Something the real apply path did that it must never do in this model;
/// the model's properties assert none occurs.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ServerFault {
    /// `apply_write` refused a write built for the region's current epoch.
    EpochNotMatch,
    /// `apply_write` refused the register key as outside the whole-keyspace region.
    KeyNotInRegion,
    /// The session table did not decode from its own encoding.
    SessionsDoNotRoundTrip,
    /// `apply_write` answered a put or CAS with another kind of result.
    UnexpectedResult,
    /// `apply_write` refused as answered a write whose client still waits
    /// for it (a late copy of an answered write is refused without a fault).
    AnsweredWriteRefused,
}

impl From<ApplyRejection> for ServerFault {
    fn from(rejection: ApplyRejection) -> Self {
        match rejection {
            ApplyRejection::EpochNotMatch => ServerFault::EpochNotMatch,
            ApplyRejection::KeyNotInRegion => ServerFault::KeyNotInRegion,
            ApplyRejection::NotADataWrite => ServerFault::UnexpectedResult,
            ApplyRejection::AlreadyAnswered => ServerFault::AnsweredWriteRefused,
        }
    }
}

/// The server's state between steps.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ServerState {
    /// Every pair of the state-machine store in key order, as `KvStore::range_pairs` yields it.
    pub store_pairs: Vec<(Vec<u8>, Vec<u8>)>,
    /// The session table as `SessionTable::encode` writes it.
    pub sessions: Vec<u8>,
    /// A delivered write was answered from the session table at least once.
    pub answered_duplicate: bool,
    /// A late copy of an answered write was delivered and refused at least once.
    pub refused_late_copy: bool,
    /// The first fault of the apply path, if any; no write is answered after one.
    pub fault: Option<ServerFault>,
}

/// The real store, rebuilt from `state` (reads need nothing else).
fn restore_store(state: &ServerState) -> KvStore {
    let store = KvStore::new();
    for (key, value) in &state.store_pairs {
        store.put(key.clone(), value.clone());
    }
    store
}

/// The real state machine, rebuilt for one step.
struct StateMachine {
    store: KvStore,
    sessions: SessionTable,
}

impl StateMachine {
    fn restore(state: &ServerState) -> Result<StateMachine, ServerFault> {
        let mut dec = Decoder::new("session table", &state.sessions);
        let sessions =
            SessionTable::decode(&mut dec).map_err(|_| ServerFault::SessionsDoNotRoundTrip)?;
        dec.finish()
            .map_err(|_| ServerFault::SessionsDoNotRoundTrip)?;
        Ok(StateMachine {
            store: restore_store(state),
            sessions,
        })
    }

    fn store_pairs(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.store.range_pairs(b"", b"")
    }

    fn encoded_sessions(&self) -> Vec<u8> {
        let mut enc = Encoder::new();
        self.sessions.encode(&mut enc);
        enc.finish()
    }
}

/// The single server; it owns the whole-keyspace region.
#[derive(Clone, Debug)]
pub struct RegisterServer {
    region: RegionMeta,
}

impl Default for RegisterServer {
    fn default() -> Self {
        RegisterServer {
            region: RegionMeta::whole_keyspace(REGION_ID, &[STORE_ID]),
        }
    }
}

impl RegisterServer {
    pub fn start(&self) -> ServerState {
        let empty = StateMachine {
            store: KvStore::new(),
            sessions: SessionTable::default(),
        };
        ServerState {
            store_pairs: empty.store_pairs(),
            sessions: empty.encoded_sessions(),
            answered_duplicate: false,
            refused_late_copy: false,
            fault: None,
        }
    }

    /// Serves one request from `src`; returns the next state if it changed.
    pub fn on_request(
        &self,
        state: &ServerState,
        src: Id,
        msg: &RegisterMsg,
        o: &mut Out<RegisterNode>,
    ) -> Option<ServerState> {
        if state.fault.is_some() {
            return None;
        }
        match msg {
            RegisterMsg::Write {
                id,
                answered_below,
                write,
                ..
            } => match self.apply(state, *id, *answered_below, write) {
                Ok((next, Some(ret))) => {
                    o.send(src, RegisterMsg::WriteReply { id: *id, ret });
                    (next != *state).then_some(next)
                }
                // Refused as a late copy: nobody waits for an answer.
                Ok((next, None)) => (next != *state).then_some(next),
                Err(fault) => Some(ServerState {
                    fault: Some(fault),
                    ..state.clone()
                }),
            },
            RegisterMsg::Read { op_index, .. } => {
                let value = restore_store(state).get(REGISTER_KEY).map(Value);
                o.send(
                    src,
                    RegisterMsg::ReadReply {
                        op_index: *op_index,
                        value,
                    },
                );
                None
            }
            RegisterMsg::WriteReply { .. } | RegisterMsg::ReadReply { .. } => None,
        }
    }

    /// Applies `write` under `id` through the real apply path; no answer
    /// when it is refused as a late copy of an answered write. That refusal
    /// is a fault unless the copy's sequence is below the floor the
    /// session table had before this write: only the write's own
    /// `answered_below` is taken on trust, and the model's clients never
    /// send one above their write in flight.
    fn apply(
        &self,
        state: &ServerState,
        id: WriteId,
        answered_below: u64,
        write: &RegisterWrite,
    ) -> Result<(ServerState, Option<RegisterRet>), ServerFault> {
        let mut machine = StateMachine::restore(state)?;
        let cmd = WriteCommand {
            header: RequestHeader {
                region_id: self.region.id,
                epoch: Some(self.region.epoch),
            },
            id,
            answered_below,
            op: write.to_write_op(),
        };
        let duplicate = machine.sessions.get(&id).is_some();
        let late_copy = machine.sessions.is_answered(&id);
        let ret = match apply_write(&machine.store, &self.region, &mut machine.sessions, &cmd) {
            Err(ApplyRejection::AlreadyAnswered) if late_copy => None,
            result => Some(register_ret(write, result?).ok_or(ServerFault::UnexpectedResult)?),
        };
        let next = ServerState {
            store_pairs: machine.store_pairs(),
            sessions: machine.encoded_sessions(),
            answered_duplicate: state.answered_duplicate || (duplicate && ret.is_some()),
            refused_late_copy: state.refused_late_copy || ret.is_none(),
            fault: None,
        };
        Ok((next, ret))
    }
}

/// What the client is told for `write`'s `result`, or `None` if the result
/// is not one such a write can produce.
fn register_ret(write: &RegisterWrite, result: WriteResult) -> Option<RegisterRet> {
    match (write, result) {
        (RegisterWrite::Put(_), WriteResult::Done) => Some(RegisterRet::PutOk),
        (
            RegisterWrite::Cas { .. },
            WriteResult::CompareAndSwap {
                succeeded,
                previous,
            },
        ) => Some(RegisterRet::CasOk {
            succeeded,
            previous: previous.map(Value),
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(text: &str) -> RegisterWrite {
        RegisterWrite::Put(Value::from_str_bytes(text))
    }

    fn write(client_id: u64, sequence: u64, write: RegisterWrite) -> RegisterMsg {
        RegisterMsg::Write {
            id: WriteId {
                client_id,
                sequence,
            },
            answered_below: sequence,
            write,
            attempt: 0,
        }
    }

    /// Serves `msg` from client 1, returning the state after it and the reply.
    fn serve(
        server: &RegisterServer,
        state: &ServerState,
        msg: RegisterMsg,
    ) -> (ServerState, RegisterMsg) {
        let mut out = Out::new();
        let next = server
            .on_request(state, Id::from(1), &msg, &mut out)
            .unwrap_or(state.clone());
        let mut replies = out.into_iter().filter_map(|command| match command {
            stateright::actor::Command::Send(_, reply) => Some(reply),
            _ => None,
        });
        let reply = replies.next().expect("a reply");
        assert!(replies.next().is_none(), "one reply per request");
        (next, reply)
    }

    #[test]
    fn a_duplicate_write_is_answered_from_the_session_table_without_effect() {
        let server = RegisterServer::default();
        let start = server.start();
        let (after_a, _) = serve(&server, &start, write(1, 1, put("a")));
        let (after_b, _) = serve(&server, &after_a, write(2, 1, put("b")));
        assert!(!after_b.answered_duplicate);
        let (after_retry, reply) = serve(&server, &after_b, write(1, 1, put("a")));
        assert_eq!(
            reply,
            RegisterMsg::WriteReply {
                id: WriteId {
                    client_id: 1,
                    sequence: 1
                },
                ret: RegisterRet::PutOk
            }
        );
        assert!(after_retry.answered_duplicate);
        assert_eq!(
            after_retry.store_pairs, after_b.store_pairs,
            "the retry changed nothing"
        );
        let (_, read) = serve(
            &server,
            &after_retry,
            RegisterMsg::Read {
                op_index: 0,
                attempt: 0,
            },
        );
        assert_eq!(
            read,
            RegisterMsg::ReadReply {
                op_index: 0,
                value: Some(Value::from_str_bytes("b"))
            }
        );
        assert_eq!(after_retry.fault, None);
    }
}
