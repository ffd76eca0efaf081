//! The admin HTTP server of the real broker binary: `/health`, `/ready`, and `/metrics` in
//! Prometheus' text format, whose produce and fetch counters, and produce stage histograms,
//! move as librdkafka produces and consumes.

mod common;

use std::time::Duration;

use common::http::get;
use common::{BrokerProcess, wait_for};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

const TIMEOUT: Duration = Duration::from_secs(60);
const TOPIC: &str = "metered";
const RECORDS: usize = 200;

/// The stages of `sluice_produce_stage_latency_seconds`, in path order.
const PRODUCE_STAGES: [&str; 6] = ["read", "parse", "order", "wal_write", "sync", "respond"];

/// One sample line: metric name, labels, value.
type Sample = (String, Vec<(String, String)>, f64);

/// Parses the text exposition format strictly: every line is a comment or
/// `name{label="value",...} value`, and every sample's family was declared by `# TYPE`.
fn parse_exposition(text: &str) -> Vec<Sample> {
    let mut declared: Vec<String> = Vec::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let name = parts.next().expect("a family name");
            let kind = parts.next().expect("a family type");
            assert!(
                ["counter", "gauge", "histogram"].contains(&kind),
                "type of {line}"
            );
            declared.push(name.to_string());
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        assert!(!line.is_empty() && !line.starts_with('#'), "line {line:?}");
        let name_end = line
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or_else(|| panic!("no value in {line:?}"));
        let name = &line[..name_end];
        assert!(
            !name.is_empty() && !name.starts_with(|c: char| c.is_ascii_digit()),
            "name in {line:?}"
        );
        let mut rest = &line[name_end..];
        let mut labels = Vec::new();
        if let Some(inner) = rest.strip_prefix('{') {
            rest = inner;
            while !rest.starts_with('}') {
                let (label, after) = rest
                    .split_once("=\"")
                    .unwrap_or_else(|| panic!("label in {line:?}"));
                let mut value = String::new();
                let mut chars = after.char_indices();
                let end = loop {
                    match chars.next() {
                        Some((_, '\\')) => match chars.next() {
                            Some((_, 'n')) => value.push('\n'),
                            Some((_, c)) => value.push(c),
                            None => panic!("escape at the end of {line:?}"),
                        },
                        Some((i, '"')) => break i,
                        Some((_, c)) => value.push(c),
                        None => panic!("unterminated label value in {line:?}"),
                    }
                };
                labels.push((label.to_string(), value));
                rest = &after[end + 1..];
                rest = rest.strip_prefix(',').unwrap_or(rest);
            }
            rest = &rest[1..];
        }
        let value = rest
            .strip_prefix(' ')
            .unwrap_or_else(|| panic!("one space before the value in {line:?}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("value in {line:?}")),
        };
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .filter(|base| declared.iter().any(|d| d == base))
            .unwrap_or(name);
        assert!(
            declared.iter().any(|d| d == family),
            "{name} has no # TYPE before it"
        );
        samples.push((name.to_string(), labels, value));
    }
    samples
}

