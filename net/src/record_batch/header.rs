//! Zero-copy view of a RecordBatch v2 header, and in-place patches.
//!
//! Helpers: `RecordBatchHeader::parse`, `RecordBatchHeader::validate`,
//! `RecordBatchHeader::verify_crc`, `set_base_offset`,
//! `set_partition_leader_epoch`, `set_max_timestamp`.

use super::{BATCH_HEADER_BYTES, BatchError, Compression, LOG_OVERHEAD_BYTES, MAGIC_V2};

pub(crate) const BASE_OFFSET: usize = 0;
pub(crate) const BATCH_LENGTH: usize = 8;
pub(crate) const PARTITION_LEADER_EPOCH: usize = 12;
pub(crate) const MAGIC: usize = 16;
pub(crate) const CRC: usize = 17;
pub(crate) const ATTRIBUTES: usize = 21;
pub(crate) const LAST_OFFSET_DELTA: usize = 23;
pub(crate) const BASE_TIMESTAMP: usize = 27;
pub(crate) const MAX_TIMESTAMP: usize = 35;
pub(crate) const PRODUCER_ID: usize = 43;
pub(crate) const PRODUCER_EPOCH: usize = 51;
pub(crate) const BASE_SEQUENCE: usize = 53;
pub(crate) const RECORDS_COUNT: usize = 57;

pub(crate) const COMPRESSION_MASK: i16 = 0x07;
pub(crate) const TIMESTAMP_TYPE_BIT: i16 = 0x08;
pub(crate) const TRANSACTIONAL_BIT: i16 = 0x10;
pub(crate) const CONTROL_BIT: i16 = 0x20;
pub(crate) const DELETE_HORIZON_BIT: i16 = 0x40;
/// Least bytes one record takes (7 one-byte varints / fields).
pub(crate) const RECORD_MIN_BYTES: usize = 7;

/// Which clock a batch's timestamps come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampType {
    /// Set by the producer.
    CreateTime,
    /// Set by the broker on append.
    LogAppendTime,
}

/// A borrowed view of one v2 record batch (header and records). Accessors read
/// the header fields in place; nothing is copied.
#[derive(Debug, Clone, Copy)]
pub struct RecordBatchHeader<'a> {
    batch: &'a [u8],
}

impl<'a> RecordBatchHeader<'a> {
    /// Checks that `batch` is exactly one v2 batch (length, magic) and returns
    /// the view. Does not verify the CRC: see [`Self::validate`].
    pub fn parse(batch: &'a [u8]) -> Result<Self, BatchError> {
        if batch.len() < BATCH_HEADER_BYTES {
            return Err(BatchError::Truncated {
                needed: BATCH_HEADER_BYTES,
                remaining: batch.len(),
            });
        }
        let view = RecordBatchHeader { batch };
        let declared = view.batch_length();
        if (declared as i64) < (BATCH_HEADER_BYTES - LOG_OVERHEAD_BYTES) as i64 {
            return Err(BatchError::BatchLengthTooSmall(declared));
        }
        let total = LOG_OVERHEAD_BYTES + declared as usize;
        if total != batch.len() {
            return Err(BatchError::LengthMismatch {
                declared: total,
                actual: batch.len(),
            });
        }
        if view.magic() != MAGIC_V2 {
            return Err(BatchError::UnsupportedMagic(view.magic()));
        }
        Ok(view)
    }

    /// Everything the broker checks before accepting a batch without
    /// decompressing it: length, magic, CRC32C, compression codec, record count.
    pub fn validate(batch: &'a [u8]) -> Result<Self, BatchError> {
        let view = Self::parse(batch)?;
        view.verify_crc()?;
        view.compression()?;
        let count = view.records_count();
        let records_bytes = batch.len() - BATCH_HEADER_BYTES;
        let fits = view.compression()? != Compression::None
            || (count as usize).saturating_mul(RECORD_MIN_BYTES) <= records_bytes;
        if count < 0 || !fits || (count > 0 && view.last_offset_delta() < count - 1) {
            return Err(BatchError::InvalidRecordCount(count));
        }
        Ok(view)
    }

