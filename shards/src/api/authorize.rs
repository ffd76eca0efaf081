//! Authorization of every API, as Kafka's `KafkaApis` does it: before a handler runs, the
//! parts of a request the client may not touch are taken out (or the whole request is
//! refused), and after it the refused parts are answered with Kafka's error codes
//! (TOPIC_, GROUP_, TRANSACTIONAL_ID_ and CLUSTER_AUTHORIZATION_FAILED). Handlers never see
//! what they must not act on, and reads whose result depends on what exists (all topics,
//! all groups, a fetch session's partitions) are filtered on the way out.
//!
//! Which operation each API needs is Kafka's (KIP-11 and its successors); the table is in
//! the README's security section.

use std::collections::HashSet;

use sluice_metadata::{AclOperation, AclResourceType};
use sluice_net::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult,
};
use sluice_net::messages::alter_configs_response::AlterConfigsResourceResponse;
use sluice_net::messages::create_acls_response::{AclCreationResult, CreateAclsResponse};
use sluice_net::messages::create_partitions_response::CreatePartitionsTopicResult;
use sluice_net::messages::create_topics_response::CreatableTopicResult;
use sluice_net::messages::delete_acls_response::{DeleteAclsFilterResult, DeleteAclsResponse};
use sluice_net::messages::delete_groups_response::DeletableGroupResult;
use sluice_net::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use sluice_net::messages::delete_topics_response::DeletableTopicResult;
use sluice_net::messages::describe_acls_response::DescribeAclsResponse;
use sluice_net::messages::describe_configs_response::DescribeConfigsResult;
use sluice_net::messages::describe_groups_response::DescribedGroup;
use sluice_net::messages::describe_producers_response::{PartitionResponse, TopicResponse};
use sluice_net::messages::describe_transactions_response::TransactionState;
use sluice_net::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use sluice_net::messages::find_coordinator_response::{Coordinator, FindCoordinatorResponse};
use sluice_net::messages::incremental_alter_configs_response::AlterConfigsResourceResponse as IncrementalAlterConfigsResourceResponse;
use sluice_net::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use sluice_net::messages::metadata_response::MetadataResponseTopic;
use sluice_net::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use sluice_net::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use sluice_net::messages::offset_fetch_response::OffsetFetchResponseGroup;
use sluice_net::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use sluice_net::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use sluice_net::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use sluice_net::{ErrorCode, Request, Response, Uuid};

use crate::security::Access;

/// What the authorizer made of a request.
pub enum Screened {
    /// Handle this request (the original, or what is left of it), then pass the response
    /// through `Amend`.
    Handle(Request, Amend),
    /// Answer this without handling the request.
    Refuse(Response),
}

/// Adds the refused parts to a response, or filters out what the client may not see.
pub type Amend = Option<Box<dyn FnOnce(&mut Response)>>;

/// Config resource types (DescribeConfigs, AlterConfigs) and what they are authorized on.
const CONFIG_RESOURCE_TOPIC: i8 = 2;
const CONFIG_RESOURCE_BROKER: i8 = 4;
const CONFIG_RESOURCE_BROKER_LOGGER: i8 = 8;
/// FindCoordinator's key types.
const COORDINATOR_KEY_GROUP: i8 = 0;
const COORDINATOR_KEY_TRANSACTION: i8 = 1;

fn amend(f: impl FnOnce(&mut Response) + 'static) -> Amend {
    Some(Box::new(f))
}

