//! Jepsen-style fault injection against real Flotilla clusters.
//!
//! A run starts a cluster ([`backend`]: Docker containers on a private
//! network, or local processes), lets concurrent clients drive a
//! [`workload`] while a seeded [`nemesis`] partitions, kills and pauses
//! nodes, splits regions and moves their leaders and replicas, heals
//! everything, waits for the cluster to serve again, crashes
//! and restarts every node, reads the final state, and judges the recorded
//! history with the workload's [`check`]s. [`run::execute`] does all of it
//! and writes a [`report`] directory.
//!
//! Guarantees:
//! - every client call is recorded with its invocation and completion time;
//!   an outcome the client cannot vouch for is `info`, never `ok` or `fail`;
//! - the seed fixes the fault schedule (kinds, nodes, offsets) and every
//!   client's choices; the cluster's timing is not replayed;
//! - a Docker run removes its containers and network however it ends, and
//!   the next run removes what a killed run left behind.

pub mod backend;
pub mod check;
mod error;
pub mod nemesis;
pub mod report;
pub mod run;
pub mod workload;

pub use error::Error;
