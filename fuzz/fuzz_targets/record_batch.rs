//! Arbitrary bytes as a `records` field: batch iteration, header validation
//! and bounded record decoding must never panic or abort.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sluice_net::record_batch::{RecordBatchHeader, batches, batches_allow_partial, decode_records};

/// Cap on decompressed records per batch in the fuzzer.
const DECOMPRESSED_BYTES_MAX: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let records = Bytes::copy_from_slice(data);
    for batch in batches(&records)
        .chain(batches_allow_partial(&records))
        .flatten()
    {
        let _ = RecordBatchHeader::validate(&batch);
        let _ = decode_records(&batch, DECOMPRESSED_BYTES_MAX);
    }
    // Skip the CRC so the record decoder sees arbitrary content too.
    if data.len() >= 61 {
        let mut fixed = data.to_vec();
        let crc = crc32c_of(&fixed[21..]);
        fixed[17..21].copy_from_slice(&crc.to_be_bytes());
        let _ = decode_records(&Bytes::from(fixed), DECOMPRESSED_BYTES_MAX);
    }
});

fn crc32c_of(b: &[u8]) -> u32 {
    // Castagnoli, bitwise: slow but dependency-free.
    let mut crc = !0u32;
    for &byte in b {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}
