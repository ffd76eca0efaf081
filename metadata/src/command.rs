//! Commands (what a caller asks for), records (what the controller decided,
//! the unit of the log), and `plan`, which validates a command against an
//! image and resolves it into a record.
//!
//! The split is what a replicated log needs: `plan` runs on the one writer
//! (it draws random topic ids and chooses placement), the record goes into
//! the log, and `MetadataImage::apply` replays records deterministically.

use std::collections::BTreeMap;

use crate::acls::{self, AclBinding, AclCreationResult, AclDeletionResult, AclFilter};
use crate::configs::{self, ConfigError};
use crate::error::MetadataError;
use crate::image::{MetadataImage, PartitionImage, Uuid16};
use crate::limits::{
    BROKERS_MAX, CONFIG_CHANGES_MAX, ENDPOINT_BYTES_MAX, OBJECT_ID_BLOCK_MAX,
    OBJECTS_PER_COMMAND_MAX, PARTITIONS_PER_TOPIC_MAX, PARTITIONS_TOTAL_MAX, PRODUCER_ID_BLOCK_MAX,
    SHARDS_MAX, STREAMS_PER_UPLOAD_RECORD_MAX, TOPIC_ID_ATTEMPTS_MAX, TOPIC_NAME_BYTES_MAX,
    WAL_PATH_BYTES_MAX,
};
use crate::objects::{ObjectId, ObjectImage};
use crate::quotas::{self, QuotaAlteration, QuotaChange, QuotaEntityResult};
use crate::scram::{
    self, ScramDeletion, ScramMechanism, ScramUpsertion, ScramUserCredential, ScramUserResult,
};
use crate::uploads::{StreamCleaned, StreamUpload};

/// A change to the metadata, as asked by an admin request or the broker. rkyv: a
/// controller that is not the quorum's leader forwards it to the leader.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum MetadataCommand {
    /// `shards`: the number of shards to balance the partitions over.
    CreateTopic {
        name: String,
        partitions: u32,
        configs: BTreeMap<String, String>,
        shards: u32,
    },
    DeleteTopic {
        name: String,
    },
    /// Grows the topic to `total` partitions.
    CreatePartitions {
        name: String,
        total: u32,
        shards: u32,
    },
    /// Incremental; a full replace (AlterConfigs) is delete-all + set.
    AlterTopicConfigs {
        name: String,
        set: BTreeMap<String, String>,
        delete: Vec<String>,
    },
    AlterBrokerConfigs {
        set: BTreeMap<String, String>,
        delete: Vec<String>,
    },
    /// DeleteRecords / retention: the caller checks `offset` against the high
    /// watermark; the store only keeps it from moving backwards (an offset at
    /// or below the current one is a no-op, as in Kafka; negative is
    /// OFFSET_OUT_OF_RANGE).
    SetLogStartOffset {
        topic: String,
        partition: u32,
        offset: i64,
    },
    /// Hands out the block `[first, first + count)`.
    AllocateProducerIds {
        count: u32,
    },
    /// Hands out object ids `[first, first + count)` for objects about to be
    /// uploaded (their keys are derived from the id, so a retried upload
    /// writes the same key).
    AllocateObjectIds {
        count: u32,
    },
    /// Registers uploaded objects (the uploader's SSO and SOs) and their
    /// ranges, all or none. Each range must continue its stream. Committing
    /// again objects that are already committed, identical, is a no-op (a
    /// retried commit). Ranges of deleted streams are kept but not indexed.
    CommitObjects {
        objects: Vec<ObjectImage>,
    },
    /// Compaction: replaces the live objects `removed` by `added`, all or
    /// none. For every stream the offsets covered must stay exactly the
    /// same. The removed objects are marked for deletion at `now_ms`.
    CompactObjects {
        removed: Vec<ObjectId>,
        added: Vec<ObjectImage>,
        now_ms: u64,
    },
    /// Retention: marks live objects for deletion at `now_ms`; refused
    /// unless every one is dead (`MetadataImage::is_object_dead`).
    MarkObjectsForDeletion {
        ids: Vec<ObjectId>,
        now_ms: u64,
    },
    /// Forgets objects marked for deletion, once the store has deleted them.
    /// Ids already forgotten are skipped.
    DeleteObjects {
        ids: Vec<ObjectId>,
    },
    /// Records what an upload holds of each stream, before its objects are committed (see
    /// `uploads.rs`): its end offset and largest timestamp, and its producers' state there
    /// (each named producer's entry is replaced). Streams that are gone are skipped.
    RecordUploads {
        streams: Vec<StreamUpload>,
    },
    /// Records how far the log cleaner cleaned each stream, after the cleaned objects are
    /// committed (`CompactObjects`), and its delete horizon. A stream's mark only moves
    /// forward; streams that are gone are skipped.
    RecordCleaning {
        streams: Vec<StreamCleaned>,
    },
    /// Registers a broker of a controller quorum, with the `host:port` it advertises, and
    /// unfences it; it gets its share of the partitions no broker has (`brokers.rs`). The
    /// same broker registering again (a restart) keeps its partitions. With `wal`, a
    /// survivor may take its WAL over when it is fenced; it then holds it, one epoch up
    /// (refused while a taker holds it).
    RegisterBroker {
        node_id: i32,
        endpoint: String,
        wal: Option<WalLocation>,
    },
    /// Fences a registered broker whose heartbeats stopped (its partitions go offline), or
    /// unfences it when they come back. The quorum's leader sends it, not clients.
    SetBrokerFenced {
        node_id: i32,
        fenced: bool,
    },
    /// Gives a fenced broker's WAL to the live broker `taker`, one epoch up (the quorum's
    /// leader sends it; `Brokers::wals_to_take_over`).
    TakeOverWal {
        node_id: i32,
        taker: i32,
    },
    /// The taker of `node_id`'s WAL at `epoch` is done with it (`moved`: uploaded, its
    /// partitions may go to the live brokers). Refused from a taker that no longer holds it.
    ReleaseWal {
        node_id: i32,
        epoch: u64,
        moved: bool,
    },
    /// AlterPartitionReassignments: moves `partition` of `topic` to broker `target` (it must
    /// be live), or cancels the move asked before when `target` is None. A move to the
    /// broker that holds the partition cancels any other; a cancel with no move is refused
    /// (NO_REASSIGNMENT_IN_PROGRESS). The broker holding the partition then seals it,
    /// uploads its WAL tail and sends `CompletePartitionMove`.
    MovePartition {
        topic: String,
        partition: u32,
        target: Option<i32>,
    },
    /// Broker `from` sealed and uploaded the partition of `stream_id`: broker `to` leads it
    /// now, one leader epoch up. Refused unless `from` holds it, the move asked for is to
    /// `to`, and `to` is live.
    CompletePartitionMove {
        stream_id: u64,
        from: i32,
        to: i32,
    },
    /// AlterUserScramCredentials: each user's alteration is accepted or refused on its own
    /// (`scram::plan_alterations`); the accepted ones are written together, and the outcome
    /// has one result per user.
    AlterScramCredentials {
        upsertions: Vec<ScramUpsertion>,
        deletions: Vec<ScramDeletion>,
    },
    /// CreateAcls: each binding is accepted or refused on its own (`acls::plan_creations`);
    /// the outcome has one result per binding.
    CreateAcls {
        creations: Vec<AclBinding>,
    },
    /// DeleteAcls: removes every binding each filter matches; the outcome lists them per
    /// filter.
    DeleteAcls {
        filters: Vec<AclFilter>,
    },
    /// AlterClientQuotas: each entity's alteration is accepted or refused on its own
    /// (`quotas::plan_alterations`); the accepted ones are written together, and the outcome
    /// has one result per entity.
    AlterClientQuotas {
        alterations: Vec<QuotaAlteration>,
    },
}

