//! A small pipelined Kafka client on tokio, speaking the protocol through
//! `sluice-net`: one TCP connection, many requests in flight, responses matched
//! to requests in order (Kafka answers a connection's requests in order).
//!
//! A connection has a writer task (frames → socket) and a reader task
//! (socket → decoded responses → each request's reply). A request is either
//! awaited ([`Connection::request`]) or completed by a callback
//! ([`Connection::send_encoded`]), which lets the producer's pacing thread send
//! without an async context. Any I/O error, malformed response or timeout
//! closes the connection and fails every request in flight on it.
//!
//! Helpers: `Connection::connect`, `Connection::request`, `Connection::encode`,
//! `Connection::send_encoded`, `Connection::version`, plus the admin calls
//! `metadata`, `create_topics`, `delete_topics`, `list_offsets`.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::{Bytes, BytesMut};
use sluice_net::messages::api_versions_request::ApiVersionsRequest;
use sluice_net::messages::create_topics_request::{
    CreatableTopic, CreatableTopicConfig, CreateTopicsRequest,
};
use sluice_net::messages::delete_topics_request::{DeleteTopicState, DeleteTopicsRequest};
use sluice_net::messages::list_offsets_request::{
    ListOffsetsPartition, ListOffsetsRequest, ListOffsetsTopic,
};
use sluice_net::messages::metadata_request::{MetadataRequest, MetadataRequestTopic};
use sluice_net::{ApiKey, ErrorCode, Request, RequestHeader, Response, ResponseHeader};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, oneshot};

/// Largest response frame accepted from a broker.
pub const RESPONSE_FRAME_BYTES_MAX: usize = 256 << 20;
/// How long to wait for a TCP connection and the ApiVersions exchange.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// ApiVersions version tried first (v0 is the fallback).
const APIVERSIONS_VERSION: i16 = 3;
/// Bytes the reader asks the socket for at a time.
const READ_BUFFER_BYTES: usize = 1 << 20;
/// Bytes the writer buffers before it writes to the socket.
const WRITE_BUFFER_BYTES: usize = 256 << 10;
/// How often the reader checks the oldest request against the timeout while idle.
const TIMEOUT_CHECK_INTERVAL: Duration = Duration::from_millis(500);

/// The API versions this client prefers; the broker's range may lower them.
/// Fetch stays at 12, the last version that names topics instead of ids.
pub const PREFERRED_VERSIONS: &[(ApiKey, i16)] = &[
    (ApiKey::Produce, 9),
    (ApiKey::Fetch, 12),
    (ApiKey::ListOffsets, 7),
    (ApiKey::Metadata, 12),
    (ApiKey::CreateTopics, 7),
    (ApiKey::DeleteTopics, 6),
];

/// Why a request failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// The connection is closed (I/O error, malformed response, timeout, shutdown).
    #[error("connection to {addr} closed: {reason}")]
    Closed { addr: String, reason: String },
    /// The broker's response could not be decoded.
    #[error("undecodable {api:?} v{version} response: {reason}")]
    Decode {
        api: ApiKey,
        version: i16,
        reason: String,
    },
    /// The broker answered a request of another kind than expected.
    #[error("unexpected response type to a {0:?} request")]
    UnexpectedResponse(ApiKey),
}

/// The outcome of one request. `Ok(None)` for a request that expects no
/// response (Produce with acks=0), once it is written.
pub type Reply = Result<Option<Response>, ClientError>;
/// Completion of a request sent with [`Connection::send_encoded`]; called on
/// the connection's reader or writer task, so it must be short.
pub type Callback = Box<dyn FnOnce(Reply) + Send>;

/// An encoded request, ready for [`Connection::send_encoded`].
pub struct Encoded {
    frame: Bytes,
    correlation_id: i32,
    api_key: ApiKey,
    version: i16,
}

impl Encoded {
    /// Size of the frame on the wire.
    pub fn len(&self) -> usize {
        self.frame.len()
    }

    /// Whether the frame is empty (never, for a valid request).
    pub fn is_empty(&self) -> bool {
        self.frame.is_empty()
    }
}

