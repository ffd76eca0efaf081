//! The memory budget (DESIGN.md, Memory; issue #10): a broker started with `--memory 256MiB`
//! under messages of random sizes (100 B - 1 MiB, the pattern that fragments a heap) keeps
//! its resident memory within the budget plus a fixed overhead. A short version of
//! `scripts/memory-soak`; bounded by the perf run (~25 s) and the broker start.
//!
//! And issue 22's "no stall under any configuration": produce goes on under every combination
//! of the flags that size memory, the WAL and uploads.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::BrokerProcess;

const BUDGET: &str = "256MiB";
const BUDGET_BYTES: u64 = 256 << 20;
/// What the broker may hold beyond its budget: code, thread stacks, glommio's I/O memory,
/// the upload buffers, tokio.
const OVERHEAD_BYTES: u64 = 128 << 20;
const RSS_SAMPLE_INTERVAL: Duration = Duration::from_millis(100);
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

#[test]
fn rss_stays_within_the_budget_under_mixed_message_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(
        &dir.path().join("data"),
        &[
            "--memory",
            BUDGET,
            "--shards",
            "2",
            "--admin-listen",
            "none",
        ],
    );
    let workload = dir.path().join("mixed.yaml");
    std::fs::write(
        &workload,
        "name: mixed sizes\ntopics: 1\npartitionsPerTopic: 8\nkeyDistributor: \"NO_KEY\"\n\
         messageSize: 1024\nsubscriptionsPerTopic: 1\nconsumerPerSubscription: 1\n\
         producersPerTopic: 1\nproducerRate: 40\nconsumerBacklogSizeGB: 0\n\
         warmupDurationMinutes: 0\ntestDurationMinutes: 0.4\n",
    )
    .unwrap();
    let mut perf = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("perf")
        .arg(&workload)
        .args([
            "--bootstrap",
            &broker.bootstrap,
            "--message-size-range",
            "100..1048576",
            "--interval-secs",
            "5",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting sluice perf");
    let started = Instant::now();
    let mut rss_max_bytes = 0;
    let status = loop {
        rss_max_bytes = rss_max_bytes.max(rss_bytes(broker.pid()));
        if let Some(status) = perf.try_wait().expect("wait works") {
            break status;
        }
        if started.elapsed() > RUN_TIMEOUT {
            let _ = perf.kill();
            panic!("sluice perf did not finish within {RUN_TIMEOUT:?}");
        }
        std::thread::sleep(RSS_SAMPLE_INTERVAL);
    };
    assert!(status.success(), "sluice perf failed: {status}");
    eprintln!("broker RSS max {} MiB", rss_max_bytes >> 20);
    assert!(
        rss_max_bytes <= BUDGET_BYTES + OVERHEAD_BYTES,
        "broker RSS {} MiB above the budget {} MiB + overhead {} MiB",
        rss_max_bytes >> 20,
        BUDGET_BYTES >> 20,
        OVERHEAD_BYTES >> 20
    );
}

/// VmRSS of process `pid`, in bytes.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the broker runs");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map(|kib| kib << 10)
        .expect("VmRSS in /proc/PID/status")
}

/// Each combination of small and large `--memory`, `--wal-size` and `--upload-size` /
/// `--upload-interval-ms` (a size threshold the data never reaches with an interval that never
/// comes, the configuration that once stalled produce for good): 160 MiB of acks=all produce,
/// more than the small memory budget and many small WALs, is all acknowledged.
#[test]
fn produce_never_stalls_whatever_the_memory_wal_and_upload_flags() {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

    const MESSAGES: usize = 160 * 1024;
    let payload = vec![7u8; 1024];
    for memory in ["96MiB", "1GiB"] {
        for wal in ["8MiB", "256MiB"] {
            for (upload_size, interval_ms) in [("1MiB", "100"), ("3GiB", "600000")] {
                let flags = [
                    "--shards",
                    "1",
                    "--memory",
                    memory,
                    "--wal-size",
                    wal,
                    "--upload-size",
                    upload_size,
                    "--upload-interval-ms",
                    interval_ms,
                ];
                let dir = tempfile::tempdir().unwrap();
                let broker = BrokerProcess::start(dir.path(), &flags);
                let producer: BaseProducer = broker
                    .client_config()
                    .set("acks", "all")
                    .set("linger.ms", "5")
                    .set("message.timeout.ms", "120000")
                    .create()
                    .unwrap();
                let started = Instant::now();
                for _ in 0..MESSAGES {
                    let mut record = Some(BaseRecord::<(), [u8]>::to("grid").payload(&payload[..]));
                    while let Some(r) = record.take() {
                        if let Err((_, r)) = producer.send(r) {
                            producer.poll(Duration::from_millis(5));
                            record = Some(r);
                        }
                    }
                }
                producer
                    .flush(Duration::from_secs(180))
                    .unwrap_or_else(|e| panic!("{flags:?}: {e}"));
                let consumer: BaseConsumer = broker.client_config().create().unwrap();
                let (_, high) = consumer
                    .fetch_watermarks("grid", 0, Duration::from_secs(30))
                    .unwrap();
                assert_eq!(
                    high, MESSAGES as i64,
                    "{flags:?}: every message acknowledged"
                );
                eprintln!("{flags:?}: {MESSAGES} messages in {:?}", started.elapsed());
            }
        }
    }
}
