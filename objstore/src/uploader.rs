//! The uploader: WAL contents → objects → metadata → a WAL trim position.
//!
//! Pure logic over `ObjectStore` and `Registry`; it knows nothing of the WAL.
//! The broker (one uploader per shard WAL):
//! 1. `append` every record it makes durable in the WAL (the same `Bytes`
//!    the log cache holds: no copy), with the WAL position after it;
//! 2. when `should_seal(now)` (N bytes or T elapsed; check on append and on
//!    a timer tick at `next_deadline()`), `seal()` and spawn
//!    `sealed.run(&store, &registry)` on its executor;
//! 3. when `run` returns `Ok(report)`: `uploader.completed()` and
//!    `wal.trim(report.wal_end_position)`; on `Err` (the metadata refused
//!    or is unreachable) run the same `SealedUpload` again later.
//!
//! Store failures are retried inside `run` with back-off, forever (each
//! attempt bounded by the store's retry policy): a trim position is only
//! reported once every object is durable and committed. One sealed upload
//! at a time (`seal` returns None while one is in flight), so commits
//! continue each stream in order.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use sluice_metadata::{MetadataCommand, ObjectImage, ObjectKind, StreamUpload};

use crate::format::{BuildError, DataBlock, ObjectBuilder, linked_object_tail, stream_ranges};
use crate::limits::{
    DATA_BLOCK_BYTES_TARGET, STREAM_OBJECT_MIN_BYTES_DEFAULT, UPLOAD_BACKOFF_MAX,
    UPLOAD_BUFFER_BYTES_MAX_DEFAULT, UPLOAD_BYTES_DEFAULT, UPLOAD_INTERVAL_DEFAULT,
    UPLOAD_OBJECT_BYTES_MAX_DEFAULT, UPLOAD_PUTS_IN_FLIGHT_MAX,
};
use crate::registry::{Registry, allocate_object_ids};
use crate::stats::Stats;
use crate::store::{LinkedTail, ObjectStore};

/// When to upload and how to cut objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploaderConfig {
    /// Seal when this many bytes are buffered.
    pub upload_bytes: usize,
    /// Seal when the oldest buffered append is this old.
    pub upload_interval: Duration,
    /// A stream with at least this many bytes in one upload goes to a
    /// Stream Object of its own.
    pub stream_object_min_bytes: usize,
    /// `append` refuses above this many buffered bytes (back-pressure).
    pub buffer_bytes_max: usize,
    /// Data block size of the objects written.
    pub block_bytes: usize,
    /// An upload's objects hold at most about this many bytes each: a larger upload (a
    /// backlog sealed at once) is split, so building one never needs hundreds of MiB.
    pub object_bytes_max: usize,
    /// Longest back-off between upload attempts.
    pub backoff_max: Duration,
}

impl Default for UploaderConfig {
    fn default() -> UploaderConfig {
        UploaderConfig {
            upload_bytes: UPLOAD_BYTES_DEFAULT,
            upload_interval: UPLOAD_INTERVAL_DEFAULT,
            stream_object_min_bytes: STREAM_OBJECT_MIN_BYTES_DEFAULT,
            buffer_bytes_max: UPLOAD_BUFFER_BYTES_MAX_DEFAULT,
            block_bytes: DATA_BLOCK_BYTES_TARGET,
            object_bytes_max: UPLOAD_OBJECT_BYTES_MAX_DEFAULT,
            backoff_max: UPLOAD_BACKOFF_MAX,
        }
    }
}

/// When one stream's buffered appends must be uploaded whatever the shard's own triggers say:
/// its topic's `segment.ms` and `segment.bytes`. An upload is what rolling a segment is in
/// Kafka (the data leaves the WAL, Sluice's active segment, for objects that retention and
/// compaction act on), so a topic bounds how long and how much of it may wait for one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamRoll {
    /// Upload no later than this long after the stream's first append not yet sealed.
    pub after: Duration,
    /// Upload once the stream has this many bytes appended and not yet sealed.
    pub bytes: usize,
}

impl StreamRoll {
    /// No bound of the stream's own: the shard's `upload_interval` and `upload_bytes` apply.
    pub const NONE: StreamRoll = StreamRoll {
        after: Duration::MAX,
        bytes: usize::MAX,
    };
}

