//! Nodes as Docker containers on a private network made for the run.
//!
//! [`DockerBackend::start`] removes what killed earlier runs left behind
//! (by label), makes sure the node image matches the server binary, creates
//! the network and starts one container per node with a fixed address, the
//! node's data directory bind-mounted from the run directory (a real
//! filesystem, as the WAL's O_DIRECT needs) and the privileges glommio needs
//! (`seccomp=unconfined` for io_uring, the memlock limit raised).
//!
//! Faults: `docker kill -s KILL` then `docker start` (same container, same
//! data, same address); `docker pause`/`unpause` (cgroup freezer: every
//! thread stops at once); partitions as iptables DROP rules in each
//! container's network namespace, healed by flushing them.
//!
//! Guarantee: the containers and the network are removed when the backend is
//! dropped — a normal end, an error or a panic — and a run killed before
//! that is cleaned up by the next one.

mod command;
mod firewall;
mod image;
mod network;
mod stale;

use super::{ClusterBackend, Grudge, NodeId};
use crate::nemesis::FaultKind;
use crate::Error;
use client::Client;
use command::{args, docker, log_tail};
use flotilla_tests::cluster::{CLIENT_PORT, PEER_PORT};
use network::Network;
use stale::{OWNER_LABEL, RUN_LABEL};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::time::Instant;

/// The image tag used unless one is given.
pub const DEFAULT_IMAGE: &str = "flotilla:dev";
/// How long a started node may take to answer a Status request.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Lines of a node's output quoted when it does not become ready.
const LOG_TAIL_LINES: u32 = 20;
/// Pause between readiness probes.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// The data directory inside a container.
const DATA_MOUNT: &str = "/data";

/// What a Docker cluster is made of.
#[derive(Clone, Debug)]
pub struct DockerConfig {
    /// The server binary the image must contain.
    pub server_binary: PathBuf,
    /// The image tag to build or reuse.
    pub image: String,
    /// Unique per run: names the network and containers.
    pub run_id: String,
    /// Where the nodes' data directories live on the host.
    pub data_root: PathBuf,
    pub nodes: usize,
    /// Passed to every server after the backend's own arguments.
    pub server_args: Vec<String>,
}

#[derive(Debug)]
struct Node {
    id: NodeId,
    container: String,
    ip: Ipv4Addr,
}

/// A running Docker cluster; dropping it removes it.
#[derive(Debug)]
pub struct DockerBackend {
    nodes: Vec<Node>,
    status_client: Client,
    // Declared last: removed after everything else is dropped.
    _resources: Resources,
}

impl DockerBackend {
    pub async fn start(config: DockerConfig) -> Result<DockerBackend, Error> {
        if !(1..=9).contains(&config.nodes) {
            return Err(Error::Config("the Docker backend runs 1 to 9 nodes".into()));
        }
        stale::clean_up().await?;
        image::ensure(&config.server_binary, &config.image).await?;
        let owner = stale::this_owner();
        let name = format!("flotilla-jepsen-{}", config.run_id);
        let network = Network::create(&name, &config.run_id, &owner).await?;
        let mut resources = Resources {
            containers: Vec::new(),
            network: Some(network.name.clone()),
        };
        let nodes: Vec<Node> = (1..=config.nodes as NodeId)
            .map(|id| Node {
                id,
                container: format!("{name}-n{id}"),
                ip: network.node_ip(id),
            })
            .collect();
        let initial_cluster = nodes
            .iter()
            .map(|node| format!("{}={}:{PEER_PORT}", node.id, node.ip))
            .collect::<Vec<_>>()
            .join(",");
        let memlock = memlock_limit();
        for node in &nodes {
            let data_dir = config.data_root.join(format!("node-{}", node.id));
            std::fs::create_dir_all(&data_dir)
                .map_err(Error::io(format!("creating {}", data_dir.display())))?;
            let data_dir = std::path::absolute(&data_dir)
                .map_err(Error::io(format!("resolving {}", data_dir.display())))?;
            let mut run = args(&["run", "--detach", "--name", &node.container]);
            run.extend(args(&[
                "--hostname",
                &format!("n{}", node.id),
                "--network",
                &network.name,
                "--ip",
                &node.ip.to_string(),
                "--security-opt",
                "seccomp=unconfined",
                "--ulimit",
                &format!("memlock={memlock}:{memlock}"),
                "--label",
                &format!("{RUN_LABEL}={}", config.run_id),
                "--label",
                &format!("{OWNER_LABEL}={owner}"),
                "--volume",
                &format!("{}:{DATA_MOUNT}", data_dir.display()),
                "--env",
                "NO_COLOR=1",
                "--env",
                "RUST_BACKTRACE=1",
                &config.image,
                "server",
                "--id",
                &node.id.to_string(),
                "--initial-cluster",
                &initial_cluster,
                "--client-addr",
                &format!("{}:{CLIENT_PORT}", node.ip),
                "--data-dir",
                DATA_MOUNT,
                // Nodes share this machine's cores: unpinned shards.
                "--no-pin",
            ]));
            run.extend(config.server_args.iter().cloned());
            // Registered before it starts: a failed start is cleaned up too.
            resources.containers.push(node.container.clone());
            docker(&run).await?;
        }
        let endpoints: Vec<String> = nodes.iter().map(|node| endpoint(node.ip)).collect();
        let status_client = Client::connect(super::client_config(endpoints)).await?;
        let backend = DockerBackend {
            nodes,
            status_client,
            _resources: resources,
        };
        for node in backend.node_ids() {
            backend.wait_until_ready(node).await?;
        }
        tracing::info!(network = %name, nodes = config.nodes, "docker cluster started");
        Ok(backend)
    }

