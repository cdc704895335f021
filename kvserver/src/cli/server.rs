//! `flotilla server`: runs one node until SIGINT/SIGTERM.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::Args;

use crate::limits::RequestLimits;
use crate::node::{run_node, NodeConfig};
use crate::placement_driver::{millis, PlacementDriverConfig};
use placement::schedule::ScheduleConfig;
use raftstore::peer::SplitThresholds;

#[derive(Args, Debug)]
pub struct ServerArgs {
    /// This node's id (1-based, unique in the cluster).
    #[arg(long)]
    pub id: u64,
    /// Every member's peer (Raft) address: `1=host:2380,2=host:2381,...`.
    /// With `--join`, only this node's own entry (its peer address).
    #[arg(long, default_value = "1=127.0.0.1:2380")]
    pub initial_cluster: String,
    /// Join a running cluster instead of bootstrapping one: peer addresses
    /// of some of its members (`host:2380,host:2381`; one that answers is
    /// enough). The node starts with no regions; add it to regions with
    /// `flotilla ctl add-learner` or `move-replica`.
    #[arg(long, value_delimiter = ',')]
    pub join: Vec<String>,
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
    /// Bytes of Raft log a shard's active regions may hold in memory (and
    /// pin in its WAL) before the shard checkpoints the region holding the
    /// most, however few entries it applied since its last checkpoint.
    #[arg(long, default_value_t = 64 << 20)]
    pub shard_log_memory: usize,
    /// Serve every read after a ReadIndex round of its own, never on the
    /// leader's lease (slower; for comparison).
    #[arg(long)]
    pub no_lease_reads: bool,
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
    /// How often this node reports itself to the placement driver
    /// (`500ms`, `10s`, `1m`, ...).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub store_heartbeat_interval: Duration,
    /// How often this node reports the regions it leads (TiKV's default:
    /// with 10,000 regions a report is large, and lookups need only shapes,
    /// which clients also learn from the regions themselves).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub region_heartbeat_interval: Duration,
    /// A store silent this long is down: the placement driver replaces its
    /// replicas elsewhere (TiKV's default).
    #[arg(long, default_value = "30m", value_parser = parse_duration)]
    pub max_store_down_time: Duration,
    /// Voters the placement driver keeps for each region.
    #[arg(long, default_value_t = 3)]
    pub max_replicas: usize,
    /// The placement driver splits a region written faster than this
    /// (bytes per second, as its leader measured over a region heartbeat
    /// interval).
    #[arg(long, default_value_t = 32 << 20)]
    pub hot_region_written_bytes_per_sec: u64,
    /// The placement driver merges a region into a neighbour when it holds
    /// at most this many bytes (keys plus values) and at most
    /// `--max-merge-region-keys` keys (PD's 20 MiB is more than a merge
    /// carries here: at most 4 MiB with the keys' framing).
    #[arg(long, default_value_t = placement::schedule::MAX_MERGE_REGION_BYTES_DEFAULT)]
    pub max_merge_region_size: u64,
    /// See `--max-merge-region-size`.
    #[arg(long, default_value_t = placement::schedule::MAX_MERGE_REGION_KEYS_DEFAULT)]
    pub max_merge_region_keys: u64,
    /// A region that split less than this long ago is neither merged nor
    /// merged into (PD's default); a new placement leader merges nothing
    /// for this long, since it does not know when regions last split.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub split_merge_interval: Duration,
    /// Merges the placement driver keeps in flight at most; 0 turns
    /// merging off (PD's default).
    #[arg(long, default_value_t = 8)]
    pub merge_schedule_limit: usize,
    /// The placement driver moves replicas while the stores with most and
    /// fewest differ by more than this many.
    #[arg(long, default_value_t = ScheduleConfig::default().region_balance_tolerance)]
    pub region_balance_tolerance: u64,
    /// The placement driver answers lookups and serves timestamps but
    /// schedules nothing (no repair, balance, split or merge): replicas and
    /// leaders move only by `flotilla ctl`.
    #[arg(long)]
    pub no_schedule: bool,
}

/// Parses `<number><unit>` with unit `ms`, `s`, `m` or `h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{text:?} has no unit: write 500ms, 10s, 30m or 1h"))?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} does not start with a number"))?;
    let duration = match unit {
        "ms" => Duration::from_millis(number),
        "s" => Duration::from_secs(number),
        "m" => Duration::from_secs(number.saturating_mul(60)),
        "h" => Duration::from_secs(number.saturating_mul(3_600)),
        other => return Err(format!("unknown unit {other:?}: use ms, s, m or h")),
    };
    if duration.is_zero() {
        return Err("a duration must be positive".into());
    }
    Ok(duration)
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

