//! Retention of a shard's partitions (retention.ms, retention.bytes): moves their log start
//! past whole uploads that are too old and past the oldest objects while a log is too large.
//! The maintenance shard deletes the objects below it (`tier::maintenance`).

use std::rc::Rc;
use std::time::Duration;

use futures::FutureExt;
use sluice_metadata::MetadataCommand;
use sluice_net::ErrorCode;

use super::PartitionStore;
use super::partition::Partition;
use crate::clock::now_ms;
use crate::errors::controller_error_code;
use crate::stop::StopSignal;

/// Applies retention every `interval` (log.retention.check.interval.ms) until `stop`.
pub async fn run_retention(store: Rc<PartitionStore>, interval: Duration, stop: StopSignal) {
    loop {
        futures::select_biased! {
            _ = stop.clone().fuse() => return,
            _ = glommio::timer::sleep(interval).fuse() => {}
        }
        store.apply_retention().await;
    }
}

impl PartitionStore {
    /// Applies retention.ms and retention.bytes to this shard's partitions: moves their log
    /// start past whole uploads that are too old, and past the oldest objects while the log
    /// is over its size limit. Shard 0's maintenance then deletes the objects below it.
    pub async fn apply_retention(&self) {
        let image = self.image();
        let now = now_ms();
        let partitions: Vec<Rc<Partition>> = self.partitions.borrow().values().cloned().collect();
        for partition in partitions {
            let settings = partition.settings();
            let (_, log_start, _) = partition.offsets();
            let mut target = None;
            if settings.retention_ms >= 0 {
                target = partition.expired_before(now.saturating_sub(settings.retention_ms));
            }
            if settings.retention_bytes >= 0 {
                let ranges: Vec<(i64, u64)> = image
                    .stream_objects(partition.stream_id)
                    .filter(|(_, r)| r.end_offset > log_start)
                    .map(|(_, r)| (r.end_offset, r.len))
                    .collect();
                // Measured against this image's objects, so no byte counts twice.
                let objects_end = image
                    .stream_end_offset_in_objects(partition.stream_id)
                    .unwrap_or(log_start);
                let mut size = partition.cached_bytes_from(objects_end)
                    + ranges.iter().map(|r| r.1).sum::<u64>();
                // As Kafka deletes segments: a range goes only if what stays after it is
                // still at least retention.bytes, so the log keeps its newest records.
                for (end, len) in ranges {
                    if size.saturating_sub(len) < settings.retention_bytes as u64 {
                        break;
                    }
                    size -= len;
                    target = target.max(Some(end));
                }
            }
            let Some(target) = target.filter(|t| *t > log_start) else {
                continue;
            };
            match self.delete_records(&partition, target).await {
                Ok(start) => {
                    tracing::info!(topic = %partition.topic, partition = partition.index, log_start_offset = start, "retention moved the log start")
                }
                Err(code) => {
                    tracing::warn!(topic = %partition.topic, partition = partition.index, ?code, "retention could not move the log start")
                }
            }
        }
    }

    /// Moves `partition`'s log start to `offset` (-1: the high watermark) through the
    /// controller; the new log start.
    pub(super) async fn delete_records(
        &self,
        partition: &Partition,
        offset: i64,
    ) -> Result<i64, ErrorCode> {
        let (high_watermark, _, _) = partition.offsets();
        let target = if offset == -1 { high_watermark } else { offset };
        if target < 0 || target > high_watermark {
            return Err(ErrorCode::OffsetOutOfRange);
        }
        self.controller
            .submit(MetadataCommand::SetLogStartOffset {
                topic: partition.topic.to_string(),
                partition: partition.index,
                offset: target,
            })
            .await
            .map_err(|e| controller_error_code(&e))?;
        partition.advance_log_start(target)
    }
}
