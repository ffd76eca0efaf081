//! Kafka RecordBatch (magic v2): a zero-copy header view with CRC32C
//! verification and in-place patching, an iterator that splits a `records`
//! field into batches, a bounded record decoder (with decompression) and a
//! batch builder.
//!
//! Layout of a v2 batch (all big-endian; the CRC covers `attributes` to the end):
//!
//! ```text
//!  0 baseOffset i64        8 batchLength i32        12 partitionLeaderEpoch i32
//! 16 magic i8             17 crc u32 (CRC32C)       21 attributes i16
//! 23 lastOffsetDelta i32  27 baseTimestamp i64      35 maxTimestamp i64
//! 43 producerId i64       51 producerEpoch i16      53 baseSequence i32
//! 57 recordsCount i32     61 records...
//! ```
//!
//! Entry points: `RecordBatchHeader::parse`, `RecordBatchHeader::validate`,
//! `set_base_offset`, `set_partition_leader_epoch`, `set_max_timestamp`,
//! `batches`, `batches_allow_partial`, `decode_records`, `RecordBatchBuilder`,
//! `retain_records` (the log cleaner's rewrite).

mod builder;
mod compression;
mod header;
mod iter;
mod records;
mod retain;
mod varint;

pub use builder::{ControlRecordType, RecordBatchBuilder};
pub use compression::Compression;
pub use header::{
    RecordBatchHeader, TimestampType, set_base_offset, set_max_timestamp,
    set_partition_leader_epoch, whole_batch_crc32c,
};
pub use iter::{BatchIter, batches, batches_allow_partial};
pub use records::{Record, RecordHeader, decode_records};
pub use retain::retain_records;

/// Bytes before `batchLength` counts: baseOffset + batchLength (Kafka's LOG_OVERHEAD).
pub const LOG_OVERHEAD_BYTES: usize = 12;
/// Size of the v2 batch header, up to the first record.
pub const BATCH_HEADER_BYTES: usize = 61;
/// The only message format Sluice accepts.
pub const MAGIC_V2: i8 = 2;

/// Why a record batch was refused. Never a panic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// Fewer bytes than the header or the declared length need.
    #[error("truncated batch: needed {needed} bytes, {remaining} remain")]
    Truncated { needed: usize, remaining: usize },
    /// `batchLength` smaller than a v2 header.
    #[error("batch length {0} is smaller than the v2 header")]
    BatchLengthTooSmall(i32),
    /// The slice given is not exactly one batch.
    #[error("batch declares {declared} bytes but the slice has {actual}")]
    LengthMismatch { declared: usize, actual: usize },
    /// Not magic 2.
    #[error("unsupported magic {0}")]
    UnsupportedMagic(i8),
    /// CRC32C of attributes..end does not match the header.
    #[error("CRC mismatch: header says {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch { stored: u32, computed: u32 },
    /// Compression codec 5..7.
    #[error("unknown compression codec {0}")]
    UnknownCompression(u8),
    /// `recordsCount` is negative or cannot fit in the bytes of the batch.
    #[error("invalid record count {0}")]
    InvalidRecordCount(i32),
    /// Decompressed data larger than the caller's cap.
    #[error("decompressed records exceed {max_decompressed_bytes} bytes")]
    DecompressedTooLarge { max_decompressed_bytes: usize },
    /// The compressed data is corrupt.
    #[error("{codec:?} decompression failed: {reason}")]
    Decompress { codec: Compression, reason: String },
    /// A record is malformed.
    #[error("malformed record {index}: {reason}")]
    MalformedRecord { index: usize, reason: &'static str },
    /// Bytes left after the last record.
    #[error("{0} bytes after the last record")]
    TrailingRecordBytes(usize),
    /// Building a batch with no record.
    #[error("a batch needs at least one record")]
    Empty,
    /// Compression while building failed.
    #[error("{codec:?} compression failed: {reason}")]
    Compress { codec: Compression, reason: String },
}
