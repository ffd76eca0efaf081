//! `MetadataStore`: the single writer of the metadata. It validates a
//! command, resolves it into a record, appends the record to the log and
//! fsyncs it, and only then publishes the new image.
//!
//! Called from one dedicated controller thread (never an executor), so plain
//! blocking `std::fs` I/O is right here.
//!
//! Directory layout (`<data-dir>/metadata/`):
//! - `meta.properties`: cluster id and node id, written once.
//! - `metadata.log`: the active log segment.
//! - `metadata-<epoch>.log`: sealed segments, records up to `epoch`.
//! - `snapshot-<epoch>.rkyv`: the image at `epoch`; the newest two are kept.
//!
//! Open loads the newest snapshot that checks out and replays the log after
//! it; an older snapshot (or the empty image) is the fallback when a newer
//! one is corrupt, which is why segments are kept back to the older snapshot.

use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::command::{self, CommandOutcome, MetadataCommand, Plan};
use crate::error::MetadataError;
use crate::image::{MetadataImage, Uuid16};
use crate::limits::{SNAPSHOT_INTERVAL_RECORDS, SNAPSHOTS_KEPT};
use crate::log::{self, ACTIVE_LOG_NAME, LogEntry, LogWriter};
use crate::snapshot::{self, TMP_SUFFIX};

const META_PROPERTIES_NAME: &str = "meta.properties";
const CORRUPT_SUFFIX: &str = ".corrupt";

/// Tunables of a store; `Default` is what the broker uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreOptions {
    /// A snapshot is written after this many records (at least 1).
    pub snapshot_interval_records: u64,
}

impl Default for StoreOptions {
    fn default() -> StoreOptions {
        StoreOptions {
            snapshot_interval_records: SNAPSHOT_INTERVAL_RECORDS,
        }
    }
}

/// What `open` found and repaired, for the broker to log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// True when the directory was new and a cluster id was created.
    pub created: bool,
    /// Epoch of the snapshot loaded (0: replayed from the empty image).
    pub snapshot_epoch: u64,
    /// Records replayed on top of it.
    pub replayed_records: u64,
    /// Bytes of a torn tail cut off the active log.
    pub truncated_bytes: u64,
    /// Snapshots that failed to load, renamed to `*.corrupt`, with the reason.
    pub corrupt_snapshots: Vec<(PathBuf, String)>,
}

/// The durable metadata of one node. One writer: `&mut self` for changes.
#[derive(Debug)]
pub struct MetadataStore {
    dir: PathBuf,
    options: StoreOptions,
    image: Arc<MetadataImage>,
    log: LogWriter,
    records_since_snapshot: u64,
    /// Set when a write or fsync failed: what is on disk is then unknown, so
    /// every later command fails until the store is reopened.
    failed: Option<String>,
    recovery: RecoveryReport,
}

impl MetadataStore {
    /// Opens or creates `dir` (creating the cluster id on first open), loads
    /// the newest valid snapshot and replays the log after it. A torn tail
    /// record of the log is truncated; a corrupt middle is an error.
    pub fn open(dir: &Path, node_id: i32) -> Result<MetadataStore, MetadataError> {
        MetadataStore::open_with_options(dir, node_id, StoreOptions::default())
    }