/// One connection to one broker.
pub struct Connection {
    addr: String,
    client_id: String,
    outgoing: mpsc::UnboundedSender<Outgoing>,
    correlation: AtomicI32,
    shared: Arc<Shared>,
    /// The broker's (min, max) version per API key, from ApiVersions.
    broker_versions: HashMap<i16, (i16, i16)>,
}

impl Connection {
    /// Connects to `addr` (HOST:PORT) and negotiates API versions.
    /// `request_timeout` bounds every request on this connection (a Fetch's
    /// long-poll wait comes on top of it).
    pub async fn connect(
        addr: &str,
        client_id: &str,
        request_timeout: Duration,
    ) -> anyhow::Result<Arc<Connection>> {
        match Self::connect_with(addr, client_id, request_timeout, APIVERSIONS_VERSION).await {
            Ok(conn) => Ok(conn),
            // A broker that does not speak ApiVersions v3 (UNSUPPORTED_VERSION, or an
            // answer we cannot decode) gets v0, which every broker speaks.
            Err(e) if !is_transport_error(&e) => {
                Self::connect_with(addr, client_id, request_timeout, 0)
                    .await
                    .with_context(|| format!("after ApiVersions v{APIVERSIONS_VERSION}: {e:#}"))
            }
            Err(e) => Err(e),
        }
    }

