//! Topic and broker configs: Kafka's names, types, defaults and validation
//! (as Kafka 3.9 does them), DescribeConfigs entries, and the typed values the
//! broker reads on its paths.
//!
//! Only explicitly set configs are stored (in `TopicImage::configs` and
//! `MetadataImage::broker_configs`); every default is derived here, so a
//! change of a broker default (`log.retention.ms`, `message.max.bytes`, ...)
//! reaches every topic that did not set its own value, as in Kafka.

use std::collections::BTreeMap;

/// The longest config value accepted, in bytes. Kafka has no such limit; we
/// bound it because every value is stored in the metadata log and image.
pub const CONFIG_VALUE_BYTES_MAX: usize = 4096;

/// Kafka's `ConfigSource` numbering in DescribeConfigs responses (v1+).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(i8)]
pub enum ConfigSource {
    Unknown = 0,
    TopicConfig = 1,
    DynamicBrokerConfig = 2,
    DynamicDefaultBrokerConfig = 3,
    StaticBrokerConfig = 4,
    DefaultConfig = 5,
}

impl ConfigSource {
    /// The wire value.
    pub fn code(self) -> i8 {
        self as i8
    }
}

/// Kafka's `ConfigType` numbering in DescribeConfigs responses (v3+).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(i8)]
pub enum ConfigType {
    Unknown = 0,
    Boolean = 1,
    String = 2,
    Int = 3,
    Short = 4,
    Long = 5,
    Double = 6,
    List = 7,
    Class = 8,
    Password = 9,
}

impl ConfigType {
    /// The wire value.
    pub fn code(self) -> i8 {
        self as i8
    }
}

/// One synonym of a DescribeConfigs entry (v1+ with `include_synonyms`), in
/// Kafka's order: the value in force first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigSynonym {
    pub name: String,
    pub value: Option<String>,
    pub source: ConfigSource,
}

/// One entry of a DescribeConfigs response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigEntry {
    pub name: String,
    pub value: Option<String>,
    pub source: ConfigSource,
    pub read_only: bool,
    pub sensitive: bool,
    pub config_type: ConfigType,
    pub documentation: &'static str,
    pub synonyms: Vec<ConfigSynonym>,
}

impl ConfigEntry {
    /// Kafka's `is_default` (DescribeConfigs v0): the value is a default.
    pub fn is_default(&self) -> bool {
        self.source == ConfigSource::DefaultConfig
    }
}

