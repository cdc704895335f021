//! The client's region routing against a fake multi-region cluster: each
//! request goes to its region's leader with the region's epoch, operations
//! on many keys are cut per region, scans stay complete and ordered when a
//! region splits under them, moved leaders and splits are learned, cache
//! refreshes are shared, and the merged cluster view marks stopped nodes.

mod fake_cluster;

use client::{ClientError, KvPair, Region};
use fake_cluster::{region, FakeCluster, PlannedSplit, Received};

/// ["", "g") led by node 1, ["g", "p") by node 2, ["p", "") by node 3.
fn three_regions() -> Vec<(Region, u64)> {
    vec![
        (region(1, "", "g"), 1),
        (region(2, "g", "p"), 2),
        (region(3, "p", ""), 3),
    ]
}

/// ["", "k10") led by node 1, ["k10", "k20") by node 2, ["k20", "") by
/// node 3, holding k00 .. k29.
async fn thirty_keys_in_three_regions() -> FakeCluster {
    let cluster = FakeCluster::start(
        3,
        vec![
            (region(1, "", "k10"), 1),
            (region(2, "k10", "k20"), 2),
            (region(3, "k20", ""), 3),
        ],
    )
    .await;
    for i in 0..30 {
        cluster.insert(format!("k{i:02}"), format!("v{i}"));
    }
    cluster
}

/// (node, region id, keys) of the requests that were served.
fn served(received: &[Received]) -> Vec<(u64, u64, Vec<String>)> {
    received
        .iter()
        .filter(|r| r.refused.is_none())
        .map(|r| (r.node, r.header.region_id, r.key_strings()))
        .collect()
}

fn strings(keys: &[&str]) -> Vec<String> {
    keys.iter().map(|key| key.to_string()).collect()
}

fn pair_keys(pairs: &[KvPair]) -> Vec<String> {
    pairs
        .iter()
        .map(|pair| String::from_utf8(pair.key.clone()).unwrap())
        .collect()
}

#[tokio::test]
async fn each_request_goes_to_its_regions_leader_with_the_regions_epoch() {
    let cluster = FakeCluster::start(3, three_regions()).await;
    let client = cluster.client(&[1]).await;

    for key in ["a", "h", "q"] {
        client.put(key, "v").await.unwrap();
    }
    assert_eq!(client.get("h").await.unwrap().as_deref(), Some(&b"v"[..]));

    let puts = cluster.received_of("put");
    assert_eq!(
        puts.iter()
            .map(|r| (r.node, r.header.region_id, r.key_strings(), r.refused))
            .collect::<Vec<_>>(),
        [
            (1, 1, strings(&["a"]), None),
            (2, 2, strings(&["h"]), None),
            (3, 3, strings(&["q"]), None),
        ],
        "every put went straight to its leader"
    );
    assert!(puts.iter().all(|r| {
        r.header.region_epoch.is_some_and(|e| e.version == 1)
            && r.header.client_id == client.client_id()
    }));
    let sequences: Vec<u64> = puts.iter().map(|r| r.header.sequence).collect();
    assert!(sequences.windows(2).all(|w| w[0] < w[1]), "{sequences:?}");
    let gets = cluster.received_of("get");
    assert_eq!(served(&gets), [(2, 2, strings(&["h"]))]);
    assert_eq!((gets[0].header.client_id, gets[0].header.sequence), (0, 0));
}

