//! The Delta WAL: O_DIRECT appends to a bounded ring with group commit and crash recovery.
//!
//! One [`Wal`] per shard, used only from that shard's glommio executor. Many
//! tasks share it through `Rc<Wal>`:
//!
//! ```ignore
//! let end = wal.append(stream_id, first_offset, last_offset, &batch).await?;
//! wal.wait_durable(end).await?;
//! ```
//!
//! [`Wal::wait_written`] resolves earlier, once the write is on the device but
//! before the fdatasync that makes it durable: it tells a write's time from its
//! sync's (the broker's per-stage latency), it promises no durability.
//!
//! Appends are copied into the open write buffer (group commit); a flusher task
//! seals that buffer into one block-aligned write whenever the in-flight window
//! has room, keeps up to `inflight_writes_max` writes in flight, and reports
//! completions in order, so the durable position only moves forward.
//! See README.md for the on-disk format and the durability choice.

mod device;
pub mod format;
mod latency;
mod notify;
mod recovery;
mod segments;
#[cfg(feature = "sim")]
pub mod sim;

use std::cell::RefCell;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use glommio::io::DmaBuffer;

use crate::device::Device;
pub use crate::latency::{LATENCY_BUCKETS, LatencyBuckets};

use crate::format::{
    BLOCK_SIZE, HEADER_SLOTS, Header, RECORD_HEADER_SIZE, RECORD_KIND_DATA, RECORD_KIND_PADDING,
    RING_OFFSET, RecordHeader, align_down, padded_len,
};
use crate::notify::{Coalesced, Notify};

/// Default ring capacity: 1 GiB.
pub const CAPACITY_BYTES_DEFAULT: u64 = 1 << 30;
/// Default bound on one group-commit write (a larger record gets a write of its own).
///
/// Why 4 MiB (with [`SYNCS_INFLIGHT_MAX_DEFAULT`]): at max rate a produce of 1 KiB messages
/// carries about 1 MB, so 1 MiB writes held one produce each, and each paid a write and a
/// sync of its own. Measured on this project's virtio disk (side-by-side's produce-max, 5 GB
/// of 1 KiB messages, acks=all, default flags, five rounds run in turn): 1 MiB writes and one
/// sync at a time acked 432/497/465/533/374 MB/s, 4 MiB writes with four syncs in flight
/// 620/545/515/606/660; five more rounds an hour later, 554/572/572/533/555 against
/// 489/594/616/620/690. At 50k msg/s writes stay small (a write goes out as soon as the
/// window has room), so the bound does not add latency there. The broker's `io_memory`
/// (10 MiB) registers two such buffers; the others come from the heap.
pub const GROUP_COMMIT_BYTES_MAX_DEFAULT: u64 = 4 << 20;
/// Default in-flight window.
pub const INFLIGHT_WRITES_MAX_DEFAULT: usize = 8;
/// Default bound on fdatasyncs in flight at once (see [`WalConfig::syncs_inflight_max`]).
pub const SYNCS_INFLIGHT_MAX_DEFAULT: usize = 4;
/// Size of the writes that zero a freshly created file.
const PREFORMAT_WRITE_BYTES: u64 = 4 << 20;

/// How a write is made durable. `Fdatasync` is the default: on the volumes
/// measured (README.md, "Durability") O_DSYNC writes cost a cache flush or
/// FUA each and were 20x slower at queue depth 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// The file is opened with O_DSYNC: each write completes once durable
    /// (FUA or a cache flush per write), so writes in flight stay independent.
    Dsync,
    /// Plain O_DIRECT writes followed by `fdatasync`; one fdatasync covers
    /// every write completed before it started.
    Fdatasync,
}

/// When the writer re-reads the header to learn whether a newer owner fenced it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FenceCheck {
    /// Only at open (a single-attach device).
    Off,
    /// After each write, before reporting it durable: no write completed after
    /// a newer owner's open is ever acknowledged.
    AfterWrite,
    /// Also before each write and each header update, so a fenced writer does
    /// not overwrite the new owner's blocks (multi-attach volumes).
    BeforeAndAfterWrite,
}

/// Everything `Wal::open` needs. Build with [`WalConfig::new`] and adjust fields.
#[derive(Clone, Debug)]
pub struct WalConfig {
    /// A regular file (created and preallocated if absent) or a block device.
    pub path: PathBuf,
    /// Size of the ring (excluding the two header blocks); a multiple of 4 KiB.
    pub capacity_bytes: u64,
    /// Writes in flight at once (the in-flight window), at least 1.
    pub inflight_writes_max: usize,
    /// Fencing epoch: an open with a higher epoch fences every older writer.
    pub epoch: u64,
    pub node_id: u32,
    /// Bytes coalesced into one write; a multiple of 4 KiB.
    pub group_commit_bytes_max: u64,
    /// fdatasyncs in flight at once, at least 1. A write that completes while a sync runs
    /// starts one of its own (up to this many) instead of waiting for the running one to end
    /// and then for a whole sync more; each sync still serves every write completed before it
    /// started.
    pub syncs_inflight_max: usize,
    pub durability: Durability,
    pub fence_check: FenceCheck,
    /// Zero the ring of a newly created file, so that later writes never hit
    /// unwritten extents (whose conversion makes every sync a journal commit).
    pub preformat: bool,
    /// Set when another node takes this WAL over (its owner died): the WAL must exist and
    /// its header must name this node, or the open fails ([`WalError::NotTakeable`]) without
    /// creating, formatting or claiming anything. The claim keeps naming that node. Without
    /// the check, a taker given a path that means another file on its own host (the same
    /// layout on every host) would fence a live broker's WAL.
    pub takeover_of: Option<u32>,
    /// `Some(n)`: `path` is a directory holding the ring as segment files of `n` bytes
    /// (README.md, "Segmented WAL"), created with that size if absent; a directory made
    /// earlier keeps its own. A closed segment can then become an object by a hard link
    /// ([`Wal::segment_file`]). `None`: one file, or a block device, unless `path` already
    /// is such a directory. A multiple of 4 MiB dividing `capacity_bytes` into 2 or more.
    pub segment_bytes: Option<u64>,
}

impl WalConfig {
    pub fn new(path: impl Into<PathBuf>, capacity_bytes: u64) -> WalConfig {
        WalConfig {
            path: path.into(),
            capacity_bytes,
            ..WalConfig::default()
        }
    }

    /// The largest record (header + payload) this configuration accepts: half the ring, and
    /// with segments less than one segment (a record never crosses a segment's end).
    pub fn record_bytes_max(&self) -> u64 {
        record_bytes_max(self.capacity_bytes, self.segment_bytes)
    }
}

