//! `sluice topic | group | cluster | partition | broker | user | quota | acl`: administration of a running broker in the manner of
//! Redpanda's `rpk`, over the Kafka protocol with Sluice's own codec (`sluice-net`) and the
//! client of `sluice perf` (no second Kafka client library in the binary).
//!
//! The broker is `--brokers HOST:PORT[,HOST:PORT...]` (the first that answers), else
//! `SLUICE_BROKERS`, else the profile's (`--profile FILE`, `SLUICE_PROFILE`, or
//! `~/.config/sluice/profile.toml`), else 127.0.0.1:9092. Output is a table, or JSON with
//! `--format json`.

pub mod acl;
pub mod broker;
pub mod cluster;
pub mod group;
mod output;
pub mod partition;
pub mod quota;
pub mod topic;
pub mod user;

use std::future::Future;
use std::path::PathBuf;
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
    /// [default: the profile's `brokers`, else 127.0.0.1:9092]
    #[arg(
        long,
        global = true,
        env = "SLUICE_BROKERS",
        value_name = "HOST:PORT,..."
    )]
    brokers: Option<String>,
    /// Output format. [default: the profile's `format`, else text]
    #[arg(long, global = true, value_enum)]
    format: Option<Format>,
    /// A TOML profile with `brokers = "HOST:PORT,..."` and `format = "json"` (either may be
    /// left out). [default: ~/.config/sluice/profile.toml, when it exists]
    #[arg(long, global = true, env = "SLUICE_PROFILE", value_name = "FILE")]
    profile: Option<PathBuf>,
}

/// What a profile file may set.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Profile {
    brokers: Option<String>,
    format: Option<Format>,
}

/// Where the broker is and how to print, resolved: a flag, else the environment, else the
/// profile, else the default.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub brokers: String,
    pub format: Format,
}

impl Target {
    /// The flags resolved against the profile.
    pub fn resolve(&self) -> anyhow::Result<Resolved> {
        let profile = self.profile()?;
        Ok(Resolved {
            brokers: self
                .brokers
                .clone()
                .or(profile.brokers)
                .unwrap_or_else(|| DEFAULT_BROKERS.to_string()),
            format: self.format.or(profile.format).unwrap_or(Format::Text),
        })
    }

    fn profile(&self) -> anyhow::Result<Profile> {
        let (path, required) = match &self.profile {
            Some(path) => (path.clone(), true),
            None => match std::env::var_os("HOME") {
                Some(home) => (
                    PathBuf::from(home).join(".config/sluice/profile.toml"),
                    false,
                ),
                None => return Ok(Profile::default()),
            },
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Profile::default());
            }
            Err(e) => bail!("profile {}: {e}", path.display()),
        };
        toml::from_str(&text).with_context(|| format!("profile {}", path.display()))
    }
}

/// The broker when neither a flag, the environment nor a profile names one.
const DEFAULT_BROKERS: &str = "127.0.0.1:9092";

/// Runs `work` with a connection to the target broker on a small runtime of its own.
pub fn run<T, F>(target: &Resolved, work: impl FnOnce(Arc<Connection>) -> F) -> anyhow::Result<T>
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

/// `what`, with the broker's message beside it when there is one (for [`check`]).
pub fn with_message(what: &str, message: Option<&str>) -> String {
    match message {
        Some(message) => format!("{what} ({message})"),
        None => what.to_string(),
    }
}

/// `KEY=VALUE` split at its first `=`.
pub fn key_value(text: &str) -> anyhow::Result<(String, String)> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => bail!("{text:?} is not KEY=VALUE"),
    }
}
