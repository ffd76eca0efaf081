//! The upload task of a shard: feeds durable WAL records to the uploader, uploads when due,
//! trims the WAL, and tells the partition store what is in objects now.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures::FutureExt;
use sluice_metadata::StreamUpload;
use sluice_objstore::{
    AppendedRecord, ObjectStore, SealedUpload, StreamRoll, UploadError, UploadReport, Uploader,
};
use sluice_wal::WalPosition;

use super::ObjectTier;
use crate::controller::ControllerHandle;
use crate::stop::StopSignal;
use crate::storage::shard_wal::ShardWal;

/// Pause before running a refused upload again (the metadata was unreachable or refused).
const UPLOAD_RETRY_DELAY: Duration = Duration::from_millis(500);
/// How soon a produce that finds the WAL full is refused once the store's puts fail, and
/// allowed to wait again once they succeed.
const PUTS_FAILING_CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// What a committed upload changes outside the tier.
pub trait UploadListener {
    /// Offsets of `stream_id` below `end_offset` are in committed objects.
    fn uploaded(&self, stream_id: u64, end_offset: i64);
    /// An upload was committed and the WAL trimmed: uploaded batches may leave the log cache.
    fn committed(&self);
    /// What an upload of these streams, each up to its end offset, records of them (their
    /// largest timestamp, their producers' state).
    fn stream_uploads(&self, stream_end_offsets: &[(u64, i64)]) -> Vec<StreamUpload>;
    /// When `stream_id`'s data must be uploaded at the latest (its topic's `segment.ms` and
    /// `segment.bytes`).
    fn roll(&self, stream_id: u64) -> StreamRoll;
}

/// Runs until `stop`: uploads shard `shard_id`'s durable WAL records through `tier`, commits
/// them with `controller`, trims `wal` and tells `listener`.
pub async fn run_uploads(
    shard_id: usize,
    tier: &ObjectTier,
    wal: &ShardWal,
    controller: &ControllerHandle,
    listener: &impl UploadListener,
    stop: StopSignal,
) {
    // Building and writing objects competes with the shards for the cores; it waits in the
    // background while the WAL has room for it to fall behind.
    let store = tier.store.background(wal.uploads_behind());
    loop {
        let now = Instant::now();
        let Some(mut sealed) = due_upload(tier, wal, listener, now) else {
            if roll_due(tier, wal, now) {
                // The upload that is due takes the segment being written: close it, and once
                // what it holds is durable the next round seals it. That includes everything
                // appended before an ask.
                tier.upload_asked.set(false);
                match wal.roll().await {
                    Ok(rolled) => {
                        if let Err(error) = wal.wait_durable(rolled).await {
                            tracing::error!(shard = shard_id, %error, "WAL failed after a roll");
                            glommio::timer::sleep(UPLOAD_RETRY_DELAY).await;
                        }
                    }
                    Err(error) => {
                        tracing::error!(shard = shard_id, %error, "WAL segment roll failed");
                        glommio::timer::sleep(UPLOAD_RETRY_DELAY).await;
                    }
                }
                continue;
            }
            let deadline = tier.uploader.borrow().next_deadline();
            let asked = tier.upload_asked_signal();
            let timer = async {
                match deadline {
                    Some(deadline) => {
                        glommio::timer::sleep(deadline.saturating_duration_since(now)).await
                    }
                    None => futures::future::pending::<()>().await,
                }
            };
            futures::select_biased! {
                _ = stop.clone().fuse() => return,
                _ = wal.durable_changed().fuse() => {}
                _ = timer.fuse() => {}
                _ = asked.fuse() => {}
            }
            continue;
        };
        let report = loop {
            let run = sealed.run(&store, controller);
            let result = futures::select_biased! {
                result = run.fuse() => result,
                never = watch_puts(&store, wal).fuse() => match never {},
            };
            match result {
                Ok(report) => break report,
                Err(error) => {
                    wal.set_uploads_failing(true);
                    tracing::warn!(shard = shard_id, %error, "upload not committed; retrying");
                    glommio::timer::sleep(UPLOAD_RETRY_DELAY).await;
                }
            }
        };
        wal.set_uploads_failing(false);
        upload_committed(shard_id, tier, wal, listener, &report).await;
    }
}

