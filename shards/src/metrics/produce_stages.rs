//! Where a produce's time goes: one latency histogram per stage of its path (ARCHITECTURE.md,
//! "A produce, file by file"), so that a tail in `sluice_request_latency_seconds` can be traced
//! to the stage it comes from, as Kafka's RequestMetrics split a request's time.
//!
//! Each stage is recorded on the shard where it ends, from two instants taken on that shard:
//! `read`, `parse` and `respond` on the connection's shard, once per request; `order`,
//! `wal_write` and `sync` on the partition's owner, once per partition's batch. The hop
//! between them (the mesh queue) is in no stage.

use std::time::Duration;

use super::histogram::{HistogramSnapshot, LatencyHistogram};

/// A stage of a produce request, in the order a request goes through them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProduceStage {
    /// Reading the request frame off the socket: from its length known until the whole frame
    /// is in memory, waits for request memory and for a pool chunk included.
    Read,
    /// Decoding the request and validating its batches, until every partition's batch is
    /// queued for its owner shard.
    Parse,
    /// On the owner, from the router taking the batch until it had its turn in the
    /// partition's order and its pool chunk (waits for a task permit, for the batches before
    /// it and for memory included).
    Order,
    /// From the batch handed to the shard's WAL until the block write holding it completed
    /// (waits for WAL space and for the in-flight window included).
    WalWrite,
    /// From that write's completion until it is durable (the fdatasync covering it done).
    Sync,
    /// From the response ready (every partition durable, or the timeout) until its frame was
    /// written to the socket, behind the connection's earlier responses. acks=0 has none.
    Respond,
}

/// Stages in the order of [`ProduceStage::ALL`].
const STAGES: usize = 6;

// A stage's histogram is at its discriminant: `ALL` must list them in that order.
const _: () = {
    let mut i = 0;
    while i < STAGES {
        assert!(ProduceStage::ALL[i] as usize == i);
        i += 1;
    }
};

impl ProduceStage {
    /// Every stage, in path order.
    pub const ALL: [ProduceStage; STAGES] = [
        ProduceStage::Read,
        ProduceStage::Parse,
        ProduceStage::Order,
        ProduceStage::WalWrite,
        ProduceStage::Sync,
        ProduceStage::Respond,
    ];

    /// The stage's `stage` label.
    pub fn name(self) -> &'static str {
        match self {
            ProduceStage::Read => "read",
            ProduceStage::Parse => "parse",
            ProduceStage::Order => "order",
            ProduceStage::WalWrite => "wal_write",
            ProduceStage::Sync => "sync",
            ProduceStage::Respond => "respond",
        }
    }
}

/// One latency histogram per stage, written by one shard thread (see `LatencyHistogram`).
#[derive(Debug, Default)]
pub struct ProduceStages {
    histograms: [LatencyHistogram; STAGES],
}

impl ProduceStages {
    /// Records one pass through `stage` that took `latency`.
    pub fn record(&self, stage: ProduceStage, latency: Duration) {
        self.histograms[stage as usize].record(latency);
    }

    /// The observations of `stage` so far.
    pub fn snapshot(&self, stage: ProduceStage) -> HistogramSnapshot {
        self.histograms[stage as usize].snapshot()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_stage_has_its_own_histogram_and_label() {
        let stages = ProduceStages::default();
        stages.record(ProduceStage::Sync, Duration::from_micros(100));
        stages.record(ProduceStage::Sync, Duration::from_micros(300));
        stages.record(ProduceStage::Respond, Duration::from_micros(5));
        for stage in ProduceStage::ALL {
            let expected = match stage {
                ProduceStage::Sync => 2,
                ProduceStage::Respond => 1,
                _ => 0,
            };
            assert_eq!(stages.snapshot(stage).count(), expected, "{stage:?}");
        }
        assert_eq!(stages.snapshot(ProduceStage::Sync).sum_us, 400);
        let names: Vec<&str> = ProduceStage::ALL.iter().map(|s| s.name()).collect();
        assert_eq!(
            names,
            ["read", "parse", "order", "wal_write", "sync", "respond"]
        );
    }
}
