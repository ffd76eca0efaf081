//! The `sluice` subcommands other than `start`, end to end against a broker (this build's
//! binary, port 0).
//!
//! `sluice perf`: a tiny OMB workload file, a short run; the JSON result must parse with every
//! OMB key and show messages produced and consumed, the SVG plot must exist, and the report
//! must show the broker's produce stages (`--broker-metrics`). Bounded: the broker start, ~2 s
//! of load, the drain; 90 s at most. A `--broker-metrics` URL that is malformed or
//! unreachable fails the run before it starts.
//!
//! `sluice topic | group | cluster | user | quota | acl`: every subcommand, in tables and JSON, and its
//! errors.

mod common;

use std::io::{Read, Write};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::BrokerProcess;
use serde_json::Value;

const RUN_TIMEOUT: Duration = Duration::from_secs(90);

/// The stages of `sluice_produce_stage_latency_seconds`, in path order.
const PRODUCE_STAGES: [&str; 6] = ["read", "parse", "order", "wal_write", "sync", "respond"];

/// Writes the tiny OMB workload of these tests into `dir`; returns its path.
fn tiny_workload(dir: &std::path::Path) -> std::path::PathBuf {
    let workload = dir.join("tiny.yaml");
    std::fs::write(
        &workload,
        "name: tiny\ntopics: 1\npartitionsPerTopic: 2\nkeyDistributor: \"KEY_ROUND_ROBIN\"\n\
         messageSize: 100\npayloadFile: \"payload/none.data\"\nsubscriptionsPerTopic: 1\n\
         consumerPerSubscription: 2\nproducersPerTopic: 1\nproducerRate: 2000\n\
         consumerBacklogSizeGB: 0\nwarmupDurationMinutes: 0\ntestDurationMinutes: 1\n",
    )
    .unwrap();
    workload
}

#[test]
fn perf_runs_a_workload_file_and_writes_omb_json() {
    let dir = tempfile::tempdir().unwrap();
    // Like the broker's own start: shards on every core, and its admin server for
    // --broker-metrics; its log is checked on drop.
    let broker = BrokerProcess::start(&dir.path().join("data"), &[]);
    let admin = broker.admin.clone().expect("the broker's admin address");
    let workload = tiny_workload(dir.path());
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
            "--broker-metrics",
            &format!("http://{admin}/metrics"),
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
    let mut stdout = String::new();
    perf.stdout
        .take()
        .expect("stdout is piped")
        .read_to_string(&mut stdout)
        .unwrap();
    // One report line per stage, each with produces in it.
    for stage in PRODUCE_STAGES {
        let prefix = format!("sluice perf: stage {stage} ");
        let line = stdout
            .lines()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("no line for stage {stage} in:\n{stdout}"));
        let count: u64 = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("count="))
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("no count in {line:?}"));
        assert!(count > 0, "{line}");
        for field in ["p50=", "p99=", "p99.9="] {
            assert!(line.contains(field), "{field} in {line:?}");
        }
    }

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
    let stages: Vec<&str> = result["sluiceBrokerStages"]
        .as_array()
        .expect("the stage figures in the JSON")
        .iter()
        .map(|s| s["stage"].as_str().expect("a stage name"))
        .collect();
    assert_eq!(stages, PRODUCE_STAGES);
}

