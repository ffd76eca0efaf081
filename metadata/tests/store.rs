//! The store's durability and validation, through its public API and files.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use common::{Rng, TempDir, create, map, open_every, random_command};
use sluice_metadata::{
    CommandOutcome, MetadataCommand, MetadataError, MetadataImage, MetadataStore, ScramDeletion,
    ScramMechanism, ScramUpsertion, StoreOptions,
};

fn open(dir: &Path) -> MetadataStore {
    MetadataStore::open(dir, 1).unwrap()
}

fn files(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with(prefix))
        .collect();
    found.sort();
    found
}

fn code(result: Result<impl Sized, MetadataError>) -> i16 {
    match result {
        Ok(_) => 0,
        Err(e) => e.kafka_error_code(),
    }
}

#[test]
fn restart_restores_everything() {
    let dir = TempDir::new("restart");
    let mut store = open(dir.path());
    assert!(store.recovery().created);
    let cluster_id = store.image().cluster_id.clone();
    assert_eq!(cluster_id.len(), 22);
    store
        .apply(MetadataCommand::CreateTopic {
            name: "orders".into(),
            partitions: 3,
            configs: map(&[
                ("retention.ms", "1000"),
                ("cleanup.policy", "compact,delete"),
            ]),
            shards: 2,
        })
        .unwrap();
    store.apply(create("gone", 2, 2)).unwrap();
    store.apply(create("events", 1, 2)).unwrap();
    store
        .apply(MetadataCommand::CreatePartitions {
            name: "events".into(),
            total: 4,
            shards: 2,
        })
        .unwrap();
    store
        .apply(MetadataCommand::DeleteTopic {
            name: "gone".into(),
        })
        .unwrap();
    store
        .apply(MetadataCommand::AlterTopicConfigs {
            name: "orders".into(),
            set: map(&[("max.message.bytes", "5000")]),
            delete: vec!["retention.ms".into()],
        })
        .unwrap();
    store
        .apply(MetadataCommand::AlterBrokerConfigs {
            set: map(&[
                ("num.partitions", "3"),
                ("auto.create.topics.enable", "false"),
            ]),
            delete: vec![],
        })
        .unwrap();
    store
        .apply(MetadataCommand::SetLogStartOffset {
            topic: "orders".into(),
            partition: 1,
            offset: 42,
        })
        .unwrap();
    let (_, outcome) = store
        .apply(MetadataCommand::AllocateProducerIds { count: 1000 })
        .unwrap();
    assert_eq!(
        outcome,
        CommandOutcome::ProducerIdsAllocated {
            first_producer_id: 0,
            count: 1000
        }
    );
    let before = store.image();
    assert_eq!(before.epoch, 9);
    drop(store);

    let mut store = open(dir.path());
    assert!(!store.recovery().created);
    assert_eq!(store.recovery().replayed_records, 9);
    assert_eq!(*store.image(), *before);
    let image = store.image();
    assert_eq!(image.cluster_id, cluster_id);
    assert!(image.topic("gone").is_none());
    let orders = image.topic("orders").unwrap();
    assert_eq!(
        orders.configs,
        map(&[
            ("cleanup.policy", "compact,delete"),
            ("max.message.bytes", "5000")
        ])
    );
    assert_eq!(image.partition("orders", 1).unwrap().log_start_offset, 42);
    assert_eq!(image.topic("events").unwrap().partitions.len(), 4);
    assert_eq!(image.topic_by_id(orders.id).unwrap().name, "orders");
    assert!(!image.broker_config().auto_create_topics_enable);
    assert_eq!(image.broker_config().num_partitions, 3);
    assert_eq!(
        image.topic_config("orders").unwrap().max_message_bytes,
        5000
    );

    let (_, outcome) = store
        .apply(MetadataCommand::AllocateProducerIds { count: 10 })
        .unwrap();
    assert_eq!(
        outcome,
        CommandOutcome::ProducerIdsAllocated {
            first_producer_id: 1000,
            count: 10
        }
    );
}

