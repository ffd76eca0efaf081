//! Latency histograms and counters shared by producers and consumers, and the
//! OMB-shaped result (`TestResult.java`'s field names and units).
//!
//! Latencies are recorded in microseconds (as OMB does); the result carries
//! publish and end-to-end latencies in milliseconds and publish delay in
//! microseconds, exactly as OMB's `WorkloadGenerator` fills `TestResult`.
//!
//! Helpers: `Recorder::{record_publish, record_delays, record_receive,
//! record_errors, take_period, reset_cumulative, cumulative, totals}`,
//! `TestResult::push_period`, `TestResult::set_aggregated`.

use std::sync::Mutex;

use hdrhistogram::Histogram;
use serde::Serialize;
use serde::ser::SerializeMap;

/// Significant digits kept by every histogram.
const HISTOGRAM_SIGFIGS: u8 = 3;
/// Largest latency a histogram tracks (one hour, in µs); larger values are clamped to it.
const HISTOGRAM_US_MAX: u64 = 3_600_000_000;
/// Quantile ticks per half distance for the `aggregated…Quantiles` maps (OMB: 100).
const QUANTILE_TICKS_PER_HALF_DISTANCE: u32 = 100;

/// Three latency histograms (µs) and the counters of one period.
#[derive(Debug, Clone)]
pub struct Period {
    /// Producer send → ack.
    pub publish_us: Histogram<u64>,
    /// Scheduled send time → actual send.
    pub publish_delay_us: Histogram<u64>,
    /// Producer send → consumer receive.
    pub end_to_end_us: Histogram<u64>,
    /// Messages acknowledged.
    pub messages_sent: u64,
    /// Payload bytes acknowledged.
    pub bytes_sent: u64,
    /// Messages whose produce attempt failed (each failed attempt counts).
    pub message_send_errors: u64,
    /// Messages received by consumers.
    pub messages_received: u64,
    /// Payload bytes received.
    pub bytes_received: u64,
}

impl Period {
    fn new() -> Period {
        // Fixed bounds: memory decided here, `saturating_record` never resizes.
        let h = || {
            Histogram::new_with_bounds(1, HISTOGRAM_US_MAX, HISTOGRAM_SIGFIGS)
                .unwrap_or_else(|_| unreachable_histogram())
        };
        Period {
            publish_us: h(),
            publish_delay_us: h(),
            end_to_end_us: h(),
            messages_sent: 0,
            bytes_sent: 0,
            message_send_errors: 0,
            messages_received: 0,
            bytes_received: 0,
        }
    }
}

/// The bounds above are valid, so this is never called; it keeps the code free of `unwrap`.
fn unreachable_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 2, 0).unwrap_or_else(|_| std::process::abort())
}

/// Counts since the start of the run (never reset), for the backlog.
#[derive(Debug, Clone, Copy, Default)]
pub struct Totals {
    /// Messages acknowledged.
    pub messages_sent: u64,
    /// Messages received, over all subscriptions.
    pub messages_received: u64,
    /// Produce attempts that failed, counted per message.
    pub message_send_errors: u64,
    /// Batches retried after a retriable error.
    pub retried_batches: u64,
    /// Messages given up on (non-retriable error or retries exhausted).
    pub messages_failed: u64,
}

struct Inner {
    period: Period,
    cumulative: Period,
    totals: Totals,
}

/// Shared sink for every producer and consumer of a run.
pub struct Recorder {
    inner: Mutex<Inner>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}

impl Recorder {
    /// Empty histograms and counters.
    pub fn new() -> Recorder {
        Recorder {
            inner: Mutex::new(Inner {
                period: Period::new(),
                cumulative: Period::new(),
                totals: Totals::default(),
            }),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        let mut guard = match self.inner.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut guard)
    }

    /// One acknowledged batch: each message's publish latency, and its payload bytes.
    pub fn record_publish(&self, latencies_us: impl Iterator<Item = u64>, bytes: u64) {
        self.with(|s| {
            let mut n = 0;
            for us in latencies_us {
                s.period.publish_us.saturating_record(us);
                s.cumulative.publish_us.saturating_record(us);
                n += 1;
            }
            s.period.messages_sent += n;
            s.cumulative.messages_sent += n;
            s.totals.messages_sent += n;
            s.period.bytes_sent += bytes;
            s.cumulative.bytes_sent += bytes;
        });
    }

