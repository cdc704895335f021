//! Operations on many keys, cut at region boundaries: [`send_by_region`]
//! plans one request ([`Part`]) per region the keys fall in, sends them
//! concurrently, and when a region turns out to have changed under a part
//! (the route was refused), plans that part's keys again and sends the new
//! parts.
//!
//! Guarantees:
//! * Every key of the operation is in exactly one answered part, or the
//!   operation fails.
//! * A write part keeps its `(client_id, sequence)` when it is re-planned:
//!   the pieces it splits into carry the same pair, each to its own region,
//!   so a piece whose region already applied the part (before the split,
//!   the answer lost) is answered from that region's session table rather
//!   than applied again. Parts of the first plan each get a fresh sequence.
//! * A multi-region write that fails after any part applied, or may have,
//!   fails with [`ClientError::Indeterminate`]: some regions may hold it.

use crate::error::{ClientError, Result};
use crate::region_cache::RegionCache;
use crate::retry::{Attempts, OpKind, PartError};
use crate::routing::Routing;
use flotilla_proto::kvpb::{KvPair, Region};
use futures::stream::{FuturesUnordered, StreamExt};
use std::future::Future;

/// What one request of a multi-region operation covers.
pub(crate) trait Scope: Sized {
    /// Whether the cache holds a region for every key of the scope.
    fn covered(&self, cache: &RegionCache) -> bool;
    /// The scope cut at the cached regions' boundaries; pieces no cached
    /// region holds come with `None` (the server routes them by key).
    /// No piece is empty.
    fn split(self, cache: &RegionCache) -> Vec<(Option<Region>, Self)>;
}

/// Items that carry a key.
pub(crate) trait Keyed {
    fn key(&self) -> &[u8];
}

impl Keyed for Vec<u8> {
    fn key(&self) -> &[u8] {
        self
    }
}

impl Keyed for KvPair {
    fn key(&self) -> &[u8] {
        &self.key
    }
}

impl<T: Keyed> Scope for Vec<T> {
    fn covered(&self, cache: &RegionCache) -> bool {
        self.iter().all(|item| cache.locate(item.key()).is_some())
    }

    fn split(self, cache: &RegionCache) -> Vec<(Option<Region>, Self)> {
        let groups = cache.group_keys(self.iter().map(Keyed::key));
        let mut items: Vec<Option<T>> = self.into_iter().map(Some).collect();
        groups
            .into_iter()
            .map(|(region, positions)| {
                let group = positions
                    .into_iter()
                    .filter_map(|position| items[position].take())
                    .collect();
                (region, group)
            })
            .collect()
    }
}

/// The keys `[start, end)`; an empty `end` is the end of the keyspace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct KeyRange {
    pub start: Vec<u8>,
    pub end: Vec<u8>,
}

impl Scope for KeyRange {
    fn covered(&self, cache: &RegionCache) -> bool {
        cache
            .split_range(&self.start, &self.end)
            .iter()
            .all(|(region, _, _)| region.is_some())
    }

    fn split(self, cache: &RegionCache) -> Vec<(Option<Region>, Self)> {
        cache
            .split_range(&self.start, &self.end)
            .into_iter()
            .map(|(region, start, end)| (region, KeyRange { start, end }))
            .collect()
    }
}

/// One request of a multi-region operation.
#[derive(Debug)]
pub(crate) struct Part<S> {
    /// The region it is for; `None`: the cache knows none.
    pub region: Option<Region>,
    pub scope: S,
    /// The write's sequence; 0 for reads.
    pub sequence: u64,
    pub attempts: Attempts,
}

/// `scope` cut by the cached regions, after one refresh if the cache misses
/// some of it.
pub(crate) async fn plan<S: Scope>(routing: &Routing, scope: S) -> Vec<(Option<Region>, S)> {
    routing
        .lookup(|cache| scope.covered(cache).then_some(()))
        .await;
    let cache = routing.cache();
    scope.split(&cache)
}

