//! The brokers of a controller quorum and which of them leads each partition.
//!
//! Leadership is derived, not recorded: `MetadataImage::apply` assigns the leaders of new
//! partitions, and of partitions no broker leads, to the unfenced broker leading the fewest
//! partitions (ties to the lowest id). Every controller applies the same records to the same
//! image, so every controller derives the same leaders, and no record carries them.
//!
//! A partition keeps its broker: its data since the last upload is in that broker's WAL.
//! While the broker is fenced (its heartbeats stopped) the partition has no leader, as a
//! Kafka partition with one replica is offline while its broker is down; the leader epoch
//! moves at each fence and unfence, so clients holding the old one refresh their metadata.
//! A single node registers no broker and leads every partition itself, at epoch 0.
//!
//! Failover: a broker that registered its WAL ([`BrokerWal`]) and is fenced has its WAL
//! taken over by a survivor (the taker), which opens it at a higher fencing epoch, uploads
//! what was not in objects yet, and releases it; its partitions then go to the live
//! brokers, one leader epoch up. The fenced broker must register again (restart) to write.

use std::collections::BTreeMap;

use crate::limits::BROKERS_MAX;

/// The balancer swaps partitions for traffic only when the busiest broker carries more than
/// this many times the brokers' mean: measured rates are noisy, and a margin keeps that
/// noise from moving partitions back and forth.
const TRAFFIC_SKEW_MAX: f64 = 1.5;

/// Below this mean traffic per broker, partitions are balanced by count only.
const TRAFFIC_MEAN_MIN_BYTES_PER_S: f64 = 256.0 * 1024.0;

/// A traffic swap must leave at most this share of the gap between the two brokers.
const TRAFFIC_GAP_KEPT_MAX: f64 = 0.75;

/// A registered broker.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct BrokerImage {
    /// The `host:port` it advertises to Kafka clients.
    pub endpoint: String,
    /// Its heartbeats stopped for longer than the session timeout: it leads nothing.
    pub fenced: bool,
    /// Below `BROKERS_MAX`, unique in the cluster: numbers the broker's internal streams
    /// (group and transaction logs), which must not collide with another broker's in the
    /// shared object store. A single node uses 0.
    pub slot: u32,
}

/// Where a broker's WAL is, for a survivor to take it over, and who holds it now.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct BrokerWal {
    /// One file or block device per shard, as the broker opened them (absolute paths: on a
    /// shared directory or a multi-attach volume, the same for every broker).
    pub paths: Vec<String>,
    pub capacity_bytes: u64,
    /// The fencing epoch its holder opened it with: one more at each registration of the
    /// broker and at each takeover.
    pub epoch: u64,
    pub holder: WalHolder,
}

/// Who holds a broker's WAL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum WalHolder {
    /// The broker itself.
    Owner,
    /// A survivor taking it over (the broker is fenced).
    Taker(i32),
    /// A taker finished with it: `moved`, its partitions went to the live brokers; not
    /// `moved`, the taker could not open it (not reachable from its host) and they wait for
    /// the broker. Either way the broker writes again only after registering anew.
    Released { moved: bool },
}

/// The broker a partition belongs to, and its leader epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct PartitionLeader {
    pub broker: i32,
    /// Kafka's leader epoch: 0 for a new partition, one more at each change.
    pub epoch: i32,
}

/// What Metadata reports of a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leadership {
    /// The broker serving it; None while it has none (offline).
    pub leader: Option<i32>,
    /// The broker whose WAL holds it (None: not assigned yet); the leader when online.
    pub replica: Option<i32>,
    pub leader_epoch: i32,
}

/// The brokers part as a snapshot keeps it.
#[derive(
    Debug, Clone, Default, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub(crate) struct BrokerParts {
    pub(crate) registered: Vec<(i32, BrokerImage)>,
    pub(crate) leaders: Vec<(u64, PartitionLeader)>,
    pub(crate) coordinator: Option<i32>,
}

impl BrokerParts {
    /// A format 5 snapshot's brokers (endpoints only): that format allowed one broker, which
    /// then served every partition of `streams`.
    pub(crate) fn of_format_5(brokers: Vec<(i32, String)>, streams: &[u64]) -> BrokerParts {
        let coordinator = brokers.first().map(|(id, _)| *id);
        BrokerParts {
            leaders: coordinator
                .map(|broker| {
                    streams
                        .iter()
                        .map(|id| (*id, PartitionLeader { broker, epoch: 0 }))
                        .collect()
                })
                .unwrap_or_default(),
            registered: brokers
                .into_iter()
                .map(|(id, endpoint)| {
                    (
                        id,
                        BrokerImage {
                            endpoint,
                            fenced: false,
                            slot: 0,
                        },
                    )
                })
                .collect(),
            coordinator,
        }
    }
}