/// One durable WAL record of one stream: whole record batches holding
/// `first_offset..=last_offset`, and the WAL position just after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendedRecord {
    pub stream_id: u64,
    pub first_offset: i64,
    pub last_offset: i64,
    pub payload: Bytes,
    /// CRC-32C of `payload` (the WAL's checksum of it): the objects' block CRCs are built from
    /// it without reading the payload again.
    pub payload_crc: u32,
    pub wal_end_position: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UploadError {
    /// Back-pressure: the buffer is at `buffer_bytes_max` (the store is
    /// slow or down); retry the append after an upload completes.
    #[error("upload buffer full: {buffered} + {len} bytes over {max} (buffer_bytes_max)")]
    Full {
        buffered: usize,
        len: usize,
        max: usize,
    },
    /// The append does not continue its stream (a broker bug).
    #[error(transparent)]
    Build(#[from] BuildError),
    /// The WAL position went backwards (a broker bug).
    #[error("WAL position {got} is before {last}")]
    WalPositionBackwards { last: u64, got: u64 },
    /// The metadata refused or could not be reached; run again later.
    #[error("metadata: {0}")]
    Metadata(String),
    /// The object store's runtime is shutting down.
    #[error("the object store shut down")]
    Shutdown,
}

/// Buffers appends until they are sealed into an upload.
#[derive(Debug)]
pub struct Uploader {
    config: UploaderConfig,
    /// stream → (first, end exclusive, payload, payload CRC), in offset order.
    streams: Appends,
    /// stream → the next offset expected (continuity across uploads).
    stream_ends: BTreeMap<u64, i64>,
    buffered_bytes: usize,
    /// stream → bytes appended and not yet sealed, for `StreamRoll::bytes`.
    stream_bytes: BTreeMap<u64, usize>,
    /// stream → its latest `StreamRoll`, for the triggers of what [`Uploader::seal_before`]
    /// leaves buffered.
    stream_rolls: BTreeMap<u64, StreamRoll>,
    /// When the time trigger fires: the earliest of each buffered stream's first append plus
    /// the shard's `upload_interval` or its own `StreamRoll::after`.
    deadline: Option<Instant>,
    /// A stream reached its `StreamRoll::bytes`.
    stream_bytes_reached: bool,
    wal_end_position: u64,
    in_flight: bool,
}

impl Uploader {
    pub fn new(config: UploaderConfig) -> Uploader {
        Uploader {
            config,
            streams: BTreeMap::new(),
            stream_ends: BTreeMap::new(),
            buffered_bytes: 0,
            stream_bytes: BTreeMap::new(),
            stream_rolls: BTreeMap::new(),
            deadline: None,
            stream_bytes_reached: false,
            wal_end_position: 0,
            in_flight: false,
        }
    }

    pub fn config(&self) -> &UploaderConfig {
        &self.config
    }

    /// Buffers a record (no copy), to be uploaded by the shard's triggers or by `roll`, its
    /// stream's own. After a restart, append only records at or above
    /// `MetadataImage::stream_end_offset_in_objects` of their stream.
    pub fn append(
        &mut self,
        record: AppendedRecord,
        now: Instant,
        roll: StreamRoll,
    ) -> Result<(), UploadError> {
        let len = record.payload.len();
        if self.buffered_bytes + len > self.config.buffer_bytes_max && self.buffered_bytes > 0 {
            return Err(UploadError::Full {
                buffered: self.buffered_bytes,
                len,
                max: self.config.buffer_bytes_max,
            });
        }
        if record.wal_end_position < self.wal_end_position {
            return Err(UploadError::WalPositionBackwards {
                last: self.wal_end_position,
                got: record.wal_end_position,
            });
        }
        if record.first_offset < 0 || record.last_offset < record.first_offset || len == 0 {
            return Err(BuildError::BadOffsets {
                stream_id: record.stream_id,
                first_offset: record.first_offset,
                last_offset: record.last_offset,
            }
            .into());
        }
        if let Some(&expected) = self.stream_ends.get(&record.stream_id)
            && expected != record.first_offset
        {
            return Err(BuildError::Discontinuous {
                stream_id: record.stream_id,
                expected,
                first_offset: record.first_offset,
            }
            .into());
        }
        self.stream_ends
            .insert(record.stream_id, record.last_offset + 1);
        self.streams.entry(record.stream_id).or_default().push((
            record.first_offset,
            record.last_offset + 1,
            record.payload,
            record.payload_crc,
            record.wal_end_position,
        ));
        self.stream_rolls.insert(record.stream_id, roll);
        self.buffered_bytes += len;
        self.wal_end_position = record.wal_end_position;
        let stream_bytes = self.stream_bytes.entry(record.stream_id).or_default();
        let first_append = *stream_bytes == 0;
        *stream_bytes += len;
        self.stream_bytes_reached |= *stream_bytes >= roll.bytes;
        if first_append {
            // A later append of the stream moves nothing: the bound runs from its first.
            let after = roll.after.min(self.config.upload_interval);
            let deadline = now.checked_add(after).unwrap_or(now);
            self.deadline = Some(self.deadline.map_or(deadline, |d| d.min(deadline)));
        }
        Ok(())
    }

    /// Forgets where `stream_id` continues, when it has nothing buffered: its partition left
    /// this uploader's shard (moved to another broker, or deleted). Should it come back, it
    /// continues where the other broker's uploads left it, not where this one's did.
    pub fn forget_stream(&mut self, stream_id: u64) {
        if !self.streams.contains_key(&stream_id) {
            self.stream_ends.remove(&stream_id);
        }
    }

    /// Bytes appended and not yet sealed.
    pub fn buffered_bytes(&self) -> usize {
        self.buffered_bytes
    }

    /// True when an upload is due (and none is in flight).
    pub fn should_seal(&self, now: Instant) -> bool {
        !self.in_flight
            && (self.buffered_bytes >= self.config.upload_bytes
                || self.stream_bytes_reached
                || self.next_deadline().is_some_and(|deadline| now >= deadline))
    }

    /// When the time trigger fires for what is buffered now.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Takes everything buffered into an upload. None when nothing is
    /// buffered or the previous upload has not `completed`.
    pub fn seal(&mut self) -> Option<SealedUpload> {
        if self.in_flight || self.streams.is_empty() {
            return None;
        }
        self.in_flight = true;
        let streams = Arc::new(std::mem::take(&mut self.streams));
        let bytes = std::mem::take(&mut self.buffered_bytes);
        self.stream_bytes.clear();
        self.stream_rolls.clear();
        self.deadline = None;
        self.stream_bytes_reached = false;
        Some(SealedUpload::new(
            self.config,
            streams,
            bytes,
            self.wal_end_position,
        ))
    }

    /// Takes the buffered appends that end at or before WAL position `end` into an upload,
    /// like [`Uploader::seal`]; the later ones stay buffered, their triggers counted from
    /// `now`. For a WAL of segments: `end` is where its closed segments end, so that the
    /// upload's objects can be those segments ([`SealedUpload::link_segments`]). None when
    /// no append ends there or an upload is in flight.
    pub fn seal_before(&mut self, end: u64, now: Instant) -> Option<SealedUpload> {
        if self.in_flight {
            return None;
        }
        let mut taken = Appends::new();
        let mut taken_bytes = 0usize;
        let mut taken_end = 0u64;
        for (&stream_id, appends) in self.streams.iter_mut() {
            let cut = appends.partition_point(|append| append.4 <= end);
            if cut == 0 {
                continue;
            }
            let rest = appends.split_off(cut);
            let head = std::mem::replace(appends, rest);
            taken_bytes += head.iter().map(|append| append.2.len()).sum::<usize>();
            taken_end = taken_end.max(head.last().map_or(0, |append| append.4));
            taken.insert(stream_id, head);
        }
        if taken.is_empty() {
            return None;
        }
        self.streams.retain(|_, appends| !appends.is_empty());
        self.in_flight = true;
        self.buffered_bytes -= taken_bytes;
        // What stays is counted afresh: its first append came after the cut, so the bounds
        // of its stream run from now.
        self.stream_bytes.clear();
        self.deadline = None;
        self.stream_bytes_reached = false;
        for (&stream_id, appends) in &self.streams {
            let bytes: usize = appends.iter().map(|append| append.2.len()).sum();
            let roll = self
                .stream_rolls
                .get(&stream_id)
                .copied()
                .unwrap_or(StreamRoll::NONE);
            self.stream_bytes.insert(stream_id, bytes);
            self.stream_bytes_reached |= bytes >= roll.bytes;
            let deadline = now
                .checked_add(roll.after.min(self.config.upload_interval))
                .unwrap_or(now);
            self.deadline = Some(self.deadline.map_or(deadline, |d| d.min(deadline)));
        }
        let streams = &self.streams;
        self.stream_rolls
            .retain(|stream_id, _| streams.contains_key(stream_id));
        Some(SealedUpload::new(
            self.config,
            Arc::new(taken),
            taken_bytes,
            taken_end,
        ))
    }

    /// The sealed upload finished (`run` returned Ok): the next may be sealed.
    pub fn completed(&mut self) {
        self.in_flight = false;
    }
}

/// One upload: planned into objects on first `run`, each built just before its put and
/// dropped after it, then committed. `run` may be called again after an error; it resumes
/// where it stopped.
///
/// Why one object at a time: an upload that fell behind holds several objects of up to
/// `object_bytes_max`; building them all first held them all at once, more than the spare
/// buffers keep, so each was fresh memory faulted in page by page.
#[derive(Debug)]
pub struct SealedUpload {
    config: UploaderConfig,
    /// The appends (the log cache's own `Bytes`: no copy) until every object is put.
    streams: Arc<Appends>,
    bytes: usize,
    wal_end_position: u64,
    /// The objects to build or link, with their ids (empty until ids are allocated).
    planned: Vec<(u64, PlannedObject)>,
    /// The image of each planned object once it is put.
    uploaded: Vec<Option<ObjectImage>>,
    /// Set by [`SealedUpload::link_segments`]: the objects are the WAL's segment files.
    links: Option<SegmentLinks>,
    /// What the upload records of its streams (their producers' state and largest timestamp
    /// at its end) before its objects are committed; emptied once recorded.
    stream_uploads: Vec<StreamUpload>,
    committed: bool,
}

/// What a finished upload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadReport {
    /// Everything up to here in the WAL is in object storage: trim to it.
    pub wal_end_position: u64,
    /// The objects committed (an SSO and / or SOs).
    pub objects: Vec<ObjectImage>,
    /// Data bytes uploaded.
    pub bytes: usize,
    /// Failed put attempts that were retried.
    pub put_retries: u64,
}

