//! One transactional id's durable state and Kafka's transaction state machine
//! (`TransactionMetadata`, transaction version 1). Every transition is computed here, as a new
//! [`TxnMetadata`], without side effects: the coordinator persists it, then applies it.
//!
//! ```text
//!  Empty ──AddPartitions──▶ Ongoing ──EndTxn──▶ PrepareCommit ──markers written──▶ CompleteCommit
//!    ▲                        │  ▲                PrepareAbort  ──markers written──▶ CompleteAbort
//!    └──InitProducerId────────┼──┴──AddPartitions── Complete*                          │
//!       (epoch + 1)           └──InitProducerId / timeout: PrepareAbort at epoch + 1 ──┘
//! ```
//!
//! Kafka's `PrepareEpochFence` and `Dead` are not needed: a fence goes straight to
//! `PrepareAbort` with the bumped epoch in one step, and an expired id is simply removed.

use std::collections::BTreeSet;

use sluice_net::ErrorCode;

/// No producer id yet.
pub const NO_PRODUCER_ID: i64 = -1;
/// No producer epoch yet (a new transactional id starts here; the first InitProducerId gives 0).
pub const NO_PRODUCER_EPOCH: i16 = -1;

/// The states of a transactional id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnState {
    /// No transaction open.
    Empty,
    /// A transaction is open: partitions or groups were added.
    Ongoing,
    /// EndTxn(commit) is durable; markers are being written.
    PrepareCommit,
    /// EndTxn(abort), a fence or a timeout is durable; markers are being written.
    PrepareAbort,
    /// Every commit marker is written.
    CompleteCommit,
    /// Every abort marker is written.
    CompleteAbort,
}

/// Every state name Kafka knows (ListTransactions filters on them), ours and the two we never
/// enter.
pub const STATE_NAMES: &[&str] = &[
    "Empty",
    "Ongoing",
    "PrepareCommit",
    "PrepareAbort",
    "CompleteCommit",
    "CompleteAbort",
    "Dead",
    "PrepareEpochFence",
];

impl TxnState {
    /// The name Kafka's tools show.
    pub fn name(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
        }
    }

    /// The state's code in the transaction log.
    pub fn code(self) -> u8 {
        match self {
            TxnState::Empty => 0,
            TxnState::Ongoing => 1,
            TxnState::PrepareCommit => 2,
            TxnState::PrepareAbort => 3,
            TxnState::CompleteCommit => 4,
            TxnState::CompleteAbort => 5,
        }
    }

    /// The state with log code `code`.
    pub fn from_code(code: u8) -> Option<TxnState> {
        Some(match code {
            0 => TxnState::Empty,
            1 => TxnState::Ongoing,
            2 => TxnState::PrepareCommit,
            3 => TxnState::PrepareAbort,
            4 => TxnState::CompleteCommit,
            5 => TxnState::CompleteAbort,
            _ => return None,
        })
    }

    /// Markers are being written: the transaction is decided but not complete.
    pub fn is_prepared(self) -> bool {
        matches!(self, TxnState::PrepareCommit | TxnState::PrepareAbort)
    }

    /// No transaction is open or being completed.
    pub fn is_idle(self) -> bool {
        matches!(
            self,
            TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort
        )
    }
}

/// The durable state of one transactional id (one transaction log record).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnMetadata {
    /// Current producer id.
    pub producer_id: i64,
    /// The producer id before the last rotation (epoch exhaustion), for retried InitProducerId.
    pub last_producer_id: i64,
    /// Current producer epoch.
    pub producer_epoch: i16,
    /// The epoch before the last InitProducerId bump, for retried InitProducerId (KIP-360).
    pub last_producer_epoch: i16,
    /// transaction.timeout.ms of the producer.
    pub timeout_ms: i32,
    /// Where the state machine is.
    pub state: TxnState,
    /// (topic, partition) pairs in the open transaction.
    pub partitions: BTreeSet<(String, i32)>,
    /// Consumer groups whose offsets the open transaction commits (AddOffsetsToTxn).
    pub groups: BTreeSet<String>,
    /// When the open transaction began (first partition or group added), or -1.
    pub start_timestamp_ms: i64,
    /// When this state was last changed, for transactional id expiration.
    pub last_update_timestamp_ms: i64,
}

