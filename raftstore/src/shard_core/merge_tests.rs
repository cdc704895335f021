//! Merges whose source and target run on different shards of one store:
//! the target holds its `CommitMerge` until the source's shard destroyed
//! its replica, so a source replica that lags behind the freeze never
//! writes over the pairs the target brings in, and a target's snapshot
//! covering the source waits until the source's shard destroyed it.

use std::time::Instant;

use futures::channel::oneshot;
use raft::prelude::ConfState;

use super::tests::{snapshot_message, RecordingIo};
use super::*;
use crate::command::WriteResult;

/// Target region (shard 0 of two: even id) and source region (shard 1).
const TARGET: u64 = 2;
const SOURCE: u64 = 3;

/// One store (node 1) running two shards that share its key-value store
/// and region map, with single-voter regions `TARGET` ["", "m") and
/// `SOURCE` ["m", "").
struct TwoShards {
    cores: [ShardCore; 2],
    ios: [RecordingIo; 2],
    now: Instant,
}

impl TwoShards {
    fn start(name: &str) -> TwoShards {
        let dir = std::env::temp_dir().join(format!(
            "flotilla-cross-shard-merge-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let mut cfg = StoreConfig::new(1, dir.clone(), Vec::new());
        cfg.shards = 2;
        let cfg = Arc::new(cfg);
        let (store, region_map) = (Arc::new(KvStore::new()), Arc::new(RegionMap::new()));
        let now = Instant::now();
        let core = |index: usize, id: u64, start: &[u8], end: &[u8]| {
            let checkpoint = RegionCheckpoint::new_region(
                RegionMeta {
                    start_key: start.to_vec(),
                    end_key: end.to_vec(),
                    ..RegionMeta::whole_keyspace(id, &[1])
                },
                ConfState {
                    voters: vec![1],
                    ..Default::default()
                },
                Default::default(),
            );
            ShardCore::recover(
                cfg.clone(),
                index,
                vec![checkpoint],
                store.clone(),
                region_map.clone(),
                &[],
                dir.clone(),
                now,
            )
            .expect("the shard starts")
        };
        let mut shards = TwoShards {
            cores: [core(0, TARGET, b"", b"m"), core(1, SOURCE, b"m", b"")],
            ios: Default::default(),
            now,
        };
        shards.turn_until(|s| {
            s.peer(TARGET).is_some_and(Peer::is_leader)
                && s.peer(SOURCE).is_some_and(Peer::is_leader)
        });
        shards
    }

    fn peer(&self, id: u64) -> Option<&Peer> {
        self.cores[self.cores[0].cfg.shard_of(id)].peers.get(&id)
    }

    /// The source's replica is gone from its shard, behind a merge tombstone.
    fn assert_source_destroyed(&self, why: &str) {
        assert!(self.peer(SOURCE).is_none(), "{why}");
        assert_eq!(
            self.cores[1].tombstones.conf_ver(SOURCE),
            Some(MERGED_TOMBSTONE_CONF_VER),
            "{why}"
        );
    }

    fn store(&self) -> &KvStore {
        &self.cores[0].store
    }

    /// One tick and one turn of both shards; nothing crosses between them.
    fn turn(&mut self) {
        self.now += self.cores[0].cfg.tick;
        for (core, io) in self.cores.iter_mut().zip(&mut self.ios) {
            core.on_clock(self.now);
            futures::executor::block_on(core.turn(io)).expect("the turn succeeds");
            assert_eq!(core.check_filing(), Ok(()));
        }
    }

    /// Hands every message a shard addressed to another shard over.
    fn deliver(&mut self) -> usize {
        let msgs: Vec<_> = self
            .ios
            .iter_mut()
            .flat_map(|io| std::mem::take(&mut io.to_shards))
            .collect();
        let delivered = msgs.len();
        for (shard, msg) in msgs {
            self.cores[shard].handle(msg, self.now);
        }
        delivered
    }

    /// Turns and delivers until `done` holds, at most 200 ticks.
    fn turn_until(&mut self, done: impl Fn(&TwoShards) -> bool) {
        for _ in 0..200 {
            if done(self) {
                return;
            }
            self.turn();
            self.deliver();
        }
        assert!(done(self), "not reached within 200 ticks");
    }

    fn write(&mut self, region_id: u64, op: WriteOp) -> oneshot::Receiver<WriteOutcome> {
        let epoch = self.peer(region_id).map(|p| p.region().epoch);
        let (reply, answer) = oneshot::channel();
        let cmd = WriteCommand {
            header: RequestHeader { region_id, epoch },
            id: WriteId::default(),
            answered_below: 0,
            op,
        };
        let shard = self.cores[0].cfg.shard_of(region_id);
        self.cores[shard].handle(
            ShardMsg::Write {
                region_id,
                cmd: Box::new(cmd),
                reply,
            },
            self.now,
        );
        answer
    }

    fn put(&mut self, region_id: u64, key: &[u8], value: &[u8]) -> oneshot::Receiver<WriteOutcome> {
        self.write(
            region_id,
            WriteOp::Put {
                key: key.to_vec(),
                value: value.to_vec(),
            },
        )
    }
}

type WriteOutcome = Result<WriteResult, RaftstoreError>;

fn answered(answer: &mut oneshot::Receiver<WriteOutcome>) -> Option<WriteOutcome> {
    answer.try_recv().ok().flatten()
}

/// The whole protocol across shards: `PrepareMerge` judged on the source's
/// shard against the target's metadata, the source's final state, and
/// `CommitMerge` on the target's shard, which holds until the source's
/// shard destroyed its replica.
#[test]
fn a_merge_across_shards_completes_with_the_sources_data() {
    let mut s = TwoShards::start("whole");
    let mut put = s.put(SOURCE, b"n", b"1");
    s.turn_until(|s| s.store().get(b"n").is_some());
    assert!(matches!(answered(&mut put), Some(Ok(_))));

    let (reply, mut frozen) = oneshot::channel();
    s.cores[1].handle(
        ShardMsg::PrepareMerge {
            source_id: SOURCE,
            target_id: TARGET,
            reply,
        },
        s.now,
    );
    s.turn_until(|s| s.peer(SOURCE).is_some_and(|p| p.merging().is_some()));
    assert!(matches!(answered(&mut frozen), Some(Ok(_))));
    let source = s.peer(SOURCE).map(Peer::merge_source);
    let Some(Ok(source)) = source else {
        panic!("the frozen source gives its final state: {source:?}");
    };
    assert_eq!(source.pairs, vec![(b"n".to_vec(), b"1".to_vec())]);

    let mut commit = s.write(
        TARGET,
        WriteOp::CommitMerge {
            source: source.source.clone(),
            sessions: source.sessions,
            pairs: source.pairs,
        },
    );
    s.turn();
    // The target holds: the source's shard is asked to destroy its replica.
    assert!(answered(&mut commit).is_none());
    assert!(s.peer(SOURCE).is_some());
    assert_eq!(
        s.peer(TARGET).map(|p| p.region().end_key.clone()),
        Some(b"m".to_vec())
    );
    assert!(matches!(
        s.ios[0].to_shards[..],
        [(1, ShardMsg::ReleaseMergeSource { release, reply_to: 0 })]
            if release == MergeRelease { source: SOURCE, target: TARGET }
    ));
    s.turn_until(|s| {
        s.peer(TARGET)
            .is_some_and(|p| p.region().end_key.is_empty())
    });
    assert!(matches!(answered(&mut commit), Some(Ok(_))));
    s.assert_source_destroyed("the source's replica is destroyed");
    let merged = s.cores[0].region_map.region_for_key(b"n");
    assert_eq!(merged.map(|r| r.id), Some(TARGET));
    assert_eq!(s.store().get(b"n"), Some(b"1".to_vec()));

    // The merged region takes writes over the source's old range.
    let mut put = s.put(TARGET, b"n", b"2");
    s.turn_until(|s| s.store().get(b"n") == Some(b"2".to_vec()));
    assert!(matches!(answered(&mut put), Some(Ok(_))));
}

/// A source replica that has not even applied `PrepareMerge` on this store
/// (it lags) when the target commits the merge: it is destroyed before the
/// target brings in the final pairs, so a write it would still have applied
/// never lands over them.
#[test]
fn a_lagging_source_on_another_shard_applies_nothing_over_the_merge() {
    let mut s = TwoShards::start("lagging");
    let mut put = s.put(SOURCE, b"n", b"old");
    s.turn_until(|s| s.store().get(b"n").is_some());
    assert!(matches!(answered(&mut put), Some(Ok(_))));

    // The source's final state as the rest of its group froze it, which
    // the replica here has not reached.
    let Some(here) = s.peer(SOURCE).map(|p| RegionMeta::clone(p.region())) else {
        panic!("the source runs on shard 1");
    };
    let mut commit = s.write(
        TARGET,
        WriteOp::CommitMerge {
            source: crate::merge::frozen(&here),
            sessions: Default::default(),
            pairs: vec![(b"n".to_vec(), b"final".to_vec())],
        },
    );
    s.turn();
    assert!(answered(&mut commit).is_none(), "held for the source");

    // The lagging replica still has a write to apply when the release comes.
    let mut late = s.put(SOURCE, b"n", b"late");
    assert_eq!(s.deliver(), 1, "the release reaches the source's shard");
    assert!(s.peer(SOURCE).is_none(), "destroyed on the release");
    assert!(
        matches!(
            answered(&mut late),
            Some(Err(RaftstoreError::RegionNotFound { region_id: SOURCE }))
        ),
        "the late write is refused, never applied"
    );
    s.turn_until(|s| {
        s.peer(TARGET)
            .is_some_and(|p| p.region().end_key.is_empty())
    });
    assert!(matches!(answered(&mut commit), Some(Ok(_))));
    assert_eq!(s.store().get(b"n"), Some(b"final".to_vec()));
    for _ in 0..5 {
        s.turn();
        s.deliver();
    }
    assert_eq!(s.store().get(b"n"), Some(b"final".to_vec()));
}

/// A target replica that missed the merge and is sent a snapshot covering
/// the source, which another shard still runs: the snapshot is held and
/// that shard asked to destroy the source; once it did, the snapshot is
/// stepped.
#[test]
fn a_snapshot_covering_a_source_on_another_shard_waits_for_its_destruction() {
    let mut s = TwoShards::start("snapshot");
    let Some(target) = s.peer(TARGET).map(|p| RegionMeta::clone(p.region())) else {
        panic!("the target runs on shard 0");
    };
    let merged = RegionMeta {
        end_key: Vec::new(),
        epoch: RegionEpoch {
            version: target.epoch.version + 10,
            ..target.epoch
        },
        ..target
    };
    s.cores[0].handle(
        ShardMsg::Raft {
            region_id: TARGET,
            msg: snapshot_message(merged),
        },
        s.now,
    );
    assert!(
        s.cores[0].held_merge_snapshots.contains_key(&TARGET),
        "held"
    );
    s.turn();
    // Asked again at every tick while held (idempotent).
    assert!(!s.ios[0].to_shards.is_empty());
    for sent in &s.ios[0].to_shards {
        assert!(matches!(
            sent,
            (1, ShardMsg::ReleaseMergeSource { release, reply_to: 0 })
                if *release == MergeRelease { source: SOURCE, target: TARGET }
        ));
    }
    assert!(
        s.peer(SOURCE).is_some(),
        "not before its shard took the message"
    );
    s.turn_until(|s| s.cores[0].held_merge_snapshots.is_empty());
    s.assert_source_destroyed("destroyed before the snapshot was stepped");
}
