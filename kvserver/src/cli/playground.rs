//! `flotilla playground`: a local cluster on loopback for trying Flotilla out.
//! Runs every node as a child process of this executable (`flotilla server`),
//! waits until each node reports a leader for region 1, prints the endpoints
//! and one line starting with `playground ready`, then supervises: on
//! Ctrl-C or SIGTERM it stops every node (SIGTERM, SIGKILL after a grace
//! period) and exits 0; if a node exits on its own it reports the node and its
//! exit status, stops the others and fails.
//!
//! Node N (1-based) gets client port `--client-port + N - 1`, peer port
//! `--peer-port + N - 1`, and the directory `DATA_DIR/node-N`, which also holds
//! its `server.log` (the child's stdout and stderr).

use anyhow::{bail, Context};
use clap::Args;
use client::{Client, ClientConfig, StatusResponse};
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::time::Instant;

/// How long the cluster gets to elect a leader for region 1.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause between readiness polls.
const READY_POLL_INTERVAL: Duration = Duration::from_millis(200);
/// Time budget of one node's answer to a readiness poll.
const STATUS_TIMEOUT: Duration = Duration::from_secs(1);
/// How long stopping nodes get after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// The region every fresh cluster starts with.
const FIRST_REGION_ID: u64 = 1;

/// Arguments of `flotilla playground`.
#[derive(Args, Debug)]
pub struct PlaygroundArgs {
    /// Number of nodes.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=7))]
    pub nodes: u8,
    /// Directory holding one `node-N` data directory per node.
    #[arg(long, default_value = "playground-data")]
    pub data_dir: PathBuf,
    /// Delete the nodes' data directories (DATA_DIR/node-*) before starting.
    #[arg(long)]
    pub clean: bool,
    /// Client (gRPC) port of node 1; node N uses this plus N - 1.
    #[arg(long, default_value_t = 20160)]
    pub client_port: u16,
    /// Peer (Raft) port of node 1; node N uses this plus N - 1.
    #[arg(long, default_value_t = 2380)]
    pub peer_port: u16,
    /// HTTP status port (`/metrics`, `/status`) of node 1; node N uses this plus N - 1.
    #[arg(long, default_value_t = 20180)]
    pub status_port: u16,
    /// Shards (cores) per node. Default: this machine's cores shared out
    /// among the nodes, at least one each — more shard threads than cores
    /// only adds context switches.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub shards: Option<u16>,
    /// Passed to every `flotilla server`, after `--`: e.g.
    /// `playground -- --region-split-keys 10000`, or the placement
    /// driver's schedule flags (`--max-store-down-time 5m`,
    /// `--split-merge-interval 1m`, `--merge-schedule-limit 0`,
    /// `--no-schedule`, ...).
    #[arg(last = true)]
    pub server_args: Vec<String>,
}

/// Where one node listens and keeps its data.
#[derive(Debug)]
struct NodeSpec {
    id: u64,
    client_addr: String,
    peer_addr: String,
    status_addr: String,
    dir: PathBuf,
}

impl NodeSpec {
    fn log_path(&self) -> PathBuf {
        self.dir.join("server.log")
    }
}

/// A running node.
struct NodeProcess {
    spec: NodeSpec,
    child: Child,
}

/// Starts the playground and supervises it until a signal or a node failure.
pub async fn run(args: PlaygroundArgs) -> anyhow::Result<()> {
    let specs = node_specs(&args)?;
    if args.clean {
        wipe_node_dirs(&args.data_dir)?;
    }
    // Listen before spawning, so a signal during startup still stops the nodes.
    let mut signals = ShutdownSignals::new()?;
    let exe = std::env::current_exe().context("locating the flotilla executable")?;
    let initial_cluster = specs
        .iter()
        .map(|spec| format!("{}={}", spec.id, spec.peer_addr))
        .collect::<Vec<_>>()
        .join(",");
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let shards = shards_per_node(args.shards, args.nodes, cores);
    tracing::info!(shards, cores, "shards per node");
    let mut nodes = Vec::with_capacity(specs.len());
    let spawned = specs.into_iter().try_for_each(|spec| {
        nodes.push(spawn_node(
            &exe,
            spec,
            &initial_cluster,
            shards,
            &args.server_args,
        )?);
        Ok(())
    });
    let outcome = match spawned {
        Ok(()) => supervise(&mut nodes, &mut signals).await,
        Err(err) => Err(err),
    };
    // Also after a failed spawn: the nodes already started must not linger.
    stop_all(&mut nodes).await;
    outcome
}

fn node_specs(args: &PlaygroundArgs) -> anyhow::Result<Vec<NodeSpec>> {
    (0..args.nodes)
        .map(|offset| {
            let id = u64::from(offset) + 1;
            let port = |base: u16| {
                base.checked_add(u16::from(offset))
                    .with_context(|| format!("port {base} + {offset} overflows"))
            };
            Ok(NodeSpec {
                id,
                client_addr: format!("127.0.0.1:{}", port(args.client_port)?),
                peer_addr: format!("127.0.0.1:{}", port(args.peer_port)?),
                status_addr: format!("127.0.0.1:{}", port(args.status_port)?),
                dir: args.data_dir.join(format!("node-{id}")),
            })
        })
        .collect()
}

