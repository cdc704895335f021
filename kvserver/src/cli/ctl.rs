//! `flotilla ctl`: one data or admin command against a running cluster,
//! printed as plain text. A command that fails exits non-zero with the
//! client's error message; a missing key is an answer (`(not found)`), not a
//! failure.

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use client::{CasOutcome, Client, ClientConfig, KvPair, StatusResponse};
use std::collections::HashSet;

/// Rounds of asking newly learned members for their status.
const DISCOVERY_ROUNDS_MAX: usize = 3;

/// Arguments of `flotilla ctl`.
#[derive(Args, Debug)]
pub struct CtlArgs {
    /// Client addresses of some or all nodes, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1:20160")]
    pub endpoints: Vec<String>,
    /// The command to run.
    #[command(subcommand)]
    pub command: CtlCommand,
}

/// The commands of `flotilla ctl`.
#[derive(Subcommand, Debug)]
pub enum CtlCommand {
    /// Print a key's value, or `(not found)`.
    Get {
        /// The key.
        key: String,
    },
    /// Set a key.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// Remove a key.
    Delete {
        /// The key.
        key: String,
    },
    /// Print the pairs in [start, end), one `key<TAB>value` per line.
    Scan {
        /// First key (inclusive); empty: the start of the keyspace.
        #[arg(long, default_value = "")]
        start: String,
        /// Last key (exclusive); empty: the end of the keyspace.
        #[arg(long, default_value = "")]
        end: String,
        /// Most pairs to print; 0: the server's maximum.
        #[arg(long, default_value_t = 0)]
        limit: u32,
        /// Newest key first, from `end` down to `start`.
        #[arg(long)]
        reverse: bool,
    },
    /// Compare-and-swap: replace a key's value only if it matches.
    Cas {
        /// The key.
        key: String,
        /// The value the key must hold.
        #[arg(
            long,
            conflicts_with = "expect_absent",
            required_unless_present = "expect_absent"
        )]
        expect: Option<String>,
        /// Require the key to be absent.
        #[arg(long)]
        expect_absent: bool,
        /// The replacement value.
        #[arg(
            long = "new",
            conflicts_with = "delete",
            required_unless_present = "delete"
        )]
        new_value: Option<String>,
        /// Delete the key instead of setting it.
        #[arg(long)]
        delete: bool,
    },
    /// Print every node's view of its regions.
    Status,
}

/// Runs one `ctl` command and prints its result.
pub async fn run(args: CtlArgs) -> anyhow::Result<()> {
    let client = Client::connect(ClientConfig::new(args.endpoints))
        .await
        .context("connecting to the cluster")?;
    match args.command {
        CtlCommand::Get { key } => match client.get(key).await? {
            Some(value) => println!("{}", String::from_utf8_lossy(&value)),
            None => println!("(not found)"),
        },
        CtlCommand::Put { key, value } => {
            client.put(key, value).await?;
            println!("OK");
        }
        CtlCommand::Delete { key } => {
            let existed = client.delete(key).await?;
            println!("{}", if existed { "deleted" } else { "(not found)" });
        }
        CtlCommand::Scan {
            start,
            end,
            limit,
            reverse,
        } => print_pairs(&client.scan(start, end, limit, reverse).await?),
        CtlCommand::Cas {
            key,
            expect,
            expect_absent,
            new_value,
            delete,
        } => {
            debug_assert!(expect.is_some() != expect_absent && new_value.is_some() != delete);
            let outcome = client
                .compare_and_swap(
                    key,
                    expect.map(String::into_bytes),
                    new_value.map(String::into_bytes),
                )
                .await?;
            print_cas(&outcome);
        }
        CtlCommand::Status => print_status(discover_status(&client).await)?,
    }
    Ok(())
}

fn print_pairs(pairs: &[KvPair]) {
    if pairs.is_empty() {
        println!("(no keys)");
    }
    for pair in pairs {
        println!(
            "{}\t{}",
            String::from_utf8_lossy(&pair.key),
            String::from_utf8_lossy(&pair.value)
        );
    }
}

