//! OpenMessaging Benchmark workload files (`workloads/*.yaml`), read unchanged.
//!
//! Fields Sluice does not use (e.g. `useRandomizedPayloads`) are accepted and
//! ignored, as OMB's own reader ignores unknown ones; missing fields take OMB's
//! defaults. Helpers: `Workload::from_file`, `Workload::check`,
//! `Workload::load_payload`.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Deserialize;

/// Most producers or consumers one run starts (each producer is a thread).
pub const CLIENTS_MAX: usize = 256;
/// Largest message size accepted.
pub const MESSAGE_BYTES_MAX: usize = 64 << 20;

/// How producers choose record keys (OMB's `KeyDistributorType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum KeyDistributor {
    /// No key: the producer sticks to one partition per batch, then moves on.
    #[default]
    NoKey,
    /// Keys from a fixed pool, taken in turn; partition = murmur2(key).
    KeyRoundRobin,
    /// Keys from a fixed pool, picked by the clock; partition = murmur2(key).
    RandomNano,
}

/// One OMB workload.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Workload {
    /// Free text, copied to the result's `workload`.
    pub name: String,
    /// Number of topics.
    pub topics: usize,
    /// Partitions of each topic.
    pub partitions_per_topic: usize,
    /// Key distribution.
    #[serde(default)]
    pub key_distributor: KeyDistributor,
    /// Bytes per message.
    pub message_size: usize,
    /// A file of `messageSize` bytes used as every payload (random bytes when missing).
    #[serde(default)]
    pub payload_file: Option<String>,
    /// Subscriptions (independent consumer groups) per topic.
    #[serde(default = "one")]
    pub subscriptions_per_topic: usize,
    /// Consumers in each subscription (they split the partitions).
    #[serde(default = "one")]
    pub consumer_per_subscription: usize,
    /// Producers per topic.
    #[serde(default = "one")]
    pub producers_per_topic: usize,
    /// Messages per second across all producers; a huge value means "as fast as possible".
    pub producer_rate: f64,
    /// Backlog to build with the consumers paused before measuring the catch-up read.
    #[serde(default, rename = "consumerBacklogSizeGB")]
    pub consumer_backlog_size_gb: f64,
    /// Share of the backlog to drain before the test continues (OMB's default 1.0).
    #[serde(default = "one_f64")]
    pub backlog_drain_ratio: f64,
    /// Warm-up, not in the result.
    #[serde(default)]
    pub warmup_duration_minutes: f64,
    /// Measured phase.
    pub test_duration_minutes: f64,
}

fn one() -> usize {
    1
}

fn one_f64() -> f64 {
    1.0
}

