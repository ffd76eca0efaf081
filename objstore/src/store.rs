//! `ObjectStore`: the runtime-agnostic handle every user of the object tier
//! holds, over one `ObjectBackend`.
//!
//! The broker runs on glommio; aws-sdk-s3 needs tokio. So the handle owns a
//! small tokio runtime: each call spawns the real work (with its retries) on
//! that runtime and awaits a `futures::channel::oneshot`, whose waker works
//! from any thread. Any executor can await the handle's futures: glommio,
//! tokio, or `futures::executor::block_on`.

use std::future::Future;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::channel::oneshot;

use crate::error::ObjectStoreError;
use crate::io_pacer::IoPacer;
use crate::limits::{
    BACKOFF_INITIAL, BACKOFF_MAX, KEY_BYTES_MAX, REQUEST_ATTEMPT_TIMEOUT, REQUEST_ATTEMPTS_MAX,
    REQUEST_DEADLINE, RUNTIME_BLOCKING_THREADS_MAX, RUNTIME_WORKER_THREADS,
};
use crate::local::LocalBackend;
use crate::s3::{S3Backend, S3Config};
use crate::stats::Stats;

/// A boxed future the backends return; it runs on the store's runtime.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

pub type Result<T, E = ObjectStoreError> = std::result::Result<T, E>;

/// An object as a listing shows it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ObjectMeta {
    pub key: String,
    pub size: u64,
}

/// One kind of object store. Implementations are cheap to clone inside
/// (the futures they return are `'static`), do one attempt per call (the
/// handle retries), and map their failures onto `ObjectStoreError`.
/// Keys reach them validated (`validate_key`).
pub trait ObjectBackend: Send + Sync + 'static {
    /// "local" or "s3", for messages.
    fn name(&self) -> &'static str;
    /// Creates or replaces `key`; large objects go in parts.
    fn put(&self, key: String, data: Bytes) -> BoxFuture<Result<()>>;
    /// Creates `key` unless it exists (`AlreadyExists` then).
    fn put_if_absent(&self, key: String, data: Bytes) -> BoxFuture<Result<()>>;
    /// Bytes `range` of `key` (the end is clamped to the object's size), or
    /// the whole object for `None`.
    fn get(&self, key: String, range: Option<Range<u64>>) -> BoxFuture<Result<Bytes>>;
    /// The object's size.
    fn head(&self, key: String) -> BoxFuture<Result<u64>>;
    /// Every object whose key starts with `prefix`, sorted by key.
    fn list(&self, prefix: String) -> BoxFuture<Result<Vec<ObjectMeta>>>;
    /// Deletes the keys (missing ones are not an error).
    fn delete(&self, keys: Vec<String>) -> BoxFuture<Result<()>>;
    /// Creates or replaces `key` as a hard link to `source`, a file on the store's own file
    /// system whose bytes are durable already, with `tail(size)` (an index and footer) written
    /// at its end: `size` is the file's length at the link. Returns the object's size. Only a
    /// local store can; the others refuse.
    fn put_linked(&self, key: String, source: PathBuf, tail: LinkedTail) -> BoxFuture<Result<u64>> {
        let _ = (source, tail);
        let name = self.name();
        Box::pin(async move {
            Err(ObjectStoreError::Other {
                operation: "put_linked",
                key,
                message: format!("a {name} store cannot link files"),
            })
        })
    }
}

/// What [`ObjectBackend::put_linked`] writes after the linked file's bytes, given their length.
pub type LinkedTail = Arc<dyn Fn(u64) -> Bytes + Send + Sync>;

/// Where the objects are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectStoreConfig {
    /// A local directory (the embedded default: `<data-dir>/objects`).
    Local {
        root: PathBuf,
    },
    S3(S3Config),
}

/// Retry rules of one operation. `Default` is the named constants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub attempts_max: u32,
    pub attempt_timeout: Duration,
    pub deadline: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            attempts_max: REQUEST_ATTEMPTS_MAX,
            attempt_timeout: REQUEST_ATTEMPT_TIMEOUT,
            deadline: REQUEST_DEADLINE,
            backoff_initial: BACKOFF_INITIAL,
            backoff_max: BACKOFF_MAX,
        }
    }
}

