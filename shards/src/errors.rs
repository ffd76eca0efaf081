//! Mapping of internal errors to the Kafka error codes clients understand.

use sluice_net::ErrorCode;

use crate::controller::ControllerError;

/// The Kafka error code a client gets when a metadata command fails.
pub fn controller_error_code(error: &ControllerError) -> ErrorCode {
    match error {
        ControllerError::Metadata(e) => metadata_error_code(e),
        ControllerError::Stopped => ErrorCode::BrokerNotAvailable,
    }
}

/// The Kafka error code of a metadata validation or store error.
pub fn metadata_error_code(error: &sluice_metadata::MetadataError) -> ErrorCode {
    ErrorCode::from_i16(error.kafka_error_code()).unwrap_or(ErrorCode::UnknownServerError)
}

/// The message Kafka puts beside an error code: our error's own text.
pub fn controller_error_message(error: &ControllerError) -> String {
    error.to_string()
}
