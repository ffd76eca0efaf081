//! Splitting a `records` field into batches without copying.
//!
//! Helpers: `batches` (strict: a truncated tail is an error, as for produce
//! requests), `batches_allow_partial` (Kafka's fetch-response behaviour: a
//! trailing partial batch ends the iteration and is reported by
//! `BatchIter::partial_tail_bytes`).

use bytes::Bytes;

use super::{BATCH_HEADER_BYTES, BatchError, LOG_OVERHEAD_BYTES};

/// Iterator over the batches of a `records` field; yields each batch as a
/// `Bytes` slice of the input (header checks via `RecordBatchHeader`).
#[derive(Debug, Clone)]
pub struct BatchIter {
    rest: Bytes,
    allow_partial: bool,
    partial_tail_bytes: usize,
    failed: bool,
}

/// Iterates over the batches in `records`; a truncated last batch is an error.
pub fn batches(records: &Bytes) -> BatchIter {
    BatchIter {
        rest: records.clone(),
        allow_partial: false,
        partial_tail_bytes: 0,
        failed: false,
    }
}

/// Iterates over the batches in `records`; a truncated last batch (as at the
/// end of a fetch response cut by `max_bytes`) ends the iteration silently.
pub fn batches_allow_partial(records: &Bytes) -> BatchIter {
    BatchIter {
        rest: records.clone(),
        allow_partial: true,
        partial_tail_bytes: 0,
        failed: false,
    }
}

impl BatchIter {
    /// Bytes of the trailing partial batch that was skipped (allow-partial mode).
    pub fn partial_tail_bytes(&self) -> usize {
        self.partial_tail_bytes
    }
}

impl Iterator for BatchIter {
    type Item = Result<Bytes, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.rest.is_empty() {
            return None;
        }
        let remaining = self.rest.len();
        let total = if remaining < LOG_OVERHEAD_BYTES {
            None
        } else {
            let declared =
                i32::from_be_bytes([self.rest[8], self.rest[9], self.rest[10], self.rest[11]]);
            if (declared as i64) < (BATCH_HEADER_BYTES - LOG_OVERHEAD_BYTES) as i64 {
                self.failed = true;
                return Some(Err(BatchError::BatchLengthTooSmall(declared)));
            }
            Some(LOG_OVERHEAD_BYTES + declared as usize)
        };
        match total {
            Some(total) if total <= remaining => Some(Ok(self.rest.split_to(total))),
            _ if self.allow_partial => {
                self.partial_tail_bytes = remaining;
                self.rest = Bytes::new();
                None
            }
            total => {
                self.failed = true;
                let needed = total.unwrap_or(LOG_OVERHEAD_BYTES);
                Some(Err(BatchError::Truncated { needed, remaining }))
            }
        }
    }
}
