//! `sluice partition`: move a partition to another broker, cancel a move, list pending moves.
//!
//! Sluice keeps one copy of each partition, in shared object storage, so a move hands the
//! partition from the broker leading it to another one: AlterPartitionReassignments with a
//! replica list of that one broker. The old leader seals the partition and uploads its WAL
//! tail, then the new one leads it one leader epoch up; `move` waits for Metadata to show it.

use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::json;
use sluice_net::messages::alter_partition_reassignments_request::{
    AlterPartitionReassignmentsRequest, ReassignablePartition, ReassignableTopic,
};
use sluice_net::messages::list_partition_reassignments_request::ListPartitionReassignmentsRequest;
use sluice_net::messages::metadata_response::MetadataResponsePartition;
use sluice_net::{Request, Response};
use sluice_perf::client::{Connection, error_name};

use super::topic::metadata;
use super::{Table, Target, run};

/// How often `move` asks Metadata whether the new leader is in place.
const MOVE_POLL_INTERVAL: Duration = Duration::from_millis(20);

/// `sluice partition ...`
#[derive(Debug, clap::Args)]
pub struct PartitionArgs {
    #[command(subcommand)]
    pub command: PartitionCommand,
    #[command(flatten)]
    pub target: Target,
}

/// The partition subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum PartitionCommand {
    /// Move a partition to another broker and wait until that broker leads it; or, with
    /// --cancel, cancel the partition's pending move.
    #[command(
        name = "move",
        after_help = "Examples:\n  sluice partition move orders 0 --to 2\n  sluice partition move orders 0 --cancel"
    )]
    Move {
        /// Topic name.
        topic: String,
        /// Partition number.
        partition: i32,
        /// The broker to move the partition to.
        #[arg(long, value_name = "BROKER", required_unless_present = "cancel")]
        to: Option<i32>,
        /// Cancel the partition's pending move instead.
        #[arg(long, conflicts_with = "to")]
        cancel: bool,
        /// How long to wait for the new leader to show in Metadata.
        #[arg(long, default_value_t = 30_000, value_name = "MS")]
        timeout_ms: u64,
    },
    /// List the partition moves asked for and not done yet.
    #[command(after_help = "Example:\n  sluice partition moves --format json")]
    Moves,
}

/// Runs `sluice partition ...`.
pub fn main(args: PartitionArgs) -> anyhow::Result<()> {
    let target = args.target.resolve()?;
    match args.command {
        PartitionCommand::Move {
            topic,
            partition,
            to,
            cancel,
            timeout_ms,
        } => match (to, cancel) {
            (_, true) => {
                let name = topic.clone();
                run(&target, |conn| async move {
                    alter(&conn, &name, partition, None).await
                })?;
                let mut table = Table::new(&["topic", "partition", "status"]);
                table.row(vec![
                    json!(topic),
                    json!(partition),
                    json!("move cancelled"),
                ]);
                table.print(target.format)
            }
            (Some(to), false) => {
                let timeout = Duration::from_millis(timeout_ms);
                let moved = run(&target, |conn| async move {
                    move_partition(&conn, &topic, partition, to, timeout).await
                })?;
                let mut table = Table::new(&[
                    "topic",
                    "partition",
                    "old leader",
                    "new leader",
                    "leader epoch",
                    "elapsed ms",
                ]);
                table.row(vec![
                    json!(moved.topic),
                    json!(moved.partition),
                    json!(moved.old_leader),
                    json!(moved.new_leader),
                    json!(moved.leader_epoch),
                    json!(moved.elapsed_ms),
                ]);
                table.print(target.format)
            }
            (None, false) => bail!("--to BROKER or --cancel is required"),
        },
        PartitionCommand::Moves => {
            let response = run(&target, |conn| async move {
                let request =
                    Request::ListPartitionReassignments(ListPartitionReassignmentsRequest {
                        topics: None,
                        ..Default::default()
                    });
                let Response::ListPartitionReassignments(response) = conn.request(request).await?
                else {
                    bail!("ListPartitionReassignments: unexpected response type");
                };
                Ok(response)
            })?;
            if response.error_code != 0 {
                bail!(
                    "listing moves: {}{}",
                    error_name(response.error_code),
                    message(response.error_message.as_deref())
                );
            }
            let mut table = Table::new(&["topic", "partition", "from", "to"]);
            for topic in &response.topics {
                for p in &topic.partitions {
                    table.row(vec![
                        json!(topic.name),
                        json!(p.partition_index),
                        json!(p.removing_replicas.first()),
                        json!(p.adding_replicas.first()),
                    ]);
                }
            }
            table.print(target.format)
        }
    }
}

