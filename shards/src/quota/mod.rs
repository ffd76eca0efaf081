//! Client quota enforcement, per shard, as Kafka's `ClientQuotaManager` and
//! `ClientRequestQuotaManager` do it: the quota of a request's client (user and client id) is
//! resolved with Kafka's precedence (`sluice_metadata::quotas::resolve`), its usage measured
//! over Kafka's sampled windows (`rate.rs`) and paced by a token bucket (`bucket.rs`, which
//! says why not by Kafka's windows), and a client above its bound gets `throttle_time_ms` in
//! its response and its connection muted for that long (`connection.rs`, KIP-219).
//!
//! Across shards: a client's connections may be served by several shards (plaintext ones move
//! to their partitions' shard, TLS and SASL ones stay where they were accepted). Each shard
//! measures what it serves and publishes its per-entity rates to the others every
//! `QUOTA_USAGE_SHARE_INTERVAL_MS` over the mesh (`share_usage`); a shard's bucket refills at
//! the bound less the others' latest rates, and never at less than an even share of the bound
//! (`refill_per_s`), so that stale reports cannot starve it. We chose this over dividing the quota by the shards serving
//! an entity because that division needs the same exchange (who serves whom) and wastes the
//! quota of an idle shard; and over shared atomics because cross-shard state is a message in
//! this broker, never shared memory. The hot path reads and writes only this shard's maps
//! (a `RefCell`, no lock); a remote rate is at most one interval old, so a burst spread over
//! shards can pass the bound for that long before every shard sees it.

pub mod bucket;
pub mod connection;
pub mod rate;

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use sluice_metadata::{QuotaEntity, QuotaKey};

use crate::messaging::ShardRequest;
use crate::shard::Shard;
use crate::stop::StopSignal;
use bucket::TokenBucket;
use rate::SampledRate;

/// Most entities a shard measures at once; past it the least recently seen one is forgotten
/// (after those idle for a whole window), so a client cycling through client ids cannot grow
/// a shard's memory.
pub const QUOTA_ENTITIES_TRACKED_MAX: usize = 10_000;
/// How often a shard publishes its per-entity rates to the other shards.
pub const QUOTA_USAGE_SHARE_INTERVAL_MS: u64 = 200;
/// A shard's published rates older than this are ignored: it stopped publishing (stopping, or
/// its mesh queue is full), and a stale rate would throttle clients it no longer serves.
pub const QUOTA_REMOTE_USAGE_STALE_MS: u64 = 2000;
/// The most a request quota (request_percentage) throttles at once: one window, as Kafka's
/// `ClientRequestQuotaManager` bounds it.
pub const REQUEST_THROTTLE_MS_MAX: u64 = rate::QUOTA_WINDOW_MS;

/// What a quota limits, one per `QuotaKey`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaType {
    /// producer_byte_rate: bytes of produce requests.
    Produce = 0,
    /// consumer_byte_rate: bytes of fetched records.
    Fetch = 1,
    /// request_percentage: a shard's time spent on the client's requests, in percent.
    Request = 2,
}

impl QuotaType {
    pub const ALL: [QuotaType; 3] = [QuotaType::Produce, QuotaType::Fetch, QuotaType::Request];

    pub fn key(self) -> QuotaKey {
        match self {
            QuotaType::Produce => QuotaKey::ProducerByteRate,
            QuotaType::Fetch => QuotaKey::ConsumerByteRate,
            QuotaType::Request => QuotaKey::RequestPercentage,
        }
    }

    /// The metrics' label.
    pub fn label(self) -> &'static str {
        match self {
            QuotaType::Produce => "produce",
            QuotaType::Fetch => "fetch",
            QuotaType::Request => "request",
        }
    }
}

/// One shard's rates, per entity and quota type, as it publishes them.
pub type UsageReport = Vec<(QuotaEntity, [f64; 3])>;

/// A shard's quota measurements and the other shards' latest rates.
pub struct ShardQuotas {
    started: Instant,
    shard_count: usize,
    local: RefCell<HashMap<QuotaEntity, EntityUsage>>,
    /// By shard id: its latest report (empty for this shard).
    remote: RefCell<Vec<RemoteUsage>>,
}

