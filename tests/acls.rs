//! ACLs (issue 25): every API the broker serves, asked by a principal the ACLs allow, one
//! they deny, and one they do not name, against Kafka's documented operations and error
//! codes; Metadata hides topics a principal may not describe; super users and
//! `allow.everyone.if.no.acl.found` as Kafka has them; the ACL APIs themselves.
//!
//! Clients authenticate with SASL/PLAIN on a SASL_PLAINTEXT listener; the test administers
//! through a PLAINTEXT listener whose principal, User:ANONYMOUS, is a super user.

mod common;

use std::path::Path;

use bytes::Bytes;
use common::BrokerProcess;
use common::raw::{RawClient, producer_batch};
use sluice_net::messages::*;
use sluice_net::{Request, Response, Uuid};

const TOPIC: &str = "matrix";
const GROUP: &str = "matrix-group";
const TXN: &str = "matrix-txn";
const PASSWORD: &str = "matrix-secret";

// Kafka's resource types, operations and permissions.
const TOPIC_RESOURCE: i8 = 2;
const GROUP_RESOURCE: i8 = 3;
const CLUSTER_RESOURCE: i8 = 4;
const TXN_RESOURCE: i8 = 5;
const READ: i8 = 3;
const WRITE: i8 = 4;
const CREATE: i8 = 5;
const DELETE: i8 = 6;
const ALTER: i8 = 7;
const DESCRIBE: i8 = 8;
const CLUSTER_ACTION: i8 = 9;
const DESCRIBE_CONFIGS: i8 = 10;
const ALTER_CONFIGS: i8 = 11;
const IDEMPOTENT_WRITE: i8 = 12;
const ALL: i8 = 2;
const DENY: i8 = 2;
const ALLOW: i8 = 3;
const LITERAL: i8 = 3;

// Kafka's error codes for a refusal.
const TOPIC_DENIED: i16 = 29;
const GROUP_DENIED: i16 = 30;
const CLUSTER_DENIED: i16 = 31;
const TXN_DENIED: i16 = 53;
const SECURITY_DISABLED: i16 = 54;
const AUTHORIZATION_CODES: [i16; 4] = [TOPIC_DENIED, GROUP_DENIED, CLUSTER_DENIED, TXN_DENIED];

/// A broker with the ACL authorizer, a PLAINTEXT listener for the test's administration
/// (User:ANONYMOUS is a super user) and a SASL_PLAINTEXT one with PLAIN for the clients.
fn authorizing_broker(data: &Path, extra: &[&str]) -> BrokerProcess {
    let mut args = vec![
        "--listeners",
        "PLAINTEXT://127.0.0.1:0,SASL_PLAINTEXT://127.0.0.1:0",
        "--sasl-mechanisms",
        "PLAIN",
        "--authorizer",
        "acl",
        "--super-users",
        "User:ANONYMOUS;User:root",
    ];
    args.extend_from_slice(extra);
    let broker = BrokerProcess::start(data, &args);
    for user in ["alice", "bob", "carol"] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["user", "set", user, "--mechanism", "SCRAM-SHA-256"])
            .args(["--password", PASSWORD])
            .env("SLUICE_BROKERS", &broker.bootstrap)
            .output()
            .expect("sluice user set runs");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    broker
}

/// A connection to the SASL listener, authenticated as `user` with SASL/PLAIN.
fn login(broker: &BrokerProcess, user: &str) -> RawClient {
    let mut client = RawClient::connect_to(&broker.listeners["SASL_PLAINTEXT"]);
    let Response::SaslHandshake(handshake) = client.call(
        1,
        Request::SaslHandshake(sasl_handshake_request::SaslHandshakeRequest {
            mechanism: "PLAIN".into(),
        }),
    ) else {
        panic!("a SaslHandshake response");
    };
    assert_eq!(handshake.error_code, 0);
    let token = format!("\0{user}\0{PASSWORD}");
    let Response::SaslAuthenticate(authenticated) = client.call(
        2,
        Request::SaslAuthenticate(sasl_authenticate_request::SaslAuthenticateRequest {
            auth_bytes: Bytes::from(token),
        }),
    ) else {
        panic!("a SaslAuthenticate response");
    };
    assert_eq!(authenticated.error_code, 0, "{user} authenticates");
    client
}

fn acl(
    resource_type: i8,
    name: &str,
    principal: &str,
    operation: i8,
    permission: i8,
) -> create_acls_request::AclCreation {
    create_acls_request::AclCreation {
        resource_type,
        resource_name: name.into(),
        resource_pattern_type: LITERAL,
        principal: principal.into(),
        host: "*".into(),
        operation,
        permission_type: permission,
    }
}

fn create_acls(admin: &mut RawClient, creations: Vec<create_acls_request::AclCreation>) {
    let Response::CreateAcls(created) = admin.call(
        3,
        Request::CreateAcls(create_acls_request::CreateAclsRequest { creations }),
    ) else {
        panic!("a CreateAcls response");
    };
    for result in &created.results {
        assert_eq!(result.error_code, 0, "{result:?}");
    }
}