impl Default for WalConfig {
    fn default() -> WalConfig {
        WalConfig {
            path: PathBuf::new(),
            capacity_bytes: CAPACITY_BYTES_DEFAULT,
            inflight_writes_max: INFLIGHT_WRITES_MAX_DEFAULT,
            epoch: 0,
            node_id: 0,
            group_commit_bytes_max: GROUP_COMMIT_BYTES_MAX_DEFAULT,
            syncs_inflight_max: SYNCS_INFLIGHT_MAX_DEFAULT,
            durability: Durability::Fdatasync,
            fence_check: FenceCheck::AfterWrite,
            preformat: true,
            takeover_of: None,
            segment_bytes: None,
        }
    }
}

/// See [`WalConfig::record_bytes_max`]: two blocks less than a segment leave room for the
/// record's own alignment padding.
fn record_bytes_max(capacity_bytes: u64, segment_bytes: Option<u64>) -> u64 {
    let ring = capacity_bytes / 2;
    segment_bytes.map_or(ring, |segment| ring.min(segment - 2 * BLOCK_SIZE))
}

/// What an append waits for ([`Wal::wait_written`], [`Wal::wait_durable`]).
#[derive(Debug, Clone, Copy)]
enum Milestone {
    /// The block writes holding it completed.
    Written,
    /// It is durable.
    Durable,
}

/// What an append does when the ring has no room for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WhenFull {
    /// Waits for a trim to make room.
    Wait,
    /// Waits for a trim, unless space waits are refused ([`Wal::refuse_space_waits`]): then
    /// fails with [`WalError::Full`]. For records whose writer may simply try again later;
    /// not for a log that numbers its records before appending them (a refused record would
    /// leave a gap).
    WaitUnlessRefused,
}

/// A logical byte position in the WAL: monotonically increasing, never wrapped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WalPosition(pub u64);

/// A complete, CRC-valid record found by recovery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoveredRecord {
    pub stream_id: u64,
    pub first_offset: u64,
    pub last_offset: u64,
    pub payload: Bytes,
    /// CRC-32C of `payload`, as stored and checked.
    pub payload_crc: u32,
    /// The position `append` returned for this record.
    pub end_position: WalPosition,
}

/// Figures for metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WalStats {
    pub capacity_bytes: u64,
    /// Bytes between the trim position and the append position.
    pub used_bytes: u64,
    pub trim_position: WalPosition,
    pub append_position: WalPosition,
    pub durable_position: WalPosition,
    pub appends_total: u64,
    pub append_payload_bytes_total: u64,
    pub writes_total: u64,
    pub write_bytes_total: u64,
    pub writes_inflight: usize,
    /// Appends that had to wait for ring space (back-pressure until a trim).
    pub space_waits_total: u64,
    pub space_wait_us_total: u64,
    /// Appends waiting for ring space right now.
    pub space_waiting: u64,
    /// Appends that had to wait for a free slot in the in-flight window.
    pub window_waits_total: u64,
    pub syncs_total: u64,
    pub fence_checks_total: u64,
    /// Batch writes (one per `writes_total`), from submission to completion.
    pub write_latency: LatencyBuckets,
    /// fdatasyncs, from submission to completion.
    pub sync_latency: LatencyBuckets,
}

#[derive(thiserror::Error, Clone, Debug)]
pub enum WalError {
    #[error("WAL fenced: our epoch is {ours}, the header now holds epoch {found}")]
    Fenced { ours: u64, found: u64 },
    #[error("O_DIRECT is not supported for {path} (its file system refuses it)")]
    ODirectUnsupported { path: PathBuf },
    #[error("{path}: needs an alignment of {alignment} bytes, more than the 4096-byte WAL block")]
    BadAlignment { path: PathBuf, alignment: u64 },
    #[error("{path} is neither a regular file nor a block device")]
    UnsupportedTarget { path: PathBuf },
    #[error("{path}: device has {size_bytes} bytes, the WAL needs {size_needed_bytes}")]
    DeviceTooSmall {
        path: PathBuf,
        size_bytes: u64,
        size_needed_bytes: u64,
    },
    #[error(
        "record of {record_bytes} bytes (header included) exceeds record_bytes_max = {record_bytes_max} (capacity / 2, and less than a segment)"
    )]
    RecordTooLarge {
        record_bytes: u64,
        record_bytes_max: u64,
    },
    #[error("{path}: both header copies are invalid and not blank; refusing to reformat")]
    HeaderCorrupt { path: PathBuf },
    #[error("{path}: configured capacity_bytes {configured} differs from {on_disk} on disk")]
    CapacityMismatch {
        path: PathBuf,
        configured: u64,
        on_disk: u64,
    },
    #[error("invalid WAL configuration: {0}")]
    InvalidConfig(String),
    #[error("{path} cannot be taken over as node {expected}'s WAL: {reason}")]
    NotTakeable {
        path: PathBuf,
        expected: u32,
        reason: String,
    },
    #[error("trim to {trim} is beyond the durable position {durable}")]
    TrimBeyondDurable { trim: u64, durable: u64 },
    #[error("position {position} was never appended (append position {appended})")]
    PositionNotAppended { position: u64, appended: u64 },
    #[error("WAL is closed")]
    Closed,
    #[error(
        "WAL is full ({capacity_bytes} bytes until an upload trims it) and appends may not wait for now"
    )]
    Full { capacity_bytes: u64 },
    #[error("{op} on {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: Arc<std::io::Error>,
    },
}

impl WalError {
    fn io(op: &'static str, path: &Path, error: std::io::Error) -> WalError {
        WalError::Io {
            op,
            path: path.to_path_buf(),
            source: Arc::new(error),
        }
    }
}

/// The writer. `!Send`: it lives on one executor; share it with `Rc<Wal>`.
pub struct Wal {
    inner: Rc<Inner>,
}

impl Wal {
    /// Opens (creating and preallocating if absent), claims the WAL with this
    /// config's epoch, recovers; returns the writer and every complete record
    /// after the trim position, in order.
    pub async fn open(config: WalConfig) -> Result<(Wal, Vec<RecoveredRecord>), WalError> {
        let mut records = Vec::new();
        let wal = Wal::open_each(config, |record| records.push(record)).await?;
        Ok((wal, records))
    }

