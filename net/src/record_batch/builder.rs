//! Encoding a v2 record batch: data batches (optionally compressed,
//! idempotent / transactional) and control batches (transaction markers).
//!
//! Helpers: `RecordBatchBuilder::new`, `RecordBatchBuilder::append`,
//! `RecordBatchBuilder::append_control`, `RecordBatchBuilder::build`,
//! `RecordBatchBuilder::end_txn_marker`.

use bytes::{BufMut, Bytes, BytesMut};

use super::header::{ATTRIBUTES, CONTROL_BIT, CRC, TRANSACTIONAL_BIT};
use super::varint::{put_varint, put_varlong, varint_len};
use super::{
    BATCH_HEADER_BYTES, BatchError, Compression, LOG_OVERHEAD_BYTES, MAGIC_V2, compression,
};

/// Kind of a control record (the key of a transaction marker).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlRecordType {
    /// Transaction aborted.
    Abort = 0,
    /// Transaction committed.
    Commit = 1,
}

/// Builds one v2 record batch. Offsets deltas are assigned 0, 1, 2, … in
/// append order; the base timestamp is the first record's.
#[derive(Debug, Clone)]
pub struct RecordBatchBuilder {
    compression: Compression,
    base_offset: i64,
    partition_leader_epoch: i32,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    transactional: bool,
    control: bool,
    base_timestamp: Option<i64>,
    max_timestamp: i64,
    count: i32,
    records: BytesMut,
}

impl RecordBatchBuilder {
    /// A builder for a non-idempotent batch (producer id -1) compressed with `compression`.
    pub fn new(compression: Compression) -> Self {
        RecordBatchBuilder {
            compression,
            base_offset: 0,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
            transactional: false,
            control: false,
            base_timestamp: None,
            max_timestamp: -1,
            count: 0,
            records: BytesMut::new(),
        }
    }

    /// Sets the base offset (a broker patches it on append anyway).
    pub fn base_offset(mut self, base_offset: i64) -> Self {
        self.base_offset = base_offset;
        self
    }

    /// Sets the partition leader epoch.
    pub fn partition_leader_epoch(mut self, epoch: i32) -> Self {
        self.partition_leader_epoch = epoch;
        self
    }

    /// Marks the batch idempotent: producer id, epoch and first sequence.
    pub fn producer(mut self, producer_id: i64, producer_epoch: i16, base_sequence: i32) -> Self {
        self.producer_id = producer_id;
        self.producer_epoch = producer_epoch;
        self.base_sequence = base_sequence;
        self
    }

    /// Sets the transactional attribute.
    pub fn transactional(mut self, transactional: bool) -> Self {
        self.transactional = transactional;
        self
    }

    /// Sets the control attribute (use [`Self::append_control`] for the records).
    pub fn control(mut self, control: bool) -> Self {
        self.control = control;
        self
    }

    /// Number of records appended so far.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// No record appended yet.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Appends one record.
    pub fn append(
        &mut self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&[u8], Option<&[u8]>)],
    ) {
        let base_timestamp = *self.base_timestamp.get_or_insert(timestamp);
        self.max_timestamp = self.max_timestamp.max(timestamp);
        let timestamp_delta = timestamp.wrapping_sub(base_timestamp);
        encode_record(
            &mut self.records,
            0,
            timestamp_delta,
            self.count,
            key,
            value,
            headers,
        );
        self.count += 1;
    }

    /// Appends a transaction marker record (key: version 0 + type; value:
    /// version 0 + coordinator epoch), as Kafka's `EndTransactionMarker`.
    pub fn append_control(
        &mut self,
        timestamp: i64,
        kind: ControlRecordType,
        coordinator_epoch: i32,
    ) {
        let mut key = [0u8; 4];
        key[2..].copy_from_slice(&(kind as i16).to_be_bytes());
        let mut value = [0u8; 6];
        value[2..].copy_from_slice(&coordinator_epoch.to_be_bytes());
        self.append(timestamp, Some(&key), Some(&value), &[]);
    }

    /// A complete transaction-marker control batch for one producer.
    pub fn end_txn_marker(
        producer_id: i64,
        producer_epoch: i16,
        kind: ControlRecordType,
        coordinator_epoch: i32,
        timestamp: i64,
    ) -> Bytes {
        let mut b = RecordBatchBuilder::new(Compression::None)
            .producer(producer_id, producer_epoch, -1)
            .transactional(true)
            .control(true);
        b.append_control(timestamp, kind, coordinator_epoch);
        // Infallible: one record, uncompressed.
        b.build().unwrap_or_default()
    }

    /// Encodes the batch (compressing the records) with a valid CRC32C.
    pub fn build(&self) -> Result<Bytes, BatchError> {
        if self.count == 0 {
            return Err(BatchError::Empty);
        }
        let payload = compression::compress(self.compression, &self.records)?;
        let mut out = BytesMut::with_capacity(BATCH_HEADER_BYTES + payload.len());
        let batch_length = (BATCH_HEADER_BYTES - LOG_OVERHEAD_BYTES + payload.len()) as i32;
        let mut attributes = self.compression as i16;
        if self.transactional {
            attributes |= TRANSACTIONAL_BIT;
        }
        if self.control {
            attributes |= CONTROL_BIT;
        }
        out.put_i64(self.base_offset);
        out.put_i32(batch_length);
        out.put_i32(self.partition_leader_epoch);
        out.put_i8(MAGIC_V2);
        out.put_u32(0); // CRC, below
        out.put_i16(attributes);
        out.put_i32(self.count - 1);
        out.put_i64(self.base_timestamp.unwrap_or(-1));
        out.put_i64(self.max_timestamp);
        out.put_i64(self.producer_id);
        out.put_i16(self.producer_epoch);
        out.put_i32(self.base_sequence);
        out.put_i32(self.count);
        out.put_slice(&payload);
        debug_assert_eq!(out.len(), LOG_OVERHEAD_BYTES + batch_length as usize);
        let crc = crc32c::crc32c(&out[ATTRIBUTES..]);
        out[CRC..CRC + 4].copy_from_slice(&crc.to_be_bytes());
        Ok(out.freeze())
    }
}

/// Appends one record (length-prefixed, as inside a v2 batch) to `out`.
pub(super) fn encode_record(
    out: &mut BytesMut,
    attributes: i8,
    timestamp_delta: i64,
    offset_delta: i32,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: &[(&[u8], Option<&[u8]>)],
) {
    let mut body = BytesMut::new();
    body.put_i8(attributes);
    put_varlong(&mut body, timestamp_delta);
    put_varint(&mut body, offset_delta);
    put_nullable(&mut body, key);
    put_nullable(&mut body, value);
    put_varint(&mut body, headers.len() as i32);
    for (k, v) in headers {
        put_nullable(&mut body, Some(k));
        put_nullable(&mut body, *v);
    }
    out.reserve(varint_len(body.len() as i32) + body.len());
    put_varint(out, body.len() as i32);
    out.put_slice(&body);
}

fn put_nullable(buf: &mut BytesMut, v: Option<&[u8]>) {
    match v {
        None => put_varint(buf, -1),
        Some(v) => {
            put_varint(buf, v.len() as i32);
            buf.put_slice(v);
        }
    }
}