#[test]
fn perf_refuses_a_malformed_or_unreachable_broker_metrics_url() {
    let dir = tempfile::tempdir().unwrap();
    let workload = tiny_workload(dir.path());
    // Nothing listens on port 1; the check comes before any Kafka connection.
    for (url, status, message) in [
        ("ftp://127.0.0.1:9644/metrics", 2, "is not an http:// URL"),
        ("http://127.0.0.1:1/metrics", 1, "cannot connect"),
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .arg("perf")
            .arg(&workload)
            .args(["--bootstrap", "127.0.0.1:1", "--broker-metrics", url])
            .env_remove("RUST_BACKTRACE")
            .output()
            .expect("sluice perf runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(status), "{url}: {stderr}");
        assert!(stderr.contains(message), "{url}: {stderr}");
        assert!(!stderr.contains("panicked"), "{url}: {stderr}");
    }
}

/// Runs `sluice ARGS` against `broker` with `stdin`; returns its output.
fn sluice(broker: &BrokerProcess, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .env("SLUICE_BROKERS", &broker.bootstrap)
        .env_remove("RUST_BACKTRACE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sluice runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("stdin written");
    child.wait_with_output().expect("sluice ends")
}

/// stdout of a `sluice ARGS` that must succeed.
fn ok(broker: &BrokerProcess, args: &[&str], stdin: &str) -> String {
    let output = sluice(broker, args, stdin);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "sluice {args:?}: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// stdout of a `sluice ARGS --format json` that must succeed, parsed.
fn json(broker: &BrokerProcess, args: &[&str], stdin: &str) -> Value {
    let mut args = args.to_vec();
    args.extend(["--format", "json"]);
    let stdout = ok(broker, &args, stdin);
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{args:?}: {e}: {stdout}"))
}

/// stderr of a `sluice ARGS` that must fail with status 1.
fn fails(broker: &BrokerProcess, args: &[&str]) -> String {
    let output = sluice(broker, args, "");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(1), "sluice {args:?}: {stderr}");
    stderr
}

#[test]
fn every_administration_subcommand_shows_an_example_in_its_help() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path(), &["--shards", "1"]);
    for command in [
        "topic create",
        "topic list",
        "topic describe",
        "topic alter-config",
        "topic delete",
        "topic produce",
        "topic consume",
        "group list",
        "group describe",
        "group seek",
        "group delete",
        "cluster info",
        "cluster health",
        "partition move",
        "partition moves",
        "broker drain",
        "broker undrain",
        "user set",
        "user delete",
        "user list",
        "quota set",
        "quota delete",
        "quota list",
        "acl create",
        "acl delete",
        "acl list",
    ] {
        let mut args: Vec<&str> = command.split(' ').collect();
        args.push("--help");
        let help = ok(&broker, &args, "");
        assert!(help.contains(":\n  sluice "), "{command}: {help}");
    }
}

#[test]
fn topics_are_created_described_altered_produced_to_consumed_and_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path(), &["--shards", "2"]);
    let created = ok(
        &broker,
        &[
            "topic",
            "create",
            "orders",
            "-p",
            "3",
            "-c",
            "retention.ms=3600000",
        ],
        "",
    );
    assert_eq!(created, "TOPIC   STATUS\norders  created\n");
    assert!(fails(&broker, &["topic", "create", "orders"]).contains("already exists"));
    assert!(fails(&broker, &["topic", "create", "x", "-c", "novalue"]).contains("KEY=VALUE"));
    assert_eq!(
        json(&broker, &["topic", "list"], ""),
        serde_json::json!([{"name": "orders", "partitions": 3}])
    );

    let produced = json(
        &broker,
        &[
            "topic",
            "produce",
            "orders",
            "-p",
            "1",
            "--key-separator",
            ":",
        ],
        "k1:hello\nk2:world\nno key here\n",
    );
    assert_eq!(produced[0]["first_offset"], 0);
    assert_eq!(produced[0]["records"], 3);
    let described = json(&broker, &["topic", "describe", "orders"], "");
    assert_eq!(described["partitions"][1]["end_offset"], 3);
    assert_eq!(described["partitions"][0]["end_offset"], 0);
    assert_eq!(
        described["configs"],
        serde_json::json!([{"config": "retention.ms", "value": "3600000"}])
    );

    assert_eq!(
        ok(&broker, &["topic", "consume", "orders"], ""),
        "hello\nworld\nno key here\n"
    );
    let consumed = ok(
        &broker,
        &[
            "topic", "consume", "orders", "--num", "2", "--offset", "1", "--format", "json",
        ],
        "",
    );
    let records: Vec<Value> = consumed
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(records.len(), 2);
    assert_eq!(records[0]["offset"], 1);
    assert_eq!(records[0]["key"], "k2");
    assert_eq!(records[1]["key"], Value::Null);
    assert!(
        fails(
            &broker,
            &[
                "topic",
                "consume",
                "orders",
                "--num",
                "9",
                "--timeout-ms",
                "300"
            ]
        )
        .contains("3 of 9 records")
    );

    ok(
        &broker,
        &[
            "topic",
            "alter-config",
            "orders",
            "--set",
            "cleanup.policy=compact",
            "--delete",
            "retention.ms",
        ],
        "",
    );
    let described = json(&broker, &["topic", "describe", "orders"], "");
    assert_eq!(
        described["configs"],
        serde_json::json!([{"config": "cleanup.policy", "value": "compact"}])
    );
    assert!(
        fails(
            &broker,
            &[
                "topic",
                "alter-config",
                "orders",
                "--set",
                "retention.ms=soon"
            ]
        )
        .contains("InvalidConfig")
    );

    ok(&broker, &["topic", "delete", "orders"], "");
    assert_eq!(json(&broker, &["topic", "list"], ""), serde_json::json!([]));
    assert!(fails(&broker, &["topic", "describe", "orders"]).contains("UnknownTopicOrPartition"));
    assert!(fails(&broker, &["topic", "delete", "orders"]).contains("UnknownTopicOrPartition"));
}

