//! Metadata: brokers, topics and partition leaders; auto-creates topics like Kafka.

use std::collections::BTreeMap;
use std::rc::Rc;

use sluice_metadata::{Leadership, MetadataCommand, MetadataImage, TopicImage};
use sluice_net::ErrorCode;
use sluice_net::messages::metadata_request::MetadataRequest;
use sluice_net::messages::metadata_response::{
    MetadataResponse, MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};

use crate::shard::Shard;

/// Answers a Metadata request, creating requested topics that do not exist when both the
/// request and `auto.create.topics.enable` allow it.
/// `advertised`: the host and port of the listener the request came through, which is what
/// a single broker tells its clients (each listener names itself).
pub async fn handle(
    shard: &Rc<Shard>,
    version: i16,
    request: MetadataRequest,
    advertised: &(String, i32),
) -> MetadataResponse {
    let mut image = shard.image();
    // v0 asks for every topic with an empty list; later versions with null.
    let requested: Option<Vec<RequestedTopic>> = match request.topics {
        None => None,
        Some(topics) if topics.is_empty() && version == 0 => None,
        Some(topics) => Some(
            topics
                .into_iter()
                .map(|t| match t.name {
                    Some(name) => RequestedTopic::Name(name),
                    None => RequestedTopic::Id(t.topic_id.0),
                })
                .collect(),
        ),
    };
    let auto_create = (version < 4 || request.allow_auto_topic_creation)
        && image.broker_config().auto_create_topics_enable;
    let mut creation_errors: BTreeMap<String, ErrorCode> = BTreeMap::new();
    if let (Some(requested), true) = (&requested, auto_create) {
        for topic in requested {
            let RequestedTopic::Name(name) = topic else {
                continue;
            };
            if image.topic(name).is_some() {
                continue;
            }
            let partitions = image.broker_config().num_partitions.max(1) as u32;
            match shard
                .controller
                .submit(MetadataCommand::CreateTopic {
                    name: name.clone(),
                    partitions,
                    configs: BTreeMap::new(),
                    shards: shard.count as u32,
                })
                .await
            {
                Ok((new_image, _)) => image = new_image,
                Err(error) => {
                    let code = crate::errors::controller_error_code(&error);
                    if code != ErrorCode::TopicAlreadyExists {
                        creation_errors.insert(name.clone(), code);
                    }
                    image = shard.image();
                }
            }
        }
    }
    let topics = match requested {
        None => image
            .topics
            .values()
            .map(|t| describe_topic(&image, t))
            .collect(),
        Some(requested) => requested
            .into_iter()
            .map(|wanted| {
                let found = match &wanted {
                    RequestedTopic::Name(name) => image.topic(name),
                    RequestedTopic::Id(id) => image.topic_by_id(*id),
                };
                match found {
                    Some(topic) => describe_topic(&image, topic),
                    None => {
                        let (name, code) = match wanted {
                            RequestedTopic::Name(name) => {
                                let code = creation_errors
                                    .get(&name)
                                    .copied()
                                    .unwrap_or(ErrorCode::UnknownTopicOrPartition);
                                (Some(name), code)
                            }
                            RequestedTopic::Id(_) => (None, ErrorCode::UnknownTopicId),
                        };
                        MetadataResponseTopic {
                            error_code: code.code(),
                            name,
                            ..Default::default()
                        }
                    }
                }
            })
            .collect(),
    };
    MetadataResponse {
        brokers: brokers(&image, advertised),
        cluster_id: Some(image.cluster_id.clone()),
        controller_id: image.node_id,
        topics,
        ..Default::default()
    }
}

/// The brokers clients may connect to: this node alone, at the `advertised` address of the
/// client's listener, or every unfenced broker of the cluster (a fenced one leads nothing) at
/// the address it registered (a broker of a cluster has one listener).
pub fn brokers(image: &MetadataImage, advertised: &(String, i32)) -> Vec<MetadataResponseBroker> {
    if image.brokers().is_empty() {
        return vec![MetadataResponseBroker {
            node_id: image.node_id,
            host: advertised.0.clone(),
            port: advertised.1,
            rack: None,
        }];
    }
    image
        .live_brokers()
        .filter_map(|(node_id, endpoint)| {
            let (host, port) = split_endpoint(endpoint)?;
            Some(MetadataResponseBroker {
                node_id,
                host,
                port: port.into(),
                rack: None,
            })
        })
        .collect()
}

/// The host and port of a `host:port` endpoint, as Kafka's responses carry them.
pub fn split_endpoint(endpoint: &str) -> Option<(String, u16)> {
    let (host, port) = endpoint.rsplit_once(':')?;
    Some((host.to_string(), port.parse().ok()?))
}

enum RequestedTopic {
    Name(String),
    Id([u8; 16]),
}

fn describe_topic(image: &MetadataImage, topic: &TopicImage) -> MetadataResponseTopic {
    MetadataResponseTopic {
        error_code: 0,
        name: Some(topic.name.clone()),
        topic_id: sluice_net::Uuid(topic.id),
        is_internal: false,
        partitions: topic
            .partitions
            .iter()
            .map(|p| describe_partition(image.leadership(p.stream_id), p.index))
            .collect(),
        ..Default::default()
    }
}

/// One copy of the data, in shared storage: the replica is the broker whose WAL holds the
/// partition, in sync while it leads. While its broker is fenced the partition is offline
/// (LEADER_NOT_AVAILABLE), as a Kafka partition whose only replica is down.
fn describe_partition(leadership: Leadership, index: u32) -> MetadataResponsePartition {
    let replicas: Vec<i32> = leadership.replica.into_iter().collect();
    let online = leadership.leader.is_some();
    MetadataResponsePartition {
        error_code: if online {
            0
        } else {
            ErrorCode::LeaderNotAvailable.code()
        },
        partition_index: index as i32,
        leader_id: leadership.leader.unwrap_or(-1),
        leader_epoch: leadership.leader_epoch,
        isr_nodes: if online { replicas.clone() } else { Vec::new() },
        offline_replicas: if online { Vec::new() } else { replicas.clone() },
        replica_nodes: replicas,
    }
}
