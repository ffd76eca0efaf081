//! The pieces the group log and the transaction log share in their record formats: strings
//! (u16 length + UTF-8) and bounds checks.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// The longest string a log record holds; longer ids are refused before they are logged.
pub const STR_BYTES_MAX: usize = u16::MAX as usize;

/// Appends `s` as u16 length + bytes; `s` must be at most [`STR_BYTES_MAX`] bytes.
pub fn put_str(out: &mut BytesMut, s: &str) {
    debug_assert!(s.len() <= STR_BYTES_MAX);
    out.put_u16(s.len() as u16);
    out.put_slice(s.as_bytes());
}

/// Takes a string written by [`put_str`].
pub fn get_str(payload: &mut Bytes) -> Result<String, &'static str> {
    need(payload, 2)?;
    let length = usize::from(payload.get_u16());
    need(payload, length)?;
    String::from_utf8(payload.split_to(length).to_vec()).map_err(|_| "string is not UTF-8")
}

/// Fails unless `payload` holds at least `bytes` more bytes.
pub fn need(payload: &Bytes, bytes: usize) -> Result<(), &'static str> {
    if payload.remaining() < bytes {
        Err("truncated")
    } else {
        Ok(())
    }
}
