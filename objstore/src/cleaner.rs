//! The log cleaner: Kafka's log compaction (`cleanup.policy=compact`) over a partition's
//! Stream Objects, so that only the latest record of each key is kept.
//!
//! A stream's objects are split at its cleaner mark (`MetadataImage::cleaned`): below it
//! the clean part, above it the dirty part. A cleaning, as Kafka's cleaner does it:
//!
//! 1. **Choose.** A compacted partition is due when its dirty share of bytes is above
//!    `min.cleanable.dirty.ratio`, when its oldest dirty upload is older than
//!    `max.compaction.lag.ms`, or when a tombstone it kept may now go (its delete horizon).
//!    Only the stream's leading Stream Objects are cleaned: the latest uploads, still in
//!    Stream Set Objects, are the "active segment" until compaction splits them.
//! 2. **Map the dirty part.** Up to `step_bytes_max` of dirty objects are read; records
//!    younger than `min.compaction.lag.ms` (by the uploads' times), data of a transaction
//!    still open, and keys past `keys_max` end the cleanable part early. Each key's latest
//!    offset goes into a map of 128-bit key hashes. Aborted transactions' records are left out
//!    of the map (they never hide a committed value).
//! 3. **Rewrite.** Every object from the stream's first through the end of the cleanable part,
//!    a step of at most `step_bytes_max` at a time, is rewritten keeping a record unless a
//!    later offset holds its key, it belongs to an aborted transaction, or it is a tombstone
//!    (or a transaction marker whose data is all gone) older than `delete.retention.ms`.
//!    Batches keep their base and last offsets (`retain_records`); a batch left with no record
//!    is dropped, so an object's offsets may have gaps, which readers skip. Steps that
//!    change nothing are not written; each other step is one `CompactObjects`, covering
//!    exactly the offsets it replaces.
//! 4. **Mark.** `RecordCleaning` moves the mark to the end of the cleanable part and sets
//!    the delete horizon: when the first tombstone or marker it kept may go.
//!
//! Departures from Kafka, and why: tombstones and markers age by their batch's timestamp
//! (Kafka before KIP-534 went by the segment's modification time, close to it), not by the
//! time of their first cleaning, which would need a field rewritten in every batch; keys are
//! hashed to 128 bits as Kafka hashes them (MD5), so a collision is as unlikely as there. A
//! step holds at most about twice `step_bytes_max` of objects and the key map.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;

use bytes::Bytes;
use sluice_metadata::{
    MetadataCommand, MetadataImage, ObjectId, ObjectImage, ObjectKind, StreamCleaned, StreamRange,
    TopicConfig,
};
use sluice_net::record_batch::{
    Record, RecordBatchHeader, batches, decode_records, retain_records,
};

use crate::compaction::{CompactionError, replace_objects};
use crate::format::{ObjectBuilder, read_stream_blocks};
use crate::limits::{
    CLEANER_KEYS_MAX_DEFAULT, COMPACTION_STEP_BYTES_MAX_DEFAULT, DATA_BLOCK_BYTES_TARGET,
};
use crate::registry::Registry;
use crate::stats::Stats;
use crate::store::ObjectStore;

/// The most decompressed bytes one batch may expand to while the cleaner reads it.
const DECOMPRESSED_BATCH_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Limits of one cleaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CleanerConfig {
    /// Bytes of objects one step reads at most: the dirty part mapped at once, and each
    /// rewrite step.
    pub step_bytes_max: usize,
    /// Keys one cleaning maps at most (Kafka's `log.cleaner.dedupe.buffer.size`, counted in
    /// keys); the cleanable part ends where the map is full.
    pub keys_max: usize,
    /// Data block size of the objects written.
    pub block_bytes: usize,
}

impl Default for CleanerConfig {
    fn default() -> CleanerConfig {
        CleanerConfig {
            step_bytes_max: COMPACTION_STEP_BYTES_MAX_DEFAULT,
            keys_max: CLEANER_KEYS_MAX_DEFAULT,
            block_bytes: DATA_BLOCK_BYTES_TARGET,
        }
    }
}

/// What one cleaning did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CleaningReport {
    pub stream_id: u64,
    /// The stream's cleaner mark after it.
    pub cleaned_end_offset: i64,
    pub records_removed: u64,
    pub objects_replaced: usize,
    pub bytes_read: u64,
    pub bytes_written: u64,
}

/// The compaction settings of one compacted topic, from its effective configs.
#[derive(Debug, Clone, Copy)]
struct Policy {
    delete_retention_ms: i64,
    min_compaction_lag_ms: i64,
    max_compaction_lag_ms: i64,
    min_cleanable_dirty_ratio: f64,
}

impl Policy {
    fn of(config: &TopicConfig) -> Option<Policy> {
        config.cleanup_policy.compact.then_some(Policy {
            delete_retention_ms: config.delete_retention_ms.max(0),
            min_compaction_lag_ms: config.min_compaction_lag_ms.max(0),
            max_compaction_lag_ms: config.max_compaction_lag_ms.max(0),
            min_cleanable_dirty_ratio: config.min_cleanable_dirty_ratio,
        })
    }
}