#[derive(Default)]
struct EntityUsage {
    /// What this shard served, as it tells the other shards.
    rates: [SampledRate; 3],
    /// The throttle decision.
    buckets: [TokenBucket; 3],
    last_recorded_ms: u64,
}

#[derive(Default)]
struct RemoteUsage {
    received_ms: u64,
    rates: HashMap<QuotaEntity, [f64; 3]>,
}

impl ShardQuotas {
    /// The quota state of a shard of a broker with `shard_count` shards.
    pub fn new(shard_count: usize) -> ShardQuotas {
        ShardQuotas {
            started: Instant::now(),
            shard_count: shard_count.max(1),
            local: RefCell::new(HashMap::new()),
            remote: RefCell::new((0..shard_count).map(|_| RemoteUsage::default()).collect()),
        }
    }

    /// Records `value` of `kind` for `entity`, whose bound is `bound` (per second), and returns
    /// the throttle time: zero while the entity's bucket holds tokens.
    pub fn record(&self, entity: &QuotaEntity, kind: QuotaType, value: f64, bound: f64) -> u64 {
        let now_ms = self.now_ms();
        let mut local = self.local.borrow_mut();
        if !local.contains_key(entity) {
            make_room(&mut local, now_ms);
            local.insert(entity.clone(), EntityUsage::default());
        }
        let Some(usage) = local.get_mut(entity) else {
            return 0;
        };
        usage.rates[kind as usize].record(value, now_ms);
        usage.last_recorded_ms = now_ms;
        let refill = self.refill_per_s(entity, kind, bound, now_ms);
        let throttle = usage.buckets[kind as usize].take(value, now_ms, bound, refill);
        if kind == QuotaType::Request {
            throttle.min(REQUEST_THROTTLE_MS_MAX)
        } else {
            throttle
        }
    }

    /// This shard's rates of every entity it measures, forgetting those idle for a whole
    /// window (what `share_usage` publishes).
    pub fn report(&self) -> UsageReport {
        let now_ms = self.now_ms();
        let mut local = self.local.borrow_mut();
        local.retain(|_, usage| !usage.forgettable(now_ms));
        local
            .iter()
            .map(|(entity, usage)| {
                (
                    entity.clone(),
                    usage.rates.each_ref().map(|r| r.rate(now_ms)),
                )
            })
            .collect()
    }

    /// Keeps shard `from`'s latest report.
    pub fn receive(&self, from: usize, report: UsageReport) {
        let now_ms = self.now_ms();
        if let Some(remote) = self.remote.borrow_mut().get_mut(from) {
            remote.received_ms = now_ms;
            remote.rates = report.into_iter().collect();
        }
    }

    /// Entities this shard measures now.
    pub fn tracked(&self) -> usize {
        self.local.borrow().len()
    }

    /// How fast `entity`'s bucket of `kind` refills here: the bound less what the other shards
    /// serve it, and at least an even share of the bound.
    fn refill_per_s(&self, entity: &QuotaEntity, kind: QuotaType, bound: f64, now_ms: u64) -> f64 {
        let even_share = bound / self.shard_count as f64;
        (bound - self.remote_rate(entity, kind, now_ms)).max(even_share)
    }