    async fn connect_with(
        addr: &str,
        client_id: &str,
        request_timeout: Duration,
        apiversions_version: i16,
    ) -> anyhow::Result<Arc<Connection>> {
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
            .await
            .with_context(|| format!("connecting to {addr}: timed out"))?
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true).context("TCP_NODELAY")?;
        let (read, write) = stream.into_split();
        let shared = Arc::new(Shared {
            inflight: Mutex::new(Inflight {
                queue: VecDeque::new(),
                closed: None,
            }),
            request_timeout,
        });
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(write_loop(
            BufWriter::with_capacity(WRITE_BUFFER_BYTES, write),
            rx,
            shared.clone(),
            addr.to_string(),
        ));
        tokio::spawn(read_loop(read, shared.clone(), addr.to_string()));
        let mut conn = Connection {
            addr: addr.to_string(),
            client_id: client_id.to_string(),
            outgoing: tx,
            correlation: AtomicI32::new(0),
            shared,
            broker_versions: HashMap::new(),
        };
        let request = Request::ApiVersions(ApiVersionsRequest {
            client_software_name: "sluice-perf".to_string(),
            client_software_version: env!("CARGO_PKG_VERSION").to_string(),
        });
        let response = tokio::time::timeout(
            CONNECT_TIMEOUT,
            conn.request_at(request, apiversions_version),
        )
        .await
        .with_context(|| format!("ApiVersions to {addr}: timed out"))?
        .with_context(|| format!("ApiVersions to {addr}"))?;
        let Response::ApiVersions(versions) = response else {
            bail!("ApiVersions to {addr}: unexpected response type");
        };
        if versions.error_code != 0 {
            bail!("ApiVersions to {addr}: {}", error_name(versions.error_code));
        }
        conn.broker_versions = versions
            .api_keys
            .iter()
            .map(|k| (k.api_key, (k.min_version, k.max_version)))
            .collect();
        Ok(Arc::new(conn))
    }

    /// The broker address.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Whether the connection has failed (every later request fails at once).
    pub fn is_closed(&self) -> bool {
        self.shared
            .inflight
            .lock()
            .map(|i| i.closed.is_some())
            .unwrap_or(true)
    }

    /// The version to use for `api`: our preference, lowered to the broker's
    /// maximum; an error if the broker does not speak any version we do.
    pub fn version(&self, api: ApiKey) -> anyhow::Result<i16> {
        let preferred = PREFERRED_VERSIONS
            .iter()
            .find(|(k, _)| *k == api)
            .map(|(_, v)| *v)
            .unwrap_or(api.max_version());
        let Some(&(broker_min, broker_max)) = self.broker_versions.get(&(api as i16)) else {
            bail!("broker {} does not support {}", self.addr, api.name());
        };
        let version = preferred.min(broker_max);
        if version < broker_min.max(api.min_version()) {
            bail!(
                "broker {} supports {} v{broker_min}-{broker_max}, this client v{}-{preferred}",
                self.addr,
                api.name(),
                api.min_version()
            );
        }
        Ok(version)
    }

    /// Encodes `request` at `version` with a fresh correlation id.
    pub fn encode(&self, request: &Request, version: i16) -> anyhow::Result<Encoded> {
        let correlation_id = self.correlation.fetch_add(1, Ordering::Relaxed) & i32::MAX;
        let api_key = request.api_key();
        let header = RequestHeader {
            request_api_key: api_key as i16,
            request_api_version: version,
            correlation_id,
            client_id: Some(self.client_id.clone()),
        };
        let mut out = BytesMut::with_capacity(64 + request.body_len(version));
        sluice_net::encode_request(&header, request, &mut out)
            .with_context(|| format!("encoding {} v{version}", api_key.name()))?;
        Ok(Encoded {
            frame: out.freeze(),
            correlation_id,
            api_key,
            version,
        })
    }

    /// Queues an encoded request; `done` is called with the response, or with
    /// `Ok(None)` once written when `expect_response` is false (acks=0).
    pub fn send_encoded(&self, encoded: Encoded, expect_response: bool, done: Callback) {
        let outgoing = Outgoing {
            frame: encoded.frame,
            pending: Pending {
                correlation_id: encoded.correlation_id,
                api_key: encoded.api_key,
                version: encoded.version,
                sent_at: Instant::now(),
                done,
            },
            expect_response,
        };
        if let Err(mpsc::error::SendError(outgoing)) = self.outgoing.send(outgoing) {
            (outgoing.pending.done)(Err(ClientError::Closed {
                addr: self.addr.clone(),
                reason: "writer stopped".to_string(),
            }));
        }
    }

    /// Sends `request` at the negotiated version and awaits the response.
    pub async fn request(&self, request: Request) -> anyhow::Result<Response> {
        let version = self.version(request.api_key())?;
        self.request_at(request, version).await
    }

    async fn request_at(&self, request: Request, version: i16) -> anyhow::Result<Response> {
        let api = request.api_key();
        let encoded = self.encode(&request, version)?;
        let (tx, rx) = oneshot::channel();
        self.send_encoded(
            encoded,
            true,
            Box::new(move |reply| {
                let _ = tx.send(reply);
            }),
        );
        let reply = rx.await.context("connection dropped the request")??;
        let response = reply.ok_or(ClientError::UnexpectedResponse(api))?;
        if response.api_key() != api {
            return Err(ClientError::UnexpectedResponse(api).into());
        }
        Ok(response)
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // The writer ends when the last sender goes; the reader when the socket closes.
        fail_all(&self.shared, &self.addr, "connection dropped by the client");
    }
}

/// Partition layout of one topic, from Metadata.
#[derive(Debug, Clone)]
pub struct TopicLayout {
    /// Topic name.
    pub name: String,
    /// `(partition index, leader node id)`, sorted by index.
    pub partitions: Vec<(i32, i32)>,
}

/// Brokers and topics, from Metadata.
#[derive(Debug, Clone, Default)]
pub struct ClusterLayout {
    /// Node id → `HOST:PORT`.
    pub brokers: HashMap<i32, String>,
    /// The topics asked for that exist with every partition led.
    pub topics: Vec<TopicLayout>,
}