/// Where a broker's WAL is (`RegisterBroker`).
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct WalLocation {
    /// One per shard, absolute.
    pub paths: Vec<String>,
    pub capacity_bytes: u64,
}

/// What applying a command did (rkyv: the quorum's leader returns it to the controller
/// that forwarded the command).
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum CommandOutcome {
    TopicCreated {
        topic_id: Uuid16,
    },
    /// `stream_ids`: the streams of the deleted partitions, whose data can go.
    TopicDeleted {
        topic_id: Uuid16,
        stream_ids: Vec<u64>,
    },
    PartitionsCreated {
        topic_id: Uuid16,
        first_new_partition: u32,
    },
    TopicConfigsAltered,
    BrokerConfigsAltered,
    /// The log start offset now in force: the current one, with nothing
    /// written, when the requested offset was not above it.
    LogStartOffsetSet {
        log_start_offset: i64,
    },
    ProducerIdsAllocated {
        first_producer_id: i64,
        count: u32,
    },
    ObjectIdsAllocated {
        first_object_id: ObjectId,
        count: u32,
    },
    ObjectsCommitted,
    ObjectsCompacted,
    ObjectsMarkedForDeletion,
    ObjectsDeleted,
    UploadsRecorded,
    CleaningRecorded,
    BrokerRegistered,
    BrokerFencingSet,
    WalTakenOver,
    WalReleased,
    PartitionMoveSet,
    PartitionMoveCompleted,
    /// One result per user named, in the order the request first names them.
    ScramCredentialsAltered {
        results: Vec<ScramUserResult>,
    },
    /// One result per binding of a CreateAcls, in request order.
    AclsCreated {
        results: Vec<AclCreationResult>,
    },
    /// One result per filter of a DeleteAcls, in request order.
    AclsDeleted {
        results: Vec<AclDeletionResult>,
    },
    /// What applying an AlterAcls record returns (a replay needs no per-item results).
    AclsAltered,
    /// One result per entity named, in the order the request first names them.
    ClientQuotasAltered {
        results: Vec<QuotaEntityResult>,
    },
}

