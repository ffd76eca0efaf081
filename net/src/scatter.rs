//! A response frame as a list of `Bytes` segments for a vectored write: large `records`
//! fields stay the `Bytes` they came in (a reference to the broker's log or block cache), the
//! rest (size prefix, header, every other field) is copied into one small inline buffer.
//!
//! Helpers: `ScatterBuf`, `SHARED_SEGMENT_BYTES_MIN`.

use bytes::buf::UninitSlice;
use bytes::{BufMut, Bytes, BytesMut};

use crate::wire::WireBuf;

/// Records of at least this many bytes become a segment of their own; smaller ones are
/// copied inline. Below a page, copying costs less than what a segment adds: an iovec entry
/// (a writev takes at most 1024), a refcount, and the kernel's per-iovec work; and a fetch
/// of many small partitions stays a handful of segments instead of two per partition.
pub const SHARED_SEGMENT_BYTES_MIN: usize = 4096;

/// Inline bytes reserved up front: the headers of a fetch of about a hundred partitions.
/// More grows the buffer; the shared records are never counted in it.
const INLINE_CAPACITY_INITIAL_BYTES: usize = 4096;

/// A [`WireBuf`] that keeps large `records` by reference. Everything else goes into one
/// inline buffer, cut into segments between the shared records when the frame is finished.
pub(crate) struct ScatterBuf {
    inline: BytesMut,
    pieces: Vec<Piece>,
    // End of the last inline piece in `inline`.
    inline_cut: usize,
}

/// One segment of the frame, in order.
enum Piece {
    /// Inline bytes from the end of the previous inline piece up to this offset.
    InlineUntil(usize),
    /// A `records` field, shared with its owner.
    Shared(Bytes),
}

impl ScatterBuf {
    /// An empty buffer for a frame of `frame_len` bytes.
    pub(crate) fn new(frame_len: usize) -> ScatterBuf {
        ScatterBuf {
            inline: BytesMut::with_capacity(frame_len.min(INLINE_CAPACITY_INITIAL_BYTES)),
            pieces: Vec::new(),
            inline_cut: 0,
        }
    }

    /// The segments, in order: inline slices (of one allocation) between shared records.
    pub(crate) fn into_segments(mut self) -> Vec<Bytes> {
        self.cut_inline();
        let inline = self.inline.freeze();
        let mut start = 0;
        self.pieces
            .into_iter()
            .map(|piece| match piece {
                Piece::InlineUntil(end) => {
                    let segment = inline.slice(start..end);
                    start = end;
                    segment
                }
                Piece::Shared(bytes) => bytes,
            })
            .collect()
    }

    /// Ends the current inline piece, if it has any bytes.
    fn cut_inline(&mut self) {
        if self.inline.len() > self.inline_cut {
            self.inline_cut = self.inline.len();
            self.pieces.push(Piece::InlineUntil(self.inline_cut));
        }
    }
}

impl WireBuf for ScatterBuf {
    fn put_shared(&mut self, bytes: &Bytes) {
        if bytes.len() < SHARED_SEGMENT_BYTES_MIN {
            self.inline.put_slice(bytes);
            return;
        }
        self.cut_inline();
        self.pieces.push(Piece::Shared(bytes.clone()));
    }
}

// SAFETY: every method forwards to the inline `BytesMut`, whose implementation upholds
// `BufMut`'s contract (`chunk_mut` is writable memory past the initialized bytes,
// `advance_mut` only marks bytes the caller initialized). Tested by `tests` below and by every
// fetch the broker sends.
unsafe impl BufMut for ScatterBuf {
    fn remaining_mut(&self) -> usize {
        self.inline.remaining_mut()
    }

    unsafe fn advance_mut(&mut self, cnt: usize) {
        // SAFETY: the caller's promise (the `cnt` bytes of `chunk_mut` are initialized) is
        // the one `BytesMut::advance_mut` asks for.
        unsafe { self.inline.advance_mut(cnt) }
    }

    fn chunk_mut(&mut self) -> &mut UninitSlice {
        self.inline.chunk_mut()
    }

    fn put_slice(&mut self, src: &[u8]) {
        self.inline.put_slice(src);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_bytes_are_copied_and_large_ones_shared_between_inline_segments() {
        let large = Bytes::from(vec![7u8; SHARED_SEGMENT_BYTES_MIN]);
        let small = Bytes::from(vec![1u8; SHARED_SEGMENT_BYTES_MIN - 1]);
        let mut buf = ScatterBuf::new(0);
        buf.put_i32(5);
        buf.put_shared(&large);
        buf.put_shared(&large);
        buf.put_shared(&small);
        buf.put_u8(9);
        let segments = buf.into_segments();
        let lens: Vec<usize> = segments.iter().map(Bytes::len).collect();
        assert_eq!(lens, [4, large.len(), large.len(), small.len() + 1]);
        assert_eq!(segments[1].as_ptr(), large.as_ptr(), "shared, not copied");
        assert_eq!(segments[2].as_ptr(), large.as_ptr());
        assert_eq!(&segments[0][..], &5i32.to_be_bytes());
        assert_eq!(&segments[3][..small.len()], &small[..]);
        assert_eq!(segments[3][small.len()], 9);
    }

    #[test]
    fn nothing_written_is_no_segment() {
        assert!(ScatterBuf::new(10).into_segments().is_empty());
    }
}
