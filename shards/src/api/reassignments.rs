//! Partition moves through Kafka's reassignment APIs: AlterPartitionReassignments,
//! ListPartitionReassignments and ElectLeaders.
//!
//! Sluice keeps one copy of each partition, in shared object storage, so a partition's
//! replica set is exactly one broker, its leader. A reassignment therefore names one broker
//! and moves the partition there (`MetadataCommand::MovePartition`); the broker holding it
//! seals it and hands it over (`shards/src/partition_move.rs`). While a move is pending,
//! ListPartitionReassignments shows it as Kafka shows a reassignment: the target being added,
//! the holder being removed. With one replica the preferred leader is always the current one,
//! so ElectLeaders never has an election to run.

use std::collections::BTreeMap;
use std::rc::Rc;

use sluice_metadata::{MetadataCommand, MetadataImage};
use sluice_net::ErrorCode;
use sluice_net::messages::alter_partition_reassignments_request::AlterPartitionReassignmentsRequest;
use sluice_net::messages::alter_partition_reassignments_response::{
    AlterPartitionReassignmentsResponse, ReassignablePartitionResponse, ReassignableTopicResponse,
};
use sluice_net::messages::elect_leaders_request::ElectLeadersRequest;
use sluice_net::messages::elect_leaders_response::{
    ElectLeadersResponse, PartitionResult, ReplicaElectionResult,
};
use sluice_net::messages::list_partition_reassignments_request::{
    ListPartitionReassignmentsRequest, ListPartitionReassignmentsTopics,
};
use sluice_net::messages::list_partition_reassignments_response::{
    ListPartitionReassignmentsResponse, OngoingPartitionReassignment, OngoingTopicReassignment,
};

use crate::errors::{controller_error_code, controller_error_message};
use crate::shard::Shard;

/// An error code with the message Kafka sends beside it.
type Refusal = (ErrorCode, String);

/// Kafka's ElectionType: elect the preferred replica (ElectLeaders v0 always does).
const ELECTION_PREFERRED: i8 = 0;
/// Kafka's ElectionType: elect any live replica when no in-sync one is left.
const ELECTION_UNCLEAN: i8 = 1;

/// Moves each named partition to the one broker its replica list names, or cancels its
/// pending move when the list is null. Each partition is one metadata command, answered once
/// it is committed; the move itself completes later (ListPartitionReassignments shows it
/// until then). Like Sluice's other admin requests, `timeout_ms` is not waited on: the
/// controller answers as soon as the command is committed or refused.
pub async fn alter_partition_reassignments(
    shard: &Rc<Shard>,
    request: AlterPartitionReassignmentsRequest,
) -> AlterPartitionReassignmentsResponse {
    let mut responses = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for partition in topic.partitions {
            let planned = move_command(
                &shard.image(),
                &topic.name,
                partition.partition_index,
                partition.replicas.as_deref(),
            );
            let outcome = match planned {
                Err(refusal) => Err(refusal),
                Ok(command) => shard
                    .controller
                    .submit(command)
                    .await
                    .map(|_| ())
                    .map_err(|e| (controller_error_code(&e), controller_error_message(&e))),
            };
            let (error_code, error_message) = match outcome {
                Ok(()) => (0, None),
                Err((code, message)) => (code.code(), Some(message)),
            };
            partitions.push(ReassignablePartitionResponse {
                partition_index: partition.partition_index,
                error_code,
                error_message,
            });
        }
        responses.push(ReassignableTopicResponse {
            name: topic.name,
            partitions,
        });
    }
    AlterPartitionReassignmentsResponse {
        responses,
        ..Default::default()
    }
}

/// The pending moves: all of them when `topics` is null, else those of the partitions named
/// (partitions with no pending move, and unknown topics, are left out, as Kafka does).
pub fn list_partition_reassignments(
    shard: &Shard,
    request: ListPartitionReassignmentsRequest,
) -> ListPartitionReassignmentsResponse {
    ListPartitionReassignmentsResponse {
        topics: ongoing_moves(&shard.image(), request.topics.as_deref()),
        ..Default::default()
    }
}