/// A command resolved against an image: every choice (topic id, placement,
/// stream ids, producer id block) is made, so applying it is deterministic.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum MetadataRecord {
    CreateTopic {
        name: String,
        id: Uuid16,
        configs: BTreeMap<String, String>,
        partitions: Vec<PartitionImage>,
    },
    DeleteTopic {
        name: String,
        id: Uuid16,
    },
    CreatePartitions {
        name: String,
        partitions: Vec<PartitionImage>,
    },
    AlterTopicConfigs {
        name: String,
        set: BTreeMap<String, String>,
        delete: Vec<String>,
    },
    AlterBrokerConfigs {
        set: BTreeMap<String, String>,
        delete: Vec<String>,
    },
    SetLogStartOffset {
        topic: String,
        partition: u32,
        offset: i64,
    },
    AllocateProducerIds {
        first: i64,
        count: u32,
    },
    // Object registry records: appended after the older ones and no larger
    // than them, so that records already in logs decode unchanged.
    AllocateObjectIds {
        first: ObjectId,
        count: u32,
    },
    CommitObjects {
        objects: Vec<ObjectImage>,
    },
    CompactObjects {
        removed: Vec<ObjectId>,
        added: Vec<ObjectImage>,
        now_ms: u64,
    },
    MarkObjectsForDeletion {
        ids: Vec<ObjectId>,
        now_ms: u64,
    },
    DeleteObjects {
        ids: Vec<ObjectId>,
    },
    // Appended after the object registry records, and no larger than them, for the same
    // reason.
    RecordUploads {
        streams: Vec<StreamUpload>,
    },
    // Appended after the records above, and no larger than them, for the same reason.
    RecordCleaning {
        streams: Vec<StreamCleaned>,
    },
    // Appended after the records above, and no larger than them, for the same reason.
    RegisterBroker {
        node_id: i32,
        endpoint: String,
    },
    // Appended after the records above, and no larger than them, for the same reason.
    SetBrokerFenced {
        node_id: i32,
        fenced: bool,
    },
    // Appended after the records above, and no larger than them, for the same reason.
    RegisterBrokerWithWal {
        node_id: i32,
        endpoint: String,
        wal: WalLocation,
    },
    // Appended after the records above, and no larger than them, for the same reason.
    TakeOverWal {
        node_id: i32,
        taker: i32,
        epoch: u64,
    },
    // Appended after the records above, and no larger than them, for the same reason.
    ReleaseWal {
        node_id: i32,
        epoch: u64,
        moved: bool,
    },
    // Appended after the records above, and no larger than them, for the same reason.
    /// `target` None: the move asked for is cancelled.
    MovePartition {
        stream_id: u64,
        target: Option<i32>,
    },
    // Appended after the records above, and no larger than them, for the same reason.
    CompletePartitionMove {
        stream_id: u64,
        from: i32,
        to: i32,
    },
    // Appended after the records above, and no larger than them, for the same reason.
    /// Credentials written (a user's credential of the same mechanism is replaced) and
    /// removed (each must exist), per (user, mechanism).
    AlterScramCredentials {
        upserted: Vec<ScramUserCredential>,
        deleted: Vec<(String, ScramMechanism)>,
    },
    // Appended last, and no larger than the records before it, for the same reason.
    /// ACL bindings added (one already present is kept once) and removed (each must exist).
    AlterAcls {
        created: Vec<AclBinding>,
        deleted: Vec<AclBinding>,
    },
    // Appended last, and no larger than the records before it, for the same reason.
    /// Client quota values set and removed (each removed one must exist), in order.
    AlterClientQuotas {
        changes: Vec<QuotaChange>,
    },
}

/// Refuses a WAL location no broker could open: none, more paths than shards, paths not
/// absolute or too long, or a capacity that is not whole 4 KiB blocks.
fn check_wal_location(node_id: i32, wal: &WalLocation) -> Result<(), MetadataError> {
    let bad = |what: String| {
        Err(MetadataError::InvalidRequest(format!(
            "broker {node_id}'s WAL location: {what}"
        )))
    };
    if wal.paths.is_empty() || wal.paths.len() > SHARDS_MAX as usize {
        return bad(format!("{} paths (1 to {SHARDS_MAX})", wal.paths.len()));
    }
    if let Some(path) = wal
        .paths
        .iter()
        .find(|p| !p.starts_with('/') || p.len() > WAL_PATH_BYTES_MAX)
    {
        return bad(format!(
            "{path:?} is not an absolute path of at most {WAL_PATH_BYTES_MAX} bytes"
        ));
    }
    if wal.capacity_bytes == 0 || !wal.capacity_bytes.is_multiple_of(4096) {
        return bad(format!(
            "capacity {} is not a positive multiple of 4096",
            wal.capacity_bytes
        ));
    }
    Ok(())
}

/// The result of planning a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Write this record, then apply it.
    Record(MetadataRecord),
    /// Nothing to write; the command is already satisfied (or, for AlterScramCredentials and
    /// AlterClientQuotas, every item of it was refused, each in the outcome).
    Unchanged(CommandOutcome),
    /// Write this record and apply it, but answer `outcome` rather than what `apply` returns:
    /// for commands whose items are accepted or refused one by one (AlterScramCredentials),
    /// whose refusals are decided here and are no part of the record.
    RecordAnswering {
        record: MetadataRecord,
        outcome: CommandOutcome,
    },
}