/// A move done: who led the partition before and after, and how long it took from the
/// request to the new leader showing in Metadata.
struct Moved {
    topic: String,
    partition: i32,
    old_leader: i32,
    new_leader: i32,
    leader_epoch: i32,
    elapsed_ms: u128,
}

/// Asks for the move of `topic`/`partition` to broker `to`, then polls Metadata until `to`
/// leads it (or `timeout` passes).
async fn move_partition(
    conn: &Connection,
    topic: &str,
    partition: i32,
    to: i32,
    timeout: Duration,
) -> anyhow::Result<Moved> {
    let old_leader = partition_metadata(conn, topic, partition).await?.leader_id;
    let started = Instant::now();
    alter(conn, topic, partition, Some(to)).await?;
    loop {
        let now = partition_metadata(conn, topic, partition).await?;
        if now.leader_id == to {
            return Ok(Moved {
                topic: topic.to_string(),
                partition,
                old_leader,
                new_leader: to,
                leader_epoch: now.leader_epoch,
                elapsed_ms: started.elapsed().as_millis(),
            });
        }
        if started.elapsed() >= timeout {
            bail!(
                "moving {topic}/{partition} to broker {to}: broker {} still leads it after {} ms \
                 (the move stays pending: see `sluice partition moves`)",
                now.leader_id,
                timeout.as_millis()
            );
        }
        tokio::time::sleep(MOVE_POLL_INTERVAL).await;
    }
}

/// AlterPartitionReassignments of one partition: to broker `to`, or a cancel when None.
async fn alter(
    conn: &Connection,
    topic: &str,
    partition: i32,
    to: Option<i32>,
) -> anyhow::Result<()> {
    let request = Request::AlterPartitionReassignments(AlterPartitionReassignmentsRequest {
        topics: vec![ReassignableTopic {
            name: topic.to_string(),
            partitions: vec![ReassignablePartition {
                partition_index: partition,
                replicas: to.map(|broker| vec![broker]),
            }],
        }],
        ..Default::default()
    });
    let Response::AlterPartitionReassignments(response) = conn.request(request).await? else {
        bail!("AlterPartitionReassignments: unexpected response type");
    };
    let what = match to {
        Some(to) => format!("moving {topic}/{partition} to broker {to}"),
        None => format!("cancelling the move of {topic}/{partition}"),
    };
    if response.error_code != 0 {
        bail!(
            "{what}: {}{}",
            error_name(response.error_code),
            message(response.error_message.as_deref())
        );
    }
    let result = response
        .responses
        .iter()
        .flat_map(|t| &t.partitions)
        .find(|p| p.partition_index == partition)
        .ok_or_else(|| anyhow::anyhow!("{what}: partition missing from the response"))?;
    if result.error_code != 0 {
        bail!(
            "{what}: {}{}",
            error_name(result.error_code),
            message(result.error_message.as_deref())
        );
    }
    Ok(())
}

/// `topic`/`partition` as Metadata shows it now.
async fn partition_metadata(
    conn: &Connection,
    topic: &str,
    partition: i32,
) -> anyhow::Result<MetadataResponsePartition> {
    let response = metadata(conn, Some(topic)).await?;
    let Some(found) = response.topics.into_iter().next() else {
        bail!("Metadata of {topic}: topic missing from the response");
    };
    if found.error_code != 0 {
        bail!("topic {topic}: {}", error_name(found.error_code));
    }
    found
        .partitions
        .into_iter()
        .find(|p| p.partition_index == partition)
        .ok_or_else(|| anyhow::anyhow!("topic {topic} has no partition {partition}"))
}

/// `: MESSAGE` when the broker sent one.
fn message(message: Option<&str>) -> String {
    message.map(|m| format!(": {m}")).unwrap_or_default()
}
