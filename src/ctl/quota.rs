//! `sluice quota set | delete | list`: client quotas per user and client id, through
//! AlterClientQuotas and DescribeClientQuotas as `kafka-configs.sh --entity-type users
//! --entity-type clients` uses them.

use anyhow::bail;
use serde_json::json;
use sluice_metadata::QuotaKey;
use sluice_net::messages::alter_client_quotas_request::{
    AlterClientQuotasRequest, EntityData, EntryData, OpData,
};
use sluice_net::messages::describe_client_quotas_request::{
    ComponentData, DescribeClientQuotasRequest,
};
use sluice_net::messages::describe_client_quotas_response::EntryData as DescribedEntry;
use sluice_net::{Request, Response};
use sluice_perf::client::Connection;

use super::{Table, Target, check, run, with_message};

/// Kafka's DescribeClientQuotas match types.
const MATCH_EXACT: i8 = 0;
const MATCH_DEFAULT: i8 = 1;

/// `sluice quota ...`
#[derive(Debug, clap::Args)]
pub struct QuotaArgs {
    #[command(subcommand)]
    pub command: QuotaCommand,
    #[command(flatten)]
    pub target: Target,
}

/// The entity a quota is for: a user, a client id or both, each named or the default.
#[derive(Debug, Clone, clap::Args)]
pub struct EntityArgs {
    /// The user (a principal's name without `User:`; ANONYMOUS on a plaintext listener).
    #[arg(long, conflicts_with = "user_default")]
    user: Option<String>,
    /// The default user: every user without a quota of its own.
    #[arg(long)]
    user_default: bool,
    /// The client id.
    #[arg(long, conflicts_with = "client_id_default")]
    client_id: Option<String>,
    /// The default client id: every client id without a quota of its own.
    #[arg(long)]
    client_id_default: bool,
}

/// The quota subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum QuotaCommand {
    /// Set an entity's quotas (those not given keep their value).
    #[command(
        after_help = "Examples:\n  sluice quota set --client-id loader --producer-byte-rate 10000000\n  \
                      sluice quota set --user alice --client-id-default --request-percentage 50"
    )]
    Set {
        #[command(flatten)]
        entity: EntityArgs,
        /// Bytes per second of produce requests.
        #[arg(long)]
        producer_byte_rate: Option<u64>,
        /// Bytes per second of fetched records.
        #[arg(long)]
        consumer_byte_rate: Option<u64>,
        /// Percent of one shard's time per second spent on the client's requests.
        #[arg(long)]
        request_percentage: Option<f64>,
    },
    /// Remove an entity's quotas: those named, or every one.
    #[command(after_help = "Example:\n  sluice quota delete --client-id loader")]
    Delete {
        #[command(flatten)]
        entity: EntityArgs,
        /// The keys to remove (producer_byte_rate, consumer_byte_rate, request_percentage).
        /// [default: every key]
        #[arg(long = "key", value_name = "KEY")]
        keys: Vec<String>,
    },
    /// List the quotas, of every entity or of those matching the filter (an entity's parts
    /// not named match anything).
    #[command(after_help = "Examples:\n  sluice quota list\n  sluice quota list --user alice")]
    List {
        #[command(flatten)]
        entity: EntityArgs,
    },
}

/// Runs `sluice quota ...`.
pub fn main(args: QuotaArgs) -> anyhow::Result<()> {
    let target = args.target.resolve()?;
    match args.command {
        QuotaCommand::Set {
            entity,
            producer_byte_rate,
            consumer_byte_rate,
            request_percentage,
        } => {
            let ops: Vec<OpData> = [
                (
                    QuotaKey::ProducerByteRate,
                    producer_byte_rate.map(|v| v as f64),
                ),
                (
                    QuotaKey::ConsumerByteRate,
                    consumer_byte_rate.map(|v| v as f64),
                ),
                (QuotaKey::RequestPercentage, request_percentage),
            ]
            .into_iter()
            .filter_map(|(key, value)| {
                Some(OpData {
                    key: key.name().to_string(),
                    value: value?,
                    remove: false,
                })
            })
            .collect();
            if ops.is_empty() {
                bail!(
                    "nothing to set: give --producer-byte-rate, --consumer-byte-rate or \
                     --request-percentage"
                );
            }
            altered(&target, &entity, ops, "set")
        }
        QuotaCommand::Delete { entity, keys } => {
            let keys: Vec<String> = if keys.is_empty() {
                QuotaKey::ALL.iter().map(|k| k.name().to_string()).collect()
            } else {
                keys
            };
            let ops = keys
                .into_iter()
                .map(|key| OpData {
                    key,
                    value: 0.0,
                    remove: true,
                })
                .collect();
            altered(&target, &entity, ops, "deleted")
        }
        QuotaCommand::List { entity } => {
            let filter = entity.filter();
            let entries = run(&target, |conn| async move { describe(&conn, filter).await })?;
            let mut table = Table::new(&["user", "client_id", "key", "value"]);
            for entry in entries {
                let part = |kind: &str| {
                    entry
                        .entity
                        .iter()
                        .find(|e| e.entity_type == kind)
                        .map(|e| e.entity_name.clone().unwrap_or_else(|| "<default>".into()))
                };
                let (user, client_id) = (part("user"), part("client-id"));
                for value in &entry.values {
                    table.row(vec![
                        json!(user.clone().unwrap_or_default()),
                        json!(client_id.clone().unwrap_or_default()),
                        json!(value.key),
                        json!(value.value),
                    ]);
                }
            }
            table.print(target.format)
        }
    }
}

