//! The `sluice` binary: command-line entry point of the broker.

mod cli;
mod ctl;
mod log_levels;
mod security_args;

use std::io::Write;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use sluice_shards::log_levels::LogLevels;

fn main() -> anyhow::Result<()> {
    let cli = cli::Cli::parse();
    let levels = init_logs(&cli.command);
    match cli.command {
        cli::Command::Start(args) => start(*args, levels),
        cli::Command::Perf(args) => sluice_perf::run(*args).map(|_| ()),
        cli::Command::Tune(args) => tune(args),
        cli::Command::Topic(args) => administer(ctl::topic::main(args)),
        cli::Command::Group(args) => administer(ctl::group::main(args)),
        cli::Command::Cluster(args) => administer(ctl::cluster::main(args)),
        cli::Command::Partition(args) => administer(ctl::partition::main(args)),
        cli::Command::Broker(args) => administer(ctl::broker::main(args)),
        cli::Command::User(args) => administer(ctl::user::main(args)),
        cli::Command::Quota(args) => administer(ctl::quota::main(args)),
        cli::Command::Acl(args) => administer(ctl::acl::main(args)),
    }
}

/// An administration command's failure is one line naming the problem, and exit status 1.
fn administer(result: anyhow::Result<()>) -> anyhow::Result<()> {
    if let Err(error) = result {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
    Ok(())
}

/// The log filter without `SLUICE_LOG`.
const DEFAULT_LOG_FILTER: &str = "info,openraft=off";

/// Installs the log subscriber (text, or JSON for `start --log-format json`) with its filter
/// from `SLUICE_LOG` (default `info,openraft=off`: openraft logs every vote at INFO and every
/// failed RPC to a dead peer at ERROR; `quorum/node.rs` logs the leader changes) behind a reload handle: the levels it returns change at
/// run time through IncrementalAlterConfigs on BROKER_LOGGER.
fn init_logs(command: &cli::Command) -> Arc<dyn LogLevels> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let initial = std::env::var("SLUICE_LOG").unwrap_or_else(|_| DEFAULT_LOG_FILTER.to_string());
    let filter = tracing_subscriber::EnvFilter::try_new(&initial)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    let json =
        matches!(command, cli::Command::Start(args) if args.log_format == cli::LogFormat::Json);
    let registry = tracing_subscriber::registry().with(filter);
    if json {
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_writer(std::io::stderr),
            )
            .init();
    } else {
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
            )
            .init();
    }
    Arc::new(log_levels::ReloadableLevels::new(handle, &initial))
}

/// `--process-roles controller`: this node's part of the quorum until a signal.
fn start_controller_only(
    config: &sluice_shards::BrokerConfig,
    stop: StopSignals,
) -> anyhow::Result<()> {
    let controller = sluice_shards::ControllerOnly::start(config).with_context(|| {
        format!(
            "starting the controller on data dir {}",
            config.data_dir.display()
        )
    })?;
    let Some(quorum) = &config.quorum else {
        anyhow::bail!("a controller needs --controller-quorum-voters");
    };
    let voters: Vec<&u64> = quorum.voters.keys().collect();
    let mut stdout = std::io::stdout();
    // The line scripts wait for, as a broker's.
    writeln!(
        stdout,
        "sluice listening on {} (controller {} of the quorum {voters:?}, data dir {})",
        quorum.controller_listen,
        config.node_id,
        config.data_dir.display()
    )?;
    stdout.flush()?;
    if let Some(signal) = stop.started_then_wait() {
        tracing::info!(signal, "stopping the controller");
    }
    controller.stop();
    tracing::info!("stopped");
    Ok(())
}

/// SIGTERM and SIGINT, watched from the start: one that comes while the node is still
/// starting (waiting for the controller quorum, replaying the WAL) ends the process at once,
/// as nothing is acknowledged yet; after the start, the node stops in order.
struct StopSignals {
    started: Arc<std::sync::atomic::AtomicBool>,
    received: std::sync::mpsc::Receiver<i32>,
}

impl StopSignals {
    fn watch(mut signals: signal_hook::iterator::Signals) -> anyhow::Result<StopSignals> {
        let started = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (sender, received) = std::sync::mpsc::channel();
        let watching = started.clone();
        std::thread::Builder::new()
            .name("sluice-signals".into())
            .spawn(move || {
                for signal in signals.forever() {
                    if !watching.load(std::sync::atomic::Ordering::SeqCst) {
                        tracing::info!(signal, "stopped before the start finished");
                        std::process::exit(0);
                    }
                    let _ = sender.send(signal);
                }
            })
            .context("starting the signal thread")?;
        Ok(StopSignals { started, received })
    }

    /// Marks the start done and waits for a signal.
    fn started_then_wait(self) -> Option<i32> {
        self.started
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.received.recv().ok()
    }
}

/// Advice is not a failure: this returns an error only when the run itself failed.
fn tune(args: cli::TuneArgs) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    sluice_tuning::run(&args.into_options(), &mut stdout)?;
    stdout.flush()?;
    Ok(())
}

fn start(args: cli::StartArgs, levels: Arc<dyn LogLevels>) -> anyhow::Result<()> {
    let (mut config, roles) = args.into_config()?;
    config.log_levels = Some(levels);
    // Block the signals before any thread starts so that only the waiter below sees them.
    let signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ])
    .context("installing SIGTERM / SIGINT handlers")?;
    let stop = StopSignals::watch(signals)?;
    if roles == cli::ProcessRoles::Controller {
        return start_controller_only(&config, stop);
    }
    let data_dir = config.data_dir.clone();
    let shards = config.shard_count();
    let listeners: Vec<_> = config
        .listeners
        .iter()
        .map(|l| (l.name.clone(), l.protocol.name()))
        .collect();
    let mut broker = sluice_shards::Broker::start(config)
        .with_context(|| format!("starting the broker on data dir {}", data_dir.display()))?;
    let mut stdout = std::io::stdout();
    if listeners.len() > 1 || listeners[0].1 != "PLAINTEXT" {
        // Before the listening line, which scripts read first.
        for ((name, protocol), addr) in listeners.iter().zip(broker.listener_addrs()) {
            writeln!(stdout, "sluice listener {name} ({protocol}) on {addr}")?;
        }
    }
    writeln!(
        stdout,
        "sluice listening on {} ({shards} shards, data dir {})",
        broker.local_addr(),
        data_dir.display()
    )?;
    // After the listening line, which scripts read first.
    if let Some(admin) = broker.admin_addr() {
        writeln!(stdout, "sluice admin on {admin}")?;
    }
    stdout.flush()?;
    if let Some(signal) = stop.started_then_wait() {
        tracing::info!(
            signal,
            "stopping: answering requests in flight, syncing the WAL"
        );
    }
    broker.stop();
    tracing::info!("stopped");
    Ok(())
}
