//! The broker's limits driven over raw sockets: members per group (`--group-members-max`,
//! Kafka's `group.max.size`) and groups per broker (`--groups-max`) answer
//! GROUP_MAX_SIZE_REACHED as Kafka's classic coordinator does; connections per broker and per
//! address (`--connections-max`, `--connections-max-per-ip`) are closed right after accept,
//! and a client that leaves with its pipeline full gives its place back.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::raw::RawClient;
use common::{BrokerProcess, wait_for};
use sluice_net::messages::delete_groups_request::DeleteGroupsRequest;
use sluice_net::messages::describe_groups_request::DescribeGroupsRequest;
use sluice_net::messages::fetch_request::{FetchPartition, FetchRequest, FetchTopic};
use sluice_net::messages::join_group_request::{JoinGroupRequest, JoinGroupRequestProtocol};
use sluice_net::messages::join_group_response::JoinGroupResponse;
use sluice_net::messages::metadata_request::MetadataRequest;
use sluice_net::messages::offset_commit_request::{
    OffsetCommitRequest, OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use sluice_net::{ApiKey, ErrorCode, Request, Response};

const TIMEOUT: Duration = Duration::from_secs(60);

/// JoinGroup v5: KIP-394's MEMBER_ID_REQUIRED round trip and static membership, as librdkafka
/// and the Java client send it.
const JOIN_VERSION: i16 = 5;

/// JoinGroup v3: no MEMBER_ID_REQUIRED, a new member joins at once.
const JOIN_VERSION_NO_MEMBER_ID_REQUIRED: i16 = 3;

const WAITING_JOIN_MS: i32 = 60_000;

fn join_request(group: &str, member_id: &str) -> Request {
    Request::JoinGroup(JoinGroupRequest {
        group_id: group.into(),
        session_timeout_ms: 30_000,
        rebalance_timeout_ms: WAITING_JOIN_MS,
        member_id: member_id.into(),
        protocol_type: "consumer".into(),
        protocols: vec![JoinGroupRequestProtocol {
            name: "range".into(),
            metadata: bytes::Bytes::from_static(b"subscription"),
        }],
        ..Default::default()
    })
}

fn join_response(response: Response) -> JoinGroupResponse {
    match response {
        Response::JoinGroup(response) => response,
        other => panic!("not a JoinGroup response: {other:?}"),
    }
}

/// Sends a JoinGroup and waits for its answer.
fn join(client: &mut RawClient, version: i16, group: &str, member_id: &str) -> JoinGroupResponse {
    join_response(client.call(version, join_request(group, member_id)))
}

/// KIP-394's first round trip: the id the new member must join with.
fn member_id_for(client: &mut RawClient, group: &str) -> String {
    let response = join(client, JOIN_VERSION, group, "");
    assert_eq!(response.error_code, ErrorCode::MemberIdRequired.code());
    assert!(!response.member_id.is_empty());
    response.member_id
}

fn assert_group_max_size_reached(response: &JoinGroupResponse) {
    // Kafka's answer: the error, no member id, no generation.
    assert_eq!(
        (
            response.error_code,
            response.member_id.as_str(),
            response.generation_id
        ),
        (ErrorCode::GroupMaxSizeReached.code(), "", -1),
        "{response:?}"
    );
}

fn members_of(client: &mut RawClient, group: &str) -> usize {
    match client.call(
        0,
        Request::DescribeGroups(DescribeGroupsRequest {
            groups: vec![group.into()],
            ..Default::default()
        }),
    ) {
        Response::DescribeGroups(response) => response.groups[0].members.len(),
        other => panic!("not a DescribeGroups response: {other:?}"),
    }
}

/// Slows the first rebalance of a new group down so that its JoinGroups stay unanswered while
/// the test adds members.
fn broker_with_slow_first_rebalance(dir: &std::path::Path, args: &[&str]) -> BrokerProcess {
    let broker = BrokerProcess::start(dir, args);
    let mut admin = RawClient::connect(&broker);
    let alter = Request::IncrementalAlterConfigs(
        sluice_net::messages::incremental_alter_configs_request::IncrementalAlterConfigsRequest {
            resources: vec![
                sluice_net::messages::incremental_alter_configs_request::AlterConfigsResource {
                    resource_type: 4, // BROKER
                    resource_name: "0".into(),
                    configs: vec![
                        sluice_net::messages::incremental_alter_configs_request::AlterableConfig {
                            name: "group.initial.rebalance.delay.ms".into(),
                            config_operation: 0, // SET
                            value: Some(WAITING_JOIN_MS.to_string()),
                        },
                    ],
                },
            ],
            ..Default::default()
        },
    );
    match admin.call(0, alter) {
        Response::IncrementalAlterConfigs(response) => {
            assert_eq!(response.responses[0].error_code, 0, "{response:?}")
        }
        other => panic!("not an IncrementalAlterConfigs response: {other:?}"),
    }
    broker
}

#[test]
fn the_default_group_members_max_refuses_the_1001st_member() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker_with_slow_first_rebalance(dir.path(), &["--shards", "2"]);
    const MEMBERS_MAX: usize = 1000;
    const PER_CONNECTION: usize = 10; // below the pipeline depth: all are read at once
    // A thousand JoinGroups wait for the first rebalance, ten per connection.
    let members: Vec<RawClient> = (0..MEMBERS_MAX / PER_CONNECTION)
        .map(|_| {
            let mut client = RawClient::connect(&broker);
            for _ in 0..PER_CONNECTION {
                client.send(
                    JOIN_VERSION_NO_MEMBER_ID_REQUIRED,
                    &join_request("crowd", ""),
                );
            }
            client
        })
        .collect();
    let mut observer = RawClient::connect(&broker);
    assert!(
        wait_for(TIMEOUT, || (members_of(&mut observer, "crowd")
            == MEMBERS_MAX)
            .then_some(()))
        .is_some(),
        "a thousand members join"
    );
    let mut one_more = RawClient::connect(&broker);
    let refused = join(
        &mut one_more,
        JOIN_VERSION_NO_MEMBER_ID_REQUIRED,
        "crowd",
        "",
    );
    assert_group_max_size_reached(&refused);
    // KIP-394 clients are refused at their first JoinGroup, before any member id is handed out.
    assert_group_max_size_reached(&join(&mut one_more, JOIN_VERSION, "crowd", ""));
    assert_eq!(members_of(&mut observer, "crowd"), MEMBERS_MAX);
    // Another group is not affected.
    assert_eq!(
        join(&mut one_more, JOIN_VERSION, "another", "").error_code,
        ErrorCode::MemberIdRequired.code()
    );
    drop(members);
}