#[test]
fn groups_are_listed_described_moved_and_deleted_and_the_cluster_described() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path(), &["--shards", "2"]);
    ok(&broker, &["topic", "create", "events", "-p", "2"], "");
    ok(&broker, &["topic", "produce", "events"], "a\nb\nc\n");

    assert_eq!(json(&broker, &["group", "list"], ""), serde_json::json!([]));
    let moved = json(
        &broker,
        &[
            "group", "seek", "billing", "--topic", "events", "--to", "end",
        ],
        "",
    );
    assert_eq!(moved[0]["offset"], 3);
    assert_eq!(moved[1]["offset"], 0);
    let listed = json(&broker, &["group", "list"], "");
    assert_eq!(listed[0]["group"], "billing");
    assert_eq!(listed[0]["state"], "Empty");
    ok(
        &broker,
        &["group", "seek", "billing", "--topic", "events", "--to", "1"],
        "",
    );
    let described = json(&broker, &["group", "describe", "billing"], "");
    assert_eq!(described["state"], "Empty");
    assert_eq!(described["offsets"][0]["committed_offset"], 1);
    assert_eq!(described["offsets"][0]["lag"], 2);
    assert!(ok(&broker, &["group", "describe", "billing"], "").contains("STATE    Empty"));
    assert!(
        fails(
            &broker,
            &[
                "group", "seek", "billing", "--topic", "events", "--to", "soon"
            ]
        )
        .contains("expected start, end or an offset")
    );
    ok(&broker, &["group", "delete", "billing"], "");
    assert_eq!(json(&broker, &["group", "list"], ""), serde_json::json!([]));
    assert!(fails(&broker, &["group", "delete", "billing"]).contains("GroupIdNotFound"));

    let info = json(&broker, &["cluster", "info"], "");
    assert_eq!(info["brokers"][0]["controller"], true);
    assert_eq!(info["brokers"].as_array().map(Vec::len), Some(1));
    assert!(info["cluster_id"].is_string());
    let health = json(&broker, &["cluster", "health"], "");
    assert_eq!(health[0]["healthy"], true);
    assert_eq!(health[0]["partitions"], 2);
    assert!(ok(&broker, &["cluster", "health"], "").starts_with("HEALTHY"));
    // A single node is the sole voter and leader of its metadata log.
    let status = json(&broker, &["cluster", "status"], "");
    assert_eq!(status["leader_id"], 0);
    assert_eq!(status["quorum"][0]["role"], "leader");
    assert_eq!(status["quorum"].as_array().map(Vec::len), Some(1));
    assert_eq!(status["brokers"][0]["partitions_led"], 2);
    assert!(ok(&broker, &["cluster", "status"], "").starts_with("LEADER"));
}

