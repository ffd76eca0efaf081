//! SIGSTOP of the whole broker for longer than the producer's request and message timeouts,
//! then SIGCONT: sends that timed out may be absent (or present once, since the broker
//! finishes them after SIGCONT), never twice; acknowledged ones must all be there.

use std::time::{Duration, Instant};

use crate::common::BrokerProcess;
use crate::rng::Rng;
use crate::scenario::{self, Outcome};
use crate::workload::{self, History, Running};

/// The producer's timeouts, which every pause exceeds.
const REQUEST_TIMEOUT_MS: u64 = 1000;
const MESSAGE_TIMEOUT_MS: u64 = 1500;

pub fn run(seed: u64) -> Result<Outcome, String> {
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let args = scenario::broker_args(1 + rng.below(2), &[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let broker = BrokerProcess::start(dir.path(), &args);
    let duration = rng.between(Duration::from_secs(3), Duration::from_secs(6));
    let timeouts = vec![
        ("request.timeout.ms", REQUEST_TIMEOUT_MS.to_string()),
        ("message.timeout.ms", MESSAGE_TIMEOUT_MS.to_string()),
        ("socket.timeout.ms", REQUEST_TIMEOUT_MS.to_string()),
    ];
    let workload = scenario::workload(&mut rng, duration, 200, timeouts);
    workload::create_topic(&broker.bootstrap, &workload.topic, workload.partitions)?;
    let history = History::new();
    let running = Running::start(&broker.bootstrap, &workload, seed, &history);
    let stops = 1 + rng.below(2);
    let started = Instant::now();
    let mut notes = vec![format!("{workload:?}")];
    for _ in 0..stops {
        // The schedule: when to stop, and for how long (past the message timeout).
        std::thread::sleep(rng.between(Duration::from_millis(50), Duration::from_millis(1500)));
        let pause = rng.between(
            Duration::from_millis(MESSAGE_TIMEOUT_MS + 100),
            Duration::from_millis(MESSAGE_TIMEOUT_MS * 2 + 500),
        );
        notes.push(format!("SIGSTOP at {:?} for {pause:?}", started.elapsed()));
        signal(&broker, libc::SIGSTOP);
        std::thread::sleep(pause);
        signal(&broker, libc::SIGCONT);
    }
    let produced = running.finish();
    let reads = scenario::scan(&broker.bootstrap, &workload, &history, 0)?;
    drop(broker);
    scenario::judge(&history, seed, &produced, reads, notes)
}

fn signal(broker: &BrokerProcess, signal: i32) {
    // SAFETY: kill(2) with the pid of a child we own and a valid signal number.
    let status = unsafe { libc::kill(broker.pid() as i32, signal) };
    assert_eq!(status, 0, "kill({}, {signal}) failed", broker.pid());
}
