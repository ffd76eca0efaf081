//! Moving a partition to another broker (AlterPartitionReassignments, `sluice partition
//! move`). The data is in shared storage, so nothing is copied: the shard owning the
//! partition on the broker that holds it
//!
//! 1. seals it: batches and markers that have not had their turn are refused with
//!    NOT_LEADER_OR_FOLLOWER (the clients retry, and find the new leader once the move is
//!    committed);
//! 2. waits until every batch before the seal is durable, and asks its upload task for an
//!    upload of everything durable (the partition's tail, its producers' state, and the
//!    shard's transaction index, which the new leader reads the partition's history from);
//! 3. once the metadata shows the tail in objects, commits the move
//!    (`MetadataCommand::CompletePartitionMove`): the target leads it one leader epoch up,
//!    and opens it from objects (`storage/txn_history.rs`), while this broker drops it
//!    (`PartitionStore::apply_image`).
//!
//! A move cancelled before its commit unseals the partition. While the target is fenced
//! the move waits, unsealed.

use std::cell::RefCell;
use std::collections::HashSet;
use std::rc::Rc;
use std::time::{Duration, Instant};

use sluice_metadata::{MetadataCommand, MetadataImage};

use crate::storage::PartitionStore;
use crate::storage::partition::Partition;

/// How often a move looks at the metadata again while its upload runs or its target is
/// fenced: the image has no change notice a single task can await without the shard's.
const POLL_INTERVAL: Duration = Duration::from_millis(2);

/// Pause before a refused or failed commit is tried again.
const RETRY_DELAY: Duration = Duration::from_millis(100);

/// The moves this shard is carrying out, so that each (partition, target) starts once.
#[derive(Default)]
pub struct PartitionMoves {
    running: Rc<RefCell<HashSet<(u64, i32)>>>,
}

impl PartitionMoves {
    /// Starts the moves `storage`'s image asks of partitions this shard owns and this broker
    /// holds, that are not running yet.
    pub fn start_due(&self, storage: &Rc<PartitionStore>) {
        let image = storage.image();
        for (stream_id, target) in image.partition_moves() {
            if target == image.node_id
                || image.leadership(stream_id).replica != Some(image.node_id)
                || image
                    .stream(stream_id)
                    .is_none_or(|(_, part)| storage.owner_of(part) != storage.id)
                || !self.running.borrow_mut().insert((stream_id, target))
            {
                continue;
            }
            let storage = storage.clone();
            let running = self.running.clone();
            glommio::spawn_local(async move {
                carry_out(&storage, stream_id, target).await;
                running.borrow_mut().remove(&(stream_id, target));
            })
            .detach();
        }
    }
}

/// True while the move of `stream_id` to `target` is still asked of this broker.
fn still_asked(image: &MetadataImage, stream_id: u64, target: i32) -> bool {
    image.move_target(stream_id) == Some(target)
        && image.leadership(stream_id).replica == Some(image.node_id)
}

/// Seals, uploads and commits the move of `stream_id` to `target`; returns when it is
/// committed or no longer asked.
async fn carry_out(storage: &PartitionStore, stream_id: u64, target: i32) {
    let started = Instant::now();
    let mut sealed: Option<Rc<Partition>> = None;
    loop {
        let image = storage.image();
        if !still_asked(&image, stream_id, target) {
            break;
        }
        let target_live = image.live_brokers().any(|(id, _)| id == target);
        let partition = match (&sealed, target_live) {
            (_, false) => {
                // Served meanwhile: the move may wait long.
                if let Some(partition) = sealed.take() {
                    partition.unseal();
                }
                glommio::timer::sleep(RETRY_DELAY).await;
                continue;
            }
            (Some(partition), true) => partition.clone(),
            (None, true) => match storage.partition(stream_id) {
                Some(partition) => {
                    partition.seal();
                    sealed = Some(partition.clone());
                    partition
                }
                // Not served here yet (its history is loading, or this broker is fenced).
                None => {
                    glommio::timer::sleep(RETRY_DELAY).await;
                    continue;
                }
            },
        };
        let end_offset = partition.sealed_end_offset().await;
        if !wait_for_objects(storage, stream_id, target, end_offset).await {
            break;
        }
        let complete = MetadataCommand::CompletePartitionMove {
            stream_id,
            from: image.node_id,
            to: target,
        };
        match storage.controller.submit(complete).await {
            Ok(_) => {
                tracing::info!(
                    topic = %partition.topic,
                    partition = partition.index,
                    to = target,
                    end_offset,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "partition moved"
                );
                return;
            }
            Err(error) => {
                tracing::info!(
                    topic = %partition.topic,
                    partition = partition.index,
                    to = target,
                    %error,
                    "partition move not committed; retrying"
                );
                glommio::timer::sleep(RETRY_DELAY).await;
            }
        }
    }
    if let Some(partition) = sealed {
        partition.unseal();
        tracing::info!(
            topic = %partition.topic,
            partition = partition.index,
            to = target,
            "partition move cancelled"
        );
    }
}

/// Asks for uploads until the objects hold `stream_id` up to `end_offset`; false if the
/// move stopped being asked meanwhile.
async fn wait_for_objects(
    storage: &PartitionStore,
    stream_id: u64,
    target: i32,
    end_offset: i64,
) -> bool {
    loop {
        let image = storage.image();
        if !still_asked(&image, stream_id, target) {
            return false;
        }
        let in_objects = image.stream_end_offset_in_objects(stream_id).or_else(|| {
            image
                .stream(stream_id)
                .map(|(_, part)| part.log_start_offset)
        });
        if in_objects.is_some_and(|end| end >= end_offset) {
            return true;
        }
        storage.tier.ask_upload();
        glommio::timer::sleep(POLL_INTERVAL).await;
    }
}
