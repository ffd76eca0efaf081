//! One client connection: read frames, parse, order, and answer in request order while
//! later requests are already being parsed and persisted (the pipeline).

use std::os::fd::{AsRawFd, BorrowedFd};
use std::rc::Rc;
use std::time::Instant;

use bytes::Bytes;
use futures::future::FutureExt;
use futures::{AsyncReadExt, AsyncWriteExt};
use glommio::channels::local_channel;
use glommio::net::TcpStream;
use glommio::sync::Semaphore;
use sluice_net::RequestErrorKind;

use crate::affinity::ConnectionAffinity;
use crate::api;
use crate::api::{PendingResponse, ResponseFrame};
use crate::chunk_pool::PoolBuffer;
use crate::connection_limits::ConnectionPermit;
use crate::messaging::ShardRequest;
use crate::metrics::produce_stages::ProduceStage;
use crate::security::{
    ClientContext, ClientStream, ListenerContext, SecurityProtocol, Session, Verdict,
};
use crate::shard::Shard;
use crate::stop::StopSignal;

/// Bytes of a refused frame written to the log, to diagnose client incompatibilities.
const FRAME_BYTES_LOGGED: usize = 256;

/// A request's answer as the connection's writer gets it.
struct Answer {
    /// The response frame (None: nothing to send, e.g. a produce with acks=0).
    frame: Option<ResponseFrame>,
    /// When a produce's response was ready: its `respond` stage ends once the frame is written.
    produce_ready_at: Option<Instant>,
}

/// Where a connection comes from: accepted on this shard, or moved here by another shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// Accepted by this shard's listener; it may move once to the shard owning its partitions.
    Accepted,
    /// Handed over by another shard; it stays here.
    Moved,
}

