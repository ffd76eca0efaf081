//! A WAL on a file system too small for it: the WAL is preallocated at start, so the start
//! must fail at once, exit non-zero and say why, not hang or leave something that breaks the
//! next start. Then the file system grows and the same data dir must start and work. (O_DIRECT
//! works on tmpfs on this kernel: 6.6 added it; an older kernel refuses it, which the broker
//! also names.)

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{BrokerProcess, wait_for};
use crate::rng::Rng;
use crate::scenario::{self, Outcome};
use crate::tmpfs::Tmpfs;
use crate::workload::{self, History, Running};

const WAL_MIB: u64 = 64;
/// A refused start must end within this.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(30);
/// What the refusal must say (the error of fallocate(2) on a full file system).
const REFUSAL_WORDS: &str = "No space left on device";

pub fn run(seed: u64) -> Result<Outcome, String> {
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let shards = 1 + rng.below(2);
    // Too small for one shard's WAL.
    let small_mib = 1 + rng.below(WAL_MIB - 1);
    let wal = Tmpfs::mount(&dir.path().join("wal"), small_mib)?;
    let wal_path = wal.path().to_string_lossy().into_owned();
    let mut notes = vec![format!(
        "{shards} shard(s), WAL file system {small_mib} MiB"
    )];
    refused(dir.path(), &wal_path, shards)?;
    wal.resize(WAL_MIB * shards + 16)?;
    notes.push("grown, started again".into());
    let args = scenario::broker_args(shards, &["--wal-path", &wal_path]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let broker = BrokerProcess::start(dir.path(), &args);
    let workload = scenario::workload(&mut rng, Duration::from_secs(1), 200, vec![]);
    workload::create_topic(&broker.bootstrap, &workload.topic, workload.partitions)?;
    let history = History::new();
    let produced = Running::start(&broker.bootstrap, &workload, seed, &history).finish();
    let reads = scenario::scan(&broker.bootstrap, &workload, &history, 0)?;
    drop(broker);
    scenario::judge(&history, seed, &produced, reads, notes)
}

/// Runs `sluice start` with its WAL on the small file system; Ok if it exits non-zero in time
/// and names the cause.
fn refused(data_dir: &std::path::Path, wal_path: &str, shards: u64) -> Result<(), String> {
    let binary = std::env::var("SLUICE_TEST_BINARY")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_sluice").to_string());
    let mut child = Command::new(binary)
        .args(["start", "--listen", "127.0.0.1:0", "--admin-listen", "none"])
        .arg("--data-dir")
        .arg(data_dir)
        .args([
            "--wal-path",
            wal_path,
            "--wal-size",
            &format!("{WAL_MIB}MiB"),
        ])
        .args(["--shards", &shards.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run sluice: {e}"))?;
    let started = Instant::now();
    let exited = wait_for(REFUSAL_TIMEOUT, || child.try_wait().ok().flatten());
    let Some(status) = exited else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(format!(
            "a start with a WAL larger than its file system did not exit within {REFUSAL_TIMEOUT:?}"
        ));
    };
    let output = child
        .wait_with_output()
        .map_err(|e| format!("output: {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if status.success() || stdout.contains("sluice listening on") {
        return Err(format!(
            "a start with a WAL larger than its file system did not fail ({status}):\n{stdout}{stderr}"
        ));
    }
    if !stderr.contains(REFUSAL_WORDS) {
        return Err(format!(
            "a start refused after {:?} ({status}) without saying {REFUSAL_WORDS:?}:\n{stderr}",
            started.elapsed()
        ));
    }
    Ok(())
}