/// While an upload runs: tells `wal` every [`PUTS_FAILING_CHECK_INTERVAL`] whether the store's
/// puts are failing (the upload's put retries until it succeeds, so its run does not return).
async fn watch_puts(store: &ObjectStore, wal: &ShardWal) -> std::convert::Infallible {
    loop {
        wal.set_uploads_failing(store.stats().puts_failing.load(Ordering::Relaxed) > 0);
        glommio::timer::sleep(PUTS_FAILING_CHECK_INTERVAL).await;
    }
}

/// Hands the durable records queued in `wal` to the uploader and seals an upload if one is
/// due at `now` (by size or by the age of its oldest record), with what `listener` says of
/// its streams. The caller runs it until it is committed (a failed run keeps its
/// objects' ids, so it is retried, never dropped), then calls [`upload_committed`]. `now` is
/// a parameter so that the simulator's clock can drive it.
///
/// When the tier links WAL segments, an upload is the records of the closed segments: one
/// is sealed as soon as a segment closes (a segment holds about an upload's size), and when
/// another trigger is due the caller closes the segment being written first ([`roll_due`]).
pub fn due_upload(
    tier: &ObjectTier,
    wal: &ShardWal,
    listener: &impl UploadListener,
    now: Instant,
) -> Option<SealedUpload> {
    feed(tier, wal, listener, now);
    if let Some((closed_end, segment_bytes)) = linked_segments(tier, wal) {
        let mut uploader = tier.uploader.borrow_mut();
        let sealed = uploader.seal_before(closed_end.0, now);
        if uploader.buffered_bytes() == 0 {
            tier.upload_asked.set(false);
        }
        drop(uploader);
        let mut sealed = sealed?;
        sealed.link_segments(segment_bytes, |end| wal.segment_file(WalPosition(end)));
        if wal.first_queued_end().is_none_or(|end| end > closed_end) {
            // Every record in the closed segments is in this upload: the trim after it may
            // pass their padding too, which frees the last of them at once.
            sealed.cover_wal_up_to(closed_end.0);
        }
        sealed.set_stream_uploads(listener.stream_uploads(&sealed.stream_end_offsets()));
        return Some(sealed);
    }
    let mut sealed = {
        let mut uploader = tier.uploader.borrow_mut();
        let asked = tier.upload_asked.get();
        if !uploader.should_seal(now) && !asked {
            return None;
        }
        let sealed = uploader.seal();
        if sealed.is_some() || uploader.buffered_bytes() == 0 {
            // Taken, or nothing left to take: what was asked for is in this upload or in
            // objects already.
            tier.upload_asked.set(false);
        }
        sealed?
    };
    sealed.set_stream_uploads(listener.stream_uploads(&sealed.stream_end_offsets()));
    Some(sealed)
}

/// Where the closed segments end and the segment size, when the tier links segments of this
/// segmented WAL. The end is where they are durable up to: a segment is sealed once all of
/// it is, in one object (records of it still in flight would make a second one).
fn linked_segments(tier: &ObjectTier, wal: &ShardWal) -> Option<(WalPosition, u64)> {
    if !tier.link_segments {
        return None;
    }
    let closed = wal.closed_segments_end()?;
    let segment_bytes = wal.segment_bytes()?;
    let durable = wal.durable_position();
    let end = if durable >= closed {
        closed
    } else {
        // The segments wholly durable so far.
        WalPosition(durable.0 - durable.0 % segment_bytes)
    };
    Some((end, segment_bytes))
}

/// True when the tier links segments and an upload is due at `now` (its interval, a stream's
/// roll, or one asked for) for records in the segment being written: [`due_upload`] seals only
/// closed segments, so that segment must be closed first ([`ShardWal::roll`]).
pub fn roll_due(tier: &ObjectTier, wal: &ShardWal, now: Instant) -> bool {
    if linked_segments(tier, wal).is_none() {
        return false;
    }
    let uploader = tier.uploader.borrow();
    uploader.buffered_bytes() > 0 && (uploader.should_seal(now) || tier.upload_asked.get())
}

