//! Rewriting a v2 batch to hold some of its records, as Kafka's log cleaner does
//! (`MemoryRecords.filterTo`): the batch keeps its base offset and its last offset delta, so
//! its offsets, its producer's sequence range and the offsets of the records kept do not
//! change.
//!
//! Helpers: `retain_records`.

use bytes::{BufMut, Bytes, BytesMut};

use super::builder::encode_record;
use super::header::{
    ATTRIBUTES, BASE_OFFSET, COMPRESSION_MASK, CRC, LAST_OFFSET_DELTA, PRODUCER_ID,
    TIMESTAMP_TYPE_BIT,
};
use super::{
    BATCH_HEADER_BYTES, BatchError, LOG_OVERHEAD_BYTES, MAGIC_V2, Record, RecordBatchHeader,
    TimestampType, compression,
};

/// `batch` (one whole, valid v2 batch) holding only `kept`, records decoded from it, in their
/// order. The header is kept but for the record count, the CRC, the length and, for
/// CreateTime, the max timestamp (the largest kept). With nothing kept, the batch becomes
/// empty (record count 0, no compression), as Kafka's cleaner leaves a batch it must keep for
/// its offsets: readers skip it and move past its last offset.
pub fn retain_records(batch: &[u8], kept: &[Record]) -> Result<Bytes, BatchError> {
    let header = RecordBatchHeader::validate(batch)?;
    let codec = header.compression()?;
    let mut records = BytesMut::new();
    let mut max_timestamp = None::<i64>;
    for record in kept {
        let headers: Vec<(&[u8], Option<&[u8]>)> = record
            .headers
            .iter()
            .map(|h| (&h.key[..], h.value.as_deref()))
            .collect();
        encode_record(
            &mut records,
            record.attributes,
            record.timestamp_delta,
            record.offset_delta,
            record.key.as_deref(),
            record.value.as_deref(),
            &headers,
        );
        let timestamp = header.base_timestamp().wrapping_add(record.timestamp_delta);
        max_timestamp = Some(max_timestamp.map_or(timestamp, |m| m.max(timestamp)));
    }
    let mut attributes = header.attributes();
    let payload = if kept.is_empty() {
        attributes &= !COMPRESSION_MASK;
        Vec::new()
    } else {
        compression::compress(codec, &records)?
    };
    let max_timestamp = match (header.timestamp_type(), max_timestamp) {
        (TimestampType::CreateTime, Some(max)) => max,
        _ => header.max_timestamp(),
    };
    debug_assert_eq!(
        header.attributes() & TIMESTAMP_TYPE_BIT != 0,
        header.timestamp_type() == TimestampType::LogAppendTime
    );
    let mut out = BytesMut::with_capacity(BATCH_HEADER_BYTES + payload.len());
    out.put_slice(&batch[BASE_OFFSET..LOG_OVERHEAD_BYTES - 4]);
    out.put_i32((BATCH_HEADER_BYTES - LOG_OVERHEAD_BYTES + payload.len()) as i32);
    out.put_i32(header.partition_leader_epoch());
    out.put_i8(MAGIC_V2);
    out.put_u32(0); // CRC, below
    out.put_i16(attributes);
    out.put_slice(&batch[LAST_OFFSET_DELTA..LAST_OFFSET_DELTA + 12]); // last delta, base time
    out.put_i64(max_timestamp);
    out.put_slice(&batch[PRODUCER_ID..PRODUCER_ID + 14]); // producer id, epoch, base sequence
    out.put_i32(kept.len() as i32);
    out.put_slice(&payload);
    let crc = crc32c::crc32c(&out[ATTRIBUTES..]);
    out[CRC..CRC + 4].copy_from_slice(&crc.to_be_bytes());
    Ok(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record_batch::{Compression, RecordBatchBuilder, decode_records};

    fn batch(compression: Compression) -> Bytes {
        let mut builder = RecordBatchBuilder::new(compression)
            .base_offset(100)
            .producer(7, 1, 40);
        for i in 0..5u8 {
            builder.append(
                1_000 + i64::from(i),
                Some(&[b'k', i]),
                (i != 3).then_some(&[b'v', i][..]),
                &[(b"h", Some(b"x"))],
            );
        }
        builder.build().expect("built")
    }

    #[test]
    fn kept_records_keep_their_offsets_and_the_batch_its_range() {
        for compression in [Compression::None, Compression::Lz4, Compression::Zstd] {
            let original = batch(compression);
            let records = decode_records(&original, 1 << 20).expect("decoded");
            let kept = vec![records[1].clone(), records[3].clone()];
            let rewritten = retain_records(&original, &kept).expect("rewritten");
            let header = RecordBatchHeader::validate(&rewritten).expect("valid");
            header.verify_crc().expect("crc");
            assert_eq!(header.base_offset(), 100);
            assert_eq!(header.last_offset(), 104, "{compression:?}");
            assert_eq!(header.records_count(), 2);
            assert_eq!(header.producer_id(), 7);
            assert_eq!(header.producer_epoch(), 1);
            assert_eq!(header.base_sequence(), 40);
            assert_eq!(header.max_timestamp(), 1_003);
            assert_eq!(header.compression(), Ok(compression));
            assert_eq!(decode_records(&rewritten, 1 << 20).expect("decoded"), kept);
        }
    }

    #[test]
    fn nothing_kept_leaves_an_empty_uncompressed_batch_over_the_same_offsets() {
        let original = batch(Compression::Lz4);
        let rewritten = retain_records(&original, &[]).expect("rewritten");
        assert_eq!(rewritten.len(), BATCH_HEADER_BYTES);
        let header = RecordBatchHeader::validate(&rewritten).expect("valid");
        header.verify_crc().expect("crc");
        assert_eq!((header.base_offset(), header.last_offset()), (100, 104));
        assert_eq!(header.records_count(), 0);
        assert_eq!(header.compression(), Ok(Compression::None));
        assert_eq!(header.max_timestamp(), 1_004);
    }
}