/// Shards per node: `requested`, or the machine's cores shared out among
/// `nodes` nodes, at least one each.
fn shards_per_node(requested: Option<u16>, nodes: u8, cores: usize) -> u16 {
    requested.unwrap_or_else(|| {
        let share = cores / usize::from(nodes.max(1));
        u16::try_from(share.max(1)).unwrap_or(u16::MAX)
    })
}

/// Removes every `node-*` directory under `data_dir`, and nothing else.
fn wipe_node_dirs(data_dir: &Path) -> anyhow::Result<()> {
    let entries = match std::fs::read_dir(data_dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(err).with_context(|| format!("reading {}", data_dir.display())),
    };
    for entry in entries {
        let entry = entry.with_context(|| format!("reading {}", data_dir.display()))?;
        let is_node_dir =
            entry.file_name().to_string_lossy().starts_with("node-") && entry.file_type()?.is_dir();
        if is_node_dir {
            std::fs::remove_dir_all(entry.path())
                .with_context(|| format!("removing {}", entry.path().display()))?;
        }
    }
    Ok(())
}

fn spawn_node(
    exe: &Path,
    spec: NodeSpec,
    initial_cluster: &str,
    shards: u16,
    server_args: &[String],
) -> anyhow::Result<NodeProcess> {
    std::fs::create_dir_all(&spec.dir)
        .with_context(|| format!("creating {}", spec.dir.display()))?;
    let log_path = spec.log_path();
    let log: File = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    let mut command = Command::new(exe);
    command
        .arg("server")
        .arg("--id")
        .arg(spec.id.to_string())
        .arg("--initial-cluster")
        .arg(initial_cluster)
        .arg("--client-addr")
        .arg(&spec.client_addr)
        .arg("--status-addr")
        .arg(&spec.status_addr)
        .arg("--data-dir")
        .arg(&spec.dir)
        // Several nodes share this machine's cores.
        .arg("--no-pin")
        .arg("--shards")
        .arg(shards.to_string())
        .args(server_args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log))
        // Its own process group: a terminal's Ctrl-C reaches only the
        // playground, which then stops the nodes in order.
        .process_group(0)
        // Last resort if the playground unwinds without stopping the node.
        .kill_on_drop(true);
    stop_with_parent(&mut command);
    let child = command
        .spawn()
        .with_context(|| format!("starting node {} ({})", spec.id, exe.display()))?;
    tracing::info!(node = spec.id, pid = child.id().unwrap_or_default(), log = %log_path.display(), "node started");
    Ok(NodeProcess { spec, child })
}

/// Makes the kernel send SIGTERM to the child if the playground dies without
/// stopping it (for example on SIGKILL), so no node outlives it.
fn stop_with_parent(command: &mut Command) {
    let parent = std::process::id();
    // SAFETY: the closure runs in the forked child before exec and only makes
    // async-signal-safe calls (prctl, getppid); it allocates nothing.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before prctl took effect.
            if libc::getppid() as u32 != parent {
                return Err(std::io::Error::from(std::io::ErrorKind::BrokenPipe));
            }
            Ok(())
        });
    }
}

/// Waits for readiness, prints it, then waits for a signal (Ok) or a node
/// exit (Err).
async fn supervise(nodes: &mut [NodeProcess], signals: &mut ShutdownSignals) -> anyhow::Result<()> {
    let endpoints: Vec<String> = nodes
        .iter()
        .map(|node| node.spec.client_addr.clone())
        .collect();
    let client = Client::connect(ClientConfig {
        request_timeout: STATUS_TIMEOUT,
        ..ClientConfig::new(endpoints.clone())
    })
    .await?;
    tokio::select! {
        leader = wait_until_ready(&client) => print_ready(nodes, &endpoints, leader?),
        exited = first_exit(nodes) => return Err(exited),
        name = signals.recv() => {
            tracing::info!(signal = name, "stopping the playground before it became ready");
            return Ok(());
        }
    }
    tokio::select! {
        exited = first_exit(nodes) => Err(exited),
        name = signals.recv() => {
            tracing::info!(signal = name, "stopping the playground");
            Ok(())
        }
    }
}

/// Polls every node until each reports a leader for the first region;
/// returns that leader's id.
async fn wait_until_ready(client: &Client) -> anyhow::Result<u64> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let statuses = client.cluster_status().await;
        let waiting_for = match first_unready(&statuses) {
            None => return Ok(leader_of_first_region(&statuses).unwrap_or_default()),
            Some(reason) => reason,
        };
        if Instant::now() + READY_POLL_INTERVAL > deadline {
            bail!("cluster not ready after {READY_TIMEOUT:?}: {waiting_for}");
        }
        tokio::time::sleep(READY_POLL_INTERVAL).await;
    }
}

