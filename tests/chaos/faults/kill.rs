//! `kill -9` at random moments of the workload; the broker comes back at once or after a
//! pause, on the same port, and must have kept every acknowledged record and commit.

use std::time::{Duration, Instant};

use crate::common::BrokerProcess;
use crate::rng::Rng;
use crate::scenario::{self, Outcome};
use crate::workload::{self, History, Running};

pub fn run(seed: u64) -> Result<Outcome, String> {
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let args = scenario::broker_args(1 + rng.below(2), &[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut broker = BrokerProcess::start(dir.path(), &args);
    let duration = rng.between(Duration::from_secs(2), Duration::from_secs(5));
    // Long enough for sends to outlive a restart with a pause.
    let timeouts = vec![("message.timeout.ms", "15000".to_string())];
    let workload = scenario::workload(&mut rng, duration, 200, timeouts);
    workload::create_topic(&broker.bootstrap, &workload.topic, workload.partitions)?;
    let history = History::new();
    let running = Running::start(&broker.bootstrap, &workload, seed, &history);
    let kills = 1 + rng.below(3);
    let started = Instant::now();
    let mut notes = vec![format!("{workload:?}")];
    for _ in 0..kills {
        // The schedule: the moment of the kill and the time the broker stays down.
        std::thread::sleep(rng.between(Duration::from_millis(50), duration / kills as u32));
        let pause = if rng.chance(50) {
            Duration::ZERO
        } else {
            rng.between(Duration::from_millis(100), Duration::from_secs(2))
        };
        notes.push(format!(
            "kill -9 at {:?}, down for {pause:?}",
            started.elapsed()
        ));
        broker = broker.restart_on_same_port(pause);
    }
    let produced = running.finish();
    let mut reads = scenario::scan(&broker.bootstrap, &workload, &history, 0)?;
    if rng.chance(50) {
        // Once more after everything is in: what was read must still be there.
        notes.push("kill -9 after the first scan".into());
        broker = broker.restart_on_same_port(Duration::ZERO);
        reads += scenario::scan(&broker.bootstrap, &workload, &history, 1)?;
    }
    drop(broker);
    scenario::judge(&history, seed, &produced, reads, notes)
}
