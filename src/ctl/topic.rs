//! `sluice topic`: create, list, describe, alter-config, delete, produce, consume.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use bytes::Bytes;
use serde_json::json;
use sluice_net::messages::describe_configs_request::{
    DescribeConfigsRequest, DescribeConfigsResource,
};
use sluice_net::messages::fetch_request::{FetchPartition, FetchRequest, FetchTopic};
use sluice_net::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig, IncrementalAlterConfigsRequest,
};
use sluice_net::messages::metadata_request::MetadataRequest;
use sluice_net::messages::metadata_response::MetadataResponse;
use sluice_net::messages::produce_request::{
    PartitionProduceData, ProduceRequest, TopicProduceData,
};
use sluice_net::record_batch::{
    Compression, RecordBatchBuilder, RecordBatchHeader, batches, decode_records,
};
use sluice_net::{Request, Response};
use sluice_perf::client::{
    Connection, EARLIEST_TIMESTAMP, LATEST_TIMESTAMP, create_topics, delete_topics, list_offsets,
};

use super::{Format, Resolved, Table, Target, check, key_value, run};

/// Kafka's ConfigResource type of a topic.
const TOPIC_RESOURCE: i8 = 2;
/// Records one Produce request carries at most.
const PRODUCE_BATCH_RECORDS_MAX: usize = 1_000;
/// Bytes of records one Produce request carries at most.
const PRODUCE_BATCH_BYTES_MAX: usize = 1 << 20;
/// Bytes one Fetch asks for per partition.
const FETCH_PARTITION_BYTES: i32 = 1 << 20;

/// `sluice topic ...`
#[derive(Debug, clap::Args)]
pub struct TopicArgs {
    #[command(subcommand)]
    pub command: TopicCommand,
    #[command(flatten)]
    pub target: Target,
}

/// The topic subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum TopicCommand {
    /// Create topics.
    #[command(
        after_help = "Example:\n  sluice topic create orders --partitions 6 -c cleanup.policy=compact"
    )]
    Create {
        /// Topic names.
        #[arg(required = true)]
        names: Vec<String>,
        /// Partitions of each topic.
        #[arg(short, long, default_value_t = 1)]
        partitions: i32,
        /// Replication factor (storage is shared: a partition has one copy whatever it is).
        #[arg(short, long, default_value_t = 1)]
        replicas: i16,
        /// A topic config, KEY=VALUE (repeat for more).
        #[arg(short = 'c', long = "config", value_name = "KEY=VALUE")]
        configs: Vec<String>,
    },
    /// List topics and their partition counts.
    #[command(after_help = "Example:\n  sluice topic list --format json")]
    List,
    /// Show a topic's partitions (leader, start and end offsets) and its configs that are not
    /// defaults.
    #[command(after_help = "Example:\n  sluice topic describe orders")]
    Describe {
        /// Topic name.
        name: String,
    },
    /// Set or remove topic configs (IncrementalAlterConfigs).
    #[command(
        name = "alter-config",
        after_help = "Example:\n  sluice topic alter-config orders --set retention.ms=3600000 --delete cleanup.policy"
    )]
    AlterConfig {
        /// Topic name.
        name: String,
        /// A config to set, KEY=VALUE (repeat for more).
        #[arg(long, value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// A config to return to its default (repeat for more).
        #[arg(long, value_name = "KEY")]
        delete: Vec<String>,
    },
    /// Delete topics.
    #[command(after_help = "Example:\n  sluice topic delete orders payments")]
    Delete {
        /// Topic names.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Produce the lines of stdin, one record each (acks=all).
    #[command(
        after_help = "Example (lines like key:value):\n  sluice topic produce orders --key-separator : < lines.txt"
    )]
    Produce {
        /// Topic name.
        name: String,
        /// Partition to produce to.
        #[arg(short, long, default_value_t = 0)]
        partition: i32,
        /// Split each line at the first SEP into key and value (otherwise: no key).
        #[arg(long, value_name = "SEP")]
        key_separator: Option<String>,
    },
    /// Print records: from each partition's start to its end at the time of the call, or the
    /// first N.
    #[command(after_help = "Example:\n  sluice topic consume orders --num 10 --format json")]
    Consume {
        /// Topic name.
        name: String,
        /// Stop after this many records (waiting for them if need be).
        #[arg(short, long, value_name = "N")]
        num: Option<usize>,
        /// Where to start: start, end, or an offset (kept within each partition's offsets).
        #[arg(short, long, default_value = "start")]
        offset: String,
        /// Only these partitions (repeat for more; default: all).
        #[arg(short, long)]
        partition: Vec<i32>,
        /// With --num, how long to wait for records before giving up.
        #[arg(long, default_value_t = 10_000, value_name = "MS")]
        timeout_ms: u64,
    },
}