/// The WAL segments an upload's records lie in, for objects made by linking them.
#[derive(Debug, Clone)]
struct SegmentLinks {
    segment_bytes: u64,
    /// Logical segment number → its file.
    files: BTreeMap<u64, PathBuf>,
}

impl SealedUpload {
    fn new(
        config: UploaderConfig,
        streams: Arc<Appends>,
        bytes: usize,
        wal_end_position: u64,
    ) -> SealedUpload {
        SealedUpload {
            config,
            streams,
            bytes,
            wal_end_position,
            planned: Vec::new(),
            uploaded: Vec::new(),
            links: None,
            stream_uploads: Vec::new(),
            committed: false,
        }
    }

    /// Makes this upload's objects the WAL segment files its records lie in (one object per
    /// segment, its index written after the file's bytes, see [`ObjectStore::put_linked`])
    /// instead of copies of the records: each byte is then written once, by the WAL.
    /// `segment_bytes` is the WAL's segment size and `file_of` the file of the segment that
    /// a record ending at a WAL position lies in; those segments must be closed (nothing
    /// writes them again) and stay until this upload is committed and the WAL trimmed. If
    /// `file_of` knows no file for a record, the objects stay copies. Call before the first
    /// [`SealedUpload::run`].
    pub fn link_segments(&mut self, segment_bytes: u64, file_of: impl Fn(u64) -> Option<PathBuf>) {
        let mut files = BTreeMap::new();
        for appends in self.streams.values() {
            for append in appends {
                let segment = (append.4 - 1) / segment_bytes;
                if let std::collections::btree_map::Entry::Vacant(entry) = files.entry(segment) {
                    match file_of(append.4) {
                        Some(file) => {
                            entry.insert(file);
                        }
                        None => return,
                    }
                }
            }
        }
        self.links = Some(SegmentLinks {
            segment_bytes,
            files,
        });
    }

