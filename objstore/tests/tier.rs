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
