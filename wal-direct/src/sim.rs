//! An in-memory WAL device for deterministic simulation (cargo feature `sim`,
//! on only in the simulator's test build; the broker has none of this).
//!
//! Every read, write and fdatasync completes after a seeded number of
//! scheduler turns (task yields on the caller's glommio executor), so writes in
//! flight finish out of order; faults are seeded too: EIO and ENOSPC on writes,
//! fdatasyncs that fail and drop some unsynced pages (as Linux does: the next
//! sync succeeds without them). A crash keeps what a successful sync made
//! durable and, for every block written since (completed or in flight),
//! keeps, loses, zeroes, tears or bit-flips it as the seed says, from the
//! first byte the write changed (see [`BlockDamage`]). No thread, no timer,
//! no real I/O: one seed replays one history.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use bytes::Bytes;

use crate::format::{BLOCK_SIZE, RECORD_KIND_DATA, RING_OFFSET, RecordHeader};

/// A torn block keeps a prefix of its new sectors (the device's atomic unit).
pub const SECTOR_BYTES: usize = 512;

/// How a [`SimDisk`] behaves. Probabilities are in parts per million of operations.
#[derive(Clone, Copy, Debug, Default)]
pub struct SimDiskConfig {
    /// Seeds every latency, fault and crash choice of the disk.
    pub seed: u64,
    /// An operation takes a seeded number of scheduler turns in `0..=latency_turns_max`.
    pub latency_turns_max: u32,
    /// Writes that fail with EIO (a seeded prefix of their blocks may have landed).
    pub write_error_ppm: u32,
    /// Writes that fail with ENOSPC (nothing lands).
    pub no_space_ppm: u32,
    /// fdatasyncs that fail with EIO, dropping some of the unsynced writes they covered.
    pub sync_error_ppm: u32,
    /// A deliberately broken disk, to show that the simulator's checks catch it.
    pub bug: Option<SimDiskBug>,
}

/// Ways a broken disk lies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SimDiskBug {
    /// fdatasync answers success without making anything durable.
    SyncWithoutPersisting,
    /// A write that fails answers success (its bytes are lost).
    WriteErrorReportedAsSuccess,
}

/// What a crash did to one block written since the last sync.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockDamage {
    /// The block holds its old, durable bytes.
    Lost,
    /// The new bytes reached the medium.
    Landed,
    /// The block reads as zeros.
    Zeroed,
    /// The first `sectors` sectors are new, the rest old.
    Torn { sectors: usize },
    /// The new bytes with one bit flipped.
    BitFlipped { bit: usize },
}

/// The bytes a restart finds after a crash, and what the crash did to each block.
#[derive(Clone, Debug)]
pub struct CrashImage {
    pub bytes: Vec<u8>,
    /// (byte position, damage) for every block written since the last sync, in write order.
    pub damage: Vec<(u64, BlockDamage)>,
}

/// Counts of what the disk did, for traces.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SimDiskStats {
    pub reads: u64,
    pub writes: u64,
    pub syncs: u64,
    pub write_errors: u64,
    pub no_space_errors: u64,
    pub sync_errors: u64,
    /// Unsynced writes a failing sync dropped.
    pub writes_dropped_by_sync_errors: u64,
}

/// A WAL record in a write that failed (even one a broken disk reported as written): the
/// simulator checks that no producer was told it is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FailedRecord {
    pub stream_id: u64,
    pub first_offset: u64,
    pub last_offset: u64,
}

/// An in-memory disk; clones share it. Used through [`crate::Wal::open_simulated`].
#[derive(Clone)]
pub struct SimDisk {
    state: Rc<RefCell<DiskState>>,
}

struct DiskState {
    config: SimDiskConfig,
    rng: SimRng,
    /// What reads see.
    volatile: Vec<u8>,
    /// What survives a crash.
    durable: Vec<u8>,
    /// Completed writes not yet made durable, in completion order.
    unsynced: Vec<Extent>,
    extents_written: u64,
    /// Writes submitted and not completed: a crash may land part of them.
    inflight: Vec<InflightWrite>,
    writes_submitted: u64,
    /// Operations submitted and not completed.
    ops_in_flight: u64,
    /// Operations left to complete before the disk crashes by itself.
    crash_in_ops: Option<u64>,
    /// Set by the crash: from then on every operation fails with EIO.
    crashed: Option<CrashImage>,
    failed_records: Vec<FailedRecord>,
    stats: SimDiskStats,
}

