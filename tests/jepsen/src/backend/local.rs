//! Node processes on loopback: `flotilla_tests::cluster::Cluster` under the
//! [`ClusterBackend`] interface. Kill and restart come from the cluster
//! harness; pause and resume are SIGSTOP and SIGCONT to the node's process.
//!
//! Partitions are not supported: every node listens on its own loopback IP,
//! but connects out from 127.0.0.1, so a packet filter cannot tell one
//! node's traffic from another's without changing how the server binds its
//! sockets or touching the host's own firewall — which this backend never
//! does. Partitions need the Docker backend.

use super::{ClusterBackend, Grudge, NodeId};
use crate::nemesis::FaultKind;
use crate::Error;
use flotilla_tests::cluster::{Cluster, TestEnvironment};
use std::path::{Path, PathBuf};

/// Log lines kept per node in the report.
const LOG_LINES_MAX: usize = 20_000;

const NO_PARTITIONS: &str = "local nodes all connect out from 127.0.0.1, so their links \
     cannot be cut without touching the host's firewall; use --backend docker";

#[derive(Debug)]
pub struct LocalBackend {
    cluster: Cluster,
}

impl LocalBackend {
    /// Starts `nodes` server processes of `server_binary` with
    /// `server_args`, with data directories under `scratch_root` (which must
    /// be on a real filesystem: the WAL uses O_DIRECT).
    pub async fn start(
        server_binary: PathBuf,
        scratch_root: PathBuf,
        nodes: usize,
        server_args: Vec<String>,
    ) -> Result<LocalBackend, Error> {
        let environment = TestEnvironment {
            server_binary,
            scratch_root,
        };
        Ok(LocalBackend {
            cluster: Cluster::start_with_args(environment, nodes, server_args).await?,
        })
    }

    fn signal(&self, node: NodeId, signal: libc::c_int) -> Result<(), Error> {
        let pid = self.cluster.pid(node)?;
        let pid = libc::pid_t::try_from(pid).map_err(|_| Error::NodeState {
            node,
            problem: "has a process id out of range",
        })?;
        // SAFETY: a plain syscall on a child the cluster still owns (and so
        // has not reaped), so the pid cannot have been reused.
        if unsafe { libc::kill(pid, signal) } == -1 {
            return Err(Error::Io {
                context: format!("node {node}: sending signal {signal}"),
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(())
    }
}

impl ClusterBackend for LocalBackend {
    const NAME: &'static str = "local";

    fn unsupported(fault: FaultKind) -> Option<&'static str> {
        match fault {
            FaultKind::Partition => Some(NO_PARTITIONS),
            FaultKind::Kill
            | FaultKind::Pause
            | FaultKind::Split
            | FaultKind::Merge
            | FaultKind::Transfer
            | FaultKind::Membership => None,
        }
    }

    fn node_ids(&self) -> Vec<NodeId> {
        self.cluster.node_ids()
    }

    fn endpoints(&self) -> Vec<String> {
        self.cluster.endpoints()
    }

    async fn kill(&mut self, node: NodeId) -> Result<(), Error> {
        Ok(self.cluster.kill(node)?)
    }

    async fn restart(&mut self, node: NodeId) -> Result<(), Error> {
        Ok(self.cluster.restart(node).await?)
    }

    async fn pause(&mut self, node: NodeId) -> Result<(), Error> {
        self.signal(node, libc::SIGSTOP)
    }

    async fn resume(&mut self, node: NodeId) -> Result<(), Error> {
        self.signal(node, libc::SIGCONT)
    }

    async fn partition(&mut self, _grudge: &Grudge) -> Result<(), Error> {
        Err(Error::Unsupported {
            backend: Self::NAME,
            fault: FaultKind::Partition.name(),
            reason: NO_PARTITIONS,
        })
    }

    async fn heal_partition(&mut self) -> Result<(), Error> {
        Ok(())
    }

    async fn save_logs(&self, dir: &Path) -> Result<(), Error> {
        let path = dir.join("nodes.log");
        std::fs::write(&path, self.cluster.log_tails(LOG_LINES_MAX))
            .map_err(Error::io(format!("writing {}", path.display())))
    }
}
