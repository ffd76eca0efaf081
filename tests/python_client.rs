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

#[test]
fn kafka_python_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path(), &["--shards", "2"]);
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/roundtrip.py");
    let output = Command::new(python())
        .arg(script)
        .arg(&broker.bootstrap)
        .output()
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "kafka-python round trip failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("round trip"), "{stdout}");
}
