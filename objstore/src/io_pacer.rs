//! Paces the local backend's object I/O by the WAL's latency on the same disk.
//!
//! Why: with the object store in a local directory (the embedded default), uploads,
//! compaction and cold reads share the device with the WAL. Each of their chunks queues ahead
//! of the WAL's writes and flushes, and a backlog of uploads written at full speed (after a
//! burst) raised the produce tail several-fold. Like Seastar's I/O scheduler gives the
//! foreground class its share first, the pacer lets one chunk run at a time, and holds chunks
//! back while the WAL's own write + sync latency is well above what the same disk gives it
//! when idle.
//!
//! Each shard reports its WAL's recent mean write + sync latency ([`ShardIoSignal`]); the
//! backend runs each chunk in the slot [`IoPacer::wait`] gives (writes before reads), after
//! its pause. The pause
//! doubles (from 1 ms up to the pause max, [`PAUSE_MAX_DEFAULT`] unless set) while the worst
//! shard's latency is over [`PRESSURE_RATIO`] × its baseline (the least it has seen lately),
//! and halves once it is back under. A shard whose uploads have a backlog makes object writes
//! run in larger chunks ([`LOCAL_WRITE_CHUNK_BYTES_BACKLOG`]), and one whose uploads fall behind
//! (half of its WAL waiting) turns pausing off: then its WAL needs the uploads more than it
//! needs the disk ([`UploadBacklog`]).

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError, Weak};
use std::time::Duration;

use crate::limits::{LOCAL_WRITE_CHUNK_BYTES, LOCAL_WRITE_CHUNK_BYTES_BACKLOG};

/// Latency over this multiple of the baseline is pressure on the WAL.
pub const PRESSURE_RATIO: u64 = 2;
/// The longest pause before one chunk by default: bounds how far pacing can slow a put or a
/// cold read (`--object-io-pause-max-ms`).
pub const PAUSE_MAX_DEFAULT: Duration = Duration::from_millis(20);
/// The first pause under pressure; halving below it ends pacing.
const PAUSE_MIN: Duration = Duration::from_millis(1);
/// The baseline never goes below this: on a disk answering in tens of microseconds, noise of
/// the same size is no pressure.
const BASELINE_FLOOR_US: u64 = 200;
/// The baseline rises by 1/this of itself per report without a lower sample (reports come
/// every [`REPORT_INTERVAL`]: it doubles in about 30 s), so that a disk that became slower
/// for good stops counting as pressure.
const BASELINE_RISE_DIVISOR: u64 = 4096;
/// How often a shard reports its WAL's latency.
pub const REPORT_INTERVAL: Duration = Duration::from_millis(10);

/// The broker's pacer: shared by the local backend and every shard's reporter.
pub struct IoPacer {
    shards: Mutex<Vec<Weak<ShardIoSignal>>>,
    pause_us: AtomicU64,
    pause_max_us: AtomicU64,
    /// Who holds the one slot of background I/O, and who waits for it.
    slot: Mutex<SlotState>,
    /// Signalled when the slot is given back.
    slot_freed: Condvar,
}

#[derive(Debug, Default)]
struct SlotState {
    taken: bool,
    writes_waiting: usize,
}

/// What a chunk of background I/O does, which decides who gets the slot first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoClass {
    /// Object writes (uploads, compaction): they free the WAL, so they go first. Otherwise
    /// sixteen cold-read prefetches waiting beside one upload would take 16 slots in 17 and
    /// let a catch-up consumer slow the uploads, and with them the producers, down.
    Write,
    /// Object reads (cold reads, compaction): they wait while a write waits.
    Read,
}

/// The right to run one chunk of background I/O, from [`IoPacer::wait`]; hold it until the
/// chunk's I/O returns.
#[must_use = "hold the slot while the chunk's I/O runs"]
pub struct PacedSlot<'a> {
    pacer: &'a IoPacer,
    /// How long the pacer paused before this chunk.
    pub paused: Duration,
    /// The most bytes this chunk may move: [`LOCAL_WRITE_CHUNK_BYTES`], or for a write while
    /// some shard's uploads have a backlog, [`LOCAL_WRITE_CHUNK_BYTES_BACKLOG`].
    pub chunk_bytes: usize,
}

impl Drop for PacedSlot<'_> {
    fn drop(&mut self) {
        self.pacer.lock_slot().taken = false;
        self.pacer.slot_freed.notify_all();
    }
}

impl Default for IoPacer {
    fn default() -> IoPacer {
        IoPacer {
            shards: Mutex::default(),
            pause_us: AtomicU64::new(0),
            pause_max_us: AtomicU64::new(PAUSE_MAX_DEFAULT.as_micros() as u64),
            slot: Mutex::default(),
            slot_freed: Condvar::new(),
        }
    }
}

