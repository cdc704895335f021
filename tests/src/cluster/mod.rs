//! A harness for real local clusters of `flotilla server` processes.
//!
//! [`Cluster::start`] gives every node its own loopback IP, data directory
//! and log file (under a scratch directory on the target's real filesystem —
//! the WAL uses O_DIRECT, which tmpfs silently ignores), launches the servers
//! and waits for each one's ready line. Nodes can then be crashed
//! ([`Cluster::kill`], SIGKILL), shut down ([`Cluster::terminate`],
//! SIGTERM) and brought back ([`Cluster::restart`]: same data directory and
//! addresses), and more nodes can join the running cluster
//! ([`Cluster::join_node`]).
//!
//! Guarantees: dropping a `Cluster` kills every server it started, whatever
//! the test did; when the drop happens during a panic, the tail of every
//! node's log is printed and the scratch directory is kept for inspection.
//! Waits are bounded by deadlines and poll conditions, never fixed sleeps.

mod addresses;
mod fail_points;
pub mod leader;
mod logs;
mod process;

pub use addresses::{
    allocate as allocate_addresses, NodeAddresses, CLIENT_PORT, PEER_PORT, STATUS_PORT,
};

use addresses::sibling;

use crate::Error;
use client::{Client, ClientConfig};
use process::{Launch, NodeProcess};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tempfile::TempDir;
use tokio::time::Instant;

/// How long a server may take to print its ready line.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a server may take to exit after SIGTERM.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(20);
/// Poll interval of condition waits.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// Log lines per node printed when a test fails.
const FAILURE_LOG_LINES: usize = 60;

/// Where the harness finds the server binary and its scratch space. Build it
/// with [`test_environment!`] from an integration test of this package: only
/// there does Cargo provide both locations.
#[derive(Clone, Debug)]
pub struct TestEnvironment {
    /// The `flotilla-under-test` binary.
    pub server_binary: PathBuf,
    /// A directory on a real filesystem for data directories and logs.
    pub scratch_root: PathBuf,
}

/// The [`TestEnvironment`] of the calling integration test.
#[macro_export]
macro_rules! test_environment {
    () => {
        $crate::cluster::TestEnvironment {
            server_binary: ::std::path::PathBuf::from(env!("CARGO_BIN_EXE_flotilla-under-test")),
            scratch_root: ::std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")),
        }
    };
}

/// One node's fixed identity and, while it runs, its process.
#[derive(Debug)]
struct Node {
    id: u64,
    addresses: NodeAddresses,
    data_dir: PathBuf,
    log_path: PathBuf,
    /// Peer addresses of the members it joined (`--join`); `None` for a
    /// member of the initial cluster.
    join: Option<String>,
    process: Option<NodeProcess>,
}

/// A local cluster of server processes. Node ids are `1..=size`.
#[derive(Debug)]
pub struct Cluster {
    environment: TestEnvironment,
    initial_cluster: String,
    server_args: Vec<String>,
    nodes: Vec<Node>,
    client: Client,
    // Declared last: the servers die before their directories go.
    scratch: TempDir,
}

impl Cluster {
    /// Launches `size` nodes and waits until each is ready (listening). Does
    /// not wait for a leader: see [`Cluster::wait_for_leader`].
    pub async fn start(environment: TestEnvironment, size: usize) -> Result<Cluster, Error> {
        Self::start_with_args(environment, size, Vec::new()).await
    }

    /// [`Cluster::start_with_args`], then [`Cluster::wait_for_leader`] for at
    /// most `timeout`.
    pub async fn start_with_leader(
        environment: TestEnvironment,
        size: usize,
        server_args: Vec<String>,
        timeout: Duration,
    ) -> Result<Cluster, Error> {
        let cluster = Self::start_with_args(environment, size, server_args).await?;
        cluster.wait_for_leader(timeout).await?;
        Ok(cluster)
    }

    /// Like [`Cluster::start`], passing `server_args` to every server
    /// (at every launch, restarts included).
    pub async fn start_with_args(
        environment: TestEnvironment,
        size: usize,
        server_args: Vec<String>,
    ) -> Result<Cluster, Error> {
        std::fs::create_dir_all(&environment.scratch_root).map_err(|source| Error::Io {
            context: format!("creating {}", environment.scratch_root.display()),
            source,
        })?;
        // Absolute, so the servers do not depend on their working directory.
        let scratch_root =
            std::path::absolute(&environment.scratch_root).map_err(|source| Error::Io {
                context: format!("resolving {}", environment.scratch_root.display()),
                source,
            })?;
        let scratch = tempfile::Builder::new()
            .prefix("cluster-")
            .tempdir_in(scratch_root)
            .map_err(|source| Error::Io {
                context: "creating the cluster's scratch directory".to_owned(),
                source,
            })?;
        let nodes: Vec<Node> = addresses::allocate(size)?
            .into_iter()
            .zip(1u64..)
            .map(|(addresses, id)| Node {
                id,
                addresses,
                data_dir: scratch.path().join(format!("node-{id}")),
                log_path: scratch.path().join(format!("node-{id}.log")),
                join: None,
                process: None,
            })
            .collect();
        let initial_cluster = nodes
            .iter()
            .map(|node| format!("{}={}", node.id, node.addresses.peer))
            .collect::<Vec<_>>()
            .join(",");
        let endpoints = nodes
            .iter()
            .map(|node| node.addresses.client.to_string())
            .collect();
        let client = Client::connect(client_config(endpoints)).await?;
        let mut cluster = Cluster {
            environment,
            initial_cluster,
            server_args,
            nodes,
            client,
            scratch,
        };
        for id in cluster.node_ids() {
            cluster.launch(id).await?;
        }
        tracing::info!(scratch = %cluster.scratch.path().display(), nodes = size, "cluster started");
        Ok(cluster)
    }

