//! Load generator and benchmark driver: OpenMessaging Benchmark workloads over
//! the Kafka protocol (`sluice perf`).
//!
//! - [`PerfArgs`]: the command-line flags; [`run`]: runs one workload file
//!   against a broker and writes OMB's JSON result.
//! - [`workload`]: OMB workload files, read unchanged.
//! - [`client`]: a small pipelined Kafka client on tokio over `sluice-net`.
//! - [`producer`]: schedule-paced producers (no coordinated omission);
//!   [`batch`]: their one-pass record batch writer.
//! - [`consumer`]: direct-assignment Fetch consumers with end-to-end latency.
//! - [`stats`]: HDR histograms and OMB's `TestResult`.
//! - [`plot`]: an SVG of latency percentiles over time.
//! - [`broker_metrics`]: `--broker-metrics`, a Sluice broker's per-stage produce latency over
//!   the test, from its Prometheus endpoint.
//!
//! A run: create fresh topics, position consumers at the end, start the
//! producers' schedule, warm up, then measure for the test duration in
//! intervals (one progress line on stderr per interval). With
//! `consumerBacklogSizeGB` the consumers are paused until the backlog is built,
//! resumed until it is drained, and the test goes on for its duration after that.

pub mod batch;
pub mod broker_metrics;
pub mod client;
pub mod consumer;
pub mod plot;
pub mod producer;
pub mod stats;
pub mod workload;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sluice_net::ApiKey;

use crate::broker_metrics::{MetricsUrl, StageHistograms};
use crate::client::{ClusterLayout, Connection};
use crate::consumer::{Assignment, ConsumerConfig};
use crate::producer::{ProducerConfig, ProducerPlan};
use crate::stats::{Period, Recorder, Summary, TestResult};
use crate::workload::Workload;

/// How long topic creation may take to show in Metadata.
const TOPIC_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the run loop looks at the backlog and the clock.
const TICK: Duration = Duration::from_millis(50);
/// Head start between the producers' start and their first scheduled message.
const SCHEDULE_HEAD_START: Duration = Duration::from_millis(200);
/// Default stats interval (OMB's).
const INTERVAL_DEFAULT_S: f64 = 10.0;
/// OMB's floor on the drained backlog, in messages.
const BACKLOG_DRAINED_MESSAGES_MIN: u64 = 1000;

