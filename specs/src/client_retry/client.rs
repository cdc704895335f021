//! A client of the client-retry model: it runs its workload one operation
//! at a time and, when a request times out, sends it again.
//!
//! Under [`RetryPolicy::ReuseWriteId`] (what Flotilla's client does) every
//! attempt of a write carries the same [`WriteId`], so the server's session
//! table recognises the retry. Every write also says which of the client's
//! writes were answered (`answered_below`: all before the operation in
//! flight), so the server forgets their results and refuses their late
//! copies. [`RetryPolicy::FreshWriteId`] is the
//! deliberately broken variant: each attempt takes a new sequence number,
//! which defeats deduplication exactly as a server without a session table
//! would.

use raftstore::command::WriteId;
use stateright::actor::{model_timeout, Id, Out};

use super::messages::{RegisterMsg, RegisterWrite};
use super::node::RegisterNode;
use crate::register_spec::RegisterOp;

/// How a retried write is identified.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RetryPolicy {
    /// Every attempt of a write carries the same (client_id, sequence).
    ReuseWriteId,
    /// Every attempt takes a fresh sequence: the broken variant.
    FreshWriteId,
}

/// The client's only timer: the request in flight timed out.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RetryTimer;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ClientState {
    /// Index in the workload of the operation in flight; the workload's
    /// length once every operation completed.
    pub op_index: usize,
    /// Retries sent for the operation in flight.
    pub retries: u8,
    /// The first write sequence the operation in flight used.
    pub op_first_sequence: u64,
    /// The highest write sequence used so far (0 = none).
    pub last_sequence: u64,
}

#[derive(Clone, Debug)]
pub struct RetryingClient {
    pub server: Id,
    pub workload: Vec<RegisterOp>,
    /// Retries per operation; the client then waits without sending more.
    pub retry_max: u8,
    pub policy: RetryPolicy,
}

/// The client id a model actor writes under; never 0 (which opts out of
/// deduplication) because the server is actor 0.
fn client_id(id: Id) -> u64 {
    let client_id = usize::from(id) as u64;
    debug_assert_ne!(client_id, 0, "actor 0 is the server");
    client_id
}

impl RetryingClient {
    pub fn start(&self, id: Id, o: &mut Out<RegisterNode>) -> ClientState {
        let mut state = ClientState {
            op_index: 0,
            retries: 0,
            op_first_sequence: 0,
            last_sequence: 0,
        };
        self.begin_op(id, &mut state, o);
        state
    }

    /// Handles a reply; returns the next state if it completed the
    /// operation in flight (stale and duplicate replies are ignored).
    pub fn on_reply(
        &self,
        id: Id,
        state: &ClientState,
        msg: &RegisterMsg,
        o: &mut Out<RegisterNode>,
    ) -> Option<ClientState> {
        let op = self.workload.get(state.op_index)?;
        let completes = match (RegisterWrite::from_op(op), msg) {
            (Some(_), RegisterMsg::WriteReply { id: reply_id, .. }) => {
                reply_id.client_id == client_id(id)
                    && (state.op_first_sequence..=state.last_sequence).contains(&reply_id.sequence)
            }
            (None, RegisterMsg::ReadReply { op_index, .. }) => *op_index == state.op_index,
            _ => false,
        };
        if !completes {
            return None;
        }
        let mut next = state.clone();
        next.op_index += 1;
        self.begin_op(id, &mut next, o);
        Some(next)
    }

    /// Retries the operation in flight, if it has retries left.
    pub fn on_retry_timer(
        &self,
        id: Id,
        state: &ClientState,
        o: &mut Out<RegisterNode>,
    ) -> Option<ClientState> {
        let op = self.workload.get(state.op_index)?;
        if state.retries >= self.retry_max {
            return None;
        }
        let mut next = state.clone();
        next.retries += 1;
        if RegisterWrite::from_op(op).is_some() && self.policy == RetryPolicy::FreshWriteId {
            next.last_sequence += 1;
        }
        o.send(self.server, self.request(id, &next, op));
        o.set_timer(RetryTimer, model_timeout());
        Some(next)
    }

