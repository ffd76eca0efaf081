//! `sluice cluster`: the brokers, whether every partition has a leader, and the controller
//! quorum.

use std::collections::BTreeMap;

use anyhow::bail;
use serde_json::json;
use sluice_net::messages::describe_quorum_request::{
    DescribeQuorumRequest, PartitionData, TopicData,
};
use sluice_net::messages::describe_quorum_response::DescribeQuorumResponse;
use sluice_net::{Request, Response};

use super::topic::metadata;
use super::{Table, Target, run};

/// `sluice cluster ...`
#[derive(Debug, clap::Args)]
pub struct ClusterArgs {
    #[command(subcommand)]
    pub command: ClusterCommand,
    #[command(flatten)]
    pub target: Target,
}

/// The cluster subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum ClusterCommand {
    /// The cluster id, the controller and the brokers.
    #[command(after_help = "Example:\n  sluice cluster info --brokers 127.0.0.1:9092")]
    Info,
    /// Healthy when every broker answers and every partition has a leader; exits 1 otherwise.
    #[command(after_help = "Example:\n  sluice cluster health && echo healthy")]
    Health,
    /// The controller quorum (leader, term, each voter's and observer's log position and
    /// lag behind the leader) and each broker's partition count.
    #[command(after_help = "Example:\n  sluice cluster status --format json")]
    Status,
}

/// Runs `sluice cluster ...`.
pub fn main(args: ClusterArgs) -> anyhow::Result<()> {
    let target = args.target.resolve()?;
    let response = run(&target, |conn| async move { metadata(&conn, None).await })?;
    match args.command {
        ClusterCommand::Info => {
            let mut table = Table::new(&["node id", "host", "port", "controller"]);
            for broker in &response.brokers {
                table.row(vec![
                    json!(broker.node_id),
                    json!(broker.host),
                    json!(broker.port),
                    json!(broker.node_id == response.controller_id),
                ]);
            }
            match target.format {
                super::Format::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&json!({
                        "cluster_id": response.cluster_id,
                        "controller_id": response.controller_id,
                        "brokers": table.to_json(),
                    }))?
                ),
                super::Format::Text => {
                    println!(
                        "CLUSTER     {}\nCONTROLLER  {}\n",
                        response.cluster_id.as_deref().unwrap_or("-"),
                        response.controller_id
                    );
                    table.print(super::Format::Text)?;
                }
            }
            Ok(())
        }
        ClusterCommand::Status => status(&target, &response),
        ClusterCommand::Health => {
            let partitions: usize = response.topics.iter().map(|t| t.partitions.len()).sum();
            let leaderless: Vec<String> = response
                .topics
                .iter()
                .flat_map(|t| {
                    t.partitions
                        .iter()
                        .filter(|p| p.leader_id < 0 || p.error_code != 0)
                        .map(move |p| {
                            format!("{}/{}", t.name.as_deref().unwrap_or("?"), p.partition_index)
                        })
                })
                .collect();
            let healthy = !response.brokers.is_empty() && leaderless.is_empty();
            let mut table =
                Table::new(&["healthy", "brokers", "partitions", "leaderless partitions"]);
            table.row(vec![
                json!(healthy),
                json!(response.brokers.len()),
                json!(partitions),
                json!(leaderless),
            ]);
            table.print(target.format)?;
            if !healthy {
                std::process::exit(1);
            }
            Ok(())
        }
    }
}

/// `sluice cluster status`: DescribeQuorum (as `kafka-metadata-quorum describe --status`
/// sends it) and the partition leaders of Metadata.
fn status(
    target: &super::Resolved,
    metadata: &sluice_net::messages::metadata_response::MetadataResponse,
) -> anyhow::Result<()> {
    let quorum = run(target, |conn| async move {
        let request = Request::DescribeQuorum(DescribeQuorumRequest {
            topics: vec![TopicData {
                topic_name: "__cluster_metadata".to_string(),
                partitions: vec![PartitionData { partition_index: 0 }],
            }],
        });
        let Response::DescribeQuorum(response) = conn.request(request).await? else {
            bail!("DescribeQuorum: unexpected response type");
        };
        Ok(response)
    })?;
    let partition = quorum_partition(&quorum)?;
    let mut nodes = Table::new(&["node id", "role", "log end", "lag"]);
    let replicas = partition
        .current_voters
        .iter()
        .map(|r| (r, "voter"))
        .chain(partition.observers.iter().map(|r| (r, "observer")));
    for (replica, kind) in replicas {
        let role = if replica.replica_id == partition.leader_id {
            "leader"
        } else {
            kind
        };
        let lag = (replica.log_end_offset >= 0)
            .then(|| (partition.high_watermark - replica.log_end_offset).max(0));
        nodes.row(vec![
            json!(replica.replica_id),
            json!(role),
            json!(replica.log_end_offset),
            json!(lag),
        ]);
    }
    let mut led: BTreeMap<i32, usize> = metadata.brokers.iter().map(|b| (b.node_id, 0)).collect();
    for partition in metadata.topics.iter().flat_map(|t| &t.partitions) {
        *led.entry(partition.leader_id).or_default() += 1;
    }
    // Partitions whose broker is fenced (or that no broker has yet) have no leader.
    let offline = led.remove(&-1).unwrap_or(0);
    let mut brokers = Table::new(&["broker", "host", "port", "partitions led"]);
    for broker in &metadata.brokers {
        brokers.row(vec![
            json!(broker.node_id),
            json!(broker.host),
            json!(broker.port),
            json!(led.get(&broker.node_id).copied().unwrap_or(0)),
        ]);
    }
    match target.format {
        super::Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "leader_id": partition.leader_id,
                "leader_epoch": partition.leader_epoch,
                "high_watermark": partition.high_watermark,
                "quorum": nodes.to_json(),
                "brokers": brokers.to_json(),
                "offline_partitions": offline,
            }))?
        ),
        super::Format::Text => {
            println!(
                "LEADER          {}\nLEADER EPOCH    {}\nHIGH WATERMARK  {}\n",
                partition.leader_id, partition.leader_epoch, partition.high_watermark
            );
            nodes.print(super::Format::Text)?;
            println!();
            brokers.print(super::Format::Text)?;
            println!("\nOFFLINE PARTITIONS  {offline}");
        }
    }
    Ok(())
}

/// The metadata log's partition in a DescribeQuorum answer, or its error.
fn quorum_partition(
    response: &DescribeQuorumResponse,
) -> anyhow::Result<&sluice_net::messages::describe_quorum_response::PartitionData> {
    if response.error_code != 0 {
        bail!(
            "DescribeQuorum: error {}: {}",
            response.error_code,
            response.error_message.as_deref().unwrap_or("")
        );
    }
    let partition = response
        .topics
        .first()
        .and_then(|t| t.partitions.first())
        .ok_or_else(|| anyhow::anyhow!("DescribeQuorum: no partition in the answer"))?;
    if partition.error_code != 0 {
        bail!("DescribeQuorum: error {}", partition.error_code);
    }
    Ok(partition)
}