/// Screens `request` (at `version`) for the client of `access`.
pub fn screen(request: Request, version: i16, access: &Access) -> Screened {
    use AclOperation::*;
    let topic_error = ErrorCode::TopicAuthorizationFailed.code();
    let group_error = ErrorCode::GroupAuthorizationFailed.code();
    let cluster_error = ErrorCode::ClusterAuthorizationFailed.code();
    let txn_error = ErrorCode::TransactionalIdAuthorizationFailed.code();
    match request {
        Request::Produce(mut r) => {
            if let Some(id) = &r.transactional_id
                && !access.allows_transactional_id(Write, id)
            {
                let refused = r
                    .topic_data
                    .iter()
                    .map(|t| {
                        produce_topic(&t.name, t.partition_data.iter().map(|p| p.index), txn_error)
                    })
                    .collect::<Vec<_>>();
                return Screened::Refuse(Response::Produce(
                    sluice_net::messages::produce_response::ProduceResponse {
                        responses: refused,
                        ..Default::default()
                    },
                ));
            }
            let (allowed, denied) = split(r.topic_data, |t| access.allows_topic(Write, &t.name));
            r.topic_data = allowed;
            let refused: Vec<TopicProduceResponse> = denied
                .iter()
                .map(|t| {
                    produce_topic(
                        &t.name,
                        t.partition_data.iter().map(|p| p.index),
                        topic_error,
                    )
                })
                .collect();
            Screened::Handle(
                Request::Produce(r),
                non_empty(refused, |refused| {
                    amend(move |response| {
                        if let Response::Produce(p) = response {
                            p.responses.extend(refused);
                        }
                    })
                }),
            )
        }
        Request::Fetch(mut r) => {
            let image = access.image();
            let name_of = |topic: &str, id: Uuid| -> Option<String> {
                if version >= 13 {
                    image.topic_by_id(id.0).map(|t| t.name.clone())
                } else {
                    Some(topic.to_string())
                }
            };
            let (allowed, denied) = split(r.topics, |t| {
                name_of(&t.topic, t.topic_id).is_none_or(|name| access.allows_topic(Read, &name))
            });
            r.topics = allowed;
            let refused: Vec<FetchableTopicResponse> = denied
                .iter()
                .map(|t| FetchableTopicResponse {
                    topic: t.topic.clone(),
                    topic_id: t.topic_id,
                    partitions: t
                        .partitions
                        .iter()
                        .map(|p| fetch_partition_refused(p.partition))
                        .collect(),
                })
                .collect();
            let access = access.clone();
            Screened::Handle(
                Request::Fetch(r),
                amend(move |response| {
                    let Response::Fetch(f) = response else {
                        return;
                    };
                    // A fetch session keeps partitions the request no longer names: each is
                    // authorized again on the way out, as Kafka does on every fetch.
                    let image = access.image();
                    for topic in &mut f.responses {
                        let name = if version >= 13 {
                            image.topic_by_id(topic.topic_id.0).map(|t| t.name.as_str())
                        } else {
                            Some(topic.topic.as_str())
                        };
                        if name.is_some_and(|name| !access.allows_topic(Read, name)) {
                            for p in &mut topic.partitions {
                                *p = fetch_partition_refused(p.partition_index);
                            }
                        }
                    }
                    f.responses.extend(refused);
                }),
            )
        }
        Request::ListOffsets(mut r) => {
            let (allowed, denied) = split(r.topics, |t| access.allows_topic(Describe, &t.name));
            r.topics = allowed;
            let refused: Vec<ListOffsetsTopicResponse> = denied
                .into_iter()
                .map(|t| ListOffsetsTopicResponse {
                    name: t.name,
                    partitions: t
                        .partitions
                        .iter()
                        .map(|p| ListOffsetsPartitionResponse {
                            partition_index: p.partition_index,
                            error_code: topic_error,
                            timestamp: -1,
                            offset: -1,
                            leader_epoch: -1,
                            ..Default::default()
                        })
                        .collect(),
                })
                .collect();
            Screened::Handle(
                Request::ListOffsets(r),
                non_empty(refused, |refused| {
                    amend(move |response| {
                        if let Response::ListOffsets(l) = response {
                            l.topics.extend(refused);
                        }
                    })
                }),
            )
        }
        Request::OffsetForLeaderEpoch(mut r) => {
            let (allowed, denied) = split(r.topics, |t| access.allows_topic(Describe, &t.topic));
            r.topics = allowed;
            let refused: Vec<OffsetForLeaderTopicResult> = denied
                .into_iter()
                .map(|t| OffsetForLeaderTopicResult {
                    topic: t.topic,
                    partitions: t
                        .partitions
                        .iter()
                        .map(|p| EpochEndOffset {
                            error_code: topic_error,
                            partition: p.partition,
                            leader_epoch: -1,
                            end_offset: -1,
                        })
                        .collect(),
                })
                .collect();
            Screened::Handle(
                Request::OffsetForLeaderEpoch(r),
                non_empty(refused, |refused| {
                    amend(move |response| {
                        if let Response::OffsetForLeaderEpoch(o) = response {
                            o.topics.extend(refused);
                        }
                    })
                }),
            )
        }
        Request::Metadata(r) => screen_metadata(r, version, access),
        Request::CreateTopics(mut r) => {
            let cluster_create = access.allows_cluster(Create);
            let (allowed, denied) = split(r.topics, |t| {
                cluster_create || access.allows_topic(Create, &t.name)
            });
            r.topics = allowed;
            let refused: Vec<CreatableTopicResult> = denied
                .into_iter()
                .map(|t| CreatableTopicResult {
                    name: t.name,
                    error_code: topic_error,
                    error_message: Some(refusal_message()),
                    num_partitions: -1,
                    replication_factor: -1,
                    topic_config_error_code: topic_error,
                    ..Default::default()
                })
                .collect();
            Screened::Handle(
                Request::CreateTopics(r),
                non_empty(refused, |refused| {
                    amend(move |response| {
                        if let Response::CreateTopics(c) = response {
                            c.topics.extend(refused);
                        }
                    })
                }),
            )
        }
        Request::DeleteTopics(mut r) => {
            let image = access.image();
            let allowed_name = |name: &str| access.allows_topic(Delete, name);
            let (names, denied_names) = split(r.topic_names, |n| allowed_name(n));
            r.topic_names = names;
            let (states, denied_states) = split(r.topics, |t| {
                let name = match &t.name {
                    Some(name) => Some(name.clone()),
                    None => image.topic_by_id(t.topic_id.0).map(|t| t.name.clone()),
                };
                // An unknown id is the handler's to answer (UNKNOWN_TOPIC_ID).
                name.is_none_or(|name| allowed_name(&name))
            });
            r.topics = states;
            let refused: Vec<DeletableTopicResult> = denied_names
                .into_iter()
                .map(|name| DeletableTopicResult {
                    name: Some(name),
                    error_code: topic_error,
                    ..Default::default()
                })
                .chain(denied_states.into_iter().map(|t| DeletableTopicResult {
                    name: t.name,
                    topic_id: t.topic_id,
                    error_code: topic_error,
                    ..Default::default()
                }))
                .collect();
            Screened::Handle(
                Request::DeleteTopics(r),
                non_empty(refused, |refused| {
                    amend(move |response| {
                        if let Response::DeleteTopics(d) = response {
                            d.responses.extend(refused);
                        }
                    })
                }),
            )
        }
        Request::CreatePartitions(mut r) => {
            let (allowed, denied) = split(r.topics, |t| access.allows_topic(Alter, &t.name));
            r.topics = allowed;
            let refused: Vec<CreatePartitionsTopicResult> = denied
                .into_iter()
                .map(|t| CreatePartitionsTopicResult {
                    name: t.name,
                    error_code: topic_error,
                    error_message: Some(refusal_message()),
                })
                .collect();
            Screened::Handle(
                Request::CreatePartitions(r),
                non_empty(refused, |refused| {
                    amend(move |response| {
                        if let Response::CreatePartitions(c) = response {
                            c.results.extend(refused);
                        }
                    })
                }),
            )
        }
        Request::DeleteRecords(mut r) => {
            let (allowed, denied) = split(r.topics, |t| access.allows_topic(Delete, &t.name));
            r.topics = allowed;
            let refused: Vec<DeleteRecordsTopicResult> = denied
                .into_iter()
                .map(|t| DeleteRecordsTopicResult {
                    name: t.name,
                    partitions: t
                        .partitions
                        .iter()
                        .map(|p| DeleteRecordsPartitionResult {
                            partition_index: p.partition_index,
                            low_watermark: -1,
                            error_code: topic_error,
                        })
                        .collect(),
                })
                .collect();
            Screened::Handle(
                Request::DeleteRecords(r),
                non_empty(refused, |refused| {
                    amend(move |response| {
                        if let Response::DeleteRecords(d) = response {
                            d.topics.extend(refused);
                        }
                    })
                }),
            )
        }
        Request::DescribeConfigs(mut r) => {
            let (allowed, denied) = split_refused(r.resources, |c| {
                config_error(access, DescribeConfigs, c.resource_type, &c.resource_name)
            });
            r.resources = allowed;
            let refused: Vec<DescribeConfigsResult> = denied
                .into_iter()
                .map(|(c, error_code)| DescribeConfigsResult {
                    error_code,
                    error_message: Some(refusal_message()),
                    resource_type: c.resource_type,
                    resource_name: c.resource_name,
                    configs: Vec::new(),
                })
                .collect();
            Screened::Handle(
                Request::DescribeConfigs(r),
                non_empty(refused, |refused| {
                    amend(move |response| {
                        if let Response::DescribeConfigs(d) = response {
                            d.results.extend(refused);
                        }
                    })
                }),
            )
        }
        Request::AlterConfigs(mut r) => {
            let (allowed, denied) = split_refused(r.resources, |c| {
                config_error(access, AlterConfigs, c.resource_type, &c.resource_name)
            });
            r.resources = allowed;
            let refused: Vec<AlterConfigsResourceResponse> = denied
                .into_iter()
                .map(|(c, error_code)| AlterConfigsResourceResponse {
                    error_code,
                    error_message: Some(refusal_message()),
                    resource_type: c.resource_type,
                    resource_name: c.resource_name,
                })
                .collect();
            Screened::Handle(
                Request::AlterConfigs(r),
                non_empty(refused, |refused| {
                    amend(move |response| {
                        if let Response::AlterConfigs(a) = response {
                            a.responses.extend(refused);
                        }
                    })
                }),
            )
        }
        Request::IncrementalAlterConfigs(mut r) => {
            let (allowed, denied) = split_refused(r.resources, |c| {
                config_error(access, AlterConfigs, c.resource_type, &c.resource_name)
            });
            r.resources = allowed;
            let refused: Vec<IncrementalAlterConfigsResourceResponse> = denied
                .into_iter()
                .map(|(c, error_code)| IncrementalAlterConfigsResourceResponse {
                    error_code,
                    error_message: Some(refusal_message()),
                    resource_type: c.resource_type,
                    resource_name: c.resource_name,
                })
                .collect();
            Screened::Handle(
                Request::IncrementalAlterConfigs(r),
                non_empty(refused, |refused| {
                    amend(move |response| {
                        if let Response::IncrementalAlterConfigs(a) = response {
                            a.responses.extend(refused);
                        }
                    })
                }),
            )
        }
        Request::DescribeCluster(r) => {
            if !access.allows_cluster(Describe) {
                return Screened::Refuse(Response::DescribeCluster(
                    sluice_net::messages::describe_cluster_response::DescribeClusterResponse {
                        error_code: cluster_error,
                        error_message: Some(refusal_message()),
                        ..Default::default()
                    },
                ));
            }
            let include = r.include_cluster_authorized_operations;
            let access = access.clone();
            Screened::Handle(
                Request::DescribeCluster(r),
                include.then(|| -> Box<dyn FnOnce(&mut Response)> {
                    Box::new(move |response| {
                        if let Response::DescribeCluster(d) = response {
                            d.cluster_authorized_operations =
                                access.authorized_operations(AclResourceType::Cluster, "");
                        }
                    })
                }),
            )
        }
        Request::DescribeQuorum(r) => {
            cluster_checked(access, Describe, Request::DescribeQuorum(r), || {
                Response::DescribeQuorum(
                    sluice_net::messages::describe_quorum_response::DescribeQuorumResponse {
                        error_code: cluster_error,
                        error_message: Some(refusal_message()),
                        ..Default::default()
                    },
                )
            })
        }
        Request::DescribeLogDirs(r) => {
            cluster_checked(access, Describe, Request::DescribeLogDirs(r), || {
                Response::DescribeLogDirs(
                    sluice_net::messages::describe_log_dirs_response::DescribeLogDirsResponse {
                        error_code: cluster_error,
                        ..Default::default()
                    },
                )
            })
        }
        Request::ElectLeaders(r) => {
            if access.allows_cluster(Alter) {
                return Screened::Handle(Request::ElectLeaders(r), None);
            }
            use sluice_net::messages::elect_leaders_response::{
                ElectLeadersResponse, PartitionResult, ReplicaElectionResult,
            };
            let results = r
                .topic_partitions
                .unwrap_or_default()
                .into_iter()
                .map(|t| ReplicaElectionResult {
                    topic: t.topic,
                    partition_result: t
                        .partitions
                        .iter()
                        .map(|&partition_id| PartitionResult {
                            partition_id,
                            error_code: cluster_error,
                            error_message: Some(refusal_message()),
                        })
                        .collect(),
                })
                .collect();
            Screened::Refuse(Response::ElectLeaders(ElectLeadersResponse {
                error_code: cluster_error,
                replica_election_results: results,
                ..Default::default()
            }))
        }
        Request::AlterPartitionReassignments(r) => cluster_checked(
            access,
            Alter,
            Request::AlterPartitionReassignments(r),
            || {
                Response::AlterPartitionReassignments(
                    sluice_net::messages::alter_partition_reassignments_response::AlterPartitionReassignmentsResponse {
                        error_code: cluster_error,
                        error_message: Some(refusal_message()),
                        ..Default::default()
                    },
                )
            },
        ),
        Request::ListPartitionReassignments(r) => cluster_checked(
            access,
            Describe,
            Request::ListPartitionReassignments(r),
            || {
                Response::ListPartitionReassignments(
                    sluice_net::messages::list_partition_reassignments_response::ListPartitionReassignmentsResponse {
                        error_code: cluster_error,
                        error_message: Some(refusal_message()),
                        ..Default::default()
                    },
                )
            },
        ),
        Request::DescribeUserScramCredentials(r) => cluster_checked(
            access,
            Describe,
            Request::DescribeUserScramCredentials(r),
            || {
                Response::DescribeUserScramCredentials(
                    sluice_net::messages::describe_user_scram_credentials_response::DescribeUserScramCredentialsResponse {
                        error_code: cluster_error,
                        error_message: Some(refusal_message()),
                        ..Default::default()
                    },
                )
            },
        ),
        Request::AlterUserScramCredentials(r) => {
            if access.allows_cluster(Alter) {
                return Screened::Handle(Request::AlterUserScramCredentials(r), None);
            }
            use sluice_net::messages::alter_user_scram_credentials_response::{
                AlterUserScramCredentialsResponse, AlterUserScramCredentialsResult,
            };
            let mut users: Vec<String> = r
                .deletions
                .into_iter()
                .map(|d| d.name)
                .chain(r.upsertions.into_iter().map(|u| u.name))
                .collect();
            users.dedup();
            Screened::Refuse(Response::AlterUserScramCredentials(
                AlterUserScramCredentialsResponse {
                    results: users
                        .into_iter()
                        .map(|user| AlterUserScramCredentialsResult {
                            user,
                            error_code: cluster_error,
                            error_message: Some(refusal_message()),
                        })
                        .collect(),
                    ..Default::default()
                },
            ))
        }
        Request::DescribeClientQuotas(r) => cluster_checked(
            access,
            DescribeConfigs,
            Request::DescribeClientQuotas(r),
            || {
                Response::DescribeClientQuotas(
                    sluice_net::messages::describe_client_quotas_response::DescribeClientQuotasResponse {
                        error_code: cluster_error,
                        error_message: Some(refusal_message()),
                        entries: None,
                        ..Default::default()
                    },
                )
            },
        ),
        Request::AlterClientQuotas(r) => {
            if access.allows_cluster(AlterConfigs) {
                return Screened::Handle(Request::AlterClientQuotas(r), None);
            }
            use sluice_net::messages::alter_client_quotas_response::{
                AlterClientQuotasResponse, EntityData, EntryData,
            };
            Screened::Refuse(Response::AlterClientQuotas(AlterClientQuotasResponse {
                entries: r
                    .entries
                    .into_iter()
                    .map(|entry| EntryData {
                        error_code: cluster_error,
                        error_message: Some(refusal_message()),
                        entity: entry
                            .entity
                            .into_iter()
                            .map(|e| EntityData {
                                entity_type: e.entity_type,
                                entity_name: e.entity_name,
                            })
                            .collect(),
                    })
                    .collect(),
                ..Default::default()
            }))
        }
        Request::DescribeAcls(r) => {
            cluster_checked(access, Describe, Request::DescribeAcls(r), || {
                Response::DescribeAcls(DescribeAclsResponse {
                    error_code: cluster_error,
                    error_message: Some(refusal_message()),
                    ..Default::default()
                })
            })
        }
        Request::CreateAcls(r) => {
            if access.allows_cluster(Alter) {
                return Screened::Handle(Request::CreateAcls(r), None);
            }
            Screened::Refuse(Response::CreateAcls(CreateAclsResponse {
                results: r
                    .creations
                    .iter()
                    .map(|_| AclCreationResult {
                        error_code: cluster_error,
                        error_message: Some(refusal_message()),
                    })
                    .collect(),
                ..Default::default()
            }))
        }
        Request::DeleteAcls(r) => {
            if access.allows_cluster(Alter) {
                return Screened::Handle(Request::DeleteAcls(r), None);
            }
            Screened::Refuse(Response::DeleteAcls(DeleteAclsResponse {
                filter_results: r
                    .filters
                    .iter()
                    .map(|_| DeleteAclsFilterResult {
                        error_code: cluster_error,
                        error_message: Some(refusal_message()),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }))
        }
        Request::InitProducerId(r) => {
            let error = match &r.transactional_id {
                Some(id) if !access.allows_transactional_id(Write, id) => Some(txn_error),
                // An idempotent producer: IDEMPOTENT_WRITE on the cluster, or WRITE on some
                // topic (Kafka 3's rule, KIP-679).
                None if !access.allows_cluster(IdempotentWrite)
                    && !access.allows_any(Write, AclResourceType::Topic) =>
                {
                    Some(cluster_error)
                }
                _ => None,
            };
            match error {
                None => Screened::Handle(Request::InitProducerId(r), None),
                Some(error_code) => Screened::Refuse(Response::InitProducerId(
                    sluice_net::messages::init_producer_id_response::InitProducerIdResponse {
                        error_code,
                        producer_id: -1,
                        producer_epoch: -1,
                        ..Default::default()
                    },
                )),
            }
        }
        Request::AddPartitionsToTxn(r) => screen_add_partitions_to_txn(r, version, access),
        Request::AddOffsetsToTxn(r) => {
            let error = if !access.allows_transactional_id(Write, &r.transactional_id) {
                Some(txn_error)
            } else if !access.allows_group(Read, &r.group_id) {
                Some(group_error)
            } else {
                None
            };
            match error {
                None => Screened::Handle(Request::AddOffsetsToTxn(r), None),
                Some(error_code) => Screened::Refuse(Response::AddOffsetsToTxn(
                    sluice_net::messages::add_offsets_to_txn_response::AddOffsetsToTxnResponse {
                        error_code,
                        ..Default::default()
                    },
                )),
            }
        }
        Request::EndTxn(r) => {
            if access.allows_transactional_id(Write, &r.transactional_id) {
                return Screened::Handle(Request::EndTxn(r), None);
            }
            Screened::Refuse(Response::EndTxn(
                sluice_net::messages::end_txn_response::EndTxnResponse {
                    error_code: txn_error,
                    producer_id: -1,
                    producer_epoch: -1,
                    ..Default::default()
                },
            ))
        }
        Request::TxnOffsetCommit(mut r) => {
            let whole = if !access.allows_transactional_id(Write, &r.transactional_id) {
                Some(txn_error)
            } else if !access.allows_group(Read, &r.group_id) {
                Some(group_error)
            } else {
                None
            };
            let topic_result =
                |name: &str, partitions: Vec<i32>, code: i16| TxnOffsetCommitResponseTopic {
                    name: name.to_string(),
                    partitions: partitions
                        .into_iter()
                        .map(|partition_index| TxnOffsetCommitResponsePartition {
                            partition_index,
                            error_code: code,
                        })
                        .collect(),
                };
            if let Some(code) = whole {
                return Screened::Refuse(Response::TxnOffsetCommit(
                    sluice_net::messages::txn_offset_commit_response::TxnOffsetCommitResponse {
                        topics: r
                            .topics
                            .iter()
                            .map(|t| {
                                topic_result(
                                    &t.name,
                                    t.partitions.iter().map(|p| p.partition_index).collect(),
                                    code,
                                )
                            })
                            .collect(),
                        ..Default::default()
                    },
                ));
            }
            let (allowed, denied) = split(r.topics, |t| access.allows_topic(Read, &t.name));
            r.topics = allowed;
            let refused: Vec<TxnOffsetCommitResponseTopic> = denied
                .iter()
                .map(|t| {
                    topic_result(
                        &t.name,
                        t.partitions.iter().map(|p| p.partition_index).collect(),
                        topic_error,
                    )
                })
                .collect();
            Screened::Handle(
                Request::TxnOffsetCommit(r),
                non_empty(refused, |refused| {
                    amend(move |response| {
                        if let Response::TxnOffsetCommit(t) = response {
                            t.topics.extend(refused);
                        }
                    })
                }),
            )
        }
        Request::WriteTxnMarkers(r) => {
            if access.allows_cluster(ClusterAction) {
                return Screened::Handle(Request::WriteTxnMarkers(r), None);
            }
            use sluice_net::messages::write_txn_markers_response::{
                WritableTxnMarkerPartitionResult, WritableTxnMarkerResult,
                WritableTxnMarkerTopicResult, WriteTxnMarkersResponse,
            };
            Screened::Refuse(Response::WriteTxnMarkers(WriteTxnMarkersResponse {
                markers: r
                    .markers
                    .iter()
                    .map(|m| WritableTxnMarkerResult {
                        producer_id: m.producer_id,
                        topics: m
                            .topics
                            .iter()
                            .map(|t| WritableTxnMarkerTopicResult {
                                name: t.name.clone(),
                                partitions: t
                                    .partition_indexes
                                    .iter()
                                    .map(|&partition_index| WritableTxnMarkerPartitionResult {
                                        partition_index,
                                        error_code: cluster_error,
                                    })
                                    .collect(),
                            })
                            .collect(),
                    })
                    .collect(),
            }))
        }
        Request::DescribeProducers(mut r) => {
            let (allowed, denied) = split(r.topics, |t| access.allows_topic(Read, &t.name));
            r.topics = allowed;
            let refused: Vec<TopicResponse> = denied
                .into_iter()
                .map(|t| TopicResponse {
                    name: t.name,
                    partitions: t
                        .partition_indexes
                        .iter()
                        .map(|&partition_index| PartitionResponse {
                            partition_index,
                            error_code: topic_error,
                            error_message: Some(refusal_message()),
                            active_producers: Vec::new(),
                        })
                        .collect(),
                })
                .collect();
            Screened::Handle(
                Request::DescribeProducers(r),
                non_empty(refused, |refused| {
                    amend(move |response| {
                        if let Response::DescribeProducers(d) = response {
                            d.topics.extend(refused);
                        }
                    })
                }),
            )
        }
        Request::DescribeTransactions(mut r) => {
            let (allowed, denied) = split(r.transactional_ids, |id| {
                access.allows_transactional_id(Describe, id)
            });
            r.transactional_ids = allowed;
            let refused: Vec<TransactionState> = denied
                .into_iter()
                .map(|transactional_id| TransactionState {
                    error_code: txn_error,
                    transactional_id,
                    producer_id: -1,
                    producer_epoch: -1,
                    ..Default::default()
                })
                .collect();
            let access = access.clone();
            Screened::Handle(
                Request::DescribeTransactions(r),
                amend(move |response| {
                    if let Response::DescribeTransactions(d) = response {
                        // The partitions of a transaction show only topics the client may
                        // describe, as Kafka filters them.
                        for state in &mut d.transaction_states {
                            state
                                .topics
                                .retain(|t| access.allows_topic(Describe, &t.topic));
                        }
                        d.transaction_states.extend(refused);
                    }
                }),
            )
        }
        Request::ListTransactions(r) => {
            let access = access.clone();
            Screened::Handle(
                Request::ListTransactions(r),
                amend(move |response| {
                    if let Response::ListTransactions(l) = response {
                        l.transaction_states.retain(|t| {
                            access.allows_transactional_id(Describe, &t.transactional_id)
                        });
                    }
                }),
            )
        }
        Request::FindCoordinator(r) => screen_find_coordinator(r, version, access),
        Request::JoinGroup(r) => group_checked(
            access,
            Read,
            &r.group_id.clone(),
            Request::JoinGroup(r),
            || {
                Response::JoinGroup(
                    sluice_net::messages::join_group_response::JoinGroupResponse {
                        error_code: group_error,
                        generation_id: -1,
                        ..Default::default()
                    },
                )
            },
        ),
        Request::SyncGroup(r) => group_checked(
            access,
            Read,
            &r.group_id.clone(),
            Request::SyncGroup(r),
            || {
                Response::SyncGroup(
                    sluice_net::messages::sync_group_response::SyncGroupResponse {
                        error_code: group_error,
                        ..Default::default()
                    },
                )
            },
        ),
        Request::Heartbeat(r) => group_checked(
            access,
            Read,
            &r.group_id.clone(),
            Request::Heartbeat(r),
            || {
                Response::Heartbeat(
                    sluice_net::messages::heartbeat_response::HeartbeatResponse {
                        error_code: group_error,
                        ..Default::default()
                    },
                )
            },
        ),
        Request::LeaveGroup(r) => group_checked(
            access,
            Read,
            &r.group_id.clone(),
            Request::LeaveGroup(r),
            || {
                Response::LeaveGroup(
                    sluice_net::messages::leave_group_response::LeaveGroupResponse {
                        error_code: group_error,
                        ..Default::default()
                    },
                )
            },
        ),
        Request::ConsumerGroupHeartbeat(r) => {
            let error = if !access.allows_group(Read, &r.group_id) {
                Some(group_error)
            } else if r
                .subscribed_topic_names
                .iter()
                .flatten()
                .any(|t| !access.allows_topic(Describe, t))
            {
                // KIP-848: a member may subscribe only to topics it may describe.
                Some(topic_error)
            } else {
                None
            };
            match error {
                None => Screened::Handle(Request::ConsumerGroupHeartbeat(r), None),
                Some(error_code) => Screened::Refuse(Response::ConsumerGroupHeartbeat(
                    sluice_net::messages::consumer_group_heartbeat_response::ConsumerGroupHeartbeatResponse {
                        error_code,
                        error_message: Some(refusal_message()),
                        ..Default::default()
                    },
                )),
            }
        }
        Request::ConsumerGroupDescribe(mut r) => {
            use sluice_net::messages::consumer_group_describe_response::DescribedGroup as Described;
            let (allowed, denied) = split(r.group_ids, |g| access.allows_group(Describe, g));
            r.group_ids = allowed;
            let refused: Vec<Described> = denied
                .into_iter()
                .map(|group_id| Described {
                    error_code: group_error,
                    error_message: Some(refusal_message()),
                    group_id,
                    ..Default::default()
                })
                .collect();
            Screened::Handle(
                Request::ConsumerGroupDescribe(r),
                non_empty(refused, |refused| {
                    amend(move |response| {
                        if let Response::ConsumerGroupDescribe(d) = response {
                            d.groups.extend(refused);
                        }
                    })
                }),
            )
        }
        Request::OffsetCommit(mut r) => {
            let partitions_of =
                |t: &sluice_net::messages::offset_commit_request::OffsetCommitRequestTopic,
                 code: i16| OffsetCommitResponseTopic {
                    name: t.name.clone(),
                    partitions: t
                        .partitions
                        .iter()
                        .map(|p| OffsetCommitResponsePartition {
                            partition_index: p.partition_index,
                            error_code: code,
                        })
                        .collect(),
                };
            if !access.allows_group(Read, &r.group_id) {
                return Screened::Refuse(Response::OffsetCommit(
                    sluice_net::messages::offset_commit_response::OffsetCommitResponse {
                        topics: r
                            .topics
                            .iter()
                            .map(|t| partitions_of(t, group_error))
                            .collect(),
                        ..Default::default()
                    },
                ));
            }
            let (allowed, denied) = split(r.topics, |t| access.allows_topic(Read, &t.name));
            r.topics = allowed;
            let refused: Vec<OffsetCommitResponseTopic> = denied
                .iter()
                .map(|t| partitions_of(t, topic_error))
                .collect();
            Screened::Handle(
                Request::OffsetCommit(r),
                non_empty(refused, |refused| {
                    amend(move |response| {
                        if let Response::OffsetCommit(o) = response {
                            o.topics.extend(refused);
                        }
                    })
                }),
            )
        }
        Request::OffsetFetch(r) => screen_offset_fetch(r, version, access),
        Request::ListGroups(r) => {
            if access.allows_cluster(Describe) {
                return Screened::Handle(Request::ListGroups(r), None);
            }
            let access = access.clone();
            Screened::Handle(
                Request::ListGroups(r),
                amend(move |response| {
                    if let Response::ListGroups(l) = response {
                        l.groups
                            .retain(|g| access.allows_group(Describe, &g.group_id));
                    }
                }),
            )
        }
        Request::DescribeGroups(mut r) => {
            let (allowed, denied) = split(r.groups, |g| access.allows_group(Describe, g));
            r.groups = allowed;
            let refused: Vec<DescribedGroup> = denied
                .into_iter()
                .map(|group_id| DescribedGroup {
                    error_code: group_error,
                    group_id,
                    ..Default::default()
                })
                .collect();
            Screened::Handle(
                Request::DescribeGroups(r),
                non_empty(refused, |refused| {
                    amend(move |response| {
                        if let Response::DescribeGroups(d) = response {
                            d.groups.extend(refused);
                        }
                    })
                }),
            )
        }
        Request::DeleteGroups(mut r) => {
            let (allowed, denied) = split(r.groups_names, |g| access.allows_group(Delete, g));
            r.groups_names = allowed;
            let refused: Vec<DeletableGroupResult> = denied
                .into_iter()
                .map(|group_id| DeletableGroupResult {
                    group_id,
                    error_code: group_error,
                })
                .collect();
            Screened::Handle(
                Request::DeleteGroups(r),
                non_empty(refused, |refused| {
                    amend(move |response| {
                        if let Response::DeleteGroups(d) = response {
                            d.results.extend(refused);
                        }
                    })
                }),
            )
        }
        Request::OffsetDelete(mut r) => {
            if !access.allows_group(Delete, &r.group_id) {
                return Screened::Refuse(Response::OffsetDelete(
                    sluice_net::messages::offset_delete_response::OffsetDeleteResponse {
                        error_code: group_error,
                        ..Default::default()
                    },
                ));
            }
            let (allowed, denied) = split(r.topics, |t| access.allows_topic(Read, &t.name));
            r.topics = allowed;
            let refused: Vec<OffsetDeleteResponseTopic> = denied
                .into_iter()
                .map(|t| OffsetDeleteResponseTopic {
                    name: t.name,
                    partitions: t
                        .partitions
                        .iter()
                        .map(|p| OffsetDeleteResponsePartition {
                            partition_index: p.partition_index,
                            error_code: topic_error,
                        })
                        .collect(),
                })
                .collect();
            Screened::Handle(
                Request::OffsetDelete(r),
                non_empty(refused, |refused| {
                    amend(move |response| {
                        if let Response::OffsetDelete(o) = response {
                            o.topics.extend(refused);
                        }
                    })
                }),
            )
        }
        // ApiVersions and the SASL exchange need no authorization; neither do APIs this
        // broker does not serve (the connection refuses them before dispatch).
        other => Screened::Handle(other, None),
    }
}

fn screen_metadata(
    mut r: sluice_net::messages::metadata_request::MetadataRequest,
    version: i16,
    access: &Access,
) -> Screened {
    use AclOperation::*;
    let topic_error = ErrorCode::TopicAuthorizationFailed.code();
    let image = access.image();
    // v0 asks for every topic with an empty list; v1+ with a null one.
    let all_topics = match &r.topics {
        None => true,
        Some(topics) => version == 0 && topics.is_empty(),
    };
    let mut refused: Vec<MetadataResponseTopic> = Vec::new();
    if let Some(topics) = r.topics.take() {
        let auto_create = (version < 4 || r.allow_auto_topic_creation)
            && image.broker_config().auto_create_topics_enable;
        let cluster_create = access.allows_cluster(Create);
        let (allowed, denied) = split(topics, |t| {
            let name = match &t.name {
                Some(name) => name.clone(),
                None => match image.topic_by_id(t.topic_id.0) {
                    Some(topic) => topic.name.clone(),
                    None => return true, // the handler answers UNKNOWN_TOPIC_ID
                },
            };
            if !access.allows_topic(Describe, &name) {
                return false;
            }
            // A topic the request would create needs CREATE, on the cluster or the topic.
            image.topics.contains_key(&name)
                || !auto_create
                || cluster_create
                || access.allows_topic(Create, &name)
        });
        refused = denied
            .into_iter()
            .map(|t| MetadataResponseTopic {
                error_code: topic_error,
                name: t.name,
                topic_id: t.topic_id,
                ..Default::default()
            })
            .collect();
        r.topics = Some(allowed);
    }
    let include_topic_operations = version >= 8 && r.include_topic_authorized_operations;
    let include_cluster_operations =
        (8..=10).contains(&version) && r.include_cluster_authorized_operations;
    let access = access.clone();
    Screened::Handle(
        Request::Metadata(r),
        amend(move |response| {
            let Response::Metadata(m) = response else {
                return;
            };
            if all_topics {
                m.topics.retain(|t| {
                    t.name
                        .as_deref()
                        .is_none_or(|name| access.allows_topic(Describe, name))
                });
            }
            if include_topic_operations {
                for topic in &mut m.topics {
                    if let Some(name) = &topic.name
                        && topic.error_code == 0
                    {
                        topic.topic_authorized_operations =
                            access.authorized_operations(AclResourceType::Topic, name);
                    }
                }
            }
            if include_cluster_operations {
                m.cluster_authorized_operations =
                    access.authorized_operations(AclResourceType::Cluster, "");
            }
            m.topics.extend(refused);
        }),
    )
}

fn screen_add_partitions_to_txn(
    r: sluice_net::messages::add_partitions_to_txn_request::AddPartitionsToTxnRequest,
    version: i16,
    access: &Access,
) -> Screened {
    use sluice_net::messages::add_partitions_to_txn_response::AddPartitionsToTxnResponse;
    if version >= 4 {
        // v4+ batches transactions for brokers verifying them (KIP-890): a broker's request.
        if access.allows_cluster(AclOperation::ClusterAction) {
            return Screened::Handle(Request::AddPartitionsToTxn(r), None);
        }
        return Screened::Refuse(Response::AddPartitionsToTxn(AddPartitionsToTxnResponse {
            error_code: ErrorCode::ClusterAuthorizationFailed.code(),
            ..Default::default()
        }));
    }
    let whole =
        !access.allows_transactional_id(AclOperation::Write, &r.v3_and_below_transactional_id);
    let any_topic_denied = r
        .v3_and_below_topics
        .iter()
        .any(|t| !access.allows_topic(AclOperation::Write, &t.name));
    if !whole && !any_topic_denied {
        return Screened::Handle(Request::AddPartitionsToTxn(r), None);
    }
    // Kafka adds none of the partitions when any is refused: the rest are
    // OPERATION_NOT_ATTEMPTED.
    let results = r
        .v3_and_below_topics
        .iter()
        .map(|t| {
            let code = if whole {
                ErrorCode::TransactionalIdAuthorizationFailed
            } else if !access.allows_topic(AclOperation::Write, &t.name) {
                ErrorCode::TopicAuthorizationFailed
            } else {
                ErrorCode::OperationNotAttempted
            };
            AddPartitionsToTxnTopicResult {
                name: t.name.clone(),
                results_by_partition: t
                    .partitions
                    .iter()
                    .map(|&partition_index| AddPartitionsToTxnPartitionResult {
                        partition_index,
                        partition_error_code: code.code(),
                    })
                    .collect(),
            }
        })
        .collect();
    Screened::Refuse(Response::AddPartitionsToTxn(AddPartitionsToTxnResponse {
        results_by_topic_v3_and_below: results,
        ..Default::default()
    }))
}

fn screen_find_coordinator(
    mut r: sluice_net::messages::find_coordinator_request::FindCoordinatorRequest,
    version: i16,
    access: &Access,
) -> Screened {
    let key_type = r.key_type;
    // The error a refused key gets; None: the key is allowed (or its type is unknown, which
    // the handler refuses with INVALID_REQUEST).
    let refusal = |key: &str| -> Option<i16> {
        match key_type {
            COORDINATOR_KEY_GROUP if !access.allows_group(AclOperation::Describe, key) => {
                Some(ErrorCode::GroupAuthorizationFailed.code())
            }
            COORDINATOR_KEY_TRANSACTION
                if !access.allows_transactional_id(AclOperation::Describe, key) =>
            {
                Some(ErrorCode::TransactionalIdAuthorizationFailed.code())
            }
            _ => None,
        }
    };
    if version < 4 {
        return match refusal(&r.key) {
            None => Screened::Handle(Request::FindCoordinator(r), None),
            Some(error_code) => {
                Screened::Refuse(Response::FindCoordinator(FindCoordinatorResponse {
                    error_code,
                    error_message: Some(refusal_message()),
                    node_id: -1,
                    port: -1,
                    ..Default::default()
                }))
            }
        };
    }
    let (allowed, denied) = split_refused(r.coordinator_keys, |k| refusal(k));
    r.coordinator_keys = allowed;
    let refused: Vec<Coordinator> = denied
        .into_iter()
        .map(|(key, error_code)| Coordinator {
            error_code,
            error_message: Some(refusal_message()),
            key,
            node_id: -1,
            port: -1,
            ..Default::default()
        })
        .collect();
    if r.coordinator_keys.is_empty() {
        // Nothing left to look up: answer without the handler.
        return Screened::Refuse(Response::FindCoordinator(FindCoordinatorResponse {
            coordinators: refused,
            ..Default::default()
        }));
    }
    Screened::Handle(
        Request::FindCoordinator(r),
        non_empty(refused, |refused| {
            amend(move |response| {
                if let Response::FindCoordinator(f) = response {
                    f.coordinators.extend(refused);
                }
            })
        }),
    )
}

fn screen_offset_fetch(
    mut r: sluice_net::messages::offset_fetch_request::OffsetFetchRequest,
    version: i16,
    access: &Access,
) -> Screened {
    use sluice_net::messages::offset_fetch_response::OffsetFetchResponse;
    let group_error = ErrorCode::GroupAuthorizationFailed.code();
    if version < 8 {
        if !access.allows_group(AclOperation::Describe, &r.group_id) {
            return Screened::Refuse(Response::OffsetFetch(OffsetFetchResponse {
                error_code: group_error,
                ..Default::default()
            }));
        }
        // Named topics the client may not describe get TOPIC_AUTHORIZATION_FAILED; when it
        // asks for all, they are left out.
        let named = r.topics.is_some();
        let access = access.clone();
        return Screened::Handle(
            Request::OffsetFetch(r),
            amend(move |response| {
                if let Response::OffsetFetch(o) = response {
                    if named {
                        for topic in &mut o.topics {
                            if !access.allows_topic(AclOperation::Describe, &topic.name) {
                                for p in &mut topic.partitions {
                                    p.committed_offset = -1;
                                    p.metadata = None;
                                    p.error_code = ErrorCode::TopicAuthorizationFailed.code();
                                }
                            }
                        }
                    } else {
                        o.topics
                            .retain(|t| access.allows_topic(AclOperation::Describe, &t.name));
                    }
                }
            }),
        );
    }
    let (allowed, denied) = split(r.groups, |g| {
        access.allows_group(AclOperation::Describe, &g.group_id)
    });
    let named: HashSet<String> = allowed
        .iter()
        .filter(|g| g.topics.is_some())
        .map(|g| g.group_id.clone())
        .collect();
    r.groups = allowed;
    let refused: Vec<OffsetFetchResponseGroup> = denied
        .into_iter()
        .map(|g| OffsetFetchResponseGroup {
            group_id: g.group_id,
            error_code: group_error,
            ..Default::default()
        })
        .collect();
    let access = access.clone();
    Screened::Handle(
        Request::OffsetFetch(r),
        amend(move |response| {
            let Response::OffsetFetch(o) = response else {
                return;
            };
            for group in &mut o.groups {
                if named.contains(&group.group_id) {
                    for topic in &mut group.topics {
                        if !access.allows_topic(AclOperation::Describe, &topic.name) {
                            for p in &mut topic.partitions {
                                p.committed_offset = -1;
                                p.metadata = None;
                                p.error_code = ErrorCode::TopicAuthorizationFailed.code();
                            }
                        }
                    }
                } else {
                    group
                        .topics
                        .retain(|t| access.allows_topic(AclOperation::Describe, &t.name));
                }
            }
            o.groups.extend(refused);
        }),
    )
}

/// Splits `items` into those `allowed` keeps and the rest, each in order.
fn split<T>(items: Vec<T>, allowed: impl Fn(&T) -> bool) -> (Vec<T>, Vec<T>) {
    items.into_iter().partition(|item| allowed(item))
}

/// Splits `items` into those `refusal` lets through (None) and the rest, each with the error
/// code `refusal` gave it; both in order.
fn split_refused<T>(items: Vec<T>, refusal: impl Fn(&T) -> Option<i16>) -> (Vec<T>, Vec<(T, i16)>) {
    let mut allowed = Vec::with_capacity(items.len());
    let mut refused = Vec::new();
    for item in items {
        match refusal(&item) {
            None => allowed.push(item),
            Some(error_code) => refused.push((item, error_code)),
        }
    }
    (allowed, refused)
}

/// `make(refused)`, or nothing to amend when nothing was refused.
fn non_empty<T>(refused: Vec<T>, make: impl FnOnce(Vec<T>) -> Amend) -> Amend {
    if refused.is_empty() {
        None
    } else {
        make(refused)
    }
}

/// The request as it is when the client may do `operation` on the cluster, else `refusal`.
fn cluster_checked(
    access: &Access,
    operation: AclOperation,
    request: Request,
    refusal: impl FnOnce() -> Response,
) -> Screened {
    if access.allows_cluster(operation) {
        Screened::Handle(request, None)
    } else {
        Screened::Refuse(refusal())
    }
}

/// The request as it is when the client may do `operation` on `group`, else `refusal`.
fn group_checked(
    access: &Access,
    operation: AclOperation,
    group: &str,
    request: Request,
    refusal: impl FnOnce() -> Response,
) -> Screened {
    if access.allows_group(operation, group) {
        Screened::Handle(request, None)
    } else {
        Screened::Refuse(refusal())
    }
}

/// The error a config resource gets when the client may not do `operation` on it: topics
/// are authorized on the topic, broker and broker-logger configs on the cluster.
fn config_error(
    access: &Access,
    operation: AclOperation,
    resource_type: i8,
    name: &str,
) -> Option<i16> {
    match resource_type {
        CONFIG_RESOURCE_TOPIC if !access.allows_topic(operation, name) => {
            Some(ErrorCode::TopicAuthorizationFailed.code())
        }
        CONFIG_RESOURCE_BROKER | CONFIG_RESOURCE_BROKER_LOGGER
            if !access.allows_cluster(operation) =>
        {
            Some(ErrorCode::ClusterAuthorizationFailed.code())
        }
        _ => None,
    }
}

fn produce_topic(
    name: &str,
    partitions: impl Iterator<Item = i32>,
    error_code: i16,
) -> TopicProduceResponse {
    TopicProduceResponse {
        name: name.to_string(),
        partition_responses: partitions
            .map(|index| PartitionProduceResponse {
                index,
                error_code,
                base_offset: -1,
                ..Default::default()
            })
            .collect(),
    }
}

fn fetch_partition_refused(partition_index: i32) -> PartitionData {
    PartitionData {
        partition_index,
        error_code: ErrorCode::TopicAuthorizationFailed.code(),
        high_watermark: -1,
        last_stable_offset: -1,
        log_start_offset: -1,
        // librdkafka cannot parse a null record set in a partition's answer.
        records: Some(bytes::Bytes::new()),
        ..Default::default()
    }
}

/// Kafka's message for a refused resource names nothing the client could probe with.
fn refusal_message() -> String {
    "Authorization failed.".to_string()
}
