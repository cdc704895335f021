//! What clients and the server say to each other in the client-retry model.
//!
//! A write carries its real [`WriteId`]; the attempt number exists only so
//! the model can record the client's invocation once (on attempt 0), never
//! for a retry. The server does not look at it.

use raftstore::command::{WriteId, WriteOp};

use crate::register_spec::{RegisterOp, RegisterRet, Value};

/// The key the register lives under in the server's store.
pub const REGISTER_KEY: &[u8] = b"register";

/// A register operation that goes through the Raft log.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RegisterWrite {
    Put(Value),
    Cas { expected: Option<Value>, new: Value },
}

impl RegisterWrite {
    /// The write behind `op`, or `None` for a read.
    pub fn from_op(op: &RegisterOp) -> Option<RegisterWrite> {
        match op {
            RegisterOp::Put(value) => Some(RegisterWrite::Put(value.clone())),
            RegisterOp::Cas { expected, new } => Some(RegisterWrite::Cas {
                expected: expected.clone(),
                new: new.clone(),
            }),
            RegisterOp::Read => None,
        }
    }

    pub fn to_op(&self) -> RegisterOp {
        match self {
            RegisterWrite::Put(value) => RegisterOp::Put(value.clone()),
            RegisterWrite::Cas { expected, new } => RegisterOp::Cas {
                expected: expected.clone(),
                new: new.clone(),
            },
        }
    }

    /// The raftstore operation the server proposes for this write.
    pub fn to_write_op(&self) -> WriteOp {
        match self {
            RegisterWrite::Put(value) => WriteOp::Put {
                key: REGISTER_KEY.to_vec(),
                value: value.0.clone(),
            },
            RegisterWrite::Cas { expected, new } => WriteOp::CompareAndSwap {
                key: REGISTER_KEY.to_vec(),
                expected: expected.as_ref().map(|v| v.0.clone()),
                new: Some(new.0.clone()),
            },
        }
    }
}

/// A message between a client and the server.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RegisterMsg {
    /// Client to server: apply `write` exactly once under `id`; every
    /// write of the client below `answered_below` was answered.
    Write {
        id: WriteId,
        answered_below: u64,
        write: RegisterWrite,
        attempt: u8,
    },
    /// Client to server: read the register for the client's operation `op_index`.
    Read { op_index: usize, attempt: u8 },
    /// Server to client: the result of the write `id` (first application's
    /// result if it was a duplicate).
    WriteReply { id: WriteId, ret: RegisterRet },
    /// Server to client: the register's value for the read `op_index`.
    ReadReply {
        op_index: usize,
        value: Option<Value>,
    },
}
