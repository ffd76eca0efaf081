//! The object format shared by Stream Set Objects (many streams) and Stream
//! Objects (one stream): data blocks, then an index of the blocks, then a
//! fixed-size footer. The byte layout is in `objstore/README.md`.
//!
//! A data block holds whole appends (whole Kafka record batches) of one
//! stream, in offset order; a stream's blocks are contiguous in the object
//! and streams are ordered by id. A reader fetches the tail of the object
//! (footer, and usually the index with it) in one ranged GET, checks magic,
//! version, sizes and CRC32C, then reads just the blocks it needs.

use std::collections::BTreeMap;

use bytes::Bytes;
use sluice_metadata::{ObjectKind, StreamRange};

use crate::error::ObjectStoreError;
use crate::limits::{DATA_BLOCK_BYTES_TARGET, INDEX_BYTES_MAX, TAIL_READ_BYTES};
use crate::spare_buffer::SpareBuffer;
use crate::store::ObjectStore;

/// The last 8 bytes of every object.
pub const MAGIC: [u8; 8] = *b"SLUICEOB";
pub const FORMAT_VERSION: u16 = 1;
/// The version of an object whose blocks lie anywhere before the index, between bytes that no
/// block holds: a WAL segment file made an object by a hard link, its index written after it
/// ([`linked_object_tail`]). Readers take both versions.
pub const FORMAT_VERSION_LINKED: u16 = 2;
pub const FOOTER_BYTES: usize = 40;
pub const INDEX_ENTRY_BYTES: usize = 40;

/// One data block: offsets `[start_offset, end_offset)` of `stream_id` at
/// bytes `[position, position + len)`, with the CRC32C of those bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataBlock {
    pub stream_id: u64,
    pub start_offset: i64,
    pub end_offset: i64,
    pub position: u64,
    pub len: u32,
    pub crc32c: u32,
}

/// A caller error while building an object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    #[error("stream {stream_id}: append at {first_offset} does not continue at {expected}")]
    Discontinuous {
        stream_id: u64,
        expected: i64,
        first_offset: i64,
    },
    #[error("stream {stream_id}: offsets {first_offset}..={last_offset} are not a range")]
    BadOffsets {
        stream_id: u64,
        first_offset: i64,
        last_offset: i64,
    },
    #[error("a stream object holds one stream ({held}), not {stream_id}")]
    SecondStream { held: u64, stream_id: u64 },
    #[error("an append of {0} bytes is over 4 GiB or empty")]
    BadPayload(usize),
}

/// Builds one object in memory. `ObjectKind::StreamSet`: any streams, each
/// appended in offset order (streams may interleave); `ObjectKind::Stream`:
/// one stream.
#[derive(Debug)]
pub struct ObjectBuilder {
    kind: ObjectKind,
    block_bytes_target: usize,
    streams: BTreeMap<u64, PendingStream>,
    data_bytes: usize,
}

/// The name of the brief: an SSO builder is an `ObjectBuilder` of that kind.
pub type StreamSetObjectBuilder = ObjectBuilder;

#[derive(Debug)]
struct PendingStream {
    end_offset: i64,
    appends: Vec<PendingAppend>,
}

/// One added payload, with its CRC-32C when the caller knew it.
#[derive(Debug)]
struct PendingAppend {
    first_offset: i64,
    end_offset: i64,
    payload: Bytes,
    crc32c: Option<u32>,
}

impl ObjectBuilder {
    pub fn new(kind: ObjectKind) -> ObjectBuilder {
        ObjectBuilder {
            kind,
            block_bytes_target: DATA_BLOCK_BYTES_TARGET,
            streams: BTreeMap::new(),
            data_bytes: 0,
        }
    }

    /// Blocks cut at about `bytes` instead of `DATA_BLOCK_BYTES_TARGET`.
    pub fn with_block_bytes(mut self, bytes: usize) -> ObjectBuilder {
        self.block_bytes_target = bytes.max(1);
        self
    }

