//! Compaction, retention and garbage collection of objects.
//!
//! - **Split**: Stream Set Objects (oldest first, up to the step's memory
//!   cap) are rewritten into one Stream Object per contiguous run of each
//!   stream; data of deleted streams, and what retention already cut from
//!   the index, is dropped.
//! - **Merge**: adjacent small Stream Objects of a stream are merged into
//!   one, up to a target size and never beyond its topic's `segment.bytes`
//!   (Stream Objects are Kafka's rolled segments).
//!
//! Each step reads at most `step_bytes_max` of objects (plus one object when
//! a single one is larger) and holds about twice that at its peak (read +
//! rewritten). New objects are put first, then one `CompactObjects` command
//! replaces the old ones atomically; the old ones are marked for deletion
//! and `collect_garbage` deletes them after the grace period. A failed step
//! leaves the registry unchanged; objects it put are deleted (best effort,
//! otherwise they are orphans nothing references), unless the commit's fate
//! is unknown (`RegistryError::Unconfirmed`): then they may be live, and stay.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bytes::Bytes;
use sluice_metadata::{
    MetadataCommand, MetadataImage, ObjectId, ObjectImage, ObjectKind, StreamRange,
};

use crate::error::ObjectStoreError;
use crate::format::{DataBlock, ObjectBuilder, ObjectIndex, read_stream};
use crate::limits::{
    COMPACTION_BEHIND_STEPS, COMPACTION_STEP_BYTES_MAX_DEFAULT, DATA_BLOCK_BYTES_TARGET,
    DELETION_GRACE_DEFAULT, SMALL_STREAM_OBJECT_BYTES_DEFAULT, STREAM_OBJECT_TARGET_BYTES_DEFAULT,
};
use crate::registry::{Registry, RegistryError, allocate_object_ids};
use crate::stats::Stats;
use crate::store::{ObjectMeta, ObjectStore};
use crate::uploader::object_key;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompactionConfig {
    /// Bytes of objects one step reads at most (its memory cap).
    pub step_bytes_max: usize,
    /// Stream Objects smaller than this are merged.
    pub small_stream_object_bytes: usize,
    /// Merged Stream Objects grow up to this size.
    pub stream_object_target_bytes: usize,
    /// Data block size of the objects written.
    pub block_bytes: usize,
    /// Time between marking an object for deletion and deleting it.
    pub deletion_grace: Duration,
}

impl Default for CompactionConfig {
    fn default() -> CompactionConfig {
        CompactionConfig {
            step_bytes_max: COMPACTION_STEP_BYTES_MAX_DEFAULT,
            small_stream_object_bytes: SMALL_STREAM_OBJECT_BYTES_DEFAULT,
            stream_object_target_bytes: STREAM_OBJECT_TARGET_BYTES_DEFAULT,
            block_bytes: DATA_BLOCK_BYTES_TARGET,
            deletion_grace: DELETION_GRACE_DEFAULT,
        }
    }
}

/// What one step will do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompactionPlan {
    /// Rewrite these SSOs into Stream Objects.
    Split(Vec<ObjectId>),
    /// Merge these adjacent Stream Objects of one stream.
    Merge(Vec<ObjectId>),
}