    /// Sends the first attempt of the operation at `state.op_index`, if any.
    fn begin_op(&self, id: Id, state: &mut ClientState, o: &mut Out<RegisterNode>) {
        state.retries = 0;
        let Some(op) = self.workload.get(state.op_index) else {
            o.cancel_timer(RetryTimer);
            return;
        };
        if RegisterWrite::from_op(op).is_some() {
            state.last_sequence += 1;
            state.op_first_sequence = state.last_sequence;
        }
        o.send(self.server, self.request(id, state, op));
        o.set_timer(RetryTimer, model_timeout());
    }

    /// What a write says was answered: every write before the operation in
    /// flight (one operation at a time). The broken variant says nothing,
    /// like a client with no session protocol at all.
    fn answered_below(&self, state: &ClientState) -> u64 {
        match self.policy {
            RetryPolicy::ReuseWriteId => state.op_first_sequence,
            RetryPolicy::FreshWriteId => 0,
        }
    }

    /// The request for the current attempt of `op`.
    fn request(&self, id: Id, state: &ClientState, op: &RegisterOp) -> RegisterMsg {
        match RegisterWrite::from_op(op) {
            Some(write) => RegisterMsg::Write {
                id: WriteId {
                    client_id: client_id(id),
                    sequence: state.last_sequence,
                },
                answered_below: self.answered_below(state),
                write,
                attempt: state.retries,
            },
            None => RegisterMsg::Read {
                op_index: state.op_index,
                attempt: state.retries,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use stateright::actor::Command;

    use super::*;
    use crate::register_spec::Value;

    fn client(policy: RetryPolicy) -> RetryingClient {
        RetryingClient {
            server: Id::from(0),
            workload: vec![
                RegisterOp::Put(Value::from_str_bytes("a")),
                RegisterOp::Read,
            ],
            retry_max: 1,
            policy,
        }
    }

    fn sent(out: Out<RegisterNode>) -> Vec<RegisterMsg> {
        out.into_iter()
            .filter_map(|command| match command {
                Command::Send(_, msg) => Some(msg),
                _ => None,
            })
            .collect()
    }

    /// The write ids of the first attempt and of the retry of the first operation.
    fn first_and_retry_ids(policy: RetryPolicy) -> (WriteId, WriteId, ClientState) {
        let client = client(policy);
        let me = Id::from(1);
        let mut out = Out::new();
        let state = client.start(me, &mut out);
        let mut retry_out = Out::new();
        let retried = client
            .on_retry_timer(me, &state, &mut retry_out)
            .expect("a retry");
        assert!(
            client
                .on_retry_timer(me, &retried, &mut Out::new())
                .is_none(),
            "retry_max is 1"
        );
        match (sent(out).as_slice(), sent(retry_out).as_slice()) {
            (
                [RegisterMsg::Write {
                    id: first,
                    attempt: 0,
                    ..
                }],
                [RegisterMsg::Write {
                    id: retry,
                    attempt: 1,
                    ..
                }],
            ) => (*first, *retry, retried),
            other => panic!("unexpected requests {other:?}"),
        }
    }

    #[test]
    fn flotilla_retries_reuse_the_write_id() {
        let (first, retry, _) = first_and_retry_ids(RetryPolicy::ReuseWriteId);
        assert_eq!(first, retry);
        assert_eq!(
            first,
            WriteId {
                client_id: 1,
                sequence: 1
            }
        );
    }

    #[test]
    fn the_broken_variant_retries_under_a_fresh_id_and_accepts_either_reply() {
        let (first, retry, state) = first_and_retry_ids(RetryPolicy::FreshWriteId);
        assert_ne!(first, retry);
        let client = client(RetryPolicy::FreshWriteId);
        for id in [first, retry] {
            let reply = RegisterMsg::WriteReply {
                id,
                ret: crate::register_spec::RegisterRet::PutOk,
            };
            let next = client.on_reply(Id::from(1), &state, &reply, &mut Out::new());
            assert_eq!(next.map(|s| s.op_index), Some(1), "reply to {id:?}");
        }
        let stale = RegisterMsg::ReadReply {
            op_index: 0,
            value: None,
        };
        assert!(client
            .on_reply(Id::from(1), &state, &stale, &mut Out::new())
            .is_none());
    }
}