/// Why the cluster is not ready yet, or `None` once every node knows a
/// leader for the first region.
fn first_unready(statuses: &[(String, client::Result<StatusResponse>)]) -> Option<String> {
    statuses.iter().find_map(|(endpoint, status)| match status {
        Err(err) => Some(format!("{endpoint}: {err}")),
        Ok(status) if first_region_leader(status).is_none() => Some(format!(
            "node {} knows no leader of region {FIRST_REGION_ID}",
            status.node_id
        )),
        Ok(_) => None,
    })
}

fn leader_of_first_region(statuses: &[(String, client::Result<StatusResponse>)]) -> Option<u64> {
    statuses
        .iter()
        .find_map(|(_, status)| status.as_ref().ok().and_then(first_region_leader))
}

fn first_region_leader(status: &StatusResponse) -> Option<u64> {
    status
        .regions
        .iter()
        .find(|region| {
            region
                .region
                .as_ref()
                .is_some_and(|r| r.id == FIRST_REGION_ID)
        })
        .map(|region| region.leader_id)
        .filter(|&leader| leader != 0)
}

fn print_ready(nodes: &[NodeProcess], endpoints: &[String], leader: u64) {
    println!("playground: {} node(s)", nodes.len());
    for node in nodes {
        println!(
            "  node {}  client {}  peer {}  status http://{}  log {}",
            node.spec.id,
            node.spec.client_addr,
            node.spec.peer_addr,
            node.spec.status_addr,
            node.spec.log_path().display()
        );
    }
    let reaches_default = endpoints.first() == ClientConfig::default().endpoints.first();
    let endpoints = endpoints.join(",");
    println!("endpoints: {endpoints}");
    if reaches_default {
        println!("try: flotilla ctl put hello world");
    } else {
        println!("try: flotilla ctl --endpoints {endpoints} put hello world");
    }
    println!("press Ctrl-C to stop");
    println!(
        "playground ready: {} node(s), region {FIRST_REGION_ID} led by node {leader}",
        nodes.len()
    );
}

/// Resolves when the first node exits, describing which and how.
async fn first_exit(nodes: &mut [NodeProcess]) -> anyhow::Error {
    assert!(!nodes.is_empty(), "the playground runs at least one node");
    let waits = nodes
        .iter_mut()
        .map(|node| Box::pin(async move { (&node.spec, node.child.wait().await) }));
    let ((spec, status), _, _) = futures::future::select_all(waits).await;
    let how = match status {
        Ok(status) => status.to_string(),
        Err(err) => format!("wait failed: {err}"),
    };
    anyhow::anyhow!(
        "node {} exited unexpectedly ({how}); see {}",
        spec.id,
        spec.log_path().display()
    )
}

/// SIGTERM to every running node, then waits; SIGKILL to any still running
/// after the grace period.
async fn stop_all(nodes: &mut [NodeProcess]) {
    for node in nodes.iter() {
        // `id` is None once the child has been reaped, so a reused pid is never signalled.
        if let Some(pid) = node.child.id() {
            // SAFETY: kill has no memory-safety preconditions; pid is our unreaped child.
            if unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) } != 0 {
                tracing::warn!(node = node.spec.id, err = %std::io::Error::last_os_error(), "SIGTERM failed");
            }
        }
    }
    let deadline = Instant::now() + STOP_GRACE;
    for node in nodes.iter_mut() {
        let status = match tokio::time::timeout_at(deadline, node.child.wait()).await {
            Ok(status) => status,
            Err(_elapsed) => {
                tracing::warn!(
                    node = node.spec.id,
                    "node ignored SIGTERM for {STOP_GRACE:?}; killing it"
                );
                if let Err(err) = node.child.start_kill() {
                    tracing::warn!(node = node.spec.id, %err, "SIGKILL failed");
                }
                node.child.wait().await
            }
        };
        match status {
            Ok(status) => tracing::info!(node = node.spec.id, %status, "node stopped"),
            Err(err) => tracing::warn!(node = node.spec.id, %err, "waiting for node failed"),
        }
    }
}

/// Ctrl-C (SIGINT) and SIGTERM.
struct ShutdownSignals {
    interrupt: Signal,
    terminate: Signal,
}

impl ShutdownSignals {
    fn new() -> anyhow::Result<Self> {
        Ok(Self {
            interrupt: signal(SignalKind::interrupt()).context("listening for SIGINT")?,
            terminate: signal(SignalKind::terminate()).context("listening for SIGTERM")?,
        })
    }

    /// Resolves with the signal's name when one arrives.
    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.interrupt.recv() => "SIGINT",
            _ = self.terminate.recv() => "SIGTERM",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::shards_per_node;

    #[test]
    fn nodes_share_the_cores_unless_told_otherwise() {
        assert_eq!(shards_per_node(None, 3, 2), 1);
        assert_eq!(shards_per_node(None, 3, 16), 5);
        assert_eq!(shards_per_node(None, 1, 8), 8);
        assert_eq!(shards_per_node(Some(4), 3, 2), 4);
    }
}