/// Runs `sluice topic ...`.
pub fn main(args: TopicArgs) -> anyhow::Result<()> {
    let target = args.target.resolve()?;
    let format = target.format;
    match args.command {
        TopicCommand::Create {
            names,
            partitions,
            replicas,
            configs,
        } => {
            let configs = configs
                .iter()
                .map(|c| key_value(c))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let created = names.clone();
            run(&target, |conn| async move {
                let existing = topic_partitions(&conn, None).await?;
                if let Some(name) = created.iter().find(|n| existing.contains_key(*n)) {
                    bail!("topic {name} already exists");
                }
                create_topics(&conn, &created, partitions, replicas, &configs).await
            })?;
            let mut table = Table::new(&["topic", "status"]);
            for name in &names {
                table.row(vec![json!(name), json!("created")]);
            }
            table.print(format)
        }
        TopicCommand::List => {
            let topics = run(&target, |conn| async move {
                topic_partitions(&conn, None).await
            })?;
            let mut table = Table::new(&["name", "partitions"]);
            for (name, partitions) in topics {
                table.row(vec![json!(name), json!(partitions.len())]);
            }
            table.print(format)
        }
        TopicCommand::Describe { name } => describe(&target, &name),
        TopicCommand::AlterConfig { name, set, delete } => {
            if set.is_empty() && delete.is_empty() {
                bail!("nothing to change: give --set KEY=VALUE or --delete KEY");
            }
            let mut configs = Vec::new();
            for text in &set {
                let (key, value) = key_value(text)?;
                configs.push(AlterableConfig {
                    name: key,
                    config_operation: 0,
                    value: Some(value),
                });
            }
            for key in delete {
                configs.push(AlterableConfig {
                    name: key,
                    config_operation: 1,
                    value: None,
                });
            }
            let topic = name.clone();
            run(&target, |conn| async move {
                let what = format!("altering {topic}");
                incremental_alter_configs(&conn, TOPIC_RESOURCE, topic, configs, &what).await
            })?;
            let mut table = Table::new(&["topic", "status"]);
            table.row(vec![json!(name), json!("altered")]);
            table.print(format)
        }
        TopicCommand::Delete { names } => {
            let deleted = names.clone();
            let failures = run(&target, |conn| async move {
                delete_topics(&conn, &deleted).await
            })?;
            if !failures.is_empty() {
                bail!("deleting topics: {}", failures.join(", "));
            }
            let mut table = Table::new(&["topic", "status"]);
            for name in &names {
                table.row(vec![json!(name), json!("deleted")]);
            }
            table.print(format)
        }
        TopicCommand::Produce {
            name,
            partition,
            key_separator,
        } => produce(&target, &name, partition, key_separator.as_deref()),
        TopicCommand::Consume {
            name,
            num,
            offset,
            partition,
            timeout_ms,
        } => {
            let start = StartAt::parse(&offset)?;
            consume(
                &target,
                &name,
                &partition,
                start,
                num,
                Duration::from_millis(timeout_ms),
            )
        }
    }
}

/// Every topic (or `only` that one) with its partitions as (index, leader id), from Metadata.
async fn topic_partitions(
    conn: &Connection,
    only: Option<&str>,
) -> anyhow::Result<BTreeMap<String, Vec<(i32, i32)>>> {
    let response = metadata(conn, only).await?;
    let mut topics = BTreeMap::new();
    for topic in response.topics {
        let Some(name) = topic.name else { continue };
        check(topic.error_code, || format!("topic {name}"))?;
        let mut partitions: Vec<(i32, i32)> = topic
            .partitions
            .iter()
            .map(|p| (p.partition_index, p.leader_id))
            .collect();
        partitions.sort_unstable();
        topics.insert(name, partitions);
    }
    Ok(topics)
}

/// IncrementalAlterConfigs of one resource; a refusal fails naming `what`, Kafka's error
/// and the broker's message.
pub async fn incremental_alter_configs(
    conn: &Connection,
    resource_type: i8,
    resource_name: String,
    configs: Vec<AlterableConfig>,
    what: &str,
) -> anyhow::Result<()> {
    let request = Request::IncrementalAlterConfigs(IncrementalAlterConfigsRequest {
        resources: vec![AlterConfigsResource {
            resource_type,
            resource_name,
            configs,
        }],
        validate_only: false,
    });
    let Response::IncrementalAlterConfigs(response) = conn.request(request).await? else {
        bail!("IncrementalAlterConfigs: unexpected response type");
    };
    for r in &response.responses {
        check(r.error_code, || {
            format!(
                "{what}{}",
                r.error_message
                    .as_deref()
                    .map(|m| format!(" ({m})"))
                    .unwrap_or_default()
            )
        })?;
    }
    Ok(())
}