/// Creates `count` groups `{prefix}{i}` with one JoinGroup v5 each (MEMBER_ID_REQUIRED: the
/// group exists with a member id handed out), pipelined in windows of 16.
fn create_groups(client: &mut RawClient, prefix: &str, count: usize) {
    let names: Vec<String> = (0..count).map(|i| format!("{prefix}{i}")).collect();
    for window in names.chunks(16) {
        let first = client.correlation_id + 1;
        for name in window {
            client.send(JOIN_VERSION, &join_request(name, ""));
        }
        for (i, name) in window.iter().enumerate() {
            client.correlation_id = first + i as i32;
            let response = join_response(client.receive(ApiKey::JoinGroup, JOIN_VERSION));
            assert_eq!(
                response.error_code,
                ErrorCode::MemberIdRequired.code(),
                "group {name}: {response:?}"
            );
        }
    }
}

fn commit_new_group(client: &mut RawClient, group: &str) -> Vec<i16> {
    let request = Request::OffsetCommit(OffsetCommitRequest {
        group_id: group.into(),
        generation_id_or_member_epoch: -1, // a standalone consumer: creates the group
        member_id: String::new(),
        topics: vec![OffsetCommitRequestTopic {
            name: "some-topic".into(),
            partitions: vec![
                OffsetCommitRequestPartition {
                    partition_index: 0,
                    committed_offset: 1,
                    ..Default::default()
                },
                OffsetCommitRequestPartition {
                    partition_index: 1,
                    committed_offset: 1,
                    ..Default::default()
                },
            ],
        }],
        ..Default::default()
    });
    match client.call(8, request) {
        Response::OffsetCommit(response) => response.topics[0]
            .partitions
            .iter()
            .map(|p| p.error_code)
            .collect(),
        other => panic!("not an OffsetCommit response: {other:?}"),
    }
}

fn delete_group(client: &mut RawClient, group: &str) -> i16 {
    match client.call(
        2,
        Request::DeleteGroups(DeleteGroupsRequest {
            groups_names: vec![group.into()],
        }),
    ) {
        Response::DeleteGroups(response) => response.results[0].error_code,
        other => panic!("not a DeleteGroups response: {other:?}"),
    }
}

fn groups_max_warnings(broker: &BrokerProcess) -> Vec<String> {
    broker
        .log_lines()
        .into_iter()
        .filter(|l| l.contains("WARN") && l.contains("groups_max ="))
        .collect()
}

