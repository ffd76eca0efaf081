//! `--broker-metrics URL`: where a Sluice broker's produce time went during the test. The
//! broker's `sluice_produce_stage_latency_seconds{stage}` histograms are scraped from its
//! Prometheus endpoint at the test phase's start and end; each stage's count and percentiles
//! come from the difference of the two.
//!
//! The broker's buckets are powers of two microseconds, so a percentile is reported as the
//! upper bound of the bucket it falls in: an estimate up to twice the true value, never below
//! it.
//!
//! A scrape is one HTTP/1.0 GET over a std `TcpStream` (the admin port answers plain HTTP and
//! closes), bounded in time and in size.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use serde::Serialize;

/// The histogram family scraped.
const STAGE_FAMILY: &str = "sluice_produce_stage_latency_seconds";

/// How long connecting, and each read or write of a scrape, may take.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest response read: a broker's page with its 10,000 partition series is a few MB.
const SCRAPE_RESPONSE_BYTES_MAX: u64 = 64 << 20;

/// Percentiles reported per stage: (quantile, label).
const QUANTILES: [(f64, &str); 3] = [(0.5, "p50"), (0.99, "p99"), (0.999, "p99.9")];

/// An `http://HOST[:PORT][/PATH]` URL (no https: the admin port speaks plain HTTP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsUrl {
    host: String,
    port: u16,
    path: String,
}

/// Each stage's histogram by its `stage` label, as one scrape found them.
pub(crate) type StageHistograms = Vec<(String, BucketHistogram)>;

/// One histogram: cumulative counts at ascending upper bounds (seconds, the last `+Inf`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct BucketHistogram {
    /// (upper bound in seconds, observations at or below it).
    buckets: Vec<(f64, u64)>,
    /// Sum of the observations in seconds.
    sum_seconds: f64,
}

/// One stage's figures over the test, as reported (and written under `sluiceBrokerStages`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StageFigures {
    /// The broker's `stage` label.
    pub stage: String,
    /// Observations during the test.
    pub count: u64,
    /// Mean in ms (None without observations).
    pub avg_ms: Option<f64>,
    /// Median in ms: the upper bound of its bucket (None without observations or when it is
    /// above the largest finite bound, as for the two below).
    pub p50_ms: Option<f64>,
    /// 99th percentile in ms (bucket upper bound).
    pub p99_ms: Option<f64>,
    /// 99.9th percentile in ms (bucket upper bound).
    pub p999_ms: Option<f64>,
}

impl MetricsUrl {
    /// Parses `--broker-metrics`; the error says what is wrong and shows a good URL.
    pub fn parse(text: &str) -> anyhow::Result<MetricsUrl> {
        const EXAMPLE: &str = "e.g. http://127.0.0.1:9644/metrics";
        let Some(rest) = text.strip_prefix("http://") else {
            bail!("{text:?} is not an http:// URL ({EXAMPLE})");
        };
        let (authority, path) = match rest.find('/') {
            Some(slash) => rest.split_at(slash),
            None => (rest, "/"),
        };
        let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
            // An IPv6 address: [::1]:9644.
            let (host, after) = bracketed
                .split_once(']')
                .with_context(|| format!("{text:?}: unclosed [ in the host ({EXAMPLE})"))?;
            (host, after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        ensure!(
            !host.is_empty() && !host.contains(['@', ' ']),
            "{text:?} has no valid host ({EXAMPLE})"
        );
        let port = match port {
            None => 80,
            Some(port) => port
                .parse()
                .with_context(|| format!("{text:?}: {port:?} is not a port ({EXAMPLE})"))?,
        };
        ensure!(
            !path.contains([' ', '\r', '\n']),
            "{text:?}: the path may not hold spaces or line breaks"
        );
        Ok(MetricsUrl {
            host: host.to_string(),
            port,
            path: path.to_string(),
        })
    }
}

impl std::fmt::Display for MetricsUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "http://[{}]:{}{}", self.host, self.port, self.path)
        } else {
            write!(f, "http://{}:{}{}", self.host, self.port, self.path)
        }
    }
}

