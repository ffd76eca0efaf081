//! `sluice broker drain | undrain`: empty a broker of partitions before it is removed, and
//! give it partitions again.
//!
//! Draining adds the broker to the cluster's `drained.broker.ids` (IncrementalAlterConfigs
//! APPEND on the cluster's broker configs, as `kafka-configs.sh --entity-default` would):
//! the controller's balancer then moves its partitions to the other live brokers, a few at
//! a time, and places no new one on it. `drain` waits until Metadata shows it leading none.

use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::json;
use sluice_net::messages::incremental_alter_configs_request::AlterableConfig;
use sluice_perf::client::Connection;

use super::topic::{incremental_alter_configs, metadata};
use super::{Table, Target, run};

/// The broker config listing the drained brokers.
const DRAINED_CONFIG: &str = "drained.broker.ids";
/// Kafka's BROKER resource type; an empty name is the cluster-wide default.
const BROKER_RESOURCE: i8 = 4;
/// IncrementalAlterConfigs' APPEND and SUBTRACT operations on list configs.
const OP_APPEND: i8 = 2;
const OP_SUBTRACT: i8 = 3;
/// How often `drain` asks Metadata whether the broker still leads partitions.
const DRAIN_POLL_INTERVAL: Duration = Duration::from_millis(100);

/// `sluice broker ...`
#[derive(Debug, clap::Args)]
pub struct BrokerArgs {
    #[command(subcommand)]
    pub command: BrokerCommand,
    #[command(flatten)]
    pub target: Target,
}

/// The broker subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum BrokerCommand {
    /// Move every partition off a broker, and place none on it, so that it can be removed;
    /// waits until it leads none.
    #[command(after_help = "Example:\n  sluice broker drain 13 --brokers 127.0.0.1:9092")]
    Drain {
        /// The broker's node id.
        broker: i32,
        /// How long to wait for its partitions to move.
        #[arg(long, default_value_t = 60_000, value_name = "MS")]
        timeout_ms: u64,
    },
    /// Let a drained broker lead partitions again (the balancer evens the counts).
    #[command(after_help = "Example:\n  sluice broker undrain 13")]
    Undrain {
        /// The broker's node id.
        broker: i32,
    },
}

/// Runs `sluice broker ...`.
pub fn main(args: BrokerArgs) -> anyhow::Result<()> {
    let target = args.target.resolve()?;
    match args.command {
        BrokerCommand::Drain { broker, timeout_ms } => {
            let timeout = Duration::from_millis(timeout_ms);
            let (moved, elapsed_ms) = run(&target, |conn| async move {
                drain(&conn, broker, timeout).await
            })?;
            let mut table = Table::new(&["broker", "status", "partitions moved", "elapsed ms"]);
            table.row(vec![
                json!(broker),
                json!("drained"),
                json!(moved),
                json!(elapsed_ms),
            ]);
            table.print(target.format)
        }
        BrokerCommand::Undrain { broker } => {
            run(&target, |conn| async move {
                alter_drained(&conn, broker, OP_SUBTRACT).await
            })?;
            let mut table = Table::new(&["broker", "status"]);
            table.row(vec![json!(broker), json!("undrained")]);
            table.print(target.format)
        }
    }
}

/// The partitions `broker` leads, as Metadata shows them.
async fn led_by(conn: &Connection, broker: i32) -> anyhow::Result<usize> {
    let response = metadata(conn, None).await?;
    Ok(response
        .topics
        .iter()
        .flat_map(|t| t.partitions.iter())
        .filter(|p| p.leader_id == broker)
        .count())
}

/// Drains `broker` and waits until it leads nothing: (partitions it led, milliseconds).
async fn drain(conn: &Connection, broker: i32, timeout: Duration) -> anyhow::Result<(usize, u128)> {
    let response = metadata(conn, None).await?;
    if !response.brokers.iter().any(|b| b.node_id == broker) {
        bail!("broker {broker} is not a live broker of this cluster");
    }
    let led = led_by(conn, broker).await?;
    let started = Instant::now();
    alter_drained(conn, broker, OP_APPEND).await?;
    loop {
        let left = led_by(conn, broker).await?;
        if left == 0 {
            return Ok((led, started.elapsed().as_millis()));
        }
        if started.elapsed() >= timeout {
            bail!(
                "broker {broker} still leads {left} partitions after {} ms (it stays drained: \
                 the moves go on; `sluice partition moves` lists them)",
                timeout.as_millis()
            );
        }
        tokio::time::sleep(DRAIN_POLL_INTERVAL).await;
    }
}

/// Adds `broker` to `drained.broker.ids` (APPEND) or removes it (SUBTRACT).
async fn alter_drained(conn: &Connection, broker: i32, operation: i8) -> anyhow::Result<()> {
    let configs = vec![AlterableConfig {
        name: DRAINED_CONFIG.to_string(),
        config_operation: operation,
        value: Some(broker.to_string()),
    }];
    let what = format!("setting {DRAINED_CONFIG}");
    incremental_alter_configs(conn, BROKER_RESOURCE, String::new(), configs, &what).await
}
