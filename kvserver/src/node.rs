//! A whole node: the store's shards (glommio), the peer transport, the gRPC
//! servers (tokio: the client API and the placement driver's on the client
//! port, the Raft transport on the peer port), the placement driver's loop
//! and this node's heartbeats to it, wired together and torn down in order.
//! A fresh member of `--initial-cluster` bootstraps two regions: user keys
//! and the reserved system keys. A node started with `--join` bootstraps
//! nothing: it greets the running members (see `join`) and receives
//! replicas as regions add it; and no node bootstraps again once its data
//! directory was initialized.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use flotilla_proto::kvpb::kv_server::KvServer;
use flotilla_proto::placementpb::placement_server::PlacementServer;
use flotilla_proto::raftpb::raft_transport_server::RaftTransportServer;
use placement::system_keys::SYSTEM_KEY_PREFIX;
use raftstore::region::RegionMeta;
use raftstore::StoreConfig;
use tonic::transport::server::TcpIncoming;

use crate::limits::RequestLimits;
use crate::members::{MemberAddrs, Members};
use crate::merge_coordinator::{MergeCoordinator, COMMIT_MERGE_MESSAGE_BYTES_MAX};
use crate::peer_transport::{PeerTransport, SelfAddrs, PEER_MESSAGE_BYTES_MAX};
use crate::placement_driver::dispatch::Dispatcher;
use crate::placement_driver::heartbeat::{self, HeartbeatIdentity};
use crate::placement_driver::{PlacementDriver, PlacementDriverConfig};
use crate::service::kv::KvService;
use crate::service::placement::PlacementService;
use crate::service::raft::RaftTransportService;

/// The region holding the user keyspace `["", 0xFF 0xFF)` of a fresh
/// cluster; it splits as it grows.
pub const FIRST_REGION_ID: u64 = 1;
/// The region holding the reserved system keyspace `[0xFF 0xFF, unbounded)`
/// of a fresh cluster: the placement driver's state, in a Raft group of its
/// own so placement traffic never queues behind user load. Its leader is the
/// placement leader. (Regions made by splits get ids of at least 2^32.)
pub const SYSTEM_REGION_ID: u64 = 2;

/// The regions a fresh cluster bootstraps on `store_ids`: user keys and
/// system keys, split at [`SYSTEM_KEY_PREFIX`].
pub fn bootstrap_regions(store_ids: &[u64]) -> Vec<RegionMeta> {
    let user = RegionMeta {
        end_key: SYSTEM_KEY_PREFIX.to_vec(),
        ..RegionMeta::whole_keyspace(FIRST_REGION_ID, store_ids)
    };
    let system = RegionMeta {
        start_key: SYSTEM_KEY_PREFIX.to_vec(),
        ..RegionMeta::whole_keyspace(SYSTEM_REGION_ID, store_ids)
    };
    vec![user, system]
}

pub struct NodeConfig {
    pub node_id: u64,
    /// (node id, peer address) of every member, this node included; only
    /// this node when it joins a running cluster.
    pub initial_cluster: Vec<(u64, String)>,
    /// Peer addresses of running members to join; empty for a member of
    /// the initial cluster.
    pub join: Vec<String>,
    pub client_addr: String,
    /// Where the HTTP status endpoint (`/metrics`, `/status`) listens, if anywhere.
    pub status_addr: Option<String>,
    pub data_dir: PathBuf,
    pub shards: usize,
    pub pin_cores: bool,
    pub checkpoint_every_entries: u64,
    /// Log memory a shard's active regions may hold (`StoreConfig::log_memory_per_shard`).
    pub log_memory_per_shard: usize,
    /// Reads may be served on the leader's lease (`raftstore::lease`).
    pub lease_reads: bool,
    pub split: raftstore::peer::SplitThresholds,
    pub limits: RequestLimits,
    pub placement: PlacementDriverConfig,
}

