//! Every bound of the object store, in one place. Sizes in bytes.

use std::time::Duration;

/// Longest object key (S3's limit).
pub const KEY_BYTES_MAX: usize = 1024;
/// Objects larger than this are uploaded in parts (S3 multipart upload).
pub const MULTIPART_THRESHOLD_BYTES: usize = 16 * 1024 * 1024;
/// The size of each part of a multipart upload (the last may be smaller).
pub const MULTIPART_PART_BYTES: usize = 16 * 1024 * 1024;
/// Parts of one multipart upload in flight at once.
pub const MULTIPART_PARTS_IN_FLIGHT_MAX: usize = 4;
/// The local backend reads and writes objects with O_DIRECT in chunks of this size, one chunk
/// in flight broker-wide (`io_pacer.rs`): the most a WAL write on the same disk waits behind.
///
/// Why 256 KiB: measured with fio on this project's virtio disk (mq-deadline), beside a WAL
/// writing 50 MB/s with an fdatasync per 32 KiB write, one 256 KiB chunk at a time still moved
/// 2.3 GB/s of reads or 2.5 GB/s of writes and left the WAL's write p99 at 0.1-0.2 ms. 1 MiB
/// chunks moved no more (1.8-2.2 GB/s) and raised it to 0.8-1.1 ms; a second 1 MiB chunk in
/// flight raised it to 10 ms (reads) and 140 ms (writes).
pub const LOCAL_WRITE_CHUNK_BYTES: usize = 256 * 1024;
/// The chunk of an object write while some shard's uploads have a backlog (`io_pacer.rs`): its
/// producers soon wait for uploads, not for the disk's latency, and uploads need throughput.
///
/// Why 1 MiB, and only then: measured on this project's virtio disk, side-by-side's produce-max
/// (1 KiB messages, acks=all, 5 GB into the default 1 GiB WAL), three rounds of three brokers
/// run in turn: 256 KiB chunks acked 450/459/495 MB/s; 1 MiB chunks always, 558/504/619; 1 MiB
/// chunks only with a backlog, 562/510/626. Uploads bound that rate (each byte goes to the
/// WAL, then to an object), and the disk moves more of both in larger object writes. But 1 MiB
/// chunks always made a fresh broker's publish p99.9 at 50k msg/s 142 ms, against 5.6 and
/// 4.8 ms with them only on a backlog, and 6.3 and 6.1 ms with 256 KiB chunks always.
pub const LOCAL_WRITE_CHUNK_BYTES_BACKLOG: usize = 1024 * 1024;
/// Keys one delete request may name (S3 DeleteObjects' limit).
pub const DELETE_BATCH_MAX: usize = 1000;
/// Keys one list call returns at most; a longer listing is an error.
pub const LIST_KEYS_MAX: usize = 1_000_000;

/// One attempt of one request may take this long before it is abandoned.
pub const REQUEST_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);
/// A connection attempt to S3 may take this long.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Attempts of one operation (the first and the retries) at most.
pub const REQUEST_ATTEMPTS_MAX: u32 = 5;
/// All attempts of one operation together may take this long.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(60);
/// The first back-off after a retriable failure; doubled each time.
pub const BACKOFF_INITIAL: Duration = Duration::from_millis(50);
/// The longest back-off between two attempts.
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Worker threads of the store's own tokio runtime.
pub const RUNTIME_WORKER_THREADS: usize = 2;
/// Threads for blocking file I/O of the local backend.
pub const RUNTIME_BLOCKING_THREADS_MAX: usize = 16;

/// Bytes read from the end of an object to find its footer and, usually,
/// its whole index in one ranged GET.
pub const TAIL_READ_BYTES: u64 = 64 * 1024;
/// Largest object index accepted (bounds a corrupt footer's claim).
pub const INDEX_BYTES_MAX: u64 = 64 * 1024 * 1024;
/// Data blocks of an object are cut at about this size (whole appends;
/// one larger append is a block of its own): the unit of a cold read and
/// of the block cache.
pub const DATA_BLOCK_BYTES_TARGET: usize = 1024 * 1024;

