//! Where a run's cluster lives, and how faults reach it.
//!
//! [`ClusterBackend`] is what the nemesis needs from a cluster: crash and
//! restart a node, freeze and thaw it, cut and heal links between nodes.
//! Two implementations:
//!
//! - [`docker::DockerBackend`]: one container per node on a private Docker
//!   network made for the run; partitions are real packet drops (iptables in
//!   each container's network namespace).
//! - [`local::LocalBackend`]: node processes on loopback, through
//!   `flotilla_tests::cluster::Cluster`; no partitions (see
//!   [`local::LocalBackend`] for why).
//!
//! The client always runs in this process and reaches every node directly;
//! [`Control`] is the harness's own view of the cluster (who leads, whether
//! it serves).

mod control;
pub mod docker;
pub mod local;

pub use control::{client_config, Control};

use crate::nemesis::FaultKind;
use crate::Error;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::Path;

/// Node ids are `1..=nodes`, as in `--initial-cluster`.
pub type NodeId = u64;

/// For each node, the peers whose packets it drops (Jepsen's "grudge"). A
/// node missing from the map drops nothing. Links may be cut one way only.
pub type Grudge = BTreeMap<NodeId, BTreeSet<NodeId>>;

/// Which backend runs the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    Docker,
    Local,
}

/// A running cluster that faults can be injected into. Every method acts on
/// nodes that are in the state it expects (the nemesis heals one fault
/// before it starts the next) and returns once the action took effect; a
/// restarted node is listening again.
pub trait ClusterBackend {
    /// Short name, for reports and messages.
    const NAME: &'static str;

    /// Why this backend cannot inject `fault`, if it cannot.
    fn unsupported(fault: FaultKind) -> Option<&'static str>;

    fn node_ids(&self) -> Vec<NodeId>;

    /// Client addresses, in node order.
    fn endpoints(&self) -> Vec<String>;

    /// SIGKILL: a crash, nothing flushed.
    fn kill(&mut self, node: NodeId) -> impl Future<Output = Result<(), Error>> + Send;

    /// Starts a killed node again on its own data and addresses.
    fn restart(&mut self, node: NodeId) -> impl Future<Output = Result<(), Error>> + Send;

    /// SIGSTOP (or a cgroup freeze): the node stops answering but keeps its
    /// connections and state.
    fn pause(&mut self, node: NodeId) -> impl Future<Output = Result<(), Error>> + Send;

    /// Undoes [`ClusterBackend::pause`].
    fn resume(&mut self, node: NodeId) -> impl Future<Output = Result<(), Error>> + Send;

    /// Makes every node drop packets from the peers the grudge names.
    fn partition(&mut self, grudge: &Grudge) -> impl Future<Output = Result<(), Error>> + Send;

    /// Removes every packet drop.
    fn heal_partition(&mut self) -> impl Future<Output = Result<(), Error>> + Send;

    /// Writes each node's log into `dir`.
    fn save_logs(&self, dir: &Path) -> impl Future<Output = Result<(), Error>> + Send;
}

/// [`ClusterBackend::unsupported`] as an error, for the first fault kind in
/// `faults` the backend cannot inject.
pub fn check_supported<B: ClusterBackend>(faults: &[FaultKind]) -> Result<(), Error> {
    match faults
        .iter()
        .find_map(|&fault| Some((fault, B::unsupported(fault)?)))
    {
        Some((fault, reason)) => Err(Error::Unsupported {
            backend: B::NAME,
            fault: fault.name(),
            reason,
        }),
        None => Ok(()),
    }
}