/// Runs the node until `shutdown` resolves, then stops it cleanly.
pub async fn run_node(
    cfg: NodeConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let peer_addr = cfg
        .initial_cluster
        .iter()
        .find(|(id, _)| *id == cfg.node_id)
        .map(|(_, a)| a.clone())
        .with_context(|| {
            format!(
                "--initial-cluster has no entry for this node's id {}",
                cfg.node_id
            )
        })?;
    let _lock = crate::cli::data_dir::claim(&cfg.data_dir, cfg.node_id)?;
    // The WAL opens directories through io_uring, which wants absolute paths.
    let data_dir = std::path::absolute(&cfg.data_dir)
        .with_context(|| format!("resolving data dir {}", cfg.data_dir.display()))?;

    let joining = !cfg.join.is_empty();
    let initial_regions = if joining || crate::cli::data_dir::is_initialized(&data_dir) {
        Vec::new()
    } else {
        let store_ids: Vec<u64> = cfg.initial_cluster.iter().map(|(id, _)| *id).collect();
        bootstrap_regions(&store_ids)
    };
    let mut store_cfg = StoreConfig::new(cfg.node_id, data_dir.clone(), initial_regions);
    store_cfg.shards = cfg.shards;
    store_cfg.pin_cores = cfg.pin_cores;
    store_cfg.checkpoint_every_entries = cfg.checkpoint_every_entries.max(1);
    store_cfg.log_memory_per_shard = cfg.log_memory_per_shard;
    store_cfg.split = cfg.split;
    store_cfg.lease_reads = cfg.lease_reads;
    store_cfg.on_idle = Some(crate::allocator::release_freed_memory);

    let configured = cfg.initial_cluster.iter().map(|(id, addr)| {
        let client_addr = if *id == cfg.node_id {
            cfg.client_addr.clone()
        } else {
            String::new()
        };
        (
            *id,
            MemberAddrs {
                peer_addr: addr.clone(),
                client_addr,
            },
        )
    });
    let members = Members::with_address_book(configured, &data_dir.join("meta").join("members"))?;
    let me = SelfAddrs {
        node_id: cfg.node_id,
        client_addr: cfg.client_addr.clone(),
        peer_addr: peer_addr.clone(),
    };
    let transport = Arc::new(PeerTransport::start(me.clone(), members.clone()));
    let (router, store, shards) =
        tokio::task::spawn_blocking(move || raftstore::start_store(store_cfg, transport))
            .await
            .context("store start-up task")?
            .context("starting the store")?;
    crate::cli::data_dir::mark_initialized(&data_dir)?;

    let client_listener = bind(&cfg.client_addr).await?;
    let peer_listener = bind(&peer_addr).await?;
    let status_listener = match &cfg.status_addr {
        Some(addr) => Some(bind(addr).await?),
        None => None,
    };
    let dispatcher = Dispatcher::new(cfg.placement.store_heartbeat_interval.min(DISPATCH_TIMEOUT));
    let driver = Arc::new(PlacementDriver::new(
        router.clone(),
        members.clone(),
        cfg.placement.clone(),
        dispatcher,
    ));
    let placement = PlacementServer::new(PlacementService::start(
        cfg.node_id,
        router.clone(),
        members.clone(),
        driver.clone(),
    ));
    let merges = Arc::new(MergeCoordinator::new(router.clone(), members.clone()));
    let resume_merges = tokio::spawn(merges.clone().resume_frozen());
    let kv = KvService {
        node_id: cfg.node_id,
        client_addr: cfg.client_addr.clone(),
        router: router.clone(),
        store,
        members: members.clone(),
        limits: cfg.limits,
        merges,
    };
    let message_max = (cfg.limits.value_bytes_max + cfg.limits.key_bytes_max + (64 << 10))
        .max(COMMIT_MERGE_MESSAGE_BYTES_MAX);
    let kv = KvServer::new(kv)
        .max_decoding_message_size(message_max)
        .max_encoding_message_size(64 << 20);
    let raft = RaftTransportServer::new(RaftTransportService {
        node_id: cfg.node_id,
        router: router.clone(),
        members: members.clone(),
    })
    .max_decoding_message_size(PEER_MESSAGE_BYTES_MAX);

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let client_server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(kv)
            .add_service(placement)
            .serve_with_incoming_shutdown(incoming(client_listener), stopped(stop_rx.clone())),
    );
    let peer_server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(raft)
            .serve_with_incoming_shutdown(incoming(peer_listener), stopped(stop_rx.clone())),
    );
    let driver_loop = tokio::spawn(driver.clone().run());
    let heartbeats = tokio::spawn(heartbeat::run(
        HeartbeatIdentity {
            store_id: cfg.node_id,
            peer_addr: peer_addr.clone(),
            client_addr: cfg.client_addr.clone(),
            data_dir: data_dir.clone(),
        },
        router.clone(),
        members.clone(),
        cfg.placement.store_heartbeat_interval,
        cfg.placement.region_heartbeat_interval,
    ));
    let status_server = status_listener.map(|listener| {
        tokio::spawn(crate::status_server::serve(
            listener,
            cfg.node_id,
            router.clone(),
            driver.clone(),
            stopped(stop_rx),
        ))
    });
    let announcing =
        joining.then(|| tokio::spawn(crate::join::announce(me, cfg.join.clone(), members.clone())));
    let status_note = cfg
        .status_addr
        .as_deref()
        .map(|a| format!(" status={a}"))
        .unwrap_or_default();
    println!(
        "flotilla server ready node={} client={} peer={}{status_note}",
        cfg.node_id, cfg.client_addr, peer_addr
    );
    tracing::info!(node = cfg.node_id, client = %cfg.client_addr, peer = %peer_addr, data_dir = %cfg.data_dir.display(), "serving");

    let failure = tokio::select! {
        () = shutdown => None,
        err = shards.failure() => Some(err),
    };
    match &failure {
        None => tracing::info!("shutting down"),
        Some(err) => tracing::error!(%err, "a shard failed; stopping the node"),
    }
    let _ = stop_tx.send(true);
    if let Some(task) = announcing {
        task.abort();
    }
    // Both may be waiting on a shard that is gone (a failed WAL): cut them
    // off rather than wait. They keep nothing that needs a clean stop.
    for (name, task) in [
        ("placement driver", driver_loop),
        ("heartbeat", heartbeats),
        ("merge resume", resume_merges),
    ] {
        task.abort();
        match task.await {
            Err(err) if !err.is_cancelled() => tracing::warn!(%err, "{name} task failed"),
            _ => {}
        }
    }
    router.shutdown();
    tokio::task::spawn_blocking(move || shards.join())
        .await
        .context("joining shards")?;
    // Peers keep their streams into this node open, so a graceful drain
    // would wait for them forever: give connections a moment, then cut them.
    for (name, server) in [("client", client_server), ("peer", peer_server)] {
        let abort = server.abort_handle();
        match tokio::time::timeout(SHUTDOWN_DRAIN, server).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(err))) => tracing::warn!(%err, "{name} server stopped with an error"),
            Ok(Err(err)) => tracing::warn!(%err, "{name} server task failed"),
            Err(_) => abort.abort(),
        }
    }
    if let Some(server) = status_server {
        match server.await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::warn!(%err, "status server stopped with an error"),
            Err(err) => tracing::warn!(%err, "status server task failed"),
        }
    }
    tracing::info!("stopped");
    match failure {
        None => Ok(()),
        // Nothing this node acknowledged is lost: a failed sync is never
        // acknowledged, and every earlier one is durable. Its peers carry on.
        Some(err) => Err(anyhow::anyhow!(
            "stopped because a shard could no longer write its WAL ({err}); fix the disk (space, errors) and restart the node: it recovers from its WAL and checkpoints"
        )),
    }
}

