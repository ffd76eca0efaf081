//! The block cache and the cold reader: how fetches of data that left the
//! WAL (and the log cache) are served from objects.
//!
//! Reads go by data block (~1 MiB, whole batches of one stream; see
//! `format`): the registry finds the object holding an offset, the object's
//! index (cached too) finds the block, a ranged GET fetches it. A bounded
//! LRU, weighed in bytes, keeps blocks and indexes; concurrent readers of
//! one block share one GET; a sequential reader prefetches the next blocks
//! so a catch-up consumer finds them ready. The cache is separate from the
//! log cache of tailing consumers, so cold reads never evict hot data.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::FutureExt;
use futures::future::Shared;
use sluice_metadata::{INTERNAL_STREAM_ID_MIN, MetadataImage, ObjectImage};

use crate::error::ObjectStoreError;
use crate::format::{DataBlock, ObjectIndex, check_block};
use crate::limits::{
    BATCH_HEADER_PREFIX_BYTES, BLOCK_CACHE_BYTES_DEFAULT, PREFETCHES_IN_FLIGHT_MAX,
    READ_AHEAD_BLOCKS_DEFAULT,
};
use crate::stats::Stats;
use crate::store::ObjectStore;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum CacheKey {
    Index { object_id: u64 },
    Block { object_id: u64, position: u64 },
}

#[derive(Debug, Clone)]
enum Value {
    Index(Arc<ObjectIndex>),
    Block(Bytes),
}

impl Value {
    fn weight(&self) -> usize {
        match self {
            Value::Index(index) => index.weight_bytes(),
            Value::Block(bytes) => bytes.len(),
        }
    }
}

type Fetch = Shared<futures::channel::oneshot::Receiver<Result<Value, ObjectStoreError>>>;

/// A bounded LRU of blocks and indexes, weighed in bytes. `Clone` shares it.
#[derive(Clone)]
pub struct BlockCache {
    inner: Arc<Mutex<CacheInner>>,
    store: ObjectStore,
}

struct CacheInner {
    capacity_bytes: usize,
    bytes: usize,
    tick: u64,
    entries: HashMap<CacheKey, (Value, u64)>,
    /// tick → key, oldest first.
    lru: BTreeMap<u64, CacheKey>,
    in_flight: HashMap<CacheKey, Fetch>,
    prefetches_in_flight: usize,
}

impl std::fmt::Debug for BlockCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.lock();
        f.debug_struct("BlockCache")
            .field("capacity_bytes", &inner.capacity_bytes)
            .field("bytes", &inner.bytes)
            .field("entries", &inner.entries.len())
            .finish()
    }
}

impl BlockCache {
    /// A cache of at most `capacity_bytes` over `store`.
    pub fn new(store: ObjectStore, capacity_bytes: usize) -> BlockCache {
        BlockCache {
            inner: Arc::new(Mutex::new(CacheInner {
                capacity_bytes,
                bytes: 0,
                tick: 0,
                entries: HashMap::new(),
                lru: BTreeMap::new(),
                in_flight: HashMap::new(),
                prefetches_in_flight: 0,
            })),
            store,
        }
    }

    /// A cache of `BLOCK_CACHE_BYTES_DEFAULT`.
    pub fn with_default_capacity(store: ObjectStore) -> BlockCache {
        BlockCache::new(store, BLOCK_CACHE_BYTES_DEFAULT)
    }

    /// Bytes held now (at most the capacity, plus one entry being added).
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    pub fn store(&self) -> &ObjectStore {
        &self.store
    }

    /// The index of an object (one or two ranged GETs on a miss).
    pub async fn index(&self, object: &ObjectImage) -> Result<Arc<ObjectIndex>, ObjectStoreError> {
        let store = self.store.clone();
        let key = object.key.clone();
        let size = object.size;
        let value = self
            .get_or_fetch(
                CacheKey::Index {
                    object_id: object.id,
                },
                false,
                async move {
                    ObjectIndex::read(&store, &key, size)
                        .await
                        .map(|i| Value::Index(Arc::new(i)))
                },
            )
            .await?;
        match value {
            Some(Value::Index(index)) => Ok(index),
            _ => unreachable!("an index key holds an index"),
        }
    }