/// Serves one connection until the client closes it, it misbehaves, the shard stops, or it
/// moves to the shard that owns its partitions (see `affinity`).
#[allow(clippy::too_many_arguments)]
pub async fn serve(
    shard: Rc<Shard>,
    stream: TcpStream,
    listener: Rc<ListenerContext>,
    listener_index: usize,
    permit: ConnectionPermit,
    memory: Rc<Semaphore>,
    stop: StopSignal,
    arrival: Arrival,
) {
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%error, "TCP_NODELAY not set");
    }
    shard.metrics.connections_open.add(1);
    let _open = OpenConnection(&shard);
    let peer = stream.peer_addr().ok();
    let raw_fd = stream.as_raw_fd();
    let (stream, tls_principal) = match &listener.tls {
        None => (ClientStream::Plain(stream), None),
        Some(tls) => {
            let handshake = futures::select_biased! {
                _ = stop.clone().fuse() => return,
                handshake = tls.accept(stream).fuse() => handshake,
            };
            match handshake {
                Ok((stream, principal)) => (ClientStream::Tls(Box::new(stream)), principal),
                Err(error) => {
                    shard.metrics.tls_handshake_failures.add(1);
                    tracing::debug!(?peer, %error, "TLS handshake failed");
                    return;
                }
            }
        }
    };
    // Responses go out with vectored sends on the descriptor only without TLS.
    let plain_fd = matches!(stream, ClientStream::Plain(_)).then_some(raw_fd);
    let mut session = Session::new(listener.protocol, tls_principal);
    let mut client = ClientContext {
        host: peer.map(|p| p.ip().to_string()).unwrap_or_default().into(),
        listener: listener.clone(),
        principal: session.principal().clone(),
        quotas: Default::default(),
    };
    // A connection moves to another shard as a bare socket: one with TLS or SASL state
    // stays where it was accepted.
    let movable = listener.protocol == SecurityProtocol::Plaintext;
    let (mut reader, mut writer) = stream.split();
    let depth = shard.config.pipeline_depth.max(1);
    // Bounds the requests read but not yet answered: depth 1 is Kafka's one-at-a-time model.
    let outstanding = Rc::new(Semaphore::new(depth as u64));
    let (queue, answers) = local_channel::new_bounded::<glommio::Task<Answer>>(depth);

    let writer_outstanding = outstanding.clone();
    let writer_metrics = shard.metrics.clone();
    // One writer per connection: bounded by --connections-max, not by `task_permits`.
    let writer_task = glommio::spawn_local(async move {
        let writer = async {
            while let Some(task) = answers.recv().await {
                let answer = task.await;
                writer_outstanding.signal(1);
                let Some(frame) = answer.frame else {
                    continue;
                };
                if frame == ResponseFrame::Close {
                    // SAFETY: `raw_fd` belongs to the stream whose halves this task
                    // (`writer`) and the read loop (`reader`) hold open until both end;
                    // shutdown ends the TCP connection without closing the descriptor, and
                    // the read loop's pending read then sees the end of the stream.
                    unsafe { libc::shutdown(raw_fd, libc::SHUT_RDWR) };
                    return None;
                }
                if ClientStream::write_segments(&mut writer, plain_fd, frame.segments())
                    .await
                    .is_err()
                {
                    return None;
                }
                if let Some(ready_at) = answer.produce_ready_at {
                    writer_metrics
                        .produce_stages
                        .record(ProduceStage::Respond, ready_at.elapsed());
                }
            }
            Some(writer)
        }
        .await;
        if writer.is_none() {
            // The connection is over: no answer will give a pipeline slot back, so the read
            // loop must not wait for one.
            writer_outstanding.close();
        }
        writer
    });

    let affinity = ConnectionAffinity::default();
    let mut destination = None;
    let max_frame_bytes = shard.config.max_frame_bytes;
    let memory_total = memory.available().max(1);
    loop {
        if arrival == Arrival::Accepted
            && movable
            && let Some(to) = affinity.destination(shard.id)
        {
            // Every answer must be written before the socket changes hands, and nothing past
            // the last frame read: the next request stays in the socket for the new shard.
            if outstanding.acquire(depth as u64).await.is_ok() {
                destination = Some(to);
            }
            break;
        }
        let slot = futures::select_biased! {
            _ = stop.clone().fuse() => break,
            slot = outstanding.acquire(1).fuse() => slot,
        };
        if slot.is_err() {
            break;
        }
        let mut prefix = [0u8; 4];
        let read = futures::select_biased! {
            _ = stop.clone().fuse() => break,
            r = reader.read_exact(&mut prefix).fuse() => r,
        };
        if let Err(error) = read {
            tracing::debug!(?peer, %error, "connection closed");
            break;
        }
        let frame_bytes_max = session.frame_bytes_max(max_frame_bytes);
        let length = match sluice_net::frame_length(prefix, frame_bytes_max) {
            Ok(length) => length,
            // Not a WARN: anyone may connect and send this.
            Err(error) if frame_bytes_max < max_frame_bytes => {
                tracing::info!(?peer, %error, "closing a connection that has not authenticated");
                break;
            }
            Err(error) => {
                tracing::warn!(?peer, %error, "closing connection");
                break;
            }
        };
        // The read stage starts here (the API is known only once the frame is read).
        let length_known_at = Instant::now();
        // Back-pressure: when the shard's request memory is spent, stop reading sockets.
        let units = (length as u64).min(memory_total);
        let Ok(budget) = memory.clone().acquire_static_permit(units).await else {
            break;
        };
        // Frames come from the shard's pool (waiting when it is short); a frame above its
        // largest chunk is read into the heap, bounded by the permits taken above.
        let mut frame = if length <= shard.memory_pool.chunk_bytes_max() {
            let chunk = futures::select_biased! {
                _ = stop.clone().fuse() => break,
                chunk = shard.memory_pool.take(length).fuse() => chunk,
            };
            PoolBuffer::Chunk(chunk)
        } else {
            PoolBuffer::Heap(vec![0; length])
        };
        if let Err(error) = reader.read_exact(frame.as_mut()).await {
            tracing::debug!(?peer, %error, "connection closed mid-frame");
            break;
        }
        // A client above its quota: its next request waits until the throttle ends (KIP-219's
        // mute). Checked here, not before the read: with a pipeline the loop is already
        // reading when an answer sets the mute. So at most this one frame is held meanwhile,
        // and the produce read stage includes the wait.
        if client.quotas.throttled() && depth > 1 {
            // One request at a time while throttled (`ConnectionQuotas::throttled`): wait
            // until the others in flight are answered, so that their mutes apply here.
            let others = depth as u64 - 1;
            if outstanding.acquire(others).await.is_err() {
                break;
            }
            outstanding.signal(others);
        }
        if let Some(mute) = client.quotas.take_mute() {
            futures::select_biased! {
                _ = stop.clone().fuse() => break,
                _ = glommio::timer::sleep(mute).fuse() => {}
            }
        }
        let read_at = Instant::now();
        // Frames shorter than the api key are refused by the parser below.
        let frame = frame.freeze();
        // A bare SASL token (after SaslHandshake v0) has no API key.
        let api_key = if session.takes_raw_token() {
            None
        } else {
            frame.get(..2).map(|k| i16::from_be_bytes([k[0], k[1]]))
        };
        let now = Instant::now();
        let mut close_after = false;
        let step = if session.passes(api_key, now) {
            Step::Dispatch(frame)
        } else {
            // Off the hot path: the session answers, or lets the request through.
            let step = if session.takes_raw_token() {
                match session.raw_token(&shard, frame, now) {
                    Ok(reply) => Step::Answer(raw_token_frame(reply), false),
                    Err(delay) => {
                        // SaslHandshake v0 has no error to send: Kafka closes the connection.
                        glommio::timer::sleep(delay).await;
                        break;
                    }
                }
            } else {
                authenticate(&shard, &mut session, frame, now)
            };
            client.principal = session.principal().clone();
            step
        };
        let pending = match step {
            // A produce may wait here for WAL space; shutdown must not wait for it.
            Step::Dispatch(frame) => futures::select_biased! {
                _ = stop.clone().fuse() => break,
                pending = parse_and_order(&shard, frame, &client, &affinity).fuse() => pending,
            },
            Step::Answer(pending, close) => {
                close_after = close;
                Some(pending)
            }
            Step::Close(why) => {
                tracing::info!(?peer, why, "closing connection");
                break;
            }
        };
        let task = match pending {
            Some(pending) => {
                let produce = api_key == Some(sluice_net::ApiKey::Produce as i16);
                if produce {
                    let stages = &shard.metrics.produce_stages;
                    stages.record(
                        ProduceStage::Read,
                        read_at.saturating_duration_since(length_known_at),
                    );
                    stages.record(ProduceStage::Parse, read_at.elapsed());
                }
                let metrics = shard.metrics.clone();
                // Bounded by `outstanding` (--pipeline-depth per connection, × --connections-max),
                // not by `task_permits`: this task waits for the router's tasks, so holding a
                // permit here could leave none for them.
                glommio::spawn_local(async move {
                    let frame = pending.await;
                    let ready_at = Instant::now();
                    drop(budget);
                    if let Some(api_key) = api_key {
                        metrics
                            .record_request(api_key, ready_at.saturating_duration_since(read_at));
                    }
                    Answer {
                        frame,
                        produce_ready_at: produce.then_some(ready_at),
                    }
                })
            }
            None => {
                tracing::warn!(?peer, "closing connection after a malformed request");
                break;
            }
        };
        if queue.send(task).await.is_err() || close_after {
            break;
        }
    }
    drop(queue);
    let Some(mut writer) = writer_task.await else {
        return;
    };
    if let Some(to) = destination {
        // SAFETY: `raw_fd` belongs to the stream whose halves `reader` and `writer` still hold
        // open here; the borrow ends before they are dropped.
        let socket = unsafe { BorrowedFd::borrow_raw(raw_fd) }.try_clone_to_owned();
        match socket {
            Ok(socket) => {
                tracing::debug!(
                    ?peer,
                    from = shard.id,
                    to,
                    "connection moves to its partitions' shard"
                );
                shard.metrics.connections_moved.add(1);
                shard
                    .mesh
                    .deliver(
                        to,
                        ShardRequest::AdoptConnection {
                            socket,
                            permit,
                            listener: listener_index,
                        },
                    )
                    .await;
                // Dropping the halves closes only this shard's descriptor, not the connection.
                return;
            }
            Err(error) => tracing::warn!(?peer, %error, "connection not moved: dup failed"),
        }
    }
    let _ = writer.close().await;
    drop(reader);
}

