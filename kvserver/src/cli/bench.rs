//! `flotilla bench`: a closed-loop load generator. N closed loops each issue
//! one operation at a time on uniformly random keys; latencies of operations
//! started after the warmup are recorded in a histogram (microseconds), and
//! the report gives throughput, errors and p50/p99/p99.9/max latency, as text
//! or as one JSON line. With `--regions N` the bench first splits its key
//! space into N regions at evenly spaced keys and waits until every region
//! of the cluster has a leader; the report names how many regions exist and
//! how many leaders each store holds. `--balanced-leaders` also waits until
//! the placement driver has spread the leaders (no two stores' counts more
//! than one apart), so a run measures every node leading a share.
//!
//! `--workload tso` measures the timestamp oracle instead: `--clients`
//! independent clients (each its own connection and timestamp stream), each
//! with `--tso-callers` closed loops calling `get_timestamp` (a client's
//! callers spread over one task per core), so the client's batching is
//! what is measured. Each caller checks that its
//! timestamps strictly increase (a violation counts as an error).

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use client::{Client, ClientConfig, ClusterView, KvPair, Timestamp};
use futures::{StreamExt, TryStreamExt};
use hdrhistogram::Histogram;
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Largest latency the histogram tracks exactly (longer ones are clamped).
const LATENCY_MAX_US: u64 = 60_000_000;
/// Bytes per preload batch, to stay well under the server's message limit.
const PRELOAD_BATCH_BYTES_MAX: usize = 1 << 20;
/// Preload batches in flight at once.
const PRELOAD_BATCHES_IN_FLIGHT_MAX: usize = 8;
/// How long to wait for every region to have a leader after the splits.
const REGION_LEADERS_WAIT: Duration = Duration::from_secs(30);
/// Pause between looks at the regions' leaders while waiting.
const REGION_LEADERS_POLL: Duration = Duration::from_millis(100);
/// How long to wait for the placement driver to balance the leaders.
const LEADER_BALANCE_WAIT: Duration = Duration::from_secs(180);
/// Most leaders two stores may differ by to count as balanced (the
/// placement driver's default leader tolerance).
const LEADER_BALANCE_TOLERANCE: usize = 1;

/// Arguments of `flotilla bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Client addresses of some or all nodes, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1:20160")]
    pub endpoints: Vec<String>,
    /// Concurrent closed-loop tasks; with `--workload tso`, independent
    /// clients (each with `--tso-callers` tasks).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    pub clients: u32,
    /// With `--workload tso`: closed-loop `get_timestamp` callers per client,
    /// whose concurrent calls the client batches into one request.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub tso_callers: u32,
    /// Measured seconds (after the warmup).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub duration: u64,
    /// Seconds of load before measuring starts.
    #[arg(long, default_value_t = 2)]
    pub warmup: u64,
    /// What each operation is.
    #[arg(long, value_enum, default_value_t = Workload::Put)]
    pub workload: Workload,
    /// Bytes per value written.
    #[arg(long, default_value_t = 256)]
    pub value_size: usize,
    /// Number of distinct keys operations pick from.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub keys: u64,
    /// Fraction of reads in the mixed workload.
    #[arg(long, default_value_t = 0.5)]
    pub read_ratio: f64,
    /// Regions to split the bench's key space into before the load (at most
    /// `--keys`); existing splits at the same keys are kept.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub regions: u64,
    /// Before the load, wait until the placement driver has balanced the
    /// leaders: no two stores' leader counts differ by more than one.
    #[arg(long)]
    pub balanced_leaders: bool,
    /// Print one JSON line instead of text.
    #[arg(long)]
    pub json: bool,
}

/// The operation mix.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// Only puts.
    Put,
    /// Only gets, of preloaded keys.
    Get,
    /// Gets with probability `--read-ratio`, puts otherwise, on preloaded keys.
    Mixed,
    /// Timestamps from the timestamp oracle (`get_timestamp`).
    Tso,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Workload::Put => "put",
            Workload::Get => "get",
            Workload::Mixed => "mixed",
            Workload::Tso => "tso",
        }
    }

    /// What one operation yields, for the report.
    fn unit(self) -> &'static str {
        match self {
            Workload::Tso => "timestamps",
            Workload::Put | Workload::Get | Workload::Mixed => "ops",
        }
    }
}

/// What one load task measured.
struct TaskResult {
    latencies_us: Histogram<u64>,
    ops: u64,
    errors: u64,
    first_error: Option<String>,
}

