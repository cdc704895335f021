//! `flotilla ctl`: one data or admin command against a running cluster,
//! printed as plain text. A command that fails exits non-zero with the
//! client's error message; a missing key is an answer (`(not found)`), not a
//! failure. Keys in region listings are quoted with non-printable bytes
//! escaped (`\xNN`); an empty start or end key, the edge of the keyspace,
//! prints as `(start)` or `(end)`.

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use client::{
    CasOutcome, Client, ClientConfig, KvPair, PeerChange, PlacementRegion, PlacementStore, Region,
    StatusResponse, StoreLiveness, StoreState, Timestamp,
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
    /// Merge region SOURCE into its neighbour TARGET (same voters, no
    /// learners); the merged region keeps TARGET's id.
    Merge {
        /// The region that goes away.
        source: u64,
        /// The neighbour that absorbs it.
        target: u64,
    },
    /// Print every region as the placement driver knows it: range, leader,
    /// peers, size, epoch.
    Regions,
    /// Print every store the placement driver knows: address, state,
    /// liveness, regions, leaders, capacity and free space.
    Stores,
    /// Decommission a store (`offline`: the placement driver moves its
    /// replicas away, then marks it tombstone) or bring it back (`up`).
    StoreState {
        /// The store's id.
        store: u64,
        /// `offline` or `up`.
        state: StoreStateArg,
    },
    /// Print one timestamp from the timestamp oracle: its value, its
    /// physical part (ms since the Unix epoch, and as UTC) and its logical
    /// part.
    Tso,
    /// Hand a region's leadership to the voter on STORE; waits until it
    /// leads.
    TransferLeader {
        /// The region's id.
        region: u64,
        /// The store to lead it.
        store: u64,
    },
    /// Add a replica on STORE that receives the region's log but does not
    /// vote (it catches up by snapshot and log).
    AddLearner {
        /// The region's id.
        region: u64,
        /// The store to hold the learner.
        store: u64,
    },
    /// Make the learner on STORE a voter of the region.
    Promote {
        /// The region's id.
        region: u64,
        /// The learner's store.
        store: u64,
    },
    /// Remove STORE's replica of the region (refused if the remaining
    /// voters would not have a live majority).
    RemovePeer {
        /// The region's id.
        region: u64,
        /// The store whose replica goes.
        store: u64,
    },
    /// Move a region's replica from store FROM to store TO: learner on TO,
    /// wait until it caught up, then promote TO and remove FROM at once.
    MoveReplica {
        /// The region's id.
        region: u64,
        /// The store that gives up its replica.
        from: u64,
        /// The store that receives it.
        to: u64,
    },
}

/// The store states an operator may set.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum StoreStateArg {
    Offline,
    Up,
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
        CtlCommand::Merge { source, target } => {
            let merged = client.merge_regions(source, target).await?;
            println!("merged: {}", describe_region(&merged));
        }
        CtlCommand::Regions => {
            let regions = client
                .placement()
                .scan_regions(Vec::new(), Vec::new(), 0)
                .await
                .context(NO_PLACEMENT_LEADER)?;
            print_regions(&regions);
        }
        CtlCommand::Stores => {
            let stores = client
                .placement()
                .get_all_stores()
                .await
                .context(NO_PLACEMENT_LEADER)?;
            print_stores(&stores);
        }
        CtlCommand::StoreState { store, state } => {
            let state = match state {
                StoreStateArg::Offline => StoreState::Offline,
                StoreStateArg::Up => StoreState::Up,
            };
            let updated = client
                .placement()
                .set_store_state(store, state)
                .await
                .context(NO_PLACEMENT_LEADER)?;
            print_stores(&updated.into_iter().collect::<Vec<_>>());
        }
        CtlCommand::Tso => print_timestamp(client.get_timestamp().await?),
        CtlCommand::TransferLeader { region, store } => {
            client.transfer_leader(region, store).await?;
            println!("region {region}: led by store {store}");
        }
        CtlCommand::AddLearner { region, store } => {
            let changed = client
                .change_peers(region, &[PeerChange::AddLearner(store)])
                .await?;
            println!("{}", describe_membership(&changed));
        }
        CtlCommand::Promote { region, store } => {
            let changed = client
                .change_peers(region, &[PeerChange::Promote(store)])
                .await?;
            println!("{}", describe_membership(&changed));
        }
        CtlCommand::RemovePeer { region, store } => {
            let changed = client
                .change_peers(region, &[PeerChange::Remove(store)])
                .await?;
            println!("{}", describe_membership(&changed));
        }
        CtlCommand::MoveReplica { region, from, to } => {
            let moved = client.move_replica(region, from, to).await?;
            println!("{}", describe_membership(&moved));
        }
    }
    Ok(())
}

