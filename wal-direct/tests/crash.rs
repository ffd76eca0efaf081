//! Kill test: a child process appends random records and prints every durable
//! position; the parent `kill -9`s it at random moments and checks that
//! recovery returns every record reported durable, byte for byte, and nothing
//! corrupt. Seeded: set SLUICE_WAL_CRASH_SEED to replay a failure.
//!
//! The child is this test binary re-invoked with SLUICE_WAL_CRASH_CHILD set.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{Rng, run, test_record};
use sluice_wal::{Durability, Wal, WalConfig, WalPosition};

const TEST_NAME: &str = "kill_9_never_loses_a_durable_record";
const ITERATIONS_DEFAULT: u64 = 60;
const CAPACITY_BYTES: u64 = 8 << 20;
const PAYLOAD_BYTES_MAX: u64 = 1 << 20;
const CHILD_TASKS: u64 = 6;
/// Record indexes of iteration i start at i * this.
const INDEX_STRIDE: u64 = 1 << 32;

fn config(path: &Path, durability: Durability) -> WalConfig {
    let mut config = WalConfig::new(path, CAPACITY_BYTES);
    config.group_commit_bytes_max = 256 << 10;
    config.inflight_writes_max = 4;
    config.durability = durability;
    config
}

fn durability_for(seed: u64, iteration: u64) -> Durability {
    if Rng(seed ^ iteration).below(2) == 0 {
        Durability::Dsync
    } else {
        Durability::Fdatasync
    }
}

