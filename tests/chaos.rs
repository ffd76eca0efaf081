//! A seeded fault suite with a history checker (issue 20). A scenario is a seed: it draws a
//! fault schedule and runs it against the real broker while an idempotent acks=all librdkafka
//! producer sends keyed records (a unique id in each value) and a committer commits group
//! offsets; every send, ack, failure, commit and read goes into a history. Once the faults
//! are healed a consumer reads every partition from its log start to its high watermark, and
//! the checker (`chaos/checker.rs`, pure) holds the history to the rules: each acknowledged
//! record read exactly once at its acknowledged offset, dense offsets, per-key order, failed
//! sends absent or present once, committed offsets never backwards, read_committed never
//! showing aborted data.
//!
//! Fault kinds, one module each under `chaos/faults/`: `kill` (kill -9, restart on the same
//! port at once or after a pause), `stop` (SIGSTOP past the client's timeouts), `store_full`
//! (the object store on a tmpfs that fills up, then grows), `s3_faults` (S3 behind a proxy of
//! our own that answers 500/503, adds latency, holds requests, resets connections and cuts
//! bodies short), `wal_full` (a WAL on a file system too small for it must be refused at
//! start, clearly). Torn and bit-flipped WAL tails are tested below the broker:
//! `wal-direct/tests/wal.rs` (`torn_tail_is_truncated_never_returned`,
//! `stale_records_after_a_torn_write_are_not_resurrected`,
//! `one_corrupted_header_copy_still_opens`), `wal-direct/tests/crash.rs` (seeded kill -9 of a
//! WAL writer) and `metadata/tests/store.rs` (`torn_log_tail_is_truncated`).
//!
//! `chaos_scenarios` runs `SLUICE_CHAOS_SCENARIOS` scenarios (default 10), cycling through
//! `SLUICE_CHAOS_KINDS` (comma-separated names, default all), scenario i with seed
//! `SLUICE_CHAOS_SEED + i * STRIDE` (the base seed is random unless set, and printed). Every
//! failure prints its kind, seed and the command that replays exactly that scenario.

mod common;
#[path = "../objstore/tests/common/s3_server.rs"]
mod s3_server;

#[path = "chaos/checker.rs"]
mod checker;
#[path = "chaos/rng.rs"]
mod rng;
#[path = "chaos/s3_proxy.rs"]
mod s3_proxy;
#[path = "chaos/scenario.rs"]
mod scenario;
#[path = "chaos/tmpfs.rs"]
mod tmpfs;
#[path = "chaos/workload.rs"]
mod workload;

#[path = "chaos/faults"]
mod faults {
    #[path = "kill.rs"]
    pub mod kill;
    #[path = "s3_faults.rs"]
    pub mod s3_faults;
    #[path = "stop.rs"]
    pub mod stop;
    #[path = "store_full.rs"]
    pub mod store_full;
    #[path = "wal_full.rs"]
    pub mod wal_full;
}

use std::panic::AssertUnwindSafe;
use std::time::{Instant, SystemTime};

use scenario::{Kind, Outcome};

/// Scenarios of one CI run: two of each kind, well within five minutes on two busy cores.
const SCENARIOS_DEFAULT: u64 = 10;
/// Scenarios one run may be asked for at most.
const SCENARIOS_MAX: u64 = 100_000;
/// Seeds of consecutive scenarios are this far apart (odd: every seed is reached once).
const STRIDE: u64 = 0x9e37_79b9_7f4a_7c15;

#[test]
fn chaos_scenarios() {
    let base_seed = env_u64("SLUICE_CHAOS_SEED").unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |t| t.as_nanos() as u64)
    });
    let count = env_u64("SLUICE_CHAOS_SCENARIOS")
        .unwrap_or(SCENARIOS_DEFAULT)
        .min(SCENARIOS_MAX);
    let kinds: Vec<Kind> = match std::env::var("SLUICE_CHAOS_KINDS") {
        Ok(names) => names
            .split(',')
            .map(|n| {
                Kind::parse(n.trim()).unwrap_or_else(|| {
                    panic!(
                        "SLUICE_CHAOS_KINDS: unknown kind {n:?}; the kinds are {:?}",
                        Kind::ALL.map(Kind::name)
                    )
                })
            })
            .collect(),
        Err(_) => Kind::ALL.to_vec(),
    };
    eprintln!(
        "chaos: base seed {base_seed}, {count} scenarios of {:?}",
        kinds.iter().map(|k| k.name()).collect::<Vec<_>>()
    );
    let mut failures = Vec::new();
    let mut per_kind = vec![0u64; Kind::ALL.len()];
    for i in 0..count {
        let kind = kinds[(i % kinds.len() as u64) as usize];
        let seed = base_seed.wrapping_add(i.wrapping_mul(STRIDE));
        let started = Instant::now();
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| run(kind, seed)))
            .unwrap_or_else(|panic| Err(panic_message(&*panic)));
        let took = started.elapsed();
        per_kind[Kind::ALL.iter().position(|k| *k == kind).unwrap_or(0)] += 1;
        match result {
            Ok(outcome) => eprintln!(
                "chaos: #{i} {} seed {seed} passed in {took:.1?}: {outcome}",
                kind.name()
            ),
            Err(failure) => {
                let report = format!(
                    "chaos: #{i} {} seed {seed} FAILED in {took:.1?}: {failure}\n  replay: {}",
                    kind.name(),
                    replay_command(kind, seed)
                );
                eprintln!("{report}");
                failures.push(report);
            }
        }
    }
    let counts: Vec<String> = Kind::ALL
        .iter()
        .zip(&per_kind)
        .filter(|(_, n)| **n > 0)
        .map(|(k, n)| format!("{} {n}", k.name()))
        .collect();
    eprintln!(
        "chaos: base seed {base_seed}: {count} scenarios ({}), {} failed",
        counts.join(", "),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {count} chaos scenarios failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn run(kind: Kind, seed: u64) -> Result<Outcome, String> {
    match kind {
        Kind::Kill => faults::kill::run(seed),
        Kind::Stop => faults::stop::run(seed),
        Kind::StoreFull => faults::store_full::run(seed),
        Kind::S3Faults => faults::s3_faults::run(seed),
        Kind::WalFull => faults::wal_full::run(seed),
    }
}

fn replay_command(kind: Kind, seed: u64) -> String {
    format!(
        "SLUICE_CHAOS_SEED={seed} SLUICE_CHAOS_KINDS={} SLUICE_CHAOS_SCENARIOS=1 \
         cargo nextest run --features hwloc --test chaos --no-capture -- chaos_scenarios",
        kind.name()
    )
}

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, not {value:?}")),
    )
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "a panic without a message".into())
}