/// Runs an operation over `scope`: plans its parts, sends each with `send`
/// (concurrently), re-plans parts whose route was refused, and returns every
/// answered part with its answer, in no particular order. Writes
/// (`next_sequence` is called once per part of the first plan) fail as
/// described in the module guarantees.
pub(crate) async fn send_by_region<S, R, F, Fut>(
    routing: &Routing,
    attempts: Attempts,
    mut next_sequence: impl FnMut() -> u64,
    scope: S,
    send: F,
) -> Result<Vec<(S, R)>>
where
    S: Scope,
    F: Fn(Part<S>) -> Fut,
    Fut: Future<Output = (Part<S>, Result<R, PartError>)>,
{
    let kind = attempts.kind();
    let mut inflight = FuturesUnordered::new();
    for (region, piece) in plan(routing, scope).await {
        inflight.push(send(Part {
            region,
            scope: piece,
            sequence: next_sequence(),
            attempts: attempts.clone(),
        }));
    }
    let mut answered = Vec::new();
    let mut failures = Vec::new();
    while let Some((part, result)) = inflight.next().await {
        match result {
            Ok(response) => answered.push((part.scope, response)),
            Err(PartError::Stale) => {
                for (region, piece) in plan(routing, part.scope).await {
                    inflight.push(send(Part {
                        region,
                        scope: piece,
                        sequence: part.sequence,
                        attempts: part.attempts.clone(),
                    }));
                }
            }
            Err(PartError::Failed(error)) => failures.push(error),
        }
    }
    match combined_failure(kind, answered.len(), failures) {
        Some(error) => Err(error),
        None => Ok(answered),
    }
}

/// The error of an operation whose parts ended in `failures` while
/// `answered` others succeeded; `None` if nothing failed.
fn combined_failure(
    kind: OpKind,
    answered: usize,
    mut failures: Vec<ClientError>,
) -> Option<ClientError> {
    if failures.is_empty() {
        return None;
    }
    let parts = answered + failures.len();
    // The most telling failure: one that may have applied, else the first.
    let telling = failures
        .iter()
        .position(|error| matches!(error, ClientError::Indeterminate(_)))
        .unwrap_or(0);
    let cause = failures.swap_remove(telling);
    let maybe_applied = answered > 0 || matches!(cause, ClientError::Indeterminate(_));
    if kind == OpKind::Write && parts > 1 && maybe_applied {
        return Some(ClientError::Indeterminate(format!(
            "{answered} of {parts} region requests succeeded; some regions may hold the write: {cause}"
        )));
    }
    Some(cause)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::region_cache::tests::region;

    fn two_regions() -> RegionCache {
        let mut cache = RegionCache::default();
        cache.insert(region(1, "", "m", 1), None);
        cache.insert(region(2, "m", "", 1), None);
        cache
    }

    #[test]
    fn keyed_items_are_moved_into_their_regions() {
        let cache = two_regions();
        let pairs: Vec<KvPair> = ["x", "a", "n", "b"]
            .iter()
            .map(|key| KvPair {
                key: key.as_bytes().to_vec(),
                value: key.as_bytes().to_vec(),
            })
            .collect();
        assert!(pairs.covered(&cache));
        let parts = pairs.split(&cache);
        let shape: Vec<(u64, Vec<&[u8]>)> = parts
            .iter()
            .map(|(region, items)| {
                (
                    region.as_ref().unwrap().id,
                    items.iter().map(Keyed::key).collect(),
                )
            })
            .collect();
        assert_eq!(
            shape,
            [(2, vec![&b"x"[..], b"n"]), (1, vec![&b"a"[..], b"b"])]
        );
    }

    #[test]
    fn a_range_is_cut_at_boundaries_and_gaps_are_uncovered() {
        let mut cache = RegionCache::default();
        cache.insert(region(2, "m", "", 1), None);
        let range = KeyRange {
            start: b"c".to_vec(),
            end: b"q".to_vec(),
        };
        assert!(!range.covered(&cache));
        let parts = range.split(&cache);
        assert_eq!(parts.len(), 2);
        assert!(parts[0].0.is_none());
        assert_eq!(parts[0].1.end, b"m");
        assert_eq!(parts[1].0.as_ref().unwrap().id, 2);
        assert_eq!(
            (parts[1].1.start.as_slice(), parts[1].1.end.as_slice()),
            (&b"m"[..], &b"q"[..])
        );
        assert!(KeyRange {
            start: b"n".to_vec(),
            end: Vec::new()
        }
        .covered(&cache));
    }

    #[test]
    fn a_partly_applied_write_is_indeterminate() {
        let unavailable = || ClientError::Unavailable("no leader".into());
        let error = combined_failure(OpKind::Write, 1, vec![unavailable()]).unwrap();
        assert!(matches!(error, ClientError::Indeterminate(msg) if msg.starts_with("1 of 2")));
        let nothing_applied =
            combined_failure(OpKind::Write, 0, vec![unavailable(), unavailable()]);
        assert!(matches!(nothing_applied, Some(ClientError::Unavailable(_))));
        let maybe = combined_failure(
            OpKind::Write,
            0,
            vec![unavailable(), ClientError::Indeterminate("lost".into())],
        );
        assert!(matches!(maybe, Some(ClientError::Indeterminate(_))));
        let read = combined_failure(OpKind::Read, 3, vec![unavailable()]);
        assert!(matches!(read, Some(ClientError::Unavailable(_))));
        assert!(combined_failure(OpKind::Write, 2, Vec::new()).is_none());
    }
}
