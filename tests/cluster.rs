//! The controller quorum through real processes: three controllers (`--process-roles
//! controller`) and a broker that gets the metadata from them as an observer. The broker
//! keeps serving, and admin changes keep working, when the quorum's leader is `kill -9`ed;
//! a second broker is refused while partitions have no leaders; a broker restarted on its
//! data dir finds its topics in the quorum.

mod common;

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{BrokerProcess, assert_topic_holds, produce_acked};

/// The leader's replacement must take changes within this (issue: "a new leader within 5 s").
const FAILOVER_MAX: Duration = Duration::from_secs(5);

/// Free loopback addresses for the controllers to listen on. Bound and released here, so
/// another process could take one in between: the voters must be named before the
/// controllers start, which port 0 cannot do.
fn free_addrs(count: usize) -> Vec<String> {
    let listeners: Vec<TcpListener> = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("addr").to_string())
        .collect()
}

struct Quorum {
    voters: String,
    controllers: HashMap<u64, BrokerProcess>,
}

impl Quorum {
    /// Three controller-only processes.
    fn start(root: &Path) -> Quorum {
        let addrs = free_addrs(3);
        let voters = addrs
            .iter()
            .enumerate()
            .map(|(i, addr)| format!("{}@{addr}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let controllers = addrs
            .iter()
            .enumerate()
            .map(|(i, addr)| {
                let id = i as u64 + 1;
                let args = [
                    "--node-id",
                    &id.to_string(),
                    "--process-roles",
                    "controller",
                    "--controller-quorum-voters",
                    &voters,
                    "--controller-listen",
                    addr,
                    "--admin-listen",
                    "none",
                ];
                let dir = root.join(format!("controller-{id}"));
                (id, BrokerProcess::start(&dir, &args))
            })
            .collect();
        Quorum {
            voters,
            controllers,
        }
    }

    /// Starts a broker that is no voter (an observer) as node `id`.
    fn broker(&self, root: &Path, id: u64) -> Result<BrokerProcess, String> {
        let addr = free_addrs(1).remove(0);
        let args = [
            "--node-id",
            &id.to_string(),
            "--controller-quorum-voters",
            &self.voters,
            "--controller-listen",
            &addr,
            "--shards",
            "2",
            "--memory",
            "512MiB",
        ];
        // No backtrace: a refused start's message must be within the log lines quoted.
        BrokerProcess::try_start_with_env(
            &root.join(format!("broker-{id}")),
            &args,
            &[("RUST_BACKTRACE", "0")],
        )
    }

    /// The leader the controllers last logged, once they agree on it.
    fn leader(&self) -> u64 {
        common::wait_for(Duration::from_secs(10), || {
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

/// `sluice cluster status --format json` against `broker`.
fn cluster_status(broker: &BrokerProcess) -> serde_json::Value {
    let output = std::process::Command::new(common::sluice_binary())
        .args([
            "cluster",
            "status",
            "--brokers",
            &broker.bootstrap,
            "--format",
            "json",
        ])
        .output()
        .expect("sluice runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// The leader in the last "controller quorum leader" line of a log.
fn last_leader(lines: &[String]) -> Option<u64> {
    lines
        .iter()
        .rev()
        .find(|line| line.contains("controller quorum leader"))?
        .split_whitespace()
        .find_map(|word| word.strip_prefix("leader="))?
        .parse()
        .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_on_a_three_controller_quorum_survives_the_leaders_kill9_and_its_own() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut quorum = Quorum::start(root.path());
    let broker = quorum
        .broker(root.path(), 10)
        .unwrap_or_else(|e| panic!("{e}"));
    broker.create_topic("before", 4).await;
    let before = produce_acked(&broker, "before", 4, 2_000).await;

    // A second broker would take every partition too: refused, naming the first.
    let refused = quorum
        .broker(root.path(), 11)
        .err()
        .expect("a second broker is refused");
    assert!(
        refused.contains("is this cluster's broker already"),
        "{refused}"
    );

    // `sluice cluster status` (DescribeQuorum) and the broker's gauges show the quorum.
    let status = cluster_status(&broker);
    let leader = quorum.leader();
    assert_eq!(status["leader_id"], leader);
    let roles: Vec<(u64, String)> = status["quorum"]
        .as_array()
        .expect("quorum")
        .iter()
        .map(|n| {
            let id = n["node_id"].as_u64().expect("node id");
            (id, n["role"].as_str().expect("role").to_string())
        })
        .collect();
    assert_eq!(roles.len(), 4, "{roles:?}");
    assert!(roles.contains(&(leader, "leader".to_string())), "{roles:?}");
    assert!(roles.contains(&(10, "observer".to_string())), "{roles:?}");
    assert_eq!(status["brokers"][0]["partitions_led"], 4);
    let admin = broker.admin.as_deref().expect("an admin server");
    let metrics = common::http::get(admin, "/metrics").body;
    assert!(
        metrics.contains(&format!("sluice_quorum_leader_id {leader}\n")),
        "{metrics}"
    );
    assert!(metrics.contains("sluice_quorum_voters 3\n"));

    // The quorum's leader dies: the broker's next admin change waits for the new leader.
    let mut dead = quorum.controllers.remove(&leader).expect("leader");
    dead.kill9();
    let killed = Instant::now();
    broker.create_topic("after", 4).await;
    let failover = killed.elapsed();
    println!("controller {leader} killed: a topic created {failover:?} later");
    assert!(failover < FAILOVER_MAX, "{failover:?}");
    let after = produce_acked(&broker, "after", 4, 2_000).await;
    assert_ne!(quorum.leader(), leader);

    // The dead controller comes back and follows; the broker restarts and finds its topics
    // (and their data) through the quorum.
    quorum.controllers.insert(leader, dead.restart());
    let broker = broker.restart();
    assert_topic_holds(&broker, "before", &before);
    assert_topic_holds(&broker, "after", &after);
}
