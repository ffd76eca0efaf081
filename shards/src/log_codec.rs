//! The pieces the group log and the transaction log share in their record formats: strings
//! (u16 length + UTF-8), committed offsets, and bounds checks.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::group::log::CommittedOffset;

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

/// Appends a partition's committed offset: `topic str, partition i32, offset i64,
/// leader_epoch i32, metadata: i32 len (-1 null) + UTF-8, commit_timestamp_ms i64`.
pub fn put_committed(out: &mut BytesMut, topic: &str, partition: i32, committed: &CommittedOffset) {
    put_str(out, topic);
    out.put_i32(partition);
    out.put_i64(committed.offset);
    out.put_i32(committed.leader_epoch);
    match &committed.metadata {
        None => out.put_i32(-1),
        Some(m) => {
            out.put_i32(m.len() as i32);
            out.put_slice(m.as_bytes());
        }
    }
    out.put_i64(committed.commit_timestamp_ms);
}

/// Takes a committed offset written by [`put_committed`].
pub fn get_committed(payload: &mut Bytes) -> Result<(String, i32, CommittedOffset), &'static str> {
    let topic = get_str(payload)?;
    need(payload, 4 + 8 + 4 + 4)?;
    let partition = payload.get_i32();
    let offset = payload.get_i64();
    let leader_epoch = payload.get_i32();
    let length = payload.get_i32();
    let metadata = if length < 0 {
        None
    } else {
        need(payload, length as usize)?;
        let raw = payload.split_to(length as usize);
        Some(String::from_utf8(raw.to_vec()).map_err(|_| "metadata is not UTF-8")?)
    };
    need(payload, 8)?;
    let committed = CommittedOffset {
        offset,
        leader_epoch,
        metadata,
        commit_timestamp_ms: payload.get_i64(),
    };
    Ok((topic, partition, committed))
}
