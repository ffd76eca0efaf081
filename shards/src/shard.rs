//! One shard: its partitions, its WAL, and the messages other shards send it.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::channel::oneshot;
use glommio::channels::shared_channel::ConnectedSender;
use sluice_metadata::{MetadataCommand, MetadataImage, PartitionImage, TopicImage};
use sluice_net::ErrorCode;
use sluice_wal::Wal;

use crate::config::BrokerConfig;
use crate::controller::ControllerHandle;
use crate::group::GroupCoordinator;
use crate::group::call::{GroupCall, GroupReply};
use crate::group::log::{GROUP_LOG_STREAM_ID, GroupLogEntry};
use crate::partition::{AppendOutcome, Partition, PartitionSettings};
use crate::partition_log::{ReadError, ReadSlice};
use crate::txn::TxnCoordinator;
use crate::txn::call::{TxnCall, TxnReply};

/// Producer ids a shard takes from the controller at once.
const PRODUCER_ID_BLOCK: u32 = 1000;

/// Work for the shard that owns a partition, sent by the shard that parsed the request.
pub enum ShardRequest {
    /// Order and persist one batch; the reply comes once it is durable.
    Produce {
        stream_id: u64,
        batch: Bytes,
        reply: oneshot::Sender<Result<AppendOutcome, ErrorCode>>,
    },
    /// Read batches from an offset (read_committed: up to the last stable offset).
    Read {
        stream_id: u64,
        offset: i64,
        max_bytes: usize,
        read_committed: bool,
        reply: oneshot::Sender<Result<ReadSlice, ErrorCode>>,
    },
    /// Resolve once data past `offset` exists, or after `wait`.
    WaitForData {
        stream_id: u64,
        offset: i64,
        wait: Duration,
        reply: oneshot::Sender<()>,
    },
    /// Resolve a ListOffsets query (a timestamp or one of Kafka's special values).
    ListOffset {
        stream_id: u64,
        timestamp: i64,
        read_committed: bool,
        reply: oneshot::Sender<Result<(i64, i64), ErrorCode>>,
    },
    /// Move the log start offset (DeleteRecords).
    DeleteRecords {
        stream_id: u64,
        offset: i64,
        reply: oneshot::Sender<Result<i64, ErrorCode>>,
    },
    /// Size of the partition's log in bytes (DescribeLogDirs).
    Size {
        stream_id: u64,
        reply: oneshot::Sender<Result<u64, ErrorCode>>,
    },
    /// A request for the group coordinator of this shard.
    Group {
        call: GroupCall,
        reply: oneshot::Sender<GroupReply>,
    },
    /// Transaction work for this shard (coordinator, group coordinator or partition owner).
    Txn {
        call: TxnCall,
        reply: oneshot::Sender<TxnReply>,
    },
}

/// Counters of what a shard served; read by tests and, later, metrics.
#[derive(Debug, Default)]
pub struct ShardCounters {
    /// Batches this shard ordered and persisted as the owner.
    pub batches_appended: Cell<u64>,
    /// Reads this shard served as the owner.
    pub reads_served: Cell<u64>,
    /// Connections accepted.
    pub connections_accepted: Cell<u64>,
}

/// The state of one shard, shared by its tasks (never across threads).
pub struct Shard {
    /// This shard's index.
    pub id: usize,
    /// Number of shards in the broker.
    pub count: usize,
    /// Start-up configuration.
    pub config: Arc<BrokerConfig>,
    /// Where metadata commands go.
    pub controller: ControllerHandle,
    /// Host and port clients are told to use.
    pub advertised: (String, i32),
    /// What this shard served.
    pub counters: ShardCounters,
    /// The consumer groups this shard coordinates.
    pub groups: GroupCoordinator,
    /// The transactional ids this shard coordinates.
    pub txns: TxnCoordinator,
    wal: Rc<Wal>,
    partitions: RefCell<HashMap<u64, Rc<Partition>>>,
    peers: Vec<Option<ConnectedSender<ShardRequest>>>,
    producer_ids: Cell<(i64, i64)>,
}

impl Shard {
    /// A shard over an opened WAL, with a sender to every other shard (`None` at its own index).
    pub fn new(
        id: usize,
        config: Arc<BrokerConfig>,
        controller: ControllerHandle,
        advertised: (String, i32),
        wal: Rc<Wal>,
        peers: Vec<Option<ConnectedSender<ShardRequest>>>,
    ) -> Shard {
        Shard {
            id,
            count: peers.len(),
            config,
            controller,
            advertised,
            counters: ShardCounters::default(),
            groups: GroupCoordinator::new(wal.clone()),
            txns: TxnCoordinator::new(wal.clone()),
            wal,
            partitions: RefCell::new(HashMap::new()),
            peers,
            producer_ids: Cell::new((0, 0)),
        }
    }

