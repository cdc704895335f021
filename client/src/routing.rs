//! Where each attempt goes, and keeping that knowledge fresh. [`Routing`]
//! owns the endpoint list ([`Router`]) and the route cache
//! ([`RegionCache`]), applies what failed attempts teach (leader hints,
//! refused routes) to both, and refreshes the cache from the nodes' `Status`
//! answers.
//!
//! Refreshes are single-flight — a caller that needs one while one runs
//! waits for it and uses its result instead of starting another — and
//! rate-limited: one asked for by a refused route runs at most every
//! [`crate::region_cache::REFRESH_INTERVAL_MIN`]; a lookup miss always refreshes, unless a
//! refresh finished since the miss was seen. A refresh asks every known node
//! at once, and the members they name, and stops as soon as the answers
//! route the whole keyspace to nodes that say they lead, or after one
//! request timeout.

use crate::classify::{single_attempt_error, StaleRoute};
use crate::cluster_view::{ClusterView, ViewBuilder};
use crate::endpoint::{canonical_addr, KvStub};
use crate::error::{ClientError, Result};
use crate::region_cache::RegionCache;
use crate::router::{Router, Target};
use flotilla_proto::kvpb::{NotLeader, Region, StatusRequest, StatusResponse};
use futures::stream::{FuturesUnordered, StreamExt};
use std::collections::HashSet;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Bound on the nodes one refresh asks, so member lists cannot grow it
/// without limit.
const SWEEP_NODES_MAX: usize = 256;

/// When a sweep of `Status` requests stops waiting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SweepEnd {
    /// Once the answers route every key, or after one request timeout.
    WhenRoutable,
    /// Once every asked node answered or timed out.
    AllAnswered,
}

#[derive(Debug)]
pub(crate) struct Routing {
    router: Router,
    cache: Mutex<RegionCache>,
    /// Held while a refresh runs: the single flight.
    refresh_flight: tokio::sync::Mutex<()>,
    request_timeout: Duration,
}

impl Routing {
    pub fn new(router: Router, request_timeout: Duration) -> Self {
        Self {
            router,
            cache: Mutex::new(RegionCache::default()),
            refresh_flight: tokio::sync::Mutex::new(()),
            request_timeout,
        }
    }

    pub fn router(&self) -> &Router {
        &self.router
    }

