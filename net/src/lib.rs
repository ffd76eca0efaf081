//! Sluice's Kafka wire protocol codec.
//!
//! - [`messages`]: one module per Kafka request / response, generated at build
//!   time from `net/schema/*.schema` (see `net/README.md`).
//! - [`Encode`] / [`Decode`]: the codec traits every message implements.
//! - [`frame`]: the 4-byte length prefix and `socket.request.max.bytes`.
//! - [`header`]: request / response headers.
//! - [`api`]: [`ApiKey`], [`Request`], [`Response`], [`supported_apis`].
//! - [`request`] / [`response`]: whole-frame entry points for the broker and clients;
//!   [`encode_response_scattered`] keeps large `records` as their own `Bytes` for a
//!   vectored write.
//! - [`WireBuf`]: the buffer messages encode into.
//! - [`ErrorCode`]: Kafka error codes.
//! - [`record_batch`]: zero-copy RecordBatch v2 view, record decoding, builder.
//! - [`crc32c_combine`]: the CRC-32C of a concatenation from its parts' CRCs.

pub mod api;
mod codec;
mod crc32c_combine;
pub mod error_code;
pub mod frame;
pub mod header;
pub mod record_batch;
pub mod request;
pub mod response;
mod scatter;
mod uuid;
pub mod wire;

/// Generated Kafka message types, one module per message
/// (e.g. `messages::produce_request::ProduceRequest`).
#[allow(
    clippy::all,
    unused_parens,
    unused_braces,
    missing_docs,
    clippy::needless_borrow,
    unused_mut,
    unused_variables
)]
pub mod messages {
    include!(concat!(env!("OUT_DIR"), "/messages.rs"));
}

pub use api::{ApiKey, Request, Response, supported_apis};
pub use codec::{Decode, DecodeError, Encode, EncodeError};
pub use crc32c_combine::crc32c_combine;
pub use error_code::ErrorCode;
pub use frame::{DEFAULT_MAX_FRAME_BYTES, FrameError, frame_length};
pub use header::{RequestHeader, ResponseHeader};
pub use request::{RequestError, RequestErrorKind, decode_request, encode_request};
pub use response::{
    decode_response, encode_response, encode_response_scattered, encode_response_to,
    response_frame_len,
};
pub use scatter::SHARED_SEGMENT_BYTES_MIN;
pub use uuid::Uuid;
pub use wire::WireBuf;
