//! Endpoint addresses: one canonical spelling (`host:port`) per node, and a
//! lazily connecting gRPC stub for it. Addresses come from the user and from
//! servers' leader hints, so parsing never panics.

use crate::error::{ClientError, Result};
use flotilla_proto::kvpb::kv_client::KvClient;
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

/// The canonical form of a node's client address: `host:port`, without a
/// scheme or trailing slash, so the same node is never listed twice.
pub(crate) fn canonical_addr(raw: &str) -> Result<String> {
    let trimmed = raw.trim();
    let without_scheme = trimmed.strip_prefix("http://").unwrap_or(trimmed);
    let addr = without_scheme.strip_suffix('/').unwrap_or(without_scheme);
    if addr.is_empty() {
        return Err(ClientError::Config(format!(
            "empty endpoint address {raw:?}"
        )));
    }
    if addr.contains("://") {
        return Err(ClientError::Config(format!(
            "endpoint {raw:?}: only plain http is supported"
        )));
    }
    if addr.contains('/') {
        return Err(ClientError::Config(format!(
            "endpoint {raw:?}: expected host:port without a path"
        )));
    }
    Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|err| ClientError::Config(format!("endpoint {raw:?}: {err}")))?;
    Ok(addr.to_string())
}

/// A gRPC stub for one node's `Kv` service.
pub(crate) type KvStub = KvClient<Channel>;

/// Settings every stub shares.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StubSettings {
    pub connect_timeout: Duration,
    pub message_bytes_max: usize,
}

/// A gRPC stub for a canonical address. Connects on first use and reconnects
/// after failures, so building one never blocks and never fails on a down
/// node.
pub(crate) fn lazy_stub(addr: &str, settings: StubSettings) -> Result<KvStub> {
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|err| ClientError::Config(format!("endpoint {addr:?}: {err}")))?
        .connect_timeout(settings.connect_timeout)
        .tcp_nodelay(true)
        .connect_lazy();
    Ok(KvClient::new(channel)
        .max_decoding_message_size(settings.message_bytes_max)
        .max_encoding_message_size(settings.message_bytes_max))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheme_and_trailing_slash_are_stripped() {
        assert_eq!(
            canonical_addr("http://127.0.0.1:20160/").unwrap(),
            "127.0.0.1:20160"
        );
        assert_eq!(canonical_addr(" localhost:1 ").unwrap(), "localhost:1");
    }

    #[test]
    fn tls_and_paths_and_empty_are_refused() {
        for raw in ["https://a:1", "a:1/x", "", "http://", "a b:1"] {
            assert!(canonical_addr(raw).is_err(), "{raw:?} accepted");
        }
    }
}
