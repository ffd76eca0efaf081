//! The on-disk format: header blocks and record headers (see README.md for the byte diagram).
//!
//! Pure encode / decode functions: no I/O here, so they are easy to test and to
//! assert on both sides of the disk boundary.

/// Every write, every header copy and the ring itself are aligned to this.
pub const BLOCK_SIZE: u64 = 4096;
/// Two header copies (slot 0 and slot 1) precede the ring.
pub const HEADER_SLOTS: u64 = 2;
/// Byte offset of the ring's first block in the file / device.
pub const RING_OFFSET: u64 = HEADER_SLOTS * BLOCK_SIZE;
/// Version of the layout described in README.md.
pub const FORMAT_VERSION: u32 = 1;
/// "SLUICEWH": identifies a Sluice WAL header block.
pub const HEADER_MAGIC: u64 = u64::from_le_bytes(*b"SLUICEWH");
/// "SLWR": identifies a record header.
pub const RECORD_MAGIC: u32 = u32::from_le_bytes(*b"SLWR");
/// Size of the encoded header fields (the rest of the block is zero).
pub const HEADER_ENCODED_SIZE: usize = 64;
/// Size of a record header; the payload follows it directly.
pub const RECORD_HEADER_SIZE: u64 = 64;

/// A data record, returned by recovery.
pub const RECORD_KIND_DATA: u8 = 1;
/// Filler from the end of a write's last record to the next block boundary.
pub const RECORD_KIND_PADDING: u8 = 2;

/// The fields of one header copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub capacity_bytes: u64,
    pub epoch: u64,
    pub node_id: u32,
    /// Bumped by every open; records carry the generation that wrote them.
    pub generation: u32,
    pub trim_position: u64,
    /// Bumped by every header write; the valid copy with the highest wins.
    pub sequence: u64,
}

impl Header {
    /// Slot (0 or 1) this header copy is written to: copies alternate, so the
    /// previous valid copy survives a torn write of the new one.
    pub fn slot(&self) -> u64 {
        self.sequence % HEADER_SLOTS
    }

    pub fn encode(&self, block: &mut [u8]) {
        assert!(block.len() >= HEADER_ENCODED_SIZE);
        block.fill(0);
        block[0..8].copy_from_slice(&HEADER_MAGIC.to_le_bytes());
        block[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        block[12..16].copy_from_slice(&(BLOCK_SIZE as u32).to_le_bytes());
        block[16..24].copy_from_slice(&self.capacity_bytes.to_le_bytes());
        block[24..32].copy_from_slice(&self.epoch.to_le_bytes());
        block[32..36].copy_from_slice(&self.node_id.to_le_bytes());
        block[36..40].copy_from_slice(&self.generation.to_le_bytes());
        block[40..48].copy_from_slice(&self.trim_position.to_le_bytes());
        block[48..56].copy_from_slice(&self.sequence.to_le_bytes());
        let crc = crc32c::crc32c(&block[0..56]);
        block[56..60].copy_from_slice(&crc.to_le_bytes());
    }

    /// Decodes one header copy; `None` if it is not a valid header of this format.
    pub fn decode(block: &[u8]) -> Option<Header> {
        if block.len() < HEADER_ENCODED_SIZE {
            return None;
        }
        if le_u64(block, 0) != HEADER_MAGIC || le_u32(block, 56) != crc32c::crc32c(&block[0..56]) {
            return None;
        }
        if le_u32(block, 8) != FORMAT_VERSION || u64::from(le_u32(block, 12)) != BLOCK_SIZE {
            return None;
        }
        let header = Header {
            capacity_bytes: le_u64(block, 16),
            epoch: le_u64(block, 24),
            node_id: le_u32(block, 32),
            generation: le_u32(block, 36),
            trim_position: le_u64(block, 40),
            sequence: le_u64(block, 48),
        };
        if header.capacity_bytes == 0 || !header.capacity_bytes.is_multiple_of(BLOCK_SIZE) {
            return None;
        }
        Some(header)
    }
}

/// Reads both header copies (`blocks` = the first two blocks of the file) and
/// returns the valid copy with the highest sequence.
pub fn newest_header(blocks: &[u8]) -> Option<Header> {
    assert!(blocks.len() as u64 >= RING_OFFSET);
    let first = Header::decode(&blocks[0..BLOCK_SIZE as usize]);
    let second = Header::decode(&blocks[BLOCK_SIZE as usize..RING_OFFSET as usize]);
    match (first, second) {
        (Some(a), Some(b)) => Some(if a.sequence >= b.sequence { a } else { b }),
        (a, b) => a.or(b),
    }
}

/// The fields of a record header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordHeader {
    pub kind: u8,
    /// Logical (unwrapped) position of this header: a record left over from
    /// an earlier lap of the ring never matches the position it is found at.
    pub position: u64,
    pub stream_id: u64,
    pub first_offset: u64,
    pub last_offset: u64,
    pub payload_len: u32,
    pub generation: u32,
    /// CRC32C of the payload (0 for padding, whose payload is not checked).
    pub payload_crc: u32,
}

