//! The round trip of `kafka_clients.rs` and the consumer-group flow of `consumer_groups.rs`,
//! with kafka-python (an independent client implementation) from the venv `scripts/test` creates.

mod common;

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::thread::JoinHandle;
use std::time::Duration;

use common::{BrokerProcess, wait_for};

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

/// How long a script may run before the test fails: its own waits are bounded well below this.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(300);

/// Runs `tests/python/<script>` against a fresh two-shard broker; returns its stdout.
fn run_script(script: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path(), &["--shards", "2"]);
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(script);
    let mut child = Command::new(python())
        .arg(path)
        .arg(&broker.bootstrap)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python runs");
    let stdout = read_in_background(child.stdout.take().expect("stdout is piped"));
    let stderr = read_in_background(child.stderr.take().expect("stderr is piped"));
    let status = wait_for(SCRIPT_TIMEOUT, || child.try_wait().expect("wait works"));
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let stdout = stdout.join().expect("stdout reader");
    let stderr = stderr.join().expect("stderr reader");
    assert!(
        status.is_some_and(|s| s.success()),
        "{script} failed (status {status:?}, limit {SCRIPT_TIMEOUT:?}):\n{stdout}\n{stderr}"
    );
    stdout
}

fn read_in_background(mut pipe: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = pipe.read_to_string(&mut text);
        text
    })
}

#[test]
fn kafka_python_round_trip() {
    assert!(run_script("roundtrip.py").contains("round trip"));
}

#[test]
fn kafka_python_consumer_groups() {
    assert!(run_script("groups.py").contains("groups"));
}