    /// The other shards' latest rates of `entity`, those not stale.
    fn remote_rate(&self, entity: &QuotaEntity, kind: QuotaType, now_ms: u64) -> f64 {
        self.remote
            .borrow()
            .iter()
            .filter(|r| now_ms.saturating_sub(r.received_ms) < QUOTA_REMOTE_USAGE_STALE_MS)
            .filter_map(|r| r.rates.get(entity))
            .map(|rates| rates[kind as usize])
            .sum()
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// Publishes this shard's rates to every other shard every `QUOTA_USAGE_SHARE_INTERVAL_MS`
/// until `stop`; a broker of one shard has nobody to tell. When the shard measures nothing it
/// publishes one empty report, then stays quiet until it measures again.
pub async fn share_usage(shard: Rc<Shard>, stop: StopSignal) {
    if shard.count < 2 {
        return;
    }
    let mut published_empty = false;
    loop {
        futures::select_biased! {
            _ = futures::FutureExt::fuse(stop.clone()) => return,
            _ = futures::FutureExt::fuse(glommio::timer::sleep(Duration::from_millis(QUOTA_USAGE_SHARE_INTERVAL_MS))) => {}
        }
        let report = shard.quotas.report();
        if report.is_empty() {
            if published_empty {
                continue;
            }
            published_empty = true;
        } else {
            published_empty = false;
        }
        for to in (0..shard.count).filter(|to| *to != shard.id) {
            let request = ShardRequest::QuotaUsage {
                from: shard.id,
                report: report.clone(),
            };
            shard.mesh.deliver(to, request).await;
        }
    }
}

impl EntityUsage {
    /// True when the entity was idle for a whole window and owes no throttle: forgetting it
    /// loses nothing.
    fn forgettable(&self, now_ms: u64) -> bool {
        self.rates.iter().all(|r| r.idle(now_ms)) && !self.buckets.iter().any(|b| b.in_debt(now_ms))
    }
}

/// Makes room for one more entity: forgets the idle ones, then the least recently seen.
fn make_room(local: &mut HashMap<QuotaEntity, EntityUsage>, now_ms: u64) {
    if local.len() < QUOTA_ENTITIES_TRACKED_MAX {
        return;
    }
    local.retain(|_, usage| !usage.forgettable(now_ms));
    if local.len() < QUOTA_ENTITIES_TRACKED_MAX {
        return;
    }
    let oldest = local
        .iter()
        .min_by_key(|(_, usage)| usage.last_recorded_ms)
        .map(|(entity, _)| entity.clone());
    if let Some(oldest) = oldest {
        local.remove(&oldest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_metadata::EntityName;

    fn client(name: &str) -> QuotaEntity {
        QuotaEntity {
            user: None,
            client_id: Some(EntityName::Named(name.to_string())),
        }
    }

    #[test]
    fn another_shards_rate_slows_the_refill_down_to_an_even_share() {
        let quotas = ShardQuotas::new(2);
        let bound = 1000.0;
        // A full bucket passes one window of the bound; half a window more is a debt of 500.
        assert_eq!(
            quotas.record(&client("a"), QuotaType::Produce, 1000.0, bound),
            0
        );
        let alone = quotas.record(&client("a"), QuotaType::Produce, 500.0, bound);
        assert!((490..=500).contains(&alone), "{alone} ms");
        // The other shard serves b 300 bytes/s: the debt refills at 700 bytes/s.
        quotas.receive(1, vec![(client("b"), [300.0, 0.0, 0.0])]);
        assert_eq!(
            quotas.record(&client("b"), QuotaType::Produce, 1000.0, bound),
            0
        );
        let shared = quotas.record(&client("b"), QuotaType::Produce, 500.0, bound);
        assert!((700..=715).contains(&shared), "{shared} ms");
        // It serves c above the bound: the refill is still half the bound here.
        quotas.receive(1, vec![(client("c"), [5000.0, 0.0, 0.0])]);
        assert_eq!(
            quotas.record(&client("c"), QuotaType::Produce, 1000.0, bound),
            0
        );
        let starved = quotas.record(&client("c"), QuotaType::Produce, 500.0, bound);
        assert!((990..=1000).contains(&starved), "{starved} ms");
        assert_eq!(quotas.report().len(), 3);
    }

    #[test]
    fn tracked_entities_are_bounded() {
        let quotas = ShardQuotas::new(1);
        for i in 0..QUOTA_ENTITIES_TRACKED_MAX + 10 {
            quotas.record(&client(&format!("c{i}")), QuotaType::Fetch, 1.0, 1e9);
        }
        assert_eq!(quotas.tracked(), QUOTA_ENTITIES_TRACKED_MAX);
    }

    #[test]
    fn request_throttles_are_bounded_by_one_window() {
        let quotas = ShardQuotas::new(1);
        let throttle = quotas.record(&client("a"), QuotaType::Request, 1e6, 1.0);
        assert_eq!(throttle, REQUEST_THROTTLE_MS_MAX);
    }
}
