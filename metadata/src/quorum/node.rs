//! A running controller of the quorum: openraft over `storage.rs` and `network.rs`, and the
//! one way in for changes (`QuorumNode::submit`).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::error::{CheckIsLeaderError, ClientWriteError, ForwardToLeader, RaftError};
use openraft::storage::Adaptor;
use openraft::{BasicNode, Config, Raft, SnapshotPolicy};
use rkyv::rancor;
use rkyv::util::AlignedVec;
use tokio::sync::{Mutex, watch};
use tokio::task::JoinHandle;

use super::network::{
    self, FORWARD_TIMEOUT, PeerClient, PeerNetwork, Request, Response, SubmitRefusal, SubmitReply,
};
use super::storage::{QuorumStorage, encode_record};
use super::{QuorumTypes, RecordBytes, TrafficSource};
use crate::command::{self, CommandOutcome, MetadataCommand, Plan};
use crate::error::MetadataError;
use crate::image::MetadataImage;
use crate::limits::SNAPSHOT_INTERVAL_RECORDS;

/// How often the leader tells followers it is alive.
const HEARTBEAT_INTERVAL_MS: u64 = 100;
/// A follower that hears no leader for a random time in this range starts an election:
/// a dead leader is replaced in about a second.
const ELECTION_TIMEOUT_MIN_MS: u64 = 500;
const ELECTION_TIMEOUT_MAX_MS: u64 = 1000;
/// How long `submit` keeps trying (no leader, a leader change) before it gives up.
const SUBMIT_TIMEOUT: Duration = Duration::from_secs(15);
/// Pause between attempts while no leader is known.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// What a controller needs to join the quorum.
#[derive(Debug, Clone)]
pub struct QuorumConfig {
    /// This node's id (`--node-id`): a voter's, or an observer's (a broker that is not a
    /// controller: it gets every record as a Raft learner and forwards its commands).
    pub node_id: u64,
    /// Where the other nodes reach this one (`--controller-listen`); a voter's must be its
    /// entry in `voters`.
    pub addr: String,
    /// Every voter's id and `host:port` (`--controller-quorum-voters`).
    pub voters: BTreeMap<u64, String>,
    /// Where this controller keeps the Raft log, vote and snapshot.
    pub dir: PathBuf,
    /// The cluster id every controller's image carries (the same on all of them).
    pub cluster_id: String,
    /// A broker whose heartbeats stop for this long is fenced by the leader (Kafka's
    /// `broker.session.timeout.ms`).
    pub broker_session_timeout: Duration,
}

/// Parses `1@host:port,2@host:port,...` (Kafka's `controller.quorum.voters`).
pub fn parse_voters(text: &str) -> Result<BTreeMap<u64, String>, String> {
    let mut voters = BTreeMap::new();
    for voter in text.split(',').map(str::trim).filter(|v| !v.is_empty()) {
        let (id, addr) = voter
            .split_once('@')
            .ok_or_else(|| format!("voter '{voter}' is not ID@HOST:PORT"))?;
        let id: u64 = id
            .parse()
            .map_err(|_| format!("voter '{voter}': '{id}' is not a node id"))?;
        let (host, port) = addr
            .rsplit_once(':')
            .ok_or_else(|| format!("voter '{voter}': '{addr}' has no port"))?;
        if host.is_empty() || port.parse::<u16>().is_err() {
            return Err(format!("voter '{voter}': '{addr}' is not HOST:PORT"));
        }
        if voters.insert(id, addr.to_string()).is_some() {
            return Err(format!("node id {id} is named twice"));
        }
    }
    if voters.is_empty() {
        return Err("no voter named".to_string());
    }
    Ok(voters)
}

/// The cluster id of a quorum: derived from its voters (ids and addresses), so that every
/// node computes the same one with no formatting step (Kafka's `kafka-storage format
/// --cluster-id`). A quorum with other voters is another cluster.
pub fn cluster_id_of_voters(voters: &BTreeMap<u64, String>) -> String {
    let text: String = voters
        .iter()
        .map(|(id, addr)| format!("{id}@{addr},"))
        .collect();
    let mut bytes = [0u8; 16];
    for (seed, chunk) in bytes.chunks_mut(4).enumerate() {
        let crc = crc32c::crc32c_append(seed as u32, text.as_bytes());
        chunk.copy_from_slice(&crc.to_le_bytes());
    }
    crate::store::base64_url(&bytes)
}

/// What a controller knows of the quorum, for `/metrics` and `sluice cluster status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumStatus {
    pub node_id: u64,
    /// The leader this controller follows, if it knows one.
    pub leader: Option<u64>,
    pub term: u64,
    /// Index of the last Raft entry applied to the image.
    pub applied_index: u64,
    pub voters: Vec<u64>,
}

/// The quorum as its leader sees it (Kafka's DescribeQuorum).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QuorumDescription {
    pub leader: u64,
    pub term: u64,
    /// The leader's last applied index (it applies each entry once a majority has it):
    /// Kafka's high watermark of the metadata log.
    pub applied_index: u64,
    /// Each voter and the last index the leader knows it has (None: not known yet).
    pub voters: Vec<(u64, Option<u64>)>,
    /// Each observer (a broker that is no voter), likewise.
    pub observers: Vec<(u64, Option<u64>)>,
    /// Every member's quorum address.
    pub addrs: BTreeMap<u64, String>,
}

