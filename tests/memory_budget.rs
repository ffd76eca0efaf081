//! The memory budget (DESIGN.md, Memory; issue #10): a broker started with `--memory 256MiB`
//! under messages of random sizes (100 B - 1 MiB, the pattern that fragments a heap) keeps
//! its resident memory within the budget plus a fixed overhead. A short version of
//! `scripts/memory-soak`; bounded by the perf run (~25 s) and the broker start.

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
