//! The supported APIs: [`ApiKey`], the [`Request`] / [`Response`] enums (one
//! variant per API) and [`supported_apis`] for ApiVersions. Generated from
//! net/schema by build.rs.

#[allow(clippy::all, unused_parens)]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/apis.rs"));
}

pub use generated::{ApiKey, Request, Response, SUPPORTED_APIS};

/// `(api key, min version, max version)` of every API Sluice advertises in ApiVersions.
pub fn supported_apis() -> &'static [(ApiKey, i16, i16)] {
    SUPPORTED_APIS
}
