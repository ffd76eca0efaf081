//! The object registry: which objects of the object store hold which offsets
//! of which streams (issue 5, the S3Stream design).
//!
//! Two kinds of object, one format (see `objstore/README.md`): a Stream Set
//! Object (SSO) holds data of many streams, a Stream Object (SO) of one. The
//! registry keeps, per object, its key, size and per-stream ranges, and per
//! stream an index ordered by offset, so that `MetadataImage::objects_for`
//! finds the object holding an offset in O(log n).
//!
//! Invariants (checked by `apply`): a stream's ranges chain without gap or
//! overlap (`start_offset` of each is the `end_offset` of the one before);
//! committing only appends at the stream's end; compaction replaces ranges
//! without changing what is covered (it may drop what is below the log start
//! offset); an object leaves the registry in two steps: marked for deletion
//! (no longer readable through the index), then deleted once the grace period
//! is over and the store has removed it.

use std::collections::BTreeMap;
use std::sync::Arc;

/// An object id, allocated by the store (`AllocateObjectIds`), never reused.
pub type ObjectId = u64;

/// The first object id handed out; 0 is never an object.
pub const FIRST_OBJECT_ID: ObjectId = 1;

/// Stream ids from here up belong to the broker's internal streams (e.g. each shard's group
/// log), which have data in objects but no partition; topics never get ids this high.
pub const INTERNAL_STREAM_ID_MIN: u64 = u64::MAX - (1 << 20) + 1;

/// True for the id of an internal stream.
pub fn is_internal_stream(stream_id: u64) -> bool {
    stream_id >= INTERNAL_STREAM_ID_MIN
}

/// What an object holds.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub enum ObjectKind {
    /// Data of many streams (what the uploader writes from the WAL).
    StreamSet,
    /// Data of one stream (large runs, and what compaction writes).
    Stream,
}

/// The offsets `[start_offset, end_offset)` of one stream inside an object,
/// stored at bytes `[position, position + len)` of it; in an object made of a WAL segment,
/// from byte `position` on, `len` bytes in all, between other records.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub struct StreamRange {
    pub stream_id: u64,
    pub start_offset: i64,
    /// Exclusive.
    pub end_offset: i64,
    pub position: u64,
    pub len: u64,
}

/// An object as committed: where it is, and what it holds.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct ObjectImage {
    pub id: ObjectId,
    /// The key in the object store.
    pub key: String,
    pub size: u64,
    pub kind: ObjectKind,
    /// Ordered by stream id; at most one range per stream.
    pub ranges: Vec<StreamRange>,
}

/// An object marked for deletion: unreadable through the index, deleted from
/// the store once `marked_at_ms` + the grace period has passed.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct ObjectTombstone {
    pub id: ObjectId,
    pub key: String,
    pub size: u64,
    pub marked_at_ms: u64,
}

/// One entry of a stream's index: the object holding `[start, end_offset)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RangeSlot {
    pub object_id: ObjectId,
    pub end_offset: i64,
}

/// The per-stream index. `end_offset` survives the deletion of every range
/// (retention), so that the next commit still has to continue it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct StreamObjects {
    /// start offset → slot.
    pub ranges: BTreeMap<i64, RangeSlot>,
    pub end_offset: i64,
}

/// The registry part of the image. Cloning it (once per applied command)
/// copies pointers, not objects: objects and stream indexes are shared
/// behind `Arc` and copied on write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Registry {
    pub next_object_id: ObjectId,
    pub objects: BTreeMap<ObjectId, Arc<ObjectImage>>,
    pub tombstones: BTreeMap<ObjectId, ObjectTombstone>,
    pub streams: BTreeMap<u64, Arc<StreamObjects>>,
}

impl Default for Registry {
    fn default() -> Registry {
        Registry {
            next_object_id: FIRST_OBJECT_ID,
            objects: BTreeMap::new(),
            tombstones: BTreeMap::new(),
            streams: BTreeMap::new(),
        }
    }
}

impl ObjectImage {
    /// The range of `stream_id` in this object.
    pub fn range_of(&self, stream_id: u64) -> Option<&StreamRange> {
        self.ranges
            .binary_search_by_key(&stream_id, |r| r.stream_id)
            .ok()
            .map(|i| &self.ranges[i])
    }

    /// Checks the object on its own: ranges sorted by stream, one per
    /// stream, non-empty, inside the object. Ranges may overlap: an object made of a WAL
    /// segment holds its streams' records interleaved in WAL order, and a stream's range there
    /// is its first block's position and its data bytes (`len`), not a span of its own.
    pub fn check(&self) -> Result<(), String> {
        if self.id < FIRST_OBJECT_ID {
            return Err(format!("object id {}", self.id));
        }
        if self.key.is_empty() {
            return Err(format!("object {} has an empty key", self.id));
        }
        if self.ranges.is_empty() {
            return Err(format!("object {} holds no range", self.id));
        }
        if self.kind == ObjectKind::Stream && self.ranges.len() != 1 {
            return Err(format!(
                "stream object {} holds {} streams",
                self.id,
                self.ranges.len()
            ));
        }
        for (i, r) in self.ranges.iter().enumerate() {
            if i > 0 && self.ranges[i - 1].stream_id >= r.stream_id {
                return Err(format!(
                    "object {}: ranges not ordered by stream id",
                    self.id
                ));
            }
            if r.start_offset < 0 || r.start_offset >= r.end_offset {
                return Err(format!(
                    "object {}: stream {} range [{}, {})",
                    self.id, r.stream_id, r.start_offset, r.end_offset
                ));
            }
            let end = r.position.checked_add(r.len).filter(|&e| e <= self.size);
            if r.len == 0 || end.is_none() {
                return Err(format!(
                    "object {}: stream {} bytes {}+{} outside {} bytes",
                    self.id, r.stream_id, r.position, r.len, self.size
                ));
            }
        }
        Ok(())
    }
}

