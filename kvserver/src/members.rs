//! The cluster's members as this node knows them: peer (Raft) addresses
//! from the command line and learnt from other nodes (a node that joined
//! the cluster introduces itself), client addresses learnt from the peers'
//! streams. Used to reach other nodes and to turn a leader's node id into
//! an address clients can follow.
//!
//! Learnt peer addresses are kept in an address book in the data
//! directory (`meta/members`, one `node_id peer_addr` line each, replaced
//! atomically), so a restarted node can still reach the nodes that joined
//! after it was configured. Addresses given on the command line take
//! precedence over the book's.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use anyhow::Context as _;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemberAddrs {
    /// Empty while only the member's client address is known.
    pub peer_addr: String,
    /// Empty until the member has introduced itself.
    pub client_addr: String,
}

#[derive(Clone, Default)]
pub struct Members {
    inner: Arc<RwLock<BTreeMap<u64, MemberAddrs>>>,
    /// Where learnt peer addresses are kept; none in tests without a disk.
    book: Option<Arc<AddressBook>>,
}

/// The durable copy of the peer addresses; writes are serialised so that
/// the last one written holds the newest addresses.
struct AddressBook {
    path: PathBuf,
    write: Mutex<()>,
}

impl Members {
    pub fn new(initial: impl IntoIterator<Item = (u64, MemberAddrs)>) -> Self {
        Members {
            inner: Arc::new(RwLock::new(initial.into_iter().collect())),
            book: None,
        }
    }

    /// The members given (`initial`, which win) plus those in the address
    /// book at `path`, whose learnt addresses are kept there from now on.
    pub fn with_address_book(
        initial: impl IntoIterator<Item = (u64, MemberAddrs)>,
        path: &Path,
    ) -> anyhow::Result<Self> {
        let mut known: BTreeMap<u64, MemberAddrs> = read_book(path)?
            .into_iter()
            .map(|(id, peer_addr)| {
                let addrs = MemberAddrs {
                    peer_addr,
                    client_addr: String::new(),
                };
                (id, addrs)
            })
            .collect();
        known.extend(initial);
        Ok(Members {
            inner: Arc::new(RwLock::new(known)),
            book: Some(Arc::new(AddressBook {
                path: path.to_path_buf(),
                write: Mutex::new(()),
            })),
        })
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

    /// Records the peer address of a member this node could not reach
    /// yet, and keeps it in the address book. A member whose peer address
    /// is known keeps it. Returns whether the address was new.
    pub async fn learn_peer_addr(&self, node_id: u64, peer_addr: &str) -> bool {
        if peer_addr.is_empty() || node_id == 0 {
            return false;
        }
        {
            let mut map = self.inner.write().unwrap_or_else(|p| p.into_inner());
            let member = map.entry(node_id).or_default();
            if !member.peer_addr.is_empty() {
                if member.peer_addr != peer_addr {
                    tracing::warn!(node = node_id, known = %member.peer_addr, announced = %peer_addr, "a member announced another peer address than the one configured; keeping the configured one");
                }
                return false;
            }
            member.peer_addr = peer_addr.to_string();
        }
        tracing::info!(node = node_id, peer_addr, "learnt a member's peer address");
        if let Some(book) = self.book.clone() {
            let members = self.clone();
            let saved = tokio::task::spawn_blocking(move || book.save(&members.peer_addrs())).await;
            match saved {
                Ok(Ok(())) => {}
                Ok(Err(err)) => {
                    tracing::error!(%err, "could not save the address book; the address is known until a restart")
                }
                Err(err) => tracing::error!(%err, "address book save task failed"),
            }
        }
        true
    }

    pub fn get(&self, node_id: u64) -> Option<MemberAddrs> {
        self.inner
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&node_id)
            .cloned()
    }

    /// The peer address of `node_id`, if known.
    pub fn peer_addr(&self, node_id: u64) -> Option<String> {
        self.get(node_id)
            .map(|m| m.peer_addr)
            .filter(|addr| !addr.is_empty())
    }

    /// Every member with a known peer address, by id.
    pub fn peer_addrs(&self) -> Vec<(u64, String)> {
        self.all()
            .into_iter()
            .filter(|(_, m)| !m.peer_addr.is_empty())
            .map(|(id, m)| (id, m.peer_addr))
            .collect()
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

impl AddressBook {
    /// Durably replaces the book. Blocking.
    fn save(&self, peers: &[(u64, String)]) -> anyhow::Result<()> {
        let _serialised = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let text: String = peers
            .iter()
            .map(|(id, addr)| format!("{id} {addr}\n"))
            .collect();
        engine::durable_dir::replace_file(&self.path, text.as_bytes())
            .with_context(|| format!("saving the address book {}", self.path.display()))
    }
}

/// The `(node_id, peer_addr)` lines of the book at `path`; none if absent.
fn read_book(path: &Path) -> anyhow::Result<Vec<(u64, String)>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let damaged = |line: &str| {
        anyhow::anyhow!(
            "address book {} has a damaged line {line:?}; remove the file to forget the learnt members (they introduce themselves again)",
            path.display()
        )
    };
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let (id, addr) = line.trim().split_once(' ').ok_or_else(|| damaged(line))?;
            let id = id.parse::<u64>().map_err(|_| damaged(line))?;
            if id == 0 || addr.is_empty() || addr.contains(' ') {
                return Err(damaged(line));
            }
            Ok((id, addr.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn configured(id: u64, peer: &str) -> (u64, MemberAddrs) {
        let addrs = MemberAddrs {
            peer_addr: peer.to_string(),
            client_addr: String::new(),
        };
        (id, addrs)
    }

    #[tokio::test]
    async fn learnt_peer_addresses_survive_a_restart_and_never_override_configured_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("members");
        let members = Members::with_address_book([configured(1, "10.0.0.1:2380")], &path).unwrap();
        assert!(members.learn_peer_addr(4, "10.0.0.4:2380").await);
        assert!(!members.learn_peer_addr(4, "10.0.0.4:2380").await, "known");
        assert!(
            !members.learn_peer_addr(1, "10.9.9.9:2380").await,
            "configured"
        );
        assert_eq!(members.peer_addr(1).as_deref(), Some("10.0.0.1:2380"));

        // A restart configured with another address for node 1 keeps it,
        // and still knows node 4.
        let restarted =
            Members::with_address_book([configured(1, "10.0.0.11:2380")], &path).unwrap();
        assert_eq!(restarted.peer_addr(4).as_deref(), Some("10.0.0.4:2380"));
        assert_eq!(restarted.peer_addr(1).as_deref(), Some("10.0.0.11:2380"));
        assert_eq!(restarted.peer_addr(7), None);
    }

    #[test]
    fn a_damaged_address_book_is_refused_with_a_remedy() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("members");
        std::fs::write(&path, "4 10.0.0.4:2380\nfour 10.0.0.5:2380\n").unwrap();
        let error = Members::with_address_book([], &path)
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("remove the file"), "{error}");
    }
}
