//! Partition moves through Kafka's admin APIs against real processes: three nodes, each
//! broker and controller, on one shared object store. Sluice keeps one copy of each
//! partition, so AlterPartitionReassignments takes a replica list of exactly one live broker
//! and refuses any other; ElectLeaders never has an election to run; a single node has
//! nowhere to move a partition to. The same through `sluice partition` and kafka-python.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::raw::RawClient;
use common::{BrokerProcess, wait_for};
use sluice_net::messages::alter_partition_reassignments_request::{
    AlterPartitionReassignmentsRequest, ReassignablePartition, ReassignableTopic,
};
use sluice_net::messages::alter_partition_reassignments_response::ReassignablePartitionResponse;
use sluice_net::messages::elect_leaders_request::{ElectLeadersRequest, TopicPartitions};
use sluice_net::messages::elect_leaders_response::ElectLeadersResponse;
use sluice_net::messages::list_partition_reassignments_request::ListPartitionReassignmentsRequest;
use sluice_net::messages::list_partition_reassignments_response::OngoingTopicReassignment;
use sluice_net::messages::metadata_request::{MetadataRequest, MetadataRequestTopic};
use sluice_net::{ErrorCode, Request, Response};

/// Longest wait for the cluster to form or to show a change.
const CLUSTER_CHANGE_MAX: Duration = Duration::from_secs(30);
/// How long a kafka-python script may run: its own waits are bounded well below this.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(120);
const TOPIC: &str = "moves";
const PARTITIONS: i32 = 3;

#[test]
fn three_brokers_take_one_live_broker_per_partition_and_refuse_the_rest() {
    let root = tempfile::tempdir().expect("tempdir");
    let nodes = start_cluster(root.path());
    let mut raw = RawClient::connect(&nodes[0]);
    let leaders = create_spread_topic(&mut raw);
    let holder = leaders[0];
    let other = (1..=3).find(|id| *id != holder).expect("another broker");

    let refused = alter(&mut raw, TOPIC, 0, Some(vec![holder, other]));
    assert_eq!(
        refused.error_code,
        ErrorCode::InvalidReplicaAssignment.code()
    );
    let message = refused.error_message.unwrap_or_default();
    assert!(message.contains("exactly one broker"), "{message}");
    let unknown_broker = alter(&mut raw, TOPIC, 0, Some(vec![99]));
    assert_eq!(
        unknown_broker.error_code,
        ErrorCode::InvalidReplicaAssignment.code(),
        "{unknown_broker:?}"
    );
    let nothing_to_cancel = alter(&mut raw, TOPIC, 0, None);
    assert_eq!(
        nothing_to_cancel.error_code,
        ErrorCode::NoReassignmentInProgress.code(),
        "{nothing_to_cancel:?}"
    );
    for (topic, partition) in [("nope", 0), (TOPIC, PARTITIONS)] {
        let unknown = alter(&mut raw, topic, partition, Some(vec![holder]));
        assert_eq!(
            unknown.error_code,
            ErrorCode::UnknownTopicOrPartition.code(),
            "{topic}-{partition}: {unknown:?}"
        );
    }
    // A move to the broker that already holds it is done at once: nothing is pending.
    let stay = alter(&mut raw, TOPIC, 0, Some(vec![holder]));
    assert_eq!((stay.error_code, stay.error_message), (0, None));
    assert_eq!(list(&mut raw, None), []);
    assert_eq!(list(&mut raw, Some(vec![0, 1, 2])), []);

    // Each partition's one replica is its preferred leader: no election is ever needed, and
    // asking for every partition answers with none (Kafka leaves those out).
    for version in 0..=2 {
        let elected = elect(&mut raw, version, Some(vec![0, 1]));
        let results = &elected.replica_election_results;
        assert_eq!(results.len(), 1, "v{version}: {elected:?}");
        assert_eq!(results[0].topic, TOPIC);
        for result in &results[0].partition_result {
            assert_eq!(
                result.error_code,
                ErrorCode::ElectionNotNeeded.code(),
                "v{version}: {elected:?}"
            );
        }
        assert_eq!(elected.error_code, 0);
        assert_eq!(elect(&mut raw, version, None).replica_election_results, []);
    }

    // `sluice partition`: the same refusals with their Kafka names, exit status 1.
    let refused = cli(&nodes[0], &["partition", "move", TOPIC, "0", "--to", "99"]);
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("InvalidReplicaAssignment (39)") && stderr.contains("broker 99"),
        "{stderr}"
    );
    let cancel = cli(&nodes[0], &["partition", "move", TOPIC, "0", "--cancel"]);
    assert_eq!(cancel.status.code(), Some(1), "{cancel:?}");
    assert!(
        String::from_utf8_lossy(&cancel.stderr).contains("NoReassignmentInProgress (85)"),
        "{cancel:?}"
    );
    let stay = json(
        &nodes[1],
        &[
            "partition",
            "move",
            TOPIC,
            "1",
            "--to",
            &leaders[1].to_string(),
        ],
    );
    assert_eq!(stay[0]["old_leader"], leaders[1], "{stay}");
    assert_eq!(stay[0]["new_leader"], leaders[1], "{stay}");
    assert_eq!(
        json(&nodes[2], &["partition", "moves"]),
        serde_json::json!([])
    );
}

