//! Turning a running node's fault-injection points on and off through its
//! status endpoint (`PUT /fail/NAME` with the actions as the body, `DELETE
//! /fail/NAME`), for tests that must hold a node at one exact step while
//! they act on the cluster.
//!
//! Only the test binary serves these routes (it is built with the
//! `failpoints` feature). A minimal HTTP/1.1 client is enough: one request
//! per connection, and only the status line of the answer matters.

use super::Cluster;
use crate::Error;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

impl Cluster {
    /// Configures fail point `name` on `node` with `actions` (the `fail`
    /// crate's syntax, e.g. `return`, `pause`, `50%return`).
    pub async fn set_fail_point(&self, node: u64, name: &str, actions: &str) -> Result<(), Error> {
        let addr = self.node(node)?.addresses.status;
        request(addr, "PUT", name, actions).await
    }

    /// Turns fail point `name` on `node` off.
    pub async fn remove_fail_point(&self, node: u64, name: &str) -> Result<(), Error> {
        let addr = self.node(node)?.addresses.status;
        request(addr, "DELETE", name, "").await
    }
}

async fn request(addr: SocketAddr, method: &str, name: &str, body: &str) -> Result<(), Error> {
    let io_error = |context: &str| {
        let context = format!("{method} /fail/{name} at {addr}: {context}");
        move |source| Error::Io { context, source }
    };
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(io_error("connecting"))?;
    let request = format!(
        "{method} /fail/{name} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(io_error("sending"))?;
    let mut answer = Vec::new();
    stream
        .read_to_end(&mut answer)
        .await
        .map_err(io_error("reading the answer"))?;
    let answer = String::from_utf8_lossy(&answer);
    let status_line = answer.lines().next().unwrap_or_default();
    if status_line.split_whitespace().nth(1) == Some("200") {
        return Ok(());
    }
    Err(Error::Io {
        context: format!("{method} /fail/{name} at {addr}"),
        source: std::io::Error::other(format!("answered {answer:?}")),
    })
}