/// Flags of `sluice perf`.
#[derive(Debug, Clone, clap::Args)]
pub struct PerfArgs {
    /// OpenMessaging Benchmark workload file (YAML), used unchanged.
    #[arg(value_name = "WORKLOAD.yaml")]
    pub workload: PathBuf,
    /// Broker to bootstrap from.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:9092")]
    pub bootstrap: String,
    /// Write the OMB-format JSON result here.
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Write an SVG of latency percentiles over time here.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// Multiply the workload's warm-up and test durations (e.g. 0.05 for a quick run).
    #[arg(long, value_name = "F", default_value_t = 1.0)]
    pub duration_scale: f64,
    /// Multiply the workload's consumerBacklogSizeGB.
    #[arg(long, value_name = "F", default_value_t = 1.0)]
    pub backlog_scale: f64,
    /// Give up building, or draining, the backlog after this long and go on.
    #[arg(long, value_name = "SECS", default_value_t = 600.0)]
    pub backlog_timeout_secs: f64,
    /// Seconds per result interval and progress line. [default: 10, or a fifth
    /// of the test phase when that is shorter, at least 1]
    #[arg(long, value_name = "SECS")]
    pub interval_secs: Option<f64>,
    /// Producer acks: all (-1), 1 or 0.
    #[arg(long, value_name = "ACKS", default_value = "all")]
    pub acks: String,
    /// Producer linger.ms: how long a batch waits for more messages.
    #[arg(long, value_name = "MS", default_value_t = 1)]
    pub linger_ms: u64,
    /// Producer batch.size: a partition's batch is closed at this size (e.g. 1MiB, 16KiB).
    #[arg(long, value_name = "SIZE", default_value = "1MiB")]
    pub batch_size: String,
    /// Producer max.request.size: largest produce request (one batch is always sent).
    #[arg(long, value_name = "SIZE", default_value = "1MiB")]
    pub max_request_size: String,
    /// Produce requests in flight per connection (max.in.flight.requests.per.connection);
    /// the default is librdkafka's, so --buffer-memory is the real bound (OMB's Java driver: 5).
    #[arg(long, value_name = "N", default_value_t = 1_000_000)]
    pub max_in_flight: usize,
    /// Producer buffer.memory: bytes waiting for send or ack before a producer stops taking messages.
    #[arg(long, value_name = "SIZE", default_value = "32MiB")]
    pub buffer_memory: String,
    /// Times a batch is re-sent after a retriable error (each failed attempt counts as publish errors).
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub retries: u32,
    /// Wait before re-sending a batch.
    #[arg(long, value_name = "MS", default_value_t = 100)]
    pub retry_backoff_ms: u64,
    /// Request timeout (also the broker-side produce timeout).
    #[arg(long, value_name = "MS", default_value_t = 30_000)]
    pub request_timeout_ms: u64,
    /// Consumer fetch.max.wait.ms (long-poll).
    #[arg(long, value_name = "MS", default_value_t = 500)]
    pub fetch_max_wait_ms: i32,
    /// Consumer fetch.min.bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 1)]
    pub fetch_min_bytes: i32,
    /// Consumer fetch.max.bytes.
    #[arg(long, value_name = "SIZE", default_value = "50MiB")]
    pub fetch_max_bytes: String,
    /// Consumer max.partition.fetch.bytes (OMB's kafka-throughput.yaml value).
    #[arg(long, value_name = "SIZE", default_value = "10MiB")]
    pub fetch_partition_max_bytes: String,
    /// Replication factor of the topics created.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub replication_factor: i16,
    /// A config of the topics created, `NAME=VALUE` (OMB's driver `topicConfig`), e.g.
    /// retention.bytes=1073741824; repeat for more.
    #[arg(long, value_name = "NAME=VALUE", value_parser = parse_topic_config)]
    pub topic_config: Vec<(String, String)>,
    /// Prefix of the topic names (a random part and the topic number follow).
    #[arg(long, value_name = "NAME", default_value = "sluice-perf")]
    pub topic_prefix: String,
    /// Leave the topics on the broker after the run (they are deleted by default).
    #[arg(long)]
    pub keep_topics: bool,
    /// The `driver` field of the result.
    #[arg(long, value_name = "NAME", default_value = "sluice-perf")]
    pub driver: String,
    /// Client id in request headers.
    #[arg(long, value_name = "ID", default_value = "sluice-perf")]
    pub client_id: String,
    /// Uniform random payload size per message, `MIN..MAX` bytes (e.g. 100..1048576),
    /// instead of the workload's messageSize (a memory soak's mixed sizes).
    #[arg(long, value_name = "MIN..MAX", value_parser = parse_size_range)]
    pub message_size_range: Option<(usize, usize)>,
    /// tokio worker threads for connections and consumers (producers have a thread each).
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub threads: usize,
    /// A Sluice broker's Prometheus endpoint, e.g. http://127.0.0.1:9644/metrics: its
    /// per-stage produce latency (sluice_produce_stage_latency_seconds) is scraped at the
    /// test phase's start and end, and the report (and the JSON's sluiceBrokerStages) shows
    /// each stage's count, average, p50, p99 and p99.9 over the test, for every client of the
    /// broker. The percentiles are upper bounds of the broker's power-of-two buckets, so up to
    /// twice the true value. A malformed or unreachable URL fails the run before it starts.
    #[arg(long, value_name = "URL", value_parser = MetricsUrl::parse)]
    pub broker_metrics: Option<MetricsUrl>,
}