    /// The WAL position this upload covers.
    pub fn wal_end_position(&self) -> u64 {
        self.wal_end_position
    }

    /// Data bytes in this upload.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Allocates ids, builds and puts the objects (retrying store failures
    /// forever with back-off), commits them, and reports the WAL position
    /// now safe to trim. Errors are the metadata's; the store's are retried.
    pub async fn run<R: Registry>(
        &mut self,
        store: &ObjectStore,
        registry: &R,
    ) -> Result<UploadReport, UploadError> {
        if self.planned.is_empty() {
            self.plan(registry).await?;
        }
        let mut put_retries = 0u64;
        let backoff_max = self.config.backoff_max;
        let block_bytes = self.config.block_bytes;
        let streams = &self.streams;
        let pending = self
            .planned
            .iter()
            .enumerate()
            .filter(|(i, _)| self.uploaded[*i].is_none());
        let mut puts = futures::stream::iter(pending)
            .map(|(i, (id, plan))| {
                let (id, plan, streams) = (*id, plan.clone(), Arc::clone(streams));
                async move {
                    let plan = match plan {
                        PlannedObject::Linked(linked) => {
                            let (object, retries) =
                                put_linked_forever(store, id, &linked, backoff_max).await;
                            return Ok::<_, UploadError>((i, object, retries));
                        }
                        PlannedObject::Built(plan) => plan,
                    };
                    // Copying and checksumming megabytes is not for a shard's executor
                    // thread: build on the store's runtime.
                    let (object, bytes) = store
                        .spawn_blocking(move || build_object(&streams, &plan, id, block_bytes))
                        .await
                        .map_err(|_| UploadError::Shutdown)??;
                    let retries = put_forever(store, &object.key, &bytes, backoff_max).await;
                    Ok::<_, UploadError>((i, object, retries))
                }
            })
            .buffer_unordered(UPLOAD_PUTS_IN_FLIGHT_MAX);
        let mut done = Vec::new();
        let mut failed = None;
        while let Some(put) = puts.next().await {
            match put {
                Ok((i, object, retries)) => {
                    put_retries += retries;
                    done.push((i, object));
                }
                Err(error) => {
                    failed = Some(error);
                    break;
                }
            }
        }
        drop(puts);
        for (i, object) in done {
            self.uploaded[i] = Some(object);
        }
        if let Some(error) = failed {
            return Err(error);
        }
        // The payloads now live in the objects.
        self.streams = Arc::default();
        let objects: Vec<ObjectImage> = self.uploaded.iter().flatten().cloned().collect();
        if !self.stream_uploads.is_empty() {
            // Before the objects: replay at start-up starts at the objects' end, so what is
            // recorded must never be behind it (ahead is harmless: sluice_metadata's uploads.rs).
            registry
                .submit(MetadataCommand::RecordUploads {
                    streams: self.stream_uploads.clone(),
                })
                .await
                .map_err(|e| UploadError::Metadata(e.to_string()))?;
            self.stream_uploads = Vec::new();
        }
        if !self.committed {
            registry
                .submit(MetadataCommand::CommitObjects {
                    objects: objects.clone(),
                })
                .await
                .map_err(|e| UploadError::Metadata(e.to_string()))?;
            self.committed = true;
        }
        Ok(UploadReport {
            wal_end_position: self.wal_end_position,
            objects,
            bytes: self.bytes,
            put_retries,
        })
    }

