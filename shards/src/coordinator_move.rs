//! A broker becoming the coordinator while it runs: the coordinator's broker failed, a
//! survivor took its WAL over and uploaded the coordinator partitions' logs with the rest, and
//! the quorum moved the coordinator here (`sluice_metadata` `Brokers::release_wal`). Each
//! shard then reads the logs of its coordinator partitions from objects, restores their
//! groups and transactions as a start-up does, resumes the transactions found decided, and
//! only then serves them ([`CoordinatorLoad::Loaded`]); until then the calls are refused
//! and the clients retry.
//!
//! Group membership is not in the logs (as after a restart): members rejoin.

use std::rc::Rc;

use crate::shard::{CoordinatorLoad, Shard};

/// Starts loading this shard's coordinator partitions if this broker coordinates now and the
/// shard does not hold them yet (once per process: a broker stops coordinating only when its
/// WAL is taken over, and then it stops).
pub fn load_if_due(shard: &Rc<Shard>) {
    let image = shard.image();
    if shard.coordinator_load.get() != CoordinatorLoad::NotLoaded
        || image.coordinating_broker() != Some(image.node_id)
    {
        return;
    }
    shard.coordinator_load.set(CoordinatorLoad::Loading);
    let shard = shard.clone();
    glommio::spawn_local(async move {
        let group_entries = crate::tier::read_until_done(shard.id, "the coordinator logs", || {
            crate::recovery::coordinator_logs_in_objects(&shard)
        })
        .await;
        let groups = group_entries.len();
        crate::builder::restore_groups(&shard, group_entries).await;
        crate::txn::serve::restore(&shard).await;
        shard.coordinator_load.set(CoordinatorLoad::Loaded);
        crate::txn::serve::resume_decided(&shard);
        tracing::info!(
            shard = shard.id,
            group_entries = groups,
            "this broker coordinates now: groups and transactions loaded"
        );
    })
    .detach();
}