/// The streams of compacted topics due for cleaning at `now_ms`, dirtiest first.
pub fn streams_to_clean(image: &MetadataImage, now_ms: i64) -> Vec<u64> {
    let mut due: Vec<(f64, u64)> = Vec::new();
    for topic in image.topics.values() {
        let Some(policy) = image
            .topic_config(&topic.name)
            .as_ref()
            .and_then(Policy::of)
        else {
            continue;
        };
        for partition in &topic.partitions {
            let stream_id = partition.stream_id;
            if let Some(ratio) = dirty_ratio_if_due(image, stream_id, &policy, now_ms) {
                due.push((ratio, stream_id));
            }
        }
    }
    due.sort_by(|a, b| b.0.total_cmp(&a.0));
    due.into_iter().map(|(_, stream_id)| stream_id).collect()
}

/// The stream's leading Stream Objects: what the cleaner may rewrite.
fn cleanable_objects(image: &MetadataImage, stream_id: u64) -> Vec<(&ObjectImage, &StreamRange)> {
    image
        .stream_objects(stream_id)
        .take_while(|(object, _)| object.kind == ObjectKind::Stream)
        .collect()
}

/// The dirty share of the stream's cleanable bytes when a cleaning is due, else None.
fn dirty_ratio_if_due(
    image: &MetadataImage,
    stream_id: u64,
    policy: &Policy,
    now_ms: i64,
) -> Option<f64> {
    let objects = cleanable_objects(image, stream_id);
    let cleaned = image.cleaned(stream_id);
    let cleaned_end = cleaned.map_or(0, |c| c.cleaned_end_offset);
    let horizon_passed = cleaned.is_some_and(|c| c.delete_horizon_ms <= now_ms);
    let lag_end = lag_end_offset(image, stream_id, now_ms - policy.min_compaction_lag_ms);
    let total: u64 = objects.iter().map(|(_, r)| r.len).sum();
    let dirty: u64 = objects
        .iter()
        .filter(|(_, r)| r.end_offset > cleaned_end && r.start_offset < lag_end)
        .map(|(_, r)| r.len)
        .sum();
    if total == 0 || (dirty == 0 && !horizon_passed) {
        return None;
    }
    let ratio = dirty as f64 / total as f64;
    let lag_passed = image
        .upload_times(stream_id)
        .iter()
        .find(|t| t.end_offset > cleaned_end)
        .is_some_and(|t| t.max_timestamp <= now_ms.saturating_sub(policy.max_compaction_lag_ms));
    let ratio_passed = dirty > 0 && ratio > policy.min_cleanable_dirty_ratio;
    (horizon_passed || lag_passed || ratio_passed).then_some(ratio.max(f64::MIN_POSITIVE))
}

/// The end of the stream's data old enough to clean: below the first upload holding a record
/// newer than `newest_ms`. Data uploaded before upload times were kept counts as old.
fn lag_end_offset(image: &MetadataImage, stream_id: u64, newest_ms: i64) -> i64 {
    let mut end = 0;
    for time in image.upload_times(stream_id) {
        if time.max_timestamp > newest_ms {
            return end;
        }
        end = time.end_offset;
    }
    i64::MAX
}

/// Runs cleanings.
#[derive(Debug, Clone)]
pub struct LogCleaner {
    store: ObjectStore,
    config: CleanerConfig,
}

impl LogCleaner {
    pub fn new(store: ObjectStore, config: CleanerConfig) -> LogCleaner {
        LogCleaner { store, config }
    }

    /// The data blocks of `stream_id` in `object`, read through its index.
    async fn stream_data(
        &self,
        object: &ObjectImage,
        stream_id: u64,
    ) -> Result<Vec<Bytes>, CompactionError> {
        let blocks = read_stream_blocks(&self.store, &object.key, object.size, stream_id).await?;
        Ok(blocks.into_iter().map(|(_, data)| data).collect())
    }

