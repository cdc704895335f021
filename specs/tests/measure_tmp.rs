use std::time::{Duration, Instant};
use specs::client_retry::*;
use specs::register_spec::*;
use stateright::{Checker, Model};

fn v(t: &str) -> Value { Value::from_str_bytes(t) }

fn run(name: &str, config: RetryModelConfig) {
    let t = Instant::now();
    let c = config.into_model().checker().timeout(Duration::from_secs(60)).spawn_bfs().join();
    println!("{name}: unique {} total {} depth {} done {} in {:?} disc {:?}", c.unique_state_count(), c.state_count(), c.max_depth(), c.is_done(), t.elapsed(), c.discoveries().keys().collect::<Vec<_>>());
}

#[test]
fn measure() {
    let cas = vec![
        vec![RegisterOp::Cas { expected: None, new: v("a") }, RegisterOp::Read],
        vec![RegisterOp::Cas { expected: None, new: v("b") }, RegisterOp::Read],
    ];
    run("cas2x2", RetryModelConfig { workloads: cas.clone(), retry_max: 1, policy: RetryPolicy::ReuseWriteId });
    let put = vec![
        vec![RegisterOp::Put(v("a")), RegisterOp::Put(v("b")), RegisterOp::Read],
        vec![RegisterOp::Read],
    ];
    run("put3+1", RetryModelConfig { workloads: put, retry_max: 1, policy: RetryPolicy::ReuseWriteId });
    run("contended quick", RetryModelConfig::contended(RetryPolicy::ReuseWriteId, Depth::Quick));
}
