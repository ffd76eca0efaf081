//! Client quotas (Kafka's KIP-13, KIP-124, KIP-546): rate limits per user and client id,
//! kept in the metadata as Kafka's `ClientQuotaRecord`s are, read by every shard's quota
//! enforcement (`shards/src/quota/`) and by DescribeClientQuotas.
//!
//! An entity is a user, a client id, or both, each named or the default (Kafka's `<default>`,
//! a null name on the wire). Each entity holds values for some of `QuotaKey`. AlterClientQuotas
//! is decided entity by entity (`plan_alterations`, Kafka's `ClientQuotaControlManager`): the
//! response has one result per entity, and the changes of the accepted ones go into one
//! record. `describe` is Kafka's `ClientQuotasImage.describe` (match types exact, default and
//! specified; `strict`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::limits::{
    CLIENT_QUOTA_ALTERATIONS_PER_COMMAND_MAX, CLIENT_QUOTA_ENTITIES_MAX,
    CLIENT_QUOTA_ENTITY_NAME_BYTES_MAX,
};

/// Kafka's entity type names.
pub const ENTITY_USER: &str = "user";
pub const ENTITY_CLIENT_ID: &str = "client-id";
/// Kafka's IP entity (connection-rate quotas, KIP-612), refused here.
pub const ENTITY_IP: &str = "ip";

/// Kafka's error codes of per-entity results (the metadata crate does not depend on the codec).
const NONE: i16 = 0;
const INVALID_REQUEST: i16 = 42;
const POLICY_VIOLATION: i16 = 44;
const UNSUPPORTED_VERSION: i16 = 35;

/// A quota key this broker enforces. Kafka also has `controller_mutation_rate` (KIP-599),
/// refused here with INVALID_REQUEST as an unknown key: Sluice does not throttle topic
/// creation and deletion, and a config that does nothing is not accepted.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
pub enum QuotaKey {
    /// Bytes per second of produce requests.
    ProducerByteRate,
    /// Bytes per second of fetch responses.
    ConsumerByteRate,
    /// Percent of one shard's time per second spent on the client's requests.
    RequestPercentage,
}

impl QuotaKey {
    pub const ALL: [QuotaKey; 3] = [
        QuotaKey::ProducerByteRate,
        QuotaKey::ConsumerByteRate,
        QuotaKey::RequestPercentage,
    ];

    /// Kafka's name of the key.
    pub fn name(self) -> &'static str {
        match self {
            QuotaKey::ProducerByteRate => "producer_byte_rate",
            QuotaKey::ConsumerByteRate => "consumer_byte_rate",
            QuotaKey::RequestPercentage => "request_percentage",
        }
    }

    pub fn from_name(name: &str) -> Option<QuotaKey> {
        QuotaKey::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Kafka's byte rates are LONG configs (whole numbers); request_percentage is a DOUBLE.
    fn integral(self) -> bool {
        !matches!(self, QuotaKey::RequestPercentage)
    }
}

/// A quota value: an f64 as Kafka's `ClientQuotaRecord` holds it, kept as its bits so that
/// commands, records and the image stay `Eq` (two values are equal when their bits are, as
/// Kafka's `Objects.equals` on `Double`s).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub struct QuotaValue(u64);

impl QuotaValue {
    pub fn new(value: f64) -> QuotaValue {
        QuotaValue(value.to_bits())
    }

    pub fn get(self) -> f64 {
        f64::from_bits(self.0)
    }
}

/// One part of an entity: a name, or the default of its type.
#[derive(
    Clone,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
pub enum EntityName {
    /// Kafka's `<default>` (a null name on the wire).
    Default,
    Named(String),
}

impl EntityName {
    /// The wire's form: None for the default.
    pub fn as_wire(&self) -> Option<&str> {
        match self {
            EntityName::Default => None,
            EntityName::Named(name) => Some(name),
        }
    }

    pub fn from_wire(name: Option<String>) -> EntityName {
        name.map_or(EntityName::Default, EntityName::Named)
    }
}

/// A quota entity: a user, a client id or both; never neither (the planner refuses it).
#[derive(
    Clone,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
pub struct QuotaEntity {
    pub user: Option<EntityName>,
    pub client_id: Option<EntityName>,
}

