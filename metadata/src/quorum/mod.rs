//! The controller quorum: the metadata log replicated by openraft between the controllers
//! named by `--controller-quorum-voters` (KRaft's shape), in place of the single node's
//! local log (`store.rs`).
//!
//! The flow of a change is the single node's with Raft in the middle: the leader plans the
//! command on its image (`command::plan`), proposes the record, and every controller's
//! state machine applies it once a majority has it (`storage.rs`). A controller that is not
//! the leader forwards the command to the leader (`network.rs`) and answers once its own
//! image has the change.
//!
//! Consensus is openraft's; this module only gives it storage, a network and the state
//! machine.

mod network;
mod node;
mod storage;
mod traffic;

use std::io::Cursor;

use serde::{Deserialize, Serialize};

pub use node::{
    QuorumConfig, QuorumDescription, QuorumNode, QuorumStatus, cluster_id_of_voters, parse_voters,
};
pub use traffic::{PartitionTraffic, TrafficSource};

openraft::declare_raft_types!(
    /// openraft's types for the metadata quorum.
    pub(crate) QuorumTypes:
        D = RecordBytes,
        R = Applied,
);

/// A `MetadataRecord`, rkyv-encoded, as a Raft entry carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RecordBytes(pub Vec<u8>);

/// What applying an entry did, as the state machine tells the leader's caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Applied {
    /// The image's epoch after the entry.
    pub epoch: u64,
    /// The entry did not apply: its Kafka error code and message.
    pub refused: Option<(i16, String)>,
}

impl Applied {
    fn at(epoch: u64) -> Applied {
        Applied {
            epoch,
            refused: None,
        }
    }

    fn refused(epoch: u64, error: &crate::MetadataError) -> Applied {
        Applied {
            epoch,
            refused: Some((error.kafka_error_code(), error.to_string())),
        }
    }
}
