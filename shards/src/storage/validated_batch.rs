//! A produced batch checked once, by the shard that parsed the request: the owner's order
//! stage reads the facts it needs from here instead of parsing the header again.

use bytes::Bytes;
use sluice_net::ErrorCode;
use sluice_net::record_batch::{
    BatchError, Compression, RecordBatchBuilder, RecordBatchHeader, decode_records,
};

/// One partition's records of a Produce request that passed the parse stage's checks: exactly
/// one v2 batch (as Kafka requires from Produce v3 on), whole, with a valid CRC and a sane
/// record count; no control batch (only coordinators write markers); a transactional batch
/// only from an idempotent producer naming its transactional id.
#[derive(Debug, Clone)]
pub struct ValidatedBatch {
    bytes: Bytes,
    facts: BatchFacts,
}

/// The header fields the order stage uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchFacts {
    /// -1 for a producer that is not idempotent.
    pub producer_id: i64,
    /// The producer's epoch.
    pub producer_epoch: i16,
    /// The first record's sequence number.
    pub base_sequence: i32,
    /// Records in the batch (at least 1).
    pub records_count: i32,
    /// Offset delta of the last record (`records_count - 1`).
    pub last_offset_delta: i32,
    /// The largest record timestamp (CreateTime).
    pub max_timestamp: i64,
    /// Part of a transaction.
    pub transactional: bool,
}

impl ValidatedBatch {
    /// Checks `records` of a Produce request (v3 or later: `api/implemented.rs`);
    /// `transactional` says whether the request names a transactional id. The error is what
    /// Kafka answers for that partition.
    pub fn validate(
        transactional: bool,
        records: Option<Bytes>,
    ) -> Result<ValidatedBatch, ErrorCode> {
        let records = records.ok_or(ErrorCode::InvalidRecord)?;
        let header = RecordBatchHeader::validate(&records).map_err(|error| match error {
            BatchError::UnsupportedMagic(_) => ErrorCode::UnsupportedForMessageFormat,
            // More bytes than the first batch: a second batch, which Kafka refuses from v3 on.
            BatchError::LengthMismatch { declared, actual } if declared < actual => {
                ErrorCode::InvalidRecord
            }
            BatchError::UnknownCompression(_) => ErrorCode::UnsupportedCompressionType,
            BatchError::InvalidRecordCount(_) => ErrorCode::InvalidRecord,
            _ => ErrorCode::CorruptMessage,
        })?;
        if header.records_count() <= 0 || header.last_offset_delta() != header.records_count() - 1 {
            return Err(ErrorCode::InvalidRecord);
        }
        if header.is_control() || (header.is_transactional() && header.producer_id() < 0) {
            return Err(ErrorCode::InvalidRecord);
        }
        if header.is_transactional() && !transactional {
            // Kafka authorizes the (missing) transactional id and refuses.
            return Err(ErrorCode::TransactionalIdAuthorizationFailed);
        }
        let facts = BatchFacts {
            producer_id: header.producer_id(),
            producer_epoch: header.producer_epoch(),
            base_sequence: header.base_sequence(),
            records_count: header.records_count(),
            last_offset_delta: header.last_offset_delta(),
            max_timestamp: header.max_timestamp(),
            transactional: header.is_transactional(),
        };
        Ok(ValidatedBatch {
            bytes: records,
            facts,
        })
    }

    /// The batch's bytes, as the client sent them.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// The header fields the order stage uses.
    pub fn facts(&self) -> BatchFacts {
        self.facts
    }