#[test]
fn stream_ids_are_never_reused_and_look_up() {
    let dir = TempDir::new("streams");
    let mut store = open(dir.path());
    store.apply(create("a", 3, 1)).unwrap();
    let (image, outcome) = store
        .apply(MetadataCommand::DeleteTopic { name: "a".into() })
        .unwrap();
    let CommandOutcome::TopicDeleted { stream_ids, .. } = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(stream_ids, vec![1, 2, 3]);
    assert!(stream_ids.iter().all(|&s| image.is_deleted_stream(s)));
    let (image, _) = store.apply(create("a", 2, 1)).unwrap();
    let ids: Vec<u64> = image
        .topic("a")
        .unwrap()
        .partitions
        .iter()
        .map(|p| p.stream_id)
        .collect();
    assert_eq!(ids, vec![4, 5]);
    let (topic, partition) = image.stream(5).unwrap();
    assert_eq!((topic.name.as_str(), partition.index), ("a", 1));
    assert!(image.stream(2).is_none());
    assert!(!image.is_deleted_stream(6));
    drop(store);
    let image = open(dir.path()).image();
    assert_eq!(image.stream(4).unwrap().1.index, 0);
    assert!(image.is_deleted_stream(1));
}

#[test]
fn placement_balances_over_shards() {
    let dir = TempDir::new("placement");
    let mut store = open(dir.path());
    let (image, _) = store.apply(create("a", 4, 3)).unwrap();
    let shards: Vec<u32> = image
        .topic("a")
        .unwrap()
        .partitions
        .iter()
        .map(|p| p.shard)
        .collect();
    assert_eq!(shards, vec![0, 1, 2, 0]);
    // Shard 1 and 2 are least loaded: the next topic starts at 1.
    let (image, _) = store.apply(create("b", 2, 3)).unwrap();
    let shards: Vec<u32> = image
        .topic("b")
        .unwrap()
        .partitions
        .iter()
        .map(|p| p.shard)
        .collect();
    assert_eq!(shards, vec![1, 2]);
    assert_eq!(image.shard_loads(3), vec![2, 2, 2]);
    // More shards later: new partitions go to the empty ones first.
    let (image, _) = store
        .apply(MetadataCommand::CreatePartitions {
            name: "b".into(),
            total: 5,
            shards: 5,
        })
        .unwrap();
    assert_eq!(image.shard_loads(5), vec![2, 2, 2, 2, 1]);
    let (image, _) = store.apply(create("many", 512, 2)).unwrap();
    let loads = image.shard_loads(2);
    assert!(loads[0].abs_diff(loads[1]) <= 1, "{loads:?}");
}

