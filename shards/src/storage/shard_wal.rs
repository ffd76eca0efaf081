//! A shard's WAL with the bookkeeping of the object tier: every record appended is also queued,
//! in WAL order, until the upload task has put it into an object and the WAL is trimmed past it.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use glommio::sync::Semaphore;
use sluice_objstore::AppendedRecord;
use sluice_objstore::io_pacer::UploadBacklog;
use sluice_wal::{Wal, WalError, WalPosition, WalStats, WhenFull};

/// The WAL of one shard and its records not yet handed to the uploader.
pub struct ShardWal {
    wal: Wal,
    // Pushed right after `Wal::append` returns, before any other task runs, so the queue is in
    // WAL position order and holds every record below the append position.
    unuploaded: RefCell<VecDeque<AppendedRecord>>,
    // One permit at most: "records became durable", for the upload task.
    durable_signal: Semaphore,
    // Whether uploads are falling behind: more than half the WAL waits for them.
    uploads_behind: Arc<AtomicBool>,
    // The memory the records waiting for upload live in (the shard's chunk pool).
    memory_bytes: u64,
    // While either holds, no trim is coming soon, so a produce that finds the WAL full fails
    // (`WalError::Full`) instead of waiting: the store's puts fail, or the shard is stopping.
    uploads_failing: Cell<bool>,
    stopping: Cell<bool>,
}

impl ShardWal {
    /// Wraps an opened WAL whose records waiting for upload are held in `memory_bytes` (the
    /// shard's chunk pool).
    pub fn new(wal: Wal, memory_bytes: usize) -> ShardWal {
        ShardWal {
            wal,
            memory_bytes: u64::try_from(memory_bytes).unwrap_or(u64::MAX),
            unuploaded: RefCell::new(VecDeque::new()),
            durable_signal: Semaphore::new(0),
            uploads_behind: Arc::new(AtomicBool::new(false)),
            uploads_failing: Cell::new(false),
            stopping: Cell::new(false),
        }
    }

    /// Whether the store's puts fail (kept current by the upload task while an upload runs).
    /// While they do, a produce that finds the WAL full is refused (KAFKA_STORAGE_ERROR)
    /// rather than left waiting for a trim that may never come.
    pub fn set_uploads_failing(&self, failing: bool) {
        if self.uploads_failing.replace(failing) != failing {
            self.refuse_space_waits();
        }
    }

    /// The shard is stopping: its uploads end, so produces waiting for WAL space are refused
    /// and the connections waiting for their answers can drain.
    pub fn set_stopping(&self) {
        self.stopping.set(true);
        self.refuse_space_waits();
    }

    fn refuse_space_waits(&self) {
        self.wal.refuse_space_waits(self.refuses_space_waits());
    }

    /// True while no upload is coming soon to free WAL space or the memory its records hold
    /// (the store's puts fail, or the shard stops): a produce that would wait for either is
    /// refused instead.
    pub fn refuses_space_waits(&self) -> bool {
        self.uploads_failing.get() || self.stopping.get()
    }

    /// True while more than half the WAL waits for uploads (kept current by appends and
    /// trims): the upload work then runs at normal priority, not in the background.
    pub fn uploads_behind(&self) -> Arc<AtomicBool> {
        self.uploads_behind.clone()
    }

    /// How much waits for uploads, by `stats` of this WAL: Behind over half the WAL; Large over
    /// a quarter of the WAL, or of the memory its records are held in if less (the object I/O
    /// pacer then has object writes run in larger chunks); Small otherwise. By default the
    /// memory (768 MiB of pool a shard) is the smaller of the two, and producers wait for
    /// uploads once it is short.
    pub fn upload_backlog(&self, stats: &WalStats) -> UploadBacklog {
        if stats.used_bytes > stats.capacity_bytes / 2 {
            UploadBacklog::Behind
        } else if stats.used_bytes > stats.capacity_bytes.min(self.memory_bytes) / 4 {
            UploadBacklog::Large
        } else {
            UploadBacklog::Small
        }
    }