struct Extent {
    sequence: u64,
    position: u64,
    len: usize,
}

struct InflightWrite {
    id: u64,
    position: u64,
    data: Vec<u8>,
}

impl SimDisk {
    /// A blank (zeroed) disk of `size_bytes`.
    pub fn new(size_bytes: u64, config: SimDiskConfig) -> SimDisk {
        SimDisk::from_image(vec![0; size_bytes as usize], config)
    }

    /// The disk a restarted machine finds: `image` (from [`SimDisk::crash`]) is durable.
    pub fn from_image(image: Vec<u8>, config: SimDiskConfig) -> SimDisk {
        SimDisk {
            state: Rc::new(RefCell::new(DiskState {
                config,
                rng: SimRng::new(config.seed),
                durable: image.clone(),
                volatile: image,
                unsynced: Vec::new(),
                extents_written: 0,
                inflight: Vec::new(),
                writes_submitted: 0,
                ops_in_flight: 0,
                crash_in_ops: None,
                crashed: None,
                failed_records: Vec::new(),
                stats: SimDiskStats::default(),
            })),
        }
    }

    /// Crashes the disk when `ops` more operations have completed (0: at the next one), in
    /// the middle of whatever is in flight then.
    pub fn crash_after_ops(&self, ops: u64) {
        self.state.borrow_mut().crash_in_ops = Some(ops);
    }

    /// Crashes the disk now (if it has not crashed already) and returns the image a restart
    /// finds. Every later operation fails with EIO.
    pub fn crash(&self) -> CrashImage {
        let mut state = self.state.borrow_mut();
        state.crash_now();
        state.crashed.clone().expect("crashed above")
    }

    /// Whether the disk has crashed (by [`SimDisk::crash`] or [`SimDisk::crash_after_ops`]).
    pub fn is_crashed(&self) -> bool {
        self.state.borrow().crashed.is_some()
    }

    pub fn stats(&self) -> SimDiskStats {
        self.state.borrow().stats
    }

    /// The records of every write that failed on this disk, reported or not.
    pub fn failed_records(&self) -> Vec<FailedRecord> {
        self.state.borrow().failed_records.clone()
    }

    /// Operations submitted and not completed yet: 0 when nothing waits for the disk.
    pub fn ops_in_flight(&self) -> u64 {
        self.state.borrow().ops_in_flight
    }

    /// Waits the operation's latency (it counts as in flight meanwhile).
    async fn latency(&self) {
        let turns = {
            let mut state = self.state.borrow_mut();
            state.ops_in_flight += 1;
            let turns_max = state.config.latency_turns_max;
            state.rng.below(u64::from(turns_max) + 1) as u32
        };
        let _in_flight = InFlight(self);
        wait_turns(turns).await;
    }

    pub(crate) async fn write_at(&self, data: &[u8], position: u64) -> std::io::Result<usize> {
        let id = {
            let mut state = self.state.borrow_mut();
            state.check_range(position, data.len())?;
            state.writes_submitted += 1;
            let id = state.writes_submitted;
            state.inflight.push(InflightWrite {
                id,
                position,
                data: data.to_vec(),
            });
            id
        };
        self.latency().await;
        let mut state = self.state.borrow_mut();
        state.complete_op()?;
        let Some(index) = state.inflight.iter().position(|write| write.id == id) else {
            return Err(eio()); // a crash took it
        };
        let write = state.inflight.remove(index);
        state.stats.writes += 1;
        let fault_ppm = state.rng.below(1_000_000) as u32;
        let (write_error_ppm, no_space_ppm) =
            (state.config.write_error_ppm, state.config.no_space_ppm);
        if fault_ppm < write_error_ppm + no_space_ppm {
            state.note_failed(position, &write.data);
        }
        if fault_ppm < write_error_ppm {
            state.stats.write_errors += 1;
            // Some of the blocks may have reached the page cache before the error.
            let blocks = write.data.len() / BLOCK_SIZE as usize;
            let landed = state.rng.below(blocks as u64 + 1) as usize * BLOCK_SIZE as usize;
            state.apply(position, &write.data[..landed]);
            if state.config.bug == Some(SimDiskBug::WriteErrorReportedAsSuccess) {
                return Ok(write.data.len());
            }
            return Err(eio());
        }
        if fault_ppm < write_error_ppm + no_space_ppm {
            state.stats.no_space_errors += 1;
            if state.config.bug == Some(SimDiskBug::WriteErrorReportedAsSuccess) {
                return Ok(write.data.len());
            }
            return Err(std::io::Error::from_raw_os_error(libc::ENOSPC));
        }
        state.apply(position, &write.data);
        Ok(write.data.len())
    }

