//! One controller's durable part of the quorum, and its state machine.
//!
//! Under `<data-dir>/metadata-quorum/`:
//! - `raft.log`: the Raft log, `[len u32][crc32c u32 over the JSON][entry as JSON]` per entry,
//!   fsynced before an append returns. Truncations (a conflict, a purge after a snapshot)
//!   rewrite it through a temporary file and a rename; they are rare and the log is short
//!   (a snapshot every `SNAPSHOT_INTERVAL_RECORDS` entries).
//! - `vote.json`, `purged.json`: the vote and the last purged log id, written atomically.
//! - `committed.json`: the last committed log id, so that a restarted controller re-applies
//!   the committed entries at once instead of waiting for a leader. A hint, written without
//!   an fsync at every commit: an older one (or none) after a crash only means the node
//!   waits for the leader to tell it again.
//! - `snapshot.bin`: `[meta_len u32][SnapshotMeta as JSON][snapshot data]`, the data being
//!   `[epoch u64][the image as a snapshot file's bytes]` (the format `snapshot.rs` writes).
//!
//! The state machine is the `MetadataImage`: a Normal entry holds one `MetadataRecord`
//! (rkyv, as the single-node log holds it) and applies with `MetadataImage::apply`, which is
//! deterministic, so every controller builds the same image. An entry that does not apply
//! (the leader planned it on an image that moved since) is skipped by every controller alike,
//! and the leader's caller gets the error.
//!
//! openraft calls all of this from its core task; the log reader and the snapshot builder
//! are clones sharing the same state behind a mutex that is never held across an await.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Cursor, Read, Write};
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{LogState, RaftLogReader, RaftSnapshotBuilder, Snapshot, SnapshotMeta};
use openraft::{
    BasicNode, Entry, EntryPayload, ErrorSubject, ErrorVerb, LogId, RaftStorage, StorageError,
    StorageIOError, StoredMembership, Vote,
};
use rkyv::rancor;
use rkyv::util::AlignedVec;
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use super::{Applied, QuorumTypes, RecordBytes};
use crate::command::MetadataRecord;
use crate::error::MetadataError;
use crate::image::MetadataImage;
use crate::limits::{LOG_RECORD_BYTES_MAX, SNAPSHOT_BYTES_MAX};
use crate::snapshot;

const LOG_NAME: &str = "raft.log";
const VOTE_NAME: &str = "vote.json";
const PURGED_NAME: &str = "purged.json";
const COMMITTED_NAME: &str = "committed.json";
const SNAPSHOT_NAME: &str = "snapshot.bin";
const FRAME_HEADER_BYTES: usize = 8;

type StorageResult<T> = Result<T, StorageError<u64>>;

/// The quorum's storage and state machine on one controller (cheap to clone: shared state).
#[derive(Clone)]
pub(crate) struct QuorumStorage {
    state: Arc<Mutex<State>>,
}

struct State {
    dir: PathBuf,
    node_id: i32,
    /// The entries after `last_purged`, by index.
    log: BTreeMap<u64, Entry<QuorumTypes>>,
    log_file: File,
    last_purged: Option<LogId<u64>>,
    vote: Option<Vote<u64>>,
    committed: Option<LogId<u64>>,
    image: Arc<MetadataImage>,
    last_applied: Option<LogId<u64>>,
    membership: StoredMembership<u64, BasicNode>,
    snapshot: Option<StoredSnapshot>,
    /// Snapshots built by this controller, to make their ids unique.
    snapshots_built: u64,
    images: watch::Sender<Arc<MetadataImage>>,
}

#[derive(Clone)]
struct StoredSnapshot {
    meta: SnapshotMeta<u64, BasicNode>,
    data: Vec<u8>,
}