    /// Like [`Wal::open`], but hands each recovered record to `on_record` as
    /// it is validated instead of collecting them: the caller can index or
    /// forward records and drop payloads, so a 1 GiB WAL is replayed at the
    /// device's read speed without holding it all in memory. Payloads share
    /// 4 MiB read chunks (a kept payload keeps its chunk alive).
    pub async fn open_each(
        config: WalConfig,
        mut on_record: impl FnMut(RecoveredRecord),
    ) -> Result<Wal, WalError> {
        validate(&config)?;
        if let Some(expected) = config.takeover_of
            && !config.path.exists()
        {
            return Err(WalError::NotTakeable {
                path: config.path.clone(),
                expected,
                reason: "no such file or device here".into(),
            });
        }
        if config.segment_bytes.is_some() || config.path.is_dir() {
            let opened = segments::SegmentFiles::open(
                &config.path,
                config.capacity_bytes,
                config.segment_bytes,
                config.durability,
            )
            .await?;
            let device = Device::Segments(Rc::new(opened.files));
            return Wal::open_device(device, opened.created, config, &mut on_record).await;
        }
        let target =
            device::open_target(&config.path, config.capacity_bytes, config.durability).await?;
        let device = Device::File(Rc::new(target.file));
        Wal::open_device(device, target.created, config, &mut on_record).await
    }

    /// [`Wal::open`] over a simulated in-memory disk (see [`sim`]); `config.path` only
    /// names it in errors. The disk models fdatasync durability (the default) only.
    #[cfg(feature = "sim")]
    pub async fn open_simulated(
        disk: sim::SimDisk,
        config: WalConfig,
    ) -> Result<(Wal, Vec<RecoveredRecord>), WalError> {
        validate(&config)?;
        if config.durability != Durability::Fdatasync {
            return Err(WalError::InvalidConfig(
                "the simulated disk models fdatasync durability only".into(),
            ));
        }
        let mut records = Vec::new();
        let mut collect = |record: RecoveredRecord| records.push(record);
        let wal = Wal::open_device(Device::Sim(disk), false, config, &mut collect).await?;
        Ok((wal, records))
    }

    /// Claims and recovers an opened device (`created`: by this open, so blank).
    async fn open_device(
        device: Device,
        created: bool,
        config: WalConfig,
        on_record: &mut dyn FnMut(RecoveredRecord),
    ) -> Result<Wal, WalError> {
        let path = config.path.clone();
        let io = DiskIo {
            device: device.clone(),
            path: path.clone(),
            durability: config.durability,
        };

        let previous = match io.read_header().await? {
            Some(header) => header,
            None if config.takeover_of.is_some() => {
                return Err(WalError::HeaderCorrupt { path });
            }
            None if created || io.never_formatted().await? => {
                if config.preformat {
                    io.zero_ring(config.capacity_bytes).await?;
                    if let Some(files) = device.segments() {
                        // Zeros are no data: a segment linked later may give them back.
                        files.forget_written_ends();
                    }
                }
                io.format(&config).await?
            }
            None => return Err(WalError::HeaderCorrupt { path }),
        };
        if previous.capacity_bytes != config.capacity_bytes {
            return Err(WalError::CapacityMismatch {
                path,
                configured: config.capacity_bytes,
                on_disk: previous.capacity_bytes,
            });
        }
        if let Some(expected) = config.takeover_of
            && previous.node_id != expected
        {
            return Err(WalError::NotTakeable {
                path,
                expected,
                reason: format!("its header names node {}", previous.node_id),
            });
        }
        if previous.epoch > config.epoch {
            return Err(WalError::Fenced {
                ours: config.epoch,
                found: previous.epoch,
            });
        }
        // Claim first, then scan: a writer with an older epoch either finished
        // its write before our scan (we recover it) or sees our epoch after its
        // write and never acknowledges it.
        let mut header = Header {
            capacity_bytes: config.capacity_bytes,
            epoch: config.epoch,
            node_id: config.takeover_of.unwrap_or(config.node_id),
            generation: previous.generation + 1,
            trim_position: previous.trim_position,
            sequence: previous.sequence + 1,
        };
        io.write_header(&header).await?;

        let scan = recovery::scan(
            &device,
            &path,
            config.capacity_bytes,
            header.trim_position,
            on_record,
        )
        .await?;
        if scan.generation_max >= header.generation {
            // The newest header copy was lost (corrupted): records of a newer
            // generation than the surviving copy exist. Ours must be newer still.
            header.generation = scan.generation_max + 1;
            header.sequence += 1;
            io.write_header(&header).await?;
        }
        // What recovery returns is durable from here on, whichever mode wrote it.
        io.fdatasync().await?;
        let segment_bytes = device.segments().map(|files| files.segment_bytes());
        if let (Some(files), Some(segment)) = (device.segments(), segment_bytes) {
            // Segments outside [trim, tail) are free: any an object still links (a crash came
            // between a trim and their release) is released before the ring reuses it.
            let live_first = header.trim_position / segment;
            let live_end = scan.tail.div_ceil(segment).max(live_first + 1);
            let count = config.capacity_bytes / segment;
            for index in 0..count {
                let live = (live_first..live_end).any(|s| s % count == index);
                if !live {
                    files.release_one(index as usize).await?;
                }
            }
        }

        let open_batch = if scan.tail_block_prefix.is_empty() {
            None
        } else {
            let mut buf = device.alloc_dma_buffer(config.group_commit_bytes_max as usize);
            buf.as_bytes_mut()[..scan.tail_block_prefix.len()]
                .copy_from_slice(&scan.tail_block_prefix);
            Some(Batch {
                start: align_down(scan.tail),
                buf,
                len: scan.tail_block_prefix.len() as u64,
                records: 0,
                skip_to: None,
            })
        };
        let inner = Rc::new(Inner {
            io,
            capacity_bytes: config.capacity_bytes,
            inflight_writes_max: config.inflight_writes_max,
            group_commit_bytes_max: config.group_commit_bytes_max,
            record_bytes_max: record_bytes_max(config.capacity_bytes, segment_bytes),
            segment_bytes,
            fence_check: config.fence_check,
            epoch: config.epoch,
            state: RefCell::new(State {
                append_position: scan.tail,
                written_position: scan.tail,
                durable_position: scan.tail,
                trim_position: header.trim_position,
                header,
                header_busy: false,
                open_batch,
                inflight: VecDeque::with_capacity(config.inflight_writes_max),
                error: None,
                space_waits_refused: false,
                closing: false,
                flusher_running: true,
                stats: WalStats::default(),
            }),
            durable_changed: Notify::default(),
            written_changed: Notify::default(),
            room_changed: Notify::default(),
            flusher_wake: Notify::default(),
            header_idle: Notify::default(),
            syncs: Coalesced::new(config.syncs_inflight_max),
            fence_checks: Coalesced::new(1),
        });
        glommio::spawn_local(flusher(inner.clone())).detach();
        Ok(Wal { inner })
    }

    /// Enqueues one record; resolves once it is queued, waiting while the ring
    /// (back-pressure until `trim`) or the in-flight window is full. Records
    /// are written in call order. Returns the record's end position.
    pub async fn append(
        &self,
        stream_id: u64,
        first_offset: u64,
        last_offset: u64,
        payload: &[u8],
    ) -> Result<WalPosition, WalError> {
        self.append_with_crc(
            stream_id,
            first_offset,
            last_offset,
            payload,
            crc32c::crc32c(payload),
            WhenFull::Wait,
        )
        .await
    }

