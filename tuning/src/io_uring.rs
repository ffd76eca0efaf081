//! io_uring: is it allowed, and does the kernel know every opcode glommio needs? glommio
//! probes the same list when its first executor starts and exits the process if one is
//! missing, so this says so before `sluice start` does, with the reason.

use std::io;

use io_uring::opcode;

use crate::host::{Gap, Host};
use crate::{Finding, Tuner};

/// The io_uring probe.
pub(crate) struct IoUring;

/// glommio 0.9's `GLOMMIO_URING_OPS` (src/sys/uring.rs), the opcodes it refuses to run
/// without; Sluice's own I/O goes through glommio. Fsync also carries fdatasync.
const REQUIRED_OPCODES: &[(&str, u8)] = &[
    ("Nop", opcode::Nop::CODE),
    ("Readv", opcode::Readv::CODE),
    ("Writev", opcode::Writev::CODE),
    ("Fsync", opcode::Fsync::CODE),
    ("ReadFixed", opcode::ReadFixed::CODE),
    ("WriteFixed", opcode::WriteFixed::CODE),
    ("PollAdd", opcode::PollAdd::CODE),
    ("PollRemove", opcode::PollRemove::CODE),
    ("SendMsg", opcode::SendMsg::CODE),
    ("RecvMsg", opcode::RecvMsg::CODE),
    ("Timeout", opcode::Timeout::CODE),
    ("TimeoutRemove", opcode::TimeoutRemove::CODE),
    ("Accept", opcode::Accept::CODE),
    ("LinkTimeout", opcode::LinkTimeout::CODE),
    ("Connect", opcode::Connect::CODE),
    ("Fallocate", opcode::Fallocate::CODE),
    ("OpenAt", opcode::OpenAt::CODE),
    ("Close", opcode::Close::CODE),
    ("Statx", opcode::Statx::CODE),
    ("Read", opcode::Read::CODE),
    ("Write", opcode::Write::CODE),
    ("Send", opcode::Send::CODE),
    ("Recv", opcode::Recv::CODE),
];

/// Entries of the throw-away ring used for the probe.
const PROBE_RING_ENTRIES: u32 = 4;

/// The knob that turns io_uring off (Linux 6.6+; absent on older kernels means allowed).
const DISABLED_SYSCTL: &str = "/proc/sys/kernel/io_uring_disabled";

impl Tuner for IoUring {
    fn name(&self) -> &'static str {
        "io_uring"
    }

    fn check(&self, host: &Host) -> Result<Finding, Gap> {
        let disabled = match host.read_u64(DISABLED_SYSCTL) {
            Ok(value) => value,
            Err(Gap::Unsupported(_)) => 0,
            Err(gap) => return Err(gap),
        };
        Ok(evaluate(self.name(), disabled, probe()))
    }
}

/// The names of the required opcodes this kernel lacks, or why no ring could be made.
fn probe() -> io::Result<Vec<&'static str>> {
    let ring = io_uring::IoUring::new(PROBE_RING_ENTRIES)?;
    let mut probe = io_uring::Probe::new();
    ring.submitter().register_probe(&mut probe)?;
    Ok(REQUIRED_OPCODES
        .iter()
        .filter(|(_, code)| !probe.is_supported(*code))
        .map(|(name, _)| *name)
        .collect())
}

fn evaluate(tuner: &'static str, disabled: u64, probed: io::Result<Vec<&'static str>>) -> Finding {
    let wanted = format!("io_uring with {} opcodes", REQUIRED_OPCODES.len());
    let sysctl_fix = "sysctl -w kernel.io_uring_disabled=0 \
                      (and persist it in /etc/sysctl.d/60-sluice.conf)";
    match probed {
        Ok(missing) if missing.is_empty() => Finding::ok(
            tuner,
            format!("all {} opcodes", REQUIRED_OPCODES.len()),
            wanted,
            "every opcode glommio needs is supported",
        ),
        Ok(missing) => Finding::advice(
            tuner,
            format!("missing {}", missing.join(", ")),
            wanted,
            "the kernel is too old for glommio, which exits at start without these: \
             run Linux 5.8 or later (5.15+ recommended)",
        ),
        Err(e) if disabled != 0 => Finding::advice(
            tuner,
            format!("disabled (kernel.io_uring_disabled={disabled}): {e}"),
            wanted,
            format!("sluice cannot start without io_uring: {sysctl_fix}"),
        ),
        Err(e) => Finding::advice(
            tuner,
            format!("unavailable: {e}"),
            wanted,
            match e.raw_os_error() {
                Some(libc::ENOSYS) => {
                    "this kernel has no io_uring: run Linux 5.8 or later".to_owned()
                }
                Some(libc::ENOMEM) => "no memory for the ring: kernels before 5.12 count it \
                     against RLIMIT_MEMLOCK (see the memlock tuner): `ulimit -l unlimited`"
                    .to_owned(),
                Some(libc::EPERM) => "io_uring is blocked, most likely by a seccomp profile \
                     (container runtimes block it by default): run the container with a \
                     profile that allows io_uring_setup/enter/register"
                    .to_owned(),
                _ => format!(
                    "sluice cannot start without io_uring; check dmesg and {DISABLED_SYSCTL}"
                ),
            },
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Status;
    use crate::testing::FakeRoot;

    #[test]
    fn this_kernel_is_probed() {
        // Whatever this kernel supports, the probe must answer rather than fail to run.
        let fake = FakeRoot::new();
        let finding = IoUring.check(&fake.host(1)).expect("no gap");
        assert_ne!(finding.status, Status::Error, "{finding:?}");
    }

    #[test]
    fn missing_opcodes_are_named() {
        let finding = evaluate("io_uring", 0, Ok(vec!["Statx", "Send"]));
        assert_eq!(finding.status, Status::Advice);
        assert_eq!(finding.current, "missing Statx, Send");
        assert!(finding.advice.contains("5.8"), "{}", finding.advice);
    }

    #[test]
    fn disabled_sysctl_is_the_advice() {
        let fake = FakeRoot::new();
        fake.file(DISABLED_SYSCTL, "2\n");
        let eperm = io::Error::from_raw_os_error(libc::EPERM);
        let disabled = host_disabled(&fake);
        let finding = evaluate("io_uring", disabled, Err(eperm));
        assert_eq!(finding.status, Status::Advice);
        assert!(finding.current.contains("io_uring_disabled=2"));
        assert!(
            finding
                .advice
                .contains("sysctl -w kernel.io_uring_disabled=0")
        );
    }

    #[test]
    fn seccomp_block_is_explained() {
        let eperm = io::Error::from_raw_os_error(libc::EPERM);
        let finding = evaluate("io_uring", 0, Err(eperm));
        assert!(finding.advice.contains("seccomp"), "{}", finding.advice);
    }

    #[test]
    fn ring_memory_refusal_points_at_memlock() {
        let enomem = io::Error::from_raw_os_error(libc::ENOMEM);
        let finding = evaluate("io_uring", 0, Err(enomem));
        assert!(finding.advice.contains("ulimit -l"), "{}", finding.advice);
    }

    #[test]
    fn odd_sysctl_is_an_error_not_a_panic() {
        let fake = FakeRoot::new();
        fake.file(DISABLED_SYSCTL, "maybe\n");
        let gap = IoUring.check(&fake.host(1)).expect_err("unparsable");
        assert!(matches!(gap, Gap::Error(_)), "{gap:?}");
    }

    fn host_disabled(fake: &FakeRoot) -> u64 {
        fake.host(1)
            .read_u64(DISABLED_SYSCTL)
            .expect("written above")
    }
}