/// The sum of the samples named `name` whose labels include every pair of `with`.
fn total(samples: &[Sample], name: &str, with: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|(n, labels, _)| {
            n == name
                && with
                    .iter()
                    .all(|(k, v)| labels.iter().any(|(lk, lv)| lk == k && lv == v))
        })
        .map(|(_, _, value)| value)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_health_and_ready_on_the_admin_port() {
    let dir = tempfile::tempdir().expect("temp dir");
    let broker = BrokerProcess::start(dir.path(), &["--shards", "2"]);
    let admin = broker
        .admin
        .clone()
        .expect("the broker reports its admin address");

    assert_eq!(get(&admin, "/health").status, 200);
    assert!(
        wait_for(TIMEOUT, || (get(&admin, "/ready").status == 200)
            .then_some(()))
        .is_some(),
        "/ready never answered 200"
    );
    assert_eq!(get(&admin, "/nowhere").status, 404);

    let client: AdminClient<DefaultClientContext> =
        broker.client_config().create().expect("admin client");
    for result in client
        .create_topics(
            &[NewTopic::new(TOPIC, 2, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(TIMEOUT)),
        )
        .await
        .expect("CreateTopics answered")
    {
        result.unwrap_or_else(|(topic, code)| panic!("creating {topic} failed: {code:?}"));
    }
    let producer: FutureProducer = broker
        .client_config()
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    let mut deliveries = Vec::with_capacity(RECORDS);
    for i in 0..RECORDS {
        let key = format!("key-{i}");
        let record = FutureRecord::to(TOPIC)
            .key(&key)
            .payload("a value of some bytes")
            .partition((i % 2) as i32);
        deliveries.push(producer.send_result(record).expect("queued"));
    }
    for delivery in deliveries {
        delivery.await.expect("not cancelled").expect("acked");
    }
    let consumer: BaseConsumer = broker
        .client_config()
        .set("group.id", "metrics-test")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(TOPIC, 0, Offset::Beginning)
        .expect("assignment");
    consumer.assign(&assignment).expect("assign");
    let consumed =
        wait_for(TIMEOUT, || consumer.poll(Duration::from_millis(100))).expect("a record consumed");
    consumed.expect("consumed without error");

    // The counters move as requests are answered; WAL figures are sampled every second. A
    // response's respond stage is recorded once it is written, which may be just after the
    // client read it.
    let mut last = String::new();
    let moved = wait_for(TIMEOUT, || {
        let response = get(&admin, "/metrics");
        assert_eq!(response.status, 200);
        last = response.body;
        let samples = parse_exposition(&last);
        let produce_requests = total(
            &samples,
            "sluice_request_latency_seconds_count",
            &[("api", "Produce")],
        );
        let all_moved = total(&samples, "sluice_produce_records_total", &[]) >= RECORDS as f64
            && total(&samples, "sluice_fetch_bytes_total", &[]) > 0.0
            && total(&samples, "sluice_wal_appends_total", &[]) > 0.0
            && stage_count(&samples, "respond") == produce_requests
            && stage_count(&samples, "sync")
                == total(&samples, "sluice_produce_batches_total", &[]);
        all_moved.then_some((response.headers, samples))
    });
    let Some((headers, samples)) = moved else {
        panic!("the produce, fetch and WAL counters did not move:\n{last}");
    };
    assert!(
        headers
            .iter()
            .any(|(k, v)| k == "content-type" && v.starts_with("text/plain; version=0.0.4")),
        "content type in {headers:?}"
    );
    for partition in ["0", "1"] {
        let labels = [("topic", TOPIC), ("partition", partition)];
        assert!(total(&samples, "sluice_partition_produce_batches_total", &labels) > 0.0);
        assert!(total(&samples, "sluice_partition_produce_bytes_total", &labels) > 0.0);
    }
    assert!(total(&samples, "sluice_requests_total", &[("api", "Produce")]) > 0.0);
    let produce = [("api", "Produce")];
    let count = total(&samples, "sluice_request_latency_seconds_count", &produce);
    assert!(count > 0.0);
    let infinite = [("api", "Produce"), ("le", "+Inf")];
    assert_eq!(
        total(&samples, "sluice_request_latency_seconds_bucket", &infinite),
        count
    );
    assert!(total(&samples, "sluice_wal_capacity_bytes", &[("shard", "1")]) > 0.0);
    // Every WAL write and sync is in the latency histograms, as sampled with the counters.
    assert_eq!(
        total(&samples, "sluice_wal_write_latency_seconds_count", &[]),
        total(&samples, "sluice_wal_writes_total", &[])
    );
    assert_eq!(
        total(&samples, "sluice_wal_sync_latency_seconds_count", &[]),
        total(&samples, "sluice_wal_syncs_total", &[])
    );
    assert!(total(&samples, "sluice_wal_sync_latency_seconds_count", &[]) > 0.0);
    assert!(total(&samples, "sluice_connections", &[]) >= 1.0);
    assert_eq!(
        total(&samples, "sluice_metrics_partitions_omitted", &[]),
        0.0
    );
    let group_states = samples
        .iter()
        .filter(|(name, _, _)| name == "sluice_groups")
        .count();
    assert_eq!(group_states, 5, "one sluice_groups series per state");
    check_produce_stages(&samples);
}

/// Observations of produce stage `stage`.
fn stage_count(samples: &[Sample], stage: &str) -> f64 {
    total(
        samples,
        "sluice_produce_stage_latency_seconds_count",
        &[("stage", stage)],
    )
}

/// Every produce went through every stage, once per request (read, parse, respond) or per
/// partition's batch (order, wal_write, sync), and no stage took more than the whole request.
fn check_produce_stages(samples: &[Sample]) {
    let produce = [("api", "Produce")];
    let requests = total(samples, "sluice_request_latency_seconds_count", &produce);
    let request_seconds = total(samples, "sluice_request_latency_seconds_sum", &produce);
    let batches = total(samples, "sluice_produce_batches_total", &[]);
    for stage in PRODUCE_STAGES {
        let count = stage_count(samples, stage);
        let per_request = matches!(stage, "read" | "parse" | "respond");
        assert_eq!(
            count,
            if per_request { requests } else { batches },
            "{stage}"
        );
        assert!(count > 0.0, "{stage}");
        let infinite = [("stage", stage), ("le", "+Inf")];
        assert_eq!(
            total(
                samples,
                "sluice_produce_stage_latency_seconds_bucket",
                &infinite
            ),
            count,
            "{stage}"
        );
        let sum = total(
            samples,
            "sluice_produce_stage_latency_seconds_sum",
            &[("stage", stage)],
        );
        // Whole microseconds: a stage quicker than 1 µs adds nothing.
        assert!(sum >= 0.0 && sum.is_finite(), "{stage}: sum {sum}");
        assert!(
            sum <= count * TIMEOUT.as_secs_f64(),
            "{stage}: {sum} s over {count} observations"
        );
    }
    // Parsing is part of a request's latency (from its last byte read to its response ready).
    let parse = total(
        samples,
        "sluice_produce_stage_latency_seconds_sum",
        &[("stage", "parse")],
    );
    assert!(
        parse <= request_seconds,
        "parse {parse} s, requests {request_seconds} s"
    );
    // A block write takes some microseconds.
    let wal_write = total(
        samples,
        "sluice_produce_stage_latency_seconds_sum",
        &[("stage", "wal_write")],
    );
    assert!(wal_write > 0.0, "no time in WAL writes");
}
