//! `flotilla server`: runs one node until SIGINT/SIGTERM.

use std::path::PathBuf;

use anyhow::{bail, Context as _};
use clap::Args;

use crate::limits::RequestLimits;
use crate::node::{run_node, NodeConfig};
use raftstore::peer::SplitThresholds;

#[derive(Args, Debug)]
pub struct ServerArgs {
    /// This node's id (1-based, unique in the cluster).
    #[arg(long)]
    pub id: u64,
    /// Every member's peer (Raft) address: `1=host:2380,2=host:2381,...`.
    #[arg(long, default_value = "1=127.0.0.1:2380")]
    pub initial_cluster: String,
    /// Address of the client API (`flotilla.kv.Kv`).
    #[arg(long, default_value = "127.0.0.1:20160")]
    pub client_addr: String,
    /// Address of the HTTP status endpoint (`/metrics`, `/status`); none if unset.
    #[arg(long)]
    pub status_addr: Option<String>,
    /// Where this node keeps its WAL, checkpoints and identity.
    #[arg(long, default_value = "./data")]
    pub data_dir: PathBuf,
    /// Shards (glommio executors, one per core).
    #[arg(long, default_value_t = 2)]
    pub shards: usize,
    /// Do not pin shards to cores (for several nodes on one machine).
    #[arg(long)]
    pub no_pin: bool,
    /// Applied entries between a region's checkpoints; the Raft log and WAL
    /// segments a checkpoint covers are then dropped.
    #[arg(long, default_value_t = 50_000)]
    pub checkpoint_every_entries: u64,
    /// A region holding more keys than this splits in two (TiKV's default).
    #[arg(long, default_value_t = 960_000)]
    pub region_split_keys: u64,
    /// A region holding more bytes (keys plus values) than this splits in two.
    #[arg(long, default_value_t = 96 << 20)]
    pub region_split_bytes: u64,
    /// Largest key accepted, in bytes.
    #[arg(long, default_value_t = 8 << 10)]
    pub max_key_bytes: usize,
    /// Largest value accepted, in bytes.
    #[arg(long, default_value_t = 4 << 20)]
    pub max_value_bytes: usize,
}

/// Parses `1=addr,2=addr`.
pub fn parse_initial_cluster(spec: &str) -> anyhow::Result<Vec<(u64, String)>> {
    let mut members = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part
            .split_once('=')
            .with_context(|| format!("{part:?} is not of the form ID=HOST:PORT"))?;
        let id: u64 = id
            .trim()
            .parse()
            .with_context(|| format!("{id:?} is not a node id"))?;
        if id == 0 {
            bail!("node ids start at 1");
        }
        if members.iter().any(|(m, _)| *m == id) {
            bail!("node {id} appears twice in --initial-cluster");
        }
        members.push((id, addr.trim().to_string()));
    }
    if members.is_empty() {
        bail!("--initial-cluster names no members");
    }
    Ok(members)
}

pub fn run(args: ServerArgs) -> anyhow::Result<()> {
    // Test builds only: fault-injection points named in FAILPOINTS.
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();
    let initial_cluster = parse_initial_cluster(&args.initial_cluster)?;
    if args.shards == 0 {
        bail!("--shards must be at least 1");
    }
    let cfg = NodeConfig {
        node_id: args.id,
        initial_cluster,
        client_addr: args.client_addr,
        status_addr: args.status_addr,
        data_dir: args.data_dir,
        shards: args.shards,
        pin_cores: !args.no_pin,
        checkpoint_every_entries: args.checkpoint_every_entries,
        split: SplitThresholds {
            keys: args.region_split_keys.max(1),
            bytes: args.region_split_bytes.max(1),
        },
        limits: RequestLimits {
            key_bytes_max: args.max_key_bytes,
            value_bytes_max: args.max_value_bytes,
            ..Default::default()
        },
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("flotilla-rpc")
        .enable_all()
        .build()?;
    runtime.block_on(run_node(cfg, shutdown_signal()))
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop the node with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initial_cluster_parses_and_rejects_nonsense() {
        let m = parse_initial_cluster("1=127.0.0.1:2380, 2=127.0.0.1:2381").unwrap();
        assert_eq!(
            m,
            vec![
                (1, "127.0.0.1:2380".to_string()),
                (2, "127.0.0.1:2381".to_string())
            ]
        );
        assert!(parse_initial_cluster("").is_err());
        assert!(parse_initial_cluster("x=1").is_err());
        assert!(parse_initial_cluster("0=a:1").is_err());
        assert!(parse_initial_cluster("1=a:1,1=b:2").is_err());
        assert!(parse_initial_cluster("1").is_err());
    }
}
