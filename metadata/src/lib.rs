//! Cluster metadata: topics, partitions, configs, placement (partition →
//! shard), stream ids, producer ids, log start offsets, the users' SCRAM
//! credentials (`scram`), the ACLs (`acls`) and the client quotas (`quotas`), kept by one writer
//! (`MetadataStore`) in a durable log with rkyv snapshots, and read by every
//! shard as an immutable `MetadataImage` that the broker swaps on change.
//!
//! The flow of a change: `MetadataCommand` → `command::plan` (validate and
//! decide: ids, placement) → `MetadataRecord` → log append + fsync →
//! `MetadataImage::apply` (pure, deterministic) → new `Arc<MetadataImage>`.
//! With a controller quorum (`quorum/`), openraft's replicated log carries the
//! same records in place of the local log, with the same `plan` and `apply`.

pub mod acls;
mod brokers;
pub mod command;
pub mod configs;
mod error;
mod image;
pub mod limits;
mod log;
mod objects;
mod producers;
pub mod quorum;
pub mod quotas;
pub mod scram;
mod snapshot;
mod store;
mod uploads;

pub use acls::{
    AclBinding, AclCreationResult, AclDeletionResult, AclEntry, AclFilter, AclOperation,
    AclPattern, AclPatternType, AclPermission, AclResourceType,
};
pub use brokers::{BrokerImage, BrokerWal, Leadership, WalHolder};
pub use command::{
    CommandOutcome, MetadataCommand, MetadataRecord, Plan, WalLocation, validate_command,
    validate_replication_factor, validate_topic_name,
};
pub use configs::{
    BrokerConfig, CleanupPolicy, CompressionType, ConfigEntry, ConfigError, ConfigSource,
    ConfigSynonym, ConfigType, ConsumerGroupMigrationPolicy, TimestampType, TopicConfig,
    describe_broker_configs, describe_topic_configs, effective_broker_config,
    effective_topic_config, validate_broker_config, validate_topic_config,
};
pub use error::MetadataError;
pub use image::{FIRST_STREAM_ID, MetadataImage, PartitionImage, TopicImage, Uuid16};
pub use objects::{
    FIRST_OBJECT_ID, INTERNAL_STREAM_ID_MIN, ObjectId, ObjectImage, ObjectKind, ObjectTombstone,
    StreamRange, is_internal_stream,
};
pub use producers::{ProducerBatch, ProducerSnapshot, ProducerStates};
pub use quotas::{
    EntityName, QuotaAlteration, QuotaChange, QuotaEntities, QuotaEntity, QuotaEntityResult,
    QuotaKey, QuotaValue,
};
pub use scram::{
    ScramCredential, ScramDeletion, ScramMechanism, ScramUpsertion, ScramUserCredential,
    ScramUserResult, ScramUsers,
};
pub use snapshot::write_atomically;
pub use store::{MetadataStore, RecoveryReport, StoreOptions};
pub use uploads::{StreamCleaned, StreamUpload, UploadTime};
