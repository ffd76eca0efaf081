//! The transaction coordinator of one shard: the transactional ids of the coordinator
//! partitions it serves (`coordinator_partitions.rs`), their state machine (`state.rs`), made
//! durable in their partition's transaction log (`log.rs`, through the shard's WAL) before any
//! answer, and the offsets their transactions stage for consumer groups.
//!
//! A transition is computed while the id is borrowed, marked pending (other requests for the id
//! get CONCURRENT_TRANSACTIONS meanwhile, as in Kafka), persisted, then applied.

use std::cell::RefCell;
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::time::Duration;

use sluice_net::ErrorCode;
use sluice_net::messages::describe_transactions_response::{TopicData, TransactionState};
use sluice_net::messages::list_transactions_response::TransactionState as ListedTransaction;

use super::log::{StagedOffset, TxnLogEntry};
use super::state::{EndTransition, InitTransition, TxnMetadata};
use super::unstable::UnstableOffsets;
use crate::coordinator_partitions::{CoordinatorLogs, CoordinatorPlacement};
use crate::storage::shard_wal::ShardWal;

use crate::clock::now_ms;
use crate::group::log::CommittedOffset;
use crate::producer_ids::ProducerIds;

/// Kafka's transactional.id.expiration.ms default: an id idle this long is forgotten.
pub const TRANSACTIONAL_ID_EXPIRATION: Duration = Duration::from_secs(7 * 24 * 3600);

/// Offsets staged per group, then per (topic, partition).
pub type StagedOffsets = BTreeMap<String, BTreeMap<(String, i32), CommittedOffset>>;

/// Partitions of a group with offsets staged by one producer's transaction.
pub type StagedPartitions = (String, i64, Vec<(String, i32)>);

/// What a decided transaction must still do: write its markers, commit its staged offsets.
#[derive(Debug, Clone)]
pub struct Decided {
    /// The prepared state (PrepareCommit or PrepareAbort).
    pub metadata: TxnMetadata,
    /// The offsets to commit with it, by group.
    pub staged: StagedOffsets,
}

/// One transactional id on its coordinator.
#[derive(Debug)]
struct TxnEntry {
    metadata: TxnMetadata,
    staged: StagedOffsets,
    /// A transition is being persisted.
    pending: bool,
}

/// The transactional ids coordinated by one shard.
pub struct TxnCoordinator {
    /// The offsets transactions staged for the groups this shard coordinates.
    pub unstable: UnstableOffsets,
    txns: RefCell<HashMap<String, TxnEntry>>,
    /// The transaction logs of the coordinator partitions this shard serves.
    logs: CoordinatorLogs,
    replayed: RefCell<Vec<TxnLogEntry>>,
    /// Starts writing a decided transaction's markers (installed by `txn::serve::attach`: the
    /// markers go to other shards, which this coordinator does not know).
    on_decided: RefCell<Option<DecidedHook>>,
}

/// What runs when a transaction is decided: given its transactional id.
pub type DecidedHook = Box<dyn Fn(&str)>;

impl TxnCoordinator {
    /// A coordinator persisting through `wal` into its partitions' transaction logs.
    pub fn new(wal: Rc<ShardWal>, placement: CoordinatorPlacement) -> TxnCoordinator {
        TxnCoordinator {
            unstable: UnstableOffsets::default(),
            txns: RefCell::new(HashMap::new()),
            logs: CoordinatorLogs::new(
                wal,
                placement,
                crate::internal_stream::txn_log_stream,
                "transaction log",
            ),
            replayed: RefCell::new(Vec::new()),
            on_decided: RefCell::new(None),
        }
    }

    /// Installs what runs when a transaction is decided (its markers must be written).
    pub fn set_on_decided(&self, hook: DecidedHook) {
        *self.on_decided.borrow_mut() = Some(hook);
    }

    /// A transaction was decided: its markers must be written. Before the hook is installed
    /// (recovery), decided transactions are found again by [`TxnCoordinator::prepared`].
    fn notify_decided(&self, transactional_id: &str) {
        if let Some(hook) = self.on_decided.borrow().as_ref() {
            hook(transactional_id);
        }
    }