#[test]
fn an_unreachable_broker_is_one_line_naming_it() {
    let output = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["cluster", "info", "--brokers", "127.0.0.1:1"])
        .output()
        .expect("sluice runs");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.starts_with("error: no broker answered (127.0.0.1:1"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

/// `sluice start` takes each flag from `SLUICE_<FLAG>` too, the flag winning, and logs JSON
/// lines with `--log-format json` (here from the environment as well).
#[test]
fn start_flags_come_from_the_environment_and_logs_can_be_json() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start_with_env(
        dir.path(),
        &["--shards", "1"],
        &[("SLUICE_NODE_ID", "7"), ("SLUICE_LOG_FORMAT", "json")],
    );
    let info = json(&broker, &["cluster", "info"], "");
    assert_eq!(info["brokers"][0]["node_id"], 7, "from SLUICE_NODE_ID");
    let lines = broker.log_lines();
    assert!(!lines.is_empty());
    for line in &lines {
        let parsed: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: not JSON: {line}"));
        assert!(parsed["level"].is_string(), "{line}");
        assert_ne!(parsed["level"], "WARN", "{line}");
        assert_ne!(parsed["level"], "ERROR", "{line}");
    }
    drop(broker);

    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start_with_env(
        dir.path(),
        &["--shards", "1", "--node-id", "8"],
        &[("SLUICE_NODE_ID", "7")],
    );
    let info = json(&broker, &["cluster", "info"], "");
    assert_eq!(info["brokers"][0]["node_id"], 8, "the flag wins");
}

/// A profile file names the broker and the format; a flag or the environment wins over it.
#[test]
fn a_profile_names_the_broker_and_the_format() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(&dir.path().join("data"), &["--shards", "1"]);
    let profile = dir.path().join("profile.toml");
    std::fs::write(
        &profile,
        format!("brokers = \"{}\"\nformat = \"json\"\n", broker.bootstrap),
    )
    .unwrap();
    let run = |args: &[&str], brokers_env: Option<&str>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_sluice"));
        command
            .args(args)
            .env_remove("SLUICE_BROKERS")
            .env("HOME", dir.path());
        if let Some(brokers) = brokers_env {
            command.env("SLUICE_BROKERS", brokers);
        }
        command.output().expect("sluice runs")
    };
    let profile_arg = profile.to_str().unwrap();
    let output = run(&["cluster", "info", "--profile", profile_arg], None);
    assert!(output.status.success(), "{output:?}");
    let info: Value = serde_json::from_slice(&output.stdout).expect("JSON, as the profile says");
    assert_eq!(info["brokers"][0]["node_id"], 0);
    // The default profile is ~/.config/sluice/profile.toml.
    std::fs::create_dir_all(dir.path().join(".config/sluice")).unwrap();
    std::fs::copy(&profile, dir.path().join(".config/sluice/profile.toml")).unwrap();
    assert!(run(&["cluster", "health"], None).status.success());
    let text = run(&["cluster", "health", "--format", "text"], None);
    assert!(String::from_utf8_lossy(&text.stdout).starts_with("HEALTHY"));
    assert_eq!(
        run(&["cluster", "info"], Some("127.0.0.1:1")).status.code(),
        Some(1)
    );
    let flag = run(&["cluster", "info", "--brokers", "127.0.0.1:1"], None);
    assert_eq!(
        flag.status.code(),
        Some(1),
        "the flag wins over the profile"
    );
    std::fs::write(&profile, "bootstrap = \"x\"\n").unwrap();
    let bad = run(&["cluster", "info", "--profile", profile_arg], None);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown field `bootstrap`"));
}