/// Runs the workload of `args` and writes its outputs; returns the result.
pub fn run(args: PerfArgs) -> anyhow::Result<TestResult> {
    epoch();
    if args.threads == 0 {
        bail!("--threads must be at least 1");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .thread_name("sluice-perf-io")
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let handle = runtime.handle().clone();
    let result = runtime.block_on(drive(&args, handle))?;
    let json = serde_json::to_string_pretty(&result).context("serializing the result")?;
    if let Some(path) = &args.output {
        std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.plot {
        std::fs::write(
            path,
            plot::svg(&result, result.sluice_perf.interval_seconds),
        )
        .with_context(|| format!("writing {}", path.display()))?;
    }
    println!("{}", summary_line(&result));
    if let Some(stages) = &result.sluice_broker_stages {
        for line in broker_metrics::report_lines(stages) {
            println!("{line}");
        }
    }
    Ok(result)
}

/// The process's monotonic time origin (send timestamps are relative to it).
pub fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Parses `1024`, `64KiB`, `1MiB`, `2GiB` (also KB/MB/GB as powers of 1000).
pub fn parse_size(text: &str) -> anyhow::Result<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let number: u64 = digits
        .parse()
        .with_context(|| format!("{text:?} is not a size such as 1MiB"))?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        other => bail!("unknown size unit {other:?} in {text:?} (use B, KiB, MiB, GiB)"),
    };
    number
        .checked_mul(multiplier)
        .with_context(|| format!("{text:?} is too large"))
}