/// Scrapes `url` and returns its stage histograms (see [`parse_stages`]).
pub(crate) fn scrape_stages(url: &MetricsUrl) -> anyhow::Result<StageHistograms> {
    let text = get(url)?;
    parse_stages(&text).with_context(|| format!("reading {url}"))
}

/// The body of a GET of `url`; an error unless the server answers 200.
fn get(url: &MetricsUrl) -> anyhow::Result<String> {
    let addrs: Vec<SocketAddr> = (url.host.as_str(), url.port)
        .to_socket_addrs()
        .with_context(|| format!("{url}: cannot resolve {}", url.host))?
        .collect();
    let mut stream = None;
    let mut refused = None;
    for addr in &addrs {
        match TcpStream::connect_timeout(addr, SCRAPE_TIMEOUT) {
            Ok(connected) => {
                stream = Some(connected);
                break;
            }
            Err(error) => refused = Some(error),
        }
    }
    let Some(mut stream) = stream else {
        match refused {
            Some(error) => bail!("{url}: cannot connect: {error}"),
            None => bail!("{url}: {} resolves to no address", url.host),
        }
    };
    stream.set_read_timeout(Some(SCRAPE_TIMEOUT))?;
    stream.set_write_timeout(Some(SCRAPE_TIMEOUT))?;
    // HTTP/1.0: the server may not answer chunked, and closes after the body. One write, so
    // that the request head arrives whole.
    let request = format!(
        "GET {} HTTP/1.0\r\nHost: {}:{}\r\nAccept: text/plain\r\nConnection: close\r\n\r\n",
        url.path, url.host, url.port
    );
    stream
        .write_all(request.as_bytes())
        .with_context(|| format!("{url}: sending the request"))?;
    let mut raw = Vec::new();
    stream
        .take(SCRAPE_RESPONSE_BYTES_MAX + 1)
        .read_to_end(&mut raw)
        .with_context(|| format!("{url}: reading the response"))?;
    ensure!(
        raw.len() as u64 <= SCRAPE_RESPONSE_BYTES_MAX,
        "{url}: the response exceeds {SCRAPE_RESPONSE_BYTES_MAX} bytes"
    );
    response_body(&raw).with_context(|| format!("{url}: unexpected response"))
}

/// Parses the stage histograms of [`STAGE_FAMILY`] out of Prometheus' text format, one per
/// `stage` label in the order first seen; other families are skipped. An error when the
/// family is absent or a series is inconsistent (unordered buckets, no `+Inf`).
fn parse_stages(text: &str) -> anyhow::Result<StageHistograms> {
    let bucket_name = format!("{STAGE_FAMILY}_bucket");
    let sum_name = format!("{STAGE_FAMILY}_sum");
    let mut stages = StageHistograms::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if !line.starts_with(STAGE_FAMILY) {
            continue;
        }
        let Sample {
            name,
            labels,
            value,
        } = parse_sample(line).with_context(|| format!("line {}: {line:?}", index + 1))?;
        if name != bucket_name && name != sum_name {
            continue; // `_count` repeats the `+Inf` bucket
        }
        let stage = label(&labels, "stage")
            .with_context(|| format!("line {}: no stage label in {line:?}", index + 1))?;
        let position = match stages.iter().position(|(s, _)| s == stage) {
            Some(position) => position,
            None => {
                let empty = BucketHistogram {
                    buckets: Vec::new(),
                    sum_seconds: 0.0,
                };
                stages.push((stage.to_string(), empty));
                stages.len() - 1
            }
        };
        let histogram = &mut stages[position].1;
        if name == sum_name {
            histogram.sum_seconds = value;
            continue;
        }
        let le = label(&labels, "le")
            .with_context(|| format!("line {}: a bucket without le: {line:?}", index + 1))?;
        let le = parse_float(le).with_context(|| format!("line {}: le {le:?}", index + 1))?;
        ensure!(
            value >= 0.0 && value.fract() == 0.0,
            "line {}: a bucket count must be a whole number: {line:?}",
            index + 1
        );
        if let Some(&(previous_le, previous_count)) = histogram.buckets.last() {
            ensure!(
                le > previous_le && value as u64 >= previous_count,
                "line {}: buckets of stage {stage} out of order: {line:?}",
                index + 1
            );
        }
        histogram.buckets.push((le, value as u64));
    }
    ensure!(
        !stages.is_empty(),
        "no {STAGE_FAMILY} series (is this a Sluice broker's /metrics?)"
    );
    for (stage, histogram) in &stages {
        ensure!(
            histogram
                .buckets
                .last()
                .is_some_and(|(le, _)| le.is_infinite()),
            "stage {stage} has no +Inf bucket"
        );
    }
    Ok(stages)
}