    /// Appends `payload` (whole record batches) holding offsets
    /// `first_offset..=last_offset` of `stream_id`; it must continue the
    /// stream's previous append in this object.
    pub fn add(
        &mut self,
        stream_id: u64,
        first_offset: i64,
        last_offset: i64,
        payload: Bytes,
    ) -> Result<(), BuildError> {
        self.push(stream_id, first_offset, last_offset, payload, None)
    }

    /// [`ObjectBuilder::add`] of a payload whose CRC-32C the caller knows (the WAL's): the
    /// blocks' CRCs are then combined from their payloads' instead of read again. A wrong
    /// `payload_crc` makes a block that every reader refuses.
    pub fn add_with_crc(
        &mut self,
        stream_id: u64,
        first_offset: i64,
        last_offset: i64,
        payload: Bytes,
        payload_crc: u32,
    ) -> Result<(), BuildError> {
        debug_assert_eq!(
            payload_crc,
            crc32c::crc32c(&payload),
            "payload_crc is wrong"
        );
        self.push(
            stream_id,
            first_offset,
            last_offset,
            payload,
            Some(payload_crc),
        )
    }

    fn push(
        &mut self,
        stream_id: u64,
        first_offset: i64,
        last_offset: i64,
        payload: Bytes,
        crc32c: Option<u32>,
    ) -> Result<(), BuildError> {
        if first_offset < 0 || last_offset < first_offset {
            return Err(BuildError::BadOffsets {
                stream_id,
                first_offset,
                last_offset,
            });
        }
        if payload.is_empty() || u32::try_from(payload.len()).is_err() {
            return Err(BuildError::BadPayload(payload.len()));
        }
        if self.kind == ObjectKind::Stream
            && let Some(&held) = self.streams.keys().next()
            && held != stream_id
        {
            return Err(BuildError::SecondStream { held, stream_id });
        }
        let stream = self
            .streams
            .entry(stream_id)
            .or_insert_with(|| PendingStream {
                end_offset: first_offset,
                appends: Vec::new(),
            });
        if stream.end_offset != first_offset {
            return Err(BuildError::Discontinuous {
                stream_id,
                expected: stream.end_offset,
                first_offset,
            });
        }
        self.data_bytes += payload.len();
        stream.end_offset = last_offset + 1;
        stream.appends.push(PendingAppend {
            first_offset,
            end_offset: last_offset + 1,
            payload,
            crc32c,
        });
        Ok(())
    }

    /// Data bytes appended so far.
    pub fn data_bytes(&self) -> usize {
        self.data_bytes
    }

