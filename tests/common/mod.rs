//! Starting the real `sluice` binary for integration tests, and client set-up.
#![allow(dead_code)] // each test binary uses a different part of this module

pub mod http;
pub mod python;
pub mod quorum;
pub mod raw;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use std::collections::HashMap;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// How long a broker may take to start before the test fails.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Log lines quoted when a start fails.
const START_FAILURE_LINES: usize = 20;

/// Starts tried by `restart_on_same_port` before it gives up, and the wait between two.
const RESTART_ATTEMPTS: usize = 50;
const RESTART_RETRY_INTERVAL: Duration = Duration::from_millis(100);

/// Warnings about the host, not the broker, that any test may meet: the broker says so and
/// carries on (README: a memlock limit it cannot raise; glibc refusing a malloc tunable).
const HOST_WARNINGS: &[&str] = &["RLIMIT_MEMLOCK is below", "glibc refused M_MMAP_THRESHOLD"];

/// A running broker process on a port of its own choosing.
///
/// Its log is checked like Redpanda's test suite checks its brokers': a WARN or ERROR line
/// (or a panic) that the test did not declare with [`BrokerProcess::allow_log`] fails the
/// test when the broker is dropped or restarted, or when the test calls
/// [`BrokerProcess::check_log`].
pub struct BrokerProcess {
    child: Child,
    /// `host:port` to bootstrap clients with.
    pub bootstrap: String,
    /// `host:port` of the admin HTTP server (None when started with `--admin-listen none`).
    pub admin: Option<String>,
    /// `host:port` of each listener by name, when started with `--listeners`.
    pub listeners: std::collections::HashMap<String, String>,
    /// The broker's data directory (kept across restarts).
    pub data_dir: PathBuf,
    /// Lines the broker wrote to stderr, collected by a thread.
    log: Arc<Mutex<Vec<String>>>,
    /// The thread collecting `log`; it ends when the process has exited.
    log_reader: Option<JoinHandle<()>>,
    /// Substrings of the WARN and ERROR lines this test expects (see `allow_log`).
    allowed_log: Mutex<Vec<String>>,
    extra_args: Vec<String>,
    envs: Vec<(String, String)>,
}

impl BrokerProcess {
    /// Starts a broker on a fresh port with `data_dir` and extra flags.
    pub fn start(data_dir: &Path, extra_args: &[&str]) -> BrokerProcess {
        BrokerProcess::start_with_env(data_dir, extra_args, &[])
    }

    /// Starts a broker with extra flags and environment variables (e.g. AWS credentials).
    pub fn start_with_env(
        data_dir: &Path,
        extra_args: &[&str],
        envs: &[(&str, &str)],
    ) -> BrokerProcess {
        BrokerProcess::try_start_with_env(data_dir, extra_args, envs)
            .unwrap_or_else(|failure| panic!("{failure}"))
    }

