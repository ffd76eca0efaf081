//! The same round trip as `kafka_clients.rs`, with kafka-python (an independent client
//! implementation) from the venv that `scripts/test` creates.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::BrokerProcess;

fn python() -> PathBuf {
    if let Ok(python) = std::env::var("SLUICE_TEST_PYTHON") {
        return PathBuf::from(python);
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(
        venv.exists(),
        "kafka-python is missing: run ./scripts/test (it creates .venv), or set SLUICE_TEST_PYTHON"
    );
    venv
}

/// Runs `tests/python/<script>` against a fresh two-shard broker; returns its stdout.
fn run_script(script: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path(), &["--shards", "2"]);
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(script);
    let output = Command::new(python())
        .arg(path)
        .arg(&broker.bootstrap)
        .output()
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{script} failed:\n{stdout}\n{stderr}"
    );
    stdout
}

#[test]
fn kafka_python_round_trip() {
    assert!(run_script("roundtrip.py").contains("round trip"));
}

// Ignored until a coordinator bug is fixed: a kafka-python member is sometimes expired by its
// session timeout and never rejoins (about 1 run in 6 here; issue 6 stays open for it).
// Run it with `cargo test --test python_client -- --ignored`.
#[test]
#[ignore = "kafka-python group members stall intermittently (issue 6)"]
fn kafka_python_consumer_groups() {
    assert!(run_script("groups.py").contains("groups"));
}