#[test]
fn a_single_node_has_nowhere_to_move_a_partition() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = BrokerProcess::start(dir.path(), &["--shards", "1"]);
    let mut raw = RawClient::connect(&broker);
    raw.create_topic(TOPIC, 1, &[]);
    let node_id = metadata(&mut raw).brokers[0].node_id;
    let refused = alter(&mut raw, TOPIC, 0, Some(vec![node_id]));
    assert_eq!(
        refused.error_code,
        ErrorCode::InvalidReplicaAssignment.code(),
        "{refused:?}"
    );
    let elected = elect(&mut raw, 2, Some(vec![0]));
    assert_eq!(
        elected.replica_election_results[0].partition_result[0].error_code,
        ErrorCode::ElectionNotNeeded.code()
    );
    assert_eq!(list(&mut raw, None), []);
}

/// kafka-python's `KafkaAdminClient.alter_partition_reassignments`,
/// `list_partition_reassignments` and `elect_leaders` (tests/python/partition_moves.py).
#[test]
fn kafka_python_reassignment_admin_calls() {
    let root = tempfile::tempdir().expect("tempdir");
    let nodes = start_cluster(root.path());
    let mut raw = RawClient::connect(&nodes[0]);
    let leaders = create_spread_topic(&mut raw);
    let leader = leaders[0].to_string();
    let stdout = common::python::run_script(
        "partition_moves.py",
        &[&nodes[0].bootstrap, TOPIC, &leader],
        SCRIPT_TIMEOUT,
    );
    assert!(stdout.contains("reassignments ok"), "{stdout}");
}

/// `sluice partition move` carries a move out: Metadata shows the new leader, one leader
/// epoch up, and nothing is left pending.
#[test]
fn sluice_partition_move_hands_a_partition_to_another_broker() {
    let root = tempfile::tempdir().expect("tempdir");
    let nodes = start_cluster(root.path());
    let mut raw = RawClient::connect(&nodes[0]);
    let leaders = create_spread_topic(&mut raw);
    // The balancer would even the counts again right after the move.
    autobalancing_off(&mut raw);
    let epoch_before = partition_leader(&mut raw, 0).1;
    let to = (1..=3)
        .find(|id| *id != leaders[0])
        .expect("another broker");
    let moved = json(
        &nodes[0],
        &["partition", "move", TOPIC, "0", "--to", &to.to_string()],
    );
    println!("moved: {moved}");
    assert_eq!(moved[0]["old_leader"], leaders[0], "{moved}");
    assert_eq!(moved[0]["new_leader"], to, "{moved}");
    assert!(moved[0]["leader_epoch"].as_i64() > Some(i64::from(epoch_before)));
    assert_eq!(partition_leader(&mut raw, 0).0, to);
    assert_eq!(list(&mut raw, None), []);
}

/// Sets `partition.autobalancing.mode=off` for the cluster, so that partitions stay where the
/// test puts them.
fn autobalancing_off(raw: &mut RawClient) {
    use sluice_net::messages::incremental_alter_configs_request::{
        AlterConfigsResource, AlterableConfig, IncrementalAlterConfigsRequest,
    };
    let request = IncrementalAlterConfigsRequest {
        resources: vec![AlterConfigsResource {
            resource_type: 4,
            resource_name: String::new(),
            configs: vec![AlterableConfig {
                name: "partition.autobalancing.mode".into(),
                config_operation: 0,
                value: Some("off".into()),
            }],
        }],
        validate_only: false,
    };
    let Response::IncrementalAlterConfigs(answer) =
        raw.call(1, Request::IncrementalAlterConfigs(request))
    else {
        panic!("an IncrementalAlterConfigs answer");
    };
    assert_eq!(answer.responses[0].error_code, 0, "{answer:?}");
}

/// Three nodes 1, 2 and 3, each broker and controller, on one object store; returns once
/// Metadata lists all three brokers.
fn start_cluster(root: &Path) -> Vec<BrokerProcess> {
    let addrs = common::free_addrs(3);
    let voters = common::quorum_voters(&addrs);
    let objects = root.join("objects").display().to_string();
    // The voters start together: each waits for the others' votes.
    let nodes: Vec<BrokerProcess> = std::thread::scope(|scope| {
        let starting: Vec<_> = addrs
            .iter()
            .enumerate()
            .map(|(i, addr)| {
                let (voters, objects) = (&voters, &objects);
                scope.spawn(move || {
                    let id = (i + 1).to_string();
                    let args = [
                        "--node-id",
                        &id,
                        "--process-roles",
                        "broker,controller",
                        "--controller-quorum-voters",
                        voters,
                        "--controller-listen",
                        addr,
                        "--object-store",
                        objects,
                        "--shards",
                        "1",
                        "--memory",
                        "256MiB",
                    ];
                    BrokerProcess::start(&root.join(format!("node-{id}")), &args)
                })
            })
            .collect();
        starting
            .into_iter()
            .map(|s| s.join().expect("node starts"))
            .collect()
    });
    let mut raw = RawClient::connect(&nodes[0]);
    wait_for(CLUSTER_CHANGE_MAX, || {
        let mut ids: Vec<i32> = metadata(&mut raw)
            .brokers
            .iter()
            .map(|b| b.node_id)
            .collect();
        ids.sort_unstable();
        (ids == [1, 2, 3]).then_some(())
    })
    .expect("Metadata lists brokers 1, 2 and 3");
    nodes
}

