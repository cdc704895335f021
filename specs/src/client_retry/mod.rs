//! The client-retry model: clients put, compare-and-swap and read one
//! register on a server over a network that drops, delays, reorders and
//! duplicates messages; a client whose request times out sends it again.
//! The server applies every delivered write through raftstore's real
//! `apply_write`.
//!
//! Properties (names shared with the tests and any checker that reports them):
//! - [`LINEARIZABLE`] (always): the history the clients observe is
//!   linearizable against [`CasRegister`].
//! - [`NO_WRITE_REFUSED`] (always): the real apply path never refuses nor
//!   mis-answers a write built for the region's current epoch.
//! - [`ALL_CLIENTS_DONE`] and [`DUPLICATE_ANSWERED`] (sometimes): the model
//!   is not vacuous: every workload can complete, and a duplicate write does
//!   reach the server and is answered from its session table.

mod client;
mod messages;
mod node;
mod server;

pub use client::{ClientState, RetryPolicy, RetryTimer, RetryingClient};
pub use messages::{RegisterMsg, RegisterWrite, REGISTER_KEY};
pub use node::{NodeState, RegisterNode};
pub use server::{RegisterServer, ServerFault, ServerState};

use stateright::actor::{ActorModel, ActorModelState, Envelope, Id, LossyNetwork, Network};
use stateright::semantics::{ConsistencyTester, LinearizabilityTester};
use stateright::Expectation;

use crate::register_spec::{CasRegister, RegisterOp, RegisterRet, Value};

pub const LINEARIZABLE: &str = "linearizable";
pub const NO_WRITE_REFUSED: &str = "no write refused";
pub const ALL_CLIENTS_DONE: &str = "all clients done";
pub const DUPLICATE_ANSWERED: &str = "duplicate write answered from the session table";

/// Set to `1` to check the larger bounds of [`Depth::Deep`].
pub const DEEP_ENV_VAR: &str = "FLOTILLA_SPECS_DEEP";

/// The client-observed history: invocations and returns per client.
pub type History = LinearizabilityTester<Id, CasRegister>;

/// The client-retry model, ready for `.checker()`.
pub type RetryModel = ActorModel<RegisterNode, RetryModelConfig, History>;

/// How large a model [`RetryModelConfig::contended`] builds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Depth {
    /// Two clients, five operations in all, one retry each: seconds.
    Quick,
    /// Two clients, six operations in all, two retries each.
    Deep,
}

impl Depth {
    /// [`Depth::Deep`] if the environment variable [`DEEP_ENV_VAR`] is `1`.
    pub fn from_env() -> Depth {
        match std::env::var(DEEP_ENV_VAR) {
            Ok(value) if value == "1" => Depth::Deep,
            _ => Depth::Quick,
        }
    }
}

/// What to check: one workload per client, how often a client retries an
/// operation, and how retries are identified.
#[derive(Clone, Debug)]
pub struct RetryModelConfig {
    pub workloads: Vec<Vec<RegisterOp>>,
    pub retry_max: u8,
    pub policy: RetryPolicy,
}

fn value(text: &str) -> Value {
    Value::from_str_bytes(text)
}

impl RetryModelConfig {
    /// Two clients racing on the register with puts, CASes that depend on
    /// each other's writes, and reads after them.
    pub fn contended(policy: RetryPolicy, depth: Depth) -> RetryModelConfig {
        let mut first = vec![
            RegisterOp::Put(value("a")),
            RegisterOp::Cas {
                expected: Some(value("a")),
                new: value("b"),
            },
            RegisterOp::Read,
        ];
        let mut second = vec![
            RegisterOp::Cas {
                expected: None,
                new: value("c"),
            },
            RegisterOp::Read,
        ];
        let retry_max = match depth {
            Depth::Quick => 1,
            Depth::Deep => {
                first.insert(
                    2,
                    RegisterOp::Cas {
                        expected: Some(value("c")),
                        new: value("d"),
                    },
                );
                second.insert(1, RegisterOp::Put(value("e")));
                2
            }
        };
        RetryModelConfig {
            workloads: vec![first, second],
            retry_max,
            policy,
        }
    }

    pub fn into_model(self) -> RetryModel {
        let server = Id::from(0);
        let clients: Vec<RegisterNode> = self
            .workloads
            .iter()
            .map(|workload| {
                RegisterNode::Client(RetryingClient {
                    server,
                    workload: workload.clone(),
                    retry_max: self.retry_max,
                    policy: self.policy,
                })
            })
            .collect();
        ActorModel::new(self, History::new(CasRegister::default()))
            .actor(RegisterNode::Server(RegisterServer::default()))
            .actors(clients)
            .init_network(Network::new_unordered_duplicating([]))
            .lossy_network(LossyNetwork::No)
            .property(Expectation::Always, LINEARIZABLE, |_, state| {
                state.history.serialized_history().is_some()
            })
            .property(Expectation::Always, NO_WRITE_REFUSED, |_, state| {
                server_state(state).is_some_and(|server| server.fault.is_none())
            })
            .property(Expectation::Sometimes, ALL_CLIENTS_DONE, |model, state| {
                model
                    .actors
                    .iter()
                    .zip(&state.actor_states)
                    .all(|(node, node_state)| match (node, &**node_state) {
                        (RegisterNode::Client(client), NodeState::Client(current)) => {
                            current.op_index == client.workload.len()
                        }
                        _ => true,
                    })
            })
            .property(Expectation::Sometimes, DUPLICATE_ANSWERED, |_, state| {
                server_state(state).is_some_and(|server| server.answered_duplicate)
            })
            .record_msg_out(record_invocation)
            .record_msg_in(record_return)
    }
}

fn server_state(state: &ActorModelState<RegisterNode, History>) -> Option<&ServerState> {
    match state.actor_states.first().map(|s| &**s) {
        Some(NodeState::Server(server)) => Some(server),
        _ => None,
    }
}

/// Records a client's invocation when it sends an operation's first attempt.
/// Retries are not invocations. A second invocation while one is in flight
/// would make the history invalid, which [`LINEARIZABLE`] reports.
fn record_invocation(
    _: &RetryModelConfig,
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

/// Records a return when a client accepts a reply. The model delivers a
/// message only if the recipient acts on it, and a client acts only on the
/// reply that completes its operation in flight, so every recorded return
/// is one the client observed.
fn record_return(
    _: &RetryModelConfig,
    history: &History,
    env: Envelope<&RegisterMsg>,
) -> Option<History> {
    let ret = match env.msg {
        RegisterMsg::WriteReply { ret, .. } => ret.clone(),
        RegisterMsg::ReadReply { value, .. } => RegisterRet::ReadOk(value.clone()),
        _ => return None,
    };
    let mut history = history.clone();
    let _ = history.on_return(env.dst, ret);
    Some(history)
}
