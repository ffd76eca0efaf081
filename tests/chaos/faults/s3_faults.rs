//! S3 (s3s-fs) behind the fault proxy (`chaos/s3_proxy.rs`): during the workload the proxy
//! switches between passing through, answering 500 or 503, adding latency, holding requests
//! then closing, resetting connections and cutting response bodies short. The broker must
//! ride it out on its WAL; once the proxy passes again its uploads catch up, and every
//! acknowledged record reads back, also after a restart (then from the objects).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::common::BrokerProcess;
use crate::rng::Rng;
use crate::s3_proxy::{Mode, Proxy};
use crate::s3_server::{S3_ACCESS_KEY, S3_BUCKET, S3_SECRET_KEY, S3Server};
use crate::scenario::{self, Outcome};
use crate::workload::{self, History, Running};

const S3_ENV: [(&str, &str); 2] = [
    ("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY),
    ("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY),
];

pub fn run(seed: u64) -> Result<Outcome, String> {
    let mut rng = Rng::new(seed);
    let server = S3Server::start();
    let proxy = Proxy::start(SocketAddr::from(([127, 0, 0, 1], server.port)));
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = format!("s3://{S3_BUCKET}/chaos");
    let endpoint = format!("http://127.0.0.1:{}", proxy.port);
    let shards = 1 + rng.below(2);
    let args = scenario::broker_args(
        shards,
        &["--object-store", &store, "--s3-endpoint", &endpoint],
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let broker = BrokerProcess::start_with_env(dir.path(), &args, &S3_ENV);
    allow_store_errors(&broker);
    let duration = rng.between(Duration::from_secs(3), Duration::from_secs(6));
    let timeouts = vec![("message.timeout.ms", "60000".to_string())];
    let workload = scenario::workload(&mut rng, duration, 1024, timeouts);
    workload::create_topic(&broker.bootstrap, &workload.topic, workload.partitions)?;
    let history = History::new();
    let running = Running::start(&broker.bootstrap, &workload, seed, &history);
    let started = Instant::now();
    let mut notes = vec![format!("{workload:?}")];
    while started.elapsed() < duration {
        let mode = draw_mode(&mut rng);
        let lasts = rng.between(Duration::from_millis(200), Duration::from_millis(1500));
        notes.push(format!("{mode:?} at {:?} for {lasts:?}", started.elapsed()));
        proxy.set_mode(mode);
        // The schedule: how long this mode lasts.
        std::thread::sleep(lasts);
    }
    proxy.set_mode(Mode::Pass);
    let produced = running.finish();
    scenario::wait_uploaded(&broker)?;
    notes.push(scenario::store_failures(&broker));
    let mut reads = scenario::scan(&broker.bootstrap, &workload, &history, 0)?;
    let broker = broker.restart();
    reads += scenario::scan(&broker.bootstrap, &workload, &history, 1)?;
    drop(broker);
    scenario::judge(&history, seed, &produced, reads, notes)
}

fn draw_mode(rng: &mut Rng) -> Mode {
    match rng.below(7) {
        0 | 1 => Mode::Pass,
        2 => Mode::Status(if rng.chance(50) { 500 } else { 503 }),
        3 => Mode::Latency(rng.between(Duration::from_millis(20), Duration::from_millis(500))),
        4 => Mode::Hold(rng.between(Duration::from_millis(500), Duration::from_secs(4))),
        5 => Mode::Reset,
        _ => Mode::CutBody,
    }
}

/// The lines a failing store makes the broker log; it retries each.
fn allow_store_errors(broker: &BrokerProcess) {
    // An upload that fails is retried until the store answers.
    broker.allow_log("upload not committed; retrying");
    broker.allow_log("object upload failing; retrying");
    // The maintenance pass (every 10 s) reads, writes and deletes objects too.
    broker.allow_log("compaction step failed");
    broker.allow_log("object retention failed");
    broker.allow_log("object garbage collection failed");
}