/// `sluice user`: SCRAM credentials are set (password from a flag or stdin), listed, deleted
/// per mechanism or whole, refused with the broker's reason, and kept across a `kill -9`; the
/// broker keeps keys that the password matches (read back from its metadata store).
#[test]
fn users_are_set_listed_deleted_and_kept_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path(), &["--shards", "1"]);
    assert_eq!(json(&broker, &["user", "list"], ""), serde_json::json!([]));
    let set = ok(
        &broker,
        &[
            "user",
            "set",
            "alice",
            "--mechanism",
            "SCRAM-SHA-512",
            "--password",
            "alice-pw",
        ],
        "",
    );
    assert!(
        set.contains("alice") && set.contains("SCRAM-SHA-512"),
        "{set}"
    );
    // The password as stdin's first line; a second mechanism for the same user.
    ok(
        &broker,
        &[
            "user",
            "set",
            "alice",
            "--mechanism",
            "SCRAM-SHA-256",
            "--iterations",
            "8192",
        ],
        "alice-pw-256\n",
    );
    ok(&broker, &["user", "set", "bob"], "bob-pw\n");
    let listed = json(&broker, &["user", "list"], "");
    assert_eq!(
        listed,
        serde_json::json!([
            {"user": "alice", "mechanism": "SCRAM-SHA-256", "iterations": 8192},
            {"user": "alice", "mechanism": "SCRAM-SHA-512", "iterations": 4096},
            {"user": "bob", "mechanism": "SCRAM-SHA-512", "iterations": 4096},
        ])
    );
    let text = ok(&broker, &["user", "list", "bob"], "");
    assert!(text.starts_with("USER") && text.contains("bob"), "{text}");
    assert!(!text.contains("alice"), "{text}");

    // Refusals: the broker's (unknown user, iterations past its bound) and the CLI's own.
    assert!(fails(&broker, &["user", "list", "nobody"]).contains("ResourceNotFound"));
    assert!(fails(&broker, &["user", "delete", "nobody"]).contains("ResourceNotFound"));
    assert!(
        fails(
            &broker,
            &["user", "delete", "bob", "--mechanism", "SCRAM-SHA-256"]
        )
        .contains("ResourceNotFound")
    );
    assert!(
        fails(
            &broker,
            &[
                "user",
                "set",
                "carol",
                "--password",
                "pw",
                "--iterations",
                "100"
            ]
        )
        .contains("--iterations 100")
    );
    assert!(fails(&broker, &["user", "set", "carol"]).contains("no password"));
    assert!(
        fails(&broker, &["user", "set", "", "--password", "pw"]).contains("UnacceptableCredential")
    );

    let deleted = json(
        &broker,
        &["user", "delete", "alice", "--mechanism", "SCRAM-SHA-256"],
        "",
    );
    assert_eq!(
        deleted,
        serde_json::json!([{"user": "alice", "mechanism": "SCRAM-SHA-256", "status": "deleted"}])
    );
    let broker = broker.restart();
    let listed = json(&broker, &["user", "list"], "");
    assert_eq!(
        listed,
        serde_json::json!([
            {"user": "alice", "mechanism": "SCRAM-SHA-512", "iterations": 4096},
            {"user": "bob", "mechanism": "SCRAM-SHA-512", "iterations": 4096},
        ])
    );
    // Every credential of bob, whatever its mechanisms.
    let deleted = json(&broker, &["user", "delete", "bob"], "");
    assert_eq!(deleted[0]["mechanism"], "SCRAM-SHA-512");
    let listed = json(&broker, &["user", "list"], "");
    assert_eq!(listed.as_array().map(Vec::len), Some(1));

    // What the broker kept: keys the password matches, made from the salted password the CLI
    // sent.
    let data_dir = broker.data_dir.clone();
    drop(broker);
    let store = sluice_metadata::MetadataStore::open(&data_dir.join("metadata"), 0).unwrap();
    let image = store.image();
    let mechanism = sluice_metadata::ScramMechanism::Sha512;
    let alice = image.scram_credential("alice", mechanism).unwrap();
    assert!(alice.matches_password(mechanism, b"alice-pw"));
    assert!(!alice.matches_password(mechanism, b"alice-pw-256"));
    assert!(alice.salt.len() >= 16);
    assert_eq!(image.scram_user("bob"), None);
}

