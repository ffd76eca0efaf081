//! The admin HTTP server: `/metrics` (Prometheus), `/health` and `/ready`, served by one plain
//! std thread so that a scrape never runs on, or waits for, a shard's executor.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::metrics::BrokerMetrics;

/// The largest request head (request line and headers) read; longer ones get 431.
const REQUEST_HEAD_BYTES_MAX: usize = 8 << 10;

/// How long a client may take to send its request or read the answer. Clients are served one
/// at a time (scrapes are rare and small), so this bounds how long one can hold up the next.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

/// Pause after a failed accept (e.g. out of file descriptors), so the thread does not spin.
const ACCEPT_RETRY_DELAY: Duration = Duration::from_millis(50);

/// The media type of Prometheus' text exposition format.
const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A running admin server.
pub struct AdminServer {
    local_addr: SocketAddr,
    state: Arc<AdminState>,
    thread: Option<JoinHandle<()>>,
}

/// What the handlers read.
struct AdminState {
    metrics: Arc<BrokerMetrics>,
    shards_ready: Arc<AtomicUsize>,
    shard_count: usize,
    // Set when the broker starts stopping: `/ready` answers 503 from then on.
    stopping: AtomicBool,
    // Set when the thread must end.
    shutdown: AtomicBool,
}

impl AdminServer {
    /// Binds `addr` (port 0 picks a free port) and serves from a new thread. `/ready` answers
    /// 200 once `shards_ready` reaches `shard_count`.
    pub fn start(
        addr: SocketAddr,
        metrics: Arc<BrokerMetrics>,
        shards_ready: Arc<AtomicUsize>,
        shard_count: usize,
    ) -> std::io::Result<AdminServer> {
        let listener = TcpListener::bind(addr)?;
        let local_addr = listener.local_addr()?;
        let state = Arc::new(AdminState {
            metrics,
            shards_ready,
            shard_count,
            stopping: AtomicBool::new(false),
            shutdown: AtomicBool::new(false),
        });
        let thread = {
            let state = state.clone();
            std::thread::Builder::new()
                .name("sluice-admin".into())
                .spawn(move || serve(listener, &state))?
        };
        Ok(AdminServer {
            local_addr,
            state,
            thread: Some(thread),
        })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// From now on `/ready` answers 503: the broker is stopping.
    pub fn set_stopping(&self) {
        self.state.stopping.store(true, Ordering::SeqCst);
    }

    /// Ends the server thread and waits for it.
    pub fn stop(&mut self) {
        self.state.shutdown.store(true, Ordering::SeqCst);
        // The thread blocks in accept(); a connection of our own wakes it to see the flag.
        let mut wake = self.local_addr;
        if wake.ip().is_unspecified() {
            wake.set_ip(match wake {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        if let Err(error) = TcpStream::connect_timeout(&wake, CLIENT_TIMEOUT) {
            tracing::warn!(%error, "admin server not woken; leaving its thread");
            return;
        }
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the admin server thread panicked");
        }
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.stop();
        }
    }
}

fn serve(listener: TcpListener, state: &AdminState) {
    for stream in listener.incoming() {
        if state.shutdown.load(Ordering::SeqCst) {
            return;
        }
        match stream {
            Ok(stream) => {
                if let Err(error) = answer(stream, state) {
                    tracing::debug!(%error, "admin request not answered");
                }
            }
            Err(error) => {
                tracing::warn!(%error, "admin accept failed");
                std::thread::sleep(ACCEPT_RETRY_DELAY);
            }
        }
    }
}

/// Reads one request from `stream`, answers it and closes the connection.
fn answer(mut stream: TcpStream, state: &AdminState) -> std::io::Result<()> {
    stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    stream.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    let response = match read_head(&mut stream)? {
        Some(head) => route(&head, state),
        None => Response::text(
            431,
            "Request Header Fields Too Large",
            "request head too long\n",
        ),
    };
    stream.write_all(&response.encode())?;
    stream.flush()
}

/// The request head, up to the blank line (or the end of the stream); None when it is longer
/// than [`REQUEST_HEAD_BYTES_MAX`].
fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        let read = stream.read(&mut chunk)?;
        if read == 0 {
            return Ok(Some(head));
        }
        head.extend_from_slice(&chunk[..read]);
        if head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n") {
            return Ok(Some(head));
        }
        if head.len() > REQUEST_HEAD_BYTES_MAX {
            return Ok(None);
        }
    }
}

/// The answer to a request head.
fn route(head: &[u8], state: &AdminState) -> Response {
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Response::text(400, "Bad Request", "malformed request line\n");
    };
    if method != "GET" {
        return Response::text(405, "Method Not Allowed", "only GET\n");
    }
    let path = target.split('?').next().unwrap_or_default();
    match path {
        "/health" => Response::text(200, "OK", "ok\n"),
        "/ready" => {
            let ready = state.shards_ready.load(Ordering::SeqCst);
            if state.stopping.load(Ordering::SeqCst) {
                Response::text(503, "Service Unavailable", "stopping\n")
            } else if ready < state.shard_count {
                let body = format!(
                    "{ready} of {} shards accept connections\n",
                    state.shard_count
                );
                Response::text(503, "Service Unavailable", &body)
            } else {
                Response::text(200, "OK", "ready\n")
            }
        }
        "/metrics" => Response {
            status: 200,
            reason: "OK",
            content_type: METRICS_CONTENT_TYPE,
            body: state.metrics.render().into_bytes(),
        },
        _ => Response::text(404, "Not Found", "try /metrics, /health or /ready\n"),
    }
}

/// An HTTP/1.1 response, sent with `Connection: close`.
struct Response {
    status: u16,
    reason: &'static str,
    content_type: &'static str,
    body: Vec<u8>,
}

impl Response {
    fn text(status: u16, reason: &'static str, body: &str) -> Response {
        Response {
            status,
            reason,
            content_type: "text/plain; charset=utf-8",
            body: body.as_bytes().to_vec(),
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.status,
            self.reason,
            self.content_type,
            self.body.len()
        )
        .into_bytes();
        out.extend_from_slice(&self.body);
        out
    }
}
