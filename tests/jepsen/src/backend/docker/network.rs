//! The run's private Docker network: a bridge with its own /24, so every
//! node gets a fixed address (`.11` for node 1, `.12` for node 2, …) that
//! survives restarts, and the host reaches the nodes through the bridge.
//!
//! The /24 is picked from `172.29.0.0/16` by a hash of the run id; a subnet
//! Docker reports as taken is skipped for the next one.

use super::command::{args, docker};
use super::stale::{OWNER_LABEL, RUN_LABEL};
use crate::backend::NodeId;
use crate::Error;
use std::net::Ipv4Addr;

/// Subnets tried before giving up.
const SUBNET_ATTEMPTS_MAX: u32 = 64;
/// Host part of node 1's address.
const FIRST_NODE_HOST: u8 = 11;

#[derive(Debug)]
pub(super) struct Network {
    pub name: String,
    /// The third octet of `172.29.X.0/24`.
    subnet: u8,
}

impl Network {
    /// Creates the network `name`, labelled with the run and its owner.
    pub async fn create(name: &str, run_id: &str, owner: &str) -> Result<Network, Error> {
        let first = run_id.bytes().fold(0u32, |hash, byte| {
            hash.wrapping_mul(31).wrapping_add(u32::from(byte))
        });
        let mut last_error = String::new();
        for attempt in 0..SUBNET_ATTEMPTS_MAX {
            let subnet = ((first + attempt) % 256) as u8;
            let created = docker(&args(&[
                "network",
                "create",
                "--driver",
                "bridge",
                "--subnet",
                &format!("172.29.{subnet}.0/24"),
                "--label",
                &format!("{RUN_LABEL}={run_id}"),
                "--label",
                &format!("{OWNER_LABEL}={owner}"),
                name,
            ]))
            .await;
            match created {
                Ok(_) => {
                    return Ok(Network {
                        name: name.to_owned(),
                        subnet,
                    })
                }
                Err(err) if is_taken(&err) => last_error = err.to_string(),
                Err(err) => return Err(err),
            }
        }
        Err(Error::NoFreeSubnet {
            attempts: SUBNET_ATTEMPTS_MAX,
            last: last_error,
        })
    }

    /// The fixed address of `node`.
    pub fn node_ip(&self, node: NodeId) -> Ipv4Addr {
        let host = u8::try_from(node)
            .ok()
            .and_then(|node| node.checked_add(FIRST_NODE_HOST - 1))
            .filter(|host| *host < 255)
            .expect("node ids fit the subnet");
        Ipv4Addr::new(172, 29, self.subnet, host)
    }
}

/// Whether Docker refused the subnet because another network uses it.
fn is_taken(err: &Error) -> bool {
    matches!(err, Error::Command { stderr, .. } if stderr.contains("overlap"))
}