/// `sluice quota`: client quotas are set per client id and default user, listed (all, and
/// filtered), refused with the broker's reason, and deleted key by key and whole.
#[test]
fn quotas_are_set_listed_and_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path(), &["--shards", "1"]);
    assert_eq!(json(&broker, &["quota", "list"], ""), serde_json::json!([]));
    let set = ok(
        &broker,
        &[
            "quota",
            "set",
            "--client-id",
            "loader",
            "--producer-byte-rate",
            "10000000",
            "--consumer-byte-rate",
            "2000000",
        ],
        "",
    );
    assert!(
        set.contains("loader") && set.contains("producer_byte_rate"),
        "{set}"
    );
    ok(
        &broker,
        &[
            "quota",
            "set",
            "--user-default",
            "--request-percentage",
            "50",
        ],
        "",
    );
    let listed = json(&broker, &["quota", "list"], "");
    assert_eq!(
        listed,
        serde_json::json!([
            {"user": "", "client_id": "loader", "key": "producer_byte_rate", "value": 10000000.0},
            {"user": "", "client_id": "loader", "key": "consumer_byte_rate", "value": 2000000.0},
            {"user": "<default>", "client_id": "", "key": "request_percentage", "value": 50.0},
        ])
    );
    let loader = json(&broker, &["quota", "list", "--client-id", "loader"], "");
    assert_eq!(loader.as_array().map(Vec::len), Some(2), "{loader}");

    assert!(
        fails(
            &broker,
            &[
                "quota",
                "set",
                "--client-id",
                "x",
                "--request-percentage",
                "0"
            ]
        )
        .contains("InvalidRequest")
    );
    assert!(fails(&broker, &["quota", "set", "--client-id", "x"]).contains("nothing to set"));
    assert!(fails(&broker, &["quota", "delete"]).contains("name the entity"));

    ok(
        &broker,
        &[
            "quota",
            "delete",
            "--client-id",
            "loader",
            "--key",
            "consumer_byte_rate",
        ],
        "",
    );
    let loader = json(&broker, &["quota", "list", "--client-id", "loader"], "");
    assert_eq!(
        loader,
        serde_json::json!([
            {"user": "", "client_id": "loader", "key": "producer_byte_rate", "value": 10000000.0},
        ])
    );
    ok(&broker, &["quota", "delete", "--client-id", "loader"], "");
    ok(&broker, &["quota", "delete", "--user-default"], "");
    assert_eq!(json(&broker, &["quota", "list"], ""), serde_json::json!([]));
    broker.check_log();
}

