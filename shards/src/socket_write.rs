//! Writing a response frame's segments to a socket with vectored I/O.
//!
//! glommio 0.9's `TcpStream` has no `poll_write_vectored` (the `AsyncWrite` default writes
//! only the first buffer), so a frame is sent here with `sendmsg(MSG_DONTWAIT)` on the
//! socket's descriptor, up to [`IOVECS_PER_SEND_MAX`] segments per call. The syscall pattern
//! of a frame the socket buffer takes at once is one `sendmsg`. When the buffer is full
//! (`EAGAIN`), one glommio write of the current segment waits for the socket to be writable
//! (an io_uring poll) and sends what fits; `sendmsg` resumes after it.

use std::io;
use std::os::fd::RawFd;

use bytes::Bytes;
use futures::{AsyncWrite, AsyncWriteExt};

/// Segments per `sendmsg`. A fetch of 4 MiB has at most about two thousand segments (records
/// of at least 4 KiB each, and the fields between them); 64 keeps the iovec array on the stack
/// (1 KiB) while one call still offers at least 128 KiB, more than a socket buffer usually
/// takes at once. Linux refuses more than IOV_MAX (1024).
const IOVECS_PER_SEND_MAX: usize = 64;

/// Writes `segments` in order to the socket `fd`, of which `writer` is the write half: all of
/// them, or an error (the connection is then closed).
pub async fn write_segments<W: AsyncWrite + Unpin>(
    writer: &mut W,
    fd: RawFd,
    segments: &[Bytes],
) -> io::Result<()> {
    let mut position = SegmentPosition::default();
    position.skip_empty(segments);
    while position.segment < segments.len() {
        let written = match send_vectored(fd, &segments[position.segment..], position.offset) {
            Ok(written) => written,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                writer
                    .write(&segments[position.segment][position.offset..])
                    .await?
            }
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        };
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        position.advance(segments, written);
    }
    Ok(())
}

/// The first byte of a frame's segments not yet written.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct SegmentPosition {
    segment: usize,
    offset: usize,
}

impl SegmentPosition {
    /// Moves past `written` bytes, and past any empty segments after them.
    fn advance(&mut self, segments: &[Bytes], mut written: usize) {
        while written > 0 && self.segment < segments.len() {
            let left = segments[self.segment].len() - self.offset;
            if written < left {
                self.offset += written;
                return;
            }
            written -= left;
            self.segment += 1;
            self.offset = 0;
        }
        self.skip_empty(segments);
    }

    fn skip_empty(&mut self, segments: &[Bytes]) {
        while self.segment < segments.len() && segments[self.segment].len() == self.offset {
            self.segment += 1;
            self.offset = 0;
        }
    }
}

/// One non-blocking `sendmsg` of the first [`IOVECS_PER_SEND_MAX`] of `segments`, the first
/// from `offset`. Returns the bytes the kernel took.
fn send_vectored(fd: RawFd, segments: &[Bytes], offset: usize) -> io::Result<usize> {
    let empty = libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    };
    let mut iovecs = [empty; IOVECS_PER_SEND_MAX];
    let count = segments.len().min(IOVECS_PER_SEND_MAX);
    for (i, (iovec, segment)) in iovecs.iter_mut().zip(segments).enumerate() {
        let slice = if i == 0 {
            segment.get(offset..).unwrap_or_default()
        } else {
            &segment[..]
        };
        // The kernel only reads through the pointer (sendmsg), so casting away const is sound.
        iovec.iov_base = slice.as_ptr() as *mut libc::c_void;
        iovec.iov_len = slice.len();
    }
    // SAFETY: a zeroed msghdr is valid (no address, no control data); `msg_iov` points to
    // `count` initialized iovecs, each a live slice of `segments`, borrowed for this call.
    let sent = unsafe {
        let mut message: libc::msghdr = std::mem::zeroed();
        message.msg_iov = iovecs.as_mut_ptr();
        message.msg_iovlen = count as _;
        libc::sendmsg(fd, &message, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(sent as usize)
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;

    use futures::AsyncReadExt;
    use glommio::net::{TcpListener, TcpStream};

    use super::*;

    #[test]
    fn positions_move_over_segment_ends_and_empty_segments() {
        let segments = [
            Bytes::from_static(b"abc"),
            Bytes::new(),
            Bytes::from_static(b"de"),
        ];
        let mut position = SegmentPosition::default();
        position.advance(&segments, 2);
        assert_eq!(
            position,
            SegmentPosition {
                segment: 0,
                offset: 2
            }
        );
        position.advance(&segments, 1);
        assert_eq!(
            position,
            SegmentPosition {
                segment: 2,
                offset: 0
            }
        );
        position.advance(&segments, 2);
        assert_eq!(position.segment, 3);
    }

    /// More bytes than a socket buffer holds and more segments than one sendmsg takes, read
    /// by a peer on the same executor: the writer hits EAGAIN and partial writes.
    #[test]
    fn a_frame_of_many_segments_arrives_whole_and_in_order() {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            | 1;
        println!("seed {seed}");
        let mut state = seed;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let segments: Vec<Bytes> = (0..1500u32)
            .map(|i| {
                let len = match next() % 4 {
                    0 => 0,
                    1 => (next() % 100) as usize,
                    _ => 4096 + (next() % 20_000) as usize,
                };
                Bytes::from(vec![(i % 251) as u8; len])
            })
            .collect();
        let expected = segments.concat();
        let executor = glommio::LocalExecutorBuilder::default().spawn(move || async move {
            let listener = TcpListener::bind("127.0.0.1:0").expect("binds");
            let address = listener.local_addr().expect("address");
            let reader = glommio::spawn_local(async move {
                let mut stream = TcpStream::connect(address).await.expect("connects");
                let mut received = Vec::new();
                stream.read_to_end(&mut received).await.expect("reads");
                received
            });
            let stream = listener.accept().await.expect("accepts");
            let fd = stream.as_raw_fd();
            let (_read, mut writer) = stream.split();
            write_segments(&mut writer, fd, &segments)
                .await
                .expect("writes");
            writer.close().await.expect("closes");
            drop(_read);
            reader.await
        });
        let received = executor
            .expect("executor starts")
            .join()
            .expect("executor runs");
        assert_eq!(received.len(), expected.len(), "seed {seed}");
        assert!(received == expected, "seed {seed}");
    }
}