    /// Publish delays gathered by a producer since its last call.
    pub fn record_delays(&self, delays_us: &[u64]) {
        self.with(|s| {
            for &us in delays_us {
                s.period.publish_delay_us.saturating_record(us);
                s.cumulative.publish_delay_us.saturating_record(us);
            }
        });
    }

    /// Messages received by a consumer, with their end-to-end latencies.
    pub fn record_receive(&self, end_to_end_us: &[u64], messages: u64, bytes: u64) {
        self.with(|s| {
            for &us in end_to_end_us {
                s.period.end_to_end_us.saturating_record(us);
                s.cumulative.end_to_end_us.saturating_record(us);
            }
            s.period.messages_received += messages;
            s.cumulative.messages_received += messages;
            s.totals.messages_received += messages;
            s.period.bytes_received += bytes;
            s.cumulative.bytes_received += bytes;
        });
    }

    /// A failed produce attempt of `messages` messages; `retried` if it will be sent again.
    pub fn record_errors(&self, messages: u64, retried: bool) {
        self.with(|s| {
            s.period.message_send_errors += messages;
            s.cumulative.message_send_errors += messages;
            s.totals.message_send_errors += messages;
            if retried {
                s.totals.retried_batches += 1;
            } else {
                s.totals.messages_failed += messages;
            }
        });
    }

    /// The period since the last call; a new one starts.
    pub fn take_period(&self) -> Period {
        self.with(|s| std::mem::replace(&mut s.period, Period::new()))
    }

    /// Starts the cumulative histograms over (end of warm-up).
    pub fn reset_cumulative(&self) {
        self.with(|s| s.cumulative = Period::new());
    }

    /// A copy of the cumulative histograms.
    pub fn cumulative(&self) -> Period {
        self.with(|s| s.cumulative.clone())
    }

    /// Counts since the start.
    pub fn totals(&self) -> Totals {
        self.with(|s| s.totals)
    }
}

/// Percentile summary of one histogram, in the histogram's unit.
#[derive(Debug, Clone, Copy, Default)]
pub struct Summary {
    /// Mean.
    pub avg: f64,
    /// Percentiles 50, 75, 95, 99, 99.9, 99.99, 99.999.
    pub p50: u64,
    /// 75th.
    pub p75: u64,
    /// 95th.
    pub p95: u64,
    /// 99th.
    pub p99: u64,
    /// 99.9th.
    pub p999: u64,
    /// 99.99th.
    pub p9999: u64,
    /// 99.999th.
    pub p99999: u64,
    /// Largest value.
    pub max: u64,
}

impl Summary {
    /// Summary of `h` (zeros when empty).
    pub fn of(h: &Histogram<u64>) -> Summary {
        if h.is_empty() {
            return Summary::default();
        }
        Summary {
            avg: h.mean(),
            p50: h.value_at_quantile(0.50),
            p75: h.value_at_quantile(0.75),
            p95: h.value_at_quantile(0.95),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            p9999: h.value_at_quantile(0.9999),
            p99999: h.value_at_quantile(0.99999),
            max: h.max(),
        }
    }
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// `(percentile, value)` pairs serialized as a JSON object with Java's
/// `Double.toString` keys, in ascending order (OMB's `TreeMap<Double, …>`).
#[derive(Debug, Clone, Default)]
pub struct QuantileMap<V>(pub Vec<(f64, V)>);

impl<V: Serialize> Serialize for QuantileMap<V> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(&java_double(*k), v)?;
        }
        map.end()
    }
}

/// Java's `Double.toString` for the values a percentile takes (0..=100).
fn java_double(v: f64) -> String {
    let s = format!("{v}");
    if s.contains('.') || s.contains('e') || !v.is_finite() {
        s
    } else {
        format!("{s}.0")
    }
}

