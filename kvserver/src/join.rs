//! Joining a running cluster: a node started with `--join` greets the
//! existing members at the given peer addresses with a hello (a batch with
//! no messages), so that they learn its peer and client addresses and can
//! replicate to it once a region adds a replica on it. Each answer lists
//! the members that member knows (peer and client addresses: the client
//! ones are how this node finds the placement driver before it holds any
//! region); members named there are greeted too, so one reachable member
//! is enough.
//!
//! Guarantees: every greeting is repeated, with backoff, until the member
//! answered it (its receiver recorded this node's addresses); the task
//! ends once every member it heard of was greeted.

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use flotilla_proto::raftpb::{PeerAddress, RaftBatch};
use tokio::task::JoinSet;

use crate::members::Members;
use crate::peer_transport::{connect, SelfAddrs};

/// Longest pause between two greetings of an unreachable member.
const GREETING_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Greets every member reachable from `join` (peer addresses), recording
/// the members their answers name in `members`.
pub async fn announce(me: SelfAddrs, join: Vec<String>, members: Members) {
    let mut to_greet: VecDeque<String> = join.into();
    let mut greeted: HashSet<String> = HashSet::new();
    let mut greetings = JoinSet::new();
    loop {
        while let Some(addr) = to_greet.pop_front() {
            if addr != me.peer_addr && greeted.insert(addr.clone()) {
                greetings.spawn(greet_until_answered(me.clone(), addr));
            }
        }
        let Some(answer) = greetings.join_next().await else {
            break;
        };
        match answer {
            Ok(known) => {
                for PeerAddress {
                    node_id,
                    peer_addr,
                    client_addr,
                } in known
                {
                    if node_id != me.node_id {
                        members.learn_peer_addr(node_id, &peer_addr).await;
                        members.learn_client_addr(node_id, &client_addr);
                        to_greet.push_back(peer_addr);
                    }
                }
            }
            Err(err) => tracing::warn!(%err, "a greeting task failed"),
        }
    }
    tracing::info!(
        members = greeted.len(),
        "joined: every known member was greeted"
    );
}

/// Says hello to the member at `addr` until it answers; returns the peer
/// addresses it knows.
async fn greet_until_answered(me: SelfAddrs, addr: String) -> Vec<PeerAddress> {
    let mut backoff = Duration::from_millis(50);
    loop {
        match hello(&me, &addr).await {
            Ok(known) => {
                tracing::info!(%addr, "greeted a member");
                return known;
            }
            Err(err) => tracing::debug!(%addr, %err, "member not greeted yet; retrying"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(GREETING_BACKOFF_MAX);
    }
}

/// One hello: a stream carrying a single empty batch, closed at once.
async fn hello(me: &SelfAddrs, addr: &str) -> Result<Vec<PeerAddress>, String> {
    let mut client = connect(addr).await.map_err(|e| e.to_string())?;
    let batch = RaftBatch {
        from_node: me.node_id,
        to_node: 0,
        from_client_addr: me.client_addr.clone(),
        messages: Vec::new(),
        from_peer_addr: me.peer_addr.clone(),
    };
    let answer = client
        .stream(tokio_stream::iter([batch]))
        .await
        .map_err(|status| status.to_string())?;
    Ok(answer.into_inner().members)
}