    /// Each stream of the upload with the offset its data ends at (exclusive).
    pub fn stream_end_offsets(&self) -> Vec<(u64, i64)> {
        self.streams
            .iter()
            .filter_map(|(&stream_id, appends)| Some((stream_id, appends.last()?.1)))
            .collect()
    }

    /// Moves the WAL position this upload covers forward to `position`: the caller knows that
    /// no record lies between the upload's last and `position` (a segment's padding), so the
    /// trim after it may pass them too. Call before the first [`SealedUpload::run`].
    pub fn cover_wal_up_to(&mut self, position: u64) {
        self.wal_end_position = self.wal_end_position.max(position);
    }

    /// Sets what the upload records of its streams before committing its objects.
    pub fn set_stream_uploads(&mut self, streams: Vec<StreamUpload>) {
        self.stream_uploads = streams;
    }

    /// Splits streams into SSOs and SOs for the large ones (or into one object per WAL
    /// segment, see [`SealedUpload::link_segments`]) and allocates their ids.
    async fn plan<R: Registry>(&mut self, registry: &R) -> Result<(), UploadError> {
        let plans: Vec<PlannedObject> = match &self.links {
            Some(links) => plan_linked_objects(&self.streams, links)
                .into_iter()
                .map(PlannedObject::Linked)
                .collect(),
            None => plan_objects(
                &self.streams,
                self.config.stream_object_min_bytes,
                self.config.object_bytes_max,
            )
            .into_iter()
            .map(PlannedObject::Built)
            .collect(),
        };
        let first = allocate_object_ids(registry, plans.len() as u32)
            .await
            .map_err(UploadError::Metadata)?;
        self.uploaded = vec![None; plans.len()];
        self.planned = (first..).zip(plans).collect();
        Ok(())
    }
}