/// OMB's percentile iteration (`percentiles(100)`), a later equal key replacing an earlier one.
fn quantiles<V>(h: &Histogram<u64>, value: impl Fn(u64) -> V) -> QuantileMap<V> {
    let mut out: Vec<(f64, V)> = Vec::new();
    if h.is_empty() {
        return QuantileMap(out);
    }
    for v in h.iter_quantiles(QUANTILE_TICKS_PER_HALF_DISTANCE) {
        let p = v.percentile();
        let x = value(v.value_iterated_to());
        match out.last_mut() {
            Some(last) if last.0 == p => last.1 = x,
            _ => out.push((p, x)),
        }
    }
    QuantileMap(out)
}

/// OMB's `TestResult`, field for field (plus `sluicePerf`, this driver's settings).
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TestResult {
    pub workload: String,
    pub driver: String,
    pub message_size: u64,
    pub topics: u64,
    pub partitions: u64,
    pub producers_per_topic: u64,
    pub consumers_per_topic: u64,

    pub publish_rate: Vec<f64>,
    pub publish_error_rate: Vec<f64>,
    pub consume_rate: Vec<f64>,
    pub backlog: Vec<u64>,

    pub publish_latency_avg: Vec<f64>,
    pub publish_latency_50pct: Vec<f64>,
    pub publish_latency_75pct: Vec<f64>,
    pub publish_latency_95pct: Vec<f64>,
    pub publish_latency_99pct: Vec<f64>,
    pub publish_latency_999pct: Vec<f64>,
    pub publish_latency_9999pct: Vec<f64>,
    pub publish_latency_99999pct: Vec<f64>,
    pub publish_latency_max: Vec<f64>,

    pub publish_delay_latency_avg: Vec<f64>,
    pub publish_delay_latency_50pct: Vec<u64>,
    pub publish_delay_latency_75pct: Vec<u64>,
    pub publish_delay_latency_95pct: Vec<u64>,
    pub publish_delay_latency_99pct: Vec<u64>,
    pub publish_delay_latency_999pct: Vec<u64>,
    pub publish_delay_latency_9999pct: Vec<u64>,
    pub publish_delay_latency_99999pct: Vec<u64>,
    pub publish_delay_latency_max: Vec<u64>,

    pub aggregated_publish_latency_avg: f64,
    pub aggregated_publish_latency_50pct: f64,
    pub aggregated_publish_latency_75pct: f64,
    pub aggregated_publish_latency_95pct: f64,
    pub aggregated_publish_latency_99pct: f64,
    pub aggregated_publish_latency_999pct: f64,
    pub aggregated_publish_latency_9999pct: f64,
    pub aggregated_publish_latency_99999pct: f64,
    pub aggregated_publish_latency_max: f64,

    pub aggregated_publish_delay_latency_avg: f64,
    pub aggregated_publish_delay_latency_50pct: u64,
    pub aggregated_publish_delay_latency_75pct: u64,
    pub aggregated_publish_delay_latency_95pct: u64,
    pub aggregated_publish_delay_latency_99pct: u64,
    pub aggregated_publish_delay_latency_999pct: u64,
    pub aggregated_publish_delay_latency_9999pct: u64,
    pub aggregated_publish_delay_latency_99999pct: u64,
    pub aggregated_publish_delay_latency_max: u64,

    pub aggregated_publish_latency_quantiles: QuantileMap<f64>,
    pub aggregated_publish_delay_latency_quantiles: QuantileMap<u64>,

    pub end_to_end_latency_avg: Vec<f64>,
    pub end_to_end_latency_50pct: Vec<f64>,
    pub end_to_end_latency_75pct: Vec<f64>,
    pub end_to_end_latency_95pct: Vec<f64>,
    pub end_to_end_latency_99pct: Vec<f64>,
    pub end_to_end_latency_999pct: Vec<f64>,
    pub end_to_end_latency_9999pct: Vec<f64>,
    pub end_to_end_latency_99999pct: Vec<f64>,
    pub end_to_end_latency_max: Vec<f64>,

    pub aggregated_end_to_end_latency_quantiles: QuantileMap<f64>,

    pub aggregated_end_to_end_latency_avg: f64,
    pub aggregated_end_to_end_latency_50pct: f64,
    pub aggregated_end_to_end_latency_75pct: f64,
    pub aggregated_end_to_end_latency_95pct: f64,
    pub aggregated_end_to_end_latency_99pct: f64,
    pub aggregated_end_to_end_latency_999pct: f64,
    pub aggregated_end_to_end_latency_9999pct: f64,
    pub aggregated_end_to_end_latency_99999pct: f64,
    pub aggregated_end_to_end_latency_max: f64,

    /// Not in OMB: how this run was driven, so a result file explains itself.
    pub sluice_perf: RunInfo,
    /// Not in OMB either: the broker's produce stages over the test (`--broker-metrics`);
    /// absent without that flag.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sluice_broker_stages: Option<Vec<crate::broker_metrics::StageFigures>>,
}

