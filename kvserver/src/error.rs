//! The server crate's one error type, for the failures its own parts (the
//! placement driver's dispatch) report to each other. gRPC handlers answer
//! with `tonic::Status` (see `error_status`); the binary's top level uses
//! `anyhow`.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum ServerError {
    /// The placement driver knows no address for this store.
    #[error("store {store_id} is not registered with the placement driver")]
    UnknownStore { store_id: u64 },
    /// A region leader's node refused or failed an admin call.
    #[error("store {store_id} at {addr}: {message}")]
    Rpc {
        store_id: u64,
        addr: String,
        message: String,
    },
}