/// Per stream, its appends: (first offset, end offset (exclusive), payload, payload CRC, WAL
/// position after its record).
type Appends = BTreeMap<u64, Vec<(i64, i64, Bytes, u32, u64)>>;

/// One object of an upload: built from the appends, or a WAL segment file linked.
#[derive(Debug, Clone)]
enum PlannedObject {
    Built(ObjectPlan),
    Linked(LinkedPlan),
}

/// An object made of a WAL segment file: its blocks are the payloads of the upload's records
/// in that segment, where the WAL wrote them.
#[derive(Debug, Clone)]
struct LinkedPlan {
    kind: ObjectKind,
    source: PathBuf,
    /// Ordered by (stream id, offset).
    blocks: Arc<Vec<DataBlock>>,
}

/// One object per WAL segment the appends lie in: a Stream Object if it holds one stream,
/// else a Stream Set Object. A record's payload ends where its WAL record ends, and lies at
/// that position modulo the segment size in the segment's file.
fn plan_linked_objects(streams: &Appends, links: &SegmentLinks) -> Vec<LinkedPlan> {
    let mut by_segment: BTreeMap<u64, Vec<DataBlock>> = BTreeMap::new();
    for (&stream_id, appends) in streams {
        for (first_offset, end_offset, payload, crc, wal_end) in appends {
            let start = wal_end - payload.len() as u64;
            by_segment
                .entry((wal_end - 1) / links.segment_bytes)
                .or_default()
                .push(DataBlock {
                    stream_id,
                    start_offset: *first_offset,
                    end_offset: *end_offset,
                    position: start % links.segment_bytes,
                    len: payload.len() as u32,
                    crc32c: *crc,
                });
        }
    }
    by_segment
        .into_iter()
        .map(|(segment, blocks)| {
            // Streams were visited in id order and each one's appends in offset order.
            let one_stream =
                blocks.first().map(|b| b.stream_id) == blocks.last().map(|b| b.stream_id);
            LinkedPlan {
                kind: if one_stream {
                    ObjectKind::Stream
                } else {
                    ObjectKind::StreamSet
                },
                source: links.files[&segment].clone(),
                blocks: Arc::new(blocks),
            }
        })
        .collect()
}

/// Links `plan`'s segment file as object `id` until it succeeds (as [`put_forever`] puts);
/// returns the object and the failed attempts.
async fn put_linked_forever(
    store: &ObjectStore,
    id: u64,
    plan: &LinkedPlan,
    backoff_max: Duration,
) -> (ObjectImage, u64) {
    let key = object_key(plan.kind, id);
    let (kind, blocks) = (plan.kind, Arc::clone(&plan.blocks));
    let tail: LinkedTail = Arc::new(move |size| linked_object_tail(kind, &blocks, size));
    let (size, failures) = retry_forever(store, &key, backoff_max, || {
        store.put_linked(&key, &plan.source, Arc::clone(&tail))
    })
    .await;
    let object = ObjectImage {
        id,
        key,
        size,
        kind: plan.kind,
        ranges: stream_ranges(&plan.blocks),
    };
    (object, failures)
}

/// What one object of an upload holds: its kind, and (stream id, range of that stream's
/// appends) for each stream in it.
type ObjectPlan = (ObjectKind, Vec<(u64, Range<usize>)>);

