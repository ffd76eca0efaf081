//! The round trip of `kafka_clients.rs` and the consumer-group flow of `consumer_groups.rs`,
//! with kafka-python (an independent client implementation) from the venv `scripts/test` creates.

mod common;

use std::time::Duration;

use common::BrokerProcess;

/// How long a script may run before the test fails: its own waits are bounded well below this.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(300);

/// Runs `tests/python/<script>` against a fresh two-shard broker; returns its stdout.
fn run_script(script: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path(), &["--shards", "2"]);
    common::python::run_script(script, &[&broker.bootstrap], SCRIPT_TIMEOUT)
}

#[test]
fn kafka_python_round_trip() {
    assert!(run_script("roundtrip.py").contains("round trip"));
}

#[test]
fn kafka_python_consumer_groups() {
    assert!(run_script("groups.py").contains("groups"));
}
