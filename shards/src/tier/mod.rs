//! The object tier of one shard: uploads of its WAL into objects, the WAL trim that follows,
//! log-cache eviction, cold reads, and (on shard 0) compaction, retention and garbage collection.
//!
//! The plan is in `objstore/README.md` ("How the broker integrates it"): a record is handed to
//! the uploader once durable, in WAL order; the WAL is trimmed only after the objects holding
//! it are durable and committed to metadata; store outages are retried forever inside the
//! upload, so meanwhile the WAL fills and producers wait (back-pressure, not errors).

pub mod io_report;
pub mod maintenance;
pub mod upload;

use std::cell::{Cell, RefCell};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sluice_metadata::{CommandOutcome, MetadataCommand, MetadataImage};
use sluice_objstore::io_pacer::ShardIoSignal;
use sluice_objstore::{
    BlockCache, ColdReader, CompactionConfig, Compactor, ObjectStore, ObjectStoreError, Registry,
    RegistryError, Uploader, UploaderConfig,
};

use crate::chunk_pool::ChunkPool;
use crate::controller::{ControllerError, ControllerHandle};

/// The object-tier state of one shard.
pub struct ObjectTier {
    store: ObjectStore,
    cold: ColdReader,
    uploader: RefCell<Uploader>,
    log_cache_bytes: u64,
    /// An upload of everything durable is wanted now, whatever the triggers say (a
    /// partition moving away needs its WAL tail in objects): see [`ObjectTier::ask_upload`].
    upload_asked: Cell<bool>,
    /// Wakes the upload task when an upload is asked for.
    upload_wake: RefCell<Option<futures::channel::oneshot::Sender<()>>>,
    /// Uploads link the closed segments of a segmented WAL as objects instead of writing
    /// their records again: see [`ObjectTier::link_wal_segments`].
    link_segments: bool,
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
            upload_asked: Cell::new(false),
            upload_wake: RefCell::new(None),
            link_segments: false,
        }
    }

    /// Uploads make objects of the WAL's closed segment files by hard links (each byte is then
    /// written once, by the WAL) when the WAL is segmented: for a local store on the WAL's
    /// file system (`BrokerConfig::wal_segmented`).
    pub fn link_wal_segments(mut self, link: bool) -> ObjectTier {
        self.link_segments = link;
        self
    }

    /// Asks the upload task for an upload of every durable WAL record now (the next one,
    /// if one is in flight).
    pub fn ask_upload(&self) {
        self.upload_asked.set(true);
        if let Some(wake) = self.upload_wake.borrow_mut().take() {
            let _ = wake.send(());
        }
    }

    /// The partition of `stream_id` left this shard: see [`Uploader::forget_stream`].
    pub fn forget_stream(&self, stream_id: u64) {
        self.uploader.borrow_mut().forget_stream(stream_id);
    }

    /// Resolves when an upload is asked for after this call.
    fn upload_asked_signal(&self) -> futures::channel::oneshot::Receiver<()> {
        let (wake, asked) = futures::channel::oneshot::channel();
        *self.upload_wake.borrow_mut() = Some(wake);
        asked
    }

    /// The log cache's budget in bytes.
    pub fn log_cache_budget_bytes(&self) -> u64 {
        self.log_cache_bytes
    }

    /// This shard's place in the local store's I/O pacer (`io_report.rs`), which it reports
    /// its WAL's latency to; `None` for S3.
    pub fn io_signal(&self) -> Option<Arc<ShardIoSignal>> {
        self.store.io_pacer().map(|pacer| pacer.shard())
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
    ) -> Result<(Arc<MetadataImage>, CommandOutcome), RegistryError> {
        ControllerHandle::submit(self, command)
            .await
            .map_err(|e| match &e {
                ControllerError::Metadata(error) => RegistryError::from_metadata(error),
                // Perhaps sent before the controller stopped.
                ControllerError::Stopped => RegistryError::Unconfirmed(e.to_string()),
            })
    }
}