#[test]
fn validation_errors_write_nothing() {
    let dir = TempDir::new("validation");
    let mut store = open(dir.path());
    store.apply(create("exists", 1, 1)).unwrap();
    store.apply(create("a.b", 1, 1)).unwrap();
    let log = dir.path().join("metadata.log");
    let log_bytes = fs::metadata(&log).unwrap().len();
    let epoch = store.image().epoch;

    let long = "x".repeat(250);
    let cases: Vec<(MetadataCommand, i16)> = vec![
        (create("exists", 1, 1), 36),
        (create("", 1, 1), 17),
        (create(".", 1, 1), 17),
        (create("..", 1, 1), 17),
        (create(&long, 1, 1), 17),
        (create("with space", 1, 1), 17),
        (create("ünïcode", 1, 1), 17),
        (create("a_b", 1, 1), 17),
        (create("zero", 0, 1), 37),
        (create("huge", 10_001, 1), 37),
        (create("noshards", 1, 0), 42),
        (
            MetadataCommand::CreateTopic {
                name: "cfg".into(),
                partitions: 1,
                configs: map(&[("retention.ms", "soon")]),
                shards: 1,
            },
            40,
        ),
        (
            MetadataCommand::CreateTopic {
                name: "cfg".into(),
                partitions: 1,
                configs: map(&[("no.such.config", "1")]),
                shards: 1,
            },
            40,
        ),
        (
            MetadataCommand::DeleteTopic {
                name: "missing".into(),
            },
            3,
        ),
        (
            MetadataCommand::CreatePartitions {
                name: "missing".into(),
                total: 2,
                shards: 1,
            },
            3,
        ),
        (
            MetadataCommand::CreatePartitions {
                name: "exists".into(),
                total: 1,
                shards: 1,
            },
            37,
        ),
        (
            MetadataCommand::CreatePartitions {
                name: "exists".into(),
                total: 10_001,
                shards: 1,
            },
            37,
        ),
        (
            MetadataCommand::AlterTopicConfigs {
                name: "exists".into(),
                set: map(&[
                    ("min.compaction.lag.ms", "10"),
                    ("max.compaction.lag.ms", "5"),
                ]),
                delete: vec![],
            },
            40,
        ),
        (
            MetadataCommand::AlterTopicConfigs {
                name: "exists".into(),
                set: map(&[("retention.ms", "5")]),
                delete: vec!["retention.ms".into()],
            },
            42,
        ),
        (
            MetadataCommand::AlterTopicConfigs {
                name: "missing".into(),
                set: BTreeMap::new(),
                delete: vec![],
            },
            3,
        ),
        (
            MetadataCommand::AlterBrokerConfigs {
                set: map(&[("message.max.bytes", "big")]),
                delete: vec![],
            },
            40,
        ),
        (
            MetadataCommand::AlterBrokerConfigs {
                set: BTreeMap::new(),
                delete: vec!["no.such".into()],
            },
            40,
        ),
        (
            MetadataCommand::SetLogStartOffset {
                topic: "exists".into(),
                partition: 1,
                offset: 5,
            },
            3,
        ),
        (
            MetadataCommand::SetLogStartOffset {
                topic: "exists".into(),
                partition: 0,
                offset: -1,
            },
            1,
        ),
        (MetadataCommand::AllocateProducerIds { count: 0 }, 42),
        (
            MetadataCommand::AllocateProducerIds { count: 1_000_001 },
            42,
        ),
    ];
    for (command, expected) in cases {
        let checked = sluice_metadata::validate_command(&store.image(), &command);
        assert_eq!(code(checked), expected, "validate_command {command:?}");
        let result = store.apply(command.clone());
        assert_eq!(code(result), expected, "{command:?}");
    }
    assert!(sluice_metadata::validate_command(&store.image(), &create("fresh", 3, 2)).is_ok());
    assert!(store.image().topic("fresh").is_none());
    // An unchanged log start offset is not an error and writes nothing.
    let (_, outcome) = store
        .apply(MetadataCommand::SetLogStartOffset {
            topic: "exists".into(),
            partition: 0,
            offset: 0,
        })
        .unwrap();
    assert_eq!(
        outcome,
        CommandOutcome::LogStartOffsetSet {
            log_start_offset: 0
        }
    );
    assert_eq!(store.image().epoch, epoch);
    assert_eq!(fs::metadata(&log).unwrap().len(), log_bytes);

    // A log start offset only moves forward: lower is a no-op, as in Kafka.
    store
        .apply(MetadataCommand::SetLogStartOffset {
            topic: "exists".into(),
            partition: 0,
            offset: 10,
        })
        .unwrap();
    let epoch = store.image().epoch;
    let (image, outcome) = store
        .apply(MetadataCommand::SetLogStartOffset {
            topic: "exists".into(),
            partition: 0,
            offset: 9,
        })
        .unwrap();
    assert_eq!(
        outcome,
        CommandOutcome::LogStartOffsetSet {
            log_start_offset: 10
        }
    );
    assert_eq!(image.epoch, epoch);
    assert_eq!(image.partition("exists", 0).unwrap().log_start_offset, 10);
}

#[test]
fn the_total_partition_limit_is_a_policy_violation() {
    let dir = TempDir::new("total");
    let mut store = open(dir.path());
    let limit = sluice_metadata::limits::PARTITIONS_TOTAL_MAX;
    let per_topic = sluice_metadata::limits::PARTITIONS_PER_TOPIC_MAX;
    for i in 0..limit / per_topic {
        store.apply(create(&format!("t{i}"), per_topic, 4)).unwrap();
    }
    assert_eq!(store.image().partition_count(), limit as usize);
    assert_eq!(code(store.apply(create("one.more", 1, 4))), 44);
    let before = store.image();
    drop(store);
    assert_eq!(*open(dir.path()).image(), *before);
}

