//! Caps on the connections a broker holds: `connections_max` in all (Kafka's
//! `max.connections`) and `connections_max_per_ip` from one client address
//! (`max.connections.per.ip`), shared by every shard.
//!
//! A shard's accept loop asks [`ConnectionLimits::admit`] for every accepted socket. Admitted,
//! the connection holds the [`ConnectionPermit`] until its socket closes (on whatever shard it
//! ends up: the permit moves with it). Refused, the socket is closed right away. That is
//! Kafka's answer over the per-IP limit (`SocketServer` closes the channel after accept); over
//! the broker limit Kafka stops accepting until a connection closes, which with SO_REUSEPORT
//! and one listener per shard would leave the kernel queueing connections on a shard that
//! cannot take them, so Sluice closes those too. Either refusal is counted
//! ([`ConnectionLimits::refused_total`]) and logged as one WARN line naming the limit and its
//! flag, at most every [`WARN_INTERVAL`] per broker, with the number of refusals not logged.
//!
//! Accepting a connection is not on the request path: the broker count is an atomic, the
//! per-address counts a map behind a mutex held for one lookup.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::config::BrokerConfig;
use crate::warn_throttle::WarnThrottle;

/// The shortest time between two WARN lines about refused connections.
pub const WARN_INTERVAL: Duration = Duration::from_secs(10);

/// The two connection limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Limit {
    /// Connections open to the broker (`connections_max`, Kafka's `max.connections`).
    ConnectionsMax,
    /// Connections open from one client address (`connections_max_per_ip`, Kafka's
    /// `max.connections.per.ip`).
    ConnectionsMaxPerIp,
}

impl Limit {
    /// Both limits, in the order of [`Limit::index`].
    pub const ALL: [Limit; 2] = [Limit::ConnectionsMax, Limit::ConnectionsMaxPerIp];

    /// The config name (BrokerConfig field and TOML key), also a metric label.
    pub fn name(self) -> &'static str {
        match self {
            Limit::ConnectionsMax => "connections_max",
            Limit::ConnectionsMaxPerIp => "connections_max_per_ip",
        }
    }

    /// The `sluice start` flag that sets it.
    pub fn flag(self) -> &'static str {
        match self {
            Limit::ConnectionsMax => "--connections-max",
            Limit::ConnectionsMaxPerIp => "--connections-max-per-ip",
        }
    }

    /// Kafka's name for the same limit.
    pub fn kafka_name(self) -> &'static str {
        match self {
            Limit::ConnectionsMax => "max.connections",
            Limit::ConnectionsMaxPerIp => "max.connections.per.ip",
        }
    }

    fn index(self) -> usize {
        match self {
            Limit::ConnectionsMax => 0,
            Limit::ConnectionsMaxPerIp => 1,
        }
    }
}

/// Why a connection was refused: the limit it would have crossed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitHit {
    /// Which limit.
    pub limit: Limit,
    /// Its value.
    pub max: usize,
    /// The client's address (canonical: an IPv4-mapped IPv6 address as IPv4).
    pub ip: IpAddr,
}

impl std::fmt::Display for LimitHit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let holder = match self.limit {
            Limit::ConnectionsMax => "the broker",
            Limit::ConnectionsMaxPerIp => "this address",
        };
        write!(
            f,
            "connection from {} refused: {holder} already has {} connections open, the limit \
             {} = {} ({} N; Kafka's {})",
            self.ip,
            self.max,
            self.limit.name(),
            self.max,
            self.limit.flag(),
            self.limit.kafka_name()
        )
    }
}

impl std::error::Error for LimitHit {}

/// The connection limits of one broker; one `Arc` shared by all its shards.
#[derive(Debug)]
pub struct ConnectionLimits {
    connections_max: usize,
    connections_max_per_ip: usize,
    /// Connections holding a permit.
    open: AtomicUsize,
    /// Connections holding a permit, by client address; no entry at zero, so at most
    /// `connections_max` entries.
    open_by_ip: Mutex<HashMap<IpAddr, usize>>,
    /// Refusals by [`Limit::index`].
    refused: [AtomicU64; 2],
    warnings: WarnThrottle,
}

impl ConnectionLimits {
    /// Limits of `connections_max` connections in all and `connections_max_per_ip` from one
    /// address (both at least 1).
    pub fn new(connections_max: usize, connections_max_per_ip: usize) -> Arc<ConnectionLimits> {
        assert!(connections_max >= 1, "connections_max must be at least 1");
        assert!(
            connections_max_per_ip >= 1,
            "connections_max_per_ip must be at least 1"
        );
        Arc::new(ConnectionLimits {
            connections_max,
            connections_max_per_ip,
            open: AtomicUsize::new(0),
            open_by_ip: Mutex::new(HashMap::new()),
            refused: [AtomicU64::new(0), AtomicU64::new(0)],
            warnings: WarnThrottle::new(WARN_INTERVAL),
        })
    }

