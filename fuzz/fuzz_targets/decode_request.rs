//! Arbitrary bytes as a request frame (after the size prefix): must return
//! Ok or a typed error, never panic or abort. Also re-encodes what decodes.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = sluice_net::frame_length(
        [data.first().copied().unwrap_or(0), 0, 0, 1],
        sluice_net::DEFAULT_MAX_FRAME_BYTES,
    );
    if let Ok((header, request)) = sluice_net::decode_request(Bytes::copy_from_slice(data)) {
        let mut out = BytesMut::new();
        sluice_net::encode_request(&header, &request, &mut out)
            .expect("re-encode a decoded request");
        let (h2, r2) =
            sluice_net::decode_request(out.freeze().slice(4..)).expect("decode re-encoded");
        assert_eq!((h2, r2), (header, request));
    }
});