impl QuorumStorage {
    /// Opens (or creates) the quorum directory; the image starts from its snapshot, else
    /// empty with `cluster_id`. The returned receiver sees every image the state machine
    /// applies.
    pub(crate) fn open(
        dir: &Path,
        node_id: i32,
        cluster_id: &str,
    ) -> Result<(QuorumStorage, watch::Receiver<Arc<MetadataImage>>), MetadataError> {
        fs::create_dir_all(dir).map_err(|e| MetadataError::io(dir, e))?;
        let last_purged: Option<LogId<u64>> = read_json(&dir.join(PURGED_NAME))?;
        let vote = read_json(&dir.join(VOTE_NAME))?;
        let committed = read_json(&dir.join(COMMITTED_NAME))?;
        let snapshot = read_snapshot(&dir.join(SNAPSHOT_NAME))?;
        let (image, last_applied, membership) = match &snapshot {
            Some(stored) => {
                let image = decode_snapshot_data(&stored.data, node_id)
                    .map_err(|e| MetadataError::Corrupt(format!("{SNAPSHOT_NAME}: {e}")))?;
                if image.cluster_id != cluster_id {
                    return Err(MetadataError::Corrupt(format!(
                        "{} belongs to cluster {}, not {cluster_id}",
                        dir.display(),
                        image.cluster_id
                    )));
                }
                (
                    image,
                    stored.meta.last_log_id,
                    stored.meta.last_membership.clone(),
                )
            }
            None => (
                MetadataImage::empty(cluster_id.to_string(), node_id),
                None,
                StoredMembership::default(),
            ),
        };
        let log_path = dir.join(LOG_NAME);
        let mut log = read_log(&log_path)?;
        if let Some(purged) = last_purged {
            // A crash between writing `purged.json` and rewriting the log leaves entries the
            // purge already covers.
            log.retain(|index, _| *index > purged.index);
        }
        let log_file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| MetadataError::io(&log_path, e))?;
        let image = Arc::new(image);
        let (images, receiver) = watch::channel(image.clone());
        let state = State {
            dir: dir.to_path_buf(),
            node_id,
            log,
            log_file,
            last_purged,
            vote,
            committed,
            image,
            last_applied,
            membership,
            snapshot,
            snapshots_built: 0,
            images,
        };
        Ok((
            QuorumStorage {
                state: Arc::new(Mutex::new(state)),
            },
            receiver,
        ))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock would leave openraft's core dead anyway; the state
        // itself stays consistent (every change is made after its I/O succeeded).
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl State {
    /// Rewrites the log file with the entries in memory (after a truncation).
    fn rewrite_log(&mut self) -> std::io::Result<()> {
        let mut bytes = Vec::new();
        for entry in self.log.values() {
            bytes.extend_from_slice(&encode_frame(entry)?);
        }
        snapshot::write_atomically(&self.dir, LOG_NAME, &bytes).map_err(std::io::Error::other)?;
        self.log_file = OpenOptions::new()
            .append(true)
            .open(self.dir.join(LOG_NAME))?;
        Ok(())
    }

    fn publish(&self) {
        self.images.send_replace(self.image.clone());
    }
}

impl RaftLogReader<QuorumTypes> for QuorumStorage {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + std::fmt::Debug + Send>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry<QuorumTypes>>> {
        let state = self.lock();
        Ok(state.log.range(range).map(|(_, e)| e.clone()).collect())
    }
}

impl RaftSnapshotBuilder<QuorumTypes> for QuorumStorage {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<QuorumTypes>> {
        let mut state = self.lock();
        state.snapshots_built += 1;
        let data = encode_snapshot_data(&state.image).map_err(|e| write_snapshot_error(&e))?;
        let snapshot_id = match state.last_applied {
            Some(id) => format!("{}-{}-{}", id.leader_id, id.index, state.snapshots_built),
            None => format!("none-{}", state.snapshots_built),
        };
        let meta = SnapshotMeta {
            last_log_id: state.last_applied,
            last_membership: state.membership.clone(),
            snapshot_id,
        };
        let stored = StoredSnapshot { meta, data };
        write_snapshot(&state.dir, &stored).map_err(|e| write_snapshot_error(&e))?;
        state.snapshot = Some(stored.clone());
        Ok(Snapshot {
            meta: stored.meta,
            snapshot: Box::new(Cursor::new(stored.data)),
        })
    }
}

impl RaftStorage<QuorumTypes> for QuorumStorage {
    type LogReader = QuorumStorage;
    type SnapshotBuilder = QuorumStorage;