/// Validates `command` against `image` and resolves it into a record.
/// `new_topic_id` draws a random topic id (called only for CreateTopic).
pub fn plan(
    image: &MetadataImage,
    command: &MetadataCommand,
    new_topic_id: &mut dyn FnMut() -> Result<Uuid16, MetadataError>,
) -> Result<Plan, MetadataError> {
    let record = match command {
        MetadataCommand::CreateTopic {
            name,
            partitions,
            configs,
            shards,
        } => {
            validate_topic_name(name)?;
            if image.topics.contains_key(name) {
                return Err(MetadataError::TopicAlreadyExists(name.clone()));
            }
            if let Some(existing) = colliding_topic(image, name) {
                return Err(MetadataError::InvalidTopic(format!(
                    "Topic '{name}' collides with existing topic: {existing}"
                )));
            }
            if *partitions == 0 {
                return Err(MetadataError::InvalidPartitions(
                    "Number of partitions was set to an invalid non-positive value.".to_string(),
                ));
            }
            check_partition_limits(image, name, *partitions, *partitions)?;
            check_shards(*shards)?;
            configs::validate_topic_configs(configs, &image.broker_configs)?;
            let id = draw_topic_id(image, new_topic_id)?;
            let partitions = place(image, 0, *partitions, *shards);
            MetadataRecord::CreateTopic {
                name: name.clone(),
                id,
                configs: configs.clone(),
                partitions,
            }
        }
        MetadataCommand::DeleteTopic { name } => {
            let topic = existing_topic(image, name)?;
            MetadataRecord::DeleteTopic {
                name: name.clone(),
                id: topic.id,
            }
        }
        MetadataCommand::CreatePartitions {
            name,
            total,
            shards,
        } => {
            let topic = existing_topic(image, name)?;
            let current = topic.partitions.len() as u32;
            if *total < current {
                return Err(MetadataError::InvalidPartitions(format!(
                    "Topic currently has {current} partitions, which is higher than the requested {total}."
                )));
            }
            if *total == current {
                return Err(MetadataError::InvalidPartitions(format!(
                    "Topic already has {current} partitions."
                )));
            }
            check_partition_limits(image, name, *total, *total - current)?;
            check_shards(*shards)?;
            MetadataRecord::CreatePartitions {
                name: name.clone(),
                partitions: place(image, current, *total - current, *shards),
            }
        }
        MetadataCommand::AlterTopicConfigs { name, set, delete } => {
            let topic = existing_topic(image, name)?;
            check_config_changes(set, delete, configs::is_topic_config, "topic")?;
            let mut next = topic.configs.clone();
            for key in delete {
                next.remove(key);
            }
            next.extend(set.iter().map(|(k, v)| (k.clone(), v.clone())));
            configs::validate_topic_configs(&next, &image.broker_configs)?;
            MetadataRecord::AlterTopicConfigs {
                name: name.clone(),
                set: set.clone(),
                delete: delete.clone(),
            }
        }
        MetadataCommand::AlterBrokerConfigs { set, delete } => {
            check_config_changes(set, delete, configs::is_broker_config, "broker")?;
            let mut next = image.broker_configs.clone();
            for key in delete {
                next.remove(key);
            }
            next.extend(set.iter().map(|(k, v)| (k.clone(), v.clone())));
            configs::validate_broker_configs(&next)?;
            MetadataRecord::AlterBrokerConfigs {
                set: set.clone(),
                delete: delete.clone(),
            }
        }
        MetadataCommand::SetLogStartOffset {
            topic,
            partition,
            offset,
        } => {
            let current = image
                .partition(topic, *partition)
                .ok_or_else(|| {
                    MetadataError::UnknownTopicOrPartition(format!(
                        "This server does not host this topic-partition: {topic}-{partition}"
                    ))
                })?
                .log_start_offset;
            if *offset < 0 {
                return Err(MetadataError::OffsetOutOfRange(format!(
                    "log start offset {offset} of {topic}-{partition} is negative"
                )));
            }
            // Like Kafka's DeleteRecords: an offset at or below the current
            // log start offset changes nothing and is not an error.
            if *offset <= current {
                return Ok(Plan::Unchanged(CommandOutcome::LogStartOffsetSet {
                    log_start_offset: current,
                }));
            }
            MetadataRecord::SetLogStartOffset {
                topic: topic.clone(),
                partition: *partition,
                offset: *offset,
            }
        }
        MetadataCommand::AllocateProducerIds { count } => {
            if *count == 0 || *count > PRODUCER_ID_BLOCK_MAX {
                return Err(MetadataError::InvalidRequest(format!(
                    "producer id block of {count} is not in 1..={PRODUCER_ID_BLOCK_MAX} (PRODUCER_ID_BLOCK_MAX)"
                )));
            }
            if image
                .next_producer_id
                .checked_add(i64::from(*count))
                .is_none()
            {
                return Err(MetadataError::InvalidRequest(
                    "producer ids are exhausted".to_string(),
                ));
            }
            MetadataRecord::AllocateProducerIds {
                first: image.next_producer_id,
                count: *count,
            }
        }
        MetadataCommand::AllocateObjectIds { count } => {
            if *count == 0 || *count > OBJECT_ID_BLOCK_MAX {
                return Err(MetadataError::InvalidRequest(format!(
                    "object id block of {count} is not in 1..={OBJECT_ID_BLOCK_MAX} (OBJECT_ID_BLOCK_MAX)"
                )));
            }
            MetadataRecord::AllocateObjectIds {
                first: image.next_object_id(),
                count: *count,
            }
        }
        MetadataCommand::CommitObjects { objects } => {
            check_object_count(objects.len(), 0)?;
            let committed = |o: &ObjectImage| image.object(o.id) == Some(o);
            if objects.iter().all(committed) {
                return Ok(Plan::Unchanged(CommandOutcome::ObjectsCommitted));
            }
            check_new_objects(image, objects)?;
            let record = MetadataRecord::CommitObjects {
                objects: objects.clone(),
            };
            // Continuity is the image's rule: try it here so a gap or an
            // overlap is the caller's error, not a corrupt record.
            image
                .apply(image.epoch + 1, &record)
                .map_err(|e| MetadataError::InvalidRequest(format!("commit refused: {e}")))?;
            record
        }
        MetadataCommand::CompactObjects {
            removed,
            added,
            now_ms,
        } => {
            check_object_count(added.len(), removed.len())?;
            // The same compaction again, already applied (a forwarded command whose answer
            // was lost is sent again): the same answer, not a refusal, which would make the
            // compactor delete the objects it added, live now.
            let applied = |o: &ObjectImage| image.object(o.id) == Some(o);
            if removed.iter().all(|id| image.tombstone(*id).is_some()) && added.iter().all(applied)
            {
                return Ok(Plan::Unchanged(CommandOutcome::ObjectsCompacted));
            }
            check_live_ids(image, removed)?;
            check_new_objects(image, added)?;
            let record = MetadataRecord::CompactObjects {
                removed: removed.clone(),
                added: added.clone(),
                now_ms: *now_ms,
            };
            // The coverage rules are the image's: try them here so a bad
            // plan is the caller's error, not a corrupt record.
            image
                .apply(image.epoch + 1, &record)
                .map_err(|e| MetadataError::InvalidRequest(format!("compaction refused: {e}")))?;
            record
        }
        MetadataCommand::MarkObjectsForDeletion { ids, now_ms } => {
            check_object_count(ids.len(), 0)?;
            // Marked already (the same command sent again after a lost answer).
            if ids.iter().all(|id| image.tombstone(*id).is_some()) {
                return Ok(Plan::Unchanged(CommandOutcome::ObjectsMarkedForDeletion));
            }
            check_live_ids(image, ids)?;
            for id in ids {
                let object = image.object(*id).expect("checked live");
                if !image.is_object_dead(object) {
                    return Err(MetadataError::InvalidRequest(format!(
                        "object {id} still holds data above the log start offset"
                    )));
                }
            }
            MetadataRecord::MarkObjectsForDeletion {
                ids: ids.clone(),
                now_ms: *now_ms,
            }
        }
        MetadataCommand::DeleteObjects { ids } => {
            check_object_count(ids.len(), 0)?;
            let mut pending = Vec::with_capacity(ids.len());
            for id in ids {
                if image.object(*id).is_some() {
                    return Err(MetadataError::InvalidRequest(format!(
                        "object {id} is live; mark it for deletion first"
                    )));
                }
                if image.tombstone(*id).is_some() && !pending.contains(id) {
                    pending.push(*id);
                }
            }
            if pending.is_empty() {
                return Ok(Plan::Unchanged(CommandOutcome::ObjectsDeleted));
            }
            MetadataRecord::DeleteObjects { ids: pending }
        }
        MetadataCommand::RecordUploads { streams } => {
            if streams.len() > STREAMS_PER_UPLOAD_RECORD_MAX {
                return Err(MetadataError::InvalidRequest(format!(
                    "uploads of {} streams is over {STREAMS_PER_UPLOAD_RECORD_MAX} (STREAMS_PER_UPLOAD_RECORD_MAX)",
                    streams.len()
                )));
            }
            crate::producers::validate(streams).map_err(MetadataError::InvalidRequest)?;
            if streams.is_empty() {
                return Ok(Plan::Unchanged(CommandOutcome::UploadsRecorded));
            }
            MetadataRecord::RecordUploads {
                streams: streams.clone(),
            }
        }
        MetadataCommand::RecordCleaning { streams } => {
            if streams.len() > STREAMS_PER_UPLOAD_RECORD_MAX {
                return Err(MetadataError::InvalidRequest(format!(
                    "cleaning of {} streams is over {STREAMS_PER_UPLOAD_RECORD_MAX} (STREAMS_PER_UPLOAD_RECORD_MAX)",
                    streams.len()
                )));
            }
            if let Some(bad) = streams.iter().find(|s| s.cleaned_end_offset < 0) {
                return Err(MetadataError::InvalidRequest(format!(
                    "stream {} cleaned to a negative offset",
                    bad.stream_id
                )));
            }
            // A mark behind the recorded one is not written; one at it is when it changes
            // the delete horizon (a cleaning that only removed expired tombstones).
            let moved: Vec<StreamCleaned> = streams
                .iter()
                .filter(|s| image.stream(s.stream_id).is_some())
                .filter(|s| match image.cleaned(s.stream_id) {
                    None => true,
                    Some(c) => {
                        c.cleaned_end_offset < s.cleaned_end_offset
                            || (c.cleaned_end_offset == s.cleaned_end_offset
                                && c.delete_horizon_ms != s.delete_horizon_ms)
                    }
                })
                .copied()
                .collect();
            if moved.is_empty() {
                return Ok(Plan::Unchanged(CommandOutcome::CleaningRecorded));
            }
            MetadataRecord::RecordCleaning { streams: moved }
        }
        MetadataCommand::RegisterBroker {
            node_id,
            endpoint,
            wal,
        } => {
            if endpoint.is_empty() || endpoint.len() > ENDPOINT_BYTES_MAX {
                return Err(MetadataError::InvalidRequest(format!(
                    "broker {node_id} advertises an endpoint of {} bytes (1 to {ENDPOINT_BYTES_MAX})",
                    endpoint.len()
                )));
            }
            if let Some(wal) = wal {
                check_wal_location(*node_id, wal)?;
                if let Some(taker) = image.wal_taker(*node_id) {
                    return Err(MetadataError::PolicyViolation(format!(
                        "broker {taker} is taking over broker {node_id}'s WAL; start broker \
                         {node_id} again once its partitions have moved"
                    )));
                }
            }
            let current = image.brokers().get(node_id);
            if current.is_none() && image.brokers().len() >= BROKERS_MAX as usize {
                return Err(MetadataError::PolicyViolation(format!(
                    "the cluster has {BROKERS_MAX} brokers (BROKERS_MAX); broker {node_id} is one too many"
                )));
            }
            match wal {
                // Always a record: each registration opens the WAL one epoch up.
                Some(wal) => MetadataRecord::RegisterBrokerWithWal {
                    node_id: *node_id,
                    endpoint: endpoint.clone(),
                    wal: wal.clone(),
                },
                None if current.is_some_and(|b| !b.fenced && b.endpoint == *endpoint) => {
                    return Ok(Plan::Unchanged(CommandOutcome::BrokerRegistered));
                }
                None => MetadataRecord::RegisterBroker {
                    node_id: *node_id,
                    endpoint: endpoint.clone(),
                },
            }
        }
        MetadataCommand::SetBrokerFenced { node_id, fenced } => {
            let Some(broker) = image.brokers().get(node_id) else {
                return Err(MetadataError::InvalidRequest(format!(
                    "broker {node_id} is not registered"
                )));
            };
            if broker.fenced == *fenced {
                return Ok(Plan::Unchanged(CommandOutcome::BrokerFencingSet));
            }
            MetadataRecord::SetBrokerFenced {
                node_id: *node_id,
                fenced: *fenced,
            }
        }
        MetadataCommand::TakeOverWal { node_id, taker } => {
            let wanted = image
                .wals_to_take_over()
                .into_iter()
                .find(|(id, _, _)| id == node_id);
            let Some((_, _, epoch)) = wanted else {
                return Err(MetadataError::InvalidRequest(format!(
                    "broker {node_id}'s WAL needs no taker (not fenced, none registered, or held)"
                )));
            };
            if !image.live_brokers().any(|(id, _)| id == *taker) {
                return Err(MetadataError::InvalidRequest(format!(
                    "broker {taker} is not live: it cannot take a WAL over"
                )));
            }
            MetadataRecord::TakeOverWal {
                node_id: *node_id,
                taker: *taker,
                epoch,
            }
        }
        MetadataCommand::ReleaseWal {
            node_id,
            epoch,
            moved,
        } => {
            let held = image.broker_wal(*node_id).is_some_and(|wal| {
                wal.epoch == *epoch && matches!(wal.holder, crate::brokers::WalHolder::Taker(_))
            });
            if !held {
                return Err(MetadataError::InvalidRequest(format!(
                    "broker {node_id}'s WAL is not held by a taker at epoch {epoch}"
                )));
            }
            MetadataRecord::ReleaseWal {
                node_id: *node_id,
                epoch: *epoch,
                moved: *moved,
            }
        }
        MetadataCommand::MovePartition {
            topic,
            partition,
            target,
        } => {
            let Some(part) = image.partition(topic, *partition) else {
                return Err(MetadataError::UnknownTopicOrPartition(format!(
                    "partition {partition} of topic {topic} does not exist"
                )));
            };
            let stream_id = part.stream_id;
            let pending = image.move_target(stream_id);
            let holder = image.leadership(stream_id).replica;
            match target {
                None if pending.is_none() => {
                    return Err(MetadataError::NoReassignmentInProgress(format!(
                        "no move of {topic}-{partition} is in progress"
                    )));
                }
                None => MetadataRecord::MovePartition {
                    stream_id,
                    target: None,
                },
                Some(target) => {
                    if image.brokers().is_empty() {
                        return Err(MetadataError::InvalidReplicaAssignment(format!(
                            "{topic}-{partition} cannot move: this broker runs alone (no \
                             controller quorum)"
                        )));
                    }
                    if !image.live_brokers().any(|(id, _)| id == *target) {
                        return Err(MetadataError::InvalidReplicaAssignment(format!(
                            "broker {target} is not a live broker of this cluster"
                        )));
                    }
                    if holder == Some(*target) {
                        if pending.is_none() {
                            return Ok(Plan::Unchanged(CommandOutcome::PartitionMoveSet));
                        }
                        MetadataRecord::MovePartition {
                            stream_id,
                            target: None,
                        }
                    } else if pending == Some(*target) {
                        return Ok(Plan::Unchanged(CommandOutcome::PartitionMoveSet));
                    } else {
                        MetadataRecord::MovePartition {
                            stream_id,
                            target: Some(*target),
                        }
                    }
                }
            }
        }
        MetadataCommand::CompletePartitionMove {
            stream_id,
            from,
            to,
        } => {
            let holder = image.leadership(*stream_id).replica;
            if holder != Some(*from)
                || image.move_target(*stream_id) != Some(*to)
                || !image.live_brokers().any(|(id, _)| id == *to)
            {
                return Err(MetadataError::InvalidRequest(format!(
                    "no move of stream {stream_id} from broker {from} to live broker {to} is \
                     in progress"
                )));
            }
            MetadataRecord::CompletePartitionMove {
                stream_id: *stream_id,
                from: *from,
                to: *to,
            }
        }
        MetadataCommand::AlterScramCredentials {
            upsertions,
            deletions,
        } => {
            let planned = scram::plan_alterations(image.scram_user_map(), upsertions, deletions)
                .map_err(MetadataError::InvalidRequest)?;
            let outcome = CommandOutcome::ScramCredentialsAltered {
                results: planned.results,
            };
            if planned.upserted.is_empty() && planned.deleted.is_empty() {
                return Ok(Plan::Unchanged(outcome));
            }
            return Ok(Plan::RecordAnswering {
                record: MetadataRecord::AlterScramCredentials {
                    upserted: planned.upserted,
                    deleted: planned.deleted,
                },
                outcome,
            });
        }
        MetadataCommand::CreateAcls { creations } => {
            let planned = acls::plan_creations(image.acl_set(), creations)
                .map_err(MetadataError::InvalidRequest)?;
            let outcome = CommandOutcome::AclsCreated {
                results: planned.results,
            };
            if planned.created.is_empty() {
                return Ok(Plan::Unchanged(outcome));
            }
            return Ok(Plan::RecordAnswering {
                record: MetadataRecord::AlterAcls {
                    created: planned.created,
                    deleted: Vec::new(),
                },
                outcome,
            });
        }
        MetadataCommand::DeleteAcls { filters } => {
            let (deleted, results) = acls::plan_deletions(image.acl_set(), filters)
                .map_err(MetadataError::InvalidRequest)?;
            let outcome = CommandOutcome::AclsDeleted { results };
            if deleted.is_empty() {
                return Ok(Plan::Unchanged(outcome));
            }
            return Ok(Plan::RecordAnswering {
                record: MetadataRecord::AlterAcls {
                    created: Vec::new(),
                    deleted,
                },
                outcome,
            });
        }
        MetadataCommand::AlterClientQuotas { alterations } => {
            let planned = quotas::plan_alterations(image.client_quota_entities(), alterations)
                .map_err(MetadataError::InvalidRequest)?;
            let outcome = CommandOutcome::ClientQuotasAltered {
                results: planned.results,
            };
            if planned.changes.is_empty() {
                return Ok(Plan::Unchanged(outcome));
            }
            return Ok(Plan::RecordAnswering {
                record: MetadataRecord::AlterClientQuotas {
                    changes: planned.changes,
                },
                outcome,
            });
        }
    };
    Ok(Plan::Record(record))
}

