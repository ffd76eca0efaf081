//! ApiVersions: the APIs and version ranges this broker serves.

use sluice_net::messages::api_versions_response::{ApiVersion, ApiVersionsResponse};
use sluice_net::{ErrorCode, Response};

use super::implemented::served_versions;

/// The ranges we serve (`implemented.rs`).
pub fn handle() -> ApiVersionsResponse {
    ApiVersionsResponse {
        error_code: 0,
        api_keys: advertised(),
        ..Default::default()
    }
}

/// The v0 answer to a too-new ApiVersions request: UNSUPPORTED_VERSION plus our ranges, so the
/// client can retry with a version we know (KIP-511).
pub fn unsupported_version_response() -> Response {
    Response::ApiVersions(ApiVersionsResponse {
        error_code: ErrorCode::UnsupportedVersion.code(),
        api_keys: advertised(),
        ..Default::default()
    })
}

fn advertised() -> Vec<ApiVersion> {
    sluice_net::supported_apis()
        .iter()
        .filter_map(|&(key, _, _)| {
            let (min_version, max_version) = served_versions(key)?;
            Some(ApiVersion {
                api_key: key as i16,
                min_version,
                max_version,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::IMPLEMENTED_APIS;

    #[test]
    fn exactly_the_implemented_apis_are_advertised() {
        let advertised: Vec<i16> = handle().api_keys.iter().map(|k| k.api_key).collect();
        let implemented: Vec<i16> = IMPLEMENTED_APIS.iter().map(|k| *k as i16).collect();
        assert_eq!(advertised.len(), implemented.len());
        assert!(implemented.iter().all(|k| advertised.contains(k)));
        let Response::ApiVersions(old) = unsupported_version_response() else {
            unreachable!("an ApiVersions response");
        };
        assert_eq!(old.error_code, ErrorCode::UnsupportedVersion.code());
        assert_eq!(old.api_keys.len(), advertised.len());
    }
}
