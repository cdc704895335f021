//! The cluster's members as this node knows them: peer (Raft) addresses
//! from the command line, client addresses learnt from the peers' streams.
//! Used to turn a leader's node id into an address clients can follow.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemberAddrs {
    pub peer_addr: String,
    /// Empty until the member has introduced itself.
    pub client_addr: String,
}

#[derive(Clone, Default)]
pub struct Members {
    inner: Arc<RwLock<BTreeMap<u64, MemberAddrs>>>,
}

impl Members {
    pub fn new(initial: impl IntoIterator<Item = (u64, MemberAddrs)>) -> Self {
        Members {
            inner: Arc::new(RwLock::new(initial.into_iter().collect())),
        }
    }

    /// Records the client address a member announced.
    pub fn learn_client_addr(&self, node_id: u64, client_addr: &str) {
        if client_addr.is_empty() {
            return;
        }
        if self
            .get(node_id)
            .is_some_and(|m| m.client_addr == client_addr)
        {
            return;
        }
        let mut map = self.inner.write().unwrap_or_else(|p| p.into_inner());
        map.entry(node_id).or_default().client_addr = client_addr.to_string();
    }

    pub fn get(&self, node_id: u64) -> Option<MemberAddrs> {
        self.inner
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&node_id)
            .cloned()
    }

    pub fn all(&self) -> Vec<(u64, MemberAddrs)> {
        self.inner
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (*k, v.clone()))
            .collect()
    }
}
