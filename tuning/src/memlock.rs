//! RLIMIT_MEMLOCK: glommio registers its I/O buffers with io_uring, which locks them. Below
//! what the shards need, `sluice start` shrinks each shard's I/O memory (and says so), which
//! costs throughput; see `io_memory_bytes` in shards/src/runtime.rs.

use crate::host::{self, Gap, Host, show_bytes, show_limit_bytes};
use crate::{Finding, Tuner};

/// The memlock check.
pub(crate) struct Memlock;

/// I/O memory per executor, `IO_MEMORY_BYTES_DEFAULT` in shards/src/runtime.rs (private
/// there, hence the copy; keep them equal).
const IO_MEMORY_BYTES: u64 = 10 << 20;

/// glommio locks this many times `io_memory` per executor (its main, latency and poll rings).
const LOCKED_COPIES: u64 = 3;

/// Bit of CAP_IPC_LOCK in /proc/PID/status `CapEff`: with it, the limit does not apply.
const CAP_IPC_LOCK_BIT: u32 = 14;

impl Tuner for Memlock {
    fn name(&self) -> &'static str {
        "memlock"
    }

    fn check(&self, host: &Host) -> Result<Finding, Gap> {
        let limit = host::rlimit(libc::RLIMIT_MEMLOCK).ok_or_else(|| {
            Gap::Error(format!(
                "getrlimit(RLIMIT_MEMLOCK): {}",
                std::io::Error::last_os_error()
            ))
        })?;
        let cap_ipc_lock = match host.read("/proc/self/status") {
            Ok(status) => has_cap_ipc_lock(&status),
            // Without /proc, assume the capability is missing: the advice is then safe.
            Err(Gap::Unsupported(_)) => false,
            Err(gap) => return Err(gap),
        };
        Ok(evaluate(self.name(), limit, cap_ipc_lock, host.shards))
    }
}

/// What `shards` executors lock.
fn needed_bytes(shards: usize) -> u64 {
    LOCKED_COPIES * shards as u64 * IO_MEMORY_BYTES
}

fn evaluate(tuner: &'static str, (soft, hard): (u64, u64), cap: bool, shards: usize) -> Finding {
    let needed = needed_bytes(shards);
    let current = format!(
        "soft {}, hard {}{}",
        show_limit_bytes(soft),
        show_limit_bytes(hard),
        if cap { ", CAP_IPC_LOCK" } else { "" }
    );
    let recommended = format!(
        ">= {} ({LOCKED_COPIES} x {shards} shards x {})",
        show_bytes(needed),
        show_bytes(IO_MEMORY_BYTES)
    );
    let fits = |limit: u64| limit == libc::RLIM_INFINITY || limit >= needed;
    if cap {
        Finding::ok(
            tuner,
            current,
            recommended,
            "CAP_IPC_LOCK: the limit does not apply",
        )
    } else if fits(soft) {
        Finding::ok(tuner, current, recommended, "the shards' I/O buffers fit")
    } else if fits(hard) {
        Finding::ok(
            tuner,
            current,
            recommended,
            "sluice start raises the soft limit to what it needs (the hard limit allows it)",
        )
    } else {
        Finding::advice(
            tuner,
            current,
            recommended,
            "shards would get less I/O memory: `ulimit -l unlimited` before `sluice start`; \
             under systemd `LimitMEMLOCK=infinity`; or `sluice - memlock unlimited` in \
             /etc/security/limits.d/sluice.conf",
        )
    }
}

/// Whether a /proc/PID/status text grants CAP_IPC_LOCK in `CapEff` (false if unparsable).
fn has_cap_ipc_lock(status: &str) -> bool {
    status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << CAP_IPC_LOCK_BIT) != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Status;
    use crate::testing::FakeRoot;

    const MIB: u64 = 1 << 20;

    #[test]
    fn low_limit_without_capability_is_advice() {
        let finding = evaluate("memlock", (8 * MIB, 8 * MIB), false, 4);
        assert_eq!(finding.status, Status::Advice);
        assert_eq!(finding.current, "soft 8MiB, hard 8MiB");
        assert!(finding.recommended.starts_with(">= 120MiB"), "{finding:?}");
        assert!(finding.advice.contains("ulimit -l unlimited"));
    }

    #[test]
    fn raisable_soft_limit_and_capability_are_ok() {
        let unlimited = libc::RLIM_INFINITY;
        assert_eq!(
            evaluate("memlock", (8 * MIB, unlimited), false, 4).status,
            Status::Ok
        );
        assert_eq!(
            evaluate("memlock", (8 * MIB, 8 * MIB), true, 4).status,
            Status::Ok
        );
        assert_eq!(
            evaluate("memlock", (120 * MIB, 120 * MIB), false, 4).status,
            Status::Ok
        );
    }

    #[test]
    fn capability_is_read_from_proc_status() {
        assert!(has_cap_ipc_lock("Name:\tx\nCapEff:\t000001ffffffffff\n"));
        assert!(!has_cap_ipc_lock("CapEff:\t0000000000000000\n"));
        assert!(!has_cap_ipc_lock("CapEff:\tnot-hex\n"));
        assert!(!has_cap_ipc_lock(""));
    }

    #[test]
    fn fake_proc_without_status_still_checks_the_limit() {
        let fake = FakeRoot::new();
        let finding = Memlock.check(&fake.host(2)).expect("getrlimit works");
        assert!(finding.current.starts_with("soft "), "{finding:?}");
    }
}