    async fn save_vote(&mut self, vote: &Vote<u64>) -> StorageResult<()> {
        let mut state = self.lock();
        write_json(&state.dir, VOTE_NAME, vote).map_err(|e| StorageIOError::write_vote(&e))?;
        state.vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote<u64>>> {
        Ok(self.lock().vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId<u64>>) -> StorageResult<()> {
        let mut state = self.lock();
        write_hint(&state.dir, COMMITTED_NAME, &committed).map_err(|e| {
            StorageError::from(StorageIOError::new(
                ErrorSubject::Store,
                ErrorVerb::Write,
                openraft::AnyError::new(&e),
            ))
        })?;
        state.committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> StorageResult<Option<LogId<u64>>> {
        Ok(self.lock().committed)
    }

    async fn get_log_state(&mut self) -> StorageResult<LogState<QuorumTypes>> {
        let state = self.lock();
        let last = state
            .log
            .values()
            .next_back()
            .map(|e| e.log_id)
            .or(state.last_purged);
        Ok(LogState {
            last_purged_log_id: state.last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn append_to_log<I>(&mut self, entries: I) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry<QuorumTypes>> + Send,
    {
        let mut state = self.lock();
        let entries: Vec<Entry<QuorumTypes>> = entries.into_iter().collect();
        let mut bytes = Vec::new();
        for entry in &entries {
            bytes.extend_from_slice(&encode_frame(entry).map_err(|e| write_logs_error(&e))?);
        }
        let written = state
            .log_file
            .write_all(&bytes)
            .and_then(|()| state.log_file.sync_data());
        if let Err(e) = written {
            return Err(write_logs_error(&e));
        }
        for entry in entries {
            state.log.insert(entry.log_id.index, entry);
        }
        Ok(())
    }

    async fn delete_conflict_logs_since(&mut self, log_id: LogId<u64>) -> StorageResult<()> {
        let mut state = self.lock();
        state.log.retain(|index, _| *index < log_id.index);
        state.rewrite_log().map_err(|e| write_logs_error(&e))
    }

    async fn purge_logs_upto(&mut self, log_id: LogId<u64>) -> StorageResult<()> {
        let mut state = self.lock();
        // `purged.json` first: if the rewrite below is cut short, open drops the entries it
        // names.
        write_json(&state.dir, PURGED_NAME, &Some(log_id)).map_err(|e| write_logs_error(&e))?;
        state.last_purged = Some(log_id);
        state.log.retain(|index, _| *index > log_id.index);
        state.rewrite_log().map_err(|e| write_logs_error(&e))
    }

    async fn last_applied_state(
        &mut self,
    ) -> StorageResult<(Option<LogId<u64>>, StoredMembership<u64, BasicNode>)> {
        let state = self.lock();
        Ok((state.last_applied, state.membership.clone()))
    }

    async fn apply_to_state_machine(
        &mut self,
        entries: &[Entry<QuorumTypes>],
    ) -> StorageResult<Vec<Applied>> {
        let mut state = self.lock();
        let mut replies = Vec::with_capacity(entries.len());
        let mut changed = false;
        for entry in entries {
            state.last_applied = Some(entry.log_id);
            let reply = match &entry.payload {
                EntryPayload::Blank => Applied::at(state.image.epoch),
                EntryPayload::Membership(membership) => {
                    state.membership =
                        StoredMembership::new(Some(entry.log_id), membership.clone());
                    Applied::at(state.image.epoch)
                }
                EntryPayload::Normal(RecordBytes(bytes)) => {
                    match decode_record(bytes)
                        .and_then(|record| state.image.apply(state.image.epoch + 1, &record))
                    {
                        Ok((next, _)) => {
                            state.image = Arc::new(next);
                            changed = true;
                            Applied::at(state.image.epoch)
                        }
                        Err(error) => Applied::refused(state.image.epoch, &error),
                    }
                }
            };
            replies.push(reply);
        }
        if changed {
            state.publish();
        }
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StorageResult<()> {
        let mut state = self.lock();
        let data = snapshot.into_inner();
        let image = decode_snapshot_data(&data, state.node_id).map_err(|e| {
            StorageError::from(StorageIOError::read_snapshot(
                Some(meta.signature()),
                &std::io::Error::other(e),
            ))
        })?;
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        write_snapshot(&state.dir, &stored).map_err(|e| write_snapshot_error(&e))?;
        state.image = Arc::new(image);
        state.last_applied = meta.last_log_id;
        state.membership = meta.last_membership.clone();
        state.snapshot = Some(stored);
        state.publish();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<QuorumTypes>>> {
        let state = self.lock();
        Ok(state.snapshot.as_ref().map(|stored| Snapshot {
            meta: stored.meta.clone(),
            snapshot: Box::new(Cursor::new(stored.data.clone())),
        }))
    }
}

/// A record as a Normal entry carries it.
pub(crate) fn encode_record(record: &MetadataRecord) -> Result<Vec<u8>, MetadataError> {
    rkyv::to_bytes::<rancor::Error>(record)
        .map(|bytes| bytes.to_vec())
        .map_err(|e| MetadataError::InvalidRequest(format!("cannot encode metadata record: {e}")))
}

fn decode_record(bytes: &[u8]) -> Result<MetadataRecord, MetadataError> {
    // rkyv needs its input aligned; a copy into an aligned buffer is cheap next to the fsync
    // that made the entry durable.
    let mut aligned = AlignedVec::<16>::with_capacity(bytes.len());
    aligned.extend_from_slice(bytes);
    rkyv::from_bytes::<MetadataRecord, rancor::Error>(&aligned)
        .map_err(|e| MetadataError::Corrupt(format!("a quorum entry is not a record: {e}")))
}

fn encode_snapshot_data(image: &MetadataImage) -> Result<Vec<u8>, MetadataError> {
    let mut data = image.epoch.to_le_bytes().to_vec();
    data.extend_from_slice(&snapshot::encode(image)?);
    Ok(data)
}

fn decode_snapshot_data(data: &[u8], node_id: i32) -> Result<MetadataImage, String> {
    let (epoch, image) = data
        .split_first_chunk::<8>()
        .ok_or_else(|| "snapshot data shorter than its epoch".to_string())?;
    snapshot::decode(image, node_id, u64::from_le_bytes(*epoch))
}

fn encode_frame<T: serde::Serialize>(value: &T) -> std::io::Result<Vec<u8>> {
    let json = serde_json::to_vec(value)?;
    let len = u32::try_from(json.len())
        .ok()
        .filter(|len| *len <= LOG_RECORD_BYTES_MAX)
        .ok_or_else(|| std::io::Error::other("quorum log entry over LOG_RECORD_BYTES_MAX"))?;
    let mut frame = Vec::with_capacity(FRAME_HEADER_BYTES + json.len());
    frame.extend_from_slice(&len.to_le_bytes());
    frame.extend_from_slice(&crc32c::crc32c(&json).to_le_bytes());
    frame.extend_from_slice(&json);
    Ok(frame)
}

/// Reads the log; a torn last frame (a crash mid-append, never acknowledged) is cut off,
/// a bad frame with whole frames after it is corruption.
fn read_log(path: &Path) -> Result<BTreeMap<u64, Entry<QuorumTypes>>, MetadataError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(MetadataError::io(path, e)),
    };
    let mut log = BTreeMap::new();
    let mut at = 0usize;
    while at < bytes.len() {
        let frame = parse_frame(&bytes[at..]);
        match frame {
            Some((len, json)) => {
                let entry: Entry<QuorumTypes> = serde_json::from_slice(json).map_err(|e| {
                    MetadataError::Corrupt(format!("{} at byte {at}: {e}", path.display()))
                })?;
                log.insert(entry.log_id.index, entry);
                at += len;
            }
            None => {
                if has_whole_frame_after(&bytes[at..]) {
                    return Err(MetadataError::Corrupt(format!(
                        "{}: bad entry at byte {at} with entries after it",
                        path.display()
                    )));
                }
                let file = OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(|e| MetadataError::io(path, e))?;
                file.set_len(at as u64)
                    .and_then(|()| file.sync_all())
                    .map_err(|e| MetadataError::io(path, e))?;
                tracing::info!(
                    path = %path.display(),
                    bytes = bytes.len() - at,
                    "cut a torn entry off the quorum log"
                );
                break;
            }
        }
    }
    Ok(log)
}

/// `(frame length, json)` of a whole, checked frame at the start of `bytes`.
fn parse_frame(bytes: &[u8]) -> Option<(usize, &[u8])> {
    let (header, rest) = bytes.split_first_chunk::<FRAME_HEADER_BYTES>()?;
    let len = u32::from_le_bytes(header[0..4].try_into().ok()?);
    let crc = u32::from_le_bytes(header[4..8].try_into().ok()?);
    if len > LOG_RECORD_BYTES_MAX || rest.len() < len as usize {
        return None;
    }
    let json = &rest[..len as usize];
    (crc32c::crc32c(json) == crc).then_some((FRAME_HEADER_BYTES + len as usize, json))
}

/// Whether a whole, checked frame starts anywhere after the first byte of `bytes`.
fn has_whole_frame_after(bytes: &[u8]) -> bool {
    (1..bytes.len()).any(|start| parse_frame(&bytes[start..]).is_some())
}

fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, MetadataError> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| MetadataError::Corrupt(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(MetadataError::io(path, e)),
    }
}

fn write_json<T: serde::Serialize>(dir: &Path, name: &str, value: &T) -> std::io::Result<()> {
    let bytes = serde_json::to_vec(value)?;
    snapshot::write_atomically(dir, name, &bytes).map_err(std::io::Error::other)
}

/// Writes `value` through a temporary file and a rename, without an fsync: after a crash the
/// file is whole, old or new.
fn write_hint<T: serde::Serialize>(dir: &Path, name: &str, value: &T) -> std::io::Result<()> {
    let tmp = dir.join(format!("{name}{}", snapshot::TMP_SUFFIX));
    fs::write(&tmp, serde_json::to_vec(value)?)?;
    fs::rename(&tmp, dir.join(name))
}

fn write_snapshot(dir: &Path, stored: &StoredSnapshot) -> std::io::Result<()> {
    let meta = serde_json::to_vec(&stored.meta)?;
    let meta_len = u32::try_from(meta.len()).map_err(std::io::Error::other)?;
    let mut bytes = Vec::with_capacity(4 + meta.len() + stored.data.len());
    bytes.extend_from_slice(&meta_len.to_le_bytes());
    bytes.extend_from_slice(&meta);
    bytes.extend_from_slice(&stored.data);
    snapshot::write_atomically(dir, SNAPSHOT_NAME, &bytes).map_err(std::io::Error::other)
}

fn read_snapshot(path: &Path) -> Result<Option<StoredSnapshot>, MetadataError> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(MetadataError::io(path, e)),
    };
    let len = file
        .metadata()
        .map_err(|e| MetadataError::io(path, e))?
        .len();
    if len > SNAPSHOT_BYTES_MAX {
        return Err(MetadataError::Corrupt(format!(
            "{}: {len} bytes is over SNAPSHOT_BYTES_MAX",
            path.display()
        )));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    file.read_to_end(&mut bytes)
        .map_err(|e| MetadataError::io(path, e))?;
    let corrupt = |what: &str| MetadataError::Corrupt(format!("{}: {what}", path.display()));
    let (meta_len, rest) = bytes
        .split_first_chunk::<4>()
        .ok_or_else(|| corrupt("shorter than its header"))?;
    let meta_len = u32::from_le_bytes(*meta_len) as usize;
    if rest.len() < meta_len {
        return Err(corrupt("shorter than its meta"));
    }
    let meta = serde_json::from_slice(&rest[..meta_len]).map_err(|e| corrupt(&e.to_string()))?;
    Ok(Some(StoredSnapshot {
        meta,
        data: rest[meta_len..].to_vec(),
    }))
}

fn write_logs_error(e: &(impl std::error::Error + 'static)) -> StorageError<u64> {
    StorageIOError::write_logs(e).into()
}

fn write_snapshot_error(e: &(impl std::error::Error + 'static)) -> StorageError<u64> {
    StorageIOError::write_snapshot(None, e).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, EntryPayload};

    fn entry(index: u64) -> Entry<QuorumTypes> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(RecordBytes(vec![index as u8; 10])),
        }
    }

    fn frames(indexes: std::ops::Range<u64>) -> Vec<u8> {
        indexes
            .flat_map(|i| encode_frame(&entry(i)).expect("frame"))
            .collect()
    }

    #[test]
    fn a_torn_last_entry_is_cut_off_and_a_bad_middle_one_is_corruption() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(LOG_NAME);

        // A crash in the middle of the last append: the whole entries before it are kept.
        let mut bytes = frames(0..3);
        let whole = bytes.len() as u64;
        bytes.extend_from_slice(&frames(3..4)[..11]);
        fs::write(&path, &bytes).expect("write");
        let log = read_log(&path).expect("a torn tail is repaired");
        assert_eq!(log.keys().copied().collect::<Vec<_>>(), vec![0, 1, 2]);
        assert_eq!(log[&2], entry(2));
        assert_eq!(fs::metadata(&path).expect("stat").len(), whole);

        // A flipped byte with whole entries after it: acknowledged entries would be lost.
        let mut bytes = frames(0..3);
        bytes[FRAME_HEADER_BYTES + 2] ^= 0xff;
        fs::write(&path, &bytes).expect("write");
        let error = read_log(&path).expect_err("corruption");
        assert!(error.to_string().contains("entries after it"), "{error}");
    }
}
