//! What every scenario shares: the kinds, the broker flags and workload drawn from the seed,
//! and the final judgement (scan, then the checker).

use std::fmt;
use std::time::Duration;

use crate::common::{BrokerProcess, http, wait_for};

use crate::checker::{self, Isolation};
use crate::rng::Rng;
use crate::workload::{self, History, Produced, Workload};

pub const TOPIC: &str = "chaos";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `kill -9`, restarted at once or after a pause, on the same port.
    Kill,
    /// SIGSTOP for longer than the producer's timeouts, then SIGCONT.
    Stop,
    /// The object store (a local directory) on a tmpfs that fills up, then grows.
    StoreFull,
    /// S3 behind a proxy that fails requests in every way it can.
    S3Faults,
    /// A WAL on a file system too small for it: a clear refusal at start.
    WalFull,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Kill,
        Kind::Stop,
        Kind::StoreFull,
        Kind::S3Faults,
        Kind::WalFull,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Kill => "kill",
            Kind::Stop => "stop",
            Kind::StoreFull => "store-full",
            Kind::S3Faults => "s3-faults",
            Kind::WalFull => "wal-full",
        }
    }

    pub fn parse(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// What a scenario saw, for its summary line.
#[derive(Debug, Default)]
pub struct Outcome {
    pub sent: u64,
    pub acked: u64,
    pub failed: u64,
    pub reads: u64,
    /// Group offset commits acknowledged, and committed offsets read back.
    pub commits: u64,
    pub commit_fetches: u64,
    /// The fault schedule as it ran, and anything worth noting.
    pub notes: Vec<String>,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "sent {} acked {} failed {} read {}, commits {} read back {}; {}",
            self.sent,
            self.acked,
            self.failed,
            self.reads,
            self.commits,
            self.commit_fetches,
            self.notes.join("; ")
        )
    }
}

/// Broker flags for a scenario: `shards` (one or two: two take the cross-shard paths), small
/// uploads often (so that the object tier is busy within a few seconds), then `extra`.
pub fn broker_args(shards: u64, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "--shards",
        &shards.to_string(),
        "--memory",
        "256MiB",
        "--upload-size",
        "1MiB",
        "--upload-interval-ms",
        "200",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// A short keyed workload drawn from the seed.
pub fn workload(
    rng: &mut Rng,
    duration: Duration,
    value_bytes: usize,
    producer_config: Vec<(&'static str, String)>,
) -> Workload {
    Workload {
        topic: TOPIC.into(),
        partitions: 2 + rng.below(3) as i32,
        keys: 4 + rng.below(28),
        value_bytes,
        rate_per_s: 500 + rng.below(2500),
        duration,
        producer_config,
    }
}

/// Scan numbers of read_committed scans are offset by this from their read_uncommitted twin.
const READ_COMMITTED_SCAN: u32 = 100;

/// A full read_uncommitted scan numbered `scan`, and a read_committed one numbered
/// `scan + READ_COMMITTED_SCAN` when records were sent in transactions; returns the records
/// read.
pub fn scan(
    bootstrap: &str,
    workload: &Workload,
    history: &History,
    scan: u32,
) -> Result<u64, String> {
    let mut reads = workload::scan(
        bootstrap,
        &workload.topic,
        workload.partitions,
        scan,
        Isolation::ReadUncommitted,
        history,
    )?;
    if history.transactional() {
        reads += workload::scan(
            bootstrap,
            &workload.topic,
            workload.partitions,
            scan + READ_COMMITTED_SCAN,
            Isolation::ReadCommitted,
            history,
        )?;
    }
    Ok(reads)
}

/// Runs the checker over the history; every violation is an error.
pub fn judge(
    history: &History,
    seed: u64,
    produced: &Produced,
    reads: u64,
    mut notes: Vec<String>,
) -> Result<Outcome, String> {
    let events = history.take()?;
    let acked = events
        .iter()
        .filter(|e| matches!(e, checker::Event::Ack { .. }))
        .count() as u64;
    let failed = events
        .iter()
        .filter(|e| matches!(e, checker::Event::Fail { .. }))
        .count() as u64;
    let commits = events
        .iter()
        .filter(|e| matches!(e, checker::Event::GroupCommit { acked: true, .. }))
        .count() as u64;
    let commit_fetches = events
        .iter()
        .filter(|e| matches!(e, checker::Event::GroupFetch { .. }))
        .count() as u64;
    let violations = checker::check(&events, seed);
    if !violations.is_empty() {
        let shown: Vec<String> = violations.iter().map(|v| v.to_string()).collect();
        return Err(format!(
            "{} violation(s) (at most {} shown; schedule: {}):\n{}",
            violations.len(),
            checker::VIOLATIONS_MAX,
            notes.join("; "),
            shown.join("")
        ));
    }
    if let Some(fatal) = &produced.fatal {
        notes.push(format!("producer fatal error: {fatal}"));
    }
    if produced.transactions > 0 {
        let ended = |committed: bool| {
            events
                .iter()
                .filter(
                    |e| matches!(e, checker::Event::TxnEnd { committed: c, .. } if *c == committed),
                )
                .count()
        };
        notes.push(format!(
            "{} transactions: {} committed, {} aborted, the rest undecided",
            produced.transactions,
            ended(true),
            ended(false)
        ));
    }
    notes.extend(produced.transaction_notes.iter().cloned());
    Ok(Outcome {
        sent: produced.sent,
        acked,
        failed,
        reads,
        commits,
        commit_fetches,
        notes,
    })
}

/// WAL bytes a broker may still hold once its uploads have caught up (one upload's worth).
const CAUGHT_UP_BYTES: u64 = 1 << 20;
/// How long uploads may take to catch up once the store works again.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(60);

/// Polls the broker's metrics until its WAL holds at most `CAUGHT_UP_BYTES` (everything else
/// is in objects): the object tier recovered.
pub fn wait_uploaded(broker: &BrokerProcess) -> Result<(), String> {
    let mut used = 0;
    let caught_up = wait_for(CATCH_UP_TIMEOUT, || {
        used = metric(broker, "sluice_wal_used_bytes");
        (used <= CAUGHT_UP_BYTES).then_some(())
    });
    caught_up.ok_or_else(|| {
        format!(
            "uploads did not catch up within {CATCH_UP_TIMEOUT:?}: the WAL still holds {used} bytes"
        )
    })
}

/// A metric of the broker, summed over its labels (shards); 0 without an admin server.
/// Scenarios note the store's error and retry counts with it: the broker retries uploads
/// without logging each failure, and a scenario should show that its fault bit.
pub fn metric(broker: &BrokerProcess, name: &str) -> u64 {
    let Some(admin) = broker.admin.as_deref() else {
        return 0;
    };
    http::get(admin, "/metrics")
        .body
        .lines()
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// The store's failures as the broker counted them, for a scenario's notes.
pub fn store_failures(broker: &BrokerProcess) -> String {
    format!(
        "store request errors {}, upload retries {}",
        metric(broker, "sluice_objstore_request_errors_total"),
        metric(broker, "sluice_objstore_upload_retries_total")
    )
}
