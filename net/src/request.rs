//! Whole request frames: [`decode_request`] for the broker, [`encode_request`]
//! for clients (load generator, tests).
//!
//! Helpers: `decode_request`, `encode_request`.

use bytes::{BufMut, Bytes, BytesMut};

use crate::{ApiKey, DecodeError, EncodeError, Request, RequestHeader};

/// Why a request frame could not be decoded. `header` is present whenever the
/// fixed part of the header (api key, version, correlation id) was read, so
/// the broker can answer with the right correlation id.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("bad request (header {header:?}): {kind}")]
pub struct RequestError {
    /// The header, as far as it was parsed (client id may be missing).
    pub header: Option<RequestHeader>,
    /// What went wrong.
    pub kind: RequestErrorKind,
}

/// The kind of a [`RequestError`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RequestErrorKind {
    /// A known API at a version outside our range (answer UNSUPPORTED_VERSION;
    /// for ApiVersions, with a v0 response).
    #[error("unsupported version {version} of {api_key:?}")]
    UnsupportedVersion { api_key: ApiKey, version: i16 },
    /// An API key Sluice does not speak.
    #[error("unknown api key {0}")]
    UnknownApiKey(i16),
    /// The header or body is malformed.
    #[error("malformed: {0}")]
    Malformed(DecodeError),
}

/// Decodes a request frame (the bytes after the 4-byte size prefix) into its
/// header and body. `bytes` / `records` fields borrow from `frame`.
pub fn decode_request(frame: Bytes) -> Result<(RequestHeader, Request), RequestError> {
    let mut buf = frame;
    let mut header = RequestHeader::decode_fixed(&mut buf).map_err(|e| RequestError {
        header: None,
        kind: RequestErrorKind::Malformed(e),
    })?;
    let version = header.request_api_version;
    let Some(api_key) = ApiKey::from_i16(header.request_api_key) else {
        let kind = RequestErrorKind::UnknownApiKey(header.request_api_key);
        return Err(with_client_id(header, buf, kind));
    };
    if version < api_key.min_version() || version > api_key.max_version() {
        let kind = RequestErrorKind::UnsupportedVersion { api_key, version };
        return Err(with_client_id(header, buf, kind));
    }
    let header_version = RequestHeader::header_version(api_key, version);
    if let Err(e) = header.decode_rest(&mut buf, header_version) {
        return Err(RequestError {
            header: Some(header),
            kind: RequestErrorKind::Malformed(e),
        });
    }
    // Bytes after the body are ignored, as Kafka's broker does: librdkafka 2.x sends a
    // 4-byte placeholder for a null topic array in Metadata v9+ requests ("all topics").
    let body = Request::decode_body(api_key, &mut buf, version);
    match body {
        Ok(body) => Ok((header, body)),
        Err(e) => Err(RequestError {
            header: Some(header),
            kind: RequestErrorKind::Malformed(e),
        }),
    }
}

/// Appends a whole request frame (size prefix, header, body) to `out`.
pub fn encode_request(
    header: &RequestHeader,
    request: &Request,
    out: &mut BytesMut,
) -> Result<(), EncodeError> {
    let api_key = request.api_key();
    if header.request_api_key != api_key as i16 {
        return Err(EncodeError::ApiKeyMismatch {
            expected: header.request_api_key,
            actual: api_key as i16,
        });
    }
    let version = header.request_api_version;
    let header_version = RequestHeader::header_version(api_key, version);
    let size = header.encoded_len(header_version) + request.body_len(version);
    out.reserve(4 + size);
    out.put_i32(crate::wire::len_u32(size)? as i32);
    let start = out.len();
    header.encode(out, header_version)?;
    request.encode_body(out, version)?;
    debug_assert_eq!(out.len() - start, size, "encoded_len disagrees with encode");
    Ok(())
}

/// Best effort: the client id of a request we will refuse, for logging.
fn with_client_id(
    mut header: RequestHeader,
    mut buf: Bytes,
    kind: RequestErrorKind,
) -> RequestError {
    header.client_id = crate::wire::get_nullable_string(&mut buf, false, true, "ClientId")
        .ok()
        .flatten();
    RequestError {
        header: Some(header),
        kind,
    }
}