/// Metadata for `topics`, asking the broker to create missing ones when
/// `auto_create`. A topic is reported only when it exists and each of its
/// partitions has a leader.
pub async fn metadata(
    conn: &Connection,
    topics: &[String],
    auto_create: bool,
) -> anyhow::Result<ClusterLayout> {
    let request = Request::Metadata(MetadataRequest {
        topics: Some(
            topics
                .iter()
                .map(|t| MetadataRequestTopic {
                    name: Some(t.clone()),
                    ..Default::default()
                })
                .collect(),
        ),
        allow_auto_topic_creation: auto_create,
        ..Default::default()
    });
    let Response::Metadata(response) = conn.request(request).await? else {
        bail!("Metadata: unexpected response type");
    };
    let brokers = response
        .brokers
        .iter()
        .map(|b| (b.node_id, format!("{}:{}", b.host, b.port)))
        .collect();
    let mut layout = ClusterLayout {
        brokers,
        topics: Vec::new(),
    };
    for topic in &response.topics {
        let Some(name) = &topic.name else { continue };
        if topic.error_code != 0 || topic.partitions.is_empty() {
            continue;
        }
        if topic
            .partitions
            .iter()
            .any(|p| p.error_code != 0 || p.leader_id < 0)
        {
            continue;
        }
        let mut partitions: Vec<(i32, i32)> = topic
            .partitions
            .iter()
            .map(|p| (p.partition_index, p.leader_id))
            .collect();
        partitions.sort_unstable();
        layout.topics.push(TopicLayout {
            name: name.clone(),
            partitions,
        });
    }
    Ok(layout)
}

/// Creates `names`, each with `partitions` partitions and the `configs` (name, value);
/// TOPIC_ALREADY_EXISTS is fine.
pub async fn create_topics(
    conn: &Connection,
    names: &[String],
    partitions: i32,
    replication_factor: i16,
    configs: &[(String, String)],
) -> anyhow::Result<()> {
    let request = Request::CreateTopics(CreateTopicsRequest {
        topics: names
            .iter()
            .map(|name| CreatableTopic {
                name: name.clone(),
                num_partitions: partitions,
                replication_factor,
                configs: configs
                    .iter()
                    .map(|(name, value)| CreatableTopicConfig {
                        name: name.clone(),
                        value: Some(value.clone()),
                    })
                    .collect(),
                ..Default::default()
            })
            .collect(),
        timeout_ms: 30_000,
        ..Default::default()
    });
    let Response::CreateTopics(response) = conn.request(request).await? else {
        bail!("CreateTopics: unexpected response type");
    };
    for topic in &response.topics {
        if topic.error_code != 0 && topic.error_code != ErrorCode::TopicAlreadyExists.code() {
            bail!(
                "creating topic {}: {} {}",
                topic.name,
                error_name(topic.error_code),
                topic.error_message.as_deref().unwrap_or("")
            );
        }
    }
    Ok(())
}

/// Deletes `names` (best effort: errors per topic are returned as text).
pub async fn delete_topics(conn: &Connection, names: &[String]) -> anyhow::Result<Vec<String>> {
    let version = conn.version(ApiKey::DeleteTopics)?;
    let request = Request::DeleteTopics(DeleteTopicsRequest {
        topics: if version >= 6 {
            names
                .iter()
                .map(|n| DeleteTopicState {
                    name: Some(n.clone()),
                    ..Default::default()
                })
                .collect()
        } else {
            Vec::new()
        },
        topic_names: names.to_vec(),
        timeout_ms: 30_000,
    });
    let Response::DeleteTopics(response) = conn.request_at(request, version).await? else {
        bail!("DeleteTopics: unexpected response type");
    };
    Ok(response
        .responses
        .iter()
        .filter(|r| r.error_code != 0)
        .map(|r| {
            format!(
                "{}: {}",
                r.name.as_deref().unwrap_or("?"),
                error_name(r.error_code)
            )
        })
        .collect())
}

/// Kafka's ListOffsets timestamp for "the end of the log".
pub const LATEST_TIMESTAMP: i64 = -1;
/// Kafka's ListOffsets timestamp for "the start of the log".
pub const EARLIEST_TIMESTAMP: i64 = -2;