/// Metadata of every topic, or of `only` that one.
pub async fn metadata(conn: &Connection, only: Option<&str>) -> anyhow::Result<MetadataResponse> {
    let request = Request::Metadata(MetadataRequest {
        topics: only.map(|name| {
            vec![
                sluice_net::messages::metadata_request::MetadataRequestTopic {
                    name: Some(name.to_string()),
                    ..Default::default()
                },
            ]
        }),
        allow_auto_topic_creation: false,
        ..Default::default()
    });
    let Response::Metadata(response) = conn.request(request).await? else {
        bail!("Metadata: unexpected response type");
    };
    Ok(response)
}

fn describe(target: &Resolved, name: &str) -> anyhow::Result<()> {
    let topic = name.to_string();
    let (partitions, starts, ends, configs) = run(target, |conn| async move {
        let topics = topic_partitions(&conn, Some(&topic)).await?;
        let partitions = topics
            .get(&topic)
            .cloned()
            .with_context(|| format!("topic {topic} not found"))?;
        let indexes: Vec<i32> = partitions.iter().map(|p| p.0).collect();
        let starts = list_offsets(&conn, &topic, &indexes, EARLIEST_TIMESTAMP).await?;
        let ends = list_offsets(&conn, &topic, &indexes, LATEST_TIMESTAMP).await?;
        let request = Request::DescribeConfigs(DescribeConfigsRequest {
            resources: vec![DescribeConfigsResource {
                resource_type: TOPIC_RESOURCE,
                resource_name: topic.clone(),
                configuration_keys: None,
            }],
            include_synonyms: false,
            include_documentation: false,
        });
        let Response::DescribeConfigs(response) = conn.request(request).await? else {
            bail!("DescribeConfigs: unexpected response type");
        };
        let mut configs = Vec::new();
        for result in response.results {
            check(result.error_code, || format!("configs of {topic}"))?;
            for config in result.configs {
                // Source 1: set on the topic (DYNAMIC_TOPIC_CONFIG).
                if config.config_source == 1 {
                    configs.push((config.name, config.value));
                }
            }
        }
        Ok((partitions, starts, ends, configs))
    })?;
    let mut table = Table::new(&["partition", "leader", "start offset", "end offset"]);
    for (index, leader) in &partitions {
        table.row(vec![
            json!(index),
            json!(leader),
            json!(starts.get(index)),
            json!(ends.get(index)),
        ]);
    }
    let mut config_table = Table::new(&["config", "value"]);
    for (key, value) in &configs {
        config_table.row(vec![json!(key), json!(value)]);
    }
    match target.format {
        Format::Json => {
            let document = json!({
                "name": name,
                "partitions": table.to_json(),
                "configs": config_table.to_json(),
            });
            println!("{}", serde_json::to_string_pretty(&document)?);
        }
        Format::Text => {
            println!("NAME        {name}\nPARTITIONS  {}\n", partitions.len());
            table.print(Format::Text)?;
            if !configs.is_empty() {
                println!();
                config_table.print(Format::Text)?;
            }
        }
    }
    Ok(())
}

/// The lines of stdin, split into (key, value) records.
fn read_records(key_separator: Option<&str>) -> anyhow::Result<Vec<(Option<String>, String)>> {
    let mut records = Vec::new();
    for line in std::io::stdin().lock().lines() {
        let line = line.context("reading stdin")?;
        records.push(match key_separator.and_then(|sep| line.split_once(sep)) {
            Some((key, value)) => (Some(key.to_string()), value.to_string()),
            None => (None, line),
        });
    }
    Ok(records)
}