impl RecordHeader {
    pub fn record_len(&self) -> u64 {
        RECORD_HEADER_SIZE + u64::from(self.payload_len)
    }

    pub fn encode(&self, out: &mut [u8]) {
        let out = &mut out[..RECORD_HEADER_SIZE as usize];
        out[0..4].copy_from_slice(&RECORD_MAGIC.to_le_bytes());
        out[4] = self.kind;
        out[5..8].fill(0);
        out[8..12].fill(0); // header CRC, computed with this field zeroed
        out[12..16].copy_from_slice(&self.payload_crc.to_le_bytes());
        out[16..24].copy_from_slice(&self.position.to_le_bytes());
        out[24..32].copy_from_slice(&self.stream_id.to_le_bytes());
        out[32..40].copy_from_slice(&self.first_offset.to_le_bytes());
        out[40..48].copy_from_slice(&self.last_offset.to_le_bytes());
        out[48..52].copy_from_slice(&self.payload_len.to_le_bytes());
        out[52..56].copy_from_slice(&self.generation.to_le_bytes());
        out[56..64].fill(0);
        let crc = crc32c::crc32c(out);
        out[8..12].copy_from_slice(&crc.to_le_bytes());
    }

    /// Decodes a record header, checking its magic and header CRC (not the payload).
    pub fn decode(bytes: &[u8]) -> Option<RecordHeader> {
        let bytes = bytes.get(..RECORD_HEADER_SIZE as usize)?;
        if le_u32(bytes, 0) != RECORD_MAGIC {
            return None;
        }
        let mut copy = [0u8; RECORD_HEADER_SIZE as usize];
        copy.copy_from_slice(bytes);
        copy[8..12].fill(0);
        if crc32c::crc32c(&copy) != le_u32(bytes, 8) {
            return None;
        }
        let kind = bytes[4];
        if kind != RECORD_KIND_DATA && kind != RECORD_KIND_PADDING {
            return None;
        }
        Some(RecordHeader {
            kind,
            payload_crc: le_u32(bytes, 12),
            position: le_u64(bytes, 16),
            stream_id: le_u64(bytes, 24),
            first_offset: le_u64(bytes, 32),
            last_offset: le_u64(bytes, 40),
            payload_len: le_u32(bytes, 48),
            generation: le_u32(bytes, 52),
        })
    }
}

/// Length of a write holding `len` bytes of records once padded to a block
/// boundary. A padding record needs room for its header, so a gap smaller
/// than a record header is extended by one more block.
pub fn padded_len(len: u64) -> u64 {
    let rem = len % BLOCK_SIZE;
    if rem == 0 {
        return len;
    }
    let gap = BLOCK_SIZE - rem;
    if gap >= RECORD_HEADER_SIZE {
        len + gap
    } else {
        len + gap + BLOCK_SIZE
    }
}

pub fn align_down(value: u64) -> u64 {
    value - value % BLOCK_SIZE
}

pub fn align_up(value: u64) -> u64 {
    align_down(value + BLOCK_SIZE - 1)
}

fn le_u32(bytes: &[u8], at: usize) -> u32 {
    let mut raw = [0u8; 4];
    raw.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(raw)
}

fn le_u64(bytes: &[u8], at: usize) -> u64 {
    let mut raw = [0u8; 8];
    raw.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_corruption() {
        let header = Header {
            capacity_bytes: 1 << 20,
            epoch: 7,
            node_id: 3,
            generation: 9,
            trim_position: 12345,
            sequence: 42,
        };
        let mut block = vec![0u8; BLOCK_SIZE as usize];
        header.encode(&mut block);
        assert_eq!(Header::decode(&block), Some(header));
        block[20] ^= 1;
        assert_eq!(Header::decode(&block), None);
    }

    #[test]
    fn record_header_round_trip_and_corruption() {
        let header = RecordHeader {
            kind: RECORD_KIND_DATA,
            position: 8192,
            stream_id: 5,
            first_offset: 10,
            last_offset: 19,
            payload_len: 1000,
            generation: 2,
            payload_crc: 0xdead_beef,
        };
        let mut bytes = [0u8; 64];
        header.encode(&mut bytes);
        assert_eq!(RecordHeader::decode(&bytes), Some(header));
        bytes[30] ^= 0x10;
        assert_eq!(RecordHeader::decode(&bytes), None);
    }

    #[test]
    fn padding_leaves_room_for_a_padding_header() {
        assert_eq!(padded_len(0), 0);
        assert_eq!(padded_len(4096), 4096);
        assert_eq!(padded_len(1), 4096);
        assert_eq!(padded_len(4096 - 64), 4096);
        assert_eq!(padded_len(4096 - 63), 8192);
    }
}