    /// The current metadata image.
    pub fn image(&self) -> Arc<MetadataImage> {
        self.controller.image()
    }

    /// The shard owning a partition (placement wraps if the broker runs fewer shards).
    pub fn owner_of(&self, partition: &PartitionImage) -> usize {
        partition.shard as usize % self.count
    }

    /// The owner shard and stream id of `topic`/`partition`, if that partition exists.
    pub fn locate(
        &self,
        image: &MetadataImage,
        topic: &str,
        partition: i32,
    ) -> Option<(usize, u64)> {
        let part = image.partition(topic, u32::try_from(partition).ok()?)?;
        Some((self.owner_of(part), part.stream_id))
    }

    /// Sends `request` to shard `owner`, or handles it here when that is this shard. Returns
    /// once the request is ordered there (produce) or accepted (the rest); answers come on the
    /// request's reply channel.
    pub async fn deliver(self: &Rc<Self>, owner: usize, request: ShardRequest) {
        if owner == self.id {
            self.handle(request).await;
            return;
        }
        if let Some(Some(peer)) = self.peers.get(owner)
            && peer.send(request).await.is_err()
        {
            tracing::warn!(owner, "shard channel closed");
        }
    }

    /// Handles one request as the owner of its partition.
    pub async fn handle(self: &Rc<Self>, request: ShardRequest) {
        match request {
            ShardRequest::Produce {
                stream_id,
                batch,
                reply,
            } => {
                let Some(partition) = self.partition(stream_id) else {
                    let _ = reply.send(Err(ErrorCode::NotLeaderOrFollower));
                    return;
                };
                match partition.order(&self.wal, batch).await {
                    Ok(pending) => {
                        self.counters
                            .batches_appended
                            .set(self.counters.batches_appended.get() + 1);
                        glommio::spawn_local(async move {
                            let _ = reply.send(pending.durable().await);
                        })
                        .detach();
                    }
                    Err(code) => {
                        let _ = reply.send(Err(code));
                    }
                }
            }
            ShardRequest::Read {
                stream_id,
                offset,
                max_bytes,
                read_committed,
                reply,
            } => {
                self.counters
                    .reads_served
                    .set(self.counters.reads_served.get() + 1);
                let result = match self.partition(stream_id) {
                    None => Err(ErrorCode::NotLeaderOrFollower),
                    Some(p) => p
                        .read(offset, max_bytes, read_committed)
                        .map_err(|e| match e {
                            ReadError::OffsetOutOfRange => ErrorCode::OffsetOutOfRange,
                        }),
                };
                let _ = reply.send(result);
            }
            ShardRequest::WaitForData {
                stream_id,
                offset,
                wait,
                reply,
            } => {
                if let Some(partition) = self.partition(stream_id) {
                    glommio::spawn_local(async move {
                        partition.wait_for_data(offset, wait).await;
                        let _ = reply.send(());
                    })
                    .detach();
                } else {
                    let _ = reply.send(());
                }
            }
            ShardRequest::ListOffset {
                stream_id,
                timestamp,
                read_committed,
                reply,
            } => {
                let result = match self.partition(stream_id) {
                    None => Err(ErrorCode::NotLeaderOrFollower),
                    Some(p) => Ok(list_offset(&p, timestamp, read_committed)),
                };
                let _ = reply.send(result);
            }
            ShardRequest::DeleteRecords {
                stream_id,
                offset,
                reply,
            } => {
                let Some(partition) = self.partition(stream_id) else {
                    let _ = reply.send(Err(ErrorCode::NotLeaderOrFollower));
                    return;
                };
                let shard = self.clone();
                glommio::spawn_local(async move {
                    let _ = reply.send(shard.delete_records(&partition, offset).await);
                })
                .detach();
            }
            ShardRequest::Size { stream_id, reply } => {
                let result = self
                    .partition(stream_id)
                    .map(|p| p.size_bytes())
                    .ok_or(ErrorCode::NotLeaderOrFollower);
                let _ = reply.send(result);
            }
            ShardRequest::Group { call, reply } => {
                let shard = self.clone();
                glommio::spawn_local(async move {
                    let image = shard.image();
                    let _ = reply.send(shard.groups.call(call, &image).await);
                })
                .detach();
            }
            ShardRequest::Txn { call, reply } => {
                let shard = self.clone();
                glommio::spawn_local(async move {
                    let _ = reply.send(crate::txn::call::serve(&shard, call).await);
                })
                .detach();
            }
        }
    }