/// What InitProducerId does to a transactional id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitTransition {
    /// Hand out this state's producer id and epoch.
    Initialize(TxnMetadata),
    /// A transaction is open: abort it at a bumped epoch (fencing its producer), and let the
    /// client retry (CONCURRENT_TRANSACTIONS) until the abort is complete.
    FenceOngoing(TxnMetadata),
}

/// What EndTxn does to a transactional id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndTransition {
    /// Persist this prepared state, then write the markers.
    Prepare(TxnMetadata),
    /// The same EndTxn already completed (a retry): answer success.
    AlreadyComplete,
}

impl TxnMetadata {
    /// A transactional id seen for the first time, with its freshly allocated producer id.
    pub fn new(producer_id: i64, timeout_ms: i32, now_ms: i64) -> TxnMetadata {
        TxnMetadata {
            producer_id,
            last_producer_id: NO_PRODUCER_ID,
            producer_epoch: NO_PRODUCER_EPOCH,
            last_producer_epoch: NO_PRODUCER_EPOCH,
            timeout_ms,
            state: TxnState::Empty,
            partitions: BTreeSet::new(),
            groups: BTreeSet::new(),
            start_timestamp_ms: -1,
            last_update_timestamp_ms: now_ms,
        }
    }

    /// The epoch cannot be bumped for a client any more: the next InitProducerId rotates the
    /// producer id (one epoch is always kept for the coordinator to fence with).
    pub fn epoch_exhausted(&self) -> bool {
        epoch_exhausted(self.producer_epoch)
    }

    /// InitProducerId (Kafka's `prepareInitProducerIdTransit`). `expected` is the producer's
    /// current (id, epoch) when it re-initializes (KIP-360); `fresh_producer_id` is a new id,
    /// needed only when [`Self::epoch_exhausted`].
    pub fn init_producer_id(
        &self,
        pending: bool,
        expected: Option<(i64, i16)>,
        timeout_ms: i32,
        fresh_producer_id: Option<i64>,
        now_ms: i64,
    ) -> Result<InitTransition, ErrorCode> {
        if pending {
            return Err(ErrorCode::ConcurrentTransactions);
        }
        if let Some(expected) = expected
            && !self.is_valid_producer_id(expected)
        {
            return Err(ErrorCode::ProducerFenced);
        }
        match self.state {
            TxnState::PrepareCommit | TxnState::PrepareAbort => {
                Err(ErrorCode::ConcurrentTransactions)
            }
            TxnState::Ongoing => Ok(InitTransition::FenceOngoing(self.fence(now_ms))),
            TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort => {
                let rotate = self.epoch_exhausted()
                    && expected.is_none_or(|(_, epoch)| epoch == self.producer_epoch);
                let (producer_id, last_producer_id, epoch, last_epoch) = if rotate {
                    let fresh = fresh_producer_id.ok_or(ErrorCode::UnknownServerError)?;
                    let last_epoch = if expected.is_some() {
                        self.producer_epoch
                    } else {
                        NO_PRODUCER_EPOCH
                    };
                    (fresh, self.producer_id, 0, last_epoch)
                } else {
                    let (epoch, last_epoch) = self.bumped_epochs(expected.map(|(_, e)| e))?;
                    (self.producer_id, self.last_producer_id, epoch, last_epoch)
                };
                Ok(InitTransition::Initialize(TxnMetadata {
                    producer_id,
                    last_producer_id,
                    producer_epoch: epoch,
                    last_producer_epoch: last_epoch,
                    timeout_ms,
                    state: TxnState::Empty,
                    partitions: BTreeSet::new(),
                    groups: BTreeSet::new(),
                    start_timestamp_ms: -1,
                    last_update_timestamp_ms: now_ms,
                }))
            }
        }
    }