    pub(crate) async fn read_at(&self, position: u64, len: usize) -> std::io::Result<Bytes> {
        self.latency().await;
        let mut state = self.state.borrow_mut();
        state.complete_op()?;
        state.stats.reads += 1;
        let size = state.volatile.len() as u64;
        let from = position.min(size) as usize;
        let to = (position + len as u64).min(size) as usize;
        Ok(Bytes::copy_from_slice(&state.volatile[from..to]))
    }

    /// Makes durable every write completed before it started (an fdatasync's promise).
    pub(crate) async fn fdatasync(&self) -> std::io::Result<()> {
        let covered_below = self.state.borrow().extents_written;
        self.latency().await;
        let mut state = self.state.borrow_mut();
        state.complete_op()?;
        state.stats.syncs += 1;
        if state.config.bug == Some(SimDiskBug::SyncWithoutPersisting) {
            return Ok(());
        }
        let covered: Vec<Extent> = {
            let (covered, rest) = std::mem::take(&mut state.unsynced)
                .into_iter()
                .partition(|extent| extent.sequence < covered_below);
            state.unsynced = rest;
            covered
        };
        let sync_error_ppm = state.config.sync_error_ppm;
        if state.rng.chance_ppm(sync_error_ppm) {
            state.stats.sync_errors += 1;
            // Linux marks the pages of a failed writeback clean: some covered writes are
            // gone from the cache (reads see the old bytes) and no later sync brings them back.
            for extent in covered {
                let range = extent.position as usize..extent.position as usize + extent.len;
                if state.rng.below(2) == 0 {
                    state.stats.writes_dropped_by_sync_errors += 1;
                    let old = state.durable[range.clone()].to_vec();
                    state.volatile[range].copy_from_slice(&old);
                } else {
                    state.unsynced.push(extent);
                }
            }
            return Err(eio());
        }
        for extent in covered {
            let range = extent.position as usize..extent.position as usize + extent.len;
            let new = state.volatile[range.clone()].to_vec();
            state.durable[range].copy_from_slice(&new);
        }
        Ok(())
    }
}

/// Counts an operation out of `ops_in_flight` when its latency ends, or when it is dropped.
struct InFlight<'a>(&'a SimDisk);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.state.borrow_mut().ops_in_flight -= 1;
    }
}

impl DiskState {
    /// Notes the records this session wrote in a failed write (a record of an older
    /// generation is the recovered tail block's, rewritten, and was stored before).
    fn note_failed(&mut self, position: u64, data: &[u8]) {
        if position < RING_OFFSET {
            return; // a header block
        }
        let mut headers = Vec::new();
        let mut at = 0usize;
        while let Some(header) = data.get(at..).and_then(RecordHeader::decode) {
            headers.push(header);
            at += header.record_len() as usize;
        }
        let newest = headers.iter().map(|h| h.generation).max().unwrap_or(0);
        self.failed_records.extend(
            headers
                .iter()
                .filter(|h| h.kind == RECORD_KIND_DATA && h.generation == newest)
                .map(|h| FailedRecord {
                    stream_id: h.stream_id,
                    first_offset: h.first_offset,
                    last_offset: h.last_offset,
                }),
        );
    }

