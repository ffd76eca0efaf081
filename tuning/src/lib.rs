//! `sluice tune`: checks the host a broker will run on (io_uring, memlock, CPU topology, the
//! WAL disk, kernel knobs), says what to change with the exact command, and applies the safe
//! changes (sysfs and /proc writes) when asked. The list follows Redpanda's `rpk redpanda tune`.
//!
//! Every tuner reads /proc and /sys under a root directory ("/" on a real machine) so that
//! tests run against fake trees. A tuner never panics on odd content: a missing file is
//! `Unsupported` (containers hide much of /sys), unreadable or unparsable content is `Error`.

mod aio_events;
mod ballast_file;
mod clocksource;
mod coredump;
mod cpu_governor;
pub mod cpu_layout;
mod cpu_topology;
mod direct_io;
mod disk_nomerges;
mod disk_scheduler;
mod fstrim;
mod host;
mod io_uring;
mod irq_affinity;
mod memlock;
mod net;
mod swappiness;
#[cfg(test)]
mod testing;
mod transparent_hugepages;

use std::io::Write;
use std::path::PathBuf;

use serde::Serialize;

use crate::host::{Gap, Host};

/// What `sluice tune` should check and whether to change anything.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where /proc and /sys are found: "/" on a real machine, a fake tree in tests.
    pub root: PathBuf,
    /// The broker's data directory (holds the WAL); it need not exist yet.
    pub data_dir: PathBuf,
    /// Shards the broker will run; `None` means one per available CPU, as `sluice start`.
    pub shards: Option<usize>,
    /// Apply the safe fixes (sysfs and /proc writes); needs root.
    pub apply: bool,
    /// Print JSON instead of a table.
    pub json: bool,
    /// Run only these tuners (by name); empty runs all.
    pub only: Vec<String>,
}

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Nothing to change.
    Ok,
    /// A change is recommended; the advice says how.
    Advice,
    /// This host has no such knob (or hides it): nothing to check.
    Unsupported,
    /// The check itself failed; the advice says why.
    Error,
}

/// One tuner's result.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// The tuner's name, as `--only` takes it.
    pub tuner: &'static str,
    /// How the check came out.
    pub status: Status,
    /// The value found on the host.
    pub current: String,
    /// The value Sluice wants.
    pub recommended: String,
    /// What to do (the exact command or sysctl), or why nothing could be checked.
    pub advice: String,
    /// The writes `--apply` performs; empty when the change is not safe to automate.
    pub fix: Vec<SysWrite>,
}

/// A value to write into a sysfs or /proc file (a host path, under `Options::root`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SysWrite {
    /// The file, as a host path such as `/proc/sys/vm/swappiness`.
    pub path: String,
    /// What to write.
    pub value: String,
}

/// The result of a run: every finding, and those `--apply` fixed (as they were before).
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// One finding per tuner run, after any fix was applied.
    pub findings: Vec<Finding>,
    /// The findings whose fixes were written, as they were before the writes.
    pub applied: Vec<Finding>,
}

