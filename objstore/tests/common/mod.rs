//! Helpers of the objstore tests: batches shaped like Kafka's, a metadata
//! store with topics, and a real s3s-fs server.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use sluice_metadata::{MetadataCommand, MetadataStore};
use sluice_objstore::{S3Config, S3Credentials, StoreRegistry};

/// A record batch as the WAL holds it: Kafka's 12-byte prefix (base offset,
/// batch length, big endian) then `body_len` bytes derived from
/// (stream, base offset, count), so any misplaced byte shows.
pub fn batch(stream_id: u64, base_offset: i64, count: i64, body_len: usize) -> Bytes {
    let mut b = BytesMut::with_capacity(12 + body_len);
    b.put_i64(base_offset);
    b.put_i32(body_len as i32);
    let seed = stream_id.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (base_offset as u64)
        ^ ((count as u64) << 48);
    for i in 0..body_len {
        b.put_u8(
            (seed
                .wrapping_add(i as u64)
                .wrapping_mul(0x2545_F491_4F6C_DD1D)
                >> 56) as u8,
        );
    }
    b.freeze()
}

/// Splits concatenated batches into (base offset, batch bytes).
pub fn split_batches(bytes: &[u8]) -> Vec<(i64, Bytes)> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        let base = i64::from_be_bytes(bytes[pos..pos + 8].try_into().unwrap());
        let len = i32::from_be_bytes(bytes[pos + 8..pos + 12].try_into().unwrap()) as usize;
        out.push((base, Bytes::copy_from_slice(&bytes[pos..pos + 12 + len])));
        pos += 12 + len;
    }
    assert_eq!(pos, bytes.len());
    out
}

