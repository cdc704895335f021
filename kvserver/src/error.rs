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
    /// A region leader's node refused an admin call for good: as asked,
    /// it cannot be carried out (retrying it unchanged is pointless).
    #[error("store {store_id} at {addr} refused: {message}")]
    Refused {
        store_id: u64,
        addr: String,
        message: String,
    },
    /// A region leader's node failed an admin call, or gave no answer; it
    /// may succeed if tried again.
    #[error("store {store_id} at {addr}: {message}")]
    Rpc {
        store_id: u64,
        addr: String,
        message: String,
    },
}