impl BucketHistogram {
    /// Observations in all.
    fn count(&self) -> u64 {
        self.buckets.last().map_or(0, |(_, count)| *count)
    }

    /// The observations made since `before`, a scrape of the same series. A broker that
    /// restarted in between counts from zero again: then these are all since its start.
    fn since(&self, before: &BucketHistogram) -> anyhow::Result<BucketHistogram> {
        if self.count() < before.count() {
            return Ok(self.clone());
        }
        let same_bounds = self.buckets.len() == before.buckets.len()
            && self
                .buckets
                .iter()
                .zip(&before.buckets)
                .all(|((a, _), (b, _))| a == b);
        ensure!(same_bounds, "the bucket bounds changed between two scrapes");
        Ok(BucketHistogram {
            buckets: self
                .buckets
                .iter()
                .zip(&before.buckets)
                .map(|((le, after), (_, earlier))| (*le, after.saturating_sub(*earlier)))
                .collect(),
            sum_seconds: (self.sum_seconds - before.sum_seconds).max(0.0),
        })
    }

    /// The upper bound (seconds) of the bucket holding quantile `q` (0 < q <= 1): the
    /// smallest bound with at least ⌈q × count⌉ observations at or below it. None without
    /// observations; infinite when it lies above the largest finite bound.
    fn quantile_upper_bound_seconds(&self, q: f64) -> Option<f64> {
        let count = self.count();
        if count == 0 {
            return None;
        }
        let rank = ((q * count as f64).ceil() as u64).clamp(1, count);
        self.buckets
            .iter()
            .find(|(_, cumulative)| *cumulative >= rank)
            .map(|(le, _)| *le)
    }
}

/// Each stage's figures between the scrapes `before` and `after`, in `after`'s order.
pub(crate) fn stage_figures(
    before: &[(String, BucketHistogram)],
    after: &[(String, BucketHistogram)],
) -> anyhow::Result<Vec<StageFigures>> {
    after
        .iter()
        .map(|(stage, histogram)| {
            let delta = match before.iter().find(|(s, _)| s == stage) {
                Some((_, earlier)) => histogram
                    .since(earlier)
                    .with_context(|| format!("stage {stage}"))?,
                None => histogram.clone(),
            };
            let count = delta.count();
            let ms = |q: f64| {
                delta
                    .quantile_upper_bound_seconds(q)
                    .filter(|s| s.is_finite())
                    .map(|s| s * 1e3)
            };
            Ok(StageFigures {
                stage: stage.clone(),
                count,
                avg_ms: (count > 0).then(|| delta.sum_seconds * 1e3 / count as f64),
                p50_ms: ms(QUANTILES[0].0),
                p99_ms: ms(QUANTILES[1].0),
                p999_ms: ms(QUANTILES[2].0),
            })
        })
        .collect()
}

/// The report's lines (stdout): a heading, then one line per stage.
pub(crate) fn report_lines(figures: &[StageFigures]) -> Vec<String> {
    let mut lines = vec![format!(
        "sluice perf: broker produce stages during the test ({STAGE_FAMILY}; percentiles are \
         bucket upper bounds, ms)"
    )];
    let shown = |v: Option<f64>, count: u64| match (v, count) {
        (Some(ms), _) => format!("{ms:.3}"),
        (None, 0) => "-".to_string(),
        // Above the largest finite bucket.
        (None, _) => "+Inf".to_string(),
    };
    let width = figures.iter().map(|f| f.stage.len()).max().unwrap_or(0);
    for f in figures {
        let percentiles: Vec<String> = [f.p50_ms, f.p99_ms, f.p999_ms]
            .iter()
            .zip(QUANTILES)
            .map(|(v, (_, name))| format!("{name}={}", shown(*v, f.count)))
            .collect();
        lines.push(format!(
            "sluice perf: stage {:<width$} count={} avg={} {}",
            f.stage,
            f.count,
            f.avg_ms
                .map_or_else(|| "-".to_string(), |ms| format!("{ms:.3}")),
            percentiles.join(" "),
        ));
    }
    lines
}