/// What one step did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactionReport {
    pub plan: CompactionPlan,
    pub added: Vec<ObjectImage>,
    pub bytes_read: u64,
    pub bytes_written: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompactionError {
    #[error(transparent)]
    Store(#[from] ObjectStoreError),
    #[error("metadata: {0}")]
    Metadata(String),
}

/// Chooses the next step: SSOs first (oldest first), then merges.
pub fn plan_step(image: &MetadataImage, config: &CompactionConfig) -> Option<CompactionPlan> {
    let mut split = Vec::new();
    let mut bytes = 0u64;
    for object in image.objects().filter(|o| o.kind == ObjectKind::StreamSet) {
        if !split.is_empty() && bytes + data_bytes(object) > config.step_bytes_max as u64 {
            break;
        }
        bytes += data_bytes(object);
        split.push(object.id);
    }
    if !split.is_empty() {
        return Some(CompactionPlan::Split(split));
    }
    let streams: BTreeSet<u64> = image
        .objects()
        .filter(|o| o.kind == ObjectKind::Stream)
        .flat_map(|o| o.ranges.iter().map(|r| r.stream_id))
        .collect();
    let cap = config.step_bytes_max.min(config.stream_object_target_bytes) as u64;
    for stream_id in streams {
        let cap = cap.min(segment_bytes(image, stream_id));
        let mut group: Vec<ObjectId> = Vec::new();
        let mut bytes = 0u64;
        for (object, _) in image.stream_objects(stream_id) {
            let size = data_bytes(object);
            let small =
                object.kind == ObjectKind::Stream && size < config.small_stream_object_bytes as u64;
            if small && bytes + size <= cap {
                group.push(object.id);
                bytes += size;
                continue;
            }
            if group.len() >= 2 {
                return Some(CompactionPlan::Merge(group));
            }
            group.clear();
            bytes = 0;
            if small {
                group.push(object.id);
                bytes = size;
            }
        }
        if group.len() >= 2 {
            return Some(CompactionPlan::Merge(group));
        }
    }
    None
}

/// The bytes of data an object holds: what a step reads of it and writes again. Not its size:
/// an object made of a WAL segment is the whole segment file, its records maybe few.
fn data_bytes(object: &ObjectImage) -> u64 {
    object.ranges.iter().map(|r| r.len).sum()
}

/// The `segment.bytes` of the topic `stream_id` belongs to; unbounded for a deleted stream
/// (its objects are dropped, not merged).
fn segment_bytes(image: &MetadataImage, stream_id: u64) -> u64 {
    image.stream(stream_id).map_or(u64::MAX, |(topic, _)| {
        let config = sluice_metadata::effective_topic_config(&topic.configs, &image.broker_configs);
        u64::try_from(config.segment_bytes).unwrap_or(u64::MAX)
    })
}

/// Whether compaction has fallen behind: the Stream Set Objects waiting to be split hold more
/// than `COMPACTION_BEHIND_STEPS` steps of work. The caller runs compaction on
/// `ObjectStore::background` with this as its flag.
pub fn falling_behind(image: &MetadataImage, config: &CompactionConfig) -> bool {
    let waiting: u64 = image
        .objects()
        .filter(|o| o.kind == ObjectKind::StreamSet)
        .map(data_bytes)
        .sum();
    waiting > COMPACTION_BEHIND_STEPS * config.step_bytes_max as u64
}

/// Runs compaction steps and the deletion of objects.
#[derive(Debug, Clone)]
pub struct Compactor {
    store: ObjectStore,
    config: CompactionConfig,
}

impl Compactor {
    pub fn new(store: ObjectStore, config: CompactionConfig) -> Compactor {
        Compactor { store, config }
    }

    pub fn config(&self) -> &CompactionConfig {
        &self.config
    }

    /// Plans and runs one step against `image`; None when there is nothing
    /// to compact.
    pub async fn run_step<R: Registry>(
        &self,
        image: &MetadataImage,
        registry: &R,
        now_ms: u64,
    ) -> Result<Option<CompactionReport>, CompactionError> {
        let Some(plan) = plan_step(image, &self.config) else {
            return Ok(None);
        };
        let removed = match &plan {
            CompactionPlan::Split(ids) | CompactionPlan::Merge(ids) => ids.clone(),
        };
        // Read the blocks of each object's live, indexed streams (through its index: a
        // linked object's file is a whole WAL segment).
        let mut fetched: Vec<(u64, Vec<(DataBlock, Bytes)>)> = Vec::new();
        let mut bytes_read = 0u64;
        for id in &removed {
            let object = image
                .object(*id)
                .ok_or_else(|| CompactionError::Metadata(format!("object {id} is gone")))?;
            let live = object.ranges.iter().filter(|r| {
                image
                    .objects_for(r.stream_id, r.start_offset)
                    .is_some_and(|(o, _)| o.id == *id)
            });
            let mut index = None;
            for range in live {
                let index = match &index {
                    Some(index) => index,
                    None => index
                        .insert(ObjectIndex::read(&self.store, &object.key, object.size).await?),
                };
                let blocks = read_stream(&self.store, &object.key, index, range.stream_id).await?;
                bytes_read += blocks.iter().map(|(b, _)| u64::from(b.len)).sum::<u64>();
                fetched.push((range.stream_id, blocks));
            }
        }
        // Parsing, checksumming and rewriting are CPU work of up to twice
        // the step's cap: on the store's runtime, not the caller's executor.
        let block_bytes = self.config.block_bytes;
        let builders = self
            .store
            .spawn_blocking(move || rewrite(fetched, block_bytes))
            .await
            .map_err(|_| CompactionError::Metadata("the object store shut down".to_string()))??;
        let bytes_written = builders.iter().map(|(bytes, _)| bytes.len() as u64).sum();
        let added =
            replace_objects(&self.store, registry, removed.clone(), builders, now_ms).await?;
        let stats = self.store.stats();
        Stats::add(&stats.compaction_bytes_read, bytes_read);
        Stats::add(&stats.compaction_bytes_written, bytes_written);
        Stats::add(&stats.compaction_steps, 1);
        Ok(Some(CompactionReport {
            plan,
            added,
            bytes_read,
            bytes_written,
        }))
    }

    /// Marks every dead object (`dead_objects`) for deletion; returns them.
    pub async fn apply_retention<R: Registry>(
        &self,
        image: &MetadataImage,
        registry: &R,
        now_ms: u64,
    ) -> Result<Vec<ObjectId>, CompactionError> {
        let ids = dead_objects(image);
        if !ids.is_empty() {
            registry
                .submit(MetadataCommand::MarkObjectsForDeletion {
                    ids: ids.clone(),
                    now_ms,
                })
                .await
                .map_err(|e| CompactionError::Metadata(e.to_string()))?;
        }
        Ok(ids)
    }

    /// Deletes from the store the objects marked for deletion at least the
    /// grace period ago, then forgets them; returns their ids.
    pub async fn collect_garbage<R: Registry>(
        &self,
        image: &MetadataImage,
        registry: &R,
        now_ms: u64,
    ) -> Result<Vec<ObjectId>, CompactionError> {
        let grace_ms = u64::try_from(self.config.deletion_grace.as_millis()).unwrap_or(u64::MAX);
        let due: Vec<(ObjectId, String)> = image
            .tombstones()
            .filter(|t| t.marked_at_ms.saturating_add(grace_ms) <= now_ms)
            .map(|t| (t.id, t.key.clone()))
            .collect();
        if due.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = due.iter().map(|(_, k)| k.clone()).collect();
        self.store.delete(&keys).await?;
        let ids: Vec<ObjectId> = due.into_iter().map(|(id, _)| id).collect();
        registry
            .submit(MetadataCommand::DeleteObjects { ids: ids.clone() })
            .await
            .map_err(|e| CompactionError::Metadata(e.to_string()))?;
        Ok(ids)
    }

    /// Lists `sso/` and `so/` and deletes the `orphans` among them.
    pub async fn delete_orphans(
        &self,
        image: &MetadataImage,
        below_id: ObjectId,
    ) -> Result<Vec<String>, CompactionError> {
        let mut listed = self.store.list("sso/").await?;
        listed.extend(self.store.list("so/").await?);
        let keys = orphans(image, &listed, below_id);
        self.store.delete(&keys).await?;
        Ok(keys)
    }
}

/// Puts new Stream Objects (their bytes and ranges) and commits them in place of `removed`
/// (`CompactObjects`, all or none), for compaction and the log cleaner alike. Objects put
/// before a failure are deleted again, unless the commit's fate is unknown; returns the
/// committed objects.
pub(crate) async fn replace_objects<R: Registry>(
    store: &ObjectStore,
    registry: &R,
    removed: Vec<ObjectId>,
    built: Vec<(Bytes, Vec<StreamRange>)>,
    now_ms: u64,
) -> Result<Vec<ObjectImage>, CompactionError> {
    let mut added = Vec::with_capacity(built.len());
    if !built.is_empty() {
        let first = allocate_object_ids(registry, built.len() as u32)
            .await
            .map_err(CompactionError::Metadata)?;
        for (id, (bytes, ranges)) in (first..).zip(built) {
            let key = object_key(ObjectKind::Stream, id);
            let object = ObjectImage {
                id,
                key: key.clone(),
                size: bytes.len() as u64,
                kind: ObjectKind::Stream,
                ranges,
            };
            if let Err(e) = store.put(&key, bytes).await {
                forget(store, &added).await;
                return Err(e.into());
            }
            added.push(object);
        }
    }
    let command = MetadataCommand::CompactObjects {
        removed,
        added: added.clone(),
        now_ms,
    };
    match registry.submit(command).await {
        Ok(_) => Ok(added),
        Err(RegistryError::Refused(e)) => {
            forget(store, &added).await;
            Err(CompactionError::Metadata(e))
        }
        // Perhaps committed, its answer lost: deleting them could lose the only copy of
        // records. If the commit did not happen they are orphans, deleted when a broker
        // starts alone (`orphans`).
        Err(RegistryError::Unconfirmed(e)) => Err(CompactionError::Metadata(e)),
    }
}

/// Deletes objects that were put but will not be committed.
async fn forget(store: &ObjectStore, objects: &[ObjectImage]) {
    let keys: Vec<String> = objects.iter().map(|o| o.key.clone()).collect();
    let _ = store.delete(&keys).await;
}

/// One Stream Object per contiguous run of each stream of the fetched blocks (stream id, its
/// checked blocks of one object); returns each new object's bytes and range.
fn rewrite(
    fetched: Vec<(u64, Vec<(DataBlock, Bytes)>)>,
    block_bytes: usize,
) -> Result<Vec<(Bytes, Vec<StreamRange>)>, CompactionError> {
    let mut runs: BTreeMap<u64, Vec<(DataBlock, Bytes)>> = BTreeMap::new();
    for (stream_id, blocks) in fetched {
        runs.entry(stream_id).or_default().extend(blocks);
    }
    let new_builder = || ObjectBuilder::new(ObjectKind::Stream).with_block_bytes(block_bytes);
    let mut builders: Vec<ObjectBuilder> = Vec::new();
    for (stream_id, mut blocks) in runs {
        blocks.sort_by_key(|(b, _)| b.start_offset);
        let mut builder = new_builder();
        for (block, data) in blocks {
            let last = block.end_offset - 1;
            if builder
                .add(stream_id, block.start_offset, last, data.clone())
                .is_err()
            {
                // A gap: the run ends; a new object starts here.
                builders.push(std::mem::replace(&mut builder, new_builder()));
                builder
                    .add(stream_id, block.start_offset, last, data)
                    .map_err(|e| CompactionError::Metadata(e.to_string()))?;
            }
        }
        if !builder.is_empty() {
            builders.push(builder);
        }
    }
    Ok(builders.into_iter().map(ObjectBuilder::finish).collect())
}

/// Every live object nothing can read any more (all its ranges below their
/// stream's log start offset, or of deleted streams).
pub fn dead_objects(image: &MetadataImage) -> Vec<ObjectId> {
    image
        .objects()
        .filter(|o| image.is_object_dead(o))
        .map(|o| o.id)
        .collect()
}

/// The retention helper: the objects that can be deleted entirely once the
/// log start offset of `stream_id` is `log_start_offset` (every range of
/// them ends at or below its stream's log start offset, this stream's taken
/// as `log_start_offset`, or belongs to a deleted stream).
pub fn deletable_objects(
    image: &MetadataImage,
    stream_id: u64,
    log_start_offset: i64,
) -> Vec<ObjectId> {
    image
        .stream_objects(stream_id)
        .take_while(|(_, r)| r.end_offset <= log_start_offset)
        .filter(|(object, _)| {
            object.ranges.iter().all(|r| {
                if r.stream_id == stream_id {
                    return r.end_offset <= log_start_offset;
                }
                match image.stream(r.stream_id) {
                    Some((_, p)) => r.end_offset <= p.log_start_offset,
                    None => true,
                }
            })
        })
        .map(|(object, _)| object.id)
        .collect()
}

/// The kind and id an object key names (`object_key`'s inverse).
pub fn parse_object_key(key: &str) -> Option<(ObjectKind, ObjectId)> {
    let (kind, hex) = if let Some(hex) = key.strip_prefix("sso/") {
        (ObjectKind::StreamSet, hex)
    } else {
        (ObjectKind::Stream, key.strip_prefix("so/")?)
    };
    if hex.len() != 16 {
        return None;
    }
    let id = u64::from_str_radix(hex, 16).ok()?;
    (object_key(kind, id) == key).then_some((kind, id))
}

/// Keys of objects that nothing references: named like an object, with an
/// id below `below_id`, neither live nor marked for deletion in `image`.
/// What a crash between put and commit, or a failed step whose cleanup also
/// failed, leaves behind. `below_id` must not exceed the `next_object_id`
/// of an image taken before every upload and compaction step still running
/// started (their ids are at or above it).
pub fn orphans(image: &MetadataImage, listed: &[ObjectMeta], below_id: ObjectId) -> Vec<String> {
    listed
        .iter()
        .filter(|meta| {
            parse_object_key(&meta.key).is_some_and(|(_, id)| {
                id < below_id
                    && id < image.next_object_id()
                    && image.object(id).is_none()
                    && image.tombstone(id).is_none()
            })
        })
        .map(|meta| meta.key.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use sluice_metadata::{CommandOutcome, MetadataStore, StreamRange};

    use super::*;

    /// The image of topic `t` (with `configs`) whose one partition has `count` adjacent Stream
    /// Objects of `size` bytes.
    fn stream_objects(configs: &[(&str, &str)], count: u64, size: u64) -> Arc<MetadataImage> {
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut metadata = MetadataStore::open(dir.path(), 1).expect("open");
        let configs: BTreeMap<String, String> = configs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        metadata
            .apply(MetadataCommand::CreateTopic {
                name: "t".into(),
                partitions: 1,
                configs,
                shards: 1,
            })
            .expect("topic");
        let stream_id = metadata.image().partition("t", 0).expect("p").stream_id;
        let allocated = metadata
            .apply(MetadataCommand::AllocateObjectIds {
                count: u32::try_from(count).expect("small"),
            })
            .expect("ids")
            .1;
        let CommandOutcome::ObjectIdsAllocated {
            first_object_id, ..
        } = allocated
        else {
            panic!("{allocated:?}");
        };
        let objects = (0..count)
            .map(|i| {
                let id = first_object_id + i;
                let start_offset = i64::try_from(i * 10).expect("small");
                ObjectImage {
                    id,
                    key: object_key(ObjectKind::Stream, id),
                    size,
                    kind: ObjectKind::Stream,
                    ranges: vec![StreamRange {
                        stream_id,
                        start_offset,
                        end_offset: start_offset + 10,
                        position: 0,
                        len: size,
                    }],
                }
            })
            .collect();
        metadata
            .apply(MetadataCommand::CommitObjects { objects })
            .expect("commit")
            .0
    }

    /// Answers the compaction's commit with an error: lost after it was applied, or a
    /// refusal (not applied); every other command is applied and answered.
    struct CommitAnswer {
        registry: crate::StoreRegistry,
        applied_but_lost: bool,
    }

    impl Registry for CommitAnswer {
        async fn submit(
            &self,
            command: MetadataCommand,
        ) -> Result<(Arc<MetadataImage>, CommandOutcome), RegistryError> {
            if !matches!(command, MetadataCommand::CompactObjects { .. }) {
                return self.registry.apply(command);
            }
            if !self.applied_but_lost {
                return Err(RegistryError::Refused("refused".to_string()));
            }
            self.registry.apply(command)?;
            Err(RegistryError::Unconfirmed(
                "the answer was lost".to_string(),
            ))
        }
    }

    /// The objects a step put are deleted when its commit was refused, and kept when its
    /// fate is unknown: they may be live (here they are), the only copy of their records.
    #[test]
    fn a_steps_objects_are_deleted_only_when_its_commit_was_refused() {
        for applied_but_lost in [false, true] {
            let dir = tempfile::tempdir().expect("temporary directory");
            let mut metadata = MetadataStore::open(&dir.path().join("metadata"), 1).expect("open");
            metadata
                .apply(MetadataCommand::CreateTopic {
                    name: "t".into(),
                    partitions: 1,
                    configs: BTreeMap::new(),
                    shards: 1,
                })
                .expect("topic");
            let stream_id = metadata.image().partition("t", 0).expect("p").stream_id;
            let range = |len| StreamRange {
                stream_id,
                start_offset: 0,
                end_offset: 10,
                position: 0,
                len,
            };
            let registry = CommitAnswer {
                registry: crate::StoreRegistry::new(metadata),
                applied_but_lost,
            };
            let old = futures::executor::block_on(allocate_object_ids(&registry, 1)).expect("id");
            let old = ObjectImage {
                id: old,
                key: object_key(ObjectKind::StreamSet, old),
                size: 4,
                kind: ObjectKind::StreamSet,
                ranges: vec![range(4)],
            };
            registry
                .registry
                .apply(MetadataCommand::CommitObjects {
                    objects: vec![old.clone()],
                })
                .expect("commit");
            let store = ObjectStore::local(dir.path().join("objects")).expect("store");
            let built = vec![(Bytes::from_static(b"new"), vec![range(3)])];
            let replaced = futures::executor::block_on(replace_objects(
                &store,
                &registry,
                vec![old.id],
                built,
                1_000,
            ));
            assert!(replaced.is_err(), "{applied_but_lost}: {replaced:?}");
            let new_key = object_key(ObjectKind::Stream, old.id + 1);
            let kept = futures::executor::block_on(store.head(&new_key)).is_ok();
            let live = registry.registry.image().object(old.id + 1).is_some();
            assert_eq!((kept, live), (applied_but_lost, applied_but_lost));
        }
    }

    #[test]
    fn stream_objects_are_not_merged_beyond_the_topics_segment_bytes() {
        let config = CompactionConfig::default();
        let merged = |plan: Option<CompactionPlan>| match plan {
            Some(CompactionPlan::Merge(ids)) => ids.len(),
            other => panic!("{other:?}"),
        };
        let image = stream_objects(&[], 4, 1000);
        assert_eq!(merged(plan_step(&image, &config)), 4);
        let image = stream_objects(&[("segment.bytes", "2500")], 4, 1000);
        assert_eq!(merged(plan_step(&image, &config)), 2);
        // No two objects fit in one segment: nothing to merge.
        let image = stream_objects(&[("segment.bytes", "1999")], 4, 1000);
        assert_eq!(plan_step(&image, &config), None);
    }
}