/// Runs every check `MetadataStore::apply` would run for `command` against
/// `image`, writing nothing: for `validate_only` requests (CreateTopics,
/// CreatePartitions, AlterConfigs), so they fail exactly as the real one would.
pub fn validate_command(
    image: &MetadataImage,
    command: &MetadataCommand,
) -> Result<(), MetadataError> {
    // Any fresh id will do: it is never stored.
    let mut next_id = 0u8;
    let mut placeholder_id = || {
        next_id = next_id.wrapping_add(1);
        Ok([next_id; 16])
    };
    match plan(image, command, &mut placeholder_id)? {
        Plan::Unchanged(_) => Ok(()),
        Plan::Record(record) | Plan::RecordAnswering { record, .. } => {
            image.apply(image.epoch + 1, &record).map(|_| ())
        }
    }
}

/// Kafka's topic name rule: non-empty, at most 249 characters of
/// `[a-zA-Z0-9._-]`, and neither "." nor "..".
pub fn validate_topic_name(name: &str) -> Result<(), MetadataError> {
    if name.is_empty() {
        return Err(MetadataError::InvalidTopic(
            "Topic name is illegal, it can't be empty".to_string(),
        ));
    }
    if name == "." || name == ".." {
        return Err(MetadataError::InvalidTopic(
            "Topic name cannot be \".\" or \"..\"".to_string(),
        ));
    }
    if name.len() > TOPIC_NAME_BYTES_MAX {
        return Err(MetadataError::InvalidTopic(format!(
            "Topic name is illegal, it can't be longer than {TOPIC_NAME_BYTES_MAX} characters, topic name: {name}"
        )));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return Err(MetadataError::InvalidTopic(format!(
            "Topic name \"{name}\" is illegal, it contains a character other than ASCII alphanumerics, '.', '_' and '-'"
        )));
    }
    Ok(())
}

