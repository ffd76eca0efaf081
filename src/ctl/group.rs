//! `sluice group`: list, describe (members, committed offsets, lag), seek, delete.

use std::collections::BTreeMap;

use anyhow::{Context, bail};
use serde_json::json;
use sluice_net::messages::delete_groups_request::DeleteGroupsRequest;
use sluice_net::messages::describe_groups_request::DescribeGroupsRequest;
use sluice_net::messages::list_groups_request::ListGroupsRequest;
use sluice_net::messages::offset_commit_request::{
    OffsetCommitRequest, OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use sluice_net::messages::offset_fetch_request::{OffsetFetchRequest, OffsetFetchRequestGroup};
use sluice_net::{Request, Response};
use sluice_perf::client::{Connection, EARLIEST_TIMESTAMP, LATEST_TIMESTAMP, list_offsets};

use super::topic::metadata;
use super::{Format, Resolved, Table, Target, check, run};

/// `sluice group ...`
#[derive(Debug, clap::Args)]
pub struct GroupArgs {
    #[command(subcommand)]
    pub command: GroupCommand,
    #[command(flatten)]
    pub target: Target,
}

/// The group subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum GroupCommand {
    /// List consumer groups with their state.
    #[command(after_help = "Example:\n  sluice group list")]
    List,
    /// A group's state, members, and per partition its committed offset, end offset and lag.
    #[command(after_help = "Example:\n  sluice group describe billing --format json")]
    Describe {
        /// Group id.
        group: String,
    },
    /// Move an empty group's committed offsets of a topic to its start, its end, or an offset.
    #[command(after_help = "Example:\n  sluice group seek billing --topic orders --to start")]
    Seek {
        /// Group id.
        group: String,
        /// The topic whose offsets move (every partition of it).
        #[arg(long)]
        topic: String,
        /// start, end, or an offset.
        #[arg(long)]
        to: String,
    },
    /// Delete groups (they must have no members).
    #[command(after_help = "Example:\n  sluice group delete billing old-reports")]
    Delete {
        /// Group ids.
        #[arg(required = true)]
        groups: Vec<String>,
    },
}

/// Runs `sluice group ...`.
pub fn main(args: GroupArgs) -> anyhow::Result<()> {
    let target = args.target.resolve()?;
    let format = target.format;
    match args.command {
        GroupCommand::List => {
            let groups = run(&target, |conn| async move {
                let request = Request::ListGroups(ListGroupsRequest::default());
                let Response::ListGroups(response) = conn.request(request).await? else {
                    bail!("ListGroups: unexpected response type");
                };
                check(response.error_code, || "listing groups".to_string())?;
                Ok(response.groups)
            })?;
            let mut table = Table::new(&["group", "state", "protocol type"]);
            let mut groups: Vec<_> = groups.into_iter().collect();
            groups.sort_by(|a, b| a.group_id.cmp(&b.group_id));
            for g in groups {
                table.row(vec![
                    json!(g.group_id),
                    json!(g.group_state),
                    json!(g.protocol_type),
                ]);
            }
            table.print(format)
        }
        GroupCommand::Describe { group } => describe(&target, &group),
        GroupCommand::Seek { group, topic, to } => {
            let (name, topic_name) = (group.clone(), topic.clone());
            let moved = run(&target, |conn| async move {
                seek(&conn, &name, &topic_name, &to).await
            })?;
            let mut table = Table::new(&["group", "topic", "partition", "offset"]);
            for (partition, offset) in moved {
                table.row(vec![
                    json!(group),
                    json!(topic),
                    json!(partition),
                    json!(offset),
                ]);
            }
            table.print(format)
        }
        GroupCommand::Delete { groups } => {
            let names = groups.clone();
            run(&target, |conn| async move {
                let request = Request::DeleteGroups(DeleteGroupsRequest {
                    groups_names: names,
                });
                let Response::DeleteGroups(response) = conn.request(request).await? else {
                    bail!("DeleteGroups: unexpected response type");
                };
                for result in &response.results {
                    check(result.error_code, || {
                        format!("deleting group {}", result.group_id)
                    })?;
                }
                Ok(())
            })?;
            let mut table = Table::new(&["group", "status"]);
            for g in groups {
                table.row(vec![json!(g), json!("deleted")]);
            }
            table.print(format)
        }
    }
}

/// The group's committed offsets: (topic, partition) → offset.
async fn committed(conn: &Connection, group: &str) -> anyhow::Result<BTreeMap<(String, i32), i64>> {
    let request = Request::OffsetFetch(OffsetFetchRequest {
        group_id: group.to_string(),
        topics: None,
        groups: vec![OffsetFetchRequestGroup {
            group_id: group.to_string(),
            member_id: None,
            member_epoch: -1,
            topics: None,
        }],
        require_stable: false,
    });
    let Response::OffsetFetch(response) = conn.request(request).await? else {
        bail!("OffsetFetch: unexpected response type");
    };
    let mut offsets = BTreeMap::new();
    // Versions up to 7 answer in `topics`, 8 and later per group in `groups`.
    check(response.error_code, || format!("offsets of group {group}"))?;
    for topic in response.topics {
        for p in topic.partitions {
            if p.error_code == 0 && p.committed_offset >= 0 {
                offsets.insert((topic.name.clone(), p.partition_index), p.committed_offset);
            }
        }
    }
    for g in response.groups {
        check(g.error_code, || format!("offsets of group {group}"))?;
        for topic in g.topics {
            for p in topic.partitions {
                if p.error_code == 0 && p.committed_offset >= 0 {
                    offsets.insert((topic.name.clone(), p.partition_index), p.committed_offset);
                }
            }
        }
    }
    Ok(offsets)
}