#[test]
fn the_default_groups_max_refuses_the_10001st_group_and_says_so_once() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path(), &["--shards", "1"]);
    broker.allow_log("group not created: the broker coordinates groups_max");
    const GROUPS_MAX: usize = 10_000;
    let mut client = RawClient::connect(&broker);
    create_groups(&mut client, "g-", GROUPS_MAX);

    assert_group_max_size_reached(&join(&mut client, JOIN_VERSION, "one-too-many", ""));
    let codes = commit_new_group(&mut client, "one-too-many");
    assert_eq!(codes, [ErrorCode::GroupMaxSizeReached.code(); 2]);
    // The groups that exist are served as before.
    member_id_for(&mut client, "g-7");

    // One WARN line for both refusals (at most one per 10 s), naming the limit and its flag.
    let warnings = wait_for(TIMEOUT, || {
        let lines = groups_max_warnings(&broker);
        (!lines.is_empty()).then_some(lines)
    })
    .expect("a WARN line about groups_max");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("groups_max = 10000") && warnings[0].contains("--groups-max"),
        "{warnings:?}"
    );

    // A deleted group makes room for a new one.
    assert_eq!(delete_group(&mut client, "g-1"), 0);
    assert_eq!(
        join(&mut client, JOIN_VERSION, "one-too-many", "").error_code,
        ErrorCode::MemberIdRequired.code()
    );
    assert_group_max_size_reached(&join(&mut client, JOIN_VERSION, "two-too-many", ""));
}

#[test]
fn group_members_max_answers_as_kafka_does() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker_with_slow_first_rebalance(
        dir.path(),
        &["--shards", "2", "--group-members-max", "2"],
    );
    // Kafka's testDynamicMembersJoinGroupWithMaxSizeAndRequiredKnownMember: an Empty group
    // hands out member ids to all three; the third to join with its id is refused.
    let mut clients: Vec<RawClient> = (0..4).map(|_| RawClient::connect(&broker)).collect();
    let ids: Vec<String> = clients[..3]
        .iter_mut()
        .map(|c| member_id_for(c, "pair"))
        .collect();
    clients[0].send(JOIN_VERSION, &join_request("pair", &ids[0]));
    clients[1].send(JOIN_VERSION, &join_request("pair", &ids[1]));
    let mut observer = RawClient::connect(&broker);
    assert!(
        wait_for(TIMEOUT, || (members_of(&mut observer, "pair") == 2)
            .then_some(()))
        .is_some(),
        "two members join"
    );
    assert_group_max_size_reached(&join(&mut clients[2], JOIN_VERSION, "pair", &ids[2]));
    // A new member is refused at its first JoinGroup; a member already waiting is accepted
    // again (its earlier JoinGroup is superseded).
    assert_group_max_size_reached(&join(&mut clients[3], JOIN_VERSION, "pair", ""));
    clients[3].send(JOIN_VERSION, &join_request("pair", &ids[1]));
    let superseded = join_response(clients[1].receive(ApiKey::JoinGroup, JOIN_VERSION));
    assert_eq!(
        superseded.error_code,
        ErrorCode::RebalanceInProgress.code(),
        "{superseded:?}"
    );
    assert_eq!(members_of(&mut observer, "pair"), 2);
}

#[test]
fn groups_max_counts_the_groups_of_every_shard() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path(), &["--shards", "2", "--groups-max", "3"]);
    broker.allow_log("group not created: the broker coordinates groups_max");
    let mut client = RawClient::connect(&broker);
    create_groups(&mut client, "g-", 3);
    for i in 3..8 {
        assert_group_max_size_reached(&join(&mut client, JOIN_VERSION, &format!("g-{i}"), ""));
        assert_eq!(
            commit_new_group(&mut client, &format!("c-{i}")),
            [ErrorCode::GroupMaxSizeReached.code(); 2]
        );
    }
    // At most one line per shard in 10 s, naming the limit's value and flag.
    let warnings = groups_max_warnings(&broker);
    assert!(
        (1..=2).contains(&warnings.len())
            && warnings
                .iter()
                .all(|w| w.contains("groups_max = 3") && w.contains("--groups-max")),
        "{warnings:?}"
    );
    assert_eq!(delete_group(&mut client, "g-0"), 0);
    assert_eq!(
        commit_new_group(&mut client, "c-3"),
        [ErrorCode::UnknownTopicOrPartition.code(); 2],
        "the group is created; the partitions do not exist"
    );
    assert_group_max_size_reached(&join(&mut client, JOIN_VERSION, "g-9", ""));
}

/// Connects and checks the broker answers a Metadata request on the connection.
fn connect_and_use(broker: &BrokerProcess) -> RawClient {
    let mut client = RawClient::connect(broker);
    match client.call(12, Request::Metadata(MetadataRequest::default())) {
        Response::Metadata(metadata) => assert_eq!(metadata.brokers.len(), 1),
        other => panic!("not a Metadata response: {other:?}"),
    }
    client
}