/// Default upload trigger: this many bytes buffered (AutoMQ's 500 MiB is
/// for EBS-sized WALs; ours is a bounded ring of tens of MiB).
pub const UPLOAD_BYTES_DEFAULT: usize = 16 * 1024 * 1024;
/// Default upload trigger: the oldest buffered append is this old.
pub const UPLOAD_INTERVAL_DEFAULT: Duration = Duration::from_secs(5);
/// Default: a stream with this many bytes in one upload gets its own
/// Stream Object.
pub const STREAM_OBJECT_MIN_BYTES_DEFAULT: usize = 8 * 1024 * 1024;
/// Default: appends are refused (back-pressure) above this many buffered
/// bytes; the WAL's size bounds it in practice.
pub const UPLOAD_BUFFER_BYTES_MAX_DEFAULT: usize = 256 * 1024 * 1024;
/// Objects of one upload built and put at once (each a buffer of up to the object size; a
/// multipart put has its own parts in flight). Two keeps the store busy while the next is
/// built, and their buffers within [`SPARE_BUFFER_BYTES_MAX`].
pub const UPLOAD_PUTS_IN_FLIGHT_MAX: usize = 2;
/// The longest back-off between two attempts of an upload that retries
/// forever.
pub const UPLOAD_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Default capacity of a shard's block cache (part of its memory budget).
pub const BLOCK_CACHE_BYTES_DEFAULT: usize = 256 * 1024 * 1024;
/// Blocks after the one being read that a sequential reader prefetches.
pub const READ_AHEAD_BLOCKS_DEFAULT: usize = 2;
/// Prefetches of one cache in flight at most (more are skipped).
pub const PREFETCHES_IN_FLIGHT_MAX: usize = 16;
/// Kafka's record batch header prefix: base offset i64, batch length i32.
pub const BATCH_HEADER_PREFIX_BYTES: usize = 12;

/// Default memory cap of one compaction step: bytes of objects read. A step holds about twice
/// this at its peak, outside the shards' memory budget, so it is part of the broker's fixed
/// memory overhead; it also caps the size of merged Stream Objects.
pub const COMPACTION_STEP_BYTES_MAX_DEFAULT: usize = 32 * 1024 * 1024;
/// Default: keys one log-cleaner pass maps (Kafka's log.cleaner.dedupe.buffer.size, counted
/// in keys: 128-bit hashes and offsets, about 40 bytes each with the map's overhead, 40 MiB);
/// the cleanable part of a partition ends where the map is full, and the next pass goes on.
pub const CLEANER_KEYS_MAX_DEFAULT: usize = 1_000_000;
/// Compaction runs at the lowest CPU priority until the Stream Set Objects waiting to be split
/// hold more than this many steps' worth of bytes; then at normal priority until they are back
/// under it. Waiting SSOs only cost cold reads some index work, so a burst may leave them.
pub const COMPACTION_BEHIND_STEPS: u64 = 16;
/// Default: Stream Objects smaller than this are merged. Equal to the size at which an upload
/// gives a stream its own Stream Object, so those are written once and never rewritten: a busy
/// partition costs no compaction at all.
pub const SMALL_STREAM_OBJECT_BYTES_DEFAULT: usize = STREAM_OBJECT_MIN_BYTES_DEFAULT;
/// Default: merged Stream Objects grow up to this size (capped by the step's memory).
pub const STREAM_OBJECT_TARGET_BYTES_DEFAULT: usize = 256 * 1024 * 1024;
/// Default grace period between marking an object for deletion and
/// deleting it (readers holding an older image may still read it); Kafka's
/// `file.delete.delay.ms` default. A fetch resolves and reads its objects in well
/// under a second, while a longer grace keeps every compacted-away byte on disk.
pub const DELETION_GRACE_DEFAULT: Duration = Duration::from_secs(60);
/// Default: an upload's objects hold at most about this many bytes each (a backlog sealed at
/// once becomes several objects).
pub const UPLOAD_OBJECT_BYTES_MAX_DEFAULT: usize = 64 * 1024 * 1024;
/// A spare buffer not reused for this long is freed, so that the free list holds the sizes in
/// use now rather than every size ever seen (RSS crept up in the memory soak without it).
/// Short: at max rate a spare is reused within a second, while a spare of a rare size (a
/// compaction's) kept for 30 s made RSS jump by 20–35 MiB for up to a minute at a time.
pub const SPARE_BUFFER_IDLE_MAX: Duration = Duration::from_secs(5);
/// Most bytes of object and block buffers kept for reuse after their last reader drops them
/// (outside the shards' memory budget; see `spare_buffer`): the largest objects an upload has
/// in flight, with their index and the spare buffers' headroom. Uploads that fall behind at
/// max rate build objects of that size, and a fresh one costs a page fault per 4 KiB (a fifth
/// of the broker's CPU, profiled).
pub const SPARE_BUFFER_BYTES_MAX: usize = UPLOAD_PUTS_IN_FLIGHT_MAX
    * (UPLOAD_OBJECT_BYTES_MAX_DEFAULT + UPLOAD_OBJECT_BYTES_MAX_DEFAULT / 16);