/// After an upload's commit: tells `listener` which offsets are in objects, trims the WAL up
/// to the upload, and lets the log cache evict what was uploaded.
pub async fn upload_committed(
    shard_id: usize,
    tier: &ObjectTier,
    wal: &ShardWal,
    listener: &impl UploadListener,
    report: &UploadReport,
) {
    tier.uploader.borrow_mut().completed();
    // Before any await: the image shows the objects now, and nothing may count their
    // bytes as still only in the log cache.
    for object in &report.objects {
        for range in &object.ranges {
            listener.uploaded(range.stream_id, range.end_offset);
        }
    }
    if let Err(error) = wal.trim(WalPosition(report.wal_end_position)).await {
        tracing::error!(shard = shard_id, %error, "WAL trim failed");
    }
    tracing::debug!(
        shard = shard_id,
        bytes = report.bytes,
        objects = report.objects.len(),
        put_retries = report.put_retries,
        "upload committed"
    );
    listener.committed();
}

/// Hands the durable queued records to the uploader until it is full.
fn feed(tier: &ObjectTier, wal: &ShardWal, listener: &impl UploadListener, now: Instant) {
    let mut uploader = tier.uploader.borrow_mut();
    while let Some(result) = wal.take_durable(|record| {
        let roll = listener.roll(record.stream_id);
        offer(&mut uploader, record, now, roll)
    }) {
        if result.is_err() {
            break;
        }
    }
}

/// Offers one durable record to `uploader`: taken, given back when the upload buffer is full
/// (it stays first in the WAL's queue for the next upload), or dropped when it cannot be
/// uploaded at all.
fn offer(
    uploader: &mut Uploader,
    record: AppendedRecord,
    now: Instant,
    roll: StreamRoll,
) -> Result<(), (AppendedRecord, UploadError)> {
    match uploader.append(record.clone(), now, roll) {
        Ok(()) => Ok(()),
        Err(error @ UploadError::Full { .. }) => Err((record, error)),
        Err(error) => {
            // A record that does not continue its stream cannot be committed; keeping it
            // would stop every upload of this shard behind it.
            tracing::error!(
                stream_id = record.stream_id,
                first_offset = record.first_offset,
                %error,
                "record not uploadable; skipped"
            );
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use sluice_objstore::UploaderConfig;

    use super::*;

    fn record(stream_id: u64, first_offset: i64, len: usize, wal_end: u64) -> AppendedRecord {
        let payload = Bytes::from(vec![first_offset as u8; len]);
        AppendedRecord {
            stream_id,
            first_offset,
            last_offset: first_offset,
            payload_crc: crc32c::crc32c(&payload),
            payload,
            wal_end_position: wal_end,
        }
    }

    #[test]
    fn records_are_taken_until_the_buffer_is_full_then_given_back() {
        let mut uploader = Uploader::new(UploaderConfig {
            buffer_bytes_max: 1000,
            ..UploaderConfig::default()
        });
        let now = Instant::now();
        assert!(offer(&mut uploader, record(1, 0, 600, 600), now, StreamRoll::NONE).is_ok());
        let refused = record(1, 1, 600, 1200);
        let Err((given_back, error)) = offer(&mut uploader, refused.clone(), now, StreamRoll::NONE)
        else {
            panic!("a record over buffer_bytes_max was taken");
        };
        assert_eq!(
            given_back, refused,
            "the record goes back to the WAL's queue"
        );
        assert!(matches!(error, UploadError::Full { .. }));
        assert_eq!(uploader.buffered_bytes(), 600);
    }

    #[test]
    fn a_record_that_does_not_continue_its_stream_is_dropped_not_retried() {
        let mut uploader = Uploader::new(UploaderConfig::default());
        let now = Instant::now();
        assert!(offer(&mut uploader, record(1, 0, 100, 100), now, StreamRoll::NONE).is_ok());
        // Offset 5 after offset 0: a gap that could never be committed.
        assert!(offer(&mut uploader, record(1, 5, 100, 200), now, StreamRoll::NONE).is_ok());
        assert_eq!(uploader.buffered_bytes(), 100, "the gap was not buffered");
        // The stream goes on from where it was.
        assert!(offer(&mut uploader, record(1, 1, 100, 300), now, StreamRoll::NONE).is_ok());
        assert_eq!(uploader.buffered_bytes(), 200);
    }
}