    /// The largest batch one append may carry (`--wal-size` / 2, less a record header).
    pub fn batch_bytes_max(&self) -> usize {
        usize::try_from(self.wal.payload_bytes_max()).unwrap_or(usize::MAX)
    }

    fn note_usage(&self) {
        let behind = self.upload_backlog(&self.wal.stats()) == UploadBacklog::Behind;
        self.uploads_behind.store(behind, Ordering::Relaxed);
    }

    /// Appends one record of `stream_id` holding `first_offset..=last_offset`, doing
    /// `when_full` while the WAL is full (back-pressure until an upload trims it). Returns its
    /// end position.
    pub async fn append(
        &self,
        stream_id: u64,
        first_offset: i64,
        last_offset: i64,
        payload: Bytes,
        when_full: WhenFull,
    ) -> Result<WalPosition, WalError> {
        let payload_crc = crc32c::crc32c(&payload);
        self.append_with_crc(
            stream_id,
            first_offset,
            last_offset,
            payload,
            payload_crc,
            when_full,
        )
        .await
    }

    /// [`ShardWal::append`] of a payload whose CRC-32C the caller knows, doing `when_full`
    /// if the WAL has no room (see [`sluice_wal::Wal::append_with_crc`]).
    pub async fn append_with_crc(
        &self,
        stream_id: u64,
        first_offset: i64,
        last_offset: i64,
        payload: Bytes,
        payload_crc: u32,
        when_full: WhenFull,
    ) -> Result<WalPosition, WalError> {
        let position = self
            .wal
            .append_with_crc(
                stream_id,
                first_offset as u64,
                last_offset as u64,
                &payload,
                payload_crc,
                when_full,
            )
            .await?;
        self.note_usage();
        self.unuploaded.borrow_mut().push_back(AppendedRecord {
            stream_id,
            first_offset,
            last_offset,
            payload,
            payload_crc,
            wal_end_position: position.0,
        });
        Ok(position)
    }

    /// Queues a record found in the WAL at start-up that is not in object storage yet.
    pub fn queue_recovered(&self, record: AppendedRecord) {
        self.unuploaded.borrow_mut().push_back(record);
    }

    /// Resolves once the writes holding everything up to `position` completed, before their
    /// sync (see [`sluice_wal::Wal::wait_written`]): to time the two apart, not to acknowledge.
    pub async fn wait_written(&self, position: WalPosition) -> Result<(), WalError> {
        self.wal.wait_written(position).await
    }

    /// Resolves once everything up to `position` is durable.
    pub async fn wait_durable(&self, position: WalPosition) -> Result<(), WalError> {
        self.wal.wait_durable(position).await?;
        if self.durable_signal.available() == 0 {
            self.durable_signal.signal(1);
        }
        Ok(())
    }

    /// Waits until a record became durable since the last call.
    pub async fn durable_changed(&self) {
        let _ = self.durable_signal.acquire(1).await;
    }

    /// Takes the oldest queued record if it is durable and `accept` takes it; a refused record
    /// stays queued (the uploader is full).
    pub fn take_durable<E>(
        &self,
        accept: impl FnOnce(AppendedRecord) -> Result<(), (AppendedRecord, E)>,
    ) -> Option<Result<(), E>> {
        let durable = self.wal.durable_position().0;
        let mut queue = self.unuploaded.borrow_mut();
        if queue.front()?.wal_end_position > durable {
            return None;
        }
        let record = queue.pop_front()?;
        match accept(record) {
            Ok(()) => Some(Ok(())),
            Err((record, error)) => {
                queue.push_front(record);
                Some(Err(error))
            }
        }
    }

    /// Closes the WAL segment being written (see [`sluice_wal::Wal::roll`]); returns the
    /// append position before it.
    pub async fn roll(&self) -> Result<WalPosition, WalError> {
        self.wal.roll().await
    }

    /// Where the closed segments of a segmented WAL end (see
    /// [`sluice_wal::Wal::closed_segments_end`]); `None` for a WAL of one file.
    pub fn closed_segments_end(&self) -> Option<WalPosition> {
        self.wal.closed_segments_end()
    }