impl Registry {
    /// Adds a checked object and its ranges to the index; ranges of deleted
    /// streams (`is_deleted`) stay in the object but are not indexed. With
    /// `append` (a commit), each range must continue its stream, or start
    /// it; without (compaction), it must fill a hole below the stream's end.
    pub(crate) fn insert(
        &mut self,
        object: ObjectImage,
        is_deleted: &dyn Fn(u64) -> bool,
        append: bool,
    ) -> Result<(), String> {
        object.check()?;
        if object.id >= self.next_object_id {
            return Err(format!("object id {} was never allocated", object.id));
        }
        if self.objects.contains_key(&object.id) || self.tombstones.contains_key(&object.id) {
            return Err(format!("object {} exists already", object.id));
        }
        for r in &object.ranges {
            if is_deleted(r.stream_id) {
                continue;
            }
            let stream = Arc::make_mut(self.streams.entry(r.stream_id).or_default());
            if append {
                let known = !stream.ranges.is_empty() || stream.end_offset > 0;
                if known && r.start_offset != stream.end_offset {
                    return Err(format!(
                        "object {}: stream {} range starts at {}, the stream ends at {}",
                        object.id, r.stream_id, r.start_offset, stream.end_offset
                    ));
                }
                stream.end_offset = r.end_offset;
            } else if r.end_offset > stream.end_offset
                || stream.ranges.contains_key(&r.start_offset)
            {
                return Err(format!(
                    "object {}: stream {} range [{}, {}) is not a hole of the stream",
                    object.id, r.stream_id, r.start_offset, r.end_offset
                ));
            }
            stream.ranges.insert(
                r.start_offset,
                RangeSlot {
                    object_id: object.id,
                    end_offset: r.end_offset,
                },
            );
        }
        self.objects.insert(object.id, Arc::new(object));
        Ok(())
    }

    /// The first offset indexed for a stream.
    pub(crate) fn stream_start(&self, stream_id: u64) -> Option<i64> {
        self.streams
            .get(&stream_id)
            .and_then(|s| s.ranges.keys().next().copied())
    }

    /// Takes a live object out of the index and tombstones it. With
    /// `retention`, each of its ranges is below its stream's log start
    /// offset, so every range of the stream before it is unindexed too
    /// (the index keeps no hole); without (compaction), the caller refills
    /// the hole it leaves.
    pub(crate) fn mark(
        &mut self,
        id: ObjectId,
        now_ms: u64,
        retention: bool,
    ) -> Result<(), String> {
        let object = self
            .objects
            .remove(&id)
            .ok_or_else(|| format!("object {id} is not live"))?;
        for r in &object.ranges {
            if let Some(stream) = self.streams.get_mut(&r.stream_id) {
                let stream = Arc::make_mut(stream);
                if stream
                    .ranges
                    .get(&r.start_offset)
                    .is_some_and(|slot| slot.object_id == id)
                {
                    stream.ranges.remove(&r.start_offset);
                }
                if retention {
                    stream.ranges = stream.ranges.split_off(&r.end_offset);
                }
            }
        }
        self.tombstones.insert(
            id,
            ObjectTombstone {
                id,
                key: object.key.clone(),
                size: object.size,
                marked_at_ms: now_ms,
            },
        );
        Ok(())
    }

    /// Checks that every range of `stream_id` chains from the first to
    /// the stream's end.
    pub(crate) fn check_stream(&self, stream_id: u64) -> Result<(), String> {
        let Some(stream) = self.streams.get(&stream_id) else {
            return Ok(());
        };
        let mut expected: Option<i64> = None;
        for (&start, slot) in &stream.ranges {
            if expected.is_some_and(|e| e != start) {
                return Err(format!(
                    "stream {stream_id}: range at {start} does not continue the one ending at {}",
                    expected.unwrap_or_default()
                ));
            }
            let object = self
                .objects
                .get(&slot.object_id)
                .ok_or_else(|| format!("stream {stream_id}: object {} gone", slot.object_id))?;
            let range = object
                .range_of(stream_id)
                .filter(|r| r.start_offset == start && r.end_offset == slot.end_offset)
                .ok_or_else(|| {
                    format!(
                        "stream {stream_id}: object {} lacks range at {start}",
                        slot.object_id
                    )
                })?;
            expected = Some(range.end_offset);
        }
        if let Some(end) = expected
            && end != stream.end_offset
        {
            return Err(format!(
                "stream {stream_id}: ranges end at {end}, the stream at {}",
                stream.end_offset
            ));
        }
        Ok(())
    }