/// Why `sluice tune` failed (advice is not a failure).
#[derive(Debug, thiserror::Error)]
pub enum TuneError {
    /// `--only` named a tuner that does not exist.
    #[error("unknown tuner {name:?}; the tuners are: {known}")]
    UnknownTuner {
        /// The name given.
        name: String,
        /// Every tuner's name, comma-separated.
        known: String,
    },
    /// `--shards 0`.
    #[error("--shards must be at least 1")]
    NoShards,
    /// `--apply` by a user other than root.
    #[error(
        "--apply writes to /proc and /sys and needs root (running as uid {euid}); \
         run without --apply to see the advice"
    )]
    NotRoot {
        /// The effective user id.
        euid: u32,
    },
    /// Some fixes could not be written; the others were.
    #[error("--apply could not write: {0}")]
    Apply(String),
    /// The report could not be written out.
    #[error("writing the report: {0}")]
    Output(#[from] std::io::Error),
    /// The JSON report could not be produced.
    #[error("writing the JSON report: {0}")]
    Json(#[from] serde_json::Error),
}

/// Runs the selected tuners, applies safe fixes if asked, and writes the report to `out`.
pub fn run(options: &Options, out: &mut dyn Write) -> Result<Outcome, TuneError> {
    let tuners = select(&options.only)?;
    if options.shards == Some(0) {
        return Err(TuneError::NoShards);
    }
    if options.apply && host::euid() != 0 {
        return Err(TuneError::NotRoot { euid: host::euid() });
    }
    let host = Host {
        root: options.root.clone(),
        data_dir: options.data_dir.clone(),
        shards: options.shards.unwrap_or_else(default_shards),
    };
    let mut findings: Vec<Finding> = tuners.iter().map(|t| check(*t, &host)).collect();
    let mut applied = Vec::new();
    let mut failures = Vec::new();
    if options.apply {
        for (tuner, finding) in tuners.iter().zip(findings.iter_mut()) {
            if finding.status != Status::Advice || finding.fix.is_empty() {
                continue;
            }
            match write_fix(&host, &finding.fix) {
                Ok(()) => applied.push(std::mem::replace(finding, check(*tuner, &host))),
                Err(reason) => failures.push(format!("{}: {reason}", tuner.name())),
            }
        }
    }
    let outcome = Outcome { findings, applied };
    if options.json {
        serde_json::to_writer_pretty(&mut *out, &outcome)?;
        writeln!(out)?;
    } else {
        write_table(&outcome, &failures, out)?;
    }
    if failures.is_empty() {
        Ok(outcome)
    } else {
        Err(TuneError::Apply(failures.join("; ")))
    }
}

/// One check of the host. Applying is data, not code: a safe tuner's finding carries the
/// writes (`Finding::fix`) and `write_fix` performs them, so what `--apply` does is exactly
/// what the advice says.
pub(crate) trait Tuner: Sync {
    /// The name shown in the table and taken by `--only`.
    fn name(&self) -> &'static str;
    /// Reads the host and says what should change.
    fn check(&self, host: &Host) -> Result<Finding, Gap>;
}

/// Every tuner, in report order: what the broker cannot start without first, then the disk,
/// then kernel knobs.
static TUNERS: &[&dyn Tuner] = &[
    &io_uring::IoUring,
    &memlock::Memlock,
    &cpu_topology::CpuTopology,
    &cpu_governor::CpuGovernor,
    &irq_affinity::IrqAffinity,
    &disk_scheduler::DiskScheduler,
    &disk_nomerges::DiskNomerges,
    &direct_io::DirectIo,
    &fstrim::Fstrim,
    &aio_events::AioEvents,
    &clocksource::Clocksource,
    &swappiness::Swappiness,
    &transparent_hugepages::TransparentHugepages,
    &coredump::Coredump,
    &net::Net,
    &ballast_file::BallastFile,
];

impl Finding {
    /// A finding with nothing to change; `note` says why the value is fine.
    pub(crate) fn ok(
        tuner: &'static str,
        current: impl Into<String>,
        recommended: impl Into<String>,
        note: impl Into<String>,
    ) -> Self {
        Self::new(tuner, Status::Ok, current, recommended, note)
    }

    /// A finding that recommends a change; `advice` holds the command.
    pub(crate) fn advice(
        tuner: &'static str,
        current: impl Into<String>,
        recommended: impl Into<String>,
        advice: impl Into<String>,
    ) -> Self {
        Self::new(tuner, Status::Advice, current, recommended, advice)
    }

    /// The same finding with writes for `--apply`.
    pub(crate) fn with_fix(mut self, fix: Vec<SysWrite>) -> Self {
        self.fix = fix;
        self
    }

    fn new(
        tuner: &'static str,
        status: Status,
        current: impl Into<String>,
        recommended: impl Into<String>,
        advice: impl Into<String>,
    ) -> Self {
        Self {
            tuner,
            status,
            current: current.into(),
            recommended: recommended.into(),
            advice: advice.into(),
            fix: Vec::new(),
        }
    }
}

impl SysWrite {
    /// A write of `value` to the host path `path`.
    pub(crate) fn new(path: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            value: value.into(),
        }
    }
}