    pub fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }

    pub fn kind(&self) -> ObjectKind {
        self.kind
    }

    /// The object's bytes, and each stream's range in it (what the registry
    /// gets).
    pub fn finish(self) -> (Bytes, Vec<StreamRange>) {
        let (object, _, ranges) = self.finish_with_blocks();
        (object, ranges)
    }

    /// `finish`, with the block index too.
    pub fn finish_with_blocks(self) -> (Bytes, Vec<DataBlock>, Vec<StreamRange>) {
        let block_count_guess = self.data_bytes / self.block_bytes_target + self.streams.len();
        let mut out = SpareBuffer::with_capacity(
            self.data_bytes + block_count_guess * INDEX_ENTRY_BYTES + FOOTER_BYTES,
        );
        let mut blocks: Vec<DataBlock> = Vec::with_capacity(block_count_guess);
        let mut ranges = Vec::with_capacity(self.streams.len());
        for (stream_id, stream) in self.streams {
            let range_position = out.len() as u64;
            let range_start = stream.appends.first().map(|a| a.first_offset).unwrap_or(0);
            // The block being filled, and its CRC so far while every payload's is known.
            let mut block: Option<(DataBlock, Option<u32>)> = None;
            for append in stream.appends {
                let len = append.payload.len();
                if let Some((b, crc)) = block.as_mut()
                    && b.len as usize + len <= self.block_bytes_target
                {
                    b.end_offset = append.end_offset;
                    b.len += len as u32;
                    *crc = crc
                        .zip(append.crc32c)
                        .map(|(crc, next)| sluice_net::crc32c_combine(crc, next, len as u64));
                } else {
                    if let Some((b, crc)) = block.take() {
                        blocks.push(seal_block(&out, b, crc));
                    }
                    let data_block = DataBlock {
                        stream_id,
                        start_offset: append.first_offset,
                        end_offset: append.end_offset,
                        position: out.len() as u64,
                        len: len as u32,
                        crc32c: 0,
                    };
                    block = Some((data_block, append.crc32c));
                }
                out.extend_from_slice(&append.payload);
            }
            if let Some((b, crc)) = block.take() {
                blocks.push(seal_block(&out, b, crc));
            }
            ranges.push(StreamRange {
                stream_id,
                start_offset: range_start,
                end_offset: stream.end_offset,
                position: range_position,
                len: out.len() as u64 - range_position,
            });
        }
        let index_position = out.len() as u64;
        out.extend_from_slice(&object_tail(
            self.kind,
            &blocks,
            index_position,
            FORMAT_VERSION,
        ));
        let object = out.freeze();
        // Check the object just before it leaves, as a reader will.
        debug_assert_eq!(
            ObjectIndex::parse("<new>", &object).map(|i| i.blocks),
            Ok(blocks.clone())
        );
        (object, blocks, ranges)
    }
}

/// The index and footer of an object whose `blocks` already lie in a file (a WAL segment: the
/// WAL's records, their headers between them), to be written at `index_position`, past every
/// block. `blocks` must be ordered by (stream id, offset) and chain within each stream.
pub fn linked_object_tail(kind: ObjectKind, blocks: &[DataBlock], index_position: u64) -> Bytes {
    debug_assert!(
        blocks
            .iter()
            .all(|b| b.position + u64::from(b.len) <= index_position)
    );
    Bytes::from(object_tail(
        kind,
        blocks,
        index_position,
        FORMAT_VERSION_LINKED,
    ))
}

/// The index of `blocks` and the footer (see README.md) of an object of format `version`
/// whose index starts at `index_position`.
fn object_tail(
    kind: ObjectKind,
    blocks: &[DataBlock],
    index_position: u64,
    version: u16,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(blocks.len() * INDEX_ENTRY_BYTES + FOOTER_BYTES);
    for b in blocks {
        out.extend_from_slice(&b.stream_id.to_le_bytes());
        out.extend_from_slice(&b.start_offset.to_le_bytes());
        out.extend_from_slice(&b.end_offset.to_le_bytes());
        out.extend_from_slice(&b.position.to_le_bytes());
        out.extend_from_slice(&b.len.to_le_bytes());
        out.extend_from_slice(&b.crc32c.to_le_bytes());
    }
    let index_crc = crc32c::crc32c(&out);
    let object_size = index_position + (out.len() + FOOTER_BYTES) as u64;
    let footer_start = out.len();
    out.extend_from_slice(&index_position.to_le_bytes());
    out.extend_from_slice(&(blocks.len() as u32).to_le_bytes());
    out.extend_from_slice(&index_crc.to_le_bytes());
    out.extend_from_slice(&object_size.to_le_bytes());
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&[kind_byte(kind), 0]);
    let footer_crc = crc32c::crc32c(&out[footer_start..]);
    out.extend_from_slice(&footer_crc.to_le_bytes());
    out.extend_from_slice(&MAGIC);
    debug_assert_eq!(index_position + out.len() as u64, object_size);
    out
}