/// Runs the benchmark and prints its report.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if !(0.0..=1.0).contains(&args.read_ratio) {
        bail!("--read-ratio must be between 0 and 1");
    }
    if args.regions > args.keys {
        bail!("--regions must not exceed --keys");
    }
    let client = Client::connect(ClientConfig::new(args.endpoints.clone()))
        .await
        .context("connecting to the cluster")?;
    let mut layout = prepare_regions(&client, args.keys, args.regions)
        .await
        .context("preparing regions")?;
    if args.balanced_leaders {
        let waiting_since = Instant::now();
        layout = wait_for_balanced_leaders(&client)
            .await
            .context("waiting for balanced leaders")?;
        tracing::info!(waited = ?waiting_since.elapsed(), "leaders balanced");
    }
    tracing::info!(
        regions = layout.regions,
        leaders = %layout.leaders_text(),
        "every region has a leader; starting the load"
    );
    if matches!(args.workload, Workload::Get | Workload::Mixed) {
        preload(&client, &args).await.context("preloading keys")?;
    }
    let warmup = Duration::from_secs(args.warmup);
    let measured = Duration::from_secs(args.duration);
    let started = Instant::now();
    let measure_from = started + warmup;
    let stop_at = measure_from + measured;
    // Closed loops per task: one per task for KV workloads; for the TSO, a
    // client's callers are spread over one task per core (sharing the
    // client, so its batching still sees them all): polling a thousand
    // callers from one task kept the load generator itself the bottleneck.
    let loads: Vec<(Client, u32)> = match args.workload {
        Workload::Tso => {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            let groups = u32::try_from(cores)
                .unwrap_or(1)
                .clamp(1, args.tso_callers.max(1));
            // Independent clients: each batches its own callers on its own stream.
            let mut clients = vec![client];
            for _ in 1..args.clients {
                clients.push(
                    Client::connect(ClientConfig::new(args.endpoints.clone()))
                        .await
                        .context("connecting to the cluster")?,
                );
            }
            clients
                .into_iter()
                .flat_map(|client| {
                    (0..groups).map(move |g| {
                        let share =
                            args.tso_callers / groups + u32::from(g < args.tso_callers % groups);
                        (client.clone(), share)
                    })
                })
                .collect()
        }
        Workload::Put | Workload::Get | Workload::Mixed => {
            (0..args.clients).map(|_| (client.clone(), 1)).collect()
        }
    };
    let tasks: Vec<_> = loads
        .into_iter()
        .map(|(client, callers)| {
            let load = Load {
                client,
                workload: args.workload,
                keys: args.keys,
                value_size: args.value_size,
                read_ratio: args.read_ratio,
            };
            tokio::spawn(load.run(callers, measure_from, stop_at))
        })
        .collect();
    let mut total = TaskResult::empty()?;
    for task in tasks {
        total.merge(task.await.context("a load task panicked")??)?;
    }
    let report = Report {
        args: &args,
        total: &total,
        measured,
        layout: &layout,
    };
    println!(
        "{}",
        if args.json {
            report.json()
        } else {
            report.text()
        }
    );
    Ok(())
}