    /// The limits of `config` (`--connections-max`, `--connections-max-per-ip`).
    pub fn from_config(config: &BrokerConfig) -> Arc<ConnectionLimits> {
        ConnectionLimits::new(config.connections_max, config.connections_max_per_ip)
    }

    /// Admits a connection from `ip`, or refuses it: counted, and logged at most every
    /// [`WARN_INTERVAL`]. The caller closes a refused socket at once; an admitted connection
    /// keeps the permit until its socket closes.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<ConnectionPermit, LimitHit> {
        let ip = ip.to_canonical();
        match self.try_admit(ip) {
            Ok(()) => Ok(ConnectionPermit {
                limits: self.clone(),
                ip,
            }),
            Err(hit) => {
                self.refused[hit.limit.index()].fetch_add(1, Ordering::Relaxed);
                if let Some(unlogged) = self.warnings.ready(Instant::now()) {
                    tracing::warn!(
                        limit = hit.limit.name(),
                        kafka_config = hit.limit.kafka_name(),
                        refused_since_last_warning = unlogged,
                        "{hit}"
                    );
                }
                Err(hit)
            }
        }
    }

    /// Connections open now (holding a permit).
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Connections open now from `ip`.
    pub fn open_from(&self, ip: IpAddr) -> usize {
        self.by_ip().get(&ip.to_canonical()).copied().unwrap_or(0)
    }

    /// Connections refused so far because of `limit`.
    pub fn refused_total(&self, limit: Limit) -> u64 {
        self.refused[limit.index()].load(Ordering::Relaxed)
    }

    /// The value of `limit`.
    pub fn max(&self, limit: Limit) -> usize {
        match limit {
            Limit::ConnectionsMax => self.connections_max,
            Limit::ConnectionsMaxPerIp => self.connections_max_per_ip,
        }
    }

    /// Takes a place in both counts, or none. The broker count first, as Kafka waits for a
    /// broker slot before it counts the address.
    fn try_admit(&self, ip: IpAddr) -> Result<(), LimitHit> {
        let hit = |limit| LimitHit {
            limit,
            max: self.max(limit),
            ip,
        };
        self.open
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < self.connections_max).then_some(n + 1)
            })
            .map_err(|_| hit(Limit::ConnectionsMax))?;
        let mut by_ip = self.by_ip();
        let from_ip = by_ip.entry(ip).or_insert(0);
        if *from_ip >= self.connections_max_per_ip {
            // Only present when other connections from `ip` are open: no zero entry is left.
            drop(by_ip);
            self.open.fetch_sub(1, Ordering::Relaxed);
            return Err(hit(Limit::ConnectionsMaxPerIp));
        }
        *from_ip += 1;
        Ok(())
    }

    fn release(&self, ip: IpAddr) {
        {
            let mut by_ip = self.by_ip();
            match by_ip.get_mut(&ip) {
                Some(n) if *n > 1 => *n -= 1,
                Some(_) => {
                    by_ip.remove(&ip);
                }
                None => debug_assert!(false, "a permit of {ip} without a count"),
            }
        }
        let before = self.open.fetch_sub(1, Ordering::Relaxed);
        debug_assert!(before > 0, "a permit released with no connection open");
    }

    /// The per-address counts. A panic while the lock was held cannot leave them half-updated
    /// (each update is one map operation), so a poisoned lock is used as it is.
    fn by_ip(&self) -> MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.open_by_ip
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// An admitted connection's place in the counts, given back when it is dropped. Keep it as
/// long as the socket is open, and move it with the socket when the connection changes shard.
#[derive(Debug)]
#[must_use = "the connection is counted only while its permit lives"]
pub struct ConnectionPermit {
    limits: Arc<ConnectionLimits>,
    ip: IpAddr,
}

