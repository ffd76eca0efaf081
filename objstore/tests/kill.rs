//! kill -9 durability of the local backend: a child process puts objects
//! and reports each put that returned; the parent kills it at a random
//! moment (seeded; the seed is printed) and checks that every reported
//! object is there and whole, and that no object is torn.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use sluice_objstore::ObjectStore;

const CHILD_ENV: &str = "SLUICE_OBJSTORE_KILL_CHILD";

fn content(i: u64) -> Bytes {
    let len = 1 + (i.wrapping_mul(2_654_435_761) % (512 * 1024)) as usize;
    Bytes::from(
        (0..len)
            .map(|j| (i as usize ^ j) as u8)
            .collect::<Vec<u8>>(),
    )
}

fn key(i: u64) -> String {
    format!("k/{:02}/{i:08}", i % 7)
}

/// The child: put objects forever, one line per put that returned.
fn child_puts(dir: &str) {
    let store = ObjectStore::local(dir).unwrap();
    futures::executor::block_on(async {
        for i in 0.. {
            store.put(&key(i), content(i)).await.unwrap();
            // Conditional creates too.
            store
                .put_if_absent(&format!("c/{i:08}"), content(i + 1))
                .await
                .unwrap();
            println!("acked {i}");
        }
    });
}

/// The test; its child processes are this test binary re-run on this test with `CHILD_ENV`
/// set, which makes them `child_puts`.
#[test]
fn kill_9_leaves_every_acknowledged_object_whole() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        return child_puts(&dir);
    }
    let seed = std::env::var("SLUICE_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("seed {seed} (rerun with SLUICE_KILL_SEED={seed})");
    for round in 0..3u64 {
        let dir = tempfile::tempdir().unwrap();
        let kill_after = 5
            + (seed
                .wrapping_add(round)
                .wrapping_mul(6_364_136_223_846_793_005)
                >> 33)
                % 40;
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "kill_9_leaves_every_acknowledged_object_whole",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut acked = None;
        for line in BufReader::new(child.stdout.take().unwrap()).lines() {
            let line = line.unwrap();
            if let Some(i) = line.strip_prefix("acked ") {
                let i: u64 = i.parse().unwrap();
                acked = Some(i);
                if i >= kill_after {
                    // SIGKILL, mid-put of the next objects.
                    child.kill().unwrap();
                    break;
                }
            }
        }
        child.wait().unwrap();
        let acked = acked.expect("the child acknowledged nothing");
        let store = ObjectStore::local(dir.path()).unwrap();
        futures::executor::block_on(async {
            for i in 0..=acked {
                assert_eq!(
                    store.get(&key(i)).await.unwrap(),
                    content(i),
                    "seed {seed} key {i}"
                );
                assert_eq!(
                    store.get(&format!("c/{i:08}")).await.unwrap(),
                    content(i + 1)
                );
            }
            // Whatever else is there is whole: no torn object.
            for meta in store.list("k/").await.unwrap() {
                let i: u64 = meta.key.rsplit('/').next().unwrap().parse().unwrap();
                assert_eq!(
                    store.get(&meta.key).await.unwrap(),
                    content(i),
                    "seed {seed}"
                );
            }
        });
    }
}
