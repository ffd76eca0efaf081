//! The one error type of the object store.

/// Why an object store operation failed. `Clone` (messages, not sources) so
/// one failed block fetch can be handed to every reader waiting for it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ObjectStoreError {
    /// The key does not exist.
    #[error("object {key} not found")]
    NotFound { key: String },
    /// A conditional create (`put_if_absent`) found the key taken.
    #[error("object {key} already exists")]
    AlreadyExists { key: String },
    /// The store did not answer, answered "slow down" / 5xx, or timed out:
    /// worth retrying.
    #[error("object store unavailable ({operation} {key}): {message}")]
    Unavailable {
        operation: &'static str,
        key: String,
        message: String,
    },
    /// A key we refuse (empty, absolute, `..`, hidden component, too long).
    #[error("invalid object key {key:?}: {reason}")]
    InvalidKey { key: String, reason: &'static str },
    /// A byte range outside the object.
    #[error("range {start}..{end} outside object {key} of {size} bytes")]
    InvalidRange {
        key: String,
        start: u64,
        end: u64,
        size: u64,
    },
    /// An object that does not parse (bad footer, checksum mismatch).
    #[error("object {key} is corrupt: {reason}")]
    Corrupt { key: String, reason: String },
    /// Anything else (permissions, a full disk, a refused request).
    #[error("object store error ({operation} {key}): {message}")]
    Other {
        operation: &'static str,
        key: String,
        message: String,
    },
}

impl ObjectStoreError {
    /// True for errors a retry may cure (`Unavailable`).
    pub fn is_retriable(&self) -> bool {
        matches!(self, ObjectStoreError::Unavailable { .. })
    }

    pub(crate) fn corrupt(key: &str, reason: impl Into<String>) -> ObjectStoreError {
        ObjectStoreError::Corrupt {
            key: key.to_string(),
            reason: reason.into(),
        }
    }

    /// Maps an I/O error of the local backend.
    pub(crate) fn io(operation: &'static str, key: &str, e: std::io::Error) -> ObjectStoreError {
        use std::io::ErrorKind;
        let key = key.to_string();
        match e.kind() {
            ErrorKind::NotFound => ObjectStoreError::NotFound { key },
            ErrorKind::AlreadyExists => ObjectStoreError::AlreadyExists { key },
            ErrorKind::Interrupted | ErrorKind::TimedOut | ErrorKind::WouldBlock => {
                ObjectStoreError::Unavailable {
                    operation,
                    key,
                    message: e.to_string(),
                }
            }
            _ => ObjectStoreError::Other {
                operation,
                key,
                message: e.to_string(),
            },
        }
    }
}

/// The bytes of an object of `size` that a get of `range` (None: all) reads: the end clamped to
/// the size; a start at or beyond the size of a non-empty range is `InvalidRange`, as S3 answers.
pub(crate) fn object_range(
    key: &str,
    range: Option<std::ops::Range<u64>>,
    size: u64,
) -> Result<std::ops::Range<u64>, ObjectStoreError> {
    let std::ops::Range { start, end } = range.unwrap_or(0..size);
    if start >= size && start < end {
        return Err(ObjectStoreError::InvalidRange {
            key: key.to_string(),
            start,
            end,
            size,
        });
    }
    let end = end.min(size);
    Ok(start.min(end)..end)
}