/// One line with the test phase's aggregated figures (stdout).
pub fn summary_line(r: &TestResult) -> String {
    let rate = |v: &[f64]| {
        if v.is_empty() {
            0.0
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    };
    format!(
        "sluice perf: workload={:?} publish_rate={:.0} consume_rate={:.0} \
         publish_ms(p50/p99/p99.9/p99.99/max)={:.3}/{:.3}/{:.3}/{:.3}/{:.3} \
         e2e_ms(p50/p99/p99.9/p99.99/max)={:.3}/{:.3}/{:.3}/{:.3}/{:.3} \
         delay_us(p50/p99/max)={}/{}/{} errors={} failed={}",
        r.workload,
        rate(&r.publish_rate),
        rate(&r.consume_rate),
        r.aggregated_publish_latency_50pct,
        r.aggregated_publish_latency_99pct,
        r.aggregated_publish_latency_999pct,
        r.aggregated_publish_latency_9999pct,
        r.aggregated_publish_latency_max,
        r.aggregated_end_to_end_latency_50pct,
        r.aggregated_end_to_end_latency_99pct,
        r.aggregated_end_to_end_latency_999pct,
        r.aggregated_end_to_end_latency_9999pct,
        r.aggregated_end_to_end_latency_max,
        r.aggregated_publish_delay_latency_50pct,
        r.aggregated_publish_delay_latency_99pct,
        r.aggregated_publish_delay_latency_max,
        r.sluice_perf.total_send_errors,
        r.sluice_perf.messages_failed,
    )
}

/// Parses `--message-size-range MIN..MAX` (sizes as in [`parse_size`], `MIN <= MAX`).
fn parse_size_range(text: &str) -> anyhow::Result<(usize, usize)> {
    let (min, max) = text
        .split_once("..")
        .with_context(|| format!("{text:?} is not a range such as 100..1MiB"))?;
    let min = size_usize(min, "--message-size-range minimum")?;
    let max = size_usize(max, "--message-size-range maximum")?;
    if min > max || max > workload::MESSAGE_BYTES_MAX {
        bail!(
            "--message-size-range {text}: need 1 <= MIN <= MAX <= {}",
            workload::MESSAGE_BYTES_MAX
        );
    }
    Ok((min, max))
}

fn parse_topic_config(text: &str) -> anyhow::Result<(String, String)> {
    match text.split_once('=') {
        Some((name, value)) if !name.trim().is_empty() => {
            Ok((name.trim().to_string(), value.trim().to_string()))
        }
        _ => bail!("--topic-config {text:?}: use NAME=VALUE, e.g. retention.bytes=1073741824"),
    }
}

fn parse_acks(text: &str) -> anyhow::Result<i16> {
    match text.trim().to_ascii_lowercase().as_str() {
        "all" | "-1" => Ok(-1),
        "1" => Ok(1),
        "0" => Ok(0),
        other => bail!("--acks {other:?}: use all, 1 or 0"),
    }
}

fn size_i32(text: &str, flag: &str) -> anyhow::Result<i32> {
    let v = parse_size(text).with_context(|| flag.to_string())?;
    i32::try_from(v).with_context(|| format!("{flag} {text} exceeds 2GiB"))
}

fn size_usize(text: &str, flag: &str) -> anyhow::Result<usize> {
    let v = parse_size(text).with_context(|| flag.to_string())?;
    if v == 0 {
        bail!("{flag} must not be 0");
    }
    usize::try_from(v).with_context(|| format!("{flag} {text} is too large"))
}

/// Where the backlog phase is.
enum Backlog {
    None,
    Building { since: Instant },
    Draining { since: Instant },
    Done,
}

async fn drive(args: &PerfArgs, runtime: tokio::runtime::Handle) -> anyhow::Result<TestResult> {
    let workload = Workload::from_file(&args.workload)?;
    let (mut payload, mut payload_origin) = workload.load_payload(&args.workload)?;
    if let Some((min, max)) = args.message_size_range {
        payload = vec![0u8; max];
        rand::fill(&mut payload[..]);
        payload_origin = format!("random sizes {min}..{max} B");
    }
    if !(args.duration_scale.is_finite() && args.duration_scale > 0.0) {
        bail!("--duration-scale must be a positive number");
    }
    if !(args.backlog_scale.is_finite() && args.backlog_scale >= 0.0) {
        bail!("--backlog-scale must be a non-negative number");
    }
    let acks = parse_acks(&args.acks)?;
    let request_timeout = Duration::from_millis(args.request_timeout_ms);
    let producer_config = ProducerConfig {
        acks,
        linger: Duration::from_millis(args.linger_ms),
        batch_bytes: size_usize(&args.batch_size, "--batch-size")?,
        max_request_bytes: size_usize(&args.max_request_size, "--max-request-size")?,
        max_in_flight: args.max_in_flight.max(1),
        buffer_bytes: size_usize(&args.buffer_memory, "--buffer-memory")?,
        retries: args.retries,
        retry_backoff: Duration::from_millis(args.retry_backoff_ms),
        request_timeout,
        client_id: args.client_id.clone(),
    };
    let consumer_config = ConsumerConfig {
        max_wait_ms: args.fetch_max_wait_ms.max(0),
        min_bytes: args.fetch_min_bytes.max(0),
        max_bytes: size_i32(&args.fetch_max_bytes, "--fetch-max-bytes")?,
        partition_max_bytes: size_i32(
            &args.fetch_partition_max_bytes,
            "--fetch-partition-max-bytes",
        )?,
        request_timeout: request_timeout
            + Duration::from_millis(args.fetch_max_wait_ms.max(0) as u64),
        client_id: args.client_id.clone(),
    };
    let warmup_s = workload.warmup_duration_minutes * 60.0 * args.duration_scale;
    let test_s = workload.test_duration_minutes * 60.0 * args.duration_scale;
    let interval_s = match args.interval_secs {
        Some(v) if v > 0.0 && v.is_finite() => v,
        Some(v) => bail!("--interval-secs {v} must be positive"),
        None => INTERVAL_DEFAULT_S.min((test_s / 5.0).max(1.0)),
    };
    let backlog_bytes_target =
        (workload.consumer_backlog_size_gb * args.backlog_scale * (1u64 << 30) as f64) as u64;
    if let Some(url) = &args.broker_metrics {
        // Before anything runs, so that a wrong URL costs no benchmark. Scrapes block this
        // thread (`run`'s `block_on`, not a worker) for at most a few timeouts.
        broker_metrics::scrape_stages(url).context("--broker-metrics")?;
    }

    eprintln!(
        "sluice perf: {:?} on {}: {} topic(s) x {} partition(s), {} B messages ({payload_origin}), \
         {} msg/s, warm-up {warmup_s:.1} s, test {test_s:.1} s, interval {interval_s:.1} s",
        workload.name,
        args.bootstrap,
        workload.topics,
        workload.partitions_per_topic,
        workload.message_size,
        workload.producer_rate,
    );

    // Topics.
    let admin = Connection::connect(&args.bootstrap, &args.client_id, request_timeout).await?;
    let tag: String = {
        use rand::Rng;
        let mut rng = rand::rng();
        (0..7)
            .map(|_| char::from(rng.sample(rand::distr::Alphanumeric)))
            .collect()
    };
    let names: Vec<String> = (0..workload.topics)
        .map(|i| format!("{}-{tag}-{i:04}", args.topic_prefix))
        .collect();
    // A broker without CreateTopics (e.g. librdkafka's mock) creates topics on
    // Metadata, with its own partition count.
    let auto_create = admin.version(ApiKey::CreateTopics).is_err();
    if auto_create {
        eprintln!(
            "sluice perf: WARNING: the broker has no CreateTopics; relying on auto-creation \
             (its default partition count, not partitionsPerTopic)"
        );
    } else {
        client::create_topics(
            &admin,
            &names,
            workload.partitions_per_topic as i32,
            args.replication_factor,
            &args.topic_config,
        )
        .await?;
    }
    let expected = (!auto_create).then_some(workload.partitions_per_topic);
    let layout = wait_for_topics(&admin, &names, expected).await?;

    let recorder = Arc::new(Recorder::new());
    let paused = Arc::new(AtomicBool::new(false));
    let consumers_stop = Arc::new(AtomicBool::new(false));
    let producers_stop = Arc::new(AtomicBool::new(false));

    // Consumers: each subscription reads every partition, split over its consumers.
    let mut consumer_tasks = Vec::new();
    for topic in &layout.topics {
        for _subscription in 0..workload.subscriptions_per_topic {
            for c in 0..workload.consumer_per_subscription {
                let mut by_leader: HashMap<i32, HashMap<i32, i64>> = HashMap::new();
                for (i, &(partition, leader)) in topic.partitions.iter().enumerate() {
                    if i % workload.consumer_per_subscription == c {
                        by_leader.entry(leader).or_default().insert(partition, 0);
                    }
                }
                for (leader, offsets) in by_leader {
                    let broker = broker_addr(&layout, leader)?;
                    let mut assignment = Assignment {
                        topic: topic.name.clone(),
                        broker: broker.clone(),
                        offsets,
                    };
                    let conn = Connection::connect(
                        &broker,
                        &args.client_id,
                        consumer_config.request_timeout,
                    )
                    .await?;
                    consumer::position_at_end(&conn, &mut assignment).await?;
                    consumer_tasks.push(tokio::spawn(consumer::run(
                        conn,
                        assignment,
                        consumer_config.clone(),
                        recorder.clone(),
                        paused.clone(),
                        consumers_stop.clone(),
                    )));
                }
            }
        }
    }

    // Producers: each writes to every partition of its topic.
    let producers = workload.topics * workload.producers_per_topic;
    let rate = workload.producer_rate / producers as f64;
    let payload = Arc::new(payload);
    let start = Instant::now() + SCHEDULE_HEAD_START;
    let mut producer_threads = Vec::new();
    for topic in &layout.topics {
        for p in 0..workload.producers_per_topic {
            let plan = ProducerPlan {
                topic: topic.name.clone(),
                partitions: topic.partitions.clone(),
                brokers: layout.brokers.clone(),
                rate,
                keys: workload.key_distributor,
                payload: payload.clone(),
                payload_bytes_min: args.message_size_range.map_or(payload.len(), |r| r.0),
            };
            producer_threads.push(producer::spawn(
                format!("perf-producer-{p}"),
                plan,
                producer_config.clone(),
                start,
                recorder.clone(),
                runtime.clone(),
                producers_stop.clone(),
            )?);
        }
    }
    tokio::time::sleep_until(start.into()).await;

    // Ctrl-C ends the run early: the result keeps the intervals measured so far.
    let interrupted = Arc::new(AtomicBool::new(false));
    {
        let interrupted = interrupted.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("sluice perf: interrupted, finishing the current interval");
                interrupted.store(true, Ordering::Relaxed);
            }
        });
    }
    let subscriptions = (workload.topics * workload.subscriptions_per_topic) as u64;
    let backlog_of = |r: &Recorder| {
        let t = r.totals();
        (subscriptions * t.messages_sent).saturating_sub(t.messages_received)
    };

    // Warm-up: reported, not kept.
    if warmup_s > 0.0 {
        let phase_start = Instant::now();
        let end = phase_start + Duration::from_secs_f64(warmup_s);
        let mut last = phase_start;
        loop {
            let next = (last + Duration::from_secs_f64(interval_s)).min(end);
            while Instant::now() < next && !interrupted.load(Ordering::Relaxed) {
                tokio::time::sleep_until((Instant::now() + TICK).min(next).into()).await;
            }
            let now = Instant::now();
            let period = recorder.take_period();
            progress(
                "warm-up",
                now - phase_start,
                &period,
                (now - last).as_secs_f64(),
                backlog_of(&recorder),
            );
            last = now;
            if now >= end || interrupted.load(Ordering::Relaxed) {
                break;
            }
        }
    }
    recorder.reset_cumulative();
    let _ = recorder.take_period();
    let stages_before = args.broker_metrics.as_ref().and_then(scrape_during_run);

    // Test.
    let mut result = TestResult {
        workload: workload.name.clone(),
        driver: args.driver.clone(),
        message_size: workload.message_size as u64,
        topics: workload.topics as u64,
        partitions: workload.partitions_per_topic as u64,
        producers_per_topic: workload.producers_per_topic as u64,
        consumers_per_topic: workload.consumer_per_subscription as u64,
        ..Default::default()
    };
    let test_start = Instant::now();
    let mut test_end = test_start + Duration::from_secs_f64(test_s);
    let mut last = test_start;
    let mut backlog = if backlog_bytes_target > 0 {
        eprintln!(
            "sluice perf: pausing consumers to build a backlog of {backlog_bytes_target} bytes"
        );
        paused.store(true, Ordering::Relaxed);
        Backlog::Building { since: test_start }
    } else {
        Backlog::None
    };
    let mut backlog_build_s = None;
    let mut backlog_drain_s = None;
    let backlog_timeout = Duration::from_secs_f64(args.backlog_timeout_secs.max(0.0));
    let backlog_capacity = backlog_bytes_target / workload.message_size as u64;
    let drained_level = BACKLOG_DRAINED_MESSAGES_MIN
        .max(((1.0 - workload.backlog_drain_ratio) * backlog_capacity as f64) as u64);
    loop {
        tokio::time::sleep(TICK).await;
        let now = Instant::now();
        let queued = backlog_of(&recorder);
        match backlog {
            Backlog::Building { since } => {
                let built = queued * workload.message_size as u64 >= backlog_bytes_target;
                if built || now - since > backlog_timeout {
                    if built {
                        backlog_build_s = Some((now - since).as_secs_f64());
                        eprintln!(
                            "sluice perf: backlog built in {:.1} s, resuming consumers",
                            (now - since).as_secs_f64()
                        );
                    } else {
                        eprintln!(
                            "sluice perf: WARNING: backlog not built within {backlog_timeout:?} \
                             ({queued} messages), resuming consumers"
                        );
                    }
                    paused.store(false, Ordering::Relaxed);
                    backlog = Backlog::Draining { since: now };
                }
            }
            Backlog::Draining { since } => {
                let drained = queued <= drained_level;
                if drained || now - since > backlog_timeout {
                    if drained {
                        backlog_drain_s = Some((now - since).as_secs_f64());
                        eprintln!(
                            "sluice perf: backlog drained in {:.1} s",
                            (now - since).as_secs_f64()
                        );
                    } else {
                        eprintln!(
                            "sluice perf: WARNING: backlog not drained within {backlog_timeout:?} \
                             ({queued} messages left)"
                        );
                    }
                    // OMB: the test goes on for its duration after the drain.
                    test_end = test_end.max(now + Duration::from_secs_f64(test_s));
                    backlog = Backlog::Done;
                }
            }
            Backlog::None | Backlog::Done => {}
        }
        let due = last + Duration::from_secs_f64(interval_s);
        let waiting = matches!(backlog, Backlog::Building { .. } | Backlog::Draining { .. });
        let stopping = (now >= test_end && !waiting) || interrupted.load(Ordering::Relaxed);
        if now >= due || stopping {
            let period = recorder.take_period();
            let seconds = (now - last).as_secs_f64();
            progress("test", now - test_start, &period, seconds, queued);
            result.push_period(&period, seconds, queued);
            last = now;
            if stopping {
                break;
            }
        }
    }
    result.set_aggregated(&recorder.cumulative());
    if let (Some(url), Some(before)) = (&args.broker_metrics, &stages_before) {
        result.sluice_broker_stages = scrape_during_run(url).and_then(|after| {
            broker_metrics::stage_figures(before, &after)
                .map_err(|e| eprintln!("sluice perf: WARNING: --broker-metrics: {e:#}"))
                .ok()
        });
    }

    // Stop: producers drain what they sent, consumers finish their fetch.
    producers_stop.store(true, Ordering::Relaxed);
    for thread in producer_threads {
        let outcome = tokio::task::spawn_blocking(move || thread.join())
            .await
            .context("joining a producer")?;
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("sluice perf: producer failed: {e:#}"),
            Err(_) => eprintln!("sluice perf: a producer thread panicked"),
        }
    }
    consumers_stop.store(true, Ordering::Relaxed);
    for task in consumer_tasks {
        let _ = tokio::time::timeout(consumer_config.request_timeout, task).await;
    }
    if !args.keep_topics {
        match client::delete_topics(&admin, &names).await {
            Ok(errors) if errors.is_empty() => {}
            Ok(errors) => eprintln!("sluice perf: deleting topics: {}", errors.join(", ")),
            Err(e) => eprintln!("sluice perf: deleting topics: {e:#}"),
        }
    }

    let totals = recorder.totals();
    result.sluice_perf = stats::RunInfo {
        bootstrap: args.bootstrap.clone(),
        interval_seconds: interval_s,
        duration_scale: args.duration_scale,
        warmup_seconds: warmup_s,
        test_seconds: test_s,
        producer_rate: workload.producer_rate,
        acks,
        linger_ms: args.linger_ms,
        batch_bytes: producer_config.batch_bytes,
        max_in_flight: producer_config.max_in_flight,
        payload: payload_origin,
        backlog_bytes_target,
        backlog_build_seconds: backlog_build_s,
        backlog_drain_seconds: backlog_drain_s,
        total_messages_sent: totals.messages_sent,
        total_messages_received: totals.messages_received,
        total_send_errors: totals.message_send_errors,
        retried_batches: totals.retried_batches,
        messages_failed: totals.messages_failed,
    };
    Ok(result)
}

