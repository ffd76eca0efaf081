//! What the simulated clients know (every batch they sent, and which were acknowledged where),
//! and the invariants a partition's log must keep against it, checked after every step.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use sluice_net::record_batch::{RecordBatchHeader, batches, decode_records};

/// Base timestamp of the simulated records (ms since the epoch); the virtual clock adds to it.
pub const TIMESTAMP_BASE_MS: i64 = 1_700_000_000_000;

/// One batch a client sent (perhaps several times, when it is an idempotent retry).
pub struct SentBatch {
    pub partition: usize,
    /// The bytes as sent (more than one only from a broken client); the broker patches only
    /// the base offset (bytes 0..8).
    pub variants: Vec<Bytes>,
    pub records: i32,
    /// The base offset of its successful acknowledgement.
    pub acked_at: Option<i64>,
}

/// The history of one simulated run: every batch by id, and per partition what was read.
#[derive(Default)]
pub struct Model {
    pub batches: Vec<SentBatch>,
    pub partitions: Vec<PartitionModel>,
}

/// What the checker has seen of one partition.
#[derive(Default, Clone)]
pub struct PartitionModel {
    /// Batches read below the high watermark: base offset → (batch id, last offset). Below
    /// the high watermark means durable, so they must stay, at the same offset, until the log
    /// start passes them.
    pub observed: BTreeMap<i64, (u64, i64)>,
    /// Where each batch id was read.
    pub observed_at: HashMap<u64, i64>,
    /// The highest log start and high watermark read: neither ever moves back.
    pub log_start_seen: i64,
    pub high_watermark_seen: i64,
    /// The log start DeleteRecords answered: the log start is at least this.
    pub log_start_floor: i64,
}

/// A broken invariant, described.
pub struct Broken {
    pub invariant: &'static str,
    pub detail: String,
}

fn broken(invariant: &'static str, detail: String) -> Broken {
    Broken { invariant, detail }
}

/// The value of record `index` of batch `id`: the id comes back with the record, and the
/// padding makes batch sizes vary.
pub fn record_value(id: u64, index: i32, padding: usize) -> Vec<u8> {
    let mut value = format!("b{id}:r{index}:").into_bytes();
    value.extend(std::iter::repeat_n(b'a' + (id % 26) as u8, padding));
    value
}

/// The batch id a record value names.
fn batch_id_of(value: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(value).ok()?;
    let id = text.strip_prefix('b')?.split(':').next()?;
    id.parse().ok()
}

impl Model {
    pub fn new(partitions: usize) -> Model {
        Model {
            batches: Vec::new(),
            partitions: vec![PartitionModel::default(); partitions],
        }
    }

