//! The producer's record batch writer: the same bytes as
//! `sluice_net::record_batch::RecordBatchBuilder` with no compression and no
//! producer id (a test checks byte equality), written in one pass into one
//! buffer sized at start, because at hundreds of thousands of messages per
//! second the builder's per-record allocation and four copies of every
//! payload were a quarter of the load generator's CPU.
//!
//! Helpers: `BatchWriter::{new, append, len, count, finish}`.

use bytes::{BufMut, Bytes, BytesMut};
use sluice_net::record_batch::{BATCH_HEADER_BYTES, LOG_OVERHEAD_BYTES, MAGIC_V2};

/// Offset of the CRC in the batch header; the CRC covers the bytes after it.
const CRC_OFFSET: usize = 17;
/// Offset of the attributes, the first byte the CRC covers.
const ATTRIBUTES_OFFSET: usize = 21;

/// An uncompressed, non-idempotent v2 batch being written.
pub struct BatchWriter {
    buf: BytesMut,
    count: i32,
    base_timestamp: i64,
    max_timestamp: i64,
}

impl BatchWriter {
    /// A writer whose buffer holds `capacity_bytes` of records before it grows.
    pub fn new(capacity_bytes: usize) -> BatchWriter {
        let mut buf = BytesMut::with_capacity(BATCH_HEADER_BYTES + capacity_bytes);
        buf.put_bytes(0, BATCH_HEADER_BYTES);
        BatchWriter {
            buf,
            count: 0,
            base_timestamp: -1,
            max_timestamp: -1,
        }
    }

    /// Records appended.
    pub fn count(&self) -> usize {
        self.count as usize
    }

    /// Bytes of the batch so far (header included).
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether no record was appended.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Appends one record with no headers.
    pub fn append(&mut self, timestamp: i64, key: Option<&[u8]>, value: &[u8]) {
        if self.count == 0 {
            self.base_timestamp = timestamp;
        }
        self.max_timestamp = self.max_timestamp.max(timestamp);
        let timestamp_delta = timestamp.wrapping_sub(self.base_timestamp);
        let offset_delta = self.count;
        let key_len = key.map_or(-1, |k| k.len() as i64);
        let body_len = 1
            + varlong_len(timestamp_delta)
            + varlong_len(i64::from(offset_delta))
            + varlong_len(key_len)
            + key.map_or(0, |k| k.len())
            + varlong_len(value.len() as i64)
            + value.len()
            + varlong_len(0);
        self.buf.reserve(varlong_len(body_len as i64) + body_len);
        put_varlong(&mut self.buf, body_len as i64);
        self.buf.put_i8(0); // attributes
        put_varlong(&mut self.buf, timestamp_delta);
        put_varlong(&mut self.buf, i64::from(offset_delta));
        put_varlong(&mut self.buf, key_len);
        if let Some(k) = key {
            self.buf.put_slice(k);
        }
        put_varlong(&mut self.buf, value.len() as i64);
        self.buf.put_slice(value);
        put_varlong(&mut self.buf, 0); // headers
        self.count += 1;
    }

    /// The finished batch: header filled in, CRC32C computed.
    pub fn finish(mut self) -> Bytes {
        let batch_length = (self.buf.len() - LOG_OVERHEAD_BYTES) as i32;
        let mut header = [0u8; BATCH_HEADER_BYTES];
        let mut h = &mut header[..];
        h.put_i64(0); // base offset, assigned by the broker
        h.put_i32(batch_length);
        h.put_i32(-1); // partition leader epoch
        h.put_i8(MAGIC_V2);
        h.put_u32(0); // CRC, below
        h.put_i16(0); // attributes: no compression, create time, not transactional
        h.put_i32(self.count - 1);
        h.put_i64(self.base_timestamp);
        h.put_i64(self.max_timestamp);
        h.put_i64(-1); // producer id
        h.put_i16(-1); // producer epoch
        h.put_i32(-1); // base sequence
        h.put_i32(self.count);
        self.buf[..BATCH_HEADER_BYTES].copy_from_slice(&header);
        let crc = crc32c::crc32c(&self.buf[ATTRIBUTES_OFFSET..]);
        self.buf[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
        self.buf.freeze()
    }
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn varlong_len(v: i64) -> usize {
    let z = zigzag(v);
    (64 - (z | 1).leading_zeros() as usize).div_ceil(7)
}

fn put_varlong(buf: &mut BytesMut, v: i64) {
    let mut z = zigzag(v);
    while z >= 0x80 {
        buf.put_u8((z as u8) | 0x80);
        z >>= 7;
    }
    buf.put_u8(z as u8);
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_net::record_batch::{
        Compression, RecordBatchBuilder, RecordBatchHeader, decode_records,
    };

    /// Timestamp, key, value.
    type TestRecord<'a> = (i64, Option<&'a [u8]>, &'a [u8]);

    #[test]
    fn same_bytes_as_the_codec_builder() {
        let value_big = vec![7u8; 300];
        let records: Vec<TestRecord<'_>> = vec![
            (1_700_000_000_000, None, b"hello"),
            (1_700_000_000_003, Some(b"key-1"), &value_big),
            (1_699_999_999_990, Some(b""), b""),
            (1_700_000_100_000, None, &value_big[..200]),
        ];
        let mut ours = BatchWriter::new(16);
        let mut theirs = RecordBatchBuilder::new(Compression::None);
        for (ts, key, value) in &records {
            ours.append(*ts, *key, value);
            theirs.append(*ts, *key, Some(value), &[]);
        }
        assert_eq!(ours.count(), 4);
        let ours = ours.finish();
        assert_eq!(ours, theirs.build().unwrap());
        RecordBatchHeader::validate(&ours).unwrap();
        let decoded = decode_records(&ours, 1 << 20).unwrap();
        assert_eq!(decoded.len(), 4);
        assert_eq!(decoded[1].key.as_deref(), Some(&b"key-1"[..]));
        assert_eq!(decoded[3].value.as_deref(), Some(&value_big[..200]));
    }

    #[test]
    fn varlong_lengths() {
        for v in [
            0i64,
            1,
            -1,
            63,
            64,
            -64,
            -65,
            8191,
            8192,
            i64::MAX,
            i64::MIN,
        ] {
            let mut b = BytesMut::new();
            put_varlong(&mut b, v);
            assert_eq!(b.len(), varlong_len(v), "{v}");
        }
    }
}