    /// One data block, checked against its CRC32C.
    pub async fn block(
        &self,
        object: &ObjectImage,
        block: &DataBlock,
    ) -> Result<Bytes, ObjectStoreError> {
        match self.fetch_block(object, block, false).await? {
            Some(Value::Block(bytes)) => Ok(bytes),
            _ => unreachable!("a block key holds a block"),
        }
    }

    /// Starts fetching a block unless it is cached, being fetched, or too
    /// many prefetches are in flight.
    pub fn prefetch(&self, object: &ObjectImage, block: &DataBlock) {
        // Dropping the future after its first poll leaves the fetch running
        // on the store's runtime.
        let _ = self.fetch_block(object, block, true).now_or_never();
    }

    fn fetch_block(
        &self,
        object: &ObjectImage,
        block: &DataBlock,
        prefetch: bool,
    ) -> impl Future<Output = Result<Option<Value>, ObjectStoreError>> + use<> {
        let store = self.store.clone();
        let key = object.key.clone();
        let block = *block;
        let cache_key = CacheKey::Block {
            object_id: object.id,
            position: block.position,
        };
        self.get_or_fetch(cache_key, prefetch, async move {
            let range = block.position..block.position + u64::from(block.len);
            let bytes = store.get_range(&key, range).await?;
            check_block(&key, &block, &bytes)?;
            Ok(Value::Block(bytes))
        })
    }

