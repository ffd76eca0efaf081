//! Object storage: one trait, local-directory and S3 backends, Stream Set
//! Objects, upload, compaction, retention, block cache for cold reads.
//! See `README.md` for the object format and how the broker uses it.

mod cache;
mod cleaner;
mod compaction;
mod error;
pub mod format;
pub mod io_pacer;
pub mod limits;
mod local;
#[cfg(feature = "sim")]
mod memory;
mod registry;
mod s3;
mod spare_buffer;
mod stats;
mod store;
mod uploader;

pub use cache::{BlockCache, ColdRead, ColdReader};
pub use cleaner::{CleanerConfig, CleaningReport, LogCleaner, streams_to_clean};
pub use compaction::{
    CompactionConfig, CompactionError, CompactionPlan, CompactionReport, Compactor, dead_objects,
    deletable_objects, falling_behind, orphans, parse_object_key, plan_step,
};
pub use error::ObjectStoreError;
#[cfg(feature = "sim")]
pub use memory::{MemoryBackend, MemoryBackendBug, MemoryBackendConfig};
pub use registry::{Registry, RegistryError, StoreRegistry};
pub use s3::{S3Config, S3Credentials};
pub use stats::{LATENCY_BUCKETS, Stats, StatsSnapshot};
pub use store::{
    BoxFuture, ObjectBackend, ObjectMeta, ObjectStore, ObjectStoreConfig, RetryPolicy, validate_key,
};
pub use uploader::{
    AppendedRecord, SealedUpload, StreamRoll, UploadError, UploadReport, Uploader, UploaderConfig,
    object_key,
};