    /// Cleans `stream_id` once as of `image` (one dirty step's worth); None when there was
    /// nothing to clean (not compacted, nothing cleanable yet).
    pub async fn clean<R: Registry>(
        &self,
        image: &MetadataImage,
        registry: &R,
        stream_id: u64,
        now_ms: i64,
    ) -> Result<Option<CleaningReport>, CompactionError> {
        let Some(policy) = image
            .stream(stream_id)
            .and_then(|(topic, _)| image.topic_config(&topic.name))
            .as_ref()
            .and_then(Policy::of)
        else {
            return Ok(None);
        };
        let objects = cleanable_objects(image, stream_id);
        let cleaned = image.cleaned(stream_id);
        let cleaned_end = cleaned.map_or(0, |c| c.cleaned_end_offset);
        let lag_end = lag_end_offset(image, stream_id, now_ms - policy.min_compaction_lag_ms);
        let mut report = CleaningReport {
            stream_id,
            cleaned_end_offset: cleaned_end,
            records_removed: 0,
            objects_replaced: 0,
            bytes_read: 0,
            bytes_written: 0,
        };

        // Map the dirty part.
        let mut held: HashMap<ObjectId, Vec<Bytes>> = HashMap::new();
        let mut dirty: Vec<(String, Vec<Bytes>)> = Vec::new();
        let mut dirty_bytes = 0u64;
        let mut candidate_end = cleaned_end;
        for (object, range) in objects.iter().filter(|(_, r)| r.end_offset > cleaned_end) {
            if range.start_offset >= lag_end
                || (!dirty.is_empty()
                    && dirty_bytes + object.size > self.config.step_bytes_max as u64)
            {
                break;
            }
            let blocks = self.stream_data(object, stream_id).await?;
            dirty_bytes += blocks.iter().map(|b| b.len() as u64).sum::<u64>();
            candidate_end = range.end_offset.min(lag_end);
            held.insert(object.id, blocks.clone());
            dirty.push((object.key.clone(), blocks));
        }
        report.bytes_read += dirty_bytes;
        let keys_max = self.config.keys_max;
        let map = self
            .store
            .spawn_blocking(move || map_dirty(&dirty, cleaned_end, candidate_end, keys_max))
            .await
            .map_err(|_| shut_down())??;
        let dirty_end = map.end_offset.max(cleaned_end);
        let horizon_passed = cleaned.is_some_and(|c| c.delete_horizon_ms <= now_ms);
        if dirty_end == cleaned_end && !horizon_passed {
            return Ok(None);
        }

        // Rewrite, a step at a time, from the stream's first object through the dirty end.
        let map = Arc::new(map);
        let mut state = RewriteState::default();
        let mut step: Vec<(&ObjectImage, &StreamRange)> = Vec::new();
        let mut step_bytes = 0u64;
        let rewritten: Vec<(&ObjectImage, &StreamRange)> = objects
            .iter()
            .copied()
            .take_while(|(_, r)| r.start_offset < dirty_end)
            .collect();
        for (i, &(object, range)) in rewritten.iter().enumerate() {
            step.push((object, range));
            step_bytes += object.size;
            let last = i + 1 == rewritten.len();
            let next_fits = rewritten.get(i + 1).is_some_and(|(next, _)| {
                step_bytes + next.size <= self.config.step_bytes_max as u64
            });
            if last || !next_fits {
                state = self
                    .rewrite_step(
                        registry,
                        &step,
                        &mut held,
                        &map,
                        Rules {
                            stream_id,
                            dirty_end,
                            now_ms,
                            delete_retention_ms: policy.delete_retention_ms,
                        },
                        state,
                        &mut report,
                    )
                    .await?;
                step.clear();
                step_bytes = 0;
            }
        }
        registry
            .submit(MetadataCommand::RecordCleaning {
                streams: vec![StreamCleaned {
                    stream_id,
                    cleaned_end_offset: dirty_end,
                    delete_horizon_ms: state.delete_horizon_ms,
                }],
            })
            .await
            .map_err(|e| CompactionError::Metadata(e.to_string()))?;
        report.cleaned_end_offset = dirty_end;
        let stats = self.store.stats();
        Stats::add(&stats.compaction_bytes_read, report.bytes_read);
        Stats::add(&stats.compaction_bytes_written, report.bytes_written);
        Ok(Some(report))
    }

    /// Rewrites the consecutive objects `step` of one stream into one object and replaces
    /// them with it, unless nothing in them changes.
    #[allow(clippy::too_many_arguments)] // one cleaning's context, passed down once
    async fn rewrite_step<R: Registry>(
        &self,
        registry: &R,
        step: &[(&ObjectImage, &StreamRange)],
        held: &mut HashMap<ObjectId, Vec<Bytes>>,
        map: &Arc<DirtyMap>,
        rules: Rules,
        state: RewriteState,
        report: &mut CleaningReport,
    ) -> Result<RewriteState, CompactionError> {
        let mut fetched = Vec::with_capacity(step.len());
        for (object, _) in step {
            let blocks = match held.remove(&object.id) {
                Some(blocks) => blocks,
                None => {
                    let blocks = self.stream_data(object, rules.stream_id).await?;
                    report.bytes_read += blocks.iter().map(|b| b.len() as u64).sum::<u64>();
                    blocks
                }
            };
            fetched.push((object.key.clone(), blocks));
        }
        let (Some((_, first)), Some((_, last))) = (step.first(), step.last()) else {
            return Ok(state);
        };
        let span = (first.start_offset, last.end_offset);
        let map = map.clone();
        let block_bytes = self.config.block_bytes;
        let (rewritten, state) = self
            .store
            .spawn_blocking(move || {
                let mut state = state;
                let rewritten = rewrite(&fetched, span, &map, &rules, &mut state, block_bytes);
                rewritten.map(|r| (r, state))
            })
            .await
            .map_err(|_| shut_down())??;
        let Some((bytes, ranges, removed)) = rewritten else {
            return Ok(state);
        };
        report.bytes_written += bytes.len() as u64;
        replace_objects(
            &self.store,
            registry,
            step.iter().map(|(o, _)| o.id).collect(),
            vec![(bytes, ranges)],
            rules.now_ms.max(0) as u64,
        )
        .await?;
        report.records_removed += removed;
        report.objects_replaced += step.len();
        Ok(state)
    }
}