/// The tuners named by `--only` (all when empty), in report order.
fn select(only: &[String]) -> Result<Vec<&'static dyn Tuner>, TuneError> {
    for name in only {
        if !TUNERS.iter().any(|t| t.name() == name) {
            let known: Vec<&str> = TUNERS.iter().map(|t| t.name()).collect();
            return Err(TuneError::UnknownTuner {
                name: name.clone(),
                known: known.join(", "),
            });
        }
    }
    Ok(TUNERS
        .iter()
        .copied()
        .filter(|t| only.is_empty() || only.iter().any(|n| n == t.name()))
        .collect())
}

fn check(tuner: &dyn Tuner, host: &Host) -> Finding {
    tuner
        .check(host)
        .unwrap_or_else(|gap| gap.into_finding(tuner.name()))
}

/// The shard count `sluice start` picks by default: one per CPU the process may use.
fn default_shards() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Writes each value into its existing file (never creates one: a wrong path must fail, not
/// leave a stray file in /proc or /sys).
fn write_fix(host: &Host, fix: &[SysWrite]) -> Result<(), String> {
    for write in fix {
        let path = host.path(&write.path);
        std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&path)
            .and_then(|mut file| file.write_all(write.value.as_bytes()))
            .map_err(|e| format!("{} <- {:?}: {e}", write.path, write.value))?;
    }
    Ok(())
}

fn write_table(outcome: &Outcome, failures: &[String], out: &mut dyn Write) -> std::io::Result<()> {
    const HEADER: [&str; 5] = ["TUNER", "STATUS", "CURRENT", "RECOMMENDED", "ADVICE"];
    let rows: Vec<[&str; 5]> = outcome
        .findings
        .iter()
        .map(|f| {
            [
                f.tuner,
                status_label(f.status),
                f.current.as_str(),
                f.recommended.as_str(),
                f.advice.as_str(),
            ]
        })
        .collect();
    let mut widths = HEADER.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    for row in std::iter::once(&HEADER).chain(&rows) {
        // The advice column is last and not padded: it is the long one.
        let line = format!(
            "{:w0$}  {:w1$}  {:w2$}  {:w3$}  {}",
            row[0],
            row[1],
            row[2],
            row[3],
            row[4],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3],
        );
        writeln!(out, "{}", line.trim_end())?;
    }
    for finding in &outcome.applied {
        for write in &finding.fix {
            writeln!(
                out,
                "applied {}: {} <- {}",
                finding.tuner, write.path, write.value
            )?;
        }
    }
    for failure in failures {
        writeln!(out, "not applied {failure}")?;
    }
    Ok(())
}

