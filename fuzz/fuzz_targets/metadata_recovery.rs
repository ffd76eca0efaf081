//! Arbitrary bytes as the metadata log or a snapshot of a data dir: opening the store must
//! return an image or an error, never panic or abort. Most inputs are framed first with a
//! valid length and CRC (the formats of metadata/src/log.rs and snapshot.rs) so that the rkyv
//! validation behind the checksums is what gets fuzzed, not only the checksum test.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

fn scratch() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| PathBuf::from(format!("/dev/shm/sluice-fuzz-meta-{}", std::process::id())))
}

/// A log record: `[payload_len u32 LE][crc32c(len ‖ payload) u32 LE][payload]`.
fn log_record(payload: &[u8]) -> Vec<u8> {
    let len = (payload.len() as u32).to_le_bytes();
    let crc = crc32c::crc32c_append(crc32c::crc32c(&len), payload);
    [&len[..], &crc.to_le_bytes(), payload].concat()
}

/// A snapshot: `[b"SLUICEMD"][version u32][crc32c(payload) u32][len u64][payload]`.
fn snapshot(version: u32, payload: &[u8]) -> Vec<u8> {
    [
        &b"SLUICEMD"[..],
        &version.to_le_bytes(),
        &crc32c::crc32c(payload).to_le_bytes(),
        &(payload.len() as u64).to_le_bytes(),
        payload,
    ]
    .concat()
}

fuzz_target!(|data: &[u8]| {
    let [mode, rest @ ..] = data else {
        return;
    };
    let dir = scratch();
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).expect("scratch dir");
    let snapshot_name = format!("snapshot-{:020}.rkyv", 0);
    let (name, bytes) = match mode % 10 {
        0 => ("metadata.log".to_string(), rest.to_vec()),
        // Records split where the input has a 0xFF byte: several entries in one log.
        1 => (
            "metadata.log".to_string(),
            rest.split(|&b| b == 0xFF).flat_map(log_record).collect(),
        ),
        2 => (snapshot_name, rest.to_vec()),
        3 => (snapshot_name, snapshot(1, rest)),
        4 => (snapshot_name, snapshot(2, rest)),
        // Version 3: version 2 and each stream's uploads (producer states, upload times).
        5 => (snapshot_name, snapshot(3, rest)),
        // Version 4: version 3 and the log cleaner's marks.
        6 => (snapshot_name, snapshot(4, rest)),
        // Version 5: version 4 and the brokers registered in a controller quorum.
        7 => (snapshot_name, snapshot(5, rest)),
        // Version 6: version 5 with fencing, partition leaders and the coordinator broker.
        8 => (snapshot_name, snapshot(6, rest)),
        // Version 7: version 6 with the brokers' WALs and their holders.
        _ => (snapshot_name, snapshot(7, rest)),
    };
    std::fs::write(dir.join(name), bytes).expect("write");
    let _ = sluice_metadata::MetadataStore::open(dir, 0);
});
