//! Network backlogs: each shard listens with a backlog of 1024 (glommio's TcpListener), but
//! the kernel silently caps it at net.core.somaxconn, and half-open connections at
//! tcp_max_syn_backlog; a reconnect storm after a restart then drops SYNs and clients back
//! off for seconds. NIC interrupts are the irq_affinity tuner's.

use crate::host::{Gap, Host};
use crate::{Finding, Tuner};

/// The network backlog check (advice only: sysctls that also affect other services).
pub(crate) struct Net;

/// glommio 0.9's `listen(1024)` in src/net/tcp_socket.rs.
const LISTEN_BACKLOG: u64 = 1024;

const SYSCTLS: &[(&str, &str)] = &[
    ("net.core.somaxconn", "/proc/sys/net/core/somaxconn"),
    (
        "net.ipv4.tcp_max_syn_backlog",
        "/proc/sys/net/ipv4/tcp_max_syn_backlog",
    ),
];

impl Tuner for Net {
    fn name(&self) -> &'static str {
        "net"
    }

    fn check(&self, host: &Host) -> Result<Finding, Gap> {
        let mut current = Vec::new();
        let mut low = Vec::new();
        for (name, path) in SYSCTLS {
            let value = host.read_u64(path)?;
            current.push(format!("{name}={value}"));
            if value < LISTEN_BACKLOG {
                low.push(format!("sysctl -w {name}={LISTEN_BACKLOG}"));
            }
        }
        let current = current.join(", ");
        let recommended = format!(">= {LISTEN_BACKLOG} each");
        if low.is_empty() {
            return Ok(Finding::ok(
                self.name(),
                current,
                recommended,
                "the listen backlog is not capped",
            ));
        }
        Ok(Finding::advice(
            self.name(),
            current,
            recommended,
            format!(
                "`{}` (persist in /etc/sysctl.d/60-sluice.conf)",
                low.join("; ")
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Status;
    use crate::testing::FakeRoot;

    #[test]
    fn small_backlogs_are_raised() {
        let fake = FakeRoot::new();
        fake.file(SYSCTLS[0].1, "128\n")
            .file(SYSCTLS[1].1, "4096\n");
        let finding = Net.check(&fake.host(1)).expect("readable");
        assert_eq!(finding.status, Status::Advice);
        assert_eq!(
            finding.advice,
            "`sysctl -w net.core.somaxconn=1024` (persist in /etc/sysctl.d/60-sluice.conf)"
        );
        fake.file(SYSCTLS[0].1, "4096\n");
        assert_eq!(Net.check(&fake.host(1)).expect("ok").status, Status::Ok);
    }

    #[test]
    fn a_container_without_the_sysctls_is_unsupported() {
        let fake = FakeRoot::new();
        assert!(matches!(Net.check(&fake.host(1)), Err(Gap::Unsupported(_))));
    }
}