impl ConnectionPermit {
    /// The client address the connection is counted under.
    pub fn ip(&self) -> IpAddr {
        self.ip
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        self.limits.release(self.ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, last))
    }

    #[test]
    fn an_address_gets_up_to_its_limit_and_others_are_not_affected() {
        let limits = ConnectionLimits::new(100, 2);
        let a1 = limits.admit(ip(1)).expect("first from .1");
        let _a2 = limits.admit(ip(1)).expect("second from .1");
        let refused = limits.admit(ip(1)).expect_err("third from .1");
        assert_eq!(
            refused,
            LimitHit {
                limit: Limit::ConnectionsMaxPerIp,
                max: 2,
                ip: ip(1)
            }
        );
        let _b = limits.admit(ip(2)).expect("another address");
        assert_eq!((limits.open(), limits.open_from(ip(1))), (3, 2));
        // The refusal took no place in either count.
        assert_eq!(limits.refused_total(Limit::ConnectionsMaxPerIp), 1);
        assert_eq!(limits.refused_total(Limit::ConnectionsMax), 0);
        drop(a1);
        assert_eq!(limits.open_from(ip(1)), 1);
        let _a3 = limits.admit(ip(1)).expect("a place was given back");
    }

    #[test]
    fn the_broker_limit_holds_over_all_addresses() {
        let limits = ConnectionLimits::new(3, 2);
        let permits: Vec<_> = (1..=3)
            .map(|i| limits.admit(ip(i)).expect("under the limit"))
            .collect();
        let refused = limits.admit(ip(4)).expect_err("fourth connection");
        assert_eq!(refused.limit, Limit::ConnectionsMax);
        assert_eq!(refused.max, 3);
        assert_eq!(limits.open_from(ip(4)), 0);
        assert_eq!(limits.refused_total(Limit::ConnectionsMax), 1);
        drop(permits);
        assert_eq!(limits.open(), 0);
        let _again = limits.admit(ip(4)).expect("places were given back");
    }

    #[test]
    fn over_both_limits_the_broker_limit_is_reported() {
        let limits = ConnectionLimits::new(2, 2);
        let _p = [limits.admit(ip(1)).unwrap(), limits.admit(ip(1)).unwrap()];
        assert_eq!(
            limits.admit(ip(1)).unwrap_err().limit,
            Limit::ConnectionsMax
        );
    }

    #[test]
    fn permits_leave_no_counts_behind() {
        let limits = ConnectionLimits::new(10, 10);
        let permits: Vec<_> = (0..5).map(|i| limits.admit(ip(i % 2)).unwrap()).collect();
        assert_eq!(limits.by_ip().len(), 2);
        drop(permits);
        assert_eq!(limits.open(), 0);
        assert!(limits.by_ip().is_empty(), "no entry is kept at zero");
    }

    #[test]
    fn an_ipv4_mapped_address_counts_as_its_ipv4_address() {
        let limits = ConnectionLimits::new(10, 1);
        let v4 = ip(7);
        let mapped = IpAddr::V6(Ipv4Addr::new(10, 0, 0, 7).to_ipv6_mapped());
        let permit = limits.admit(mapped).expect("first");
        assert_eq!(permit.ip(), v4);
        assert_eq!(
            limits.admit(v4).unwrap_err().limit,
            Limit::ConnectionsMaxPerIp
        );
        let _v6 = limits
            .admit(IpAddr::V6(Ipv6Addr::LOCALHOST))
            .expect("a real IPv6 address is another address");
    }

    #[test]
    fn a_permit_can_move_to_another_thread() {
        let limits = ConnectionLimits::new(1, 1);
        let permit = limits.admit(ip(1)).unwrap();
        std::thread::spawn(move || drop(permit)).join().unwrap();
        assert_eq!(limits.open(), 0);
        let _again = limits.admit(ip(1)).expect("released on the other thread");
    }

    #[test]
    fn concurrent_shards_never_exceed_the_limits() {
        const MAX: usize = 8;
        let limits = ConnectionLimits::new(MAX, 3);
        let highest = AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for t in 0..4u8 {
                let (limits, highest) = (&limits, &highest);
                scope.spawn(move || {
                    let mut held = Vec::new();
                    for round in 0..2000u32 {
                        match limits.admit(ip(((round as u8) % 5).wrapping_add(t))) {
                            Ok(permit) => held.push(permit),
                            Err(_) => {
                                held.clear();
                            }
                        }
                        highest.fetch_max(limits.open(), Ordering::Relaxed);
                        if held.len() > 2 {
                            drop(held.remove(0));
                        }
                    }
                });
            }
        });
        assert!(highest.load(Ordering::Relaxed) <= MAX);
        assert_eq!(limits.open(), 0);
        assert!(limits.by_ip().is_empty());
    }

    #[test]
    fn the_refusal_names_the_limit_and_its_flag() {
        let limits = ConnectionLimits::new(5, 1);
        let _p = limits.admit(ip(3)).unwrap();
        let text = limits.admit(ip(3)).unwrap_err().to_string();
        assert!(
            text.contains("connections_max_per_ip = 1")
                && text.contains("--connections-max-per-ip N")
                && text.contains("10.0.0.3"),
            "{text}"
        );
        let limits = ConnectionLimits::new(1, 1);
        let _p = limits.admit(ip(3)).unwrap();
        let text = limits.admit(ip(4)).unwrap_err().to_string();
        assert!(
            text.contains("connections_max = 1") && text.contains("--connections-max N"),
            "{text}"
        );
    }

    #[test]
    fn limits_follow_the_broker_config() {
        let config = BrokerConfig {
            connections_max: 7,
            connections_max_per_ip: 3,
            ..BrokerConfig::default()
        };
        let limits = ConnectionLimits::from_config(&config);
        assert_eq!(limits.max(Limit::ConnectionsMax), 7);
        assert_eq!(limits.max(Limit::ConnectionsMaxPerIp), 3);
    }
}