/// An invalid config name or value; maps to INVALID_CONFIG (40).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ConfigError {
    /// The config name at fault.
    pub name: String,
    /// Kafka-style message, e.g. "Invalid value x for configuration retention.ms: Not a number of type LONG".
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampType {
    CreateTime,
    LogAppendTime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompressionType {
    Producer,
    Uncompressed,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

/// `group.consumer.migration.policy`: whether a live group may change protocols (KIP-848's
/// online migration): a classic group to the consumer protocol when a consumer-protocol
/// member joins it (upgrade), a consumer group back to classic when its last
/// consumer-protocol member leaves (downgrade).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsumerGroupMigrationPolicy {
    Disabled,
    Upgrade,
    Downgrade,
    Bidirectional,
}

impl ConsumerGroupMigrationPolicy {
    /// Whether a live classic group may become a consumer group.
    pub fn upgrade_enabled(self) -> bool {
        matches!(self, Self::Upgrade | Self::Bidirectional)
    }

    /// Whether a live consumer group may become a classic group.
    pub fn downgrade_enabled(self) -> bool {
        matches!(self, Self::Downgrade | Self::Bidirectional)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CleanupPolicy {
    pub delete: bool,
    pub compact: bool,
}

/// The effective (explicit or default) values of a topic's configs that the
/// broker acts on.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicConfig {
    pub cleanup_policy: CleanupPolicy,
    pub compression_type: CompressionType,
    pub retention_ms: i64,
    pub retention_bytes: i64,
    pub local_retention_ms: i64,
    pub local_retention_bytes: i64,
    pub max_message_bytes: i32,
    pub segment_bytes: i32,
    pub segment_ms: i64,
    pub segment_jitter_ms: i64,
    pub timestamp_type: TimestampType,
    /// Effective `message.timestamp.before.max.ms` (falls back to the
    /// deprecated `message.timestamp.difference.max.ms` when only that is set).
    pub timestamp_before_max_ms: i64,
    /// Effective `message.timestamp.after.max.ms` (same fallback).
    pub timestamp_after_max_ms: i64,
    pub min_insync_replicas: i32,
    pub min_compaction_lag_ms: i64,
    pub max_compaction_lag_ms: i64,
    pub delete_retention_ms: i64,
    pub min_cleanable_dirty_ratio: f64,
    pub file_delete_delay_ms: i64,
    pub remote_storage_enable: bool,
}

/// The effective broker configs the broker acts on.
#[derive(Debug, Clone, PartialEq)]
pub struct BrokerConfig {
    pub num_partitions: i32,
    pub auto_create_topics_enable: bool,
    pub default_replication_factor: i16,
    pub message_max_bytes: i32,
    pub log_retention_ms: i64,
    pub log_retention_bytes: i64,
    pub log_segment_bytes: i32,
    pub compression_type: CompressionType,
    pub offsets_retention_minutes: i32,
    pub socket_request_max_bytes: i32,
    pub transaction_max_timeout_ms: i32,
    pub group_initial_rebalance_delay_ms: i32,
    pub group_min_session_timeout_ms: i32,
    pub group_max_session_timeout_ms: i32,
    /// How often members of consumer-protocol groups (KIP-848) heartbeat.
    pub group_consumer_heartbeat_interval_ms: i32,
    /// How long a consumer-protocol member may go without a heartbeat before it is removed.
    pub group_consumer_session_timeout_ms: i32,
    /// How long the answer to a ConsumerGroupHeartbeat that changed its group is held back,
    /// as long as Kafka's coordinator lingers before writing the change.
    pub group_coordinator_append_linger_ms: i32,
    /// Whether live groups change protocols (KIP-848's online migration).
    pub group_consumer_migration_policy: ConsumerGroupMigrationPolicy,
    pub max_incremental_fetch_session_cache_slots: i32,
    /// The controller evens out the live brokers' partition counts
    /// (`partition.autobalancing.mode=continuous`).
    pub partition_autobalancing: bool,
    /// Brokers that lead no partition (`drained.broker.ids`).
    pub drained_broker_ids: std::collections::BTreeSet<i32>,
}

/// Checks one topic config name and value. An unknown name is an error that
/// names it.
pub fn validate_topic_config(name: &str, value: &str) -> Result<(), ConfigError> {
    let def = topic_def(name).ok_or_else(|| ConfigError {
        name: name.to_string(),
        message: format!("Unknown topic config name: {name}"),
    })?;
    def.validate(value)
}

/// Checks one broker config name and value. An unknown name is an error that
/// names it.
pub fn validate_broker_config(name: &str, value: &str) -> Result<(), ConfigError> {
    let def = broker_def(name).ok_or_else(|| ConfigError {
        name: name.to_string(),
        message: format!("Unknown broker config name: {name}"),
    })?;
    def.validate(value)
}

/// Checks the rules that span several topic configs (Kafka's
/// `LogConfig.validate`), on the complete set of explicit topic configs.
pub fn validate_topic_configs(
    configs: &BTreeMap<String, String>,
    broker_configs: &BTreeMap<String, String>,
) -> Result<(), ConfigError> {
    for (name, value) in configs {
        validate_topic_config(name, value)?;
    }
    let effective = effective_topic_config(configs, broker_configs);
    if effective.min_compaction_lag_ms > effective.max_compaction_lag_ms {
        return Err(ConfigError {
            name: "min.compaction.lag.ms".to_string(),
            message: format!(
                "conflict topic config setting min.compaction.lag.ms ({}) > max.compaction.lag.ms ({})",
                effective.min_compaction_lag_ms, effective.max_compaction_lag_ms
            ),
        });
    }
    Ok(())
}

/// Checks the rules that span several broker configs.
pub fn validate_broker_configs(
    broker_configs: &BTreeMap<String, String>,
) -> Result<(), ConfigError> {
    for (name, value) in broker_configs {
        validate_broker_config(name, value)?;
    }
    let effective = effective_broker_config(broker_configs);
    if effective.group_min_session_timeout_ms > effective.group_max_session_timeout_ms {
        return Err(ConfigError {
            name: "group.min.session.timeout.ms".to_string(),
            message: format!(
                "group.min.session.timeout.ms ({}) must not be greater than group.max.session.timeout.ms ({})",
                effective.group_min_session_timeout_ms, effective.group_max_session_timeout_ms
            ),
        });
    }
    if effective.group_consumer_heartbeat_interval_ms >= effective.group_consumer_session_timeout_ms
    {
        return Err(ConfigError {
            name: "group.consumer.heartbeat.interval.ms".to_string(),
            message: format!(
                "group.consumer.heartbeat.interval.ms ({}) must be less than group.consumer.session.timeout.ms ({})",
                effective.group_consumer_heartbeat_interval_ms,
                effective.group_consumer_session_timeout_ms
            ),
        });
    }
    Ok(())
}

/// Every known topic config in name order, with its value and where it comes
/// from: the topic's own setting, the broker synonym (`retention.ms` ←
/// `log.retention.ms`, `max.message.bytes` ← `message.max.bytes`, ...), or
/// Kafka's default.
pub fn describe_topic_configs(
    topic_configs: &BTreeMap<String, String>,
    broker_configs: &BTreeMap<String, String>,
) -> Vec<ConfigEntry> {
    TOPIC_CONFIGS
        .iter()
        .map(|def| {
            let mut synonyms = Vec::new();
            if let Some(value) = topic_configs.get(def.name) {
                synonyms.push(ConfigSynonym {
                    name: def.name.to_string(),
                    value: Some(value.clone()),
                    source: ConfigSource::TopicConfig,
                });
            }
            for synonym in def.synonyms {
                if let Some(value) = broker_configs.get(synonym.name) {
                    synonyms.push(ConfigSynonym {
                        name: synonym.name.to_string(),
                        value: Some(value.clone()),
                        source: ConfigSource::DynamicBrokerConfig,
                    });
                }
            }
            if let Some(primary) = def.synonyms.first()
                && let Some(broker) = broker_def(primary.name)
                && broker.default.is_some()
            {
                synonyms.push(ConfigSynonym {
                    name: primary.name.to_string(),
                    value: broker.default.map(str::to_string),
                    source: ConfigSource::DefaultConfig,
                });
            }
            let (value, source) = topic_value(def, topic_configs, broker_configs);
            ConfigEntry {
                name: def.name.to_string(),
                value,
                source,
                read_only: false,
                sensitive: false,
                config_type: def.config_type,
                documentation: def.documentation,
                synonyms,
            }
        })
        .collect()
}

/// Every known broker config in name order, with its value and source.
pub fn describe_broker_configs(broker_configs: &BTreeMap<String, String>) -> Vec<ConfigEntry> {
    BROKER_CONFIGS
        .iter()
        .map(|def| {
            let mut synonyms = Vec::new();
            let (value, source) = match broker_configs.get(def.name) {
                Some(value) => {
                    synonyms.push(ConfigSynonym {
                        name: def.name.to_string(),
                        value: Some(value.clone()),
                        source: ConfigSource::DynamicBrokerConfig,
                    });
                    (Some(value.clone()), ConfigSource::DynamicBrokerConfig)
                }
                None => (def.default.map(str::to_string), ConfigSource::DefaultConfig),
            };
            if def.default.is_some() {
                synonyms.push(ConfigSynonym {
                    name: def.name.to_string(),
                    value: def.default.map(str::to_string),
                    source: ConfigSource::DefaultConfig,
                });
            }
            ConfigEntry {
                name: def.name.to_string(),
                value,
                source,
                read_only: false,
                sensitive: false,
                config_type: def.config_type,
                documentation: def.documentation,
                synonyms,
            }
        })
        .collect()
}

/// The typed effective configs of a topic with these explicit configs.
pub fn effective_topic_config(
    topic_configs: &BTreeMap<String, String>,
    broker_configs: &BTreeMap<String, String>,
) -> TopicConfig {
    let get = |name: &str| -> String {
        let def = topic_def(name).expect("known topic config");
        topic_value(def, topic_configs, broker_configs)
            .0
            .or_else(|| def.default.map(str::to_string))
            .unwrap_or_default()
    };
    let long = |name: &str| -> i64 {
        let fallback = topic_def(name)
            .and_then(|d| d.default)
            .and_then(|d| d.parse().ok());
        get(name).trim().parse().ok().or(fallback).unwrap_or(0)
    };
    let int = |name: &str| -> i32 {
        let fallback = topic_def(name)
            .and_then(|d| d.default)
            .and_then(|d| d.parse().ok());
        get(name).trim().parse().ok().or(fallback).unwrap_or(0)
    };
    let boolean = |name: &str| -> bool { get(name).trim().eq_ignore_ascii_case("true") };
    let difference_set = topic_configs.contains_key("message.timestamp.difference.max.ms")
        || broker_configs.contains_key("log.message.timestamp.difference.max.ms");
    let timestamp_bound = |name: &str, broker_name: &str| -> i64 {
        let explicit = topic_configs.contains_key(name) || broker_configs.contains_key(broker_name);
        if !explicit && difference_set {
            long("message.timestamp.difference.max.ms")
        } else {
            long(name)
        }
    };
    TopicConfig {
        cleanup_policy: parse_cleanup_policy(&get("cleanup.policy")),
        compression_type: parse_compression_type(&get("compression.type")),
        retention_ms: long("retention.ms"),
        retention_bytes: long("retention.bytes"),
        local_retention_ms: long("local.retention.ms"),
        local_retention_bytes: long("local.retention.bytes"),
        max_message_bytes: int("max.message.bytes"),
        segment_bytes: int("segment.bytes"),
        segment_ms: long("segment.ms"),
        segment_jitter_ms: long("segment.jitter.ms"),
        timestamp_type: if get("message.timestamp.type").trim() == "LogAppendTime" {
            TimestampType::LogAppendTime
        } else {
            TimestampType::CreateTime
        },
        timestamp_before_max_ms: timestamp_bound(
            "message.timestamp.before.max.ms",
            "log.message.timestamp.before.max.ms",
        ),
        timestamp_after_max_ms: timestamp_bound(
            "message.timestamp.after.max.ms",
            "log.message.timestamp.after.max.ms",
        ),
        min_insync_replicas: int("min.insync.replicas"),
        min_compaction_lag_ms: long("min.compaction.lag.ms"),
        max_compaction_lag_ms: long("max.compaction.lag.ms"),
        delete_retention_ms: long("delete.retention.ms"),
        min_cleanable_dirty_ratio: get("min.cleanable.dirty.ratio")
            .trim()
            .parse()
            .ok()
            .filter(|r: &f64| (0.0..=1.0).contains(r))
            .unwrap_or(0.5),
        file_delete_delay_ms: long("file.delete.delay.ms"),
        remote_storage_enable: boolean("remote.storage.enable"),
    }
}

/// The typed effective broker configs.
pub fn effective_broker_config(broker_configs: &BTreeMap<String, String>) -> BrokerConfig {
    let get = |name: &str| -> String {
        broker_configs
            .get(name)
            .cloned()
            .or_else(|| broker_def(name).and_then(|d| d.default).map(str::to_string))
            .unwrap_or_default()
    };
    let long = |name: &str| -> i64 {
        let fallback = broker_def(name)
            .and_then(|d| d.default)
            .and_then(|d| d.parse().ok());
        get(name).trim().parse().ok().or(fallback).unwrap_or(0)
    };
    let int = |name: &str| -> i32 {
        let fallback = broker_def(name)
            .and_then(|d| d.default)
            .and_then(|d| d.parse().ok());
        get(name).trim().parse().ok().or(fallback).unwrap_or(0)
    };
    let retention = RETENTION_MS_SYNONYMS
        .iter()
        .find_map(|s| broker_configs.get(s.name).and_then(|v| s.to_topic_value(v)))
        .and_then(|v| v.parse().ok())
        .unwrap_or(RETENTION_MS_DEFAULT);
    BrokerConfig {
        num_partitions: int("num.partitions"),
        auto_create_topics_enable: get("auto.create.topics.enable")
            .trim()
            .eq_ignore_ascii_case("true"),
        default_replication_factor: i16::try_from(int("default.replication.factor")).unwrap_or(1),
        message_max_bytes: int("message.max.bytes"),
        log_retention_ms: retention,
        log_retention_bytes: long("log.retention.bytes"),
        log_segment_bytes: int("log.segment.bytes"),
        compression_type: parse_compression_type(&get("compression.type")),
        offsets_retention_minutes: int("offsets.retention.minutes"),
        socket_request_max_bytes: int("socket.request.max.bytes"),
        transaction_max_timeout_ms: int("transaction.max.timeout.ms"),
        group_initial_rebalance_delay_ms: int("group.initial.rebalance.delay.ms"),
        group_min_session_timeout_ms: int("group.min.session.timeout.ms"),
        group_max_session_timeout_ms: int("group.max.session.timeout.ms"),
        group_consumer_heartbeat_interval_ms: int("group.consumer.heartbeat.interval.ms"),
        group_consumer_session_timeout_ms: int("group.consumer.session.timeout.ms"),
        group_coordinator_append_linger_ms: int("group.coordinator.append.linger.ms"),
        // Kafka parses it case-insensitively, and an unknown name as disabled.
        group_consumer_migration_policy: match get("group.consumer.migration.policy")
            .trim()
            .to_ascii_lowercase()
            .as_str()
        {
            "bidirectional" => ConsumerGroupMigrationPolicy::Bidirectional,
            "upgrade" => ConsumerGroupMigrationPolicy::Upgrade,
            "downgrade" => ConsumerGroupMigrationPolicy::Downgrade,
            _ => ConsumerGroupMigrationPolicy::Disabled,
        },
        max_incremental_fetch_session_cache_slots: int("max.incremental.fetch.session.cache.slots"),
        partition_autobalancing: get("partition.autobalancing.mode").trim() != "off",
        drained_broker_ids: get("drained.broker.ids")
            .split(',')
            .filter_map(|id| id.trim().parse().ok())
            .collect(),
    }
}

/// Whether `name` is a topic config we know.
pub fn is_topic_config(name: &str) -> bool {
    topic_def(name).is_some()
}

/// Whether `name` is a broker config we know.
pub fn is_broker_config(name: &str) -> bool {
    broker_def(name).is_some()
}

// ---------------------------------------------------------------------------
// Definitions and helpers.

const RETENTION_MS_DEFAULT: i64 = 604_800_000;

#[derive(Debug, Clone, Copy)]
enum Validator {
    None,
    IntAtLeast(i32),
    LongAtLeast(i64),
    DoubleBetween(f64, f64),
    OneOf(&'static [&'static str]),
    /// One of these, in any case (Kafka's `CaseInsensitiveValidString`).
    OneOfIgnoringCase(&'static [&'static str]),
    /// Comma-separated list, non-empty, every item one of these.
    ListOf(&'static [&'static str]),
    /// Comma-separated broker ids (non-negative INTs), or nothing.
    BrokerIds,
    /// Only the default value (compared as the config's type) is accepted: Sluice has
    /// nothing the config could set, and accepting other values would claim it did. The
    /// text says why, in the INVALID_CONFIG message.
    DefaultOnly(&'static str),
}

