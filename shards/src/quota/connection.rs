//! One connection's side of the quotas: which quotas apply to its requests (resolved once per
//! principal, client id and metadata change, so that the hot path neither allocates nor
//! searches the metadata), what each request costs, and the mute that throttles it.
//!
//! KIP-219: a response that can carry a throttle to a client that honours it (Produce v6+,
//! Fetch v8+, every other API the broker answers) goes out at once with `throttle_time_ms`,
//! and the connection is not read again for that long; an older Produce or Fetch response is
//! held back for the throttle time instead, as Kafka did before KIP-219.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_metadata::QuotaEntities;
use sluice_metadata::QuotaEntity;
use sluice_metadata::quotas::{metric_entity, resolve};
use sluice_net::Response;

use super::QuotaType;
use crate::shard::Shard;

/// Kafka's quota user of a principal: its name without the type (`User:alice` → `alice`).
const USER_PRINCIPAL_PREFIX: &str = "User:";
/// The first Produce version whose client throttles itself (KIP-219).
const PRODUCE_CLIENT_THROTTLE_VERSION: i16 = 6;
/// The first Fetch version whose client throttles itself (KIP-219).
const FETCH_CLIENT_THROTTLE_VERSION: i16 = 8;
/// Nanoseconds of a shard's time that make one percent-second (Kafka's
/// `ClientRequestQuotaManager.nanosToPercentage`).
const NANOS_PER_PERCENT: f64 = 1e9 / 100.0;

/// A connection's quota state.
#[derive(Default)]
pub struct ConnectionQuotas {
    resolved: RefCell<Option<Resolved>>,
    muted_until: Cell<Option<Instant>>,
    /// The latest answer carried a throttle: the connection's next requests are served one
    /// at a time until an answer carries none.
    throttled: Cell<bool>,
}

/// The quotas applying to one (principal, client id) under one metadata's quotas.
struct Resolved {
    quotas: Arc<QuotaEntities>,
    principal: Rc<str>,
    client_id: String,
    applied: Option<Rc<Applied>>,
}

/// For each `QuotaType`, its bound and the entity its usage is measured under, if a quota
/// applies.
pub struct Applied {
    limits: [Option<(f64, QuotaEntity)>; 3],
}

impl ConnectionQuotas {
    /// The quotas applying to a request of `principal` with `client_id`; None when none does,
    /// which costs one check of an empty map when no quota is set.
    pub fn applied(
        &self,
        quotas: &Arc<QuotaEntities>,
        principal: &Rc<str>,
        client_id: &str,
    ) -> Option<Rc<Applied>> {
        if quotas.is_empty() {
            return None;
        }
        let mut resolved = self.resolved.borrow_mut();
        if let Some(r) = &*resolved
            && Arc::ptr_eq(&r.quotas, quotas)
            && Rc::ptr_eq(&r.principal, principal)
            && r.client_id == client_id
        {
            return r.applied.clone();
        }
        let applied = applied_to(quotas, principal, client_id).map(Rc::new);
        *resolved = Some(Resolved {
            quotas: quotas.clone(),
            principal: principal.clone(),
            client_id: client_id.to_string(),
            applied: applied.clone(),
        });
        applied
    }

    /// Keeps the connection from reading for `throttle_ms` from now (or longer, if an earlier
    /// throttle ends later).
    pub fn mute_for(&self, throttle_ms: u64) {
        let until = Instant::now() + Duration::from_millis(throttle_ms);
        if self.muted_until.get().is_none_or(|current| current < until) {
            self.muted_until.set(Some(until));
        }
    }

    /// Records whether the latest answer carried a throttle.
    pub fn set_throttled(&self, throttled: bool) {
        self.throttled.set(throttled);
    }

    /// True while the connection is throttled: the read loop then waits for the answers in
    /// flight (whose charges may set a mute) before it dispatches the next request, as Kafka
    /// serves every connection. With requests pipelined, those read before an answer set
    /// the mute would otherwise pass unthrottled: a client that sent 16 at once passed 16
    /// of them (16 MB against a 10 MB/s quota) in one go.
    pub fn throttled(&self) -> bool {
        self.throttled.get()
    }

    /// How long the connection must not read now, clearing the mute.
    pub fn take_mute(&self) -> Option<Duration> {
        let until = self.muted_until.take()?;
        let left = until.saturating_duration_since(Instant::now());
        (!left.is_zero()).then_some(left)
    }
}

impl Applied {
    /// Charges a handled request to its quotas: `request_bytes` for a produce, the records of
    /// a fetch response, `busy` (the shard's time polling the request) to the request quota.
    /// Returns the throttle time (the longest of the quotas' throttles) after writing it into
    /// a Produce or Fetch response, and counts it in the shard's metrics.
    pub fn charge(
        &self,
        shard: &Shard,
        response: Option<&mut Response>,
        request_bytes: usize,
        produce: bool,
        busy: Duration,
    ) -> u64 {
        let mut throttle = 0;
        let mut charge = |kind: QuotaType, value: f64| {
            if let Some((bound, entity)) = &self.limits[kind as usize] {
                let ms = shard.quotas.record(entity, kind, value, *bound);
                if ms > 0 {
                    shard.metrics.quota_throttle_ms[kind as usize].add(ms);
                }
                throttle = throttle.max(ms);
            }
        };
        if produce {
            charge(QuotaType::Produce, request_bytes as f64);
        }
        if let Some(Response::Fetch(fetch)) = &response {
            let bytes: usize = fetch
                .responses
                .iter()
                .flat_map(|t| &t.partitions)
                .filter_map(|p| p.records.as_ref().map(|r| r.len()))
                .sum();
            charge(QuotaType::Fetch, bytes as f64);
        }
        charge(
            QuotaType::Request,
            busy.as_nanos() as f64 / NANOS_PER_PERCENT,
        );
        let throttle_time_ms = i32::try_from(throttle).unwrap_or(i32::MAX);
        match response {
            Some(Response::Produce(r)) => r.throttle_time_ms = throttle_time_ms,
            Some(Response::Fetch(r)) => r.throttle_time_ms = throttle_time_ms,
            _ => {}
        }
        throttle
    }

