//! How consumer-protocol groups are shown: ConsumerGroupDescribe, and their ListGroups entry
//! (type `consumer`, Kafka's consumer group states).

use sluice_metadata::MetadataImage;
use sluice_net::ErrorCode;
use sluice_net::Uuid;
use sluice_net::messages::consumer_group_describe_response::{
    Assignment as DescribedAssignment, DescribedGroup, Member, TopicPartitions,
};
use sluice_net::messages::list_groups_response::ListedGroup;

use super::ConsumerMember;
use super::assignor::{Assignment, Assignor};
use crate::group::GroupCoordinator;
use crate::group::state::Group;

impl GroupCoordinator {
    /// ConsumerGroupDescribe of one group: GROUP_ID_NOT_FOUND for an unknown or classic group.
    pub fn consumer_group_describe(&self, group_id: &str, image: &MetadataImage) -> DescribedGroup {
        let refuse = |code: ErrorCode, message: String| DescribedGroup {
            error_code: code.code(),
            error_message: Some(message),
            group_id: group_id.to_string(),
            ..Default::default()
        };
        if group_id.is_empty() {
            return refuse(ErrorCode::InvalidGroupId, "GroupId can't be empty.".into());
        }
        let groups = self.groups.borrow();
        let Some(group) = groups.get(group_id) else {
            return refuse(
                ErrorCode::GroupIdNotFound,
                format!("Group {group_id} not found."),
            );
        };
        let Some(consumer) = &group.consumer else {
            return refuse(
                ErrorCode::GroupIdNotFound,
                format!("Group {group_id} is not a consumer group."),
            );
        };
        DescribedGroup {
            group_id: group_id.to_string(),
            group_state: consumer.state().name().to_string(),
            group_epoch: consumer.group_epoch,
            assignment_epoch: consumer.assignment_epoch,
            assignor_name: consumer
                .assignor
                .unwrap_or(Assignor::DEFAULT)
                .name()
                .to_string(),
            members: consumer
                .members
                .values()
                .map(|m| describe_member(m, consumer.target.get(&m.member_id), image))
                .collect(),
            ..Default::default()
        }
    }
}

/// The ListGroups entry of `group`, whichever its protocol.
pub fn listed_group(group: &Group) -> ListedGroup {
    match &group.consumer {
        Some(consumer) => ListedGroup {
            group_id: group.id.clone(),
            protocol_type: "consumer".to_string(),
            group_state: consumer.state().name().to_string(),
            group_type: "consumer".to_string(),
        },
        None => ListedGroup {
            group_id: group.id.clone(),
            protocol_type: group.protocol_type.clone().unwrap_or_default(),
            group_state: group.state.name().to_string(),
            group_type: "classic".to_string(),
        },
    }
}

fn describe_member(
    member: &ConsumerMember,
    target: Option<&Assignment>,
    image: &MetadataImage,
) -> Member {
    Member {
        member_id: member.member_id.clone(),
        instance_id: member.instance_id.clone(),
        rack_id: member.rack_id.clone(),
        member_epoch: member.current.member_epoch,
        client_id: member.client_id.clone(),
        client_host: member.client_host.clone(),
        subscribed_topic_names: member.subscribed_topic_names.clone(),
        subscribed_topic_regex: member
            .subscribed_topic_regex
            .as_ref()
            .map(|r| r.source.clone()),
        assignment: described(&member.current.assigned, image),
        target_assignment: target.map(|t| described(t, image)).unwrap_or_default(),
    }
}

/// An assignment with topic names; topics deleted meanwhile are left out, as Kafka does.
fn described(assignment: &Assignment, image: &MetadataImage) -> DescribedAssignment {
    DescribedAssignment {
        topic_partitions: assignment
            .iter()
            .filter_map(|(id, partitions)| {
                let topic = image.topic_by_id(*id)?;
                Some(TopicPartitions {
                    topic_id: Uuid(*id),
                    topic_name: topic.name.clone(),
                    partitions: partitions.iter().copied().collect(),
                })
            })
            .collect(),
    }
}