/// Writes every key once, in batches, so reads find values.
async fn preload(client: &Client, args: &BenchArgs) -> anyhow::Result<()> {
    let pair_bytes = key_of(0).len() + args.value_size;
    let batch_len = (PRELOAD_BATCH_BYTES_MAX / pair_bytes.max(1)).max(1) as u64;
    let value = vec![b'x'; args.value_size];
    let batches = (0..args.keys).step_by(batch_len as usize).map(|first| {
        let last = (first + batch_len).min(args.keys);
        let pairs: Vec<KvPair> = (first..last)
            .map(|index| KvPair {
                key: key_of(index),
                value: value.clone(),
            })
            .collect();
        client.batch_put(pairs)
    });
    futures::stream::iter(batches)
        .buffer_unordered(PRELOAD_BATCHES_IN_FLIGHT_MAX)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

/// How the cluster's regions stand when the load starts.
#[derive(Debug, PartialEq, Eq)]
struct RegionLayout {
    /// Regions in the cluster.
    regions: usize,
    /// Leaders per store, for every store the cluster view names (zero
    /// included), by store id.
    leaders_per_store: BTreeMap<u64, usize>,
}

impl RegionLayout {
    /// The layout of `view`, or `None` while a region has no known leader.
    fn of(view: &ClusterView) -> Option<RegionLayout> {
        if view.regions.is_empty() {
            return None;
        }
        let mut leaders_per_store: BTreeMap<u64, usize> =
            view.stores.iter().map(|store| (store.id, 0)).collect();
        for region in &view.regions {
            *leaders_per_store.entry(region.leader?).or_default() += 1;
        }
        Some(RegionLayout {
            regions: view.regions.len(),
            leaders_per_store,
        })
    }

    /// Whether no two stores' leader counts differ by more than the
    /// tolerance.
    fn leaders_balanced(&self) -> bool {
        let counts = self.leaders_per_store.values();
        match (counts.clone().min(), counts.max()) {
            (Some(min), Some(max)) => max - min <= LEADER_BALANCE_TOLERANCE,
            _ => false,
        }
    }

    /// `store=leaders` pairs, space-separated, by store id.
    fn leaders_text(&self) -> String {
        self.leaders_joined(" ", |store, leaders| format!("{store}={leaders}"))
    }

    /// A JSON object of store id (as a string) to leaders.
    fn leaders_json(&self) -> String {
        let pairs = self.leaders_joined(",", |store, leaders| format!("\"{store}\":{leaders}"));
        format!("{{{pairs}}}")
    }

    /// Each store's `pair`, by store id, joined by `separator`.
    fn leaders_joined(&self, separator: &str, pair: impl Fn(u64, usize) -> String) -> String {
        let pairs: Vec<String> = self
            .leaders_per_store
            .iter()
            .map(|(store, leaders)| pair(*store, *leaders))
            .collect();
        pairs.join(separator)
    }
}

/// Splits the key space of `keys` bench keys into `regions` regions, waits
/// until every region of the cluster has a leader, and returns the layout.
async fn prepare_regions(client: &Client, keys: u64, regions: u64) -> anyhow::Result<RegionLayout> {
    // Highest key first: each split then cuts the left part, whose leader
    // stays, instead of the new right part, which has none for a moment.
    for split_key in split_keys(keys, regions).into_iter().rev() {
        client
            .split_region(split_key.clone())
            .await
            .with_context(|| format!("splitting at {}", String::from_utf8_lossy(&split_key)))?;
    }
    wait_for_layout(client, REGION_LEADERS_WAIT, |_| true)
        .await
        .map_err(|view| {
            let leaderless = view.regions.iter().filter(|r| r.leader.is_none()).count();
            anyhow::anyhow!(
                "{leaderless} of {} regions still have no leader after {REGION_LEADERS_WAIT:?}",
                view.regions.len()
            )
        })
}

/// Waits until the placement driver has balanced the leaders.
async fn wait_for_balanced_leaders(client: &Client) -> anyhow::Result<RegionLayout> {
    wait_for_layout(client, LEADER_BALANCE_WAIT, RegionLayout::leaders_balanced)
        .await
        .map_err(|view| {
            let now = RegionLayout::of(&view)
                .map_or("(a region has no leader)".to_owned(), |l| l.leaders_text());
            anyhow::anyhow!(
                "leaders not balanced after {LEADER_BALANCE_WAIT:?} (store=leaders: {now}); is the \
                 placement driver's scheduling off?"
            )
        })
}

/// Polls the cluster until every region has a leader and `done` holds for
/// the layout; after `wait`, the last view.
async fn wait_for_layout(
    client: &Client,
    wait: Duration,
    done: impl Fn(&RegionLayout) -> bool,
) -> Result<RegionLayout, ClusterView> {
    let deadline = Instant::now() + wait;
    loop {
        let view = client.cluster_view().await;
        if let Some(layout) = RegionLayout::of(&view).filter(|layout| done(layout)) {
            return Ok(layout);
        }
        if Instant::now() >= deadline {
            return Err(view);
        }
        tokio::time::sleep(REGION_LEADERS_POLL).await;
    }
}

/// The keys that cut the `keys` bench keys into `regions` equal runs.
fn split_keys(keys: u64, regions: u64) -> Vec<Vec<u8>> {
    (1..regions)
        .map(|i| {
            let index = u128::from(i) * u128::from(keys) / u128::from(regions);
            key_of(u64::try_from(index).expect("below keys, so it fits"))
        })
        .collect()
}

fn key_of(index: u64) -> Vec<u8> {
    format!("bench-{index:010}").into_bytes()
}

/// One closed-loop task's settings.
struct Load {
    client: Client,
    workload: Workload,
    keys: u64,
    value_size: usize,
    read_ratio: f64,
}

impl Load {
    /// Runs `callers` closed loops concurrently in this task until
    /// `stop_at`; returns what they measured from `measure_from` on.
    async fn run(
        self,
        callers: u32,
        measure_from: Instant,
        stop_at: Instant,
    ) -> anyhow::Result<TaskResult> {
        let result = Mutex::new(TaskResult::empty()?);
        futures::future::join_all(
            (0..callers).map(|_| self.closed_loop(&result, measure_from, stop_at)),
        )
        .await;
        Ok(result.into_inner().unwrap_or_else(PoisonError::into_inner))
    }

    /// One operation at a time until `stop_at`, recorded into `result`.
    async fn closed_loop(
        &self,
        result: &Mutex<TaskResult>,
        measure_from: Instant,
        stop_at: Instant,
    ) {
        let mut rng = StdRng::from_entropy();
        let mut value = vec![0u8; self.value_size];
        rng.fill_bytes(&mut value);
        let mut last_timestamp = Timestamp(0);
        // Closed loop: an operation starts when the previous one ended.
        let mut op_started = Instant::now();
        loop {
            if op_started >= stop_at {
                return;
            }
            let outcome = match self.workload {
                Workload::Tso => self.next_timestamp(&mut last_timestamp).await,
                Workload::Put | Workload::Get | Workload::Mixed => {
                    let key = key_of(rng.gen_range(0..self.keys));
                    let is_read = match self.workload {
                        Workload::Get => true,
                        Workload::Mixed => rng.gen_bool(self.read_ratio),
                        Workload::Put | Workload::Tso => false,
                    };
                    let done = if is_read {
                        self.client.get(key).await.map(drop)
                    } else {
                        self.client.put(key, value.clone()).await
                    };
                    done.map_err(|err| err.to_string())
                }
            };
            let op_ended = Instant::now();
            let elapsed = op_ended - op_started;
            let measured = op_started >= measure_from;
            op_started = op_ended;
            if !measured {
                continue;
            }
            let mut result = result.lock().unwrap_or_else(PoisonError::into_inner);
            match outcome {
                Ok(()) => {
                    let elapsed_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
                    result.latencies_us.saturating_record(elapsed_us.max(1));
                    result.ops += 1;
                }
                Err(err) => {
                    result.errors += 1;
                    result.first_error.get_or_insert(err);
                }
            }
        }
    }

    /// One timestamp, checked to be above this caller's previous one.
    async fn next_timestamp(&self, last: &mut Timestamp) -> Result<(), String> {
        let timestamp = self
            .client
            .get_timestamp()
            .await
            .map_err(|e| e.to_string())?;
        if timestamp <= *last {
            return Err(format!(
                "timestamp {} is not above this caller's previous {}",
                timestamp.0, last.0
            ));
        }
        *last = timestamp;
        Ok(())
    }
}

impl TaskResult {
    fn empty() -> anyhow::Result<Self> {
        Ok(Self {
            latencies_us: Histogram::new_with_bounds(1, LATENCY_MAX_US, 3)?,
            ops: 0,
            errors: 0,
            first_error: None,
        })
    }

    fn merge(&mut self, other: TaskResult) -> anyhow::Result<()> {
        self.latencies_us.add(&other.latencies_us)?;
        self.ops += other.ops;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        Ok(())
    }
}

/// The numbers the report prints.
struct Report<'a> {
    args: &'a BenchArgs,
    total: &'a TaskResult,
    measured: Duration,
    /// The regions and leaders when the load started.
    layout: &'a RegionLayout,
}