/// Sets the block's CRC: `combined` from its payloads' CRCs, or else a pass over its bytes.
fn seal_block(out: &[u8], mut block: DataBlock, combined: Option<u32>) -> DataBlock {
    let start = block.position as usize;
    let bytes = &out[start..start + block.len as usize];
    block.crc32c = combined.unwrap_or_else(|| crc32c::crc32c(bytes));
    debug_assert_eq!(block.crc32c, crc32c::crc32c(bytes), "combined block CRC");
    block
}

fn kind_byte(kind: ObjectKind) -> u8 {
    match kind {
        ObjectKind::StreamSet => 1,
        ObjectKind::Stream => 2,
    }
}

/// The parsed index of one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectIndex {
    pub kind: ObjectKind,
    pub size: u64,
    /// Ordered by (stream id, start offset); a stream's blocks chain.
    pub blocks: Vec<DataBlock>,
}

/// The footer's fields.
struct Footer {
    version: u16,
    index_position: u64,
    index_count: u32,
    index_crc: u32,
    kind: ObjectKind,
}

impl ObjectIndex {
    /// Reads and checks an object's index with one ranged GET of its tail
    /// (two if the index is larger than `TAIL_READ_BYTES`).
    pub async fn read(
        store: &ObjectStore,
        key: &str,
        size: u64,
    ) -> Result<ObjectIndex, ObjectStoreError> {
        if size < FOOTER_BYTES as u64 {
            return Err(ObjectStoreError::corrupt(
                key,
                format!("{size} bytes, no footer"),
            ));
        }
        let tail_start = size.saturating_sub(TAIL_READ_BYTES);
        let tail = store.get_range(key, tail_start..size).await?;
        if tail.len() as u64 != size - tail_start {
            return Err(ObjectStoreError::corrupt(
                key,
                format!(
                    "the object is {} bytes, not {size}",
                    tail_start + tail.len() as u64
                ),
            ));
        }
        let footer = parse_footer(key, size, &tail[tail.len() - FOOTER_BYTES..])?;
        let index_end = size - FOOTER_BYTES as u64;
        let index = if footer.index_position >= tail_start {
            tail.slice((footer.index_position - tail_start) as usize..tail.len() - FOOTER_BYTES)
        } else {
            store
                .get_range(key, footer.index_position..index_end)
                .await?
        };
        parse_index(key, size, &footer, &index)
    }

    /// Parses the index of a whole object in memory.
    pub fn parse(key: &str, object: &[u8]) -> Result<ObjectIndex, ObjectStoreError> {
        let size = object.len() as u64;
        if object.len() < FOOTER_BYTES {
            return Err(ObjectStoreError::corrupt(
                key,
                format!("{size} bytes, no footer"),
            ));
        }
        let footer = parse_footer(key, size, &object[object.len() - FOOTER_BYTES..])?;
        let index = &object[footer.index_position as usize..object.len() - FOOTER_BYTES];
        parse_index(key, size, &footer, index)
    }

    /// The blocks of one stream, in offset order.
    pub fn blocks_of(&self, stream_id: u64) -> &[DataBlock] {
        let start = self.blocks.partition_point(|b| b.stream_id < stream_id);
        let end = self.blocks.partition_point(|b| b.stream_id <= stream_id);
        &self.blocks[start..end]
    }

    /// The index (into `blocks`) of the block of `stream_id` holding `offset`.
    pub fn block_for(&self, stream_id: u64, offset: i64) -> Option<usize> {
        let i = self
            .blocks
            .partition_point(|b| (b.stream_id, b.start_offset) <= (stream_id, offset));
        let candidate = i.checked_sub(1)?;
        let b = &self.blocks[candidate];
        (b.stream_id == stream_id && offset < b.end_offset).then_some(candidate)
    }

    /// Each stream's range, as the builder reported it.
    pub fn ranges(&self) -> Vec<StreamRange> {
        stream_ranges(&self.blocks)
    }