/// This driver's settings and run facts, stored beside OMB's fields.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunInfo {
    pub bootstrap: String,
    pub interval_seconds: f64,
    pub duration_scale: f64,
    pub warmup_seconds: f64,
    pub test_seconds: f64,
    pub producer_rate: f64,
    pub acks: i16,
    pub linger_ms: u64,
    pub batch_bytes: usize,
    pub max_in_flight: usize,
    pub payload: String,
    /// Backlog asked for (bytes, after `--backlog-scale`).
    pub backlog_bytes_target: u64,
    /// Seconds to build the backlog, and to drain it; null when not reached.
    pub backlog_build_seconds: Option<f64>,
    pub backlog_drain_seconds: Option<f64>,
    pub total_messages_sent: u64,
    pub total_messages_received: u64,
    pub total_send_errors: u64,
    pub retried_batches: u64,
    pub messages_failed: u64,
}

/// The keys every result carries: OMB's `TestResult` fields.
pub const RESULT_KEYS: &[&str] = &[
    "workload",
    "driver",
    "messageSize",
    "topics",
    "partitions",
    "producersPerTopic",
    "consumersPerTopic",
    "publishRate",
    "publishErrorRate",
    "consumeRate",
    "backlog",
    "publishLatencyAvg",
    "publishLatency50pct",
    "publishLatency75pct",
    "publishLatency95pct",
    "publishLatency99pct",
    "publishLatency999pct",
    "publishLatency9999pct",
    "publishLatency99999pct",
    "publishLatencyMax",
    "publishDelayLatencyAvg",
    "publishDelayLatency50pct",
    "publishDelayLatency75pct",
    "publishDelayLatency95pct",
    "publishDelayLatency99pct",
    "publishDelayLatency999pct",
    "publishDelayLatency9999pct",
    "publishDelayLatency99999pct",
    "publishDelayLatencyMax",
    "aggregatedPublishLatencyAvg",
    "aggregatedPublishLatency50pct",
    "aggregatedPublishLatency75pct",
    "aggregatedPublishLatency95pct",
    "aggregatedPublishLatency99pct",
    "aggregatedPublishLatency999pct",
    "aggregatedPublishLatency9999pct",
    "aggregatedPublishLatency99999pct",
    "aggregatedPublishLatencyMax",
    "aggregatedPublishDelayLatencyAvg",
    "aggregatedPublishDelayLatency50pct",
    "aggregatedPublishDelayLatency75pct",
    "aggregatedPublishDelayLatency95pct",
    "aggregatedPublishDelayLatency99pct",
    "aggregatedPublishDelayLatency999pct",
    "aggregatedPublishDelayLatency9999pct",
    "aggregatedPublishDelayLatency99999pct",
    "aggregatedPublishDelayLatencyMax",
    "aggregatedPublishLatencyQuantiles",
    "aggregatedPublishDelayLatencyQuantiles",
    "endToEndLatencyAvg",
    "endToEndLatency50pct",
    "endToEndLatency75pct",
    "endToEndLatency95pct",
    "endToEndLatency99pct",
    "endToEndLatency999pct",
    "endToEndLatency9999pct",
    "endToEndLatency99999pct",
    "endToEndLatencyMax",
    "aggregatedEndToEndLatencyQuantiles",
    "aggregatedEndToEndLatencyAvg",
    "aggregatedEndToEndLatency50pct",
    "aggregatedEndToEndLatency75pct",
    "aggregatedEndToEndLatency95pct",
    "aggregatedEndToEndLatency99pct",
    "aggregatedEndToEndLatency999pct",
    "aggregatedEndToEndLatency9999pct",
    "aggregatedEndToEndLatency99999pct",
    "aggregatedEndToEndLatencyMax",
];

