//! One process per data dir, and restarts that come back: a second broker on a busy data dir
//! (or WAL directory) exits naming the holder while the first keeps serving; a start waits
//! for a lock or a port that is released during the wait; a port held for good ends the start
//! before the Kafka listener exists; and `kill -9` followed at once by a start on the same
//! Kafka and admin ports loses no acknowledged record (`SLUICE_CRASH_RESTARTS` rounds).

mod common;

use std::fs::OpenOptions;
use std::io::Read;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::{BrokerProcess, assert_topic_holds, produce_acked};

/// How long a start that must fail may take: far below the default lock wait (30 s), so a
/// broker that ignored `--lock-wait-ms` shows up.
const FAILED_START_TIMEOUT: Duration = Duration::from_secs(8);

/// Records produced before each `kill -9` of the crash test, spread over its partitions.
const CRASH_RECORDS: usize = 20_000;
const CRASH_PARTITIONS: i32 = 4;

/// Rounds of produce, `kill -9`, restart, read back in one run of the crash test.
const CRASH_RESTARTS_DEFAULT: usize = 3;

/// What a `sluice start` that exited printed, and how long it ran.
struct Exited {
    status: ExitStatus,
    stdout: String,
    stderr: String,
    ran: Duration,
}

/// Runs `sluice start` on `data_dir` (free ports unless `args` name some) until it exits;
/// panics if it is still running after [`FAILED_START_TIMEOUT`].
fn start_expecting_exit(data_dir: &Path, args: &[&str]) -> Exited {
    let start = Instant::now();
    let defaults: Vec<&str> = [
        ("--listen", "127.0.0.1:0"),
        ("--admin-listen", "127.0.0.1:0"),
    ]
    .into_iter()
    .filter(|(flag, _)| !args.contains(flag))
    .flat_map(|(flag, value)| [flag, value])
    .collect();
    let mut child = Command::new(common::sluice_binary())
        .arg("start")
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--wal-size", "64MiB", "--shards", "1"])
        .args(defaults)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the sluice binary starts");
    let Some(status) = common::wait_for(FAILED_START_TIMEOUT, || {
        child.try_wait().expect("wait works")
    }) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("sluice start still ran after {FAILED_START_TIMEOUT:?}");
    };
    let (mut stdout, mut stderr) = (String::new(), String::new());
    if let Some(mut out) = child.stdout.take() {
        out.read_to_string(&mut stdout).expect("stdout readable");
    }
    if let Some(mut err) = child.stderr.take() {
        err.read_to_string(&mut stderr).expect("stderr readable");
    }
    eprintln!("[refused broker] {stderr}");
    Exited {
        status,
        stdout,
        stderr,
        ran: start.elapsed(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_broker_on_a_busy_data_dir_exits_naming_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let first = BrokerProcess::start(dir.path(), &["--shards", "1"]);
    let lock_path = dir.path().join(".lock");
    let record = std::fs::read_to_string(&lock_path).expect("the lock file is written");
    assert!(
        record.contains(&format!("pid={}\n", first.pid())),
        "{record}"
    );
    first.create_topic("busy", 1).await;

    let second = start_expecting_exit(dir.path(), &["--lock-wait-ms", "300"]);
    assert!(!second.status.success(), "{:?}", second.status);
    assert!(second.ran < FAILED_START_TIMEOUT, "ran {:?}", second.ran);
    let holder = format!("{} is locked by pid {} ", lock_path.display(), first.pid());
    assert!(second.stderr.contains(&holder), "{}", second.stderr);
    assert!(
        second.stderr.contains("--lock-wait-ms"),
        "{}",
        second.stderr
    );
    assert!(
        !second.stdout.contains("sluice listening"),
        "{}",
        second.stdout
    );

    // The first broker still serves, and still owns its lock file.
    let acked = produce_acked(&first, "busy", 1, 10).await;
    assert_topic_holds(&first, "busy", &acked);
    let record = std::fs::read_to_string(&lock_path).expect("the lock file is still there");
    assert!(
        record.contains(&format!("pid={}\n", first.pid())),
        "{record}"
    );
}

#[test]
fn a_second_broker_on_a_busy_wal_directory_exits_naming_it() {
    let (data, other_data, wal) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let wal_path = wal.path().to_str().expect("a UTF-8 path");
    let first = BrokerProcess::start(data.path(), &["--shards", "1", "--wal-path", wal_path]);
    let second = start_expecting_exit(
        other_data.path(),
        &["--wal-path", wal_path, "--lock-wait-ms", "0"],
    );
    assert!(!second.status.success(), "{:?}", second.status);
    let holder = format!(
        "{} is locked by pid {} ",
        wal.path().join(".lock").display(),
        first.pid()
    );
    assert!(second.stderr.contains(&holder), "{}", second.stderr);
    assert!(
        second.stderr.contains("uses this WAL directory"),
        "{}",
        second.stderr
    );
}

#[test]
fn a_start_waits_for_a_lock_and_ports_released_during_the_wait() {
    let dir = tempfile::tempdir().unwrap();
    // This test process holds the data dir's lock as an exiting broker would, and both ports
    // without SO_REUSEPORT, so that the broker's binds meet EADDRINUSE.
    let lock = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(dir.path().join(".lock"))
        .expect("lock file");
    lock.try_lock().expect("the lock is free");
    std::fs::write(
        dir.path().join(".lock"),
        format!("pid={}\n", std::process::id()),
    )
    .expect("lock record");
    let kafka = TcpListener::bind("127.0.0.1:0").expect("a free port");
    let admin = TcpListener::bind("127.0.0.1:0").expect("a free port");
    let kafka_addr = kafka.local_addr().expect("bound").to_string();
    let admin_addr = admin.local_addr().expect("bound").to_string();
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        drop(lock);
        std::thread::sleep(Duration::from_millis(300));
        drop(kafka);
        drop(admin);
    });
    let broker = BrokerProcess::start(
        dir.path(),
        &[
            "--shards",
            "1",
            "--listen",
            &kafka_addr,
            "--admin-listen",
            &admin_addr,
            "--lock-wait-ms",
            "30000",
            "--bind-retry-ms",
            "30000",
        ],
    );
    release.join().expect("no panic");
    assert_eq!(broker.bootstrap, kafka_addr);
    assert_eq!(broker.admin.as_deref(), Some(admin_addr.as_str()));
    let log = broker.log_lines().join("\n");
    let waited_for_lock = format!("is locked by pid {}: waiting", std::process::id());
    assert!(log.contains(&waited_for_lock), "{log}");
    assert!(
        log.contains(&format!("admin address {admin_addr} is in use")),
        "{log}"
    );
}