    /// Keeps the entries of a record (unframed) of transaction log `stream_id` found in
    /// objects or in this shard's WAL, until `txn::serve::restore` hands them to their
    /// coordinators; `next_sequence` is the record's offset + 1.
    pub fn replay(&self, stream_id: u64, next_sequence: u64, payload: bytes::Bytes) {
        self.logs.resume(stream_id, next_sequence);
        match super::log::decode(payload) {
            Ok(entries) => self.replayed.borrow_mut().extend(entries),
            Err(error) => {
                tracing::error!(%error, "a transaction-log record is malformed; skipped")
            }
        }
    }

    /// The entries replayed from this shard's WAL, in WAL order.
    pub fn take_replayed(&self) -> Vec<TxnLogEntry> {
        std::mem::take(&mut *self.replayed.borrow_mut())
    }

    /// Applies the entries one shard's WAL held for ids this shard coordinates, and returns
    /// the partitions their transactions staged offsets for (their groups must learn they are
    /// unstable). When the shard count changed, an id's records may sit in two WALs: the state
    /// updated last wins.
    pub fn restore(&self, entries: Vec<TxnLogEntry>) -> Vec<StagedPartitions> {
        let mut replayed: HashMap<String, Option<TxnEntry>> = HashMap::new();
        for entry in entries {
            match entry {
                TxnLogEntry::Metadata {
                    transactional_id,
                    metadata,
                } => {
                    let slot = replayed.entry(transactional_id).or_insert(None);
                    let mut staged = slot.take().map(|e| e.staged).unwrap_or_default();
                    if metadata.state.is_idle() {
                        staged.clear();
                    }
                    *slot = Some(TxnEntry {
                        metadata,
                        staged,
                        pending: false,
                    });
                }
                TxnLogEntry::Offsets {
                    transactional_id,
                    producer_id,
                    producer_epoch,
                    group,
                    offsets,
                } => {
                    if let Some(Some(entry)) = replayed.get_mut(&transactional_id)
                        && entry.metadata.producer_id == producer_id
                        && entry.metadata.producer_epoch == producer_epoch
                    {
                        stage(&mut entry.staged, group, offsets);
                    }
                }
                TxnLogEntry::Expired { transactional_id } => {
                    replayed.insert(transactional_id, None);
                }
            }
        }
        let mut txns = self.txns.borrow_mut();
        let mut staged = Vec::new();
        for (id, entry) in replayed {
            let Some(entry) = entry else { continue };
            let newer = txns.get(&id).is_none_or(|current| {
                current.metadata.last_update_timestamp_ms <= entry.metadata.last_update_timestamp_ms
            });
            if newer {
                staged.extend(staged_partitions(&entry));
                txns.insert(id, entry);
            }
        }
        staged
    }

    /// InitProducerId with a transactional id: a new epoch (or producer id) for the producer,
    /// fencing any earlier one; an open transaction is aborted first (CONCURRENT_TRANSACTIONS
    /// until the abort is complete, so the client retries).
    pub async fn init_producer_id(
        &self,
        producer_ids: &ProducerIds,
        max_timeout_ms: i32,
        transactional_id: &str,
        timeout_ms: i32,
        expected: Option<(i64, i16)>,
    ) -> Result<(i64, i16), ErrorCode> {
        if timeout_ms <= 0 || timeout_ms > max_timeout_ms {
            return Err(ErrorCode::InvalidTransactionTimeout);
        }
        let needs_producer_id = self
            .txns
            .borrow()
            .get(transactional_id)
            .is_none_or(|e| e.metadata.epoch_exhausted());
        let fresh = if needs_producer_id {
            Some(producer_ids.next().await?)
        } else {
            None
        };
        let now = now_ms();
        let transition = {
            let mut txns = self.txns.borrow_mut();
            let entry = match txns.entry(transactional_id.to_string()) {
                Entry::Occupied(entry) => entry.into_mut(),
                Entry::Vacant(vacant) => {
                    // A missing id was given a producer id above; it can only be missing
                    // without one if it expired meanwhile: the client retries.
                    let producer_id = fresh.ok_or(ErrorCode::ConcurrentTransactions)?;
                    vacant.insert(TxnEntry {
                        metadata: TxnMetadata::new(producer_id, timeout_ms, now),
                        staged: StagedOffsets::new(),
                        pending: false,
                    })
                }
            };
            let transition =
                entry
                    .metadata
                    .init_producer_id(entry.pending, expected, timeout_ms, fresh, now)?;
            entry.pending = true;
            transition
        };
        match transition {
            InitTransition::Initialize(next) => {
                let answer = (next.producer_id, next.producer_epoch);
                self.apply(transactional_id, next).await?;
                tracing::info!(
                    transactional_id,
                    producer_id = answer.0,
                    epoch = answer.1,
                    "transactional producer initialized"
                );
                Ok(answer)
            }
            InitTransition::FenceOngoing(fenced) => {
                tracing::info!(
                    transactional_id,
                    epoch = fenced.producer_epoch,
                    "a new producer fences the open transaction: aborting it"
                );
                self.apply(transactional_id, fenced).await?;
                self.notify_decided(transactional_id);
                Err(ErrorCode::ConcurrentTransactions)
            }
        }
    }