/// The offset at `timestamp` (LATEST / EARLIEST) of each of `partitions` of `topic`.
pub async fn list_offsets(
    conn: &Connection,
    topic: &str,
    partitions: &[i32],
    timestamp: i64,
) -> anyhow::Result<HashMap<i32, i64>> {
    let request = Request::ListOffsets(ListOffsetsRequest {
        replica_id: -1,
        topics: vec![ListOffsetsTopic {
            name: topic.to_string(),
            partitions: partitions
                .iter()
                .map(|&p| ListOffsetsPartition {
                    partition_index: p,
                    timestamp,
                    ..Default::default()
                })
                .collect(),
        }],
        ..Default::default()
    });
    let Response::ListOffsets(response) = conn.request(request).await? else {
        bail!("ListOffsets: unexpected response type");
    };
    let mut offsets = HashMap::new();
    for t in &response.topics {
        for p in &t.partitions {
            if p.error_code != 0 {
                bail!(
                    "ListOffsets {topic}/{}: {}",
                    p.partition_index,
                    error_name(p.error_code)
                );
            }
            offsets.insert(p.partition_index, p.offset);
        }
    }
    for p in partitions {
        if !offsets.contains_key(p) {
            bail!("ListOffsets {topic}/{p}: partition missing from the response");
        }
    }
    Ok(offsets)
}

/// `NAME (code)` of a Kafka error code.
pub fn error_name(code: i16) -> String {
    match ErrorCode::from_i16(code) {
        Some(e) => format!("{e:?} ({code})"),
        None => format!("error {code}"),
    }
}

/// Whether a Kafka error code is worth retrying.
pub fn is_retriable(code: i16) -> bool {
    ErrorCode::from_i16(code).is_some_and(|e| e.is_retriable())
}

struct Outgoing {
    frame: Bytes,
    pending: Pending,
    expect_response: bool,
}

struct Pending {
    correlation_id: i32,
    api_key: ApiKey,
    version: i16,
    sent_at: Instant,
    done: Callback,
}

struct Inflight {
    queue: VecDeque<Pending>,
    /// Why the connection closed, once it has.
    closed: Option<String>,
}

struct Shared {
    inflight: Mutex<Inflight>,
    request_timeout: Duration,
}

/// Closes the connection: every request in flight fails with `reason`.
fn fail_all(shared: &Shared, addr: &str, reason: &str) {
    let drained: Vec<Pending> = match shared.inflight.lock() {
        Ok(mut inflight) => {
            if inflight.closed.is_none() {
                inflight.closed = Some(reason.to_string());
            }
            inflight.queue.drain(..).collect()
        }
        Err(_) => Vec::new(),
    };
    for pending in drained {
        (pending.done)(Err(ClientError::Closed {
            addr: addr.to_string(),
            reason: reason.to_string(),
        }));
    }
}

async fn write_loop(
    mut socket: BufWriter<OwnedWriteHalf>,
    mut rx: mpsc::UnboundedReceiver<Outgoing>,
    shared: Arc<Shared>,
    addr: String,
) {
    while let Some(outgoing) = rx.recv().await {
        let Outgoing {
            frame,
            pending,
            expect_response,
        } = outgoing;
        let mut no_response = None;
        {
            let Ok(mut inflight) = shared.inflight.lock() else {
                return;
            };
            if let Some(reason) = &inflight.closed {
                let reason = reason.clone();
                drop(inflight);
                (pending.done)(Err(ClientError::Closed {
                    addr: addr.clone(),
                    reason,
                }));
                continue;
            }
            // Queued before the bytes leave so that the reader can match the response.
            if expect_response {
                inflight.queue.push_back(pending);
            } else {
                no_response = Some(pending);
            }
        }
        let mut result = socket.write_all(&frame).await;
        if result.is_ok() && rx.is_empty() {
            result = socket.flush().await;
        }
        if let Err(e) = result {
            let reason = format!("write: {e}");
            if let Some(p) = no_response {
                (p.done)(Err(ClientError::Closed {
                    addr: addr.clone(),
                    reason: reason.clone(),
                }));
            }
            fail_all(&shared, &addr, &reason);
            continue;
        }
        if let Some(p) = no_response {
            (p.done)(Ok(None));
        }
    }
    let _ = socket.shutdown().await;
}