/// A joining node knows only itself: `--initial-cluster` must name this
/// node alone (its peer address), so it cannot also bootstrap a cluster.
fn check_join(
    node_id: u64,
    initial_cluster: &[(u64, String)],
    join: &[String],
) -> anyhow::Result<()> {
    if join.is_empty() {
        return Ok(());
    }
    if initial_cluster.len() != 1 || initial_cluster[0].0 != node_id {
        bail!(
            "with --join, --initial-cluster names only this node: --initial-cluster {node_id}=HOST:PORT (its own peer address)"
        );
    }
    if join.contains(&initial_cluster[0].1) {
        bail!("--join lists this node's own peer address; list the running members' addresses");
    }
    Ok(())
}

pub fn run(args: ServerArgs) -> anyhow::Result<()> {
    // Test builds only: fault-injection points named in FAILPOINTS.
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();
    disable_transparent_huge_pages();
    let initial_cluster = parse_initial_cluster(&args.initial_cluster)?;
    let join: Vec<String> = args
        .join
        .iter()
        .map(|addr| addr.trim().to_string())
        .filter(|addr| !addr.is_empty())
        .collect();
    check_join(args.id, &initial_cluster, &join)?;
    if args.shards == 0 {
        bail!("--shards must be at least 1");
    }
    if args.max_replicas == 0 {
        bail!("--max-replicas must be at least 1");
    }
    let split = SplitThresholds {
        keys: args.region_split_keys.max(1),
        bytes: args.region_split_bytes.max(1),
    };
    let schedule = ScheduleConfig {
        max_replicas: args.max_replicas,
        max_store_down_ms: millis(args.max_store_down_time),
        hot_region_written_bytes_per_sec: args.hot_region_written_bytes_per_sec,
        max_merge_region_bytes: args.max_merge_region_size,
        max_merge_region_keys: args.max_merge_region_keys,
        split_merge_interval_ms: millis(args.split_merge_interval),
        merge_schedule_limit: args.merge_schedule_limit,
        region_balance_tolerance: args.region_balance_tolerance,
        region_split_keys: split.keys,
        region_split_bytes: split.bytes,
        ..ScheduleConfig::default()
    };
    schedule.validate()?;
    let cfg = NodeConfig {
        node_id: args.id,
        initial_cluster,
        join,
        client_addr: args.client_addr,
        status_addr: args.status_addr,
        data_dir: args.data_dir,
        shards: args.shards,
        pin_cores: !args.no_pin,
        checkpoint_every_entries: args.checkpoint_every_entries,
        log_memory_per_shard: args.shard_log_memory,
        lease_reads: !args.no_lease_reads,
        split,
        limits: RequestLimits {
            key_bytes_max: args.max_key_bytes,
            value_bytes_max: args.max_value_bytes,
            ..Default::default()
        },
        placement: PlacementDriverConfig {
            scheduling: !args.no_schedule,
            ..PlacementDriverConfig::new(
                args.store_heartbeat_interval,
                args.region_heartbeat_interval,
                schedule,
            )
        },
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("flotilla-rpc")
        .on_thread_park(crate::allocator::release_freed_memory)
        .enable_all()
        .build()?;
    runtime.block_on(run_node(cfg, shutdown_signal()))
}

/// Turns transparent huge pages off for this process (the kernel's
/// `PR_SET_THP_DISABLE`, which covers every mapping and thread of it).
///
/// The allocator asks for huge pages on its arenas, but a node's heap is
/// mostly small long-lived objects (the state of thousands of regions)
/// mixed with short-lived buffers: a 2 MiB page stays resident for a few
/// live bytes, and the kernel's background collapsing fills partly used
/// ranges back up. With 10,000 idle regions that cost 20 to 45 MiB of
/// resident memory per node (`docs/benchmarks.md`). TiKV's and Redis's
/// deployment guides turn them off for the same reason. Failing to is not
/// fatal: the node only uses more memory.
fn disable_transparent_huge_pages() {
    // SAFETY: PR_SET_THP_DISABLE takes plain integers and reads or writes
    // no memory of this process.
    let rc = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    if rc != 0 {
        tracing::warn!(
            err = %std::io::Error::last_os_error(),
            "could not turn transparent huge pages off; the node may use more memory"
        );
    }
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
    fn transparent_huge_pages_are_off_once_the_server_starts() {
        disable_transparent_huge_pages();
        // SAFETY: PR_GET_THP_DISABLE takes plain integers and returns the flag.
        let flag = unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) };
        assert_eq!(flag, 1);
    }

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

    #[test]
    fn a_joining_node_names_only_itself() {
        let me = vec![(4, "h:2383".to_string())];
        let join = vec!["h:2380".to_string()];
        assert!(check_join(4, &me, &join).is_ok());
        assert!(check_join(4, &me, &[]).is_ok());
        assert!(check_join(5, &me, &join).is_err(), "another node's entry");
        let two = vec![(4, "h:2383".to_string()), (1, "h:2380".to_string())];
        assert!(check_join(4, &two, &join).is_err());
        assert!(check_join(4, &me, &["h:2383".to_string()]).is_err());
    }

    #[test]
    fn durations_need_a_unit_and_a_positive_value() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1_800)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3_600)));
        for bad in ["10", "s", "0s", "1d", "-1s", "1.5s", ""] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
    }
}