    /// AddPartitionsToTxn / AddOffsetsToTxn (Kafka's `prepareAddPartitions`): `None` when
    /// everything is in the transaction already.
    pub fn add(
        &self,
        pending: bool,
        producer_id: i64,
        producer_epoch: i16,
        partitions: &[(String, i32)],
        group: Option<&str>,
        now_ms: i64,
    ) -> Result<Option<TxnMetadata>, ErrorCode> {
        self.check_producer(producer_id, producer_epoch)?;
        if pending || self.state.is_prepared() {
            return Err(ErrorCode::ConcurrentTransactions);
        }
        let present = partitions.iter().all(|p| self.partitions.contains(p))
            && group.is_none_or(|g| self.groups.contains(g));
        if self.state == TxnState::Ongoing && present {
            return Ok(None);
        }
        let mut next = self.clone();
        if self.state.is_idle() {
            next.start_timestamp_ms = now_ms;
        }
        next.state = TxnState::Ongoing;
        next.partitions.extend(partitions.iter().cloned());
        next.groups.extend(group.map(str::to_string));
        next.last_update_timestamp_ms = now_ms;
        Ok(Some(next))
    }

    /// Checks a producer writing in the open transaction (TxnOffsetCommit, AddPartitionsToTxn
    /// with verify_only): the current producer, a transaction open.
    pub fn check_ongoing(&self, producer_id: i64, producer_epoch: i16) -> Result<(), ErrorCode> {
        self.check_producer(producer_id, producer_epoch)?;
        if self.state == TxnState::Ongoing {
            Ok(())
        } else {
            Err(ErrorCode::InvalidTxnState)
        }
    }

    /// EndTxn from the producer (Kafka's `endTransaction` with `isFromClient`).
    pub fn end(
        &self,
        pending: bool,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
        now_ms: i64,
    ) -> Result<EndTransition, ErrorCode> {
        self.check_producer(producer_id, producer_epoch)?;
        if pending {
            return Err(ErrorCode::ConcurrentTransactions);
        }
        match (self.state, commit) {
            (TxnState::Ongoing, _) => {
                let mut next = self.clone();
                next.state = if commit {
                    TxnState::PrepareCommit
                } else {
                    TxnState::PrepareAbort
                };
                next.last_update_timestamp_ms = now_ms;
                Ok(EndTransition::Prepare(next))
            }
            (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false) => {
                Ok(EndTransition::AlreadyComplete)
            }
            (TxnState::PrepareCommit, true) | (TxnState::PrepareAbort, false) => {
                Err(ErrorCode::ConcurrentTransactions)
            }
            _ => Err(ErrorCode::InvalidTxnState),
        }
    }

    /// Aborts the open transaction at a bumped epoch, so the markers fence the producer that
    /// opened it (Kafka's `prepareFenceProducerEpoch` followed by the abort): used when a new
    /// producer initializes the id and when the transaction times out.
    pub fn fence(&self, now_ms: i64) -> TxnMetadata {
        let mut next = self.clone();
        // An epoch of i16::MAX cannot be reached by a client (see `epoch_exhausted`), so the
        // bump always fits; saturate rather than wrap if it ever did not.
        next.producer_epoch = self.producer_epoch.saturating_add(1);
        next.last_producer_epoch = NO_PRODUCER_EPOCH;
        next.state = TxnState::PrepareAbort;
        next.last_update_timestamp_ms = now_ms;
        next
    }

    /// The state once every marker is written (Kafka's `prepareComplete`).
    pub fn complete(&self, now_ms: i64) -> TxnMetadata {
        let mut next = self.clone();
        next.state = if self.state == TxnState::PrepareCommit {
            TxnState::CompleteCommit
        } else {
            TxnState::CompleteAbort
        };
        next.partitions.clear();
        next.groups.clear();
        next.last_update_timestamp_ms = now_ms;
        next
    }

    /// The open transaction outlived its timeout (Kafka's `timedOutTransactions`).
    pub fn timed_out(&self, now_ms: i64) -> bool {
        self.state == TxnState::Ongoing
            && self
                .start_timestamp_ms
                .saturating_add(i64::from(self.timeout_ms))
                <= now_ms
    }