    /// AddPartitionsToTxn and AddOffsetsToTxn: the partitions (and group) join the open
    /// transaction, opening one if needed.
    pub async fn add(
        &self,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        partitions: &[(String, i32)],
        group: Option<&str>,
    ) -> ErrorCode {
        let next = {
            let mut txns = self.txns.borrow_mut();
            let Some(entry) = txns.get_mut(transactional_id) else {
                return ErrorCode::InvalidProducerIdMapping;
            };
            match entry.metadata.add(
                entry.pending,
                producer_id,
                producer_epoch,
                partitions,
                group,
                now_ms(),
            ) {
                Err(code) => return code,
                Ok(None) => return ErrorCode::None,
                Ok(Some(next)) => {
                    entry.pending = true;
                    next
                }
            }
        };
        match self.apply(transactional_id, next).await {
            Ok(()) => ErrorCode::None,
            Err(code) => code,
        }
    }

    /// AddPartitionsToTxn with verify_only (v4+): are the partitions in the open transaction
    /// of this producer? One code per partition.
    pub fn verify(
        &self,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        partitions: &[(String, i32)],
    ) -> Vec<ErrorCode> {
        let txns = self.txns.borrow();
        let verdict = match txns.get(transactional_id) {
            None => Err(ErrorCode::InvalidProducerIdMapping),
            Some(entry) => entry
                .metadata
                .check_ongoing(producer_id, producer_epoch)
                .map(|()| &entry.metadata),
        };
        partitions
            .iter()
            .map(|p| match verdict {
                Err(code) => code,
                Ok(metadata) if metadata.partitions.contains(p) => ErrorCode::None,
                Ok(_) => ErrorCode::InvalidTxnState,
            })
            .collect()
    }

    /// TxnOffsetCommit: stages `offsets` for `group` in the open transaction, which must have
    /// added the group (AddOffsetsToTxn); they reach the group only if it commits.
    pub async fn stage_offsets(
        &self,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        group: &str,
        offsets: Vec<StagedOffset>,
    ) -> ErrorCode {
        {
            let mut txns = self.txns.borrow_mut();
            let Some(entry) = txns.get_mut(transactional_id) else {
                return ErrorCode::InvalidProducerIdMapping;
            };
            if let Err(code) = entry.metadata.check_ongoing(producer_id, producer_epoch) {
                return code;
            }
            if entry.pending {
                return ErrorCode::ConcurrentTransactions;
            }
            if !entry.metadata.groups.contains(group) {
                return ErrorCode::InvalidTxnState;
            }
            entry.pending = true;
        }
        let record = TxnLogEntry::Offsets {
            transactional_id: transactional_id.to_string(),
            producer_id,
            producer_epoch,
            group: group.to_string(),
            offsets: offsets.clone(),
        };
        let persisted = self.persist(&[record]).await;
        let mut txns = self.txns.borrow_mut();
        if let Some(entry) = txns.get_mut(transactional_id) {
            entry.pending = false;
            if persisted.is_ok() {
                stage(&mut entry.staged, group.to_string(), offsets);
            }
        }
        match persisted {
            Ok(()) => ErrorCode::None,
            Err(code) => code,
        }
    }

