//! The broker runtime: one pinned glommio executor per core, partitions, produce and fetch.
