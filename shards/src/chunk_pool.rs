//! A shard's memory pool (DESIGN.md, Memory): one region allocated at start, split by a buddy
//! allocator into chunks that become `Bytes` (network frames, produced batches). A chunk goes
//! back to the pool when its last `Bytes` drops, on whatever thread that happens (the uploader
//! drops batches on tokio threads). No pattern of sizes makes the process heap grow: the heap
//! is not used, and when the pool cannot serve a chunk the caller waits (back-pressure).
//!
//! A request of `n` bytes takes the buddy block of the next power of two and gives the tail
//! past `n` (rounded up to [`CHUNK_UNIT_BYTES`]) straight back, so a chunk wastes less than one
//! unit; the tail's blocks merge again when the chunk is freed.
//!
//! Outside the pool, on the heap: batches replayed from the WAL at start (bounded by the WAL),
//! transaction markers (tiny), and frames or batches larger than the pool's largest chunk
//! (bounded by the request memory permits).

use std::alloc::Layout;
use std::collections::BTreeSet;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use futures::task::AtomicWaker;

/// Chunk sizes are multiples of this (the buddy allocator's smallest block).
pub const CHUNK_UNIT_BYTES: usize = 512;

/// The largest chunk any pool hands out (a small pool's largest is smaller, see
/// [`ChunkPool::chunk_bytes_max`]); larger requests take the caller's fallback path.
pub const CHUNK_BYTES_MAX: usize = 16 << 20;

/// How often a caller waiting for a chunk looks again. Chunks are freed on other threads too,
/// so there is no shard-local wake-up; exhaustion is the rare, slow path.
const WAIT_POLL_INTERVAL: Duration = Duration::from_millis(1);

/// One shard's pool of chunks. Cloning shares the pool.
#[derive(Clone)]
pub struct ChunkPool {
    shared: Arc<PoolShared>,
    // The pool's bytes that request frames in flight may need ([`ChunkPool::with_frame_share`]).
    frame_share_bytes: usize,
}

/// A chunk taken from a [`ChunkPool`]: `len` bytes of its region, owned until dropped.
pub struct PoolChunk {
    shared: Arc<PoolShared>,
    // First unit of the chunk in the region.
    first_unit: usize,
    len: usize,
}

impl ChunkPool {
    /// Allocates a region of `capacity_bytes` (rounded down to whole units, at least one unit).
    pub fn new(capacity_bytes: usize) -> ChunkPool {
        let units = (capacity_bytes / CHUNK_UNIT_BYTES).max(1);
        let layout = Layout::from_size_align(units * CHUNK_UNIT_BYTES, CHUNK_UNIT_BYTES)
            .unwrap_or_else(|_| Layout::new::<[u8; CHUNK_UNIT_BYTES]>());
        // SAFETY: the layout has a non-zero size. Zeroed, so every byte is initialized and a
        // chunk can be handed out as `&mut [u8]`; the kernel maps the pages lazily.
        let region = unsafe { std::alloc::alloc_zeroed(layout) };
        let Some(region) = NonNull::new(region) else {
            std::alloc::handle_alloc_error(layout);
        };
        let mut buddies = Buddies::new(units);
        buddies.free_range(0, units);
        ChunkPool {
            shared: Arc::new(PoolShared {
                region,
                layout,
                units,
                buddies: Mutex::new(buddies),
                used_bytes: AtomicUsize::new(0),
                waits_total: AtomicU64::new(0),
                short: AtomicBool::new(false),
                shortage_waker: AtomicWaker::new(),
            }),
            frame_share_bytes: 0,
        }
    }

    /// The pool with `bytes` of it counted as the share of request frames in flight (the
    /// shard's request memory), which [`ChunkPool::copy_unless_refused`] leaves free.
    pub fn with_frame_share(mut self, bytes: usize) -> ChunkPool {
        self.frame_share_bytes = bytes;
        self
    }

    /// A chunk of `len` bytes (its contents are stale: the caller overwrites them), or None
    /// when no free block is large enough. `len` above [`ChunkPool::chunk_bytes_max`] always
    /// gets None.
    pub fn try_take(&self, len: usize) -> Option<PoolChunk> {
        if len > self.chunk_bytes_max() {
            return None;
        }
        let units = len.div_ceil(CHUNK_UNIT_BYTES).max(1);
        let first_unit = self.shared.lock().take(units)?;
        self.shared
            .used_bytes
            .fetch_add(units * CHUNK_UNIT_BYTES, Ordering::Relaxed);
        Some(PoolChunk {
            shared: self.shared.clone(),
            first_unit,
            len,
        })
    }