    /// Starts one more node that joins the running cluster (`--join` with
    /// every other node's peer address; it bootstraps no regions) and waits
    /// until it is ready. Returns its id, the next after the highest.
    pub async fn join_node(&mut self) -> Result<u64, Error> {
        let id = self.nodes.iter().map(|node| node.id).max().unwrap_or(0) + 1;
        let first = self.nodes.first().ok_or(Error::NodeState {
            node: id,
            problem: "has no cluster to join",
        })?;
        let addresses = u8::try_from(id)
            .ok()
            .and_then(|octet| sibling(&first.addresses, octet))
            .ok_or(Error::NodeState {
                node: id,
                problem: "has no free address in the cluster's loopback subnet",
            })?;
        let join = self
            .nodes
            .iter()
            .map(|node| node.addresses.peer.to_string())
            .collect::<Vec<_>>()
            .join(",");
        self.nodes.push(Node {
            id,
            addresses,
            data_dir: self.scratch.path().join(format!("node-{id}")),
            log_path: self.scratch.path().join(format!("node-{id}.log")),
            join: Some(join),
            process: None,
        });
        self.launch(id).await?;
        tracing::info!(node = id, "node joined");
        Ok(id)
    }

    /// Node ids, `1..=size`.
    pub fn node_ids(&self) -> Vec<u64> {
        self.nodes.iter().map(|node| node.id).collect()
    }

