//! Cluster metadata: topics, partitions, configs, placement, producer ids; durable log + snapshot.
