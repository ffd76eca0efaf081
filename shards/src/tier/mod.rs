//! The object tier of one shard: uploads of its WAL into objects, the WAL trim that follows,
//! log-cache eviction, cold reads, and (on shard 0) compaction, retention and garbage collection.
//!
//! The plan is in `objstore/README.md` ("How the broker integrates it"): a record is handed to
//! the uploader once durable, in WAL order; the WAL is trimmed only after the objects holding
//! it are durable and committed to metadata; store outages are retried forever inside the
//! upload, so meanwhile the WAL fills and producers wait (back-pressure, not errors).

pub mod maintenance;
pub mod upload;

use std::cell::RefCell;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sluice_metadata::{CommandOutcome, MetadataCommand, MetadataImage};
use sluice_objstore::{
    BlockCache, ColdReader, CompactionConfig, Compactor, ObjectStore, ObjectStoreError, Registry,
    Uploader, UploaderConfig,
};

use crate::chunk_pool::ChunkPool;
use crate::controller::ControllerHandle;

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

    /// The object store.
    pub fn store(&self) -> &ObjectStore {
        &self.store
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

/// Deletes objects a crash left between put and commit; run before any upload starts.
pub fn delete_orphans(store: &ObjectStore, image: &MetadataImage) -> Result<usize, String> {
    let compactor = Compactor::new(store.clone(), CompactionConfig::default());
    futures::executor::block_on(compactor.delete_orphans(image, image.next_object_id()))
        .map(|keys| keys.len())
        .map_err(|e| e.to_string())
}