#[derive(Debug, Clone, Copy)]
enum Unit {
    Same,
    MinutesToMs,
    HoursToMs,
}

#[derive(Debug, Clone, Copy)]
struct Synonym {
    name: &'static str,
    unit: Unit,
}

impl Synonym {
    /// The broker value expressed in the topic config's unit.
    fn to_topic_value(self, value: &str) -> Option<String> {
        let factor: i64 = match self.unit {
            Unit::Same => return Some(value.trim().to_string()),
            Unit::MinutesToMs => 60_000,
            Unit::HoursToMs => 3_600_000,
        };
        let n: i64 = value.trim().parse().ok()?;
        Some(n.checked_mul(factor)?.to_string())
    }
}

#[derive(Debug, Clone, Copy)]
struct ConfigDef {
    name: &'static str,
    config_type: ConfigType,
    default: Option<&'static str>,
    validator: Validator,
    /// Topic configs: the broker configs that supply the default, in
    /// precedence order. Empty for broker configs.
    synonyms: &'static [Synonym],
    documentation: &'static str,
}

impl ConfigDef {
    fn validate(&self, value: &str) -> Result<(), ConfigError> {
        let invalid = |reason: String| ConfigError {
            name: self.name.to_string(),
            message: format!(
                "Invalid value {value} for configuration {}: {reason}",
                self.name
            ),
        };
        if value.len() > CONFIG_VALUE_BYTES_MAX {
            return Err(invalid(format!(
                "Value is longer than {CONFIG_VALUE_BYTES_MAX} bytes (CONFIG_VALUE_BYTES_MAX)"
            )));
        }
        let trimmed = value.trim();
        match self.config_type {
            ConfigType::Boolean
                if !trimmed.eq_ignore_ascii_case("true")
                    && !trimmed.eq_ignore_ascii_case("false") =>
            {
                return Err(invalid(
                    "Expected value to be either true or false".to_string(),
                ));
            }
            ConfigType::Int => {
                let n: i32 = trimmed
                    .parse()
                    .map_err(|_| invalid("Not a number of type INT".to_string()))?;
                if let Validator::IntAtLeast(min) = self.validator
                    && n < min
                {
                    return Err(invalid(format!("Value must be at least {min}")));
                }
            }
            ConfigType::Long => {
                let n: i64 = trimmed
                    .parse()
                    .map_err(|_| invalid("Not a number of type LONG".to_string()))?;
                if let Validator::LongAtLeast(min) = self.validator
                    && n < min
                {
                    return Err(invalid(format!("Value must be at least {min}")));
                }
            }
            ConfigType::Double => {
                let n: f64 = trimmed
                    .parse()
                    .ok()
                    .filter(|n: &f64| n.is_finite())
                    .ok_or_else(|| invalid("Not a number of type DOUBLE".to_string()))?;
                if let Validator::DoubleBetween(min, max) = self.validator
                    && !(min..=max).contains(&n)
                {
                    return Err(invalid(format!("Value must be between {min} and {max}")));
                }
            }
            ConfigType::String => {
                let (names, allowed): (&[&str], bool) = match self.validator {
                    Validator::OneOf(names) => (names, names.contains(&trimmed)),
                    Validator::OneOfIgnoringCase(names) => {
                        (names, names.iter().any(|n| n.eq_ignore_ascii_case(trimmed)))
                    }
                    _ => (&[], true),
                };
                if !allowed {
                    return Err(invalid(format!(
                        "String must be one of: {}",
                        names.join(", ")
                    )));
                }
            }
            ConfigType::List if matches!(self.validator, Validator::BrokerIds) => {
                let bad = trimmed
                    .split(',')
                    .map(str::trim)
                    .filter(|item| !item.is_empty())
                    .find(|item| !item.parse::<i32>().is_ok_and(|id| id >= 0));
                if let Some(item) = bad {
                    return Err(invalid(format!("'{item}' is not a broker id")));
                }
            }
            ConfigType::List => {
                if let Validator::ListOf(allowed) = self.validator {
                    let items: Vec<&str> = trimmed.split(',').map(str::trim).collect();
                    if trimmed.is_empty() || items.iter().any(|item| !allowed.contains(item)) {
                        return Err(invalid(format!(
                            "String must be one of: {}",
                            allowed.join(", ")
                        )));
                    }
                }
            }
            _ => {}
        }
        if let Validator::DefaultOnly(reason) = self.validator
            && !self.is_default_value(trimmed)
        {
            return Err(invalid(format!(
                "Sluice accepts only the default value {}: {reason}",
                self.default.unwrap_or("")
            )));
        }
        Ok(())
    }