impl Report<'_> {
    fn ops_per_sec(&self) -> f64 {
        self.total.ops as f64 / self.measured.as_secs_f64()
    }

    fn percentile_ms(&self, quantile: f64) -> f64 {
        self.total.latencies_us.value_at_quantile(quantile) as f64 / 1000.0
    }

    fn max_ms(&self) -> f64 {
        self.total.latencies_us.max() as f64 / 1000.0
    }

    fn text(&self) -> String {
        let args = self.args;
        let mut out = format!(
            "bench: workload={} clients={} duration={}s warmup={}s keys={} value-size={}B regions={}",
            args.workload.name(),
            args.clients,
            args.duration,
            args.warmup,
            args.keys,
            args.value_size,
            self.layout.regions
        );
        if args.workload == Workload::Mixed {
            let _ = write!(out, " read-ratio={}", args.read_ratio);
        }
        if args.workload == Workload::Tso {
            let _ = write!(out, " tso-callers={}", args.tso_callers);
        }
        let _ = write!(out, " endpoints={}", args.endpoints.join(","));
        let _ = write!(out, "\nleaders per store: {}", self.layout.leaders_text());
        let unit = args.workload.unit();
        let _ = write!(
            out,
            "\n{unit}: {} ({:.1} {unit}/s), errors: {}",
            self.total.ops,
            self.ops_per_sec(),
            self.total.errors
        );
        let _ = write!(
            out,
            "\nlatency ms: p50={:.3} p99={:.3} p999={:.3} max={:.3}",
            self.percentile_ms(0.50),
            self.percentile_ms(0.99),
            self.percentile_ms(0.999),
            self.max_ms()
        );
        if let Some(err) = &self.total.first_error {
            let _ = write!(out, "\nfirst error: {err}");
        }
        out
    }

    fn json(&self) -> String {
        let args = self.args;
        let endpoints: Vec<String> = args.endpoints.iter().map(|e| json_string(e)).collect();
        let read_ratio = match args.workload {
            Workload::Mixed => args.read_ratio.to_string(),
            Workload::Put | Workload::Get | Workload::Tso => "null".to_string(),
        };
        let tso_callers = match args.workload {
            Workload::Tso => args.tso_callers.to_string(),
            Workload::Put | Workload::Get | Workload::Mixed => "null".to_string(),
        };
        let first_error = self
            .total
            .first_error
            .as_deref()
            .map_or("null".to_string(), json_string);
        format!(
            concat!(
                "{{\"workload\":\"{}\",\"clients\":{},\"duration_s\":{},\"warmup_s\":{},\"keys\":{},",
                "\"value_size\":{},\"regions\":{},\"read_ratio\":{},\"tso_callers\":{},\"endpoints\":[{}],\"leaders_per_store\":{},\"ops\":{},\"errors\":{},",
                "\"ops_per_sec\":{:.1},\"p50_ms\":{:.3},\"p99_ms\":{:.3},\"p999_ms\":{:.3},\"max_ms\":{:.3},",
                "\"first_error\":{}}}"
            ),
            args.workload.name(),
            args.clients,
            args.duration,
            args.warmup,
            args.keys,
            args.value_size,
            self.layout.regions,
            read_ratio,
            tso_callers,
            endpoints.join(","),
            self.layout.leaders_json(),
            self.total.ops,
            self.total.errors,
            self.ops_per_sec(),
            self.percentile_ms(0.50),
            self.percentile_ms(0.99),
            self.percentile_ms(0.999),
            self.max_ms(),
            first_error,
        )
    }
}

