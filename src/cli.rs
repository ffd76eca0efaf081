//! Command-line flags and the optional TOML config file, merged into a `BrokerConfig`.

use crate::security_args::SecurityArgs;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use serde::Deserialize;
use sluice_perf::parse_size;
use sluice_shards::BrokerConfig;

/// Sluice: a Kafka-compatible streaming broker, shard per core on io_uring.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a single-node broker (every default embedded: local data dir, local WAL).
    Start(Box<StartArgs>),
    /// Run an OpenMessaging Benchmark workload file against a Kafka-compatible broker.
    Perf(Box<sluice_perf::PerfArgs>),
    /// Check this host for the broker (io_uring, memlock, CPUs, WAL disk, kernel knobs) and advise.
    Tune(TuneArgs),
    /// Create, list, describe, alter, delete topics; produce lines, consume records.
    Topic(crate::ctl::topic::TopicArgs),
    /// List, describe, seek and delete consumer groups.
    Group(crate::ctl::group::GroupArgs),
    /// The cluster's brokers, and whether it is healthy.
    Cluster(crate::ctl::cluster::ClusterArgs),
    /// Move a partition to another broker; list pending moves.
    Partition(crate::ctl::partition::PartitionArgs),
    /// Drain a broker of partitions before removing it, or undrain it.
    Broker(crate::ctl::broker::BrokerArgs),
    /// Set, delete and list the users' SCRAM credentials (SASL/SCRAM and SASL/PLAIN).
    User(crate::ctl::user::UserArgs),
    /// Set, delete and list client quotas per user and client id (byte rates, request time).
    Quota(crate::ctl::quota::QuotaArgs),
    /// Create, delete and list ACLs (brokers started with --authorizer acl).
    Acl(crate::ctl::acl::AclArgs),
}

/// How the broker writes its log lines (to stderr).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line: timestamp, level, target, fields.
    Json,
}

/// Flags of `sluice tune`.
#[derive(Debug, clap::Args)]
pub struct TuneArgs {
    /// Data directory whose disk holds the WAL (need not exist yet). [default: ./sluice-data]
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Shards the broker will run. [default: one per core]
    #[arg(long)]
    pub shards: Option<usize>,
    /// Apply the safe fixes (disk scheduler, nomerges, swappiness, THP, aio-max-nr, CPU
    /// governor) by writing to /sys and /proc; needs root. Not persistent across reboots.
    #[arg(long)]
    pub apply: bool,
    /// Print the findings as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Run only these tuners, e.g. `--only disk_scheduler,swappiness`.
    #[arg(long, value_name = "NAME,...", value_delimiter = ',')]
    pub only: Vec<String>,
}

impl TuneArgs {
    /// The tuning options, with `sluice start`'s defaults for the data dir and shards.
    pub fn into_options(self) -> sluice_tuning::Options {
        sluice_tuning::Options {
            root: PathBuf::from("/"),
            data_dir: self
                .data_dir
                .unwrap_or_else(|| BrokerConfig::default().data_dir),
            shards: self.shards,
            apply: self.apply,
            json: self.json,
            only: self.only,
        }
    }
}

