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
//! `cargo test -p specs` checks the quick bounds exhaustively: 2 clients
//! with 3 and 2 operations, one retry per operation (about 32 000 states,
//! some 20 s in a debug build). `FLOTILLA_SPECS_DEEP=1 cargo test -p specs
//! --release` checks 3 operations per client and two retries per operation
//! (about 1.5 million states, some 3 minutes).

pub mod client_retry;
pub mod register_spec;
