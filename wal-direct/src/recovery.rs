//! Recovery: scan the ring from the trim position, validate every record, stop
//! at the first one that is torn, stale or corrupt.

use std::collections::VecDeque;
use std::path::Path;
use std::rc::Rc;

use bytes::Bytes;
use glommio::io::{DmaFile, ReadResult};
use glommio::task::JoinHandle;

use crate::format::{
    BLOCK_SIZE, RECORD_HEADER_SIZE, RECORD_KIND_PADDING, RING_OFFSET, RecordHeader, align_down,
};
use crate::{RecoveredRecord, WalError, WalPosition};

/// Size of one read while scanning.
pub(crate) const RECOVERY_READ_BYTES: u64 = 4 << 20;
/// Reads kept in flight ahead of the parser.
pub(crate) const RECOVERY_READS_AHEAD: usize = 4;

pub(crate) struct Scan {
    pub records: Vec<RecoveredRecord>,
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
    file: &Rc<DmaFile>,
    path: &Path,
    capacity_bytes: u64,
    trim: u64,
) -> Result<Scan, WalError> {
    let limit = align_down(trim) + capacity_bytes;
    let mut window = Window::new(file.clone(), capacity_bytes, align_down(trim), limit);
    let mut records = Vec::new();
    let mut cursor = trim;
    let mut generation_min = 0u32;
    loop {
        if cursor + RECORD_HEADER_SIZE > limit {
            break;
        }
        if !window.ensure(cursor + RECORD_HEADER_SIZE, path).await? {
            break;
        }
        let Some(header) = RecordHeader::decode(window.slice(cursor, RECORD_HEADER_SIZE)) else {
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
            let payload = window.slice(cursor + RECORD_HEADER_SIZE, u64::from(header.payload_len));
            if crc32c::crc32c(payload) != header.payload_crc {
                break;
            }
            records.push(RecoveredRecord {
                stream_id: header.stream_id,
                first_offset: header.first_offset,
                last_offset: header.last_offset,
                payload: Bytes::copy_from_slice(payload),
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
        window.slice(prefix_start, cursor - prefix_start).to_vec()
    } else {
        Vec::new()
    };
    window.cancel_prefetch().await;
    Ok(Scan {
        records,
        tail: cursor,
        tail_block_prefix,
        generation_max: generation_min,
    })
}

/// A sliding window over the ring's logical positions, filled by aligned
/// O_DIRECT reads with one read ahead.
struct Window {
    file: Rc<DmaFile>,
    capacity_bytes: u64,
    /// Logical position of `data[0]` (block aligned).
    start: u64,
    data: Vec<u8>,
    /// Next logical position to read.
    read_next: u64,
    limit: u64,
    prefetch: VecDeque<JoinHandle<std::io::Result<ReadResult>>>,
}

impl Window {
    fn new(file: Rc<DmaFile>, capacity_bytes: u64, start: u64, limit: u64) -> Window {
        let mut window = Window {
            file,
            capacity_bytes,
            start,
            data: Vec::new(),
            read_next: start,
            limit,
            prefetch: VecDeque::with_capacity(RECOVERY_READS_AHEAD),
        };
        window.start_reads();
        window
    }

    fn slice(&self, position: u64, len: u64) -> &[u8] {
        let from = (position - self.start) as usize;
        &self.data[from..from + len as usize]
    }

    /// Drops the bytes before `position` once they outweigh one read.
    fn release_before(&mut self, position: u64) {
        let drop_len = position.saturating_sub(self.start);
        if drop_len >= RECOVERY_READ_BYTES {
            self.data.drain(..drop_len as usize);
            self.start = position;
        }
    }

    /// Reads until the window reaches `end`; false if `end` lies past the limit.
    async fn ensure(&mut self, end: u64, path: &Path) -> Result<bool, WalError> {
        while self.start + (self.data.len() as u64) < end {
            let Some(read) = self.prefetch.pop_front() else {
                return Ok(false);
            };
            let chunk = read
                .await
                .unwrap_or_else(|| Err(std::io::Error::other("recovery read task cancelled")))
                .map_err(|error| WalError::io("recovery read", path, error))?;
            self.data.extend_from_slice(&chunk);
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
        let len = RECOVERY_READ_BYTES
            .min(self.limit - self.read_next)
            .min(self.capacity_bytes - ring_offset);
        let file = self.file.clone();
        let position = RING_OFFSET + ring_offset;
        self.read_next += len;
        self.prefetch.push_back(
            glommio::spawn_local(async move {
                let chunk = file.read_at_aligned(position, len as usize).await?;
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
