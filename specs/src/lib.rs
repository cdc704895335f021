//! `specs`: stateright models of Flotilla's protocols that drive the real
//! decision code, so a model and the server cannot drift apart.
//!
//! [`client_retry`] models the client-retry protocol: clients put,
//! compare-and-swap and read one register over a network that drops and
//! duplicates messages, and retry timed-out requests under the same
//! `WriteId`. The server applies every delivered write through
//! `raftstore::apply::apply_write` on a real `engine::store::KvStore` and
//! `raftstore::apply::SessionTable` (the only shared code; the model keeps
//! their state between steps as store pairs and the session table's own
//! encoding). The checker proves the client-observed history linearizable
//! against [`register_spec::CasRegister`], and shows that retrying under a
//! fresh `WriteId` (deduplication defeated) is caught.
//!
//! Run with `cargo test -p specs` (bounded: 2 clients, 2-3 operations each,
//! one retry, a few seconds). `FLOTILLA_SPECS_DEEP=1 cargo test -p specs
//! --release` checks larger bounds (more operations, two retries).

pub mod client_retry;
pub mod register_spec;
