//! The client's retry and leader-switch behaviour against fake in-process
//! nodes: which errors are retried, where retries go, what a write's header
//! looks like across retries, and what a write reports when it gives up.

mod fake_kv;

use client::ClientError;
use fake_kv::{client, dead_addr, FakeNode, Reply};
use std::time::Duration;

const GENEROUS: Duration = Duration::from_secs(5);
const SHORT: Duration = Duration::from_millis(300);

#[tokio::test]
async fn indeterminate_write_is_retried_with_the_same_client_id_and_sequence() {
    let node = FakeNode::start(
        1,
        vec![Reply::Indeterminate, Reply::Indeterminate],
        Reply::Ok,
    )
    .await;
    let client = client(&[&node.addr], GENEROUS).await;

    client.put("k", "v1").await.unwrap();
    client.put("k", "v2").await.unwrap();

    let received = node.received();
    assert_eq!(received.len(), 4, "{received:?}");
    let headers: Vec<_> = received.iter().map(|r| r.header.unwrap()).collect();
    assert!(headers
        .iter()
        .all(|h| h.client_id == client.client_id() && h.client_id != 0));
    let first = headers[0].sequence;
    assert_ne!(first, 0);
    assert_eq!(
        headers[1].sequence, first,
        "retry after indeterminate changed the sequence"
    );
    assert_eq!(
        headers[2].sequence, first,
        "retry after indeterminate changed the sequence"
    );
    assert!(headers[3].sequence > first, "a new write reused a sequence");
}

#[tokio::test]
async fn every_write_kind_gets_a_fresh_sequence_and_reads_get_none() {
    let node = FakeNode::start(1, vec![], Reply::Ok).await;
    let client = client(&[&node.addr], GENEROUS).await;

    client.put("a", "1").await.unwrap();
    client
        .batch_put(vec![client::KvPair {
            key: b"b".to_vec(),
            value: b"2".to_vec(),
        }])
        .await
        .unwrap();
    assert!(client.delete("a").await.unwrap());
    assert_eq!(client.delete_range("a", "z").await.unwrap(), 3);
    let cas = client
        .compare_and_swap("a", None, Some(b"2".to_vec()))
        .await
        .unwrap();
    assert!(cas.succeeded && cas.previous.is_none());
    assert_eq!(client.get("a").await.unwrap().as_deref(), Some(&b"v"[..]));
    client.scan("a", "", 10, false).await.unwrap();

    let received = node.received();
    let sequences: Vec<u64> = received
        .iter()
        .filter_map(|r| r.header.as_ref())
        .map(|h| h.sequence)
        .collect();
    assert_eq!(sequences.len(), 5, "{received:?}");
    assert!(sequences.windows(2).all(|w| w[0] < w[1]), "{sequences:?}");
    assert!(received
        .iter()
        .filter(|r| matches!(r.method, "get" | "scan"))
        .all(|r| r.header.is_none()));
}

#[tokio::test]
async fn not_leader_hint_is_followed_and_remembered() {
    let leader = FakeNode::start(2, vec![], Reply::Ok).await;
    let follower = FakeNode::start(1, vec![], Reply::NotLeader(Some(leader.addr.clone()))).await;
    let client = client(&[&follower.addr], GENEROUS).await;

    client.put("k", "v").await.unwrap();
    assert_eq!(client.get("k").await.unwrap().as_deref(), Some(&b"v"[..]));

    assert_eq!(
        follower.received().len(),
        1,
        "the second request should go straight to the leader"
    );
    let at_leader = leader.received();
    assert_eq!(
        at_leader.iter().map(|r| r.method).collect::<Vec<_>>(),
        ["put", "get"]
    );
    assert_eq!(
        client.endpoints(),
        [follower.addr.clone(), leader.addr.clone()]
    );
}

#[tokio::test]
async fn not_leader_without_hint_tries_the_next_endpoint() {
    let follower = FakeNode::start(1, vec![], Reply::NotLeader(None)).await;
    let leader = FakeNode::start(2, vec![], Reply::Ok).await;
    let client = client(&[&follower.addr, &leader.addr], GENEROUS).await;

    client.put("k", "v").await.unwrap();

    assert_eq!(follower.received().len(), 1);
    assert_eq!(leader.received().len(), 1);
}