    fn check_producer(&self, producer_id: i64, producer_epoch: i16) -> Result<(), ErrorCode> {
        // An id whose first InitProducerId did not persist has no producer yet.
        if producer_id != self.producer_id || self.producer_epoch == NO_PRODUCER_EPOCH {
            Err(ErrorCode::InvalidProducerIdMapping)
        } else if producer_epoch != self.producer_epoch {
            Err(ErrorCode::ProducerFenced)
        } else {
            Ok(())
        }
    }

    /// Kafka's `isValidProducerId`: a freshly created id, the current producer id, or a retry
    /// from the previous producer id after a rotation.
    fn is_valid_producer_id(&self, (producer_id, epoch): (i64, i16)) -> bool {
        self.producer_epoch == NO_PRODUCER_EPOCH
            || producer_id == self.producer_id
            || (producer_id == self.last_producer_id && epoch_exhausted(epoch))
    }

    /// Kafka's `prepareIncrementProducerEpoch`: (new epoch, last epoch).
    fn bumped_epochs(&self, expected_epoch: Option<i16>) -> Result<(i16, i16), ErrorCode> {
        // An exhausted epoch rotates the producer id instead of coming here, so the bump fits;
        // refuse rather than wrap if it ever did not.
        let bumped = || {
            self.producer_epoch
                .checked_add(1)
                .ok_or(ErrorCode::ProducerFenced)
        };
        match expected_epoch {
            None => Ok((bumped()?, NO_PRODUCER_EPOCH)),
            Some(expected)
                if self.producer_epoch == NO_PRODUCER_EPOCH || expected == self.producer_epoch =>
            {
                Ok((bumped()?, self.producer_epoch))
            }
            // A retry of an InitProducerId that succeeded: the same answer again.
            Some(expected) if expected == self.last_producer_epoch => {
                Ok((self.producer_epoch, self.last_producer_epoch))
            }
            Some(_) => Err(ErrorCode::ProducerFenced),
        }
    }
}

