//! Object storage: one trait, local-directory and S3 backends, Stream Set
//! Objects, upload, compaction, retention, block cache for cold reads.
//! See `README.md` for the object format and how the broker uses it.

mod error;
pub mod format;
pub mod limits;
mod local;
mod s3;
mod stats;
mod store;

pub use error::ObjectStoreError;
pub use s3::{S3Config, S3Credentials};
pub use stats::{LATENCY_BUCKETS, Stats, StatsSnapshot};
pub use store::{
    BoxFuture, ObjectBackend, ObjectMeta, ObjectStore, ObjectStoreConfig, RetryPolicy, validate_key,
};