    /// The bytes in memory of the index (what a cache entry weighs).
    pub fn weight_bytes(&self) -> usize {
        self.blocks.len() * std::mem::size_of::<DataBlock>() + std::mem::size_of::<Self>()
    }
}

/// Each stream's range over `blocks` (ordered by stream, then offset): from its first block,
/// its blocks' bytes in all. In a version 1 object a stream's blocks follow each other, so
/// that is the span they cover; in a linked one they lie between other bytes.
pub fn stream_ranges(blocks: &[DataBlock]) -> Vec<StreamRange> {
    let mut ranges: Vec<StreamRange> = Vec::new();
    for b in blocks {
        match ranges.last_mut() {
            Some(r) if r.stream_id == b.stream_id => {
                r.end_offset = b.end_offset;
                r.len += u64::from(b.len);
            }
            _ => ranges.push(StreamRange {
                stream_id: b.stream_id,
                start_offset: b.start_offset,
                end_offset: b.end_offset,
                position: b.position,
                len: u64::from(b.len),
            }),
        }
    }
    ranges
}

/// Checks a block's bytes against its CRC32C.
pub fn check_block(key: &str, block: &DataBlock, bytes: &[u8]) -> Result<(), ObjectStoreError> {
    if bytes.len() != block.len as usize || crc32c::crc32c(bytes) != block.crc32c {
        return Err(ObjectStoreError::corrupt(
            key,
            format!(
                "block of stream {} at byte {}: checksum mismatch",
                block.stream_id, block.position
            ),
        ));
    }
    Ok(())
}

/// Reads every block of `stream_id` in one ranged GET and checks each.
pub async fn read_stream(
    store: &ObjectStore,
    key: &str,
    index: &ObjectIndex,
    stream_id: u64,
) -> Result<Vec<(DataBlock, Bytes)>, ObjectStoreError> {
    let blocks = index.blocks_of(stream_id);
    let (Some(first), Some(last)) = (blocks.first(), blocks.last()) else {
        return Ok(Vec::new());
    };
    let start = first.position;
    let bytes = store
        .get_range(key, start..last.position + u64::from(last.len))
        .await?;
    split_blocks(key, blocks, start, &bytes)
}

/// The checked blocks of `stream_id` in object `key` of `size` bytes (`size` as committed: a
/// linked object's file may be longer), read through its index: never the bytes around them,
/// which for a linked object are a whole WAL segment's.
pub async fn read_stream_blocks(
    store: &ObjectStore,
    key: &str,
    size: u64,
    stream_id: u64,
) -> Result<Vec<(DataBlock, Bytes)>, ObjectStoreError> {
    let index = ObjectIndex::read(store, key, size).await?;
    read_stream(store, key, &index, stream_id).await
}

/// Cuts `bytes` (read from `start`) into the given blocks, checking each.
pub fn split_blocks(
    key: &str,
    blocks: &[DataBlock],
    start: u64,
    bytes: &Bytes,
) -> Result<Vec<(DataBlock, Bytes)>, ObjectStoreError> {
    blocks
        .iter()
        .map(|b| {
            let from = (b.position - start) as usize;
            let to = from + b.len as usize;
            if to > bytes.len() {
                return Err(ObjectStoreError::corrupt(key, "short read"));
            }
            let slice = bytes.slice(from..to);
            check_block(key, b, &slice)?;
            Ok((*b, slice))
        })
        .collect()
}

