//! A consumer with a direct partition assignment (no group coordinator):
//! starts at the end of each assigned partition, long-polls with Fetch, one
//! request in flight per broker, and records each message's end-to-end latency
//! from the send time the producer put in the payload's first 8 bytes.
//!
//! Helpers: `run`, `Consumer::fetch_once`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::bail;
use bytes::Bytes;
use sluice_net::messages::fetch_request::{FetchPartition, FetchRequest, FetchTopic};
use sluice_net::record_batch::{RecordBatchHeader, batches_allow_partial, decode_records};
use sluice_net::{ErrorCode, Request, Response};

use crate::client::{
    Connection, EARLIEST_TIMESTAMP, LATEST_TIMESTAMP, error_name, is_retriable, list_offsets,
};
use crate::producer::now_ns;
use crate::stats::Recorder;

/// Wait after a failed fetch before the next one.
const FETCH_BACKOFF: Duration = Duration::from_millis(100);
/// Poll interval while paused.
const PAUSE_POLL: Duration = Duration::from_millis(20);
/// Largest decompressed size of one batch.
const BATCH_DECOMPRESSED_BYTES_MAX: usize = 64 << 20;

/// Fetch settings (Kafka consumer config names in brackets).
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// Long-poll wait. [fetch.max.wait.ms]
    pub max_wait_ms: i32,
    /// Bytes the broker waits for. [fetch.min.bytes]
    pub min_bytes: i32,
    /// Bytes per response. [fetch.max.bytes]
    pub max_bytes: i32,
    /// Bytes per partition per response. [max.partition.fetch.bytes]
    pub partition_max_bytes: i32,
    /// Client timeout on top of the long-poll wait. [request.timeout.ms]
    pub request_timeout: Duration,
    /// Client id.
    pub client_id: String,
}

/// One consumer's assignment on one broker.
#[derive(Debug, Clone)]
pub struct Assignment {
    /// Topic name.
    pub topic: String,
    /// Broker `HOST:PORT` leading the partitions.
    pub broker: String,
    /// Partition → next offset to read.
    pub offsets: HashMap<i32, i64>,
}

/// Positions `assignment` at the end of each partition (ListOffsets latest).
pub async fn position_at_end(conn: &Connection, assignment: &mut Assignment) -> anyhow::Result<()> {
    let partitions: Vec<i32> = assignment.offsets.keys().copied().collect();
    assignment.offsets =
        list_offsets(conn, &assignment.topic, &partitions, LATEST_TIMESTAMP).await?;
    Ok(())
}

/// Fetches until `stop`, idling while `paused`.
pub async fn run(
    conn: Arc<Connection>,
    mut assignment: Assignment,
    config: ConsumerConfig,
    recorder: Arc<Recorder>,
    paused: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) {
    let mut conn = Some(conn);
    let mut last_error = String::new();
    while !stop.load(Ordering::Relaxed) {
        if paused.load(Ordering::Relaxed) {
            tokio::time::sleep(PAUSE_POLL).await;
            continue;
        }
        let c = match conn.take() {
            Some(c) if !c.is_closed() => c,
            _ => match Connection::connect(
                &assignment.broker,
                &config.client_id,
                config.request_timeout,
            )
            .await
            {
                Ok(c) => c,
                Err(e) => {
                    report(&mut last_error, format!("consumer connection: {e:#}"));
                    tokio::time::sleep(FETCH_BACKOFF).await;
                    continue;
                }
            },
        };
        match fetch_once(&c, &mut assignment, &config, &recorder).await {
            Ok(()) => {}
            Err(e) => {
                report(
                    &mut last_error,
                    format!("fetch {}: {e:#}", assignment.topic),
                );
                tokio::time::sleep(FETCH_BACKOFF).await;
            }
        }
        conn = Some(c);
    }
}

/// Prints an error once until a different one happens.
fn report(last: &mut String, message: String) {
    if *last != message {
        eprintln!("sluice perf: {message}");
        *last = message;
    }
}