/// A scrape of `--broker-metrics` once the run is under way: a failure costs the stage report,
/// not the run's results.
fn scrape_during_run(url: &MetricsUrl) -> Option<StageHistograms> {
    broker_metrics::scrape_stages(url)
        .map_err(|e| {
            eprintln!("sluice perf: WARNING: --broker-metrics: {e:#}; no stage report");
        })
        .ok()
}

fn broker_addr(layout: &ClusterLayout, leader: i32) -> anyhow::Result<String> {
    layout
        .brokers
        .get(&leader)
        .cloned()
        .with_context(|| format!("leader {leader} is not among the brokers in Metadata"))
}

/// Polls Metadata until every topic shows `partitions` led partitions.
/// `partitions`: the count to wait for, or None for any (auto-created topics).
async fn wait_for_topics(
    admin: &Connection,
    names: &[String],
    partitions: Option<usize>,
) -> anyhow::Result<ClusterLayout> {
    let deadline = Instant::now() + TOPIC_READY_TIMEOUT;
    loop {
        let layout = client::metadata(admin, names, partitions.is_none()).await?;
        let ready = layout.topics.len() == names.len()
            && layout
                .topics
                .iter()
                .all(|t| partitions.is_none_or(|n| t.partitions.len() == n));
        if ready {
            return Ok(layout);
        }
        if Instant::now() > deadline {
            bail!(
                "topics {names:?} did not show {partitions:?} led partitions in Metadata within {TOPIC_READY_TIMEOUT:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The live progress line (stderr), one per interval.
fn progress(phase: &str, at: Duration, p: &Period, seconds: f64, backlog: u64) {
    let seconds = seconds.max(1e-9);
    let publish = Summary::of(&p.publish_us);
    let e2e = Summary::of(&p.end_to_end_us);
    let delay = Summary::of(&p.publish_delay_us);
    eprintln!(
        "sluice perf [{phase} {:>6.1}s] pub {:>9.0} msg/s {:>7.1} MB/s | err {:>6.0}/s | cons {:>9.0} msg/s | \
         backlog {:>8} | pub ms p50 {:.2} p99 {:.2} max {:.2} | e2e ms p50 {:.2} p99 {:.2} | delay us p99 {}",
        at.as_secs_f64(),
        p.messages_sent as f64 / seconds,
        p.bytes_sent as f64 / seconds / 1e6,
        p.message_send_errors as f64 / seconds,
        p.messages_received as f64 / seconds,
        backlog,
        publish.p50 as f64 / 1000.0,
        publish.p99 as f64 / 1000.0,
        publish.max as f64 / 1000.0,
        e2e.p50 as f64 / 1000.0,
        e2e.p99 as f64 / 1000.0,
        delay.p99,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_acks_parse() {
        assert_eq!(parse_size("1MiB").unwrap(), 1 << 20);
        assert_eq!(parse_size("16KiB").unwrap(), 16 << 10);
        assert_eq!(parse_size("1000").unwrap(), 1000);
        assert!(parse_size("big").is_err());
        assert_eq!(parse_acks("all").unwrap(), -1);
        assert_eq!(parse_acks("1").unwrap(), 1);
        assert!(parse_acks("2").is_err());
    }

    #[test]
    fn message_size_ranges_parse() {
        assert_eq!(parse_size_range("100..1MiB").unwrap(), (100, 1 << 20));
        assert_eq!(parse_size_range("5..5").unwrap(), (5, 5));
        assert!(parse_size_range("10..5").is_err(), "min above max");
        assert!(parse_size_range("0..5").is_err(), "empty messages");
        assert!(parse_size_range("100").is_err(), "not a range");
        assert!(
            parse_size_range("1..1GiB").is_err(),
            "above MESSAGE_BYTES_MAX"
        );
    }

    #[test]
    fn topic_configs_parse() {
        assert_eq!(
            parse_topic_config("retention.bytes=1024").unwrap(),
            ("retention.bytes".to_string(), "1024".to_string())
        );
        assert!(parse_topic_config("retention.bytes").is_err(), "no value");
        assert!(parse_topic_config("=5").is_err(), "no name");
    }
}