#[test]
fn replication_factor_and_names() {
    use sluice_metadata::{validate_replication_factor, validate_topic_name};
    assert!(validate_replication_factor(1, 0).is_ok(), "a single node");
    assert!(validate_replication_factor(-1, 0).is_ok());
    assert_eq!(
        validate_replication_factor(3, 0)
            .unwrap_err()
            .kafka_error_code(),
        38
    );
    assert!(validate_replication_factor(3, 3).is_ok(), "three brokers");
    assert_eq!(
        validate_replication_factor(4, 3)
            .unwrap_err()
            .kafka_error_code(),
        38
    );
    assert_eq!(
        validate_replication_factor(0, 3)
            .unwrap_err()
            .kafka_error_code(),
        38
    );
    assert!(validate_topic_name(&"a".repeat(249)).is_ok());
    assert!(validate_topic_name("A-z_0.9").is_ok());
    assert!(validate_topic_name("...").is_ok());
    assert!(validate_topic_name("a/b").is_err());
}

#[test]
fn node_id_is_checked() {
    let dir = TempDir::new("node");
    drop(open(dir.path()));
    let err = MetadataStore::open(dir.path(), 2).unwrap_err();
    assert!(
        matches!(
            err,
            MetadataError::NodeIdMismatch {
                stored: 1,
                requested: 2
            }
        ),
        "{err}"
    );
}

#[test]
fn torn_log_tail_is_truncated() {
    let dir = TempDir::new("torn");
    let mut store = open(dir.path());
    for i in 0..5 {
        store.apply(create(&format!("t{i}"), 2, 2)).unwrap();
    }
    let after_four = {
        let log = dir.path().join("metadata.log");
        let full = fs::read(&log).unwrap();
        // Cut the last record in half, as a crash mid-append would.
        let image = store.image();
        drop(store);
        let record_bytes = full.len() / 5;
        fs::write(&log, &full[..full.len() - record_bytes / 2]).unwrap();
        let store = open(dir.path());
        assert!(store.recovery().truncated_bytes > 0);
        assert_eq!(store.image().epoch, 4);
        assert!(store.image().topic("t4").is_none());
        assert_eq!(image.topic("t3"), store.image().topic("t3"));
        store
    };
    // The store goes on writing after the repaired tail.
    let mut store = after_four;
    store.apply(create("next", 1, 1)).unwrap();
    let before = store.image();
    drop(store);
    // A zero-filled tail (file size extended, data never written) is torn too.
    let mut file = OpenOptions::new()
        .append(true)
        .open(dir.path().join("metadata.log"))
        .unwrap();
    file.write_all(&[0; 4096]).unwrap();
    drop(file);
    let store = open(dir.path());
    assert_eq!(store.recovery().truncated_bytes, 4096);
    assert_eq!(*store.image(), *before);
}

#[test]
fn corrupt_log_middle_is_an_error() {
    let dir = TempDir::new("middle");
    let mut store = open(dir.path());
    for i in 0..5 {
        store.apply(create(&format!("t{i}"), 2, 2)).unwrap();
    }
    drop(store);
    let log = dir.path().join("metadata.log");
    let mut bytes = fs::read(&log).unwrap();
    bytes[20] ^= 0x40;
    fs::write(&log, &bytes).unwrap();
    let err = MetadataStore::open(dir.path(), 1).unwrap_err();
    assert_eq!(err.kafka_error_code(), 56, "{err}");
    assert!(matches!(err, MetadataError::Corrupt(_)), "{err}");
}

#[test]
fn snapshots_bound_replay_and_keep_two() {
    let dir = TempDir::new("snapshots");
    let mut store = open_every(dir.path(), 10);
    for i in 0..35 {
        store.apply(create(&format!("t{i}"), 1, 2)).unwrap();
    }
    let before = store.image();
    drop(store);
    let snapshots = files(dir.path(), "snapshot-");
    assert_eq!(snapshots.len(), 2, "{snapshots:?}");
    assert!(
        snapshots[1]
            .to_str()
            .unwrap()
            .ends_with("00000000000000000030.rkyv")
    );
    let store = open_every(dir.path(), 10);
    assert_eq!(store.recovery().snapshot_epoch, 30);
    assert_eq!(store.recovery().replayed_records, 5);
    assert_eq!(*store.image(), *before);
}