/// The state the RPC server and `QuorumNode` share.
pub(crate) struct NodeInner {
    pub(crate) raft: Raft<QuorumTypes>,
    images: watch::Receiver<Arc<MetadataImage>>,
    /// Serializes the leader's plan → propose → apply, so every command is planned on the
    /// image its predecessor left. Holds the term in which this node, leading, last made
    /// sure it had applied everything committed before it led (0: never).
    leading: Mutex<u64>,
    /// While this node leads: when each broker's last heartbeat came, and the term these
    /// times are from (a new leader gives every broker a full session from its first term).
    heartbeats: std::sync::Mutex<(u64, HashMap<i32, Instant>)>,
    broker_session_timeout: Duration,
    /// The partitions' traffic from the brokers' heartbeats, while this node leads.
    traffic: std::sync::Mutex<super::traffic::TrafficRates>,
}

/// One controller of the quorum.
pub struct QuorumNode {
    inner: Arc<NodeInner>,
    server: JoinHandle<()>,
    node_id: u64,
}

impl QuorumNode {
    /// Starts the node on an already bound listener (at `config.addr`). The voter with the
    /// lowest id forms the quorum if it never was (so the first start needs it, with a
    /// majority). An observer asks the leader, in the background, to
    /// add it as a learner.
    pub async fn start(
        config: QuorumConfig,
        listener: std::net::TcpListener,
    ) -> Result<QuorumNode, MetadataError> {
        let voter = config.voters.contains_key(&config.node_id);
        if voter && config.voters[&config.node_id] != config.addr {
            return Err(MetadataError::InvalidRequest(format!(
                "node {} listens for the quorum on {}, but the voters name {} for it",
                config.node_id, config.addr, config.voters[&config.node_id]
            )));
        }
        let node_id = i32::try_from(config.node_id).map_err(|_| {
            MetadataError::InvalidRequest(format!("node id {} is too large", config.node_id))
        })?;
        let (storage, images) = QuorumStorage::open(&config.dir, node_id, &config.cluster_id)?;
        let raft_config = Config {
            cluster_name: config.cluster_id.clone(),
            heartbeat_interval: HEARTBEAT_INTERVAL_MS,
            election_timeout_min: ELECTION_TIMEOUT_MIN_MS,
            election_timeout_max: ELECTION_TIMEOUT_MAX_MS,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(SNAPSHOT_INTERVAL_RECORDS),
            max_in_snapshot_log_to_keep: SNAPSHOT_INTERVAL_RECORDS,
            ..Config::default()
        }
        .validate()
        .map_err(|e| MetadataError::InvalidRequest(format!("quorum settings: {e}")))?;
        let (log_store, state_machine) = Adaptor::new(storage);
        let raft = Raft::new(
            config.node_id,
            Arc::new(raft_config),
            PeerNetwork,
            log_store,
            state_machine,
        )
        .await
        .map_err(|e| MetadataError::Failed(format!("the quorum did not start: {e}")))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| MetadataError::io(&config.dir, e))?;
        let listener = tokio::net::TcpListener::from_std(listener)
            .map_err(|e| MetadataError::io(&config.dir, e))?;
        let inner = Arc::new(NodeInner {
            raft,
            images,
            leading: Mutex::new(0),
            heartbeats: std::sync::Mutex::new((0, HashMap::new())),
            broker_session_timeout: config.broker_session_timeout,
            traffic: std::sync::Mutex::default(),
        });
        let server = tokio::spawn(network::serve(listener, inner.clone()));
        if voter {
            tokio::spawn(fence_silent_brokers(inner.clone()));
        }
        tokio::spawn(log_leader_changes(inner.raft.metrics()));
        let initialized = inner
            .raft
            .is_initialized()
            .await
            .map_err(|e| MetadataError::Failed(e.to_string()))?;
        if !voter {
            tokio::spawn(join_as_learner(
                config.voters.clone(),
                config.node_id,
                config.addr.clone(),
            ));
        } else if !initialized && config.voters.keys().next() == Some(&config.node_id) {
            // The voter with the lowest id forms the quorum: two voters proposing the same
            // first membership at once is safe in openraft, but the loser logs an ERROR.
            let members: BTreeMap<u64, BasicNode> = config
                .voters
                .iter()
                .map(|(id, addr)| (*id, BasicNode::new(addr)))
                .collect();
            if let Err(error) = inner.raft.initialize(members).await {
                tracing::warn!(%error, "could not form the controller quorum");
            }
        }
        Ok(QuorumNode {
            inner,
            server,
            node_id: config.node_id,
        })
    }

    /// The image this controller has applied.
    pub fn image(&self) -> Arc<MetadataImage> {
        self.inner.images.borrow().clone()
    }

    /// Every image this controller applies, newest first.
    pub fn images(&self) -> watch::Receiver<Arc<MetadataImage>> {
        self.inner.images.clone()
    }

    /// Applies `command` through the quorum's leader (this controller or, forwarded, another)
    /// and returns once this controller's image has the change.
    pub async fn submit(
        &self,
        command: MetadataCommand,
    ) -> Result<(Arc<MetadataImage>, CommandOutcome), MetadataError> {
        let deadline = Instant::now() + SUBMIT_TIMEOUT;
        let mut encoded = None;
        loop {
            let leader = match self.inner.submit_here(&command).await {
                Ok(done) => return Ok(done),
                Err(SubmitRefusal::Failed(code, message)) => {
                    return Err(MetadataError::Forwarded { code, message });
                }
                Err(SubmitRefusal::NotLeader(leader)) => leader,
            };
            if let Some((leader_id, node)) = leader
                && leader_id != self.node_id
            {
                let bytes = match &encoded {
                    Some(bytes) => bytes,
                    None => encoded.insert(encode_command(&command)?),
                };
                let mut client = PeerClient::new(leader_id, node.addr.clone());
                match client
                    .call(&Request::Submit(bytes.clone()), FORWARD_TIMEOUT)
                    .await
                {
                    Ok(Response::Submit(Ok(reply))) => return self.finish_forwarded(reply).await,
                    Ok(Response::Submit(Err(SubmitRefusal::Failed(code, message)))) => {
                        return Err(MetadataError::Forwarded { code, message });
                    }
                    // Not the leader any more, unreachable: ask again who leads.
                    _ => {}
                }
            }
            if Instant::now() >= deadline {
                return Err(MetadataError::QuorumUnavailable(format!(
                    "no controller quorum leader took the change within {} s",
                    SUBMIT_TIMEOUT.as_secs()
                )));
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    /// Waits until this node's image has everything the quorum had committed when it was
    /// called (a read barrier: a broker calls it before serving after a start); gives up
    /// after `timeout` without a leader.
    pub async fn catch_up(&self, timeout: Duration) -> Result<Arc<MetadataImage>, MetadataError> {
        let deadline = Instant::now() + timeout;
        loop {
            let index = match self.inner.read_index_here().await {
                Ok(index) => Some(index),
                Err(SubmitRefusal::NotLeader(Some((leader_id, node))))
                    if leader_id != self.node_id =>
                {
                    let mut client = PeerClient::new(leader_id, node.addr.clone());
                    match client.call(&Request::ReadIndex, FORWARD_TIMEOUT).await {
                        Ok(Response::ReadIndex(Ok(index))) => Some(index),
                        _ => None,
                    }
                }
                Err(_) => None,
            };
            if let Some(index) = index {
                let waited = self
                    .inner
                    .raft
                    .wait(Some(deadline.saturating_duration_since(Instant::now())))
                    .applied_index_at_least(Some(index), "catch up")
                    .await;
                if waited.is_ok() {
                    return Ok(self.image());
                }
            }
            if Instant::now() >= deadline {
                return Err(MetadataError::QuorumUnavailable(format!(
                    "the controller quorum had no leader for {} s",
                    timeout.as_secs()
                )));
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    /// The quorum as its leader sees it, asked of the leader if this node does not lead.
    pub async fn describe(&self) -> Result<QuorumDescription, MetadataError> {
        match self.inner.describe_here() {
            Ok(description) => Ok(description),
            Err(SubmitRefusal::NotLeader(Some((leader_id, node)))) if leader_id != self.node_id => {
                let mut client = PeerClient::new(leader_id, node.addr.clone());
                match client.call(&Request::Describe, FORWARD_TIMEOUT).await {
                    Ok(Response::Describe(Ok(description))) => Ok(description),
                    _ => Err(MetadataError::QuorumUnavailable(format!(
                        "the controller quorum's leader {leader_id} did not describe it"
                    ))),
                }
            }
            Err(_) => Err(MetadataError::QuorumUnavailable(
                "the controller quorum has no leader".to_string(),
            )),
        }
    }

    /// Takes this observer out of the quorum (a broker the quorum refused leaves, so the
    /// leader stops sending it the log).
    pub async fn leave(&self) -> Result<(), MetadataError> {
        let deadline = Instant::now() + SUBMIT_TIMEOUT;
        let request = Request::Leave {
            node_id: self.node_id,
        };
        loop {
            if let SubmitRefusal::NotLeader(Some((leader_id, node))) = self.inner.leader_refusal() {
                let mut client = PeerClient::new(leader_id, node.addr);
                match client.call(&request, FORWARD_TIMEOUT).await {
                    Ok(Response::Leave(Ok(()))) => return Ok(()),
                    Ok(Response::Leave(Err(SubmitRefusal::Failed(code, message)))) => {
                        return Err(MetadataError::Forwarded { code, message });
                    }
                    _ => {}
                }
            }
            if Instant::now() >= deadline {
                return Err(MetadataError::QuorumUnavailable(
                    "no controller quorum leader took this observer out".to_string(),
                ));
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    /// Sends the quorum's leader a heartbeat for broker `broker_id` (this node) every
    /// `interval`, with its partitions' traffic read from `traffic`, until the node stops
    /// (spawn it on the quorum's runtime): a broker whose heartbeats stop is fenced, and the
    /// next one unfences it.
    pub fn send_heartbeats(
        &self,
        broker_id: i32,
        interval: Duration,
        traffic: TrafficSource,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        send_heartbeats(
            self.inner.clone(),
            self.node_id,
            broker_id,
            interval,
            traffic,
        )
    }

    /// What this controller knows of the quorum now.
    pub fn status(&self) -> QuorumStatus {
        let metrics = self.inner.raft.metrics();
        let metrics = metrics.borrow();
        QuorumStatus {
            node_id: self.node_id,
            leader: metrics.current_leader,
            term: metrics.current_term,
            applied_index: metrics.last_applied.map_or(0, |id| id.index),
            voters: metrics.membership_config.membership().voter_ids().collect(),
        }
    }

    /// Stops the RPC server and Raft.
    pub async fn shutdown(&self) {
        self.server.abort();
        let _ = self.inner.raft.shutdown().await;
    }

    async fn finish_forwarded(
        &self,
        reply: SubmitReply,
    ) -> Result<(Arc<MetadataImage>, CommandOutcome), MetadataError> {
        let outcome = decode_outcome(&reply.outcome)?;
        let mut images = self.inner.images.clone();
        let image = tokio::time::timeout(
            FORWARD_TIMEOUT,
            images.wait_for(|image| image.epoch >= reply.epoch),
        )
        .await
        .map_err(|_| {
            MetadataError::QuorumUnavailable(format!(
                "the change applied at the leader (epoch {}) did not reach this controller",
                reply.epoch
            ))
        })?
        .map_err(|_| MetadataError::Failed("the quorum stopped".to_string()))?
        .clone();
        Ok((image, outcome))
    }
}

impl NodeInner {
    /// Applies the command if this controller leads; otherwise names the leader it knows.
    pub(crate) async fn submit_here(
        &self,
        command: &MetadataCommand,
    ) -> Result<(Arc<MetadataImage>, CommandOutcome), SubmitRefusal> {
        let mut ensured_term = self.leading.lock().await;
        // Leads, and has applied everything committed before it led: the plan sees the newest
        // image. Checked once a term: after that only this node's own commands, applied before
        // they return, change the image. (A leader deposed meanwhile plans on an old image,
        // but cannot commit what it planned.)
        let (leader, term) = {
            let metrics = self.raft.metrics();
            let metrics = metrics.borrow();
            (
                metrics.current_leader == Some(metrics.id),
                metrics.current_term,
            )
        };
        if !leader || term != *ensured_term {
            self.raft.ensure_linearizable().await.map_err(|e| match e {
                RaftError::APIError(CheckIsLeaderError::ForwardToLeader(forward)) => {
                    not_leader(forward)
                }
                other => SubmitRefusal::NotLeader(None).or_fatal(&other),
            })?;
            *ensured_term = term;
        }
        let image = self.images.borrow().clone();
        let failed = |e: MetadataError| SubmitRefusal::Failed(e.kafka_error_code(), e.to_string());
        let (record, answer) =
            match command::plan(&image, command, &mut crate::store::random_topic_id)
                .map_err(failed)?
            {
                Plan::Unchanged(outcome) => return Ok((image, outcome)),
                Plan::Record(record) => (record, None),
                Plan::RecordAnswering { record, outcome } => (record, Some(outcome)),
            };
        // The same deterministic apply the state machine will run: a record that would not
        // apply never reaches the log, and its outcome is what the caller gets (unless the
        // plan decided the answer, with items it refused).
        let (_, applied) = image.apply(image.epoch + 1, &record).map_err(failed)?;
        let outcome = answer.unwrap_or(applied);
        let bytes = encode_record(&record).map_err(failed)?;
        let written = self
            .raft
            .client_write(RecordBytes(bytes))
            .await
            .map_err(|e| match e {
                RaftError::APIError(ClientWriteError::ForwardToLeader(forward)) => {
                    not_leader(forward)
                }
                other => SubmitRefusal::NotLeader(None).or_fatal(&other),
            })?;
        if let Some((code, message)) = written.data.refused {
            return Err(SubmitRefusal::Failed(code, message));
        }
        Ok((self.images.borrow().clone(), outcome))
    }

    /// A command another controller forwarded.
    pub(crate) async fn submit_forwarded(
        &self,
        command: &[u8],
    ) -> Result<SubmitReply, SubmitRefusal> {
        let command = decode_command(command)
            .map_err(|e| SubmitRefusal::Failed(e.kafka_error_code(), e.to_string()))?;
        let (image, outcome) = self.submit_here(&command).await?;
        let outcome = rkyv::to_bytes::<rancor::Error>(&outcome)
            .map_err(|e| SubmitRefusal::Failed(56, format!("cannot encode an outcome: {e}")))?;
        Ok(SubmitReply {
            epoch: image.epoch,
            outcome: outcome.to_vec(),
        })
    }

    /// Removes an observer, if this controller leads; voters stay.
    pub(crate) async fn remove_observer_here(&self, node_id: u64) -> Result<(), SubmitRefusal> {
        let _leading = self.leading.lock().await;
        let (voter, member) = {
            let metrics = self.raft.metrics();
            let metrics = metrics.borrow();
            let membership = metrics.membership_config.membership();
            (
                membership.voter_ids().any(|id| id == node_id),
                membership.nodes().any(|(id, _)| *id == node_id),
            )
        };
        if voter {
            return Err(SubmitRefusal::Failed(
                42,
                format!("node {node_id} is a voter of the controller quorum"),
            ));
        }
        if !member {
            return Ok(());
        }
        let remove = openraft::ChangeMembers::RemoveNodes([node_id].into_iter().collect());
        self.raft
            .change_membership(remove, false)
            .await
            .map(|_| ())
            .map_err(membership_refusal)
    }

    /// The quorum as this node sees it, if it leads.
    pub(crate) fn describe_here(&self) -> Result<QuorumDescription, SubmitRefusal> {
        let metrics = self.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        if metrics.current_leader != Some(metrics.id) {
            return Err(self.leader_refusal());
        }
        let progress = |id: u64| -> Option<u64> {
            if id == metrics.id {
                return metrics.last_log_index;
            }
            metrics
                .replication
                .as_ref()?
                .get(&id)
                .copied()
                .flatten()
                .map(|log_id| log_id.index)
        };
        Ok(QuorumDescription {
            leader: metrics.id,
            term: metrics.current_term,
            applied_index: metrics.last_applied.map_or(0, |id| id.index),
            voters: membership
                .voter_ids()
                .map(|id| (id, progress(id)))
                .collect(),
            observers: membership
                .learner_ids()
                .map(|id| (id, progress(id)))
                .collect(),
            addrs: membership
                .nodes()
                .map(|(id, node)| (*id, node.addr.clone()))
                .collect(),
        })
    }

    /// Adds an observer as a learner, if this controller leads.
    pub(crate) async fn add_learner_here(
        &self,
        node_id: u64,
        addr: String,
    ) -> Result<(), SubmitRefusal> {
        let _leading = self.leading.lock().await;
        let known = self
            .raft
            .metrics()
            .borrow()
            .membership_config
            .nodes()
            .any(|(id, node)| *id == node_id && node.addr == addr);
        if known {
            return Ok(());
        }
        self.raft
            .add_learner(node_id, BasicNode::new(addr), false)
            .await
            .map(|_| ())
            .map_err(membership_refusal)
    }

    /// The refusal of a node that does not lead: it names the leader it follows, if any.
    fn leader_refusal(&self) -> SubmitRefusal {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        let leader = metrics.current_leader.and_then(|id| {
            metrics
                .membership_config
                .membership()
                .nodes()
                .find(|(node, _)| **node == id)
                .map(|(_, node)| (id, node.clone()))
        });
        SubmitRefusal::NotLeader(leader)
    }

    /// A broker's heartbeat, if this controller leads: notes its time, and unfences the
    /// broker if it was fenced.
    pub(crate) async fn heartbeat_here(
        &self,
        broker_id: i32,
        traffic: &[super::PartitionTraffic],
    ) -> Result<(), SubmitRefusal> {
        let Some(term) = self.leading_term() else {
            return Err(self.leader_refusal());
        };
        let now = Instant::now();
        self.heartbeats_of(term).1.insert(broker_id, now);
        self.traffic
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .record(broker_id, traffic, now);
        let (fenced, wal_lost) = {
            let image = self.images.borrow();
            let fenced = image.brokers().get(&broker_id).is_some_and(|b| b.fenced);
            let wal_lost = image
                .broker_wal(broker_id)
                .is_some_and(|wal| wal.holder != crate::brokers::WalHolder::Owner);
            (fenced, wal_lost)
        };
        // A broker whose WAL was taken over cannot write: it must register again (restart).
        if fenced && !wal_lost {
            let unfence = MetadataCommand::SetBrokerFenced {
                node_id: broker_id,
                fenced: false,
            };
            self.submit_here(&unfence).await?;
            tracing::info!(
                broker = broker_id,
                "broker unfenced: its heartbeats came back"
            );
        }
        Ok(())
    }

    /// The brokers, registered and unfenced, whose last heartbeat is older than the session
    /// timeout; empty unless this controller leads. A broker never heard from in this term
    /// counts from the first time this asks about it.
    fn silent_brokers(&self) -> Vec<i32> {
        let Some(term) = self.leading_term() else {
            return Vec::new();
        };
        let image = self.images.borrow().clone();
        let now = Instant::now();
        let mut heartbeats = self.heartbeats_of(term);
        let silent: Vec<i32> = image
            .live_brokers()
            .filter(|(id, _)| {
                let last = *heartbeats.1.entry(*id).or_insert(now);
                now.duration_since(last) > self.broker_session_timeout
            })
            .map(|(id, _)| id)
            .collect();
        // About to be fenced: a broker unfenced again by its registration (a restart) then
        // gets a full session from this check on, not its heartbeat of before the fence.
        for id in &silent {
            heartbeats.1.remove(id);
        }
        silent
    }

    /// The term in which this controller leads, if it does.
    fn leading_term(&self) -> Option<u64> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        (metrics.current_leader == Some(metrics.id)).then_some(metrics.current_term)
    }

    /// The brokers' last heartbeats as this controller, leading in `term`, received them:
    /// emptied when the term is new, so that a new leader gives every broker a full session.
    fn heartbeats_of(&self, term: u64) -> std::sync::MutexGuard<'_, (u64, HashMap<i32, Instant>)> {
        let mut heartbeats = self.heartbeats.lock().unwrap_or_else(|e| e.into_inner());
        if heartbeats.0 != term {
            *heartbeats = (term, HashMap::new());
        }
        heartbeats
    }

    /// The applied index a linearizable read must wait for, if this controller leads.
    pub(crate) async fn read_index_here(&self) -> Result<u64, SubmitRefusal> {
        match self.raft.ensure_linearizable().await {
            Ok(read) => Ok(read.map_or(0, |id| id.index)),
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(forward))) => {
                Err(not_leader(forward))
            }
            Err(other) => Err(SubmitRefusal::NotLeader(None).or_fatal(&other)),
        }
    }
}

impl SubmitRefusal {
    /// A fatal Raft error (the quorum stopped) fails the command; anything else is retried.
    fn or_fatal<E: std::fmt::Display>(self, error: &RaftError<u64, E>) -> SubmitRefusal {
        match error {
            RaftError::Fatal(fatal) => {
                SubmitRefusal::Failed(56, format!("the controller quorum stopped: {fatal}"))
            }
            RaftError::APIError(_) => self,
        }
    }
}

/// Logs each change of leader this node sees (openraft's own logs are off by default: it
/// logs every vote at INFO and every failed RPC to a dead peer at ERROR). Ends with Raft.
async fn log_leader_changes(mut metrics: watch::Receiver<openraft::RaftMetrics<u64, BasicNode>>) {
    let mut known = None;
    while metrics.changed().await.is_ok() {
        let (leader, term) = {
            let now = metrics.borrow_and_update();
            (now.current_leader, now.current_term)
        };
        if leader != known {
            known = leader;
            match leader {
                Some(leader) => tracing::info!(leader, term, "controller quorum leader"),
                None => tracing::info!(term, "the controller quorum has no leader"),
            }
        }
    }
}

/// While this voter leads, fences each broker whose heartbeats stopped for the session
/// timeout, gives each fenced broker's WAL that needs one a taker, and balances the
/// partitions over the live brokers. Runs until Raft stops.
async fn fence_silent_brokers(inner: Arc<NodeInner>) {
    // A fence (and the takeover after it) comes at most one period after the session ends:
    // the check is a scan of a few brokers in memory, so it runs often.
    let period = (inner.broker_session_timeout / 20)
        .clamp(Duration::from_millis(50), Duration::from_millis(250));
    loop {
        tokio::time::sleep(period).await;
        for broker in inner.silent_brokers() {
            let fence = MetadataCommand::SetBrokerFenced {
                node_id: broker,
                fenced: true,
            };
            match inner.submit_here(&fence).await {
                Ok(_) => tracing::info!(
                    broker,
                    session_timeout_ms = inner.broker_session_timeout.as_millis() as u64,
                    "broker fenced: no heartbeat within the session timeout; its partitions \
                     are offline until a live broker takes its WAL over, or it is back"
                ),
                // Not the leader any more: the new one counts the broker's session afresh.
                Err(SubmitRefusal::NotLeader(_)) => break,
                Err(SubmitRefusal::Failed(code, message)) => {
                    tracing::info!(broker, code, %message, "could not fence a silent broker")
                }
            }
        }
        let takeovers = inner.images.borrow().wals_to_take_over();
        if inner.leading_term().is_some() {
            for (broker, taker, epoch) in takeovers {
                let take = MetadataCommand::TakeOverWal {
                    node_id: broker,
                    taker,
                };
                match inner.submit_here(&take).await {
                    Ok(_) => tracing::info!(
                        broker,
                        taker,
                        wal_epoch = epoch,
                        "a live broker takes the fenced broker's WAL over"
                    ),
                    Err(SubmitRefusal::NotLeader(_)) => break,
                    Err(SubmitRefusal::Failed(code, message)) => {
                        tracing::info!(broker, taker, code, %message, "could not hand a WAL over")
                    }
                }
            }
        }
        if inner.leading_term().is_some() {
            balance_partitions(&inner).await;
        }
        if inner.raft.metrics().borrow().running_state.is_err() {
            return;
        }
    }
}

/// Partition moves one balancing round asks for at most, with those already in flight: each
/// seals its partition for the time of an upload, so a few at a time keep the pauses short.
const BALANCING_MOVES_MAX: usize = 4;

/// Asks for the moves that even out the live brokers' partition counts, then their traffic
/// (`traffic.rs`, `MetadataImage::balancing_moves`); the brokers holding them carry them out.
async fn balance_partitions(inner: &NodeInner) {
    let image = inner.images.borrow().clone();
    let rates = inner
        .traffic
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .rates(&image);
    let moves = image.balancing_moves(BALANCING_MOVES_MAX, &rates);
    for (topic, partition, target) in moves {
        let ask = MetadataCommand::MovePartition {
            topic: topic.clone(),
            partition,
            target: Some(target),
        };
        match inner.submit_here(&ask).await {
            Ok(_) => tracing::info!(
                %topic,
                partition,
                to = target,
                "the balancer moves a partition to even the brokers' partition counts or \
                 traffic"
            ),
            Err(SubmitRefusal::NotLeader(_)) => return,
            Err(SubmitRefusal::Failed(code, message)) => {
                tracing::info!(%topic, partition, to = target, code, %message, "the balancer could not move a partition")
            }
        }
    }
}

/// A broker's heartbeats to the quorum's leader, every `interval`, until Raft stops.
async fn send_heartbeats(
    inner: Arc<NodeInner>,
    node_id: u64,
    broker_id: i32,
    interval: Duration,
    traffic: TrafficSource,
) {
    let mut client: Option<PeerClient> = None;
    loop {
        let report = traffic();
        match inner.heartbeat_here(broker_id, &report).await {
            Ok(()) => {}
            Err(SubmitRefusal::NotLeader(Some((leader_id, node)))) if leader_id != node_id => {
                let mut to_leader = client
                    .take()
                    .filter(|c| c.target() == leader_id)
                    .unwrap_or_else(|| PeerClient::new(leader_id, node.addr.clone()));
                let request = Request::Heartbeat {
                    broker_id,
                    traffic: report,
                };
                if let Ok(Response::Heartbeat(Err(SubmitRefusal::Failed(code, message)))) =
                    to_leader.call(&request, FORWARD_TIMEOUT).await
                {
                    tracing::info!(code, %message, "the quorum's leader refused a heartbeat");
                }
                client = Some(to_leader);
            }
            // No leader known yet (an election): the next beat finds it.
            Err(_) => {}
        }
        if inner.raft.metrics().borrow().running_state.is_err() {
            return;
        }
        tokio::time::sleep(interval).await;
    }
}

/// An observer's way into the quorum: asks the voters (then the leader they name) until
/// the leader has added it as a learner. Runs until it succeeds or the node stops.
async fn join_as_learner(voters: BTreeMap<u64, String>, node_id: u64, addr: String) {
    let request = Request::Join {
        node_id,
        addr: addr.clone(),
    };
    let voters: Vec<(u64, String)> = voters.into_iter().collect();
    let mut next_voter = 0;
    // The leader a voter named, asked next.
    let mut leader: Option<(u64, String)> = None;
    loop {
        let (target, target_addr) = leader.take().unwrap_or_else(|| {
            next_voter += 1;
            voters[next_voter % voters.len()].clone()
        });
        let mut client = PeerClient::new(target, target_addr);
        match client.call(&request, FORWARD_TIMEOUT).await {
            Ok(Response::Join(Ok(()))) => {
                tracing::info!(
                    leader = target,
                    "joined the controller quorum as an observer"
                );
                return;
            }
            Ok(Response::Join(Err(SubmitRefusal::NotLeader(Some((id, node)))))) => {
                leader = Some((id, node.addr));
                continue;
            }
            // The quorum is still forming (its first membership is not committed yet), or
            // the voter is down: try again shortly.
            _ => {}
        }
        tokio::time::sleep(RETRY_PAUSE * 4).await;
    }
}

/// Why a membership change (an observer joining or leaving) did not happen.
fn membership_refusal(error: RaftError<u64, ClientWriteError<u64, BasicNode>>) -> SubmitRefusal {
    match error {
        RaftError::APIError(ClientWriteError::ForwardToLeader(forward)) => not_leader(forward),
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
            SubmitRefusal::Failed(42, e.to_string())
        }
        other => SubmitRefusal::NotLeader(None).or_fatal(&other),
    }
}

fn not_leader(forward: ForwardToLeader<u64, BasicNode>) -> SubmitRefusal {
    SubmitRefusal::NotLeader(forward.leader_id.zip(forward.leader_node))
}

fn encode_command(command: &MetadataCommand) -> Result<Vec<u8>, MetadataError> {
    rkyv::to_bytes::<rancor::Error>(command)
        .map(|bytes| bytes.to_vec())
        .map_err(|e| MetadataError::InvalidRequest(format!("cannot encode a command: {e}")))
}

fn decode_command(bytes: &[u8]) -> Result<MetadataCommand, MetadataError> {
    let mut aligned = AlignedVec::<16>::with_capacity(bytes.len());
    aligned.extend_from_slice(bytes);
    rkyv::from_bytes::<MetadataCommand, rancor::Error>(&aligned)
        .map_err(|e| MetadataError::InvalidRequest(format!("a forwarded command: {e}")))
}

fn decode_outcome(bytes: &[u8]) -> Result<CommandOutcome, MetadataError> {
    let mut aligned = AlignedVec::<16>::with_capacity(bytes.len());
    aligned.extend_from_slice(bytes);
    rkyv::from_bytes::<CommandOutcome, rancor::Error>(&aligned)
        .map_err(|e| MetadataError::Corrupt(format!("the leader's outcome: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Cluster {
        dirs: Vec<tempfile::TempDir>,
        voters: BTreeMap<u64, String>,
        nodes: BTreeMap<u64, QuorumNode>,
        session_timeout: Duration,
    }

    impl Cluster {
        async fn start(size: u64) -> Cluster {
            Cluster::start_with(size, Duration::from_secs(9)).await
        }

        async fn start_with(size: u64, session_timeout: Duration) -> Cluster {
            let listeners: Vec<std::net::TcpListener> = (0..size)
                .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind"))
                .collect();
            let voters: BTreeMap<u64, String> = listeners
                .iter()
                .enumerate()
                .map(|(i, l)| (i as u64 + 1, l.local_addr().expect("addr").to_string()))
                .collect();
            let dirs = vec![tempfile::tempdir().expect("tempdir")];
            let mut cluster = Cluster {
                dirs,
                voters,
                nodes: BTreeMap::new(),
                session_timeout,
            };
            for (i, listener) in listeners.into_iter().enumerate() {
                cluster.start_node(i as u64 + 1, listener).await;
            }
            cluster
        }

        async fn start_node(&mut self, id: u64, listener: std::net::TcpListener) {
            let config = QuorumConfig {
                node_id: id,
                addr: listener.local_addr().expect("addr").to_string(),
                voters: self.voters.clone(),
                dir: self.dirs[0].path().join(format!("quorum-{id}")),
                cluster_id: "quorum-test-cluster-id".to_string(),
                broker_session_timeout: self.session_timeout,
            };
            let node = QuorumNode::start(config, listener).await.expect("start");
            self.nodes.insert(id, node);
        }

        async fn restart_node(&mut self, id: u64) {
            let addr = self.voters[&id].clone();
            let listener = std::net::TcpListener::bind(&addr).expect("rebind");
            self.start_node(id, listener).await;
        }

        async fn leader(&self) -> u64 {
            for _ in 0..200 {
                let leaders: Vec<Option<u64>> =
                    self.nodes.values().map(|n| n.status().leader).collect();
                if let Some(Some(leader)) = leaders.first()
                    && leaders.iter().all(|l| *l == Some(*leader))
                    && self.nodes.contains_key(leader)
                {
                    return *leader;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("no leader agreed on");
        }
    }

    fn create_topic(name: &str) -> MetadataCommand {
        MetadataCommand::CreateTopic {
            name: name.to_string(),
            partitions: 3,
            configs: BTreeMap::new(),
            shards: 2,
        }
    }

    async fn wait_epoch(node: &QuorumNode, epoch: u64) -> Arc<MetadataImage> {
        let mut images = node.images();
        tokio::time::timeout(
            Duration::from_secs(10),
            images.wait_for(|image| image.epoch >= epoch),
        )
        .await
        .expect("the change reached every controller")
        .expect("quorum running")
        .clone()
    }

    /// A broker (an observer) that heartbeats stays unfenced; when it stops, the leader fences
    /// it and its partitions go offline at a new leader epoch; its heartbeats unfence it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_silent_broker_is_fenced_and_its_heartbeat_unfences_it() {
        let session = Duration::from_millis(600);
        let beat = Duration::from_millis(100);
        let mut cluster = Cluster::start_with(3, session).await;
        cluster.leader().await;
        let broker = 10;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        cluster.start_node(broker, listener).await;
        let register = MetadataCommand::RegisterBroker {
            wal: None,
            node_id: broker as i32,
            endpoint: "127.0.0.1:9092".to_string(),
        };
        let observer = &cluster.nodes[&broker];
        observer
            .catch_up(Duration::from_secs(10))
            .await
            .expect("caught up");
        observer.submit(register).await.expect("registered");
        tokio::spawn(observer.send_heartbeats(broker as i32, beat, Arc::new(Vec::new)));
        let (image, _) = observer.submit(create_topic("t")).await.expect("created");
        let stream_id = image.topic("t").expect("topic").partitions[0].stream_id;
        assert!(image.leads(stream_id), "the only broker leads");

        let voter = |cluster: &Cluster| cluster.nodes[&1].images();
        let wait_until = |mut images: watch::Receiver<Arc<MetadataImage>>, fenced: bool| async move {
            tokio::time::timeout(
                Duration::from_secs(10),
                images.wait_for(|i| i.brokers().get(&10).is_some_and(|b| b.fenced == fenced)),
            )
            .await
            .expect("the fencing changed")
            .expect("quorum running")
            .clone()
        };
        // Heartbeats for three sessions: never fenced.
        tokio::time::sleep(session * 3).await;
        assert!(!cluster.nodes[&1].image().brokers()[&10].fenced);

        // Silent: fenced, its partition offline one epoch on.
        cluster
            .nodes
            .remove(&broker)
            .expect("observer")
            .shutdown()
            .await;
        let fenced = wait_until(voter(&cluster), true).await;
        let offline = fenced.leadership(stream_id);
        assert_eq!(
            (offline.leader, offline.replica, offline.leader_epoch),
            (None, Some(10), 1)
        );

        // Back: its first heartbeat unfences it, one epoch on again.
        let listener = std::net::TcpListener::bind(&addr).expect("rebind");
        cluster.start_node(broker, listener).await;
        tokio::spawn(cluster.nodes[&broker].send_heartbeats(
            broker as i32,
            beat,
            Arc::new(Vec::new),
        ));
        let unfenced = wait_until(voter(&cluster), false).await;
        let online = unfenced.leadership(stream_id);
        assert_eq!((online.leader, online.leader_epoch), (Some(10), 2));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn three_controllers_agree_survive_the_leader_and_catch_up_after_a_restart() {
        let mut cluster = Cluster::start(3).await;
        let leader = cluster.leader().await;
        let follower = *cluster
            .nodes
            .keys()
            .find(|id| **id != leader)
            .expect("a follower");

        // Through a follower: forwarded to the leader, answered once the follower has it.
        let (image, outcome) = cluster.nodes[&follower]
            .submit(create_topic("orders"))
            .await
            .expect("create through a follower");
        assert!(matches!(outcome, CommandOutcome::TopicCreated { .. }));
        assert!(image.topic("orders").is_some());
        for node in cluster.nodes.values() {
            assert!(
                wait_epoch(node, image.epoch)
                    .await
                    .topic("orders")
                    .is_some()
            );
        }
        // A refusal made at the leader comes back with its Kafka code.
        let refused = cluster.nodes[&follower]
            .submit(create_topic("orders"))
            .await
            .expect_err("a second create is refused");
        assert_eq!(refused.kafka_error_code(), 36, "{refused}");

        // An observer (a broker that is no controller) gets every record and forwards its
        // own changes.
        let observer_id = 10;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        cluster.start_node(observer_id, listener).await;
        let observed = cluster.nodes[&observer_id]
            .catch_up(Duration::from_secs(10))
            .await
            .expect("the observer catches up");
        assert!(observed.topic("orders").is_some());
        let (image, _) = cluster.nodes[&observer_id]
            .submit(create_topic("from-observer"))
            .await
            .expect("an observer's change");
        for node in cluster.nodes.values() {
            assert!(
                wait_epoch(node, image.epoch)
                    .await
                    .topic("from-observer")
                    .is_some()
            );
        }
        // Described by the leader, whoever is asked.
        let described = cluster.nodes[&follower].describe().await.expect("describe");
        assert_eq!(described.leader, leader);
        let voters: Vec<u64> = described.voters.iter().map(|(id, _)| *id).collect();
        assert_eq!(voters, vec![1, 2, 3]);
        assert_eq!(described.observers.len(), 1);
        assert_eq!(described.observers[0].0, observer_id);
        assert_eq!(described.addrs.len(), 4);
        // An observer the cluster refused leaves; voters cannot.
        cluster.nodes[&observer_id].leave().await.expect("leave");
        let described = cluster.nodes[&leader].describe().await.expect("describe");
        assert!(described.observers.is_empty(), "{described:?}");
        let refused = cluster.nodes[&follower].leave().await;
        assert_eq!(refused.map_err(|e| e.kafka_error_code()), Err(42));
        cluster
            .nodes
            .remove(&observer_id)
            .expect("observer")
            .shutdown()
            .await;

        // The leader dies: a new one is elected and takes changes within seconds.
        let killed_at = Instant::now();
        cluster
            .nodes
            .remove(&leader)
            .expect("leader")
            .shutdown()
            .await;
        let survivor = *cluster.nodes.keys().next().expect("a survivor");
        let (image, _) = cluster.nodes[&survivor]
            .submit(MetadataCommand::AllocateProducerIds { count: 10 })
            .await
            .expect("a change after the leader died");
        let new_leader = cluster.leader().await;
        assert_ne!(new_leader, leader);
        println!(
            "new leader {new_leader} took a change {:?} after the old leader {leader} stopped",
            killed_at.elapsed()
        );
        assert!(killed_at.elapsed() < Duration::from_secs(5));

        // A snapshot on the survivors, then the old leader comes back and catches up.
        cluster.nodes[&new_leader]
            .inner
            .raft
            .trigger()
            .snapshot()
            .await
            .expect("snapshot");
        cluster.restart_node(leader).await;
        let caught_up = cluster.nodes[&leader]
            .catch_up(Duration::from_secs(10))
            .await
            .expect("catch up");
        assert!(caught_up.epoch >= image.epoch);
        assert!(caught_up.topic("orders").is_some());
        assert_eq!(caught_up.next_producer_id, image.next_producer_id);

        // Every controller restarted at once comes back with the same image.
        let epoch = image.epoch;
        for id in [1, 2, 3] {
            cluster.nodes.remove(&id).expect("node").shutdown().await;
        }
        for id in [1, 2, 3] {
            cluster.restart_node(id).await;
        }
        for node in cluster.nodes.values() {
            let image = node
                .catch_up(Duration::from_secs(10))
                .await
                .expect("catch up after a full restart");
            assert!(image.epoch >= epoch);
            assert!(image.topic("orders").is_some());
        }
        cluster
            .nodes
            .values()
            .next()
            .expect("node")
            .submit(create_topic("after-restart"))
            .await
            .expect("a change after a full restart");
    }
}