/// The body of a raw HTTP/1.x response whose status is 200.
fn response_body(raw: &[u8]) -> anyhow::Result<String> {
    let head_end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of the response head")?;
    let head = String::from_utf8_lossy(&raw[..head_end]);
    let mut lines = head.lines();
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.split_whitespace().nth(1));
    ensure!(
        status == Some("200"),
        "the server answered {status_line:?}, not 200"
    );
    for (name, value) in lines.filter_map(|l| l.split_once(':')) {
        ensure!(
            !(name.trim().eq_ignore_ascii_case("transfer-encoding")
                && value.trim().eq_ignore_ascii_case("chunked")),
            "a chunked body, which an HTTP/1.0 request should not get"
        );
    }
    String::from_utf8(raw[head_end + 4..].to_vec()).context("the body is not UTF-8")
}

/// One sample line of the text format.
struct Sample<'a> {
    name: &'a str,
    /// (label, unescaped value).
    labels: Vec<(&'a str, String)>,
    value: f64,
}

/// Parses `name{label="value",...} value [timestamp]`.
fn parse_sample(line: &str) -> anyhow::Result<Sample<'_>> {
    let name_end = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .context("no value")?;
    let name = &line[..name_end];
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(inner) = rest.strip_prefix('{') {
        rest = inner;
        loop {
            rest = rest.trim_start_matches([',', ' ']);
            if let Some(after) = rest.strip_prefix('}') {
                rest = after;
                break;
            }
            let (label, after) = rest.split_once("=\"").context("a label without a value")?;
            let mut value = String::new();
            let mut chars = after.char_indices();
            let end = loop {
                match chars.next() {
                    Some((_, '\\')) => match chars.next() {
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, c)) => value.push(c),
                        None => bail!("an escape at the end of the line"),
                    },
                    Some((i, '"')) => break i,
                    Some((_, c)) => value.push(c),
                    None => bail!("an unterminated label value"),
                }
            };
            labels.push((label.trim(), value));
            rest = &after[end + 1..];
        }
    }
    let value = rest.split_whitespace().next().context("no value")?;
    Ok(Sample {
        name,
        labels,
        value: parse_float(value)?,
    })
}

/// A sample value or `le` bound: a float, `+Inf`, `-Inf` or `NaN` as Prometheus writes them.
fn parse_float(text: &str) -> anyhow::Result<f64> {
    match text {
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        _ => text
            .parse()
            .with_context(|| format!("{text:?} is not a number")),
    }
}

