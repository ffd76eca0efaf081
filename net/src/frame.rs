//! Framing: every Kafka request and response is a 4-byte big-endian size
//! followed by that many bytes. The size is checked against
//! `socket.request.max.bytes` before a buffer is allocated for the frame.
//!
//! Helpers: `frame_length`.

/// Kafka's default `socket.request.max.bytes`: 100 MiB.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 100 * 1024 * 1024;

/// Bytes of the size prefix in front of every frame.
pub const FRAME_PREFIX_BYTES: usize = 4;

/// Why a frame's size prefix was refused. The connection should be closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The prefix is negative.
    #[error("negative frame size {0}")]
    NegativeSize(i32),
    /// The frame is larger than `socket.request.max.bytes`.
    #[error("frame of {size_bytes} bytes exceeds socket.request.max.bytes = {max_frame_bytes}")]
    TooLarge {
        size_bytes: usize,
        max_frame_bytes: usize,
    },
}

/// Reads the size prefix of a frame and checks it against `max_frame_bytes`
/// (`socket.request.max.bytes`). Returns the number of bytes that follow.
pub fn frame_length(prefix: [u8; 4], max_frame_bytes: usize) -> Result<usize, FrameError> {
    let size = i32::from_be_bytes(prefix);
    if size < 0 {
        return Err(FrameError::NegativeSize(size));
    }
    let size_bytes = size as usize;
    if size_bytes > max_frame_bytes {
        return Err(FrameError::TooLarge {
            size_bytes,
            max_frame_bytes,
        });
    }
    Ok(size_bytes)
}
