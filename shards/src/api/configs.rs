//! DescribeConfigs, AlterConfigs and IncrementalAlterConfigs for topics, the broker, and the
//! broker's loggers (BROKER_LOGGER, IncrementalAlterConfigs only, as Kafka has it).

use std::collections::BTreeMap;
use std::rc::Rc;

use sluice_metadata::{ConfigEntry, MetadataCommand};
use sluice_net::ErrorCode;
use sluice_net::messages::alter_configs_request::AlterConfigsRequest;
use sluice_net::messages::alter_configs_response::{
    AlterConfigsResourceResponse, AlterConfigsResponse,
};
use sluice_net::messages::describe_configs_request::DescribeConfigsRequest;
use sluice_net::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResponse, DescribeConfigsResult,
    DescribeConfigsSynonym,
};
use sluice_net::messages::incremental_alter_configs_request::IncrementalAlterConfigsRequest;
use sluice_net::messages::incremental_alter_configs_response as incremental;

use crate::config::BrokerConfig;
use crate::errors::{controller_error_code, controller_error_message};
use crate::shard::Shard;

/// Kafka's ConfigResource types.
const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
const RESOURCE_BROKER_LOGGER: i8 = 8;

/// IncrementalAlterConfigs operations.
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
const OP_APPEND: i8 = 2;
const OP_SUBTRACT: i8 = 3;

type Refusal = (ErrorCode, String);

/// Describes topic or broker configs, with defaults and their sources.
pub fn describe(
    shard: &Shard,
    version: i16,
    request: DescribeConfigsRequest,
) -> DescribeConfigsResponse {
    let image = shard.image();
    let results = request
        .resources
        .into_iter()
        .map(|resource| {
            if resource.resource_type == RESOURCE_BROKER_LOGGER {
                return describe_loggers(shard, version, resource);
            }
            let entries: Result<Vec<ConfigEntry>, Refusal> = match resource.resource_type {
                RESOURCE_TOPIC => match image.topic(&resource.resource_name) {
                    Some(topic) => Ok(sluice_metadata::describe_topic_configs(
                        &topic.configs,
                        &image.broker_configs,
                    )),
                    None => Err((
                        ErrorCode::UnknownTopicOrPartition,
                        format!("topic '{}' does not exist", resource.resource_name),
                    )),
                },
                RESOURCE_BROKER => check_broker_name(shard, &resource.resource_name)
                    .map(|()| sluice_metadata::describe_broker_configs(&image.broker_configs)),
                other => Err((
                    ErrorCode::InvalidRequest,
                    format!("unsupported resource type {other}"),
                )),
            };
            match entries {
                Ok(entries) => DescribeConfigsResult {
                    error_code: 0,
                    error_message: None,
                    resource_type: resource.resource_type,
                    resource_name: resource.resource_name,
                    configs: entries
                        .into_iter()
                        .filter(|e| {
                            resource
                                .configuration_keys
                                .as_ref()
                                .is_none_or(|keys| keys.is_empty() || keys.contains(&e.name))
                        })
                        .map(|e| DescribeConfigsResourceResult {
                            is_default: e.is_default(),
                            synonyms: if request.include_synonyms {
                                e.synonyms
                                    .iter()
                                    .map(|s| DescribeConfigsSynonym {
                                        name: s.name.clone(),
                                        value: s.value.clone(),
                                        source: s.source.code(),
                                    })
                                    .collect()
                            } else {
                                Vec::new()
                            },
                            config_source: if version >= 1 { e.source.code() } else { -1 },
                            config_type: e.config_type.code(),
                            documentation: request
                                .include_documentation
                                .then(|| e.documentation.to_string()),
                            name: e.name,
                            value: e.value,
                            read_only: e.read_only,
                            is_sensitive: e.sensitive,
                        })
                        .collect(),
                },
                Err((code, message)) => DescribeConfigsResult {
                    error_code: code.code(),
                    error_message: Some(message),
                    resource_type: resource.resource_type,
                    resource_name: resource.resource_name,
                    configs: Vec::new(),
                },
            }
        })
        .collect();
    DescribeConfigsResponse {
        results,
        ..Default::default()
    }
}