    pub fn open_with_options(
        dir: &Path,
        node_id: i32,
        options: StoreOptions,
    ) -> Result<MetadataStore, MetadataError> {
        let options = StoreOptions {
            snapshot_interval_records: options.snapshot_interval_records.max(1),
        };
        let mut recovery = RecoveryReport::default();
        create_dir(dir)?;
        let files = list_dir(dir)?;
        let cluster_id = match read_meta_properties(dir, node_id)? {
            Some(cluster_id) => cluster_id,
            None => {
                if !files.snapshots.is_empty() || !files.sealed.is_empty() || files.active {
                    return Err(MetadataError::Corrupt(format!(
                        "{} has metadata but no {META_PROPERTIES_NAME}",
                        dir.display()
                    )));
                }
                recovery.created = true;
                let cluster_id = new_cluster_id()?;
                write_meta_properties(dir, &cluster_id, node_id)?;
                cluster_id
            }
        };

        // Every record on disk, oldest first: sealed segments, then the active one.
        let mut entries: Vec<LogEntry> = Vec::new();
        for (epoch, path) in &files.sealed {
            let bytes = fs::read(path).map_err(|e| MetadataError::io(path, e))?;
            let scan = log::scan(&bytes, false)
                .map_err(|e| MetadataError::Corrupt(format!("{}: {e}", path.display())))?;
            if scan.entries.last().is_some_and(|last| last.epoch > *epoch) {
                return Err(MetadataError::Corrupt(format!(
                    "{} holds records past its epoch",
                    path.display()
                )));
            }
            entries.extend(scan.entries);
        }
        let active_path = dir.join(ACTIVE_LOG_NAME);
        if files.active {
            let bytes = fs::read(&active_path).map_err(|e| MetadataError::io(&active_path, e))?;
            let scan = log::scan(&bytes, true)
                .map_err(|e| MetadataError::Corrupt(format!("{}: {e}", active_path.display())))?;
            if scan.valid_bytes < bytes.len() as u64 {
                recovery.truncated_bytes = bytes.len() as u64 - scan.valid_bytes;
                truncate(&active_path, scan.valid_bytes)?;
            }
            entries.extend(scan.entries);
        }
        for pair in entries.windows(2) {
            if pair[1].epoch != pair[0].epoch + 1 {
                return Err(MetadataError::Corrupt(format!(
                    "log jumps from epoch {} to {}",
                    pair[0].epoch, pair[1].epoch
                )));
            }
        }

        // The newest snapshot that loads and that the log continues, else an
        // older one, else the empty image.
        let mut failures = Vec::new();
        let mut loaded = None;
        for (epoch, path) in files.snapshots.iter().rev() {
            let attempt = snapshot::load(path, node_id, *epoch).and_then(|base| {
                if base.cluster_id != cluster_id {
                    return Err(format!(
                        "{}: belongs to cluster {}",
                        path.display(),
                        base.cluster_id
                    ));
                }
                replay(base, &entries)
            });
            match attempt {
                Ok(result) => {
                    loaded = Some(result);
                    break;
                }
                Err(reason) => failures.push((path.clone(), reason)),
            }
        }
        let (image, snapshot_epoch, replayed) = match loaded {
            Some(result) => result,
            None => replay(MetadataImage::empty(cluster_id.clone(), node_id), &entries).map_err(
                |reason| {
                    let mut all: Vec<String> = failures.iter().map(|(_, r)| r.clone()).collect();
                    all.push(format!("from the empty image: {reason}"));
                    MetadataError::Corrupt(all.join("; "))
                },
            )?,
        };
        recovery.snapshot_epoch = snapshot_epoch;
        recovery.replayed_records = replayed;

        for (path, reason) in failures {
            let mut aside = path.clone().into_os_string();
            aside.push(CORRUPT_SUFFIX);
            fs::rename(&path, &aside).map_err(|e| MetadataError::io(&path, e))?;
            recovery.corrupt_snapshots.push((path, reason));
        }

        let (log, created) = LogWriter::open(dir)?;
        if created {
            snapshot::sync_dir(dir)?;
        }
        let mut store = MetadataStore {
            dir: dir.to_path_buf(),
            options,
            image: Arc::new(image),
            log,
            records_since_snapshot: replayed,
            failed: None,
            recovery,
        };
        if !store.recovery.corrupt_snapshots.is_empty()
            || store.records_since_snapshot >= options.snapshot_interval_records
        {
            // A fresh snapshot, so that the fallback we just used is not the
            // only one left. Failing to write it does not stop the store from
            // opening, unless the failure left the log in an unknown state.
            if let Err(e) = store.snapshot()
                && store.failed.is_some()
            {
                return Err(e);
            }
        }
        Ok(store)
    }

    /// The current image.
    pub fn image(&self) -> Arc<MetadataImage> {
        Arc::clone(&self.image)
    }