    /// Takes the next producer id, fetching a new block from the controller when needed.
    pub async fn next_producer_id(&self) -> Result<i64, ErrorCode> {
        let (next, end) = self.producer_ids.get();
        if next < end {
            self.producer_ids.set((next + 1, end));
            return Ok(next);
        }
        let (_, outcome) = self
            .controller
            .submit(MetadataCommand::AllocateProducerIds {
                count: PRODUCER_ID_BLOCK,
            })
            .await
            .map_err(|e| crate::errors::controller_error_code(&e))?;
        let sluice_metadata::CommandOutcome::ProducerIdsAllocated {
            first_producer_id: first,
            ..
        } = outcome
        else {
            return Err(ErrorCode::UnknownServerError);
        };
        self.producer_ids
            .set((first + 1, first + i64::from(PRODUCER_ID_BLOCK)));
        Ok(first)
    }

    /// Replays WAL records into this shard's partitions at start-up; returns how many batches
    /// were replayed and the group-log entries found, in WAL order.
    pub fn recover(
        &self,
        records: Vec<sluice_wal::RecoveredRecord>,
    ) -> (usize, Vec<GroupLogEntry>) {
        let mut recovered = 0;
        let mut group_entries = Vec::new();
        for record in records {
            if record.stream_id == GROUP_LOG_STREAM_ID {
                self.groups.resume_sequence(record.last_offset + 1);
                match crate::group::log::decode(record.payload) {
                    Ok(entries) => group_entries.extend(entries),
                    Err(error) => {
                        tracing::error!(%error, "a group-log record in the WAL is malformed; skipped")
                    }
                }
                continue;
            }
            if record.stream_id == crate::txn::log::TXN_LOG_STREAM_ID {
                self.txns.replay(record);
                continue;
            }
            let Some(partition) = self.partition(record.stream_id) else {
                continue; // a deleted topic, or a stream another shard owns now
            };
            match partition.recover(record.payload) {
                Ok(()) => recovered += 1,
                Err(error) => tracing::error!(
                    %error,
                    stream_id = record.stream_id,
                    "a WAL record does not hold a valid batch; skipped"
                ),
            }
        }
        (recovered, group_entries)
    }

    /// Drops partitions that no longer exist and applies changed topic settings.
    pub fn apply_image(&self, image: &MetadataImage) {
        self.partitions.borrow_mut().retain(|stream_id, partition| {
            match image.stream(*stream_id) {
                Some((topic, part)) => {
                    partition.set_settings(settings_of(topic, image));
                    let _ = partition.advance_log_start(part.log_start_offset);
                    true
                }
                None => false,
            }
        });
    }

    /// Every partition this shard holds, for shutdown reporting.
    pub fn partition_count(&self) -> usize {
        self.partitions.borrow().len()
    }

    /// This shard's WAL (transaction markers are appended to it like produced batches).
    pub(crate) fn wal(&self) -> &Rc<Wal> {
        &self.wal
    }

    /// The partition with `stream_id` if this shard owns it, created on first use.
    pub(crate) fn partition(&self, stream_id: u64) -> Option<Rc<Partition>> {
        if let Some(p) = self.partitions.borrow().get(&stream_id) {
            return Some(p.clone());
        }
        let image = self.image();
        let (topic, part) = image.stream(stream_id)?;
        if self.owner_of(part) != self.id {
            return None;
        }
        let partition = Rc::new(Partition::new(
            Rc::from(topic.name.as_str()),
            part.index,
            stream_id,
            part.log_start_offset,
            settings_of(topic, &image),
        ));
        self.partitions
            .borrow_mut()
            .insert(stream_id, partition.clone());
        Some(partition)
    }

    async fn delete_records(&self, partition: &Partition, offset: i64) -> Result<i64, ErrorCode> {
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
            .map_err(|e| crate::errors::controller_error_code(&e))?;
        partition.advance_log_start(target)
    }
}

/// The settings of `topic` that the order stage applies.
pub fn settings_of(topic: &TopicImage, image: &MetadataImage) -> PartitionSettings {
    let effective = sluice_metadata::effective_topic_config(&topic.configs, &image.broker_configs);
    PartitionSettings {
        log_append_time: effective.timestamp_type == sluice_metadata::TimestampType::LogAppendTime,
        max_message_bytes: effective.max_message_bytes.max(0) as usize,
    }
}

/// Kafka's special ListOffsets timestamps.
const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL: i64 = -4;
const LATEST_TIERED: i64 = -5;

/// (offset, timestamp) for a ListOffsets query; (-1, -1) when no record qualifies.
/// read_committed's latest offset is the last stable offset.
fn list_offset(partition: &Partition, timestamp: i64, read_committed: bool) -> (i64, i64) {
    let (high_watermark, log_start, _) = partition.offsets();
    match timestamp {
        LATEST if read_committed => (partition.last_stable_offset(), -1),
        LATEST => (high_watermark, -1),
        EARLIEST | EARLIEST_LOCAL => (log_start, -1),
        LATEST_TIERED => (-1, -1),
        MAX_TIMESTAMP => partition.max_timestamp_offset().unwrap_or((-1, -1)),
        t if t >= 0 => partition.offset_for_timestamp(t).unwrap_or((-1, -1)),
        _ => (-1, -1),
    }
}
