//! Compression codecs of record batches, with a cap on decompressed size.
//!
//! Snappy uses the xerial framing the Java client writes (raw snappy is also
//! accepted when reading); LZ4 uses the standard frame format.
//!
//! Helpers: `Compression::from_id`, `decompress`, `compress`.

use std::io::{Read, Write};

use super::BatchError;

const XERIAL_MAGIC: [u8; 8] = [0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0];
const XERIAL_HEADER_BYTES: usize = 16;
/// Block size the xerial writer uses (snappy-java's default).
const XERIAL_BLOCK_BYTES: usize = 32 * 1024;

/// Compression codec of a batch (attributes bits 0-2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    /// Uncompressed.
    None = 0,
    /// gzip.
    Gzip = 1,
    /// Snappy (xerial framing).
    Snappy = 2,
    /// LZ4 frame.
    Lz4 = 3,
    /// Zstandard.
    Zstd = 4,
}

impl Compression {
    /// The codec with attribute value `id`.
    pub fn from_id(id: u8) -> Result<Compression, BatchError> {
        Ok(match id {
            0 => Compression::None,
            1 => Compression::Gzip,
            2 => Compression::Snappy,
            3 => Compression::Lz4,
            4 => Compression::Zstd,
            other => return Err(BatchError::UnknownCompression(other)),
        })
    }
}

/// Decompresses `data`, refusing to produce more than `max_bytes`.
pub(crate) fn decompress(
    codec: Compression,
    data: &[u8],
    max_bytes: usize,
) -> Result<Vec<u8>, BatchError> {
    let err = |e: std::io::Error| BatchError::Decompress {
        codec,
        reason: e.to_string(),
    };
    match codec {
        Compression::None => bounded(data, max_bytes),
        Compression::Gzip => {
            read_bounded(flate2::read::GzDecoder::new(data), max_bytes).map_err(|e| e.or(codec))
        }
        Compression::Lz4 => read_bounded(lz4_flex::frame::FrameDecoder::new(data), max_bytes)
            .map_err(|e| e.or(codec)),
        Compression::Zstd => {
            let mut decoder = zstd::stream::read::Decoder::new(data).map_err(err)?;
            // A hostile frame header can ask for a 2^27-byte window; allow no
            // more than the cap needs (but what common producer levels use).
            decoder
                .window_log_max(zstd_window_log_max(max_bytes))
                .map_err(err)?;
            read_bounded(decoder, max_bytes).map_err(|e| e.or(codec))
        }
        Compression::Snappy => snappy_decompress(data, max_bytes),
    }
}

/// Least and largest zstd window (log2 bytes) accepted when decompressing.
const ZSTD_WINDOW_LOG_MIN: u32 = 23;
const ZSTD_WINDOW_LOG_MAX: u32 = 27;

fn zstd_window_log_max(max_bytes: usize) -> u32 {
    let needed = usize::BITS - max_bytes.saturating_sub(1).leading_zeros();
    needed.clamp(ZSTD_WINDOW_LOG_MIN, ZSTD_WINDOW_LOG_MAX)
}