impl Workload {
    /// Reads and checks a workload file.
    pub fn from_file(path: &Path) -> anyhow::Result<Workload> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading workload {}", path.display()))?;
        let workload: Workload = serde_norway::from_str(&text)
            .with_context(|| format!("parsing workload {}", path.display()))?;
        workload
            .check()
            .with_context(|| format!("workload {}", path.display()))?;
        Ok(workload)
    }

    /// Rejects values this driver cannot run.
    pub fn check(&self) -> anyhow::Result<()> {
        if self.topics == 0 || self.partitions_per_topic == 0 {
            bail!("topics and partitionsPerTopic must be at least 1");
        }
        if self.partitions_per_topic > i32::MAX as usize {
            bail!(
                "partitionsPerTopic {} is too large",
                self.partitions_per_topic
            );
        }
        if self.message_size == 0 || self.message_size > MESSAGE_BYTES_MAX {
            bail!(
                "messageSize {} must be in 1..={MESSAGE_BYTES_MAX}",
                self.message_size
            );
        }
        if !(self.producer_rate.is_finite() && self.producer_rate > 0.0) {
            bail!(
                "producerRate {} must be positive (rate discovery, producerRate 0, is not supported)",
                self.producer_rate
            );
        }
        let producers = self.topics.saturating_mul(self.producers_per_topic);
        let consumers = self
            .topics
            .saturating_mul(self.subscriptions_per_topic)
            .saturating_mul(self.consumer_per_subscription);
        if producers == 0 {
            bail!("producersPerTopic must be at least 1");
        }
        if producers > CLIENTS_MAX || consumers > CLIENTS_MAX {
            bail!("{producers} producers and {consumers} consumers: at most {CLIENTS_MAX} of each");
        }
        for (name, v) in [
            ("warmupDurationMinutes", self.warmup_duration_minutes),
            ("testDurationMinutes", self.test_duration_minutes),
            ("consumerBacklogSizeGB", self.consumer_backlog_size_gb),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                bail!("{name} {v} must be a non-negative number");
            }
        }
        if !(0.0..=1.0).contains(&self.backlog_drain_ratio) {
            bail!(
                "backlogDrainRatio {} must be in 0..=1",
                self.backlog_drain_ratio
            );
        }
        if self.consumer_backlog_size_gb > 0.0 && self.subscriptions_per_topic == 0 {
            bail!("consumerBacklogSizeGB needs at least one subscription");
        }
        Ok(())
    }

    /// The payload: `payloadFile` looked up as given, then beside the workload
    /// file and in its parent (OMB runs from its repository root, where
    /// `payload/` sits next to `workloads/`); random bytes when absent.
    /// Returns the bytes and where they came from.
    pub fn load_payload(&self, workload_path: &Path) -> anyhow::Result<(Vec<u8>, String)> {
        if let Some(file) = &self.payload_file {
            for candidate in payload_candidates(file, workload_path) {
                if candidate.is_file() {
                    let bytes = std::fs::read(&candidate)
                        .with_context(|| format!("reading payload {}", candidate.display()))?;
                    if bytes.len() != self.message_size {
                        bail!(
                            "payload {} has {} bytes, messageSize is {}",
                            candidate.display(),
                            bytes.len(),
                            self.message_size
                        );
                    }
                    return Ok((bytes, candidate.display().to_string()));
                }
            }
        }
        let mut bytes = vec![0u8; self.message_size];
        rand::fill(&mut bytes[..]);
        let origin = match &self.payload_file {
            Some(file) => format!("random bytes ({file} not found)"),
            None => "random bytes".to_string(),
        };
        Ok((bytes, origin))
    }
}

fn payload_candidates(file: &str, workload_path: &Path) -> Vec<PathBuf> {
    let given = PathBuf::from(file);
    if given.is_absolute() {
        return vec![given];
    }
    let mut out = vec![given.clone()];
    if let Some(dir) = workload_path.parent() {
        out.push(dir.join(&given));
        if let Some(parent) = dir.parent() {
            out.push(parent.join(&given));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn omb_workload_parses_with_defaults_and_unknown_fields() {
        let text = r#"
name: 1 topic / 1 partition / 1Kb
topics: 1
partitionsPerTopic: 1
keyDistributor: "RANDOM_NANO"
messageSize: 1024
payloadFile: "payload/payload-1Kb.data"
subscriptionsPerTopic: 1
consumerPerSubscription: 1
producersPerTopic: 1
producerRate: 50000
consumerBacklogSizeGB: 0
useRandomizedPayloads: false
warmupDurationMinutes: 1
testDurationMinutes: 5
"#;
        let w: Workload = serde_norway::from_str(text).unwrap();
        w.check().unwrap();
        assert_eq!(w.key_distributor, KeyDistributor::RandomNano);
        assert_eq!(w.producer_rate, 50000.0);
        assert_eq!(w.backlog_drain_ratio, 1.0);
        let (payload, origin) = w.load_payload(Path::new("/nonexistent/w.yaml")).unwrap();
        assert_eq!(payload.len(), 1024);
        assert!(origin.starts_with("random"), "{origin}");
    }

    #[test]
    fn rate_discovery_is_refused() {
        let text = "name: x\ntopics: 1\npartitionsPerTopic: 1\nmessageSize: 10\nproducerRate: 0\ntestDurationMinutes: 1\n";
        let w: Workload = serde_norway::from_str(text).unwrap();
        assert!(w.check().is_err());
    }
}
