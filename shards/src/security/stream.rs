//! A client connection's byte stream: the socket itself, or TLS over it.

use std::io;
use std::os::fd::RawFd;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::{AsyncRead, AsyncWrite, AsyncWriteExt};
use glommio::net::TcpStream;

use super::tls::TlsStream;

/// The socket, or TLS over it.
pub enum ClientStream {
    /// Plain TCP: responses go out with vectored `sendmsg` on the descriptor.
    Plain(TcpStream),
    /// TLS: responses go through rustls, which encrypts them into records.
    Tls(Box<TlsStream>),
}

impl ClientStream {
    /// Writes a response's segments in order: with one vectored send on a plain socket where
    /// the buffer takes it (`socket_write`), through TLS otherwise.
    pub async fn write_segments<W: AsyncWrite + Unpin>(
        writer: &mut W,
        plain_fd: Option<RawFd>,
        segments: &[Bytes],
    ) -> io::Result<()> {
        match plain_fd {
            Some(fd) => crate::socket_write::write_segments(writer, fd, segments).await,
            None => {
                for segment in segments {
                    writer.write_all(segment).await?;
                }
                writer.flush().await
            }
        }
    }
}

impl AsyncRead for ClientStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_flush(cx),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_close(cx),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_close(cx),
        }
    }
}
