//! Primitive wire encodings of the Kafka protocol: fixed-width integers,
//! unsigned varints, (compact) strings, bytes and array lengths, tagged fields.
//! Every reader checks the bytes that remain before it reads or allocates.
//!
//! Writers: [`WireBuf`] (what messages encode into), `put_uvarint`, `put_string`,
//! `put_nullable_string`, `put_bytes`, `put_nullable_bytes`, `put_records`,
//! `put_array_len`, `put_null_len`, `len_u32`.
//! Sizes: `uvarint_len`, `string_len`, `nullable_string_len`, `bytes_len`,
//! `nullable_bytes_len`, `array_len_len`, `null_len_len`.
//! Readers: `get_i8` … `get_f64`, `get_bool`, `get_uuid`, `get_uvarint`,
//! `get_string`, `get_nullable_string`, `get_bytes`, `get_nullable_bytes`,
//! `get_array_len`, `prealloc_len`, `get_tag_count`, `get_tagged_field`.

use bytes::{Buf, BufMut, Bytes};

use crate::{DecodeError, EncodeError, Uuid};

/// Least bytes one tagged field takes on the wire (tag and size varints).
const TAGGED_FIELD_MIN_BYTES: usize = 2;

/// Most bytes reserved up front for a decoded array. A count that passed the
/// remaining-bytes check can still be large; beyond this the vector grows only
/// as elements actually decode, so a frame that lies about its count fails
/// before any large allocation.
pub const ARRAY_PREALLOC_BYTES_MAX: usize = 64 * 1024;

// ------------------------------------------------------------------ writers

/// A buffer messages encode into: a [`BufMut`] that may also keep a `records` field as a
/// reference to its `Bytes` instead of a copy (see `encode_response_scattered`).
pub trait WireBuf: BufMut {
    /// Appends `bytes`. The default copies; a scatter buffer may keep `bytes` itself.
    fn put_shared(&mut self, bytes: &Bytes) {
        self.put_slice(bytes);
    }
}

impl WireBuf for bytes::BytesMut {}
impl WireBuf for Vec<u8> {}
impl WireBuf for &mut [u8] {}