    /// Like `start_with_env`, but a broker that exits before it reports its addresses (e.g.
    /// because its port is still held) is an error naming its exit status and last log lines,
    /// not a panic, so that a caller may try again.
    pub fn try_start_with_env(
        data_dir: &Path,
        extra_args: &[&str],
        envs: &[(&str, &str)],
    ) -> Result<BrokerProcess, String> {
        let extra_args: Vec<String> = extra_args.iter().map(|s| s.to_string()).collect();
        let envs: Vec<(String, String)> = envs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        // Tests run in parallel: a free admin port each, unless the test chose one.
        let admin_flag = extra_args.iter().position(|a| a == "--admin-listen");
        let admin_wanted = admin_flag.is_none_or(|i| {
            extra_args
                .get(i + 1)
                .is_some_and(|v| !v.is_empty() && v != "none")
        });
        let admin_default: &[&str] = match admin_flag {
            None => &["--admin-listen", "127.0.0.1:0"],
            Some(_) => &[],
        };
        // A fresh port, unless the test chose one (a restart on the port clients know).
        let listen_default: &[&str] = if extra_args
            .iter()
            .any(|a| a == "--listen" || a == "--listeners")
        {
            &[]
        } else {
            &["--listen", "127.0.0.1:0"]
        };
        // A small WAL, unless the test chose one.
        let wal_default: &[&str] = if extra_args.iter().any(|a| a == "--wal-size") {
            &[]
        } else {
            &["--wal-size", "64MiB"]
        };
        let mut child = Command::new(sluice_binary())
            .arg("start")
            .args(admin_default)
            .args(listen_default)
            .arg("--data-dir")
            .arg(data_dir)
            .args(wal_default)
            .args(&extra_args)
            .env(
                "SLUICE_LOG",
                std::env::var("SLUICE_TEST_BROKER_LOG")
                    .unwrap_or_else(|_| "info,openraft=off".into()),
            )
            .envs(envs.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the sluice binary starts");
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("stderr is piped");
        let sink = log.clone();
        let log_reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[broker] {line}");
                sink.lock().unwrap().push(line);
            }
        });
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                for (kind, prefix) in [(0, "sluice listening on "), (1, "sluice admin on ")] {
                    if let Some(rest) = line.strip_prefix(prefix) {
                        let addr = rest.split_whitespace().next().unwrap_or_default();
                        let _ = tx.send((kind, addr.to_string()));
                    }
                }
                // `sluice listener NAME (PROTOCOL) on ADDR`, printed before the above.
                if let Some(rest) = line.strip_prefix("sluice listener ")
                    && let Some((name, addr)) = rest.split_once(' ')
                    && let Some((_, addr)) = addr.split_once(" on ")
                {
                    let _ = tx.send((2, format!("{name} {addr}")));
                }
            }
        });
        let deadline = Instant::now() + START_TIMEOUT;
        let (mut bootstrap, mut admin) = (None, None);
        let mut listeners = std::collections::HashMap::new();
        while bootstrap.is_none() || (admin_wanted && admin.is_none()) {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok((0, addr)) => bootstrap = Some(addr),
                Ok((2, named)) => {
                    if let Some((name, addr)) = named.split_once(' ') {
                        listeners.insert(name.to_string(), addr.to_string());
                    }
                }
                Ok((_, addr)) => admin = Some(addr),
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    // Its stdout closed: the process exited.
                    let status = child.wait().expect("wait works");
                    let _ = log_reader.join();
                    let lines = log.lock().unwrap();
                    let tail = &lines[lines.len().saturating_sub(START_FAILURE_LINES)..];
                    return Err(format!(
                        "the broker exited with {status} before reporting its addresses; its \
                         last log lines:\n{}",
                        tail.join("\n")
                    ));
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    let threads = thread_states(child.id());
                    let _ = child.kill();
                    panic!(
                        "the broker did not report its addresses within {START_TIMEOUT:?}; its \
                         threads (name, state, kernel wait channel):\n{threads}"
                    );
                }
            }
        }
        let bootstrap = bootstrap.unwrap_or_default();
        Ok(BrokerProcess {
            child,
            bootstrap,
            admin,
            listeners,
            data_dir: data_dir.to_path_buf(),
            log,
            log_reader: Some(log_reader),
            allowed_log: Mutex::new(Vec::new()),
            extra_args,
            envs,
        })
    }

    /// The broker's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `kill -9`: no chance to flush anything.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends `signal` (e.g. SIGSTOP, SIGCONT) to the process.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) with a pid we own and a valid signal number.
        let sent = unsafe { libc::kill(self.child.id() as i32, signal) };
        assert_eq!(sent, 0, "kill({signal}) failed");
        if signal == libc::SIGSTOP {
            // Delivered asynchronously: until every thread is stopped, the broker may still
            // read and write a request sent after kill(2) returned.
            let stopped = wait_for(Duration::from_secs(10), || {
                self.threads_stopped().then_some(())
            });
            assert!(stopped.is_some(), "the broker's threads never all stopped");
        }
    }

    /// True when every thread of the process is stopped (state T in /proc).
    fn threads_stopped(&self) -> bool {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{}/task", self.child.id())) else {
            return false;
        };
        tasks.flatten().all(|task| {
            std::fs::read_to_string(task.path().join("stat")).is_ok_and(|stat| {
                // `pid (comm) state ...`: comm may hold spaces, the state follows its ')'.
                stat.rsplit_once(')')
                    .is_some_and(|(_, rest)| rest.trim_start().starts_with(['T', 't']))
            })
        })
    }

    /// Waits up to `timeout` for the process to exit by itself; its status then (with every
    /// line it wrote in `log_lines`), or None while it runs.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait works") {
                self.finish_log();
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then waits for a clean exit; returns the exit status. `log_lines` then holds
    /// every line the process wrote.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        // SAFETY: kill(2) with a pid we own and a valid signal number.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait works") {
                self.finish_log();
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the broker did not stop within 30 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `kill -9`s this process, checks its log, and starts a new one on the same data dir,
    /// flags and allowed log lines (a new port).
    pub fn restart(mut self) -> BrokerProcess {
        self.kill9();
        self.finish_log();
        self.check_log();
        self.start_again(&self.extra_args)
    }

    /// A new broker on this one's data dir and environment with `args`, allowed the same log
    /// lines.
    fn start_again(&self, args: &[String]) -> BrokerProcess {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let envs: Vec<(&str, &str)> = self
            .envs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let next = BrokerProcess::start_with_env(&self.data_dir, &args, &envs);
        *next.allowed_log.lock().unwrap() = self.allowed_log.lock().unwrap().clone();
        next
    }

    /// `kill -9`s this process, checks its log, waits `pause` (the broker is down meanwhile),
    /// and starts a new one on the same data dir, flags, allowed log lines and Kafka port, so
    /// that clients connected to the old one reconnect to it. The dead process may hold the
    /// port (or the data dir) for a moment: a start that exits early is tried again, up to
    /// `RESTART_ATTEMPTS` times.
    pub fn restart_on_same_port(mut self, pause: Duration) -> BrokerProcess {
        self.kill9();
        self.finish_log();
        self.check_log();
        std::thread::sleep(pause);
        let mut args: Vec<&str> = Vec::with_capacity(self.extra_args.len() + 2);
        let mut flags = self.extra_args.iter().map(String::as_str);
        while let Some(flag) = flags.next() {
            if flag == "--listen" {
                flags.next();
            } else {
                args.push(flag);
            }
        }
        args.extend(["--listen", self.bootstrap.as_str()]);
        let envs: Vec<(&str, &str)> = self
            .envs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let next = BrokerProcess::start_retrying(&self.data_dir, &args, &envs)
            .unwrap_or_else(|last| {
                panic!(
                    "the broker did not start again on {} in {RESTART_ATTEMPTS} attempts; the last:\n{last}",
                    self.bootstrap,
                )
            });
        *next.allowed_log.lock().unwrap() = self.allowed_log.lock().unwrap().clone();
        next
    }

    /// Starts a broker, trying again up to `RESTART_ATTEMPTS` times while the start exits
    /// early (a `kill -9`ed process may hold a port or the data dir for a moment); the last
    /// failure if none started.
    pub fn start_retrying(
        data_dir: &Path,
        args: &[&str],
        envs: &[(&str, &str)],
    ) -> Result<BrokerProcess, String> {
        let mut last = String::new();
        for _ in 0..RESTART_ATTEMPTS {
            match BrokerProcess::try_start_with_env(data_dir, args, envs) {
                Ok(process) => return Ok(process),
                Err(failure) => last = failure,
            }
            std::thread::sleep(RESTART_RETRY_INTERVAL);
        }
        Err(last)
    }

    /// Sends `kill -9` and at once starts a new broker on the same data dir and flags, asking
    /// for the Kafka and admin ports this one had, as a supervisor restarts a crashed broker.
    /// With `reap_first` false the new one starts before the old one is reaped: it may find the
    /// old process still exiting, holding the data dir's lock and its ports. Unlike
    /// `restart_on_same_port` the start is not retried: the broker itself must wait for them.
    pub fn restart_at_once_on_same_ports(mut self, reap_first: bool) -> BrokerProcess {
        let _ = self.child.kill();
        if reap_first {
            self.kill9();
        }
        let mut args = without_flag(&self.extra_args, "--listen");
        args.extend(["--listen".to_string(), self.bootstrap.clone()]);
        if let Some(admin) = &self.admin {
            args = without_flag(&args, "--admin-listen");
            args.extend(["--admin-listen".to_string(), admin.clone()]);
        }
        let next = self.start_again(&args);
        self.kill9();
        self.finish_log();
        self.check_log();
        next
    }

    /// The broker's stderr so far.
    pub fn log_lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Declares that WARN or ERROR lines containing `pattern` are expected in this broker's
    /// log (and in the logs of its restarts), e.g. `broker.allow_log("cold read failed")`.
    pub fn allow_log(&self, pattern: &str) -> &Self {
        self.allowed_log.lock().unwrap().push(pattern.to_string());
        self
    }

    /// The broker's WARN and ERROR lines (and panics) so far that no `allow_log` pattern
    /// covers.
    pub fn unexpected_log_lines(&self) -> Vec<String> {
        let allowed = self.allowed_log.lock().unwrap();
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|line| is_warning_or_error(line))
            .filter(|line| {
                !HOST_WARNINGS
                    .iter()
                    .copied()
                    .chain(allowed.iter().map(String::as_str))
                    .any(|pattern| line.contains(pattern))
            })
            .cloned()
            .collect()
    }

    /// Panics, naming them, if the broker logged WARN or ERROR lines (or a panic) so far
    /// that the test did not declare with `allow_log`. Runs by itself on drop and restart.
    pub fn check_log(&self) {
        let unexpected = self.unexpected_log_lines();
        assert!(
            unexpected.is_empty(),
            "the broker logged {} unexpected WARN/ERROR line(s); fix the cause, or declare \
             them with BrokerProcess::allow_log if the test provokes them:\n{}",
            unexpected.len(),
            unexpected.join("\n")
        );
    }

    /// Waits for the log collector to read the rest of the exited process's stderr.
    fn finish_log(&mut self) {
        if let Some(reader) = self.log_reader.take() {
            let _ = reader.join();
        }
    }

    /// An admin client of this broker.
    pub fn admin(&self) -> rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> {
        self.client_config().create().expect("admin client")
    }

    /// Creates topic `name` with `partitions` partitions; panics on any error (test set-up).
    pub async fn create_topic(&self, name: &str, partitions: i32) {
        use rdkafka::admin::{AdminOptions, NewTopic, TopicReplication};
        let results = self
            .admin()
            .create_topics(
                &[NewTopic::new(name, partitions, TopicReplication::Fixed(1))],
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(60))),
            )
            .await
            .expect("CreateTopics answered");
        for result in results {
            result.unwrap_or_else(|(topic, code)| panic!("creating {topic} failed: {code:?}"));
        }
    }

    /// A client config pointing at this broker.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.bootstrap)
            .set("broker.address.family", "v4")
            .set("socket.timeout.ms", "30000")
            .set("message.timeout.ms", "60000");
        config
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        self.kill9();
        self.finish_log();
        if !std::thread::panicking() {
            self.check_log();
        } else {
            // A panic in a panic aborts the test binary; the test fails anyway.
            for line in self.unexpected_log_lines() {
                eprintln!("[broker, not allowed] {line}");
            }
        }
    }
}