impl RetryPolicy {
    /// The back-off before attempt `attempt + 1` (attempt counts from 1).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32 << attempt.saturating_sub(1).min(16);
        self.backoff_initial
            .saturating_mul(factor)
            .min(self.backoff_max)
    }
}

/// The handle: `Clone + Send + Sync`, cheap to clone; the runtime stops
/// when the last clone is dropped.
#[derive(Clone)]
pub struct ObjectStore {
    inner: Arc<Inner>,
    // Set for a background handle: its work runs on the low-priority runtime while the flag
    // (the caller is falling behind) is false.
    background: Option<Arc<AtomicBool>>,
}

struct Inner {
    backend: Arc<dyn ObjectBackend>,
    runtime: OwnedRuntime,
    // Same as `runtime`, but its threads run at the lowest CPU priority (nice 19).
    background_runtime: OwnedRuntime,
    stats: Arc<Stats>,
    retry: RetryPolicy,
    io_pacer: Option<Arc<IoPacer>>,
}

impl std::fmt::Debug for ObjectStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectStore")
            .field("backend", &self.inner.backend.name())
            .field("retry", &self.inner.retry)
            .finish()
    }
}

impl ObjectStore {
    /// Opens the store the config names. Call it from a plain thread (the
    /// broker's start-up), not from inside a tokio runtime.
    pub fn open(config: &ObjectStoreConfig) -> Result<ObjectStore> {
        match config {
            ObjectStoreConfig::Local { root } => ObjectStore::local(root.clone()),
            ObjectStoreConfig::S3(s3) => ObjectStore::s3(s3),
        }
    }

    /// A store in a local directory (created if missing). Its reads and writes are paced by
    /// the WAL latency the shards report to [`ObjectStore::io_pacer`].
    pub fn local(root: impl Into<PathBuf>) -> Result<ObjectStore> {
        let runtime = OwnedRuntime::new(Priority::Normal)?;
        let pacer = IoPacer::new();
        let stats = Arc::new(Stats::default());
        let backend = LocalBackend::open(root.into(), pacer.clone(), stats.clone())?;
        ObjectStore::with_backend(Arc::new(backend), runtime, Some(pacer), stats)
    }

    /// The pacer of a local store's I/O, which the shards tell of their WAL's latency; `None`
    /// for S3, whose I/O does not touch the WAL's disk.
    pub fn io_pacer(&self) -> Option<Arc<IoPacer>> {
        self.inner.io_pacer.clone()
    }

    /// A store in an S3 bucket (any S3-compatible server).
    pub fn s3(config: &S3Config) -> Result<ObjectStore> {
        let runtime = OwnedRuntime::new(Priority::Normal)?;
        let backend = S3Backend::new(config, &runtime.handle)?;
        ObjectStore::with_backend(Arc::new(backend), runtime, None, Arc::default())
    }

    /// A store over the simulator's in-memory backend (see [`crate::MemoryBackend`]).
    #[cfg(feature = "sim")]
    pub fn simulated(backend: crate::MemoryBackend) -> Result<ObjectStore> {
        let runtime = OwnedRuntime::new(Priority::Normal)?;
        ObjectStore::with_backend(Arc::new(backend), runtime, None, Arc::default())
    }

    /// The same store for background work (uploads): its CPU-heavy work (building and
    /// checksumming objects) runs on threads of the lowest CPU priority while `behind` is
    /// false, so it never takes a core from the shards; while `behind` is true (the caller's
    /// WAL is filling up) each new piece of work runs at normal priority again. Requests to
    /// the backend always run at normal priority: a starved request would hold its upload,
    /// and the WAL behind it, however far behind the caller falls.
    pub fn background(&self, behind: Arc<AtomicBool>) -> ObjectStore {
        ObjectStore {
            inner: self.inner.clone(),
            background: Some(behind),
        }
    }

    /// The runtime this handle's next CPU-heavy work runs on.
    fn runtime(&self) -> &tokio::runtime::Handle {
        match &self.background {
            Some(behind) if !behind.load(Ordering::Relaxed) => {
                &self.inner.background_runtime.handle
            }
            _ => &self.inner.runtime.handle,
        }
    }