    /// Validates the command, appends its record to the log, fsyncs, applies
    /// it and returns the new image and what happened. A validation error
    /// leaves nothing written. A command that changes nothing (a log start
    /// offset not above the current one) writes nothing and keeps the epoch.
    pub fn apply(
        &mut self,
        command: MetadataCommand,
    ) -> Result<(Arc<MetadataImage>, CommandOutcome), MetadataError> {
        if let Some(reason) = &self.failed {
            return Err(MetadataError::Failed(reason.clone()));
        }
        let (record, answer) = match command::plan(&self.image, &command, &mut random_topic_id)? {
            Plan::Unchanged(outcome) => return Ok((self.image(), outcome)),
            Plan::Record(record) => (record, None),
            Plan::RecordAnswering { record, outcome } => (record, Some(outcome)),
        };
        let epoch = self.image.epoch + 1;
        // Apply before writing: a record that does not apply never reaches the log.
        let (next, applied) = self.image.apply(epoch, &record)?;
        let outcome = answer.unwrap_or(applied);
        let bytes = log::encode(&LogEntry { epoch, record })?;
        if let Err(e) = self.log.append(&bytes) {
            self.failed = Some(e.to_string());
            return Err(e);
        }
        self.image = Arc::new(next);
        self.records_since_snapshot += 1;
        if self.records_since_snapshot >= self.options.snapshot_interval_records {
            // The command is durable whatever happens to the snapshot; a
            // failed snapshot marks the store failed (see `snapshot`).
            let _ = self.snapshot();
        }
        Ok((self.image(), outcome))
    }

    /// Writes a snapshot of the current image now, seals the active log
    /// segment, and removes snapshots and segments no longer needed. If the
    /// snapshot file cannot be written nothing changes (it is retried after
    /// another interval); a failure after that marks the store failed.
    pub fn snapshot(&mut self) -> Result<(), MetadataError> {
        if let Some(reason) = &self.failed {
            return Err(MetadataError::Failed(reason.clone()));
        }
        let epoch = self.image.epoch;
        if self.dir.join(snapshot::snapshot_name(epoch)).exists() {
            self.records_since_snapshot = 0;
            return Ok(());
        }
        if let Err(e) = snapshot::write(&self.dir, &self.image) {
            self.records_since_snapshot = 0;
            return Err(e);
        }
        self.records_since_snapshot = 0;
        let result = self.seal_and_trim(epoch);
        if let Err(e) = &result {
            self.failed = Some(e.to_string());
        }
        result
    }

    /// The directory of the store.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What `open` found and repaired.
    pub fn recovery(&self) -> &RecoveryReport {
        &self.recovery
    }

    fn seal_and_trim(&mut self, epoch: u64) -> Result<(), MetadataError> {
        let active = self.dir.join(ACTIVE_LOG_NAME);
        let active_bytes = fs::metadata(&active)
            .map_err(|e| MetadataError::io(&active, e))?
            .len();
        // An empty active segment has nothing to seal (and sealing it could
        // replace a segment of the same epoch sealed before).
        if active_bytes > 0 {
            let sealed = self.dir.join(log::sealed_name(epoch));
            if sealed.exists() {
                return Err(MetadataError::Corrupt(format!(
                    "{} exists already",
                    sealed.display()
                )));
            }
            fs::rename(&active, &sealed).map_err(|e| MetadataError::io(&active, e))?;
            let (log, _) = LogWriter::open(&self.dir)?;
            self.log = log;
            snapshot::sync_dir(&self.dir)?;
        }

        let files = list_dir(&self.dir)?;
        let keep_from = files.snapshots.len().saturating_sub(SNAPSHOTS_KEPT);
        for (_, path) in &files.snapshots[..keep_from] {
            fs::remove_file(path).map_err(|e| MetadataError::io(path, e))?;
        }
        // Records after the oldest kept snapshot are needed to fall back on
        // it; with fewer snapshots than kept, all records are (the empty
        // image is the fallback).
        let base_epoch = if files.snapshots.len() >= SNAPSHOTS_KEPT {
            files.snapshots[keep_from].0
        } else {
            0
        };
        for (last_epoch, path) in &files.sealed {
            if *last_epoch <= base_epoch {
                fs::remove_file(path).map_err(|e| MetadataError::io(path, e))?;
            }
        }
        snapshot::sync_dir(&self.dir)
    }
}

// ---------------------------------------------------------------------------

/// Applies the entries after `base`'s epoch; returns the image, the base
/// epoch and the number of records replayed.
fn replay(base: MetadataImage, entries: &[LogEntry]) -> Result<(MetadataImage, u64, u64), String> {
    let base_epoch = base.epoch;
    let after: Vec<&LogEntry> = entries.iter().filter(|e| e.epoch > base_epoch).collect();
    if let Some(first) = after.first()
        && first.epoch != base_epoch + 1
    {
        return Err(format!(
            "the log starts at epoch {}, after the image's epoch {base_epoch}",
            first.epoch
        ));
    }
    let mut image = base;
    for entry in &after {
        image = image
            .apply(entry.epoch, &entry.record)
            .map_err(|e| format!("record {}: {e}", entry.epoch))?
            .0;
    }
    Ok((image, base_epoch, after.len() as u64))
}