    /// Whether `value` (already of the config's type) is the default, as that type compares:
    /// `4096` and `+4096` are one INT, `TRUE` and `true` one BOOLEAN.
    fn is_default_value(&self, value: &str) -> bool {
        let Some(default) = self.default else {
            return false;
        };
        match self.config_type {
            ConfigType::Int | ConfigType::Long => {
                value.parse::<i64>().ok() == default.parse::<i64>().ok()
            }
            ConfigType::Boolean => value.eq_ignore_ascii_case(default),
            _ => value == default,
        }
    }
}

fn topic_def(name: &str) -> Option<&'static ConfigDef> {
    TOPIC_CONFIGS.iter().find(|d| d.name == name)
}

fn broker_def(name: &str) -> Option<&'static ConfigDef> {
    BROKER_CONFIGS.iter().find(|d| d.name == name)
}

/// The value of a topic config and its source: explicit, else the first
/// broker synonym set, else the default.
fn topic_value(
    def: &ConfigDef,
    topic_configs: &BTreeMap<String, String>,
    broker_configs: &BTreeMap<String, String>,
) -> (Option<String>, ConfigSource) {
    if let Some(value) = topic_configs.get(def.name) {
        return (Some(value.clone()), ConfigSource::TopicConfig);
    }
    for synonym in def.synonyms {
        if let Some(value) = broker_configs.get(synonym.name)
            && let Some(converted) = synonym.to_topic_value(value)
        {
            return (Some(converted), ConfigSource::DynamicBrokerConfig);
        }
    }
    (def.default.map(str::to_string), ConfigSource::DefaultConfig)
}

fn parse_cleanup_policy(value: &str) -> CleanupPolicy {
    let mut policy = CleanupPolicy {
        delete: false,
        compact: false,
    };
    for item in value.split(',').map(str::trim) {
        match item {
            "delete" => policy.delete = true,
            "compact" => policy.compact = true,
            _ => {}
        }
    }
    if !policy.delete && !policy.compact {
        policy.delete = true;
    }
    policy
}

fn parse_compression_type(value: &str) -> CompressionType {
    match value.trim() {
        "uncompressed" => CompressionType::Uncompressed,
        "gzip" => CompressionType::Gzip,
        "snappy" => CompressionType::Snappy,
        "lz4" => CompressionType::Lz4,
        "zstd" => CompressionType::Zstd,
        _ => CompressionType::Producer,
    }
}

const COMPRESSION_TYPES: &[&str] = &["uncompressed", "zstd", "lz4", "snappy", "gzip", "producer"];
const CLEANUP_POLICIES: &[&str] = &["compact", "delete"];
const TIMESTAMP_TYPES: &[&str] = &["CreateTime", "LogAppendTime"];
const MIGRATION_POLICIES: &[&str] = &["disabled", "upgrade", "downgrade", "bidirectional"];
const AUTOBALANCING_MODES: &[&str] = &["off", "continuous"];
const LONG_MAX: &str = "9223372036854775807";
/// Why the offset-index configs take only their defaults.
const OBJECT_INDEX_FIXED: &str = "Sluice has no offset index files; its objects index data blocks of about 1 MiB of one partition, a size the broker fixes (DATA_BLOCK_BYTES_TARGET)";

const fn same(name: &'static str) -> Synonym {
    Synonym {
        name,
        unit: Unit::Same,
    }
}

const RETENTION_MS_SYNONYMS: &[Synonym] = &[
    same("log.retention.ms"),
    Synonym {
        name: "log.retention.minutes",
        unit: Unit::MinutesToMs,
    },
    Synonym {
        name: "log.retention.hours",
        unit: Unit::HoursToMs,
    },
];

const SEGMENT_MS_SYNONYMS: &[Synonym] = &[
    same("log.roll.ms"),
    Synonym {
        name: "log.roll.hours",
        unit: Unit::HoursToMs,
    },
];