    /// The same store with other retry rules (tests use short ones).
    pub fn with_retry(self, retry: RetryPolicy) -> ObjectStore {
        let inner = match Arc::try_unwrap(self.inner) {
            Ok(mut inner) => {
                inner.retry = retry;
                inner
            }
            Err(shared) => panic!(
                "with_retry on a shared ObjectStore ({} clones)",
                Arc::strong_count(&shared)
            ),
        };
        ObjectStore {
            inner: Arc::new(inner),
            background: self.background,
        }
    }

    fn with_backend(
        backend: Arc<dyn ObjectBackend>,
        runtime: OwnedRuntime,
        io_pacer: Option<Arc<IoPacer>>,
        stats: Arc<Stats>,
    ) -> Result<ObjectStore> {
        Ok(ObjectStore {
            inner: Arc::new(Inner {
                backend,
                runtime,
                background_runtime: OwnedRuntime::new(Priority::Background)?,
                stats,
                retry: RetryPolicy::default(),
                io_pacer,
            }),
            background: None,
        })
    }

    /// The counters of this store (shared with the uploader, cache and
    /// compactor built on it).
    pub fn stats(&self) -> &Arc<Stats> {
        &self.inner.stats
    }

    pub fn backend_name(&self) -> &'static str {
        self.inner.backend.name()
    }

    pub fn retry_policy(&self) -> RetryPolicy {
        self.inner.retry
    }

    /// Creates or replaces `key` (idempotent: the uploader derives keys from
    /// object ids, so a retried put writes the same bytes).
    pub async fn put(&self, key: &str, data: Bytes) -> Result<()> {
        validate_key(key)?;
        let len = data.len() as u64;
        let backend = Arc::clone(&self.inner.backend);
        let key = key.to_string();
        self.retried("put", key.clone(), move || {
            backend.put(key.clone(), data.clone())
        })
        .await?;
        Stats::add(&self.inner.stats.bytes_uploaded, len);
        Stats::add(&self.inner.stats.objects_uploaded, 1);
        Ok(())
    }

    /// Creates `key` unless it exists: `AlreadyExists` then. A retry after
    /// an attempt whose answer was lost may see `AlreadyExists` for the
    /// object this call itself created.
    pub async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<()> {
        validate_key(key)?;
        let len = data.len() as u64;
        let backend = Arc::clone(&self.inner.backend);
        let key = key.to_string();
        self.retried("put_if_absent", key.clone(), move || {
            backend.put_if_absent(key.clone(), data.clone())
        })
        .await?;
        Stats::add(&self.inner.stats.bytes_uploaded, len);
        Stats::add(&self.inner.stats.objects_uploaded, 1);
        Ok(())
    }

    /// The whole object.
    pub async fn get(&self, key: &str) -> Result<Bytes> {
        self.get_inner(key, None).await
    }

    /// Bytes `range` of the object; the end is clamped to its size, a start
    /// at or beyond the size of a non-empty range is `InvalidRange`.
    pub async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        if range.start >= range.end {
            validate_key(key)?;
            return Ok(Bytes::new());
        }
        self.get_inner(key, Some(range)).await
    }

    /// The object's size.
    pub async fn head(&self, key: &str) -> Result<u64> {
        validate_key(key)?;
        let backend = Arc::clone(&self.inner.backend);
        let key = key.to_string();
        self.retried("head", key.clone(), move || backend.head(key.clone()))
            .await
    }

    /// Every object whose key starts with `prefix`, sorted by key.
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let backend = Arc::clone(&self.inner.backend);
        let prefix = prefix.to_string();
        self.retried("list", prefix.clone(), move || backend.list(prefix.clone()))
            .await
    }

    /// Makes `key` an object of the file `source` by a hard link, its index written after it
    /// (see [`ObjectBackend::put_linked`]): no byte of `source` is copied. Returns the
    /// object's size. A local store on the file system of `source` only.
    pub async fn put_linked(&self, key: &str, source: &Path, tail: LinkedTail) -> Result<u64> {
        validate_key(key)?;
        let backend = Arc::clone(&self.inner.backend);
        let key = key.to_string();
        let source = source.to_path_buf();
        let size = self
            .retried("put_linked", key.clone(), move || {
                backend.put_linked(key.clone(), source.clone(), Arc::clone(&tail))
            })
            .await?;
        Stats::add(&self.inner.stats.objects_uploaded, 1);
        Stats::add(&self.inner.stats.objects_linked, 1);
        Ok(size)
    }

    /// Deletes the keys; missing ones are not an error.
    pub async fn delete(&self, keys: &[String]) -> Result<()> {
        for key in keys {
            validate_key(key)?;
        }
        if keys.is_empty() {
            return Ok(());
        }
        let count = keys.len() as u64;
        let backend = Arc::clone(&self.inner.backend);
        let keys = keys.to_vec();
        let first = keys[0].clone();
        self.retried("delete", first, move || backend.delete(keys.clone()))
            .await?;
        Stats::add(&self.inner.stats.objects_deleted, count);
        Ok(())
    }

    /// Waits `duration` on the store's runtime (a timer any executor can
    /// await: back-off between upload attempts).
    pub async fn sleep(&self, duration: Duration) {
        // The timer is created inside the runtime (tokio needs its context).
        let _ = self
            .spawn(async move { tokio::time::sleep(duration).await })
            .await;
    }

    /// Runs `future` on the store's runtime; the receiver completes with its
    /// output (Canceled if the runtime shut down first).
    pub(crate) fn spawn<F>(&self, future: F) -> oneshot::Receiver<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        self.inner.runtime.handle.spawn(async move {
            let _ = tx.send(future.await);
        });
        rx
    }

    /// Runs CPU-heavy or blocking `work` (building, checksumming objects)
    /// on the store runtime's blocking threads, off the caller's executor.
    pub(crate) fn spawn_blocking<F, T>(&self, work: F) -> oneshot::Receiver<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        self.runtime().spawn_blocking(move || {
            let _ = tx.send(work());
        });
        rx
    }

    async fn get_inner(&self, key: &str, range: Option<Range<u64>>) -> Result<Bytes> {
        validate_key(key)?;
        let backend = Arc::clone(&self.inner.backend);
        let owned = key.to_string();
        let bytes = self
            .retried("get", owned.clone(), move || {
                backend.get(owned.clone(), range.clone())
            })
            .await?;
        Stats::add(&self.inner.stats.bytes_downloaded, bytes.len() as u64);
        Ok(bytes)
    }

    /// Runs `attempt` on the runtime under the retry policy and awaits it.
    async fn retried<T, F>(&self, operation: &'static str, key: String, attempt: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnMut() -> BoxFuture<Result<T>> + Send + 'static,
    {
        let stats = Arc::clone(&self.inner.stats);
        let policy = self.inner.retry;
        let key_for_error = key.clone();
        self.spawn(retry(stats, policy, operation, key, attempt))
            .await
            .unwrap_or_else(|_| {
                Err(ObjectStoreError::Unavailable {
                    operation,
                    key: key_for_error,
                    message: "the object store runtime shut down".to_string(),
                })
            })
    }
}