impl QuotaEntity {
    /// Its parts as (entity type, name) pairs, the wire's form (user first).
    pub fn components(&self) -> Vec<(&'static str, Option<&str>)> {
        let mut parts = Vec::with_capacity(2);
        if let Some(user) = &self.user {
            parts.push((ENTITY_USER, user.as_wire()));
        }
        if let Some(client_id) = &self.client_id {
            parts.push((ENTITY_CLIENT_ID, client_id.as_wire()));
        }
        parts
    }

    fn parts(&self) -> usize {
        usize::from(self.user.is_some()) + usize::from(self.client_id.is_some())
    }
}

impl std::fmt::Display for QuotaEntity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self
            .components()
            .into_iter()
            .map(|(kind, name)| format!("{kind}={}", name.unwrap_or("<default>")))
            .collect();
        write!(f, "{}", parts.join(","))
    }
}

/// An entity as AlterClientQuotas names it: (entity type, name or None for the default),
/// unchecked.
pub type RawEntity = Vec<(String, Option<String>)>;

/// One entity's alteration as AlterClientQuotas carries it, unchecked.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct QuotaAlteration {
    pub entity: RawEntity,
    /// (key, Some(value) to set, None to remove).
    pub ops: Vec<(String, Option<QuotaValue>)>,
}

/// One change of a record: set (`Some`) or remove (`None`) `key` of `entity`.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct QuotaChange {
    pub entity: QuotaEntity,
    pub key: QuotaKey,
    pub value: Option<QuotaValue>,
}

/// One entity's result of an AlterClientQuotas.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct QuotaEntityResult {
    pub entity: RawEntity,
    /// 0, or INVALID_REQUEST (42), or POLICY_VIOLATION (44) past `CLIENT_QUOTA_ENTITIES_MAX`.
    pub error_code: i16,
    pub error_message: Option<String>,
}

/// Every entity's values.
pub type QuotaEntities = BTreeMap<QuotaEntity, BTreeMap<QuotaKey, QuotaValue>>;

/// The quotas of the image: behind an `Arc`, so that cloning the image per command copies
/// none of them, and so that a shard sees whether they changed by comparing pointers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ClientQuotas {
    pub(crate) entities: Arc<QuotaEntities>,
}

/// What `plan_alterations` decided: the changes to write and one result per entity, in the
/// order the request first names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedQuotas {
    pub changes: Vec<QuotaChange>,
    pub results: Vec<QuotaEntityResult>,
}

/// Decides an AlterClientQuotas against the quotas there are, entity by entity, as Kafka's
/// `ClientQuotaControlManager.alterClientQuotas`: an empty entity, an unknown or repeated
/// entity type, an empty or too long name, an unknown key, a key twice, a value not above 0, a
/// fractional or too large byte rate are INVALID_REQUEST for that entity; an entity named
/// twice is refused INVALID_REQUEST whole (Kafka writes its first alteration and still answers
/// an error); a new entity past `CLIENT_QUOTA_ENTITIES_MAX` is POLICY_VIOLATION. More than
/// `CLIENT_QUOTA_ALTERATIONS_PER_COMMAND_MAX` entities refuse the whole request (the Err).
/// Setting a value an entity already has and removing one it lacks write nothing.
pub fn plan_alterations(
    entities: &QuotaEntities,
    alterations: &[QuotaAlteration],
) -> Result<PlannedQuotas, String> {
    if alterations.len() > CLIENT_QUOTA_ALTERATIONS_PER_COMMAND_MAX {
        return Err(format!(
            "{} entities in one AlterClientQuotas; at most {CLIENT_QUOTA_ALTERATIONS_PER_COMMAND_MAX} \
             (CLIENT_QUOTA_ALTERATIONS_PER_COMMAND_MAX)",
            alterations.len()
        ));
    }
    // Entities named more than once: refused, each once, at its first mention.
    let mut times: BTreeMap<&RawEntity, usize> = BTreeMap::new();
    for alteration in alterations {
        *times.entry(&alteration.entity).or_default() += 1;
    }
    let mut planned = PlannedQuotas {
        changes: Vec::new(),
        results: Vec::new(),
    };
    let mut answered: BTreeSet<&RawEntity> = BTreeSet::new();
    let mut entity_count = entities.len();
    for alteration in alterations {
        if !answered.insert(&alteration.entity) {
            continue;
        }
        let outcome = if times.get(&alteration.entity).copied().unwrap_or(0) > 1 {
            Err((
                INVALID_REQUEST,
                format!("Ignoring duplicate entity {:?}", alteration.entity),
            ))
        } else {
            plan_entity(entities, alteration, &mut entity_count)
        };
        let (error_code, error_message) = match outcome {
            Ok(changes) => {
                planned.changes.extend(changes);
                (NONE, None)
            }
            Err((code, message)) => (code, Some(message)),
        };
        planned.results.push(QuotaEntityResult {
            entity: alteration.entity.clone(),
            error_code,
            error_message,
        });
    }
    Ok(planned)
}