/// Wait before reading state from objects again after a failed read (an object store
/// hiccup).
const STATE_READ_RETRY_DELAY: Duration = Duration::from_millis(500);

/// Runs `read` until it succeeds, waiting [`STATE_READ_RETRY_DELAY`] after each failure, which
/// it logs as a WARN naming `what` and `shard`: for state a shard reads from objects and
/// cannot serve without (a new coordinator's logs, a moved partition's transaction history).
pub async fn read_until_done<T, F>(shard: usize, what: &str, mut read: impl FnMut() -> F) -> T
where
    F: std::future::Future<Output = Result<T, String>>,
{
    loop {
        match read().await {
            Ok(value) => return value,
            Err(error) => {
                tracing::warn!(shard, %error, "reading {what} from objects failed; retrying");
                glommio::timer::sleep(STATE_READ_RETRY_DELAY).await;
            }
        }
    }
}

/// Deletes objects a crash left between put and commit; run before any upload starts.
pub fn delete_orphans(store: &ObjectStore, image: &MetadataImage) -> Result<usize, String> {
    let compactor = Compactor::new(store.clone(), CompactionConfig::default());
    futures::executor::block_on(compactor.delete_orphans(image, image.next_object_id()))
        .map(|keys| keys.len())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
pub(crate) mod tests {
    use std::cell::Cell;
    use std::future::Future;
    use std::rc::Rc;
    use std::time::Instant;

    use bytes::{BufMut, BytesMut};
    use sluice_metadata::MetadataStore;
    use sluice_objstore::AppendedRecord;

    use super::*;
    use crate::controller::Controller;

    /// A shard's tier over a local-directory store and a metadata controller, both in a
    /// temporary directory: no WAL, no socket.
    pub(crate) struct TierFixture {
        pub(crate) controller: ControllerHandle,
        pub(crate) store: ObjectStore,
        pub(crate) tier: ObjectTier,
        pool: ChunkPool,
        wal_position: Cell<u64>,
    }

    impl TierFixture {
        /// Runs `test` on a glommio executor with a fresh fixture.
        pub(crate) fn run<F, T>(test: T)
        where
            T: FnOnce(Rc<TierFixture>) -> F + Send + 'static,
            F: Future<Output = ()> + 'static,
        {
            let dir = tempfile::tempdir().expect("temporary directory");
            let metadata = MetadataStore::open(&dir.path().join("metadata"), 0).expect("metadata");
            let (controller_thread, controller) =
                Controller::start(metadata, Vec::new()).expect("controller");
            let objects = dir.path().join("objects");
            glommio::LocalExecutorBuilder::default()
                .spawn(move || async move {
                    let store = ObjectStore::local(objects).expect("local store");
                    let tier = ObjectTier::new(
                        store.clone(),
                        1 << 20,
                        1 << 20,
                        1 << 20,
                        Duration::from_secs(1),
                    );
                    let fixture = Rc::new(TierFixture {
                        controller,
                        store,
                        tier,
                        pool: ChunkPool::new(4 << 20),
                        wal_position: Cell::new(0),
                    });
                    test(fixture).await;
                })
                .expect("executor starts")
                .join()
                .expect("test ran");
            controller_thread.join();
        }

        /// Creates a topic of one partition; returns its stream id.
        pub(crate) async fn create_topic(&self, name: &str) -> u64 {
            let (image, _) = self
                .controller
                .submit(MetadataCommand::CreateTopic {
                    name: name.into(),
                    partitions: 1,
                    configs: Default::default(),
                    shards: 1,
                })
                .await
                .expect("topic created");
            image.topic(name).expect("topic").partitions[0].stream_id
        }

        pub(crate) async fn delete_topic(&self, name: &str) {
            self.controller
                .submit(MetadataCommand::DeleteTopic { name: name.into() })
                .await
                .expect("topic deleted");
        }

        /// Uploads `records` as the shard's upload task does: appended, sealed, committed.
        pub(crate) async fn upload(&self, records: Vec<AppendedRecord>) {
            let now = Instant::now();
            let sealed = {
                let mut uploader = self.tier.uploader.borrow_mut();
                for mut record in records {
                    let end = self.wal_position.get() + record.payload.len() as u64;
                    self.wal_position.set(end);
                    record.wal_end_position = end;
                    uploader
                        .append(record, now, sluice_objstore::StreamRoll::NONE)
                        .expect("appended");
                }
                uploader.seal()
            };
            let mut sealed = sealed.expect("something to upload");
            sealed
                .run(&self.store, &self.controller)
                .await
                .expect("upload committed");
            self.tier.uploader.borrow_mut().completed();
        }

        /// [`ObjectTier::read`] of one partition from `offset`, up to 1 MiB.
        pub(crate) async fn read(
            &self,
            stream_id: u64,
            offset: i64,
        ) -> Result<Bytes, ColdReadError> {
            self.tier
                .read(&self.controller, &self.pool, stream_id, offset, 1 << 20)
                .await
        }
    }

    /// A WAL record of `stream_id` holding one batch of `count` records from `first_offset`:
    /// Kafka's 12-byte batch prefix (base offset, length) then `body_bytes` bytes (with the
    /// last offset delta where a v2 batch has it, when they are that many).
    pub(crate) fn record(
        stream_id: u64,
        first_offset: i64,
        count: i64,
        body_bytes: usize,
    ) -> AppendedRecord {
        let mut payload = BytesMut::with_capacity(12 + body_bytes);
        payload.put_i64(first_offset);
        payload.put_i32(body_bytes as i32);
        payload.put_bytes(first_offset as u8, body_bytes);
        // A v2 batch says where it ends (last offset delta at byte 23); the cold reader goes by it.
        if payload.len() >= 61 {
            payload[23..27].copy_from_slice(&(count as i32 - 1).to_be_bytes());
        }
        let payload = payload.freeze();
        AppendedRecord {
            stream_id,
            first_offset,
            last_offset: first_offset + count - 1,
            payload_crc: crc32c::crc32c(&payload),
            payload,
            wal_end_position: 0,
        }
    }

    #[test]
    fn cold_reads_start_at_the_batch_holding_the_offset_and_end_at_the_objects() {
        TierFixture::run(|fixture| async move {
            let stream_id = fixture.create_topic("t").await;
            let (first, second) = (record(stream_id, 0, 2, 100), record(stream_id, 2, 1, 50));
            fixture.upload(vec![first.clone(), second.clone()]).await;
            let all = fixture.read(stream_id, 0).await.expect("in objects");
            assert_eq!(
                all,
                [first.payload.clone(), second.payload.clone()].concat()
            );
            let inside_first = fixture.read(stream_id, 1).await.expect("in objects");
            assert_eq!(inside_first, all, "offset 1 is in the first batch");
            let from_second = fixture.read(stream_id, 2).await.expect("in objects");
            assert_eq!(from_second, second.payload);
            assert!(matches!(
                fixture.read(stream_id, 3).await,
                Err(ColdReadError::NotInObjects)
            ));
        });
    }

    #[test]
    fn a_read_of_a_vanished_object_retries_once_then_reports_the_store() {
        TierFixture::run(|fixture| async move {
            let stream_id = fixture.create_topic("t").await;
            fixture.upload(vec![record(stream_id, 0, 1, 100)]).await;
            let keys: Vec<String> = fixture
                .controller
                .image()
                .objects()
                .map(|o| o.key.clone())
                .collect();
            fixture.store.delete(&keys).await.expect("deleted");
            let read = fixture.read(stream_id, 0).await;
            assert!(
                matches!(
                    read,
                    Err(ColdReadError::Store(ObjectStoreError::NotFound { .. }))
                ),
                "{read:?}"
            );
        });
    }
}