    /// A chunk of `len` bytes (at most [`ChunkPool::chunk_bytes_max`]), waiting while the
    /// pool is short: the caller's task stops (back-pressure) until other chunks are freed.
    pub async fn take(&self, len: usize) -> PoolChunk {
        assert!(
            len <= self.chunk_bytes_max(),
            "a chunk of {len} bytes can never be served"
        );
        // `take_unless` gives None only once told to give up, which this never does.
        loop {
            if let Some(chunk) = self.take_unless(len, || false).await {
                return chunk;
            }
        }
    }

    /// A chunk of `len` bytes, waiting while the pool is short until `give_up()`.
    async fn take_unless(&self, len: usize, give_up: impl Fn() -> bool) -> Option<PoolChunk> {
        let mut waited = false;
        loop {
            if let Some(chunk) = self.try_take(len) {
                return Some(chunk);
            }
            if give_up() {
                return None;
            }
            if !waited {
                self.shared.waits_total.fetch_add(1, Ordering::Relaxed);
                waited = true;
            }
            self.shared.short.store(true, Ordering::Relaxed);
            self.shared.shortage_waker.wake();
            glommio::timer::sleep(WAIT_POLL_INTERVAL).await;
        }
    }

    /// A copy of `data` for a batch, which stays in the pool until it is uploaded; data larger
    /// than [`ChunkPool::chunk_bytes_max`] is copied to the heap instead (bounded by the
    /// largest request frame). While the pool is short the caller waits (back-pressure),
    /// unless `refused()`: no upload is coming soon to free memory (the store's puts fail, or
    /// the shard stops). Then it gets None as soon as the copy would wait, or would leave less
    /// than the frames' share of the pool ([`ChunkPool::with_frame_share`]) free.
    ///
    /// Why the share: batches that cannot be uploaded stay, while a request frame is freed
    /// once it is answered. Were they let fill the pool, the next frame could not be read, so
    /// its request could not even be refused: its client would wait until its timeout.
    pub async fn copy_unless_refused(
        &self,
        data: &[u8],
        refused: impl Fn() -> bool,
    ) -> Option<PoolBuffer> {
        if data.len() > self.chunk_bytes_max() {
            return Some(PoolBuffer::Heap(data.to_vec()));
        }
        let units_bytes = data.len().div_ceil(CHUNK_UNIT_BYTES).max(1) * CHUNK_UNIT_BYTES;
        if refused()
            && self.used_bytes() + units_bytes + self.frame_share_bytes > self.capacity_bytes()
        {
            return None;
        }
        let mut chunk = self.take_unless(data.len(), refused).await?;
        chunk.as_mut().copy_from_slice(data);
        Some(PoolBuffer::Chunk(chunk))
    }

    /// `parts` (of `total` bytes) as one `Bytes`: in a chunk when the pool has room, else on
    /// the heap; never waits. One part is returned as it is.
    pub fn concat(&self, parts: &[&Bytes], total: usize) -> Bytes {
        if let [one] = parts {
            return (*one).clone();
        }
        match self.try_take(total) {
            Some(mut chunk) => {
                let mut at = 0;
                for part in parts {
                    chunk.as_mut()[at..at + part.len()].copy_from_slice(part.as_ref());
                    at += part.len();
                }
                debug_assert_eq!(at, total, "the parts add up to total");
                chunk.freeze()
            }
            None => {
                let mut out = bytes::BytesMut::with_capacity(total);
                for part in parts {
                    out.extend_from_slice(part.as_ref());
                }
                out.freeze()
            }
        }
    }

    /// Whether a caller waited for a chunk since the last call (clears the flag): the log
    /// cache should give back what it can.
    pub fn take_shortage(&self) -> bool {
        self.shared.short.swap(false, Ordering::Relaxed)
    }