/// What a placement query failure means, for the error message.
const NO_PLACEMENT_LEADER: &str =
    "no placement leader answered (the placement driver runs on the leader of the system region; is a majority of the cluster up?)";

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

/// A region and its peers by store, learners marked: `region 1 [...)
/// epoch 1/3 peers 1,2,4(learner)`.
fn describe_membership(region: &Region) -> String {
    let peers: Vec<String> = region
        .peers
        .iter()
        .map(|p| {
            if p.is_learner {
                format!("{}(learner)", p.store_id)
            } else {
                p.store_id.to_string()
            }
        })
        .collect();
    format!("{} peers {}", describe_region(region), peers.join(","))
}

/// One row per region, in key order; learners are marked `L`.
fn print_regions(regions: &[PlacementRegion]) {
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
    let rows: Vec<Vec<String>> = regions
        .iter()
        .filter_map(|info| {
            let region = info.region.as_ref()?;
            let peers: Vec<String> = region
                .peers
                .iter()
                .map(|peer| {
                    if info.learner_store_ids.contains(&peer.store_id) {
                        format!("{}L", peer.store_id)
                    } else {
                        peer.store_id.to_string()
                    }
                })
                .collect();
            Some(vec![
                region.id.to_string(),
                display_key(&region.start_key, "(start)"),
                display_key(&region.end_key, "(end)"),
                info.leader_store_id.to_string(),
                peers.join(","),
                info.approximate_keys.to_string(),
                info.approximate_bytes.to_string(),
                display_epoch(region),
            ])
        })
        .collect();
    print_table(&HEADER, &rows);
}

/// One row per store, by id.
fn print_stores(stores: &[PlacementStore]) {
    const HEADER: [&str; 9] = [
        "store",
        "client addr",
        "state",
        "liveness",
        "regions",
        "leaders",
        "capacity",
        "available",
        "silent",
    ];
    let rows: Vec<Vec<String>> = stores
        .iter()
        .map(|store| {
            let state = match store.state() {
                StoreState::Up => "up",
                StoreState::Offline => "offline",
                StoreState::Tombstone => "tombstone",
            };
            let liveness = match store.liveness() {
                StoreLiveness::Alive => "alive",
                StoreLiveness::Disconnected => "disconnected",
                StoreLiveness::Down => "down",
            };
            let silent = if store.heard_from {
                format!("{} ms", store.silent_ms)
            } else {
                format!("never ({} ms)", store.silent_ms)
            };
            vec![
                store.id.to_string(),
                store.client_addr.clone(),
                state.to_string(),
                liveness.to_string(),
                store.region_count.to_string(),
                store.leader_count.to_string(),
                display_bytes(store.capacity_bytes),
                display_bytes(store.available_bytes),
                silent,
            ]
        })
        .collect();
    print_table(&HEADER, &rows);
}

/// Bytes in the largest binary unit that keeps the number at least 1.
fn display_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
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
    fn memberships_mark_their_learners() {
        let peer = |store_id, is_learner| client::Peer {
            id: store_id,
            store_id,
            is_learner,
        };
        let region = Region {
            id: 1,
            epoch: Some(client::RegionEpoch {
                conf_ver: 3,
                version: 1,
            }),
            peers: vec![peer(1, false), peer(2, false), peer(4, true)],
            ..Region::default()
        };
        assert_eq!(
            describe_membership(&region),
            "region 1 [(start), (end)) epoch 1/3 peers 1,2,4(learner)"
        );
    }

    #[test]
    fn byte_counts_print_in_binary_units() {
        assert_eq!(display_bytes(0), "0 B");
        assert_eq!(display_bytes(1023), "1023 B");
        assert_eq!(display_bytes(1536), "1.5 KiB");
        assert_eq!(display_bytes(100 << 30), "100.0 GiB");
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
