//! The local backend through the `ObjectStore` handle, from plain threads
//! and from a glommio executor.

mod common;

use std::time::Duration;

use bytes::Bytes;
use sluice_objstore::{ObjectStore, ObjectStoreError, RetryPolicy};

#[test]
fn local_backend_contract() {
    let dir = tempfile::tempdir().unwrap();
    let store = ObjectStore::local(dir.path().join("objects")).unwrap();
    futures::executor::block_on(common::store_contract(&store));
    // Objects are plain files under the root; no temporary file is left.
    assert!(dir.path().join("objects/a/b/one").is_file());
    let tmp: Vec<_> = std::fs::read_dir(dir.path().join("objects/.tmp"))
        .unwrap()
        .collect();
    assert!(tmp.is_empty());
    let stats = store.stats().snapshot();
    assert!(stats.requests > 10 && stats.bytes_uploaded > 33 * 1024 * 1024);
    assert!(stats.request_latency_us_quantile(0.99) > 0);
}

#[test]
fn leftover_temporary_files_are_removed_at_open() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join(".tmp")).unwrap();
    std::fs::write(dir.path().join(".tmp/123-4"), b"torn").unwrap();
    let store = ObjectStore::local(dir.path()).unwrap();
    assert!(!dir.path().join(".tmp/123-4").exists());
    // Hidden entries are never listed.
    assert!(
        futures::executor::block_on(store.list(""))
            .unwrap()
            .is_empty()
    );
}

#[test]
fn non_retriable_errors_are_not_retried() {
    let dir = tempfile::tempdir().unwrap();
    let store = ObjectStore::local(dir.path())
        .unwrap()
        .with_retry(RetryPolicy {
            backoff_initial: Duration::from_millis(1),
            ..RetryPolicy::default()
        });
    let err = futures::executor::block_on(store.get("missing")).unwrap_err();
    assert!(!err.is_retriable());
    assert_eq!(store.stats().snapshot().request_retries, 0);
    // A file where a directory must go: an error, not a retry loop.
    futures::executor::block_on(store.put("f", Bytes::from_static(b"x"))).unwrap();
    let err = futures::executor::block_on(store.put("f/g", Bytes::from_static(b"x"))).unwrap_err();
    assert!(matches!(err, ObjectStoreError::Other { .. }), "{err}");
}

/// The handle's futures complete on glommio (io_uring executor, no tokio):
/// the work runs on the store's runtime, the wake crosses threads.
#[test]
fn works_from_a_glommio_executor() {
    let dir = tempfile::tempdir().unwrap();
    let store = ObjectStore::local(dir.path()).unwrap();
    let handle = glommio::LocalExecutorBuilder::default()
        .io_memory(1 << 20)
        .spawn(move || async move {
            common::store_contract(&store).await;
            // Many concurrent operations from one shard.
            let puts = (0..64).map(|i| {
                let store = store.clone();
                glommio::spawn_local(async move {
                    store
                        .put(&format!("g/{i:03}"), Bytes::from(vec![i as u8; 1000]))
                        .await
                        .unwrap();
                })
            });
            futures::future::join_all(puts).await;
            assert_eq!(store.list("g/").await.unwrap().len(), 64);
            store.sleep(Duration::from_millis(5)).await;
        })
        .unwrap();
    handle.join().unwrap();
}