/// Kafka 3.9's topic configs, sorted by name (DescribeConfigs order).
const TOPIC_CONFIGS: &[ConfigDef] = &[
    ConfigDef {
        name: "cleanup.policy",
        config_type: ConfigType::List,
        default: Some("delete"),
        validator: Validator::ListOf(CLEANUP_POLICIES),
        synonyms: &[same("log.cleanup.policy")],
        documentation: "A string that is either \"delete\" or \"compact\" or both. This string designates the retention policy to use on old log segments.",
    },
    ConfigDef {
        name: "compression.type",
        config_type: ConfigType::String,
        default: Some("producer"),
        validator: Validator::OneOf(COMPRESSION_TYPES),
        synonyms: &[same("compression.type")],
        documentation: "Specify the final compression type for a given topic. 'producer' means retain the original compression codec set by the producer.",
    },
    ConfigDef {
        name: "delete.retention.ms",
        config_type: ConfigType::Long,
        default: Some("86400000"),
        validator: Validator::LongAtLeast(0),
        synonyms: &[same("log.cleaner.delete.retention.ms")],
        documentation: "The amount of time to retain delete tombstone markers for log compacted topics.",
    },
    ConfigDef {
        name: "file.delete.delay.ms",
        config_type: ConfigType::Long,
        default: Some("60000"),
        validator: Validator::LongAtLeast(0),
        synonyms: &[same("log.segment.delete.delay.ms")],
        documentation: "The time to wait before deleting a file from the filesystem.",
    },
    // flush.*: accepted whatever the value, because every value is already kept; the
    // simulator (shards/tests/sim, `a_disk_that_acks_syncs_it_did_not_do_is_caught`) checks
    // that no batch is acknowledged before the WAL sync that holds it.
    ConfigDef {
        name: "flush.messages",
        config_type: ConfigType::Long,
        default: Some(LONG_MAX),
        validator: Validator::LongAtLeast(1),
        synonyms: &[same("log.flush.interval.messages")],
        documentation: "The number of messages written to a log partition before we force an fsync on the log. Every value is satisfied: Sluice acknowledges a batch only once the WAL write holding it is synced (O_DIRECT, then fdatasync or O_DSYNC), as if flush.messages were 1.",
    },
    ConfigDef {
        name: "flush.ms",
        config_type: ConfigType::Long,
        default: Some(LONG_MAX),
        validator: Validator::LongAtLeast(0),
        synonyms: &[same("log.flush.interval.ms")],
        documentation: "The maximum time a message may sit in the log before an fsync. Every value is satisfied: Sluice acknowledges a batch only once the WAL write holding it is synced (O_DIRECT, then fdatasync or O_DSYNC), as if flush.ms were 0.",
    },
    ConfigDef {
        name: "index.interval.bytes",
        config_type: ConfigType::Int,
        default: Some("4096"),
        validator: Validator::DefaultOnly(OBJECT_INDEX_FIXED),
        synonyms: &[same("log.index.interval.bytes")],
        documentation: "How frequently an entry is added to the offset index. Sluice accepts only the default: its objects index data blocks of about 1 MiB of one partition, a size the broker fixes.",
    },
    ConfigDef {
        name: "local.retention.bytes",
        config_type: ConfigType::Long,
        default: Some("-2"),
        validator: Validator::LongAtLeast(-2),
        synonyms: &[same("log.local.retention.bytes")],
        documentation: "The maximum size of local log segments before they become eligible for deletion; -2 means retention.bytes.",
    },
    ConfigDef {
        name: "local.retention.ms",
        config_type: ConfigType::Long,
        default: Some("-2"),
        validator: Validator::LongAtLeast(-2),
        synonyms: &[same("log.local.retention.ms")],
        documentation: "The time to keep a local log segment before it becomes eligible for deletion; -2 means retention.ms.",
    },
    ConfigDef {
        name: "max.compaction.lag.ms",
        config_type: ConfigType::Long,
        default: Some(LONG_MAX),
        validator: Validator::LongAtLeast(1),
        synonyms: &[same("log.cleaner.max.compaction.lag.ms")],
        documentation: "The maximum time a message will remain ineligible for compaction in the log.",
    },
    ConfigDef {
        name: "max.message.bytes",
        config_type: ConfigType::Int,
        default: Some("1048588"),
        validator: Validator::IntAtLeast(0),
        synonyms: &[same("message.max.bytes")],
        documentation: "The largest record batch size allowed by Kafka (after compression if compression is enabled).",
    },
    ConfigDef {
        name: "message.downconversion.enable",
        config_type: ConfigType::Boolean,
        default: Some("true"),
        validator: Validator::None,
        synonyms: &[same("log.message.downconversion.enable")],
        documentation: "Whether down-conversion of message formats is enabled to satisfy consume requests. Every value is satisfied: Sluice offers only Fetch v4 and later, which read message format v2 as stored, so no consume request ever needs a down-conversion.",
    },
    ConfigDef {
        name: "message.timestamp.after.max.ms",
        config_type: ConfigType::Long,
        default: Some(LONG_MAX),
        validator: Validator::LongAtLeast(0),
        synonyms: &[same("log.message.timestamp.after.max.ms")],
        documentation: "The maximum allowed timestamp difference between the message timestamp and the broker's timestamp when the message timestamp is later than the broker's timestamp.",
    },
    ConfigDef {
        name: "message.timestamp.before.max.ms",
        config_type: ConfigType::Long,
        default: Some(LONG_MAX),
        validator: Validator::LongAtLeast(0),
        synonyms: &[same("log.message.timestamp.before.max.ms")],
        documentation: "The maximum allowed timestamp difference between the broker's timestamp and the message timestamp when the message timestamp is earlier than the broker's timestamp.",
    },
    ConfigDef {
        name: "message.timestamp.difference.max.ms",
        config_type: ConfigType::Long,
        default: Some(LONG_MAX),
        validator: Validator::LongAtLeast(0),
        synonyms: &[same("log.message.timestamp.difference.max.ms")],
        documentation: "[DEPRECATED] The maximum difference allowed between the timestamp when a broker receives a message and the timestamp specified in the message.",
    },
    ConfigDef {
        name: "message.timestamp.type",
        config_type: ConfigType::String,
        default: Some("CreateTime"),
        validator: Validator::OneOf(TIMESTAMP_TYPES),
        synonyms: &[same("log.message.timestamp.type")],
        documentation: "Define whether the timestamp in the message is message create time or log append time.",
    },
    ConfigDef {
        name: "min.cleanable.dirty.ratio",
        config_type: ConfigType::Double,
        default: Some("0.5"),
        validator: Validator::DoubleBetween(0.0, 1.0),
        synonyms: &[same("log.cleaner.min.cleanable.ratio")],
        documentation: "This configuration controls how frequently the log compactor will attempt to clean the log.",
    },
    ConfigDef {
        name: "min.compaction.lag.ms",
        config_type: ConfigType::Long,
        default: Some("0"),
        validator: Validator::LongAtLeast(0),
        synonyms: &[same("log.cleaner.min.compaction.lag.ms")],
        documentation: "The minimum time a message will remain uncompacted in the log.",
    },
    ConfigDef {
        name: "min.insync.replicas",
        config_type: ConfigType::Int,
        default: Some("1"),
        validator: Validator::IntAtLeast(1),
        synonyms: &[same("min.insync.replicas")],
        documentation: "When a producer sets acks to \"all\", the minimum number of replicas that must acknowledge a write for it to be considered successful.",
    },
    ConfigDef {
        name: "preallocate",
        config_type: ConfigType::Boolean,
        default: Some("false"),
        validator: Validator::None,
        synonyms: &[same("log.preallocate")],
        documentation: "True if we should preallocate the file on disk when creating a new log segment. Every value is satisfied as far as Sluice has files: a topic's newest data is in the shard's WAL, preallocated when it is created, and its older data in objects written whole.",
    },
    ConfigDef {
        name: "remote.storage.enable",
        config_type: ConfigType::Boolean,
        default: Some("false"),
        validator: Validator::None,
        synonyms: &[],
        documentation: "To enable tiered storage for a topic, set this configuration as true.",
    },
    ConfigDef {
        name: "retention.bytes",
        config_type: ConfigType::Long,
        default: Some("-1"),
        validator: Validator::LongAtLeast(-1),
        synonyms: &[same("log.retention.bytes")],
        documentation: "The maximum size a partition can grow to before old log segments are discarded to free up space under the \"delete\" retention policy; -1 means no size limit.",
    },
    ConfigDef {
        name: "retention.ms",
        config_type: ConfigType::Long,
        default: Some("604800000"),
        validator: Validator::LongAtLeast(-1),
        synonyms: RETENTION_MS_SYNONYMS,
        documentation: "The maximum time a log is retained before old log segments are discarded under the \"delete\" retention policy; -1 means no time limit.",
    },
    ConfigDef {
        name: "segment.bytes",
        config_type: ConfigType::Int,
        default: Some("1073741824"),
        validator: Validator::IntAtLeast(14),
        synonyms: &[same("log.segment.bytes")],
        documentation: "The segment file size for the log. In Sluice a partition is uploaded from the WAL (its roll) once this many of its bytes wait for an upload, and compaction merges its Stream Objects up to this size at most; retention and cleaning act on whole objects.",
    },
    ConfigDef {
        name: "segment.index.bytes",
        config_type: ConfigType::Int,
        default: Some("10485760"),
        validator: Validator::DefaultOnly(OBJECT_INDEX_FIXED),
        synonyms: &[same("log.index.size.max.bytes")],
        documentation: "The size of the index that maps offsets to file positions. Sluice accepts only the default: an object's index has one entry per data block and grows with the object, which segment.bytes bounds.",
    },
    ConfigDef {
        name: "segment.jitter.ms",
        config_type: ConfigType::Long,
        default: Some("0"),
        validator: Validator::LongAtLeast(0),
        synonyms: &[same("log.roll.jitter.ms")],
        documentation: "The maximum random jitter subtracted from the scheduled segment roll time. In Sluice each partition takes a fixed part of it, below min(segment.jitter.ms, segment.ms), from its upload deadline.",
    },
    ConfigDef {
        name: "segment.ms",
        config_type: ConfigType::Long,
        default: Some("604800000"),
        validator: Validator::LongAtLeast(1),
        synonyms: SEGMENT_MS_SYNONYMS,
        documentation: "The period of time after which the log is forced to roll even if the segment file isn't full. In Sluice a partition's data is uploaded from the WAL (its roll) at most this long after it was written, sooner than the broker's --upload-interval-ms when smaller.",
    },
    ConfigDef {
        name: "unclean.leader.election.enable",
        config_type: ConfigType::Boolean,
        default: Some("false"),
        validator: Validator::None,
        synonyms: &[same("unclean.leader.election.enable")],
        documentation: "Indicates whether to enable replicas not in the ISR set to be elected as leader as a last resort. Every value is satisfied: Sluice keeps one copy of a partition, so there is never a replica out of sync to elect, cleanly or not.",
    },
];

