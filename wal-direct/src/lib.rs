//! The Delta WAL: O_DIRECT appends to a bounded ring with group commit and crash recovery.
