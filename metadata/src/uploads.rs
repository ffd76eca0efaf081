//! What the metadata keeps of each stream's uploads beside its objects: the state of its
//! producers at the end of its data in objects (`producers.rs`), and when its uploads were
//! written (the largest record timestamp below each upload's end), which time-based retention
//! goes by. Both come back at a restart; before, a broker knew them only from the WAL and
//! stamped data already in objects with the restart time, so every restart held back
//! retention.ms by the broker's uptime.
//!
//! The log cleaner's progress is kept here too: how far each compacted stream was cleaned
//! (`RecordCleaning`), Kafka's cleaner-offset checkpoint.
//!
//! The uploader records them for the streams it uploads before it commits their objects
//! (`RecordUploads`, then `CommitObjects`): they may be ahead of the objects after a crash
//! between the two, never behind, and a broker's replay skips what they hold already.

use std::sync::Arc;

use crate::limits::UPLOAD_TIMES_PER_STREAM_MAX;
use crate::producers::{ProducerSnapshot, ProducerStates};

/// What one upload records of one stream.
#[derive(Debug, Clone, PartialEq, Eq, Hash, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct StreamUpload {
    pub stream_id: u64,
    /// The upload holds the stream's offsets up to here (exclusive).
    pub end_offset: i64,
    /// The largest record timestamp of the upload's records of the stream (the upload's own
    /// time when the uploader knows none, as Kafka goes by a segment's modification time).
    pub max_timestamp: i64,
    /// The producers whose state the upload's batches changed, as of `end_offset`.
    pub producers: Vec<ProducerSnapshot>,
}

/// Offsets below `end_offset` hold no record newer than `max_timestamp`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub struct UploadTime {
    pub end_offset: i64,
    pub max_timestamp: i64,
}

/// How far the log cleaner has cleaned a stream: offsets below `cleaned_end_offset` hold at
/// most one record per key (besides tombstones still within `delete.retention.ms`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub struct StreamCleaned {
    pub stream_id: u64,
    pub cleaned_end_offset: i64,
    /// When (ms since the epoch) the first tombstone or transaction marker the cleaner kept
    /// below `cleaned_end_offset` may go; `i64::MAX`: it kept none.
    pub delete_horizon_ms: i64,
}

/// A stream's uploads as the image keeps them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamUploads {
    /// Its producers as of the end of its data in objects, by producer id.
    pub producers: ProducerStates,
    /// Its uploads above the log start offset, oldest first, with strictly increasing end
    /// offsets; at most `UPLOAD_TIMES_PER_STREAM_MAX` (neighbours merge past it).
    pub times: Vec<UploadTime>,
    /// The log cleaner's last mark (None: never cleaned).
    pub cleaned: Option<StreamCleaned>,
}

/// A stream's uploads as a snapshot stores them.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub(crate) struct StreamUploadsPart {
    pub stream_id: u64,
    pub producers: Vec<ProducerSnapshot>,
    pub times: Vec<UploadTime>,
}

impl StreamUploads {
    /// Applies what one upload records.
    pub(crate) fn record(this: &mut Arc<StreamUploads>, upload: &StreamUpload) {
        let this = Arc::make_mut(this);
        crate::producers::merge(&mut this.producers, &upload.producers);
        match this.times.last_mut() {
            Some(last) if upload.end_offset <= last.end_offset => {
                // A retried record, or one ahead of its objects replayed: nothing newer.
                last.max_timestamp = last.max_timestamp.max(upload.max_timestamp);
            }
            _ => this.times.push(UploadTime {
                end_offset: upload.end_offset,
                max_timestamp: upload.max_timestamp,
            }),
        }
        if this.times.len() > UPLOAD_TIMES_PER_STREAM_MAX {
            this.times = coarsened(&this.times);
        }
    }

    /// The log start moved to `log_start_offset`: uploads wholly below it are gone.
    pub(crate) fn trim(this: &mut Arc<StreamUploads>, log_start_offset: i64) {
        if this
            .times
            .first()
            .is_some_and(|t| t.end_offset <= log_start_offset)
        {
            Arc::make_mut(this)
                .times
                .retain(|t| t.end_offset > log_start_offset);
        }
    }

    pub(crate) fn to_part(&self, stream_id: u64) -> StreamUploadsPart {
        StreamUploadsPart {
            stream_id,
            producers: self.producers.values().cloned().collect(),
            times: self.times.clone(),
        }
    }

    pub(crate) fn from_part(part: StreamUploadsPart) -> Result<StreamUploads, String> {
        if part.times.len() > UPLOAD_TIMES_PER_STREAM_MAX
            || part
                .times
                .windows(2)
                .any(|w| w[0].end_offset >= w[1].end_offset)
        {
            return Err(format!(
                "upload times of stream {} are not increasing or over the limit",
                part.stream_id
            ));
        }
        let mut producers = ProducerStates::new();
        for producer in part.producers {
            producers.insert(producer.producer_id, producer);
        }
        Ok(StreamUploads {
            producers,
            times: part.times,
            cleaned: None,
        })
    }
}

/// Every two neighbours merged into one (the later end, the larger timestamp): retention may
/// then remove data later than it could, never earlier.
fn coarsened(times: &[UploadTime]) -> Vec<UploadTime> {
    times
        .chunks(2)
        .map(|pair| UploadTime {
            end_offset: pair[pair.len() - 1].end_offset,
            max_timestamp: pair.iter().map(|t| t.max_timestamp).max().unwrap_or(-1),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upload(end_offset: i64, max_timestamp: i64) -> StreamUpload {
        StreamUpload {
            stream_id: 1,
            end_offset,
            max_timestamp,
            producers: Vec::new(),
        }
    }

    #[test]
    fn times_grow_by_upload_merge_past_the_limit_and_trim_with_the_log_start() {
        let mut uploads = Arc::new(StreamUploads::default());
        for i in 0..=UPLOAD_TIMES_PER_STREAM_MAX as i64 {
            StreamUploads::record(&mut uploads, &upload(10 * (i + 1), 1000 + i));
        }
        assert_eq!(uploads.times.len(), UPLOAD_TIMES_PER_STREAM_MAX / 2 + 1);
        assert_eq!(
            uploads.times[0],
            UploadTime {
                end_offset: 20,
                max_timestamp: 1001
            },
            "the first two merged"
        );
        let last = *uploads.times.last().unwrap();
        assert_eq!(
            last.end_offset,
            10 * (UPLOAD_TIMES_PER_STREAM_MAX as i64 + 1)
        );
        // A record replayed at or below the last end changes no offset.
        StreamUploads::record(&mut uploads, &upload(last.end_offset, 5));
        assert_eq!(*uploads.times.last().unwrap(), last);
        StreamUploads::trim(&mut uploads, 40);
        assert_eq!(uploads.times[0].end_offset, 60);
        assert!(
            uploads
                .times
                .windows(2)
                .all(|w| w[0].end_offset < w[1].end_offset)
        );
    }

    #[test]
    fn snapshot_parts_round_trip_and_bad_ones_are_refused() {
        let mut uploads = Arc::new(StreamUploads::default());
        StreamUploads::record(&mut uploads, &upload(10, 5));
        StreamUploads::record(&mut uploads, &upload(20, 7));
        let part = uploads.to_part(1);
        assert_eq!(
            StreamUploads::from_part(part.clone()).as_ref(),
            Ok(&*uploads)
        );
        let mut unordered = part;
        unordered.times.reverse();
        assert!(StreamUploads::from_part(unordered).is_err());
    }
}
