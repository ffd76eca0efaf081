//! Starting the real `sluice` binary for integration tests, and client set-up.
#![allow(dead_code)] // each test binary uses a different part of this module

pub mod raw;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;

/// How long a broker may take to start before the test fails.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running broker process on a port of its own choosing.
pub struct BrokerProcess {
    child: Child,
    /// `host:port` to bootstrap clients with.
    pub bootstrap: String,
    /// The broker's data directory (kept across restarts).
    pub data_dir: PathBuf,
    /// Lines the broker wrote to stderr, collected by a thread.
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    extra_args: Vec<String>,
}

impl BrokerProcess {
    /// Starts a broker on a fresh port with `data_dir` and extra flags.
    pub fn start(data_dir: &Path, extra_args: &[&str]) -> BrokerProcess {
        let extra_args: Vec<String> = extra_args.iter().map(|s| s.to_string()).collect();
        let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .arg("start")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--wal-size")
            .arg("64MiB")
            .args(&extra_args)
            .env(
                "SLUICE_LOG",
                std::env::var("SLUICE_TEST_BROKER_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the sluice binary starts");
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("stderr is piped");
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[broker] {line}");
                sink.lock().unwrap().push(line);
            }
        });
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("sluice listening on ") {
                    let addr = rest
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_string();
                    let _ = tx.send(addr);
                }
            }
        });
        let bootstrap = match rx.recv_timeout(START_TIMEOUT) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                panic!("the broker did not report its address within {START_TIMEOUT:?}");
            }
        };
        BrokerProcess {
            child,
            bootstrap,
            data_dir: data_dir.to_path_buf(),
            log,
            extra_args,
        }
    }

    /// `kill -9`: no chance to flush anything.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits for a clean exit; returns the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        // SAFETY: kill(2) with a pid we own and a valid signal number.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait works") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the broker did not stop within 30 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts a new process on the same data dir and flags (a new port).
    pub fn restart(mut self) -> BrokerProcess {
        self.kill9();
        let args: Vec<&str> = self.extra_args.iter().map(String::as_str).collect();
        BrokerProcess::start(&self.data_dir, &args)
    }

    /// The broker's stderr so far.
    pub fn log_lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
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
