//! `placement`: the placement driver — region metadata service, store and
//! region heartbeats, schedulers and the timestamp oracle.
//!
//! Not built yet: a cluster bootstraps statically from `--initial-cluster`
//! with one region covering the whole keyspace (see `kvserver::node`). The
//! region metadata it will manage (`raftstore::region::RegionMeta`: id,
//! range, epoch, peers) already exists and is checked on every request.
