//! ApiVersions: the APIs and version ranges this broker serves.

use sluice_net::messages::api_versions_response::{ApiVersion, ApiVersionsResponse};
use sluice_net::{ErrorCode, Response};

use super::IMPLEMENTED_APIS;

/// The ranges we serve: the codec's ranges for every API the broker implements.
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
        .filter(|(key, _, _)| IMPLEMENTED_APIS.contains(key))
        .map(|&(key, min_version, max_version)| ApiVersion {
            api_key: key as i16,
            min_version,
            max_version,
        })
        .collect()
}
