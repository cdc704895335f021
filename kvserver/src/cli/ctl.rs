//! `flotilla ctl`: one data or admin command against a running cluster,
//! printed as plain text. A command that fails exits non-zero with the
//! client's error message; a missing key is an answer (`(not found)`), not a
//! failure. Keys in region listings are quoted with non-printable bytes
//! escaped (`\xNN`); an empty start or end key, the edge of the keyspace,
//! prints as `(start)` or `(end)`.

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use client::{
    CasOutcome, Client, ClientConfig, ClusterView, KvPair, Region, StatusResponse, Timestamp,
};

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
    /// Split the region holding KEY at KEY (KEY starts the right half).
    Split {
        /// The split key.
        key: String,
    },
    /// Print every region of the cluster: range, leader, peers, size, epoch.
    Regions,
    /// Print every store: address, whether it answered, regions and leaders.
    Stores,
    /// Print one timestamp from the timestamp oracle: its value, its
    /// physical part (ms since the Unix epoch, and as UTC) and its logical
    /// part.
    Tso,
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
        CtlCommand::Status => print_status(client.cluster_view().await.answers)?,
        CtlCommand::Split { key } => {
            let (left, right) = client.split_region(key).await?;
            println!("left:  {}", describe_region(&left));
            println!("right: {}", describe_region(&right));
        }
        CtlCommand::Regions => print_regions(&answered_view(&client).await?),
        CtlCommand::Stores => print_stores(&answered_view(&client).await?),
        CtlCommand::Tso => print_timestamp(client.get_timestamp().await?),
    }
    Ok(())
}

/// The merged cluster view; fails if no node answered.
async fn answered_view(client: &Client) -> anyhow::Result<ClusterView> {
    let view = client.cluster_view().await;
    if view.answers.iter().all(|(_, answer)| answer.is_err()) {
        let failures: Vec<String> = view
            .answers
            .iter()
            .filter_map(|(endpoint, answer)| {
                answer
                    .as_ref()
                    .err()
                    .map(|err| format!("{endpoint}: {err}"))
            })
            .collect();
        bail!("no node answered: {}", failures.join("; "));
    }
    Ok(view)
}

/// A key for display: quoted and escaped, or `empty` for the empty key.
fn display_key(key: &[u8], empty: &str) -> String {
    if key.is_empty() {
        empty.to_string()
    } else {
        format!("\"{}\"", key.escape_ascii())
    }
}

/// `version/conf_ver`.
fn display_epoch(region: &Region) -> String {
    region.epoch.map_or("-".to_string(), |epoch| {
        format!("{}/{}", epoch.version, epoch.conf_ver)
    })
}

fn describe_region(region: &Region) -> String {
    format!(
        "region {} [{}, {}) epoch {}",
        region.id,
        display_key(&region.start_key, "(start)"),
        display_key(&region.end_key, "(end)"),
        display_epoch(region)
    )
}

/// One row per region, in key order.
fn print_regions(view: &ClusterView) {
    const HEADER: [&str; 8] = [
        "region",
        "start",
        "end",
        "leader",
        "peers",
        "approx keys",
        "approx bytes",
        "epoch ver/conf",
    ];
    let rows: Vec<Vec<String>> = view
        .regions
        .iter()
        .map(|region| {
            let peers: Vec<String> = region
                .region
                .peers
                .iter()
                .map(|peer| peer.store_id.to_string())
                .collect();
            vec![
                region.region.id.to_string(),
                display_key(&region.region.start_key, "(start)"),
                display_key(&region.region.end_key, "(end)"),
                region.leader.map_or("-".to_string(), |id| id.to_string()),
                peers.join(","),
                region.approximate_keys.to_string(),
                region.approximate_bytes.to_string(),
                display_epoch(&region.region),
            ]
        })
        .collect();
    print_table(&HEADER, &rows);
}

/// One row per store, by id: regions it holds a replica of and leads.
fn print_stores(view: &ClusterView) {
    const HEADER: [&str; 5] = ["store", "client addr", "state", "regions", "leaders"];
    let rows: Vec<Vec<String>> = view
        .stores
        .iter()
        .map(|store| {
            let replicas = view
                .regions
                .iter()
                .filter(|r| r.region.peers.iter().any(|p| p.store_id == store.id))
                .count();
            let leaders = view
                .regions
                .iter()
                .filter(|r| r.leader == Some(store.id))
                .count();
            vec![
                store.id.to_string(),
                store.client_addr.clone().unwrap_or_else(|| "-".to_string()),
                if store.up { "up" } else { "down" }.to_string(),
                replicas.to_string(),
                leaders.to_string(),
            ]
        })
        .collect();
    print_table(&HEADER, &rows);
}

fn print_timestamp(timestamp: Timestamp) {
    println!("timestamp: {}", timestamp.0);
    println!(
        "physical:  {} ms ({})",
        timestamp.physical_ms(),
        utc_from_unix_ms(timestamp.physical_ms())
    );
    println!("logical:   {}", timestamp.logical());
}

/// `ms` since the Unix epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ` (proleptic
/// Gregorian calendar; days to dates by Howard Hinnant's `civil_from_days`).
fn utc_from_unix_ms(ms: u64) -> String {
    let (days, ms_of_day) = (ms / 86_400_000, ms % 86_400_000);
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        ms_of_day / 3_600_000,
        ms_of_day / 60_000 % 60,
        ms_of_day / 1_000 % 60,
        ms_of_day % 1_000
    )
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_quoted_and_escaped_and_the_edges_named() {
        assert_eq!(display_key(b"", "(start)"), "(start)");
        assert_eq!(display_key(b"bench-1", "(end)"), "\"bench-1\"");
        assert_eq!(
            display_key(b"a\"b\\\x00\xff", "(end)"),
            r#""a\"b\\\x00\xff""#
        );
    }

    #[test]
    fn physical_times_print_as_utc() {
        assert_eq!(utc_from_unix_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            utc_from_unix_ms(951_782_400_000),
            "2000-02-29T00:00:00.000Z"
        );
        assert_eq!(
            utc_from_unix_ms(1_700_000_000_123),
            "2023-11-14T22:13:20.123Z"
        );
        assert_eq!(
            utc_from_unix_ms(4_102_444_799_999),
            "2099-12-31T23:59:59.999Z"
        );
    }
}
