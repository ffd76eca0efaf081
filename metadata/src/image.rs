//! The immutable metadata image every shard reads, and the pure, deterministic
//! application of a resolved `MetadataRecord` to it.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::acls::{AclBinding, AclEntry, AclPattern, AclResourceType, AclSet};
use crate::brokers::{BrokerImage, BrokerParts, BrokerWal, Brokers, Leadership, WalHolder};
use crate::command::{CommandOutcome, MetadataRecord};
use crate::configs::{self, BrokerConfig, TopicConfig};
use crate::error::MetadataError;
use crate::limits::{PARTITIONS_PER_TOPIC_MAX, PARTITIONS_TOTAL_MAX, SHARDS_MAX};
use crate::objects::{
    ObjectId, ObjectImage, ObjectTombstone, Registry, RegistryParts, StreamRange,
};
use crate::producers::ProducerStates;
use crate::quotas::{ClientQuotas, QuotaChange, QuotaEntities};
use crate::scram::{
    ScramCredential, ScramCredentials, ScramMechanism, ScramUserCredential, ScramUsers,
};
use crate::uploads::{StreamCleaned, StreamUploads, StreamUploadsPart, UploadTime};

/// A topic id: 16 bytes of a random (version 4) UUID, never all zero.
pub type Uuid16 = [u8; 16];

/// The first stream id handed out; 0 is never a stream.
pub const FIRST_STREAM_ID: u64 = 1;

/// One snapshot of the cluster's metadata. Never mutated once published: a
/// change produces a new image (`apply`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataImage {
    pub cluster_id: String,
    pub node_id: i32,
    /// The number of records applied since the cluster was created.
    pub epoch: u64,
    pub topics: BTreeMap<String, TopicImage>,
    /// Only explicitly set broker configs; see `configs` for defaults.
    pub broker_configs: BTreeMap<String, String>,
    /// The first producer id of the next block handed out.
    pub next_producer_id: i64,
    /// The next stream id; every id below it that `stream` does not know
    /// belonged to a deleted partition.
    pub next_stream_id: u64,
    topic_names_by_id: BTreeMap<Uuid16, String>,
    /// stream id → (topic id, partition index); ids, not names, so that
    /// cloning the image per command copies no strings per partition.
    streams: BTreeMap<u64, (Uuid16, u32)>,
    /// Objects in the object store and the per-stream index over them.
    registry: Registry,
    /// Per stream, its producers and upload times (`uploads.rs`); each behind an `Arc` so
    /// that cloning the image per command copies none.
    uploads: BTreeMap<u64, Arc<StreamUploads>>,
    /// The brokers registered in a controller quorum and the partitions' leaders.
    pub(crate) brokers: Brokers,
    /// The users' SCRAM credentials (`scram.rs`).
    scram: ScramCredentials,
    /// The ACLs (`acls.rs`).
    acls: AclSet,
    /// The client quotas (`quotas.rs`).
    client_quotas: ClientQuotas,
}

#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct TopicImage {
    pub name: String,
    pub id: Uuid16,
    /// Indexed by partition number: `partitions[i].index == i`.
    pub partitions: Vec<PartitionImage>,
    /// Only explicitly set configs; see `configs` for defaults.
    pub configs: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct PartitionImage {
    pub index: u32,
    /// The shard that owns the partition, below the `shards` given when it
    /// was placed. A broker started with fewer shards must map it itself.
    pub shard: u32,
    /// Unique for the cluster's life, never reused after a delete.
    pub stream_id: u64,
    pub log_start_offset: i64,
}

impl MetadataImage {
    /// The image of a new, empty cluster (epoch 0).
    pub fn empty(cluster_id: String, node_id: i32) -> MetadataImage {
        MetadataImage {
            cluster_id,
            node_id,
            epoch: 0,
            topics: BTreeMap::new(),
            broker_configs: BTreeMap::new(),
            next_producer_id: 0,
            next_stream_id: FIRST_STREAM_ID,
            topic_names_by_id: BTreeMap::new(),
            streams: BTreeMap::new(),
            registry: Registry::default(),
            uploads: BTreeMap::new(),
            brokers: Brokers::default(),
            scram: ScramCredentials::default(),
            acls: AclSet::default(),
            client_quotas: ClientQuotas::default(),
        }
    }