    /// [`Wal::append`] of a payload whose CRC-32C the caller already knows (a Kafka batch
    /// derives it from its own CRC), saving a pass over the bytes, doing `when_full` if the
    /// ring has no room. A wrong `payload_crc` makes recovery discard the record.
    pub async fn append_with_crc(
        &self,
        stream_id: u64,
        first_offset: u64,
        last_offset: u64,
        payload: &[u8],
        payload_crc: u32,
        when_full: WhenFull,
    ) -> Result<WalPosition, WalError> {
        debug_assert_eq!(payload_crc, crc32c::crc32c(payload), "payload_crc is wrong");
        let inner = &self.inner;
        let record_bytes = RECORD_HEADER_SIZE + payload.len() as u64;
        if record_bytes > inner.record_bytes_max || payload.len() > u32::MAX as usize {
            return Err(WalError::RecordTooLarge {
                record_bytes,
                record_bytes_max: inner.record_bytes_max,
            });
        }
        let mut space_wait: Option<SpaceWait<'_>> = None;
        let mut window_waited = false;
        loop {
            let notified = {
                let mut state = inner.state.borrow_mut();
                state.check_usable()?;
                match inner.place(&mut state, record_bytes) {
                    Placement::Ready => {
                        let end = inner.write_record(
                            &mut state,
                            stream_id,
                            first_offset,
                            last_offset,
                            payload,
                            payload_crc,
                        );
                        drop(state);
                        drop(space_wait);
                        inner.flusher_wake.notify();
                        return Ok(WalPosition(end));
                    }
                    Placement::NoSpace => {
                        if state.space_waits_refused && when_full == WhenFull::WaitUnlessRefused {
                            return Err(WalError::Full {
                                capacity_bytes: inner.capacity_bytes,
                            });
                        }
                        if space_wait.is_none() {
                            state.stats.space_waits_total += 1;
                            state.stats.space_waiting += 1;
                            space_wait = Some(SpaceWait {
                                inner,
                                since: Instant::now(),
                            });
                        }
                    }
                    Placement::WindowFull => {
                        if !window_waited {
                            window_waited = true;
                            state.stats.window_waits_total += 1;
                        }
                    }
                    Placement::SegmentClosing => {}
                }
                inner.room_changed.notified()
            };
            inner.flusher_wake.notify();
            notified.await;
        }
    }

    /// Resolves once the block writes holding everything up to `position`
    /// have completed, or with the error that prevents it. With
    /// [`Durability::Fdatasync`] that is before the fdatasync covering them:
    /// the data is on the device, not yet durable ([`Wal::wait_durable`] waits
    /// for that too). With [`Durability::Dsync`] a completed write is durable,
    /// so this resolves just before `wait_durable` (the fence check apart).
    ///
    /// For measuring where an append's time goes (write or sync), not for
    /// acknowledging anything.
    pub async fn wait_written(&self, position: WalPosition) -> Result<(), WalError> {
        self.wait_for(position, Milestone::Written).await
    }

    /// Resolves when everything up to `position` is durable, or with the error
    /// that prevents it (e.g. `Fenced`).
    pub async fn wait_durable(&self, position: WalPosition) -> Result<(), WalError> {
        self.wait_for(position, Milestone::Durable).await
    }

    /// Resolves when `milestone` has passed `position`, or with the error that prevents it.
    async fn wait_for(&self, position: WalPosition, milestone: Milestone) -> Result<(), WalError> {
        loop {
            let notified = {
                let state = self.inner.state.borrow();
                let reached = match milestone {
                    Milestone::Written => state.written_position,
                    Milestone::Durable => state.durable_position,
                };
                if reached >= position.0 {
                    return Ok(());
                }
                if let Some(error) = &state.error {
                    return Err(error.clone());
                }
                if position.0 > state.append_position {
                    return Err(WalError::PositionNotAppended {
                        position: position.0,
                        appended: state.append_position,
                    });
                }
                match milestone {
                    Milestone::Written => self.inner.written_changed.notified(),
                    Milestone::Durable => self.inner.durable_changed.notified(),
                }
            };
            notified.await;
        }
    }

    /// With segments: closes the segment being written, so that every record appended so far
    /// lies in a closed segment and the next one starts a new segment (the rest of this one
    /// is a padding record; only its header block is written). Returns where the closed
    /// segments end, once the write closing the segment is on its way: when that position is
    /// durable ([`Wal::wait_durable`]), so is every record before it and the padding, and
    /// those segments may be linked ([`Wal::segment_file`]). Without segments it returns the
    /// append position.
    pub async fn roll(&self) -> Result<WalPosition, WalError> {
        let inner = &self.inner;
        loop {
            let notified = {
                let mut state = inner.state.borrow_mut();
                state.check_usable()?;
                let appended = state.append_position;
                let Some(segment) = inner.segment_bytes else {
                    return Ok(WalPosition(appended));
                };
                match &mut state.open_batch {
                    // Waits for the flusher to take the batch closing the segment.
                    Some(batch) if batch.skip_to.is_some() => {}
                    Some(batch) => {
                        let segment_end = batch.start - batch.start % segment + segment;
                        if batch.start + batch.len == segment_end
                            || closing_write_len(batch.len) <= batch.buf.len() as u64
                        {
                            batch.skip_to = Some(segment_end);
                        }
                        // Otherwise the batch is taken as it is, and the next round closes
                        // the segment with a batch of its own.
                    }
                    None if appended.is_multiple_of(segment) => return Ok(WalPosition(appended)),
                    None => {
                        let segment_end = appended - appended % segment + segment;
                        state.open_batch = Some(inner.closing_batch(appended, segment_end));
                    }
                }
                inner.room_changed.notified()
            };
            inner.flusher_wake.notify();
            notified.await;
        }
    }

    /// With segments: the start of the segment being written. Every record before it lies in
    /// a closed segment that nothing writes again until the trim has passed it. `None` without
    /// segments.
    pub fn closed_segments_end(&self) -> Option<WalPosition> {
        let segment = self.inner.segment_bytes?;
        let state = self.inner.state.borrow();
        // An open batch decides: one that closes its segment has not moved the append
        // position past that segment's end yet.
        let position = state
            .open_batch
            .as_ref()
            .map_or(state.append_position, |batch| batch.start);
        Some(WalPosition(position - position % segment))
    }