#[test]
fn a_port_held_for_good_ends_the_start_before_the_kafka_listener_exists() {
    let dir = tempfile::tempdir().unwrap();
    let admin = TcpListener::bind("127.0.0.1:0").expect("a free port");
    let admin_addr = admin.local_addr().expect("bound").to_string();
    let refused = start_expecting_exit(
        dir.path(),
        &["--admin-listen", &admin_addr, "--bind-retry-ms", "200"],
    );
    assert!(!refused.status.success(), "{:?}", refused.status);
    assert!(
        refused
            .stderr
            .contains(&format!("admin server on {admin_addr}"))
            && refused.stderr.contains("--bind-retry-ms"),
        "{}",
        refused.stderr
    );
    assert!(
        !refused.stdout.contains("sluice listening"),
        "{}",
        refused.stdout
    );
    // It released the data dir on its way out.
    let broker = BrokerProcess::start(dir.path(), &["--shards", "1", "--lock-wait-ms", "0"]);
    drop(broker);
}

/// Produce 20,000 acknowledged records (acks=all, idempotent) on 4 partitions, `kill -9`, start
/// again at once on the dead broker's Kafka and admin ports, read all of them back in order.
/// Every other round starts the new broker before the old one is reaped, as a supervisor that
/// does not wait would. `SLUICE_CRASH_RESTARTS=100` runs 100 rounds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_and_restart_on_the_same_ports_keeps_every_acked_record() {
    let rounds = std::env::var("SLUICE_CRASH_RESTARTS")
        .ok()
        .map(|v| {
            v.parse::<usize>()
                .expect("SLUICE_CRASH_RESTARTS is a count")
        })
        .unwrap_or(CRASH_RESTARTS_DEFAULT);
    let dir = tempfile::tempdir().unwrap();
    // The admin server is on (a free port at first, then the same one on every restart).
    let mut broker = BrokerProcess::start(dir.path(), &["--shards", "2"]);
    let started = Instant::now();
    for round in 0..rounds {
        let topic = format!("crash-{round}");
        broker.create_topic(&topic, CRASH_PARTITIONS).await;
        let acked = produce_acked(&broker, &topic, CRASH_PARTITIONS, CRASH_RECORDS).await;
        let (kafka, admin) = (broker.bootstrap.clone(), broker.admin.clone());
        let reap_first = round % 2 == 1;
        broker = broker.restart_at_once_on_same_ports(reap_first);
        assert_eq!((&broker.bootstrap, &broker.admin), (&kafka, &admin));
        assert_topic_holds(&broker, &topic, &acked);
        eprintln!(
            "crash round {} of {rounds} passed (reaped before the restart: {reap_first}), {:?} in",
            round + 1,
            started.elapsed()
        );
    }
}
