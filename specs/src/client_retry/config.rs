//! What to check: the clients' workloads, how often they retry, how
//! retries are identified, and the default bounds.

use super::client::RetryPolicy;
use crate::depth::Depth;
use crate::register_spec::{RegisterOp, Value};

/// One workload per client (client `i` is actor `i + 1`; the server is
/// actor 0), retries per operation, and how retries are identified.
#[derive(Clone, Debug)]
pub struct RetryModelConfig {
    pub workloads: Vec<Vec<RegisterOp>>,
    pub retry_max: u8,
    pub policy: RetryPolicy,
}

fn value(text: &str) -> Value {
    Value::from_str_bytes(text)
}

impl RetryModelConfig {
    /// Two clients racing on the register: puts, CASes that depend on each
    /// other's writes, and reads after them.
    pub fn contended(policy: RetryPolicy, depth: Depth) -> RetryModelConfig {
        let first = vec![
            RegisterOp::Put(value("a")),
            RegisterOp::Cas {
                expected: Some(value("a")),
                new: value("b"),
            },
            RegisterOp::Read,
        ];
        let mut second = vec![
            RegisterOp::Cas {
                expected: None,
                new: value("c"),
            },
            RegisterOp::Read,
        ];
        let retry_max = match depth {
            Depth::Quick => 1,
            Depth::Deep => {
                second.insert(1, RegisterOp::Put(value("d")));
                2
            }
        };
        RetryModelConfig {
            workloads: vec![first, second],
            retry_max,
            policy,
        }
    }
}