    /// With segments: the file holding the record that ends at `end` (the segment a record's
    /// bytes lie in; see [`Wal::roll`]). Its segment must be closed and not trimmed: then
    /// the WAL writes it no more, and replaces it (not rewrites it) once trimmed, so a hard
    /// link to it keeps the record's bytes. `None` without segments.
    pub fn segment_file(&self, end: WalPosition) -> Option<PathBuf> {
        let files = self.inner.io.device.segments()?;
        // A record never ends at its segment's start: one byte back is inside it.
        let last_byte = end.0.checked_sub(1)?;
        Some(files.path_of(last_byte % self.inner.capacity_bytes))
    }

    /// The segment size of a segmented WAL.
    pub fn segment_bytes(&self) -> Option<u64> {
        self.inner.segment_bytes
    }

    /// The largest payload one record may carry: half the ring (less than a segment), less the
    /// record's header.
    pub fn payload_bytes_max(&self) -> u64 {
        self.inner.record_bytes_max - RECORD_HEADER_SIZE
    }

    pub fn durable_position(&self) -> WalPosition {
        WalPosition(self.inner.state.borrow().durable_position)
    }

    /// While `refused`, an append of [`WhenFull::WaitUnlessRefused`] that finds the ring full
    /// fails with [`WalError::Full`] instead of waiting for a trim, and so do those already
    /// waiting: for when no trim is coming soon (the uploads that trim fail, or the owner is
    /// stopping). Appends that fit go on as before.
    pub fn refuse_space_waits(&self, refused: bool) {
        self.inner.state.borrow_mut().space_waits_refused = refused;
        if refused {
            self.inner.room_changed.notify();
        }
    }

    /// Releases the ring space before `position` (a record end position, at
    /// most the durable position); persisted in the header before it is reused.
    pub async fn trim(&self, position: WalPosition) -> Result<(), WalError> {
        let inner = &self.inner;
        let (header, trimmed_from) = loop {
            let notified = {
                let mut state = inner.state.borrow_mut();
                if let Some(error) = &state.error {
                    return Err(error.clone());
                }
                if position.0 > state.durable_position {
                    return Err(WalError::TrimBeyondDurable {
                        trim: position.0,
                        durable: state.durable_position,
                    });
                }
                if position.0 <= state.trim_position {
                    return Ok(());
                }
                if !state.header_busy {
                    state.header_busy = true;
                    let mut header = state.header;
                    header.trim_position = position.0;
                    header.sequence += 1;
                    break (header, state.trim_position);
                }
                inner.header_idle.notified()
            };
            notified.await;
        };
        let mut result = inner.persist_header(&header).await;
        if result.is_ok() {
            result = inner
                .release_segments(trimmed_from, header.trim_position)
                .await;
        }
        {
            let mut state = inner.state.borrow_mut();
            state.header_busy = false;
            match &result {
                Ok(()) => {
                    state.header = header;
                    state.trim_position = header.trim_position;
                }
                Err(error) => inner.fail(&mut state, error.clone()),
            }
        }
        inner.header_idle.notify();
        inner.room_changed.notify();
        result
    }

    /// Writes everything appended, waits for it to be durable, syncs and closes.
    pub async fn close(self) -> Result<(), WalError> {
        let inner = self.inner.clone();
        drop(self); // marks the WAL closing and wakes the flusher
        loop {
            let notified = {
                let state = inner.state.borrow();
                if let Some(error) = &state.error {
                    return Err(error.clone());
                }
                if !state.flusher_running && state.inflight.is_empty() {
                    break;
                }
                inner.durable_changed.notified()
            };
            notified.await;
        }
        inner.io.fdatasync().await?;
        let device = inner.io.device.clone();
        let path = inner.io.path.clone();
        drop(inner);
        device
            .close()
            .await
            .map_err(|e| WalError::io("close", &path, e))
    }

    pub fn stats(&self) -> WalStats {
        let state = self.inner.state.borrow();
        let mut stats = state.stats.clone();
        stats.capacity_bytes = self.inner.capacity_bytes;
        stats.used_bytes = state.append_position - state.trim_position;
        stats.trim_position = WalPosition(state.trim_position);
        stats.append_position = WalPosition(state.append_position);
        stats.durable_position = WalPosition(state.durable_position);
        stats.writes_inflight = state.inflight.len();
        stats
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        self.inner.state.borrow_mut().closing = true;
        self.inner.flusher_wake.notify();
        self.inner.room_changed.notify();
    }
}