impl EntityArgs {
    /// The entity as AlterClientQuotas names it; an entity of neither part is refused here.
    fn entity(&self) -> anyhow::Result<Vec<EntityData>> {
        let mut parts = Vec::new();
        if self.user.is_some() || self.user_default {
            parts.push(EntityData {
                entity_type: "user".to_string(),
                entity_name: self.user.clone(),
            });
        }
        if self.client_id.is_some() || self.client_id_default {
            parts.push(EntityData {
                entity_type: "client-id".to_string(),
                entity_name: self.client_id.clone(),
            });
        }
        if parts.is_empty() {
            bail!("name the entity: --user, --user-default, --client-id or --client-id-default");
        }
        Ok(parts)
    }

    /// The entity as a DescribeClientQuotas filter (exact names, defaults).
    fn filter(&self) -> Vec<ComponentData> {
        let component = |kind: &str, name: &Option<String>| ComponentData {
            entity_type: kind.to_string(),
            match_type: if name.is_some() {
                MATCH_EXACT
            } else {
                MATCH_DEFAULT
            },
            match_: name.clone(),
        };
        let mut filter = Vec::new();
        if self.user.is_some() || self.user_default {
            filter.push(component("user", &self.user));
        }
        if self.client_id.is_some() || self.client_id_default {
            filter.push(component("client-id", &self.client_id));
        }
        filter
    }

    /// The entity as the table prints it.
    fn describe(&self) -> (String, String) {
        let name = |named: &Option<String>, default: bool| match (named, default) {
            (Some(name), _) => name.clone(),
            (None, true) => "<default>".to_string(),
            (None, false) => String::new(),
        };
        (
            name(&self.user, self.user_default),
            name(&self.client_id, self.client_id_default),
        )
    }
}

/// One AlterClientQuotas of `ops` for the entity, then its table line.
fn altered(
    target: &super::Resolved,
    entity: &EntityArgs,
    ops: Vec<OpData>,
    status: &str,
) -> anyhow::Result<()> {
    let parts = entity.entity()?;
    let keys: Vec<String> = ops.iter().map(|op| op.key.clone()).collect();
    let request = Request::AlterClientQuotas(AlterClientQuotasRequest {
        entries: vec![EntryData { entity: parts, ops }],
        validate_only: false,
    });
    run(target, |conn| async move { alter(&conn, request).await })?;
    let (user, client_id) = entity.describe();
    let mut table = Table::new(&["user", "client_id", "keys", "status"]);
    table.row(vec![
        json!(user),
        json!(client_id),
        json!(keys.join(",")),
        json!(status),
    ]);
    table.print(target.format)
}

/// AlterClientQuotas; fails on an entity refused, with the broker's reason.
async fn alter(conn: &Connection, request: Request) -> anyhow::Result<()> {
    let Response::AlterClientQuotas(response) = conn.request(request).await? else {
        bail!("AlterClientQuotas: unexpected response type");
    };
    for entry in &response.entries {
        check(entry.error_code, || {
            with_message("quota", entry.error_message.as_deref())
        })?;
    }
    Ok(())
}

/// DescribeClientQuotas of the entities matching `components` (every one when empty).
async fn describe(
    conn: &Connection,
    components: Vec<ComponentData>,
) -> anyhow::Result<Vec<DescribedEntry>> {
    let request = Request::DescribeClientQuotas(DescribeClientQuotasRequest {
        components,
        strict: false,
    });
    let Response::DescribeClientQuotas(response) = conn.request(request).await? else {
        bail!("DescribeClientQuotas: unexpected response type");
    };
    check(response.error_code, || {
        with_message("describing quotas", response.error_message.as_deref())
    })?;
    Ok(response.entries.unwrap_or_default())
}
