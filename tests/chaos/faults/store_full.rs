//! The object store (a local directory) on a 16 MiB tmpfs: uploads fail with ENOSPC while the
//! producer goes on (into the WAL, then waiting for WAL space); after a while the file system
//! grows and the broker must catch up by itself, with every acknowledged record intact, also
//! after a restart (reads then come from the objects).

use std::time::{Duration, Instant};

use crate::common::{BrokerProcess, wait_for};
use crate::rng::Rng;
use crate::scenario::{self, Outcome};
use crate::tmpfs::Tmpfs;
use crate::workload::{self, History, Running};

const SMALL_MIB: u64 = 16;
const LARGE_MIB: u64 = 512;
/// The store counts as full below this much free space.
const FULL_BYTES: u64 = 1 << 20;

pub fn run(seed: u64) -> Result<Outcome, String> {
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().expect("a temporary directory");
    // Declared before the broker, so it is unmounted after the broker is gone.
    let store = Tmpfs::mount(&dir.path().join("objects"), SMALL_MIB)?;
    let store_path = store.path().to_string_lossy().into_owned();
    let args = scenario::broker_args(1 + rng.below(2), &["--object-store", &store_path]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let broker = BrokerProcess::start(dir.path(), &args);
    allow_store_errors(&broker);
    let duration = rng.between(Duration::from_secs(3), Duration::from_secs(5));
    // 4 KiB values at 1500..4000 a second: the 16 MiB fill within the workload.
    let timeouts = vec![("message.timeout.ms", "60000".to_string())];
    let mut workload = scenario::workload(&mut rng, duration, 4096, timeouts);
    workload.rate_per_s += 1000;
    workload::create_topic(&broker.bootstrap, &workload.topic, workload.partitions)?;
    let history = History::new();
    let running = Running::start(&broker.bootstrap, &workload, seed, &history);
    let started = Instant::now();
    let mut notes = vec![format!("{workload:?}")];
    // Full: nearly no space left, or an upload already failed for want of it.
    let filled = wait_for(duration + Duration::from_secs(10), || {
        let retries = scenario::metric(&broker, "sluice_objstore_upload_retries_total");
        (store.free_bytes() < FULL_BYTES || retries > 0).then_some(())
    });
    match filled {
        Some(()) => notes.push(format!("store full at {:?}", started.elapsed())),
        None => notes.push("the store never filled".into()),
    }
    // The schedule: how long the store stays full.
    let full_for = rng.between(Duration::from_millis(200), Duration::from_secs(3));
    std::thread::sleep(full_for);
    notes.push(format!("grown to {LARGE_MIB} MiB after {full_for:?} full"));
    store.resize(LARGE_MIB)?;
    let produced = running.finish();
    scenario::wait_uploaded(&broker)?;
    notes.push(scenario::store_failures(&broker));
    let mut reads = scenario::scan(&broker.bootstrap, &workload, &history, 0)?;
    let broker = broker.restart();
    reads += scenario::scan(&broker.bootstrap, &workload, &history, 1)?;
    drop(broker);
    scenario::judge(&history, seed, &produced, reads, notes)
}

/// The lines a full store makes the broker log; it retries each.
fn allow_store_errors(broker: &BrokerProcess) {
    // An upload that cannot be written is retried until the store has room.
    broker.allow_log("upload not committed; retrying");
    broker.allow_log("object upload failing; retrying");
    // The maintenance pass (every 10 s) writes objects too.
    broker.allow_log("compaction step failed");
}
