//! The history the clients observe, and how it is recorded and judged.
//!
//! An invocation is recorded when a client sends an operation's first
//! attempt (retries are not invocations); a return when a client accepts
//! the reply that completes its operation. An operation still in flight may
//! or may not have taken effect, as the linearizability check allows.

use stateright::actor::{Envelope, Id};
use stateright::semantics::ConsistencyTester;

use super::messages::RegisterMsg;
use crate::linearizability;
use crate::register_spec::{RegisterOp, RegisterRet};

/// The client-observed history: invocations and returns per client.
pub type History = linearizability::History<Id>;

/// Linearizability verdicts of client-retry histories.
pub type Verdicts = linearizability::Verdicts<Id>;

/// Records an invocation for an operation's first attempt. A second
/// invocation while one is in flight would make the history invalid, which
/// the linearizability check reports.
pub fn record_invocation<C>(
    _: &C,
    history: &History,
    env: Envelope<&RegisterMsg>,
) -> Option<History> {
    let op = match env.msg {
        RegisterMsg::Write {
            write, attempt: 0, ..
        } => write.to_op(),
        RegisterMsg::Read { attempt: 0, .. } => RegisterOp::Read,
        _ => return None,
    };
    let mut history = history.clone();
    let _ = history.on_invoke(env.src, op);
    Some(history)
}

/// Records a return for a delivered reply. The model delivers a message
/// only if the recipient acts on it, and a client acts only on the reply
/// that completes its operation in flight, so every recorded return is one
/// the client observed.
pub fn record_return<C>(_: &C, history: &History, env: Envelope<&RegisterMsg>) -> Option<History> {
    let ret = match env.msg {
        RegisterMsg::WriteReply { ret, .. } => ret.clone(),
        RegisterMsg::ReadReply { value, .. } => RegisterRet::ReadOk(value.clone()),
        _ => return None,
    };
    let mut history = history.clone();
    let _ = history.on_return(env.dst, ret);
    Some(history)
}