/// Free loopback addresses for the controllers to listen on. Bound and released here, so
/// another process could take one in between: the voters must be named before the
/// controllers start, which port 0 cannot do.
pub fn free_addrs(count: usize) -> Vec<String> {
    let listeners: Vec<std::net::TcpListener> = (0..count)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("addr").to_string())
        .collect()
}

/// `--controller-quorum-voters` for controllers 1, 2, ... listening on `addrs`.
pub fn quorum_voters(addrs: &[String]) -> String {
    addrs
        .iter()
        .enumerate()
        .map(|(i, addr)| format!("{}@{addr}", i + 1))
        .collect::<Vec<_>>()
        .join(",")
}

/// The `sluice` binary under test: SLUICE_TEST_BINARY runs another build (e.g. release, for
/// the measurements of ignored tests).
pub fn sluice_binary() -> String {
    std::env::var("SLUICE_TEST_BINARY").unwrap_or_else(|_| env!("CARGO_BIN_EXE_sluice").to_string())
}

/// Each thread of process `pid` as `name state wchan`, from /proc: where a hung start waits.
fn thread_states(pid: u32) -> String {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return "(no /proc entry)".into();
    };
    let read = |path: std::path::PathBuf| {
        std::fs::read_to_string(path)
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    tasks
        .flatten()
        .map(|task| {
            let stat = read(task.path().join("stat"));
            // The state follows the parenthesised name, which may hold spaces.
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .unwrap_or("?")
                .to_string();
            format!(
                "{} {state} {}",
                read(task.path().join("comm")),
                read(task.path().join("wchan"))
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `args` without `flag` and the value after it.
fn without_flag(args: &[String], flag: &str) -> Vec<String> {
    let mut kept = Vec::with_capacity(args.len());
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        if arg == flag {
            args.next();
        } else {
            kept.push(arg.clone());
        }
    }
    kept
}

/// Whether a broker log line is at WARN or ERROR, or reports a panic. The broker logs with
/// tracing's plain format when stderr is not a terminal: `<timestamp>  WARN <target>: ...`.
fn is_warning_or_error(line: &str) -> bool {
    let level = line
        .split_whitespace()
        .take(2)
        .any(|t| t == "WARN" || t == "ERROR");
    level || (line.starts_with("thread '") && line.contains("panicked at"))
}

/// How long `assert_topic_holds` may take to read a topic back.
const RECORDS_TIMEOUT: Duration = Duration::from_secs(60);

pub fn idempotent_producer(broker: &BrokerProcess) -> FutureProducer {
    broker
        .client_config()
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()
        .expect("producer")
}

/// Produces `count` records round-robin over the topic's partitions and waits for every
/// acknowledgement; returns each partition's values in offset order.
pub async fn produce_acked(
    broker: &BrokerProcess,
    topic: &str,
    partitions: i32,
    count: usize,
) -> HashMap<i32, Vec<String>> {
    let producer = idempotent_producer(broker);
    let deliveries: Vec<_> = (0..count)
        .map(|i| {
            let value = format!("{topic}-{i}");
            let partition = i as i32 % partitions;
            let delivery = producer
                .send_result(
                    FutureRecord::<(), _>::to(topic)
                        .partition(partition)
                        .payload(&value),
                )
                .unwrap_or_else(|(error, _)| panic!("record {i} not queued: {error}"));
            async move { (partition, value, delivery.await) }
        })
        .collect();
    let mut acked: HashMap<i32, Vec<(i64, String)>> = HashMap::new();
    for (partition, value, delivery) in futures::future::join_all(deliveries).await {
        let delivered = delivery
            .expect("the producer was not dropped")
            .unwrap_or_else(|(error, _)| panic!("{value} not acknowledged: {error}"));
        assert_eq!(delivered.partition, partition);
        acked
            .entry(partition)
            .or_default()
            .push((delivered.offset, value));
    }
    acked
        .into_iter()
        .map(|(partition, mut records)| {
            records.sort();
            let offsets: Vec<i64> = records.iter().map(|(offset, _)| *offset).collect();
            let dense: Vec<i64> = (0..offsets.len() as i64).collect();
            assert_eq!(
                offsets, dense,
                "{topic}/{partition}: acked offsets not dense"
            );
            (partition, records.into_iter().map(|(_, v)| v).collect())
        })
        .collect()
}

/// Reads every partition of `topic` from offset 0 and checks it holds exactly `expected`, in
/// order: nothing lost, nothing twice, nothing else.
pub fn assert_topic_holds(
    broker: &BrokerProcess,
    topic: &str,
    expected: &HashMap<i32, Vec<String>>,
) {
    let consumer: BaseConsumer = broker
        .client_config()
        .set("group.id", "sluice-assert-topic-holds")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()
        .expect("consumer");
    let mut assignment = TopicPartitionList::new();
    for partition in expected.keys() {
        assignment
            .add_partition_offset(topic, *partition, Offset::Beginning)
            .expect("assignment");
    }
    consumer.assign(&assignment).expect("assign");
    let wanted: usize = expected.values().map(Vec::len).sum();
    let mut read: HashMap<i32, Vec<String>> = HashMap::new();
    let mut total = 0;
    let deadline = Instant::now() + RECORDS_TIMEOUT;
    while total < wanted {
        assert!(
            Instant::now() < deadline,
            "{topic}: read {total} of {wanted} acknowledged records"
        );
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message = message.expect("no consume error");
        let values = read.entry(message.partition()).or_default();
        assert_eq!(
            message.offset(),
            values.len() as i64,
            "{topic}/{}: offsets not dense",
            message.partition()
        );
        values.push(String::from_utf8_lossy(message.payload().unwrap_or_default()).into_owned());
        total += 1;
    }
    for (partition, values) in expected {
        assert_eq!(
            read.get(partition),
            Some(values),
            "{topic}/{partition}: not the acknowledged records in order"
        );
        let (low, high) = consumer
            .fetch_watermarks(topic, *partition, RECORDS_TIMEOUT)
            .expect("watermarks");
        assert_eq!(
            (low, high),
            (0, values.len() as i64),
            "{topic}/{partition}: records beyond the acknowledged ones"
        );
    }
}

/// Polls `check` until it returns Some or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
