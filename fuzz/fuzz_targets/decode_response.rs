//! Arbitrary bytes as a response frame of any API and version (what `sluice perf` and the
//! tests decode from a broker): must return Ok or a typed error, never panic or abort.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [key, version, rest @ ..] = data else {
        return;
    };
    let api_key = i16::from(*key % 80);
    let api_version = i16::from(*version % 20);
    let _ = sluice_net::decode_response(api_key, api_version, Bytes::copy_from_slice(rest));
});
