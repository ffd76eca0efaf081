//! The deterministic simulation of one shard (issue 20; TigerBeetle's VOPR idea): the
//! partition pipeline, the WAL and the object tier over in-memory devices with injected
//! faults, run from a seed for a bounded number of steps, with the invariants checked after
//! every step (`simulator.rs` says how; `model.rs` what is checked).
//!
//! Knobs (environment): `SLUICE_SIM_SEED` replays one seed; `SLUICE_SIM_SEEDS` (default 16)
//! seeds from a random first one, printed at start; `SLUICE_SIM_STEPS` (default 500) steps
//! per seed; `SLUICE_SIM_DISK_FAULT_PPM` (default 2000) the WAL disk's write and sync
//! failures per million; `SLUICE_SIM_TRACE=1` prints every step. A violation panics with the
//! seed, the step and the last steps of the trace.

mod model;
mod simulator;

use simulator::{ClientBug, SimOptions, SimReport, Violation, run};
use sluice_objstore::MemoryBackendBug;
use sluice_wal::sim::SimDiskBug;

/// About 10 s on 2 cores (0.1 s a seed of 100 steps in the test profile).
const SEEDS_DEFAULT: u64 = 16;
const STEPS_DEFAULT: u64 = 500;

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    match value.parse() {
        Ok(parsed) => Some(parsed),
        Err(_) => panic!("{name}={value:?} is not a number"),
    }
}

fn summary(seed: u64, report: &SimReport) -> String {
    format!(
        "seed {seed}: {} steps, {} batches sent, {} acked, {} errors, {} crashes, {} uploads ({} failed), {} cold reads, {} disk write errors, {} sync errors, {} blocks damaged by crashes, digest {:016x}",
        report.steps,
        report.batches_sent,
        report.acks,
        report.errors,
        report.crashes,
        report.uploads,
        report.upload_failures,
        report.cold_reads,
        report.disk_write_errors,
        report.disk_sync_errors,
        report.blocks_damaged_by_crashes,
        report.digest
    )
}

#[test]
fn seeded_runs_keep_every_invariant() {
    let steps = env_u64("SLUICE_SIM_STEPS").unwrap_or(STEPS_DEFAULT);
    let disk_fault_ppm = env_u64("SLUICE_SIM_DISK_FAULT_PPM")
        .map_or(simulator::DISK_FAULT_PPM_DEFAULT, |ppm| {
            ppm.min(1_000_000) as u32
        });
    let (first, count) = match env_u64("SLUICE_SIM_SEED") {
        Some(seed) => (seed, 1),
        None => {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
            (nanos, env_u64("SLUICE_SIM_SEEDS").unwrap_or(SEEDS_DEFAULT))
        }
    };
    println!(
        "simulation: seeds {first}..{} × {steps} steps, {disk_fault_ppm} disk faults per million (replay one with SLUICE_SIM_SEED=<seed>)",
        first.wrapping_add(count)
    );
    for seed in (0..count).map(|i| first.wrapping_add(i)) {
        let started = std::time::Instant::now();
        let options = SimOptions {
            disk_fault_ppm,
            ..SimOptions::new(seed, steps)
        };
        match run(options) {
            Ok(report) => println!("{} in {:?}", summary(seed, &report), started.elapsed()),
            Err(violation) => panic!("{violation}"),
        }
    }
}

#[test]
fn the_same_seed_gives_the_same_trace() {
    let seed = 0x51u64;
    let first = run(SimOptions::new(seed, 120)).unwrap_or_else(|v| panic!("{v}"));
    let second = run(SimOptions::new(seed, 120)).unwrap_or_else(|v| panic!("{v}"));
    assert_eq!(
        first.digest,
        second.digest,
        "seed {seed} replayed differently:\n{}\n{}",
        summary(seed, &first),
        summary(seed, &second)
    );
    assert!(
        first.acks > 0 && first.crashes > 0,
        "{}",
        summary(seed, &first)
    );
}

/// Runs seeds with `broken` applied until one breaks an invariant; the invariant it broke.
fn first_violation(broken: impl Fn(SimOptions) -> SimOptions) -> Violation {
    for seed in 0..8 {
        if let Err(violation) = run(broken(SimOptions::new(seed, 200))) {
            println!("{violation}");
            return violation;
        }
    }
    panic!("no seed of eight caught the broken component");
}

#[test]
fn a_disk_that_acks_syncs_it_did_not_do_is_caught() {
    let violation = first_violation(|options| SimOptions {
        disk_fault_ppm: 0,
        store_faults: false,
        disk_bug: Some(SimDiskBug::SyncWithoutPersisting),
        ..options
    });
    assert!(
        matches!(
            violation.invariant,
            "the WAL never reports durable what a crash lost"
                | "every acknowledged record is readable at its offset"
                | "a record read below the high watermark stays"
                | "a crashed shard recovers"
        ),
        "{violation}"
    );
}

#[test]
fn a_disk_that_reports_failed_writes_as_written_is_caught() {
    let violation = first_violation(|options| SimOptions {
        disk_fault_ppm: 20_000,
        store_faults: false,
        disk_bug: Some(SimDiskBug::WriteErrorReportedAsSuccess),
        ..options
    });
    assert_eq!(
        violation.invariant, "a failed write is reported as an error, never as success",
        "{violation}"
    );
}

#[test]
fn an_object_store_that_loses_acknowledged_puts_is_caught() {
    let violation = first_violation(|options| SimOptions {
        disk_fault_ppm: 0,
        store_faults: false,
        store_bug: Some(MemoryBackendBug::LosesPuts),
        ..options
    });
    assert_eq!(
        violation.invariant, "every acknowledged record is readable at its offset",
        "{violation}"
    );
}

#[test]
fn a_client_whose_retries_duplicate_is_caught() {
    let violation = first_violation(|options| SimOptions {
        store_faults: false,
        client_bug: Some(ClientBug::RetryUnderNewEpoch),
        ..options
    });
    assert_eq!(
        violation.invariant, "no batch is stored twice",
        "{violation}"
    );
}

/// A bug the simulator found, replayed: a failed idempotent batch that had landed, was
/// uploaded and trimmed from the WAL, was stored again when its producer retried it after a
/// restart, because producer state was rebuilt from the WAL alone. It now comes back from
/// the metadata (`RecordUploads`), and the retry is answered as a duplicate.
#[test]
fn idempotent_retries_never_duplicate_across_uploads_and_restarts() {
    if let Err(violation) = run(SimOptions::new(1796444236925307142, 300)) {
        panic!("{violation}");
    }
}
