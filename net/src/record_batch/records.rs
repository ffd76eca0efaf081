//! Bounded decoding of the records inside a v2 batch (decompressing first).
//!
//! Helpers: `decode_records`.

use bytes::{Buf, Bytes};

use super::header::RECORD_MIN_BYTES;
use super::varint::{get_varint, get_varlong};
use super::{BATCH_HEADER_BYTES, BatchError, Compression, RecordBatchHeader, compression};

/// Least bytes one record header takes (two one-byte varints).
const RECORD_HEADER_MIN_BYTES: usize = 2;

/// One record of a batch. `key`, `value` and header values are slices of the
/// batch (uncompressed) or of the decompressed buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Record attributes (unused by Kafka today).
    pub attributes: i8,
    /// Timestamp relative to the batch's base timestamp.
    pub timestamp_delta: i64,
    /// Offset relative to the batch's base offset.
    pub offset_delta: i32,
    /// The key, or `None` for a null key.
    pub key: Option<Bytes>,
    /// The value, or `None` for a tombstone.
    pub value: Option<Bytes>,
    /// Record headers.
    pub headers: Vec<RecordHeader>,
}

/// One record header. Kafka's header keys are UTF-8 strings; they are left as
/// bytes here (not checked, not copied).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordHeader {
    /// Header key.
    pub key: Bytes,
    /// Header value, `None` for null.
    pub value: Option<Bytes>,
}

/// Validates the batch (as [`RecordBatchHeader::validate`]), decompresses its
/// records (at most `max_decompressed_bytes`) and decodes them. The record
/// count is checked against the bytes available before anything is allocated.
pub fn decode_records(
    batch: &Bytes,
    max_decompressed_bytes: usize,
) -> Result<Vec<Record>, BatchError> {
    let header = RecordBatchHeader::validate(batch)?;
    let count = header.records_count();
    let codec = header.compression()?;
    let mut data = match codec {
        Compression::None => batch.slice(BATCH_HEADER_BYTES..),
        codec => Bytes::from(compression::decompress(
            codec,
            header.records_bytes(),
            max_decompressed_bytes,
        )?),
    };
    let count = usize::try_from(count).map_err(|_| BatchError::InvalidRecordCount(count))?;
    if count.saturating_mul(RECORD_MIN_BYTES) > data.len() {
        return Err(BatchError::InvalidRecordCount(header.records_count()));
    }
    let mut records = Vec::with_capacity(crate::wire::prealloc_len::<Record>(count));
    for index in 0..count {
        records.push(decode_record(&mut data, index)?);
    }
    if !data.is_empty() {
        return Err(BatchError::TrailingRecordBytes(data.len()));
    }
    Ok(records)
}

fn decode_record(data: &mut Bytes, index: usize) -> Result<Record, BatchError> {
    let bad = |reason| BatchError::MalformedRecord { index, reason };
    let len = get_varint(data).ok_or(bad("truncated length"))?;
    let len = usize::try_from(len).map_err(|_| bad("negative length"))?;
    if len > data.len() {
        return Err(bad("length beyond the batch"));
    }
    let mut r = data.split_to(len);
    if !r.has_remaining() {
        return Err(bad("empty record"));
    }
    let attributes = r.get_i8();
    let timestamp_delta = get_varlong(&mut r).ok_or(bad("truncated timestamp delta"))?;
    let offset_delta = get_varint(&mut r).ok_or(bad("truncated offset delta"))?;
    let key = get_nullable(&mut r).ok_or(bad("bad key"))?;
    let value = get_nullable(&mut r).ok_or(bad("bad value"))?;
    let n = get_varint(&mut r).ok_or(bad("truncated header count"))?;
    let n = usize::try_from(n).map_err(|_| bad("negative header count"))?;
    if n.saturating_mul(RECORD_HEADER_MIN_BYTES) > r.len() {
        return Err(bad("header count beyond the record"));
    }
    let mut headers = Vec::with_capacity(n);
    for _ in 0..n {
        let key = get_nullable(&mut r)
            .flatten()
            .ok_or(bad("bad header key"))?;
        let value = get_nullable(&mut r).ok_or(bad("bad header value"))?;
        headers.push(RecordHeader { key, value });
    }
    if r.has_remaining() {
        return Err(bad("bytes after the headers"));
    }
    Ok(Record {
        attributes,
        timestamp_delta,
        offset_delta,
        key,
        value,
        headers,
    })
}

/// A varint length (-1 = null) then that many bytes; `None` if malformed.
fn get_nullable(r: &mut Bytes) -> Option<Option<Bytes>> {
    let len = get_varint(r)?;
    if len == -1 {
        return Some(None);
    }
    let len = usize::try_from(len).ok()?;
    if len > r.len() {
        return None;
    }
    Some(Some(r.split_to(len)))
}