    /// Resolves when a caller waits for a chunk (clearing the flag, as
    /// [`ChunkPool::take_shortage`]). One task at a time may wait here.
    pub async fn shortage(&self) {
        std::future::poll_fn(|cx| {
            self.shared.shortage_waker.register(cx.waker());
            if self.take_shortage() {
                std::task::Poll::Ready(())
            } else {
                std::task::Poll::Pending
            }
        })
        .await
    }

    /// Bytes of the pool in chunks handed out (whole units).
    pub fn used_bytes(&self) -> usize {
        self.shared.used_bytes.load(Ordering::Relaxed)
    }

    /// Times a caller of [`ChunkPool::take`] had to wait.
    pub fn waits_total(&self) -> u64 {
        self.shared.waits_total.load(Ordering::Relaxed)
    }

    /// The largest chunk this pool can serve: [`CHUNK_BYTES_MAX`], or the largest power of
    /// two of units its region holds.
    pub fn chunk_bytes_max(&self) -> usize {
        let units = self.shared.units;
        let block_units = 1 << (usize::BITS - 1 - units.leading_zeros());
        (block_units * CHUNK_UNIT_BYTES).min(CHUNK_BYTES_MAX)
    }

    /// Bytes of the pool's region.
    pub fn capacity_bytes(&self) -> usize {
        self.shared.units * CHUNK_UNIT_BYTES
    }
}

/// A mutable buffer from [`ChunkPool::copy_unless_refused`]: a chunk, or heap memory for an
/// oversized copy.
pub enum PoolBuffer {
    /// A chunk of the pool.
    Chunk(PoolChunk),
    /// Heap memory (larger than [`CHUNK_BYTES_MAX`]).
    Heap(Vec<u8>),
}

impl PoolBuffer {
    /// The buffer as `Bytes`; a chunk returns to its pool when the last slice drops.
    pub fn freeze(self) -> Bytes {
        match self {
            PoolBuffer::Chunk(chunk) => Bytes::from_owner(chunk),
            PoolBuffer::Heap(vec) => Bytes::from(vec),
        }
    }
}

impl AsMut<[u8]> for PoolBuffer {
    fn as_mut(&mut self) -> &mut [u8] {
        match self {
            PoolBuffer::Chunk(chunk) => chunk.as_mut(),
            PoolBuffer::Heap(vec) => vec,
        }
    }
}

impl PoolChunk {
    /// The chunk as `Bytes`; it returns to its pool when the last slice drops.
    pub fn freeze(self) -> Bytes {
        Bytes::from_owner(self)
    }
}

impl AsRef<[u8]> for PoolChunk {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: the chunk's units are inside the region, initialized (zeroed at start), and
        // owned by this chunk alone until it is dropped (the allocator hands a unit to one
        // chunk at a time); the region lives as long as `shared`.
        unsafe {
            std::slice::from_raw_parts(
                self.shared
                    .region
                    .as_ptr()
                    .add(self.first_unit * CHUNK_UNIT_BYTES),
                self.len,
            )
        }
    }
}