    /// The route cache. Never held across an `.await`.
    pub fn cache(&self) -> MutexGuard<'_, RegionCache> {
        // Every update leaves the cache consistent even if a holder panicked.
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `find` in the cache; on a miss, one refresh (shared with concurrent
    /// misses) and `find` again. `None`: the cluster told nothing that helps.
    pub async fn lookup<T>(&self, find: impl Fn(&RegionCache) -> Option<T>) -> Option<T> {
        let seen_generation = {
            let cache = self.cache();
            if let Some(found) = find(&cache) {
                return Some(found);
            }
            cache.generation()
        };
        self.refresh(seen_generation, true).await;
        find(&self.cache())
    }

    /// The endpoint for the next attempt of a request for `region`: its
    /// cached leader, else the preferred endpoint.
    pub fn target(&self, region: Option<&Region>) -> Target {
        let leader_addr =
            region.and_then(|region| self.cache().leader_addr(region.id).map(str::to_owned));
        leader_addr
            .and_then(|addr| self.router.learn(&addr))
            .unwrap_or_else(|| self.router.preferred())
    }

    /// Records a leader hint for the request's region and prefers the
    /// leader. Returns its endpoint index, or `None` when the hint names no
    /// usable address.
    pub fn follow_leader(&self, region: Option<&Region>, hint: &NotLeader) -> Option<usize> {
        let region_id = match hint.region_id {
            0 => region.map_or(0, |region| region.id),
            id => id,
        };
        let addr = {
            let mut cache = self.cache();
            if hint.leader_node_id != 0 {
                if let Ok(addr) = canonical_addr(&hint.leader_addr) {
                    cache.learn_store(hint.leader_node_id, addr);
                }
                cache.set_leader(region_id, hint.leader_node_id);
            }
            if hint.leader_addr.is_empty() {
                cache.store_addr(hint.leader_node_id).map(str::to_owned)
            } else {
                Some(hint.leader_addr.clone())
            }
        }?;
        self.router.follow_hint(&addr)
    }

    /// The attempt at `target` could not be served there (node down, no
    /// leader known): forget it as the region's leader and move past it.
    pub fn skip(&self, target: &Target, region: Option<&Region>) {
        if let Some(region) = region {
            self.cache().forget_leader_at(region.id, &target.addr);
        }
        self.router.move_past(target.index);
    }

    /// The server refused the request's route: record what it said, and
    /// refresh if due, so the caller can plan the request again.
    pub async fn route_refused(&self, target: &Target, region: Option<&Region>, stale: StaleRoute) {
        match stale {
            StaleRoute::EpochNotMatch { current_regions } => {
                self.cache().insert_successors(region, current_regions);
                let seen_generation = self.cache().generation();
                self.refresh(seen_generation, false).await;
            }
            // The next lookup misses and so refreshes.
            StaleRoute::RegionNotFound => {
                if let Some(region) = region {
                    self.cache().invalidate(region);
                }
            }
        }
        if region.is_none() {
            // Routed by the node itself, which does not hold the key.
            self.router.move_past(target.index);
        }
    }

    /// Refreshes the cache, unless a refresh finished since the caller saw
    /// `seen_generation` or (when not `forced`) the last one was too recent.
    pub async fn refresh(&self, seen_generation: u64, forced: bool) {
        let _flight = self.refresh_flight.lock().await;
        if !self
            .cache()
            .refresh_due(seen_generation, forced, Instant::now())
        {
            return;
        }
        let view = self.sweep(SweepEnd::WhenRoutable).await.build();
        tracing::debug!(
            regions = view.regions.len(),
            answers = view.answers.len(),
            "route cache refreshed"
        );
        self.apply(&view);
    }

    /// Asks every known node, and every member they name, for its status,
    /// waits for all answers, merges them, and refreshes the cache with the
    /// result.
    pub async fn cluster_view(&self) -> ClusterView {
        let view = self.sweep(SweepEnd::AllAnswered).await.build();
        self.apply(&view);
        view
    }

    /// The status of the node at `endpoint`: one attempt, bounded by the
    /// request timeout.
    pub async fn status(&self, endpoint: &str) -> Result<StatusResponse> {
        let stub = self.router.stub_for(endpoint)?;
        self.status_at(stub).await
    }

    async fn status_at(&self, mut stub: KvStub) -> Result<StatusResponse> {
        let timeout = self.request_timeout;
        let mut request = tonic::Request::new(StatusRequest {});
        request.set_timeout(timeout);
        match tokio::time::timeout(timeout, stub.status(request)).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(single_attempt_error(&status, timeout)),
            Err(_elapsed) => Err(ClientError::Timeout(timeout)),
        }
    }

    /// The status of the node at a canonical `addr`, over a remembered
    /// connection when the router has room for it.
    async fn status_of(&self, addr: String) -> (String, Result<StatusResponse>) {
        let answer = match self.router.learn(&addr) {
            Some(target) => self.status_at(target.stub).await,
            None => self.status(&addr).await,
        };
        (addr, answer)
    }

    /// Asks the known nodes, then the members they name, concurrently.
    async fn sweep(&self, end: SweepEnd) -> ViewBuilder {
        let mut builder = ViewBuilder::default();
        let mut to_ask = self.router.addrs();
        to_ask.extend(self.cache().store_addrs().map(str::to_owned));
        let mut asked: HashSet<String> = HashSet::new();
        let mut pending = FuturesUnordered::new();
        let give_up_at = tokio::time::Instant::now() + self.request_timeout;
        loop {
            for raw in to_ask.drain(..) {
                let Ok(addr) = canonical_addr(&raw) else {
                    continue;
                };
                if asked.len() < SWEEP_NODES_MAX && asked.insert(addr.clone()) {
                    pending.push(self.status_of(addr));
                }
            }
            let next = match end {
                SweepEnd::WhenRoutable => tokio::time::timeout_at(give_up_at, pending.next())
                    .await
                    .ok()
                    .flatten(),
                SweepEnd::AllAnswered => pending.next().await,
            };
            let Some((addr, answer)) = next else {
                break;
            };
            if let Ok(status) = &answer {
                to_ask.push(status.client_addr.clone());
                to_ask.extend(status.members.iter().map(|m| m.client_addr.clone()));
            }
            builder.add(addr, answer);
            if end == SweepEnd::WhenRoutable && builder.is_complete() {
                break;
            }
        }
        builder
    }

    fn apply(&self, view: &ClusterView) {
        let mut cache = self.cache();
        for store in &view.stores {
            let addr = store
                .client_addr
                .as_deref()
                .and_then(|addr| canonical_addr(addr).ok());
            if let Some(addr) = addr {
                cache.learn_store(store.id, addr);
            }
        }
        for region in &view.regions {
            cache.insert(region.region.clone(), region.leader);
        }
        cache.refreshed(Instant::now());
    }
}