/// A describe refused whole: Kafka's error code and message.
pub type DescribeRefusal = (i16, String);

/// One entity DescribeClientQuotas matched, with its values.
pub type Described<'a> = (&'a QuotaEntity, &'a BTreeMap<QuotaKey, QuotaValue>);

/// How DescribeClientQuotas matches one entity type (Kafka's `match_type`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ComponentMatch {
    /// 0: this name exactly.
    Exact(String),
    /// 1: the type's default.
    Default,
    /// 2: any name, the default included (Kafka's MATCH_TYPE_SPECIFIED as its image has it).
    Any,
}

/// One filter component of a DescribeClientQuotas, unchecked: (entity type, match type,
/// match string).
pub type RawComponent = (String, i8, Option<String>);

/// The entities DescribeClientQuotas matches, with their values, as Kafka's
/// `ClientQuotasImage.describe`: an empty, repeated or unknown entity type, a match string
/// where the match type allows none (or none where it needs one) and an unknown match type are
/// INVALID_REQUEST for the whole request, an unknown entity type UNSUPPORTED_VERSION; an `ip`
/// component is checked as Kafka does (not with a user or client id) and matches nothing, as
/// this broker keeps no IP quotas. `strict`: only entities of exactly the filtered types.
pub fn describe<'a>(
    entities: &'a QuotaEntities,
    components: &[RawComponent],
    strict: bool,
) -> Result<Vec<Described<'a>>, DescribeRefusal> {
    let mut user: Option<ComponentMatch> = None;
    let mut client_id: Option<ComponentMatch> = None;
    let mut ip: Option<ComponentMatch> = None;
    for (entity_type, match_type, name) in components {
        let slot = match entity_type.as_str() {
            "" => return Err((INVALID_REQUEST, "Invalid empty entity type.".to_string())),
            ENTITY_USER => &mut user,
            ENTITY_CLIENT_ID => &mut client_id,
            ENTITY_IP => &mut ip,
            other => {
                return Err((
                    UNSUPPORTED_VERSION,
                    format!("Unsupported entity type {other}"),
                ));
            }
        };
        if slot.is_some() {
            return Err((
                INVALID_REQUEST,
                format!("Entity type {entity_type} cannot appear more than once in the filter."),
            ));
        }
        *slot = Some(match (match_type, name) {
            (0, Some(name)) => ComponentMatch::Exact(name.clone()),
            (0, None) => {
                return Err((
                    INVALID_REQUEST,
                    "Request specified MATCH_TYPE_EXACT, but set match string to null.".to_string(),
                ));
            }
            (1, None) => ComponentMatch::Default,
            (2, None) => ComponentMatch::Any,
            (1 | 2, Some(_)) => {
                return Err((
                    INVALID_REQUEST,
                    format!(
                        "Request specified match type {match_type}, but also specified a match \
                         string."
                    ),
                ));
            }
            _ => {
                return Err((INVALID_REQUEST, format!("Unknown match type {match_type}")));
            }
        });
    }
    if ip.is_some() {
        if user.is_some() || client_id.is_some() {
            return Err((
                INVALID_REQUEST,
                "Invalid entity filter component combination. IP filter component should not \
                 be used with user or clientId filter component."
                    .to_string(),
            ));
        }
        return Ok(Vec::new());
    }
    let filtered = usize::from(user.is_some()) + usize::from(client_id.is_some());
    Ok(entities
        .iter()
        .filter(|(entity, _)| {
            (!strict || entity.parts() == filtered)
                && part_matches(&entity.user, &user)
                && part_matches(&entity.client_id, &client_id)
        })
        .collect())
}