#[tokio::test]
async fn batch_operations_send_one_request_per_region() {
    let cluster = FakeCluster::start(3, three_regions()).await;
    let client = cluster.client(&[1, 2, 3]).await;
    let pairs: Vec<KvPair> = ["q", "a", "h", "r", "b", "i"]
        .iter()
        .map(|key| KvPair {
            key: key.as_bytes().to_vec(),
            value: format!("v-{key}").into_bytes(),
        })
        .collect();

    client.batch_put(pairs).await.unwrap();

    let mut puts = served(&cluster.received_of("batch_put"));
    puts.sort();
    assert_eq!(
        puts,
        [
            (1, 1, strings(&["a", "b"])),
            (2, 2, strings(&["h", "i"])),
            (3, 3, strings(&["q", "r"])),
        ]
    );
    let mut sequences: Vec<u64> = cluster
        .received_of("batch_put")
        .iter()
        .map(|r| r.header.sequence)
        .collect();
    sequences.sort();
    sequences.dedup();
    assert_eq!(
        sequences.len(),
        3,
        "each region's part has its own sequence"
    );

    let found = client
        .batch_get(
            ["r", "zz", "a", "h", "a"]
                .map(|k| k.as_bytes().to_vec())
                .to_vec(),
        )
        .await
        .unwrap();
    assert_eq!(
        pair_keys(&found),
        ["r", "a", "h", "a"],
        "request order, absent key left out"
    );
    assert!(found
        .iter()
        .all(|p| p.value == [b"v-", &p.key[..]].concat()));
    assert_eq!(cluster.received_of("batch_get").len(), 3);

    assert_eq!(client.delete_range("b", "r").await.unwrap(), 4);
    let mut deletes = served(&cluster.received_of("delete_range"));
    deletes.sort();
    assert_eq!(
        deletes,
        [
            (1, 1, strings(&["b", "g"])),
            (2, 2, strings(&["g", "p"])),
            (3, 3, strings(&["p", "r"])),
        ]
    );
    assert_eq!(cluster.keys(), [b"a".to_vec(), b"r".to_vec()]);
}

#[tokio::test]
async fn a_scan_stays_complete_and_ordered_when_a_region_splits_under_it() {
    let cluster = thirty_keys_in_three_regions().await;
    let client = cluster.client(&[1]).await;
    // The scan's second request, the first to region 2, meets the split.
    cluster.split_before_scan(PlannedSplit {
        at_scan: 2,
        split_key: b"k15".to_vec(),
        new_region_id: 4,
        new_leader: 1,
    });

    let pairs = client.scan("", "", 0, false).await.unwrap();

    let expected: Vec<String> = (0..30).map(|i| format!("k{i:02}")).collect();
    assert_eq!(pair_keys(&pairs), expected);
    let scans = cluster.received_of("scan");
    assert_eq!(
        (scans[1].node, scans[1].header.region_id, scans[1].refused),
        (2, 2, Some("EpochNotMatch"))
    );
    assert_eq!(
        served(&scans),
        [
            (1, 1, strings(&["", "k10"])),
            (2, 2, strings(&["k10", "k15"])),
            (1, 4, strings(&["k15", "k20"])),
            (3, 3, strings(&["k20", ""])),
        ]
    );

    // Writes after the split go to the new region's leader.
    client.put("k17", "new").await.unwrap();
    let put = cluster.received_of("put").pop().unwrap();
    assert_eq!((put.node, put.header.region_id, put.refused), (1, 4, None));
    assert_eq!(put.header.region_epoch.unwrap().version, 2);
}

#[tokio::test]
async fn a_reverse_scan_with_a_limit_walks_the_regions_downwards() {
    let cluster = thirty_keys_in_three_regions().await;
    let client = cluster.client(&[2]).await;
    cluster.split_before_scan(PlannedSplit {
        at_scan: 1,
        split_key: b"k25".to_vec(),
        new_region_id: 4,
        new_leader: 3,
    });

    let pairs = client.scan("k03", "k27", 20, true).await.unwrap();

    let expected: Vec<String> = (7..27).rev().map(|i| format!("k{i:02}")).collect();
    assert_eq!(pair_keys(&pairs), expected);
    assert_eq!(
        served(&cluster.received_of("scan")),
        [
            (3, 4, strings(&["k25", "k27"])),
            (3, 3, strings(&["k20", "k25"])),
            (2, 2, strings(&["k10", "k20"])),
            (1, 1, strings(&["k03", "k10"])),
        ]
    );
}

