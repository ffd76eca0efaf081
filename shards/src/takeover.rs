//! Failover by WAL takeover (ARCHITECTURE.md, "Failover"). When the quorum gives this broker
//! a fenced broker's WAL (`WalHolder::Taker`), shard 0 opens each of that broker's shard
//! WALs at the new fencing epoch, so that the fenced broker can acknowledge nothing more;
//! uploads every record not in objects yet, with the producers' state it leaves (so that an
//! idempotent producer sees no duplicate and no sequence gap on the new leader); trims the
//! WAL; and releases it. The quorum then gives the fenced broker's partitions to the live
//! brokers, one leader epoch up, and they open them from objects.
//!
//! Also here: a broker whose own WAL was taken over stops (it cannot write any more).

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::time::{Duration, Instant};

use sluice_metadata::{BrokerWal, MetadataCommand, MetadataImage, StreamUpload, WalHolder};
use sluice_objstore::{AppendedRecord, StreamRoll, UploadError, Uploader, UploaderConfig};
use sluice_wal::{Wal, WalConfig, WalError};

use crate::config::BrokerConfig;
use crate::recovery::{StreamContinuity, appended};
use crate::storage::partition::Partition;
use crate::storage::{PartitionStore, resumed_partition};

/// Pause before trying again what the metadata refused or could not take (an upload's
/// commit, the release).
const RETRY_DELAY: Duration = Duration::from_millis(200);

/// Bytes of a taken-over WAL buffered into one upload: the upload is cut in pieces of this
/// size, each committed before the next is built.
const TAKEOVER_UPLOAD_BYTES_MAX: usize = 64 << 20;

/// The takeovers this broker runs, so that each (broker, epoch) starts once.
#[derive(Default)]
pub struct WalTakeovers {
    started: RefCell<HashSet<(i32, u64)>>,
}

impl WalTakeovers {
    /// Starts the takeovers `image` gives this broker that are not running yet.
    pub fn start_due(&self, storage: &Rc<PartitionStore>, config: &BrokerConfig) {
        let image = storage.image();
        for (broker, wal) in image.wals_taken_by_me() {
            if !self.started.borrow_mut().insert((broker, wal.epoch)) {
                continue;
            }
            let storage = storage.clone();
            let wal = wal.clone();
            let inflight_writes_max = config.wal_inflight_writes_max;
            glommio::spawn_local(async move {
                take_over(&storage, broker, wal, inflight_writes_max).await
            })
            .detach();
        }
    }
}

/// Stops the process when the quorum says this broker's WAL, opened at `opened_epoch`, is
/// held by another now: a survivor took it over while this broker was fenced, so every
/// append would be refused. Registering again (a restart) gives it a WAL to write.
pub fn stop_if_wal_lost(image: &MetadataImage, opened_epoch: Option<u64>) {
    let (Some(opened), Some(wal)) = (opened_epoch, image.broker_wal(image.node_id)) else {
        return;
    };
    if wal.epoch == opened && wal.holder == WalHolder::Owner {
        return;
    }
    tracing::error!(
        broker = image.node_id,
        holder = ?wal.holder,
        wal_epoch = wal.epoch,
        opened_epoch = opened,
        "this broker was fenced (no heartbeat reached the controller quorum within the \
         broker session timeout) and a live broker took its WAL over: it cannot write any \
         more and stops; start it again to rejoin the cluster"
    );
    std::process::exit(3);
}

/// Why a takeover ended early.
enum TakeoverEnd {
    /// This host cannot read the WAL (absent, another node's, damaged): its partitions wait
    /// for their broker.
    Unreachable(String),
    /// A newer holder fenced this taker (another taker, or the broker registering again).
    Superseded,
}

async fn take_over(storage: &PartitionStore, broker: i32, wal: BrokerWal, inflight: usize) {
    let started = Instant::now();
    tracing::info!(
        broker,
        wal_epoch = wal.epoch,
        "taking over a fenced broker's WAL"
    );
    let moved = match upload_wal(storage, broker, &wal, inflight).await {
        Ok((records, bytes)) => {
            tracing::info!(
                broker,
                wal_epoch = wal.epoch,
                records,
                bytes,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "took over a fenced broker's WAL: uploaded what was not in objects"
            );
            true
        }
        Err(TakeoverEnd::Unreachable(reason)) => {
            tracing::warn!(
                broker,
                %reason,
                "cannot take over a fenced broker's WAL from this host: its partitions wait \
                 for it"
            );
            false
        }
        Err(TakeoverEnd::Superseded) => {
            tracing::info!(broker, wal_epoch = wal.epoch, "WAL takeover superseded");
            return;
        }
    };
    let release = MetadataCommand::ReleaseWal {
        node_id: broker,
        epoch: wal.epoch,
        moved,
    };
    while still_held(storage, broker, wal.epoch) {
        match storage.controller.submit(release.clone()).await {
            Ok(_) => return,
            Err(error) => {
                tracing::info!(broker, %error, "WAL release not committed; retrying");
                glommio::timer::sleep(RETRY_DELAY).await;
            }
        }
    }
}

/// True while the quorum still has this broker holding `broker`'s WAL at `epoch`.
fn still_held(storage: &PartitionStore, broker: i32, epoch: u64) -> bool {
    let image = storage.image();
    image
        .broker_wal(broker)
        .is_some_and(|wal| wal.epoch == epoch && wal.holder == WalHolder::Taker(image.node_id))
}

