//! `sluice perf` end to end: a broker (this build's binary, port 0), a tiny
//! OMB workload file, a short run; the JSON result must parse with every OMB
//! key and show messages produced and consumed, and the SVG plot must exist.
//! Bounded: the broker start, ~2 s of load, the drain; 90 s at most.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::BrokerProcess;

const RUN_TIMEOUT: Duration = Duration::from_secs(90);

#[test]
fn perf_runs_a_workload_file_and_writes_omb_json() {
    let dir = tempfile::tempdir().unwrap();
    // Like the broker's own start: shards on every core, no admin server; its log is
    // checked on drop.
    let broker = BrokerProcess::start(&dir.path().join("data"), &["--admin-listen", "none"]);
    let workload = dir.path().join("tiny.yaml");
    std::fs::write(
        &workload,
        "name: tiny\ntopics: 1\npartitionsPerTopic: 2\nkeyDistributor: \"KEY_ROUND_ROBIN\"\n\
         messageSize: 100\npayloadFile: \"payload/none.data\"\nsubscriptionsPerTopic: 1\n\
         consumerPerSubscription: 2\nproducersPerTopic: 1\nproducerRate: 2000\n\
         consumerBacklogSizeGB: 0\nwarmupDurationMinutes: 0\ntestDurationMinutes: 1\n",
    )
    .unwrap();
    let output = dir.path().join("result.json");
    let plot = dir.path().join("result.svg");
    let mut perf = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("perf")
        .arg(&workload)
        .args([
            "--bootstrap",
            &broker.bootstrap,
            "--duration-scale",
            "0.03",
            "--interval-secs",
            "0.5",
        ])
        .arg("--output")
        .arg(&output)
        .arg("--plot")
        .arg(&plot)
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting sluice perf");
    let deadline = Instant::now() + RUN_TIMEOUT;
    let status = loop {
        if let Some(status) = perf.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = perf.kill();
            panic!("sluice perf did not finish within {RUN_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "sluice perf failed: {status}");

    let text = std::fs::read_to_string(&output).unwrap();
    let result = sluice_perf::stats::validate_result(&text).unwrap();
    assert_eq!(result["workload"], "tiny");
    assert_eq!(result["partitions"], 2);
    assert_eq!(result["consumersPerTopic"], 2);
    let intervals = result["publishRate"].as_array().unwrap();
    assert!(intervals.len() >= 2, "{intervals:?}");
    let info = &result["sluicePerf"];
    let sent = info["totalMessagesSent"].as_u64().unwrap();
    let received = info["totalMessagesReceived"].as_u64().unwrap();
    assert!(sent >= 1000, "only {sent} messages acknowledged");
    assert!(received > 0, "nothing consumed");
    assert_eq!(info["messagesFailed"], 0);
    assert!(result["aggregatedPublishLatency99pct"].as_f64().unwrap() > 0.0);
    assert!(result["aggregatedEndToEndLatency50pct"].as_f64().unwrap() > 0.0);
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("<polyline"));
}