/// Splits an upload into objects: SSOs of the streams below `stream_object_min_bytes`
/// (packed up to `object_bytes_max` each), then SOs of the others, a stream larger than
/// `object_bytes_max` cut into consecutive SOs of about equal size (never a small tail,
/// which compaction would rewrite).
fn plan_objects(
    streams: &Appends,
    stream_object_min_bytes: usize,
    object_bytes_max: usize,
) -> Vec<ObjectPlan> {
    let object_bytes_max = object_bytes_max.max(1);
    let mut plans: Vec<ObjectPlan> = Vec::new();
    let mut stream_objects: Vec<ObjectPlan> = Vec::new();
    let mut set: Vec<(u64, Range<usize>)> = Vec::new();
    let mut set_bytes = 0usize;
    for (&id, appends) in streams {
        let bytes: usize = appends.iter().map(|a| a.2.len()).sum();
        if bytes < stream_object_min_bytes {
            if !set.is_empty() && set_bytes + bytes > object_bytes_max {
                plans.push((ObjectKind::StreamSet, std::mem::take(&mut set)));
                set_bytes = 0;
            }
            set.push((id, 0..appends.len()));
            set_bytes += bytes;
            continue;
        }
        // Each piece aims at an equal share of what is left, so appends of uneven size
        // still leave no small last piece.
        let (mut pieces_left, mut bytes_left) = (bytes.div_ceil(object_bytes_max), bytes);
        let (mut start, mut size) = (0usize, 0usize);
        for (i, append) in appends.iter().enumerate() {
            size += append.2.len();
            if pieces_left > 1 && i + 1 < appends.len() && size >= bytes_left.div_ceil(pieces_left)
            {
                stream_objects.push((ObjectKind::Stream, vec![(id, start..i + 1)]));
                (pieces_left, bytes_left) = (pieces_left - 1, bytes_left - size);
                (start, size) = (i + 1, 0);
            }
        }
        if start < appends.len() {
            stream_objects.push((ObjectKind::Stream, vec![(id, start..appends.len())]));
        }
    }
    if !set.is_empty() {
        plans.push((ObjectKind::StreamSet, set));
    }
    plans.extend(stream_objects);
    plans
}

/// Builds the object of `plan`, with id `id`.
fn build_object(
    streams: &Appends,
    plan: &ObjectPlan,
    id: u64,
    block_bytes: usize,
) -> Result<(ObjectImage, Bytes), UploadError> {
    let (kind, parts) = plan;
    let kind = *kind;
    let mut builder = ObjectBuilder::new(kind).with_block_bytes(block_bytes);
    for (stream_id, range) in parts {
        for (first_offset, end, payload, crc, _) in &streams[stream_id][range.clone()] {
            builder.add_with_crc(*stream_id, *first_offset, end - 1, payload.clone(), *crc)?;
        }
    }
    let (bytes, ranges) = builder.finish();
    let object = ObjectImage {
        id,
        key: object_key(kind, id),
        size: bytes.len() as u64,
        kind,
        ranges,
    };
    Ok((object, bytes))
}

/// The key of an object: derived from its id, so a retried put rewrites
/// the same key. SSOs under `sso/`, SOs under `so/`.
pub fn object_key(kind: ObjectKind, id: u64) -> String {
    match kind {
        ObjectKind::StreamSet => format!("sso/{id:016x}"),
        ObjectKind::Stream => format!("so/{id:016x}"),
    }
}

/// While a put keeps failing, its failure is logged at most this often: an operator must see
/// a failing store in the log (the WAL fills behind it), without a line per retry.
const PUT_FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(30);

/// Puts until it succeeds; returns the number of failed attempts.
async fn put_forever(store: &ObjectStore, key: &str, bytes: &Bytes, backoff_max: Duration) -> u64 {
    let ((), failures) =
        retry_forever(store, key, backoff_max, || store.put(key, bytes.clone())).await;
    failures
}

/// Runs `attempt` (a put of `key`) until it succeeds; returns its result and the number of
/// failed attempts. The first failure is logged, then one line every
/// [`PUT_FAILURE_LOG_INTERVAL`], and a recovery after failures; meanwhile the put counts in
/// `Stats::puts_failing`.
async fn retry_forever<T, F>(
    store: &ObjectStore,
    key: &str,
    backoff_max: Duration,
    attempt: impl Fn() -> F,
) -> (T, u64)
where
    F: std::future::Future<Output = crate::store::Result<T>>,
{
    let mut failures = 0u64;
    let mut failing_since = None;
    let mut logged_at: Option<Instant> = None;
    // Counted in `puts_failing` from the first failure until this put succeeds or is dropped.
    let mut failing: Option<FailingPut<'_>> = None;
    loop {
        match attempt().await {
            Ok(value) => {
                if let Some(since) = failing_since {
                    tracing::info!(
                        key,
                        failures,
                        failing_ms = Instant::now().duration_since(since).as_millis() as u64,
                        "object upload succeeded after failures"
                    );
                }
                return (value, failures);
            }
            Err(error) => {
                failures += 1;
                failing.get_or_insert_with(|| FailingPut::new(store.stats()));
                let now = Instant::now();
                let since = *failing_since.get_or_insert(now);
                if logged_at.is_none_or(|at| now.duration_since(at) >= PUT_FAILURE_LOG_INTERVAL) {
                    logged_at = Some(now);
                    tracing::warn!(
                        key,
                        failures,
                        failing_ms = now.duration_since(since).as_millis() as u64,
                        %error,
                        "object upload failing; retrying (the WAL holds the data meanwhile)"
                    );
                }
                Stats::add(&store.stats().upload_retries, 1);
                let backoff = store
                    .retry_policy()
                    .backoff(failures.min(32) as u32)
                    .min(backoff_max);
                store.sleep(backoff).await;
            }
        }
    }
}