/// Kafka's precedence of the entities whose quota applies to a client (`ClientQuotaManager`):
/// /config/users/<user>/clients/<client-id>, users/<user>/clients/<default>, users/<user>,
/// users/<default>/clients/<client-id>, users/<default>/clients/<default>, users/<default>,
/// clients/<client-id>, clients/<default>. The first that has `key` applies.
///
/// Returns the entity that applies and its value; the caller keys its rate measurement on
/// the entity's shape with the client's own names (`QuotaEntity` of `metric_entity`).
pub fn resolve(
    entities: &QuotaEntities,
    user: &str,
    client_id: &str,
    key: QuotaKey,
) -> Option<(QuotaEntity, QuotaValue)> {
    let named = |s: &str| Some(EntityName::Named(s.to_string()));
    let default = || Some(EntityName::Default);
    let order = [
        (named(user), named(client_id)),
        (named(user), default()),
        (named(user), None),
        (default(), named(client_id)),
        (default(), default()),
        (default(), None),
        (None, named(client_id)),
        (None, default()),
    ];
    order.into_iter().find_map(|(user, client_id)| {
        let entity = QuotaEntity { user, client_id };
        let value = *entities.get(&entity)?.get(&key)?;
        Some((entity, value))
    })
}

/// The entity a client's usage is measured under when `applied`'s quota applies to it: the
/// parts `applied` has, with the client's names (Kafka's quota metric tags): every client id
/// of a user with a `users/<user>` quota shares one measurement; each client id under a
/// `clients/<default>` quota has its own.
pub fn metric_entity(applied: &QuotaEntity, user: &str, client_id: &str) -> QuotaEntity {
    QuotaEntity {
        user: applied
            .user
            .as_ref()
            .map(|_| EntityName::Named(user.to_string())),
        client_id: applied
            .client_id
            .as_ref()
            .map(|_| EntityName::Named(client_id.to_string())),
    }
}

impl ClientQuotas {
    /// Builds the quotas of a snapshot, refusing any the controller could not have made.
    pub(crate) fn from_parts(parts: Vec<QuotaChange>) -> Result<Self, String> {
        let mut quotas = ClientQuotas::default();
        for part in &parts {
            if part.value.is_none() {
                return Err(format!("a removal of {} in a snapshot", part.entity));
            }
        }
        quotas.apply(&parts)?;
        Ok(quotas)
    }

    /// Every value, for a snapshot.
    pub(crate) fn to_parts(&self) -> Vec<QuotaChange> {
        self.entities
            .iter()
            .flat_map(|(entity, values)| {
                values.iter().map(|(key, value)| QuotaChange {
                    entity: entity.clone(),
                    key: *key,
                    value: Some(*value),
                })
            })
            .collect()
    }

    /// Applies a planned record's changes in order; an entity left with no value goes.
    pub(crate) fn apply(&mut self, changes: &[QuotaChange]) -> Result<(), String> {
        let entities = Arc::make_mut(&mut self.entities);
        for change in changes {
            check_entity(&change.entity)?;
            match change.value {
                Some(value) => {
                    check_value(change.key, value.get()).map_err(|(_, message)| message)?;
                    entities
                        .entry(change.entity.clone())
                        .or_default()
                        .insert(change.key, value);
                }
                None => {
                    let values = entities
                        .get_mut(&change.entity)
                        .ok_or_else(|| format!("no client quota of {} to remove", change.entity))?;
                    values.remove(&change.key);
                    if values.is_empty() {
                        entities.remove(&change.entity);
                    }
                }
            }
        }
        self.check_invariants()
    }

