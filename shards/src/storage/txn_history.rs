//! The transaction history of a shard's partitions across brokers: which transactions began
//! on a partition and how they ended, for its last stable offset and the aborted ranges
//! read_committed fetches return.
//!
//! Each shard appends its partitions' history to its own transaction index
//! (`txn/partition_index.rs`, one internal stream per shard of each broker). A partition that
//! moved (its broker failed, a survivor took its WAL over and uploaded its tail, the index's
//! too) has its history in the indexes of every broker that led it, so it is read from all of
//! them, in offset order. The shard does this for the partitions it leads at start-up
//! (`recovery.rs`), and for a partition moved here before serving it ([`load_due`]): until
//! then `PartitionStore::partition` answers as if it led it not (NOT_LEADER_OR_FOLLOWER, the
//! client retries).

use std::collections::{BTreeSet, HashMap};
use std::rc::Rc;

use super::PartitionStore;
use crate::txn::partition_index::TxnIndexEntry;

/// The transaction-index entries in objects about the partitions `wanted` accepts, from the
/// index of every shard of every broker, by partition in offset order; continues this
/// shard's own index after its records.
pub async fn in_objects(
    store: &PartitionStore,
    wanted: impl Fn(u64) -> bool,
) -> Result<HashMap<u64, Vec<TxnIndexEntry>>, String> {
    let image = store.image();
    let own = store.txn_index.stream_id();
    let mut found: HashMap<u64, Vec<TxnIndexEntry>> = HashMap::new();
    let indexes: Vec<u64> = image
        .streams_in_objects(crate::internal_stream::txn_index_streams())
        .collect();
    for index in indexes {
        store
            .read_internal_stream(index, |offset, payload| {
                if index == own {
                    store.txn_index.resume_sequence(offset as u64 + 1);
                }
                match TxnIndexEntry::decode(payload) {
                    Ok(entry) if wanted(entry.stream_id()) => {
                        found.entry(entry.stream_id()).or_default().push(entry)
                    }
                    Ok(_) => {}
                    Err(error) => {
                        tracing::error!(%error, index, "a transaction-index entry is malformed")
                    }
                }
                Ok(())
            })
            .await?;
    }
    for entries in found.values_mut() {
        // Stable: a partition's entries from one index keep their order.
        entries.sort_by_key(TxnIndexEntry::offset);
    }
    Ok(found)
}

/// Starts loading the history of the partitions moved to this shard with data in objects, if
/// any and not loading yet; each is served once its history is applied.
pub fn load_due(store: &Rc<PartitionStore>) {
    let image = store.image();
    let due: BTreeSet<u64> = super::led_partitions(&image, store.id, store.count)
        .filter(|stream_id| {
            !store.txn_history_known.borrow().contains(stream_id)
                && !store.txn_history_loading.borrow().contains(stream_id)
                && image.stream_end_offset_in_objects(*stream_id).is_some()
        })
        .collect();
    if due.is_empty() {
        return;
    }
    store.txn_history_loading.borrow_mut().extend(&due);
    let store = store.clone();
    glommio::spawn_local(async move {
        let mut history = crate::tier::read_until_done(store.id, "the transaction indexes", || {
            in_objects(&store, |stream_id| due.contains(&stream_id))
        })
        .await;
        let mut entries = 0;
        for stream_id in &due {
            store.txn_history_loading.borrow_mut().remove(stream_id);
            store.txn_history_known.borrow_mut().insert(*stream_id);
            let found = history.remove(stream_id).unwrap_or_default();
            entries += found.len();
            // None if it moved on meanwhile: read again if it comes back.
            let Some(partition) = store.partition(*stream_id) else {
                store.txn_history_known.borrow_mut().remove(stream_id);
                continue;
            };
            for entry in found {
                partition.apply_txn_index(entry);
            }
        }
        tracing::info!(
            shard = store.id,
            partitions = due.len(),
            entries,
            "partitions moved here: their transaction history is loaded"
        );
    })
    .detach();
}
