//! An in-memory backend with seeded faults, for the deterministic simulation of a shard
//! (cargo feature `sim`, on only in that test's build; `shards/tests/sim.rs`).
//!
//! Whether a request fails is a function of the seed, the operation, the key and how many
//! times that operation was asked for that key while faults were on: never of the order in
//! which the store's threads run concurrent requests, so one seed gives one history. Faults:
//! requests answered "unavailable" (retried by the store), requests applied but answered
//! "unavailable" (a lost answer: the retry finds its own object), slow answers, and puts
//! refused as by a full store (not retried). Writes (put, delete) and reads (get, head, list)
//! are switched apart: a block cache's prefetches run on the store's threads whenever they
//! do, so a simulation that must replay exactly turns read faults on only while the reads
//! it waits for run, and a checker turns both off to read what is really stored.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;

use crate::error::{ObjectStoreError, object_range};
use crate::store::{BoxFuture, ObjectBackend, ObjectMeta, Result};

/// How a [`MemoryBackend`] misbehaves. Probabilities are in parts per million of requests.
#[derive(Clone, Copy, Debug, Default)]
pub struct MemoryBackendConfig {
    /// Seeds every fault decision.
    pub seed: u64,
    /// Requests answered `Unavailable` without being applied.
    pub unavailable_ppm: u32,
    /// Requests applied, then answered `Unavailable` (the answer was lost).
    pub answer_lost_ppm: u32,
    /// Requests answered after `slow_ms` (real time, on the store's runtime).
    pub slow_ppm: u32,
    pub slow_ms: u64,
    /// Puts refused as by a full store (`Other`, which the store does not retry).
    pub full_ppm: u32,
    /// A deliberately broken store, to show that the simulator's checks catch it.
    pub bug: Option<MemoryBackendBug>,
}

/// Ways a broken store lies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryBackendBug {
    /// Every put answers success; one in eight (by the seed) stores nothing.
    LosesPuts,
}

/// The objects, in memory; clones share them.
#[derive(Clone)]
pub struct MemoryBackend {
    inner: Arc<MemoryInner>,
}

struct MemoryInner {
    config: MemoryBackendConfig,
    write_faults: AtomicBool,
    read_faults: AtomicBool,
    state: Mutex<MemoryState>,
}

#[derive(Default)]
struct MemoryState {
    objects: BTreeMap<String, Bytes>,
    /// Requests seen per (operation, key): the attempt number in each fault decision.
    attempts: HashMap<(&'static str, String), u64>,
}

/// What one request is told to do.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    Unavailable,
    AnswerLost,
    Full,
}

impl MemoryBackend {
    pub fn new(config: MemoryBackendConfig) -> MemoryBackend {
        MemoryBackend {
            inner: Arc::new(MemoryInner {
                config,
                write_faults: AtomicBool::new(true),
                read_faults: AtomicBool::new(true),
                state: Mutex::new(MemoryState::default()),
            }),
        }
    }

    /// Turns the configured faults (not the bug) of puts and deletes on or off.
    pub fn set_write_faults(&self, on: bool) {
        self.inner.write_faults.store(on, Ordering::SeqCst);
    }

    /// Turns the configured faults of gets, heads and lists on or off.
    pub fn set_read_faults(&self, on: bool) {
        self.inner.read_faults.store(on, Ordering::SeqCst);
    }

    /// Keys of the objects stored, in order.
    pub fn keys(&self) -> Vec<String> {
        self.inner.state().objects.keys().cloned().collect()
    }

