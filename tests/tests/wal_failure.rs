//! A node whose WAL can no longer be written (a full or failing disk) must
//! stop with an error that says what happened and what to do — not keep
//! running with a dead shard, and not acknowledge anything it did not sync.
//!
//! The failure is injected with the `wal_persist` fail point (the test
//! binary is built with the `failpoints` feature).

use flotilla_tests::cluster::allocate_addresses;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Election, first sync and shutdown all fit well inside this.
const EXIT_DEADLINE: Duration = Duration::from_secs(30);
const POLL_INTERVAL: Duration = Duration::from_millis(50);

#[test]
fn a_node_whose_wal_cannot_be_written_stops_with_an_actionable_error() {
    let scratch = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("scratch dir");
    let addrs = allocate_addresses(1).expect("a loopback address");
    let mut child = Command::new(env!("CARGO_BIN_EXE_flotilla-under-test"))
        .args(["server", "--id", "1", "--shards", "1", "--no-pin"])
        .arg("--initial-cluster")
        .arg(format!("1={}", addrs[0].peer))
        .arg("--client-addr")
        .arg(addrs[0].client.to_string())
        .arg("--data-dir")
        .arg(scratch.path().join("node-1"))
        .env("FAILPOINTS", "wal_persist=return(disk full)")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the server");
    let deadline = Instant::now() + EXIT_DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().expect("poll the server") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the server kept running for {EXIT_DEADLINE:?} with a failing WAL");
        }
        std::thread::sleep(POLL_INTERVAL);
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("piped stderr")
        .read_to_string(&mut stderr)
        .expect("read stderr");
    assert!(!status.success(), "exit status {status}; stderr:\n{stderr}");
    assert!(
        stderr.contains("could no longer write its WAL")
            && stderr.contains("injected WAL failure: disk full")
            && stderr.contains("restart the node"),
        "the error names the cause and the remedy; stderr:\n{stderr}"
    );
}
