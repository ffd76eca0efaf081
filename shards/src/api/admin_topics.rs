//! Topic administration: CreateTopics, DeleteTopics, CreatePartitions, DeleteRecords.

use std::collections::BTreeMap;
use std::rc::Rc;

use sluice_metadata::MetadataCommand;
use sluice_net::ErrorCode;
use sluice_net::messages::create_partitions_request::CreatePartitionsRequest;
use sluice_net::messages::create_partitions_response::{
    CreatePartitionsResponse, CreatePartitionsTopicResult,
};
use sluice_net::messages::create_topics_request::{CreatableTopic, CreateTopicsRequest};
use sluice_net::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult, CreateTopicsResponse,
};
use sluice_net::messages::delete_records_request::DeleteRecordsRequest;
use sluice_net::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsResponse, DeleteRecordsTopicResult,
};
use sluice_net::messages::delete_topics_request::DeleteTopicsRequest;
use sluice_net::messages::delete_topics_response::{DeletableTopicResult, DeleteTopicsResponse};

use crate::errors::{controller_error_code, controller_error_message, metadata_error_code};
use crate::messaging::ShardRequest;
use crate::shard::Shard;
use crate::storage::request::PartitionRequest;

/// An error code with the message Kafka sends beside it.
type Refusal = (ErrorCode, String);

/// Creates topics (or only validates them with validate_only).
pub async fn create_topics(
    shard: &Rc<Shard>,
    version: i16,
    request: CreateTopicsRequest,
) -> CreateTopicsResponse {
    let mut topics = Vec::with_capacity(request.topics.len());
    let mut seen = std::collections::HashSet::new();
    for topic in request.topics {
        let name = topic.name.clone();
        if !seen.insert(name.clone()) {
            topics.push(refused_topic(
                name,
                (
                    ErrorCode::InvalidRequest,
                    "duplicate topic in request".into(),
                ),
            ));
            continue;
        }
        let result = match plan_topic(shard, &topic) {
            Err(refusal) => Err(refusal),
            Ok((partitions, configs)) => {
                let command = MetadataCommand::CreateTopic {
                    name: name.clone(),
                    partitions,
                    configs,
                    shards: shard.count as u32,
                };
                submit_or_validate(shard, command, request.validate_only)
                    .await
                    .map(|()| partitions)
            }
        };
        topics.push(match result {
            Ok(partitions) => {
                let image = shard.image();
                let created = image.topic(&name);
                CreatableTopicResult {
                    name: name.clone(),
                    topic_id: created.map(|t| sluice_net::Uuid(t.id)).unwrap_or_default(),
                    error_code: 0,
                    error_message: None,
                    num_partitions: partitions as i32,
                    replication_factor: 1,
                    configs: (version >= 5).then(|| {
                        let explicit = created.map(|t| t.configs.clone()).unwrap_or_default();
                        sluice_metadata::describe_topic_configs(&explicit, &image.broker_configs)
                            .into_iter()
                            .map(|entry| CreatableTopicConfigs {
                                name: entry.name,
                                value: entry.value,
                                read_only: entry.read_only,
                                config_source: entry.source.code(),
                                is_sensitive: entry.sensitive,
                            })
                            .collect()
                    }),
                    ..Default::default()
                }
            }
            Err(refusal) => refused_topic(name, refusal),
        });
    }
    CreateTopicsResponse {
        topics,
        ..Default::default()
    }
}

/// Partition count and configs of a topic to create, with Kafka's defaults applied.
fn plan_topic(
    shard: &Shard,
    topic: &CreatableTopic,
) -> Result<(u32, BTreeMap<String, String>), Refusal> {
    let image = shard.image();
    let broker = image.broker_config();
    let live_brokers = image.live_brokers().count();
    if let Err(error) =
        sluice_metadata::validate_replication_factor(topic.replication_factor, live_brokers)
    {
        return Err((ErrorCode::InvalidReplicationFactor, error.to_string()));
    }
    let partitions = if !topic.assignments.is_empty() {
        if topic.num_partitions != -1 || topic.replication_factor != -1 {
            return Err((
                ErrorCode::InvalidRequest,
                "both partition count / replication factor and replica assignments were given"
                    .into(),
            ));
        }
        if !image.brokers().is_empty() {
            // A cluster places each partition on the broker leading the fewest; an
            // assignment it would not follow is refused rather than ignored.
            return Err((
                ErrorCode::InvalidReplicaAssignment,
                "replica assignments are not taken in a cluster: the controller places partitions"
                    .into(),
            ));
        }
        for assignment in &topic.assignments {
            if assignment.broker_ids != [image.node_id] {
                return Err((
                    ErrorCode::InvalidReplicaAssignment,
                    format!(
                        "replica assignment {:?} names brokers other than {}",
                        assignment.broker_ids, image.node_id
                    ),
                ));
            }
        }
        topic.assignments.len() as u32
    } else if topic.num_partitions == -1 {
        broker.num_partitions.max(1) as u32
    } else if topic.num_partitions <= 0 {
        return Err((
            ErrorCode::InvalidPartitions,
            format!(
                "number of partitions must be larger than 0, not {}",
                topic.num_partitions
            ),
        ));
    } else {
        topic.num_partitions as u32
    };
    let mut configs = BTreeMap::new();
    for config in &topic.configs {
        let Some(value) = &config.value else {
            return Err((
                ErrorCode::InvalidConfig,
                format!("null value for config {}", config.name),
            ));
        };
        sluice_metadata::validate_topic_config(&config.name, value)
            .map_err(|e| (ErrorCode::InvalidConfig, e.to_string()))?;
        super::configs::check_batch_limit_fits_wal(&shard.config, &config.name, value)?;
        configs.insert(config.name.clone(), value.clone());
    }
    Ok((partitions, configs))
}