/// True when a new connection gets an answer to a Metadata request (false: it was closed).
fn a_new_connection_is_served(broker: &BrokerProcess) -> bool {
    let Ok(mut stream) = TcpStream::connect(&broker.bootstrap) else {
        return false;
    };
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    let header = sluice_net::RequestHeader {
        request_api_key: ApiKey::Metadata as i16,
        request_api_version: 12,
        correlation_id: 1,
        client_id: Some("limits-test".into()),
    };
    let mut frame = bytes::BytesMut::new();
    sluice_net::encode_request(
        &header,
        &Request::Metadata(MetadataRequest::default()),
        &mut frame,
    )
    .expect("encodes");
    let mut prefix = [0u8; 4];
    stream.write_all(&frame).is_ok() && stream.read_exact(&mut prefix).is_ok()
}

/// Panics with `why` unless a new connection is served within `TIMEOUT`.
fn assert_a_new_connection_is_served_soon(broker: &BrokerProcess, why: &str) {
    assert!(
        wait_for(TIMEOUT, || a_new_connection_is_served(broker).then_some(())).is_some(),
        "{why}"
    );
}

/// A connection the broker closes right after accepting it: the first read sees the end of
/// the stream (or a reset), never data or a timeout.
fn assert_closed_by_broker(broker: &BrokerProcess) {
    let mut stream = TcpStream::connect(&broker.bootstrap).expect("the kernel accepts");
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("the connection was not closed: {other:?}"),
    }
}

fn connection_warnings(broker: &BrokerProcess, limit: &str) -> Vec<String> {
    broker
        .log_lines()
        .into_iter()
        .filter(|l| l.contains("WARN") && l.contains(&format!("the limit {limit} =")))
        .collect()
}

#[test]
fn connections_over_connections_max_per_ip_are_closed_after_accept() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(
        dir.path(),
        &["--shards", "2", "--connections-max-per-ip", "2"],
    );
    broker.allow_log("refused: this address already has 2 connections open");
    let first = connect_and_use(&broker);
    let _second = connect_and_use(&broker);
    assert_closed_by_broker(&broker);
    assert_closed_by_broker(&broker);
    // One WARN line for both (at most one per 10 s), naming the limit and its flag.
    let warnings = wait_for(TIMEOUT, || {
        let lines = connection_warnings(&broker, "connections_max_per_ip");
        (!lines.is_empty()).then_some(lines)
    })
    .expect("a WARN line about connections_max_per_ip");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("connections_max_per_ip = 2")
            && warnings[0].contains("--connections-max-per-ip"),
        "{warnings:?}"
    );
    // A closed connection gives its place back.
    drop(first);
    assert_a_new_connection_is_served_soon(&broker, "a new connection is served once one closed");
}

#[test]
fn connections_over_connections_max_are_closed_after_accept() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path(), &["--shards", "2", "--connections-max", "3"]);
    broker.allow_log("refused: the broker already has 3 connections open");
    let clients: Vec<RawClient> = (0..3).map(|_| connect_and_use(&broker)).collect();
    assert_closed_by_broker(&broker);
    let warnings = wait_for(TIMEOUT, || {
        let lines = connection_warnings(&broker, "connections_max");
        (!lines.is_empty()).then_some(lines)
    })
    .expect("a WARN line about connections_max");
    assert!(
        warnings[0].contains("connections_max = 3") && warnings[0].contains("--connections-max"),
        "{warnings:?}"
    );
    drop(clients);
    assert_a_new_connection_is_served_soon(
        &broker,
        "new connections are served once the others closed",
    );
}

/// A client that leaves with its pipeline full (16 long-polling fetches read, ten more sent)
/// gives its connection's place back: its answers come 100 ms apart, the writer ends once the
/// connection is reset, and the read loop, waiting for a pipeline slot that only an answer
/// gives back, ends with it.
#[test]
fn a_client_leaving_with_its_pipeline_full_gives_its_connection_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = BrokerProcess::start(dir.path(), &["--shards", "1", "--connections-max", "1"]);
    broker.allow_log("refused: the broker already has 1 connections open");
    let mut client = connect_and_use(&broker);
    client.create_topic("empty", 1, &[]);
    let long_poll = |max_wait_ms: i32| {
        Request::Fetch(FetchRequest {
            max_wait_ms,
            min_bytes: 1,
            topics: vec![FetchTopic {
                topic: "empty".into(),
                partitions: vec![FetchPartition {
                    partition: 0,
                    partition_max_bytes: 1 << 20,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        })
    };
    for i in 0..26 {
        client.send(11, &long_poll(500 + 100 * i));
    }
    drop(client);
    assert_a_new_connection_is_served_soon(&broker, "the connection left behind was closed");
    assert!(broker.terminate().success());
}