fn produce(
    target: &Resolved,
    topic: &str,
    partition: i32,
    key_separator: Option<&str>,
) -> anyhow::Result<()> {
    let records = read_records(key_separator)?;
    let topic_name = topic.to_string();
    let ranges = run(target, |conn| async move {
        let mut ranges = Vec::new();
        for chunk in chunks(&records) {
            let mut builder = RecordBatchBuilder::new(Compression::None);
            let now = now_ms();
            for (key, value) in chunk {
                builder.append(
                    now,
                    key.as_deref().map(str::as_bytes),
                    Some(value.as_bytes()),
                    &[],
                );
            }
            let batch = builder.build().context("building a batch")?;
            let request = Request::Produce(ProduceRequest {
                transactional_id: None,
                acks: -1,
                timeout_ms: 30_000,
                topic_data: vec![TopicProduceData {
                    name: topic_name.clone(),
                    partition_data: vec![PartitionProduceData {
                        index: partition,
                        records: Some(batch),
                    }],
                }],
            });
            let Response::Produce(response) = conn.request(request).await? else {
                bail!("Produce: unexpected response type");
            };
            for t in &response.responses {
                for p in &t.partition_responses {
                    check(p.error_code, || {
                        format!(
                            "producing to {topic_name}/{partition}{}",
                            p.error_message
                                .as_deref()
                                .map(|m| format!(" ({m})"))
                                .unwrap_or_default()
                        )
                    })?;
                    ranges.push((p.base_offset, chunk.len()));
                }
            }
        }
        Ok(ranges)
    })?;
    let mut table = Table::new(&["topic", "partition", "first offset", "records"]);
    for (base_offset, count) in ranges {
        table.row(vec![
            json!(topic),
            json!(partition),
            json!(base_offset),
            json!(count),
        ]);
    }
    table.print(target.format)
}

/// `records` in runs of at most [`PRODUCE_BATCH_RECORDS_MAX`] records and about
/// [`PRODUCE_BATCH_BYTES_MAX`] bytes.
fn chunks(records: &[(Option<String>, String)]) -> Vec<&[(Option<String>, String)]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (i, (key, value)) in records.iter().enumerate() {
        let size = key.as_ref().map_or(0, String::len) + value.len();
        if i > start
            && (i - start >= PRODUCE_BATCH_RECORDS_MAX || bytes + size > PRODUCE_BATCH_BYTES_MAX)
        {
            out.push(&records[start..i]);
            start = i;
            bytes = 0;
        }
        bytes += size;
    }
    if start < records.len() {
        out.push(&records[start..]);
    }
    out
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Where `topic consume` starts.
#[derive(Debug, Clone, Copy)]
enum StartAt {
    Start,
    End,
    Offset(i64),
}

impl StartAt {
    fn parse(text: &str) -> anyhow::Result<StartAt> {
        match text {
            "start" => Ok(StartAt::Start),
            "end" => Ok(StartAt::End),
            other => match other.parse::<i64>() {
                Ok(offset) if offset >= 0 => Ok(StartAt::Offset(offset)),
                _ => bail!("--offset {other:?}: expected start, end or an offset (0 or more)"),
            },
        }
    }
}

/// One record as `topic consume` prints it.
struct Consumed {
    partition: i32,
    offset: i64,
    timestamp: i64,
    key: Option<Bytes>,
    value: Option<Bytes>,
}

fn consume(
    target: &Resolved,
    topic: &str,
    only: &[i32],
    start: StartAt,
    num: Option<usize>,
    timeout: Duration,
) -> anyhow::Result<()> {
    let format = target.format;
    let topic_name = topic.to_string();
    let only = only.to_vec();
    run(target, |conn| async move {
        let topics = topic_partitions(&conn, Some(&topic_name)).await?;
        let mut partitions: Vec<i32> = topics
            .get(&topic_name)
            .with_context(|| format!("topic {topic_name} not found"))?
            .iter()
            .map(|p| p.0)
            .collect();
        if !only.is_empty() {
            if let Some(missing) = only.iter().find(|p| !partitions.contains(p)) {
                bail!("topic {topic_name} has no partition {missing}");
            }
            partitions = only;
        }
        let starts = list_offsets(&conn, &topic_name, &partitions, EARLIEST_TIMESTAMP).await?;
        let ends = list_offsets(&conn, &topic_name, &partitions, LATEST_TIMESTAMP).await?;
        let mut positions: BTreeMap<i32, i64> = partitions
            .iter()
            .map(|p| {
                let at = match start {
                    StartAt::Start => starts[p],
                    StartAt::End => ends[p],
                    // Within each partition's offsets, as a consumer resets out of range.
                    StartAt::Offset(offset) => offset.clamp(starts[p], ends[p]),
                };
                (*p, at)
            })
            .collect();
        let deadline = tokio::time::Instant::now() + timeout;
        let mut printed = 0usize;
        let mut out = std::io::stdout().lock();
        loop {
            let done_without_num = num.is_none() && positions.iter().all(|(p, at)| *at >= ends[p]);
            if done_without_num || num.is_some_and(|n| printed >= n) {
                break;
            }
            if num.is_some() && tokio::time::Instant::now() >= deadline {
                bail!(
                    "{printed} of {} records within --timeout-ms",
                    num.unwrap_or(0)
                );
            }
            let before = positions.clone();
            let records = fetch(&conn, &topic_name, &mut positions, num.is_some()).await?;
            if num.is_none() && positions == before {
                // Nothing more is readable now (an open transaction holds the stable offset).
                break;
            }
            for record in records {
                if num.is_some_and(|n| printed >= n)
                    || (num.is_none() && record.offset >= ends[&record.partition])
                {
                    continue;
                }
                print_record(&mut out, format, &topic_name, &record)?;
                printed += 1;
            }
            out.flush()?;
        }
        Ok(())
    })?;
    Ok(())
}

