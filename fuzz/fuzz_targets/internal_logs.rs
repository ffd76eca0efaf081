//! Arbitrary bytes as the payloads the broker reads back from its own internal streams at
//! start-up (group offsets and members, transaction state, transaction indexes): a damaged
//! or foreign payload must be an error, never a panic or an allocation sized by the input.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [which, rest @ ..] = data else {
        return;
    };
    let payload = Bytes::copy_from_slice(rest);
    match which % 4 {
        0 => drop(sluice_shards::group::log::decode(payload)),
        1 => drop(sluice_shards::txn::log::decode(payload)),
        2 => drop(sluice_shards::txn::partition_index::TxnIndexEntry::decode(payload)),
        _ => {
            let mut payload = payload;
            drop(sluice_shards::log_codec::get_committed(&mut payload));
        }
    }
});