/// How much of a shard's WAL waits for uploads, as it tells the pacer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum UploadBacklog {
    /// Uploads keep up: object I/O runs paced, in [`LOCAL_WRITE_CHUNK_BYTES`] chunks.
    #[default]
    Small,
    /// A backlog builds, which producers wait for once it fills their memory: object writes run
    /// in [`LOCAL_WRITE_CHUNK_BYTES_BACKLOG`] chunks, still paced.
    Large,
    /// Uploads fall behind (half the WAL waits): no background I/O is paused.
    Behind,
}

/// What one shard tells the pacer of its WAL.
#[derive(Debug, Default)]
pub struct ShardIoSignal {
    recent_us: AtomicU64,
    baseline_us: AtomicU64,
    backlog: AtomicU8,
}

impl ShardIoSignal {
    /// Reports the WAL's mean write + sync latency over the last interval (`None`: it did no
    /// I/O), and how much of it waits for uploads.
    pub fn report(&self, mean_latency: Option<Duration>, backlog: UploadBacklog) {
        self.backlog.store(backlog as u8, Ordering::Relaxed);
        let Some(latency) = mean_latency else {
            self.recent_us.store(0, Ordering::Relaxed);
            return;
        };
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.recent_us.store(us, Ordering::Relaxed);
        let baseline = self.baseline_us.load(Ordering::Relaxed);
        let risen = baseline.saturating_add(baseline / BASELINE_RISE_DIVISOR + 1);
        let baseline = if baseline == 0 { us } else { us.min(risen) };
        self.baseline_us.store(baseline, Ordering::Relaxed);
    }

    fn backlog(&self) -> UploadBacklog {
        match self.backlog.load(Ordering::Relaxed) {
            0 => UploadBacklog::Small,
            1 => UploadBacklog::Large,
            _ => UploadBacklog::Behind,
        }
    }

    /// Whether the WAL's latency is over [`PRESSURE_RATIO`] × its baseline.
    fn pressed(&self) -> bool {
        let baseline = self
            .baseline_us
            .load(Ordering::Relaxed)
            .max(BASELINE_FLOOR_US);
        self.recent_us.load(Ordering::Relaxed) > baseline.saturating_mul(PRESSURE_RATIO)
    }
}

/// What the shards say, taken together.
#[derive(Debug, PartialEq, Eq)]
enum Pressure {
    /// No WAL is under pressure.
    None,
    /// Some WAL is, and none is falling behind on uploads.
    Pressed,
    /// Some shard's uploads are falling behind: background I/O must not wait.
    Urgent,
}

impl IoPacer {
    /// A pacer with no shards: it never pauses.
    pub fn new() -> Arc<IoPacer> {
        Arc::new(IoPacer::default())
    }

    /// Registers a shard; the pacer forgets it when the returned signal is dropped.
    pub fn shard(&self) -> Arc<ShardIoSignal> {
        let signal = Arc::new(ShardIoSignal::default());
        let mut shards = self.shards.lock().unwrap_or_else(PoisonError::into_inner);
        shards.retain(|shard| shard.strong_count() > 0);
        shards.push(Arc::downgrade(&signal));
        signal
    }

    /// Sets the longest pause before one chunk; zero turns pacing off.
    pub fn set_pause_max(&self, pause_max: Duration) {
        let us = u64::try_from(pause_max.as_micros()).unwrap_or(u64::MAX);
        self.pause_max_us.store(us, Ordering::Relaxed);
    }

    /// Waits until the next chunk of background I/O may run, and returns the slot to hold
    /// while it runs. Chunks run one at a time broker-wide, each after the pause while a WAL
    /// is pressed. One at a time because the device serves queued requests in bulk: with
    /// sixteen cold-read prefetches in flight, a consumer read 600 MB/s past the pauses and the
    /// WAL's write p99 went from 0.5 to 2 ms (see `LOCAL_WRITE_CHUNK_BYTES`).
    /// A write gets the slot before any read waiting beside it ([`IoClass`]).
    pub fn wait(&self, class: IoClass) -> PacedSlot<'_> {
        let mut state = self.lock_slot();
        if class == IoClass::Write {
            state.writes_waiting += 1;
        }
        while state.taken || (class == IoClass::Read && state.writes_waiting > 0) {
            state = self
                .slot_freed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        state.taken = true;
        if class == IoClass::Write {
            state.writes_waiting -= 1;
        }
        drop(state);
        // The slot is built before the pause, so that it is given back even should the
        // sleep unwind.
        let mut slot = PacedSlot {
            pacer: self,
            paused: Duration::ZERO,
            chunk_bytes: LOCAL_WRITE_CHUNK_BYTES,
        };
        let (pressure, backlog) = self.survey();
        if class == IoClass::Write && backlog >= UploadBacklog::Large {
            slot.chunk_bytes = LOCAL_WRITE_CHUNK_BYTES_BACKLOG;
        }
        slot.paused = self.pause(pressure);
        if !slot.paused.is_zero() {
            std::thread::sleep(slot.paused);
        }
        slot
    }

