//! Recovery: scan the ring from the trim position, validate every record, stop
//! at the first one that is torn, stale or corrupt.

use std::collections::VecDeque;
use std::path::Path;

use bytes::Bytes;
use glommio::task::JoinHandle;

use crate::device::{Device, DeviceRead};
use crate::format::{
    BLOCK_SIZE, RECORD_HEADER_SIZE, RECORD_KIND_PADDING, RING_OFFSET, RecordHeader, align_down,
};
use crate::{RecoveredRecord, WalError, WalPosition};

/// Size of one read while scanning (and of the chunks payloads share).
pub(crate) const RECOVERY_READ_BYTES: u64 = 4 << 20;
/// Reads kept in flight ahead of the parser.
pub(crate) const RECOVERY_READS_AHEAD: usize = 4;

pub(crate) struct Scan {
    /// Position after the last valid record (where the next record goes).
    pub tail: u64,
    /// The bytes of the tail's block before `tail`, rewritten by the first write.
    pub tail_block_prefix: Vec<u8>,
    /// The newest generation among the records scanned.
    pub generation_max: u32,
}

/// Scans `[trim, align_down(trim) + capacity)`; records must carry their own
/// position and a generation never older than the record before them (an
/// older one was left behind by an earlier session, past a torn write).
pub(crate) async fn scan(
    device: &Device,
    path: &Path,
    capacity_bytes: u64,
    trim: u64,
    on_record: &mut dyn FnMut(RecoveredRecord),
) -> Result<Scan, WalError> {
    let limit = align_down(trim) + capacity_bytes;
    let mut window = Window::new(device.clone(), capacity_bytes, align_down(trim), limit);
    let mut cursor = trim;
    let mut generation_min = 0u32;
    loop {
        if cursor + RECORD_HEADER_SIZE > limit {
            break;
        }
        if !window.ensure(cursor + RECORD_HEADER_SIZE, path).await? {
            break;
        }
        let Some(header) = RecordHeader::decode(&window.header_bytes(cursor)) else {
            break;
        };
        let valid_place = header.position == cursor && header.generation >= generation_min;
        let end = cursor + header.record_len();
        if !valid_place || end > limit {
            break;
        }
        if header.kind == RECORD_KIND_PADDING {
            if !end.is_multiple_of(BLOCK_SIZE) {
                break;
            }
        } else {
            if !window.ensure(end, path).await? {
                break;
            }
            let payload = window.bytes(cursor + RECORD_HEADER_SIZE, end);
            if crc32c::crc32c(&payload) != header.payload_crc {
                break;
            }
            on_record(RecoveredRecord {
                stream_id: header.stream_id,
                first_offset: header.first_offset,
                last_offset: header.last_offset,
                payload,
                payload_crc: header.payload_crc,
                end_position: WalPosition(end),
            });
        }
        generation_min = header.generation;
        cursor = end;
        window.release_before(align_down(cursor));
    }
    let prefix_start = align_down(cursor);
    let tail_block_prefix = if cursor > prefix_start {
        window.ensure(cursor, path).await?;
        window.bytes(prefix_start, cursor).to_vec()
    } else {
        Vec::new()
    };
    window.cancel_prefetch().await;
    Ok(Scan {
        tail: cursor,
        tail_block_prefix,
        generation_max: generation_min,
    })
}

/// A sliding window over the ring's logical positions: a queue of chunks
/// filled by aligned O_DIRECT reads, several ahead. Payloads are returned as
/// zero-copy slices of the chunks when they lie within one.
struct Window {
    device: Device,
    capacity_bytes: u64,
    /// Contiguous chunks: (logical start, bytes).
    chunks: VecDeque<(u64, Bytes)>,
    /// Logical end of the last chunk.
    end: u64,
    /// Next logical position to read.
    read_next: u64,
    limit: u64,
    prefetch: VecDeque<JoinHandle<std::io::Result<DeviceRead>>>,
}