/// Flags of `sluice start`. Each may also come from the environment (`SLUICE_` and the
/// flag's name in capitals, e.g. `SLUICE_DATA_DIR`) or the config file (`data_dir`); a flag
/// overrides the environment, which overrides the file.
#[derive(Debug, clap::Args)]
pub struct StartArgs {
    /// TOML file with any of the keys below (snake_case, e.g. `data_dir = "/var/lib/sluice"`).
    #[arg(long, env = "SLUICE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on; port 0 picks a free port. [default: 127.0.0.1:9092]
    #[arg(long, env = "SLUICE_LISTEN", value_name = "HOST:PORT")]
    pub listen: Option<SocketAddr>,
    /// Address clients are told to connect to. [default: the listen address]
    #[arg(long, env = "SLUICE_ADVERTISED_ADDRESS", value_name = "HOST:PORT")]
    pub advertised_address: Option<String>,
    /// Admin HTTP server (/metrics, /health, /ready); port 0 picks a free port, `none`
    /// disables it. [default: 127.0.0.1:9644]
    #[arg(long, env = "SLUICE_ADMIN_LISTEN", value_name = "HOST:PORT|none")]
    pub admin_listen: Option<String>,
    /// Directory for metadata and WAL files. [default: ./sluice-data]
    #[arg(long, env = "SLUICE_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Number of shards (pinned executor threads). [default: one per core]
    #[arg(long, env = "SLUICE_SHARDS")]
    pub shards: Option<usize>,
    /// WAL location: a directory (one file per shard) or a block device (one shard).
    /// [default: DATA_DIR/wal]
    #[arg(long, env = "SLUICE_WAL_PATH", value_name = "PATH")]
    pub wal_path: Option<PathBuf>,
    /// WAL capacity per shard, e.g. 1GiB, 256MiB. [default: 1GiB]
    #[arg(long, env = "SLUICE_WAL_SIZE", value_name = "SIZE")]
    pub wal_size: Option<String>,
    /// Memory budget of the broker, split over the shards, e.g. 2GiB. [default: 2GiB]
    #[arg(long, env = "SLUICE_MEMORY", value_name = "SIZE")]
    pub memory: Option<String>,
    /// Node id reported to clients. [default: 0]
    #[arg(long, env = "SLUICE_NODE_ID")]
    pub node_id: Option<i32>,
    /// Requests a connection may have in flight; 1 is Kafka's one-at-a-time model. [default: 16]
    #[arg(long, env = "SLUICE_PIPELINE_DEPTH")]
    pub pipeline_depth: Option<usize>,
    /// Largest request accepted (socket.request.max.bytes), e.g. 100MiB. [default: 100MiB]
    #[arg(long, env = "SLUICE_MAX_REQUEST_SIZE", value_name = "SIZE")]
    pub max_request_size: Option<String>,
    /// The system of record: a directory, or s3://BUCKET[/PREFIX] (credentials from the
    /// standard AWS chain: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, profile, instance role).
    /// [default: DATA_DIR/objects]
    #[arg(
        long,
        env = "SLUICE_OBJECT_STORE",
        value_name = "DIR|s3://BUCKET[/PREFIX]"
    )]
    pub object_store: Option<String>,
    /// S3 endpoint of an S3-compatible store, e.g. http://127.0.0.1:9000 (path-style URLs).
    /// [default: AWS's endpoint for the region]
    #[arg(long, env = "SLUICE_S3_ENDPOINT", value_name = "URL")]
    pub s3_endpoint: Option<String>,
    /// S3 region. [default: us-east-1]
    #[arg(long, env = "SLUICE_S3_REGION")]
    pub s3_region: Option<String>,
    /// Upload a shard's WAL contents to objects once this much is waiting, e.g. 16MiB
    /// (at most a quarter of --wal-size is used). [default: 16MiB]
    #[arg(long, env = "SLUICE_UPLOAD_SIZE", value_name = "SIZE")]
    pub upload_size: Option<String>,
    /// ... or once the oldest waiting record is this many milliseconds old. [default: 5000]
    #[arg(long, env = "SLUICE_UPLOAD_INTERVAL_MS", value_name = "MS")]
    pub upload_interval_ms: Option<u64>,
    /// How often retention.ms and retention.bytes are applied
    /// (log.retention.check.interval.ms). [default: 300000]
    #[arg(long, env = "SLUICE_RETENTION_CHECK_INTERVAL_MS", value_name = "MS")]
    pub retention_check_interval_ms: Option<u64>,
    /// How often object compaction, the log cleaner of compacted topics and object garbage
    /// collection look for work (log.cleaner.backoff.ms). [default: 10000]
    #[arg(long, env = "SLUICE_MAINTENANCE_INTERVAL_MS", value_name = "MS")]
    pub maintenance_interval_ms: Option<u64>,
    /// With a local --object-store: the longest one 256 KiB chunk of object I/O (uploads,
    /// compaction, cold reads; one chunk runs at a time) waits while the WAL on the same disk
    /// is slower than twice its usual latency, so that background I/O never queues ahead of
    /// produces; 0 turns this pacing off. [default: 20]
    #[arg(long, env = "SLUICE_OBJECT_IO_PAUSE_MAX_MS", value_name = "MS")]
    pub object_io_pause_max_ms: Option<u64>,
    /// How long an object compaction or retention dropped stays in the store before it is
    /// deleted (file.delete.delay.ms). [default: 60000]
    #[arg(long, env = "SLUICE_OBJECT_DELETE_DELAY_MS", value_name = "MS")]
    pub object_delete_delay_ms: Option<u64>,
    /// Most members in one consumer group (Kafka's group.max.size); a JoinGroup beyond it is
    /// answered GROUP_MAX_SIZE_REACHED. [default: 1000]
    #[arg(long, env = "SLUICE_GROUP_MEMBERS_MAX", value_name = "N")]
    pub group_members_max: Option<usize>,
    /// Most consumer groups the broker coordinates; a JoinGroup, OffsetCommit or
    /// TxnOffsetCommit that would create another is answered GROUP_MAX_SIZE_REACHED and
    /// logged. [default: 10000]
    #[arg(long, env = "SLUICE_GROUPS_MAX", value_name = "N")]
    pub groups_max: Option<usize>,
    /// Most connections open to the broker (Kafka's max.connections); more are closed right
    /// after accept. [default: 10000]
    #[arg(long, env = "SLUICE_CONNECTIONS_MAX", value_name = "N")]
    pub connections_max: Option<usize>,
    /// Most connections open from one client address (Kafka's max.connections.per.ip); more
    /// are closed right after accept. [default: 1000]
    #[arg(long, env = "SLUICE_CONNECTIONS_MAX_PER_IP", value_name = "N")]
    pub connections_max_per_ip: Option<usize>,
    /// Most tasks one shard runs at once for requests from other shards and its own
    /// connections (produce, read, group call); at the cap the shard stops taking requests
    /// until a task ends, counted in sluice_shard_tasks_waits_total. [default: 16384]
    #[arg(long, env = "SLUICE_SHARD_TASKS_MAX", value_name = "N")]
    pub shard_tasks_max: Option<usize>,
    /// How long to wait for the data dir's lock (DATA_DIR/.lock, and the WAL's) while another
    /// process holds it, e.g. a broker killed a moment ago that is still exiting; then exit
    /// naming the holder. 0 fails at once. [default: 30000]
    #[arg(long, env = "SLUICE_LOCK_WAIT_MS", value_name = "MS")]
    pub lock_wait_ms: Option<u64>,
    /// How long to retry binding the Kafka or admin address while it is in use, e.g. by a
    /// broker killed a moment ago; then exit. 0 fails at once. [default: 10000]
    #[arg(long, env = "SLUICE_BIND_RETRY_MS", value_name = "MS")]
    pub bind_retry_ms: Option<u64>,
    /// The controller quorum, Kafka's controller.quorum.voters: ID@HOST:PORT,... Every node
    /// names the same voters; without them the node keeps its metadata alone.
    #[arg(
        long,
        env = "SLUICE_CONTROLLER_QUORUM_VOTERS",
        value_name = "ID@HOST:PORT,..."
    )]
    pub controller_quorum_voters: Option<String>,
    /// Where this node serves the controller quorum (a voter: its address in the voters; a
    /// broker that is no voter: where the leader sends it the metadata log). Needed with
    /// --controller-quorum-voters.
    #[arg(long, env = "SLUICE_CONTROLLER_LISTEN", value_name = "HOST:PORT")]
    pub controller_listen: Option<SocketAddr>,
    /// Kafka's process.roles, with a quorum: broker,controller | controller | broker.
    /// [default: broker,controller for a voter, broker otherwise]
    #[arg(long, env = "SLUICE_PROCESS_ROLES", value_name = "ROLES")]
    pub process_roles: Option<String>,
    /// A controller fences a broker of the quorum whose heartbeats stop for this long; its
    /// partitions are offline until it is back (Kafka's broker.session.timeout.ms).
    /// [default: 9000]
    #[arg(long, env = "SLUICE_BROKER_SESSION_TIMEOUT_MS", value_name = "MS")]
    pub broker_session_timeout_ms: Option<u64>,
    /// How often a broker of a quorum tells the controllers it is alive (Kafka's
    /// broker.heartbeat.interval.ms); keep it below the controllers' session timeout.
    /// [default: 2000]
    #[arg(long, env = "SLUICE_BROKER_HEARTBEAT_INTERVAL_MS", value_name = "MS")]
    pub broker_heartbeat_interval_ms: Option<u64>,
    /// Log lines as text, or as one JSON object each (for log shippers). Flag or environment
    /// only: logging starts before the config file is read.
    #[arg(long, env = "SLUICE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(flatten)]
    pub security: SecurityArgs,
}

