//! The model's actor: the server or one client, as one `Actor` type.

use std::borrow::Cow;

use stateright::actor::{Actor, Id, Out};

use super::client::{ClientState, RetryTimer, RetryingClient};
use super::messages::RegisterMsg;
use super::server::{RegisterServer, ServerState};

#[derive(Clone, Debug)]
pub enum RegisterNode {
    Server(RegisterServer),
    Client(RetryingClient),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum NodeState {
    Server(ServerState),
    Client(ClientState),
}

impl Actor for RegisterNode {
    type Msg = RegisterMsg;
    type State = NodeState;
    type Timer = RetryTimer;
    type Random = ();
    type Storage = ();

    fn on_start(&self, id: Id, _storage: &Option<()>, o: &mut Out<Self>) -> NodeState {
        match self {
            RegisterNode::Server(server) => NodeState::Server(server.start()),
            RegisterNode::Client(client) => NodeState::Client(client.start(id, o)),
        }
    }

    fn on_msg(
        &self,
        id: Id,
        state: &mut Cow<NodeState>,
        src: Id,
        msg: RegisterMsg,
        o: &mut Out<Self>,
    ) {
        let next = match (self, &**state) {
            (RegisterNode::Server(server), NodeState::Server(current)) => server
                .on_request(current, src, &msg, o)
                .map(NodeState::Server),
            (RegisterNode::Client(client), NodeState::Client(current)) => {
                client.on_reply(id, current, &msg, o).map(NodeState::Client)
            }
            _ => unreachable!("a node's state always matches its kind"),
        };
        if let Some(next) = next {
            *state.to_mut() = next;
        }
    }

    fn on_timeout(
        &self,
        id: Id,
        state: &mut Cow<NodeState>,
        _timer: &RetryTimer,
        o: &mut Out<Self>,
    ) {
        let next = match (self, &**state) {
            (RegisterNode::Client(client), NodeState::Client(current)) => {
                client.on_retry_timer(id, current, o).map(NodeState::Client)
            }
            _ => None,
        };
        if let Some(next) = next {
            *state.to_mut() = next;
        }
    }
}