#[test]
fn corrupt_snapshot_falls_back_to_the_previous_one_and_the_log() {
    let dir = TempDir::new("badsnap");
    let mut store = open_every(dir.path(), 10);
    for i in 0..35 {
        store.apply(create(&format!("t{i}"), 1, 2)).unwrap();
    }
    let before = store.image();
    drop(store);
    let snapshots = files(dir.path(), "snapshot-");
    let newest = snapshots.last().unwrap().clone();
    let mut bytes = fs::read(&newest).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    fs::write(&newest, &bytes).unwrap();

    let mut store = open_every(dir.path(), 10);
    assert_eq!(store.recovery().snapshot_epoch, 20);
    assert_eq!(store.recovery().replayed_records, 15);
    assert_eq!(store.recovery().corrupt_snapshots.len(), 1);
    assert_eq!(*store.image(), *before);
    assert!(!newest.exists());
    // A fresh snapshot replaced the corrupt one; more commands, then reopen.
    store.apply(create("after", 1, 2)).unwrap();
    let before = store.image();
    drop(store);
    assert_eq!(*open_every(dir.path(), 10).image(), *before);
}

#[test]
fn a_single_corrupt_snapshot_falls_back_to_the_whole_log() {
    let dir = TempDir::new("onesnap");
    let mut store = open_every(dir.path(), 10);
    for i in 0..15 {
        store.apply(create(&format!("t{i}"), 1, 2)).unwrap();
    }
    let before = store.image();
    drop(store);
    let snapshots = files(dir.path(), "snapshot-");
    assert_eq!(snapshots.len(), 1);
    fs::write(&snapshots[0], b"garbage").unwrap();
    let store = open_every(dir.path(), 10);
    assert_eq!(store.recovery().snapshot_epoch, 0);
    assert_eq!(store.recovery().replayed_records, 15);
    assert_eq!(*store.image(), *before);
}

#[test]
fn all_snapshots_corrupt_without_the_log_is_an_error() {
    let dir = TempDir::new("allbad");
    let mut store = open_every(dir.path(), 10);
    for i in 0..35 {
        store.apply(create(&format!("t{i}"), 1, 2)).unwrap();
    }
    drop(store);
    for snapshot in files(dir.path(), "snapshot-") {
        fs::write(&snapshot, b"garbage").unwrap();
    }
    let err = MetadataStore::open_with_options(
        dir.path(),
        1,
        StoreOptions {
            snapshot_interval_records: 10,
        },
    )
    .unwrap_err();
    assert_eq!(err.kafka_error_code(), 56, "{err}");
}