/// What a node does (Kafka's `process.roles`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessRoles {
    /// Serves Kafka clients; a voter of the quorum too when there is one.
    BrokerController,
    /// Serves Kafka clients; gets the metadata from the quorum as an observer.
    Broker,
    /// A voter of the quorum only: no Kafka listener.
    Controller,
}

/// The config file's keys, all optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<SocketAddr>,
    advertised_address: Option<String>,
    admin_listen: Option<String>,
    data_dir: Option<PathBuf>,
    shards: Option<usize>,
    wal_path: Option<PathBuf>,
    wal_size: Option<String>,
    memory: Option<String>,
    node_id: Option<i32>,
    pipeline_depth: Option<usize>,
    max_request_size: Option<String>,
    object_store: Option<String>,
    s3_endpoint: Option<String>,
    s3_region: Option<String>,
    upload_size: Option<String>,
    upload_interval_ms: Option<u64>,
    retention_check_interval_ms: Option<u64>,
    maintenance_interval_ms: Option<u64>,
    object_io_pause_max_ms: Option<u64>,
    object_delete_delay_ms: Option<u64>,
    group_members_max: Option<usize>,
    groups_max: Option<usize>,
    connections_max: Option<usize>,
    connections_max_per_ip: Option<usize>,
    shard_tasks_max: Option<usize>,
    lock_wait_ms: Option<u64>,
    bind_retry_ms: Option<u64>,
    controller_quorum_voters: Option<String>,
    controller_listen: Option<SocketAddr>,
    process_roles: Option<String>,
    broker_session_timeout_ms: Option<u64>,
    broker_heartbeat_interval_ms: Option<u64>,
    listeners: Option<String>,
    listener_security_protocol_map: Option<String>,
    advertised_listeners: Option<String>,
    tls_cert_file: Option<PathBuf>,
    tls_key_file: Option<PathBuf>,
    tls_ca_file: Option<PathBuf>,
    tls_client_auth: Option<String>,
    tls_handshakes_max: Option<usize>,
    sasl_mechanisms: Option<String>,
    sasl_session_lifetime_ms: Option<u64>,
    failed_authentication_delay_ms: Option<u64>,
    authorizer: Option<String>,
    super_users: Option<String>,
    allow_everyone_if_no_acl_found: Option<bool>,
    sasl_oauthbearer_jwks_file: Option<PathBuf>,
    sasl_oauthbearer_clock_skew_seconds: Option<u64>,
    sasl_oauthbearer_expected_audience: Option<String>,
    sasl_oauthbearer_expected_issuer: Option<String>,
    sasl_oauthbearer_sub_claim_name: Option<String>,
}

impl FileConfig {
    /// The file's listener and security keys.
    fn security(&self) -> SecurityArgs {
        SecurityArgs {
            listeners: self.listeners.clone(),
            listener_security_protocol_map: self.listener_security_protocol_map.clone(),
            advertised_listeners: self.advertised_listeners.clone(),
            tls_cert_file: self.tls_cert_file.clone(),
            tls_key_file: self.tls_key_file.clone(),
            tls_ca_file: self.tls_ca_file.clone(),
            tls_client_auth: self.tls_client_auth.clone(),
            tls_handshakes_max: self.tls_handshakes_max,
            sasl_mechanisms: self.sasl_mechanisms.clone(),
            sasl_session_lifetime_ms: self.sasl_session_lifetime_ms,
            failed_authentication_delay_ms: self.failed_authentication_delay_ms,
            authorizer: self.authorizer.clone(),
            super_users: self.super_users.clone(),
            allow_everyone_if_no_acl_found: self.allow_everyone_if_no_acl_found,
            sasl_oauthbearer_jwks_file: self.sasl_oauthbearer_jwks_file.clone(),
            sasl_oauthbearer_clock_skew_seconds: self.sasl_oauthbearer_clock_skew_seconds,
            sasl_oauthbearer_expected_audience: self.sasl_oauthbearer_expected_audience.clone(),
            sasl_oauthbearer_expected_issuer: self.sasl_oauthbearer_expected_issuer.clone(),
            sasl_oauthbearer_sub_claim_name: self.sasl_oauthbearer_sub_claim_name.clone(),
        }
    }
}