impl AsMut<[u8]> for PoolChunk {
    fn as_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_ref`; `&mut self` makes this the only reference to the chunk.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.shared
                    .region
                    .as_ptr()
                    .add(self.first_unit * CHUNK_UNIT_BYTES),
                self.len,
            )
        }
    }
}

impl Drop for PoolChunk {
    fn drop(&mut self) {
        let units = self.len.div_ceil(CHUNK_UNIT_BYTES).max(1);
        self.shared.lock().free_range(self.first_unit, units);
        self.shared
            .used_bytes
            .fetch_sub(units * CHUNK_UNIT_BYTES, Ordering::Relaxed);
    }
}

/// The region and its allocator, shared by the pool and every chunk out of it.
struct PoolShared {
    region: NonNull<u8>,
    layout: Layout,
    units: usize,
    // Uncontended in practice: the shard takes chunks and frees most of them; the uploader's
    // threads free the rest.
    buddies: Mutex<Buddies>,
    used_bytes: AtomicUsize,
    waits_total: AtomicU64,
    short: AtomicBool,
    /// The task waiting in [`ChunkPool::shortage`].
    shortage_waker: AtomicWaker,
}

// SAFETY: the region is only reached through chunks, each of which owns a disjoint range of
// it (the allocator behind the mutex guarantees it), so chunks can move to and be dropped on
// any thread; the allocator state is behind a mutex.
unsafe impl Send for PoolShared {}
// SAFETY: as above: shared access only reads `units`/`layout` or goes through the mutex and
// atomics.
unsafe impl Sync for PoolShared {}

impl PoolShared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Buddies> {
        // A panic while holding the lock cannot leave the free lists half-updated in a way
        // that hands out a unit twice (each step inserts or removes one whole block).
        self.buddies.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for PoolShared {
    fn drop(&mut self) {
        // SAFETY: allocated in `ChunkPool::new` with this layout; the last chunk is gone (each
        // holds an Arc to this).
        unsafe { std::alloc::dealloc(self.region.as_ptr(), self.layout) }
    }
}

/// Chunks below this order (64 KiB) are small: they are placed from the top of the region,
/// large ones from the bottom.
const SMALL_CHUNK_ORDER: usize = 7;

/// Free blocks by order (a block of order `k` is `2^k` units, aligned to its size).
///
/// Large chunks take the lowest free block of the smallest order that fits, so they pack at
/// the bottom; small ones take the highest free block of any order that fits, so they pack at
/// the top. Kept apart, a small chunk that outlives its neighbours pins only blocks among
/// other small ones: with one free list for both, small chunks filled the tails that large
/// ones leave in their blocks, stayed after those were freed, and left no large block whole
/// with three quarters of the pool unused (`small_chunks_kept_as_long_as_large_ones_...`).
struct Buddies {
    free: Vec<BTreeSet<usize>>,
    units: usize,
}

impl Buddies {
    fn new(units: usize) -> Buddies {
        let orders = (CHUNK_BYTES_MAX / CHUNK_UNIT_BYTES).trailing_zeros() as usize + 1;
        Buddies {
            free: (0..orders).map(|_| BTreeSet::new()).collect(),
            units,
        }
    }

    /// The first unit of `units` free units, or None.
    fn take(&mut self, units: usize) -> Option<usize> {
        let order = units.next_power_of_two().trailing_zeros() as usize;
        let mut first;
        if order < SMALL_CHUNK_ORDER {
            let found;
            (found, first) = (order..self.free.len())
                .filter_map(|o| self.free[o].last().map(|&first| (o, first)))
                .max_by_key(|&(_, first)| first)?;
            self.free[found].remove(&first);
            // Split down to `order`, keeping the upper half and freeing the lower.
            for o in (order..found).rev() {
                self.free[o].insert(first);
                first += 1 << o;
            }
        } else {
            let found = (order..self.free.len()).find(|&o| !self.free[o].is_empty())?;
            first = self.free[found].pop_first()?;
            // Split down to `order`, keeping the lower half and freeing the upper.
            for o in (order..found).rev() {
                self.free[o].insert(first + (1 << o));
            }
        }
        // Give the tail past `units` back.
        self.free_range(first + units, (1 << order) - units);
        debug_assert!(first + units <= self.units);
        Some(first)
    }

    /// Frees `count` units from `first` as the largest aligned blocks that fit, each merged
    /// with its free buddies.
    fn free_range(&mut self, mut first: usize, count: usize) {
        let end = first + count;
        let top = self.free.len() - 1;
        while first < end {
            let mut order = (first.trailing_zeros() as usize).min(top);
            while first + (1 << order) > end {
                order -= 1;
            }
            self.free_block(first, order);
            first += 1 << order;
        }
    }

    fn free_block(&mut self, mut first: usize, mut order: usize) {
        while order + 1 < self.free.len() {
            let buddy = first ^ (1 << order);
            if !self.free[order].remove(&buddy) {
                break;
            }
            first = first.min(buddy);
            order += 1;
        }
        let inserted = self.free[order].insert(first);
        assert!(
            inserted,
            "chunk pool: block {first} of order {order} freed twice"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_disjoint_and_come_back_whole() {
        let pool = ChunkPool::new(1 << 20);
        let mut chunks: Vec<PoolChunk> = [100, 512, 513, 4096, 70_000, 300_000]
            .iter()
            .map(|&len| pool.try_take(len).expect("the pool has room"))
            .collect();
        for (i, chunk) in chunks.iter_mut().enumerate() {
            chunk.as_mut().fill(i as u8);
        }
        for (i, chunk) in chunks.iter().enumerate() {
            assert!(
                chunk.as_ref().iter().all(|&b| b == i as u8),
                "chunk {i} overwritten"
            );
        }
        let units: usize = [1, 1, 2, 8, 137, 586].iter().sum();
        assert_eq!(pool.used_bytes(), units * CHUNK_UNIT_BYTES);
        drop(chunks);
        assert_eq!(pool.used_bytes(), 0);
        // Everything merged back: the whole region is one chunk again.
        assert!(pool.try_take(1 << 20).is_some());
    }

    #[test]
    fn an_exhausted_pool_refuses_until_a_chunk_is_freed() {
        let pool = ChunkPool::new(64 << 10);
        let first = pool.try_take(40 << 10).expect("room");
        assert!(pool.try_take(40 << 10).is_none(), "only 24 KiB left");
        assert!(
            pool.try_take(CHUNK_BYTES_MAX + 1).is_none(),
            "above the largest chunk"
        );
        assert_eq!(ChunkPool::new(96 << 10).chunk_bytes_max(), 64 << 10);
        assert_eq!(ChunkPool::new(1 << 30).chunk_bytes_max(), CHUNK_BYTES_MAX);
        drop(first);
        assert!(pool.try_take(40 << 10).is_some());
    }

    #[test]
    fn mixed_sizes_do_not_fragment_the_pool_into_failure() {
        // Random sizes 100 B - 1 MiB kept in a FIFO (like the log cache) so at most half the
        // pool is in use: every take must succeed, and the pool must end empty.
        let pool = ChunkPool::new(32 << 20);
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut live = std::collections::VecDeque::new();
        let mut live_bytes = 0;
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = 100 + (seed % (1 << 20)) as usize;
            while live_bytes + len > 16 << 20 {
                let chunk: PoolChunk = live.pop_front().expect("non-empty");
                live_bytes -= chunk.as_ref().len();
            }
            let chunk = pool.try_take(len).expect("half the pool is free");
            live_bytes += len;
            live.push_back(chunk);
        }
        drop(live);
        assert_eq!(pool.used_bytes(), 0);
        assert!(pool.try_take(16 << 20).is_some());
    }

    #[test]
    fn small_chunks_kept_as_long_as_large_ones_do_not_pin_every_large_block() {
        // The log cache's mix that once stalled a shard: a producer's 1 MB batches next to
        // a latency probe's 1-2 KiB ones, all kept oldest-first up to a quarter of the pool.
        // The small ones once filled the tails of the large ones' blocks and stayed after
        // those were freed, until no block of 1 MiB was free with three quarters unused.
        cache_mix(0x2545_f491_4f6c_dd1d, 200, |_| 1_000_000);
        // Large ones of any size, and small ones taking half the bytes.
        cache_mix(0x9e37_79b9_7f4a_7c15, 400, |r| {
            300_000 + (r % 700_000) as usize
        });
    }

    /// Takes one large chunk of `large_len(random)` bytes then `smalls` of 1.1-2.1 KB, 2000
    /// times, keeping the latest quarter of the pool's bytes: every take must succeed.
    fn cache_mix(mut seed: u64, smalls: usize, large_len: impl Fn(u64) -> usize) {
        println!("seed {seed:#x}");
        let pool = ChunkPool::new(64 << 20);
        let mut live = std::collections::VecDeque::new();
        let mut live_bytes = 0;
        for step in 0..2_000 {
            for i in 0..=smalls {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let len = if i == 0 {
                    large_len(seed)
                } else {
                    1_100 + (seed % 1_000) as usize
                };
                while live_bytes + len > 16 << 20 {
                    let chunk: PoolChunk = live.pop_front().expect("non-empty");
                    live_bytes -= chunk.as_ref().len();
                }
                let Some(chunk) = pool.try_take(len) else {
                    panic!(
                        "step {step}: no chunk of {len} bytes with {} of {} bytes used",
                        pool.used_bytes(),
                        pool.capacity_bytes()
                    );
                };
                live_bytes += len;
                live.push_back(chunk);
            }
        }
    }

    #[test]
    fn chunks_dropped_on_other_threads_return_to_the_pool() {
        let pool = ChunkPool::new(4 << 20);
        let batches: Vec<Bytes> = (0..8)
            .map(|i| {
                let mut chunk = pool.try_take(300 << 10).expect("room");
                chunk.as_mut().fill(i);
                chunk.freeze()
            })
            .collect();
        let slices: Vec<Bytes> = batches.iter().map(|b| b.slice(10..20)).collect();
        drop(batches);
        assert!(pool.used_bytes() > 0, "the slices keep their chunks");
        let threads: Vec<_> = slices
            .into_iter()
            .enumerate()
            .map(|(i, slice)| {
                std::thread::spawn(move || {
                    assert!(slice.iter().all(|&b| b == i as u8));
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("no panic");
        }
        assert_eq!(pool.used_bytes(), 0);
    }

    #[test]
    fn a_waiting_take_resumes_when_another_thread_frees() {
        let executor = glommio::LocalExecutorBuilder::default()
            .make()
            .expect("an executor");
        executor.run(async {
            let pool = ChunkPool::new(1 << 20);
            let held = pool.try_take(800 << 10).expect("room").freeze();
            let waiting = pool.take(800 << 10);
            futures::pin_mut!(waiting);
            assert!(
                futures::poll!(waiting.as_mut()).is_pending(),
                "the pool is exhausted"
            );
            assert!(pool.take_shortage(), "the wait is reported");
            assert_eq!(pool.waits_total(), 1);
            let shortage = pool.shortage();
            futures::pin_mut!(shortage);
            assert!(
                futures::poll!(shortage.as_mut()).is_pending(),
                "reported once"
            );
            // The waiting take looks again every millisecond, and each look wakes the shortage.
            match futures::future::select(shortage, waiting.as_mut()).await {
                futures::future::Either::Left(_) => {}
                futures::future::Either::Right(_) => panic!("the pool is still exhausted"),
            }
            std::thread::spawn(move || drop(held))
                .join()
                .expect("no panic");
            let chunk = waiting.await;
            assert_eq!(chunk.as_ref().len(), 800 << 10);
        });
    }

    #[test]
    fn refused_copies_leave_the_frames_share_and_do_not_wait() {
        let executor = glommio::LocalExecutorBuilder::default()
            .make()
            .expect("an executor");
        executor.run(async {
            let pool = ChunkPool::new(1 << 20).with_frame_share(512 << 10);
            let refused = std::cell::Cell::new(true);
            let batch = vec![7u8; 200 << 10];
            let copy = || pool.copy_unless_refused(&batch, || refused.get());
            let first = copy().await.expect("room beside the frames' share");
            let second = copy().await.expect("room beside the frames' share");
            assert_eq!(pool.used_bytes(), 400 << 10);
            // A third would leave 424 KiB of the pool free, less than the frames' share.
            assert!(
                copy().await.is_none(),
                "refused while uploads cannot free it"
            );
            assert_eq!(pool.used_bytes(), 400 << 10, "a refusal takes nothing");
            let frame = pool.try_take(512 << 10).expect("the frames' share is free");
            // Not refused, a copy waits while the pool is short, and gives up once refused.
            refused.set(false);
            let waiting = copy();
            futures::pin_mut!(waiting);
            assert!(futures::poll!(waiting.as_mut()).is_pending(), "waits");
            refused.set(true);
            assert!(waiting.await.is_none(), "refused while waiting");
            drop((first, second, frame));
            assert_eq!(pool.used_bytes(), 0);
        });
    }

    #[test]
    fn oversized_copies_go_to_the_heap() {
        let executor = glommio::LocalExecutorBuilder::default()
            .make()
            .expect("an executor");
        executor.run(async {
            let pool = ChunkPool::new(1 << 20);
            let small = pool
                .copy_unless_refused(b"batch", || false)
                .await
                .expect("not refused")
                .freeze();
            assert_eq!(&small[..], b"batch");
            assert_eq!(pool.used_bytes(), CHUNK_UNIT_BYTES);
            let big = vec![7u8; pool.chunk_bytes_max() + 1];
            let copied = pool
                .copy_unless_refused(&big, || false)
                .await
                .expect("not refused")
                .freeze();
            assert_eq!(copied.len(), big.len());
            assert_eq!(pool.used_bytes(), CHUNK_UNIT_BYTES);
        });
    }
}