/// `s` as a JSON string literal.
fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_string("a\"b\\c\n\u{1}"), r#""a\"b\\c\n\u0001""#);
    }

    #[test]
    fn split_keys_cut_the_key_space_evenly() {
        assert!(split_keys(100, 1).is_empty());
        assert_eq!(split_keys(100, 4), [key_of(25), key_of(50), key_of(75)]);
        let every_key = split_keys(3, 3);
        assert_eq!(every_key, [key_of(1), key_of(2)]);
        let many = split_keys(10_000, 7);
        assert!(many.windows(2).all(|w| w[0] < w[1]), "distinct and ordered");
    }

    fn view(leaders: &[Option<u64>], stores: &[u64]) -> ClusterView {
        ClusterView {
            regions: leaders
                .iter()
                .map(|leader| client::RegionView {
                    region: client::Region::default(),
                    leader: *leader,
                    term: 1,
                    approximate_keys: 0,
                    approximate_bytes: 0,
                })
                .collect(),
            stores: stores
                .iter()
                .map(|id| client::StoreView {
                    id: *id,
                    client_addr: None,
                    up: true,
                })
                .collect(),
            answers: Vec::new(),
        }
    }

    #[test]
    fn a_layout_counts_leaders_per_store_and_needs_every_leader() {
        assert_eq!(RegionLayout::of(&view(&[], &[1, 2, 3])), None);
        assert_eq!(RegionLayout::of(&view(&[Some(1), None], &[1, 2])), None);
        let layout = RegionLayout::of(&view(&[Some(1), Some(3), Some(1)], &[1, 2, 3]))
            .expect("every region has a leader");
        assert_eq!(layout.regions, 3);
        assert_eq!(layout.leaders_text(), "1=2 2=0 3=1");
        assert_eq!(layout.leaders_json(), r#"{"1":2,"2":0,"3":1}"#);
    }

    #[test]
    fn leaders_are_balanced_within_one_of_each_other() {
        let balanced = |leaders: &[Option<u64>]| {
            RegionLayout::of(&view(leaders, &[1, 2, 3]))
                .expect("every region has a leader")
                .leaders_balanced()
        };
        assert!(balanced(&[Some(2)]), "one region: 1, 0, 0");
        assert!(balanced(&[Some(1), Some(2), Some(3), Some(1)]));
        assert!(!balanced(&[Some(1), Some(1)]), "2, 0, 0");
        assert!(!balanced(&[Some(1), Some(1), Some(1), Some(2), Some(3)]));
    }

    #[test]
    fn keys_sort_in_index_order() {
        assert!(key_of(9) < key_of(10));
        assert_eq!(key_of(42), b"bench-0000000042");
    }
}