fn validate(config: &WalConfig) -> Result<(), WalError> {
    let invalid = |what: String| Err(WalError::InvalidConfig(what));
    if config.capacity_bytes < 4 * BLOCK_SIZE || !config.capacity_bytes.is_multiple_of(BLOCK_SIZE) {
        return invalid(format!(
            "capacity_bytes {} must be a multiple of {BLOCK_SIZE} and at least {}",
            config.capacity_bytes,
            4 * BLOCK_SIZE
        ));
    }
    if config.group_commit_bytes_max < 2 * BLOCK_SIZE
        || !config.group_commit_bytes_max.is_multiple_of(BLOCK_SIZE)
    {
        return invalid(format!(
            "group_commit_bytes_max {} must be a multiple of {BLOCK_SIZE} and at least {}",
            config.group_commit_bytes_max,
            2 * BLOCK_SIZE
        ));
    }
    if config.inflight_writes_max == 0 {
        return invalid("inflight_writes_max must be at least 1".into());
    }
    if config.syncs_inflight_max == 0 {
        return invalid("syncs_inflight_max must be at least 1".into());
    }
    if let Some(segment_bytes) = config.segment_bytes {
        segments::check_layout(config.capacity_bytes, segment_bytes)
            .map_err(WalError::InvalidConfig)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Internals.

struct Inner {
    io: DiskIo,
    capacity_bytes: u64,
    inflight_writes_max: usize,
    group_commit_bytes_max: u64,
    record_bytes_max: u64,
    /// The segment size of a segmented WAL (`segments.rs`): no record or write crosses a
    /// segment's end, and the ring reuses a segment only once the trim has left it whole.
    segment_bytes: Option<u64>,
    fence_check: FenceCheck,
    epoch: u64,
    state: RefCell<State>,
    /// Durable position advanced, or an error was set.
    durable_changed: Notify,
    /// Written position advanced, or an error was set.
    written_changed: Notify,
    /// Ring space released, the open batch taken by the flusher, or an error.
    room_changed: Notify,
    flusher_wake: Notify,
    header_idle: Notify,
    syncs: Coalesced,
    fence_checks: Coalesced,
}

struct State {
    /// Where the next record goes.
    append_position: u64,
    /// The end of the writes completed in order, durable or not: at least
    /// `durable_position` (see `Wal::wait_written`).
    written_position: u64,
    durable_position: u64,
    trim_position: u64,
    /// The header as we last wrote it.
    header: Header,
    header_busy: bool,
    /// The group-commit buffer records are copied into.
    open_batch: Option<Batch>,
    /// Writes in flight, in position order.
    inflight: VecDeque<InflightWrite>,
    /// Sticky: once set, every call fails with it.
    error: Option<WalError>,
    /// Appends that find the ring full fail with `WalError::Full` instead of waiting
    /// (`Wal::refuse_space_waits`).
    space_waits_refused: bool,
    closing: bool,
    flusher_running: bool,
    stats: WalStats,
}

impl State {
    /// The sticky error, or `Closed` once the WAL is closing: what an append or a roll must
    /// stop at.
    fn check_usable(&self) -> Result<(), WalError> {
        if let Some(error) = &self.error {
            return Err(error.clone());
        }
        if self.closing {
            return Err(WalError::Closed);
        }
        Ok(())
    }
}

/// One future write: block-aligned `start`, `len` bytes used in `buf`.
struct Batch {
    start: u64,
    buf: DmaBuffer,
    len: u64,
    /// Records appended to this batch (the tail-block prefix is not one).
    records: u64,
    /// Set when the batch closes its segment: its padding record runs to this segment end
    /// (only the block holding the padding's header is written), and the next write starts
    /// there.
    skip_to: Option<u64>,
}

impl Batch {
    /// The position after this write once sealed (`take_batch` sets `len` to the bytes
    /// written): its segment's end if it closes one.
    fn end(&self) -> u64 {
        self.skip_to.unwrap_or(self.start + self.len)
    }
}

/// The bytes a batch of `len` bytes writes when a padding record after it must fit a header
/// (to close its segment): a block more when `len` ends on a block boundary.
fn closing_write_len(len: u64) -> u64 {
    if len.is_multiple_of(BLOCK_SIZE) {
        len + BLOCK_SIZE
    } else {
        padded_len(len)
    }
}

struct InflightWrite {
    end: u64,
    /// Its block write completed (it may wait for its sync).
    written: bool,
    /// Durable: written, synced and fence-checked.
    done: bool,
}

enum Placement {
    Ready,
    NoSpace,
    WindowFull,
    /// The record does not fit in what is left of the segment: the open batch now closes it,
    /// and the record goes into the next segment once the flusher took that batch.
    SegmentClosing,
}

/// Keeps `space_waiting` and the wait time right however `append` returns.
struct SpaceWait<'a> {
    inner: &'a Inner,
    since: Instant,
}

impl Drop for SpaceWait<'_> {
    fn drop(&mut self) {
        let mut state = self.inner.state.borrow_mut();
        state.stats.space_waiting -= 1;
        state.stats.space_wait_us_total += self.since.elapsed().as_micros() as u64;
    }
}

impl Inner {
    /// Decides whether a record of `record_bytes` can be copied in now,
    /// opening a batch if needed.
    fn place(&self, state: &mut State, record_bytes: u64) -> Placement {
        let ring_end = self.ring_end(state.trim_position);
        match &mut state.open_batch {
            Some(batch) => {
                if batch.skip_to.is_some() {
                    return Placement::SegmentClosing;
                }
                let padded_end = batch.start + padded_len(batch.len + record_bytes);
                if let Some(segment_end) = self.segment_end(batch.start)
                    && padded_end > segment_end
                {
                    if batch.start + batch.len == segment_end {
                        // Filled to the segment's end: sealed as it is, the next batch
                        // starts in the next segment.
                        batch.skip_to = Some(segment_end);
                    } else if closing_write_len(batch.len) <= batch.buf.len() as u64 {
                        batch.skip_to = Some(segment_end);
                    }
                    // Otherwise the batch is sealed as usual and the next one closes the
                    // segment with a padding record of its own.
                    return Placement::SegmentClosing;
                }
                if padded_end > ring_end {
                    return Placement::NoSpace;
                }
                if padded_len(batch.len + record_bytes) <= batch.buf.len() as u64 {
                    return Placement::Ready;
                }
                if batch.records > 0 {
                    return Placement::WindowFull;
                }
                // Only the recovered tail-block prefix: grow the buffer.
                let size = padded_len(batch.len + record_bytes).max(self.group_commit_bytes_max);
                let mut buf = self.io.device.alloc_dma_buffer(size as usize);
                let prefix = batch.len as usize;
                buf.as_bytes_mut()[..prefix].copy_from_slice(&batch.buf.as_bytes()[..prefix]);
                batch.buf = buf;
                Placement::Ready
            }
            None => {
                debug_assert_eq!(state.append_position % BLOCK_SIZE, 0);
                let padded = padded_len(record_bytes);
                if let Some(segment_end) = self.segment_end(state.append_position)
                    && state.append_position + padded > segment_end
                {
                    state.open_batch = Some(self.closing_batch(state.append_position, segment_end));
                    return Placement::SegmentClosing;
                }
                if state.append_position + padded > ring_end {
                    return Placement::NoSpace;
                }
                let size = padded.max(self.group_commit_bytes_max);
                state.open_batch = Some(Batch {
                    start: state.append_position,
                    buf: self.io.device.alloc_dma_buffer(size as usize),
                    len: 0,
                    records: 0,
                    skip_to: None,
                });
                Placement::Ready
            }
        }
    }

    /// Where the ring's free space ends: a lap after the trim position, or with segments a lap
    /// after the start of the trim's segment (a segment is reused only once trimmed whole,
    /// after [`segments::SegmentFiles::release`]).
    fn ring_end(&self, trim_position: u64) -> u64 {
        match self.segment_bytes {
            Some(segment) => trim_position - trim_position % segment + self.capacity_bytes,
            None => align_down(trim_position) + self.capacity_bytes,
        }
    }

    /// The end of the segment holding `position` (a segment's start is in that segment);
    /// `None` without segments.
    fn segment_end(&self, position: u64) -> Option<u64> {
        self.segment_bytes
            .map(|segment| position - position % segment + segment)
    }

    /// With segments: releases those the trim from `old_trim` to `new_trim` left whole
    /// ([`segments::SegmentFiles::release`]), before the ring may reuse them.
    async fn release_segments(&self, old_trim: u64, new_trim: u64) -> Result<(), WalError> {
        let (Some(files), Some(segment)) = (self.io.device.segments(), self.segment_bytes) else {
            return Ok(());
        };
        files.release(old_trim / segment, new_trim / segment).await
    }

    /// A batch of no record at block-aligned `position` whose padding closes the segment up
    /// to `segment_end`.
    fn closing_batch(&self, position: u64, segment_end: u64) -> Batch {
        Batch {
            start: position,
            buf: self.io.device.alloc_dma_buffer(BLOCK_SIZE as usize),
            len: 0,
            records: 0,
            skip_to: Some(segment_end),
        }
    }