/// Replaces the whole set of a resource's dynamic configs (the legacy AlterConfigs).
pub async fn alter(shard: &Rc<Shard>, request: AlterConfigsRequest) -> AlterConfigsResponse {
    let mut responses = Vec::with_capacity(request.resources.len());
    for resource in request.resources {
        let outcome = async {
            let mut set = BTreeMap::new();
            for config in &resource.configs {
                let value = config.value.clone().ok_or_else(|| {
                    (
                        ErrorCode::InvalidRequest,
                        format!("null value for config {}", config.name),
                    )
                })?;
                set.insert(config.name.clone(), value);
            }
            let current = current_configs(shard, resource.resource_type, &resource.resource_name)?;
            let delete = current
                .keys()
                .filter(|k| !set.contains_key(*k))
                .cloned()
                .collect();
            let (kind, name) = (resource.resource_type, &resource.resource_name);
            apply(shard, kind, name, set, delete, request.validate_only).await
        }
        .await;
        let (code, message) = split(outcome);
        responses.push(AlterConfigsResourceResponse {
            error_code: code,
            error_message: message,
            resource_type: resource.resource_type,
            resource_name: resource.resource_name,
        });
    }
    AlterConfigsResponse {
        responses,
        ..Default::default()
    }
}

/// Sets, deletes, appends to or subtracts from individual configs.
pub async fn incremental_alter(
    shard: &Rc<Shard>,
    request: IncrementalAlterConfigsRequest,
) -> incremental::IncrementalAlterConfigsResponse {
    let mut responses = Vec::with_capacity(request.resources.len());
    for resource in request.resources {
        let outcome = async {
            if resource.resource_type == RESOURCE_BROKER_LOGGER {
                return alter_loggers(shard, &resource, request.validate_only);
            }
            let current = current_configs(shard, resource.resource_type, &resource.resource_name)?;
            let (set, delete) =
                plan_incremental(&current, resource.resource_type, &resource.configs)?;
            let (kind, name) = (resource.resource_type, &resource.resource_name);
            apply(shard, kind, name, set, delete, request.validate_only).await
        }
        .await;
        let (code, message) = split(outcome);
        responses.push(incremental::AlterConfigsResourceResponse {
            error_code: code,
            error_message: message,
            resource_type: resource.resource_type,
            resource_name: resource.resource_name,
        });
    }
    incremental::IncrementalAlterConfigsResponse {
        responses,
        ..Default::default()
    }
}

fn plan_incremental(
    current: &BTreeMap<String, String>,
    resource_type: i8,
    configs: &[sluice_net::messages::incremental_alter_configs_request::AlterableConfig],
) -> Result<(BTreeMap<String, String>, Vec<String>), Refusal> {
    let mut set = BTreeMap::new();
    let mut delete = Vec::new();
    for config in configs {
        let value = config.value.clone();
        match config.config_operation {
            OP_SET => {
                let value = value.ok_or_else(|| {
                    (
                        ErrorCode::InvalidRequest,
                        format!("null value to set for {}", config.name),
                    )
                })?;
                set.insert(config.name.clone(), value);
            }
            OP_DELETE => delete.push(config.name.clone()),
            OP_APPEND | OP_SUBTRACT => {
                let defaults = effective_value(resource_type, current, &config.name);
                let mut items: Vec<String> = defaults
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect();
                for item in value
                    .unwrap_or_default()
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                {
                    if config.config_operation == OP_APPEND {
                        if !items.iter().any(|i| i == item) {
                            items.push(item.to_string());
                        }
                    } else {
                        items.retain(|i| i != item);
                    }
                }
                set.insert(config.name.clone(), items.join(","));
            }
            other => {
                return Err((
                    ErrorCode::InvalidRequest,
                    format!("unknown config operation {other}"),
                ));
            }
        }
    }
    Ok((set, delete))
}

/// The value a config has now, explicit or default, for list operations.
fn effective_value(resource_type: i8, current: &BTreeMap<String, String>, name: &str) -> String {
    if let Some(value) = current.get(name) {
        return value.clone();
    }
    let defaults = if resource_type == RESOURCE_TOPIC {
        sluice_metadata::describe_topic_configs(&BTreeMap::new(), &BTreeMap::new())
    } else {
        sluice_metadata::describe_broker_configs(&BTreeMap::new())
    };
    defaults
        .into_iter()
        .find(|e| e.name == name)
        .and_then(|e| e.value)
        .unwrap_or_default()
}