#[tokio::test]
async fn a_scan_resumes_inside_a_region_from_where_it_stopped_after_a_split() {
    let cluster =
        FakeCluster::start(3, vec![(region(1, "", "m"), 1), (region(2, "m", ""), 2)]).await;
    for i in 0..12_000 {
        cluster.insert(format!("a{i:05}"), "v");
    }
    for i in 1..=5 {
        cluster.insert(format!("n{i}"), "v");
    }
    let client = cluster.client(&[1]).await;
    // The first request fills its limit inside region 1; the second, which
    // continues there, meets the split.
    cluster.split_before_scan(PlannedSplit {
        at_scan: 2,
        split_key: b"a10500".to_vec(),
        new_region_id: 5,
        new_leader: 2,
    });

    let pairs = client.scan("", "", 20_000, false).await.unwrap();

    let keys: Vec<Vec<u8>> = pairs.into_iter().map(|pair| pair.key).collect();
    assert_eq!(keys, cluster.keys(), "every key once, in order");
    let served = served(&cluster.received_of("scan"));
    let starts: Vec<(u64, &str)> = served
        .iter()
        .map(|(_, region, keys)| (*region, keys[0].as_str()))
        .collect();
    assert_eq!(starts, [(1, ""), (1, "a09999\0"), (5, "a10500"), (2, "m")]);
}

#[tokio::test]
async fn a_moved_leader_is_learned_from_the_hint() {
    let cluster = FakeCluster::start(3, three_regions()).await;
    let client = cluster.client(&[1]).await;
    client.put("q", "1").await.unwrap();

    cluster.set_leader(3, 1);
    client.put("r", "2").await.unwrap();
    client.put("s", "3").await.unwrap();

    let puts: Vec<(u64, Vec<String>, Option<&str>)> = cluster
        .received_of("put")
        .iter()
        .map(|r| (r.node, r.key_strings(), r.refused))
        .collect();
    assert_eq!(
        puts,
        [
            (3, strings(&["q"]), None),
            (3, strings(&["r"]), Some("NotLeader")),
            (1, strings(&["r"]), None),
            (1, strings(&["s"]), None),
        ]
    );
    let sequences: Vec<u64> = cluster
        .received_of("put")
        .iter()
        .map(|r| r.header.sequence)
        .collect();
    assert_eq!(sequences[1], sequences[2], "a redirect keeps the sequence");
}

#[tokio::test]
async fn split_region_splits_at_the_leader_and_the_halves_are_routed() {
    let cluster = FakeCluster::start(3, three_regions()).await;
    let client = cluster.client(&[1]).await;

    let (left, right) = client.split_region("k").await.unwrap();

    assert_eq!(
        (left.id, &left.start_key[..], &left.end_key[..]),
        (2, &b"g"[..], &b"k"[..])
    );
    assert_eq!(
        (right.start_key.as_slice(), right.end_key.as_slice()),
        (&b"k"[..], &b"p"[..])
    );
    assert_eq!(cluster.regions().len(), 4);
    let splits = cluster.received_of("split_region");
    assert_eq!(served(&splits), [(2, 2, strings(&["k"]))]);
    assert_ne!(splits[0].header.sequence, 0);

    client.put("m", "v").await.unwrap();
    let put = cluster.received_of("put").pop().unwrap();
    assert_eq!(
        (put.node, put.header.region_id, put.refused),
        (2, right.id, None)
    );

    let again = client.split_region("k").await.unwrap();
    assert_eq!(
        again,
        (left.clone(), right.clone()),
        "already split there: the same halves"
    );
    let fresh = cluster.client(&[3]).await;
    let from_fresh_cache = fresh.split_region("k").await.unwrap();
    assert_eq!(
        from_fresh_cache,
        (left, right),
        "a client that never saw the split"
    );
    assert_eq!(cluster.received_of("split_region").len(), 1);
    assert!(matches!(
        client.split_region("").await,
        Err(ClientError::InvalidArgument(_))
    ));
}