#[derive(Debug, Default)]
struct DirFiles {
    /// (epoch, path), ascending.
    snapshots: Vec<(u64, PathBuf)>,
    /// (last epoch, path), ascending.
    sealed: Vec<(u64, PathBuf)>,
    active: bool,
}

/// Lists the store's files, removing leftover temporary files.
fn list_dir(dir: &Path) -> Result<DirFiles, MetadataError> {
    let mut files = DirFiles::default();
    let entries = fs::read_dir(dir).map_err(|e| MetadataError::io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| MetadataError::io(dir, e))?;
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        let path = entry.path();
        if name.ends_with(TMP_SUFFIX) {
            fs::remove_file(&path).map_err(|e| MetadataError::io(&path, e))?;
        } else if let Some(epoch) = snapshot::parse_snapshot_name(&name) {
            files.snapshots.push((epoch, path));
        } else if let Some(epoch) = log::parse_sealed_name(&name) {
            files.sealed.push((epoch, path));
        } else if name == ACTIVE_LOG_NAME {
            files.active = true;
        }
    }
    files.snapshots.sort();
    files.sealed.sort();
    Ok(files)
}

fn create_dir(dir: &Path) -> Result<(), MetadataError> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(dir).map_err(|e| MetadataError::io(dir, e))?;
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        snapshot::sync_dir(parent)?;
    }
    Ok(())
}

fn truncate(path: &Path, len: u64) -> Result<(), MetadataError> {
    fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|f| f.set_len(len).and_then(|()| f.sync_all()))
        .map_err(|e| MetadataError::io(path, e))
}

/// Reads `meta.properties`: the cluster id, after checking the node id.
fn read_meta_properties(dir: &Path, node_id: i32) -> Result<Option<String>, MetadataError> {
    let path = dir.join(META_PROPERTIES_NAME);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(MetadataError::io(&path, e)),
    };
    let mut cluster_id = None;
    let mut stored_node_id = None;
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') {
            continue;
        }
        if let Some((key, value)) = line.split_once('=') {
            match key.trim() {
                "cluster.id" => cluster_id = Some(value.trim().to_string()),
                "node.id" => stored_node_id = value.trim().parse::<i32>().ok(),
                _ => {}
            }
        }
    }
    let (Some(cluster_id), Some(stored)) = (cluster_id, stored_node_id) else {
        return Err(MetadataError::Corrupt(format!(
            "{} lacks cluster.id or node.id",
            path.display()
        )));
    };
    if stored != node_id {
        return Err(MetadataError::NodeIdMismatch {
            stored,
            requested: node_id,
        });
    }
    Ok(Some(cluster_id))
}

fn write_meta_properties(dir: &Path, cluster_id: &str, node_id: i32) -> Result<(), MetadataError> {
    let text = format!("#Sluice metadata\nversion=1\ncluster.id={cluster_id}\nnode.id={node_id}\n");
    snapshot::write_atomically(dir, META_PROPERTIES_NAME, text.as_bytes())
}

fn random_bytes() -> Result<[u8; 16], MetadataError> {
    const SOURCE: &str = "/dev/urandom";
    let mut bytes = [0u8; 16];
    File::open(SOURCE)
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| MetadataError::io(SOURCE, e))?;
    Ok(bytes)
}

pub(crate) fn random_topic_id() -> Result<Uuid16, MetadataError> {
    random_bytes()
}

/// A cluster id as Kafka makes them: a random UUID in URL-safe base64
/// without padding (22 characters).
fn new_cluster_id() -> Result<String, MetadataError> {
    let mut bytes = random_bytes()?;
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    if bytes[0] >> 2 == 62 {
        bytes[0] &= 0x7f; // never starts with '-'
    }
    Ok(base64_url(&bytes))
}

pub(crate) fn base64_url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_like_kafka() {
        assert_eq!(base64_url(b"\xff\xff\xff"), "____");
        assert_eq!(base64_url(b"Ma"), "TWE");
        assert_eq!(base64_url(&[0u8; 16]), "AAAAAAAAAAAAAAAAAAAAAA");
        let id = new_cluster_id().unwrap();
        assert_eq!(id.len(), 22);
        assert!(!id.starts_with('-'));
    }
}
