//! `sluice topic | group | cluster`: administration of a running broker in the manner of
//! Redpanda's `rpk`, over the Kafka protocol with Sluice's own codec (`sluice-net`) and the
//! client of `sluice perf` (no second Kafka client library in the binary).
//!
//! The broker is `--brokers HOST:PORT[,HOST:PORT...]` (the first that answers), else
//! `SLUICE_BROKERS`, else 127.0.0.1:9092. Output is a table, or JSON with `--format json`.

pub mod cluster;
pub mod group;
mod output;
pub mod topic;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use sluice_perf::client::Connection;

pub use output::{Format, Table};

/// How long one request to the broker may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The broker to talk to and how to print; shared by every administration command.
#[derive(Debug, Clone, clap::Args)]
pub struct Target {
    /// Broker addresses, HOST:PORT, comma-separated: the first that answers is used.
    #[arg(
        long,
        global = true,
        env = "SLUICE_BROKERS",
        default_value = "127.0.0.1:9092",
        value_name = "HOST:PORT,..."
    )]
    pub brokers: String,
    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

/// Runs `work` with a connection to the target broker on a small runtime of its own.
pub fn run<T, F>(target: &Target, work: impl FnOnce(Arc<Connection>) -> F) -> anyhow::Result<T>
where
    F: Future<Output = anyhow::Result<T>>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(async {
        let connection = connect(&target.brokers).await?;
        work(connection).await
    })
}

/// A connection to the first of `brokers` that answers.
async fn connect(brokers: &str) -> anyhow::Result<Arc<Connection>> {
    let mut failures = Vec::new();
    for address in brokers.split(',').map(str::trim).filter(|a| !a.is_empty()) {
        match Connection::connect(address, "sluice-cli", REQUEST_TIMEOUT).await {
            Ok(connection) => return Ok(connection),
            Err(error) => failures.push(format!("{address}: {error:#}")),
        }
    }
    if failures.is_empty() {
        bail!("--brokers names no address");
    }
    bail!("no broker answered ({})", failures.join("; "))
}

/// Fails with Kafka's name for `code` unless it is 0.
pub fn check(code: i16, what: impl FnOnce() -> String) -> anyhow::Result<()> {
    if code != 0 {
        bail!("{}: {}", what(), sluice_perf::client::error_name(code));
    }
    Ok(())
}

/// `KEY=VALUE` split at its first `=`.
pub fn key_value(text: &str) -> anyhow::Result<(String, String)> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => bail!("{text:?} is not KEY=VALUE"),
    }
}