/// Counts a connection out of the open-connections gauge however `serve` returns.
struct OpenConnection<'a>(&'a Shard);

impl Drop for OpenConnection<'_> {
    fn drop(&mut self) {
        self.0.metrics.connections_open.sub(1);
    }
}

/// The parse and order stages of one request. Returns the rest of its handling as a future,
/// or None when the connection must be closed (Kafka closes on requests it cannot parse).
pub async fn parse_and_order(
    shard: &Rc<Shard>,
    frame: Bytes,
    client: &ClientContext,
    affinity: &ConnectionAffinity,
) -> Option<PendingResponse> {
    match sluice_net::decode_request(frame.clone()) {
        Ok((header, request))
            if !api::implemented::serves(request.api_key(), header.request_api_version) =>
        {
            // Kafka closes the connection on a version it does not serve, as here.
            tracing::warn!(
                api_key = header.request_api_key,
                api_version = header.request_api_version,
                "request for an API or version this broker does not serve"
            );
            None
        }
        Ok((header, request)) => {
            affinity.observe(shard, &request);
            Some(api::dispatch(shard, header, request, client, frame.len()).await)
        }
        Err(error) => match (&error.kind, &error.header) {
            (RequestErrorKind::UnsupportedVersion { api_key, .. }, Some(header))
                if *api_key == sluice_net::ApiKey::ApiVersions =>
            {
                let response = api::api_versions::unsupported_version_response();
                Some(api::response::encode(header.correlation_id, 0, response))
            }
            (_, header) => {
                let head = &frame[..frame.len().min(FRAME_BYTES_LOGGED)];
                tracing::warn!(%error, ?header, frame = ?head, "malformed or unsupported request");
                None
            }
        },
    }
}