/// One operation: attempts with a timeout each, exponential back-off
/// between them, at most `attempts_max` of them and within `deadline`;
/// only retriable errors are retried.
async fn retry<T, F>(
    stats: Arc<Stats>,
    policy: RetryPolicy,
    operation: &'static str,
    key: String,
    mut attempt: F,
) -> Result<T>
where
    F: FnMut() -> BoxFuture<Result<T>>,
{
    let started = Instant::now();
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let attempt_started = Instant::now();
        let result = match tokio::time::timeout(policy.attempt_timeout, attempt()).await {
            Ok(result) => result,
            Err(_) => Err(ObjectStoreError::Unavailable {
                operation,
                key: key.clone(),
                message: format!(
                    "no answer within {:?} (REQUEST_ATTEMPT_TIMEOUT)",
                    policy.attempt_timeout
                ),
            }),
        };
        let failed = result.as_ref().is_err_and(|e| e.is_retriable());
        stats.record_request(attempt_started.elapsed(), failed);
        match result {
            Err(e) if e.is_retriable() => {
                let backoff = policy.backoff(attempts);
                if attempts >= policy.attempts_max || started.elapsed() + backoff >= policy.deadline
                {
                    return Err(ObjectStoreError::Unavailable {
                        operation,
                        key,
                        message: format!(
                            "{e}; gave up after {attempts} attempts in {:?} (REQUEST_ATTEMPTS_MAX, REQUEST_DEADLINE)",
                            started.elapsed()
                        ),
                    });
                }
                Stats::add(&stats.request_retries, 1);
                tokio::time::sleep(backoff).await;
            }
            other => return other,
        }
    }
}