    /// Runs one request: decides its fault, applies `apply` unless the fault forbids it.
    fn request<T: Send + 'static>(
        &self,
        operation: &'static str,
        key: String,
        apply: impl FnOnce(&mut MemoryState, &str) -> Result<T> + Send + 'static,
    ) -> BoxFuture<Result<T>> {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move {
            let (fault, slow) = inner.decide(operation, &key);
            if slow {
                tokio::time::sleep(Duration::from_millis(inner.config.slow_ms)).await;
            }
            let unavailable = || ObjectStoreError::Unavailable {
                operation,
                key: key.clone(),
                message: "simulated outage".to_string(),
            };
            match fault {
                Fault::Unavailable => Err(unavailable()),
                Fault::Full => Err(ObjectStoreError::Other {
                    operation,
                    key: key.clone(),
                    message: "simulated store full".to_string(),
                }),
                Fault::AnswerLost => {
                    let _ = apply(&mut inner.state(), &key);
                    Err(unavailable())
                }
                Fault::None => apply(&mut inner.state(), &key),
            }
        })
    }
}

impl MemoryInner {
    fn state(&self) -> MutexGuard<'_, MemoryState> {
        // A panic while holding the lock leaves whole objects behind: the map stays usable.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The fault and slowness of this attempt of `operation` on `key`.
    fn decide(&self, operation: &'static str, key: &str) -> (Fault, bool) {
        let faults = if matches!(operation, "get" | "head" | "list") {
            &self.read_faults
        } else {
            &self.write_faults
        };
        if !faults.load(Ordering::SeqCst) {
            return (Fault::None, false);
        }
        let attempt = {
            let mut state = self.state();
            let count = state
                .attempts
                .entry((operation, key.to_string()))
                .or_insert(0);
            *count += 1;
            *count
        };
        let config = &self.config;
        let draw = |salt: u64| mix(config.seed, operation, key, attempt, salt) % 1_000_000;
        let slow = draw(1) < u64::from(config.slow_ppm);
        let roll = draw(2);
        let unavailable = u64::from(config.unavailable_ppm);
        let lost = unavailable + u64::from(config.answer_lost_ppm);
        let full = lost + u64::from(config.full_ppm);
        let is_put = operation.starts_with("put");
        let fault = if roll < unavailable {
            Fault::Unavailable
        } else if roll < lost {
            Fault::AnswerLost
        } else if roll < full && is_put {
            Fault::Full
        } else {
            Fault::None
        };
        (fault, slow)
    }

    /// Whether the broken store drops this put (one in eight, by key and seed).
    fn loses_put(&self, key: &str) -> bool {
        self.config.bug == Some(MemoryBackendBug::LosesPuts)
            && mix(self.config.seed, "lose", key, 0, 3).is_multiple_of(8)
    }
}

impl ObjectBackend for MemoryBackend {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn put(&self, key: String, data: Bytes) -> BoxFuture<Result<()>> {
        let lost = self.inner.loses_put(&key);
        self.request("put", key, move |state, key| {
            if !lost {
                state.objects.insert(key.to_string(), data);
            }
            Ok(())
        })
    }

    fn put_if_absent(&self, key: String, data: Bytes) -> BoxFuture<Result<()>> {
        let lost = self.inner.loses_put(&key);
        self.request("put_if_absent", key, move |state, key| {
            if state.objects.contains_key(key) {
                return Err(ObjectStoreError::AlreadyExists {
                    key: key.to_string(),
                });
            }
            if !lost {
                state.objects.insert(key.to_string(), data);
            }
            Ok(())
        })
    }

    fn get(&self, key: String, range: Option<Range<u64>>) -> BoxFuture<Result<Bytes>> {
        self.request("get", key, move |state, key| {
            let object = state
                .objects
                .get(key)
                .ok_or_else(|| ObjectStoreError::NotFound {
                    key: key.to_string(),
                })?;
            let Range { start, end } = object_range(key, range, object.len() as u64)?;
            Ok(object.slice(start as usize..end as usize))
        })
    }

    fn head(&self, key: String) -> BoxFuture<Result<u64>> {
        self.request("head", key, |state, key| {
            state
                .objects
                .get(key)
                .map(|object| object.len() as u64)
                .ok_or_else(|| ObjectStoreError::NotFound {
                    key: key.to_string(),
                })
        })
    }

