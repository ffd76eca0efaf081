//! Durability under `kill -9`: a child process applies commands and prints
//! each one it got an Ok for; the parent kills it at a random point, reopens
//! the store and checks every acknowledged command is there. Seeded; the seed
//! is printed on failure.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use common::{Rng, TempDir, create};
use sluice_metadata::{MetadataCommand, MetadataStore, StoreOptions};

const CHILD_DIR_ENV: &str = "SLUICE_METADATA_KILL_DIR";
const CHILD_ROUND_ENV: &str = "SLUICE_METADATA_KILL_ROUND";
/// The child stops by itself after this many commands if never killed.
const CHILD_COMMANDS_MAX: u32 = 5000;
const SNAPSHOT_INTERVAL_RECORDS: u64 = 7;
const ROUNDS: u32 = 4;

fn options() -> StoreOptions {
    StoreOptions {
        snapshot_interval_records: SNAPSHOT_INTERVAL_RECORDS,
    }
}

/// The test; its child processes are this test binary re-run on this test with
/// `CHILD_DIR_ENV` and `CHILD_ROUND_ENV` set, which makes them `child_applies`.
#[test]
fn acknowledged_commands_survive_kill_9() {
    if let (Ok(dir), Ok(round)) = (std::env::var(CHILD_DIR_ENV), std::env::var(CHILD_ROUND_ENV)) {
        return child_applies(Path::new(&dir), &round);
    }
    let seed: u64 = std::env::var("SLUICE_METADATA_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(7);
    let result = std::panic::catch_unwind(|| run(seed));
    if result.is_err() {
        panic!("kill -9 test failed; replay with SLUICE_METADATA_KILL_SEED={seed}");
    }
}

/// The child's body: applies commands and prints each one that was acknowledged, until
/// killed (or after `CHILD_COMMANDS_MAX`).
fn child_applies(dir: &Path, round: &str) {
    let mut store = MetadataStore::open_with_options(dir, 1, options()).unwrap();
    for i in 0..CHILD_COMMANDS_MAX {
        let name = format!("r{round}-t{i}");
        let (image, _) = store.apply(create(&name, 1 + i % 3, 2)).unwrap();
        println!("ACK {} {name}", image.epoch);
        let (image, _) = store
            .apply(MetadataCommand::AllocateProducerIds { count: 100 })
            .unwrap();
        println!("PID {} {}", image.epoch, image.next_producer_id);
    }
}

fn run(seed: u64) {
    let mut rng = Rng::new(seed);
    let dir = TempDir::new("kill");
    let exe = std::env::current_exe().unwrap();
    let mut acked_topics = Vec::new();
    let mut acked_epoch = 0;
    let mut acked_next_producer_id = 0;
    for round in 0..ROUNDS {
        let kill_after = 10 + rng.below(150);
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "acknowledged_commands_survive_kill_9",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DIR_ENV, dir.path())
            .env(CHILD_ROUND_ENV, round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let mut seen = 0;
        while seen < kill_after {
            let Some(Ok(line)) = lines.next() else { break };
            let fields: Vec<&str> = line.split_whitespace().collect();
            match fields.as_slice() {
                ["ACK", epoch, name] => {
                    acked_epoch = epoch.parse().unwrap();
                    acked_topics.push(name.to_string());
                    seen += 1;
                }
                ["PID", epoch, next] => {
                    acked_epoch = epoch.parse().unwrap();
                    acked_next_producer_id = next.parse().unwrap();
                    seen += 1;
                }
                _ => {}
            }
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        assert_eq!(
            seen, kill_after,
            "the child stopped before the kill in round {round}"
        );

        let store = MetadataStore::open_with_options(dir.path(), 1, options()).unwrap();
        let image = store.image();
        assert!(
            image.epoch >= acked_epoch,
            "epoch {} < acked {acked_epoch}",
            image.epoch
        );
        assert!(image.next_producer_id >= acked_next_producer_id);
        for name in &acked_topics {
            assert!(
                image.topic(name).is_some(),
                "acknowledged topic {name} lost"
            );
        }
        assert_eq!(image.check_invariants(), Ok(()));
        assert!(
            std::fs::read_dir(dir.path())
                .unwrap()
                .filter(|e| e
                    .as_ref()
                    .unwrap()
                    .file_name()
                    .to_str()
                    .unwrap()
                    .starts_with("snapshot-"))
                .count()
                <= 2
        );
    }
}