    /// The ACL entries that apply to the resource `name` of `resource_type`: those of its
    /// literal name, of the literal wildcard and of each prefix of the name (the authorizer
    /// reads them).
    pub fn acl_entries_for<'a>(
        &'a self,
        resource_type: AclResourceType,
        name: &'a str,
    ) -> impl Iterator<Item = &'a AclEntry> + 'a {
        self.acls.entries_for(resource_type, name)
    }

    /// Every ACL binding of `resource_type`, with its pattern.
    pub fn acls_of_type(
        &self,
        resource_type: AclResourceType,
    ) -> impl Iterator<Item = (&AclPattern, &AclEntry)> {
        self.acls.bindings_of_type(resource_type)
    }

    /// Every ACL binding, ordered by resource pattern (DescribeAcls, snapshots).
    pub fn acl_bindings(&self) -> impl Iterator<Item = AclBinding> + '_ {
        self.acls.bindings()
    }

    /// True when the cluster has no ACL at all.
    pub fn has_no_acls(&self) -> bool {
        self.acls.is_empty()
    }

    pub(crate) fn acl_set(&self) -> &AclSet {
        &self.acls
    }

    /// Every client quota entity with its values (DescribeClientQuotas, `quotas::resolve`),
    /// behind an `Arc` that changes only when the quotas do: a shard caches what it resolved
    /// from it and compares pointers to know when to resolve again.
    pub fn client_quotas(&self) -> &std::sync::Arc<QuotaEntities> {
        &self.client_quotas.entities
    }

    /// Every client quota entity, for `command::plan`.
    pub(crate) fn client_quota_entities(&self) -> &QuotaEntities {
        &self.client_quotas.entities
    }

    /// Every client quota value, for a snapshot.
    pub(crate) fn client_quota_parts(&self) -> Vec<QuotaChange> {
        self.client_quotas.to_parts()
    }

    /// `user`'s SCRAM credential for `mechanism`, if the user has one (SASL/SCRAM reads it;
    /// SASL/PLAIN checks a password with `ScramCredential::matches_password`).
    pub fn scram_credential(
        &self,
        user: &str,
        mechanism: ScramMechanism,
    ) -> Option<&ScramCredential> {
        self.scram.users.get(user)?.get(&mechanism)
    }

    /// `user`'s SCRAM credentials by mechanism, if it has any (DescribeUserScramCredentials).
    pub fn scram_user(&self, user: &str) -> Option<&BTreeMap<ScramMechanism, ScramCredential>> {
        self.scram.users.get(user)
    }

    /// Every user with SCRAM credentials, by name, with its credentials by mechanism
    /// (DescribeUserScramCredentials with no user named).
    pub fn scram_users(
        &self,
    ) -> impl Iterator<Item = (&str, &BTreeMap<ScramMechanism, ScramCredential>)> {
        self.scram
            .users
            .iter()
            .map(|(user, held)| (user.as_str(), held))
    }

    /// Every user's credentials, for `command::plan`.
    pub(crate) fn scram_user_map(&self) -> &ScramUsers {
        &self.scram.users
    }

    /// Every SCRAM credential, for a snapshot.
    pub(crate) fn scram_parts(&self) -> Vec<ScramUserCredential> {
        self.scram.to_parts()
    }

    /// The brokers registered in a controller quorum, by node id; empty for a single node,
    /// which never registers.
    pub fn brokers(&self) -> &BTreeMap<i32, BrokerImage> {
        &self.brokers.registered
    }

    /// The unfenced brokers, by node id, with their advertised `host:port`.
    pub fn live_brokers(&self) -> impl Iterator<Item = (i32, &str)> {
        self.brokers
            .registered
            .iter()
            .filter(|(_, b)| !b.fenced)
            .map(|(id, b)| (*id, b.endpoint.as_str()))
    }

    /// This node's broker slot (0 for a single node or a node not registered as a broker):
    /// numbers its internal streams apart from other brokers'.
    pub fn broker_slot(&self) -> u32 {
        self.brokers
            .registered
            .get(&self.node_id)
            .map_or(0, |b| b.slot)
    }

    /// Who leads the partition of `stream_id`, at which epoch (see `brokers.rs`).
    pub fn leadership(&self, stream_id: u64) -> Leadership {
        self.brokers.leadership(stream_id, self.node_id)
    }

    /// True when a broker other than `broker` holds the partition of `stream_id` (its WAL
    /// has its newest data): a takeover moved it there.
    pub fn held_by_another(&self, stream_id: u64, broker: i32) -> bool {
        self.leadership(stream_id)
            .replica
            .is_some_and(|holder| holder != broker)
    }

    /// True when this node leads the partition of `stream_id`: it may append to and serve it.
    pub fn leads(&self, stream_id: u64) -> bool {
        self.leadership(stream_id).leader == Some(self.node_id)
    }

    /// The broker the partition of `stream_id` was asked to move to, while that move is not
    /// done (AlterPartitionReassignments).
    pub fn move_target(&self, stream_id: u64) -> Option<i32> {
        self.brokers.moves.get(&stream_id).copied()
    }

    /// Every partition move asked for and not done yet: (stream id, target broker).
    pub fn partition_moves(&self) -> impl Iterator<Item = (u64, i32)> + '_ {
        self.brokers.moves.iter().map(|(id, target)| (*id, *target))
    }

    /// Moves the controller's balancer asks for now (`Brokers::balancing_moves`, with each
    /// partition's bytes in and out per second in `rates`, none if absent), as (topic,
    /// partition, target broker); none unless `partition.autobalancing.mode` is continuous.
    pub fn balancing_moves(
        &self,
        moves_max: usize,
        rates: &std::collections::HashMap<u64, f64>,
    ) -> Vec<(String, u32, i32)> {
        if !self.broker_config().partition_autobalancing {
            return Vec::new();
        }
        self.brokers
            .balancing_moves(moves_max, |stream_id| {
                rates.get(&stream_id).copied().unwrap_or(0.0)
            })
            .into_iter()
            .filter_map(|(stream_id, target)| {
                let (topic, part) = self.stream(stream_id)?;
                Some((topic.name.clone(), part.index, target))
            })
            .collect()
    }

    /// The WAL broker `node_id` registered, with its holder (`brokers.rs`).
    pub fn broker_wal(&self, node_id: i32) -> Option<&BrokerWal> {
        self.brokers.wals.get(&node_id)
    }

    /// The broker taking `node_id`'s WAL over right now, if any.
    pub fn wal_taker(&self, node_id: i32) -> Option<i32> {
        match self.broker_wal(node_id)?.holder {
            WalHolder::Taker(taker) => Some(taker),
            _ => None,
        }
    }

    /// The WALs this node must take over: (broker, epoch), for each it was given.
    pub fn wals_taken_by_me(&self) -> impl Iterator<Item = (i32, &BrokerWal)> {
        self.brokers
            .wals
            .iter()
            .filter(|(_, wal)| wal.holder == WalHolder::Taker(self.node_id))
            .map(|(id, wal)| (*id, wal))
    }

    /// Fenced brokers whose WAL needs a new taker: (broker, taker, epoch); see
    /// `Brokers::wals_to_take_over`.
    pub fn wals_to_take_over(&self) -> Vec<(i32, i32, u64)> {
        self.brokers.wals_to_take_over()
    }

    /// The broker that coordinates groups and transactions, if it is unfenced (this node
    /// when no broker is registered).
    pub fn coordinator(&self) -> Option<i32> {
        self.coordinating_broker()
            .filter(|id| self.brokers.registered.get(id).is_none_or(|b| !b.fenced))
    }

    /// The broker that coordinates groups and transactions, fenced or not (this node when no
    /// broker is registered): the one whose WAL holds the coordinator partitions' newest logs.
    pub fn coordinating_broker(&self) -> Option<i32> {
        if self.brokers.registered.is_empty() {
            return Some(self.node_id);
        }
        self.brokers.coordinator
    }

    /// The coordinator epoch of transaction markers (Kafka's): see
    /// `Brokers::coordinator_epoch`; 0 for a single node.
    pub fn coordinator_epoch(&self) -> i32 {
        self.brokers.coordinator_epoch()
    }

    /// True when this node coordinates groups and transactions, and so runs the object
    /// tier's maintenance (compaction, cleaning, retention, garbage collection): one owner
    /// at a time in a cluster.
    pub fn coordinates(&self) -> bool {
        self.coordinator() == Some(self.node_id)
    }

    /// Partitions each registered broker holds (led, or offline while it is fenced).
    pub fn partitions_per_broker(&self) -> BTreeMap<i32, usize> {
        let mut counts: BTreeMap<i32, usize> =
            self.brokers.registered.keys().map(|id| (*id, 0)).collect();
        for leader in self.brokers.leaders.values() {
            *counts.entry(leader.broker).or_default() += 1;
        }
        counts
    }

    pub fn topic(&self, name: &str) -> Option<&TopicImage> {
        self.topics.get(name)
    }

    pub fn topic_by_id(&self, id: Uuid16) -> Option<&TopicImage> {
        self.topic_names_by_id
            .get(&id)
            .and_then(|name| self.topics.get(name))
    }

    pub fn partition(&self, topic: &str, partition: u32) -> Option<&PartitionImage> {
        self.topics
            .get(topic)
            .and_then(|t| t.partitions.get(partition as usize))
    }

    pub fn stream(&self, stream_id: u64) -> Option<(&TopicImage, &PartitionImage)> {
        let (id, index) = self.streams.get(&stream_id)?;
        let topic = self.topic_by_id(*id)?;
        Some((topic, topic.partitions.get(*index as usize)?))
    }

    /// True for a stream id that was handed out and whose partition is gone:
    /// WAL records of it can be dropped.
    pub fn is_deleted_stream(&self, stream_id: u64) -> bool {
        stream_id < self.next_stream_id && !self.streams.contains_key(&stream_id)
    }

    /// The number of partitions of all topics.
    pub fn partition_count(&self) -> usize {
        self.streams.len()
    }

    /// Partitions per shard, for shards `0..shards`; partitions placed on a
    /// shard at or above `shards` are not counted.
    pub fn shard_loads(&self, shards: u32) -> Vec<u32> {
        let mut loads = vec![0u32; shards as usize];
        for topic in self.topics.values() {
            for partition in &topic.partitions {
                if let Some(load) = loads.get_mut(partition.shard as usize) {
                    *load += 1;
                }
            }
        }
        loads
    }

    /// The typed effective configs of a topic (its own, else broker, else default).
    pub fn topic_config(&self, name: &str) -> Option<TopicConfig> {
        let topic = self.topics.get(name)?;
        Some(configs::effective_topic_config(
            &topic.configs,
            &self.broker_configs,
        ))
    }

    /// The typed effective broker configs.
    pub fn broker_config(&self) -> BrokerConfig {
        configs::effective_broker_config(&self.broker_configs)
    }

    /// The next object id `AllocateObjectIds` hands out.
    pub fn next_object_id(&self) -> ObjectId {
        self.registry.next_object_id
    }

    /// A live (committed, not marked for deletion) object.
    pub fn object(&self, id: ObjectId) -> Option<&ObjectImage> {
        self.registry.objects.get(&id).map(|o| &**o)
    }

    /// Every live object, by id (oldest first).
    pub fn objects(&self) -> impl Iterator<Item = &ObjectImage> {
        self.registry.objects.values().map(|o| &**o)
    }

    /// Objects marked for deletion, by id.
    pub fn tombstones(&self) -> impl Iterator<Item = &ObjectTombstone> {
        self.registry.tombstones.values()
    }

    /// An object marked for deletion.
    pub fn tombstone(&self, id: ObjectId) -> Option<&ObjectTombstone> {
        self.registry.tombstones.get(&id)
    }

    /// The object holding `offset` of `stream_id`, and the stream's range in
    /// it; O(log n). None below the first or at/after the last offset in
    /// objects.
    pub fn objects_for(&self, stream_id: u64, offset: i64) -> Option<(&ObjectImage, &StreamRange)> {
        let stream = self.registry.streams.get(&stream_id)?;
        let (_, slot) = stream.ranges.range(..=offset).next_back()?;
        if offset >= slot.end_offset {
            return None;
        }
        let object = self.registry.objects.get(&slot.object_id)?;
        Some((object, object.range_of(stream_id)?))
    }

    /// The stream's ranges in objects, in offset order.
    pub fn stream_objects(
        &self,
        stream_id: u64,
    ) -> impl Iterator<Item = (&ObjectImage, &StreamRange)> {
        self.registry
            .streams
            .get(&stream_id)
            .into_iter()
            .flat_map(|s| s.ranges.values())
            .filter_map(move |slot| {
                let object = self.registry.objects.get(&slot.object_id)?;
                Some((&**object, object.range_of(stream_id)?))
            })
    }

    /// The offset after the last one of `stream_id` in objects: where the
    /// next commit must start, and where WAL replay begins for the stream.
    /// None when nothing of the stream was ever committed.
    pub fn stream_end_offset_in_objects(&self, stream_id: u64) -> Option<i64> {
        let stream = self.registry.streams.get(&stream_id)?;
        (!stream.ranges.is_empty() || stream.end_offset > 0).then_some(stream.end_offset)
    }

    /// The streams with an id in `ids` that objects hold data of.
    pub fn streams_in_objects(
        &self,
        ids: std::ops::RangeInclusive<u64>,
    ) -> impl Iterator<Item = u64> + '_ {
        self.registry
            .streams
            .range(ids)
            .filter(|(_, stream)| !stream.ranges.is_empty())
            .map(|(id, _)| *id)
    }

    /// The first offset of `stream_id` readable from objects.
    pub fn stream_start_offset_in_objects(&self, stream_id: u64) -> Option<i64> {
        self.registry.stream_start(stream_id)
    }

    /// True when nothing of the object can be read any more: each of its
    /// ranges belongs to a deleted stream or ends at or below its stream's
    /// log start offset (internal streams, with ids no partition has, never die). Such an object may be marked for deletion.
    pub fn is_object_dead(&self, object: &ObjectImage) -> bool {
        object
            .ranges
            .iter()
            .all(|r| match self.stream(r.stream_id) {
                Some((_, partition)) => r.end_offset <= partition.log_start_offset,
                // Ids above every partition's are the broker's internal streams (group
                // offsets), which are never released this way.
                None => self.is_deleted_stream(r.stream_id),
            })
    }

    /// Applies one resolved record as number `epoch`, returning the next image.
    /// Pure and deterministic: replaying the same records from the same image
    /// gives the same result, which is what makes the log (and later a
    /// replicated log) the source of truth. Errors mean the record does not
    /// fit this image: at runtime a bug, on replay a corrupt log.
    pub fn apply(
        &self,
        epoch: u64,
        record: &MetadataRecord,
    ) -> Result<(MetadataImage, CommandOutcome), MetadataError> {
        if epoch != self.epoch + 1 {
            return Err(MetadataError::Corrupt(format!(
                "record epoch {epoch} does not follow image epoch {}",
                self.epoch
            )));
        }
        let mut next = self.clone();
        next.epoch = epoch;
        let outcome = next.apply_in_place(record)?;
        debug_assert!(
            next.check_invariants().is_ok(),
            "{:?}",
            next.check_invariants()
        );
        Ok((next, outcome))
    }

    /// Checks every structural invariant of the image (used after loading a
    /// snapshot, and in debug builds after every apply).
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut ids = BTreeMap::new();
        let mut streams = BTreeMap::new();
        for (name, topic) in &self.topics {
            if name != &topic.name {
                return Err(format!("topic keyed {name} is named {}", topic.name));
            }
            if topic.id == [0; 16] {
                return Err(format!("topic {name} has the zero id"));
            }
            if ids.insert(topic.id, name.clone()).is_some() {
                return Err(format!("topic {name} shares its id"));
            }
            if topic.partitions.is_empty()
                || topic.partitions.len() > PARTITIONS_PER_TOPIC_MAX as usize
            {
                return Err(format!(
                    "topic {name} has {} partitions",
                    topic.partitions.len()
                ));
            }
            for (i, partition) in topic.partitions.iter().enumerate() {
                if partition.index as usize != i {
                    return Err(format!(
                        "topic {name} partition {i} has index {}",
                        partition.index
                    ));
                }
                if partition.shard >= SHARDS_MAX {
                    return Err(format!(
                        "topic {name} partition {i} on shard {}",
                        partition.shard
                    ));
                }
                if partition.log_start_offset < 0 {
                    return Err(format!("topic {name} partition {i} log start offset < 0"));
                }
                if partition.stream_id < FIRST_STREAM_ID
                    || partition.stream_id >= self.next_stream_id
                {
                    return Err(format!(
                        "topic {name} partition {i} stream id {} out of range",
                        partition.stream_id
                    ));
                }
                if streams
                    .insert(partition.stream_id, (topic.id, partition.index))
                    .is_some()
                {
                    return Err(format!("stream id {} used twice", partition.stream_id));
                }
            }
        }
        if streams.len() > PARTITIONS_TOTAL_MAX as usize {
            return Err(format!("{} partitions in total", streams.len()));
        }
        if self.next_producer_id < 0 {
            return Err("negative next producer id".to_string());
        }
        if ids != self.topic_names_by_id || streams != self.streams {
            return Err("lookup indexes disagree with topics".to_string());
        }
        if let Some(stream_id) =
            self.registry.streams.keys().find(|id| {
                !self.streams.contains_key(id) && !crate::objects::is_internal_stream(**id)
            })
        {
            return Err(format!("objects indexed for unknown stream {stream_id}"));
        }
        self.brokers
            .check_invariants(|id| self.streams.contains_key(&id))?;
        self.scram.check_invariants()?;
        self.acls.check_invariants()?;
        self.client_quotas.check_invariants()?;
        self.registry.check_invariants()
    }

    /// Builds an image from persisted parts (a snapshot), rebuilding the
    /// lookup indexes and checking every invariant.
    #[allow(clippy::too_many_arguments)] // one per persisted part
    pub(crate) fn from_parts(
        cluster_id: String,
        node_id: i32,
        epoch: u64,
        topics: Vec<TopicImage>,
        broker_configs: BTreeMap<String, String>,
        next_producer_id: i64,
        next_stream_id: u64,
        objects: RegistryParts,
        uploads: Vec<StreamUploadsPart>,
        cleaned: Vec<StreamCleaned>,
        brokers: BrokerParts,
        wals: Vec<(i32, BrokerWal)>,
        moves: Vec<(u64, i32)>,
        scram: Vec<ScramUserCredential>,
        acls: Vec<AclBinding>,
        client_quotas: Vec<QuotaChange>,
    ) -> Result<MetadataImage, String> {
        let mut image = MetadataImage::empty(cluster_id, node_id);
        image.epoch = epoch;
        image.brokers = Brokers {
            registered: brokers.registered.into_iter().collect(),
            leaders: brokers.leaders.into_iter().collect(),
            coordinator: brokers.coordinator,
            wals: wals.into_iter().collect(),
            moves: moves.into_iter().collect(),
            drained: configs::effective_broker_config(&broker_configs).drained_broker_ids,
        };
        image.scram = ScramCredentials::from_parts(scram)?;
        image.acls = AclSet::from_bindings(acls)?;
        image.client_quotas = ClientQuotas::from_parts(client_quotas)?;
        image.broker_configs = broker_configs;
        image.next_producer_id = next_producer_id;
        image.next_stream_id = next_stream_id;
        for topic in topics {
            image.topic_names_by_id.insert(topic.id, topic.name.clone());
            for partition in &topic.partitions {
                image
                    .streams
                    .insert(partition.stream_id, (topic.id, partition.index));
            }
            if image.topics.insert(topic.name.clone(), topic).is_some() {
                return Err("topic listed twice".to_string());
            }
        }
        image.registry = objects.into_registry(&image.streams)?;
        for part in uploads {
            let stream_id = part.stream_id;
            if !image.streams.contains_key(&stream_id) {
                return Err(format!(
                    "uploads of stream {stream_id}, which no partition has"
                ));
            }
            let stream = StreamUploads::from_part(part)?;
            if image.uploads.insert(stream_id, Arc::new(stream)).is_some() {
                return Err(format!("uploads of stream {stream_id} listed twice"));
            }
        }
        for part in cleaned {
            if !image.streams.contains_key(&part.stream_id) || part.cleaned_end_offset < 0 {
                return Err(format!(
                    "cleaner mark {} of stream {}, which no partition has or is negative",
                    part.cleaned_end_offset, part.stream_id
                ));
            }
            Arc::make_mut(image.uploads.entry(part.stream_id).or_default()).cleaned = Some(part);
        }
        image.check_invariants()?;
        Ok(image)
    }

    /// The brokers part, as a snapshot keeps it.
    pub(crate) fn broker_parts(&self) -> BrokerParts {
        BrokerParts {
            registered: self
                .brokers
                .registered
                .iter()
                .map(|(id, b)| (*id, b.clone()))
                .collect(),
            leaders: self
                .brokers
                .leaders
                .iter()
                .map(|(id, l)| (*id, *l))
                .collect(),
            coordinator: self.brokers.coordinator,
        }
    }

    /// The partition moves asked for, for a snapshot.
    pub(crate) fn move_parts(&self) -> Vec<(u64, i32)> {
        self.partition_moves().collect()
    }

    /// The brokers' WALs, for a snapshot.
    pub(crate) fn wal_parts(&self) -> Vec<(i32, BrokerWal)> {
        self.brokers
            .wals
            .iter()
            .map(|(id, wal)| (*id, wal.clone()))
            .collect()
    }

    fn apply_in_place(&mut self, record: &MetadataRecord) -> Result<CommandOutcome, MetadataError> {
        let corrupt =
            |what: String| MetadataError::Corrupt(format!("record does not apply: {what}"));
        match record {
            MetadataRecord::CreateTopic {
                name,
                id,
                configs,
                partitions,
            } => {
                if self.topics.contains_key(name)
                    || self.topic_names_by_id.contains_key(id)
                    || *id == [0; 16]
                {
                    return Err(corrupt(format!("topic {name} exists or bad id")));
                }
                if partitions.is_empty() {
                    return Err(corrupt(format!("topic {name} without partitions")));
                }
                self.add_partitions(name, *id, 0, partitions)
                    .map_err(corrupt)?;
                self.topic_names_by_id.insert(*id, name.clone());
                self.topics.insert(
                    name.clone(),
                    TopicImage {
                        name: name.clone(),
                        id: *id,
                        partitions: partitions.clone(),
                        configs: configs.clone(),
                    },
                );
                self.brokers.assign(partitions.iter().map(|p| p.stream_id));
                Ok(CommandOutcome::TopicCreated { topic_id: *id })
            }
            MetadataRecord::DeleteTopic { name, id } => {
                let topic = self
                    .topics
                    .remove(name)
                    .ok_or_else(|| corrupt(format!("no topic {name}")))?;
                if topic.id != *id {
                    return Err(corrupt(format!("topic {name} id differs")));
                }
                self.topic_names_by_id.remove(id);
                let stream_ids: Vec<u64> = topic.partitions.iter().map(|p| p.stream_id).collect();
                for stream_id in &stream_ids {
                    self.streams.remove(stream_id);
                    // The objects keep the ranges until retention marks them.
                    self.registry.streams.remove(stream_id);
                    self.uploads.remove(stream_id);
                    self.brokers.forget(*stream_id);
                }
                Ok(CommandOutcome::TopicDeleted {
                    topic_id: *id,
                    stream_ids,
                })
            }
            MetadataRecord::CreatePartitions { name, partitions } => {
                let (id, current) = self
                    .topics
                    .get(name)
                    .map(|t| (t.id, t.partitions.len() as u32))
                    .ok_or_else(|| corrupt(format!("no topic {name}")))?;
                self.add_partitions(name, id, current, partitions)
                    .map_err(corrupt)?;
                let topic = self.topics.get_mut(name).expect("checked above");
                topic.partitions.extend(partitions.iter().cloned());
                self.brokers.assign(partitions.iter().map(|p| p.stream_id));
                Ok(CommandOutcome::PartitionsCreated {
                    topic_id: topic.id,
                    first_new_partition: current,
                })
            }
            MetadataRecord::AlterTopicConfigs { name, set, delete } => {
                let topic = self
                    .topics
                    .get_mut(name)
                    .ok_or_else(|| corrupt(format!("no topic {name}")))?;
                for key in delete {
                    topic.configs.remove(key);
                }
                for (key, value) in set {
                    topic.configs.insert(key.clone(), value.clone());
                }
                Ok(CommandOutcome::TopicConfigsAltered)
            }
            MetadataRecord::AlterBrokerConfigs { set, delete } => {
                for key in delete {
                    self.broker_configs.remove(key);
                }
                for (key, value) in set {
                    self.broker_configs.insert(key.clone(), value.clone());
                }
                self.brokers.drained = self.broker_config().drained_broker_ids;
                Ok(CommandOutcome::BrokerConfigsAltered)
            }
            MetadataRecord::SetLogStartOffset {
                topic,
                partition,
                offset,
            } => {
                let p = self
                    .topics
                    .get_mut(topic)
                    .and_then(|t| t.partitions.get_mut(*partition as usize))
                    .ok_or_else(|| corrupt(format!("no partition {topic}-{partition}")))?;
                if *offset < p.log_start_offset {
                    return Err(corrupt(format!(
                        "log start offset of {topic}-{partition} moves back"
                    )));
                }
                p.log_start_offset = *offset;
                if let Some(stream) = self.uploads.get_mut(&p.stream_id) {
                    StreamUploads::trim(stream, *offset);
                }
                Ok(CommandOutcome::LogStartOffsetSet {
                    log_start_offset: *offset,
                })
            }
            MetadataRecord::AllocateProducerIds { first, count } => {
                let end = first
                    .checked_add(i64::from(*count))
                    .filter(|_| *first == self.next_producer_id && *count > 0)
                    .ok_or_else(|| corrupt(format!("producer id block {first}+{count}")))?;
                self.next_producer_id = end;
                Ok(CommandOutcome::ProducerIdsAllocated {
                    first_producer_id: *first,
                    count: *count,
                })
            }
            MetadataRecord::AllocateObjectIds { first, count } => {
                let end = first
                    .checked_add(u64::from(*count))
                    .filter(|_| *first == self.registry.next_object_id && *count > 0)
                    .ok_or_else(|| corrupt(format!("object id block {first}+{count}")))?;
                self.registry.next_object_id = end;
                Ok(CommandOutcome::ObjectIdsAllocated {
                    first_object_id: *first,
                    count: *count,
                })
            }
            MetadataRecord::CommitObjects { objects } => {
                let streams = &self.streams;
                let next_stream_id = self.next_stream_id;
                let is_deleted = |id: u64| id < next_stream_id && !streams.contains_key(&id);
                for object in objects {
                    self.registry
                        .insert(object.clone(), &is_deleted, true)
                        .map_err(corrupt)?;
                }
                Ok(CommandOutcome::ObjectsCommitted)
            }
            MetadataRecord::CompactObjects {
                removed,
                added,
                now_ms,
            } => {
                // What each live stream covers before: (first start, end).
                let mut before = BTreeMap::new();
                for id in removed.iter() {
                    let object = self
                        .registry
                        .objects
                        .get(id)
                        .ok_or_else(|| corrupt(format!("object {id} is not live")))?;
                    for r in &object.ranges {
                        if self.registry.streams.contains_key(&r.stream_id) {
                            let start = self.registry.stream_start(r.stream_id);
                            let end = self.stream_end_offset_in_objects(r.stream_id);
                            before.insert(r.stream_id, (start, end));
                        }
                    }
                }
                for id in removed {
                    self.registry.mark(*id, *now_ms, false).map_err(corrupt)?;
                }
                let streams = &self.streams;
                let next_stream_id = self.next_stream_id;
                let is_deleted = |id: u64| id < next_stream_id && !streams.contains_key(&id);
                for object in added {
                    for r in &object.ranges {
                        if !is_deleted(r.stream_id) && !before.contains_key(&r.stream_id) {
                            return Err(corrupt(format!(
                                "compaction adds stream {} that no removed object holds",
                                r.stream_id
                            )));
                        }
                    }
                    self.registry
                        .insert(object.clone(), &is_deleted, false)
                        .map_err(corrupt)?;
                }
                for (stream_id, (start, end)) in before {
                    self.registry.check_stream(stream_id).map_err(corrupt)?;
                    let now = (
                        self.registry.stream_start(stream_id),
                        self.stream_end_offset_in_objects(stream_id),
                    );
                    if now != (start, end) {
                        return Err(corrupt(format!(
                            "compaction changes what stream {stream_id} covers: {:?} to {:?}",
                            (start, end),
                            now
                        )));
                    }
                }
                Ok(CommandOutcome::ObjectsCompacted)
            }
            MetadataRecord::MarkObjectsForDeletion { ids, now_ms } => {
                for id in ids {
                    self.registry.mark(*id, *now_ms, true).map_err(corrupt)?;
                }
                Ok(CommandOutcome::ObjectsMarkedForDeletion)
            }
            MetadataRecord::DeleteObjects { ids } => {
                for id in ids {
                    self.registry.tombstones.remove(id).ok_or_else(|| {
                        corrupt(format!("object {id} is not marked for deletion"))
                    })?;
                }
                Ok(CommandOutcome::ObjectsDeleted)
            }
            MetadataRecord::RecordUploads { streams } => {
                for upload in streams {
                    if !self.streams.contains_key(&upload.stream_id) {
                        continue; // deleted since the upload read its state
                    }
                    let stream = self.uploads.entry(upload.stream_id).or_default();
                    StreamUploads::record(stream, upload);
                }
                Ok(CommandOutcome::UploadsRecorded)
            }
            MetadataRecord::RegisterBroker { node_id, endpoint } => {
                self.brokers
                    .register(*node_id, endpoint, self.streams.keys().copied());
                Ok(CommandOutcome::BrokerRegistered)
            }
            MetadataRecord::RegisterBrokerWithWal {
                node_id,
                endpoint,
                wal,
            } => {
                self.brokers
                    .register(*node_id, endpoint, self.streams.keys().copied());
                self.brokers
                    .register_wal(*node_id, &wal.paths, wal.capacity_bytes);
                Ok(CommandOutcome::BrokerRegistered)
            }
            MetadataRecord::TakeOverWal {
                node_id,
                taker,
                epoch,
            } => {
                if !self.brokers.take_over_wal(*node_id, *taker, *epoch) {
                    return Err(corrupt(format!("broker {node_id} registered no WAL")));
                }
                Ok(CommandOutcome::WalTakenOver)
            }
            MetadataRecord::ReleaseWal {
                node_id,
                epoch: _,
                moved,
            } => {
                if !self.brokers.release_wal(*node_id, *moved) {
                    return Err(corrupt(format!("broker {node_id} registered no WAL")));
                }
                Ok(CommandOutcome::WalReleased)
            }
            MetadataRecord::MovePartition { stream_id, target } => {
                match target {
                    Some(target) => self.brokers.start_move(*stream_id, *target),
                    None => self.brokers.cancel_move(*stream_id),
                }
                Ok(CommandOutcome::PartitionMoveSet)
            }
            MetadataRecord::CompletePartitionMove {
                stream_id,
                from,
                to,
            } => {
                if !self.brokers.complete_move(*stream_id, *from, *to) {
                    return Err(corrupt(format!(
                        "stream {stream_id} is not moving from broker {from} to {to}"
                    )));
                }
                Ok(CommandOutcome::PartitionMoveCompleted)
            }
            MetadataRecord::AlterScramCredentials { upserted, deleted } => {
                self.scram.apply(upserted, deleted).map_err(corrupt)?;
                // The results the caller gets come from the plan (`Plan::RecordAnswering`),
                // which also knows the users it refused; a replay needs none.
                Ok(CommandOutcome::ScramCredentialsAltered {
                    results: Vec::new(),
                })
            }
            MetadataRecord::AlterAcls { created, deleted } => {
                self.acls.apply(created, deleted).map_err(corrupt)?;
                // As for the SCRAM credentials, the caller's results come from the plan.
                Ok(CommandOutcome::AclsAltered)
            }
            MetadataRecord::AlterClientQuotas { changes } => {
                self.client_quotas.apply(changes).map_err(corrupt)?;
                // As for SCRAM above: the caller's results come from the plan.
                Ok(CommandOutcome::ClientQuotasAltered {
                    results: Vec::new(),
                })
            }
            MetadataRecord::SetBrokerFenced { node_id, fenced } => {
                if !self
                    .brokers
                    .set_fenced(*node_id, *fenced, self.streams.keys().copied())
                {
                    return Err(corrupt(format!("broker {node_id} is not registered")));
                }
                Ok(CommandOutcome::BrokerFencingSet)
            }
            MetadataRecord::RecordCleaning { streams } => {
                for cleaned in streams {
                    if !self.streams.contains_key(&cleaned.stream_id) {
                        continue; // deleted since the cleaner read it
                    }
                    let stream = Arc::make_mut(self.uploads.entry(cleaned.stream_id).or_default());
                    let end = stream
                        .cleaned
                        .map_or(0, |c| c.cleaned_end_offset)
                        .max(cleaned.cleaned_end_offset);
                    stream.cleaned = Some(StreamCleaned {
                        cleaned_end_offset: end,
                        ..*cleaned
                    });
                }
                Ok(CommandOutcome::CleaningRecorded)
            }
        }
    }

    /// The log cleaner's last mark of `stream_id` (None: never cleaned).
    pub fn cleaned(&self, stream_id: u64) -> Option<StreamCleaned> {
        self.uploads.get(&stream_id).and_then(|s| s.cleaned)
    }

    /// How far the log cleaner has cleaned `stream_id` (0: never).
    pub fn cleaned_end_offset(&self, stream_id: u64) -> i64 {
        self.cleaned(stream_id).map_or(0, |c| c.cleaned_end_offset)
    }

    /// Every stream's cleaner mark, for a snapshot.
    pub(crate) fn cleaned_parts(&self) -> Vec<StreamCleaned> {
        self.uploads.values().filter_map(|s| s.cleaned).collect()
    }

    /// The producers of `stream_id` as of the end of its data in objects, by producer id.
    pub fn producer_states(&self, stream_id: u64) -> Option<&ProducerStates> {
        self.uploads.get(&stream_id).map(|s| &s.producers)
    }

    /// When `stream_id`'s uploads above its log start were written, oldest first.
    pub fn upload_times(&self, stream_id: u64) -> &[UploadTime] {
        self.uploads.get(&stream_id).map_or(&[], |s| &s.times)
    }

    /// Every stream's uploads, for a snapshot.
    pub(crate) fn upload_parts(&self) -> Vec<StreamUploadsPart> {
        self.uploads
            .iter()
            .map(|(&stream_id, stream)| stream.to_part(stream_id))
            .collect()
    }

    pub(crate) fn registry_parts(&self) -> RegistryParts {
        RegistryParts::from_registry(&self.registry)
    }

    /// Registers new partitions `first_index..` of `name` in the stream index
    /// after checking they continue the topic and the stream id sequence.
    fn add_partitions(
        &mut self,
        name: &str,
        id: Uuid16,
        first_index: u32,
        partitions: &[PartitionImage],
    ) -> Result<(), String> {
        if first_index as usize + partitions.len() > PARTITIONS_PER_TOPIC_MAX as usize
            || self.streams.len() + partitions.len() > PARTITIONS_TOTAL_MAX as usize
        {
            return Err(format!("topic {name} over the partition limits"));
        }
        for (i, partition) in partitions.iter().enumerate() {
            let expected_index = first_index + i as u32;
            if partition.index != expected_index
                || partition.stream_id != self.next_stream_id
                || partition.shard >= SHARDS_MAX
                || partition.log_start_offset != 0
            {
                return Err(format!("bad new partition {name}-{expected_index}"));
            }
            self.streams
                .insert(partition.stream_id, (id, partition.index));
            self.next_stream_id += 1;
        }
        Ok(())
    }
}

impl TopicImage {
    /// The typed effective configs of this topic under these broker configs.
    pub fn effective_config(&self, broker_configs: &BTreeMap<String, String>) -> TopicConfig {
        configs::effective_topic_config(&self.configs, broker_configs)
    }
}