fn status_label(status: Status) -> &'static str {
    match status {
        Status::Ok => "ok",
        Status::Advice => "advice",
        Status::Unsupported => "unsupported",
        Status::Error => "error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::FakeRoot;

    fn options(fake: &FakeRoot, apply: bool, only: &[&str]) -> Options {
        Options {
            root: fake.root().to_path_buf(),
            data_dir: fake.data_dir(),
            shards: Some(1),
            apply,
            json: false,
            only: only.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    /// A host with something to fix for every safe tuner, and a low somaxconn (advice only).
    fn untuned() -> FakeRoot {
        let fake = FakeRoot::new();
        fake.disk(
            "nvme0n1",
            true,
            &[
                ("scheduler", "none [mq-deadline] kyber\n"),
                ("nomerges", "0\n"),
                ("rotational", "0\n"),
            ],
        )
        .file("/proc/sys/vm/swappiness", "60\n")
        .file("/proc/sys/fs/aio-max-nr", "65536\n")
        .file("/proc/sys/fs/aio-nr", "65000\n")
        .file(
            "/sys/kernel/mm/transparent_hugepage/enabled",
            "[always] madvise never\n",
        )
        .file(
            "/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor",
            "powersave\n",
        )
        .file(
            "/sys/devices/system/cpu/cpu0/cpufreq/scaling_available_governors",
            "performance powersave\n",
        )
        .file("/proc/sys/net/core/somaxconn", "128\n")
        .file("/proc/sys/net/ipv4/tcp_max_syn_backlog", "128\n");
        fake
    }

    #[test]
    fn apply_writes_the_safe_fixes_and_nothing_else() {
        let fake = untuned();
        let mut out = Vec::new();
        let outcome = run(&options(&fake, true, &[]), &mut out).expect("run");
        let text = String::from_utf8(out).expect("utf-8");

        assert_eq!(fake.read("/sys/block/nvme0n1/queue/scheduler"), "none");
        assert_eq!(fake.read("/sys/block/nvme0n1/queue/nomerges"), "2");
        assert_eq!(fake.read("/proc/sys/vm/swappiness"), "1");
        assert_eq!(fake.read("/proc/sys/fs/aio-max-nr"), "1048576");
        assert_eq!(
            fake.read("/sys/kernel/mm/transparent_hugepage/enabled"),
            "madvise"
        );
        assert_eq!(
            fake.read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"),
            "performance"
        );
        assert_eq!(
            fake.read("/proc/sys/net/core/somaxconn"),
            "128",
            "advice only"
        );

        let mut applied: Vec<&str> = outcome.applied.iter().map(|f| f.tuner).collect();
        applied.sort_unstable();
        assert_eq!(
            applied,
            [
                "aio_events",
                "cpu_governor",
                "disk_nomerges",
                "disk_scheduler",
                "swappiness",
                "transparent_hugepages"
            ]
        );
        assert!(
            text.contains("applied swappiness: /proc/sys/vm/swappiness <- 1"),
            "{text}"
        );
        let swappiness = outcome.findings.iter().find(|f| f.tuner == "swappiness");
        assert_eq!(
            swappiness.map(|f| f.status),
            Some(Status::Ok),
            "re-checked after the fix"
        );
        let net = outcome
            .findings
            .iter()
            .find(|f| f.tuner == "net")
            .expect("net ran");
        assert_eq!(net.status, Status::Advice);
        assert_eq!(outcome.findings.len(), TUNERS.len());
    }

    #[test]
    fn without_apply_nothing_is_written() {
        let fake = untuned();
        let outcome = run(&options(&fake, false, &["swappiness"]), &mut Vec::new()).expect("run");
        assert_eq!(fake.read("/proc/sys/vm/swappiness"), "60");
        assert_eq!(outcome.findings.len(), 1);
        assert_eq!(outcome.findings[0].status, Status::Advice);
        assert!(outcome.applied.is_empty());
    }

    #[test]
    fn json_report_parses() {
        let fake = untuned();
        let mut opts = options(&fake, false, &["swappiness", "net"]);
        opts.json = true;
        let mut out = Vec::new();
        run(&opts, &mut out).expect("run");
        let report: serde_json::Value = serde_json::from_slice(&out).expect("json");
        // Report order, not --only order.
        assert_eq!(report["findings"][0]["tuner"], "swappiness");
        assert_eq!(report["findings"][0]["status"], "advice");
        assert_eq!(report["findings"][0]["fix"][0]["value"], "1");
        assert_eq!(report["findings"][1]["tuner"], "net");
    }

    #[test]
    fn bad_options_are_named() {
        let fake = FakeRoot::new();
        let unknown = run(&options(&fake, false, &["swapiness"]), &mut Vec::new());
        let message = unknown.expect_err("unknown tuner").to_string();
        assert!(
            message.contains("\"swapiness\"") && message.contains("swappiness"),
            "{message}"
        );
        let mut zero = options(&fake, false, &[]);
        zero.shards = Some(0);
        assert!(matches!(
            run(&zero, &mut Vec::new()),
            Err(TuneError::NoShards)
        ));
    }

    #[test]
    fn fixes_never_create_files() {
        let fake = FakeRoot::new();
        let host = Host {
            root: fake.root().to_path_buf(),
            data_dir: fake.data_dir(),
            shards: 1,
        };
        let fix = [SysWrite::new("/proc/sys/vm/swappiness", "1")];
        let reason = write_fix(&host, &fix).expect_err("no such file");
        assert!(
            reason.starts_with("/proc/sys/vm/swappiness <- \"1\""),
            "{reason}"
        );
        assert!(!fake.root().join("proc/sys/vm/swappiness").exists());
    }
}