/// Many seeded random command sequences, with reopens at random points and a
/// small snapshot interval: the image after reopen is always the one before.
#[test]
fn random_sequences_survive_reopen() {
    let seeds = std::env::var("SLUICE_METADATA_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40u64);
    for seed in 0..seeds {
        let outcome = std::panic::catch_unwind(|| run_sequence(seed));
        if outcome.is_err() {
            panic!("random sequence failed; replay with seed {seed}");
        }
    }
}

fn run_sequence(seed: u64) {
    let mut rng = Rng::new(seed);
    let dir = TempDir::new(&format!("random{seed}"));
    let interval = 1 + rng.below(12);
    let mut store = open_every(dir.path(), interval);
    let mut applied = 0;
    let mut stream_ids_seen = BTreeSet::new();
    for _ in 0..150 {
        let command = random_command(&mut rng);
        let before = store.image();
        match store.apply(command.clone()) {
            Ok((image, _)) => {
                applied += 1;
                assert!(image.epoch == before.epoch || image.epoch == before.epoch + 1);
                assert_eq!(image.check_invariants(), Ok(()));
                for topic in image.topics.values() {
                    for p in &topic.partitions {
                        stream_ids_seen.insert((p.stream_id, topic.id));
                    }
                }
            }
            Err(e) => {
                assert!(e.kafka_error_code() != 56, "{command:?}: {e}");
                assert_eq!(
                    *store.image(),
                    *before,
                    "a failed command changed the image"
                );
            }
        }
        if rng.below(20) == 0 {
            let image = store.image();
            drop(store);
            store = open_every(dir.path(), interval);
            assert_eq!(*store.image(), *image, "seed {seed}");
        }
    }
    let image = store.image();
    drop(store);
    let reopened = open_every(dir.path(), interval).image();
    assert_eq!(*reopened, *image, "seed {seed}");
    // A stream id is never handed to two topics.
    let mut owner = BTreeMap::new();
    for (stream_id, topic_id) in stream_ids_seen {
        assert!(
            owner.insert(stream_id, topic_id).is_none(),
            "stream {stream_id} reused"
        );
    }
    assert!(applied > 0);
    assert!(files(dir.path(), "snapshot-").len() <= 2);
}

#[test]
fn images_compare_equal_only_when_equal() {
    let a = MetadataImage::empty("x".into(), 1);
    let mut b = a.clone();
    assert_eq!(a, b);
    b.next_producer_id = 5;
    assert_ne!(a, b);
}

#[test]
fn crash_between_snapshot_and_log_seal_recovers() {
    let dir = TempDir::new("sealcrash");
    let mut store = open_every(dir.path(), 1000);
    for i in 0..5 {
        store.apply(create(&format!("t{i}"), 1, 2)).unwrap();
    }
    let log = dir.path().join("metadata.log");
    let active = fs::read(&log).unwrap();
    store.snapshot().unwrap();
    // Explicit snapshots at an unchanged epoch change nothing.
    store.snapshot().unwrap();
    let before = store.image();
    drop(store);
    // Undo the seal, as if the process died right after the snapshot's rename.
    for sealed in files(dir.path(), "metadata-") {
        fs::remove_file(sealed).unwrap();
    }
    fs::write(&log, &active).unwrap();

    let mut store = open_every(dir.path(), 7);
    assert_eq!(store.recovery().snapshot_epoch, 5);
    assert_eq!(*store.image(), *before);
    for i in 5..30 {
        store.apply(create(&format!("t{i}"), 1, 2)).unwrap();
    }
    let before = store.image();
    drop(store);
    assert_eq!(*open_every(dir.path(), 7).image(), *before);
}

fn scram_upsert(user: &str, mechanism: ScramMechanism, password: &[u8]) -> ScramUpsertion {
    let salt = format!("salt-of-{user}").into_bytes();
    ScramUpsertion {
        user: user.to_string(),
        mechanism: mechanism.id(),
        iterations: 4096,
        salted_password: mechanism.salted_password(password, &salt, 4096),
        salt,
    }
}

fn scram_results(outcome: &CommandOutcome) -> Vec<(String, i16)> {
    match outcome {
        CommandOutcome::ScramCredentialsAltered { results } => results
            .iter()
            .map(|r| (r.user.clone(), r.error_code))
            .collect(),
        other => panic!("not a SCRAM outcome: {other:?}"),
    }
}

/// AlterScramCredentials through the store: per-user results, refusals write nothing, and the
/// credentials survive a restart from the log and from a snapshot.
#[test]
fn scram_credentials_are_planned_per_user_and_survive_restarts() {
    for interval in [1000, 1] {
        let dir = TempDir::new("scram");
        let mut store = open_every(dir.path(), interval);
        let epoch = store.image().epoch;
        let (image, outcome) = store
            .apply(MetadataCommand::AlterScramCredentials {
                upsertions: vec![
                    scram_upsert("alice", ScramMechanism::Sha256, b"pw-a"),
                    scram_upsert("bob", ScramMechanism::Sha512, b"pw-b"),
                    scram_upsert("", ScramMechanism::Sha512, b"pw"),
                ],
                deletions: vec![ScramDeletion {
                    user: "nobody".into(),
                    mechanism: 1,
                }],
            })
            .unwrap();
        assert_eq!(
            scram_results(&outcome),
            vec![
                ("nobody".to_string(), 91),
                ("alice".to_string(), 0),
                ("bob".to_string(), 0),
                (String::new(), 93),
            ]
        );
        assert_eq!(image.epoch, epoch + 1);
        let alice = image
            .scram_credential("alice", ScramMechanism::Sha256)
            .unwrap();
        assert!(alice.matches_password(ScramMechanism::Sha256, b"pw-a"));
        assert_eq!(
            image.scram_credential("alice", ScramMechanism::Sha512),
            None
        );
        let users: Vec<&str> = image.scram_users().map(|(u, _)| u).collect();
        assert_eq!(users, vec!["alice", "bob"]);

        // Every user refused: nothing is written.
        let (image, outcome) = store
            .apply(MetadataCommand::AlterScramCredentials {
                upsertions: Vec::new(),
                deletions: vec![ScramDeletion {
                    user: "bob".into(),
                    mechanism: 1,
                }],
            })
            .unwrap();
        assert_eq!(scram_results(&outcome), vec![("bob".to_string(), 91)]);
        assert_eq!(image.epoch, epoch + 1);

        store
            .apply(MetadataCommand::AlterScramCredentials {
                upsertions: vec![scram_upsert("alice", ScramMechanism::Sha512, b"pw-a2")],
                deletions: vec![ScramDeletion {
                    user: "bob".into(),
                    mechanism: 2,
                }],
            })
            .unwrap();
        let image = store.image();
        drop(store);
        let reopened = open_every(dir.path(), interval).image();
        assert_eq!(*reopened, *image, "snapshot interval {interval}");
        let alice = reopened.scram_user("alice").unwrap();
        assert_eq!(alice.len(), 2);
        assert!(alice[&ScramMechanism::Sha512].matches_password(ScramMechanism::Sha512, b"pw-a2"));
        assert_eq!(reopened.scram_user("bob"), None);
        if interval == 1 {
            assert!(!files(dir.path(), "snapshot-").is_empty());
        }
    }
}

/// Too many alterations in one request refuse it whole, as INVALID_REQUEST.
#[test]
fn too_many_scram_alterations_are_invalid() {
    let dir = TempDir::new("scram-many");
    let mut store = open(dir.path());
    let deletions = (0..=sluice_metadata::limits::SCRAM_ALTERATIONS_PER_COMMAND_MAX)
        .map(|i| ScramDeletion {
            user: format!("u{i}"),
            mechanism: 1,
        })
        .collect();
    let refused = store.apply(MetadataCommand::AlterScramCredentials {
        upsertions: Vec::new(),
        deletions,
    });
    assert_eq!(code(refused), 42);
}

/// AlterClientQuotas through the store: per-entity results, refusals write nothing, and the
/// quotas survive a restart from the log and from a snapshot.
#[test]
fn client_quotas_are_planned_per_entity_and_survive_restarts() {
    use sluice_metadata::{EntityName, QuotaAlteration, QuotaEntity, QuotaKey, QuotaValue};
    let alteration =
        |kind: &str, name: Option<&str>, key: &str, value: Option<f64>| QuotaAlteration {
            entity: vec![(kind.to_string(), name.map(str::to_string))],
            ops: vec![(key.to_string(), value.map(QuotaValue::new))],
        };
    let results = |outcome: &CommandOutcome| match outcome {
        CommandOutcome::ClientQuotasAltered { results } => {
            results.iter().map(|r| r.error_code).collect::<Vec<i16>>()
        }
        other => panic!("not a quota outcome: {other:?}"),
    };
    for interval in [1000, 1] {
        let dir = TempDir::new("quotas");
        let mut store = open_every(dir.path(), interval);
        let epoch = store.image().epoch;
        let (image, outcome) = store
            .apply(MetadataCommand::AlterClientQuotas {
                alterations: vec![
                    alteration("user", Some("alice"), "producer_byte_rate", Some(10e6)),
                    alteration("client-id", None, "consumer_byte_rate", Some(5e6)),
                    alteration("user", Some("bob"), "producer_byte_rate", Some(0.0)),
                ],
            })
            .unwrap();
        assert_eq!(results(&outcome), vec![0, 0, 42]);
        assert_eq!(image.epoch, epoch + 1);
        assert_eq!(image.client_quotas().len(), 2);

        // Every entity refused: nothing is written.
        let (image, outcome) = store
            .apply(MetadataCommand::AlterClientQuotas {
                alterations: vec![alteration("ip", None, "producer_byte_rate", Some(1.0))],
            })
            .unwrap();
        assert_eq!(results(&outcome), vec![42]);
        assert_eq!(image.epoch, epoch + 1);

        store
            .apply(MetadataCommand::AlterClientQuotas {
                alterations: vec![alteration("client-id", None, "consumer_byte_rate", None)],
            })
            .unwrap();
        let image = store.image();
        drop(store);
        let reopened = open_every(dir.path(), interval).image();
        assert_eq!(*reopened, *image, "snapshot interval {interval}");
        let alice = QuotaEntity {
            user: Some(EntityName::Named("alice".to_string())),
            client_id: None,
        };
        assert_eq!(reopened.client_quotas().len(), 1);
        assert_eq!(
            reopened.client_quotas()[&alice][&QuotaKey::ProducerByteRate].get(),
            10e6
        );
        if interval == 1 {
            assert!(!files(dir.path(), "snapshot-").is_empty());
        }
    }
}