/// Writes an unsigned LEB128 varint.
pub fn put_uvarint(buf: &mut dyn BufMut, mut v: u32) {
    while v >= 0x80 {
        buf.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

/// A length as `u32`, or an error if it cannot be represented on the wire.
pub fn len_u32(len: usize) -> Result<u32, EncodeError> {
    u32::try_from(len)
        .ok()
        .filter(|l| *l < i32::MAX as u32)
        .ok_or(EncodeError::TooLong(len))
}

/// Writes a string (int16 length, or compact uvarint length + 1 when flexible).
pub fn put_string(buf: &mut dyn BufMut, s: &str, flexible: bool) -> Result<(), EncodeError> {
    put_len(buf, s.len(), flexible, true)?;
    buf.put_slice(s.as_bytes());
    Ok(())
}

/// Writes a nullable string; `None` is an error where the version does not allow null.
pub fn put_nullable_string(
    buf: &mut dyn BufMut,
    s: Option<&str>,
    flexible: bool,
    nullable: bool,
    field: &'static str,
) -> Result<(), EncodeError> {
    match s {
        Some(s) => put_string(buf, s, flexible),
        None if nullable => {
            if flexible {
                put_uvarint(buf, 0);
            } else {
                buf.put_i16(-1);
            }
            Ok(())
        }
        None => Err(EncodeError::NullNotAllowed(field)),
    }
}

/// Writes bytes (int32 length, or compact uvarint length + 1 when flexible).
pub fn put_bytes(buf: &mut dyn BufMut, b: &[u8], flexible: bool) -> Result<(), EncodeError> {
    put_len(buf, b.len(), flexible, false)?;
    buf.put_slice(b);
    Ok(())
}

/// Writes nullable bytes (also `records`).
pub fn put_nullable_bytes(
    buf: &mut dyn BufMut,
    b: Option<&Bytes>,
    flexible: bool,
    nullable: bool,
    field: &'static str,
) -> Result<(), EncodeError> {
    match b {
        Some(b) => put_bytes(buf, b, flexible),
        None if nullable => {
            put_null_len(buf, flexible);
            Ok(())
        }
        None => Err(EncodeError::NullNotAllowed(field)),
    }
}

/// Writes a `records` field: as [`put_nullable_bytes`], but the records go through
/// [`WireBuf::put_shared`], so a scatter buffer can send them without a copy.
pub fn put_records(
    buf: &mut dyn WireBuf,
    records: Option<&Bytes>,
    flexible: bool,
    nullable: bool,
    field: &'static str,
) -> Result<(), EncodeError> {
    match records {
        Some(records) => {
            put_len(buf, records.len(), flexible, false)?;
            buf.put_shared(records);
            Ok(())
        }
        None => put_nullable_bytes(buf, None, flexible, nullable, field),
    }
}

/// Writes an array element count.
pub fn put_array_len(buf: &mut dyn BufMut, n: usize, flexible: bool) -> Result<(), EncodeError> {
    put_len(buf, n, flexible, false)
}

/// Writes the null marker of a bytes / array length (int32 -1, or compact 0).
pub fn put_null_len(buf: &mut dyn BufMut, flexible: bool) {
    if flexible {
        put_uvarint(buf, 0);
    } else {
        buf.put_i32(-1);
    }
}

fn put_len(buf: &mut dyn BufMut, n: usize, flexible: bool, short: bool) -> Result<(), EncodeError> {
    if flexible {
        put_uvarint(buf, len_u32(n)? + 1);
    } else if short {
        let n = i16::try_from(n).map_err(|_| EncodeError::TooLong(n))?;
        buf.put_i16(n);
    } else {
        buf.put_i32(len_u32(n)? as i32);
    }
    Ok(())
}

// ------------------------------------------------------------------ sizes

/// Encoded size of an unsigned varint.
pub const fn uvarint_len(v: u32) -> usize {
    match v {
        0..=0x7f => 1,
        0x80..=0x3fff => 2,
        0x4000..=0x1f_ffff => 3,
        0x20_0000..=0x0fff_ffff => 4,
        _ => 5,
    }
}

/// Encoded size of a string.
pub fn string_len(s: &str, flexible: bool) -> usize {
    len_prefix_len(s.len(), flexible, 2) + s.len()
}

/// Encoded size of a nullable string.
pub fn nullable_string_len(s: Option<&str>, flexible: bool) -> usize {
    match s {
        Some(s) => string_len(s, flexible),
        None if flexible => 1,
        None => 2,
    }
}

/// Encoded size of bytes.
pub fn bytes_len(b: &[u8], flexible: bool) -> usize {
    len_prefix_len(b.len(), flexible, 4) + b.len()
}

/// Encoded size of nullable bytes.
pub fn nullable_bytes_len(b: Option<&Bytes>, flexible: bool) -> usize {
    match b {
        Some(b) => bytes_len(b, flexible),
        None => null_len_len(flexible),
    }
}

/// Encoded size of an array count.
pub fn array_len_len(n: usize, flexible: bool) -> usize {
    len_prefix_len(n, flexible, 4)
}

/// Encoded size of a null array / bytes marker.
pub const fn null_len_len(flexible: bool) -> usize {
    if flexible { 1 } else { 4 }
}

fn len_prefix_len(n: usize, flexible: bool, fixed: usize) -> usize {
    if flexible {
        uvarint_len(u32::try_from(n).unwrap_or(u32::MAX).saturating_add(1))
    } else {
        fixed
    }
}

// ------------------------------------------------------------------ readers

fn need(buf: &Bytes, n: usize) -> Result<(), DecodeError> {
    if buf.remaining() < n {
        Err(DecodeError::Truncated {
            needed: n,
            remaining: buf.remaining(),
        })
    } else {
        Ok(())
    }
}

macro_rules! getter {
    ($name:ident, $ty:ty, $get:ident, $n:expr) => {
        /// Reads a big-endian fixed-width value.
        pub fn $name(buf: &mut Bytes) -> Result<$ty, DecodeError> {
            need(buf, $n)?;
            Ok(buf.$get())
        }
    };
}
getter!(get_i8, i8, get_i8, 1);
getter!(get_i16, i16, get_i16, 2);
getter!(get_u16, u16, get_u16, 2);
getter!(get_i32, i32, get_i32, 4);
getter!(get_u32, u32, get_u32, 4);
getter!(get_i64, i64, get_i64, 8);
getter!(get_f64, f64, get_f64, 8);

/// Reads a boolean (any non-zero byte is true, as in Kafka).
pub fn get_bool(buf: &mut Bytes) -> Result<bool, DecodeError> {
    Ok(get_i8(buf)? != 0)
}

/// Reads a 16-byte UUID.
pub fn get_uuid(buf: &mut Bytes) -> Result<Uuid, DecodeError> {
    need(buf, 16)?;
    let mut u = [0u8; 16];
    buf.copy_to_slice(&mut u);
    Ok(Uuid(u))
}

/// Reads an unsigned varint of at most 5 bytes (32 bits).
pub fn get_uvarint(buf: &mut Bytes) -> Result<u32, DecodeError> {
    let mut v: u32 = 0;
    for i in 0..5 {
        need(buf, 1)?;
        let b = buf.get_u8();
        if i == 4 && b > 0x0f {
            return Err(DecodeError::VarintOverflow);
        }
        v |= u32::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(DecodeError::VarintOverflow)
}

/// Reads a length prefix: `None` for null, else a length not yet checked
/// against the remaining bytes.
fn get_len(buf: &mut Bytes, flexible: bool, short: bool) -> Result<Option<usize>, DecodeError> {
    if flexible {
        let n = get_uvarint(buf)?;
        Ok(n.checked_sub(1).map(|n| n as usize))
    } else {
        let n = if short {
            i32::from(get_i16(buf)?)
        } else {
            get_i32(buf)?
        };
        match n {
            -1 => Ok(None),
            n if n < -1 => Err(DecodeError::NegativeLength(n)),
            n => Ok(Some(n as usize)),
        }
    }
}

fn take(buf: &mut Bytes, n: usize) -> Result<Bytes, DecodeError> {
    need(buf, n)?;
    Ok(buf.split_to(n))
}

fn utf8(b: Bytes, field: &'static str) -> Result<String, DecodeError> {
    String::from_utf8(b.to_vec()).map_err(|_| DecodeError::InvalidUtf8(field))
}

/// Reads a non-null string.
pub fn get_string(
    buf: &mut Bytes,
    flexible: bool,
    field: &'static str,
) -> Result<String, DecodeError> {
    match get_len(buf, flexible, true)? {
        None => Err(DecodeError::UnexpectedNull(field)),
        Some(n) => utf8(take(buf, n)?, field),
    }
}

/// Reads a nullable string; null where the version does not allow it is an error.
pub fn get_nullable_string(
    buf: &mut Bytes,
    flexible: bool,
    nullable: bool,
    field: &'static str,
) -> Result<Option<String>, DecodeError> {
    match get_len(buf, flexible, true)? {
        None if nullable => Ok(None),
        None => Err(DecodeError::UnexpectedNull(field)),
        Some(n) => Ok(Some(utf8(take(buf, n)?, field)?)),
    }
}

/// Reads non-null bytes as a zero-copy slice of the frame.
pub fn get_bytes(
    buf: &mut Bytes,
    flexible: bool,
    field: &'static str,
) -> Result<Bytes, DecodeError> {
    match get_len(buf, flexible, false)? {
        None => Err(DecodeError::UnexpectedNull(field)),
        Some(n) => take(buf, n),
    }
}

/// Reads nullable bytes (also `records`) as a zero-copy slice of the frame.
pub fn get_nullable_bytes(
    buf: &mut Bytes,
    flexible: bool,
    nullable: bool,
    field: &'static str,
) -> Result<Option<Bytes>, DecodeError> {
    match get_len(buf, flexible, false)? {
        None if nullable => Ok(None),
        None => Err(DecodeError::UnexpectedNull(field)),
        Some(n) => Ok(Some(take(buf, n)?)),
    }
}

/// Reads an array count and checks that `count × min_element_bytes` bytes
/// remain before the caller allocates anything. `None` is a null array.
pub fn get_array_len(
    buf: &mut Bytes,
    flexible: bool,
    min_element_bytes: usize,
    field: &'static str,
) -> Result<Option<usize>, DecodeError> {
    let Some(n) = get_len(buf, flexible, false)? else {
        return Ok(None);
    };
    let needed = n.saturating_mul(min_element_bytes.max(1));
    if needed > buf.remaining() {
        return Err(DecodeError::ArrayTooLong {
            field,
            count: n,
            remaining: buf.remaining(),
        });
    }
    Ok(Some(n))
}

/// Initial capacity for a decoded array of `count` elements of `T`
/// (at most [`ARRAY_PREALLOC_BYTES_MAX`] bytes).
pub fn prealloc_len<T>(count: usize) -> usize {
    count.min(ARRAY_PREALLOC_BYTES_MAX / std::mem::size_of::<T>().max(1))
}

/// Reads the number of tagged fields, bounded by the bytes that remain.
pub fn get_tag_count(buf: &mut Bytes) -> Result<usize, DecodeError> {
    let n = get_uvarint(buf)? as usize;
    if n.saturating_mul(TAGGED_FIELD_MIN_BYTES) > buf.remaining() {
        return Err(DecodeError::ArrayTooLong {
            field: "tagged fields",
            count: n,
            remaining: buf.remaining(),
        });
    }
    Ok(n)
}

/// Reads one tagged field: its tag and its payload (a zero-copy slice).
pub fn get_tagged_field(buf: &mut Bytes) -> Result<(u32, Bytes), DecodeError> {
    let tag = get_uvarint(buf)?;
    let size = get_uvarint(buf)? as usize;
    Ok((tag, take(buf, size)?))
}
