//! The broker's start-up configuration, after the CLI and the TOML file are merged.

use std::net::SocketAddr;
use std::path::PathBuf;

/// How a node takes part in a controller quorum.
#[derive(Debug, Clone)]
pub struct QuorumSettings {
    /// Every voter's node id and `host:port`.
    pub voters: std::collections::BTreeMap<u64, String>,
    /// Where this node serves the quorum's RPCs (`--controller-listen`); a voter's must be
    /// its entry in `voters`, an observer's is where the leader sends it the log.
    pub controller_listen: SocketAddr,
    /// How long a controller waits for a broker's heartbeat before it fences the broker.
    pub broker_session_timeout: std::time::Duration,
    /// How often this node, as a broker, sends a heartbeat.
    pub broker_heartbeat_interval: std::time::Duration,
}

/// Everything a broker needs to start; every field has a default usable on a laptop.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// The Kafka listeners, at least one; every shard accepts on each (SO_REUSEPORT). The
    /// first is the one a broker of a cluster registers, and the one `sluice` commands use.
    pub listeners: Vec<crate::security::ListenerConfig>,
    /// TLS files and SASL settings of the listeners that use them.
    pub security: crate::security::SecurityConfig,
    /// Address of the admin HTTP server (`/metrics`, `/health`, `/ready`); None: no server.
    pub admin_listen: Option<SocketAddr>,
    /// Root of the broker's local state (metadata, WAL files).
    pub data_dir: PathBuf,
    /// Number of shards (pinned executors); 0 means one per available core.
    pub shards: usize,
    /// Where the WAL lives: a directory (one file per shard) or a block device (one shard).
    pub wal_path: Option<PathBuf>,
    /// Capacity of each shard's WAL ring in bytes.
    pub wal_bytes_per_shard: u64,
    /// Memory budget of the whole broker in bytes, split evenly over the shards.
    pub memory_bytes: u64,
    /// This broker's node id, as seen by clients.
    pub node_id: i32,
    /// The controller quorum this node belongs to (`--controller-quorum-voters`); None: the
    /// single node keeps its metadata in its own log, as always.
    pub quorum: Option<QuorumSettings>,
    /// Requests a connection may have outstanding at once (1 = Kafka's model).
    pub pipeline_depth: usize,
    /// Largest request frame accepted (`socket.request.max.bytes`).
    pub max_frame_bytes: usize,
    /// The log levels, when whoever installed the log subscriber lets them change at run
    /// time (Kafka's BROKER_LOGGER resource); None: DescribeConfigs and
    /// IncrementalAlterConfigs refuse that resource.
    pub log_levels: Option<std::sync::Arc<dyn crate::log_levels::LogLevels>>,
    /// Writes the WAL keeps in flight at once.
    pub wal_inflight_writes_max: usize,
    /// The system of record; None: a local directory, `<data_dir>/objects`.
    pub object_store: Option<sluice_objstore::ObjectStoreConfig>,
    /// A shard uploads its WAL contents once this many bytes are waiting (capped at a quarter
    /// of the WAL, so the WAL never fills while the store is healthy).
    pub upload_bytes: usize,
    /// ... or once the oldest waiting record is this old.
    pub upload_interval: std::time::Duration,
    /// How often retention.ms / retention.bytes are applied (log.retention.check.interval.ms).
    pub retention_check_interval: std::time::Duration,
    /// How often object compaction, the log cleaner and object garbage collection look for
    /// work (log.cleaner.backoff.ms).
    pub maintenance_interval: std::time::Duration,
    /// With a local object store, the longest a chunk of object I/O (uploads, compaction, cold
    /// reads) waits while a WAL on the same disk is slow (`objstore/src/io_pacer.rs`); zero
    /// turns pacing off.
    pub object_io_pause_max: std::time::Duration,
    /// How long an object stays in the store after compaction or retention dropped it
    /// (file.delete.delay.ms), for readers holding an older image.
    pub object_delete_delay: std::time::Duration,
    /// Most members in one consumer group (Kafka's `group.max.size`); a JoinGroup beyond it is
    /// answered GROUP_MAX_SIZE_REACHED.
    pub group_members_max: usize,
    /// Most consumer groups the broker coordinates (no Kafka equivalent); a request that would
    /// create one more is answered GROUP_MAX_SIZE_REACHED and logged (`group::limits`).
    pub groups_max: usize,
    /// Most connections open to the broker (Kafka's `max.connections`); more are closed right
    /// after accept (`connection_limits`).
    pub connections_max: usize,
    /// Most connections open from one client address (Kafka's `max.connections.per.ip`); more
    /// are closed right after accept.
    pub connections_max_per_ip: usize,
    /// Most tasks one shard runs at once for requests from the mesh (`task_permits`); at the
    /// cap the shard stops taking requests from its mesh queues until a task ends.
    pub shard_tasks_max: usize,
    /// How long a start waits for the data dir's lock (and the WAL's) while another process
    /// holds it: a broker killed a moment ago may still be closing its descriptors. Then the
    /// start fails naming the holder (`data_dir_lock`).
    pub lock_wait: std::time::Duration,
    /// How long a start retries binding the Kafka or admin address while it is in use (a
    /// broker killed a moment ago may still hold its sockets); then the start fails.
    pub bind_retry: std::time::Duration,
}