    /// EndTxn: once the decision is durable the client is answered and the markers are
    /// written in the background (Kafka answers at the same point).
    pub async fn end(
        &self,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
    ) -> ErrorCode {
        let next = {
            let mut txns = self.txns.borrow_mut();
            let Some(entry) = txns.get_mut(transactional_id) else {
                return ErrorCode::InvalidProducerIdMapping;
            };
            match entry
                .metadata
                .end(entry.pending, producer_id, producer_epoch, commit, now_ms())
            {
                Err(code) => return code,
                Ok(EndTransition::AlreadyComplete) => return ErrorCode::None,
                Ok(EndTransition::Prepare(next)) => {
                    entry.pending = true;
                    next
                }
            }
        };
        if let Err(code) = self.apply(transactional_id, next).await {
            return code;
        }
        self.notify_decided(transactional_id);
        ErrorCode::None
    }

    /// What is left to do for a decided transaction (None once it is complete).
    pub fn decided(&self, transactional_id: &str) -> Option<Decided> {
        let txns = self.txns.borrow();
        let entry = txns.get(transactional_id)?;
        entry.metadata.state.is_prepared().then(|| Decided {
            metadata: entry.metadata.clone(),
            staged: entry.staged.clone(),
        })
    }

    /// Every marker of the decided transaction is written: it becomes complete (its staged
    /// offsets go with the transition). Nothing to do if it is complete already.
    pub async fn complete(&self, transactional_id: &str) -> Result<(), ErrorCode> {
        let next = {
            let mut txns = self.txns.borrow_mut();
            let Some(entry) = txns.get_mut(transactional_id) else {
                return Ok(());
            };
            if !entry.metadata.state.is_prepared() {
                return Ok(());
            }
            if entry.pending {
                return Err(ErrorCode::ConcurrentTransactions);
            }
            entry.pending = true;
            entry.metadata.complete(now_ms())
        };
        self.apply(transactional_id, next).await
    }