/// A bare SASL token as SaslHandshake v0 frames it: its length, then the token.
fn raw_token_frame(token: Bytes) -> PendingResponse {
    let mut frame = bytes::BytesMut::with_capacity(4 + token.len());
    // A token is at most a frame the client sent (bounded by --max-request-size) or a SCRAM
    // challenge of a few hundred bytes.
    frame.extend_from_slice(&u32::try_from(token.len()).unwrap_or(u32::MAX).to_be_bytes());
    frame.extend_from_slice(&token);
    futures::future::ready(Some(ResponseFrame::Contiguous(frame.freeze()))).boxed_local()
}

/// What the connection does with a request its session did not let through.
enum Step {
    /// Handle it as usual (ApiVersions before authentication).
    Dispatch(Bytes),
    /// The session's answer; `true`: close the connection once it is written.
    Answer(PendingResponse, bool),
    /// Close without an answer.
    Close(&'static str),
}

/// Runs a request through the connection's authentication (`security::session`).
fn authenticate(shard: &Rc<Shard>, session: &mut Session, frame: Bytes, now: Instant) -> Step {
    let Ok((header, request)) = sluice_net::decode_request(frame.clone()) else {
        // Malformed, or a version not served: the usual path answers or closes as Kafka does.
        return Step::Dispatch(frame);
    };
    if !api::implemented::serves(request.api_key(), header.request_api_version) {
        return Step::Dispatch(frame);
    }
    let version = header.request_api_version;
    let correlation_id = header.correlation_id;
    match session.decide(shard, &header, request, now) {
        Verdict::Dispatch => Step::Dispatch(frame),
        Verdict::Answer(response) => Step::Answer(
            api::response::encode(correlation_id, version, response),
            false,
        ),
        Verdict::AnswerAndClose(response, delay) => {
            let frame = api::response::encode(correlation_id, version, response);
            // Kafka holds back a failed authentication's answer, which slows a password
            // guesser down to one try per delay and connection.
            Step::Answer(
                async move {
                    glommio::timer::sleep(delay).await;
                    frame.await
                }
                .boxed_local(),
                true,
            )
        }
        Verdict::Close(why) => Step::Close(why),
    }
}