/// The broker configs users touch, sorted by name.
const BROKER_CONFIGS: &[ConfigDef] = &[
    ConfigDef {
        name: "auto.create.topics.enable",
        config_type: ConfigType::Boolean,
        default: Some("true"),
        validator: Validator::None,
        synonyms: &[],
        documentation: "Enable auto creation of topic on the server.",
    },
    ConfigDef {
        name: "compression.type",
        config_type: ConfigType::String,
        default: Some("producer"),
        validator: Validator::OneOf(COMPRESSION_TYPES),
        synonyms: &[],
        documentation: "Specify the final compression type for a given topic.",
    },
    ConfigDef {
        name: "default.replication.factor",
        config_type: ConfigType::Int,
        default: Some("1"),
        validator: Validator::IntAtLeast(1),
        synonyms: &[],
        documentation: "The default replication factor for automatically created topics.",
    },
    ConfigDef {
        name: "drained.broker.ids",
        config_type: ConfigType::List,
        default: Some(""),
        validator: Validator::BrokerIds,
        synonyms: &[],
        documentation: "Sluice: brokers drained of partitions (`sluice broker drain`): the controller moves theirs to the other live brokers and places no new one on them, so that they can be removed.",
    },
    ConfigDef {
        name: "group.consumer.heartbeat.interval.ms",
        config_type: ConfigType::Int,
        default: Some("5000"),
        validator: Validator::IntAtLeast(1),
        synonyms: &[],
        documentation: "The heartbeat interval given to the members of a consumer group (the consumer group protocol, KIP-848).",
    },
    ConfigDef {
        name: "group.consumer.migration.policy",
        config_type: ConfigType::String,
        default: Some("bidirectional"),
        validator: Validator::OneOfIgnoringCase(MIGRATION_POLICIES),
        synonyms: &[],
        documentation: "The config that enables converting the non-empty classic group using the consumer embedded protocol to the non-empty consumer group using the consumer group protocol and vice versa; conversions of empty groups in both directions are always enabled regardless of this policy. bidirectional: both upgrade from classic group to consumer group and downgrade from consumer group to classic group are enabled, upgrade: only upgrade is enabled, downgrade: only downgrade is enabled, disabled: neither upgrade nor downgrade is enabled.",
    },
    ConfigDef {
        name: "group.consumer.session.timeout.ms",
        config_type: ConfigType::Int,
        default: Some("45000"),
        validator: Validator::IntAtLeast(1),
        synonyms: &[],
        documentation: "The timeout to detect client failures when using the consumer group protocol (KIP-848).",
    },
    ConfigDef {
        name: "group.coordinator.append.linger.ms",
        config_type: ConfigType::Int,
        default: Some("10"),
        validator: Validator::IntAtLeast(0),
        synonyms: &[],
        documentation: "The duration in milliseconds that the coordinator will wait for writes to accumulate before flushing them to disk. Sluice keeps the membership of consumer-protocol groups (KIP-848) in memory and writes nothing: it holds back, for as long, the answer to a ConsumerGroupHeartbeat that changed the group, so that clients see Kafka's timing.",
    },
    ConfigDef {
        name: "group.initial.rebalance.delay.ms",
        config_type: ConfigType::Int,
        default: Some("3000"),
        validator: Validator::IntAtLeast(0),
        synonyms: &[],
        documentation: "The amount of time the group coordinator will wait for more consumers to join a new group before performing the first rebalance.",
    },
    ConfigDef {
        name: "group.max.session.timeout.ms",
        config_type: ConfigType::Int,
        default: Some("1800000"),
        validator: Validator::IntAtLeast(1),
        synonyms: &[],
        documentation: "The maximum allowed session timeout for registered consumers.",
    },
    ConfigDef {
        name: "group.min.session.timeout.ms",
        config_type: ConfigType::Int,
        default: Some("6000"),
        validator: Validator::IntAtLeast(1),
        synonyms: &[],
        documentation: "The minimum allowed session timeout for registered consumers.",
    },
    ConfigDef {
        name: "log.cleanup.policy",
        config_type: ConfigType::List,
        default: Some("delete"),
        validator: Validator::ListOf(CLEANUP_POLICIES),
        synonyms: &[],
        documentation: "The default cleanup policy for segments beyond the retention window.",
    },
    ConfigDef {
        name: "log.message.timestamp.type",
        config_type: ConfigType::String,
        default: Some("CreateTime"),
        validator: Validator::OneOf(TIMESTAMP_TYPES),
        synonyms: &[],
        documentation: "Define whether the timestamp in the message is message create time or log append time.",
    },
    ConfigDef {
        name: "log.retention.bytes",
        config_type: ConfigType::Long,
        default: Some("-1"),
        validator: Validator::LongAtLeast(-1),
        synonyms: &[],
        documentation: "The maximum size of the log before deleting it.",
    },
    ConfigDef {
        name: "log.retention.hours",
        config_type: ConfigType::Int,
        default: Some("168"),
        validator: Validator::IntAtLeast(-1),
        synonyms: &[],
        documentation: "The number of hours to keep a log file before deleting it, tertiary to log.retention.ms.",
    },
    ConfigDef {
        name: "log.retention.minutes",
        config_type: ConfigType::Int,
        default: None,
        validator: Validator::IntAtLeast(-1),
        synonyms: &[],
        documentation: "The number of minutes to keep a log file before deleting it, secondary to log.retention.ms.",
    },
    ConfigDef {
        name: "log.retention.ms",
        config_type: ConfigType::Long,
        default: None,
        validator: Validator::LongAtLeast(-1),
        synonyms: &[],
        documentation: "The number of milliseconds to keep a log file before deleting it; if not set, log.retention.minutes, then log.retention.hours is used. -1 means no time limit.",
    },
    ConfigDef {
        name: "log.roll.hours",
        config_type: ConfigType::Int,
        default: Some("168"),
        validator: Validator::IntAtLeast(1),
        synonyms: &[],
        documentation: "The maximum time before a new log segment is rolled out (in hours), secondary to log.roll.ms.",
    },
    ConfigDef {
        name: "log.roll.ms",
        config_type: ConfigType::Long,
        default: None,
        validator: Validator::LongAtLeast(1),
        synonyms: &[],
        documentation: "The maximum time before a new log segment is rolled out (in milliseconds).",
    },
    ConfigDef {
        name: "log.segment.bytes",
        config_type: ConfigType::Int,
        default: Some("1073741824"),
        validator: Validator::IntAtLeast(14),
        synonyms: &[],
        documentation: "The maximum size of a single log file.",
    },
    ConfigDef {
        name: "max.incremental.fetch.session.cache.slots",
        config_type: ConfigType::Int,
        default: Some("1000"),
        validator: Validator::IntAtLeast(0),
        synonyms: &[],
        documentation: "The maximum number of incremental fetch sessions that we will maintain.",
    },
    ConfigDef {
        name: "message.max.bytes",
        config_type: ConfigType::Int,
        default: Some("1048588"),
        validator: Validator::IntAtLeast(0),
        synonyms: &[],
        documentation: "The largest record batch size allowed by Kafka (after compression if compression is enabled).",
    },
    ConfigDef {
        name: "min.insync.replicas",
        config_type: ConfigType::Int,
        default: Some("1"),
        validator: Validator::IntAtLeast(1),
        synonyms: &[],
        documentation: "The minimum number of replicas that must acknowledge a write when acks is \"all\".",
    },
    ConfigDef {
        name: "num.partitions",
        config_type: ConfigType::Int,
        default: Some("1"),
        validator: Validator::IntAtLeast(1),
        synonyms: &[],
        documentation: "The default number of log partitions per topic.",
    },
    ConfigDef {
        name: "offsets.retention.minutes",
        config_type: ConfigType::Int,
        default: Some("10080"),
        validator: Validator::IntAtLeast(1),
        synonyms: &[],
        documentation: "For subscribed consumers, committed offset of a specific partition will be expired and discarded after this period of time after the group becomes empty.",
    },
    ConfigDef {
        name: "partition.autobalancing.mode",
        config_type: ConfigType::String,
        default: Some("continuous"),
        validator: Validator::OneOf(AUTOBALANCING_MODES),
        synonyms: &[],
        documentation: "Sluice: whether the controller moves partitions between live brokers to even their counts (continuous), or leaves them where they are (off).",
    },
    ConfigDef {
        name: "socket.request.max.bytes",
        config_type: ConfigType::Int,
        default: Some("104857600"),
        validator: Validator::IntAtLeast(1),
        synonyms: &[],
        documentation: "The maximum number of bytes in a socket request.",
    },
    ConfigDef {
        name: "transaction.max.timeout.ms",
        config_type: ConfigType::Int,
        default: Some("900000"),
        validator: Validator::IntAtLeast(1),
        synonyms: &[],
        documentation: "The maximum allowed timeout for transactions.",
    },
    ConfigDef {
        name: "unclean.leader.election.enable",
        config_type: ConfigType::Boolean,
        default: Some("false"),
        validator: Validator::None,
        synonyms: &[],
        documentation: "Indicates whether to enable replicas not in the ISR set to be elected as leader as a last resort. Every value is satisfied: Sluice keeps one copy of a partition, so there is never a replica out of sync to elect, cleanly or not.",
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn tables_are_sorted_and_unique() {
        for table in [TOPIC_CONFIGS, BROKER_CONFIGS] {
            for pair in table.windows(2) {
                assert!(
                    pair[0].name < pair[1].name,
                    "{} !< {}",
                    pair[0].name,
                    pair[1].name
                );
            }
            for def in table {
                if let Some(default) = def.default {
                    def.validate(default)
                        .unwrap_or_else(|e| panic!("default of {}: {e}", def.name));
                }
            }
        }
    }

    #[test]
    fn validation_like_kafka() {
        assert!(validate_topic_config("retention.ms", "-1").is_ok());
        assert!(validate_topic_config("retention.ms", " 1000 ").is_ok());
        let e = validate_topic_config("retention.ms", "-2").unwrap_err();
        assert_eq!(
            e.message,
            "Invalid value -2 for configuration retention.ms: Value must be at least -1"
        );
        let e = validate_topic_config("retention.ms", "abc").unwrap_err();
        assert!(e.message.contains("Not a number of type LONG"), "{e}");
        let e = validate_topic_config("no.such.config", "1").unwrap_err();
        assert_eq!(e.name, "no.such.config");
        assert!(e.message.contains("no.such.config"));
        assert!(validate_topic_config("max.message.bytes", "2147483648").is_err());
        assert!(validate_topic_config("segment.bytes", "13").is_err());
        assert!(validate_topic_config("segment.bytes", "14").is_ok());
        assert!(validate_topic_config("cleanup.policy", "compact,delete").is_ok());
        assert!(validate_topic_config("cleanup.policy", "compact, delete").is_ok());
        assert!(validate_topic_config("cleanup.policy", "").is_err());
        assert!(validate_topic_config("cleanup.policy", "both").is_err());
        assert!(validate_topic_config("compression.type", "zstd").is_ok());
        assert!(validate_topic_config("compression.type", "brotli").is_err());
        assert!(validate_topic_config("message.timestamp.type", "LogAppendTime").is_ok());
        assert!(validate_topic_config("message.timestamp.type", "logappendtime").is_err());
        assert!(validate_topic_config("min.insync.replicas", "0").is_err());
        assert!(validate_topic_config("min.cleanable.dirty.ratio", "1.5").is_err());
        assert!(validate_topic_config("min.cleanable.dirty.ratio", "NaN").is_err());
        assert!(validate_topic_config("preallocate", "TRUE").is_ok());
        assert!(validate_topic_config("preallocate", "yes").is_err());
        // No offset index to size: only the defaults, refused with the reason otherwise.
        assert!(validate_topic_config("index.interval.bytes", "4096").is_ok());
        assert!(validate_topic_config("index.interval.bytes", " +4096").is_ok());
        let e = validate_topic_config("index.interval.bytes", "1024").unwrap_err();
        assert_eq!(e.name, "index.interval.bytes");
        assert!(
            e.message.starts_with(
                "Invalid value 1024 for configuration index.interval.bytes: Sluice accepts only the default value 4096: "
            ),
            "{e}"
        );
        assert!(validate_topic_config("segment.index.bytes", "10485760").is_ok());
        assert!(validate_topic_config("segment.index.bytes", "4").is_err());
        assert!(validate_topic_config("segment.index.bytes", "x").is_err());
        // Every value satisfied: accepted.
        for (name, value) in [
            ("flush.messages", "1"),
            ("flush.ms", "0"),
            ("message.downconversion.enable", "false"),
            ("unclean.leader.election.enable", "true"),
            ("segment.jitter.ms", "100"),
        ] {
            assert!(validate_topic_config(name, value).is_ok(), "{name}={value}");
        }
        assert!(validate_broker_config("unclean.leader.election.enable", "true").is_ok());
        assert!(
            validate_topic_config("retention.ms", &"1".repeat(CONFIG_VALUE_BYTES_MAX + 1)).is_err()
        );
        assert!(validate_broker_config("num.partitions", "0").is_err());
        assert!(validate_broker_config("no.such", "0").is_err());
    }

    #[test]
    fn cross_field_rules() {
        let empty = BTreeMap::new();
        let c = map(&[
            ("min.compaction.lag.ms", "10"),
            ("max.compaction.lag.ms", "5"),
        ]);
        assert!(validate_topic_configs(&c, &empty).is_err());
        let b = map(&[
            ("group.min.session.timeout.ms", "10"),
            ("group.max.session.timeout.ms", "5"),
        ]);
        assert!(validate_broker_configs(&b).is_err());
        let consumer = map(&[
            ("group.consumer.heartbeat.interval.ms", "3000"),
            ("group.consumer.session.timeout.ms", "3000"),
        ]);
        let error = validate_broker_configs(&consumer).unwrap_err();
        assert_eq!(error.name, "group.consumer.heartbeat.interval.ms");
        assert!(validate_broker_config("group.consumer.migration.policy", "UPGRADE").is_ok());
        assert!(validate_broker_config("group.consumer.migration.policy", "sideways").is_err());
        let policy = |value: &str| {
            effective_broker_config(&map(&[("group.consumer.migration.policy", value)]))
                .group_consumer_migration_policy
        };
        assert_eq!(policy("Upgrade"), ConsumerGroupMigrationPolicy::Upgrade);
        assert_eq!(policy("disabled"), ConsumerGroupMigrationPolicy::Disabled);
        assert!(!policy("downgrade").upgrade_enabled() && policy("downgrade").downgrade_enabled());
        let defaults = effective_broker_config(&BTreeMap::new());
        assert_eq!(
            (
                defaults.group_consumer_heartbeat_interval_ms,
                defaults.group_consumer_session_timeout_ms
            ),
            (5000, 45000)
        );
        assert_eq!(
            defaults.group_consumer_migration_policy,
            ConsumerGroupMigrationPolicy::Bidirectional
        );
    }

    #[test]
    fn topic_defaults_follow_broker_configs() {
        let empty = BTreeMap::new();
        let config = effective_topic_config(&empty, &empty);
        assert_eq!(config.retention_ms, 604_800_000);
        assert_eq!(config.retention_bytes, -1);
        assert_eq!(config.max_message_bytes, 1_048_588);
        assert_eq!(config.segment_bytes, 1_073_741_824);
        assert_eq!(config.timestamp_type, TimestampType::CreateTime);
        assert_eq!(
            config.cleanup_policy,
            CleanupPolicy {
                delete: true,
                compact: false
            }
        );
        assert_eq!(config.timestamp_before_max_ms, i64::MAX);

        let broker = map(&[("log.retention.hours", "1"), ("message.max.bytes", "2000")]);
        let config = effective_topic_config(&empty, &broker);
        assert_eq!(config.retention_ms, 3_600_000);
        assert_eq!(config.max_message_bytes, 2000);
        let broker = map(&[("log.retention.hours", "1"), ("log.retention.ms", "5")]);
        assert_eq!(effective_topic_config(&empty, &broker).retention_ms, 5);
        assert_eq!(effective_broker_config(&broker).log_retention_ms, 5);

        let topic = map(&[
            ("retention.ms", "7"),
            ("cleanup.policy", "compact,delete"),
            ("message.timestamp.type", "LogAppendTime"),
            ("message.timestamp.difference.max.ms", "100"),
        ]);
        let config = effective_topic_config(&topic, &broker);
        assert_eq!(config.retention_ms, 7);
        assert_eq!(
            config.cleanup_policy,
            CleanupPolicy {
                delete: true,
                compact: true
            }
        );
        assert_eq!(config.timestamp_type, TimestampType::LogAppendTime);
        assert_eq!(config.timestamp_before_max_ms, 100);
        assert_eq!(config.timestamp_after_max_ms, 100);
    }

    #[test]
    fn describe_sources() {
        let topic = map(&[("retention.ms", "7")]);
        let broker = map(&[("message.max.bytes", "2000")]);
        let entries = describe_topic_configs(&topic, &broker);
        assert_eq!(entries.len(), TOPIC_CONFIGS.len());
        let find = |name: &str| entries.iter().find(|e| e.name == name).unwrap().clone();
        let retention = find("retention.ms");
        assert_eq!(retention.value.as_deref(), Some("7"));
        assert_eq!(retention.source, ConfigSource::TopicConfig);
        assert_eq!(retention.config_type, ConfigType::Long);
        assert_eq!(retention.synonyms[0].source, ConfigSource::TopicConfig);
        let max = find("max.message.bytes");
        assert_eq!(max.value.as_deref(), Some("2000"));
        assert_eq!(max.source, ConfigSource::DynamicBrokerConfig);
        assert_eq!(max.synonyms[0].name, "message.max.bytes");
        let segment = find("segment.bytes");
        assert_eq!(segment.value.as_deref(), Some("1073741824"));
        assert_eq!(segment.source, ConfigSource::DefaultConfig);
        assert!(segment.is_default());

        let entries = describe_broker_configs(&broker);
        let find = |name: &str| entries.iter().find(|e| e.name == name).unwrap().clone();
        assert_eq!(
            find("message.max.bytes").source,
            ConfigSource::DynamicBrokerConfig
        );
        assert_eq!(find("num.partitions").value.as_deref(), Some("1"));
        assert_eq!(find("log.retention.ms").value, None);
        let typed = effective_broker_config(&broker);
        assert_eq!(typed.num_partitions, 1);
        assert!(typed.auto_create_topics_enable);
        assert_eq!(typed.message_max_bytes, 2000);
        assert_eq!(typed.socket_request_max_bytes, 104_857_600);
        assert_eq!(typed.log_retention_ms, 604_800_000);
    }
}