/// Opens, uploads and trims each of `broker`'s shard WALs; returns the records and bytes
/// uploaded.
async fn upload_wal(
    storage: &PartitionStore,
    broker: i32,
    wal: &BrokerWal,
    inflight_writes_max: usize,
) -> Result<(usize, usize), TakeoverEnd> {
    let mut totals = (0, 0);
    for path in &wal.paths {
        let config = WalConfig {
            path: path.into(),
            capacity_bytes: wal.capacity_bytes,
            inflight_writes_max,
            epoch: wal.epoch,
            node_id: storage.image().node_id.max(0) as u32,
            takeover_of: Some(broker.max(0) as u32),
            ..WalConfig::default()
        };
        let (opened, records) = Wal::open(config).await.map_err(|error| match error {
            WalError::Fenced { .. } => TakeoverEnd::Superseded,
            other => TakeoverEnd::Unreachable(other.to_string()),
        })?;
        let last_end = records.last().map(|r| r.end_position);
        let mut taken = TakenStreams::default();
        let image = storage.image();
        let mut uploader = Uploader::new(UploaderConfig {
            buffer_bytes_max: TAKEOVER_UPLOAD_BYTES_MAX,
            ..UploaderConfig::default()
        });
        for record in records {
            let Some(appended) = taken.admit(&image, broker, record) else {
                continue;
            };
            totals.0 += 1;
            totals.1 += appended.payload.len();
            let now = Instant::now();
            match uploader.append(appended.clone(), now, StreamRoll::NONE) {
                Err(UploadError::Full { .. }) => {
                    upload(storage, &mut uploader, &taken, broker, wal.epoch).await?;
                    if let Err(error) = uploader.append(appended, now, StreamRoll::NONE) {
                        tracing::error!(broker, %error, "a taken-over record is not uploadable");
                    }
                }
                Err(error) => {
                    tracing::error!(broker, %error, "a taken-over record is not uploadable")
                }
                Ok(()) => {}
            }
        }
        upload(storage, &mut uploader, &taken, broker, wal.epoch).await?;
        if let Some(end) = last_end {
            opened.trim(end).await.map_err(|e| lost(e, path))?;
        }
        opened.close().await.map_err(|e| lost(e, path))?;
    }
    Ok(totals)
}

/// A WAL error after the open: a newer holder fenced us, or the device failed.
fn lost(error: WalError, path: &str) -> TakeoverEnd {
    match error {
        WalError::Fenced { .. } => TakeoverEnd::Superseded,
        other => TakeoverEnd::Unreachable(format!("{path}: {other}")),
    }
}

/// Seals what `uploader` holds and runs it until committed (or the WAL is no longer ours).
async fn upload(
    storage: &PartitionStore,
    uploader: &mut Uploader,
    taken: &TakenStreams,
    broker: i32,
    epoch: u64,
) -> Result<(), TakeoverEnd> {
    let Some(mut sealed) = uploader.seal() else {
        return Ok(());
    };
    sealed.set_stream_uploads(taken.stream_uploads(&storage.image(), &sealed.stream_end_offsets()));
    loop {
        match sealed.run(storage.tier.store(), &storage.controller).await {
            Ok(report) => {
                uploader.completed();
                for object in &report.objects {
                    for range in &object.ranges {
                        if let Some(partition) = taken.partitions.get(&range.stream_id) {
                            partition.mark_uploaded(range.end_offset);
                        }
                    }
                }
                return Ok(());
            }
            Err(error) => {
                if !still_held(storage, broker, epoch) {
                    return Err(TakeoverEnd::Superseded);
                }
                tracing::info!(broker, %error, "taken-over upload not committed; retrying");
                glommio::timer::sleep(RETRY_DELAY).await;
            }
        }
    }
}

/// The streams of a taken-over WAL: which records continue what objects hold, and the
/// partitions they are replayed into for their producers' state.
#[derive(Default)]
struct TakenStreams {
    continuity: StreamContinuity,
    partitions: HashMap<u64, Partition>,
}

impl TakenStreams {
    /// The record as an upload takes it, if it must be uploaded (as start-up recovery
    /// decides: `StreamContinuity`); a partition's record is replayed into it on the way.
    fn admit(
        &mut self,
        image: &MetadataImage,
        owner: i32,
        record: sluice_wal::RecoveredRecord,
    ) -> Option<AppendedRecord> {
        if !self.continuity.admits(image, owner, &record) {
            return None;
        }
        if let Some((topic, part)) = image.stream(record.stream_id) {
            let partition = self
                .partitions
                .entry(record.stream_id)
                .or_insert_with(|| resumed_partition(image, topic, part));
            // Uploaded whatever it holds, as start-up recovery does: the stream stays dense.
            if let Err(error) = partition.recover(record.payload.clone()) {
                tracing::error!(
                    %error,
                    stream_id = record.stream_id,
                    "a taken-over WAL record does not hold a valid batch"
                );
            }
        }
        Some(appended(&record))
    }

    /// What an upload of these streams records of them, as `PartitionStore`'s uploads do.
    fn stream_uploads(
        &self,
        image: &MetadataImage,
        stream_end_offsets: &[(u64, i64)],
    ) -> Vec<StreamUpload> {
        stream_end_offsets
            .iter()
            .filter_map(|&(stream_id, end_offset)| {
                Some(
                    self.partitions
                        .get(&stream_id)?
                        .stream_upload(end_offset, image),
                )
            })
            .collect()
    }
}
