//! Mapping of internal errors to the Kafka error codes clients understand.

use sluice_net::ErrorCode;

use crate::controller::ControllerError;

/// The Kafka error code a client gets when a metadata command fails.
pub fn controller_error_code(error: &ControllerError) -> ErrorCode {
    match error {
        ControllerError::Metadata(e) => {
            ErrorCode::from_i16(e.kafka_error_code()).unwrap_or(ErrorCode::UnknownServerError)
        }
        ControllerError::Stopped => ErrorCode::BrokerNotAvailable,
    }
}

/// The message Kafka puts beside an error code: our error's own text.
pub fn controller_error_message(error: &ControllerError) -> String {
    error.to_string()
}
