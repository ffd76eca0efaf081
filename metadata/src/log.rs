//! The metadata log: length-prefixed, CRC32C-checked records, one per applied
//! command, fsynced before the command's effect is published.
//!
//! Record layout (little endian):
//! `[payload_len u32][crc32c u32 over (payload_len bytes ++ payload)][payload]`
//! where the payload is the rkyv encoding of a `LogEntry`.
//!
//! Files: `metadata.log` is the active segment; when a snapshot is taken it
//! is sealed as `metadata-<epoch>.log` (its records are all ≤ epoch) and a
//! fresh active segment begins.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use rkyv::rancor;
use rkyv::util::AlignedVec;

use crate::command::MetadataRecord;
use crate::error::MetadataError;
use crate::limits::LOG_RECORD_BYTES_MAX;

pub(crate) const ACTIVE_LOG_NAME: &str = "metadata.log";
const SEALED_PREFIX: &str = "metadata-";
const SEALED_SUFFIX: &str = ".log";
const HEADER_BYTES: usize = 8;

/// One record of the log: the record and the epoch it produces.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub(crate) struct LogEntry {
    pub epoch: u64,
    pub record: MetadataRecord,
}

/// What reading one segment found.
#[derive(Debug)]
pub(crate) struct Scan {
    pub entries: Vec<LogEntry>,
    /// Bytes of whole, valid records from the start of the file.
    pub valid_bytes: u64,
}

pub(crate) fn sealed_name(epoch: u64) -> String {
    format!("{SEALED_PREFIX}{epoch:020}{SEALED_SUFFIX}")
}

/// The epoch in a sealed segment's file name.
pub(crate) fn parse_sealed_name(name: &str) -> Option<u64> {
    name.strip_prefix(SEALED_PREFIX)?
        .strip_suffix(SEALED_SUFFIX)?
        .parse()
        .ok()
}

/// Frames an entry as a log record.
pub(crate) fn encode(entry: &LogEntry) -> Result<Vec<u8>, MetadataError> {
    let payload = rkyv::to_bytes::<rancor::Error>(entry).map_err(|e| {
        MetadataError::InvalidRequest(format!("cannot encode metadata record: {e}"))
    })?;
    let payload_len = u32::try_from(payload.len())
        .ok()
        .filter(|&len| len <= LOG_RECORD_BYTES_MAX)
        .ok_or_else(|| {
            MetadataError::InvalidRequest(format!(
                "metadata record of {} bytes is over {LOG_RECORD_BYTES_MAX} (LOG_RECORD_BYTES_MAX)",
                payload.len()
            ))
        })?;
    let mut bytes = Vec::with_capacity(HEADER_BYTES + payload.len());
    bytes.extend_from_slice(&payload_len.to_le_bytes());
    bytes.extend_from_slice(&record_crc(payload_len, &payload).to_le_bytes());
    bytes.extend_from_slice(&payload);
    // Check the record just before it is written, as it will be read back.
    debug_assert_eq!(
        scan(&bytes, false).map(|s| s.entries),
        Ok(vec![entry.clone()])
    );
    Ok(bytes)
}

/// Reads every record of a segment. With `torn_tail_allowed` (the active
/// segment) an incomplete or checksum-failing last record, or a zero-filled
/// tail, ends the scan and `valid_bytes` says where to truncate; anything
/// wrong before the last record is corruption either way.
pub(crate) fn scan(bytes: &[u8], torn_tail_allowed: bool) -> Result<Scan, String> {
    let mut entries = Vec::new();
    let mut pos = 0usize;
    while pos < bytes.len() {
        let rest = &bytes[pos..];
        let torn = |why: &str| -> Result<(), String> {
            if torn_tail_allowed {
                Ok(())
            } else {
                Err(format!("{why} at byte {pos}"))
            }
        };
        if rest.iter().all(|&b| b == 0) {
            torn("zero-filled tail")?;
            break;
        }
        if rest.len() < HEADER_BYTES {
            torn("partial record header")?;
            break;
        }
        let payload_len = u32::from_le_bytes(rest[0..4].try_into().expect("4 bytes"));
        let crc = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes"));
        // A length we never write is corruption, not a torn write: treating
        // it as the tail would silently drop every record after it.
        if payload_len > LOG_RECORD_BYTES_MAX || payload_len == 0 {
            return Err(format!("record length {payload_len} at byte {pos}"));
        }
        let end = HEADER_BYTES + payload_len as usize;
        if end > rest.len() {
            torn("record longer than the file")?;
            break;
        }
        let payload = &rest[HEADER_BYTES..end];
        if record_crc(payload_len, payload) != crc {
            let is_tail = rest[end..].iter().all(|&b| b == 0);
            if is_tail {
                torn("checksum mismatch in the last record")?;
                break;
            }
            return Err(format!(
                "checksum mismatch in record at byte {pos}, before the end of the log"
            ));
        }
        let mut aligned = AlignedVec::<16>::with_capacity(payload.len());
        aligned.extend_from_slice(payload);
        let entry = rkyv::from_bytes::<LogEntry, rancor::Error>(&aligned)
            .map_err(|e| format!("undecodable record at byte {pos}: {e}"))?;
        entries.push(entry);
        pos += end;
    }
    Ok(Scan {
        entries,
        valid_bytes: pos as u64,
    })
}