#[test]
fn kill_9_never_loses_a_durable_record() {
    if let Ok(path) = std::env::var("SLUICE_WAL_CRASH_CHILD") {
        child(PathBuf::from(path));
        return;
    }
    let seed = std::env::var("SLUICE_WAL_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    let iterations = std::env::var("SLUICE_WAL_CRASH_ITERATIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(ITERATIONS_DEFAULT);
    eprintln!(
        "crash test seed = {seed} (SLUICE_WAL_CRASH_SEED={seed} replays it), {iterations} iterations"
    );
    let dir = common::scratch_dir("crash");
    let path = dir.join("wal");
    let mut rng = Rng(seed);
    let started = Instant::now();
    let mut durable_checked = 0usize;
    for iteration in 0..iterations {
        let report = run_child(
            &path,
            seed,
            iteration,
            Duration::from_millis(10 + rng.below(140)),
        );
        durable_checked += check_recovery(&path, seed, iteration, &report);
    }
    eprintln!(
        "crash test: {iterations} kills, {durable_checked} durable records verified in {:?}",
        started.elapsed()
    );
    assert!(
        durable_checked > 0,
        "seed {seed}: the child never reported a durable record"
    );
    std::fs::remove_dir_all(dir).ok();
}

/// What the child printed before it died.
struct ChildReport {
    /// index -> end position, for every record reported durable.
    durable: HashMap<u64, u64>,
    /// The highest trim the child had started.
    trim_max: u64,
}

fn run_child(path: &Path, seed: u64, iteration: u64, run_for: Duration) -> ChildReport {
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
        .env("SLUICE_WAL_CRASH_CHILD", path)
        .env("SLUICE_WAL_CRASH_SEED", seed.to_string())
        .env("SLUICE_WAL_CRASH_ITERATION", iteration.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("child stdout");
    let (lines_tx, lines_rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut report = ChildReport {
        durable: HashMap::new(),
        trim_max: 0,
    };
    let mut killed_at: Option<Instant> = None;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match lines_rx.recv_timeout(Duration::from_millis(1)) {
            Ok(line) => {
                if line.ends_with("READY") && killed_at.is_none() {
                    killed_at = Some(Instant::now() + run_for);
                }
                parse_line(&line, &mut report);
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        if killed_at.is_some_and(|at| Instant::now() >= at) {
            child.kill().expect("kill -9 child"); // SIGKILL
            break;
        }
        assert!(
            Instant::now() < deadline,
            "seed {seed} iteration {iteration}: child never got ready"
        );
    }
    let status = child.wait().expect("wait child");
    reader.join().expect("reader thread");
    for line in lines_rx.try_iter() {
        parse_line(&line, &mut report);
    }
    assert!(
        status.code().is_none(),
        "seed {seed} iteration {iteration}: child exited by itself: {status}"
    );
    report
}

fn parse_line(line: &str, report: &mut ChildReport) {
    let mut fields = line.split(' ');
    match (fields.next(), fields.next(), fields.next()) {
        (Some("D"), Some(index), Some(end)) => {
            report
                .durable
                .insert(index.parse().expect("index"), end.parse().expect("end"));
        }
        (Some("T"), Some(trim), None) => {
            report.trim_max = report.trim_max.max(trim.parse().expect("trim"));
        }
        _ => {}
    }
}

/// Recovers in this process and checks the records; returns how many
/// reported-durable records were verified.
fn check_recovery(path: &Path, seed: u64, iteration: u64, report: &ChildReport) -> usize {
    let recovered = run(async {
        let (wal, recovered) = Wal::open(config(path, Durability::Dsync))
            .await
            .unwrap_or_else(|e| panic!("seed {seed} iteration {iteration}: recovery failed: {e}"));
        wal.close().await.expect("close");
        recovered
    });
    let mut by_index = HashMap::new();
    let mut previous_end = 0;
    for record in &recovered {
        let index = record.first_offset;
        let expected = test_record(seed, index, PAYLOAD_BYTES_MAX);
        assert!(
            record.stream_id == expected.stream_id
                && record.last_offset == expected.last_offset
                && record.payload[..] == expected.payload[..],
            "seed {seed} iteration {iteration}: recovered record {index} is corrupt"
        );
        assert!(
            record.end_position.0 > previous_end,
            "seed {seed}: positions out of order"
        );
        previous_end = record.end_position.0;
        by_index.insert(index, record.end_position.0);
    }
    let mut verified = 0;
    for (index, end) in &report.durable {
        if *end <= report.trim_max {
            continue; // trimmed away: the uploader owns it now
        }
        assert_eq!(
            by_index.get(index),
            Some(end),
            "seed {seed} iteration {iteration}: durable record {index} (end {end}) lost"
        );
        verified += 1;
    }
    verified
}

/// The child: appends from several tasks, prints `D <index> <end>` once a
/// record is durable and `T <position>` before each trim, until killed.
fn child(path: PathBuf) {
    let seed: u64 = std::env::var("SLUICE_WAL_CRASH_SEED")
        .expect("seed")
        .parse()
        .expect("seed");
    let iteration: u64 = std::env::var("SLUICE_WAL_CRASH_ITERATION")
        .expect("iteration")
        .parse()
        .expect("iteration");
    run(async move {
        let (wal, _) = Wal::open(config(&path, durability_for(seed, iteration)))
            .await
            .expect("child open");
        let wal = Rc::new(wal);
        let next_index = Rc::new(std::cell::Cell::new(iteration * INDEX_STRIDE));
        let last_durable = Rc::new(std::cell::Cell::new(WalPosition(0)));
        println!("READY");
        let mut tasks = Vec::new();
        for _ in 0..CHILD_TASKS {
            let (wal, next_index, last_durable) =
                (wal.clone(), next_index.clone(), last_durable.clone());
            tasks.push(glommio::spawn_local(async move {
                loop {
                    let index = next_index.get();
                    next_index.set(index + 1);
                    let record = test_record(seed, index, PAYLOAD_BYTES_MAX);
                    let end = wal
                        .append(
                            record.stream_id,
                            record.first_offset,
                            record.last_offset,
                            &record.payload,
                        )
                        .await
                        .expect("append");
                    wal.wait_durable(end).await.expect("durable");
                    println!("D {index} {}", end.0);
                    if end > last_durable.get() {
                        last_durable.set(end);
                    }
                }
            }));
        }
        // The "uploader": keeps the ring below half full.
        loop {
            glommio::timer::sleep(Duration::from_millis(2)).await;
            if wal.stats().used_bytes > CAPACITY_BYTES / 2 {
                let trim = last_durable.get();
                println!("T {}", trim.0);
                wal.trim(trim).await.expect("trim");
            }
        }
    });
}