/// Parses a result file's text and checks that it is an object with every
/// key of [`RESULT_KEYS`], per-interval arrays of one length, and quantile maps.
pub fn validate_result(json: &str) -> anyhow::Result<serde_json::Value> {
    let value: serde_json::Value = serde_json::from_str(json)?;
    let object = value
        .as_object()
        .ok_or_else(|| anyhow::anyhow!("the result is not a JSON object"))?;
    let missing: Vec<&str> = RESULT_KEYS
        .iter()
        .copied()
        .filter(|k| !object.contains_key(*k))
        .collect();
    anyhow::ensure!(missing.is_empty(), "missing keys: {missing:?}");
    let intervals = object["publishRate"].as_array().map_or(0, |a| a.len());
    for key in RESULT_KEYS {
        let v = &object[*key];
        if key.ends_with("Quantiles") {
            anyhow::ensure!(v.is_object(), "{key} is not an object");
        } else if v.is_array() {
            let len = v.as_array().map_or(0, |a| a.len());
            anyhow::ensure!(
                len == intervals,
                "{key} has {len} intervals, publishRate {intervals}"
            );
        }
    }
    Ok(value)
}

impl TestResult {
    /// Appends one interval's figures (`seconds` long; `backlog` in messages).
    pub fn push_period(&mut self, p: &Period, seconds: f64, backlog: u64) {
        let seconds = seconds.max(1e-9);
        self.publish_rate.push(p.messages_sent as f64 / seconds);
        self.publish_error_rate
            .push(p.message_send_errors as f64 / seconds);
        self.consume_rate.push(p.messages_received as f64 / seconds);
        self.backlog.push(backlog);

        let s = Summary::of(&p.publish_us);
        self.publish_latency_avg.push(s.avg / 1000.0);
        self.publish_latency_50pct.push(ms(s.p50));
        self.publish_latency_75pct.push(ms(s.p75));
        self.publish_latency_95pct.push(ms(s.p95));
        self.publish_latency_99pct.push(ms(s.p99));
        self.publish_latency_999pct.push(ms(s.p999));
        self.publish_latency_9999pct.push(ms(s.p9999));
        self.publish_latency_99999pct.push(ms(s.p99999));
        self.publish_latency_max.push(ms(s.max));

        let s = Summary::of(&p.publish_delay_us);
        self.publish_delay_latency_avg.push(s.avg);
        self.publish_delay_latency_50pct.push(s.p50);
        self.publish_delay_latency_75pct.push(s.p75);
        self.publish_delay_latency_95pct.push(s.p95);
        self.publish_delay_latency_99pct.push(s.p99);
        self.publish_delay_latency_999pct.push(s.p999);
        self.publish_delay_latency_9999pct.push(s.p9999);
        self.publish_delay_latency_99999pct.push(s.p99999);
        self.publish_delay_latency_max.push(s.max);

        let s = Summary::of(&p.end_to_end_us);
        self.end_to_end_latency_avg.push(s.avg / 1000.0);
        self.end_to_end_latency_50pct.push(ms(s.p50));
        self.end_to_end_latency_75pct.push(ms(s.p75));
        self.end_to_end_latency_95pct.push(ms(s.p95));
        self.end_to_end_latency_99pct.push(ms(s.p99));
        self.end_to_end_latency_999pct.push(ms(s.p999));
        self.end_to_end_latency_9999pct.push(ms(s.p9999));
        self.end_to_end_latency_99999pct.push(ms(s.p99999));
        self.end_to_end_latency_max.push(ms(s.max));
    }

