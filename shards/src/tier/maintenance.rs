//! Compaction, retention and garbage collection of the whole object registry; run by one
//! shard (shard 0) for the broker.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::FutureExt;
use sluice_objstore::{
    CleanerConfig, CompactionConfig, Compactor, LogCleaner, ObjectStore, falling_behind,
    streams_to_clean,
};

use crate::clock::now_ms;
use crate::controller::ControllerHandle;
use crate::stop::StopSignal;

/// Cleanings of one partition in one pass at most (each maps up to a step of dirty bytes), so
/// that one partition far behind cannot hold back the others.
const CLEANINGS_PER_STREAM_PER_PASS_MAX: usize = 16;

/// Runs every `interval` until `stop`: compaction steps of at most `step_bytes_max` read bytes, then object
/// retention and garbage collection (objects dropped are deleted after `deletion_grace`).
pub async fn run_maintenance(
    store: &ObjectStore,
    controller: &ControllerHandle,
    step_bytes_max: usize,
    deletion_grace: Duration,
    interval: Duration,
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
    let cleaner = LogCleaner::new(
        store.background(behind.clone()),
        CleanerConfig {
            step_bytes_max,
            ..CleanerConfig::default()
        },
    );
    let now = || now_ms().max(0) as u64;
    loop {
        futures::select_biased! {
            _ = stop.clone().fuse() => return,
            _ = glommio::timer::sleep(interval).fuse() => {}
        }
        // In a cluster one broker maintains the shared objects (the one that coordinates),
        // so that two never compact or delete the same objects.
        if !controller.image().coordinates() {
            continue;
        }
        maintain(&compactor, &cleaner, &behind, controller, &now).await;
    }
}

/// One pass over the registry: compaction steps until none is left (or one fails), the log
/// cleaner over the compacted partitions that are due, then
/// retention marks the objects nothing can read any more, then garbage collection deletes
/// those marked at least the deletion grace before `now` (ms since the epoch; a parameter so
/// that the simulator's clock can drive it). Failures are logged and left to the next pass.
pub async fn maintain(
    compactor: &Compactor,
    cleaner: &LogCleaner,
    behind: &AtomicBool,
    controller: &ControllerHandle,
    now: &dyn Fn() -> u64,
) {
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
    clean_compacted_partitions(cleaner, controller, now().min(i64::MAX as u64) as i64).await;
    let image = controller.image();
    if let Err(error) = compactor.apply_retention(&image, controller, now()).await {
        tracing::warn!(%error, "object retention failed");
    }
    let image = controller.image();
    if let Err(error) = compactor.collect_garbage(&image, controller, now()).await {
        tracing::warn!(%error, "object garbage collection failed");
    }
}

/// Cleans each compacted partition that is due until its cleaner mark stops moving.
async fn clean_compacted_partitions(
    cleaner: &LogCleaner,
    controller: &ControllerHandle,
    now_ms: i64,
) {
    for stream_id in streams_to_clean(&controller.image(), now_ms) {
        for _ in 0..CLEANINGS_PER_STREAM_PER_PASS_MAX {
            let image = controller.image();
            let mark = image.cleaned_end_offset(stream_id);
            match cleaner.clean(&image, controller, stream_id, now_ms).await {
                Ok(Some(report)) => {
                    tracing::debug!(?report, "log cleaning");
                    if report.cleaned_end_offset <= mark {
                        break;
                    }
                }
                Ok(None) => break,
                Err(error) => {
                    tracing::warn!(stream_id, %error, "log cleaning failed");
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tier::tests::{TierFixture, record};

    /// Objects of a deleted topic: marked by the first pass, still in the store for readers
    /// holding an older image, deleted by the first pass after the grace.
    #[test]
    fn objects_of_a_deleted_topic_are_deleted_only_after_the_grace() {
        TierFixture::run(|fixture| async move {
            let stream_id = fixture.create_topic("gone").await;
            fixture.upload(vec![record(stream_id, 0, 3, 100)]).await;
            let image = fixture.controller.image();
            let keys: Vec<String> = image.objects().map(|o| o.key.clone()).collect();
            assert!(!keys.is_empty(), "the upload made objects");
            fixture.delete_topic("gone").await;

            let grace = Duration::from_secs(60);
            let compactor = Compactor::new(
                fixture.store.clone(),
                CompactionConfig {
                    deletion_grace: grace,
                    ..CompactionConfig::default()
                },
            );
            let behind = AtomicBool::new(false);
            let cleaner = LogCleaner::new(fixture.store.clone(), CleanerConfig::default());
            let marked_at_ms = 1_000_000;
            maintain(&compactor, &cleaner, &behind, &fixture.controller, &|| {
                marked_at_ms
            })
            .await;
            let image = fixture.controller.image();
            assert_eq!(image.objects().count(), 0, "dead objects leave the index");
            let marked = image.tombstones().count();
            assert!(marked >= keys.len());
            for key in &keys {
                assert!(fixture.store.head(key).await.is_ok(), "{key} deleted early");
            }

            let just_before = marked_at_ms + grace.as_millis() as u64 - 1;
            maintain(&compactor, &cleaner, &behind, &fixture.controller, &|| {
                just_before
            })
            .await;
            assert_eq!(fixture.controller.image().tombstones().count(), marked);

            let after = marked_at_ms + grace.as_millis() as u64;
            maintain(&compactor, &cleaner, &behind, &fixture.controller, &|| {
                after
            })
            .await;
            assert_eq!(fixture.controller.image().tombstones().count(), 0);
            for key in &keys {
                assert!(fixture.store.head(key).await.is_err(), "{key} still stored");
            }
        });
    }

    /// A live topic's records stay readable from objects through every pass, whatever the
    /// time (compaction may rewrite them, retention must not drop them).
    #[test]
    fn records_of_a_live_topic_are_kept() {
        TierFixture::run(|fixture| async move {
            let stream_id = fixture.create_topic("kept").await;
            let first = record(stream_id, 0, 1, 100);
            fixture.upload(vec![first.clone()]).await;
            let compactor = Compactor::new(fixture.store.clone(), CompactionConfig::default());
            let cleaner = LogCleaner::new(fixture.store.clone(), CleanerConfig::default());
            let behind = AtomicBool::new(false);
            for now_ms in [0, u64::MAX / 2] {
                maintain(&compactor, &cleaner, &behind, &fixture.controller, &|| {
                    now_ms
                })
                .await;
                let read = fixture.read(stream_id, 0).await.expect("still in objects");
                assert_eq!(read, first.payload);
            }
        });
    }
}