/// One Fetch round trip: records received, offsets advanced.
pub async fn fetch_once(
    conn: &Connection,
    assignment: &mut Assignment,
    config: &ConsumerConfig,
    recorder: &Recorder,
) -> anyhow::Result<()> {
    let mut partitions: Vec<(i32, i64)> =
        assignment.offsets.iter().map(|(&p, &o)| (p, o)).collect();
    partitions.sort_unstable();
    let request = Request::Fetch(FetchRequest {
        replica_id: -1,
        max_wait_ms: config.max_wait_ms,
        min_bytes: config.min_bytes,
        max_bytes: config.max_bytes,
        isolation_level: 0,
        session_id: 0,
        session_epoch: -1,
        topics: vec![FetchTopic {
            topic: assignment.topic.clone(),
            partitions: partitions
                .iter()
                .map(|&(partition, offset)| FetchPartition {
                    partition,
                    fetch_offset: offset,
                    partition_max_bytes: config.partition_max_bytes,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }],
        ..Default::default()
    });
    let Response::Fetch(response) = conn.request(request).await? else {
        bail!("unexpected response type");
    };
    let received_ns = now_ns();
    if response.error_code != 0 {
        bail!("{}", error_name(response.error_code));
    }
    let mut e2e_us = Vec::new();
    let mut messages = 0u64;
    let mut bytes = 0u64;
    let mut reset_earliest = Vec::new();
    let mut first_error = None;
    for topic in &response.responses {
        if topic.topic != assignment.topic {
            continue;
        }
        for p in &topic.partitions {
            let Some(offset) = assignment.offsets.get_mut(&p.partition_index) else {
                continue;
            };
            if p.error_code == ErrorCode::OffsetOutOfRange.code() {
                reset_earliest.push(p.partition_index);
                continue;
            }
            if p.error_code != 0 {
                if first_error.is_none() {
                    first_error = Some((p.partition_index, p.error_code));
                }
                continue;
            }
            let Some(records) = &p.records else { continue };
            let read = read_records(records, offset, received_ns, &mut e2e_us)?;
            messages += read.0;
            bytes += read.1;
        }
    }
    if messages > 0 {
        recorder.record_receive(&e2e_us, messages, bytes);
    }
    if !reset_earliest.is_empty() {
        let start =
            list_offsets(conn, &assignment.topic, &reset_earliest, EARLIEST_TIMESTAMP).await?;
        assignment.offsets.extend(start);
    }
    if let Some((partition, code)) = first_error {
        if is_retriable(code) {
            tokio::time::sleep(FETCH_BACKOFF).await;
        } else {
            bail!("partition {partition}: {}", error_name(code));
        }
    }
    Ok(())
}

/// Reads the batches of one partition from `*offset` on; returns (messages, payload bytes).
fn read_records(
    records: &Bytes,
    offset: &mut i64,
    received_ns: u64,
    e2e_us: &mut Vec<u64>,
) -> anyhow::Result<(u64, u64)> {
    let mut messages = 0;
    let mut bytes = 0;
    for batch in batches_allow_partial(records) {
        let batch = batch?;
        let header = RecordBatchHeader::validate(&batch)?;
        let last = header.last_offset();
        if last < *offset {
            continue;
        }
        let base = header.base_offset();
        if header.is_control() {
            *offset = last + 1;
            continue;
        }
        for record in decode_records(&batch, BATCH_DECOMPRESSED_BYTES_MAX)? {
            if base + i64::from(record.offset_delta) < *offset {
                continue;
            }
            messages += 1;
            if let Some(value) = &record.value {
                bytes += value.len() as u64;
                if value.len() >= 8 {
                    let mut sent = [0u8; 8];
                    sent.copy_from_slice(&value[..8]);
                    let sent_ns = u64::from_le_bytes(sent);
                    if sent_ns <= received_ns {
                        e2e_us.push((received_ns - sent_ns) / 1000);
                    }
                }
            }
        }
        *offset = last + 1;
    }
    Ok((messages, bytes))
}
