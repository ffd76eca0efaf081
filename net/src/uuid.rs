//! Kafka's `uuid` wire type.

use std::fmt;

/// A 16-byte UUID as Kafka sends it (topic ids, etc.). `Default` is all zeros.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Uuid(pub [u8; 16]);

impl Uuid {
    /// The all-zero UUID Kafka uses for "no id".
    pub const ZERO: Uuid = Uuid([0; 16]);
}

impl fmt::Debug for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}