#[tokio::test]
async fn unreachable_endpoint_is_skipped() {
    let dead = dead_addr().await;
    let node = FakeNode::start(1, vec![], Reply::Ok).await;
    let client = client(&[&dead, &node.addr], GENEROUS).await;

    client.put("k", "v").await.unwrap();

    assert_eq!(node.received().len(), 1);
}

#[tokio::test]
async fn unavailable_is_retried_until_it_succeeds() {
    let node = FakeNode::start(1, vec![Reply::Unavailable, Reply::Unavailable], Reply::Ok).await;
    let client = client(&[&node.addr], GENEROUS).await;

    client.put("k", "v").await.unwrap();

    assert_eq!(node.received().len(), 3);
}

#[tokio::test]
async fn invalid_argument_is_not_retried() {
    let node = FakeNode::start(1, vec![], Reply::InvalidArgument).await;
    let client = client(&[&node.addr], GENEROUS).await;

    let err = client.put("k", "v").await.unwrap_err();

    assert!(
        matches!(&err, ClientError::InvalidArgument(msg) if msg.contains("key too large")),
        "{err}"
    );
    assert_eq!(node.received().len(), 1);
}

#[tokio::test]
async fn write_gives_up_indeterminate_when_the_deadline_passes() {
    let node = FakeNode::start(1, vec![], Reply::Indeterminate).await;
    let client = client(&[&node.addr], SHORT).await;

    let err = client.put("k", "v").await.unwrap_err();

    assert!(matches!(err, ClientError::Indeterminate(_)), "{err}");
    let received = node.received();
    assert!(received.len() >= 2, "expected retries, got {received:?}");
    assert!(received.windows(2).all(|w| w[0].header == w[1].header));
}

#[tokio::test]
async fn write_stays_indeterminate_when_later_attempts_are_refused() {
    let node = FakeNode::start(1, vec![Reply::Indeterminate], Reply::Unavailable).await;
    let client = client(&[&node.addr], SHORT).await;

    let err = client.put("k", "v").await.unwrap_err();

    assert!(matches!(err, ClientError::Indeterminate(_)), "{err}");
}

#[tokio::test]
async fn write_never_executed_gives_up_unavailable() {
    let node = FakeNode::start(1, vec![], Reply::Unavailable).await;
    let client = client(&[&node.addr], SHORT).await;

    let err = client.put("k", "v").await.unwrap_err();

    assert!(matches!(err, ClientError::Unavailable(_)), "{err}");
}

#[tokio::test]
async fn hung_attempts_make_writes_indeterminate_and_reads_time_out() {
    let node = FakeNode::start(1, vec![], Reply::Hang).await;
    let client = client(&[&node.addr], SHORT).await;

    let write = client.put("k", "v").await.unwrap_err();
    let read = client.get("k").await.unwrap_err();

    assert!(matches!(write, ClientError::Indeterminate(_)), "{write}");
    assert!(matches!(read, ClientError::Timeout(_)), "{read}");
}

#[tokio::test]
async fn cluster_status_reports_each_endpoint() {
    let node = FakeNode::start(7, vec![], Reply::Ok).await;
    let dead = dead_addr().await;
    let client = client(&[&node.addr, &dead], GENEROUS).await;

    let statuses = client.cluster_status().await;

    assert_eq!(statuses.len(), 2);
    assert_eq!(statuses[0].0, node.addr);
    assert_eq!(statuses[0].1.as_ref().unwrap().node_id, 7);
    assert_eq!(statuses[1].0, dead);
    assert!(
        matches!(statuses[1].1, Err(ClientError::Transport(_))),
        "{:?}",
        statuses[1].1
    );
}

#[tokio::test]
async fn bad_configuration_is_refused_at_connect() {
    let tls = client::ClientConfig::new(["https://127.0.0.1:1"]);
    assert!(matches!(
        client::Client::connect(tls).await,
        Err(ClientError::Config(_))
    ));
    let none = client::ClientConfig::new(Vec::<String>::new());
    assert!(matches!(
        client::Client::connect(none).await,
        Err(ClientError::Config(_))
    ));
}