fn current_configs(
    shard: &Shard,
    resource_type: i8,
    name: &str,
) -> Result<BTreeMap<String, String>, Refusal> {
    let image = shard.image();
    match resource_type {
        RESOURCE_TOPIC => image.topic(name).map(|t| t.configs.clone()).ok_or_else(|| {
            (
                ErrorCode::UnknownTopicOrPartition,
                format!("topic '{name}' does not exist"),
            )
        }),
        RESOURCE_BROKER => check_broker_name(shard, name).map(|()| image.broker_configs.clone()),
        other => Err((
            ErrorCode::InvalidRequest,
            format!("unsupported resource type {other}"),
        )),
    }
}

/// Refuses a limit on record batches (a topic's `max.message.bytes`, the broker default
/// `message.max.bytes`) above the largest batch this broker's WAL holds
/// ([`BrokerConfig::batch_bytes_max`], from `--wal-size`): produces up to it would be accepted
/// by the limit and then fail in the WAL.
pub(super) fn check_batch_limit_fits_wal(
    config: &BrokerConfig,
    name: &str,
    value: &str,
) -> Result<(), Refusal> {
    if name != "max.message.bytes" && name != "message.max.bytes" {
        return Ok(());
    }
    // Validated before: an int of at least 0.
    let Ok(bytes) = value.parse::<u64>() else {
        return Ok(());
    };
    let held = config.batch_bytes_max();
    if bytes <= held {
        return Ok(());
    }
    Err((
        ErrorCode::InvalidConfig,
        match config.wal_segment_bytes(config.shard_count()) {
            Some(segment) => format!(
                "{name} {bytes} is above the {held} bytes a record batch may take in this \
                 broker's WAL (less than one of its {segment}-byte segments, which --upload-size \
                 sets, and half of --wal-size); start the broker with --upload-size and \
                 --wal-size of at least {} bytes to allow it",
                BrokerConfig::wal_bytes_to_hold(bytes)
            ),
            None => format!(
                "{name} {bytes} is above the {held} bytes a record batch may take in this \
                 broker's WAL (half of --wal-size, less a record header); start the broker \
                 with --wal-size of at least {} bytes to allow it",
                BrokerConfig::wal_bytes_to_hold(bytes)
            ),
        },
    ))
}

async fn apply(
    shard: &Rc<Shard>,
    resource_type: i8,
    name: &str,
    set: BTreeMap<String, String>,
    delete: Vec<String>,
    validate_only: bool,
) -> Result<(), Refusal> {
    for (key, value) in &set {
        let valid = if resource_type == RESOURCE_TOPIC {
            sluice_metadata::validate_topic_config(key, value)
        } else {
            sluice_metadata::validate_broker_config(key, value)
        };
        valid.map_err(|e| (ErrorCode::InvalidConfig, e.to_string()))?;
        check_batch_limit_fits_wal(&shard.config, key, value)?;
    }
    if validate_only {
        return Ok(());
    }
    let command = if resource_type == RESOURCE_TOPIC {
        MetadataCommand::AlterTopicConfigs {
            name: name.to_string(),
            set,
            delete,
        }
    } else {
        MetadataCommand::AlterBrokerConfigs { set, delete }
    };
    shard
        .controller
        .submit(command)
        .await
        .map(|_| ())
        .map_err(|e| (controller_error_code(&e), controller_error_message(&e)))
}