    /// The segment file holding the record that ends at `end` (see
    /// [`sluice_wal::Wal::segment_file`]).
    pub fn segment_file(&self, end: WalPosition) -> Option<PathBuf> {
        self.wal.segment_file(end)
    }

    /// The end of the oldest record not yet handed to the uploader.
    pub fn first_queued_end(&self) -> Option<WalPosition> {
        let queue = self.unuploaded.borrow();
        queue
            .front()
            .map(|record| WalPosition(record.wal_end_position))
    }

    /// Everything before this position is durable.
    pub fn durable_position(&self) -> WalPosition {
        self.wal.durable_position()
    }

    /// The segment size of a segmented WAL.
    pub fn segment_bytes(&self) -> Option<u64> {
        self.wal.segment_bytes()
    }

    /// Releases WAL space up to `position`, whose records are all in committed objects.
    pub async fn trim(&self, position: WalPosition) -> Result<(), WalError> {
        let trimmed = self.wal.trim(position).await;
        self.note_usage();
        trimmed
    }

    /// The WAL's figures.
    pub fn stats(&self) -> WalStats {
        self.wal.stats()
    }

    /// Writes what is queued, syncs and closes the WAL.
    pub async fn close(self) -> Result<(), WalError> {
        self.wal.close().await
    }
}

#[cfg(test)]
mod tests {
    use sluice_wal::sim::{SimDisk, SimDiskConfig};
    use sluice_wal::{WalConfig, format::RING_OFFSET};

    use super::*;

    const CAPACITY_BYTES: u64 = 4 << 20;
    const RECORD_BYTES: u64 = 64 << 10;

    async fn shard_wal(memory_bytes: usize) -> ShardWal {
        let disk = SimDisk::new(RING_OFFSET + CAPACITY_BYTES, SimDiskConfig::default());
        let (wal, _) = Wal::open_simulated(disk, WalConfig::new("sim", CAPACITY_BYTES))
            .await
            .expect("a blank simulated disk opens");
        ShardWal::new(wal, memory_bytes)
    }

    /// Appends 64 KiB records to a fresh WAL of the memory given until `flag` of it holds;
    /// returns the WAL bytes used then, after checking that a trim of everything clears it.
    async fn used_bytes_when_set(memory_bytes: usize, flag: fn(&ShardWal) -> bool) -> u64 {
        let wal = shard_wal(memory_bytes).await;
        let payload = Bytes::from(vec![7u8; RECORD_BYTES as usize]);
        for offset in 0.. {
            let end = wal
                .append(1, offset, offset, payload.clone(), WhenFull::Wait)
                .await
                .expect("appended");
            if flag(&wal) {
                let used = wal.stats().used_bytes;
                wal.wait_durable(end).await.expect("durable");
                wal.trim(end).await.expect("trimmed");
                assert!(!flag(&wal), "nothing waits after the trim");
                return used;
            }
        }
        unreachable!("the WAL fills before")
    }

    fn backlogged(wal: &ShardWal) -> bool {
        wal.upload_backlog(&wal.stats()) >= UploadBacklog::Large
    }

    fn behind(wal: &ShardWal) -> bool {
        wal.uploads_behind().load(Ordering::Relaxed)
    }

    /// Whether `used` is just past `threshold`: within the two records that crossed it.
    fn just_past(used: u64, threshold: u64) -> bool {
        (threshold..threshold + 2 * RECORD_BYTES).contains(&used)
    }

    #[test]
    fn a_backlog_is_a_quarter_of_the_wal_or_of_the_memory_and_behind_half_the_wal() {
        glommio::LocalExecutorBuilder::default()
            .make()
            .expect("an executor")
            .run(async {
                let memory_bytes = 1 << 20;
                for (memory, backlog) in [
                    (usize::MAX, CAPACITY_BYTES / 4),
                    (memory_bytes, memory_bytes as u64 / 4),
                ] {
                    let used = used_bytes_when_set(memory, backlogged).await;
                    assert!(just_past(used, backlog), "backlog {memory}: {used}");
                    let used = used_bytes_when_set(memory, behind).await;
                    assert!(
                        just_past(used, CAPACITY_BYTES / 2),
                        "behind {memory}: {used}"
                    );
                }
            });
    }
}