    /// Copies one record into the open batch (placed by `place`); returns its end.
    fn write_record(
        &self,
        state: &mut State,
        stream_id: u64,
        first_offset: u64,
        last_offset: u64,
        payload: &[u8],
        payload_crc: u32,
    ) -> u64 {
        let generation = state.header.generation;
        let batch = state.open_batch.as_mut().expect("place() opened a batch");
        let position = batch.start + batch.len;
        assert_eq!(position, state.append_position, "records are contiguous");
        let header = RecordHeader {
            kind: RECORD_KIND_DATA,
            position,
            stream_id,
            first_offset,
            last_offset,
            payload_len: payload.len() as u32,
            generation,
            payload_crc,
        };
        let at = batch.len as usize;
        let bytes = batch.buf.as_bytes_mut();
        header.encode(&mut bytes[at..]);
        let payload_at = at + RECORD_HEADER_SIZE as usize;
        bytes[payload_at..payload_at + payload.len()].copy_from_slice(payload);
        debug_assert_eq!(RecordHeader::decode(&bytes[at..]), Some(header));
        let end = position + header.record_len();
        batch.len += header.record_len();
        batch.records += 1;
        state.append_position = end;
        state.stats.appends_total += 1;
        state.stats.append_payload_bytes_total += payload.len() as u64;
        end
    }

    /// Seals the open batch if it holds records and the window has room.
    fn take_batch(&self, state: &mut State) -> Option<Batch> {
        let ready = state
            .open_batch
            .as_ref()
            .is_some_and(|batch| batch.records > 0 || batch.skip_to.is_some());
        if !ready || state.inflight.len() >= self.inflight_writes_max {
            return None;
        }
        let mut batch = state.open_batch.take()?;
        let data_end = batch.start + batch.len;
        let (written, end) = match batch.skip_to {
            Some(segment_end) if segment_end > data_end => {
                (closing_write_len(batch.len), segment_end)
            }
            _ => (padded_len(batch.len), batch.start + padded_len(batch.len)),
        };
        if end > data_end {
            let pad = RecordHeader {
                kind: RECORD_KIND_PADDING,
                position: data_end,
                stream_id: 0,
                first_offset: 0,
                last_offset: 0,
                payload_len: (end - data_end - RECORD_HEADER_SIZE) as u32,
                generation: state.header.generation,
                payload_crc: 0,
            };
            let at = batch.len as usize;
            batch.buf.as_bytes_mut()[at..written as usize].fill(0);
            pad.encode(&mut batch.buf.as_bytes_mut()[at..]);
        }
        batch.buf.trim_to_size(written as usize);
        batch.len = written;
        assert!(
            end <= self.ring_end(state.trim_position),
            "never overwrite untrimmed data"
        );
        state.append_position = end;
        state.inflight.push_back(InflightWrite {
            end,
            written: false,
            done: false,
        });
        state.stats.writes_total += 1;
        state.stats.write_bytes_total += written;
        Some(batch)
    }

    /// Writes one batch, makes it durable and checks we still own the WAL.
    async fn persist_batch(&self, batch: Batch) -> Result<(), WalError> {
        if self.fence_check == FenceCheck::BeforeAndAfterWrite {
            self.check_fence().await?;
        }
        let end = batch.end();
        let started = Instant::now();
        let written = self.write_batch(batch).await;
        self.state
            .borrow_mut()
            .stats
            .write_latency
            .record(started.elapsed());
        written?;
        self.mark_written(end);
        match (self.io.durability, self.fence_check) {
            (Durability::Dsync, FenceCheck::Off) => Ok(()),
            (Durability::Dsync, _) => self.fence_after_write().await,
            (Durability::Fdatasync, FenceCheck::Off) => self.sync_after_write().await,
            (Durability::Fdatasync, _) => {
                // The fence check needs the write visible (complete), not
                // flushed: read the header while the flush runs.
                let (checked, synced) =
                    futures_lite::future::zip(self.fence_after_write(), self.sync_after_write())
                        .await;
                synced.and(checked)
            }
        }
    }

    /// Writes one batch to the ring (in two writes when it crosses the ring's end).
    async fn write_batch(&self, batch: Batch) -> Result<(), WalError> {
        let ring_offset = batch.start % self.capacity_bytes;
        let first_len = batch.len.min(self.capacity_bytes - ring_offset);
        let mut buf = batch.buf;
        if first_len < batch.len {
            // The write crosses the end of the ring: the rest goes to its start.
            let rest_len = (batch.len - first_len) as usize;
            let mut rest = self.io.device.alloc_dma_buffer(rest_len);
            rest.as_bytes_mut()
                .copy_from_slice(&buf.as_bytes()[first_len as usize..]);
            buf.trim_to_size(first_len as usize);
            self.io.write(rest, RING_OFFSET).await?;
        }
        self.io.write(buf, RING_OFFSET + ring_offset).await
    }

    /// Waits for an fdatasync that started after our write completed; one
    /// fdatasync covers every write completed before it started.
    async fn sync_after_write(&self) -> Result<(), WalError> {
        self.syncs
            .after_now(|| async {
                self.state.borrow_mut().stats.syncs_total += 1;
                let started = Instant::now();
                let synced = self.io.fdatasync().await;
                self.state
                    .borrow_mut()
                    .stats
                    .sync_latency
                    .record(started.elapsed());
                synced
            })
            .await
    }

    /// Waits for a header read issued after our write completed; one read
    /// vouches for every write completed before it was issued.
    async fn fence_after_write(&self) -> Result<(), WalError> {
        self.fence_checks.after_now(|| self.check_fence()).await
    }

    async fn check_fence(&self) -> Result<(), WalError> {
        let found = self.io.read_epoch_max().await?;
        self.state.borrow_mut().stats.fence_checks_total += 1;
        if found > self.epoch {
            return Err(WalError::Fenced {
                ours: self.epoch,
                found,
            });
        }
        Ok(())
    }

    async fn persist_header(&self, header: &Header) -> Result<(), WalError> {
        if self.fence_check == FenceCheck::BeforeAndAfterWrite {
            self.check_fence().await?;
        }
        self.io.write_header(header).await?;
        if self.fence_check != FenceCheck::Off {
            self.check_fence().await?;
        }
        Ok(())
    }

    /// Marks a completed block write (not yet durable) and advances the
    /// written position over the written prefix of the window.
    fn mark_written(&self, end: u64) {
        let advanced = {
            let mut state = self.state.borrow_mut();
            let slot = state
                .inflight
                .iter_mut()
                .find(|write| write.end == end)
                .expect("a written write is in the window");
            slot.written = true;
            let prefix_end = state
                .inflight
                .iter()
                .take_while(|write| write.written)
                .last()
                .map(|write| write.end);
            match prefix_end {
                Some(prefix_end) if prefix_end > state.written_position => {
                    state.written_position = prefix_end;
                    true
                }
                _ => false,
            }
        };
        if advanced {
            self.written_changed.notify();
        }
    }

