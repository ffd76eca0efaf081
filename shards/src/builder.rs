//! Assembling one shard on its executor, shared by the runtime (one per core) and the
//! in-process shard of tests and benches: the WAL, the memory budget, the services, the mesh,
//! and recovery.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;

use futures::StreamExt;
use futures::channel::mpsc;
use glommio::channels::local_channel::{self, LocalReceiver};
use glommio::channels::shared_channel::ConnectedSender;
use sluice_objstore::ObjectStore;
use sluice_wal::{RecoveredRecord, Wal, WalConfig};

use crate::api::fetch_session::FetchSessions;
use crate::budget::ShardBudget;
use crate::chunk_pool::ChunkPool;
use crate::config::{BrokerConfig, is_block_device};
use crate::controller::ControllerHandle;
use crate::coordinator_partitions::CoordinatorPlacement;
use crate::group::GroupCoordinator;
use crate::group::call::GroupCall;
use crate::group::limits::GroupLimits;
use crate::group::log::GroupLogEntry;
use crate::messaging::{Mesh, ShardRequest};
use crate::metrics::ShardMetrics;
use crate::producer_ids::ProducerIds;
use crate::security::JwtValidator;
use crate::shard::{CoordinatorLoad, Shard};
use crate::stop::StopSignal;
use crate::storage::PartitionStore;
use crate::storage::shard_wal::ShardWal;
use crate::takeover::WalTakeovers;
use crate::task_permits::TaskPermits;
use crate::tier::ObjectTier;
use crate::txn::coordinator::TxnCoordinator;

/// Requests queued between two shards (and on a shard's loopback) before the sender waits.
pub const MESH_QUEUE_DEPTH: usize = 1024;

/// What a shard is built from.
pub struct ShardBuilder {
    /// This shard's index.
    pub id: usize,
    /// Start-up configuration.
    pub config: Arc<BrokerConfig>,
    /// Where metadata commands go.
    pub controller: ControllerHandle,
    /// The object store.
    pub objects: ObjectStore,
    /// What this shard counts.
    pub metrics: Arc<ShardMetrics>,
    /// A sender to every other shard (`None` at this shard's index; one entry per shard).
    pub peers: Vec<Option<ConnectedSender<ShardRequest>>>,
    /// The broker's caps on groups and members, shared by every shard.
    pub group_limits: GroupLimits,
}

/// A shard built and recovered, before it serves anything.
pub struct BuiltShard {
    /// The shard.
    pub shard: Rc<Shard>,
    /// Its own requests, for `router::serve_loopback`.
    pub loopback: LocalReceiver<ShardRequest>,
    /// Group-log entries found at start-up, for [`restore_groups`] once the mesh is served.
    pub group_entries: Vec<GroupLogEntry>,
    /// The shard's share of the memory budget, as its services were sized.
    pub budget: ShardBudget,
}

impl ShardBuilder {
    /// Opens the shard's WAL, builds its services over its share of the memory budget, and
    /// recovers its state from objects and the WAL.
    pub async fn build(self) -> Result<BuiltShard, String> {
        let wal_epoch = self
            .controller
            .image()
            .broker_wal(self.config.node_id)
            .map_or(0, |wal| wal.epoch);
        let wal_config = wal_config(&self.config, self.id, self.peers.len(), wal_epoch);
        if let Some(parent) = wal_config.path.parent()
            && !is_block_device(&wal_config.path)
        {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("WAL directory {}: {e}", parent.display()))?;
        }
        let (wal, wal_records) = Wal::open(wal_config.clone())
            .await
            .map_err(|e| format!("WAL {}: {e}", wal_config.path.display()))?;
        self.build_on(wal, wal_records).await
    }

    /// [`ShardBuilder::build`] over a WAL the caller opened (the simulator's, on an
    /// in-memory disk) and the records its open recovered.
    pub async fn build_on(
        self,
        wal: Wal,
        wal_records: Vec<RecoveredRecord>,
    ) -> Result<BuiltShard, String> {
        let ShardBuilder {
            id,
            config,
            controller,
            objects,
            metrics,
            peers,
            group_limits,
        } = self;
        let count = peers.len();
        let budget = ShardBudget::of(&config, count);
        let wal = Rc::new(ShardWal::new(wal, budget.memory_pool_bytes));
        let tier = ObjectTier::new(
            objects,
            budget.block_cache_bytes,
            budget.log_cache_bytes,
            budget.upload_bytes,
            config.upload_interval,
        )
        .link_wal_segments(config.wal_segmented());
        let memory_pool = ChunkPool::new(budget.memory_pool_bytes)
            .with_frame_share(usize::try_from(budget.request_bytes).unwrap_or(usize::MAX));
        let storage = Rc::new(PartitionStore::new(
            id,
            count,
            controller.clone(),
            wal.clone(),
            tier,
            memory_pool.clone(),
            metrics.clone(),
        ));
        let (loopback_sender, loopback) = local_channel::new_bounded(MESH_QUEUE_DEPTH);
        let task_permits = TaskPermits::new(config.shard_tasks_max, metrics.clone());
        let image = controller.image();
        let placement = CoordinatorPlacement::of(&image, count);
        // The coordinator's shards read its partitions' logs below; another broker's wait
        // until this one becomes the coordinator (`coordinator_move.rs`).
        let coordinates = image.coordinating_broker() == Some(image.node_id);
        let oauthbearer = match &config.security.oauthbearer {
            Some(oauthbearer) => Some(JwtValidator::new(oauthbearer)?),
            None => None,
        };
        let shard = Rc::new(Shard {
            id,
            count,
            config,
            producer_ids: ProducerIds::new(controller.clone()),
            controller,
            metrics,
            placement,
            coordinator_load: Cell::new(if coordinates {
                CoordinatorLoad::Loaded
            } else {
                CoordinatorLoad::NotLoaded
            }),
            groups: GroupCoordinator::new(wal.clone(), placement, group_limits),
            txns: TxnCoordinator::new(wal, placement),
            storage,
            memory_pool,
            mesh: Mesh::new(id, peers, loopback_sender),
            task_permits,
            fetch_sessions: RefCell::new(FetchSessions::new(id)),
            oauthbearer,
            quotas: crate::quota::ShardQuotas::new(count),
        });
        crate::txn::serve::attach(&shard);
        let mut group_entries = crate::recovery::internal_state_in_objects(&shard)
            .await
            .map_err(|reason| {
                format!("reading the group and transaction logs from objects: {reason}")
            })?;
        let from_objects = group_entries.len();
        let (replayed, from_wal, released_end) = crate::recovery::recover(&shard, wal_records);
        if let Some(position) = released_end {
            shard
                .storage
                .wal
                .trim(position)
                .await
                .map_err(|e| format!("trimming the WAL past records already in objects: {e}"))?;
        }
        tracing::info!(
            shard = id,
            replayed,
            group_entries = from_wal.len(),
            group_entries_from_objects = from_objects,
            "WAL recovered"
        );
        group_entries.extend(from_wal);
        Ok(BuiltShard {
            shard,
            loopback,
            group_entries,
            budget,
        })
    }
}