/// The replication factor rule: -1 for the default, or 1 up to the live brokers' count (a
/// single node counts as one).
pub fn validate_replication_factor(
    replication_factor: i16,
    live_brokers: usize,
) -> Result<(), MetadataError> {
    match replication_factor {
        -1 => Ok(()),
        rf if rf <= 0 => Err(MetadataError::InvalidReplicationFactor(
            "Replication factor must be larger than 0, or -1 to use the default value.".to_string(),
        )),
        // Storage is shared and keeps one copy whatever the factor (ARCHITECTURE.md): a factor
        // up to the brokers' count is what Kafka would accept, so clients asking for it work.
        rf if rf as usize <= live_brokers.max(1) => Ok(()),
        rf => Err(MetadataError::InvalidReplicationFactor(format!(
            "Unable to replicate the partition {rf} time(s): The target replication factor of {rf} cannot be reached because only {} broker(s) are registered.",
            live_brokers.max(1)
        ))),
    }
}

// ---------------------------------------------------------------------------

fn check_object_count(a: usize, b: usize) -> Result<(), MetadataError> {
    if a + b > OBJECTS_PER_COMMAND_MAX {
        return Err(MetadataError::InvalidRequest(format!(
            "more than {OBJECTS_PER_COMMAND_MAX} objects in one command (OBJECTS_PER_COMMAND_MAX)"
        )));
    }
    Ok(())
}