    /// Fills the `aggregated…` fields from the test phase's cumulative histograms.
    pub fn set_aggregated(&mut self, c: &Period) {
        let s = Summary::of(&c.publish_us);
        self.aggregated_publish_latency_avg = s.avg / 1000.0;
        self.aggregated_publish_latency_50pct = ms(s.p50);
        self.aggregated_publish_latency_75pct = ms(s.p75);
        self.aggregated_publish_latency_95pct = ms(s.p95);
        self.aggregated_publish_latency_99pct = ms(s.p99);
        self.aggregated_publish_latency_999pct = ms(s.p999);
        self.aggregated_publish_latency_9999pct = ms(s.p9999);
        self.aggregated_publish_latency_99999pct = ms(s.p99999);
        self.aggregated_publish_latency_max = ms(s.max);

        let s = Summary::of(&c.publish_delay_us);
        self.aggregated_publish_delay_latency_avg = s.avg;
        self.aggregated_publish_delay_latency_50pct = s.p50;
        self.aggregated_publish_delay_latency_75pct = s.p75;
        self.aggregated_publish_delay_latency_95pct = s.p95;
        self.aggregated_publish_delay_latency_99pct = s.p99;
        self.aggregated_publish_delay_latency_999pct = s.p999;
        self.aggregated_publish_delay_latency_9999pct = s.p9999;
        self.aggregated_publish_delay_latency_99999pct = s.p99999;
        self.aggregated_publish_delay_latency_max = s.max;

        let s = Summary::of(&c.end_to_end_us);
        self.aggregated_end_to_end_latency_avg = s.avg / 1000.0;
        self.aggregated_end_to_end_latency_50pct = ms(s.p50);
        self.aggregated_end_to_end_latency_75pct = ms(s.p75);
        self.aggregated_end_to_end_latency_95pct = ms(s.p95);
        self.aggregated_end_to_end_latency_99pct = ms(s.p99);
        self.aggregated_end_to_end_latency_999pct = ms(s.p999);
        self.aggregated_end_to_end_latency_9999pct = ms(s.p9999);
        self.aggregated_end_to_end_latency_99999pct = ms(s.p99999);
        self.aggregated_end_to_end_latency_max = ms(s.max);

        self.aggregated_publish_latency_quantiles = quantiles(&c.publish_us, ms);
        self.aggregated_publish_delay_latency_quantiles = quantiles(&c.publish_delay_us, |v| v);
        self.aggregated_end_to_end_latency_quantiles = quantiles(&c.end_to_end_us, ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_has_omb_field_names_and_units() {
        let r = Recorder::new();
        r.record_publish([1000u64, 2000, 1800].into_iter(), 3072);
        r.record_receive(&[1500], 1, 1024);
        r.record_delays(&[40]);
        let mut result = TestResult::default();
        let p = r.take_period();
        result.push_period(&p, 2.0, 7);
        result.set_aggregated(&r.cumulative());
        let v = serde_json::to_value(&result).unwrap();
        assert_eq!(v["publishRate"][0], 1.5);
        assert_eq!(v["backlog"][0], 7);
        assert_eq!(v["publishLatency50pct"][0], 1.8);
        assert_eq!(v["publishDelayLatency99pct"][0], 40);
        assert_eq!(v["endToEndLatencyMax"][0], 1.5);
        assert_eq!(v["aggregatedPublishLatencyMax"], 2.0);
        assert_eq!(v["aggregatedPublishDelayLatency50pct"], 40);
        let q = v["aggregatedPublishLatencyQuantiles"].as_object().unwrap();
        assert_eq!(q["100.0"], 2.0);
        assert!(v["aggregatedEndToEndLatencyQuantiles"].is_object());
        assert!(v["consumersPerTopic"].is_u64());
        validate_result(&serde_json::to_string(&result).unwrap()).unwrap();
        assert!(validate_result("{}").is_err());
    }

    #[test]
    fn java_double_keys() {
        assert_eq!(java_double(50.0), "50.0");
        assert_eq!(java_double(99.21875), "99.21875");
        assert_eq!(java_double(0.0), "0.0");
    }
}
