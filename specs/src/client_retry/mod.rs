//! The client-retry model: clients put, compare-and-swap and read one
//! register on a server over a network that reorders, duplicates and
//! delays messages (forever, which is how it loses them); a client whose
//! request times out sends it again. The server applies every delivered
//! write through raftstore's real `apply_write`.
//!
//! Properties (names shared with the tests and any checker that reports them):
//! - [`LINEARIZABLE`] (always): the history the clients observe is
//!   linearizable against [`CasRegister`](crate::register_spec::CasRegister).
//! - [`NO_WRITE_REFUSED`] (always): the real apply path never refuses nor
//!   mis-answers a write built for the region's current epoch.
//! - [`ALL_CLIENTS_DONE`], [`DUPLICATE_ANSWERED`] and [`LATE_COPY_REFUSED`]
//!   (sometimes): the model is not vacuous: every workload can complete, a
//!   duplicate write does reach the server and is answered from its session
//!   table, and a copy of a write whose client moved on (so its result was
//!   forgotten) does reach the server and is refused.
//!
//! The network is stateright's unordered duplicating network without its
//! lossy option: a message can always stay undelivered while timers fire,
//! so dropping it adds states but no behaviour the properties (which never
//! look at the network) could tell apart.

mod client;
mod config;
mod history;
mod messages;
mod node;
mod server;

pub use client::{ClientState, RetryPolicy, RetryTimer, RetryingClient};
pub use config::RetryModelConfig;
pub use history::{History, Verdicts};
pub use messages::{RegisterMsg, RegisterWrite, REGISTER_KEY};
pub use node::{NodeState, RegisterNode};
pub use server::{RegisterServer, ServerFault, ServerState};

use stateright::actor::{ActorModel, ActorModelState, Id, LossyNetwork, Network};
use stateright::{CheckerBuilder, Expectation, Model};

use crate::register_spec::CasRegister;

pub const LINEARIZABLE: &str = "linearizable";
pub const NO_WRITE_REFUSED: &str = "no write refused";
pub const ALL_CLIENTS_DONE: &str = "all clients done";
pub const DUPLICATE_ANSWERED: &str = "duplicate write answered from the session table";
pub const LATE_COPY_REFUSED: &str = "late copy of an answered write refused";

/// The client-retry model.
pub type RetryModel = ActorModel<RegisterNode, Verdicts, History>;

type RetryState = ActorModelState<RegisterNode, History>;

impl RetryModelConfig {
    pub fn into_model(self) -> RetryModel {
        let server = Id::from(0);
        let clients: Vec<RegisterNode> = self
            .workloads
            .into_iter()
            .map(|workload| {
                RegisterNode::Client(RetryingClient {
                    server,
                    workload,
                    retry_max: self.retry_max,
                    policy: self.policy,
                })
            })
            .collect();
        ActorModel::new(Verdicts::default(), History::new(CasRegister::default()))
            .actor(RegisterNode::Server(RegisterServer::default()))
            .actors(clients)
            .init_network(Network::new_unordered_duplicating([]))
            .lossy_network(LossyNetwork::No)
            .property(Expectation::Always, LINEARIZABLE, |model, state| {
                model.cfg.is_linearizable(&state.history)
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
            .property(Expectation::Sometimes, LATE_COPY_REFUSED, |_, state| {
                server_state(state).is_some_and(|server| server.refused_late_copy)
            })
            .record_msg_out(history::record_invocation)
            .record_msg_in(history::record_return)
    }

    /// A checker for this model that merges states differing only in what
    /// the network delivered last. Stateright's duplicating network keeps
    /// that envelope only to tell no-op deliveries apart; nothing here reads
    /// it, so merging them is sound and shrinks the space severalfold.
    /// Symmetry reduction is applied by the depth-first checker only: run it
    /// with `spawn_dfs`.
    pub fn checker(self) -> CheckerBuilder<RetryModel> {
        self.into_model()
            .checker()
            .symmetry_fn(forget_last_delivery)
    }
}

fn forget_last_delivery(state: &RetryState) -> RetryState {
    let mut state = state.clone();
    if let Network::UnorderedDuplicating(_, last_delivered) = &mut state.network {
        *last_delivered = None;
    }
    state
}

fn server_state(state: &RetryState) -> Option<&ServerState> {
    match state.actor_states.first().map(|s| &**s) {
        Some(NodeState::Server(server)) => Some(server),
        _ => None,
    }
}