    /// Recomputes the CRC32C over attributes..end and compares it with the header.
    pub fn verify_crc(&self) -> Result<(), BatchError> {
        let computed = crc32c::crc32c(&self.batch[ATTRIBUTES..]);
        let stored = self.crc();
        if computed == stored {
            Ok(())
        } else {
            Err(BatchError::CrcMismatch { stored, computed })
        }
    }

    /// The whole batch.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.batch
    }
    /// The records section (possibly compressed).
    pub fn records_bytes(&self) -> &'a [u8] {
        &self.batch[BATCH_HEADER_BYTES..]
    }
    /// First offset of the batch.
    pub fn base_offset(&self) -> i64 {
        i64_at(self.batch, BASE_OFFSET)
    }
    /// Bytes after the `batchLength` field.
    pub fn batch_length(&self) -> i32 {
        i32_at(self.batch, BATCH_LENGTH)
    }
    /// Total bytes of the batch.
    pub fn total_len(&self) -> usize {
        self.batch.len()
    }
    /// Leader epoch stamped by the broker.
    pub fn partition_leader_epoch(&self) -> i32 {
        i32_at(self.batch, PARTITION_LEADER_EPOCH)
    }
    /// Message format (2).
    pub fn magic(&self) -> i8 {
        self.batch[MAGIC] as i8
    }
    /// CRC32C stored in the header.
    pub fn crc(&self) -> u32 {
        u32::from_be_bytes(arr(self.batch, CRC))
    }
    /// Raw attributes.
    pub fn attributes(&self) -> i16 {
        i16::from_be_bytes([self.batch[ATTRIBUTES], self.batch[ATTRIBUTES + 1]])
    }
    /// Compression codec (attributes bits 0-2).
    pub fn compression(&self) -> Result<Compression, BatchError> {
        Compression::from_id((self.attributes() & COMPRESSION_MASK) as u8)
    }
    /// Timestamp type (attributes bit 3).
    pub fn timestamp_type(&self) -> TimestampType {
        if self.attributes() & TIMESTAMP_TYPE_BIT != 0 {
            TimestampType::LogAppendTime
        } else {
            TimestampType::CreateTime
        }
    }
    /// Part of a transaction (attributes bit 4).
    pub fn is_transactional(&self) -> bool {
        self.attributes() & TRANSACTIONAL_BIT != 0
    }
    /// A control batch (commit / abort markers; attributes bit 5).
    pub fn is_control(&self) -> bool {
        self.attributes() & CONTROL_BIT != 0
    }
    /// The base timestamp is a delete horizon (attributes bit 6).
    pub fn has_delete_horizon(&self) -> bool {
        self.attributes() & DELETE_HORIZON_BIT != 0
    }
    /// Offset of the last record relative to the base offset.
    pub fn last_offset_delta(&self) -> i32 {
        i32_at(self.batch, LAST_OFFSET_DELTA)
    }
    /// Offset of the last record.
    pub fn last_offset(&self) -> i64 {
        self.base_offset()
            .wrapping_add(i64::from(self.last_offset_delta()))
    }
    /// Timestamp of the first record.
    pub fn base_timestamp(&self) -> i64 {
        i64_at(self.batch, BASE_TIMESTAMP)
    }
    /// Largest timestamp in the batch.
    pub fn max_timestamp(&self) -> i64 {
        i64_at(self.batch, MAX_TIMESTAMP)
    }
    /// Idempotent / transactional producer id (-1 if none).
    pub fn producer_id(&self) -> i64 {
        i64_at(self.batch, PRODUCER_ID)
    }
    /// Producer epoch.
    pub fn producer_epoch(&self) -> i16 {
        i16::from_be_bytes([self.batch[PRODUCER_EPOCH], self.batch[PRODUCER_EPOCH + 1]])
    }
    /// Sequence number of the first record.
    pub fn base_sequence(&self) -> i32 {
        i32_at(self.batch, BASE_SEQUENCE)
    }
    /// Number of records.
    pub fn records_count(&self) -> i32 {
        i32_at(self.batch, RECORDS_COUNT)
    }
}