/// The brokers part of the image.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Brokers {
    pub(crate) registered: BTreeMap<i32, BrokerImage>,
    /// Per stream; a stream absent has no broker yet.
    pub(crate) leaders: BTreeMap<u64, PartitionLeader>,
    /// The broker that coordinates groups and transactions (and runs the object tier's
    /// maintenance): the first one registered, then, each time a takeover releases its WAL,
    /// the live broker leading the fewest partitions. Its coordinators' state is in the
    /// coordinator partitions' logs, internal streams that the taker uploads with the rest of
    /// the WAL, so the new coordinator reads it from objects.
    pub(crate) coordinator: Option<i32>,
    /// The WALs of the brokers that registered one.
    pub(crate) wals: BTreeMap<i32, BrokerWal>,
    /// Partition moves asked for and not done yet: stream → the broker it goes to. The
    /// partition's broker seals it, uploads its WAL tail, and completes the move
    /// ([`Brokers::complete_move`]); see `shards/src/partition_move.rs`.
    pub(crate) moves: BTreeMap<u64, i32>,
    /// Brokers given no partition, whose partitions the balancer moves away: the broker
    /// config `drained.broker.ids`, kept here by the image whenever the configs change.
    pub(crate) drained: std::collections::BTreeSet<i32>,
}

impl Brokers {
    /// Registers a broker (or a restart of one, maybe at a new endpoint), unfenced, and gives
    /// it its share of the partitions `streams` that have no broker.
    pub(crate) fn register(
        &mut self,
        node_id: i32,
        endpoint: &str,
        streams: impl Iterator<Item = u64>,
    ) {
        let was_fenced = self.registered.get(&node_id).is_some_and(|b| b.fenced);
        let slot = match self.registered.get(&node_id) {
            Some(broker) => broker.slot,
            None => self.free_slot().unwrap_or(u32::MAX),
        };
        self.registered.insert(
            node_id,
            BrokerImage {
                endpoint: endpoint.to_string(),
                fenced: false,
                slot,
            },
        );
        if was_fenced {
            self.bump_epochs(node_id);
        }
        self.coordinator.get_or_insert(node_id);
        self.assign(streams);
    }

    /// Registers a broker's WAL along with the broker (`register`): it holds it, one epoch
    /// up from any holder before.
    pub(crate) fn register_wal(&mut self, node_id: i32, paths: &[String], capacity_bytes: u64) {
        let epoch = self.wals.get(&node_id).map_or(0, |w| w.epoch) + 1;
        self.wals.insert(
            node_id,
            BrokerWal {
                paths: paths.to_vec(),
                capacity_bytes,
                epoch,
                holder: WalHolder::Owner,
            },
        );
    }

    /// Gives `node_id`'s WAL to `taker` at `epoch`; false if it registered none.
    pub(crate) fn take_over_wal(&mut self, node_id: i32, taker: i32, epoch: u64) -> bool {
        let Some(wal) = self.wals.get_mut(&node_id) else {
            return false;
        };
        wal.epoch = epoch;
        wal.holder = WalHolder::Taker(taker);
        true
    }

    /// The taker is done with `node_id`'s WAL: when `moved`, its partitions go to the live
    /// brokers, one leader epoch up, and so does the coordinator if it was `node_id` (they
    /// stay if none is live).
    pub(crate) fn release_wal(&mut self, node_id: i32, moved: bool) -> bool {
        let Some(wal) = self.wals.get_mut(&node_id) else {
            return false;
        };
        wal.holder = WalHolder::Released { moved };
        if moved {
            let mut loads = self.placement_loads();
            let Some((&least_loaded, _)) = loads.iter().min_by_key(|(id, load)| (**load, **id))
            else {
                return true;
            };
            if self.coordinator == Some(node_id) {
                self.coordinator = Some(least_loaded);
            }
            for (stream_id, leader) in self.leaders.iter_mut().filter(|(_, l)| l.broker == node_id)
            {
                // A move asked for goes where it was asked to, if that broker is live.
                let target = self
                    .moves
                    .remove(stream_id)
                    .filter(|t| loads.contains_key(t));
                let broker = target.unwrap_or_else(|| {
                    let (&least_loaded, _) = loads
                        .iter()
                        .min_by_key(|(id, load)| (**load, **id))
                        .expect("not empty");
                    least_loaded
                });
                let load = loads.get_mut(&broker).expect("a live broker");
                *load += 1;
                *leader = PartitionLeader {
                    broker,
                    epoch: leader.epoch.saturating_add(1),
                };
            }
        }
        true
    }