    /// The cached value, or the result of a shared fetch. With `prefetch`,
    /// Ok(None) when the prefetch was skipped.
    fn get_or_fetch<F>(
        &self,
        key: CacheKey,
        prefetch: bool,
        fetch: F,
    ) -> impl Future<Output = Result<Option<Value>, ObjectStoreError>> + use<F>
    where
        F: Future<Output = Result<Value, ObjectStoreError>> + Send + 'static,
    {
        let stats = Arc::clone(self.store.stats());
        let shared: Result<Fetch, Option<Value>> = {
            let mut inner = self.lock();
            if let Some(value) = inner.touch(key) {
                if !prefetch {
                    Stats::add(&stats.cache_hits, 1);
                }
                Err(Some(value))
            } else if let Some(fetch) = inner.in_flight.get(&key) {
                if !prefetch {
                    Stats::add(&stats.cache_hits, 1);
                }
                Ok(fetch.clone())
            } else if prefetch && inner.prefetches_in_flight >= PREFETCHES_IN_FLIGHT_MAX {
                Err(None)
            } else {
                if prefetch {
                    inner.prefetches_in_flight += 1;
                    Stats::add(&stats.cache_prefetches, 1);
                } else {
                    Stats::add(&stats.cache_misses, 1);
                }
                let cache = Arc::clone(&self.inner);
                let stats = Arc::clone(&stats);
                let fetch = self
                    .store
                    .spawn(async move {
                        let result = fetch.await;
                        let mut inner = cache.lock().unwrap_or_else(|p| p.into_inner());
                        inner.in_flight.remove(&key);
                        if prefetch {
                            inner.prefetches_in_flight -= 1;
                        }
                        if let Ok(value) = &result {
                            let evicted = inner.insert(key, value.clone());
                            Stats::add(&stats.cache_evictions, evicted);
                        }
                        result
                    })
                    .shared();
                inner.in_flight.insert(key, fetch.clone());
                Ok(fetch)
            }
        };
        async move {
            match shared {
                Err(value) => Ok(value),
                Ok(fetch) => match fetch.await {
                    Ok(result) => result.map(Some),
                    Err(_) => Err(ObjectStoreError::Unavailable {
                        operation: "get",
                        key: String::new(),
                        message: "the object store runtime shut down".to_string(),
                    }),
                },
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CacheInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl CacheInner {
    fn touch(&mut self, key: CacheKey) -> Option<Value> {
        self.tick += 1;
        let tick = self.tick;
        let (value, old) = self.entries.get_mut(&key)?;
        self.lru.remove(old);
        *old = tick;
        self.lru.insert(tick, key);
        Some(value.clone())
    }

    /// Inserts and evicts the least recently used entries above capacity;
    /// returns how many were evicted.
    fn insert(&mut self, key: CacheKey, value: Value) -> u64 {
        self.tick += 1;
        let tick = self.tick;
        self.bytes += value.weight();
        if let Some((old, old_tick)) = self.entries.insert(key, (value, tick)) {
            self.bytes -= old.weight();
            self.lru.remove(&old_tick);
        }
        self.lru.insert(tick, key);
        let mut evicted = 0;
        while self.bytes > self.capacity_bytes {
            let Some((_, victim)) = self.lru.pop_first() else {
                break;
            };
            if let Some((value, _)) = self.entries.remove(&victim) {
                self.bytes -= value.weight();
                evicted += 1;
            }
        }
        evicted
    }
}

/// Whole record batches read from objects.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ColdRead {
    /// Slices of cached blocks (no copy), whose concatenation is whole
    /// batches starting with the one holding the requested offset: write
    /// them with vectored I/O.
    pub chunks: Vec<Bytes>,
    /// The offset after the last batch returned.
    pub next_offset: i64,
    pub bytes: usize,
}

/// Reads streams from objects through a `BlockCache`.
#[derive(Debug, Clone)]
pub struct ColdReader {
    cache: BlockCache,
    read_ahead_blocks: usize,
}

impl ColdReader {
    pub fn new(cache: BlockCache) -> ColdReader {
        ColdReader {
            cache,
            read_ahead_blocks: READ_AHEAD_BLOCKS_DEFAULT,
        }
    }

    /// Prefetch this many blocks ahead of a read (0: none).
    pub fn with_read_ahead_blocks(mut self, blocks: usize) -> ColdReader {
        self.read_ahead_blocks = blocks;
        self
    }

    pub fn cache(&self) -> &BlockCache {
        &self.cache
    }

    /// Whole batches of `stream_id` from the one holding `offset`, up to
    /// `max_bytes` (at least one batch), across blocks and objects. None
    /// when `offset` is not in objects (below the first offset kept, or at
    /// or past the end: serve it from the log cache / WAL).
    pub async fn read(
        &self,
        image: &MetadataImage,
        stream_id: u64,
        offset: i64,
        max_bytes: usize,
    ) -> Result<Option<ColdRead>, ObjectStoreError> {
        let mut read = ColdRead {
            next_offset: offset,
            ..ColdRead::default()
        };
        while let Some((object, _)) = image.objects_for(stream_id, read.next_offset) {
            let index = self.cache.index(object).await?;
            let Some(mut i) = index.block_for(stream_id, read.next_offset) else {
                return Err(ObjectStoreError::corrupt(
                    &object.key,
                    format!(
                        "the registry puts offset {} of stream {stream_id} here, the index does not",
                        read.next_offset
                    ),
                ));
            };
            while i < index.blocks.len() && index.blocks[i].stream_id == stream_id {
                let block = index.blocks[i];
                for ahead in index.blocks[i + 1..]
                    .iter()
                    .take(self.read_ahead_blocks)
                    .filter(|b| b.stream_id == stream_id)
                {
                    self.cache.prefetch(object, ahead);
                }
                let data = self.cache.block(object, &block).await?;
                let full = take_batches(&object.key, &block, &data, &mut read, max_bytes)?;
                if full {
                    return Ok(Some(read));
                }
                // The block is behind the read now, even when the log cleaner left nothing of
                // it at or after the offset asked for.
                read.next_offset = read.next_offset.max(block.end_offset);
                i += 1;
            }
        }
        Ok((!read.chunks.is_empty()).then_some(read))
    }
}

/// Appends the batches of `data` (one block) from the one holding
/// `read.next_offset`, while they fit in `max_bytes` (the first always
/// does). Returns true when `max_bytes` stopped it.
fn take_batches(
    key: &str,
    block: &DataBlock,
    data: &Bytes,
    read: &mut ColdRead,
    max_bytes: usize,
) -> Result<bool, ObjectStoreError> {
    let mut run: Option<(usize, usize)> = None;
    let mut pos = 0usize;
    let mut full = false;
    while pos < data.len() {
        let size = batch_size(key, block, data, pos)?;
        let next_base = if pos + size < data.len() {
            batch_base_offset(data, pos + size)
        } else {
            block.end_offset
        };
        if batch_end(block, &data[pos..pos + size], next_base) <= read.next_offset {
            pos += size;
            continue;
        }
        if (!read.chunks.is_empty() || run.is_some()) && read.bytes + size > max_bytes {
            full = true;
            break;
        }
        run = Some((run.map_or(pos, |r| r.0), pos + size));
        read.bytes += size;
        read.next_offset = next_base;
        pos += size;
    }
    if let Some((start, end)) = run {
        read.chunks.push(data.slice(start..end));
    }
    Ok(full || read.bytes >= max_bytes)
}

/// The offset after the last one of `batch`, whose successor starts at `next_base`. A
/// partition's batch says it itself (base offset + last offset delta): the log cleaner leaves
/// gaps between batches, and a batch all below the offset asked for must be skipped, not
/// returned. An internal stream's frames hold one offset each and no such field: their
/// successor's base tells.
fn batch_end(block: &DataBlock, batch: &[u8], next_base: i64) -> i64 {
    if block.stream_id >= INTERNAL_STREAM_ID_MIN || batch.len() < KAFKA_BATCH_HEADER_BYTES {
        return next_base;
    }
    let base = batch_base_offset(batch, 0);
    let last_offset_delta = i32::from_be_bytes(
        batch[LAST_OFFSET_DELTA_POSITION..LAST_OFFSET_DELTA_POSITION + 4]
            .try_into()
            .expect("4 bytes"),
    );
    // A delta that does not fit before the successor is not trusted (the reader must not
    // skip data because of one bad header).
    match base.checked_add(i64::from(last_offset_delta) + 1) {
        Some(end) if last_offset_delta >= 0 && end <= next_base => end,
        _ => next_base,
    }
}

/// A v2 batch's header size, and where its last offset delta is.
const KAFKA_BATCH_HEADER_BYTES: usize = 61;
const LAST_OFFSET_DELTA_POSITION: usize = 23;

fn batch_base_offset(data: &[u8], pos: usize) -> i64 {
    i64::from_be_bytes(data[pos..pos + 8].try_into().expect("8 bytes"))
}

/// The size of the batch at `pos` (12-byte prefix + batch length), checked
/// to lie inside the block.
fn batch_size(
    key: &str,
    block: &DataBlock,
    data: &[u8],
    pos: usize,
) -> Result<usize, ObjectStoreError> {
    let corrupt = || {
        ObjectStoreError::corrupt(
            key,
            format!(
                "block of stream {} at byte {}: bad batch at {pos}",
                block.stream_id, block.position
            ),
        )
    };
    if pos + BATCH_HEADER_PREFIX_BYTES > data.len() {
        return Err(corrupt());
    }
    let len = i32::from_be_bytes(data[pos + 8..pos + 12].try_into().expect("4 bytes"));
    let size = usize::try_from(len)
        .ok()
        .map(|l| l + BATCH_HEADER_PREFIX_BYTES)
        .filter(|&s| pos + s <= data.len())
        .ok_or_else(corrupt)?;
    Ok(size)
}