/// ElectLeaders: ELECTION_NOT_NEEDED for a partition with a leader (its one replica is its
/// preferred leader), and for one with none (the broker holding its only copy is fenced)
/// PREFERRED_LEADER_NOT_AVAILABLE or, for an unclean election, ELIGIBLE_LEADERS_NOT_AVAILABLE,
/// as Kafka's controller answers. A null partition list asks for every partition and, as in
/// Kafka, is answered only for the partitions whose election did not turn out unneeded.
pub fn elect_leaders(
    shard: &Shard,
    version: i16,
    request: ElectLeadersRequest,
) -> ElectLeadersResponse {
    let election_type = if version >= 1 {
        request.election_type
    } else {
        ELECTION_PREFERRED
    };
    if election_type != ELECTION_PREFERRED && election_type != ELECTION_UNCLEAN {
        return ElectLeadersResponse {
            error_code: ErrorCode::InvalidRequest.code(),
            ..Default::default()
        };
    }
    let image = shard.image();
    let replica_election_results = match request.topic_partitions {
        Some(topics) => topics
            .into_iter()
            .map(|topic| ReplicaElectionResult {
                partition_result: topic
                    .partitions
                    .iter()
                    .map(|&p| election_result(p, election(&image, &topic.topic, p, election_type)))
                    .collect(),
                topic: topic.topic,
            })
            .collect(),
        None => image
            .topics
            .values()
            .filter_map(|topic| {
                let partition_result: Vec<PartitionResult> = (0..topic.partitions.len() as i32)
                    .map(|p| (p, election(&image, &topic.name, p, election_type)))
                    .filter(|(_, outcome)| {
                        !matches!(outcome, Err((ErrorCode::ElectionNotNeeded, _)))
                    })
                    .map(|(p, outcome)| election_result(p, outcome))
                    .collect();
                (!partition_result.is_empty()).then(|| ReplicaElectionResult {
                    topic: topic.name.clone(),
                    partition_result,
                })
            })
            .collect(),
    };
    ElectLeadersResponse {
        replica_election_results,
        ..Default::default()
    }
}

/// The metadata command for one partition of an AlterPartitionReassignments: a null replica
/// list cancels the pending move, a list of one broker moves the partition there, any other
/// list is refused (Sluice keeps one copy of a partition). The controller checks the rest
/// (a live target, a move to cancel).
fn move_command(
    image: &MetadataImage,
    topic: &str,
    partition: i32,
    replicas: Option<&[i32]>,
) -> Result<MetadataCommand, Refusal> {
    let index = u32::try_from(partition)
        .ok()
        .filter(|&index| image.partition(topic, index).is_some())
        .ok_or_else(|| {
            (
                ErrorCode::UnknownTopicOrPartition,
                format!("partition {partition} of topic {topic} does not exist"),
            )
        })?;
    let target = match replicas {
        None => None,
        Some(&[broker]) => Some(broker),
        Some(other) => {
            return Err((
                ErrorCode::InvalidReplicaAssignment,
                format!(
                    "replicas {other:?} for {topic}-{partition}: Sluice keeps one copy of each \
                     partition, in shared storage, so the replica list must name exactly one \
                     broker (the one to move the partition to)"
                ),
            ));
        }
    };
    Ok(MetadataCommand::MovePartition {
        topic: topic.to_string(),
        partition: index,
        target,
    })
}