#[tokio::test]
async fn concurrent_misses_share_one_refresh() {
    let cluster = FakeCluster::start(3, three_regions()).await;
    let client = cluster.client(&[1]).await;

    let reads = (0..16).map(|i| client.get(["a", "h", "q"][i % 3]));
    for read in futures::future::join_all(reads).await {
        assert_eq!(read.unwrap(), None);
    }

    assert_eq!(
        cluster.status_calls(),
        3,
        "one refresh: the configured node, then the two members it named"
    );
    assert!(cluster.received().iter().all(|r| r.refused.is_none()));
}

#[tokio::test]
async fn the_cluster_view_merges_every_node_and_marks_stopped_ones_down() {
    let cluster = FakeCluster::start(3, three_regions()).await;
    cluster.insert("h", "1");
    cluster.insert("i", "2");
    let client = cluster.client(&[1]).await;

    let view = client.cluster_view().await;

    let regions: Vec<(Region, u64)> = view
        .regions
        .iter()
        .map(|r| (r.region.clone(), r.leader.unwrap()))
        .collect();
    assert_eq!(regions, cluster.regions());
    assert_eq!(view.regions[1].approximate_keys, 2);
    assert!(view.stores.iter().all(|s| s.up));
    assert_eq!(
        view.stores.iter().map(|s| s.id).collect::<Vec<_>>(),
        [1, 2, 3]
    );

    cluster.stop(3);
    let view = client.cluster_view().await;

    let up: Vec<(u64, bool)> = view.stores.iter().map(|s| (s.id, s.up)).collect();
    assert_eq!(up, [(1, true), (2, true), (3, false)]);
    assert_eq!(
        view.stores[2].client_addr.as_deref(),
        Some(&cluster.addrs[&3][..])
    );
    assert_eq!(view.regions.len(), 3);
    assert_eq!(view.regions[2].leader, Some(3), "named by the followers");
    assert_eq!(view.answers.iter().filter(|(_, a)| a.is_err()).count(), 1);
}

#[tokio::test]
async fn a_batch_part_refused_after_a_split_is_replanned_with_its_sequence() {
    let cluster = FakeCluster::start(3, three_regions()).await;
    let client = cluster.client(&[1]).await;
    assert_eq!(
        client.get("h").await.unwrap(),
        None,
        "warms the route cache"
    );
    cluster.split("k", 4, 3);
    let pairs: Vec<KvPair> = ["h", "m", "a"]
        .iter()
        .map(|key| KvPair {
            key: key.as_bytes().to_vec(),
            value: b"v".to_vec(),
        })
        .collect();

    client.batch_put(pairs).await.unwrap();

    let puts = cluster.received_of("batch_put");
    let mut served_puts = served(&puts);
    served_puts.sort();
    assert_eq!(
        served_puts,
        [
            (1, 1, strings(&["a"])),
            (2, 2, strings(&["h"])),
            (3, 4, strings(&["m"])),
        ]
    );
    let refused = puts
        .iter()
        .find(|r| r.refused == Some("EpochNotMatch"))
        .expect("the part for the old region 2 was refused");
    assert_eq!(refused.key_strings(), strings(&["h", "m"]));
    let sequence_of = |key: &str| {
        puts.iter()
            .find(|r| r.refused.is_none() && r.key_strings() == [key])
            .unwrap()
            .header
            .sequence
    };
    assert_eq!(sequence_of("h"), refused.header.sequence);
    assert_eq!(sequence_of("m"), refused.header.sequence);
    assert_ne!(sequence_of("a"), refused.header.sequence);
    assert_eq!(
        cluster.keys(),
        [b"a".to_vec(), b"h".to_vec(), b"m".to_vec()]
    );
}