fn describe(target: &Resolved, group: &str) -> anyhow::Result<()> {
    let name = group.to_string();
    let (described, lags) = run(target, |conn| async move {
        let request = Request::DescribeGroups(DescribeGroupsRequest {
            groups: vec![name.clone()],
            include_authorized_operations: false,
        });
        let Response::DescribeGroups(response) = conn.request(request).await? else {
            bail!("DescribeGroups: unexpected response type");
        };
        let described = response
            .groups
            .into_iter()
            .next()
            .context("DescribeGroups answered no group")?;
        check(described.error_code, || format!("describing group {name}"))?;
        let committed = committed(&conn, &name).await?;
        let mut by_topic: BTreeMap<String, Vec<i32>> = BTreeMap::new();
        for (topic, partition) in committed.keys() {
            by_topic.entry(topic.clone()).or_default().push(*partition);
        }
        let mut lags = Vec::new();
        for (topic, partitions) in by_topic {
            let ends = list_offsets(&conn, &topic, &partitions, LATEST_TIMESTAMP).await?;
            for partition in partitions {
                let at = committed[&(topic.clone(), partition)];
                let end = ends[&partition];
                lags.push((topic.clone(), partition, at, end, (end - at).max(0)));
            }
        }
        Ok((described, lags))
    })?;
    let mut members = Table::new(&["member id", "client id", "host"]);
    for m in &described.members {
        members.row(vec![
            json!(m.member_id),
            json!(m.client_id),
            json!(m.client_host),
        ]);
    }
    let mut offsets = Table::new(&[
        "topic",
        "partition",
        "committed offset",
        "end offset",
        "lag",
    ]);
    for (topic, partition, at, end, lag) in &lags {
        offsets.row(vec![
            json!(topic),
            json!(partition),
            json!(at),
            json!(end),
            json!(lag),
        ]);
    }
    match target.format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "group": group,
                "state": described.group_state,
                "protocol_type": described.protocol_type,
                "members": members.to_json(),
                "offsets": offsets.to_json(),
            }))?
        ),
        Format::Text => {
            println!(
                "GROUP    {group}\nSTATE    {}\nMEMBERS  {}\n",
                described.group_state,
                described.members.len()
            );
            if !described.members.is_empty() {
                members.print(Format::Text)?;
                println!();
            }
            offsets.print(Format::Text)?;
        }
    }
    Ok(())
}

/// Commits `to` (start, end or an offset) for every partition of `topic` on behalf of the
/// empty group `group`, as Kafka's tools reset offsets; returns what was committed.
async fn seek(
    conn: &Connection,
    group: &str,
    topic: &str,
    to: &str,
) -> anyhow::Result<Vec<(i32, i64)>> {
    let response = metadata(conn, Some(topic)).await?;
    let partitions: Vec<i32> = response
        .topics
        .iter()
        .filter(|t| t.error_code == 0)
        .flat_map(|t| t.partitions.iter().map(|p| p.partition_index))
        .collect();
    if partitions.is_empty() {
        bail!("topic {topic} not found");
    }
    let targets: BTreeMap<i32, i64> = match to {
        "start" => list_offsets(conn, topic, &partitions, EARLIEST_TIMESTAMP)
            .await?
            .into_iter()
            .collect(),
        "end" => list_offsets(conn, topic, &partitions, LATEST_TIMESTAMP)
            .await?
            .into_iter()
            .collect(),
        other => match other.parse::<i64>() {
            Ok(offset) if offset >= 0 => partitions.iter().map(|p| (*p, offset)).collect(),
            _ => bail!("--to {other:?}: expected start, end or an offset (0 or more)"),
        },
    };
    // A commit with no generation is only accepted from outside an empty group, as Kafka
    // accepts it; a group with members answers UNKNOWN_MEMBER_ID or REBALANCE_IN_PROGRESS.
    let request = Request::OffsetCommit(OffsetCommitRequest {
        group_id: group.to_string(),
        generation_id_or_member_epoch: -1,
        member_id: String::new(),
        group_instance_id: None,
        retention_time_ms: -1,
        topics: vec![OffsetCommitRequestTopic {
            name: topic.to_string(),
            partitions: targets
                .iter()
                .map(|(p, offset)| OffsetCommitRequestPartition {
                    partition_index: *p,
                    committed_offset: *offset,
                    committed_leader_epoch: -1,
                    commit_timestamp: -1,
                    committed_metadata: None,
                })
                .collect(),
        }],
    });
    let Response::OffsetCommit(response) = conn.request(request).await? else {
        bail!("OffsetCommit: unexpected response type");
    };
    for t in &response.topics {
        for p in &t.partitions {
            check(p.error_code, || {
                format!(
                    "moving {group}'s offset of {topic}/{} (a group must be empty to seek)",
                    p.partition_index
                )
            })?;
        }
    }
    Ok(targets.into_iter().collect())
}