    /// The most a fetch may return at once under a fetch quota: what the quota's bucket holds
    /// (`bucket::QUOTA_BURST_MS` of it), at least one byte. None without a fetch quota.
    pub fn fetch_bytes_max(&self) -> Option<i32> {
        let (bound, _) = self.limits[QuotaType::Fetch as usize].as_ref()?;
        let bytes = bound * super::bucket::QUOTA_BURST_MS as f64 / 1000.0;
        Some(bytes.clamp(1.0, f64::from(i32::MAX)) as i32)
    }

    /// True when a request quota applies (its time must be measured).
    pub fn measures_time(&self) -> bool {
        self.limits[QuotaType::Request as usize].is_some()
    }
}

/// True when the client of this response throttles itself (KIP-219): the broker sends it at
/// once and mutes the connection; otherwise the broker holds the response back.
pub fn client_throttles(response: Option<&Response>, version: i16) -> bool {
    match response {
        Some(Response::Produce(_)) => version >= PRODUCE_CLIENT_THROTTLE_VERSION,
        Some(Response::Fetch(_)) => version >= FETCH_CLIENT_THROTTLE_VERSION,
        _ => true,
    }
}

/// The quotas applying to `principal` and `client_id`, None when none does.
fn applied_to(quotas: &QuotaEntities, principal: &str, client_id: &str) -> Option<Applied> {
    let user = principal
        .strip_prefix(USER_PRINCIPAL_PREFIX)
        .unwrap_or(principal);
    let limits = QuotaType::ALL.map(|kind| {
        resolve(quotas, user, client_id, kind.key())
            .map(|(entity, value)| (value.get(), metric_entity(&entity, user, client_id)))
    });
    limits
        .iter()
        .any(Option::is_some)
        .then_some(Applied { limits })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_metadata::{EntityName, QuotaKey, QuotaValue};
    use std::collections::BTreeMap;

    #[test]
    fn the_resolution_is_cached_until_the_quotas_or_the_client_change() {
        let connection = ConnectionQuotas::default();
        let principal: Rc<str> = "User:alice".into();
        let empty = Arc::new(QuotaEntities::new());
        assert!(connection.applied(&empty, &principal, "app").is_none());
        let entity = QuotaEntity {
            user: Some(EntityName::Named("alice".to_string())),
            client_id: None,
        };
        let quotas = Arc::new(QuotaEntities::from([(
            entity.clone(),
            BTreeMap::from([(QuotaKey::ProducerByteRate, QuotaValue::new(100.0))]),
        )]));
        let applied = connection.applied(&quotas, &principal, "app").unwrap();
        let (bound, measured) = applied.limits[QuotaType::Produce as usize]
            .as_ref()
            .unwrap();
        assert_eq!((*bound, measured), (100.0, &entity));
        assert!(applied.limits[QuotaType::Fetch as usize].is_none());
        let again = connection.applied(&quotas, &principal, "app").unwrap();
        assert!(Rc::ptr_eq(&applied, &again));
        let bob: Rc<str> = "User:bob".into();
        assert!(connection.applied(&quotas, &bob, "app").is_none());
    }

    #[test]
    fn a_fetch_quota_bounds_a_fetch_to_one_second_of_it() {
        let entity = |user: &str| QuotaEntity {
            user: Some(EntityName::Named(user.to_string())),
            client_id: None,
        };
        let quotas = Arc::new(QuotaEntities::from([
            (
                entity("alice"),
                BTreeMap::from([(QuotaKey::ConsumerByteRate, QuotaValue::new(2_000_000.0))]),
            ),
            (
                entity("bob"),
                BTreeMap::from([(QuotaKey::ProducerByteRate, QuotaValue::new(100.0))]),
            ),
        ]));
        let applied = |user: &str| {
            let principal: Rc<str> = format!("User:{user}").into();
            ConnectionQuotas::default()
                .applied(&quotas, &principal, "app")
                .expect("a quota applies")
        };
        assert_eq!(applied("alice").fetch_bytes_max(), Some(2_000_000));
        assert_eq!(applied("bob").fetch_bytes_max(), None);
    }

    #[test]
    fn old_versions_are_delayed_new_ones_muted() {
        use sluice_net::messages::produce_response::ProduceResponse;
        let produce = Response::Produce(ProduceResponse::default());
        assert!(!client_throttles(Some(&produce), 5));
        assert!(client_throttles(Some(&produce), 6));
        assert!(client_throttles(None, 3));
    }

    #[test]
    fn a_mute_lasts_its_time_and_is_taken_once() {
        let connection = ConnectionQuotas::default();
        assert!(connection.take_mute().is_none());
        connection.mute_for(50);
        connection.mute_for(10);
        let left = connection.take_mute().unwrap();
        assert!(left > Duration::from_millis(10) && left <= Duration::from_millis(50));
        assert!(connection.take_mute().is_none());
    }
}
