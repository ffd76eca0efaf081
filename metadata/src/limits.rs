//! Every bound of the metadata store, in one place.

/// Most partitions one topic may have (INVALID_PARTITIONS above it).
pub const PARTITIONS_PER_TOPIC_MAX: u32 = 10_000;
/// Most partitions of all topics together (POLICY_VIOLATION above it).
pub const PARTITIONS_TOTAL_MAX: u32 = 200_000;
/// Most shards partitions can be balanced over.
pub const SHARDS_MAX: u32 = 1024;
/// Longest topic name, as in Kafka.
pub const TOPIC_NAME_BYTES_MAX: usize = 249;
/// Most producer ids one AllocateProducerIds may hand out.
pub const PRODUCER_ID_BLOCK_MAX: u32 = 1_000_000;
/// Most config names one Alter command may set or delete.
pub const CONFIG_CHANGES_MAX: usize = 1024;
/// Largest metadata log record payload; a larger length prefix is corruption.
pub const LOG_RECORD_BYTES_MAX: u32 = 16 * 1024 * 1024;
/// Largest snapshot file accepted on load.
pub const SNAPSHOT_BYTES_MAX: u64 = 1024 * 1024 * 1024;
/// A snapshot is written after this many records; it bounds replay at open.
pub const SNAPSHOT_INTERVAL_RECORDS: u64 = 1000;
/// Snapshots kept on disk (the newest is used; older ones are fallbacks).
pub const SNAPSHOTS_KEPT: usize = 2;
/// Attempts at drawing a fresh random topic id before giving up.
pub const TOPIC_ID_ATTEMPTS_MAX: u32 = 16;
/// Most object ids one AllocateObjectIds may hand out.
pub const OBJECT_ID_BLOCK_MAX: u32 = 1_000_000;
/// Most objects one object registry command may name (added + removed).
pub const OBJECTS_PER_COMMAND_MAX: usize = 10_000;
/// Producers whose state one stream keeps (as a broker's partition does); the one with the
/// oldest last offset is forgotten past this.
pub const PRODUCERS_PER_STREAM_MAX: usize = 10_000;
/// Batches remembered per producer for duplicate detection (Kafka's max.in.flight limit).
pub const BATCHES_PER_PRODUCER_MAX: usize = 5;
/// Most streams one RecordUploads may name.
pub const STREAMS_PER_UPLOAD_RECORD_MAX: usize = 100_000;
/// Upload times kept per stream for time-based retention; past it every two neighbours
/// merge (retention then removes data later, never earlier).
pub const UPLOAD_TIMES_PER_STREAM_MAX: usize = 1024;
/// Longest `host:port` a broker may advertise (a DNS name is at most 253 bytes).
pub const ENDPOINT_BYTES_MAX: usize = 260;
/// Longest WAL path a broker may register for takeover (Linux's PATH_MAX).
pub const WAL_PATH_BYTES_MAX: usize = 4096;
/// Brokers a cluster registers: each numbers its internal streams with a slot below this,
/// and a slot's internal streams are `SHARDS_MAX` ids wide within 65,536 per kind.
pub const BROKERS_MAX: u32 = 64;
/// Most users with SCRAM credentials (AlterUserScramCredentials): a new user past it is
/// refused POLICY_VIOLATION, as every credential is in every broker's image.
pub const SCRAM_USERS_MAX: usize = 10_000;
/// Fewest PBKDF2 iterations of a SCRAM credential (Kafka's, for both mechanisms; RFC 7677 asks
/// for at least 4096): fewer is UNACCEPTABLE_CREDENTIAL.
pub const SCRAM_ITERATIONS_MIN: u32 = 4096;
/// Most PBKDF2 iterations of a SCRAM credential (Kafka's `ScramControlManager.MAX_ITERATIONS`):
/// bounds what each authentication costs the broker.
pub const SCRAM_ITERATIONS_MAX: u32 = 16_384;
/// Longest SCRAM user name (UNACCEPTABLE_CREDENTIAL above it); Kafka has no bound.
pub const SCRAM_USER_NAME_BYTES_MAX: usize = 1024;
/// Longest SCRAM salt (UNACCEPTABLE_CREDENTIAL above it); Kafka's clients send 32 bytes or so.
pub const SCRAM_SALT_BYTES_MAX: usize = 1024;
/// Most alterations (upsertions and deletions) one AlterUserScramCredentials may carry; they
/// become one metadata record, which this keeps far below `LOG_RECORD_BYTES_MAX`.
pub const SCRAM_ALTERATIONS_PER_COMMAND_MAX: usize = 1000;
/// Most ACL bindings in the cluster (CreateAcls): a new one past it is refused
/// POLICY_VIOLATION, as every binding is in every broker's image.
pub const ACL_BINDINGS_MAX: usize = 100_000;
/// Most creations or deletion filters one CreateAcls or DeleteAcls may carry.
pub const ACL_CHANGES_PER_COMMAND_MAX: usize = 10_000;
/// Longest resource name, principal or host of an ACL binding.
pub const ACL_FIELD_BYTES_MAX: usize = 4096;
/// Most client quota entities (AlterClientQuotas): a new entity past it is refused
/// POLICY_VIOLATION, as every entity is in every broker's image and each shard resolves a
/// client's quota against them. Kafka has no bound.
pub const CLIENT_QUOTA_ENTITIES_MAX: usize = 10_000;
/// Longest user or client id name of a client quota entity (INVALID_REQUEST above it).
pub const CLIENT_QUOTA_ENTITY_NAME_BYTES_MAX: usize = 1024;
/// Most entities one AlterClientQuotas may carry; their changes become one metadata record,
/// which this keeps far below `LOG_RECORD_BYTES_MAX`.
pub const CLIENT_QUOTA_ALTERATIONS_PER_COMMAND_MAX: usize = 1000;
