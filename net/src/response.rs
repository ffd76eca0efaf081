//! Whole response frames: [`encode_response`] (one buffer) and
//! [`encode_response_scattered`] (segments for a vectored write) for the broker,
//! [`decode_response`] for clients (load generator, tests).
//!
//! Helpers: `encode_response`, `encode_response_to`, `encode_response_scattered`,
//! `response_frame_len`, `decode_response`.

use bytes::{Buf, Bytes, BytesMut};

use crate::scatter::ScatterBuf;
use crate::wire::WireBuf;
use crate::{ApiKey, DecodeError, EncodeError, Response, ResponseHeader};

/// Appends a whole response frame to `out`: 4-byte size, response header (v0
/// for ApiVersions and non-flexible versions, v1 otherwise), body at `api_version`.
pub fn encode_response(
    correlation_id: i32,
    api_version: i16,
    response: &Response,
    out: &mut BytesMut,
) -> Result<(), EncodeError> {
    let size = response_frame_len(api_version, response)?;
    out.reserve(size);
    let start = out.len();
    encode_response_to(correlation_id, api_version, response, size, out)?;
    debug_assert_eq!(out.len() - start, size, "encoded_len disagrees with encode");
    Ok(())
}

/// Bytes of the whole frame [`encode_response`] writes, size prefix included.
pub fn response_frame_len(api_version: i16, response: &Response) -> Result<usize, EncodeError> {
    let header_version = ResponseHeader::header_version(response.api_key(), api_version);
    let size = ResponseHeader::encoded_len(header_version) + response.body_len(api_version);
    crate::wire::len_u32(size)?;
    Ok(4 + size)
}

/// [`encode_response`] into any buffer, e.g. a slice of exactly `frame_len` bytes taken
/// from a memory pool; `frame_len` is what [`response_frame_len`] returned (passed in so
/// that the body's length, a walk over the whole response, is computed once).
pub fn encode_response_to(
    correlation_id: i32,
    api_version: i16,
    response: &Response,
    frame_len: usize,
    out: &mut dyn WireBuf,
) -> Result<(), EncodeError> {
    let header_version = ResponseHeader::header_version(response.api_key(), api_version);
    out.put_i32(crate::wire::len_u32(frame_len.saturating_sub(4))? as i32);
    ResponseHeader { correlation_id }.encode(out, header_version);
    response.encode_body(out, api_version)
}

/// The whole frame of [`encode_response`] as segments to write in order (a vectored write):
/// each `records` field of at least [`SHARED_SEGMENT_BYTES_MIN`](crate::SHARED_SEGMENT_BYTES_MIN)
/// bytes is its own segment, the very `Bytes` of the response (shared, not copied); the
/// rest is copied into small segments between them. Their concatenation is the frame.
pub fn encode_response_scattered(
    correlation_id: i32,
    api_version: i16,
    response: &Response,
) -> Result<Vec<Bytes>, EncodeError> {
    let frame_len = response_frame_len(api_version, response)?;
    let mut out = ScatterBuf::new(frame_len);
    encode_response_to(correlation_id, api_version, response, frame_len, &mut out)?;
    let segments = out.into_segments();
    debug_assert_eq!(
        segments.iter().map(Bytes::len).sum::<usize>(),
        frame_len,
        "encoded_len disagrees with encode"
    );
    Ok(segments)
}

/// Decodes a response frame (after the 4-byte size prefix) of `api_key` at
/// `api_version`. Returns the correlation id and the body.
pub fn decode_response(
    api_key: i16,
    api_version: i16,
    frame: Bytes,
) -> Result<(i32, Response), DecodeError> {
    let key = ApiKey::from_i16(api_key).ok_or(DecodeError::UnknownApiKey(api_key))?;
    if api_version < key.min_version() || api_version > key.max_version() {
        return Err(DecodeError::UnsupportedVersion {
            api_key,
            version: api_version,
        });
    }
    let mut buf = frame;
    let header =
        ResponseHeader::decode(&mut buf, ResponseHeader::header_version(key, api_version))?;
    let body = Response::decode_body(key, &mut buf, api_version)?;
    if buf.has_remaining() {
        return Err(DecodeError::TrailingBytes(buf.remaining()));
    }
    Ok((header.correlation_id, body))
}