fn shut_down() -> CompactionError {
    CompactionError::Metadata("the object store shut down".to_string())
}

/// What the rewrite goes by.
#[derive(Debug, Clone, Copy)]
struct Rules {
    stream_id: u64,
    /// Records at or above are kept as they are.
    dirty_end: i64,
    now_ms: i64,
    delete_retention_ms: i64,
}

/// The dirty part's latest offset of each key, and its aborted transactions.
#[derive(Debug, Default)]
struct DirtyMap {
    hasher: KeyHasher,
    latest: HashMap<u128, i64>,
    /// Per producer, the offset ranges `[first, marker)` of its aborted transactions.
    aborted: HashMap<i64, Vec<(i64, i64)>>,
    /// The end of the cleanable part.
    end_offset: i64,
}

impl DirtyMap {
    fn is_aborted(&self, producer_id: i64, offset: i64) -> bool {
        self.aborted
            .get(&producer_id)
            .is_some_and(|ranges| ranges.iter().any(|&(a, b)| (a..b).contains(&offset)))
    }
}

/// A 128-bit hash of a key: two independently keyed SipHashes.
#[derive(Debug, Default)]
struct KeyHasher {
    high: RandomState,
    low: RandomState,
}

impl KeyHasher {
    fn hash(&self, key: &[u8]) -> u128 {
        (u128::from(self.high.hash_one(key)) << 64) | u128::from(self.low.hash_one(key))
    }
}

/// The batches in `objects` (key, the cleaned stream's blocks there), in offset order.
fn stream_batches(objects: &[(String, Vec<Bytes>)]) -> Result<Vec<Bytes>, CompactionError> {
    let mut out = Vec::new();
    for (key, blocks) in objects {
        for data in blocks {
            for batch in batches(data) {
                out.push(batch.map_err(|e| corrupt(key, e))?);
            }
        }
    }
    Ok(out)
}

fn corrupt(key: &str, error: impl std::fmt::Display) -> CompactionError {
    CompactionError::Store(crate::error::ObjectStoreError::corrupt(
        key,
        format!("a batch the cleaner cannot read: {error}"),
    ))
}