impl BrokerConfig {
    /// Default WAL ring size per shard.
    pub const WAL_BYTES_PER_SHARD_DEFAULT: u64 = 1 << 30;
    /// Default memory budget for the whole broker.
    pub const MEMORY_BYTES_DEFAULT: u64 = 2 << 30;
    /// Default admin HTTP address: Redpanda's admin port, on loopback only.
    pub const ADMIN_LISTEN_DEFAULT: SocketAddr =
        SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9644);
    /// Default pipeline depth per connection (librdkafka's max.in.flight default is 1M, Java's 5).
    pub const PIPELINE_DEPTH_DEFAULT: usize = 16;
    /// Default members per group. Kafka's default is unbounded (Integer.MAX_VALUE); a classic
    /// group's rebalance is O(members) on the coordinator and hands the leader every member's
    /// subscription in one JoinGroup response, and members beyond the partition count idle, so
    /// a group of more than a thousand members is a runaway client (a consumer created per
    /// message or per request), not a deployment.
    pub const GROUP_MEMBERS_MAX_DEFAULT: usize = 1000;
    /// Default groups per broker. A group costs the coordinator about 0.5 KiB plus about
    /// 150 B per committed partition, kept until offsets.retention.minutes (7 days) after it
    /// empties: 10,000 groups of 10 partitions are ~20 MiB, well inside the ~128 MiB the
    /// broker needs beyond --memory, and far more groups than one broker's applications use.
    /// Tools that make a group per run (kafka-console-consumer) are what reaches it; raise it
    /// for them.
    pub const GROUPS_MAX_DEFAULT: usize = 10_000;
    /// Default connections per broker (Kafka's default is unbounded). Far above a broker's
    /// clients (librdkafka and the Java client hold one or two connections per broker), and
    /// below the file-descriptor limits a broker host is given (`LimitNOFILE` of 64Ki and up).
    pub const CONNECTIONS_MAX_DEFAULT: usize = 10_000;
    /// Default connections from one address (Kafka's default is unbounded): one host's
    /// connection leak takes at most a tenth of the broker's connections, while hosts and NAT
    /// gateways running hundreds of clients are unaffected.
    pub const CONNECTIONS_MAX_PER_IP_DEFAULT: usize = 1000;
    /// Default tasks per shard. Each is one request in flight on this shard: a produce, a
    /// read (a fetch long-poll holds one up to 30 s), a group call (a JoinGroup holds one for
    /// a rebalance). A broker's clients put at most a few thousand on one shard (hundreds of
    /// connections with a few requests in flight each, up to --pipeline-depth 16), so normal
    /// load never waits at 16 Ki. A task is a future of a few hundred bytes to a few KiB, so
    /// the cap also bounds this state to tens of MiB per shard.
    pub const SHARD_TASKS_MAX_DEFAULT: usize = 16 * 1024;
    /// Default wait for a held data dir lock. A killed process closes its descriptors only
    /// after its memory is unmapped: on a 2-core VM loaded by compiles, a broker with the
    /// default 2 GiB budget held its lock 1 to over 10 s after `kill -9`. A second broker
    /// started by mistake says who holds the lock once a second while it waits.
    pub const LOCK_WAIT_DEFAULT: std::time::Duration = std::time::Duration::from_secs(30);
    /// Default time a port in use is retried. A killed broker's sockets close with its lock
    /// (the same exit_files), so this covers only the moment between the two and a holder
    /// that is not a broker of this data dir.
    pub const BIND_RETRY_DEFAULT: std::time::Duration = std::time::Duration::from_secs(10);

    /// The WAL location for one shard: the block device itself; else in `<dir>`, a directory
    /// of segment files `shard-<n>.segments` or the one file `shard-<n>.wal`. A WAL that
    /// exists keeps its layout; a new one is segmented when [`BrokerConfig::wal_segmented`].
    pub fn wal_path_for(&self, shard: usize) -> PathBuf {
        let base = self.wal_base();
        if is_block_device(&base) {
            return base;
        }
        let segments = base.join(format!("shard-{shard}.{WAL_SEGMENTS_EXTENSION}"));
        let file = base.join(format!("shard-{shard}.wal"));
        if segments.is_dir() || (!file.exists() && self.wal_segmented()) {
            segments
        } else {
            file
        }
    }

    /// Where the shards' WALs are: `--wal-path`, else `<data_dir>/wal`.
    pub fn wal_base(&self) -> PathBuf {
        self.wal_path
            .clone()
            .unwrap_or_else(|| self.data_dir.join("wal"))
    }

    /// Whether new WALs keep their ring in segment files, so that the uploads link closed
    /// segments as objects instead of writing their bytes a second time: when the object store
    /// is a local directory on the WAL's file system (the embedded default) and the WAL splits
    /// into segments of 4 MiB or more ([`BrokerConfig::wal_segment_bytes`]).
    pub fn wal_segmented(&self) -> bool {
        let sluice_objstore::ObjectStoreConfig::Local { root } = self.object_store_config() else {
            return false;
        };
        let base = self.wal_base();
        WAL_SEGMENT_BYTES_MIN * WAL_SEGMENTS_MIN <= self.wal_bytes_per_shard
            && self
                .wal_bytes_per_shard
                .is_multiple_of(WAL_SEGMENT_BYTES_MIN)
            && !is_block_device(&base)
            && same_file_system(&base, &root)
    }

    /// The segment size of a new segmented WAL with `shards` shards: the uploads' size (each
    /// closed segment is one upload's object), in multiples of 4 MiB, dividing the WAL into
    /// [`WAL_SEGMENTS_MIN`] segments or more. `None` when not [`BrokerConfig::wal_segmented`].
    pub fn wal_segment_bytes(&self, shards: usize) -> Option<u64> {
        if !self.wal_segmented() {
            return None;
        }
        let upload_bytes = crate::budget::ShardBudget::of(self, shards).upload_bytes as u64;
        let mut segment = (upload_bytes / WAL_SEGMENT_BYTES_MIN * WAL_SEGMENT_BYTES_MIN).clamp(
            WAL_SEGMENT_BYTES_MIN,
            self.wal_bytes_per_shard / WAL_SEGMENTS_MIN,
        );
        while !self.wal_bytes_per_shard.is_multiple_of(segment) {
            segment -= WAL_SEGMENT_BYTES_MIN;
        }
        Some(segment)
    }

    /// The largest record batch a shard's WAL holds: a WAL record is at most half the ring
    /// (`sluice_wal::WalConfig::record_bytes_max`), and less than a segment of a segmented
    /// WAL, its header included. A topic's `max.message.bytes` above it could never be
    /// appended.
    pub fn batch_bytes_max(&self) -> u64 {
        let config = sluice_wal::WalConfig {
            capacity_bytes: self.wal_bytes_per_shard,
            segment_bytes: self.wal_segment_bytes(self.shard_count()),
            ..sluice_wal::WalConfig::default()
        };
        config
            .record_bytes_max()
            .saturating_sub(sluice_wal::format::RECORD_HEADER_SIZE)
    }

    /// The smallest `wal_bytes_per_shard` whose [`BrokerConfig::batch_bytes_max`] is at least
    /// `batch_bytes`.
    pub fn wal_bytes_to_hold(batch_bytes: u64) -> u64 {
        2 * (batch_bytes + sluice_wal::format::RECORD_HEADER_SIZE)
    }

    /// Where objects go: the configured store, else `<data_dir>/objects`.
    pub fn object_store_config(&self) -> sluice_objstore::ObjectStoreConfig {
        self.object_store
            .clone()
            .unwrap_or_else(|| sluice_objstore::ObjectStoreConfig::Local {
                root: self.data_dir.join("objects"),
            })
    }

    /// The shard count after resolving 0 to the number of available cores.
    pub fn shard_count(&self) -> usize {
        if self.shards > 0 {
            self.shards
        } else {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        }
    }
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            listeners: vec![crate::security::ListenerConfig::plaintext(
                SocketAddr::from(([127, 0, 0, 1], 9092)),
            )],
            security: crate::security::SecurityConfig::default(),
            admin_listen: Some(Self::ADMIN_LISTEN_DEFAULT),
            data_dir: PathBuf::from("sluice-data"),
            shards: 0,
            wal_path: None,
            wal_bytes_per_shard: Self::WAL_BYTES_PER_SHARD_DEFAULT,
            memory_bytes: Self::MEMORY_BYTES_DEFAULT,
            node_id: 0,
            quorum: None,
            pipeline_depth: Self::PIPELINE_DEPTH_DEFAULT,
            max_frame_bytes: sluice_net::DEFAULT_MAX_FRAME_BYTES,
            log_levels: None,
            wal_inflight_writes_max: 4,
            object_store: None,
            upload_bytes: sluice_objstore::limits::UPLOAD_BYTES_DEFAULT,
            upload_interval: sluice_objstore::limits::UPLOAD_INTERVAL_DEFAULT,
            retention_check_interval: std::time::Duration::from_secs(300),
            maintenance_interval: std::time::Duration::from_secs(10),
            object_io_pause_max: sluice_objstore::io_pacer::PAUSE_MAX_DEFAULT,
            object_delete_delay: sluice_objstore::limits::DELETION_GRACE_DEFAULT,
            group_members_max: Self::GROUP_MEMBERS_MAX_DEFAULT,
            groups_max: Self::GROUPS_MAX_DEFAULT,
            connections_max: Self::CONNECTIONS_MAX_DEFAULT,
            connections_max_per_ip: Self::CONNECTIONS_MAX_PER_IP_DEFAULT,
            shard_tasks_max: Self::SHARD_TASKS_MAX_DEFAULT,
            lock_wait: Self::LOCK_WAIT_DEFAULT,
            bind_retry: Self::BIND_RETRY_DEFAULT,
        }
    }
}

/// The extension of a segmented WAL's directory (`shard-<n>.segments`).
pub const WAL_SEGMENTS_EXTENSION: &str = "segments";
/// The smallest segment of a segmented WAL: a multiple of the WAL's recovery reads.
pub const WAL_SEGMENT_BYTES_MIN: u64 = 4 << 20;
/// The fewest segments a segmented WAL has: one being written, others waiting for their
/// upload's commit, and one held until the trim leaves it whole.
pub const WAL_SEGMENTS_MIN: u64 = 4;

/// Whether `a` and `b` (or, for paths not made yet, their nearest existing ancestors) are on
/// one file system: a hard link between them works.
fn same_file_system(a: &std::path::Path, b: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let device = |path: &std::path::Path| {
        let path = std::path::absolute(path).ok()?;
        path.ancestors()
            .find_map(|p| std::fs::metadata(p).ok())
            .map(|meta| meta.dev())
    };
    matches!((device(a), device(b)), (Some(x), Some(y)) if x == y)
}

/// True when `path` names a block device (a raw NVMe / EBS volume).
pub fn is_block_device(path: &std::path::Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(path)
        .map(|m| m.file_type().is_block_device())
        .unwrap_or(false)
}