    /// Asks for `stream_id` to move to broker `target` (replacing a move asked before).
    pub(crate) fn start_move(&mut self, stream_id: u64, target: i32) {
        self.moves.insert(stream_id, target);
    }

    /// Drops the move asked for `stream_id`, if any.
    pub(crate) fn cancel_move(&mut self, stream_id: u64) {
        self.moves.remove(&stream_id);
    }

    /// The move of `stream_id` from broker `from` to broker `to` is done (its data is in
    /// objects): `to` leads it, one leader epoch up. False, changing nothing, unless `from`
    /// holds it and the move asked for is to `to`.
    pub(crate) fn complete_move(&mut self, stream_id: u64, from: i32, to: i32) -> bool {
        let Some(leader) = self.leaders.get_mut(&stream_id) else {
            return false;
        };
        if leader.broker != from || self.moves.get(&stream_id) != Some(&to) {
            return false;
        }
        self.moves.remove(&stream_id);
        *leader = PartitionLeader {
            broker: to,
            epoch: leader.epoch.saturating_add(1),
        };
        true
    }

    /// The coordinator epoch of transaction markers: the sum of every registered WAL's
    /// epoch. It never goes down, and it is higher for a new coordinator than anything the
    /// one before could see: the coordinator moves only when a takeover released its WAL,
    /// and the takeover raised that WAL's epoch first. So a partition, which refuses a marker
    /// older than the last one it took from the producer, refuses a paused old coordinator's.
    pub(crate) fn coordinator_epoch(&self) -> i32 {
        let sum: u64 = self.wals.values().map(|w| w.epoch).sum();
        i32::try_from(sum).unwrap_or(i32::MAX)
    }

    /// The unfenced brokers with the partitions each leads.
    fn live_loads(&self) -> BTreeMap<i32, usize> {
        let mut loads: BTreeMap<i32, usize> = self
            .registered
            .iter()
            .filter(|(_, b)| !b.fenced)
            .map(|(id, _)| (*id, 0))
            .collect();
        for leader in self.leaders.values() {
            if let Some(load) = loads.get_mut(&leader.broker) {
                *load += 1;
            }
        }
        loads
    }

    /// The brokers new and moved partitions go to, with the partitions each leads: the live
    /// ones not drained (all live ones if every one is drained, so that partitions still
    /// find a broker).
    fn placement_loads(&self) -> BTreeMap<i32, usize> {
        let live = self.live_loads();
        let undrained: BTreeMap<i32, usize> = live
            .iter()
            .filter(|(id, _)| !self.drained.contains(id))
            .map(|(id, load)| (*id, *load))
            .collect();
        if undrained.is_empty() {
            live
        } else {
            undrained
        }
    }

    /// The fenced brokers whose WAL needs a (new) taker: held by themselves, or by a taker
    /// that is fenced or gone. With the live broker that should take it (the one leading
    /// the fewest partitions; ties to the lowest id) and the epoch to take it at.
    pub fn wals_to_take_over(&self) -> Vec<(i32, i32, u64)> {
        let loads = self.live_loads();
        let Some((&taker, _)) = loads.iter().min_by_key(|(id, load)| (**load, **id)) else {
            return Vec::new();
        };
        self.wals
            .iter()
            .filter(|(id, wal)| {
                self.registered.get(id).is_some_and(|b| b.fenced)
                    && match wal.holder {
                        WalHolder::Owner => true,
                        WalHolder::Taker(t) => !loads.contains_key(&t),
                        WalHolder::Released { .. } => false,
                    }
            })
            .map(|(id, wal)| (*id, taker, wal.epoch + 1))
            .collect()
    }

    /// Fences or unfences a registered broker; false if it is not registered.
    pub(crate) fn set_fenced(
        &mut self,
        node_id: i32,
        fenced: bool,
        streams: impl Iterator<Item = u64>,
    ) -> bool {
        let Some(broker) = self.registered.get_mut(&node_id) else {
            return false;
        };
        if broker.fenced != fenced {
            broker.fenced = fenced;
            self.bump_epochs(node_id);
        }
        if fenced {
            // Moves to it would wait for it, their partitions staying where they are, and hold
            // the balancer's room: they are dropped (the balancer asks again if needed).
            self.moves.retain(|_, target| *target != node_id);
        } else {
            self.assign(streams);
        }
        true
    }

