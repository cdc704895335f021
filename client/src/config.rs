//! Client configuration: endpoints, timeouts and backoff bounds, with the
//! checks [`crate::Client::connect`] applies before it accepts them.

use crate::error::{ClientError, Result};
use std::time::Duration;

/// The client address of a single-node playground's first node.
const DEFAULT_ENDPOINT: &str = "127.0.0.1:20160";

/// How a [`crate::Client`] reaches the cluster and how long it keeps trying.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Client addresses (`host:port`, optionally prefixed with `http://`) of
    /// some or all nodes. More are learned from leader hints.
    pub endpoints: Vec<String>,
    /// Time budget of one attempt (one RPC to one node).
    pub request_timeout: Duration,
    /// Time budget of a whole operation, all retries and backoff included:
    /// no attempt starts after it. The attempt in flight then still gets
    /// its `request_timeout`, so an operation ends within
    /// `operation_timeout + request_timeout`.
    pub operation_timeout: Duration,
    /// Time budget for opening a TCP connection to a node.
    pub connect_timeout: Duration,
    /// First backoff delay between retries; it doubles up to `backoff_max`.
    pub backoff_min: Duration,
    /// Largest backoff delay between retries.
    pub backoff_max: Duration,
    /// Largest gRPC message the client sends or accepts, in bytes.
    pub message_bytes_max: usize,
}

impl ClientConfig {
    /// A configuration with default timeouts for the given endpoints.
    pub fn new<S: Into<String>>(endpoints: impl IntoIterator<Item = S>) -> Self {
        Self {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            ..Self::default()
        }
    }

    /// Refuses configurations the client cannot work with. Endpoint syntax is
    /// checked separately, when the endpoints are parsed.
    pub(crate) fn validate(&self) -> Result<()> {
        if self.endpoints.is_empty() {
            return Err(ClientError::Config("no endpoints given".into()));
        }
        let positive = [
            ("request_timeout", self.request_timeout),
            ("operation_timeout", self.operation_timeout),
            ("connect_timeout", self.connect_timeout),
            ("backoff_min", self.backoff_min),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, value)| value.is_zero()) {
            return Err(ClientError::Config(format!("{name} must be positive")));
        }
        if self.backoff_max < self.backoff_min {
            return Err(ClientError::Config(
                "backoff_max must be at least backoff_min".into(),
            ));
        }
        if self.message_bytes_max == 0 {
            return Err(ClientError::Config(
                "message_bytes_max must be positive".into(),
            ));
        }
        Ok(())
    }
}

impl Default for ClientConfig {
    /// One endpoint (`127.0.0.1:20160`), 2 s per attempt, 10 s per operation,
    /// 1 s to connect, backoff 10 ms .. 500 ms, messages up to 64 MiB.
    fn default() -> Self {
        Self {
            endpoints: vec![DEFAULT_ENDPOINT.to_string()],
            request_timeout: Duration::from_secs(2),
            operation_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(1),
            backoff_min: Duration::from_millis(10),
            backoff_max: Duration::from_millis(500),
            message_bytes_max: 64 << 20,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_valid() {
        assert!(ClientConfig::default().validate().is_ok());
    }

    #[test]
    fn empty_endpoints_are_refused() {
        let config = ClientConfig::new(Vec::<String>::new());
        assert!(matches!(config.validate(), Err(ClientError::Config(_))));
    }

    #[test]
    fn zero_timeout_is_refused() {
        let config = ClientConfig {
            operation_timeout: Duration::ZERO,
            ..ClientConfig::default()
        };
        let err = config.validate().unwrap_err();
        assert!(err.to_string().contains("operation_timeout"), "{err}");
    }

    #[test]
    fn inverted_backoff_bounds_are_refused() {
        let config = ClientConfig {
            backoff_min: Duration::from_millis(20),
            backoff_max: Duration::from_millis(10),
            ..ClientConfig::default()
        };
        assert!(matches!(config.validate(), Err(ClientError::Config(_))));
    }
}