/// A metadata store in `dir` with topic `t` of `partitions` partitions
/// (streams 1..=partitions).
pub fn registry(dir: &Path, partitions: u32) -> StoreRegistry {
    let mut store = MetadataStore::open(dir, 1).unwrap();
    if store.image().topic("t").is_none() {
        store
            .apply(MetadataCommand::CreateTopic {
                name: "t".into(),
                partitions,
                configs: Default::default(),
                shards: 1,
            })
            .unwrap();
    }
    StoreRegistry::new(store)
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

pub const S3_ACCESS_KEY: &str = "sluice-test-access";
pub const S3_SECRET_KEY: &str = "sluice-test-secret-key";
pub const S3_BUCKET: &str = "sluice";
const INSTALL: &str = "cargo install s3s-fs --version =0.14.1 --features binary --locked";

/// A real s3s-fs server on 127.0.0.1, stopped when dropped.
pub struct S3Server {
    child: Option<Child>,
    pub port: u16,
    root: tempfile::TempDir,
}

impl S3Server {
    /// Starts s3s-fs on a free port with a temporary root and one bucket.
    pub fn start() -> S3Server {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join(S3_BUCKET)).unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut server = S3Server {
            child: None,
            port,
            root,
        };
        server.resume();
        server
    }

    /// Stops the server (the data stays); `resume` starts it again.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn resume(&mut self) {
        assert!(self.child.is_none());
        let child = Command::new("s3s-fs")
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--access-key", S3_ACCESS_KEY, "--secret-key", S3_SECRET_KEY])
            .arg(self.root.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run s3s-fs ({e}); install it with: {INSTALL} (scripts/test does)")
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "s3s-fs did not start on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn config(&self) -> S3Config {
        S3Config {
            endpoint_url: Some(format!("http://127.0.0.1:{}", self.port)),
            region: "us-east-1".to_string(),
            bucket: S3_BUCKET.to_string(),
            force_path_style: true,
            key_prefix: "cluster-1/".to_string(),
            credentials: Some(S3Credentials {
                access_key_id: S3_ACCESS_KEY.to_string(),
                secret_access_key: S3_SECRET_KEY.to_string(),
            }),
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}

use sluice_objstore::{ObjectStore, ObjectStoreError};

/// Every operation of the `ObjectStore` contract, on any backend.
pub async fn store_contract(store: &ObjectStore) {
    let data = Bytes::from((0..100_000u32).map(|i| i as u8).collect::<Vec<u8>>());
    store.put("a/b/one", data.clone()).await.unwrap();
    assert_eq!(store.get("a/b/one").await.unwrap(), data);
    assert_eq!(store.head("a/b/one").await.unwrap(), 100_000);
    assert_eq!(
        store.get_range("a/b/one", 10..20).await.unwrap(),
        data.slice(10..20)
    );
    // The end is clamped; a start past the end is an error.
    assert_eq!(
        store.get_range("a/b/one", 99_990..200_000).await.unwrap(),
        data.slice(99_990..)
    );
    assert!(matches!(
        store.get_range("a/b/one", 100_000..100_010).await,
        Err(ObjectStoreError::InvalidRange { .. })
    ));
    assert!(store.get_range("a/b/one", 5..5).await.unwrap().is_empty());
    // Replace.
    store
        .put("a/b/one", Bytes::from_static(b"v2"))
        .await
        .unwrap();
    assert_eq!(&store.get("a/b/one").await.unwrap()[..], b"v2");
    // Conditional create.
    store
        .put_if_absent("a/c", Bytes::from_static(b"x"))
        .await
        .unwrap();
    assert!(matches!(
        store.put_if_absent("a/c", Bytes::from_static(b"y")).await,
        Err(ObjectStoreError::AlreadyExists { .. })
    ));
    assert_eq!(&store.get("a/c").await.unwrap()[..], b"x");
    // Missing keys.
    assert!(matches!(
        store.get("nope").await,
        Err(ObjectStoreError::NotFound { .. })
    ));
    assert!(matches!(
        store.head("a/nope").await,
        Err(ObjectStoreError::NotFound { .. })
    ));
    assert!(matches!(
        store.get_range("nope", 0..10).await,
        Err(ObjectStoreError::NotFound { .. })
    ));
    // Keys that could escape are refused before any I/O.
    for bad in ["../x", "a/../../x", "/etc/passwd", "a/.tmp/x", ""] {
        assert!(matches!(
            store.put(bad, Bytes::from_static(b"x")).await,
            Err(ObjectStoreError::InvalidKey { .. })
        ));
    }
    // Large objects (multipart on S3, chunked writes locally).
    let big = Bytes::from(vec![7u8; 33 * 1024 * 1024 + 5]);
    store.put("big/one", big.clone()).await.unwrap();
    assert_eq!(store.head("big/one").await.unwrap(), big.len() as u64);
    let tail = store
        .get_range("big/one", big.len() as u64 - 10..big.len() as u64)
        .await
        .unwrap();
    assert_eq!(tail, big.slice(big.len() - 10..));
    // Listing by prefix, sorted, and batch delete (missing keys are fine).
    for i in 0..5 {
        store
            .put(&format!("list/k{i}"), Bytes::from(vec![1u8; i]))
            .await
            .unwrap();
    }
    store.put("listx", Bytes::from_static(b"x")).await.unwrap();
    let listed = store.list("list/").await.unwrap();
    let keys: Vec<&str> = listed.iter().map(|m| m.key.as_str()).collect();
    assert_eq!(
        keys,
        ["list/k0", "list/k1", "list/k2", "list/k3", "list/k4"]
    );
    assert_eq!(listed[3].size, 3);
    assert_eq!(store.list("list").await.unwrap().len(), 6);
    assert_eq!(store.list("a/").await.unwrap().len(), 2);
    store
        .delete(&[
            "list/k1".to_string(),
            "list/k3".to_string(),
            "never".to_string(),
        ])
        .await
        .unwrap();
    let keys: Vec<String> = store
        .list("list/")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.key)
        .collect();
    assert_eq!(keys, ["list/k0", "list/k2", "list/k4"]);
    store.delete(&["big/one".to_string()]).await.unwrap();
    assert!(store.list("big/").await.unwrap().is_empty());
}
