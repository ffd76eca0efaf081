//! WAL recovery over damaged rings: a real WAL file holding known records is damaged as the
//! input says (bytes overwritten, flipped, a tail torn off) and opened again. Recovery must
//! return an error or a prefix of the records written, in order and intact, never a panic,
//! a record that was not written, or a record with other bytes.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::mpsc;

use libfuzzer_sys::fuzz_target;
use sluice_wal::format::{BLOCK_SIZE, RING_OFFSET};
use sluice_wal::{RecoveredRecord, Wal, WalConfig};

/// A small ring so that a damage lands on records often; 16 blocks.
const CAPACITY_BYTES: u64 = 16 * BLOCK_SIZE;
/// Records written into the pristine WAL: (stream id, first offset, last offset, payload).
fn written() -> Vec<(u64, u64, u64, Vec<u8>)> {
    (0..12u64)
        .map(|i| {
            let len = [10usize, 100, 1000, 3000, 4033, 64][i as usize % 6];
            let payload = (0..len).map(|b| (b as u64 * 31 + i) as u8).collect();
            (i % 3, i * 10, i * 10 + 9, payload)
        })
        .collect()
}

/// One glommio executor for the whole fuzzing run (building one per input would dominate).
struct Recoverer {
    inputs: mpsc::SyncSender<Vec<u8>>,
    outputs: std::sync::Mutex<mpsc::Receiver<Result<Vec<RecoveredRecord>, String>>>,
}

fn recoverer() -> &'static Recoverer {
    static RECOVERER: OnceLock<Recoverer> = OnceLock::new();
    RECOVERER.get_or_init(|| {
        let (inputs, input_rx) = mpsc::sync_channel::<Vec<u8>>(0);
        let (output_tx, outputs) = mpsc::sync_channel(0);
        std::thread::spawn(move || {
            let executor = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
                .make()
                .expect("glommio executor");
            executor.run(async move {
                // tmpfs: no disk wear, and O_DIRECT works there on this kernel.
                let dir = PathBuf::from(format!("/dev/shm/sluice-fuzz-wal-{}", std::process::id()));
                let _ = std::fs::remove_dir_all(&dir);
                std::fs::create_dir_all(&dir).expect("scratch dir");
                let pristine = dir.join("pristine");
                write_pristine(&pristine).await;
                let pristine_bytes = std::fs::read(&pristine).expect("read pristine");
                let damaged = dir.join("damaged");
                while let Ok(input) = input_rx.recv() {
                    let bytes = damage(&pristine_bytes, &input);
                    std::fs::write(&damaged, &bytes).expect("write damaged");
                    let result = Wal::open(config(&damaged))
                        .await
                        .map_err(|e| e.to_string());
                    let result = match result {
                        Ok((wal, records)) => {
                            wal.close().await.expect("close");
                            Ok(records)
                        }
                        Err(e) => Err(e),
                    };
                    if output_tx.send(result).is_err() {
                        break;
                    }
                }
            });
        });
        Recoverer {
            inputs,
            outputs: std::sync::Mutex::new(outputs),
        }
    })
}

fn config(path: &Path) -> WalConfig {
    let mut config = WalConfig::new(path, CAPACITY_BYTES);
    config.group_commit_bytes_max = 2 * BLOCK_SIZE;
    config
}

async fn write_pristine(path: &Path) {
    let (wal, _) = Wal::open(config(path)).await.expect("create pristine WAL");
    let mut end = None;
    for (stream, first, last, payload) in written() {
        end = Some(wal.append(stream, first, last, &payload).await.expect("append"));
    }
    if let Some(end) = end {
        wal.wait_durable(end).await.expect("durable");
    }
    wal.close().await.expect("close");
}

/// Applies the input to a copy of the pristine file. The input is a list of 4-byte commands:
/// [op, a, b, c]: op % 4 == 0 overwrites the byte at position (a,b) in the ring with c, 1
/// flips bit c % 8 there, 2 tears the file at that position (zeroing from there to the end of
/// its block, as a torn write does), 3 overwrites a header byte with c.
fn damage(pristine: &[u8], input: &[u8]) -> Vec<u8> {
    let mut bytes = pristine.to_vec();
    let ring = RING_OFFSET as usize..bytes.len();
    for command in input.chunks_exact(4) {
        let [op, a, b, c] = [command[0], command[1], command[2], command[3]];
        let spot = usize::from(u16::from_le_bytes([a, b]));
        match op % 4 {
            0 => bytes[ring.start + spot * 3 % ring.len()] = c,
            1 => bytes[ring.start + spot * 3 % ring.len()] ^= 1 << (c % 8),
            2 => {
                let at = ring.start + spot * 3 % ring.len();
                let block_end = ((at / BLOCK_SIZE as usize + 1) * BLOCK_SIZE as usize).min(ring.end);
                bytes[at..block_end].fill(0);
            }
            _ => bytes[spot % RING_OFFSET as usize] = c,
        }
    }
    bytes
}

fuzz_target!(|input: &[u8]| {
    let recoverer = recoverer();
    recoverer.inputs.send(input.to_vec()).expect("recoverer alive");
    let result = recoverer
        .outputs
        .lock()
        .expect("one fuzzing thread")
        .recv()
        .expect("recoverer answers");
    let Ok(records) = result else {
        return; // A damaged header is refused with an error: fine.
    };
    let written = written();
    assert!(records.len() <= written.len(), "more records than written");
    for (got, (stream, first, last, payload)) in records.iter().zip(&written) {
        assert_eq!(
            (got.stream_id, got.first_offset, got.last_offset),
            (*stream, *first, *last),
            "a recovered record that was not written there"
        );
        assert_eq!(&got.payload[..], &payload[..], "a recovered record with other bytes");
    }
});