/// The pending moves of the partitions `wanted` names (all of them when None), by topic,
/// as Kafka lists reassignments: replicas = [target, holder], adding the target, removing
/// the holder.
fn ongoing_moves(
    image: &MetadataImage,
    wanted: Option<&[ListPartitionReassignmentsTopics]>,
) -> Vec<OngoingTopicReassignment> {
    // (topic, partition, stream id, target) of each pending move asked about.
    let mut pending: Vec<(&str, u32, u64, i32)> = Vec::new();
    match wanted {
        None => {
            for (stream_id, target) in image.partition_moves() {
                if let Some((topic, partition)) = image.stream(stream_id) {
                    pending.push((&topic.name, partition.index, stream_id, target));
                }
            }
        }
        Some(wanted) => {
            for topic in wanted {
                let Some(found) = image.topic(&topic.name) else {
                    continue;
                };
                for &index in &topic.partition_indexes {
                    let partition = usize::try_from(index)
                        .ok()
                        .and_then(|i| found.partitions.get(i));
                    if let Some(partition) = partition
                        && let Some(target) = image.move_target(partition.stream_id)
                    {
                        pending.push((&found.name, partition.index, partition.stream_id, target));
                    }
                }
            }
        }
    }
    let mut by_topic: BTreeMap<&str, Vec<OngoingPartitionReassignment>> = BTreeMap::new();
    for (topic, index, stream_id, target) in pending {
        let Some(holder) = image.leadership(stream_id).replica else {
            continue;
        };
        by_topic
            .entry(topic)
            .or_default()
            .push(OngoingPartitionReassignment {
                partition_index: index as i32,
                replicas: vec![target, holder],
                adding_replicas: vec![target],
                removing_replicas: vec![holder],
            });
    }
    by_topic
        .into_iter()
        .map(|(name, mut partitions)| {
            partitions.sort_by_key(|p| p.partition_index);
            partitions.dedup_by_key(|p| p.partition_index);
            OngoingTopicReassignment {
                name: name.to_string(),
                partitions,
            }
        })
        .collect()
}

/// The outcome of electing a leader for one partition: always a refusal, since a partition's
/// one replica is its preferred leader and there is no other to elect.
fn election(
    image: &MetadataImage,
    topic: &str,
    partition: i32,
    election_type: i8,
) -> Result<(), Refusal> {
    let Some(part) = u32::try_from(partition)
        .ok()
        .and_then(|index| image.partition(topic, index))
    else {
        return Err((
            ErrorCode::UnknownTopicOrPartition,
            format!("partition {partition} of topic {topic} does not exist"),
        ));
    };
    let leadership = image.leadership(part.stream_id);
    if let Some(leader) = leadership.leader {
        return Err((
            ErrorCode::ElectionNotNeeded,
            format!(
                "{topic}-{partition} is led by broker {leader}, its only replica (Sluice keeps \
                 one copy, in shared storage)"
            ),
        ));
    }
    let code = if election_type == ELECTION_UNCLEAN {
        ErrorCode::EligibleLeadersNotAvailable
    } else {
        ErrorCode::PreferredLeaderNotAvailable
    };
    let holder = leadership
        .replica
        .map_or_else(|| "no broker".to_string(), |b| format!("broker {b}"));
    Err((
        code,
        format!(
            "{topic}-{partition} is offline: {holder}, which holds its only copy, is fenced; it \
             comes back when that broker does or its WAL is taken over"
        ),
    ))
}

