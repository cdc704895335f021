//! `specs`: stateright models of Flotilla's protocols that drive the real
//! decision code, so a model and the server cannot drift apart.
//!
//! [`client_retry`] models the client-retry protocol: clients put,
//! compare-and-swap and read one register over a network that reorders,
//! duplicates and indefinitely delays (so loses) messages, and retry
//! timed-out requests under the same `WriteId`. The server applies every
//! delivered write through `raftstore::apply::apply_write` on a real
//! `engine::store::KvStore` and `raftstore::apply::SessionTable`: that is
//! the shared code. Between steps the model keeps their state as the
//! store's pairs and the session table's own encoding, and rebuilds the
//! real objects for every step. The checker proves the client-observed
//! history linearizable against [`register_spec::CasRegister`], and the
//! tests show that retrying under a fresh `WriteId` (deduplication
//! defeated) is caught.
//!
//! [`replication`] models Raft replication of one region over three
//! replicas as raft-rs 0.7 and `raftstore::peer` run it: elections with
//! pre-vote and check-quorum, log replication, the commit rule, ReadIndex
//! reads and snapshots. Votes and commit indexes are counted by raft-rs's own
//! quorum functions, `Peer`'s decisions come from `raftstore::rules`, and
//! the rest of raft-rs is mirrored function by function, which a
//! conformance test checks by replaying model traces on real `RawNode`s.
//! The checker proves the Raft safety properties and linearizable reads
//! within bounds, and catches reads served without ReadIndex and writes
//! acknowledged after losing their log slot.
//!
//! [`lease`] models the leader lease: a leader serving reads on it while
//! followers, their clocks running faster, try to elect another. The
//! lease is `raftstore::lease`'s own code; late ticks, vote refusals in
//! lease and after a restart, and leadership transfers mirror `ShardCore`,
//! `Peer` and raft-rs. The checker proves no replica is elected while a
//! lease holds, and catches four broken variants (a lease one late tick
//! too long among them).
//!
//! `cargo test -p specs` checks the quick bounds exhaustively (20–35 s on
//! two cores); `FLOTILLA_SPECS_DEEP=1 cargo test -p specs --release`
//! checks the deep ones ([`depth`]). `docs/specs.md` lists bounds and state
//! counts.

pub mod client_retry;
pub mod depth;
pub mod lease;
pub mod linearizability;
pub mod register_spec;
pub mod replication;
pub mod split_snapshots;