impl StartArgs {
    /// Merges file and flags over the defaults and checks the result.
    pub fn into_config(self) -> anyhow::Result<(BrokerConfig, ProcessRoles)> {
        let file = match &self.config {
            None => FileConfig::default(),
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading config file {}", path.display()))?;
                toml::from_str(&text)
                    .with_context(|| format!("parsing config file {}", path.display()))?
            }
        };
        let mut config = BrokerConfig::default();
        let listen = self.listen.or(file.listen);
        let advertised = self.advertised_address.or(file.advertised_address.clone());
        if let Some(advertised) = &advertised
            && advertised
                .rsplit_once(':')
                .is_none_or(|(_, port)| port.parse::<u16>().is_err())
        {
            bail!("--advertised-address must be HOST:PORT, not {advertised:?}");
        }
        let security = self.security.or(file.security());
        if let Some(v) = self.admin_listen.or(file.admin_listen) {
            config.admin_listen = admin_listen(&v)?;
        }
        if let Some(v) = self.data_dir.or(file.data_dir) {
            config.data_dir = v;
        }
        if let Some(v) = self.shards.or(file.shards) {
            config.shards = v;
        }
        config.wal_path = self.wal_path.or(file.wal_path);
        if let Some(v) = self.wal_size.or(file.wal_size) {
            config.wal_bytes_per_shard = parse_size(&v).context("--wal-size")?;
        }
        if let Some(v) = self.memory.or(file.memory) {
            config.memory_bytes = parse_size(&v).context("--memory")?;
        }
        if let Some(v) = self.node_id.or(file.node_id) {
            config.node_id = v;
        }
        if let Some(v) = self.pipeline_depth.or(file.pipeline_depth) {
            config.pipeline_depth = v;
        }
        if let Some(v) = self.max_request_size.or(file.max_request_size) {
            config.max_frame_bytes =
                usize::try_from(parse_size(&v).context("--max-request-size")?)?;
        }
        let s3_endpoint = self.s3_endpoint.or(file.s3_endpoint);
        let s3_region = self.s3_region.or(file.s3_region);
        match self.object_store.or(file.object_store) {
            Some(target) => {
                config.object_store = Some(object_store_config(&target, s3_endpoint, s3_region)?)
            }
            None if s3_endpoint.is_some() || s3_region.is_some() => {
                bail!("--s3-endpoint and --s3-region need --object-store s3://BUCKET")
            }
            None => {}
        }
        if let Some(v) = self.upload_size.or(file.upload_size) {
            config.upload_bytes = usize::try_from(parse_size(&v).context("--upload-size")?)?;
            if config.upload_bytes == 0 {
                bail!("--upload-size must be above 0");
            }
        }
        if let Some(ms) = self.upload_interval_ms.or(file.upload_interval_ms) {
            if ms == 0 {
                bail!("--upload-interval-ms must be above 0");
            }
            config.upload_interval = std::time::Duration::from_millis(ms);
        }
        if let Some(ms) = self
            .retention_check_interval_ms
            .or(file.retention_check_interval_ms)
        {
            if ms == 0 {
                bail!("--retention-check-interval-ms must be above 0");
            }
            config.retention_check_interval = std::time::Duration::from_millis(ms);
        }
        if let Some(ms) = self
            .maintenance_interval_ms
            .or(file.maintenance_interval_ms)
        {
            if ms == 0 {
                bail!("--maintenance-interval-ms must be above 0");
            }
            config.maintenance_interval = std::time::Duration::from_millis(ms);
        }
        if let Some(ms) = self.object_io_pause_max_ms.or(file.object_io_pause_max_ms) {
            if !matches!(
                config.object_store,
                None | Some(sluice_objstore::ObjectStoreConfig::Local { .. })
            ) {
                bail!(
                    "--object-io-pause-max-ms paces a local --object-store's disk I/O; \
                     an S3 store does not share the WAL's disk"
                );
            }
            config.object_io_pause_max = std::time::Duration::from_millis(ms);
        }
        if let Some(ms) = self.object_delete_delay_ms.or(file.object_delete_delay_ms) {
            config.object_delete_delay = std::time::Duration::from_millis(ms);
        }
        for (value, target, flag) in [
            (
                self.group_members_max.or(file.group_members_max),
                &mut config.group_members_max,
                "--group-members-max",
            ),
            (
                self.groups_max.or(file.groups_max),
                &mut config.groups_max,
                "--groups-max",
            ),
            (
                self.connections_max.or(file.connections_max),
                &mut config.connections_max,
                "--connections-max",
            ),
            (
                self.connections_max_per_ip.or(file.connections_max_per_ip),
                &mut config.connections_max_per_ip,
                "--connections-max-per-ip",
            ),
            (
                self.shard_tasks_max.or(file.shard_tasks_max),
                &mut config.shard_tasks_max,
                "--shard-tasks-max",
            ),
        ] {
            if let Some(v) = value {
                if v == 0 {
                    bail!("{flag} must be at least 1");
                }
                *target = v;
            }
        }
        if let Some(ms) = self.lock_wait_ms.or(file.lock_wait_ms) {
            config.lock_wait = std::time::Duration::from_millis(ms);
        }
        if let Some(ms) = self.bind_retry_ms.or(file.bind_retry_ms) {
            config.bind_retry = std::time::Duration::from_millis(ms);
        }
        let roles = quorum_settings(
            &mut config,
            self.controller_quorum_voters
                .or(file.controller_quorum_voters),
            self.controller_listen.or(file.controller_listen),
            self.process_roles.or(file.process_roles),
            BrokerLiveness {
                session_timeout_ms: self
                    .broker_session_timeout_ms
                    .or(file.broker_session_timeout_ms),
                heartbeat_interval_ms: self
                    .broker_heartbeat_interval_ms
                    .or(file.broker_heartbeat_interval_ms),
            },
        )?;
        if config.pipeline_depth == 0 {
            bail!("--pipeline-depth must be at least 1");
        }
        if config.node_id < 0 {
            bail!("--node-id must not be negative");
        }
        check_wal_holds_default_batches(&config)?;
        // After the quorum settings: a cluster's broker has one listener.
        security.apply(listen, advertised, &mut config)?;
        Ok((config, roles))
    }
}