/// Every id is a live object, listed once.
fn check_live_ids(image: &MetadataImage, ids: &[ObjectId]) -> Result<(), MetadataError> {
    for (i, id) in ids.iter().enumerate() {
        if image.object(*id).is_none() || ids[..i].contains(id) {
            return Err(MetadataError::InvalidRequest(format!(
                "object {id} is not live, or listed twice"
            )));
        }
    }
    Ok(())
}

/// New objects: well formed, allocated, fresh, of streams that were created.
fn check_new_objects(image: &MetadataImage, objects: &[ObjectImage]) -> Result<(), MetadataError> {
    for (i, object) in objects.iter().enumerate() {
        object.check().map_err(MetadataError::InvalidRequest)?;
        if object.id >= image.next_object_id()
            || image.object(object.id).is_some()
            || image.tombstone(object.id).is_some()
            || objects[..i].iter().any(|o| o.id == object.id)
        {
            return Err(MetadataError::InvalidRequest(format!(
                "object id {} is not a fresh allocated id",
                object.id
            )));
        }
        if let Some(r) = object.ranges.iter().find(|r| {
            r.stream_id == 0
                || (r.stream_id >= image.next_stream_id
                    && !crate::objects::is_internal_stream(r.stream_id))
        }) {
            return Err(MetadataError::InvalidRequest(format!(
                "object {}: stream {} was never created",
                object.id, r.stream_id
            )));
        }
    }
    Ok(())
}