    /// Gives each stream without a broker to the unfenced broker leading the fewest (ties to
    /// the lowest id); leaves them unassigned when no broker is unfenced.
    pub(crate) fn assign(&mut self, streams: impl Iterator<Item = u64>) {
        let mut loads = self.placement_loads();
        if loads.is_empty() {
            return;
        }
        for stream_id in streams {
            if self.leaders.contains_key(&stream_id) {
                continue;
            }
            let (&broker, load) = loads
                .iter_mut()
                .min_by_key(|(id, load)| (**load, **id))
                .expect("not empty");
            *load += 1;
            self.leaders
                .insert(stream_id, PartitionLeader { broker, epoch: 0 });
        }
    }

    /// Moves that empty the drained brokers and even out the others' partition counts, then
    /// their traffic, at most `moves_max` in flight with those already asked for: (stream
    /// id, target broker). `rate` is a partition's bytes in and out per second. A moving
    /// partition counts at its target; partitions of fenced brokers stay put (a takeover
    /// moves them). Ties go to the lowest stream and broker ids.
    ///
    /// 1. A live drained broker's partitions go first, each to the least loaded broker.
    /// 2. Counts: a partition goes from a broker holding two or more more than the least
    ///    loaded one to that one.
    /// 3. Traffic, once the counts are even: when the busiest broker carries more than
    ///    `TRAFFIC_SKEW_MAX` times the mean (and the mean is at least
    ///    `TRAFFIC_MEAN_MIN_BYTES_PER_S`), it swaps a partition with the least busy broker:
    ///    the pair that leaves the smallest gap between them, if that is under three
    ///    quarters of the gap before. Counts stay even, and the skew's margin keeps the
    ///    noise of measured rates from moving partitions back and forth.
    pub fn balancing_moves(&self, moves_max: usize, rate: impl Fn(u64) -> f64) -> Vec<(u64, i32)> {
        let mut room = moves_max.saturating_sub(self.moves.len());
        let mut loads = self.placement_loads();
        if room == 0 || loads.is_empty() {
            return Vec::new();
        }
        // Where each partition is (or goes), among the placement brokers.
        let at = |stream_id: &u64, leader: &PartitionLeader| {
            self.moves.get(stream_id).copied().unwrap_or(leader.broker)
        };
        for load in loads.values_mut() {
            *load = 0;
        }
        for (stream_id, leader) in &self.leaders {
            if let Some(load) = loads.get_mut(&at(stream_id, leader)) {
                *load += 1;
            }
        }
        let mut planned: Vec<(u64, i32)> = Vec::new();
        let movable = |stream_id: &u64, planned: &[(u64, i32)]| {
            !self.moves.contains_key(stream_id) && !planned.iter().any(|(p, _)| p == stream_id)
        };
        let least_loaded = |loads: &BTreeMap<i32, usize>| {
            let (&id, _) = loads
                .iter()
                .min_by_key(|(id, load)| (**load, **id))
                .expect("not empty");
            id
        };
        // 1. Drained brokers.
        let drained: Vec<u64> = self
            .leaders
            .iter()
            .filter(|(_, l)| {
                self.drained.contains(&l.broker)
                    && !loads.contains_key(&l.broker)
                    && self.registered.get(&l.broker).is_some_and(|b| !b.fenced)
            })
            .map(|(id, _)| *id)
            .collect();
        for stream_id in drained {
            if room == 0 {
                return planned;
            }
            if !movable(&stream_id, &planned) {
                continue;
            }
            let least = least_loaded(&loads);
            *loads.get_mut(&least).expect("a target") += 1;
            planned.push((stream_id, least));
            room -= 1;
        }
        // 2. Counts.
        while room > 0 && loads.len() >= 2 {
            let (&most, &high) = loads
                .iter()
                .max_by_key(|(id, load)| (**load, -**id))
                .expect("two brokers");
            let least = least_loaded(&loads);
            if high < loads[&least] + 2 {
                break;
            }
            let Some(stream_id) = self
                .leaders
                .iter()
                .find(|(id, l)| l.broker == most && movable(id, &planned))
                .map(|(id, _)| *id)
            else {
                break;
            };
            planned.push((stream_id, least));
            *loads.get_mut(&most).expect("live") -= 1;
            *loads.get_mut(&least).expect("live") += 1;
            room -= 1;
        }
        if !planned.is_empty() || !self.moves.is_empty() || room < 2 || loads.len() < 2 {
            return planned;
        }
        // 3. Traffic, with the counts even and nothing moving.
        let mut traffic: BTreeMap<i32, f64> = loads.keys().map(|id| (*id, 0.0)).collect();
        let mut held: BTreeMap<i32, Vec<(u64, f64)>> = BTreeMap::new();
        for (stream_id, leader) in &self.leaders {
            if let Some(total) = traffic.get_mut(&leader.broker) {
                let bytes_per_s = rate(*stream_id);
                *total += bytes_per_s;
                held.entry(leader.broker)
                    .or_default()
                    .push((*stream_id, bytes_per_s));
            }
        }
        let mean = traffic.values().sum::<f64>() / traffic.len() as f64;
        let by_traffic = |a: &(&i32, &f64), b: &(&i32, &f64)| a.1.total_cmp(b.1).then(b.0.cmp(a.0));
        let (&busiest, &high) = traffic.iter().max_by(by_traffic).expect("two brokers");
        let (&calmest, &low) = traffic.iter().min_by(by_traffic).expect("two brokers");
        if mean < TRAFFIC_MEAN_MIN_BYTES_PER_S || high <= TRAFFIC_SKEW_MAX * mean {
            return planned;
        }
        let gap = high - low;
        let empty = Vec::new();
        let mut best: Option<(f64, u64, u64)> = None;
        for &(from_busiest, r_out) in held.get(&busiest).unwrap_or(&empty) {
            for &(from_calmest, r_in) in held.get(&calmest).unwrap_or(&empty) {
                let left = (gap - 2.0 * (r_out - r_in)).abs();
                if best.is_none_or(|(b, _, _)| left < b) {
                    best = Some((left, from_busiest, from_calmest));
                }
            }
        }
        if let Some((left, out, back)) = best
            && left < TRAFFIC_GAP_KEPT_MAX * gap
        {
            planned.push((out, calmest));
            planned.push((back, busiest));
        }
        planned
    }

