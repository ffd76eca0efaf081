//! One shard: the services it runs (partition storage, groups, transactions), what they share
//! (the controller, the memory pool, the metrics), and the mesh to other shards. Requests
//! reach the services through `router.rs`; nothing here handles one.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;

use sluice_metadata::{MetadataImage, PartitionImage};

use crate::api::fetch_session::FetchSessions;
use crate::chunk_pool::ChunkPool;
use crate::config::BrokerConfig;
use crate::controller::ControllerHandle;
use crate::coordinator_partitions::CoordinatorPlacement;
use crate::group::GroupCoordinator;
use crate::messaging::Mesh;
use crate::metrics::ShardMetrics;
use crate::producer_ids::ProducerIds;
use crate::quota::ShardQuotas;
use crate::security::JwtValidator;
use crate::storage::PartitionStore;
use crate::task_permits::TaskPermits;
use crate::txn::coordinator::TxnCoordinator;

/// Whether a shard holds the state of its coordinator partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CoordinatorLoad {
    /// Another broker coordinates (this one may become the coordinator).
    NotLoaded,
    /// This broker coordinates now; the shard is reading the logs.
    Loading,
    /// The shard serves its coordinator partitions: read at start-up when this broker was
    /// the coordinator, or loaded since.
    Loaded,
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
    /// What this shard counts, for the metrics exporter.
    pub metrics: Arc<ShardMetrics>,
    /// The partitions this shard owns.
    pub storage: Rc<PartitionStore>,
    /// Which coordinator partition and shard each group and transactional id belongs to.
    pub placement: CoordinatorPlacement,
    /// Whether this shard holds the state of its coordinator partitions
    /// (`coordinator_move.rs`). Until it does, its coordinators answer nothing (the client
    /// retries).
    pub coordinator_load: Cell<CoordinatorLoad>,
    /// The consumer groups this shard coordinates.
    pub groups: GroupCoordinator,
    /// The transactional ids this shard coordinates.
    pub txns: TxnCoordinator,
    /// Producer ids for InitProducerId.
    pub producer_ids: ProducerIds,
    /// The memory pool of request frames and produced batches (the log cache's chunks).
    pub memory_pool: ChunkPool,
    /// Channels to every shard, this one included.
    pub mesh: Mesh,
    /// The cap on tasks the router runs at once (`--shard-tasks-max`).
    pub task_permits: TaskPermits,
    /// The incremental fetch sessions of the fetches this shard serves.
    pub fetch_sessions: RefCell<FetchSessions>,
    /// The validator of OAUTHBEARER tokens, when SASL listeners offer OAUTHBEARER; each shard
    /// reads the JWKS file itself.
    pub oauthbearer: Option<JwtValidator>,
    /// The client quotas' measurements (`quota`).
    pub quotas: ShardQuotas,
}

impl Shard {
    /// The current metadata image.
    pub fn image(&self) -> Arc<MetadataImage> {
        self.controller.image()
    }

    /// The shard owning a partition (placement wraps if the broker runs fewer shards).
    pub fn owner_of(&self, partition: &PartitionImage) -> usize {
        self.storage.owner_of(partition)
    }

    /// True when this broker coordinates groups and transactions (a single node always).
    pub fn coordinates(&self) -> bool {
        self.image().coordinates()
    }

    /// True once this shard serves its coordinator partitions.
    pub fn coordinator_loaded(&self) -> bool {
        self.coordinator_load.get() == CoordinatorLoad::Loaded
    }

    /// The shard of this broker coordinating group or transactional id `id`.
    pub fn coordinator_shard(&self, id: &str) -> usize {
        self.placement.shard(id)
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
}
