//! Compaction, retention and garbage collection of the whole object registry; run by one
//! shard (shard 0) for the broker.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::FutureExt;
use sluice_objstore::{CompactionConfig, Compactor, ObjectStore, falling_behind};

use crate::clock::now_ms;
use crate::controller::ControllerHandle;
use crate::stop::StopSignal;

/// How often the maintenance shard looks for compaction, retention and garbage-collection work.
const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(10);

/// Runs until `stop`: compaction steps of at most `step_bytes_max` read bytes, then object
/// retention and garbage collection (objects dropped are deleted after `deletion_grace`).
pub async fn run_maintenance(
    store: &ObjectStore,
    controller: &ControllerHandle,
    step_bytes_max: usize,
    deletion_grace: Duration,
    stop: StopSignal,
) {
    let config = CompactionConfig {
        step_bytes_max,
        deletion_grace,
        ..CompactionConfig::default()
    };
    // Rewriting objects is CPU work that can wait: at the lowest priority, so it never takes
    // a core from the shards or their clients, unless it falls far behind.
    let behind = Arc::new(AtomicBool::new(false));
    let compactor = Compactor::new(store.background(behind.clone()), config);
    let now = || now_ms().max(0) as u64;
    loop {
        futures::select_biased! {
            _ = stop.clone().fuse() => return,
            _ = glommio::timer::sleep(MAINTENANCE_INTERVAL).fuse() => {}
        }
        loop {
            let image = controller.image();
            behind.store(
                falling_behind(&image, compactor.config()),
                Ordering::Relaxed,
            );
            match compactor.run_step(&image, controller, now()).await {
                Ok(Some(report)) => tracing::debug!(?report.plan, "compaction step"),
                Ok(None) => break,
                Err(error) => {
                    tracing::warn!(%error, "compaction step failed");
                    break;
                }
            }
        }
        let image = controller.image();
        if let Err(error) = compactor.apply_retention(&image, controller, now()).await {
            tracing::warn!(%error, "object retention failed");
        }
        let image = controller.image();
        if let Err(error) = compactor.collect_garbage(&image, controller, now()).await {
            tracing::warn!(%error, "object garbage collection failed");
        }
    }
}
