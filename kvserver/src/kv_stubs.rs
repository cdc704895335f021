//! [`KvStubs`]: lazily connecting `Kv` clients to other nodes, one per
//! address, shared by every call a node makes to another node's client API
//! (the placement driver's operators, the merge coordinator).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use flotilla_proto::kvpb::kv_client::KvClient;
use tonic::transport::{Channel, Endpoint};

pub struct KvStubs {
    stubs: Mutex<HashMap<String, KvClient<Channel>>>,
    connect_timeout: Duration,
    /// The largest message a stub sends or accepts.
    message_bytes_max: usize,
}

impl KvStubs {
    pub fn new(connect_timeout: Duration, message_bytes_max: usize) -> KvStubs {
        KvStubs {
            stubs: Mutex::new(HashMap::new()),
            connect_timeout,
            message_bytes_max,
        }
    }

    /// A lazily connecting stub for `addr`, shared by later calls.
    pub fn get(&self, addr: &str) -> Result<KvClient<Channel>, String> {
        let mut stubs = self.stubs.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(stub) = stubs.get(addr) {
            return Ok(stub.clone());
        }
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|err| format!("bad address: {err}"))?
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true)
            .connect_lazy();
        let stub = KvClient::new(channel)
            .max_encoding_message_size(self.message_bytes_max)
            .max_decoding_message_size(self.message_bytes_max);
        stubs.insert(addr.to_string(), stub.clone());
        Ok(stub)
    }
}
