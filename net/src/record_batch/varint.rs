//! Zig-zag varints used inside records (not the unsigned varints of the
//! flexible protocol, see `crate::wire`).
//!
//! Helpers: `get_varint`, `get_varlong`, `put_varint`, `put_varlong`, `varint_len`.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Reads a zig-zag varint (at most 5 bytes); `None` if truncated or too long.
pub fn get_varint(buf: &mut Bytes) -> Option<i32> {
    let v = get_unsigned(buf, 5)?;
    let v = u32::try_from(v).ok()?;
    Some(((v >> 1) as i32) ^ -((v & 1) as i32))
}

/// Reads a zig-zag varlong (at most 10 bytes); `None` if truncated or too long.
pub fn get_varlong(buf: &mut Bytes) -> Option<i64> {
    let v = get_unsigned(buf, 10)?;
    Some(((v >> 1) as i64) ^ -((v & 1) as i64))
}

fn get_unsigned(buf: &mut Bytes, max_bytes: usize) -> Option<u64> {
    let mut v: u64 = 0;
    for i in 0..max_bytes {
        if !buf.has_remaining() {
            return None;
        }
        let b = buf.get_u8();
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// Writes a zig-zag varint.
pub fn put_varint(buf: &mut BytesMut, v: i32) {
    put_unsigned(buf, u64::from(((v << 1) ^ (v >> 31)) as u32));
}

/// Writes a zig-zag varlong.
pub fn put_varlong(buf: &mut BytesMut, v: i64) {
    put_unsigned(buf, ((v << 1) ^ (v >> 63)) as u64);
}

fn put_unsigned(buf: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        buf.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

/// Encoded size of a zig-zag varint.
pub fn varint_len(v: i32) -> usize {
    let mut u = ((v << 1) ^ (v >> 31)) as u32;
    let mut n = 1;
    while u >= 0x80 {
        u >>= 7;
        n += 1;
    }
    n
}