/// `--broker-session-timeout-ms` and `--broker-heartbeat-interval-ms`, as given.
struct BrokerLiveness {
    session_timeout_ms: Option<u64>,
    heartbeat_interval_ms: Option<u64>,
}

/// Kafka's `broker.session.timeout.ms` default.
const BROKER_SESSION_TIMEOUT_MS_DEFAULT: u64 = 9000;
/// Kafka's `broker.heartbeat.interval.ms` default.
const BROKER_HEARTBEAT_INTERVAL_MS_DEFAULT: u64 = 2000;

/// Refuses a `--wal-size` whose records cannot hold a batch as large as topics accept by
/// default (`max.message.bytes`, 1048588): every such produce would fail.
fn check_wal_holds_default_batches(config: &BrokerConfig) -> anyhow::Result<()> {
    let default_batch_bytes_max = sluice_metadata::effective_topic_config(
        &std::collections::BTreeMap::new(),
        &std::collections::BTreeMap::new(),
    )
    .max_message_bytes
    .max(0) as u64;
    if config.batch_bytes_max() >= default_batch_bytes_max {
        return Ok(());
    }
    let wal_bytes_min =
        BrokerConfig::wal_bytes_to_hold(default_batch_bytes_max).next_multiple_of(1 << 20);
    bail!(
        "--wal-size {} bytes holds record batches of at most {} bytes (half the WAL, less a \
         record header), below the {default_batch_bytes_max} bytes topics accept by default \
         (max.message.bytes): give --wal-size at least {}MiB",
        config.wal_bytes_per_shard,
        config.batch_bytes_max(),
        wal_bytes_min >> 20
    )
}

/// Checks the quorum flags together and sets `config.quorum`.
fn quorum_settings(
    config: &mut BrokerConfig,
    voters: Option<String>,
    controller_listen: Option<SocketAddr>,
    roles: Option<String>,
    liveness: BrokerLiveness,
) -> anyhow::Result<ProcessRoles> {
    let roles = roles
        .map(|text| {
            let mut names: Vec<&str> = text.split(',').map(str::trim).collect();
            names.sort_unstable();
            names.dedup();
            match names.as_slice() {
                ["broker", "controller"] => Ok(ProcessRoles::BrokerController),
                ["broker"] => Ok(ProcessRoles::Broker),
                ["controller"] => Ok(ProcessRoles::Controller),
                _ => bail!(
                    "--process-roles must be broker,controller, broker or controller, not {text:?}"
                ),
            }
        })
        .transpose()?;
    let Some(voters) = voters else {
        if controller_listen.is_some() {
            bail!("--controller-listen needs --controller-quorum-voters");
        }
        if roles.is_some_and(|r| r != ProcessRoles::BrokerController) {
            bail!("--process-roles broker or controller needs --controller-quorum-voters");
        }
        if liveness.session_timeout_ms.is_some() || liveness.heartbeat_interval_ms.is_some() {
            bail!(
                "--broker-session-timeout-ms and --broker-heartbeat-interval-ms need \
                 --controller-quorum-voters (a single node has no heartbeats)"
            );
        }
        return Ok(ProcessRoles::BrokerController);
    };
    let voters = sluice_metadata::quorum::parse_voters(&voters)
        .map_err(|e| anyhow::anyhow!("--controller-quorum-voters: {e}"))?;
    let Some(controller_listen) = controller_listen else {
        bail!(
            "--controller-quorum-voters needs --controller-listen (where this node serves the quorum)"
        );
    };
    let node_id = u64::try_from(config.node_id).unwrap_or(u64::MAX);
    let voter = voters.contains_key(&node_id);
    let roles = roles.unwrap_or(if voter {
        ProcessRoles::BrokerController
    } else {
        ProcessRoles::Broker
    });
    match (roles, voter) {
        (ProcessRoles::Broker, true) => bail!(
            "--node-id {} is one of the --controller-quorum-voters, so its --process-roles must include controller",
            config.node_id
        ),
        (ProcessRoles::Controller | ProcessRoles::BrokerController, false) => bail!(
            "--process-roles includes controller, but --node-id {} is not one of the --controller-quorum-voters",
            config.node_id
        ),
        _ => {}
    }
    // Each node knows only its own flags (the session timeout matters on controllers, the
    // interval on brokers): the pair is checked when both are given here.
    if let (Some(session), Some(interval)) =
        (liveness.session_timeout_ms, liveness.heartbeat_interval_ms)
        && interval >= session
    {
        bail!(
            "--broker-heartbeat-interval-ms ({interval}) must be below \
             --broker-session-timeout-ms ({session})"
        );
    }
    let session_timeout_ms = liveness
        .session_timeout_ms
        .unwrap_or(BROKER_SESSION_TIMEOUT_MS_DEFAULT);
    let heartbeat_interval_ms = liveness
        .heartbeat_interval_ms
        .unwrap_or(BROKER_HEARTBEAT_INTERVAL_MS_DEFAULT);
    if session_timeout_ms == 0 || heartbeat_interval_ms == 0 {
        bail!("--broker-session-timeout-ms and --broker-heartbeat-interval-ms must be above 0");
    }
    config.quorum = Some(sluice_shards::QuorumSettings {
        voters,
        controller_listen,
        broker_session_timeout: std::time::Duration::from_millis(session_timeout_ms),
        broker_heartbeat_interval: std::time::Duration::from_millis(heartbeat_interval_ms),
    });
    Ok(roles)
}