    /// The quotas' invariants: a bounded number of entities, each valid and with a value, each
    /// value one the controller accepts.
    pub(crate) fn check_invariants(&self) -> Result<(), String> {
        if self.entities.len() > CLIENT_QUOTA_ENTITIES_MAX {
            return Err(format!(
                "{} client quota entities, above CLIENT_QUOTA_ENTITIES_MAX",
                self.entities.len()
            ));
        }
        for (entity, values) in self.entities.iter() {
            check_entity(entity)?;
            if values.is_empty() {
                return Err(format!("client quota entity {entity} has no value"));
            }
            for (key, value) in values {
                check_value(*key, value.get())
                    .map_err(|(_, message)| format!("client quota of {entity}: {message}"))?;
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------

/// One entity's checked changes, or its refusal.
fn plan_entity(
    entities: &QuotaEntities,
    alteration: &QuotaAlteration,
    entity_count: &mut usize,
) -> Result<Vec<QuotaChange>, (i16, String)> {
    let entity = parse_entity(&alteration.entity)?;
    let current = entities.get(&entity);
    let mut ops: BTreeMap<QuotaKey, Option<QuotaValue>> = BTreeMap::new();
    for (name, value) in &alteration.ops {
        let key = QuotaKey::from_name(name)
            .ok_or_else(|| (INVALID_REQUEST, format!("Invalid configuration key {name}")))?;
        if ops.insert(key, *value).is_some() {
            return Err((
                INVALID_REQUEST,
                format!("Duplicate quota key {name} not updating quota for this entity {entity}"),
            ));
        }
        if let Some(value) = value {
            check_value(key, value.get())?;
        }
    }
    let mut changes = Vec::new();
    let mut left = current.map_or(0, BTreeMap::len);
    for (key, value) in ops {
        let held = current.and_then(|values| values.get(&key));
        match (value, held) {
            (Some(value), Some(held)) if value == *held => {}
            (Some(value), held) => {
                left += usize::from(held.is_none());
                changes.push(QuotaChange {
                    entity: entity.clone(),
                    key,
                    value: Some(value),
                });
            }
            (None, Some(_)) => {
                left -= 1;
                changes.push(QuotaChange {
                    entity: entity.clone(),
                    key,
                    value: None,
                });
            }
            (None, None) => {}
        }
    }
    match (current.is_some(), left > 0) {
        (false, true) => {
            if *entity_count >= CLIENT_QUOTA_ENTITIES_MAX {
                return Err((
                    POLICY_VIOLATION,
                    format!(
                        "{entity}: the cluster has {CLIENT_QUOTA_ENTITIES_MAX} client quota \
                         entities, its limit (CLIENT_QUOTA_ENTITIES_MAX)"
                    ),
                ));
            }
            *entity_count += 1;
        }
        (true, false) => *entity_count -= 1,
        _ => {}
    }
    Ok(changes)
}

/// The entity AlterClientQuotas names, as Kafka's `validateEntity` and
/// `configKeysForEntityType` check it.
fn parse_entity(raw: &RawEntity) -> Result<QuotaEntity, (i16, String)> {
    let invalid = |message: String| Err((INVALID_REQUEST, message));
    if raw.is_empty() {
        return invalid("Invalid empty client quota entity".to_string());
    }
    let mut entity = QuotaEntity {
        user: None,
        client_id: None,
    };
    for (entity_type, name) in raw {
        let slot = match entity_type.as_str() {
            ENTITY_USER => &mut entity.user,
            ENTITY_CLIENT_ID => &mut entity.client_id,
            ENTITY_IP => {
                return invalid(
                    "IP quotas (connection rates) are not supported by this broker".to_string(),
                );
            }
            other => return invalid(format!("Unhandled client quota entity type: {other}")),
        };
        if slot.is_some() {
            return invalid(format!(
                "Invalid client quota entity, duplicate entity entry {entity_type}"
            ));
        }
        *slot = Some(EntityName::from_wire(name.clone()));
    }
    check_entity(&entity).map_err(|message| (INVALID_REQUEST, message))?;
    Ok(entity)
}

/// An entity with at least one part, no empty name and no name above
/// `CLIENT_QUOTA_ENTITY_NAME_BYTES_MAX`.
fn check_entity(entity: &QuotaEntity) -> Result<(), String> {
    if entity.parts() == 0 {
        return Err("Invalid empty client quota entity".to_string());
    }
    for (kind, name) in entity.components() {
        match name {
            Some("") => return Err(format!("Empty {kind} not supported")),
            Some(name) if name.len() > CLIENT_QUOTA_ENTITY_NAME_BYTES_MAX => {
                return Err(format!(
                    "{kind} name of {} bytes, above {CLIENT_QUOTA_ENTITY_NAME_BYTES_MAX} \
                     (CLIENT_QUOTA_ENTITY_NAME_BYTES_MAX)",
                    name.len()
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Kafka's `validateQuotaKeyValue`: above 0; a byte rate (a LONG) whole and within i64. A
/// value that is not finite is refused too (Kafka's check lets NaN through).
fn check_value(key: QuotaKey, value: f64) -> Result<(), (i16, String)> {
    let invalid = |message: String| Err((INVALID_REQUEST, message));
    let name = key.name();
    if !value.is_finite() {
        return invalid(format!("Quota {name} must be a finite number"));
    }
    if value <= 0.0 {
        return invalid(format!("Quota {name} must be greater than 0"));
    }
    if key.integral() {
        if value > i64::MAX as f64 {
            return invalid(format!(
                "Proposed value for {name} is too large for a LONG."
            ));
        }
        if (value % 1.0).abs() > 1e-6 {
            return invalid(format!("{name} cannot be a fractional value."));
        }
    }
    Ok(())
}

/// Whether an entity's part matches a filter component (none: any part, or none).
fn part_matches(part: &Option<EntityName>, filter: &Option<ComponentMatch>) -> bool {
    match (filter, part) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(ComponentMatch::Any), Some(_)) => true,
        (Some(ComponentMatch::Default), Some(name)) => *name == EntityName::Default,
        (Some(ComponentMatch::Exact(wanted)), Some(name)) => name.as_wire() == Some(wanted),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(user: Option<Option<&str>>, client: Option<Option<&str>>) -> RawEntity {
        let mut parts = Vec::new();
        if let Some(user) = user {
            parts.push((ENTITY_USER.to_string(), user.map(str::to_string)));
        }
        if let Some(client) = client {
            parts.push((ENTITY_CLIENT_ID.to_string(), client.map(str::to_string)));
        }
        parts
    }

    fn set(entity: RawEntity, ops: &[(&str, Option<f64>)]) -> QuotaAlteration {
        QuotaAlteration {
            entity,
            ops: ops
                .iter()
                .map(|(k, v)| (k.to_string(), v.map(QuotaValue::new)))
                .collect(),
        }
    }

    fn applied(alterations: &[QuotaAlteration]) -> (ClientQuotas, Vec<i16>) {
        let mut quotas = ClientQuotas::default();
        let planned = plan_alterations(&quotas.entities, alterations).unwrap();
        quotas.apply(&planned.changes).unwrap();
        let codes = planned.results.iter().map(|r| r.error_code).collect();
        (quotas, codes)
    }

    #[test]
    fn values_are_checked_as_kafka_does() {
        let one = |key: &str, value: f64| {
            let (_, codes) = applied(&[set(raw(Some(Some("u")), None), &[(key, Some(value))])]);
            codes[0]
        };
        assert_eq!(one("producer_byte_rate", 10_000_000.0), NONE);
        assert_eq!(one("producer_byte_rate", 0.0), INVALID_REQUEST);
        assert_eq!(one("consumer_byte_rate", -5.0), INVALID_REQUEST);
        assert_eq!(one("consumer_byte_rate", 1.5), INVALID_REQUEST);
        assert_eq!(one("producer_byte_rate", 1e300), INVALID_REQUEST);
        assert_eq!(one("request_percentage", 12.5), NONE);
        assert_eq!(one("request_percentage", 0.0), INVALID_REQUEST);
        assert_eq!(one("request_percentage", f64::NAN), INVALID_REQUEST);
        assert_eq!(one("controller_mutation_rate", 10.0), INVALID_REQUEST);
        assert_eq!(one("no_such_key", 10.0), INVALID_REQUEST);
    }

    #[test]
    fn entities_are_checked_as_kafka_does() {
        let code =
            |entity: RawEntity| applied(&[set(entity, &[("producer_byte_rate", Some(1.0))])]).1[0];
        assert_eq!(code(Vec::new()), INVALID_REQUEST);
        assert_eq!(code(raw(Some(Some("")), None)), INVALID_REQUEST);
        assert_eq!(
            code(vec![("ip".to_string(), Some("1.2.3.4".to_string()))]),
            INVALID_REQUEST
        );
        assert_eq!(
            code(vec![("group".to_string(), Some("g".to_string()))]),
            INVALID_REQUEST
        );
        assert_eq!(
            code(vec![
                ("user".to_string(), Some("a".to_string())),
                ("user".to_string(), Some("b".to_string()))
            ]),
            INVALID_REQUEST
        );
        assert_eq!(code(raw(Some(None), Some(None))), NONE);
        let long = "x".repeat(CLIENT_QUOTA_ENTITY_NAME_BYTES_MAX + 1);
        assert_eq!(code(raw(None, Some(Some(&long)))), INVALID_REQUEST);
    }

    #[test]
    fn each_entity_is_decided_on_its_own_and_duplicates_are_refused() {
        let (quotas, codes) = applied(&[
            set(
                raw(Some(Some("a")), None),
                &[("producer_byte_rate", Some(100.0))],
            ),
            set(
                raw(Some(Some("b")), None),
                &[("producer_byte_rate", Some(-1.0))],
            ),
            set(
                raw(None, Some(Some("c"))),
                &[("consumer_byte_rate", Some(5.0))],
            ),
            set(
                raw(None, Some(Some("c"))),
                &[("consumer_byte_rate", Some(6.0))],
            ),
            set(
                raw(None, Some(None)),
                &[
                    ("producer_byte_rate", Some(1.0)),
                    ("producer_byte_rate", Some(2.0)),
                ],
            ),
        ]);
        assert_eq!(
            codes,
            vec![NONE, INVALID_REQUEST, INVALID_REQUEST, INVALID_REQUEST]
        );
        assert_eq!(quotas.entities.len(), 1);
    }

    #[test]
    fn removals_and_unchanged_values_write_only_what_changes() {
        let (mut quotas, _) = applied(&[set(
            raw(Some(Some("a")), None),
            &[
                ("producer_byte_rate", Some(100.0)),
                ("request_percentage", Some(50.0)),
            ],
        )]);
        let planned = plan_alterations(
            &quotas.entities,
            &[set(
                raw(Some(Some("a")), None),
                &[
                    ("producer_byte_rate", Some(100.0)),
                    ("request_percentage", None),
                    ("consumer_byte_rate", None),
                ],
            )],
        )
        .unwrap();
        assert_eq!(planned.changes.len(), 1, "only the removal is written");
        quotas.apply(&planned.changes).unwrap();
        let planned = plan_alterations(
            &quotas.entities,
            &[set(
                raw(Some(Some("a")), None),
                &[("producer_byte_rate", None)],
            )],
        )
        .unwrap();
        quotas.apply(&planned.changes).unwrap();
        assert!(quotas.entities.is_empty(), "an entity with no value goes");
        assert!(
            quotas
                .apply(&[QuotaChange {
                    entity: QuotaEntity {
                        user: Some(EntityName::Default),
                        client_id: None
                    },
                    key: QuotaKey::ProducerByteRate,
                    value: None,
                }])
                .is_err()
        );
    }

    #[test]
    fn entities_past_the_limit_are_refused_but_removals_make_room() {
        let mut quotas = ClientQuotas::default();
        let many: Vec<QuotaAlteration> = (0..CLIENT_QUOTA_ENTITIES_MAX)
            .map(|i| {
                set(
                    raw(None, Some(Some(&format!("c{i}")))),
                    &[("producer_byte_rate", Some(1.0))],
                )
            })
            .collect();
        for chunk in many.chunks(CLIENT_QUOTA_ALTERATIONS_PER_COMMAND_MAX) {
            let planned = plan_alterations(&quotas.entities, chunk).unwrap();
            quotas.apply(&planned.changes).unwrap();
        }
        assert_eq!(quotas.entities.len(), CLIENT_QUOTA_ENTITIES_MAX);
        let planned = plan_alterations(
            &quotas.entities,
            &[
                set(
                    raw(None, Some(Some("new"))),
                    &[("producer_byte_rate", Some(1.0))],
                ),
                set(raw(None, Some(Some("c0"))), &[("producer_byte_rate", None)]),
                set(
                    raw(None, Some(Some("new2"))),
                    &[("producer_byte_rate", Some(1.0))],
                ),
            ],
        )
        .unwrap();
        let codes: Vec<i16> = planned.results.iter().map(|r| r.error_code).collect();
        assert_eq!(codes, vec![POLICY_VIOLATION, NONE, NONE]);
        let too_many =
            vec![set(raw(None, Some(None)), &[]); CLIENT_QUOTA_ALTERATIONS_PER_COMMAND_MAX + 1];
        assert!(plan_alterations(&quotas.entities, &too_many).is_err());
    }

    #[test]
    fn precedence_is_kafkas() {
        let entity = |user: Option<EntityName>, client_id: Option<EntityName>| QuotaEntity {
            user,
            client_id,
        };
        let n = |s: &str| Some(EntityName::Named(s.to_string()));
        let d = || Some(EntityName::Default);
        // From the least specific to the most: each one added takes over.
        let order = [
            entity(None, d()),
            entity(None, n("app")),
            entity(d(), None),
            entity(d(), d()),
            entity(d(), n("app")),
            entity(n("alice"), None),
            entity(n("alice"), d()),
            entity(n("alice"), n("app")),
        ];
        let mut entities = QuotaEntities::new();
        assert!(resolve(&entities, "alice", "app", QuotaKey::ProducerByteRate).is_none());
        for (i, e) in order.iter().enumerate() {
            entities.insert(
                e.clone(),
                BTreeMap::from([(QuotaKey::ProducerByteRate, QuotaValue::new(i as f64 + 1.0))]),
            );
            let (applied, value) =
                resolve(&entities, "alice", "app", QuotaKey::ProducerByteRate).unwrap();
            assert_eq!((&applied, value.get()), (e, i as f64 + 1.0));
        }
        // Another user and client id fall to the defaults; another key applies nowhere.
        let (applied, _) = resolve(&entities, "bob", "other", QuotaKey::ProducerByteRate).unwrap();
        assert_eq!(applied, entity(d(), d()));
        assert_eq!(
            metric_entity(&applied, "bob", "other"),
            entity(n("bob"), n("other"))
        );
        assert_eq!(
            metric_entity(&entity(d(), None), "bob", "other"),
            entity(n("bob"), None)
        );
        assert!(resolve(&entities, "alice", "app", QuotaKey::ConsumerByteRate).is_none());
    }

    #[test]
    fn describe_matches_as_kafkas_image() {
        let (quotas, _) = applied(&[
            set(
                raw(Some(Some("a")), None),
                &[("producer_byte_rate", Some(1.0))],
            ),
            set(raw(Some(None), None), &[("producer_byte_rate", Some(2.0))]),
            set(
                raw(Some(Some("a")), Some(Some("c"))),
                &[("producer_byte_rate", Some(3.0))],
            ),
            set(
                raw(None, Some(Some("c"))),
                &[("producer_byte_rate", Some(4.0))],
            ),
        ]);
        let values = |components: &[RawComponent], strict: bool| -> Vec<f64> {
            describe(&quotas.entities, components, strict)
                .unwrap()
                .into_iter()
                .map(|(_, v)| v[&QuotaKey::ProducerByteRate].get())
                .collect()
        };
        let user = |m: i8, name: Option<&str>| ("user".to_string(), m, name.map(str::to_string));
        let mut all = values(&[], false);
        all.sort_by(f64::total_cmp);
        assert_eq!(all, vec![1.0, 2.0, 3.0, 4.0]);
        assert!(values(&[], true).is_empty());
        let mut exact = values(&[user(0, Some("a"))], false);
        exact.sort_by(f64::total_cmp);
        assert_eq!(exact, vec![1.0, 3.0]);
        assert_eq!(values(&[user(0, Some("a"))], true), vec![1.0]);
        assert_eq!(values(&[user(1, None)], false), vec![2.0]);
        let mut any = values(&[user(2, None)], true);
        any.sort_by(f64::total_cmp);
        assert_eq!(any, vec![1.0, 2.0]);
        let refused = |components: &[RawComponent]| {
            describe(&quotas.entities, components, false).unwrap_err().0
        };
        assert_eq!(refused(&[user(0, None)]), INVALID_REQUEST);
        assert_eq!(refused(&[user(1, Some("a"))]), INVALID_REQUEST);
        assert_eq!(refused(&[user(7, None)]), INVALID_REQUEST);
        assert_eq!(refused(&[user(2, None), user(2, None)]), INVALID_REQUEST);
        assert_eq!(refused(&[("".to_string(), 2, None)]), INVALID_REQUEST);
        assert_eq!(
            refused(&[("group".to_string(), 2, None)]),
            UNSUPPORTED_VERSION
        );
        assert_eq!(
            refused(&[("ip".to_string(), 2, None), user(2, None)]),
            INVALID_REQUEST
        );
        assert!(values(&[("ip".to_string(), 2, None)], false).is_empty());
    }

    #[test]
    fn parts_round_trip() {
        let (quotas, _) = applied(&[
            set(
                raw(Some(Some("a")), Some(None)),
                &[
                    ("producer_byte_rate", Some(1.0)),
                    ("request_percentage", Some(2.5)),
                ],
            ),
            set(
                raw(None, Some(Some("c"))),
                &[("consumer_byte_rate", Some(4.0))],
            ),
        ]);
        let read = ClientQuotas::from_parts(quotas.to_parts()).unwrap();
        assert_eq!(read, quotas);
    }
}