impl Window {
    fn new(device: Device, capacity_bytes: u64, start: u64, limit: u64) -> Window {
        let mut window = Window {
            device,
            capacity_bytes,
            chunks: VecDeque::new(),
            end: start,
            read_next: start,
            limit,
            prefetch: VecDeque::with_capacity(RECOVERY_READS_AHEAD),
        };
        window.start_reads();
        window
    }

    fn header_bytes(&self, position: u64) -> [u8; RECORD_HEADER_SIZE as usize] {
        let mut out = [0u8; RECORD_HEADER_SIZE as usize];
        self.copy_into(position, &mut out);
        out
    }

    /// The bytes `[from, to)`, which must be in the window.
    fn bytes(&self, from: u64, to: u64) -> Bytes {
        for (start, chunk) in &self.chunks {
            let chunk_end = start + chunk.len() as u64;
            if from >= *start && to <= chunk_end {
                return chunk.slice((from - start) as usize..(to - start) as usize);
            }
        }
        let mut out = vec![0u8; (to - from) as usize];
        self.copy_into(from, &mut out);
        Bytes::from(out)
    }

    fn copy_into(&self, mut position: u64, mut out: &mut [u8]) {
        for (start, chunk) in &self.chunks {
            let chunk_end = start + chunk.len() as u64;
            if out.is_empty() {
                return;
            }
            if position >= chunk_end {
                continue;
            }
            let from = (position - start) as usize;
            let len = out.len().min(chunk.len() - from);
            out[..len].copy_from_slice(&chunk[from..from + len]);
            out = &mut out[len..];
            position += len as u64;
        }
        assert!(out.is_empty(), "copy_into beyond the window");
    }

    /// Drops the chunks that end at or before `position`.
    fn release_before(&mut self, position: u64) {
        while let Some((start, chunk)) = self.chunks.front() {
            if start + chunk.len() as u64 > position {
                break;
            }
            self.chunks.pop_front();
        }
    }

    /// Reads until the window reaches `end`; false if `end` lies past the limit.
    async fn ensure(&mut self, end: u64, path: &Path) -> Result<bool, WalError> {
        while self.end < end {
            let Some(read) = self.prefetch.pop_front() else {
                return Ok(false);
            };
            let chunk = read
                .await
                .unwrap_or_else(|| Err(std::io::Error::other("recovery read task cancelled")))
                .map_err(|error| WalError::io("recovery read", path, error))?;
            let chunk = copy_out(&chunk);
            self.chunks.push_back((self.end, chunk.clone()));
            self.end += chunk.len() as u64;
            self.start_reads();
        }
        Ok(true)
    }

    fn start_reads(&mut self) {
        while self.prefetch.len() < RECOVERY_READS_AHEAD && self.read_next < self.limit {
            self.start_read();
        }
    }

    fn start_read(&mut self) {
        let ring_offset = self.read_next % self.capacity_bytes;
        let len = RECOVERY_READ_BYTES.min(self.limit - self.read_next).min(
            self.device
                .contiguous_bytes(ring_offset, self.capacity_bytes),
        );
        let device = self.device.clone();
        let position = RING_OFFSET + ring_offset;
        self.read_next += len;
        self.prefetch.push_back(
            glommio::spawn_local(async move {
                let chunk = device.read_at_aligned(position, len as usize).await?;
                if chunk.len() as u64 != len {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!("short read at {position}: {} of {len} bytes", chunk.len()),
                    ));
                }
                Ok(chunk)
            })
            .detach(),
        );
    }

    async fn cancel_prefetch(&mut self) {
        // Let the reads finish: their buffers must outlive the I/O.
        while let Some(read) = self.prefetch.pop_front() {
            let _ = read.await;
        }
    }
}

/// Copies a DMA buffer (tied to the executor, not `Send`) into memory that
/// the recovered records share.
fn copy_out(chunk: &[u8]) -> Bytes {
    Bytes::copy_from_slice(chunk)
}