/// Compresses `data` the way Kafka clients do.
pub(crate) fn compress(codec: Compression, data: &[u8]) -> Result<Vec<u8>, BatchError> {
    let err = |e: std::io::Error| BatchError::Compress {
        codec,
        reason: e.to_string(),
    };
    match codec {
        Compression::None => Ok(data.to_vec()),
        Compression::Gzip => {
            let mut w = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            w.write_all(data).map_err(err)?;
            w.finish().map_err(err)
        }
        Compression::Lz4 => {
            let info = lz4_flex::frame::FrameInfo::new()
                .block_size(lz4_flex::frame::BlockSize::Max64KB)
                .block_mode(lz4_flex::frame::BlockMode::Independent);
            let mut w = lz4_flex::frame::FrameEncoder::with_frame_info(info, Vec::new());
            w.write_all(data).map_err(err)?;
            w.finish().map_err(|e| BatchError::Compress {
                codec,
                reason: e.to_string(),
            })
        }
        Compression::Zstd => zstd::stream::encode_all(data, 3).map_err(err),
        Compression::Snappy => {
            let mut out = Vec::with_capacity(XERIAL_HEADER_BYTES + data.len() / 2);
            out.extend_from_slice(&XERIAL_MAGIC);
            out.extend_from_slice(&1i32.to_be_bytes()); // version
            out.extend_from_slice(&1i32.to_be_bytes()); // min compatible version
            let mut enc = snap::raw::Encoder::new();
            for chunk in data.chunks(XERIAL_BLOCK_BYTES) {
                let block = enc.compress_vec(chunk).map_err(|e| BatchError::Compress {
                    codec,
                    reason: e.to_string(),
                })?;
                out.extend_from_slice(&(block.len() as i32).to_be_bytes());
                out.extend_from_slice(&block);
            }
            Ok(out)
        }
    }
}

/// A decompression failure before it is tagged with its codec.
enum ReadError {
    TooLarge(usize),
    Io(std::io::Error),
}

impl ReadError {
    fn or(self, codec: Compression) -> BatchError {
        match self {
            ReadError::TooLarge(max) => BatchError::DecompressedTooLarge {
                max_decompressed_bytes: max,
            },
            ReadError::Io(e) => BatchError::Decompress {
                codec,
                reason: e.to_string(),
            },
        }
    }
}

fn bounded(data: &[u8], max_bytes: usize) -> Result<Vec<u8>, BatchError> {
    if data.len() > max_bytes {
        return Err(BatchError::DecompressedTooLarge {
            max_decompressed_bytes: max_bytes,
        });
    }
    Ok(data.to_vec())
}

fn read_bounded(reader: impl Read, max_bytes: usize) -> Result<Vec<u8>, ReadError> {
    let mut out = Vec::new();
    let limit = (max_bytes as u64).saturating_add(1);
    reader
        .take(limit)
        .read_to_end(&mut out)
        .map_err(ReadError::Io)?;
    if out.len() > max_bytes {
        return Err(ReadError::TooLarge(max_bytes));
    }
    Ok(out)
}

fn snappy_decompress(data: &[u8], max_bytes: usize) -> Result<Vec<u8>, BatchError> {
    let codec = Compression::Snappy;
    let corrupt = |reason: &str| BatchError::Decompress {
        codec,
        reason: reason.to_string(),
    };
    let too_large = BatchError::DecompressedTooLarge {
        max_decompressed_bytes: max_bytes,
    };
    let mut dec = snap::raw::Decoder::new();
    if !data.starts_with(&XERIAL_MAGIC) {
        let n = snap::raw::decompress_len(data).map_err(|e| corrupt(&e.to_string()))?;
        if n > max_bytes {
            return Err(too_large);
        }
        return dec
            .decompress_vec(data)
            .map_err(|e| corrupt(&e.to_string()));
    }
    if data.len() < XERIAL_HEADER_BYTES {
        return Err(corrupt("truncated xerial header"));
    }
    let mut rest = &data[XERIAL_HEADER_BYTES..];
    let mut out = Vec::new();
    while !rest.is_empty() {
        if rest.len() < 4 {
            return Err(corrupt("truncated xerial block length"));
        }
        let len = i32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
        rest = &rest[4..];
        let len = usize::try_from(len).map_err(|_| corrupt("negative xerial block length"))?;
        if len > rest.len() {
            return Err(corrupt("truncated xerial block"));
        }
        let (block, tail) = rest.split_at(len);
        rest = tail;
        let n = snap::raw::decompress_len(block).map_err(|e| corrupt(&e.to_string()))?;
        if out.len().saturating_add(n) > max_bytes {
            return Err(too_large);
        }
        let start = out.len();
        out.resize(start + n, 0);
        dec.decompress(block, &mut out[start..])
            .map_err(|e| corrupt(&e.to_string()))?;
    }
    Ok(out)
}