/// `sluice acl`: ACLs are created for several resources and operations at once, listed (all,
/// by principal, and those that apply to a name), refused with the broker's reason, and
/// deleted by filter; without the authorizer the broker says so.
#[test]
fn acls_are_created_listed_and_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(
        dir.path(),
        &[
            "--shards",
            "1",
            "--authorizer",
            "acl",
            "--super-users",
            "User:ANONYMOUS",
        ],
    );
    assert_eq!(json(&broker, &["acl", "list"], ""), serde_json::json!([]));
    let created = json(
        &broker,
        &[
            "acl",
            "create",
            "--principal",
            "User:alice",
            "--operation",
            "read",
            "--operation",
            "Describe",
            "--topic",
            "orders",
            "--group",
            "billing",
        ],
        "",
    );
    assert_eq!(created.as_array().map(Vec::len), Some(4), "{created}");
    ok(
        &broker,
        &[
            "acl",
            "create",
            "--principal",
            "User:loader",
            "--operation",
            "IdempotentWrite",
            "--cluster",
        ],
        "",
    );
    ok(
        &broker,
        &[
            "acl",
            "create",
            "--principal",
            "User:loader",
            "--operation",
            "write",
            "--topic",
            "logs-",
            "--prefixed",
            "--deny",
            "--host",
            "10.0.0.7",
        ],
        "",
    );
    let row = |principal: &str,
               host: &str,
               kind: &str,
               name: &str,
               pattern: &str,
               op: &str,
               permission: &str| {
        serde_json::json!({
            "principal": principal, "host": host, "resource_type": kind, "resource_name": name,
            "pattern": pattern, "operation": op, "permission": permission,
        })
    };
    assert_eq!(
        json(&broker, &["acl", "list"], ""),
        serde_json::json!([
            row(
                "User:alice",
                "*",
                "group",
                "billing",
                "literal",
                "describe",
                "allow"
            ),
            row(
                "User:alice",
                "*",
                "group",
                "billing",
                "literal",
                "read",
                "allow"
            ),
            row(
                "User:alice",
                "*",
                "topic",
                "orders",
                "literal",
                "describe",
                "allow"
            ),
            row(
                "User:alice",
                "*",
                "topic",
                "orders",
                "literal",
                "read",
                "allow"
            ),
            row(
                "User:loader",
                "*",
                "cluster",
                "kafka-cluster",
                "literal",
                "idempotent_write",
                "allow"
            ),
            row(
                "User:loader",
                "10.0.0.7",
                "topic",
                "logs-",
                "prefixed",
                "write",
                "deny"
            ),
        ])
    );
    assert_eq!(
        json(
            &broker,
            &["acl", "list", "--topic", "logs-app", "--pattern", "match"],
            ""
        ),
        serde_json::json!([row(
            "User:loader",
            "10.0.0.7",
            "topic",
            "logs-",
            "prefixed",
            "write",
            "deny"
        )])
    );
    let alice = json(
        &broker,
        &[
            "acl",
            "list",
            "--principal",
            "User:alice",
            "--topic",
            "orders",
        ],
        "",
    );
    assert_eq!(alice.as_array().map(Vec::len), Some(2), "{alice}");
    assert!(
        fails(
            &broker,
            &[
                "acl",
                "create",
                "--principal",
                "alice",
                "--operation",
                "read",
                "--topic",
                "x"
            ]
        )
        .contains("InvalidRequest")
    );
    assert!(
        fails(
            &broker,
            &[
                "acl",
                "create",
                "--principal",
                "User:alice",
                "--operation",
                "read"
            ]
        )
        .contains("name a resource")
    );
    let deleted = json(
        &broker,
        &[
            "acl",
            "delete",
            "--principal",
            "User:alice",
            "--topic",
            "orders",
        ],
        "",
    );
    assert_eq!(deleted.as_array().map(Vec::len), Some(2), "{deleted}");
    assert!(
        deleted
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["status"] == "deleted"),
        "{deleted}"
    );
    assert!(fails(&broker, &["acl", "delete", "--pattern", "any"]).contains("name what to delete"));
    json(
        &broker,
        &[
            "acl",
            "delete",
            "--principal",
            "User:loader",
            "--pattern",
            "any",
        ],
        "",
    );
    json(&broker, &["acl", "delete", "--group", "billing"], "");
    assert_eq!(json(&broker, &["acl", "list"], ""), serde_json::json!([]));
    broker.check_log();

    let dir = tempfile::tempdir().unwrap();
    let plain = BrokerProcess::start(dir.path(), &["--shards", "1"]);
    assert!(fails(&plain, &["acl", "list"]).contains("SecurityDisabled"));
}
