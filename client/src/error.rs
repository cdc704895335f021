//! The client's one error type. Each variant tells the caller what it may
//! assume about a write that returned it.

use std::time::Duration;

/// Why an operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The request is malformed or exceeds a server limit (for example an
    /// empty or oversized key). Never retried; nothing was applied.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The client gave up after an attempt whose outcome it could not learn:
    /// the write may or may not have been applied. Only writes return this.
    #[error("outcome unknown, the write may or may not have been applied: {0}")]
    Indeterminate(String),
    /// The client gave up while every attempt was refused before execution
    /// (no leader, node shutting down, overloaded). Nothing was applied.
    #[error("cluster unavailable: {0}")]
    Unavailable(String),
    /// The deadline passed while attempts were timing out. Only reads and
    /// status requests return this: a write whose attempt timed out may have
    /// been applied, so it returns [`ClientError::Indeterminate`] instead.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// A single-node request ([`crate::Client::status`]) could not reach the
    /// node: connection refused, reset or closed.
    #[error("transport error: {0}")]
    Transport(String),
    /// The configuration or an endpoint address is unusable.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The server answered with an error the client does not retry.
    #[error("server error ({code:?}): {message}")]
    Server {
        /// The gRPC status code.
        code: tonic::Code,
        /// The server's message.
        message: String,
    },
}

/// `Result` with [`ClientError`] as the default error.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;
