//! Which endpoint the next attempt goes to. The router holds every known
//! endpoint (configured ones first, then ones learned from leader hints and
//! from the nodes' member lists, up to [`ENDPOINTS_MAX`]) and the index of
//! the preferred one — the last known leader, where requests go when the
//! route cache names no leader. Many operations share it; a move away from
//! an endpoint only takes effect if that endpoint is still preferred, so
//! concurrent failures do not skip over a healthy node.

use crate::endpoint::{canonical_addr, lazy_stub, KvStub, StubSettings};
use crate::error::Result;
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Bound on known endpoints, so bogus hints cannot grow the list forever.
pub(crate) const ENDPOINTS_MAX: usize = 64;

/// Where one attempt goes.
pub(crate) struct Target {
    /// Position in the router's list, to report failures against.
    pub index: usize,
    pub addr: String,
    pub stub: KvStub,
}

#[derive(Debug)]
pub(crate) struct Router {
    settings: StubSettings,
    state: Mutex<RouterState>,
}

#[derive(Debug)]
struct RouterState {
    endpoints: Vec<KnownEndpoint>,
    preferred: usize,
}

#[derive(Debug)]
struct KnownEndpoint {
    addr: String,
    stub: KvStub,
}

impl Router {
    /// A router over the given addresses (duplicates collapse), preferring
    /// the first.
    pub fn new(addrs: &[String], settings: StubSettings) -> Result<Self> {
        let mut endpoints: Vec<KnownEndpoint> = Vec::with_capacity(addrs.len());
        for raw in addrs {
            let addr = canonical_addr(raw)?;
            if endpoints.iter().all(|known| known.addr != addr) {
                let stub = lazy_stub(&addr, settings)?;
                endpoints.push(KnownEndpoint { addr, stub });
            }
        }
        assert!(
            !endpoints.is_empty(),
            "ClientConfig::validate refuses empty endpoint lists"
        );
        Ok(Self {
            settings,
            state: Mutex::new(RouterState {
                endpoints,
                preferred: 0,
            }),
        })
    }

    /// The preferred endpoint.
    pub fn preferred(&self) -> Target {
        let state = self.lock();
        let known = &state.endpoints[state.preferred];
        Target {
            index: state.preferred,
            addr: known.addr.clone(),
            stub: known.stub.clone(),
        }
    }

    /// Prefers the endpoint after `failed`, unless another operation already
    /// moved the preference away from it.
    pub fn move_past(&self, failed: usize) {
        let mut state = self.lock();
        if state.preferred == failed {
            state.preferred = (failed + 1) % state.endpoints.len();
        }
    }

    /// Prefers the hinted leader, learning its address if it is new. Returns
    /// its index, or `None` when the hint is unusable (malformed, or the
    /// endpoint list is full); the caller then moves past the failed one.
    pub fn follow_hint(&self, hint: &str) -> Option<usize> {
        let target = self.learn(hint)?;
        self.lock().preferred = target.index;
        Some(target.index)
    }

    /// The endpoint at `addr`, learning it if it is new, without changing
    /// the preference. `None` when the address is malformed or the endpoint
    /// list is full.
    pub fn learn(&self, addr: &str) -> Option<Target> {
        let addr = match canonical_addr(addr) {
            Ok(addr) => addr,
            Err(err) => {
                tracing::warn!(%addr, %err, "ignoring malformed node address");
                return None;
            }
        };
        let mut state = self.lock();
        let index = match state.endpoints.iter().position(|known| known.addr == addr) {
            Some(index) => index,
            None if state.endpoints.len() < ENDPOINTS_MAX => {
                let stub = lazy_stub(&addr, self.settings).ok()?;
                tracing::debug!(%addr, "learned endpoint");
                state.endpoints.push(KnownEndpoint { addr, stub });
                state.endpoints.len() - 1
            }
            None => return None,
        };
        let known = &state.endpoints[index];
        Some(Target {
            index,
            addr: known.addr.clone(),
            stub: known.stub.clone(),
        })
    }

    /// A stub for `addr`: the shared one if the address is known, otherwise a
    /// fresh one that is not remembered.
    pub fn stub_for(&self, addr: &str) -> Result<KvStub> {
        let addr = canonical_addr(addr)?;
        let state = self.lock();
        match state.endpoints.iter().find(|known| known.addr == addr) {
            Some(known) => Ok(known.stub.clone()),
            None => lazy_stub(&addr, self.settings),
        }
    }

    /// Every known address, configured ones first.
    pub fn addrs(&self) -> Vec<String> {
        self.lock()
            .endpoints
            .iter()
            .map(|known| known.addr.clone())
            .collect()
    }

    fn lock(&self) -> MutexGuard<'_, RouterState> {
        // The state stays consistent even if a holder panicked: every update
        // is a single assignment or push.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn router(addrs: &[&str]) -> Router {
        let settings = StubSettings {
            connect_timeout: Duration::from_millis(10),
            message_bytes_max: 1 << 20,
        };
        let addrs: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
        Router::new(&addrs, settings).unwrap()
    }

    #[tokio::test]
    async fn duplicates_collapse_and_first_is_preferred() {
        let router = router(&["a:1", "http://a:1", "b:2"]);
        assert_eq!(router.addrs(), ["a:1", "b:2"]);
        assert_eq!(router.preferred().addr, "a:1");
    }

    #[tokio::test]
    async fn move_past_wraps_and_ignores_stale_failures() {
        let router = router(&["a:1", "b:2"]);
        router.move_past(0);
        assert_eq!(router.preferred().addr, "b:2");
        // A second failure report about a:1 must not move past b:2.
        router.move_past(0);
        assert_eq!(router.preferred().addr, "b:2");
        router.move_past(1);
        assert_eq!(router.preferred().addr, "a:1");
    }

    #[tokio::test]
    async fn hints_are_learned_once_and_preferred() {
        let router = router(&["a:1"]);
        assert_eq!(router.follow_hint("http://c:3"), Some(1));
        assert_eq!(router.follow_hint("c:3"), Some(1));
        assert_eq!(router.addrs(), ["a:1", "c:3"]);
        assert_eq!(router.preferred().addr, "c:3");
        assert_eq!(router.follow_hint("a:1"), Some(0));
        assert_eq!(router.preferred().addr, "a:1");
    }

    #[tokio::test]
    async fn learning_does_not_change_the_preference() {
        let router = router(&["a:1"]);
        let learned = router.learn("http://d:4/").unwrap();
        assert_eq!((learned.index, learned.addr.as_str()), (1, "d:4"));
        assert_eq!(router.learn("d:4").unwrap().index, 1);
        assert_eq!(router.preferred().addr, "a:1");
        assert!(router.learn("not an address/").is_none());
    }

    #[tokio::test]
    async fn malformed_hints_are_ignored() {
        let router = router(&["a:1"]);
        assert_eq!(router.follow_hint("https://x:1"), None);
        assert_eq!(router.addrs(), ["a:1"]);
    }

    #[tokio::test]
    async fn learned_endpoints_are_bounded() {
        let router = router(&["a:1"]);
        for port in 0..ENDPOINTS_MAX as u16 * 2 {
            router.follow_hint(&format!("h:{port}"));
        }
        assert_eq!(router.addrs().len(), ENDPOINTS_MAX);
    }
}