/// One Fetch (read_committed) of every partition from its position; moves the positions past
/// the batches that came back. Records of aborted transactions are left out, as a Kafka
/// consumer leaves them out (by the response's aborted transactions).
async fn fetch(
    conn: &Connection,
    topic: &str,
    positions: &mut BTreeMap<i32, i64>,
    wait: bool,
) -> anyhow::Result<Vec<Consumed>> {
    let request = Request::Fetch(FetchRequest {
        replica_id: -1,
        max_wait_ms: if wait { 500 } else { 0 },
        min_bytes: 1,
        max_bytes: 16 * FETCH_PARTITION_BYTES,
        isolation_level: 1,
        session_id: 0,
        session_epoch: -1,
        topics: vec![FetchTopic {
            topic: topic.to_string(),
            partitions: positions
                .iter()
                .map(|(p, at)| FetchPartition {
                    partition: *p,
                    fetch_offset: *at,
                    partition_max_bytes: FETCH_PARTITION_BYTES,
                    log_start_offset: -1,
                    current_leader_epoch: -1,
                    last_fetched_epoch: -1,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }],
        ..Default::default()
    });
    let Response::Fetch(response) = conn.request(request).await? else {
        bail!("Fetch: unexpected response type");
    };
    check(response.error_code, || format!("fetching {topic}"))?;
    let mut records = Vec::new();
    for t in response.responses {
        for p in t.partitions {
            check(p.error_code, || {
                format!("fetching {topic}/{}", p.partition_index)
            })?;
            let Some(position) = positions.get_mut(&p.partition_index) else {
                continue;
            };
            let from = *position;
            let mut aborted: Vec<(i64, i64)> = p
                .aborted_transactions
                .unwrap_or_default()
                .iter()
                .map(|a| (a.first_offset, a.producer_id))
                .collect();
            aborted.sort_unstable();
            let mut aborted = aborted.into_iter().peekable();
            let mut aborting: Vec<i64> = Vec::new();
            let data = p.records.unwrap_or_default();
            for batch in batches(&data) {
                let batch = batch.context("a fetched batch")?;
                let header = RecordBatchHeader::parse(&batch)?;
                *position = (*position).max(header.last_offset() + 1);
                while let Some(&(first, producer)) = aborted.peek() {
                    if first > header.last_offset() {
                        break;
                    }
                    aborting.push(producer);
                    aborted.next();
                }
                let producer = header.producer_id();
                if header.is_control() {
                    aborting.retain(|p| *p != producer);
                    continue;
                }
                if header.is_transactional() && aborting.contains(&producer) {
                    continue;
                }
                for record in decode_records(&batch, 64 << 20)? {
                    let offset = header.base_offset() + i64::from(record.offset_delta);
                    if offset < from {
                        continue;
                    }
                    records.push(Consumed {
                        partition: p.partition_index,
                        offset,
                        timestamp: header.base_timestamp() + record.timestamp_delta,
                        key: record.key,
                        value: record.value,
                    });
                }
            }
        }
    }
    records.sort_by_key(|r| (r.partition, r.offset));
    Ok(records)
}

fn print_record(
    out: &mut impl Write,
    format: Format,
    topic: &str,
    record: &Consumed,
) -> anyhow::Result<()> {
    let text = |b: &Option<Bytes>| b.as_ref().map(|b| String::from_utf8_lossy(b).into_owned());
    match format {
        Format::Text => writeln!(out, "{}", text(&record.value).unwrap_or_default())?,
        Format::Json => writeln!(
            out,
            "{}",
            json!({
                "topic": topic,
                "partition": record.partition,
                "offset": record.offset,
                "timestamp": record.timestamp,
                "key": text(&record.key),
                "value": text(&record.value),
            })
        )?,
    }
    Ok(())
}
