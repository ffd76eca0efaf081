//! The object tier of one shard: uploads of its WAL into objects, the WAL trim that follows,
//! log-cache eviction, cold reads, and (on shard 0) compaction, retention and garbage collection.
//!
//! The plan is in `objstore/README.md` ("How the broker integrates it"): a record is handed to
//! the uploader once durable, in WAL order; the WAL is trimmed only after the objects holding
//! it are durable and committed to metadata; store outages are retried forever inside the
//! upload, so meanwhile the WAL fills and producers wait (back-pressure, not errors).

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::FutureExt;
use sluice_metadata::{CommandOutcome, MetadataCommand, MetadataImage};
use sluice_objstore::{
    BlockCache, ColdReader, CompactionConfig, Compactor, ObjectStore, ObjectStoreError, Registry,
    UploadError, Uploader, UploaderConfig, falling_behind,
};
use sluice_wal::WalPosition;

use crate::chunk_pool::ChunkPool;
use crate::connection::StopSignal;
use crate::controller::ControllerHandle;
use crate::shard::Shard;

/// Pause before running a refused upload again (the metadata was unreachable or refused).
const UPLOAD_RETRY_DELAY: Duration = Duration::from_millis(500);

/// How often shard 0 looks for compaction, retention and garbage-collection work.
const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(10);

/// The object-tier state of one shard.
pub struct ObjectTier {
    store: ObjectStore,
    cold: ColdReader,
    uploader: RefCell<Uploader>,
    log_cache_bytes: u64,
}

/// Why a cold read failed.
#[derive(Debug, thiserror::Error)]
pub enum ColdReadError {
    /// The offset is not in objects (retention removed it, or it never was there).
    #[error("offset not in object storage")]
    NotInObjects,
    /// The store failed (after its retries) or returned corrupt data.
    #[error(transparent)]
    Store(#[from] ObjectStoreError),
}

impl ObjectTier {
    /// The tier of a shard: `block_cache_bytes` for cold reads, `log_cache_bytes` of recent
    /// batches kept in memory, uploads of `upload_bytes` (capped for the WAL's size).
    pub fn new(
        store: ObjectStore,
        block_cache_bytes: usize,
        log_cache_bytes: u64,
        upload_bytes: usize,
        upload_interval: Duration,
    ) -> ObjectTier {
        let cold = ColdReader::new(BlockCache::new(store.clone(), block_cache_bytes));
        let uploader = Uploader::new(UploaderConfig {
            upload_bytes,
            upload_interval,
            ..UploaderConfig::default()
        });
        ObjectTier {
            store,
            cold,
            uploader: RefCell::new(uploader),
            log_cache_bytes,
        }
    }

    /// The log cache's budget in bytes.
    pub fn log_cache_budget_bytes(&self) -> u64 {
        self.log_cache_bytes
    }

    /// Bytes the block cache holds now.
    pub fn block_cache_bytes(&self) -> usize {
        self.cold.cache().bytes()
    }