fn print_cas(outcome: &CasOutcome) {
    println!(
        "{}",
        if outcome.succeeded {
            "succeeded"
        } else {
            "failed"
        }
    );
    match &outcome.previous {
        Some(value) => println!("previous: {}", String::from_utf8_lossy(value)),
        None => println!("previous: (not found)"),
    }
}

/// Every node's status: the given endpoints first, then members they report
/// that did not answer yet, until no new client address turns up.
async fn discover_status(client: &Client) -> Vec<(String, client::Result<StatusResponse>)> {
    let mut statuses = client.cluster_status().await;
    for _ in 0..DISCOVERY_ROUNDS_MAX {
        let answered: HashSet<u64> = statuses
            .iter()
            .filter_map(|(_, status)| status.as_ref().ok().map(|s| s.node_id))
            .collect();
        let asked: HashSet<&str> = statuses
            .iter()
            .map(|(endpoint, _)| endpoint.as_str())
            .collect();
        let mut new_addrs: Vec<String> = statuses
            .iter()
            .filter_map(|(_, status)| status.as_ref().ok())
            .flat_map(|status| &status.members)
            .filter(|member| !answered.contains(&member.node_id))
            .map(|member| member.client_addr.clone())
            .filter(|addr| !addr.is_empty() && !asked.contains(addr.as_str()))
            .collect();
        new_addrs.sort();
        new_addrs.dedup();
        if new_addrs.is_empty() {
            break;
        }
        let replies =
            futures::future::join_all(new_addrs.iter().map(|addr| client.status(addr))).await;
        statuses.extend(new_addrs.into_iter().zip(replies));
    }
    statuses
}

/// Prints one row per (node, region), ordered by node; fails only if no node
/// answered.
fn print_status(statuses: Vec<(String, client::Result<StatusResponse>)>) -> anyhow::Result<()> {
    const HEADER: [&str; 8] = [
        "node",
        "client addr",
        "region",
        "role",
        "leader",
        "term",
        "commit",
        "applied",
    ];
    let mut answered = Vec::new();
    let mut failures = Vec::new();
    for (endpoint, status) in &statuses {
        match status {
            Ok(status) => answered.push((endpoint.as_str(), status)),
            Err(err) => failures.push(format!("{endpoint}: {err}")),
        }
    }
    answered.sort_by_key(|(_, status)| status.node_id);
    let rows: Vec<Vec<String>> = answered
        .iter()
        .flat_map(|(endpoint, status)| status_rows(endpoint, status))
        .collect();
    print_table(&HEADER, &rows);
    for failure in &failures {
        println!("unreachable: {failure}");
    }
    if answered.is_empty() {
        bail!("no node answered");
    }
    Ok(())
}

fn status_rows(endpoint: &str, status: &StatusResponse) -> Vec<Vec<String>> {
    let client_addr = if status.client_addr.is_empty() {
        endpoint.to_string()
    } else {
        status.client_addr.clone()
    };
    let node = status.node_id.to_string();
    if status.regions.is_empty() {
        let mut row = vec![node, client_addr];
        row.extend(std::iter::repeat_n("-".to_string(), 6));
        return vec![row];
    }
    status
        .regions
        .iter()
        .map(|region| {
            let leader = match region.leader_id {
                0 => "-".to_string(),
                id => id.to_string(),
            };
            vec![
                node.clone(),
                client_addr.clone(),
                region
                    .region
                    .as_ref()
                    .map_or("?".to_string(), |r| r.id.to_string()),
                region.role.clone(),
                leader,
                region.term.to_string(),
                region.commit_index.to_string(),
                region.applied_index.to_string(),
            ]
        })
        .collect()
}

fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        debug_assert_eq!(row.len(), header.len());
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        println!("{}", cells.join("  ").trim_end());
    }
}
