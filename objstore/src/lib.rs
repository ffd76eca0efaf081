//! Object storage: one trait, local-directory and S3 backends, Stream Set Objects, compaction, block cache.