fn label<'a>(labels: &'a [(&str, String)], name: &str) -> Option<&'a str> {
    labels
        .iter()
        .find(|(label, _)| *label == name)
        .map(|(_, value)| value.as_str())
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    /// A page as the broker renders it: two stages, other families around them.
    const PAGE: &str = "\
# HELP sluice_requests_total Kafka requests answered.
# TYPE sluice_requests_total counter
sluice_requests_total{shard=\"0\",api=\"Produce\"} 12
# HELP sluice_produce_stage_latency_seconds Time produce requests spend in each stage.
# TYPE sluice_produce_stage_latency_seconds histogram
sluice_produce_stage_latency_seconds_bucket{stage=\"read\",le=\"0.000001\"} 0
sluice_produce_stage_latency_seconds_bucket{stage=\"read\",le=\"0.000002\"} 6
sluice_produce_stage_latency_seconds_bucket{stage=\"read\",le=\"0.000004\"} 9
sluice_produce_stage_latency_seconds_bucket{stage=\"read\",le=\"+Inf\"} 10
sluice_produce_stage_latency_seconds_sum{stage=\"read\"} 0.5
sluice_produce_stage_latency_seconds_count{stage=\"read\"} 10
sluice_produce_stage_latency_seconds_bucket{stage=\"sync\",le=\"0.000001\"} 0
sluice_produce_stage_latency_seconds_bucket{stage=\"sync\",le=\"0.000002\"} 0
sluice_produce_stage_latency_seconds_bucket{stage=\"sync\",le=\"0.000004\"} 0
sluice_produce_stage_latency_seconds_bucket{stage=\"sync\",le=\"+Inf\"} 0
sluice_produce_stage_latency_seconds_sum{stage=\"sync\"} 0
sluice_produce_stage_latency_seconds_count{stage=\"sync\"} 0
sluice_partition_produce_bytes_total{topic=\"a\\\"b\",partition=\"3\"} 7
";

    fn histogram(buckets: &[(f64, u64)]) -> BucketHistogram {
        BucketHistogram {
            buckets: buckets.to_vec(),
            sum_seconds: 0.0,
        }
    }

    #[test]
    fn the_stage_family_is_parsed_out_of_the_page() {
        let stages = parse_stages(PAGE).unwrap();
        let names: Vec<&str> = stages.iter().map(|(s, _)| s.as_str()).collect();
        assert_eq!(names, ["read", "sync"]);
        let read = &stages[0].1;
        assert_eq!(
            read.buckets,
            [(1e-6, 0), (2e-6, 6), (4e-6, 9), (f64::INFINITY, 10)]
        );
        assert_eq!(read.sum_seconds, 0.5);
        assert_eq!(read.count(), 10);
        assert_eq!(stages[1].1.count(), 0);
    }

    #[test]
    fn a_page_without_the_family_or_with_broken_buckets_is_refused() {
        let error = parse_stages("# TYPE up gauge\nup 1\n").unwrap_err();
        assert!(format!("{error:#}").contains("no sluice_produce_stage_latency_seconds"));
        let unordered = "sluice_produce_stage_latency_seconds_bucket{stage=\"read\",le=\"0.2\"} 5\n\
                         sluice_produce_stage_latency_seconds_bucket{stage=\"read\",le=\"0.1\"} 6\n";
        assert!(parse_stages(unordered).is_err());
        let no_inf = "sluice_produce_stage_latency_seconds_bucket{stage=\"read\",le=\"0.1\"} 5\n";
        assert!(format!("{:#}", parse_stages(no_inf).unwrap_err()).contains("+Inf"));
        let no_stage = "sluice_produce_stage_latency_seconds_bucket{le=\"+Inf\"} 5\n";
        assert!(parse_stages(no_stage).is_err());
        let garbage = "sluice_produce_stage_latency_seconds_bucket{stage=\"read\" 5\n";
        assert!(parse_stages(garbage).is_err());
    }

    #[test]
    fn percentiles_are_the_upper_bounds_of_their_buckets() {
        // 100 observations: 50 under 1 ms, 49 under 2 ms, 1 under 4 ms.
        let h = histogram(&[(0.001, 50), (0.002, 99), (0.004, 100), (f64::INFINITY, 100)]);
        assert_eq!(h.quantile_upper_bound_seconds(0.5), Some(0.001));
        assert_eq!(h.quantile_upper_bound_seconds(0.51), Some(0.002));
        assert_eq!(h.quantile_upper_bound_seconds(0.99), Some(0.002));
        assert_eq!(h.quantile_upper_bound_seconds(0.999), Some(0.004));
        assert_eq!(h.quantile_upper_bound_seconds(1.0), Some(0.004));
        let empty = histogram(&[(0.001, 0), (f64::INFINITY, 0)]);
        assert_eq!(empty.quantile_upper_bound_seconds(0.5), None);
        let beyond = histogram(&[(0.001, 1), (f64::INFINITY, 2)]);
        assert_eq!(
            beyond.quantile_upper_bound_seconds(0.99),
            Some(f64::INFINITY)
        );
    }

    #[test]
    fn figures_come_from_the_difference_of_two_scrapes() {
        let before = vec![(
            "sync".to_string(),
            BucketHistogram {
                buckets: vec![(0.001, 10), (0.002, 10), (f64::INFINITY, 10)],
                sum_seconds: 0.005,
            },
        )];
        let after = vec![
            (
                "sync".to_string(),
                BucketHistogram {
                    buckets: vec![(0.001, 10), (0.002, 1009), (f64::INFINITY, 1010)],
                    sum_seconds: 1.505,
                },
            ),
            ("respond".to_string(), histogram(&[(f64::INFINITY, 0)])),
        ];
        let figures = stage_figures(&before, &after).unwrap();
        let sync = &figures[0];
        assert_eq!(sync.count, 1000);
        assert_eq!(sync.avg_ms, Some(1.5));
        assert_eq!(sync.p50_ms, Some(2.0));
        assert_eq!(sync.p99_ms, Some(2.0));
        assert_eq!(sync.p999_ms, Some(2.0), "rank 999 of 1000");
        assert_eq!(figures[1].count, 0);
        assert_eq!(figures[1].p50_ms, None);
        let lines = report_lines(&figures);
        assert_eq!(lines.len(), 3);
        assert_eq!(
            lines[1],
            "sluice perf: stage sync    count=1000 avg=1.500 p50=2.000 p99=2.000 p99.9=2.000"
        );
        assert_eq!(
            lines[2],
            "sluice perf: stage respond count=0 avg=- p50=- p99=- p99.9=-"
        );
        // A broker restarted between the scrapes: its counts since the restart.
        let restarted = vec![(
            "sync".to_string(),
            histogram(&[(0.001, 3), (0.002, 3), (f64::INFINITY, 3)]),
        )];
        assert_eq!(stage_figures(&before, &restarted).unwrap()[0].count, 3);
    }

    #[test]
    fn urls_parse_or_say_why_not() {
        let url = MetricsUrl::parse("http://127.0.0.1:9644/metrics").unwrap();
        assert_eq!(url.to_string(), "http://127.0.0.1:9644/metrics");
        let url = MetricsUrl::parse("http://broker").unwrap();
        assert_eq!(url.to_string(), "http://broker:80/");
        let url = MetricsUrl::parse("http://[::1]:9644/metrics").unwrap();
        assert_eq!(url.to_string(), "http://[::1]:9644/metrics");
        for bad in [
            "127.0.0.1:9644/metrics",
            "https://127.0.0.1:9644/metrics",
            "http://:9644/metrics",
            "http://127.0.0.1:port/metrics",
            "http://127.0.0.1:99999/metrics",
            "http://[::1/metrics",
            "http://127.0.0.1:9644/a b",
        ] {
            let error = MetricsUrl::parse(bad).expect_err(bad);
            assert!(format!("{error:#}").contains(bad), "{bad}: {error:#}");
        }
    }

    #[test]
    fn a_scrape_reads_a_served_page_and_fails_clearly_on_errors() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            for (status, body) in [("200 OK", PAGE), ("404 Not Found", "no\n")] {
                let (mut stream, _) = listener.accept().unwrap();
                let mut request = Vec::new();
                let mut chunk = [0u8; 1024];
                while !request.ends_with(b"\r\n\r\n") {
                    let read = stream.read(&mut chunk).unwrap();
                    assert!(read > 0, "the request ended early");
                    request.extend_from_slice(&chunk[..read]);
                }
                assert!(request.starts_with(b"GET /metrics HTTP/1.0\r\n"));
                write!(
                    stream,
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
                .unwrap();
            }
        });
        let url = MetricsUrl::parse(&format!("http://{addr}/metrics")).unwrap();
        assert_eq!(scrape_stages(&url).unwrap().len(), 2);
        let error = format!("{:#}", scrape_stages(&url).unwrap_err());
        assert!(error.contains("404 Not Found"), "{error}");
        server.join().unwrap();
        // Nothing listens there any more.
        let error = format!("{:#}", scrape_stages(&url).unwrap_err());
        assert!(error.contains("cannot connect"), "{error}");
    }
}