    /// Bytes of the batch.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether the batch has no bytes (never, once validated).
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The batch compressed with `compression` (the topic's compression.type), as Kafka
    /// recompresses a batch whose codec differs from the topic's: same records, timestamps,
    /// producer, sequence and transactional flag, a new CRC.
    pub fn recompressed(self, compression: Compression) -> Result<ValidatedBatch, ErrorCode> {
        let header =
            RecordBatchHeader::parse(&self.bytes).map_err(|_| ErrorCode::CorruptMessage)?;
        if header.compression() == Ok(compression) {
            return Ok(self);
        }
        let records = decode_records(&self.bytes, crate::DECOMPRESSED_BATCH_BYTES_MAX)
            .map_err(|_| ErrorCode::CorruptMessage)?;
        let mut builder = RecordBatchBuilder::new(compression)
            .base_offset(header.base_offset())
            .producer(
                header.producer_id(),
                header.producer_epoch(),
                header.base_sequence(),
            )
            .transactional(header.is_transactional());
        for record in &records {
            let headers: Vec<(&[u8], Option<&[u8]>)> = record
                .headers
                .iter()
                .map(|h| (&h.key[..], h.value.as_deref()))
                .collect();
            builder.append(
                header
                    .base_timestamp()
                    .saturating_add(record.timestamp_delta),
                record.key.as_deref(),
                record.value.as_deref(),
                &headers,
            );
        }
        let bytes = builder.build().map_err(|_| ErrorCode::CorruptMessage)?;
        ValidatedBatch::validate(header.is_transactional(), Some(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(producer_id: i64, transactional: bool) -> Bytes {
        let mut builder = RecordBatchBuilder::new(Compression::None);
        if producer_id >= 0 {
            builder = builder.producer(producer_id, 0, 5);
        }
        let mut builder = builder.transactional(transactional);
        builder.append(1_000, None, Some(b"a"), &[]);
        builder.append(1_000, None, Some(b"b"), &[]);
        builder.build().expect("builds")
    }

    #[test]
    fn a_valid_batch_keeps_its_facts() {
        let checked = ValidatedBatch::validate(false, Some(batch(7, false))).expect("valid");
        let facts = checked.facts();
        assert_eq!((facts.producer_id, facts.base_sequence), (7, 5));
        assert_eq!((facts.records_count, facts.last_offset_delta), (2, 1));
        assert!(!facts.transactional);
    }

    #[test]
    fn refusals_carry_kafkas_codes() {
        assert_eq!(
            ValidatedBatch::validate(false, None).unwrap_err(),
            ErrorCode::InvalidRecord
        );
        let mut corrupt = batch(-1, false).to_vec();
        let last = corrupt.len() - 1;
        corrupt[last] ^= 0xff;
        assert_eq!(
            ValidatedBatch::validate(false, Some(Bytes::from(corrupt))).unwrap_err(),
            ErrorCode::CorruptMessage
        );
        assert_eq!(
            ValidatedBatch::validate(false, Some(batch(7, true))).unwrap_err(),
            ErrorCode::TransactionalIdAuthorizationFailed
        );
        assert!(ValidatedBatch::validate(true, Some(batch(7, true))).is_ok());
        let mut two = batch(-1, false).to_vec();
        two.extend_from_slice(&batch(-1, false));
        assert_eq!(
            ValidatedBatch::validate(false, Some(Bytes::from(two))).unwrap_err(),
            ErrorCode::InvalidRecord
        );
    }

    #[test]
    fn recompression_keeps_records_and_facts() {
        let plain = ValidatedBatch::validate(false, Some(batch(7, false))).expect("valid");
        let facts = plain.facts();
        let records = decode_records(plain.bytes(), 1 << 20).unwrap();
        let zstd = plain.recompressed(Compression::Zstd).expect("recompressed");
        let header = RecordBatchHeader::parse(zstd.bytes()).unwrap();
        assert_eq!(header.compression(), Ok(Compression::Zstd));
        assert_eq!(zstd.facts(), facts);
        assert_eq!(decode_records(zstd.bytes(), 1 << 20).unwrap(), records);
        let before = zstd.bytes().clone();
        let same = zstd.recompressed(Compression::Zstd).expect("unchanged");
        assert_eq!(
            same.bytes(),
            &before,
            "a batch already in the codec is kept as sent"
        );
    }
}