fn existing_topic<'a>(
    image: &'a MetadataImage,
    name: &str,
) -> Result<&'a crate::TopicImage, MetadataError> {
    image.topic(name).ok_or_else(|| {
        MetadataError::UnknownTopicOrPartition(format!(
            "This server does not host this topic-partition: {name}"
        ))
    })
}

/// Kafka refuses topics whose names differ only by '.' versus '_', since
/// both map to the same metric names.
fn colliding_topic<'a>(image: &'a MetadataImage, name: &str) -> Option<&'a str> {
    if !name.contains(['.', '_']) {
        return None;
    }
    let unify = |s: &str| s.replace('.', "_");
    let key = unify(name);
    image
        .topics
        .keys()
        .find(|existing| existing.len() == name.len() && unify(existing) == key)
        .map(String::as_str)
}

fn check_partition_limits(
    image: &MetadataImage,
    name: &str,
    total: u32,
    added: u32,
) -> Result<(), MetadataError> {
    if total > PARTITIONS_PER_TOPIC_MAX {
        return Err(MetadataError::InvalidPartitions(format!(
            "Topic {name} would have {total} partitions, more than the {PARTITIONS_PER_TOPIC_MAX} allowed (PARTITIONS_PER_TOPIC_MAX)."
        )));
    }
    let after = image.partition_count() as u64 + u64::from(added);
    if after > u64::from(PARTITIONS_TOTAL_MAX) {
        return Err(MetadataError::PolicyViolation(format!(
            "The cluster would have {after} partitions, more than the {PARTITIONS_TOTAL_MAX} allowed (PARTITIONS_TOTAL_MAX)."
        )));
    }
    Ok(())
}

fn check_shards(shards: u32) -> Result<(), MetadataError> {
    if shards == 0 || shards > SHARDS_MAX {
        return Err(MetadataError::InvalidRequest(format!(
            "shard count {shards} is not in 1..={SHARDS_MAX} (SHARDS_MAX)"
        )));
    }
    Ok(())
}

fn check_config_changes(
    set: &BTreeMap<String, String>,
    delete: &[String],
    known: fn(&str) -> bool,
    kind: &str,
) -> Result<(), MetadataError> {
    if set.len() + delete.len() > CONFIG_CHANGES_MAX {
        return Err(MetadataError::InvalidRequest(format!(
            "more than {CONFIG_CHANGES_MAX} config changes in one request (CONFIG_CHANGES_MAX)"
        )));
    }
    for key in delete {
        if set.contains_key(key) {
            return Err(MetadataError::InvalidRequest(format!(
                "config {key} is both set and deleted"
            )));
        }
        if !known(key) {
            return Err(MetadataError::InvalidConfig(ConfigError {
                name: key.clone(),
                message: format!("Unknown {kind} config name: {key}"),
            }));
        }
    }
    Ok(())
}

fn draw_topic_id(
    image: &MetadataImage,
    new_topic_id: &mut dyn FnMut() -> Result<Uuid16, MetadataError>,
) -> Result<Uuid16, MetadataError> {
    for _ in 0..TOPIC_ID_ATTEMPTS_MAX {
        let mut id = new_topic_id()?;
        id[6] = (id[6] & 0x0f) | 0x40; // version 4
        id[8] = (id[8] & 0x3f) | 0x80; // IETF variant
        // Kafka's Uuid.randomUuid also refuses ids whose base64 form starts
        // with '-' (first six bits 62), as they read like a CLI flag.
        let starts_with_dash = id[0] >> 2 == 62;
        let reserved = id == [0; 16] || id == METADATA_TOPIC_ID;
        if !starts_with_dash && !reserved && image.topic_by_id(id).is_none() {
            return Ok(id);
        }
    }
    Err(MetadataError::InvalidRequest(format!(
        "no fresh topic id after {TOPIC_ID_ATTEMPTS_MAX} attempts (TOPIC_ID_ATTEMPTS_MAX)"
    )))
}

/// Kafka's reserved id of the metadata topic (0...01).
const METADATA_TOPIC_ID: Uuid16 = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];

/// Places `count` new partitions, numbered from `first_index`, over shards
/// `0..shards`: each goes to the least-loaded shard, ties broken round-robin
/// from the shard that was least loaded when placement started.
fn place(image: &MetadataImage, first_index: u32, count: u32, shards: u32) -> Vec<PartitionImage> {
    debug_assert!(shards > 0 && shards <= SHARDS_MAX);
    let mut loads = image.shard_loads(shards);
    let start = (0..shards)
        .min_by_key(|&s| (loads[s as usize], s))
        .unwrap_or(0);
    let mut partitions = Vec::with_capacity(count as usize);
    for (stream_id, index) in (image.next_stream_id..).zip(first_index..first_index + count) {
        let shard = (0..shards)
            .min_by_key(|&s| (loads[s as usize], (s + shards - start) % shards))
            .unwrap_or(0);
        loads[shard as usize] += 1;
        partitions.push(PartitionImage {
            index,
            shard,
            stream_id,
            log_start_offset: 0,
        });
    }
    partitions
}