    fn list(&self, prefix: String) -> BoxFuture<Result<Vec<ObjectMeta>>> {
        self.request("list", prefix, |state, prefix| {
            Ok(state
                .objects
                .range(prefix.to_string()..)
                .take_while(|(key, _)| key.starts_with(prefix))
                .map(|(key, object)| ObjectMeta {
                    key: key.clone(),
                    size: object.len() as u64,
                })
                .collect())
        })
    }

    fn delete(&self, keys: Vec<String>) -> BoxFuture<Result<()>> {
        let first = keys.first().cloned().unwrap_or_default();
        self.request("delete", first, move |state, _| {
            for key in &keys {
                state.objects.remove(key);
            }
            Ok(())
        })
    }
}

/// A 64-bit mix of the inputs of one decision (SplitMix64's finaliser over FNV-1a).
fn mix(seed: u64, operation: &str, key: &str, attempt: u64, salt: u64) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    for byte in operation.bytes().chain([0]).chain(key.bytes()) {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
    let mut z = hash ^ attempt.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ salt.rotate_left(32);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{ObjectStore, RetryPolicy};

    fn store(config: MemoryBackendConfig) -> (MemoryBackend, ObjectStore) {
        let backend = MemoryBackend::new(config);
        let store = ObjectStore::simulated(backend.clone())
            .expect("runtime")
            .with_retry(RetryPolicy {
                attempts_max: 3,
                attempt_timeout: Duration::from_secs(5),
                deadline: Duration::from_secs(10),
                backoff_initial: Duration::from_millis(1),
                backoff_max: Duration::from_millis(2),
            });
        (backend, store)
    }

    #[test]
    fn objects_round_trip_with_ranges_listing_and_deletes() {
        let (_, store) = store(MemoryBackendConfig::default());
        futures::executor::block_on(async {
            store
                .put("a/1", Bytes::from_static(b"hello"))
                .await
                .unwrap();
            store
                .put("a/2", Bytes::from_static(b"world"))
                .await
                .unwrap();
            assert_eq!(store.get_range("a/1", 1..3).await.unwrap(), &b"el"[..]);
            assert_eq!(store.head("a/2").await.unwrap(), 5);
            assert!(matches!(
                store.put_if_absent("a/1", Bytes::new()).await,
                Err(ObjectStoreError::AlreadyExists { .. })
            ));
            let keys: Vec<String> = store
                .list("a/")
                .await
                .unwrap()
                .into_iter()
                .map(|m| m.key)
                .collect();
            assert_eq!(keys, ["a/1", "a/2"]);
            store.delete(&["a/1".to_string()]).await.unwrap();
            assert!(matches!(
                store.get("a/1").await,
                Err(ObjectStoreError::NotFound { .. })
            ));
        });
    }

    #[test]
    fn the_same_seed_fails_the_same_requests() {
        let outcomes = |seed| {
            let (_, store) = store(MemoryBackendConfig {
                seed,
                unavailable_ppm: 400_000,
                full_ppm: 200_000,
                ..MemoryBackendConfig::default()
            });
            futures::executor::block_on(async {
                let mut outcomes = Vec::new();
                for index in 0..40 {
                    let key = format!("k/{index}");
                    outcomes.push(store.put(&key, Bytes::from(key.clone())).await.is_ok());
                }
                outcomes
            })
        };
        let first = outcomes(7);
        assert_eq!(first, outcomes(7));
        assert!(first.contains(&true) && first.contains(&false), "{first:?}");
    }

    #[test]
    fn a_lost_answer_leaves_the_object_for_the_retry_to_find() {
        let (backend, store) = store(MemoryBackendConfig {
            seed: 1,
            answer_lost_ppm: 1_000_000,
            ..MemoryBackendConfig::default()
        });
        let put = futures::executor::block_on(store.put_if_absent("k", Bytes::from_static(b"v")));
        assert!(put.is_err(), "every answer is lost");
        assert_eq!(backend.keys(), ["k"], "yet the object is stored");
        backend.set_write_faults(false);
        backend.set_read_faults(false);
        assert_eq!(
            futures::executor::block_on(store.get("k")).unwrap(),
            &b"v"[..]
        );
    }
}