    /// Checks one partition's log as read from `log_start` to `high_watermark`: `records`
    /// holds every batch read, in order.
    pub fn check_log(
        &mut self,
        partition: usize,
        log_start: i64,
        high_watermark: i64,
        records: &[Bytes],
    ) -> Result<(), Broken> {
        let seen = &self.partitions[partition];
        if log_start < seen.log_start_seen || log_start < seen.log_start_floor {
            return Err(broken(
                "log start only moves forward",
                format!(
                    "partition {partition}: log start {log_start}, earlier {} (DeleteRecords answered {})",
                    seen.log_start_seen, seen.log_start_floor
                ),
            ));
        }
        if high_watermark < seen.high_watermark_seen || high_watermark < log_start {
            return Err(broken(
                "the high watermark never moves back",
                format!(
                    "partition {partition}: high watermark {high_watermark}, earlier {}, log start {log_start}",
                    seen.high_watermark_seen
                ),
            ));
        }
        let mut read: BTreeMap<i64, (u64, i64)> = BTreeMap::new();
        let mut ids_read: HashMap<u64, i64> = HashMap::new();
        let mut next: Option<i64> = None;
        for batch in records.iter().flat_map(batches) {
            let batch = batch.map_err(|e| {
                broken(
                    "reads return whole batches",
                    format!("partition {partition}: {e}"),
                )
            })?;
            let header = RecordBatchHeader::parse(&batch)
                .map_err(|e| broken("reads return whole batches", format!("{e}")))?;
            let base = header.base_offset();
            let last = base + i64::from(header.last_offset_delta());
            let dense = match next {
                None => base <= log_start && log_start <= last,
                Some(expected) => base == expected,
            };
            if !dense {
                return Err(broken(
                    "offsets are dense",
                    format!(
                        "partition {partition}: batch at {base}..={last} after {next:?} (log start {log_start})"
                    ),
                ));
            }
            next = Some(last + 1);
            let values = decode_records(&batch, 1 << 20).map_err(|e| {
                broken(
                    "acknowledged bytes are read back unchanged",
                    format!("partition {partition} offset {base}: {e}"),
                )
            })?;
            let id = values
                .first()
                .and_then(|record| record.value.as_deref())
                .and_then(batch_id_of)
                .ok_or_else(|| {
                    broken(
                        "only records clients sent are read",
                        format!("partition {partition} offset {base}: a record no client sent"),
                    )
                })?;
            let sent = self.batches.get(id as usize).ok_or_else(|| {
                broken(
                    "only records clients sent are read",
                    format!("partition {partition} offset {base}: batch {id} was never sent"),
                )
            })?;
            if let Some(earlier) = ids_read.insert(id, base) {
                return Err(broken(
                    "no batch is stored twice",
                    format!("partition {partition}: batch {id} at {earlier} and at {base}"),
                ));
            }
            let same = sent.variants.iter().any(|sent| sent[8..] == batch[8..]);
            if sent.partition != partition || !same {
                return Err(broken(
                    "acknowledged bytes are read back unchanged",
                    format!(
                        "partition {partition} offset {base}: batch {id} differs from what was sent"
                    ),
                ));
            }
            read.insert(base, (id, last));
        }
        if high_watermark > log_start && next != Some(high_watermark) {
            return Err(broken(
                "offsets are dense",
                format!(
                    "partition {partition}: read up to {next:?}, high watermark {high_watermark}, log start {log_start}"
                ),
            ));
        }
        let seen = &self.partitions[partition];
        for (base, (id, last)) in &seen.observed {
            if *last < log_start {
                continue;
            }
            if read.get(base).map(|(read_id, _)| read_id) != Some(id) {
                return Err(broken(
                    "a record read below the high watermark stays",
                    format!(
                        "partition {partition}: batch {id} was read at {base}, now {:?}",
                        read.get(base)
                    ),
                ));
            }
        }
        for (id, base) in &ids_read {
            if let Some(earlier) = seen.observed_at.get(id)
                && earlier != base
            {
                return Err(broken(
                    "no batch is stored twice",
                    format!(
                        "partition {partition}: batch {id} was read at {earlier}, now at {base}"
                    ),
                ));
            }
        }
        for (id, sent) in self.batches.iter().enumerate() {
            let Some(acked_at) = sent.acked_at else {
                continue;
            };
            let last = acked_at + i64::from(sent.records) - 1;
            if sent.partition != partition || last < log_start {
                continue;
            }
            if read.get(&acked_at).map(|(read_id, _)| *read_id) != Some(id as u64) {
                return Err(broken(
                    "every acknowledged record is readable at its offset",
                    format!(
                        "partition {partition}: batch {id} acknowledged at {acked_at}, read there: {:?} (log start {log_start}, high watermark {high_watermark})",
                        read.get(&acked_at)
                    ),
                ));
            }
        }
        let seen = &mut self.partitions[partition];
        seen.log_start_seen = log_start;
        seen.high_watermark_seen = high_watermark;
        seen.observed_at.extend(ids_read);
        seen.observed.extend(read);
        Ok(())
    }

    /// Checks what a fetch returned: whole batches the clients sent, unchanged, each where
    /// it was read before.
    pub fn check_fetched(&self, partition: usize, records: &Bytes) -> Result<(), Broken> {
        for batch in batches(records) {
            let batch = batch.map_err(|e| {
                broken(
                    "reads return whole batches",
                    format!("partition {partition}: {e}"),
                )
            })?;
            let base = RecordBatchHeader::parse(&batch)
                .map_err(|e| broken("reads return whole batches", format!("{e}")))?
                .base_offset();
            let id = decode_records(&batch, 1 << 20)
                .ok()
                .and_then(|records| records.first().and_then(|r| r.value.clone()))
                .and_then(|value| batch_id_of(&value));
            let sent = id.and_then(|id| self.batches.get(id as usize));
            let same = sent.is_some_and(|sent| {
                sent.partition == partition
                    && sent.variants.iter().any(|bytes| bytes[8..] == batch[8..])
            });
            let moved = id
                .and_then(|id| self.partitions[partition].observed_at.get(&id))
                .is_some_and(|earlier| *earlier != base);
            if !same || moved {
                return Err(broken(
                    "acknowledged bytes are read back unchanged",
                    format!(
                        "partition {partition}: fetched batch {id:?} at {base} is not what was sent there"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Records a successful acknowledgement of batch `id` at `base_offset`.
    pub fn acked(&mut self, id: u64, base_offset: i64) -> Result<(), Broken> {
        let sent = &mut self.batches[id as usize];
        if let Some(earlier) = sent.acked_at
            && earlier != base_offset
        {
            return Err(broken(
                "no batch is stored twice",
                format!("batch {id} acknowledged at {earlier} and again at {base_offset}"),
            ));
        }
        sent.acked_at = Some(base_offset);
        Ok(())
    }
}