fn parse_footer(key: &str, size: u64, f: &[u8]) -> Result<Footer, ObjectStoreError> {
    let corrupt = |why: String| Err(ObjectStoreError::corrupt(key, why));
    let u64_at = |i: usize| u64::from_le_bytes(f[i..i + 8].try_into().expect("8 bytes"));
    let u32_at = |i: usize| u32::from_le_bytes(f[i..i + 4].try_into().expect("4 bytes"));
    if f[32..40] != MAGIC {
        return corrupt("no Sluice object magic".to_string());
    }
    if crc32c::crc32c(&f[..28]) != u32_at(28) {
        return corrupt("footer checksum mismatch".to_string());
    }
    let version = u16::from_le_bytes([f[24], f[25]]);
    if version != FORMAT_VERSION && version != FORMAT_VERSION_LINKED {
        return corrupt(format!(
            "format version {version}, expected {FORMAT_VERSION} or {FORMAT_VERSION_LINKED}"
        ));
    }
    let kind = match f[26] {
        1 => ObjectKind::StreamSet,
        2 => ObjectKind::Stream,
        other => return corrupt(format!("object kind {other}")),
    };
    let (index_position, index_count, index_crc, object_size) =
        (u64_at(0), u32_at(8), u32_at(12), u64_at(16));
    if object_size != size {
        return corrupt(format!(
            "footer says {object_size} bytes, the object is {size}"
        ));
    }
    let index_bytes = u64::from(index_count) * INDEX_ENTRY_BYTES as u64;
    if index_bytes > INDEX_BYTES_MAX
        || index_position.checked_add(index_bytes) != Some(size - FOOTER_BYTES as u64)
    {
        return corrupt(format!(
            "index of {index_count} entries at {index_position} does not fit (INDEX_BYTES_MAX)"
        ));
    }
    Ok(Footer {
        version,
        index_position,
        index_count,
        index_crc,
        kind,
    })
}

fn parse_index(
    key: &str,
    size: u64,
    footer: &Footer,
    index: &[u8],
) -> Result<ObjectIndex, ObjectStoreError> {
    let corrupt = |why: String| Err(ObjectStoreError::corrupt(key, why));
    if index.len() != footer.index_count as usize * INDEX_ENTRY_BYTES {
        return corrupt("index length".to_string());
    }
    if crc32c::crc32c(index) != footer.index_crc {
        return corrupt("index checksum mismatch".to_string());
    }
    let mut blocks: Vec<DataBlock> = Vec::with_capacity(footer.index_count as usize);
    let mut data_end = 0u64;
    for e in index.chunks_exact(INDEX_ENTRY_BYTES) {
        let u64_at = |i: usize| u64::from_le_bytes(e[i..i + 8].try_into().expect("8 bytes"));
        let u32_at = |i: usize| u32::from_le_bytes(e[i..i + 4].try_into().expect("4 bytes"));
        let b = DataBlock {
            stream_id: u64_at(0),
            start_offset: u64_at(8) as i64,
            end_offset: u64_at(16) as i64,
            position: u64_at(24),
            len: u32_at(32),
            crc32c: u32_at(36),
        };
        let ordered = match blocks.last() {
            Some(p) if p.stream_id == b.stream_id => p.end_offset == b.start_offset,
            Some(p) => p.stream_id < b.stream_id,
            None => true,
        };
        // Blocks follow each other, or in a linked object lie anywhere before the index.
        let placed = if footer.version == FORMAT_VERSION_LINKED {
            b.position
                .checked_add(u64::from(b.len))
                .is_some_and(|end| end <= footer.index_position)
        } else {
            b.position == data_end
        };
        if !ordered || b.start_offset < 0 || b.start_offset >= b.end_offset || b.len == 0 || !placed
        {
            return corrupt(format!(
                "index entry {} is out of order or bad",
                blocks.len()
            ));
        }
        data_end = b.position + u64::from(b.len);
        blocks.push(b);
    }
    if footer.version == FORMAT_VERSION && data_end != footer.index_position {
        return corrupt("blocks do not end where the index starts".to_string());
    }
    if footer.kind == ObjectKind::Stream
        && blocks.first().map(|b| b.stream_id) != blocks.last().map(|b| b.stream_id)
    {
        return corrupt("a stream object with many streams".to_string());
    }
    Ok(ObjectIndex {
        kind: footer.kind,
        size,
        blocks,
    })
}