/// One put in `Stats::puts_failing` while it lives.
struct FailingPut<'a>(&'a Stats);

impl<'a> FailingPut<'a> {
    fn new(stats: &'a Stats) -> FailingPut<'a> {
        Stats::add(&stats.puts_failing, 1);
        FailingPut(stats)
    }
}

impl Drop for FailingPut<'_> {
    fn drop(&mut self) {
        self.0.puts_failing.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn appends(sizes: &[usize]) -> Vec<(i64, i64, Bytes, u32, u64)> {
        let mut offset = 0;
        sizes
            .iter()
            .map(|&size| {
                offset += 1;
                let payload = Bytes::from(vec![0u8; size]);
                let crc = crc32c::crc32c(&payload);
                (offset - 1, offset, payload, crc, offset as u64)
            })
            .collect()
    }

    #[test]
    fn large_uploads_become_objects_of_bounded_size() {
        let mut streams = Appends::new();
        streams.insert(1, appends(&[10; 10]));
        streams.insert(2, appends(&[5]));
        streams.insert(3, appends(&[3, 2]));
        streams.insert(4, appends(&[6]));
        streams.insert(5, appends(&[20]));
        let plans = plan_objects(&streams, 8, 32);
        let expected: Vec<ObjectPlan> = vec![
            // The streams below 8 bytes share one SSO (16 bytes, under 32).
            (ObjectKind::StreamSet, vec![(2, 0..1), (3, 0..2), (4, 0..1)]),
            // 100 bytes in 4 pieces of about equal size, none above 32, no small tail.
            (ObjectKind::Stream, vec![(1, 0..3)]),
            (ObjectKind::Stream, vec![(1, 3..6)]),
            (ObjectKind::Stream, vec![(1, 6..8)]),
            (ObjectKind::Stream, vec![(1, 8..10)]),
            (ObjectKind::Stream, vec![(5, 0..1)]),
        ];
        assert_eq!(plans, expected);
        let sets: Vec<ObjectPlan> = plan_objects(&streams, 8, 12)
            .into_iter()
            .filter(|(kind, _)| *kind == ObjectKind::StreamSet)
            .collect();
        assert_eq!(
            sets,
            vec![
                (ObjectKind::StreamSet, vec![(2, 0..1), (3, 0..2)]),
                (ObjectKind::StreamSet, vec![(4, 0..1)]),
            ]
        );
    }

    fn record(stream_id: u64, first_offset: i64, wal_end_position: u64) -> AppendedRecord {
        let payload = Bytes::from_static(b"batch");
        AppendedRecord {
            stream_id,
            first_offset,
            last_offset: first_offset,
            payload_crc: crc32c::crc32c(&payload),
            payload,
            wal_end_position,
        }
    }

    #[test]
    fn a_forgotten_stream_continues_anywhere_but_not_while_it_has_appends() {
        let mut uploader = Uploader::new(UploaderConfig::default());
        let now = Instant::now();
        uploader
            .append(record(1, 0, 10), now, StreamRoll::NONE)
            .unwrap();
        // Buffered: still bound to continue at 1.
        uploader.forget_stream(1);
        assert!(
            uploader
                .append(record(1, 5, 20), now, StreamRoll::NONE)
                .is_err()
        );
        let _sealed = uploader.seal().expect("an upload");
        uploader.completed();
        // Uploaded, then the partition moved away and back: another broker wrote 1 to 6.
        uploader.forget_stream(1);
        assert!(
            uploader
                .append(record(1, 7, 30), now, StreamRoll::NONE)
                .is_ok()
        );
    }
}