/// Broker resources are named by node id; the empty name is the cluster-wide default.
/// The loggers and their levels (BROKER_LOGGER), as Kafka lists them: every one read-only in
/// DescribeConfigs, changed only by IncrementalAlterConfigs.
fn describe_loggers(
    shard: &Shard,
    version: i16,
    resource: sluice_net::messages::describe_configs_request::DescribeConfigsResource,
) -> DescribeConfigsResult {
    let refused = |(code, message): Refusal| DescribeConfigsResult {
        error_code: ErrorCode::code(code),
        error_message: Some(message),
        resource_type: resource.resource_type,
        resource_name: resource.resource_name.clone(),
        configs: Vec::new(),
    };
    if let Err(refusal) = check_broker_name(shard, &resource.resource_name) {
        return refused(refusal);
    }
    let Some(levels) = shard.config.log_levels.as_ref() else {
        return refused(loggers_not_changeable());
    };
    DescribeConfigsResult {
        error_code: 0,
        error_message: None,
        resource_type: resource.resource_type,
        resource_name: resource.resource_name.clone(),
        configs: levels
            .levels()
            .into_iter()
            .filter(|(name, _)| {
                resource
                    .configuration_keys
                    .as_ref()
                    .is_none_or(|keys| keys.is_empty() || keys.contains(name))
            })
            .map(|(name, level)| DescribeConfigsResourceResult {
                name,
                value: Some(level),
                read_only: false,
                // DYNAMIC_BROKER_LOGGER_CONFIG.
                config_source: if version >= 1 { 6 } else { -1 },
                is_default: false,
                is_sensitive: false,
                // STRING.
                config_type: 2,
                ..Default::default()
            })
            .collect(),
    }
}

fn loggers_not_changeable() -> Refusal {
    (
        ErrorCode::InvalidRequest,
        "this broker's log levels cannot be changed at run time".to_string(),
    )
}

/// Sets (or, DELETE, resets to the root logger's) the level of each logger named.
fn alter_loggers(
    shard: &Shard,
    resource: &sluice_net::messages::incremental_alter_configs_request::AlterConfigsResource,
    validate_only: bool,
) -> Result<(), Refusal> {
    check_broker_name(shard, &resource.resource_name)?;
    let levels = shard
        .config
        .log_levels
        .as_ref()
        .ok_or_else(loggers_not_changeable)?;
    let mut changes = Vec::with_capacity(resource.configs.len());
    for config in &resource.configs {
        let level = match config.config_operation {
            OP_SET => {
                let level = config.value.as_deref().unwrap_or_default().to_uppercase();
                if !crate::log_levels::LOG_LEVELS.contains(&level.as_str()) {
                    return Err((
                        ErrorCode::InvalidConfig,
                        format!(
                            "{:?} is not a log level for logger {} (one of {})",
                            config.value.as_deref().unwrap_or_default(),
                            config.name,
                            crate::log_levels::LOG_LEVELS.join(", ")
                        ),
                    ));
                }
                Some(level)
            }
            OP_DELETE if config.name == crate::log_levels::ROOT_LOGGER => {
                return Err((
                    ErrorCode::InvalidRequest,
                    "the root logger cannot be deleted; set its level".to_string(),
                ));
            }
            OP_DELETE => None,
            _ => {
                return Err((
                    ErrorCode::InvalidRequest,
                    format!(
                        "a logger's level is SET or DELETEd, not APPENDed or SUBTRACTed ({})",
                        config.name
                    ),
                ));
            }
        };
        if config.name.is_empty() {
            return Err((
                ErrorCode::InvalidConfig,
                "a logger needs a name".to_string(),
            ));
        }
        changes.push((config.name.clone(), level));
    }
    if validate_only {
        return Ok(());
    }
    for (logger, level) in changes {
        levels
            .set(&logger, level.as_deref())
            .map_err(|message| (ErrorCode::InvalidConfig, message))?;
        crate::log_levels::keep_change(&shard.config.data_dir, &logger, level.as_deref()).map_err(
            |error| {
                (
                    ErrorCode::KafkaStorageError,
                    format!("logger {logger} changed, but not kept for the next start: {error}"),
                )
            },
        )?;
        tracing::info!(
            logger,
            level = level.as_deref().unwrap_or("(root's)"),
            "log level changed"
        );
    }
    Ok(())
}

fn check_broker_name(shard: &Shard, name: &str) -> Result<(), Refusal> {
    let node = shard.image().node_id;
    if name.is_empty() || name == node.to_string() {
        Ok(())
    } else {
        Err((
            ErrorCode::InvalidRequest,
            format!("broker '{name}' is not this broker ({node})"),
        ))
    }
}

fn split(outcome: Result<(), Refusal>) -> (i16, Option<String>) {
    match outcome {
        Ok(()) => (0, None),
        Err((code, message)) => (code.code(), Some(message)),
    }
}