    /// Every invariant of the registry (after a snapshot load, and in debug
    /// builds after every apply).
    pub(crate) fn check_invariants(&self) -> Result<(), String> {
        for (id, object) in &self.objects {
            if *id != object.id || *id >= self.next_object_id {
                return Err(format!("object keyed {id} is {}", object.id));
            }
            object.check()?;
            // A live object's ranges are all indexed, except those of
            // deleted streams (whose index went with the topic) and those
            // below the first indexed offset (cut by retention).
            for r in &object.ranges {
                if let Some(stream) = self.streams.get(&r.stream_id)
                    && stream.ranges.get(&r.start_offset).map(|s| s.object_id) != Some(*id)
                    && r.end_offset
                        > stream
                            .ranges
                            .keys()
                            .next()
                            .copied()
                            .unwrap_or(stream.end_offset)
                {
                    return Err(format!(
                        "object {id}: stream {} range at {} is not indexed",
                        r.stream_id, r.start_offset
                    ));
                }
            }
        }
        for (id, tombstone) in &self.tombstones {
            if *id != tombstone.id || *id >= self.next_object_id || self.objects.contains_key(id) {
                return Err(format!("tombstone {id} is bad"));
            }
        }
        for stream_id in self.streams.keys() {
            self.check_stream(*stream_id)?;
        }
        Ok(())
    }
}

/// The registry as a snapshot stores it; the index is rebuilt on load.
#[derive(
    Debug, Clone, Default, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub(crate) struct RegistryParts {
    pub next_object_id: ObjectId,
    pub objects: Vec<ObjectImage>,
    pub tombstones: Vec<ObjectTombstone>,
    /// (stream id, first indexed offset, end offset in objects) of every
    /// live stream with objects; the first indexed offset is the end when
    /// nothing is indexed. Ranges below it (cut by retention from objects
    /// still live for other streams) are not indexed again.
    pub stream_bounds: Vec<(u64, i64, i64)>,
}

impl RegistryParts {
    /// The parts of an empty registry (what a version 1 snapshot holds).
    pub(crate) fn empty() -> RegistryParts {
        RegistryParts {
            next_object_id: FIRST_OBJECT_ID,
            ..RegistryParts::default()
        }
    }

    pub(crate) fn from_registry(registry: &Registry) -> RegistryParts {
        RegistryParts {
            next_object_id: registry.next_object_id,
            objects: registry.objects.values().map(|o| (**o).clone()).collect(),
            tombstones: registry.tombstones.values().cloned().collect(),
            stream_bounds: registry
                .streams
                .iter()
                .map(|(id, s)| {
                    let start = s.ranges.keys().next().copied().unwrap_or(s.end_offset);
                    (*id, start, s.end_offset)
                })
                .collect(),
        }
    }

    /// Rebuilds the registry; `live_streams` are the streams of existing
    /// partitions (ranges of others are not indexed).
    pub(crate) fn into_registry<V>(
        self,
        live_streams: &BTreeMap<u64, V>,
    ) -> Result<Registry, String> {
        let mut registry = Registry {
            next_object_id: self.next_object_id.max(FIRST_OBJECT_ID),
            ..Registry::default()
        };
        let mut starts = BTreeMap::new();
        for (stream_id, start_offset, end_offset) in self.stream_bounds {
            starts.insert(stream_id, start_offset);
            if !live_streams.contains_key(&stream_id) && !is_internal_stream(stream_id) {
                return Err(format!("objects indexed for unknown stream {stream_id}"));
            }
            let stream = StreamObjects {
                ranges: BTreeMap::new(),
                end_offset,
            };
            if registry
                .streams
                .insert(stream_id, Arc::new(stream))
                .is_some()
            {
                return Err(format!("stream {stream_id} listed twice"));
            }
        }
        for object in self.objects {
            object.check()?;
            for r in &object.ranges {
                if starts
                    .get(&r.stream_id)
                    .is_some_and(|&s| r.start_offset < s)
                {
                    continue;
                }
                if let Some(stream) = registry.streams.get_mut(&r.stream_id) {
                    let slot = RangeSlot {
                        object_id: object.id,
                        end_offset: r.end_offset,
                    };
                    if Arc::make_mut(stream)
                        .ranges
                        .insert(r.start_offset, slot)
                        .is_some()
                    {
                        return Err(format!(
                            "stream {} has two ranges at {}",
                            r.stream_id, r.start_offset
                        ));
                    }
                }
            }
            if registry
                .objects
                .insert(object.id, Arc::new(object))
                .is_some()
            {
                return Err("object listed twice".to_string());
            }
        }
        for tombstone in self.tombstones {
            if registry
                .tombstones
                .insert(tombstone.id, tombstone)
                .is_some()
            {
                return Err("tombstone listed twice".to_string());
            }
        }
        registry.check_invariants()?;
        Ok(registry)
    }
}
