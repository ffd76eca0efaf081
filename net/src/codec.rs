//! The encode / decode traits every generated message implements, and their errors.

use bytes::Bytes;

use crate::wire::WireBuf;

/// Encodes a message (or a nested struct) at a protocol version.
pub trait Encode {
    /// Appends the encoding of `self` at `version` to `buf`.
    fn encode(&self, buf: &mut dyn WireBuf, version: i16) -> Result<(), EncodeError>;
    /// Exact number of bytes `encode` will append at `version`.
    fn encoded_len(&self, version: i16) -> usize;
}

/// Decodes a message (or a nested struct) at a protocol version, consuming
/// bytes from the front of `buf`. `bytes` / `records` fields are slices of `buf`.
pub trait Decode: Sized {
    /// Decodes one value at `version`.
    fn decode(buf: &mut Bytes, version: i16) -> Result<Self, DecodeError>;
}

/// Why bytes from the wire could not be decoded. Never a panic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Fewer bytes remain than the next value needs.
    #[error("truncated: needed {needed} bytes, {remaining} remain")]
    Truncated { needed: usize, remaining: usize },
    /// An array count larger than the remaining bytes could hold.
    #[error("array {field}: {count} elements cannot fit in the {remaining} bytes that remain")]
    ArrayTooLong {
        field: &'static str,
        count: usize,
        remaining: usize,
    },
    /// A length below -1.
    #[error("negative length {0}")]
    NegativeLength(i32),
    /// A varint longer than 32 bits.
    #[error("varint longer than 32 bits")]
    VarintOverflow,
    /// Null where the version does not allow it.
    #[error("field {0} is null but not nullable in this version")]
    UnexpectedNull(&'static str),
    /// A string that is not UTF-8.
    #[error("field {0} is not valid UTF-8")]
    InvalidUtf8(&'static str),
    /// A known tagged field whose payload was not fully consumed.
    #[error("tagged field {0} has trailing bytes")]
    TaggedFieldLength(&'static str),
    /// A version outside the supported range of this message.
    #[error("api key {api_key} version {version} is not supported")]
    UnsupportedVersion { api_key: i16, version: i16 },
    /// An API key Sluice does not speak.
    #[error("unknown api key {0}")]
    UnknownApiKey(i16),
    /// Bytes left after the message body.
    #[error("{0} trailing bytes after the message")]
    TrailingBytes(usize),
}

/// Why a value could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// A string, bytes or array longer than the wire format allows.
    #[error("length {0} does not fit the wire format")]
    TooLong(usize),
    /// `None` in a field that is not nullable in this version.
    #[error("field {0} is null but not nullable in this version")]
    NullNotAllowed(&'static str),
    /// A version outside the supported range of this message.
    #[error("api key {api_key} version {version} is not supported")]
    UnsupportedVersion { api_key: i16, version: i16 },
    /// A request / response whose API does not match the expected one.
    #[error("message is for api key {actual}, expected {expected}")]
    ApiKeyMismatch { expected: i16, actual: i16 },
}