/// The active segment, open for appending.
#[derive(Debug)]
pub(crate) struct LogWriter {
    file: File,
    path: PathBuf,
}

impl LogWriter {
    /// Opens (creating if needed) the active segment in `dir`. Returns
    /// whether the file was created, so the caller can fsync the directory.
    pub(crate) fn open(dir: &Path) -> Result<(LogWriter, bool), MetadataError> {
        let path = dir.join(ACTIVE_LOG_NAME);
        let created = !path.exists();
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| MetadataError::io(&path, e))?;
        Ok((LogWriter { file, path }, created))
    }

    /// Appends one framed record and makes it durable.
    pub(crate) fn append(&mut self, bytes: &[u8]) -> Result<(), MetadataError> {
        self.file
            .write_all(bytes)
            .and_then(|()| self.file.sync_data())
            .map_err(|e| MetadataError::io(&self.path, e))
    }
}

fn record_crc(payload_len: u32, payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&payload_len.to_le_bytes()), payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(epoch: u64) -> LogEntry {
        LogEntry {
            epoch,
            record: MetadataRecord::AllocateProducerIds {
                first: epoch as i64 * 10,
                count: 10,
            },
        }
    }

    fn log_of(n: u64) -> Vec<u8> {
        (1..=n).flat_map(|e| encode(&entry(e)).unwrap()).collect()
    }

    #[test]
    fn round_trip() {
        let bytes = log_of(5);
        let scan = scan(&bytes, false).unwrap();
        assert_eq!(scan.entries, (1..=5).map(entry).collect::<Vec<_>>());
        assert_eq!(scan.valid_bytes, bytes.len() as u64);
    }

    #[test]
    fn every_torn_tail_is_cut_at_the_last_whole_record() {
        let whole = log_of(3);
        let two = encode(&entry(1)).unwrap().len() + encode(&entry(2)).unwrap().len();
        for cut in two..whole.len() {
            let scan = scan(&whole[..cut], true).unwrap();
            assert_eq!(scan.entries.len(), 2, "cut at {cut}");
            assert_eq!(scan.valid_bytes, two as u64);
            assert!(super::scan(&whole[..cut], false).is_err() || cut == two);
        }
        let mut zeros = whole.clone();
        zeros.extend_from_slice(&[0; 100]);
        assert_eq!(scan(&zeros, true).unwrap().entries.len(), 3);
        // A flipped bit in the last record: torn; in an earlier one: corrupt.
        let mut flipped = whole.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert_eq!(scan(&flipped, true).unwrap().entries.len(), 2);
        let mut flipped = whole.clone();
        flipped[HEADER_BYTES + 1] ^= 1;
        assert!(scan(&flipped, true).is_err());
    }

    /// Records written before `RecordUploads` existed (a CreateTopic, an
    /// AllocateObjectIds and a CommitObjects, encoded by 1f875f4) still decode: new record
    /// kinds are appended to the enum and are no larger than the old ones.
    #[test]
    fn records_of_an_older_version_still_decode() {
        let bytes: Vec<u8> = (0..OLDER_RECORDS_HEX.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&OLDER_RECORDS_HEX[i..i + 2], 16).unwrap())
            .collect();
        let scan = scan(&bytes, false).unwrap();
        let epochs: Vec<u64> = scan.entries.iter().map(|e| e.epoch).collect();
        assert_eq!(epochs, vec![1, 2, 3]);
        let MetadataRecord::CommitObjects { objects } = &scan.entries[2].record else {
            panic!("not a CommitObjects: {:?}", scan.entries[2].record);
        };
        assert_eq!(objects[0].key, "sso/1");
        assert_eq!(objects[0].ranges[0].end_offset, 10);
        assert!(matches!(
            &scan.entries[0].record,
            MetadataRecord::CreateTopic { name, .. } if name == "t"
        ));
    }

    const OLDER_RECORDS_HEX: &str = "b80000008fb6d97e726574656e74696f6e2e6d73000000008c000000f0ffffff000000000000000000000000000000000000000000000000000000000000000031303030ffffffff0000000000000000000000000000000000000000000000000000000000000000010000000000000000000000000000000100000000000000000000000000000001000000000000000000000074ffffffffffffff0707070707070707070707070707070768ffffff01000000bcffffff010000000000000038000000aee863b20200000000000000070000000000000001000000000000000100000000000000000000000000000000000000000000000000000000000000880000006618bb36010000000000000000000000000000000a0000000000000000000000000000006400000000000000010000000000000073736f2f31ffffff640000000000000000000000bcffffff0100000000000000030000000000000008000000ccffffff01000000000000000000000000000000000000000000000000000000000000000000000000000000";

    #[test]
    fn sealed_names() {
        assert_eq!(parse_sealed_name(&sealed_name(42)), Some(42));
        assert_eq!(parse_sealed_name(ACTIVE_LOG_NAME), None);
    }
}