/// The longest an operator sent to a region's leader (a split, a leader
/// transfer, a membership change) may take to answer.
const DISPATCH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// How long open connections may drain at shutdown before they are cut.
const SHUTDOWN_DRAIN: std::time::Duration = std::time::Duration::from_millis(500);

/// Accepted connections get TCP_NODELAY: small gRPC frames must not wait
/// for the peer's delayed ACK (a 40 ms stall per request otherwise).
fn incoming(listener: tokio::net::TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener).with_nodelay(Some(true))
}

async fn bind(addr: &str) -> anyhow::Result<tokio::net::TcpListener> {
    let sock: SocketAddr = addr
        .parse()
        .with_context(|| format!("{addr:?} is not an IP:port address"))?;
    tokio::net::TcpListener::bind(sock)
        .await
        .with_context(|| format!("cannot listen on {addr}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use placement::system_keys::{is_system_key, TSO_WINDOW_KEY};

    #[test]
    fn a_fresh_cluster_tiles_the_keyspace_with_a_user_and_a_system_region() {
        let [user, system] = &bootstrap_regions(&[1, 2, 3])[..] else {
            panic!("two regions");
        };
        assert_eq!((user.id, system.id), (FIRST_REGION_ID, SYSTEM_REGION_ID));
        assert!(user.start_key.is_empty() && system.end_key.is_empty());
        assert_eq!(user.end_key, system.start_key);
        assert!(system.contains_key(TSO_WINDOW_KEY));
        assert!(!user.contains_key(TSO_WINDOW_KEY));
        assert!(user.contains_key(b"\xFF\xFE\xFF"));
        // The boundary is exactly where system keys begin.
        assert!(is_system_key(&system.start_key));
        for region in [user, system] {
            let stores: Vec<u64> = region.peers.iter().map(|p| p.store_id).collect();
            assert_eq!(stores, [1, 2, 3]);
        }
    }
}