/// Starts the shard's upload task (`tier/upload.rs`) and, with a local object store, its
/// reports to the I/O pacer (`tier/io_report.rs`); both run until `stop`.
pub fn spawn_uploads(storage: &Rc<PartitionStore>, stop: StopSignal) -> glommio::Task<()> {
    let storage = storage.clone();
    glommio::spawn_local(async move {
        let uploads = crate::tier::upload::run_uploads(
            storage.id,
            &storage.tier,
            &storage.wal,
            &storage.controller,
            &*storage,
            stop.clone(),
        );
        match storage.tier.io_signal() {
            Some(signal) => {
                let report =
                    crate::tier::io_report::report_wal_latency(&storage.wal, &signal, stop);
                futures::future::join(uploads, report).await;
            }
            None => uploads.await,
        }
    })
}

/// Starts applying the controller's change notices to the shard's partitions (dropping
/// those of deleted topics and those another broker took, taking new settings), until the
/// controller stops; loads the shard's coordinator partitions when this broker becomes the
/// coordinator (`coordinator_move.rs`) and the transaction history of partitions moved here
/// (`storage/txn_history.rs`), and carries out the moves asked of its partitions
/// (`partition_move.rs`). Shard 0 also starts the WAL takeovers the quorum
/// gives this broker and stops the broker if its own WAL was taken over (`takeover.rs`).
pub fn spawn_image_changes(
    shard: &Rc<Shard>,
    mut changes: mpsc::Receiver<()>,
) -> glommio::Task<()> {
    let storage = shard.storage.clone();
    let config = shard.config.clone();
    let opened_wal_epoch = storage
        .image()
        .broker_wal(config.node_id)
        .map(|wal| wal.epoch);
    let takeovers = WalTakeovers::default();
    let moves = crate::partition_move::PartitionMoves::default();
    // Weak: this task runs until the controller stops, and must not keep the shard alive.
    let shard = Rc::downgrade(shard);
    let load_if_due = move || {
        if let Some(shard) = shard.upgrade() {
            crate::coordinator_move::load_if_due(&shard);
            crate::storage::txn_history::load_due(&shard.storage);
        }
    };
    glommio::spawn_local(async move {
        if storage.id == 0 {
            // Given a WAL before this start (a taker restarted within its session).
            takeovers.start_due(&storage, &config);
        }
        load_if_due();
        moves.start_due(&storage);
        while changes.next().await.is_some() {
            let image = storage.image();
            storage.apply_image(&image);
            if storage.id == 0 {
                crate::takeover::stop_if_wal_lost(&image, opened_wal_epoch);
                takeovers.start_due(&storage, &config);
            }
            load_if_due();
            moves.start_due(&storage);
        }
    })
}

/// The WAL settings of shard `id` of `shards`, opened at fencing epoch `epoch` (the quorum's
/// count of this broker's registrations and takeovers; 0 for a single node).
pub fn wal_config(config: &BrokerConfig, id: usize, shards: usize, epoch: u64) -> WalConfig {
    let path = config.wal_path_for(id);
    // The size a new segmented WAL is made with; one that exists keeps its own.
    let segment_bytes = path
        .extension()
        .is_some_and(|e| e == crate::config::WAL_SEGMENTS_EXTENSION)
        .then(|| config.wal_segment_bytes(shards))
        .flatten();
    WalConfig {
        path,
        capacity_bytes: config.wal_bytes_per_shard,
        inflight_writes_max: config.wal_inflight_writes_max,
        epoch,
        node_id: config.node_id.max(0) as u32,
        segment_bytes,
        ..WalConfig::default()
    }
}

/// Hands group-log entries to the shards coordinating their groups (the shard count may have
/// changed since they were written) and waits until each has them. Needs the mesh served.
pub async fn restore_groups(shard: &Shard, entries: Vec<GroupLogEntry>) {
    let mut by_shard: Vec<Vec<GroupLogEntry>> = (0..shard.count).map(|_| Vec::new()).collect();
    for entry in entries {
        by_shard[shard.coordinator_shard(entry.group())].push(entry);
    }
    for (owner, entries) in by_shard.into_iter().enumerate() {
        if entries.is_empty() {
            continue;
        }
        let answer = shard
            .mesh
            .ask(owner, |reply| ShardRequest::Group {
                call: GroupCall::Restore(entries),
                reply,
            })
            .await;
        let _ = answer.await;
    }
}
