//! `sluice cluster`: the brokers, and whether every partition has a leader.

use serde_json::json;

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
