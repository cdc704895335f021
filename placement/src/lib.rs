//! `placement`: the placement driver — region metadata service, store and
//! region heartbeats, schedulers and the timestamp oracle.
//!
//! Built so far: [`tso`], the timestamp oracle's allocator (pure: time in,
//! timestamps and window requests out). Not built yet: the placement Raft
//! group that will persist its windows and the cluster metadata, the
//! heartbeats and the schedulers. Until then a cluster bootstraps
//! statically from `--initial-cluster` with one region covering the whole
//! keyspace (see `kvserver::node`); the region metadata the driver will
//! manage (`raftstore::region::RegionMeta`: id, range, epoch, peers) already
//! exists and is checked on every request.

pub mod tso;