    /// Client addresses of all nodes, in node order.
    pub fn endpoints(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|node| node.addresses.client.to_string())
            .collect()
    }

    /// Client address of one node.
    pub fn endpoint(&self, node: u64) -> Result<String, Error> {
        Ok(self.node(node)?.addresses.client.to_string())
    }

    /// The cluster's shared client (all nodes as endpoints).
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// A new client with its own connections, leader cache and write
    /// identity.
    pub async fn new_client(&self) -> Result<Client, Error> {
        Ok(Client::connect(client_config(self.endpoints())).await?)
    }

    /// Where data directories and logs live.
    pub fn scratch_dir(&self) -> &Path {
        self.scratch.path()
    }

    /// Whether the node's process is running.
    pub fn is_running(&mut self, node: u64) -> Result<bool, Error> {
        let node = self.node_mut(node)?;
        let exited = node.process.as_mut().is_none_or(NodeProcess::has_exited);
        if exited {
            node.process = None;
        }
        Ok(!exited)
    }

    /// The process id of a running node, for signalling it (e.g. SIGSTOP).
    pub fn pid(&self, node: u64) -> Result<u32, Error> {
        let process = self.node(node)?.process.as_ref().ok_or(Error::NodeState {
            node,
            problem: "is not running",
        })?;
        Ok(process.pid())
    }

    /// Crashes a node with SIGKILL.
    pub fn kill(&mut self, node: u64) -> Result<(), Error> {
        tracing::info!(node, "killing node");
        self.take_process(node)?.kill()
    }

    /// Shuts a node down with SIGTERM and waits for it to exit successfully.
    pub async fn terminate(&mut self, node: u64) -> Result<(), Error> {
        tracing::info!(node, "terminating node");
        let status = self.take_process(node)?.terminate(SHUTDOWN_TIMEOUT).await?;
        if status.success() {
            Ok(())
        } else {
            Err(Error::UncleanExit {
                node,
                status: status.to_string(),
            })
        }
    }

    /// Starts a stopped node again, with its data directory and addresses.
    pub async fn restart(&mut self, node: u64) -> Result<(), Error> {
        if self.is_running(node)? {
            return Err(Error::NodeState {
                node,
                problem: "is already running",
            });
        }
        tracing::info!(node, "restarting node");
        self.launch(node).await
    }

    /// The node that leads the keyspace's first region, by the agreement of
    /// a majority of nodes; `None` while there is no such agreement.
    pub async fn leader(&self) -> Option<u64> {
        let mut statuses = Vec::with_capacity(self.nodes.len());
        for node in self.nodes.iter().filter(|node| node.process.is_some()) {
            if let Ok(status) = self.client.status(&node.addresses.client.to_string()).await {
                statuses.push(status);
            }
        }
        leader::agreed_leader(self.nodes.len(), &statuses)
    }

    /// Waits until [`Cluster::leader`] names a node, for at most `timeout`.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<u64, Error> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(leader) = self.leader().await {
                return Ok(leader);
            }
            if Instant::now() >= deadline {
                return Err(Error::NoLeader { waited: timeout });
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Waits until a leader other than `old` is agreed, for at most
    /// `timeout`.
    pub async fn wait_for_new_leader(&self, old: u64, timeout: Duration) -> Result<u64, Error> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.leader().await {
                Some(leader) if leader != old => return Ok(leader),
                _ if Instant::now() >= deadline => return Err(Error::NoLeader { waited: timeout }),
                _ => tokio::time::sleep(POLL_INTERVAL).await,
            }
        }
    }

    /// Waits until `node` has applied everything the leader had committed
    /// when the wait began, for at most `timeout`.
    pub async fn wait_for_catch_up(&self, node: u64, timeout: Duration) -> Result<(), Error> {
        let deadline = Instant::now() + timeout;
        let leader = self.wait_for_leader(timeout).await?;
        let target = self.first_region_indexes(leader).await?.commit_index;
        let endpoint = self.endpoint(node)?;
        loop {
            let applied = self
                .first_region_indexes(node)
                .await
                .map_or(0, |region| region.applied_index);
            if applied >= target {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::NotCaughtUp {
                    node,
                    endpoint,
                    applied,
                    target,
                });
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// The node's own view of the keyspace's first region.
    async fn first_region_indexes(&self, node: u64) -> Result<client::RegionStatus, Error> {
        let status = self.client.status(&self.endpoint(node)?).await?;
        leader::first_region(&status)
            .cloned()
            .ok_or(Error::NodeState {
                node,
                problem: "reports no region holding the start of the keyspace",
            })
    }

    /// The last `lines` lines of every node's log, with headers.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        for node in &self.nodes {
            let header = format!(
                "----- node {} ({}) -----\n",
                node.id,
                node.log_path.display()
            );
            out.push_str(&header);
            out.push_str(&logs::tail(&node.log_path, lines));
            out.push('\n');
        }
        out
    }

    /// Prints [`Cluster::log_tails`] to stderr.
    pub fn dump_logs(&self, lines: usize) {
        eprintln!("{}", self.log_tails(lines));
    }

    async fn launch(&mut self, id: u64) -> Result<(), Error> {
        let node = self.node(id)?;
        let (initial_cluster, extra_args) = match &node.join {
            None => (self.initial_cluster.clone(), self.server_args.clone()),
            Some(join) => {
                let mut args = self.server_args.clone();
                args.extend(["--join".to_string(), join.clone()]);
                (format!("{id}={}", node.addresses.peer), args)
            }
        };
        let process = NodeProcess::launch(Launch {
            binary: &self.environment.server_binary,
            node: id,
            initial_cluster: &initial_cluster,
            client_addr: node.addresses.client.to_string(),
            status_addr: node.addresses.status.to_string(),
            data_dir: &node.data_dir,
            log_path: &node.log_path,
            ready_timeout: READY_TIMEOUT,
            extra_args: &extra_args,
        })
        .await?;
        self.node_mut(id)?.process = Some(process);
        Ok(())
    }

    fn take_process(&mut self, node: u64) -> Result<NodeProcess, Error> {
        self.node_mut(node)?.process.take().ok_or(Error::NodeState {
            node,
            problem: "is not running",
        })
    }

    fn node(&self, id: u64) -> Result<&Node, Error> {
        self.nodes
            .iter()
            .find(|node| node.id == id)
            .ok_or(Error::NodeState {
                node: id,
                problem: "does not exist",
            })
    }

    fn node_mut(&mut self, id: u64) -> Result<&mut Node, Error> {
        self.nodes
            .iter_mut()
            .find(|node| node.id == id)
            .ok_or(Error::NodeState {
                node: id,
                problem: "does not exist",
            })
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Stop the servers first so the logs are complete.
        for node in &mut self.nodes {
            node.process = None;
        }
        if std::thread::panicking() {
            self.dump_logs(FAILURE_LOG_LINES);
            self.scratch.disable_cleanup(true);
            eprintln!(
                "cluster scratch directory kept at {}",
                self.scratch.path().display()
            );
        }
    }
}

/// Client settings for tests: fail over quickly, but outlast an election.
fn client_config(endpoints: Vec<String>) -> ClientConfig {
    ClientConfig {
        request_timeout: Duration::from_secs(1),
        operation_timeout: Duration::from_secs(8),
        connect_timeout: Duration::from_millis(500),
        ..ClientConfig::new(endpoints)
    }
}
