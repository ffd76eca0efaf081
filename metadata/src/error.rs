//! The one error type of the metadata store, and its Kafka error code.

use std::io;
use std::path::PathBuf;

use crate::configs::ConfigError;

/// Why a metadata command or the store failed. Every variant maps to the
/// Kafka error code a Java client would get (`kafka_error_code`).
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    /// TOPIC_ALREADY_EXISTS (36).
    #[error("Topic '{0}' already exists.")]
    TopicAlreadyExists(String),
    /// UNKNOWN_TOPIC_OR_PARTITION (3).
    #[error("{0}")]
    UnknownTopicOrPartition(String),
    /// INVALID_PARTITIONS (37).
    #[error("{0}")]
    InvalidPartitions(String),
    /// INVALID_REPLICATION_FACTOR (38).
    #[error("{0}")]
    InvalidReplicationFactor(String),
    /// INVALID_TOPIC_EXCEPTION (17): a name Kafka would refuse.
    #[error("{0}")]
    InvalidTopic(String),
    /// INVALID_CONFIG (40).
    #[error(transparent)]
    InvalidConfig(#[from] ConfigError),
    /// POLICY_VIOLATION (44): a cluster-wide limit (e.g. PARTITIONS_TOTAL_MAX).
    #[error("{0}")]
    PolicyViolation(String),
    /// OFFSET_OUT_OF_RANGE (1): a negative log start offset.
    #[error("{0}")]
    OffsetOutOfRange(String),
    /// INVALID_REPLICA_ASSIGNMENT (39): a partition move to no live broker, or to several
    /// (Sluice keeps one copy, in shared storage).
    #[error("{0}")]
    InvalidReplicaAssignment(String),
    /// NO_REASSIGNMENT_IN_PROGRESS (85): cancelling a partition move nobody asked for.
    #[error("{0}")]
    NoReassignmentInProgress(String),
    /// INVALID_REQUEST (42): anything else the caller got wrong.
    #[error("{0}")]
    InvalidRequest(String),
    /// KAFKA_STORAGE_ERROR (56): reading or writing the metadata directory failed.
    #[error("metadata I/O error on {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// KAFKA_STORAGE_ERROR (56): the metadata on disk cannot be trusted.
    #[error("metadata corrupt: {0}")]
    Corrupt(String),
    /// KAFKA_STORAGE_ERROR (56): an earlier write or fsync failed; the log's
    /// tail is unknown until the store is reopened (and the tail repaired).
    #[error("metadata store failed earlier ({0}); reopen it to recover")]
    Failed(String),
    /// The quorum's leader refused or failed a forwarded command: its Kafka error code
    /// and message, as the leader's own error would have them.
    #[error("{message}")]
    Forwarded { code: i16, message: String },
    /// REQUEST_TIMED_OUT (7): the controller quorum has no leader (no majority of its
    /// voters is up) or did not answer in time.
    #[error("{0}")]
    QuorumUnavailable(String),
    /// INVALID_REQUEST (42): the directory belongs to another node.
    #[error("metadata directory belongs to node {stored}, not node {requested}")]
    NodeIdMismatch { stored: i32, requested: i32 },
}

impl MetadataError {
    /// Kafka's numeric error code for this error.
    pub fn kafka_error_code(&self) -> i16 {
        match self {
            MetadataError::TopicAlreadyExists(_) => 36,
            MetadataError::UnknownTopicOrPartition(_) => 3,
            MetadataError::InvalidPartitions(_) => 37,
            MetadataError::InvalidReplicationFactor(_) => 38,
            MetadataError::InvalidTopic(_) => 17,
            MetadataError::InvalidConfig(_) => 40,
            MetadataError::PolicyViolation(_) => 44,
            MetadataError::OffsetOutOfRange(_) => 1,
            MetadataError::InvalidRequest(_) => 42,
            MetadataError::InvalidReplicaAssignment(_) => 39,
            MetadataError::NoReassignmentInProgress(_) => 85,
            MetadataError::Io { .. } | MetadataError::Corrupt(_) | MetadataError::Failed(_) => 56,
            MetadataError::NodeIdMismatch { .. } => 42,
            MetadataError::Forwarded { code, .. } => *code,
            MetadataError::QuorumUnavailable(_) => 7,
        }
    }

    /// True when the command this error answers was certainly not applied and never will
    /// be: it failed the plan's checks, here or at the quorum's leader. False when its fate
    /// is unknown (a write or fsync failed, no answer in time, the quorum stopped): its
    /// record may be in the log, so what it names must be kept.
    pub fn is_refusal(&self) -> bool {
        match self {
            MetadataError::TopicAlreadyExists(_)
            | MetadataError::UnknownTopicOrPartition(_)
            | MetadataError::InvalidPartitions(_)
            | MetadataError::InvalidReplicationFactor(_)
            | MetadataError::InvalidTopic(_)
            | MetadataError::InvalidConfig(_)
            | MetadataError::PolicyViolation(_)
            | MetadataError::OffsetOutOfRange(_)
            | MetadataError::InvalidReplicaAssignment(_)
            | MetadataError::NoReassignmentInProgress(_)
            | MetadataError::InvalidRequest(_)
            | MetadataError::NodeIdMismatch { .. } => true,
            // The leader's own error, by its code: REQUEST_TIMED_OUT and KAFKA_STORAGE_ERROR
            // are the unknown fates above.
            MetadataError::Forwarded { code, .. } => !matches!(code, 7 | 56),
            MetadataError::Io { .. }
            | MetadataError::Corrupt(_)
            | MetadataError::Failed(_)
            | MetadataError::QuorumUnavailable(_) => false,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> MetadataError {
        MetadataError::Io {
            path: path.into(),
            source,
        }
    }
}
