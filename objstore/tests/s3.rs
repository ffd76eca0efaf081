//! The S3 backend against a real S3-compatible server (s3s-fs) on 127.0.0.1,
//! which each test starts itself.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::S3Server;
use sluice_objstore::{ObjectStore, ObjectStoreError, RetryPolicy};

#[test]
fn s3_backend_contract() {
    let server = S3Server::start();
    let store = ObjectStore::s3(&server.config()).unwrap();
    futures::executor::block_on(common::store_contract(&store));
    let stats = store.stats().snapshot();
    assert!(stats.requests > 10);
    drop(server);
}

#[test]
fn s3_down_is_unavailable_and_bounded() {
    let mut server = S3Server::start();
    let store = ObjectStore::s3(&server.config())
        .unwrap()
        .with_retry(RetryPolicy {
            attempts_max: 3,
            backoff_initial: Duration::from_millis(10),
            ..RetryPolicy::default()
        });
    futures::executor::block_on(store.put("k", Bytes::from_static(b"v"))).unwrap();
    server.stop();
    let err = futures::executor::block_on(store.get("k")).unwrap_err();
    assert!(err.is_retriable(), "{err}");
    assert!(matches!(err, ObjectStoreError::Unavailable { .. }));
    assert_eq!(store.stats().snapshot().request_retries, 2);
    server.resume();
    assert_eq!(
        &futures::executor::block_on(store.get("k")).unwrap()[..],
        b"v"
    );
}

#[test]
fn tier_end_to_end_on_s3() {
    let server = S3Server::start();
    let dir = tempfile::tempdir().unwrap();
    let store = ObjectStore::s3(&server.config()).unwrap();
    futures::executor::block_on(common::tier_scenario(store, dir.path(), 150, false));
}

/// The server stops for 3 s in the middle of uploads: the uploader retries
/// until it is back, every upload completes, no upload started during the
/// outage reports a trim position before the server is back, and every
/// record reads back.
#[test]
fn uploads_survive_an_outage() {
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    use sluice_objstore::{BlockCache, ColdReader, Uploader, UploaderConfig};

    const OUTAGE: Duration = Duration::from_secs(3);
    let server = S3Server::start();
    let dir = tempfile::tempdir().unwrap();
    let store = ObjectStore::s3(&server.config())
        .unwrap()
        .with_retry(RetryPolicy {
            attempts_max: 2,
            attempt_timeout: Duration::from_secs(2),
            backoff_initial: Duration::from_millis(20),
            ..RetryPolicy::default()
        });
    let registry = common::registry(dir.path(), 3);
    let mut uploader = Uploader::new(UploaderConfig {
        // Sealed by the loop below only.
        upload_bytes: usize::MAX / 2,
        stream_object_min_bytes: 48 * 1024,
        block_bytes: 8 * 1024,
        backoff_max: Duration::from_millis(200),
        ..UploaderConfig::default()
    });
    // (stopped at, resumed at)
    let outage: Arc<Mutex<(Option<Instant>, Option<Instant>)>> = Arc::default();
    let chaos = {
        let outage = Arc::clone(&outage);
        let mut server = server;
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            outage.lock().unwrap().0 = Some(Instant::now());
            server.stop();
            std::thread::sleep(OUTAGE);
            server.resume();
            outage.lock().unwrap().1 = Some(Instant::now());
            server
        })
    };
    let mut expected = common::Expected::new();
    let mut wal = 0u64;
    let mut reports_during_outage = 0;
    let started = Instant::now();
    futures::executor::block_on(async {
        // Keep producing until well after the outage.
        while started.elapsed() < OUTAGE + Duration::from_secs(1) {
            common::upload_rounds(
                &store,
                &registry,
                &mut uploader,
                &mut expected,
                &mut wal,
                3,
                5,
            )
            .await;
            // A producer's pace, so the data to verify stays small.
            store.sleep(Duration::from_millis(50)).await;
            let Some(mut sealed) = uploader.seal() else {
                continue;
            };
            let report = sealed.run(&store, &registry).await.unwrap();
            uploader.completed();
            assert_eq!(report.wal_end_position, wal);
            if report.put_retries > 0 {
                // It met the outage: it may only finish once the server is back.
                reports_during_outage += 1;
                let resumed = outage.lock().unwrap().1;
                assert!(
                    resumed.is_some(),
                    "an upload reported durable while the server was down"
                );
            }
        }
    });
    let server = chaos.join().unwrap();
    assert!(
        reports_during_outage >= 1,
        "no upload overlapped the outage"
    );
    let stats = store.stats().snapshot();
    assert!(stats.upload_retries > 0, "{stats:?}");
    let reader = ColdReader::new(BlockCache::new(store.clone(), 1 << 20));
    futures::executor::block_on(common::verify_reads(
        &reader,
        &registry.image(),
        &expected,
        &BTreeMap::new(),
    ));
    drop(server);
}