/// Creates `TOPIC` with `PARTITIONS` partitions; each partition's leader once all have one.
fn create_spread_topic(raw: &mut RawClient) -> Vec<i32> {
    raw.create_topic(TOPIC, PARTITIONS, &[]);
    wait_for(CLUSTER_CHANGE_MAX, || {
        let leaders: Vec<i32> = (0..PARTITIONS)
            .map(|p| partition_leader(raw, p).0)
            .collect();
        leaders.iter().all(|l| *l >= 0).then_some(leaders)
    })
    .expect("every partition has a leader")
}

fn metadata(raw: &mut RawClient) -> sluice_net::messages::metadata_response::MetadataResponse {
    let Response::Metadata(response) = raw.call(
        12,
        Request::Metadata(MetadataRequest {
            topics: Some(vec![MetadataRequestTopic {
                name: Some(TOPIC.into()),
                ..Default::default()
            }]),
            allow_auto_topic_creation: false,
            ..Default::default()
        }),
    ) else {
        panic!("a Metadata response");
    };
    response
}

/// (leader, leader epoch) of `TOPIC`/`partition`, as Metadata shows it.
fn partition_leader(raw: &mut RawClient, partition: i32) -> (i32, i32) {
    let response = metadata(raw);
    let found = response.topics[0]
        .partitions
        .iter()
        .find(|p| p.partition_index == partition)
        .unwrap_or_else(|| panic!("partition {partition} in {response:?}"));
    (found.leader_id, found.leader_epoch)
}

/// AlterPartitionReassignments v0 of one partition: its answer (the top level must be 0).
fn alter(
    raw: &mut RawClient,
    topic: &str,
    partition: i32,
    replicas: Option<Vec<i32>>,
) -> ReassignablePartitionResponse {
    let Response::AlterPartitionReassignments(mut response) = raw.call(
        0,
        Request::AlterPartitionReassignments(AlterPartitionReassignmentsRequest {
            timeout_ms: 10_000,
            topics: vec![ReassignableTopic {
                name: topic.into(),
                partitions: vec![ReassignablePartition {
                    partition_index: partition,
                    replicas,
                }],
            }],
        }),
    ) else {
        panic!("an AlterPartitionReassignments response");
    };
    assert_eq!(response.error_code, 0, "{response:?}");
    assert_eq!(response.responses[0].name, topic);
    response.responses[0].partitions.remove(0)
}

/// ListPartitionReassignments v0: of every partition, or of these of `TOPIC`.
fn list(raw: &mut RawClient, partitions: Option<Vec<i32>>) -> Vec<OngoingTopicReassignment> {
    use sluice_net::messages::list_partition_reassignments_request::ListPartitionReassignmentsTopics;
    let Response::ListPartitionReassignments(response) = raw.call(
        0,
        Request::ListPartitionReassignments(ListPartitionReassignmentsRequest {
            timeout_ms: 10_000,
            topics: partitions.map(|partition_indexes| {
                vec![ListPartitionReassignmentsTopics {
                    name: TOPIC.into(),
                    partition_indexes,
                }]
            }),
        }),
    ) else {
        panic!("a ListPartitionReassignments response");
    };
    assert_eq!(response.error_code, 0, "{response:?}");
    response.topics
}

/// ElectLeaders (preferred) at `version`: of these partitions of `TOPIC`, or of all.
fn elect(raw: &mut RawClient, version: i16, partitions: Option<Vec<i32>>) -> ElectLeadersResponse {
    let Response::ElectLeaders(response) = raw.call(
        version,
        Request::ElectLeaders(ElectLeadersRequest {
            election_type: 0,
            topic_partitions: partitions.map(|partitions| {
                vec![TopicPartitions {
                    topic: TOPIC.into(),
                    partitions,
                }]
            }),
            timeout_ms: 10_000,
        }),
    ) else {
        panic!("an ElectLeaders response");
    };
    response
}

/// Runs `sluice ARGS --brokers <broker>`.
fn cli(broker: &BrokerProcess, args: &[&str]) -> Output {
    Command::new(common::sluice_binary())
        .args(args)
        .args(["--brokers", &broker.bootstrap])
        .env_remove("SLUICE_PROFILE")
        .output()
        .expect("sluice runs")
}

/// Runs `sluice ARGS --format json`, which must succeed; its output.
fn json(broker: &BrokerProcess, args: &[&str]) -> serde_json::Value {
    let mut args = args.to_vec();
    args.extend(["--format", "json"]);
    let output = cli(broker, &args);
    assert!(output.status.success(), "sluice {args:?}: {output:?}");
    serde_json::from_slice(&output.stdout).expect("JSON")
}
