//! Test support for Flotilla: operation histories, a linearizability checker,
//! and a harness that runs real local clusters of `flotilla server` processes.
//!
//! - [`history`]: operations as clients observed them (ok / fail / info) and
//!   a thread-safe recorder.
//! - [`linearizability`]: a Wing–Gong–Lowe checker for per-key registers.
//! - [`recorded_client`]: runs register commands through the client and
//!   records them.
//! - [`cluster`]: launches, crashes, restarts and inspects local clusters.
//! - [`checks`]: condition waits and data checks the integration tests share.
//! - [`sim`]: a deterministic, seeded simulation of a whole cluster running
//!   the production shard logic over a simulated disk, network and clock.
//!
//! The integration tests under `tests/` drive clusters through the client
//! crate, record histories, and check them here.

pub mod checks;
pub mod cluster;
mod error;
pub mod history;
pub mod linearizability;
pub mod recorded_client;
pub mod sim;

pub use error::Error;
