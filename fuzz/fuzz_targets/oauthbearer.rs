//! Arbitrary bytes as SASL OAUTHBEARER's client initial response and as a JWKS document:
//! each must parse or return an error, never panic; a token that parses is within its bound.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_shards::security::jwks::JwksKeys;
use sluice_shards::security::oauthbearer::{TOKEN_BYTES_MAX, parse_client_initial_response};

fuzz_target!(|data: &[u8]| {
    if let Ok(response) = parse_client_initial_response(data) {
        assert!(!response.token.is_empty() && response.token.len() <= TOKEN_BYTES_MAX);
    }
    let _ = JwksKeys::parse(data);
});