/// `HOST:PORT` of the admin server, or None for `none` (or an empty value).
fn admin_listen(value: &str) -> anyhow::Result<Option<SocketAddr>> {
    match value.trim() {
        "" | "none" => Ok(None),
        addr => addr
            .parse()
            .map(Some)
            .with_context(|| format!("--admin-listen must be HOST:PORT or none, not {addr:?}")),
    }
}

/// `DIR` or `s3://BUCKET[/PREFIX]` as an object store configuration.
fn object_store_config(
    target: &str,
    endpoint: Option<String>,
    region: Option<String>,
) -> anyhow::Result<sluice_objstore::ObjectStoreConfig> {
    let Some(rest) = target.strip_prefix("s3://") else {
        if endpoint.is_some() || region.is_some() {
            bail!("--s3-endpoint and --s3-region apply to an s3:// object store, not {target:?}");
        }
        if target.is_empty() {
            bail!("--object-store must name a directory or s3://BUCKET");
        }
        return Ok(sluice_objstore::ObjectStoreConfig::Local {
            root: PathBuf::from(target),
        });
    };
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        bail!("--object-store {target:?} names no bucket (s3://BUCKET[/PREFIX])");
    }
    let key_prefix = match prefix.trim_matches('/') {
        "" => String::new(),
        p => format!("{p}/"),
    };
    Ok(sluice_objstore::ObjectStoreConfig::S3(
        sluice_objstore::S3Config {
            force_path_style: endpoint.is_some(),
            endpoint_url: endpoint,
            region: region.unwrap_or_else(|| "us-east-1".to_string()),
            bucket: bucket.to_string(),
            key_prefix,
            credentials: None,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tune_flags_parse_into_options() {
        let cli = Cli::try_parse_from([
            "sluice",
            "tune",
            "--data-dir",
            "/var/lib/sluice",
            "--shards",
            "4",
            "--only",
            "disk_scheduler,swappiness",
            "--json",
        ])
        .expect("valid flags");
        let Command::Tune(args) = cli.command else {
            panic!("not tune: {:?}", cli.command);
        };
        let options = args.into_options();
        assert_eq!(options.root, PathBuf::from("/"));
        assert_eq!(options.data_dir, PathBuf::from("/var/lib/sluice"));
        assert_eq!(options.shards, Some(4));
        assert_eq!(options.only, ["disk_scheduler", "swappiness"]);
        assert!(options.json && !options.apply);
    }

    fn start_config(flags: &[&str]) -> anyhow::Result<BrokerConfig> {
        start_config_and_roles(flags).map(|(config, _)| config)
    }

    fn start_config_and_roles(flags: &[&str]) -> anyhow::Result<(BrokerConfig, ProcessRoles)> {
        let cli = Cli::try_parse_from(["sluice", "start"].iter().chain(flags))?;
        let Command::Start(args) = cli.command else {
            panic!("not start: {:?}", cli.command);
        };
        (*args).into_config()
    }

    #[test]
    fn listener_and_security_flags_that_cannot_work_or_do_nothing_are_refused() {
        let one = start_config(&["--listen", "127.0.0.1:0"]).expect("one listener");
        assert_eq!(one.listeners.len(), 1);
        assert_eq!(one.listeners[0].name, "PLAINTEXT");
        let sasl = start_config(&[
            "--listeners",
            "PLAINTEXT://127.0.0.1:0,CLIENT://127.0.0.1:0",
            "--listener-security-protocol-map",
            "CLIENT:SASL_PLAINTEXT",
            "--sasl-mechanisms",
            "scram-sha-512,PLAIN",
            "--sasl-session-lifetime-ms",
            "60000",
        ])
        .expect("a SASL listener");
        assert_eq!(sasl.listeners[1].name, "CLIENT");
        // --advertised-address is the first listener's, as the container image relies on.
        let first = start_config(&[
            "--listeners",
            "PLAINTEXT://0.0.0.0:0",
            "--advertised-address",
            "broker.example:9092",
        ])
        .expect("advertised first listener");
        assert_eq!(
            first.listeners[0].advertised.as_deref(),
            Some("broker.example:9092")
        );
        assert_eq!(
            sasl.security.sasl_mechanisms,
            vec![
                sluice_shards::security::SaslMechanism::ScramSha512,
                sluice_shards::security::SaslMechanism::Plain
            ]
        );
        let refused = [
            (
                vec![
                    "--listen",
                    "127.0.0.1:0",
                    "--listeners",
                    "PLAINTEXT://127.0.0.1:0",
                ],
                "cannot be used with",
            ),
            (vec!["--listeners", "SSL://127.0.0.1:0"], "--tls-cert-file"),
            (
                vec![
                    "--tls-cert-file",
                    "/nonexistent",
                    "--tls-key-file",
                    "/nonexistent",
                ],
                "no listener is SSL",
            ),
            (vec!["--sasl-mechanisms", "PLAIN"], "need a SASL_PLAINTEXT"),
            (
                vec![
                    "--listeners",
                    "SASL_SSL://127.0.0.1:0",
                    "--tls-cert-file",
                    "/x",
                ],
                "go together",
            ),
            (
                vec![
                    "--listeners",
                    "SASL_PLAINTEXT://127.0.0.1:0",
                    "--sasl-mechanisms",
                    "GSSAPI",
                ],
                "\"GSSAPI\" is not one of",
            ),
            (
                vec![
                    "--listeners",
                    "SSL://127.0.0.1:0",
                    "--tls-cert-file",
                    "/nonexistent/cert.pem",
                    "--tls-key-file",
                    "/nonexistent/key.pem",
                ],
                "/nonexistent/cert.pem",
            ),
            (
                vec!["--tls-client-auth", "maybe"],
                "none, requested or required",
            ),
            (
                vec!["--advertised-listeners", "PLAINTEXT://h:1"],
                "needs --listeners",
            ),
            (
                vec![
                    "--listeners",
                    "PLAINTEXT://127.0.0.1:0",
                    "--advertised-listeners",
                    "PLAINTEXT://h:1",
                    "--advertised-address",
                    "h:2",
                ],
                "both set listener \"PLAINTEXT\"",
            ),
        ];
        for (flags, expected) in refused {
            let error = start_config(&flags).expect_err("refused");
            assert!(
                format!("{error:#}").contains(expected),
                "{flags:?}: {error:#}"
            );
        }
    }

    #[test]
    fn oauthbearer_flags_need_oauthbearer_and_a_jwks_file_that_loads() {
        let dir = tempfile::tempdir().expect("tempdir");
        let jwks = dir.path().join("jwks.json");
        std::fs::write(
            &jwks,
            r#"{"keys":[{"kty":"EC","crv":"P-256","kid":"k","x":"AA","y":"AA"}]}"#,
        )
        .expect("write");
        let jwks = jwks.display().to_string();
        let sasl = ["--listeners", "SASL_PLAINTEXT://127.0.0.1:0"];
        let with = |flags: &[&str]| -> Vec<String> {
            sasl.iter().chain(flags).map(|f| f.to_string()).collect()
        };
        let config = start_config(
            &[
                &sasl[..],
                &[
                    "--sasl-mechanisms",
                    "OAUTHBEARER,SCRAM-SHA-512",
                    "--sasl-oauthbearer-jwks-file",
                    &jwks,
                    "--sasl-oauthbearer-expected-audience",
                    "kafka, sluice",
                    "--sasl-oauthbearer-sub-claim-name",
                    "client_id",
                ],
            ]
            .concat(),
        )
        .expect("OAUTHBEARER with a JWKS file");
        let oauthbearer = config.security.oauthbearer.expect("OAUTHBEARER settings");
        assert_eq!(oauthbearer.expected_audiences, vec!["kafka", "sluice"]);
        assert_eq!(oauthbearer.sub_claim_name, "client_id");
        assert_eq!(oauthbearer.clock_skew, std::time::Duration::from_secs(30));
        let refused = [
            (
                with(&["--sasl-oauthbearer-jwks-file", &jwks]),
                "need OAUTHBEARER in --sasl-mechanisms",
            ),
            (
                with(&["--sasl-mechanisms", "OAUTHBEARER"]),
                "needs --sasl-oauthbearer-jwks-file",
            ),
            (
                with(&[
                    "--sasl-mechanisms",
                    "OAUTHBEARER",
                    "--sasl-oauthbearer-jwks-file",
                    "/nonexistent/jwks.json",
                ]),
                "/nonexistent/jwks.json",
            ),
            (
                with(&[
                    "--sasl-mechanisms",
                    "OAUTHBEARER",
                    "--sasl-oauthbearer-jwks-file",
                    &jwks,
                    "--sasl-oauthbearer-sub-claim-name",
                    " ",
                ]),
                "--sasl-oauthbearer-sub-claim-name is empty",
            ),
            (
                vec!["--sasl-oauthbearer-jwks-file".to_string(), jwks.clone()],
                "need OAUTHBEARER in --sasl-mechanisms",
            ),
        ];
        for (flags, expected) in refused {
            let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
            let error = start_config(&flags).expect_err("refused");
            assert!(
                format!("{error:#}").contains(expected),
                "{flags:?}: {error:#}"
            );
        }
    }

    #[test]
    fn a_wal_too_small_for_the_default_batch_limit_is_refused() {
        // 2 MiB holds records of 1 MiB less a header, below max.message.bytes' 1048588.
        let error = start_config(&["--wal-size", "2MiB"]).expect_err("refused");
        let message = error.to_string();
        assert!(
            message.contains("--wal-size") && message.contains("max.message.bytes"),
            "{message}"
        );
        assert!(message.contains("at least 3MiB"), "{message}");
        let config = start_config(&["--wal-size", "3MiB"]).expect("3 MiB holds them");
        assert!(config.batch_bytes_max() >= 1_048_588);
    }

    #[test]
    fn object_io_pacing_applies_to_a_local_store_only() {
        let config = start_config(&["--object-io-pause-max-ms", "5"]).expect("local store");
        assert_eq!(
            config.object_io_pause_max,
            std::time::Duration::from_millis(5)
        );
        let error = start_config(&[
            "--object-store",
            "s3://bucket",
            "--object-io-pause-max-ms",
            "0",
        ])
        .expect_err("an S3 store does not share the WAL's disk");
        assert!(
            error.to_string().contains("--object-io-pause-max-ms"),
            "{error}"
        );
    }

    #[test]
    fn quorum_flags_are_checked_together() {
        let voters = "1@127.0.0.1:9093,2@127.0.0.1:9094,3@127.0.0.1:9095";
        let (config, roles) = start_config_and_roles(&[
            "--node-id",
            "2",
            "--controller-quorum-voters",
            voters,
            "--controller-listen",
            "127.0.0.1:9094",
        ])
        .expect("a voter");
        assert_eq!(roles, ProcessRoles::BrokerController);
        let quorum = config.quorum.expect("a quorum");
        assert_eq!(quorum.voters.len(), 3);
        assert_eq!(quorum.voters[&2], "127.0.0.1:9094");
        let (_, roles) = start_config_and_roles(&[
            "--node-id",
            "7",
            "--controller-quorum-voters",
            voters,
            "--controller-listen",
            "127.0.0.1:9097",
        ])
        .expect("an observer");
        assert_eq!(roles, ProcessRoles::Broker);
        let (_, roles) = start_config_and_roles(&[
            "--node-id",
            "1",
            "--process-roles",
            "controller",
            "--controller-quorum-voters",
            voters,
            "--controller-listen",
            "127.0.0.1:9093",
        ])
        .expect("a controller");
        assert_eq!(roles, ProcessRoles::Controller);
        assert!(start_config(&[]).expect("defaults").quorum.is_none());

        for (flags, message) in [
            (
                vec!["--node-id", "1", "--controller-quorum-voters", voters],
                "needs --controller-listen",
            ),
            (
                vec!["--controller-listen", "127.0.0.1:9093"],
                "needs --controller-quorum-voters",
            ),
            (
                vec!["--process-roles", "controller"],
                "needs --controller-quorum-voters",
            ),
            (
                vec![
                    "--node-id",
                    "7",
                    "--process-roles",
                    "controller",
                    "--controller-quorum-voters",
                    voters,
                    "--controller-listen",
                    "127.0.0.1:9097",
                ],
                "is not one of the --controller-quorum-voters",
            ),
            (
                vec![
                    "--node-id",
                    "1",
                    "--process-roles",
                    "broker",
                    "--controller-quorum-voters",
                    voters,
                    "--controller-listen",
                    "127.0.0.1:9093",
                ],
                "must include controller",
            ),
            (
                vec![
                    "--node-id",
                    "1",
                    "--controller-quorum-voters",
                    "1@nowhere",
                    "--controller-listen",
                    "127.0.0.1:9093",
                ],
                "has no port",
            ),
            (
                vec!["--process-roles", "broker,zookeeper"],
                "--process-roles must be",
            ),
        ] {
            let error = start_config(&flags).expect_err("refused");
            assert!(
                format!("{error:#}").contains(message),
                "{flags:?}: {error:#}"
            );
        }
    }

    #[test]
    fn admin_listen_defaults_to_loopback_9644_and_can_be_disabled() {
        let default = start_config(&[]).expect("defaults are valid");
        assert_eq!(
            default.admin_listen,
            Some("127.0.0.1:9644".parse().expect("an address"))
        );
        let chosen = start_config(&["--admin-listen", "0.0.0.0:0"]).expect("valid flag");
        assert_eq!(
            chosen.admin_listen,
            Some("0.0.0.0:0".parse().expect("an address"))
        );
        let disabled = start_config(&["--admin-listen", "none"]).expect("valid flag");
        assert_eq!(disabled.admin_listen, None);
        assert!(start_config(&["--admin-listen", "localhost"]).is_err());
    }

    #[test]
    fn limits_default_to_bounded_values_and_come_from_flags_or_the_file() {
        let default = start_config(&[]).expect("defaults are valid");
        assert_eq!(
            (
                default.group_members_max,
                default.groups_max,
                default.connections_max,
                default.connections_max_per_ip
            ),
            (1000, 10_000, 10_000, 1000)
        );
        let flags = start_config(&[
            "--group-members-max",
            "3",
            "--groups-max",
            "50",
            "--connections-max",
            "200",
            "--connections-max-per-ip",
            "2",
        ])
        .expect("valid flags");
        assert_eq!(
            (
                flags.group_members_max,
                flags.groups_max,
                flags.connections_max,
                flags.connections_max_per_ip
            ),
            (3, 50, 200, 2)
        );
        for flag in [
            "--group-members-max",
            "--groups-max",
            "--connections-max",
            "--connections-max-per-ip",
        ] {
            let error = start_config(&[flag, "0"]).expect_err("0 is refused");
            assert!(error.to_string().contains(flag), "{error}");
        }

        let dir = tempfile::tempdir().expect("a temporary directory");
        let file = dir.path().join("sluice.toml");
        std::fs::write(
            &file,
            "group_members_max = 5\ngroups_max = 6\nconnections_max = 7\nconnections_max_per_ip = 4\n",
        )
        .expect("written");
        let path = file.to_str().expect("a UTF-8 path");
        let from_file = start_config(&["--config", path]).expect("a valid file");
        assert_eq!(
            (
                from_file.group_members_max,
                from_file.groups_max,
                from_file.connections_max,
                from_file.connections_max_per_ip
            ),
            (5, 6, 7, 4)
        );
        let flag_wins =
            start_config(&["--config", path, "--connections-max-per-ip", "9"]).expect("valid");
        assert_eq!(flag_wins.connections_max_per_ip, 9);
    }

    #[test]
    fn lock_wait_and_bind_retry_come_from_flags_or_the_file() {
        let default = start_config(&[]).expect("defaults are valid");
        assert_eq!(
            (default.lock_wait, default.bind_retry),
            (
                BrokerConfig::LOCK_WAIT_DEFAULT,
                BrokerConfig::BIND_RETRY_DEFAULT
            )
        );
        let flags =
            start_config(&["--lock-wait-ms", "0", "--bind-retry-ms", "250"]).expect("valid");
        assert_eq!(
            (flags.lock_wait, flags.bind_retry),
            (
                std::time::Duration::ZERO,
                std::time::Duration::from_millis(250)
            )
        );
        let dir = tempfile::tempdir().expect("a temporary directory");
        let file = dir.path().join("sluice.toml");
        std::fs::write(&file, "lock_wait_ms = 1500\nbind_retry_ms = 2500\n").expect("written");
        let path = file.to_str().expect("a UTF-8 path");
        let from_file = start_config(&["--config", path]).expect("a valid file");
        assert_eq!(
            (from_file.lock_wait, from_file.bind_retry),
            (
                std::time::Duration::from_millis(1500),
                std::time::Duration::from_millis(2500)
            )
        );
    }

    #[test]
    fn tune_defaults_follow_sluice_start() {
        let cli = Cli::try_parse_from(["sluice", "tune"]).expect("no flags needed");
        let Command::Tune(args) = cli.command else {
            panic!("not tune: {:?}", cli.command);
        };
        let options = args.into_options();
        assert_eq!(options.data_dir, BrokerConfig::default().data_dir);
        assert_eq!(options.shards, None);
        assert!(options.only.is_empty());
    }
}