    fn check_range(&self, position: u64, len: usize) -> std::io::Result<()> {
        if self.crashed.is_some() {
            return Err(eio());
        }
        if position + len as u64 > self.volatile.len() as u64 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "write of {len} bytes at {position} past the end of a {}-byte disk",
                    self.volatile.len()
                ),
            ));
        }
        Ok(())
    }

    /// Counts a completing operation toward a scheduled crash; fails once crashed.
    fn complete_op(&mut self) -> std::io::Result<()> {
        if self.crashed.is_some() {
            return Err(eio());
        }
        match self.crash_in_ops {
            Some(0) => {
                self.crash_now();
                Err(eio())
            }
            Some(ops) => {
                self.crash_in_ops = Some(ops - 1);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// A write's bytes reach the page cache, durable at the next successful fdatasync (an
    /// O_DSYNC file is not modelled: `Wal::open_simulated` refuses `Durability::Dsync`).
    fn apply(&mut self, position: u64, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let from = position as usize;
        self.volatile[from..from + data.len()].copy_from_slice(data);
        self.unsynced.push(Extent {
            sequence: self.extents_written,
            position,
            len: data.len(),
        });
        self.extents_written += 1;
    }

    fn crash_now(&mut self) {
        if self.crashed.is_some() {
            return;
        }
        let mut bytes = self.durable.clone();
        let mut damage = Vec::new();
        let written: Vec<(u64, Vec<u8>)> = self
            .unsynced
            .iter()
            .map(|extent| {
                let from = extent.position as usize;
                (
                    extent.position,
                    self.volatile[from..from + extent.len].to_vec(),
                )
            })
            .chain(
                self.inflight
                    .drain(..)
                    .map(|write| (write.position, write.data)),
            )
            .collect();
        for (position, data) in written {
            for (index, new) in data.chunks(BLOCK_SIZE as usize).enumerate() {
                let at = position + (index as u64) * BLOCK_SIZE;
                let block = &mut bytes[at as usize..at as usize + new.len()];
                let chosen = self.block_damage(new.len());
                chosen.apply(block, new);
                damage.push((at, chosen));
            }
        }
        self.unsynced.clear();
        self.crashed = Some(CrashImage { bytes, damage });
    }

    fn block_damage(&mut self, block_len: usize) -> BlockDamage {
        let sectors = block_len.div_ceil(SECTOR_BYTES);
        match self.rng.below(10) {
            0..=2 => BlockDamage::Lost,
            3..=5 => BlockDamage::Landed,
            6 => BlockDamage::Zeroed,
            7 | 8 => BlockDamage::Torn {
                sectors: self.rng.below(sectors as u64) as usize,
            },
            _ => BlockDamage::BitFlipped {
                bit: self.rng.below(block_len as u64 * 8) as usize,
            },
        }
    }
}

impl BlockDamage {
    /// Turns `block` (its durable bytes) into what the crash leaves, given its `new` bytes.
    /// Bytes the write rewrote with the value they already had durably are not touched (the
    /// WAL's first write after recovery rewrites its tail block, keeping the records in it:
    /// an overwrite with the same bytes is assumed not to corrupt them); the damage starts
    /// at the first byte the write changes.
    fn apply(self, block: &mut [u8], new: &[u8]) {
        let Some(from) = block.iter().zip(new).position(|(old, new)| old != new) else {
            return;
        };
        match self {
            BlockDamage::Lost => {}
            BlockDamage::Landed => block[from..].copy_from_slice(&new[from..]),
            BlockDamage::Zeroed => block[from..].fill(0),
            BlockDamage::Torn { sectors } => {
                let end = (sectors * SECTOR_BYTES).min(new.len());
                if end > from {
                    block[from..end].copy_from_slice(&new[from..end]);
                }
            }
            BlockDamage::BitFlipped { bit } => {
                block[from..].copy_from_slice(&new[from..]);
                let bit = from * 8 + bit % ((new.len() - from) * 8);
                block[bit / 8] ^= 1 << (bit % 8);
            }
        }
    }
}

fn eio() -> std::io::Error {
    std::io::Error::from_raw_os_error(libc::EIO)
}

/// Yields to the executor `turns` times (an operation's latency, in scheduler turns; the
/// simulator's way of letting everything runnable run without a clock).
pub async fn wait_turns(turns: u32) {
    for _ in 0..turns {
        YieldNow { yielded: false }.await;
    }
}

/// Pending once, having woken itself: the task goes to the back of the run queue.
struct YieldNow {
    yielded: bool,
}

impl Future for YieldNow {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.yielded {
            return Poll::Ready(());
        }
        self.yielded = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// SplitMix64: a small, fast, seedable generator; the same seed gives the same numbers on
/// every platform.
#[derive(Clone, Debug)]
pub struct SimRng {
    state: u64,
}

impl SimRng {
    pub fn new(seed: u64) -> SimRng {
        SimRng { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..bound` (0 when `bound` is 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        if bound == 0 {
            return 0;
        }
        self.next_u64() % bound
    }

    /// True with probability `ppm` parts per million.
    pub fn chance_ppm(&mut self, ppm: u32) -> bool {
        self.below(1_000_000) < u64::from(ppm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Wal, WalConfig};

    const CAPACITY_BYTES: u64 = 256 << 10;

    fn config() -> WalConfig {
        let mut config = WalConfig::new("sim-wal", CAPACITY_BYTES);
        config.group_commit_bytes_max = 16 << 10;
        config.inflight_writes_max = 4;
        config
    }

    fn run<F: Future<Output = ()> + 'static>(test: impl FnOnce() -> F + Send + 'static) {
        glommio::LocalExecutorBuilder::default()
            .io_memory(512 << 10)
            .spawn(move || async move { test().await })
            .expect("executor starts")
            .join()
            .expect("test ran");
    }

    fn disk(config: SimDiskConfig) -> SimDisk {
        SimDisk::new(crate::format::RING_OFFSET + CAPACITY_BYTES, config)
    }

    /// Appends records `offsets` from a task each; returns those reported durable.
    async fn append_concurrently(
        wal: &Rc<Wal>,
        offsets: std::ops::Range<u64>,
    ) -> Vec<(u64, crate::WalPosition)> {
        let tasks: Vec<_> = offsets
            .map(|offset| {
                let wal = wal.clone();
                glommio::spawn_local(async move {
                    let payload = vec![offset as u8; 100 + offset as usize * 37];
                    let end = wal.append(1, offset, offset, &payload).await.ok()?;
                    wal.wait_durable(end).await.ok()?;
                    Some((offset, end))
                })
            })
            .collect();
        let mut durable = Vec::new();
        for task in tasks {
            durable.extend(task.await);
        }
        durable
    }

    #[test]
    fn records_reported_durable_survive_every_crash() {
        run(|| async {
            for seed in 0..20 {
                let sim = SimDiskConfig {
                    seed,
                    latency_turns_max: 3,
                    ..SimDiskConfig::default()
                };
                let first = disk(sim);
                let (wal, _) = Wal::open_simulated(first.clone(), config()).await.unwrap();
                let wal = Rc::new(wal);
                let durable = append_concurrently(&wal, 0..20).await;
                assert_eq!(durable.len(), 20, "no fault was configured");
                first.crash_after_ops(seed % 7);
                let more = append_concurrently(&wal, 20..30).await;
                let image = first.crash();
                drop(wal);
                let (_, recovered) =
                    Wal::open_simulated(SimDisk::from_image(image.bytes, sim), config())
                        .await
                        .unwrap();
                for (offset, end) in durable.iter().chain(&more) {
                    let found = recovered.iter().find(|r| r.first_offset == *offset);
                    assert_eq!(
                        found.map(|r| r.end_position),
                        Some(*end),
                        "seed {seed}: durable record {offset} lost"
                    );
                }
            }
        });
    }

    #[test]
    fn a_sync_that_lies_loses_durable_records_in_a_crash() {
        run(|| async {
            let sim = SimDiskConfig {
                seed: 7,
                bug: Some(SimDiskBug::SyncWithoutPersisting),
                ..SimDiskConfig::default()
            };
            let first = disk(sim);
            let (wal, _) = Wal::open_simulated(first.clone(), config()).await.unwrap();
            let wal = Rc::new(wal);
            let durable = append_concurrently(&wal, 0..20).await;
            let image = first.crash();
            drop(wal);
            let opened = Wal::open_simulated(SimDisk::from_image(image.bytes, sim), config()).await;
            let recovered = opened.map(|(_, records)| records.len()).unwrap_or(0);
            assert!(
                recovered < durable.len(),
                "a disk that never persisted kept all {} records",
                durable.len()
            );
        });
    }

    #[test]
    fn write_and_sync_errors_are_reported_never_durable() {
        run(|| async {
            for seed in 0..20 {
                let sim = SimDiskConfig {
                    seed,
                    latency_turns_max: 2,
                    write_error_ppm: 50_000,
                    no_space_ppm: 20_000,
                    sync_error_ppm: 50_000,
                    bug: None,
                };
                let first = disk(sim);
                let Ok((wal, _)) = Wal::open_simulated(first.clone(), config()).await else {
                    continue; // a fault while formatting: the open fails, as it should
                };
                let wal = Rc::new(wal);
                let durable = append_concurrently(&wal, 0..40).await;
                let image = first.crash();
                drop(wal);
                let clean = SimDiskConfig {
                    seed,
                    ..SimDiskConfig::default()
                };
                let (_, recovered) =
                    Wal::open_simulated(SimDisk::from_image(image.bytes, clean), config())
                        .await
                        .unwrap();
                for (offset, end) in &durable {
                    assert!(
                        recovered
                            .iter()
                            .any(|r| r.first_offset == *offset && r.end_position == *end),
                        "seed {seed}: record {offset} was reported durable and is lost"
                    );
                }
            }
        });
    }
}