/// Maps the dirty part `[cleaned_end, candidate_end)` of the batches in `objects`.
fn map_dirty(
    objects: &[(String, Vec<Bytes>)],
    cleaned_end: i64,
    candidate_end: i64,
    keys_max: usize,
) -> Result<DirtyMap, CompactionError> {
    let key = objects.first().map_or("", |(k, _)| k.as_str());
    let all = stream_batches(objects)?;
    let mut dirty: Vec<(RecordBatchHeader<'_>, &Bytes)> = Vec::with_capacity(all.len());
    for batch in &all {
        let header = RecordBatchHeader::parse(batch).map_err(|e| corrupt(key, e))?;
        if header.last_offset() >= cleaned_end && header.base_offset() < candidate_end {
            dirty.push((header, batch));
        }
    }
    let mut map = DirtyMap {
        end_offset: candidate_end,
        ..DirtyMap::default()
    };
    // Transactions first: a record's fate depends on a marker after it.
    let mut open: HashMap<i64, i64> = HashMap::new();
    for (header, batch) in &dirty {
        if !header.is_transactional() {
            continue;
        }
        if header.is_control() {
            let Some(first) = open.remove(&header.producer_id()) else {
                continue;
            };
            if marker_is_abort(batch, key)? {
                map.aborted
                    .entry(header.producer_id())
                    .or_default()
                    .push((first, header.base_offset()));
            }
        } else {
            open.entry(header.producer_id())
                .or_insert(header.base_offset());
        }
    }
    // A transaction still open ends the cleanable part: its fate is not known yet.
    if let Some(&first_open) = open.values().min() {
        map.end_offset = map.end_offset.min(first_open);
    }
    for (header, batch) in &dirty {
        if header.base_offset() >= map.end_offset {
            break;
        }
        if header.is_control()
            || (header.is_transactional()
                && map.is_aborted(header.producer_id(), header.base_offset()))
        {
            continue;
        }
        let count = header.records_count().max(0) as usize;
        if map.latest.len() + count > keys_max {
            map.end_offset = header.base_offset();
            break;
        }
        let records =
            decode_records(batch, DECOMPRESSED_BATCH_BYTES_MAX).map_err(|e| corrupt(key, e))?;
        for record in &records {
            if let Some(k) = &record.key {
                let offset = header.base_offset() + i64::from(record.offset_delta);
                map.latest.insert(map.hasher.hash(k), offset);
            }
        }
    }
    map.end_offset = map.end_offset.max(cleaned_end);
    Ok(map)
}

/// Whether a transaction marker (a control batch) is an ABORT: its record's key is
/// `version i16, type i16` with type 0.
fn marker_is_abort(batch: &Bytes, key: &str) -> Result<bool, CompactionError> {
    let records =
        decode_records(batch, DECOMPRESSED_BATCH_BYTES_MAX).map_err(|e| corrupt(key, e))?;
    Ok(records
        .first()
        .and_then(|r| r.key.as_ref())
        .is_some_and(|k| k.len() >= 4 && k[2..4] == [0, 0]))
}

/// What a cleaning carries from one rewrite step to the next.
#[derive(Debug, Clone)]
struct RewriteState {
    /// When the first tombstone or marker kept below the dirty end may go.
    delete_horizon_ms: i64,
    /// Producers with a transaction open at this point of the stream, and whether any of its
    /// data was kept: a marker whose transaction kept none may go once old enough. Steps run
    /// in offset order from the stream's first object, so a transaction's data and marker meet
    /// here whatever steps they fall in.
    open_transactions: HashMap<i64, bool>,
}

impl Default for RewriteState {
    fn default() -> RewriteState {
        RewriteState {
            delete_horizon_ms: i64::MAX,
            open_transactions: HashMap::new(),
        }
    }
}

/// One object for `span` of the stream from `objects` with what the cleaner drops left out,
/// its ranges and how many records it dropped; None when it would drop nothing.
type Rewritten = Option<(Bytes, Vec<StreamRange>, u64)>;

fn rewrite(
    objects: &[(String, Vec<Bytes>)],
    span: (i64, i64),
    map: &DirtyMap,
    rules: &Rules,
    state: &mut RewriteState,
    block_bytes: usize,
) -> Result<Rewritten, CompactionError> {
    let key = objects.first().map_or("", |(k, _)| k.as_str());
    let all = stream_batches(objects)?;
    let mut kept: Vec<(i64, Bytes)> = Vec::with_capacity(all.len());
    let mut removed = 0u64;
    let mut changed = false;
    for batch in &all {
        let header = RecordBatchHeader::parse(batch).map_err(|e| corrupt(key, e))?;
        let last_offset = header.last_offset();
        let expired = header
            .max_timestamp()
            .saturating_add(rules.delete_retention_ms)
            <= rules.now_ms;
        let horizon = header
            .max_timestamp()
            .saturating_add(rules.delete_retention_ms);
        if header.base_offset() >= rules.dirty_end {
            kept.push((last_offset, batch.clone()));
            continue;
        }
        if header.is_control() {
            let had_data = state
                .open_transactions
                .remove(&header.producer_id())
                .unwrap_or(false);
            if !had_data && expired {
                removed += header.records_count().max(0) as u64;
                changed = true;
            } else {
                if !had_data {
                    state.delete_horizon_ms = state.delete_horizon_ms.min(horizon);
                }
                kept.push((last_offset, batch.clone()));
            }
            continue;
        }
        if header.is_transactional() && map.is_aborted(header.producer_id(), header.base_offset()) {
            {
                removed += header.records_count().max(0) as u64;
                changed = true;
                state
                    .open_transactions
                    .entry(header.producer_id())
                    .or_insert(false);
                continue;
            }
        }
        let records =
            decode_records(batch, DECOMPRESSED_BATCH_BYTES_MAX).map_err(|e| corrupt(key, e))?;
        let total = records.len();
        let retained: Vec<Record> = records
            .into_iter()
            .filter(|record| {
                let Some(k) = &record.key else {
                    return true; // keyless: refused on compacted topics, kept if older
                };
                let offset = header.base_offset() + i64::from(record.offset_delta);
                if map
                    .latest
                    .get(&map.hasher.hash(k))
                    .is_some_and(|&latest| latest > offset)
                {
                    return false;
                }
                if record.value.is_none() {
                    if expired {
                        return false;
                    }
                    state.delete_horizon_ms = state.delete_horizon_ms.min(horizon);
                }
                true
            })
            .collect();
        if header.is_transactional() {
            let kept_some = state
                .open_transactions
                .entry(header.producer_id())
                .or_insert(false);
            *kept_some |= !retained.is_empty();
        }
        removed += (total - retained.len()) as u64;
        if retained.len() == total {
            kept.push((last_offset, batch.clone()));
        } else if !retained.is_empty() {
            changed = true;
            let rebuilt = retain_records(batch, &retained).map_err(|e| corrupt(key, e))?;
            kept.push((last_offset, rebuilt));
        } else {
            changed = true;
        }
    }
    if !changed {
        return Ok(None);
    }
    if kept.is_empty() {
        // Every record of the span went, but the objects must still cover its offsets: its
        // last batch stays, emptied (as Kafka's cleaner leaves an empty batch); readers move
        // past it. A transaction marker stays whole: it holds no keyed record.
        let Some(batch) = all.last() else {
            return Ok(None);
        };
        let header = RecordBatchHeader::parse(batch).map_err(|e| corrupt(key, e))?;
        let placeholder = if header.is_control() {
            batch.clone()
        } else {
            retain_records(batch, &[]).map_err(|e| corrupt(key, e))?
        };
        kept.push((header.last_offset(), placeholder));
    }
    let mut builder = ObjectBuilder::new(ObjectKind::Stream).with_block_bytes(block_bytes);
    let (span_start, span_end) = span;
    let mut claimed_from = span_start;
    let count = kept.len();
    for (i, (last_offset, batch)) in kept.into_iter().enumerate() {
        // Each batch claims the gap before it; the last claims the span's end too.
        let claimed_to = if i + 1 == count {
            span_end - 1
        } else {
            last_offset
        };
        builder
            .add(rules.stream_id, claimed_from, claimed_to, batch)
            .map_err(|e| CompactionError::Metadata(format!("cleaned object: {e}")))?;
        claimed_from = claimed_to + 1;
    }
    let (bytes, ranges) = builder.finish();
    Ok(Some((bytes, ranges, removed)))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use futures::executor::block_on;
    use sluice_metadata::MetadataStore;
    use sluice_net::record_batch::{Compression, ControlRecordType, RecordBatchBuilder};

    use super::*;
    use crate::registry::StoreRegistry;
    use crate::registry::allocate_object_ids;
    use crate::uploader::object_key;

    const T0: i64 = 1_700_000_000_000;
    const DELETE_RETENTION_MS: i64 = 60_000;

    struct Fixture {
        _dir: tempfile::TempDir,
        store: ObjectStore,
        registry: StoreRegistry,
        stream_id: u64,
        next_offset: i64,
    }

    impl Fixture {
        fn new() -> Fixture {
            let dir = tempfile::tempdir().expect("temporary directory");
            let mut metadata = MetadataStore::open(&dir.path().join("metadata"), 1).expect("open");
            let configs = BTreeMap::from([
                ("cleanup.policy".to_string(), "compact".to_string()),
                (
                    "delete.retention.ms".to_string(),
                    DELETE_RETENTION_MS.to_string(),
                ),
            ]);
            metadata
                .apply(MetadataCommand::CreateTopic {
                    name: "c".into(),
                    partitions: 1,
                    configs,
                    shards: 1,
                })
                .expect("topic");
            let stream_id = metadata.image().partition("c", 0).expect("p").stream_id;
            let store = ObjectStore::local(dir.path().join("objects")).expect("store");
            Fixture {
                _dir: dir,
                store,
                registry: StoreRegistry::new(metadata),
                stream_id,
                next_offset: 0,
            }
        }

        /// A batch of `records` (key, value: None is a tombstone) at the next offsets.
        fn batch(&mut self, records: &[(&str, Option<&str>)]) -> Bytes {
            let mut builder =
                RecordBatchBuilder::new(Compression::Lz4).base_offset(self.next_offset);
            for (key, value) in records {
                builder.append(T0, Some(key.as_bytes()), value.map(str::as_bytes), &[]);
            }
            self.next_offset += records.len() as i64;
            builder.build().expect("batch")
        }

        fn transaction(
            &mut self,
            producer_id: i64,
            key: &str,
            kind: ControlRecordType,
        ) -> Vec<Bytes> {
            let mut data = RecordBatchBuilder::new(Compression::None)
                .base_offset(self.next_offset)
                .producer(producer_id, 0, 0)
                .transactional(true);
            data.append(T0, Some(key.as_bytes()), Some(b"in-transaction"), &[]);
            let data = data.build().expect("batch");
            let mut marker =
                RecordBatchBuilder::end_txn_marker(producer_id, 0, kind, 0, T0).to_vec();
            marker[..8].copy_from_slice(&(self.next_offset + 1).to_be_bytes());
            self.next_offset += 2;
            vec![data, Bytes::from(marker)]
        }

        /// Commits `batches` as one Stream Object continuing the stream.
        fn commit(&self, batches: Vec<Bytes>) {
            let mut builder = ObjectBuilder::new(ObjectKind::Stream);
            for batch in batches {
                let header = RecordBatchHeader::parse(&batch).expect("header");
                builder
                    .add(
                        self.stream_id,
                        header.base_offset(),
                        header.last_offset(),
                        batch.clone(),
                    )
                    .expect("added");
            }
            let (bytes, ranges) = builder.finish();
            block_on(async {
                let id = allocate_object_ids(&self.registry, 1).await.expect("id");
                let key = object_key(ObjectKind::Stream, id);
                let object = ObjectImage {
                    id,
                    key: key.clone(),
                    size: bytes.len() as u64,
                    kind: ObjectKind::Stream,
                    ranges,
                };
                self.store.put(&key, bytes).await.expect("put");
                self.registry
                    .submit(MetadataCommand::CommitObjects {
                        objects: vec![object],
                    })
                    .await
                    .expect("committed");
            });
        }

        fn clean(&self, now_ms: i64) -> Option<CleaningReport> {
            self.clean_with(now_ms, CleanerConfig::default())
        }

        fn clean_with(&self, now_ms: i64, config: CleanerConfig) -> Option<CleaningReport> {
            let cleaner = LogCleaner::new(self.store.clone(), config);
            block_on(cleaner.clean(
                &self.registry.image(),
                &self.registry,
                self.stream_id,
                now_ms,
            ))
            .expect("cleaned")
        }

        /// Every record in the stream's objects: (offset, key, value).
        fn records(&self) -> Vec<(i64, String, Option<String>)> {
            let image = self.registry.image();
            let mut objects = Vec::new();
            for (object, _) in image.stream_objects(self.stream_id) {
                let blocks = block_on(read_stream_blocks(
                    &self.store,
                    &object.key,
                    object.size,
                    self.stream_id,
                ))
                .expect("read");
                objects.push((
                    object.key.clone(),
                    blocks.into_iter().map(|(_, data)| data).collect(),
                ));
            }
            let text = |b: &Bytes| String::from_utf8_lossy(b).into_owned();
            let mut out = Vec::new();
            for batch in stream_batches(&objects).expect("batches") {
                let header = RecordBatchHeader::validate(&batch).expect("valid");
                if header.is_control() {
                    out.push((header.base_offset(), "<marker>".to_string(), None));
                    continue;
                }
                for r in decode_records(&batch, 1 << 20).expect("records") {
                    let offset = header.base_offset() + i64::from(r.offset_delta);
                    out.push((
                        offset,
                        text(r.key.as_ref().expect("key")),
                        r.value.as_ref().map(text),
                    ));
                }
            }
            out
        }
    }

    fn owned(offset: i64, key: &str, value: Option<&str>) -> (i64, String, Option<String>) {
        (offset, key.to_string(), value.map(str::to_string))
    }

    #[test]
    fn the_latest_record_per_key_stays_at_its_offset_and_tombstones_go_after_the_retention() {
        let mut f = Fixture::new();
        let first = vec![
            f.batch(&[("a", Some("a0")), ("b", Some("b1"))]),
            f.batch(&[("c", Some("c2")), ("a", Some("a3"))]),
        ];
        f.commit(first);
        let second = vec![
            f.batch(&[("b", None), ("d", Some("d5"))]),
            f.batch(&[("d", Some("d6"))]),
        ];
        f.commit(second);
        let report = f.clean(T0 + 1).expect("due: never cleaned");
        assert_eq!(report.cleaned_end_offset, 7);
        assert_eq!(report.records_removed, 3, "a0, b1, d5");
        let kept = vec![
            owned(2, "c", Some("c2")),
            owned(3, "a", Some("a3")),
            owned(4, "b", None),
            owned(6, "d", Some("d6")),
        ];
        assert_eq!(f.records(), kept);
        let image = f.registry.image();
        assert_eq!(
            image.cleaned(f.stream_id).map(|c| c.delete_horizon_ms),
            Some(T0 + DELETE_RETENTION_MS),
            "the tombstone's"
        );
        assert_eq!(image.stream_start_offset_in_objects(f.stream_id), Some(0));
        assert_eq!(image.stream_end_offset_in_objects(f.stream_id), Some(7));

        // Nothing new and the tombstone still young: not due, nothing to do.
        assert!(streams_to_clean(&image, T0 + 2).is_empty());
        assert!(f.clean(T0 + 2).is_none());
        // Past the delete horizon the tombstone goes; offsets stay.
        let later = T0 + DELETE_RETENTION_MS;
        assert_eq!(
            streams_to_clean(&f.registry.image(), later),
            vec![f.stream_id]
        );
        f.clean(later).expect("the horizon passed");
        assert_eq!(
            f.records(),
            vec![kept[0].clone(), kept[1].clone(), kept[3].clone()]
        );
        assert_eq!(
            f.registry
                .image()
                .cleaned(f.stream_id)
                .map(|c| c.delete_horizon_ms),
            Some(i64::MAX)
        );
    }

    #[test]
    fn aborted_records_go_and_never_hide_a_committed_value() {
        let mut f = Fixture::new();
        let mut batches = vec![f.batch(&[("k", Some("committed"))])];
        batches.extend(f.transaction(9, "k", ControlRecordType::Abort));
        batches.extend(f.transaction(10, "j", ControlRecordType::Commit));
        f.commit(batches);
        f.clean(T0 + 1).expect("due");
        assert_eq!(
            f.records(),
            vec![
                owned(0, "k", Some("committed")),
                owned(2, "<marker>", None),
                owned(3, "j", Some("in-transaction")),
                owned(4, "<marker>", None),
            ]
        );
        // Once old enough, the aborted transaction's marker (its data gone) goes too; the
        // committed one's stays with its data.
        f.clean(T0 + DELETE_RETENTION_MS).expect("horizon");
        assert_eq!(
            f.records(),
            vec![
                owned(0, "k", Some("committed")),
                owned(3, "j", Some("in-transaction")),
                owned(4, "<marker>", None),
            ]
        );
    }

    #[test]
    fn an_open_transaction_ends_the_cleanable_part() {
        let mut f = Fixture::new();
        let mut batches = vec![f.batch(&[("k", Some("old"))])];
        let open = f.transaction(9, "k", ControlRecordType::Commit);
        batches.push(open[0].clone()); // data without its marker yet
        f.next_offset -= 1;
        batches.push(f.batch(&[("k", Some("new"))]));
        f.commit(batches);
        let report = f.clean(T0 + 1).expect("due");
        assert_eq!(
            report.cleaned_end_offset, 1,
            "the open transaction is at offset 1"
        );
        assert_eq!(
            report.records_removed, 0,
            "offset 0's key is not known beyond 1"
        );
        assert_eq!(f.records().len(), 3);
        assert!(f.clean(T0 + 2).is_none(), "stuck behind the transaction");
    }

    /// Seeded: batches of random keys (some tombstones) in many small objects, cleaned in
    /// steps of one object and key maps of a few keys, with new objects between cleanings;
    /// after each cleaning every key's latest record is at its offset, and nothing below the
    /// mark is superseded.
    #[test]
    fn random_writes_cleaned_in_small_steps_keep_exactly_the_latest_per_key() {
        let seed: u64 = std::env::var("SLUICE_CLEANER_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(20261205);
        eprintln!("cleaner test seed {seed} (SLUICE_CLEANER_SEED replays it)");
        let mut state = seed | 1;
        let mut next = move |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        let mut f = Fixture::new();
        let mut latest: BTreeMap<String, (i64, Option<String>)> = BTreeMap::new();
        let config = CleanerConfig {
            step_bytes_max: 1,
            keys_max: 7,
            block_bytes: 256,
        };
        for round in 0..6 {
            for _ in 0..4 {
                let mut batches = Vec::new();
                for _ in 0..3 {
                    let records: Vec<(String, Option<String>)> = (0..1 + next(4))
                        .map(|_| {
                            let key = format!("k{}", next(12));
                            let value = (next(6) != 0).then(|| format!("v{}", next(1_000)));
                            (key, value)
                        })
                        .collect();
                    let first = f.next_offset;
                    let borrowed: Vec<(&str, Option<&str>)> = records
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.as_deref()))
                        .collect();
                    batches.push(f.batch(&borrowed));
                    for (i, (key, value)) in records.into_iter().enumerate() {
                        latest.insert(key, (first + i as i64, value));
                    }
                }
                f.commit(batches);
            }
            // Clean until the mark stops moving, as the maintenance pass does.
            let mut mark = f.registry.image().cleaned_end_offset(f.stream_id);
            while let Some(report) = f.clean_with(T0 + 1, config) {
                if report.cleaned_end_offset <= mark {
                    break;
                }
                mark = report.cleaned_end_offset;
            }
            assert_eq!(
                mark, f.next_offset,
                "seed {seed} round {round}: all cleaned"
            );
            let mut kept: BTreeMap<String, (i64, Option<String>)> = BTreeMap::new();
            for (offset, key, value) in f.records() {
                let previous = kept.insert(key.clone(), (offset, value));
                assert!(
                    previous.is_none(),
                    "seed {seed} round {round}: {key} kept twice below the mark"
                );
            }
            assert_eq!(kept, latest, "seed {seed} round {round}");
        }
    }

    #[test]
    fn a_read_inside_a_gap_the_cleaner_left_starts_at_the_next_batch() {
        let mut f = Fixture::new();
        let batches = vec![
            f.batch(&[("a", Some("a0"))]),
            f.batch(&[("b", Some("b1"))]),
            f.batch(&[("b", Some("b2"))]),
            f.batch(&[("a", Some("a3"))]),
        ];
        f.commit(batches);
        f.clean(T0 + 1).expect("due");
        let cold =
            crate::cache::ColdReader::new(crate::cache::BlockCache::new(f.store.clone(), 1 << 20));
        let image = f.registry.image();
        for (offset, first_batch) in [(0, 2), (1, 2), (2, 2), (3, 3)] {
            let read = block_on(cold.read(&image, f.stream_id, offset, 1 << 20))
                .expect("read")
                .expect("in objects");
            let first = RecordBatchHeader::parse(&read.chunks[0][..61.min(read.chunks[0].len())]);
            let base = match first {
                Ok(h) => h.base_offset(),
                Err(_) => i64::from_be_bytes(read.chunks[0][..8].try_into().unwrap()),
            };
            assert_eq!(base, first_batch, "read from {offset}");
        }
        assert!(
            block_on(cold.read(&image, f.stream_id, 4, 1 << 20))
                .expect("read")
                .is_none()
        );
    }
}