    /// The lowest slot no registered broker has; None when all `BROKERS_MAX` are taken.
    pub(crate) fn free_slot(&self) -> Option<u32> {
        let taken: std::collections::BTreeSet<u32> =
            self.registered.values().map(|b| b.slot).collect();
        (0..BROKERS_MAX).find(|slot| !taken.contains(slot))
    }

    pub(crate) fn forget(&mut self, stream_id: u64) {
        self.leaders.remove(&stream_id);
        self.moves.remove(&stream_id);
    }

    /// A partition's leadership; `node_id` leads everything when no broker is registered.
    pub(crate) fn leadership(&self, stream_id: u64, node_id: i32) -> Leadership {
        if self.registered.is_empty() {
            return Leadership {
                leader: Some(node_id),
                replica: Some(node_id),
                leader_epoch: 0,
            };
        }
        match self.leaders.get(&stream_id) {
            None => Leadership {
                leader: None,
                replica: None,
                leader_epoch: 0,
            },
            Some(leader) => Leadership {
                leader: self
                    .registered
                    .get(&leader.broker)
                    .filter(|b| !b.fenced)
                    .map(|_| leader.broker),
                replica: Some(leader.broker),
                leader_epoch: leader.epoch,
            },
        }
    }

    pub(crate) fn check_invariants(&self, is_stream: impl Fn(u64) -> bool) -> Result<(), String> {
        for (stream_id, leader) in &self.leaders {
            if !is_stream(*stream_id) {
                return Err(format!("leader of unknown stream {stream_id}"));
            }
            if !self.registered.contains_key(&leader.broker) || leader.epoch < 0 {
                return Err(format!(
                    "stream {stream_id} led by unregistered broker {} or at a negative epoch",
                    leader.broker
                ));
            }
        }
        let mut slots = std::collections::BTreeSet::new();
        for (id, broker) in &self.registered {
            if broker.slot >= BROKERS_MAX || !slots.insert(broker.slot) {
                return Err(format!(
                    "broker {id} has slot {}, out of range or taken",
                    broker.slot
                ));
            }
        }
        if let Some(coordinator) = self.coordinator
            && !self.registered.contains_key(&coordinator)
        {
            return Err(format!("coordinator {coordinator} is not registered"));
        }
        for (id, wal) in &self.wals {
            if !self.registered.contains_key(id) || wal.epoch == 0 {
                return Err(format!("WAL of unregistered broker {id}, or at epoch 0"));
            }
        }
        for (stream_id, target) in &self.moves {
            if !self.leaders.contains_key(stream_id) || !self.registered.contains_key(target) {
                return Err(format!(
                    "move of stream {stream_id}, which no broker holds, or to unregistered \
                     broker {target}"
                ));
            }
        }
        Ok(())
    }