    /// Whole batches of `stream_id` from the one holding `offset`, up to `max_bytes` (at least
    /// one batch), from objects. Retries once with a fresh image when the object was
    /// garbage-collected under an older one.
    pub async fn read(
        &self,
        controller: &ControllerHandle,
        pool: &ChunkPool,
        stream_id: u64,
        offset: i64,
        max_bytes: usize,
    ) -> Result<Bytes, ColdReadError> {
        let mut retried = false;
        loop {
            let image = controller.image();
            match self.cold.read(&image, stream_id, offset, max_bytes).await {
                Ok(Some(read)) => {
                    let parts: Vec<&Bytes> = read.chunks.iter().collect();
                    return Ok(pool.concat(&parts, read.bytes));
                }
                Ok(None) => return Err(ColdReadError::NotInObjects),
                Err(ObjectStoreError::NotFound { .. }) if !retried => retried = true,
                Err(error) => return Err(error.into()),
            }
        }
    }
}

impl Registry for ControllerHandle {
    async fn submit(
        &self,
        command: MetadataCommand,
    ) -> Result<(Arc<MetadataImage>, CommandOutcome), String> {
        ControllerHandle::submit(self, command)
            .await
            .map_err(|e| e.to_string())
    }
}

/// The upload task of a shard: feeds durable WAL records to the uploader, uploads when due,
/// trims the WAL and evicts uploaded batches from the log cache. Runs until the shard stops.
pub async fn run_uploads(shard: Rc<Shard>, stop: StopSignal) {
    let tier = &shard.tier;
    // Building and writing objects competes with the shards for the cores; it waits in the
    // background while the WAL has room for it to fall behind.
    let store = tier.store.background(shard.wal.uploads_behind());
    loop {
        feed(&shard);
        let now = Instant::now();
        let sealed = {
            let mut uploader = tier.uploader.borrow_mut();
            if uploader.should_seal(now) {
                uploader.seal()
            } else {
                None
            }
        };
        let Some(mut sealed) = sealed else {
            let deadline = tier.uploader.borrow().next_deadline();
            let timer = async {
                match deadline {
                    Some(deadline) => {
                        glommio::timer::sleep(deadline.saturating_duration_since(now)).await
                    }
                    None => futures::future::pending::<()>().await,
                }
            };
            futures::select_biased! {
                _ = stop.clone().fuse() => return,
                _ = shard.wal.durable_changed().fuse() => {}
                _ = timer.fuse() => {}
            }
            continue;
        };
        let report = loop {
            match sealed.run(&store, &shard.controller).await {
                Ok(report) => break report,
                Err(error) => {
                    tracing::warn!(shard = shard.id, %error, "upload not committed; retrying");
                    glommio::timer::sleep(UPLOAD_RETRY_DELAY).await;
                }
            }
        };
        tier.uploader.borrow_mut().completed();
        // Before any await: the image shows the objects now, and nothing may count their
        // bytes as still only in the log cache.
        for object in &report.objects {
            for range in &object.ranges {
                shard.mark_uploaded(range.stream_id, range.end_offset);
            }
        }
        if let Err(error) = shard.wal.trim(WalPosition(report.wal_end_position)).await {
            tracing::error!(shard = shard.id, %error, "WAL trim failed");
        }
        tracing::debug!(
            shard = shard.id,
            bytes = report.bytes,
            objects = report.objects.len(),
            put_retries = report.put_retries,
            "upload committed"
        );
        shard.evict_log_cache(tier.log_cache_bytes);
    }
}

/// Hands the durable queued records to the uploader until it is full.
fn feed(shard: &Shard) {
    let now = Instant::now();
    let mut uploader = shard.tier.uploader.borrow_mut();
    while let Some(result) = shard.wal.take_durable(|record| {
        match uploader.append(record.clone(), now) {
            Ok(()) => Ok(()),
            Err(error @ UploadError::Full { .. }) => Err((record, error)),
            Err(error) => {
                // A record that does not continue its stream cannot be committed; keeping it
                // would stop every upload of this shard behind it.
                tracing::error!(
                    stream_id = record.stream_id,
                    first_offset = record.first_offset,
                    %error,
                    "record not uploadable; skipped"
                );
                Ok(())
            }
        }
    }) {
        if result.is_err() {
            break;
        }
    }
}

/// Compaction, retention and garbage collection of the whole object registry; run by one shard.
pub async fn run_maintenance(shard: Rc<Shard>, stop: StopSignal) {
    let config = CompactionConfig {
        step_bytes_max: crate::runtime::compaction_step_bytes_max(&shard.config),
        deletion_grace: shard.config.object_delete_delay,
        ..CompactionConfig::default()
    };
    // Rewriting objects is CPU work that can wait: at the lowest priority, so it never takes
    // a core from the shards or their clients, unless it falls far behind.
    let behind = Arc::new(AtomicBool::new(false));
    let compactor = Compactor::new(shard.tier.store.background(behind.clone()), config);
    loop {
        futures::select_biased! {
            _ = stop.clone().fuse() => return,
            _ = glommio::timer::sleep(MAINTENANCE_INTERVAL).fuse() => {}
        }
        loop {
            let image = shard.controller.image();
            behind.store(
                falling_behind(&image, compactor.config()),
                Ordering::Relaxed,
            );
            match compactor
                .run_step(&image, &shard.controller, now_ms())
                .await
            {
                Ok(Some(report)) => tracing::debug!(?report.plan, "compaction step"),
                Ok(None) => break,
                Err(error) => {
                    tracing::warn!(%error, "compaction step failed");
                    break;
                }
            }
        }
        let image = shard.controller.image();
        if let Err(error) = compactor
            .apply_retention(&image, &shard.controller, now_ms())
            .await
        {
            tracing::warn!(%error, "object retention failed");
        }
        let image = shard.controller.image();
        if let Err(error) = compactor
            .collect_garbage(&image, &shard.controller, now_ms())
            .await
        {
            tracing::warn!(%error, "object garbage collection failed");
        }
    }
}

/// Applies retention.ms / retention.bytes to the shard's partitions every `interval`
/// (log.retention.check.interval.ms).
pub async fn run_retention(shard: Rc<Shard>, interval: Duration, stop: StopSignal) {
    loop {
        futures::select_biased! {
            _ = stop.clone().fuse() => return,
            _ = glommio::timer::sleep(interval).fuse() => {}
        }
        shard.apply_retention().await;
    }
}

/// Deletes objects a crash left between put and commit; run before any upload starts.
pub fn delete_orphans(store: &ObjectStore, image: &MetadataImage) -> Result<usize, String> {
    let compactor = Compactor::new(store.clone(), CompactionConfig::default());
    futures::executor::block_on(compactor.delete_orphans(image, image.next_object_id()))
        .map(|keys| keys.len())
        .map_err(|e| e.to_string())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
