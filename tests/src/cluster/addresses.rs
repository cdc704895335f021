//! Collision-free loopback addresses for test clusters.
//!
//! Every node of every cluster gets its own loopback IP, `127.A.B.node`, and
//! the default ports (client 20160, peer 2380, status 20180). `A.B` is derived from the
//! process id and a per-process counter, so clusters of concurrent tests and
//! of concurrently running test binaries stay apart. Before handing a subnet
//! out, every address is test-bound; a subnet with a busy address is skipped.
//! Only loopback addresses are ever produced.

use crate::Error;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU32, Ordering};

/// Native KV API port of every test node.
pub const CLIENT_PORT: u16 = 20160;
/// Peer (Raft) port of every test node.
pub const PEER_PORT: u16 = 2380;
/// HTTP status port of every test node.
pub const STATUS_PORT: u16 = 20180;

/// Subnets tried before giving up.
const SUBNET_ATTEMPTS_MAX: u32 = 64;
/// Second octets used, so tests never touch `127.0.x.x` (where playgrounds
/// and developers' own nodes live).
const SECOND_OCTET_FIRST: u32 = 16;
const SECOND_OCTET_COUNT: u32 = 224;

static NEXT_SUBNET: AtomicU32 = AtomicU32::new(0);

/// The two listening addresses of one node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeAddresses {
    pub client: SocketAddr,
    pub peer: SocketAddr,
    pub status: SocketAddr,
}

impl NodeAddresses {
    /// The default ports on `ip`.
    fn on(ip: Ipv4Addr) -> NodeAddresses {
        NodeAddresses {
            client: SocketAddr::from((ip, CLIENT_PORT)),
            peer: SocketAddr::from((ip, PEER_PORT)),
            status: SocketAddr::from((ip, STATUS_PORT)),
        }
    }

    /// Whether every address can be bound right now.
    fn bindable(&self) -> bool {
        [self.client, self.peer, self.status]
            .iter()
            .all(|addr| TcpListener::bind(addr).is_ok())
    }
}

/// Addresses for nodes `1..=nodes`, all currently bindable.
pub fn allocate(nodes: usize) -> Result<Vec<NodeAddresses>, Error> {
    assert!((1..=254).contains(&nodes), "a subnet holds 1..=254 nodes");
    for _ in 0..SUBNET_ATTEMPTS_MAX {
        let subnet = subnet(
            std::process::id(),
            NEXT_SUBNET.fetch_add(1, Ordering::Relaxed),
        );
        let candidates: Vec<NodeAddresses> = (1..=nodes as u8)
            .map(|node| NodeAddresses::on(Ipv4Addr::new(127, subnet.0, subnet.1, node)))
            .collect();
        if candidates.iter().all(NodeAddresses::bindable) {
            return Ok(candidates);
        }
    }
    Err(Error::NoFreeAddresses {
        attempts: SUBNET_ATTEMPTS_MAX,
    })
}

/// Addresses for one more node, `node`, in the subnet of `first` (a node
/// joining a running cluster), if they are bindable.
pub fn sibling(first: &NodeAddresses, node: u8) -> Option<NodeAddresses> {
    let std::net::IpAddr::V4(ip) = first.client.ip() else {
        return None;
    };
    let [a, b, c, _] = ip.octets();
    let addresses = NodeAddresses::on(Ipv4Addr::new(a, b, c, node));
    addresses.bindable().then_some(addresses)
}

/// The `(A, B)` octets of a process's `counter`-th subnet.
fn subnet(pid: u32, counter: u32) -> (u8, u8) {
    // 16 clusters per process before wrapping into a neighbour's range;
    // the bind probe catches the rare overlap.
    let slot = (pid.wrapping_mul(16).wrapping_add(counter)) % (SECOND_OCTET_COUNT * 256);
    let second = SECOND_OCTET_FIRST + slot / 256;
    let third = slot % 256;
    (second as u8, third as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_stay_out_of_127_0_and_apart_per_counter() {
        for pid in [1, 4242, u32::MAX] {
            let first = subnet(pid, 0);
            let second = subnet(pid, 1);
            assert_ne!(first, second);
            assert!(
                first.0 >= SECOND_OCTET_FIRST as u8
                    && first.0 < (SECOND_OCTET_FIRST + SECOND_OCTET_COUNT) as u8
            );
        }
    }

    #[test]
    fn allocated_addresses_are_loopback_and_distinct() {
        let nodes = allocate(3).expect("free loopback addresses");
        assert_eq!(nodes.len(), 3);
        for node in &nodes {
            assert!(node.client.ip().is_loopback() && node.peer.ip().is_loopback());
            assert_eq!(node.client.ip(), node.peer.ip());
        }
        assert_ne!(nodes[0].client, nodes[1].client);
        let fourth = sibling(&nodes[0], 4).expect("a free sibling address");
        assert_eq!(fourth.client.ip().to_string().rsplit('.').next(), Some("4"));
        assert_eq!(
            fourth
                .client
                .ip()
                .to_string()
                .rsplit_once('.')
                .map(|(net, _)| net.to_string()),
            nodes[0]
                .client
                .ip()
                .to_string()
                .rsplit_once('.')
                .map(|(net, _)| net.to_string())
        );
    }
}
