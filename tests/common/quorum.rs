//! A controller quorum of real processes (three `--process-roles controller` nodes) and the
//! brokers that join it as observers, for the cluster tests.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use super::BrokerProcess;

/// Three controllers, and how to start brokers on them.
pub struct Quorum {
    pub voters: String,
    pub controllers: HashMap<u64, BrokerProcess>,
}

impl Quorum {
    /// Three controller-only processes, with `extra` flags.
    pub fn start(root: &Path, extra: &[&str]) -> Quorum {
        let addrs = super::free_addrs(3);
        let voters = super::quorum_voters(&addrs);
        let controllers = addrs
            .iter()
            .enumerate()
            .map(|(i, addr)| {
                let id = i as u64 + 1;
                let id_text = id.to_string();
                let mut args = vec![
                    "--node-id",
                    &id_text,
                    "--process-roles",
                    "controller",
                    "--controller-quorum-voters",
                    &voters,
                    "--controller-listen",
                    addr,
                    "--admin-listen",
                    "none",
                ];
                args.extend_from_slice(extra);
                let dir = root.join(format!("controller-{id}"));
                (id, BrokerProcess::start(&dir, &args))
            })
            .collect();
        Quorum {
            voters,
            controllers,
        }
    }

    /// Three controllers that fence a broker within seconds (`SESSION_TIMEOUT_MS`).
    pub fn start_with_short_sessions(root: &Path) -> Quorum {
        Quorum::start(root, &["--broker-session-timeout-ms", SESSION_TIMEOUT_MS])
    }

    /// A broker (node `id`) heartbeating every `HEARTBEAT_INTERVAL_MS`, on the object store
    /// `root/objects` that every such broker shares, as a cluster needs.
    pub fn shared_broker(&self, root: &Path, id: u64) -> BrokerProcess {
        let objects = root.join("objects").display().to_string();
        let flags = [
            "--broker-heartbeat-interval-ms",
            HEARTBEAT_INTERVAL_MS,
            "--object-store",
            &objects,
        ];
        self.broker(root, id, &flags)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts a broker that is no voter (an observer) as node `id`, with `extra` flags.
    pub fn broker(&self, root: &Path, id: u64, extra: &[&str]) -> Result<BrokerProcess, String> {
        let addr = super::free_addrs(1).remove(0);
        let id_text = id.to_string();
        let mut args = vec![
            "--node-id",
            &id_text,
            "--controller-quorum-voters",
            &self.voters,
            "--controller-listen",
            &addr,
            "--shards",
            "2",
            "--memory",
            "512MiB",
        ];
        args.extend_from_slice(extra);
        // No backtrace: a refused start's message must be within the log lines quoted.
        BrokerProcess::try_start_with_env(
            &root.join(format!("broker-{id}")),
            &args,
            &[("RUST_BACKTRACE", "0")],
        )
    }

    /// The leader the controllers last logged, once they agree on it.
    pub fn leader(&self) -> u64 {
        super::wait_for(Duration::from_secs(10), || {
            let leaders: Vec<Option<u64>> = self
                .controllers
                .values()
                .map(|c| last_leader(&c.log_lines()))
                .collect();
            let first = leaders.first().copied().flatten()?;
            leaders.iter().all(|l| *l == Some(first)).then_some(first)
        })
        .expect("the controllers agree on a leader")
    }
}

/// The leader in the last "controller quorum leader" line of a log.
pub fn last_leader(lines: &[String]) -> Option<u64> {
    lines
        .iter()
        .rev()
        .find(|line| line.contains("controller quorum leader"))?
        .split_whitespace()
        .find_map(|word| word.strip_prefix("leader="))?
        .parse()
        .ok()
}

/// A short session, so that the test sees a fence within seconds (default 9 s).
pub const SESSION_TIMEOUT_MS: &str = "2000";
pub const HEARTBEAT_INTERVAL_MS: &str = "300";
/// Longest wait for the cluster to see a change (a fence, a broker back).
pub const CLUSTER_CHANGE_MAX: Duration = Duration::from_secs(30);

/// Each partition's leader, as librdkafka's Metadata shows it, once it names `brokers`.
pub fn leaders(broker: &BrokerProcess, topic: &str, brokers: &[i32]) -> HashMap<i32, i32> {
    use rdkafka::consumer::Consumer;
    let client: rdkafka::consumer::BaseConsumer = broker.client_config().create().expect("client");
    super::wait_for(CLUSTER_CHANGE_MAX, || {
        let metadata = client
            .fetch_metadata(Some(topic), Duration::from_secs(5))
            .ok()?;
        let mut seen: Vec<i32> = metadata.brokers().iter().map(|b| b.id()).collect();
        seen.sort_unstable();
        if seen != brokers {
            return None;
        }
        Some(
            metadata.topics()[0]
                .partitions()
                .iter()
                .map(|p| (p.id(), p.leader()))
                .collect(),
        )
    })
    .unwrap_or_else(|| panic!("Metadata never showed brokers {brokers:?}"))
}

/// Each partition's leader once Metadata names exactly `brokers` and every partition is led
/// by one of them (a dead broker's partitions moved).
pub fn moved_leaders(broker: &BrokerProcess, topic: &str, brokers: &[i32]) -> HashMap<i32, i32> {
    super::wait_for(CLUSTER_CHANGE_MAX, || {
        let leaders = leaders(broker, topic, brokers);
        leaders
            .values()
            .all(|leader| brokers.contains(leader))
            .then_some(leaders)
    })
    .unwrap_or_else(|| panic!("{topic}: partitions never moved to {brokers:?}"))
}