    fn lock_slot(&self) -> std::sync::MutexGuard<'_, SlotState> {
        self.slot.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How long to wait before the next background chunk, under `pressure`.
    fn pause(&self, pressure: Pressure) -> Duration {
        let pause_max_us = self.pause_max_us.load(Ordering::Relaxed);
        if pause_max_us == 0 {
            return Duration::ZERO;
        }
        let pause_us = self.pause_us.load(Ordering::Relaxed);
        let next_us = match pressure {
            Pressure::Urgent => 0,
            Pressure::Pressed => (pause_us * 2)
                .max(PAUSE_MIN.as_micros() as u64)
                .min(pause_max_us),
            Pressure::None if pause_us / 2 < PAUSE_MIN.as_micros() as u64 => 0,
            Pressure::None => pause_us / 2,
        };
        self.pause_us.store(next_us, Ordering::Relaxed);
        Duration::from_micros(next_us)
    }

    /// The pressure on the WALs, and the largest upload backlog of any shard.
    fn survey(&self) -> (Pressure, UploadBacklog) {
        let shards = self.shards.lock().unwrap_or_else(PoisonError::into_inner);
        let mut pressure = Pressure::None;
        let mut backlog = UploadBacklog::Small;
        for shard in shards.iter().filter_map(Weak::upgrade) {
            backlog = backlog.max(shard.backlog());
            if shard.pressed() {
                pressure = Pressure::Pressed;
            }
        }
        if backlog == UploadBacklog::Behind {
            pressure = Pressure::Urgent;
        }
        (pressure, backlog)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(ms: u64) -> Option<Duration> {
        Some(Duration::from_millis(ms))
    }

    /// The pause the next chunk would get now.
    fn next_pause(pacer: &IoPacer) -> Duration {
        pacer.pause(pacer.survey().0)
    }

    #[test]
    fn writes_run_in_larger_chunks_while_a_shard_has_a_backlog_still_paced() {
        let pacer = IoPacer::new();
        let quiet = pacer.shard();
        let busy = pacer.shard();
        quiet.report(ms(1), UploadBacklog::Small);
        busy.report(ms(1), UploadBacklog::Small);
        assert_eq!(
            pacer.wait(IoClass::Write).chunk_bytes,
            LOCAL_WRITE_CHUNK_BYTES
        );
        busy.report(ms(5), UploadBacklog::Large);
        let slot = pacer.wait(IoClass::Write);
        assert_eq!(slot.chunk_bytes, LOCAL_WRITE_CHUNK_BYTES_BACKLOG);
        assert_eq!(
            slot.paused, PAUSE_MIN,
            "a backlog is no reason to stop pacing"
        );
        drop(slot);
        assert_eq!(
            pacer.wait(IoClass::Read).chunk_bytes,
            LOCAL_WRITE_CHUNK_BYTES,
            "reads do not free the WAL: they keep the small chunk"
        );
        busy.report(ms(5), UploadBacklog::Behind);
        let slot = pacer.wait(IoClass::Write);
        assert_eq!(slot.chunk_bytes, LOCAL_WRITE_CHUNK_BYTES_BACKLOG);
        assert_eq!(slot.paused, Duration::ZERO, "behind: no pause");
        drop(slot);
        busy.report(ms(1), UploadBacklog::Small);
        assert_eq!(
            pacer.wait(IoClass::Write).chunk_bytes,
            LOCAL_WRITE_CHUNK_BYTES
        );
    }

    #[test]
    fn pauses_grow_under_pressure_and_shrink_after_it() {
        let pacer = IoPacer::new();
        let shard = pacer.shard();
        shard.report(ms(1), UploadBacklog::Small);
        assert_eq!(next_pause(&pacer), Duration::ZERO, "at the baseline");
        shard.report(ms(3), UploadBacklog::Small);
        let pauses: Vec<_> = (0..7).map(|_| next_pause(&pacer).as_millis()).collect();
        assert_eq!(pauses, [1, 2, 4, 8, 16, 20, 20]);
        shard.report(ms(1), UploadBacklog::Small);
        let pauses: Vec<_> = (0..6).map(|_| next_pause(&pacer).as_millis()).collect();
        assert_eq!(pauses, [10, 5, 2, 1, 0, 0]);
    }

    #[test]
    fn chunks_run_one_at_a_time() {
        use std::sync::atomic::AtomicUsize;
        let pacer = IoPacer::new();
        let running = AtomicUsize::new(0);
        let most = AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for _ in 0..50 {
                        let slot = pacer.wait(IoClass::Read);
                        assert_eq!(slot.paused, Duration::ZERO, "no WAL is pressed");
                        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_micros(50));
                        running.fetch_sub(1, Ordering::SeqCst);
                        drop(slot);
                    }
                });
            }
        });
        assert_eq!(most.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_waiting_write_goes_before_waiting_reads() {
        let pacer = IoPacer::new();
        let order = Mutex::new(Vec::new());
        let held = pacer.wait(IoClass::Read);
        std::thread::scope(|scope| {
            let waiting = |n: usize| {
                while pacer.lock_slot().writes_waiting + readers_waiting(&order) < n {
                    std::thread::yield_now();
                }
            };
            for _ in 0..3 {
                scope.spawn(|| {
                    order.lock().unwrap().push("read waits");
                    let _slot = pacer.wait(IoClass::Read);
                    order.lock().unwrap().push("read");
                });
            }
            waiting(3);
            scope.spawn(|| {
                let _slot = pacer.wait(IoClass::Write);
                order.lock().unwrap().push("write");
            });
            waiting(4);
            drop(held);
        });
        let done: Vec<_> = order
            .into_inner()
            .unwrap()
            .into_iter()
            .filter(|step| *step != "read waits")
            .collect();
        assert_eq!(done, ["write", "read", "read", "read"]);
    }

    /// Readers that said they wait (they may not be asleep on the slot yet: the test only
    /// starts the write once they are, and a read not yet asleep still sees the write).
    fn readers_waiting(order: &Mutex<Vec<&str>>) -> usize {
        order
            .lock()
            .unwrap()
            .iter()
            .filter(|step| **step == "read waits")
            .count()
    }

    #[test]
    fn a_shard_falling_behind_turns_pacing_off() {
        let pacer = IoPacer::new();
        let quiet = pacer.shard();
        let pressed = pacer.shard();
        quiet.report(ms(1), UploadBacklog::Small);
        pressed.report(ms(1), UploadBacklog::Small);
        pressed.report(ms(5), UploadBacklog::Small);
        assert_eq!(next_pause(&pacer), PAUSE_MIN);
        quiet.report(None, UploadBacklog::Behind);
        assert_eq!(next_pause(&pacer), Duration::ZERO);
    }

    #[test]
    fn the_pause_max_bounds_pauses_and_zero_turns_pacing_off() {
        let pacer = IoPacer::new();
        let shard = pacer.shard();
        shard.report(ms(1), UploadBacklog::Small);
        shard.report(ms(9), UploadBacklog::Small);
        pacer.set_pause_max(Duration::from_millis(3));
        let pauses: Vec<_> = (0..4).map(|_| next_pause(&pacer).as_millis()).collect();
        assert_eq!(pauses, [1, 2, 3, 3]);
        pacer.set_pause_max(Duration::ZERO);
        assert_eq!(next_pause(&pacer), Duration::ZERO);
    }

    #[test]
    fn the_baseline_is_the_least_latency_seen_rising_slowly() {
        let pacer = IoPacer::new();
        let shard = pacer.shard();
        shard.report(ms(1), UploadBacklog::Small);
        shard.report(ms(10), UploadBacklog::Small);
        assert_eq!(shard.baseline_us.load(Ordering::Relaxed), 1001);
        shard.report(None, UploadBacklog::Small);
        assert_eq!(
            next_pause(&pacer),
            Duration::ZERO,
            "an idle WAL is no pressure"
        );
        // Microsecond noise over a fast disk is no pressure either.
        shard.report(Some(Duration::from_micros(20)), UploadBacklog::Small);
        shard.report(Some(Duration::from_micros(300)), UploadBacklog::Small);
        assert_eq!(next_pause(&pacer), Duration::ZERO);
    }

    #[test]
    fn a_dropped_shard_no_longer_counts() {
        let pacer = IoPacer::new();
        let shard = pacer.shard();
        shard.report(ms(1), UploadBacklog::Small);
        shard.report(ms(9), UploadBacklog::Small);
        drop(shard);
        assert_eq!(next_pause(&pacer), Duration::ZERO);
        let _again = pacer.shard();
        assert_eq!(pacer.shards.lock().unwrap().len(), 1);
    }
}