    fn node(&self, id: NodeId) -> Result<&Node, Error> {
        self.nodes
            .iter()
            .find(|node| node.id == id)
            .ok_or(Error::NodeState {
                node: id,
                problem: "does not exist",
            })
    }

    /// The host pid of the node's server (its network namespace's handle).
    async fn pid(&self, id: NodeId) -> Result<u32, Error> {
        let node = self.node(id)?;
        let pid = docker(&args(&[
            "inspect",
            "--format",
            "{{.State.Pid}}",
            &node.container,
        ]))
        .await?;
        match pid.parse::<u32>() {
            Ok(pid) if pid > 0 => Ok(pid),
            _ => Err(Error::NodeState {
                node: id,
                problem: "has no running process",
            }),
        }
    }

    /// Waits until the node answers a Status request; fails early, with
    /// the log tail, if its container stops.
    async fn wait_until_ready(&self, id: NodeId) -> Result<(), Error> {
        let node = self.node(id)?;
        let started = Instant::now();
        let deadline = started + READY_TIMEOUT;
        loop {
            if self.status_client.status(&endpoint(node.ip)).await.is_ok() {
                return Ok(());
            }
            let running = docker(&args(&[
                "inspect",
                "--format",
                "{{.State.Running}}",
                &node.container,
            ]))
            .await?;
            if running != "true" || Instant::now() >= deadline {
                let tail = log_tail(&node.container, LOG_TAIL_LINES).await;
                return Err(Error::NodeNotReady {
                    node: id,
                    // To the millisecond: the container may have stopped
                    // long before the deadline.
                    waited: Duration::from_millis(
                        u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                    ),
                    detail: format!("container running: {running}; log tail:\n{tail}"),
                });
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    async fn container_command(&self, verb: &[&str], id: NodeId) -> Result<(), Error> {
        let mut command = args(verb);
        command.push(self.node(id)?.container.clone());
        docker(&command).await.map(drop)
    }
}

impl ClusterBackend for DockerBackend {
    const NAME: &'static str = "docker";

    fn unsupported(_fault: FaultKind) -> Option<&'static str> {
        None
    }

    fn node_ids(&self) -> Vec<NodeId> {
        self.nodes.iter().map(|node| node.id).collect()
    }

    fn endpoints(&self) -> Vec<String> {
        self.nodes.iter().map(|node| endpoint(node.ip)).collect()
    }

    async fn kill(&mut self, node: NodeId) -> Result<(), Error> {
        self.container_command(&["kill", "--signal", "KILL"], node)
            .await?;
        // Returns once the container has stopped.
        self.container_command(&["wait"], node).await
    }

    async fn restart(&mut self, node: NodeId) -> Result<(), Error> {
        self.container_command(&["start"], node).await?;
        self.wait_until_ready(node).await
    }

    async fn pause(&mut self, node: NodeId) -> Result<(), Error> {
        self.container_command(&["pause"], node).await
    }

    async fn resume(&mut self, node: NodeId) -> Result<(), Error> {
        self.container_command(&["unpause"], node).await
    }

    async fn partition(&mut self, grudge: &Grudge) -> Result<(), Error> {
        for (&node, peers) in grudge {
            let sources: Vec<Ipv4Addr> = peers
                .iter()
                .map(|&peer| self.node(peer).map(|peer| peer.ip))
                .collect::<Result<_, _>>()?;
            firewall::drop_from(self.pid(node).await?, &sources).await?;
        }
        Ok(())
    }

    async fn heal_partition(&mut self) -> Result<(), Error> {
        for node in self.node_ids() {
            firewall::flush(self.pid(node).await?).await?;
        }
        Ok(())
    }

    async fn save_logs(&self, dir: &Path) -> Result<(), Error> {
        for node in &self.nodes {
            let path = dir.join(format!("node-{}.log", node.id));
            let file = std::fs::File::create(&path)
                .map_err(Error::io(format!("creating {}", path.display())))?;
            let stderr = file
                .try_clone()
                .map_err(Error::io(format!("cloning {}", path.display())))?;
            let status = tokio::process::Command::new("docker")
                .args(["logs", &node.container])
                .stdout(file)
                .stderr(stderr)
                .status()
                .await
                .map_err(Error::io("running docker logs"))?;
            if !status.success() {
                tracing::warn!(node = node.id, %status, "docker logs failed");
            }
        }
        Ok(())
    }
}

/// The containers and network of a run, removed on drop.
#[derive(Debug)]
struct Resources {
    containers: Vec<String>,
    network: Option<String>,
}

impl Drop for Resources {
    fn drop(&mut self) {
        if !self.containers.is_empty() {
            let mut rm = args(&["rm", "--force", "--volumes"]);
            rm.append(&mut self.containers);
            if let Err(err) = command::run_blocking("docker", &rm) {
                eprintln!("removing the run's containers: {err}");
            }
        }
        if let Some(network) = self.network.take() {
            if let Err(err) = command::run_blocking("docker", &args(&["network", "rm", &network])) {
                eprintln!("removing the run's network: {err}");
            }
        }
    }
}

fn endpoint(ip: Ipv4Addr) -> String {
    format!("{ip}:{CLIENT_PORT}")
}

/// The memlock limit to give containers: this process's own hard limit
/// (`-1` when unlimited). Docker cannot raise a container's limit above the
/// daemon's, so asking for "unlimited" fails where the daemon is limited.
fn memlock_limit() -> String {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct we pass.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) } == 0;
    if !ok || limit.rlim_max == libc::RLIM_INFINITY {
        "-1".to_owned()
    } else {
        limit.rlim_max.to_string()
    }
}