fn election_result(partition_id: i32, outcome: Result<(), Refusal>) -> PartitionResult {
    match outcome {
        Ok(()) => PartitionResult {
            partition_id,
            error_code: 0,
            error_message: None,
        },
        Err((code, message)) => PartitionResult {
            partition_id,
            error_code: code.code(),
            error_message: Some(message),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use sluice_metadata::{FIRST_STREAM_ID, MetadataRecord, PartitionImage};

    use super::*;

    /// Brokers 1, 2 and 3, and topic `t` with two partitions.
    fn cluster() -> MetadataImage {
        let mut image = MetadataImage::empty("c".into(), 1);
        for node_id in 1..=3 {
            image = apply(
                &image,
                MetadataRecord::RegisterBroker {
                    node_id,
                    endpoint: format!("h:{node_id}"),
                },
            );
        }
        apply(
            &image,
            MetadataRecord::CreateTopic {
                name: "t".into(),
                id: [7; 16],
                configs: BTreeMap::new(),
                partitions: (0..2)
                    .map(|index| PartitionImage {
                        index,
                        shard: 0,
                        stream_id: FIRST_STREAM_ID + u64::from(index),
                        log_start_offset: 0,
                    })
                    .collect(),
            },
        )
    }

    fn apply(image: &MetadataImage, record: MetadataRecord) -> MetadataImage {
        image.apply(image.epoch + 1, &record).expect("applies").0
    }

    fn holder(image: &MetadataImage, partition: u32) -> i32 {
        let stream_id = image.partition("t", partition).expect("exists").stream_id;
        image.leadership(stream_id).replica.expect("held")
    }

    #[test]
    fn a_replica_list_names_one_broker_or_cancels() {
        let image = cluster();
        assert_eq!(
            move_command(&image, "t", 1, Some(&[2])),
            Ok(MetadataCommand::MovePartition {
                topic: "t".into(),
                partition: 1,
                target: Some(2),
            })
        );
        assert_eq!(
            move_command(&image, "t", 0, None),
            Ok(MetadataCommand::MovePartition {
                topic: "t".into(),
                partition: 0,
                target: None,
            })
        );
        for replicas in [&[][..], &[1, 2][..], &[2, 2][..]] {
            let (code, message) = move_command(&image, "t", 0, Some(replicas)).unwrap_err();
            assert_eq!(code, ErrorCode::InvalidReplicaAssignment);
            assert!(message.contains("exactly one broker"), "{message}");
        }
        for (topic, partition) in [("t", 2), ("t", -1), ("u", 0)] {
            let refusal = move_command(&image, topic, partition, Some(&[1])).unwrap_err();
            assert_eq!(
                refusal.0,
                ErrorCode::UnknownTopicOrPartition,
                "{topic}-{partition}"
            );
        }
    }

    #[test]
    fn a_pending_move_is_listed_as_target_added_and_holder_removed() {
        let image = cluster();
        assert!(ongoing_moves(&image, None).is_empty());
        let from = holder(&image, 1);
        let to = if from == 3 { 2 } else { 3 };
        let image = apply(
            &image,
            MetadataRecord::MovePartition {
                stream_id: FIRST_STREAM_ID + 1,
                target: Some(to),
            },
        );
        let expected = vec![OngoingTopicReassignment {
            name: "t".into(),
            partitions: vec![OngoingPartitionReassignment {
                partition_index: 1,
                replicas: vec![to, from],
                adding_replicas: vec![to],
                removing_replicas: vec![from],
            }],
        }];
        assert_eq!(ongoing_moves(&image, None), expected);
        let named = |name: &str, partition_indexes: Vec<i32>| ListPartitionReassignmentsTopics {
            name: name.into(),
            partition_indexes,
        };
        assert_eq!(
            ongoing_moves(&image, Some(&[named("t", vec![0, 1, 1, 9, -1])])),
            expected,
            "partitions not moving, unknown or named twice"
        );
        assert!(ongoing_moves(&image, Some(&[named("t", vec![0])])).is_empty());
        assert!(ongoing_moves(&image, Some(&[named("u", vec![1])])).is_empty());
    }

    #[test]
    fn a_leader_needs_no_election_and_an_offline_partition_has_none_to_elect() {
        let image = cluster();
        assert_eq!(
            election(&image, "t", 0, ELECTION_PREFERRED).unwrap_err().0,
            ErrorCode::ElectionNotNeeded
        );
        assert_eq!(
            election(&image, "t", 5, ELECTION_PREFERRED).unwrap_err().0,
            ErrorCode::UnknownTopicOrPartition
        );
        let fenced = holder(&image, 0);
        let image = apply(
            &image,
            MetadataRecord::SetBrokerFenced {
                node_id: fenced,
                fenced: true,
            },
        );
        assert_eq!(
            election(&image, "t", 0, ELECTION_PREFERRED).unwrap_err().0,
            ErrorCode::PreferredLeaderNotAvailable
        );
        assert_eq!(
            election(&image, "t", 0, ELECTION_UNCLEAN).unwrap_err().0,
            ErrorCode::EligibleLeadersNotAvailable
        );
    }
}
