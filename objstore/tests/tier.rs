//! The object tier end to end on the local backend: uploader → objects →
//! registry → cold reads, compaction, retention, garbage collection.

mod common;

use sluice_objstore::ObjectStore;

#[test]
fn tier_end_to_end_on_local() {
    let dir = tempfile::tempdir().unwrap();
    let store = ObjectStore::local(dir.path().join("objects")).unwrap();
    futures::executor::block_on(common::tier_scenario(
        store,
        &dir.path().join("metadata"),
        400,
        true,
    ));
}

/// The same scenario awaited on a glommio executor, as a shard would: the
/// uploader, cold reader and compactor futures complete there although the
/// work runs on the store's tokio runtime. (The `StoreRegistry` fsyncs on
/// the executor thread: fine in a test, the broker's goes to its
/// controller thread.)
#[test]
fn tier_end_to_end_on_glommio() {
    let dir = tempfile::tempdir().unwrap();
    let store = ObjectStore::local(dir.path().join("objects")).unwrap();
    let metadata = dir.path().join("metadata");
    glommio::LocalExecutorBuilder::default()
        .io_memory(1 << 20)
        .spawn(move || async move { common::tier_scenario(store, &metadata, 100, false).await })
        .unwrap()
        .join()
        .unwrap();
}
