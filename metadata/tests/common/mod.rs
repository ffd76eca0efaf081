//! Helpers shared by the store tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sluice_metadata::{
    MetadataCommand, MetadataStore, QuotaAlteration, QuotaValue, ScramDeletion, ScramUpsertion,
    StoreOptions,
};

/// A directory removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("sluice-metadata-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// SplitMix64: a tiny seeded generator, so a failing sequence can be replayed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

pub fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub fn create(name: &str, partitions: u32, shards: u32) -> MetadataCommand {
    MetadataCommand::CreateTopic {
        name: name.to_string(),
        partitions,
        configs: BTreeMap::new(),
        shards,
    }
}

/// A random command, valid or not, over a small name space so that
/// collisions, deletes of missing topics and so on happen often.
pub fn random_command(rng: &mut Rng) -> MetadataCommand {
    const NAMES: &[&str] = &["a", "b", "c.d", "c_d", "orders", "e-f", "bad name", ""];
    let name = NAMES[rng.below(NAMES.len() as u64) as usize].to_string();
    let shards = 1 + rng.below(4) as u32;
    match rng.below(12) {
        0 | 1 => MetadataCommand::CreateTopic {
            name,
            partitions: rng.below(6) as u32,
            configs: random_configs(rng),
            shards,
        },
        2 => MetadataCommand::DeleteTopic { name },
        3 => MetadataCommand::CreatePartitions {
            name,
            total: rng.below(10) as u32,
            shards,
        },
        4 => MetadataCommand::AlterTopicConfigs {
            name,
            set: random_configs(rng),
            delete: if rng.below(3) == 0 {
                vec!["retention.ms".to_string()]
            } else {
                Vec::new()
            },
        },
        5 => MetadataCommand::AlterBrokerConfigs {
            set: match rng.below(4) {
                0 => map(&[("num.partitions", "3")]),
                1 => map(&[("log.retention.hours", "2")]),
                2 => map(&[("message.max.bytes", "-5")]),
                _ => map(&[("no.such.thing", "1")]),
            },
            delete: if rng.below(2) == 0 {
                vec!["num.partitions".to_string()]
            } else {
                Vec::new()
            },
        },
        6 | 7 => MetadataCommand::SetLogStartOffset {
            topic: name,
            partition: rng.below(4) as u32,
            offset: rng.below(1000) as i64,
        },
        8 => MetadataCommand::AllocateProducerIds {
            count: rng.below(2000) as u32,
        },
        // SCRAM users: a few names (one empty), mechanisms 0 to 2 (0 is unknown), iteration
        // counts on both sides of the bounds, so both accepted and refused users replay.
        9 => MetadataCommand::AlterScramCredentials {
            upsertions: (0..rng.below(3))
                .map(|_| {
                    let mechanism = rng.below(3) as i8;
                    ScramUpsertion {
                        user: random_scram_user(rng),
                        mechanism,
                        iterations: [4096, 100, 16_384, 20_000][rng.below(4) as usize],
                        salt: vec![rng.below(256) as u8; 1 + rng.below(32) as usize],
                        salted_password: vec![7; if mechanism == 2 { 64 } else { 32 }],
                    }
                })
                .collect(),
            deletions: Vec::new(),
        },
        // Client quotas: a user or a client id (named, default or empty), keys known and not,
        // values set, refused (not above 0) and removed, so both accepted and refused
        // entities replay.
        10 => MetadataCommand::AlterClientQuotas {
            alterations: (0..1 + rng.below(3))
                .map(|_| {
                    const NAMES: &[Option<&str>] = &[Some("alice"), Some("app"), None, Some("")];
                    let kind = ["user", "client-id"][rng.below(2) as usize];
                    let name = NAMES[rng.below(NAMES.len() as u64) as usize].map(str::to_string);
                    let key = ["producer_byte_rate", "request_percentage", "bogus"]
                        [rng.below(3) as usize];
                    let value = [Some(1_000_000.0), Some(-1.0), None][rng.below(3) as usize];
                    QuotaAlteration {
                        entity: vec![(kind.to_string(), name)],
                        ops: vec![(key.to_string(), value.map(QuotaValue::new))],
                    }
                })
                .collect(),
        },
        _ => MetadataCommand::AlterScramCredentials {
            upsertions: Vec::new(),
            deletions: (0..1 + rng.below(2))
                .map(|_| ScramDeletion {
                    user: random_scram_user(rng),
                    mechanism: rng.below(3) as i8,
                })
                .collect(),
        },
    }
}

fn random_scram_user(rng: &mut Rng) -> String {
    const USERS: &[&str] = &["alice", "bob", "carol", ""];
    USERS[rng.below(USERS.len() as u64) as usize].to_string()
}

fn random_configs(rng: &mut Rng) -> BTreeMap<String, String> {
    match rng.below(6) {
        0 => map(&[("retention.ms", "1000")]),
        1 => map(&[("cleanup.policy", "compact")]),
        2 => map(&[("retention.ms", "-7")]),
        3 => map(&[
            ("segment.bytes", "1048576"),
            ("max.message.bytes", "2000000"),
        ]),
        _ => BTreeMap::new(),
    }
}

/// Opens the store in `dir` (node 1), snapshotting every `interval` records.
pub fn open_every(dir: &Path, interval: u64) -> MetadataStore {
    MetadataStore::open_with_options(
        dir,
        1,
        StoreOptions {
            snapshot_interval_records: interval,
        },
    )
    .unwrap()
}
