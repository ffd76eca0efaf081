//! Core dumps: a crashed broker should leave a core (the release build keeps debug info,
//! `profile.release.debug = 1`), or the crash cannot be diagnosed. Checks RLIMIT_CORE of
//! this shell, which `sluice start` run from it inherits, and where the kernel sends cores.

use crate::host::{self, Gap, Host, show_limit_bytes};
use crate::{Finding, Tuner};

/// The core dump check (advice only: limits belong to the service manager).
pub(crate) struct Coredump;

const PATTERN: &str = "/proc/sys/kernel/core_pattern";

impl Tuner for Coredump {
    fn name(&self) -> &'static str {
        "coredump"
    }

    fn check(&self, host: &Host) -> Result<Finding, Gap> {
        let pattern = host.read(PATTERN)?;
        let (soft, _) = host::rlimit(libc::RLIMIT_CORE).ok_or_else(|| {
            Gap::Error(format!(
                "getrlimit(RLIMIT_CORE): {}",
                std::io::Error::last_os_error()
            ))
        })?;
        Ok(evaluate(self.name(), &pattern, soft))
    }
}

fn evaluate(tuner: &'static str, pattern: &str, soft: u64) -> Finding {
    let limit = if soft == 0 {
        "0".to_owned()
    } else {
        show_limit_bytes(soft)
    };
    let current = format!("ulimit -c {limit}, core_pattern {pattern:?}");
    let recommended = "ulimit -c unlimited, a core_pattern that keeps cores";
    if pattern.is_empty() {
        return Finding::advice(
            tuner,
            current,
            recommended,
            "an empty core_pattern drops cores: `sysctl -w kernel.core_pattern=/var/crash/core.%e.%p`",
        );
    }
    // The kernel writes no core above the limit; a truncated core is useless.
    if soft != libc::RLIM_INFINITY {
        return Finding::advice(
            tuner,
            current,
            recommended,
            "`ulimit -c unlimited` before `sluice start`; under systemd `LimitCORE=infinity`",
        );
    }
    let note = if pattern.starts_with('|') {
        "cores go to a handler (systemd-coredump: `coredumpctl list sluice`)"
    } else {
        "cores are written per core_pattern"
    };
    Finding::ok(tuner, current, recommended, note)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Status;
    use crate::testing::FakeRoot;

    #[test]
    fn limits_and_patterns() {
        let unlimited = libc::RLIM_INFINITY;
        assert_eq!(evaluate("coredump", "core", 0).status, Status::Advice);
        assert_eq!(evaluate("coredump", "", unlimited).status, Status::Advice);
        let piped = evaluate("coredump", "|/lib/systemd/systemd-coredump %P", unlimited);
        assert_eq!(piped.status, Status::Ok);
        assert!(piped.advice.contains("coredumpctl"));
    }

    #[test]
    fn pattern_is_read_from_the_root() {
        let fake = FakeRoot::new();
        fake.file(PATTERN, "core\n");
        let finding = Coredump.check(&fake.host(1)).expect("readable");
        assert!(
            finding.current.ends_with("core_pattern \"core\""),
            "{}",
            finding.current
        );
        assert!(matches!(
            Coredump.check(&FakeRoot::new().host(1)),
            Err(Gap::Unsupported(_))
        ));
    }
}
