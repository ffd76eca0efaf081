//! kafka-python scripts (`tests/python/`), run with the venv `scripts/test` creates (or
//! `SLUICE_TEST_PYTHON`).

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::thread::JoinHandle;
use std::time::Duration;

use super::wait_for;

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

/// Runs `tests/python/<script>` with `args`; fails the test unless it exits 0 within
/// `timeout`. Returns its stdout.
pub fn run_script(script: &str, args: &[&str], timeout: Duration) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(script);
    let mut child = Command::new(python())
        .arg(path)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python runs");
    // Read while it runs: a script filling a pipe would otherwise never exit.
    let stdout = read_in_background(child.stdout.take().expect("stdout is piped"));
    let stderr = read_in_background(child.stderr.take().expect("stderr is piped"));
    let status = wait_for(timeout, || child.try_wait().expect("wait works"));
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let stdout = stdout.join().expect("stdout reader");
    let stderr = stderr.join().expect("stderr reader");
    assert!(
        status.is_some_and(|s| s.success()),
        "{script} failed (status {status:?}, limit {timeout:?}):\n{stdout}\n{stderr}"
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
