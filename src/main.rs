//! The `sluice` binary: command-line entry point of the broker.

mod cli;
mod ctl;

use std::io::Write;

use anyhow::Context;
use clap::Parser;

fn main() -> anyhow::Result<()> {
    let cli = cli::Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match &cli.command {
        cli::Command::Start(args) if args.log_format == cli::LogFormat::Json => logs.json().init(),
        _ => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
    match cli.command {
        cli::Command::Start(args) => start(args),
        cli::Command::Perf(args) => sluice_perf::run(args).map(|_| ()),
        cli::Command::Tune(args) => tune(args),
        cli::Command::Topic(args) => administer(ctl::topic::main(args)),
        cli::Command::Group(args) => administer(ctl::group::main(args)),
        cli::Command::Cluster(args) => administer(ctl::cluster::main(args)),
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

/// Advice is not a failure: this returns an error only when the run itself failed.
fn tune(args: cli::TuneArgs) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    sluice_tuning::run(&args.into_options(), &mut stdout)?;
    stdout.flush()?;
    Ok(())
}

fn start(args: cli::StartArgs) -> anyhow::Result<()> {
    let config = args.into_config()?;
    // Block the signals before any thread starts so that only the waiter below sees them.
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ])
    .context("installing SIGTERM / SIGINT handlers")?;
    let data_dir = config.data_dir.clone();
    let shards = config.shard_count();
    let mut broker = sluice_shards::Broker::start(config)
        .with_context(|| format!("starting the broker on data dir {}", data_dir.display()))?;
    let mut stdout = std::io::stdout();
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
    if let Some(signal) = signals.forever().next() {
        tracing::info!(
            signal,
            "stopping: answering requests in flight, syncing the WAL"
        );
    }
    broker.stop();
    tracing::info!("stopped");
    Ok(())
}