    /// The transactional ids whose markers are still to be written (after a restart).
    pub fn prepared(&self) -> Vec<String> {
        self.txns
            .borrow()
            .iter()
            .filter(|(_, e)| e.metadata.state.is_prepared())
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Runs the timers: open transactions past their timeout are aborted at a bumped epoch
    /// (fencing their producer, as Kafka does); ids idle past their expiration are forgotten.
    pub async fn sweep(&self) {
        let now = now_ms();
        let expiration_ms = TRANSACTIONAL_ID_EXPIRATION.as_millis() as i64;
        let mut timed_out = Vec::new();
        let mut expired = Vec::new();
        {
            let mut txns = self.txns.borrow_mut();
            for (id, entry) in txns.iter_mut() {
                if entry.pending {
                    continue;
                }
                if entry.metadata.timed_out(now) {
                    entry.pending = true;
                    timed_out.push((id.clone(), entry.metadata.fence(now)));
                } else if entry.metadata.state.is_idle()
                    && entry
                        .metadata
                        .last_update_timestamp_ms
                        .saturating_add(expiration_ms)
                        <= now
                {
                    expired.push(id.clone());
                }
            }
            for id in &expired {
                txns.remove(id);
            }
        }
        if !expired.is_empty() {
            let records: Vec<TxnLogEntry> = expired
                .into_iter()
                .map(|transactional_id| TxnLogEntry::Expired { transactional_id })
                .collect();
            if let Err(code) = self.persist(&records).await {
                tracing::warn!(?code, "expired transactional ids not persisted");
            }
        }
        for (id, fenced) in timed_out {
            tracing::info!(transactional_id = %id, "transaction timed out: aborting it");
            match self.apply(&id, fenced).await {
                Ok(()) => self.notify_decided(&id),
                Err(code) => {
                    tracing::warn!(?code, transactional_id = %id, "timed-out transaction not aborted; retrying")
                }
            }
        }
    }

    /// DescribeTransactions of one id.
    pub fn describe(&self, transactional_id: &str) -> TransactionState {
        let txns = self.txns.borrow();
        let Some(entry) = txns.get(transactional_id) else {
            return TransactionState {
                error_code: ErrorCode::TransactionalIdNotFound.code(),
                transactional_id: transactional_id.to_string(),
                ..Default::default()
            };
        };
        let m = &entry.metadata;
        let mut topics: Vec<TopicData> = Vec::new();
        for (topic, partition) in &m.partitions {
            match topics.last_mut() {
                Some(t) if &t.topic == topic => t.partitions.push(*partition),
                _ => topics.push(TopicData {
                    topic: topic.clone(),
                    partitions: vec![*partition],
                }),
            }
        }
        TransactionState {
            error_code: 0,
            transactional_id: transactional_id.to_string(),
            transaction_state: m.state.name().to_string(),
            transaction_timeout_ms: m.timeout_ms,
            transaction_start_time_ms: m.start_timestamp_ms,
            producer_id: m.producer_id,
            producer_epoch: m.producer_epoch,
            topics,
        }
    }

    /// ListTransactions of this shard: ids in one of `states` (all when empty), with one of
    /// `producer_ids` (all when empty), open for at least `min_duration_ms` (when >= 0).
    pub fn list(
        &self,
        states: &[String],
        producer_ids: &[i64],
        min_duration_ms: i64,
    ) -> Vec<ListedTransaction> {
        let now = now_ms();
        self.txns
            .borrow()
            .iter()
            .filter(|(_, e)| {
                states.is_empty() || states.iter().any(|s| s == e.metadata.state.name())
            })
            .filter(|(_, e)| {
                producer_ids.is_empty() || producer_ids.contains(&e.metadata.producer_id)
            })
            .filter(|(_, e)| {
                min_duration_ms < 0
                    || (e.metadata.start_timestamp_ms >= 0
                        && now.saturating_sub(e.metadata.start_timestamp_ms) >= min_duration_ms)
            })
            .map(|(id, e)| ListedTransaction {
                transactional_id: id.clone(),
                producer_id: e.metadata.producer_id,
                transaction_state: e.metadata.state.name().to_string(),
            })
            .collect()
    }

    /// Persists `next` as the state of `transactional_id` (marked pending by the caller), then
    /// applies it; the pending mark is cleared either way.
    async fn apply(&self, transactional_id: &str, next: TxnMetadata) -> Result<(), ErrorCode> {
        let record = TxnLogEntry::Metadata {
            transactional_id: transactional_id.to_string(),
            metadata: next.clone(),
        };
        let persisted = self.persist(&[record]).await;
        let mut txns = self.txns.borrow_mut();
        if let Some(entry) = txns.get_mut(transactional_id) {
            entry.pending = false;
            if persisted.is_ok() {
                if next.state.is_idle() {
                    entry.staged.clear();
                }
                entry.metadata = next;
            }
        }
        persisted
    }

    /// Writes transaction-log entries through the WAL and waits until they are durable.
    async fn persist(&self, entries: &[TxnLogEntry]) -> Result<(), ErrorCode> {
        // One record per run of entries of one id: an id's entries go to its partition's log
        // (a sweep expires several ids at once).
        for run in entries.chunk_by(|a, b| a.transactional_id() == b.transactional_id()) {
            let payload = super::log::encode(run);
            self.logs
                .append(run[0].transactional_id(), &payload)
                .await?;
        }
        Ok(())
    }

    /// The transaction logs of this shard's coordinator partitions.
    pub fn logs(&self) -> &CoordinatorLogs {
        &self.logs
    }
}

/// The partitions `entry`'s transaction staged offsets for, by group.
fn staged_partitions(entry: &TxnEntry) -> Vec<StagedPartitions> {
    entry
        .staged
        .iter()
        .map(|(group, offsets)| {
            let partitions = offsets.keys().cloned().collect();
            (group.clone(), entry.metadata.producer_id, partitions)
        })
        .collect()
}

/// Merges offsets into a transaction's staged offsets (a later commit of a partition wins).
fn stage(staged: &mut StagedOffsets, group: String, offsets: Vec<StagedOffset>) {
    let by_partition = staged.entry(group).or_default();
    for (topic, partition, committed) in offsets {
        by_partition.insert((topic, partition), committed);
    }
}