fn epoch_exhausted(epoch: i16) -> bool {
    epoch >= i16::MAX - 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn initialized() -> TxnMetadata {
        match TxnMetadata::new(7, 60_000, 0).init_producer_id(false, None, 60_000, None, 1) {
            Ok(InitTransition::Initialize(meta)) => meta,
            other => panic!("unexpected {other:?}"),
        }
    }

    fn partitions() -> Vec<(String, i32)> {
        vec![("t".to_string(), 0), ("t".to_string(), 1)]
    }

    #[test]
    fn a_transaction_goes_from_empty_through_ongoing_and_prepare_to_complete() {
        let meta = initialized();
        assert_eq!((meta.producer_id, meta.producer_epoch), (7, 0));
        let ongoing = meta
            .add(false, 7, 0, &partitions(), None, 5)
            .unwrap()
            .unwrap();
        assert_eq!(ongoing.state, TxnState::Ongoing);
        assert_eq!(ongoing.start_timestamp_ms, 5);
        assert_eq!(ongoing.add(false, 7, 0, &partitions(), None, 6), Ok(None));
        let with_group = ongoing
            .add(false, 7, 0, &[], Some("g"), 6)
            .unwrap()
            .unwrap();
        assert_eq!(with_group.start_timestamp_ms, 5);
        let EndTransition::Prepare(prepared) = with_group.end(false, 7, 0, true, 7).unwrap() else {
            panic!("an open transaction prepares");
        };
        assert_eq!(prepared.state, TxnState::PrepareCommit);
        assert_eq!(
            prepared.end(false, 7, 0, true, 8),
            Err(ErrorCode::ConcurrentTransactions)
        );
        assert_eq!(
            prepared.add(false, 7, 0, &partitions(), None, 8),
            Err(ErrorCode::ConcurrentTransactions)
        );
        let complete = prepared.complete(9);
        assert_eq!(complete.state, TxnState::CompleteCommit);
        assert!(complete.partitions.is_empty() && complete.groups.is_empty());
        assert_eq!(
            complete.end(false, 7, 0, true, 10),
            Ok(EndTransition::AlreadyComplete)
        );
        assert_eq!(
            complete.end(false, 7, 0, false, 10),
            Err(ErrorCode::InvalidTxnState)
        );
    }

    #[test]
    fn a_second_producer_fences_the_open_transaction_then_gets_a_higher_epoch() {
        let ongoing = initialized()
            .add(false, 7, 0, &partitions(), None, 5)
            .unwrap()
            .unwrap();
        let InitTransition::FenceOngoing(fenced) = ongoing
            .init_producer_id(false, None, 60_000, None, 6)
            .unwrap()
        else {
            panic!("an open transaction is fenced");
        };
        assert_eq!(
            (fenced.state, fenced.producer_epoch),
            (TxnState::PrepareAbort, 1)
        );
        assert_eq!(
            fenced.init_producer_id(false, None, 60_000, None, 7),
            Err(ErrorCode::ConcurrentTransactions)
        );
        // The zombie's requests are refused.
        assert_eq!(
            fenced.end(false, 7, 0, true, 7),
            Err(ErrorCode::ProducerFenced)
        );
        let InitTransition::Initialize(next) = fenced
            .complete(8)
            .init_producer_id(false, None, 60_000, None, 9)
            .unwrap()
        else {
            panic!("a complete transaction initializes");
        };
        assert_eq!((next.producer_epoch, next.state), (2, TxnState::Empty));
        assert_eq!(
            next.add(false, 7, 0, &partitions(), None, 10),
            Err(ErrorCode::ProducerFenced)
        );
        assert_eq!(
            next.add(false, 8, 2, &partitions(), None, 10),
            Err(ErrorCode::InvalidProducerIdMapping)
        );
    }

    #[test]
    fn reinitializing_with_the_current_epoch_bumps_and_a_retry_gets_the_same_answer() {
        let meta = initialized();
        let Ok(InitTransition::Initialize(bumped)) =
            meta.init_producer_id(false, Some((7, 0)), 60_000, None, 2)
        else {
            panic!("the current producer re-initializes");
        };
        assert_eq!((bumped.producer_epoch, bumped.last_producer_epoch), (1, 0));
        let Ok(InitTransition::Initialize(retried)) =
            bumped.init_producer_id(false, Some((7, 0)), 60_000, None, 3)
        else {
            panic!("a retry is answered");
        };
        assert_eq!(retried.producer_epoch, 1);
        assert_eq!(
            retried.init_producer_id(false, Some((7, 5)), 60_000, None, 3),
            Err(ErrorCode::ProducerFenced)
        );
        assert_eq!(
            retried.init_producer_id(false, Some((99, 1)), 60_000, None, 3),
            Err(ErrorCode::ProducerFenced)
        );
    }

    #[test]
    fn an_exhausted_epoch_rotates_the_producer_id() {
        let mut meta = initialized();
        meta.producer_epoch = i16::MAX - 1;
        assert!(meta.epoch_exhausted());
        let Ok(InitTransition::Initialize(rotated)) =
            meta.init_producer_id(false, None, 60_000, Some(8), 2)
        else {
            panic!("an exhausted epoch rotates");
        };
        assert_eq!(
            (
                rotated.producer_id,
                rotated.producer_epoch,
                rotated.last_producer_id
            ),
            (8, 0, 7)
        );
    }

    #[test]
    fn an_id_never_initialized_has_no_producer() {
        let created = TxnMetadata::new(7, 60_000, 0);
        assert_eq!(
            created.add(false, 7, -1, &partitions(), None, 1),
            Err(ErrorCode::InvalidProducerIdMapping)
        );
    }

    #[test]
    fn only_an_open_transaction_times_out() {
        let ongoing = initialized()
            .add(false, 7, 0, &partitions(), None, 1_000)
            .unwrap()
            .unwrap();
        assert!(!ongoing.timed_out(60_999));
        assert!(ongoing.timed_out(61_000));
        assert!(!ongoing.fence(61_000).timed_out(1_000_000));
    }
}