    /// Marks a finished write and advances the durable position over the
    /// completed prefix of the window.
    fn complete(&self, state: &mut State, end: u64) {
        let slot = state
            .inflight
            .iter_mut()
            .find(|write| write.end == end)
            .expect("a completed write is in the window");
        slot.done = true;
        while state.inflight.front().is_some_and(|write| write.done) {
            let write = state.inflight.pop_front().expect("front exists");
            assert!(
                write.end > state.durable_position,
                "durable position only moves forward"
            );
            state.durable_position = write.end;
        }
        debug_assert!(
            state.written_position >= state.durable_position,
            "a durable write was written first"
        );
    }

    fn fail(&self, state: &mut State, error: WalError) {
        if state.error.is_none() {
            state.error = Some(error);
        }
        state.open_batch = None;
    }

    fn wake_all(&self) {
        self.durable_changed.notify();
        self.written_changed.notify();
        self.room_changed.notify();
        self.flusher_wake.notify();
    }
}

/// Seals the open batch into a write whenever the window has room; exits
/// once the WAL is closing and nothing is left to write, or on error.
async fn flusher(inner: Rc<Inner>) {
    loop {
        let notified = {
            let mut state = inner.state.borrow_mut();
            if state.error.is_some() {
                break;
            }
            if let Some(batch) = inner.take_batch(&mut state) {
                drop(state);
                inner.room_changed.notify();
                glommio::spawn_local(write_batch(inner.clone(), batch)).detach();
                continue;
            }
            let pending = state
                .open_batch
                .as_ref()
                .is_some_and(|batch| batch.records > 0 || batch.skip_to.is_some());
            if state.closing && !pending {
                break;
            }
            inner.flusher_wake.notified()
        };
        notified.await;
    }
    inner.state.borrow_mut().flusher_running = false;
    inner.wake_all();
}

async fn write_batch(inner: Rc<Inner>, batch: Batch) {
    let end = batch.end();
    let result = inner.persist_batch(batch).await;
    {
        let mut state = inner.state.borrow_mut();
        match result {
            Ok(()) => inner.complete(&mut state, end),
            Err(error) => inner.fail(&mut state, error),
        }
    }
    inner.wake_all();
}

/// The raw I/O: header copies, data writes, syncs.
struct DiskIo {
    device: Device,
    path: PathBuf,
    durability: Durability,
}

impl DiskIo {
    async fn write(&self, buf: DmaBuffer, position: u64) -> Result<(), WalError> {
        let len = buf.len();
        let written = self
            .device
            .write_at(buf, position)
            .await
            .map_err(|e| WalError::io("write", &self.path, e))?;
        if written != len {
            let error = std::io::Error::new(
                std::io::ErrorKind::WriteZero,
                format!("short write at {position}: {written} of {len} bytes"),
            );
            return Err(WalError::io("write", &self.path, error));
        }
        Ok(())
    }

    async fn fdatasync(&self) -> Result<(), WalError> {
        self.device
            .fdatasync()
            .await
            .map_err(|e| WalError::io("fdatasync", &self.path, e))
    }

    async fn read_header_blocks(&self) -> Result<device::DeviceRead, WalError> {
        let blocks = self
            .device
            .read_at_aligned(0, RING_OFFSET as usize)
            .await
            .map_err(|e| WalError::io("read header", &self.path, e))?;
        if (blocks.len() as u64) < RING_OFFSET {
            return Err(WalError::DeviceTooSmall {
                path: self.path.clone(),
                size_bytes: blocks.len() as u64,
                size_needed_bytes: RING_OFFSET,
            });
        }
        Ok(blocks)
    }

    async fn read_header(&self) -> Result<Option<Header>, WalError> {
        Ok(format::newest_header(&self.read_header_blocks().await?))
    }

    /// True when a header slot is still blank (called when no copy is valid): a new device,
    /// or a first format cut short by a crash. Formatting writes both copies before anything
    /// else and later header writes replace one copy at a time, so a WAL that ever opened
    /// has two written slots; one that never opened acknowledged nothing, and formatting it
    /// again loses nothing. Two written, invalid slots are refused (`HeaderCorrupt`): that is
    /// damage, or a device holding something else.
    async fn never_formatted(&self) -> Result<bool, WalError> {
        let blocks = self.read_header_blocks().await?;
        Ok(blocks
            .chunks(BLOCK_SIZE as usize)
            .take(HEADER_SLOTS as usize)
            .any(|slot| slot.iter().all(|byte| *byte == 0)))
    }

    /// The highest epoch in any valid header copy.
    async fn read_epoch_max(&self) -> Result<u64, WalError> {
        let blocks = self.read_header_blocks().await?;
        let epoch = (0..HEADER_SLOTS)
            .filter_map(|slot| {
                let from = (slot * BLOCK_SIZE) as usize;
                Header::decode(&blocks[from..from + BLOCK_SIZE as usize])
            })
            .map(|header| header.epoch)
            .max()
            .unwrap_or(0);
        Ok(epoch)
    }

    /// Writes one header copy (to the slot its sequence selects) durably.
    async fn write_header(&self, header: &Header) -> Result<(), WalError> {
        let mut buf = self.device.alloc_dma_buffer(BLOCK_SIZE as usize);
        header.encode(buf.as_bytes_mut());
        debug_assert_eq!(Header::decode(buf.as_bytes()), Some(*header));
        self.write(buf, header.slot() * BLOCK_SIZE).await?;
        if self.durability == Durability::Fdatasync {
            self.fdatasync().await?;
        }
        Ok(())
    }

    /// Writes both header copies of a new WAL.
    async fn format(&self, config: &WalConfig) -> Result<Header, WalError> {
        let mut header = Header {
            capacity_bytes: config.capacity_bytes,
            epoch: config.epoch,
            node_id: config.takeover_of.unwrap_or(config.node_id),
            generation: 0,
            trim_position: 0,
            sequence: 0,
        };
        for sequence in 0..HEADER_SLOTS {
            header.sequence = sequence;
            self.write_header(&header).await?;
        }
        Ok(header)
    }

    /// Zeroes the ring so every later write lands on written extents.
    async fn zero_ring(&self, capacity_bytes: u64) -> Result<(), WalError> {
        let mut position = 0;
        while position < capacity_bytes {
            let len = PREFORMAT_WRITE_BYTES.min(capacity_bytes - position);
            let mut buf = self.device.alloc_dma_buffer(len as usize);
            buf.as_bytes_mut().fill(0);
            self.write(buf, RING_OFFSET + position).await?;
            position += len;
        }
        self.fdatasync().await
    }
}
