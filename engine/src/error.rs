//! The engine's single error type. Every variant names the file, offset or
//! limit involved so an operator can act on the message.

use std::path::Path;

/// Everything that can go wrong in the engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// An operating-system I/O call failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// Data on disk (or handed in as encoded bytes) failed validation.
    #[error("corrupt data: {what}")]
    Corrupt { what: String },
    /// A WAL batch exceeds the largest batch the log accepts.
    #[error("WAL batch of {bytes} bytes exceeds the limit of {max} bytes; split it into smaller batches")]
    BatchTooLarge { bytes: u64, max: u64 },
    /// A configuration value is unusable.
    #[error("invalid option: {what}")]
    InvalidOption { what: String },
    /// An earlier write or sync failed, so the log's on-disk state is unknown.
    /// Nothing more is accepted; restarting the shard recovers from disk.
    #[error("the WAL refused the request because an earlier I/O failure left it in an unknown state ({cause}); restart the shard to recover from disk")]
    WalFailed { cause: String },
}

impl EngineError {
    /// Wraps an I/O error with a description of what was being done.
    pub(crate) fn io(context: impl Into<String>, source: impl Into<std::io::Error>) -> Self {
        EngineError::Io {
            context: context.into(),
            source: source.into(),
        }
    }

    /// Wraps an I/O error on `path` with the operation being performed.
    pub(crate) fn io_at(operation: &str, path: &Path, source: impl Into<std::io::Error>) -> Self {
        Self::io(format!("{operation} {}", path.display()), source)
    }
}