async fn read_loop(mut socket: OwnedReadHalf, shared: Arc<Shared>, addr: String) {
    let mut buf = BytesMut::with_capacity(READ_BUFFER_BYTES);
    let reason = 'conn: loop {
        // Every whole frame in the buffer, then read more.
        while buf.len() >= 4 {
            let len = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
            let Ok(len) = usize::try_from(len) else {
                break 'conn format!("negative frame length {len}");
            };
            if len > RESPONSE_FRAME_BYTES_MAX {
                break 'conn format!(
                    "response frame of {len} bytes exceeds {RESPONSE_FRAME_BYTES_MAX}"
                );
            }
            if buf.len() < 4 + len {
                buf.reserve(4 + len - buf.len());
                break;
            }
            let mut frame = buf.split_to(4 + len);
            let frame = frame.split_off(4).freeze();
            if let Err(reason) = deliver(frame, &shared, &addr) {
                break 'conn reason;
            }
        }
        if buf.capacity() - buf.len() < READ_BUFFER_BYTES / 4 {
            buf.reserve(READ_BUFFER_BYTES);
        }
        if let Err(reason) = read_some(&mut socket, &mut buf, &shared).await {
            break reason;
        }
    };
    fail_all(&shared, &addr, &reason);
}

/// Hands one response frame to the oldest request in flight.
fn deliver(frame: Bytes, shared: &Shared, addr: &str) -> Result<(), String> {
    let pending = match shared.inflight.lock() {
        Ok(mut inflight) => inflight.queue.pop_front(),
        Err(_) => return Err("poisoned".to_string()),
    };
    let Some(pending) = pending else {
        return Err("a response arrived with no request in flight".to_string());
    };
    match decode_response_lenient(pending.api_key, pending.version, frame) {
        Ok((correlation_id, _)) if correlation_id != pending.correlation_id => {
            let reason = format!(
                "correlation id {correlation_id} answers request {}",
                pending.correlation_id
            );
            (pending.done)(Err(ClientError::Closed {
                addr: addr.to_string(),
                reason: reason.clone(),
            }));
            Err(reason)
        }
        Ok((_, response)) => {
            (pending.done)(Ok(Some(response)));
            Ok(())
        }
        Err(e) => {
            let error = ClientError::Decode {
                api: pending.api_key,
                version: pending.version,
                reason: e.to_string(),
            };
            let reason = error.to_string();
            (pending.done)(Err(error));
            Err(reason)
        }
    }
}

/// Whether connecting failed at the TCP level (no point retrying ApiVersions v0).
fn is_transport_error(e: &anyhow::Error) -> bool {
    e.chain()
        .any(|c| c.downcast_ref::<std::io::Error>().is_some())
        || e.to_string().starts_with("connecting to")
}

/// Decodes a response frame as Kafka's own clients do: bytes after the body
/// are ignored (librdkafka's mock broker appends one to flexible responses),
/// where `sluice_net::decode_response` refuses them.
fn decode_response_lenient(
    api: ApiKey,
    version: i16,
    frame: Bytes,
) -> Result<(i32, Response), sluice_net::DecodeError> {
    let mut buf = frame;
    let header = ResponseHeader::decode(&mut buf, ResponseHeader::header_version(api, version))?;
    let body = Response::decode_body(api, &mut buf, version)?;
    Ok((header.correlation_id, body))
}

/// Reads what the socket has into `buf`, failing when the oldest request in
/// flight is older than the timeout.
async fn read_some(
    socket: &mut OwnedReadHalf,
    buf: &mut BytesMut,
    shared: &Shared,
) -> Result<(), String> {
    loop {
        match tokio::time::timeout(TIMEOUT_CHECK_INTERVAL, socket.read_buf(buf)).await {
            Ok(Ok(0)) => return Err("closed by the broker".to_string()),
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(e)) => return Err(format!("read: {e}")),
            Err(_) => {
                let oldest = shared
                    .inflight
                    .lock()
                    .map_err(|_| "poisoned".to_string())?
                    .queue
                    .front()
                    .map(|p| p.sent_at.elapsed());
                if let Some(age) = oldest
                    && age > shared.request_timeout
                {
                    return Err(format!(
                        "no response in {} ms (request timeout)",
                        age.as_millis()
                    ));
                }
            }
        }
    }
}