/// CRC-32C of all of `batch`'s bytes, derived from the CRC the batch stores (which covers
/// everything from its attributes on) and a CRC of the 21 bytes before: a WAL can checksum a
/// batch without reading it again. Only as good as that stored CRC, so only for a batch that
/// passed [`RecordBatchHeader::validate`] or was built here; anything but exactly one whole
/// batch is checksummed in full.
pub fn whole_batch_crc32c(batch: &[u8]) -> u32 {
    const WHOLE_BATCH_CRC_COMBINE_BYTES_MIN: usize = 4096;
    let declared = (batch.len() >= BATCH_HEADER_BYTES)
        .then(|| i32_at(batch, BATCH_LENGTH))
        .and_then(|length| usize::try_from(length).ok());
    // Combining costs about as much as a pass over a few hundred bytes.
    if batch.len() < WHOLE_BATCH_CRC_COMBINE_BYTES_MIN
        || declared.map(|length| LOG_OVERHEAD_BYTES + length) != Some(batch.len())
    {
        return crc32c::crc32c(batch);
    }
    let stored = u32::from_be_bytes([batch[CRC], batch[CRC + 1], batch[CRC + 2], batch[CRC + 3]]);
    crate::crc32c_combine(
        crc32c::crc32c(&batch[..ATTRIBUTES]),
        stored,
        (batch.len() - ATTRIBUTES) as u64,
    )
}

/// Writes the base offset (outside the CRC) of the batch starting at `batch[0]`.
pub fn set_base_offset(batch: &mut [u8], base_offset: i64) -> Result<(), BatchError> {
    check_header(batch)?;
    batch[BASE_OFFSET..BASE_OFFSET + 8].copy_from_slice(&base_offset.to_be_bytes());
    Ok(())
}

/// Writes the partition leader epoch (outside the CRC).
pub fn set_partition_leader_epoch(batch: &mut [u8], epoch: i32) -> Result<(), BatchError> {
    check_header(batch)?;
    batch[PARTITION_LEADER_EPOCH..PARTITION_LEADER_EPOCH + 4].copy_from_slice(&epoch.to_be_bytes());
    Ok(())
}

/// Sets the timestamp type and max timestamp and recomputes the CRC, as
/// Kafka's `DefaultRecordBatch.setMaxTimestamp` does (used for LogAppendTime).
/// Nothing is written when both already hold these values.
pub fn set_max_timestamp(
    batch: &mut [u8],
    timestamp_type: TimestampType,
    max_timestamp: i64,
) -> Result<(), BatchError> {
    check_header(batch)?;
    let view = RecordBatchHeader { batch };
    if view.timestamp_type() == timestamp_type && view.max_timestamp() == max_timestamp {
        return Ok(());
    }
    let mut attributes = view.attributes() & !TIMESTAMP_TYPE_BIT;
    if timestamp_type == TimestampType::LogAppendTime {
        attributes |= TIMESTAMP_TYPE_BIT;
    }
    batch[ATTRIBUTES..ATTRIBUTES + 2].copy_from_slice(&attributes.to_be_bytes());
    batch[MAX_TIMESTAMP..MAX_TIMESTAMP + 8].copy_from_slice(&max_timestamp.to_be_bytes());
    let crc = crc32c::crc32c(&batch[ATTRIBUTES..]);
    batch[CRC..CRC + 4].copy_from_slice(&crc.to_be_bytes());
    Ok(())
}

fn check_header(batch: &[u8]) -> Result<(), BatchError> {
    if batch.len() < BATCH_HEADER_BYTES {
        return Err(BatchError::Truncated {
            needed: BATCH_HEADER_BYTES,
            remaining: batch.len(),
        });
    }
    Ok(())
}

fn arr<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&b[at..at + N]);
    a
}

fn i32_at(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(arr(b, at))
}

fn i64_at(b: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(arr(b, at))
}
