//! Request header (v1, v2) and response header (v0, v1).
//!
//! Request header v2 (flexible API versions) adds tagged fields after the
//! client id; the client id itself stays a non-compact nullable string.
//! Response header v1 adds tagged fields; ApiVersions responses always use v0
//! so that a client that sent a too-new version can still read the answer.
//!
//! Helpers: `RequestHeader::header_version`, `ResponseHeader::header_version`.

use bytes::{Buf, BufMut, Bytes};

use crate::{ApiKey, DecodeError, EncodeError, wire};

/// A request header.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RequestHeader {
    /// The API key of the request.
    pub request_api_key: i16,
    /// The API version of the request.
    pub request_api_version: i16,
    /// Echoed in the response.
    pub correlation_id: i32,
    /// The client id (nullable).
    pub client_id: Option<String>,
}

impl RequestHeader {
    /// Header version of a request: 2 for flexible API versions, else 1.
    pub fn header_version(api_key: ApiKey, api_version: i16) -> i16 {
        if api_key.is_flexible(api_version) {
            2
        } else {
            1
        }
    }

    /// Encoded size at `header_version`.
    pub fn encoded_len(&self, header_version: i16) -> usize {
        8 + wire::nullable_string_len(self.client_id.as_deref(), false)
            + usize::from(header_version >= 2)
    }

    /// Writes the header at `header_version` (1 or 2).
    pub fn encode(&self, buf: &mut dyn BufMut, header_version: i16) -> Result<(), EncodeError> {
        buf.put_i16(self.request_api_key);
        buf.put_i16(self.request_api_version);
        buf.put_i32(self.correlation_id);
        wire::put_nullable_string(buf, self.client_id.as_deref(), false, true, "ClientId")?;
        if header_version >= 2 {
            wire::put_uvarint(buf, 0);
        }
        Ok(())
    }

    /// Reads the fixed part (key, version, correlation id): 8 bytes.
    pub(crate) fn decode_fixed(buf: &mut Bytes) -> Result<RequestHeader, DecodeError> {
        if buf.remaining() < 8 {
            return Err(DecodeError::Truncated {
                needed: 8,
                remaining: buf.remaining(),
            });
        }
        Ok(RequestHeader {
            request_api_key: buf.get_i16(),
            request_api_version: buf.get_i16(),
            correlation_id: buf.get_i32(),
            client_id: None,
        })
    }

    /// Reads the client id and, at header v2, the tagged fields (skipped).
    pub(crate) fn decode_rest(
        &mut self,
        buf: &mut Bytes,
        header_version: i16,
    ) -> Result<(), DecodeError> {
        self.client_id = wire::get_nullable_string(buf, false, true, "ClientId")?;
        if header_version >= 2 {
            skip_tagged_fields(buf)?;
        }
        Ok(())
    }

    /// Decodes a whole header at `header_version`.
    pub fn decode(buf: &mut Bytes, header_version: i16) -> Result<RequestHeader, DecodeError> {
        let mut h = Self::decode_fixed(buf)?;
        h.decode_rest(buf, header_version)?;
        Ok(h)
    }
}

/// A response header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ResponseHeader {
    /// The correlation id of the request this answers.
    pub correlation_id: i32,
}

impl ResponseHeader {
    /// Header version of a response: 0 for ApiVersions and non-flexible
    /// versions, 1 for flexible ones.
    pub fn header_version(api_key: ApiKey, api_version: i16) -> i16 {
        if api_key != ApiKey::ApiVersions && api_key.is_response_flexible(api_version) {
            1
        } else {
            0
        }
    }

    /// Encoded size at `header_version`.
    pub fn encoded_len(header_version: i16) -> usize {
        4 + usize::from(header_version >= 1)
    }

    /// Writes the header at `header_version` (0 or 1).
    pub fn encode(&self, buf: &mut dyn BufMut, header_version: i16) {
        buf.put_i32(self.correlation_id);
        if header_version >= 1 {
            wire::put_uvarint(buf, 0);
        }
    }

    /// Reads a header at `header_version` (tagged fields skipped).
    pub fn decode(buf: &mut Bytes, header_version: i16) -> Result<ResponseHeader, DecodeError> {
        let correlation_id = wire::get_i32(buf)?;
        if header_version >= 1 {
            skip_tagged_fields(buf)?;
        }
        Ok(ResponseHeader { correlation_id })
    }
}

fn skip_tagged_fields(buf: &mut Bytes) -> Result<(), DecodeError> {
    let count = wire::get_tag_count(buf)?;
    for _ in 0..count {
        wire::get_tagged_field(buf)?;
    }
    Ok(())
}
