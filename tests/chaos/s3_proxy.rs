//! A fault-injecting TCP proxy for S3 (std::net and threads only) between the broker and
//! s3s-fs. Each connection is served in the mode current when it was accepted; switching the
//! mode closes the connections of earlier modes, so that a pooled keep-alive connection does
//! not dodge the next fault.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Connections served at once; more are closed at accept.
const CONNECTIONS_MAX: usize = 64;
/// A request or response head longer than this is cut off there.
const HEAD_BYTES_MAX: usize = 64 << 10;
/// How long a socket read waits before the pump looks at the mode and the stop flag again.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// How long the proxy waits for a request it answers itself (head and body).
const REQUEST_WAIT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Bytes both ways, untouched.
    Pass,
    /// Answers every request itself with this status (500, 503) and an S3 error body.
    Status(u16),
    /// Passes, but holds every chunk of a response this long first.
    Latency(Duration),
    /// Reads the request, answers nothing for this long, then closes.
    Hold(Duration),
    /// Reads the request head, then resets the connection (RST).
    Reset,
    /// Passes the request, then only the head and half the body of the response.
    CutBody,
}

pub struct Proxy {
    pub port: u16,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

struct Shared {
    upstream: SocketAddr,
    mode: Mutex<Mode>,
    /// Bumped by every mode switch; a connection of an older generation closes.
    generation: AtomicU64,
    stopping: AtomicBool,
    connections: AtomicUsize,
}

impl Shared {
    fn current(&self, generation: u64) -> bool {
        !self.stopping.load(Ordering::Relaxed)
            && self.generation.load(Ordering::Relaxed) == generation
    }
}

impl Proxy {
    /// A proxy on a free 127.0.0.1 port in front of `upstream`, passing through.
    pub fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("the proxy binds a port");
        let port = listener.local_addr().expect("a bound address").port();
        let shared = Arc::new(Shared {
            upstream,
            mode: Mutex::new(Mode::Pass),
            generation: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
            connections: AtomicUsize::new(0),
        });
        let acceptor = std::thread::spawn({
            let shared = shared.clone();
            move || accept(&listener, &shared)
        });
        Proxy {
            port,
            shared,
            acceptor: Some(acceptor),
        }
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.shared.mode.lock().expect("mode lock") = mode;
        self.shared.generation.fetch_add(1, Ordering::Relaxed);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::Relaxed);
        // Wakes the acceptor, which then sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

fn accept(listener: &TcpListener, shared: &Arc<Shared>) {
    for client in listener.incoming() {
        if shared.stopping.load(Ordering::Relaxed) {
            return;
        }
        let Ok(client) = client else { continue };
        if shared.connections.load(Ordering::Relaxed) >= CONNECTIONS_MAX {
            continue;
        }
        shared.connections.fetch_add(1, Ordering::Relaxed);
        let mode = *shared.mode.lock().expect("mode lock");
        let generation = shared.generation.load(Ordering::Relaxed);
        let shared = shared.clone();
        std::thread::spawn(move || {
            serve(client, mode, generation, &shared);
            shared.connections.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

fn serve(client: TcpStream, mode: Mode, generation: u64, shared: &Arc<Shared>) {
    if client.set_read_timeout(Some(POLL_INTERVAL)).is_err() {
        return;
    }
    match mode {
        Mode::Pass => relay(client, generation, shared, Duration::ZERO, false),
        Mode::Latency(delay) => relay(client, generation, shared, delay, false),
        Mode::CutBody => relay(client, generation, shared, Duration::ZERO, true),
        Mode::Status(status) => answer(client, status),
        Mode::Hold(how_long) => {
            let mut client = client;
            let _ = read_request(&mut client);
            let until = Instant::now() + how_long;
            while Instant::now() < until && shared.current(generation) {
                // The schedule: the request hangs for this long.
                std::thread::sleep(POLL_INTERVAL);
            }
        }
        Mode::Reset => {
            let mut client = client;
            let _ = read_head(&mut client, Instant::now() + REQUEST_WAIT);
            reset(&client);
        }
    }
}

/// Passes bytes both ways until either side closes or the mode changes; `delay` holds each
/// response chunk; `cut` forwards only the response head and half its body, then closes.
fn relay(client: TcpStream, generation: u64, shared: &Arc<Shared>, delay: Duration, cut: bool) {
    let Ok(upstream) = TcpStream::connect_timeout(&shared.upstream, CONNECT_TIMEOUT) else {
        return;
    };
    if upstream.set_read_timeout(Some(POLL_INTERVAL)).is_err() {
        return;
    }
    let (Ok(client_in), Ok(upstream_out)) = (client.try_clone(), upstream.try_clone()) else {
        return;
    };
    let requests = std::thread::spawn({
        let shared = shared.clone();
        move || {
            pump(
                client_in,
                upstream_out,
                generation,
                &shared,
                Duration::ZERO,
                None,
            )
        }
    });
    let limit = if cut { Some(CutAfter::Unknown) } else { None };
    pump(upstream, client, generation, shared, delay, limit);
    let _ = requests.join();
}

/// Where a cut response ends: not known until its head has been read.
#[derive(Clone, Copy)]
enum CutAfter {
    Unknown,
    Bytes(usize),
}

fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    generation: u64,
    shared: &Shared,
    delay: Duration,
    mut cut: Option<CutAfter>,
) {
    let mut buffer = vec![0u8; 16 << 10];
    let mut head = Vec::new();
    let mut forwarded = 0usize;
    while shared.current(generation) {
        let n = match from.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(_) => break,
        };
        if !delay.is_zero() {
            // The fault: a slow store.
            std::thread::sleep(delay);
        }
        let mut chunk = &buffer[..n];
        if let Some(CutAfter::Unknown) = cut {
            head.extend_from_slice(chunk);
            if let Some(end) = find_head_end(&head) {
                let body = content_length(&head[..end]).unwrap_or(0);
                cut = Some(CutAfter::Bytes(end + body / 2));
            } else if head.len() > HEAD_BYTES_MAX {
                cut = Some(CutAfter::Bytes(head.len() / 2));
            }
        }
        if let Some(CutAfter::Bytes(limit)) = cut {
            chunk = &chunk[..chunk.len().min(limit.saturating_sub(forwarded))];
        }
        if to.write_all(chunk).is_err() {
            break;
        }
        forwarded += chunk.len();
        if matches!(cut, Some(CutAfter::Bytes(limit)) if forwarded >= limit) {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

/// Reads the request (head and Content-Length body), answers `status` with an S3 error body
/// and closes.
fn answer(mut client: TcpStream, status: u16) {
    if read_request(&mut client).is_none() {
        return;
    }
    let (reason, code) = match status {
        503 => ("Service Unavailable", "SlowDown"),
        _ => ("Internal Server Error", "InternalError"),
    };
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code>\
         <Message>injected by the chaos proxy</Message></Error>"
    );
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = client.write_all(response.as_bytes());
    let _ = client.shutdown(Shutdown::Write);
}

/// Reads one request's head and its Content-Length body (discarded); None if it does not
/// arrive within `REQUEST_WAIT`.
fn read_request(client: &mut TcpStream) -> Option<()> {
    let deadline = Instant::now() + REQUEST_WAIT;
    let (head, read) = read_head(client, deadline)?;
    let end = find_head_end(&head)?;
    let mut body_left = content_length(&head[..end])
        .unwrap_or(0)
        .saturating_sub(read - end);
    let mut buffer = vec![0u8; 16 << 10];
    while body_left > 0 && Instant::now() < deadline {
        match client.read(&mut buffer) {
            Ok(0) => return None,
            Ok(n) => body_left = body_left.saturating_sub(n),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return None,
        }
    }
    (body_left == 0).then_some(())
}

/// Reads until the end of a request head; returns what was read (maybe a part of the body
/// too) and its length.
fn read_head(client: &mut TcpStream, deadline: Instant) -> Option<(Vec<u8>, usize)> {
    let mut head = Vec::new();
    let mut buffer = [0u8; 4096];
    while find_head_end(&head).is_none() {
        if Instant::now() >= deadline || head.len() > HEAD_BYTES_MAX {
            return None;
        }
        match client.read(&mut buffer) {
            Ok(0) => return None,
            Ok(n) => head.extend_from_slice(&buffer[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return None,
        }
    }
    let len = head.len();
    Some((head, len))
}

/// The length of an HTTP head including its blank line.
fn find_head_end(bytes: &[u8]) -> Option<usize> {
    bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4)
}

fn content_length(head: &[u8]) -> Option<usize> {
    let head = std::str::from_utf8(head).ok()?;
    head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse().ok())?
    })
}

/// Closes `stream` with a RST instead of a FIN (SO_LINGER with a zero timeout).
fn reset(stream: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt(2) on an open socket with a correctly sized linger value.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_and_lengths_are_found() {
        let response = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789";
        let end = find_head_end(response).expect("a head");
        assert_eq!(&response[end..], b"0123456789");
        assert_eq!(content_length(&response[..end]), Some(10));
        assert_eq!(content_length(b"HTTP/1.1 100 Continue\r\n\r\n"), None);
    }
}