/// Refuses keys that could escape a directory or collide with the local
/// backend's own files: empty, too long, absolute, empty / `.` / `..` /
/// hidden (leading '.') components, or bytes outside `[A-Za-z0-9/_.=-]`.
pub fn validate_key(key: &str) -> Result<()> {
    let refuse = |reason| {
        Err(ObjectStoreError::InvalidKey {
            key: key.to_string(),
            reason,
        })
    };
    if key.is_empty() {
        return refuse("empty");
    }
    if key.len() > KEY_BYTES_MAX {
        return refuse("longer than KEY_BYTES_MAX");
    }
    if !key
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'_' | b'.' | b'=' | b'-'))
    {
        return refuse("a byte outside [A-Za-z0-9/_.=-]");
    }
    if key.split('/').any(|c| c.is_empty() || c.starts_with('.')) {
        return refuse("an empty, '.', '..' or hidden path component");
    }
    Ok(())
}

/// The store's tokio runtime, shut down without blocking when dropped (the
/// last handle may be dropped on any thread, even a runtime's).
struct OwnedRuntime {
    runtime: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
}

/// The CPU priority of a runtime's threads.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Priority {
    Normal,
    /// nice 19: runs only when the cores are not needed by anything else (lowering one's own
    /// priority needs no privilege; raising it back would, hence a runtime of its own).
    Background,
}

impl OwnedRuntime {
    fn new(priority: Priority) -> Result<OwnedRuntime> {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder
            .worker_threads(RUNTIME_WORKER_THREADS)
            .max_blocking_threads(RUNTIME_BLOCKING_THREADS_MAX)
            .enable_all();
        match priority {
            Priority::Normal => builder.thread_name("sluice-objstore"),
            Priority::Background => builder
                .thread_name("sluice-objstore-bg")
                .on_thread_start(lower_thread_priority),
        };
        let runtime = builder.build().map_err(|e| ObjectStoreError::Other {
            operation: "start",
            key: String::new(),
            message: format!("cannot start the object store runtime: {e}"),
        })?;
        let handle = runtime.handle().clone();
        Ok(OwnedRuntime {
            runtime: Some(runtime),
            handle,
        })
    }
}

/// Gives the calling thread the lowest CPU priority (nice 19; Linux nice values are per thread).
/// Should the kernel refuse, the thread simply keeps normal priority.
fn lower_thread_priority() {
    // SAFETY: gettid and setpriority take and return plain integers and touch no memory of ours.
    unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, BACKGROUND_NICE);
    }
}

/// The nice value of background threads: the lowest priority.
const BACKGROUND_NICE: libc::c_int = 19;

impl Drop for OwnedRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nice_of_thread() -> libc::c_int {
        // SAFETY: plain integer arguments; errno is not consulted (nice values are 0..19 here).
        unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) }
    }

    #[test]
    fn background_work_runs_at_the_lowest_priority_until_it_falls_behind() {
        let dir = tempfile::tempdir().unwrap();
        let store = ObjectStore::local(dir.path()).unwrap();
        let behind = Arc::new(AtomicBool::new(false));
        let background = store.background(behind.clone());
        let nice = |store: &ObjectStore| {
            futures::executor::block_on(store.spawn_blocking(nice_of_thread)).unwrap()
        };
        assert_eq!(nice(&store), 0);
        assert_eq!(nice(&background), BACKGROUND_NICE);
        behind.store(true, Ordering::Relaxed);
        assert_eq!(nice(&background), 0);
    }

    #[test]
    fn keys() {
        for good in ["sso/00000001", "a", "a/b.c/d_e-f=g", "x.y"] {
            assert!(validate_key(good).is_ok(), "{good}");
        }
        for bad in [
            "", "/abs", "a//b", "a/../b", "..", ".", "a/.tmp/x", "a/", "sp ace", "a\\b", "ü",
        ] {
            assert!(validate_key(bad).is_err(), "{bad}");
        }
        assert!(validate_key(&"a".repeat(KEY_BYTES_MAX + 1)).is_err());
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let p = RetryPolicy::default();
        assert_eq!(p.backoff(1), BACKOFF_INITIAL);
        assert_eq!(p.backoff(2), BACKOFF_INITIAL * 2);
        assert_eq!(p.backoff(40), BACKOFF_MAX);
    }
}