    fn bump_epochs(&mut self, node_id: i32) {
        for leader in self.leaders.values_mut().filter(|l| l.broker == node_id) {
            leader.epoch = leader.epoch.saturating_add(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_spread_and_stay_with_their_broker_through_a_fence() {
        let mut brokers = Brokers::default();
        brokers.assign(1..=3);
        assert!(brokers.leaders.is_empty(), "no broker: nothing assigned");
        brokers.register(2, "h:2", 1..=3);
        brokers.register(1, "h:1", 1..=3);
        assert_eq!(brokers.coordinator, Some(2), "the first one registered");
        assert_eq!(
            (brokers.registered[&2].slot, brokers.registered[&1].slot),
            (0, 1)
        );
        brokers.assign(1..=6);
        let led_by = |b: &Brokers, id| b.leaders.values().filter(|l| l.broker == id).count();
        assert_eq!((led_by(&brokers, 1), led_by(&brokers, 2)), (3, 3));

        assert!(brokers.set_fenced(2, true, 1..=6));
        let offline = brokers.leadership(1, 0);
        assert_eq!(
            offline,
            Leadership {
                leader: None,
                replica: Some(2),
                leader_epoch: 1
            }
        );
        brokers.assign(7..=8);
        assert_eq!(
            led_by(&brokers, 1),
            5,
            "new partitions go to the live broker"
        );
        brokers.register(2, "h:22", 1..=8);
        assert_eq!(brokers.leadership(1, 0).leader, Some(2));
        assert_eq!(brokers.leadership(1, 0).leader_epoch, 2);
        assert_eq!(brokers.registered[&2].slot, 0, "a broker keeps its slot");
        assert!(!brokers.set_fenced(9, true, 1..=8), "not registered");
        assert!(brokers.check_invariants(|id| id <= 8).is_ok());
        assert!(brokers.check_invariants(|id| id <= 7).is_err());
    }

    /// Brokers 1, 2 and 3, registered in that order, each with its WAL.
    fn three_brokers_with_wals() -> Brokers {
        let mut brokers = Brokers::default();
        for id in [1, 2, 3] {
            brokers.register(id, "h", std::iter::empty());
            brokers.register_wal(id, &[format!("/wal/{id}")], 4096);
        }
        brokers
    }

    #[test]
    fn a_fenced_brokers_wal_goes_to_a_taker_and_its_partitions_to_the_survivors() {
        let mut brokers = three_brokers_with_wals();
        brokers.assign(1..=6);
        assert_eq!(brokers.wals[&3].epoch, 1);
        assert!(brokers.wals_to_take_over().is_empty(), "nobody is fenced");
        assert!(brokers.set_fenced(3, true, 1..=6));
        // Broker 3 led 2 of 6 (at epoch 1 now, the fence's); 1 and 2 lead 2 each.
        assert_eq!(brokers.wals_to_take_over(), vec![(3, 1, 2)]);
        assert!(brokers.take_over_wal(3, 1, 2));
        assert!(
            brokers.wals_to_take_over().is_empty(),
            "a live taker holds it"
        );
        // The taker dies too: the WAL needs another, one epoch up.
        assert!(brokers.set_fenced(1, true, 1..=6));
        assert_eq!(brokers.wals_to_take_over(), vec![(1, 2, 2), (3, 2, 3)]);
        assert!(brokers.set_fenced(1, false, 1..=6));
        assert!(brokers.take_over_wal(3, 2, 3));
        let moving: Vec<u64> = brokers
            .leaders
            .iter()
            .filter(|(_, l)| l.broker == 3)
            .map(|(id, _)| *id)
            .collect();
        assert!(brokers.release_wal(3, true));
        for stream_id in moving {
            let leadership = brokers.leadership(stream_id, 0);
            assert!(matches!(leadership.leader, Some(1 | 2)), "{leadership:?}");
            assert_eq!(leadership.leader_epoch, 2, "fenced, then moved");
        }
        assert_eq!(brokers.wals[&3].holder, WalHolder::Released { moved: true });
        assert!(brokers.wals_to_take_over().is_empty(), "released");
        // Registering again gives the broker its WAL back, one epoch up, and no partitions.
        brokers.register(3, "h", 1..=6);
        brokers.register_wal(3, &["/wal/3".into()], 4096);
        assert_eq!(
            (brokers.wals[&3].epoch, brokers.wals[&3].holder),
            (4, WalHolder::Owner)
        );
        assert!(brokers.leaders.values().all(|l| l.broker != 3));
        assert!(brokers.check_invariants(|id| id <= 6).is_ok());
        assert!(!brokers.release_wal(9, true), "no such WAL");
    }

    #[test]
    fn the_coordinator_moves_when_its_wal_is_released_to_the_survivors() {
        let mut brokers = three_brokers_with_wals();
        brokers.assign(1..=5);
        assert_eq!(brokers.coordinator, Some(1));
        assert!(brokers.set_fenced(1, true, 1..=5));
        assert_eq!(
            brokers.coordinator,
            Some(1),
            "a fence alone does not move it"
        );
        assert!(brokers.take_over_wal(1, 2, 2));
        assert!(brokers.release_wal(1, false));
        assert_eq!(
            brokers.coordinator,
            Some(1),
            "not moved: its logs wait in its WAL"
        );
        brokers.register(1, "h", 1..=5);
        brokers.register_wal(1, &["/wal/1".into()], 4096);
        // The last coordinator epoch broker 1 can have seen as the coordinator.
        let seen_by_the_old_coordinator = brokers.coordinator_epoch();
        assert!(brokers.set_fenced(1, true, 1..=5));
        assert!(brokers.take_over_wal(1, 3, 4));
        // Brokers 2 and 3 lead 2 and 1 of 5 partitions (the fenced one leads 2).
        assert!(brokers.release_wal(1, true));
        assert_eq!(
            brokers.coordinator,
            Some(3),
            "the live broker leading the fewest"
        );
        assert!(
            brokers.coordinator_epoch() > seen_by_the_old_coordinator,
            "the new coordinator's markers fence the old one's"
        );
        assert!(brokers.check_invariants(|id| id <= 5).is_ok());
        // Another broker's WAL released does not move it.
        assert!(brokers.set_fenced(2, true, 1..=5));
        assert!(brokers.take_over_wal(2, 3, 2));
        assert!(brokers.release_wal(2, true));
        assert_eq!(brokers.coordinator, Some(3));
    }

    #[test]
    fn a_single_node_leads_everything() {
        let brokers = Brokers::default();
        assert_eq!(brokers.leadership(5, 7).leader, Some(7));
    }

    #[test]
    fn a_move_completes_only_from_its_holder_to_its_target_one_epoch_up() {
        let mut brokers = Brokers::default();
        brokers.register(1, "h:1", 1..=2);
        brokers.register(2, "h:2", 1..=2);
        brokers.register(3, "h:3", 1..=2);
        let holder = brokers.leaders[&1].broker;
        let other = if holder == 1 { 2 } else { 1 };
        brokers.start_move(1, 3);
        assert!(brokers.check_invariants(|id| id <= 2).is_ok());
        assert!(!brokers.complete_move(1, other, 3), "not from its holder");
        assert!(
            !brokers.complete_move(1, holder, other),
            "not to its target"
        );
        assert!(brokers.complete_move(1, holder, 3));
        assert_eq!(
            brokers.leaders[&1],
            PartitionLeader {
                broker: 3,
                epoch: 1
            }
        );
        assert!(brokers.moves.is_empty());
        assert!(!brokers.complete_move(1, 3, 3), "done once");

        // A cancelled move completes no more; a deleted partition forgets its move.
        brokers.start_move(2, 3);
        brokers.cancel_move(2);
        assert!(!brokers.complete_move(2, brokers.leaders[&2].broker, 3));
        brokers.start_move(2, 3);
        brokers.forget(2);
        assert!(brokers.moves.is_empty());
    }

    #[test]
    fn a_released_wal_gives_a_moving_partition_to_its_live_target() {
        let mut brokers = Brokers::default();
        brokers.register(1, "h:1", std::iter::empty());
        brokers.register(2, "h:2", std::iter::empty());
        brokers.register(3, "h:3", std::iter::empty());
        brokers.register_wal(1, &["/wal/1".into()], 4096);
        brokers.assign(1..=1);
        assert_eq!(brokers.leaders[&1].broker, 1);
        // Broker 3 leads more, so only the move sends the partition there.
        brokers.assign(2..=4);
        brokers.start_move(1, 3);
        assert!(brokers.set_fenced(1, true, 1..=4));
        assert!(brokers.take_over_wal(1, 2, 2));
        assert!(brokers.release_wal(1, true));
        assert_eq!(brokers.leaders[&1].broker, 3);
        assert!(brokers.moves.is_empty());
        assert!(brokers.check_invariants(|id| id <= 4).is_ok());
    }

    impl Brokers {
        fn balancing_moves_by_count(&self, moves_max: usize) -> Vec<(u64, i32)> {
            self.balancing_moves(moves_max, |_| 0.0)
        }
    }

    #[test]
    fn busy_partitions_are_swapped_apart_once_the_counts_are_even() {
        let mut brokers = Brokers::default();
        brokers.register(1, "h:1", std::iter::empty());
        brokers.register(2, "h:2", std::iter::empty());
        brokers.assign(1..=8);
        // Broker 1's first two partitions carry 1 MB/s each; nothing else moves.
        let busy: Vec<u64> = brokers
            .leaders
            .iter()
            .filter(|(_, l)| l.broker == 1)
            .map(|(id, _)| *id)
            .take(2)
            .collect();
        let rate = |id: u64| if busy.contains(&id) { 1e6 } else { 0.0 };
        let moves = brokers.balancing_moves(8, rate);
        assert_eq!(moves.len(), 2, "{moves:?}");
        assert!(busy.contains(&moves[0].0) && moves[0].1 == 2, "{moves:?}");
        assert!(!busy.contains(&moves[1].0) && moves[1].1 == 1, "{moves:?}");
        assert!(
            brokers.balancing_moves(1, rate).is_empty(),
            "a swap needs room for two moves"
        );
        for (stream_id, to) in moves {
            let from = brokers.leaders[&stream_id].broker;
            brokers.start_move(stream_id, to);
            assert!(brokers.complete_move(stream_id, from, to));
        }
        assert!(brokers.balancing_moves(8, rate).is_empty(), "1 MB/s each");
        // Noise under the skew's margin moves nothing; so does little traffic.
        let noisy = |id: u64| if id == busy[0] { 1.4e6 } else { rate(id) };
        assert!(brokers.balancing_moves(8, noisy).is_empty());
        let little = |id: u64| if busy.contains(&id) { 1e3 } else { 0.0 };
        let mut layout = Brokers::default();
        layout.register(1, "h:1", std::iter::empty());
        layout.register(2, "h:2", std::iter::empty());
        layout.assign(1..=8);
        assert!(layout.balancing_moves(8, little).is_empty());
    }

    #[test]
    fn balancing_fills_a_new_broker_and_converges() {
        let mut brokers = Brokers::default();
        brokers.register(1, "h:1", std::iter::empty());
        brokers.register(2, "h:2", std::iter::empty());
        brokers.assign(1..=8);
        assert!(
            brokers.balancing_moves_by_count(4).is_empty(),
            "4 and 4: even"
        );
        // A third broker: it should get two or three of the eight.
        brokers.register(3, "h:3", 1..=8);
        let moves = brokers.balancing_moves_by_count(8);
        assert_eq!(moves.len(), 2, "{moves:?}");
        assert!(moves.iter().all(|(_, target)| *target == 3));
        // At most `moves_max` in flight, those asked for included.
        brokers.start_move(moves[0].0, 3);
        assert_eq!(brokers.balancing_moves_by_count(1), Vec::new());
        assert_eq!(brokers.balancing_moves_by_count(2).len(), 1);
        for (stream_id, target) in moves {
            let from = brokers.leaders[&stream_id].broker;
            brokers.start_move(stream_id, target);
            assert!(brokers.complete_move(stream_id, from, target));
        }
        assert!(
            brokers.balancing_moves_by_count(8).is_empty(),
            "3, 3 and 2: even enough"
        );
        // A fenced broker's partitions stay; the live ones are even among themselves; a move
        // to it is dropped.
        let (stream_id, _) = brokers
            .leaders
            .iter()
            .find(|(_, l)| l.broker == 1)
            .expect("one");
        brokers.start_move(*stream_id, 3);
        assert!(brokers.set_fenced(3, true, 1..=8));
        assert!(brokers.moves.is_empty());
        assert!(brokers.balancing_moves_by_count(8).is_empty());
    }

    #[test]
    fn a_drained_broker_is_emptied_and_given_nothing() {
        let mut brokers = Brokers::default();
        for id in 1..=3 {
            brokers.register(id, "h", std::iter::empty());
        }
        brokers.assign(1..=6);
        brokers.drained = [3].into();
        let moves = brokers.balancing_moves_by_count(8);
        let mut moved: Vec<u64> = moves.iter().map(|(id, _)| *id).collect();
        moved.sort_unstable();
        let held_by_3: Vec<u64> = brokers
            .leaders
            .iter()
            .filter(|(_, l)| l.broker == 3)
            .map(|(id, _)| *id)
            .collect();
        assert_eq!(moved, held_by_3);
        assert!(moves.iter().all(|(_, to)| *to != 3), "{moves:?}");
        for (stream_id, to) in moves {
            brokers.start_move(stream_id, to);
            assert!(brokers.complete_move(stream_id, 3, to));
        }
        assert!(
            brokers.balancing_moves_by_count(8).is_empty(),
            "3 and 3, none on 3"
        );
        brokers.assign(7..=8);
        assert!(brokers.leaders.values().all(|l| l.broker != 3));
        // Every broker drained: partitions still find one.
        brokers.drained = [1, 2, 3].into();
        brokers.assign(9..=9);
        assert!(brokers.leaders.contains_key(&9));
    }
}
