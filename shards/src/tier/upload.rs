//! The upload task of a shard: feeds durable WAL records to the uploader, uploads when due,
//! trims the WAL, and tells the partition store what is in objects now.

use std::time::{Duration, Instant};

use futures::FutureExt;
use sluice_objstore::UploadError;
use sluice_wal::WalPosition;

use super::ObjectTier;
use crate::controller::ControllerHandle;
use crate::stop::StopSignal;
use crate::storage::shard_wal::ShardWal;

/// Pause before running a refused upload again (the metadata was unreachable or refused).
const UPLOAD_RETRY_DELAY: Duration = Duration::from_millis(500);

/// What a committed upload changes outside the tier.
pub trait UploadListener {
    /// Offsets of `stream_id` below `end_offset` are in committed objects.
    fn uploaded(&self, stream_id: u64, end_offset: i64);
    /// An upload was committed and the WAL trimmed: uploaded batches may leave the log cache.
    fn committed(&self);
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
        feed(tier, wal);
        let now = Instant::now();
        let sealed = {
            let mut uploader = tier.uploader.borrow_mut();
            if uploader.should_seal(now) {
                uploader.seal()
            } else {
                None
            }
        };
        let Some(mut sealed) = sealed else {
            let deadline = tier.uploader.borrow().next_deadline();
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
            }
            continue;
        };
        let report = loop {
            match sealed.run(&store, controller).await {
                Ok(report) => break report,
                Err(error) => {
                    tracing::warn!(shard = shard_id, %error, "upload not committed; retrying");
                    glommio::timer::sleep(UPLOAD_RETRY_DELAY).await;
                }
            }
        };
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
}

/// Hands the durable queued records to the uploader until it is full.
fn feed(tier: &ObjectTier, wal: &ShardWal) {
    let now = Instant::now();
    let mut uploader = tier.uploader.borrow_mut();
    while let Some(result) = wal.take_durable(|record| {
        match uploader.append(record.clone(), now) {
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
    }) {
        if result.is_err() {
            break;
        }
    }
}