/// Applies `command`, or with `validate_only` runs the same checks and writes nothing.
async fn submit_or_validate(
    shard: &Shard,
    command: MetadataCommand,
    validate_only: bool,
) -> Result<(), Refusal> {
    if validate_only {
        return sluice_metadata::validate_command(&shard.image(), &command)
            .map_err(|e| (metadata_error_code(&e), e.to_string()));
    }
    shard
        .controller
        .submit(command)
        .await
        .map(|_| ())
        .map_err(|e| (controller_error_code(&e), controller_error_message(&e)))
}

fn refused_topic(name: String, (code, message): Refusal) -> CreatableTopicResult {
    CreatableTopicResult {
        name,
        error_code: code.code(),
        error_message: Some(message),
        num_partitions: -1,
        replication_factor: -1,
        configs: None,
        ..Default::default()
    }
}

/// Deletes topics by name (v0–5) or by name or id (v6+).
pub async fn delete_topics(
    shard: &Rc<Shard>,
    version: i16,
    request: DeleteTopicsRequest,
) -> DeleteTopicsResponse {
    let image = shard.image();
    let wanted: Vec<(Option<String>, sluice_net::Uuid)> = if version >= 6 {
        request
            .topics
            .into_iter()
            .map(|t| (t.name, t.topic_id))
            .collect()
    } else {
        request
            .topic_names
            .into_iter()
            .map(|n| (Some(n), sluice_net::Uuid::default()))
            .collect()
    };
    let mut responses = Vec::with_capacity(wanted.len());
    for (name, id) in wanted {
        let found = match &name {
            Some(name) => image.topic(name),
            None => image.topic_by_id(id.0),
        };
        let Some(topic) = found else {
            let code = if name.is_some() {
                ErrorCode::UnknownTopicOrPartition
            } else {
                ErrorCode::UnknownTopicId
            };
            responses.push(DeletableTopicResult {
                name,
                topic_id: id,
                error_code: code.code(),
                error_message: Some(code.message().to_string()),
            });
            continue;
        };
        let topic_name = topic.name.clone();
        let topic_id = sluice_net::Uuid(topic.id);
        let result = shard
            .controller
            .submit(MetadataCommand::DeleteTopic {
                name: topic_name.clone(),
            })
            .await;
        responses.push(match result {
            Ok(_) => DeletableTopicResult {
                name: Some(topic_name),
                topic_id,
                error_code: 0,
                error_message: None,
            },
            Err(e) => DeletableTopicResult {
                name: Some(topic_name),
                topic_id,
                error_code: controller_error_code(&e).code(),
                error_message: Some(controller_error_message(&e)),
            },
        });
    }
    DeleteTopicsResponse {
        responses,
        ..Default::default()
    }
}

/// Grows topics to a new partition count.
pub async fn create_partitions(
    shard: &Rc<Shard>,
    request: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let mut results = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let image = shard.image();
        let outcome: Result<(), Refusal> = match image.topic(&topic.name) {
            None => Err((
                ErrorCode::UnknownTopicOrPartition,
                format!("topic '{}' does not exist", topic.name),
            )),
            Some(existing) if topic.count <= existing.partitions.len() as i32 => Err((
                ErrorCode::InvalidPartitions,
                format!(
                    "topic '{}' has {} partitions; the new count {} must be larger",
                    topic.name,
                    existing.partitions.len(),
                    topic.count
                ),
            )),
            Some(_) => {
                let command = MetadataCommand::CreatePartitions {
                    name: topic.name.clone(),
                    total: topic.count as u32,
                    shards: shard.count as u32,
                };
                submit_or_validate(shard, command, request.validate_only).await
            }
        };
        results.push(match outcome {
            Ok(()) => CreatePartitionsTopicResult {
                name: topic.name,
                error_code: 0,
                error_message: None,
            },
            Err((code, message)) => CreatePartitionsTopicResult {
                name: topic.name,
                error_code: code.code(),
                error_message: Some(message),
            },
        });
    }
    CreatePartitionsResponse {
        results,
        ..Default::default()
    }
}

/// Moves partitions' log start offsets forward.
pub async fn delete_records(
    shard: &Rc<Shard>,
    request: DeleteRecordsRequest,
) -> DeleteRecordsResponse {
    let image = shard.image();
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for p in topic.partitions {
            let offset = p.offset;
            let result = super::ask_partition(
                shard,
                &image,
                &topic.name,
                p.partition_index,
                -1, // DeleteRecords carries no leader epoch
                |stream_id, reply| {
                    ShardRequest::Partition(PartitionRequest::DeleteRecords {
                        stream_id,
                        offset,
                        reply,
                    })
                },
            )
            .await;
            partitions.push(match result {
                Ok(low_watermark) => DeleteRecordsPartitionResult {
                    partition_index: p.partition_index,
                    low_watermark,
                    error_code: 0,
                },
                Err(code) => DeleteRecordsPartitionResult {
                    partition_index: p.partition_index,
                    low_watermark: -1,
                    error_code: code.code(),
                },
            });
        }
        topics.push(DeleteRecordsTopicResult {
            name: topic.name,
            partitions,
        });
    }
    DeleteRecordsResponse {
        topics,
        ..Default::default()
    }
}