/// Deletes every ACL; returns how many there were.
fn delete_all_acls(admin: &mut RawClient) -> usize {
    let Response::DeleteAcls(deleted) = admin.call(
        3,
        Request::DeleteAcls(delete_acls_request::DeleteAclsRequest {
            filters: vec![delete_acls_request::DeleteAclsFilter {
                resource_type_filter: 1,
                resource_name_filter: None,
                pattern_type_filter: 1,
                principal_filter: None,
                host_filter: None,
                operation: 1,
                permission_type: 1,
            }],
        }),
    ) else {
        panic!("a DeleteAcls response");
    };
    assert_eq!(deleted.filter_results[0].error_code, 0);
    deleted.filter_results[0].matching_acls.len()
}

/// Every error code a response carries, at any depth (its Debug form names each field).
fn error_codes(response: &Response) -> Vec<i16> {
    let text = format!("{response:?}");
    text.match_indices("error_code: ")
        .filter_map(|(at, key)| {
            let rest = &text[at + key.len()..];
            let end = rest
                .find(|c: char| c != '-' && !c.is_ascii_digit())
                .unwrap_or(rest.len());
            rest[..end].parse().ok()
        })
        .collect()
}

/// One API of the matrix: the ACLs a principal needs for it (the first is the one Kafka
/// checks first), the code a refusal carries, and the request.
struct Row {
    name: &'static str,
    needs: Vec<(i8, &'static str, i8)>,
    refused_with: i16,
    version: i16,
    request: Box<dyn Fn() -> Request>,
}

fn row(
    name: &'static str,
    needs: Vec<(i8, &'static str, i8)>,
    refused_with: i16,
    version: i16,
    request: impl Fn() -> Request + 'static,
) -> Row {
    Row {
        name,
        needs,
        refused_with,
        version,
        request: Box::new(request),
    }
}

fn rows(topic_id: Uuid) -> Vec<Row> {
    let topic = |op| (TOPIC_RESOURCE, TOPIC, op);
    let group = |op| (GROUP_RESOURCE, GROUP, op);
    let txn = |op| (TXN_RESOURCE, TXN, op);
    let cluster = |op| (CLUSTER_RESOURCE, "kafka-cluster", op);
    vec![
        row("Produce", vec![topic(WRITE)], TOPIC_DENIED, 9, || {
            Request::Produce(produce_request::ProduceRequest {
                acks: -1,
                timeout_ms: 10_000,
                topic_data: vec![produce_request::TopicProduceData {
                    name: TOPIC.into(),
                    partition_data: vec![produce_request::PartitionProduceData {
                        index: 0,
                        records: Some(producer_batch((-1, -1), -1, false, "v")),
                    }],
                }],
                ..Default::default()
            })
        }),
        row("Fetch", vec![topic(READ)], TOPIC_DENIED, 11, || {
            Request::Fetch(fetch_request::FetchRequest {
                max_wait_ms: 0,
                topics: vec![fetch_request::FetchTopic {
                    topic: TOPIC.into(),
                    partitions: vec![fetch_request::FetchPartition {
                        partition_max_bytes: 1 << 20,
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            })
        }),
        row(
            "Fetch by topic id",
            vec![topic(READ)],
            TOPIC_DENIED,
            13,
            move || {
                Request::Fetch(fetch_request::FetchRequest {
                    max_wait_ms: 0,
                    topics: vec![fetch_request::FetchTopic {
                        topic_id,
                        partitions: vec![fetch_request::FetchPartition {
                            partition_max_bytes: 1 << 20,
                            ..Default::default()
                        }],
                        ..Default::default()
                    }],
                    ..Default::default()
                })
            },
        ),
        row(
            "ListOffsets",
            vec![topic(DESCRIBE)],
            TOPIC_DENIED,
            7,
            || {
                Request::ListOffsets(list_offsets_request::ListOffsetsRequest {
                    replica_id: -1,
                    topics: vec![list_offsets_request::ListOffsetsTopic {
                        name: TOPIC.into(),
                        partitions: vec![list_offsets_request::ListOffsetsPartition {
                            timestamp: -1,
                            ..Default::default()
                        }],
                    }],
                    ..Default::default()
                })
            },
        ),
        row(
            "OffsetForLeaderEpoch",
            vec![topic(DESCRIBE)],
            TOPIC_DENIED,
            4,
            || {
                Request::OffsetForLeaderEpoch(
                    offset_for_leader_epoch_request::OffsetForLeaderEpochRequest {
                        replica_id: -1,
                        topics: vec![offset_for_leader_epoch_request::OffsetForLeaderTopic {
                            topic: TOPIC.into(),
                            partitions: vec![
                                offset_for_leader_epoch_request::OffsetForLeaderPartition {
                                    partition: 0,
                                    current_leader_epoch: -1,
                                    leader_epoch: 0,
                                },
                            ],
                        }],
                    },
                )
            },
        ),
        row("Metadata", vec![topic(DESCRIBE)], TOPIC_DENIED, 12, || {
            Request::Metadata(metadata_request::MetadataRequest {
                topics: Some(vec![metadata_request::MetadataRequestTopic {
                    name: Some(TOPIC.into()),
                    topic_id: Uuid::ZERO,
                }]),
                allow_auto_topic_creation: false,
                ..Default::default()
            })
        }),
        row(
            "CreateTopics",
            vec![(TOPIC_RESOURCE, "matrix-new", CREATE)],
            TOPIC_DENIED,
            7,
            || {
                Request::CreateTopics(create_topics_request::CreateTopicsRequest {
                    topics: vec![create_topics_request::CreatableTopic {
                        name: "matrix-new".into(),
                        num_partitions: 1,
                        replication_factor: 1,
                        ..Default::default()
                    }],
                    timeout_ms: 10_000,
                    validate_only: true,
                })
            },
        ),
        row(
            "CreatePartitions",
            vec![topic(ALTER)],
            TOPIC_DENIED,
            3,
            || {
                Request::CreatePartitions(create_partitions_request::CreatePartitionsRequest {
                    topics: vec![create_partitions_request::CreatePartitionsTopic {
                        name: TOPIC.into(),
                        count: 2,
                        assignments: None,
                    }],
                    timeout_ms: 10_000,
                    validate_only: true,
                })
            },
        ),
        row(
            "DeleteRecords",
            vec![topic(DELETE)],
            TOPIC_DENIED,
            2,
            || {
                Request::DeleteRecords(delete_records_request::DeleteRecordsRequest {
                    topics: vec![delete_records_request::DeleteRecordsTopic {
                        name: TOPIC.into(),
                        partitions: vec![delete_records_request::DeleteRecordsPartition {
                            partition_index: 0,
                            offset: 0,
                        }],
                    }],
                    timeout_ms: 10_000,
                })
            },
        ),
        row(
            "DescribeConfigs (topic)",
            vec![topic(DESCRIBE_CONFIGS)],
            TOPIC_DENIED,
            4,
            || {
                Request::DescribeConfigs(describe_configs_request::DescribeConfigsRequest {
                    resources: vec![describe_configs_request::DescribeConfigsResource {
                        resource_type: 2,
                        resource_name: TOPIC.into(),
                        configuration_keys: None,
                    }],
                    ..Default::default()
                })
            },
        ),
        row(
            "DescribeConfigs (broker)",
            vec![cluster(DESCRIBE_CONFIGS)],
            CLUSTER_DENIED,
            4,
            || {
                Request::DescribeConfigs(describe_configs_request::DescribeConfigsRequest {
                    resources: vec![describe_configs_request::DescribeConfigsResource {
                        resource_type: 4,
                        resource_name: String::new(),
                        configuration_keys: None,
                    }],
                    ..Default::default()
                })
            },
        ),
        row(
            "AlterConfigs (topic)",
            vec![topic(ALTER_CONFIGS)],
            TOPIC_DENIED,
            2,
            || {
                Request::AlterConfigs(alter_configs_request::AlterConfigsRequest {
                    resources: vec![alter_configs_request::AlterConfigsResource {
                        resource_type: 2,
                        resource_name: TOPIC.into(),
                        configs: vec![alter_configs_request::AlterableConfig {
                            name: "retention.ms".into(),
                            value: Some("3600000".into()),
                        }],
                    }],
                    validate_only: true,
                })
            },
        ),
        row(
            "IncrementalAlterConfigs (broker)",
            vec![cluster(ALTER_CONFIGS)],
            CLUSTER_DENIED,
            1,
            || {
                Request::IncrementalAlterConfigs(
                    incremental_alter_configs_request::IncrementalAlterConfigsRequest {
                        resources: vec![incremental_alter_configs_request::AlterConfigsResource {
                            resource_type: 4,
                            resource_name: String::new(),
                            configs: vec![incremental_alter_configs_request::AlterableConfig {
                                name: "log.retention.ms".into(),
                                config_operation: 0,
                                value: Some("3600000".into()),
                            }],
                        }],
                        validate_only: true,
                    },
                )
            },
        ),
        row(
            "DescribeCluster",
            vec![cluster(DESCRIBE)],
            CLUSTER_DENIED,
            1,
            || Request::DescribeCluster(describe_cluster_request::DescribeClusterRequest::default()),
        ),
        row(
            "DescribeLogDirs",
            vec![cluster(DESCRIBE)],
            CLUSTER_DENIED,
            4,
            || {
                Request::DescribeLogDirs(describe_log_dirs_request::DescribeLogDirsRequest {
                    topics: None,
                })
            },
        ),
        row(
            "DescribeQuorum",
            vec![cluster(DESCRIBE)],
            CLUSTER_DENIED,
            2,
            || Request::DescribeQuorum(describe_quorum_request::DescribeQuorumRequest::default()),
        ),
        row(
            "ElectLeaders",
            vec![cluster(ALTER)],
            CLUSTER_DENIED,
            2,
            || {
                Request::ElectLeaders(elect_leaders_request::ElectLeadersRequest {
                    topic_partitions: Some(vec![elect_leaders_request::TopicPartitions {
                        topic: TOPIC.into(),
                        partitions: vec![0],
                    }]),
                    ..Default::default()
                })
            },
        ),
        row(
            "AlterPartitionReassignments",
            vec![cluster(ALTER)],
            CLUSTER_DENIED,
            0,
            || {
                Request::AlterPartitionReassignments(
                alter_partition_reassignments_request::AlterPartitionReassignmentsRequest::default(),
            )
            },
        ),
        row(
            "ListPartitionReassignments",
            vec![cluster(DESCRIBE)],
            CLUSTER_DENIED,
            0,
            || {
                Request::ListPartitionReassignments(
                list_partition_reassignments_request::ListPartitionReassignmentsRequest::default(),
            )
            },
        ),
        row(
            "DescribeUserScramCredentials",
            vec![cluster(DESCRIBE)],
            CLUSTER_DENIED,
            0,
            || {
                Request::DescribeUserScramCredentials(
                describe_user_scram_credentials_request::DescribeUserScramCredentialsRequest::default(),
            )
            },
        ),
        row(
            "AlterUserScramCredentials",
            vec![cluster(ALTER)],
            CLUSTER_DENIED,
            0,
            || {
                Request::AlterUserScramCredentials(
                    alter_user_scram_credentials_request::AlterUserScramCredentialsRequest {
                        deletions: vec![
                            alter_user_scram_credentials_request::ScramCredentialDeletion {
                                name: "nobody".into(),
                                mechanism: 1,
                            },
                        ],
                        upsertions: Vec::new(),
                    },
                )
            },
        ),
        row(
            "DescribeClientQuotas",
            vec![cluster(DESCRIBE_CONFIGS)],
            CLUSTER_DENIED,
            1,
            || {
                Request::DescribeClientQuotas(
                    describe_client_quotas_request::DescribeClientQuotasRequest {
                        components: Vec::new(),
                        strict: false,
                    },
                )
            },
        ),
        row(
            "AlterClientQuotas",
            vec![cluster(ALTER_CONFIGS)],
            CLUSTER_DENIED,
            1,
            || {
                use alter_client_quotas_request::{
                    AlterClientQuotasRequest, EntityData, EntryData, OpData,
                };
                Request::AlterClientQuotas(AlterClientQuotasRequest {
                    entries: vec![EntryData {
                        entity: vec![EntityData {
                            entity_type: "client-id".into(),
                            entity_name: Some("matrix-client".into()),
                        }],
                        ops: vec![OpData {
                            key: "producer_byte_rate".into(),
                            value: 1_048_576.0,
                            remove: false,
                        }],
                    }],
                    validate_only: true,
                })
            },
        ),
        row(
            "DescribeAcls",
            vec![cluster(DESCRIBE)],
            CLUSTER_DENIED,
            3,
            || {
                Request::DescribeAcls(describe_acls_request::DescribeAclsRequest {
                    resource_type_filter: 1,
                    resource_name_filter: None,
                    pattern_type_filter: 1,
                    principal_filter: None,
                    host_filter: None,
                    operation: 1,
                    permission_type: 1,
                })
            },
        ),
        row(
            "CreateAcls",
            vec![cluster(ALTER)],
            CLUSTER_DENIED,
            3,
            || {
                Request::CreateAcls(create_acls_request::CreateAclsRequest {
                    creations: vec![acl(TOPIC_RESOURCE, "elsewhere", "User:nobody", READ, ALLOW)],
                })
            },
        ),
        row(
            "DeleteAcls",
            vec![cluster(ALTER)],
            CLUSTER_DENIED,
            3,
            || {
                Request::DeleteAcls(delete_acls_request::DeleteAclsRequest {
                    filters: vec![delete_acls_request::DeleteAclsFilter {
                        resource_type_filter: 1,
                        resource_name_filter: None,
                        pattern_type_filter: 1,
                        principal_filter: Some("User:nobody".into()),
                        host_filter: None,
                        operation: 1,
                        permission_type: 1,
                    }],
                })
            },
        ),
        row(
            "WriteTxnMarkers",
            vec![cluster(CLUSTER_ACTION)],
            CLUSTER_DENIED,
            1,
            || {
                Request::WriteTxnMarkers(write_txn_markers_request::WriteTxnMarkersRequest {
                    markers: vec![write_txn_markers_request::WritableTxnMarker {
                        producer_id: 424242,
                        producer_epoch: 0,
                        transaction_result: false,
                        topics: vec![write_txn_markers_request::WritableTxnMarkerTopic {
                            name: "matrix-unknown".into(),
                            partition_indexes: vec![0],
                        }],
                        coordinator_epoch: 0,
                    }],
                })
            },
        ),
        row(
            "InitProducerId (idempotent)",
            vec![cluster(IDEMPOTENT_WRITE)],
            CLUSTER_DENIED,
            4,
            || {
                Request::InitProducerId(init_producer_id_request::InitProducerIdRequest {
                    transactional_id: None,
                    transaction_timeout_ms: 60_000,
                    producer_id: -1,
                    producer_epoch: -1,
                })
            },
        ),
        row(
            "InitProducerId (transactional)",
            vec![txn(WRITE)],
            TXN_DENIED,
            4,
            || {
                Request::InitProducerId(init_producer_id_request::InitProducerIdRequest {
                    transactional_id: Some(TXN.into()),
                    transaction_timeout_ms: 60_000,
                    producer_id: -1,
                    producer_epoch: -1,
                })
            },
        ),
        row(
            "FindCoordinator (group)",
            vec![group(DESCRIBE)],
            GROUP_DENIED,
            4,
            || {
                Request::FindCoordinator(find_coordinator_request::FindCoordinatorRequest {
                    key_type: 0,
                    coordinator_keys: vec![GROUP.into()],
                    ..Default::default()
                })
            },
        ),
        row(
            "FindCoordinator v3 (transaction)",
            vec![txn(DESCRIBE)],
            TXN_DENIED,
            3,
            || {
                Request::FindCoordinator(find_coordinator_request::FindCoordinatorRequest {
                    key: TXN.into(),
                    key_type: 1,
                    ..Default::default()
                })
            },
        ),
        row("JoinGroup", vec![group(READ)], GROUP_DENIED, 9, || {
            Request::JoinGroup(join_group_request::JoinGroupRequest {
                group_id: GROUP.into(),
                session_timeout_ms: 10_000,
                rebalance_timeout_ms: 10_000,
                protocol_type: "consumer".into(),
                protocols: vec![join_group_request::JoinGroupRequestProtocol {
                    name: "range".into(),
                    metadata: Bytes::new(),
                }],
                ..Default::default()
            })
        }),
        row("SyncGroup", vec![group(READ)], GROUP_DENIED, 5, || {
            Request::SyncGroup(sync_group_request::SyncGroupRequest {
                group_id: GROUP.into(),
                generation_id: 1,
                member_id: "m".into(),
                ..Default::default()
            })
        }),
        row("Heartbeat", vec![group(READ)], GROUP_DENIED, 4, || {
            Request::Heartbeat(heartbeat_request::HeartbeatRequest {
                group_id: GROUP.into(),
                generation_id: 1,
                member_id: "m".into(),
                ..Default::default()
            })
        }),
        row("LeaveGroup", vec![group(READ)], GROUP_DENIED, 5, || {
            Request::LeaveGroup(leave_group_request::LeaveGroupRequest {
                group_id: GROUP.into(),
                members: vec![leave_group_request::MemberIdentity {
                    member_id: "m".into(),
                    ..Default::default()
                }],
                ..Default::default()
            })
        }),
        row(
            "OffsetCommit",
            vec![group(READ), topic(READ)],
            GROUP_DENIED,
            8,
            || {
                Request::OffsetCommit(offset_commit_request::OffsetCommitRequest {
                    group_id: GROUP.into(),
                    generation_id_or_member_epoch: -1,
                    topics: vec![offset_commit_request::OffsetCommitRequestTopic {
                        name: TOPIC.into(),
                        partitions: vec![offset_commit_request::OffsetCommitRequestPartition {
                            partition_index: 0,
                            committed_offset: 0,
                            ..Default::default()
                        }],
                    }],
                    ..Default::default()
                })
            },
        ),
        row(
            "OffsetFetch",
            vec![group(DESCRIBE)],
            GROUP_DENIED,
            8,
            || {
                Request::OffsetFetch(offset_fetch_request::OffsetFetchRequest {
                    groups: vec![offset_fetch_request::OffsetFetchRequestGroup {
                        group_id: GROUP.into(),
                        topics: None,
                        ..Default::default()
                    }],
                    ..Default::default()
                })
            },
        ),
        row(
            "OffsetFetch v7",
            vec![group(DESCRIBE)],
            GROUP_DENIED,
            7,
            || {
                Request::OffsetFetch(offset_fetch_request::OffsetFetchRequest {
                    group_id: GROUP.into(),
                    topics: None,
                    ..Default::default()
                })
            },
        ),
        row(
            "DescribeGroups",
            vec![group(DESCRIBE)],
            GROUP_DENIED,
            5,
            || {
                Request::DescribeGroups(describe_groups_request::DescribeGroupsRequest {
                    groups: vec![GROUP.into()],
                    include_authorized_operations: false,
                })
            },
        ),
        row(
            "ConsumerGroupHeartbeat",
            vec![group(READ)],
            GROUP_DENIED,
            0,
            || {
                Request::ConsumerGroupHeartbeat(
                    consumer_group_heartbeat_request::ConsumerGroupHeartbeatRequest {
                        group_id: GROUP.into(),
                        member_id: "m".into(),
                        member_epoch: -1,
                        ..Default::default()
                    },
                )
            },
        ),
        row(
            "ConsumerGroupDescribe",
            vec![group(DESCRIBE)],
            GROUP_DENIED,
            0,
            || {
                Request::ConsumerGroupDescribe(
                    consumer_group_describe_request::ConsumerGroupDescribeRequest {
                        group_ids: vec![GROUP.into()],
                        include_authorized_operations: false,
                    },
                )
            },
        ),
        row(
            "OffsetDelete",
            vec![group(DELETE), topic(READ)],
            GROUP_DENIED,
            0,
            || {
                Request::OffsetDelete(offset_delete_request::OffsetDeleteRequest {
                    group_id: GROUP.into(),
                    topics: vec![offset_delete_request::OffsetDeleteRequestTopic {
                        name: TOPIC.into(),
                        partitions: vec![offset_delete_request::OffsetDeleteRequestPartition {
                            partition_index: 0,
                        }],
                    }],
                })
            },
        ),
        row("DeleteGroups", vec![group(DELETE)], GROUP_DENIED, 2, || {
            Request::DeleteGroups(delete_groups_request::DeleteGroupsRequest {
                groups_names: vec![GROUP.into()],
            })
        }),
        row(
            "AddPartitionsToTxn",
            vec![txn(WRITE), topic(WRITE)],
            TXN_DENIED,
            3,
            || {
                Request::AddPartitionsToTxn(
                    add_partitions_to_txn_request::AddPartitionsToTxnRequest {
                        v3_and_below_transactional_id: TXN.into(),
                        v3_and_below_producer_id: 1,
                        v3_and_below_producer_epoch: 0,
                        v3_and_below_topics: vec![
                            add_partitions_to_txn_request::AddPartitionsToTxnTopic {
                                name: TOPIC.into(),
                                partitions: vec![0],
                            },
                        ],
                        ..Default::default()
                    },
                )
            },
        ),
        row(
            "AddOffsetsToTxn",
            vec![txn(WRITE), group(READ)],
            TXN_DENIED,
            3,
            || {
                Request::AddOffsetsToTxn(add_offsets_to_txn_request::AddOffsetsToTxnRequest {
                    transactional_id: TXN.into(),
                    producer_id: 1,
                    producer_epoch: 0,
                    group_id: GROUP.into(),
                })
            },
        ),
        row(
            "TxnOffsetCommit",
            vec![txn(WRITE), group(READ), topic(READ)],
            TXN_DENIED,
            3,
            || {
                Request::TxnOffsetCommit(txn_offset_commit_request::TxnOffsetCommitRequest {
                    transactional_id: TXN.into(),
                    group_id: GROUP.into(),
                    producer_id: 1,
                    producer_epoch: 0,
                    topics: vec![txn_offset_commit_request::TxnOffsetCommitRequestTopic {
                        name: TOPIC.into(),
                        partitions: vec![
                            txn_offset_commit_request::TxnOffsetCommitRequestPartition {
                                partition_index: 0,
                                committed_offset: 0,
                                ..Default::default()
                            },
                        ],
                    }],
                    ..Default::default()
                })
            },
        ),
        row("EndTxn", vec![txn(WRITE)], TXN_DENIED, 3, || {
            Request::EndTxn(end_txn_request::EndTxnRequest {
                transactional_id: TXN.into(),
                producer_id: 1,
                producer_epoch: 0,
                committed: false,
            })
        }),
        row(
            "DescribeTransactions",
            vec![txn(DESCRIBE)],
            TXN_DENIED,
            0,
            || {
                Request::DescribeTransactions(
                    describe_transactions_request::DescribeTransactionsRequest {
                        transactional_ids: vec![TXN.into()],
                    },
                )
            },
        ),
        row(
            "DescribeProducers",
            vec![topic(READ)],
            TOPIC_DENIED,
            0,
            || {
                Request::DescribeProducers(describe_producers_request::DescribeProducersRequest {
                    topics: vec![describe_producers_request::TopicRequest {
                        name: TOPIC.into(),
                        partition_indexes: vec![0],
                    }],
                })
            },
        ),
        row(
            "DeleteTopics",
            vec![(TOPIC_RESOURCE, "matrix-doomed", DELETE)],
            TOPIC_DENIED,
            6,
            || {
                Request::DeleteTopics(delete_topics_request::DeleteTopicsRequest {
                    topics: vec![delete_topics_request::DeleteTopicState {
                        name: Some("matrix-doomed".into()),
                        topic_id: Uuid::ZERO,
                    }],
                    timeout_ms: 10_000,
                    ..Default::default()
                })
            },
        ),
    ]
}

#[test]
fn every_api_is_allowed_denied_and_refused_without_an_acl_as_kafka_documents() {
    let dir = tempfile::tempdir().unwrap();
    let broker = authorizing_broker(dir.path(), &[]);
    let mut admin = RawClient::connect(&broker);
    let topic_id = admin.create_topic(TOPIC, 1, &[]);
    admin.create_topic("matrix-doomed", 1, &[]);
    let mut alice = login(&broker, "alice");
    let mut bob = login(&broker, "bob");
    let mut carol = login(&broker, "carol");
    for row in rows(topic_id) {
        let principal = |user: &str| format!("User:{user}");
        // alice: exactly what Kafka says the API needs. bob: the same, everything else on the
        // resource, and a DENY of the first need: the DENY wins. carol: nothing.
        let mut creations = Vec::new();
        for &(resource_type, name, operation) in &row.needs {
            creations.push(acl(
                resource_type,
                name,
                &principal("alice"),
                operation,
                ALLOW,
            ));
            creations.push(acl(
                resource_type,
                name,
                &principal("bob"),
                operation,
                ALLOW,
            ));
        }
        let (resource_type, name, operation) = row.needs[0];
        creations.push(acl(resource_type, name, &principal("bob"), ALL, ALLOW));
        creations.push(acl(resource_type, name, &principal("bob"), operation, DENY));
        create_acls(&mut admin, creations);

        let allowed = alice.call(row.version, (row.request)());
        let codes = error_codes(&allowed);
        assert!(
            !codes.iter().any(|c| AUTHORIZATION_CODES.contains(c)),
            "{}: alice holds what it needs, yet {codes:?}: {allowed:?}",
            row.name
        );
        for (who, client) in [("bob (denied)", &mut bob), ("carol (no ACL)", &mut carol)] {
            let refused = client.call(row.version, (row.request)());
            let codes = error_codes(&refused);
            assert!(
                codes.contains(&row.refused_with),
                "{}: {who} gets {codes:?}, not {}: {refused:?}",
                row.name,
                row.refused_with
            );
        }
        assert!(delete_all_acls(&mut admin) >= 4, "{}", row.name);
        eprintln!("{}: allowed, denied and refused as Kafka does", row.name);
    }
    broker.check_log();
}

/// Topic names a principal sees in an all-topics Metadata request.
fn visible_topics(client: &mut RawClient) -> Vec<String> {
    let Response::Metadata(metadata) = client.call(
        12,
        Request::Metadata(metadata_request::MetadataRequest {
            topics: None,
            allow_auto_topic_creation: false,
            include_topic_authorized_operations: true,
            ..Default::default()
        }),
    ) else {
        panic!("a Metadata response");
    };
    let mut names: Vec<String> = metadata.topics.into_iter().filter_map(|t| t.name).collect();
    names.sort();
    names
}

#[test]
fn metadata_hides_topics_and_everyone_is_allowed_only_where_no_acl_exists() {
    let dir = tempfile::tempdir().unwrap();
    let broker = authorizing_broker(dir.path(), &["--allow-everyone-if-no-acl-found", "true"]);
    let mut admin = RawClient::connect(&broker);
    admin.create_topic("open", 1, &[]);
    admin.create_topic("closed", 1, &[]);
    create_acls(
        &mut admin,
        vec![acl(TOPIC_RESOURCE, "closed", "User:alice", READ, ALLOW)],
    );
    let mut alice = login(&broker, "alice");
    let mut carol = login(&broker, "carol");
    // "open" has no ACL: everyone may use it; "closed" has one, for alice only.
    assert_eq!(visible_topics(&mut alice), ["closed", "open"]);
    assert_eq!(visible_topics(&mut carol), ["open"]);
    let produce = |client: &mut RawClient, topic: &str| {
        client
            .produce(topic, 0, None, producer_batch((-1, -1), -1, false, "v"))
            .0
    };
    assert_eq!(produce(&mut carol, "open"), 0);
    assert_eq!(produce(&mut carol, "closed"), TOPIC_DENIED);
    assert_eq!(
        produce(&mut alice, "closed"),
        TOPIC_DENIED,
        "READ does not allow WRITE"
    );
    // A super user is allowed whatever the ACLs say.
    assert_eq!(produce(&mut admin, "closed"), 0);
    broker.check_log();

    // Without the authorizer, the ACL APIs answer SECURITY_DISABLED, as Kafka's do.
    let dir = tempfile::tempdir().unwrap();
    let plain = BrokerProcess::start(dir.path(), &[]);
    let mut client = RawClient::connect(&plain);
    let Response::DescribeAcls(described) = client.call(
        3,
        Request::DescribeAcls(describe_acls_request::DescribeAclsRequest {
            resource_type_filter: 1,
            resource_name_filter: None,
            pattern_type_filter: 1,
            principal_filter: None,
            host_filter: None,
            operation: 1,
            permission_type: 1,
        }),
    ) else {
        panic!("a DescribeAcls response");
    };
    assert_eq!(described.error_code, SECURITY_DISABLED);
    plain.check_log();
}

/// (resource name, pattern type, principal) of each binding a DescribeAcls filter matches.
fn describe(
    admin: &mut RawClient,
    resource_type: i8,
    name: Option<&str>,
    pattern_type: i8,
) -> Vec<(String, i8, String)> {
    let Response::DescribeAcls(described) = admin.call(
        3,
        Request::DescribeAcls(describe_acls_request::DescribeAclsRequest {
            resource_type_filter: resource_type,
            resource_name_filter: name.map(str::to_string),
            pattern_type_filter: pattern_type,
            principal_filter: None,
            host_filter: None,
            operation: 1,
            permission_type: 1,
        }),
    ) else {
        panic!("a DescribeAcls response");
    };
    assert_eq!(described.error_code, 0);
    let mut found: Vec<(String, i8, String)> = described
        .resources
        .iter()
        .flat_map(|r| {
            r.acls
                .iter()
                .map(|a| (r.resource_name.clone(), r.pattern_type, a.principal.clone()))
        })
        .collect();
    found.sort();
    found
}

#[test]
fn acls_are_described_by_filter_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let broker = authorizing_broker(dir.path(), &[]);
    let mut admin = RawClient::connect(&broker);
    let mut prefixed = acl(TOPIC_RESOURCE, "orders-", "User:alice", WRITE, ALLOW);
    prefixed.resource_pattern_type = 4;
    create_acls(
        &mut admin,
        vec![
            prefixed,
            acl(GROUP_RESOURCE, "g", "User:alice", READ, ALLOW),
            acl(TOPIC_RESOURCE, "*", "User:bob", DESCRIBE, DENY),
        ],
    );
    // A binding the broker cannot hold is refused on its own, with INVALID_REQUEST.
    let Response::CreateAcls(created) = admin.call(
        3,
        Request::CreateAcls(create_acls_request::CreateAclsRequest {
            creations: vec![
                acl(TOPIC_RESOURCE, "t", "alice", READ, ALLOW),
                acl(
                    CLUSTER_RESOURCE,
                    "not-the-cluster",
                    "User:alice",
                    ALTER,
                    ALLOW,
                ),
                acl(TOPIC_RESOURCE, "t", "User:alice", 1, ALLOW),
                acl(TOPIC_RESOURCE, "t", "User:alice", READ, ALLOW),
            ],
        }),
    ) else {
        panic!("a CreateAcls response");
    };
    let codes: Vec<i16> = created.results.iter().map(|r| r.error_code).collect();
    assert_eq!(codes, [42, 42, 42, 0]);

    let before = describe(&mut admin, TOPIC_RESOURCE, Some("orders-eu"), 2);
    let broker = broker.restart();
    let mut admin = RawClient::connect(&broker);
    assert_eq!(
        describe(&mut admin, TOPIC_RESOURCE, Some("orders-eu"), 2),
        before
    );
    // MATCH: the bindings that apply to the topic "orders-eu".
    assert_eq!(
        describe(&mut admin, TOPIC_RESOURCE, Some("orders-eu"), 2),
        [
            ("*".to_string(), LITERAL, "User:bob".to_string()),
            ("orders-".to_string(), 4, "User:alice".to_string()),
        ]
    );
    // ANY pattern with a name: exactly that name.
    assert_eq!(
        describe(&mut admin, TOPIC_RESOURCE, Some("t"), 1),
        [("t".to_string(), LITERAL, "User:alice".to_string())]
    );
    assert_eq!(delete_all_acls(&mut admin), 4);
    broker.check_log();
}

#[test]
fn librdkafka_consumer_sees_topic_authorization_failed_when_read_is_denied() {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::error::{KafkaError, RDKafkaErrorCode};
    use rdkafka::{ClientConfig, Offset, TopicPartitionList};

    let dir = tempfile::tempdir().unwrap();
    let broker = authorizing_broker(dir.path(), &[]);
    let mut admin = RawClient::connect(&broker);
    admin.create_topic(TOPIC, 1, &[]);
    let batch = producer_batch((-1, -1), -1, false, "secret");
    assert_eq!(admin.produce(TOPIC, 0, None, batch).0, 0);
    create_acls(
        &mut admin,
        vec![
            acl(TOPIC_RESOURCE, TOPIC, "User:carol", DESCRIBE, ALLOW),
            acl(TOPIC_RESOURCE, TOPIC, "User:*", READ, DENY),
            acl(GROUP_RESOURCE, "carols", "User:carol", READ, ALLOW),
        ],
    );
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &broker.listeners["SASL_PLAINTEXT"])
        .set("broker.address.family", "v4")
        .set("security.protocol", "SASL_PLAINTEXT")
        .set("sasl.mechanism", "PLAIN")
        .set("sasl.username", "carol")
        .set("sasl.password", PASSWORD)
        .set("group.id", "carols")
        .set("enable.auto.commit", "false")
        .create()
        .expect("a consumer");
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(TOPIC, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&assignment).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let error = loop {
        assert!(std::time::Instant::now() < deadline, "no error within 30 s");
        match consumer.poll(std::time::Duration::from_millis(200)) {
            None => continue,
            Some(Ok(message)) => panic!("read a record READ is denied for: {message:?}"),
            Some(Err(error)) => break error,
        }
    };
    assert!(
        matches!(
            error,
            KafkaError::MessageConsumption(RDKafkaErrorCode::TopicAuthorizationFailed)
        ),
        "{error:?}"
    );
    broker.check_log();
}
