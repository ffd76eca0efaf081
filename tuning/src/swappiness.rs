//! vm.swappiness: a shard's pools are allocated once and touched rarely in parts (a cold
//! block cache, idle connection buffers); the kernel would rather swap those out than drop
//! page cache, and the next touch then waits on the swap device. 1 swaps only to avoid OOM.

use crate::host::{Gap, Host};
use crate::{Finding, SysWrite, Tuner};

/// The swappiness check (safe to apply: a sysctl write).
pub(crate) struct Swappiness;

const PATH: &str = "/proc/sys/vm/swappiness";
const WANTED: u64 = 1;

impl Tuner for Swappiness {
    fn name(&self) -> &'static str {
        "swappiness"
    }

    fn check(&self, host: &Host) -> Result<Finding, Gap> {
        let current = host.read_u64(PATH)?;
        if current <= WANTED {
            return Ok(Finding::ok(
                self.name(),
                current.to_string(),
                WANTED.to_string(),
                "anonymous memory is swapped only under OOM pressure",
            ));
        }
        Ok(Finding::advice(
            self.name(),
            current.to_string(),
            WANTED.to_string(),
            format!(
                "`sysctl -w vm.swappiness={WANTED}`; persist with \
                 `echo vm.swappiness={WANTED} > /etc/sysctl.d/60-sluice.conf`"
            ),
        )
        .with_fix(vec![SysWrite::new(PATH, WANTED.to_string())]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Status;
    use crate::testing::FakeRoot;

    #[test]
    fn default_swappiness_is_lowered() {
        let fake = FakeRoot::new();
        fake.file(PATH, "60\n");
        let finding = Swappiness.check(&fake.host(1)).expect("readable");
        assert_eq!(finding.status, Status::Advice);
        assert_eq!(finding.fix, vec![SysWrite::new(PATH, "1")]);
        fake.file(PATH, "0\n");
        assert_eq!(
            Swappiness.check(&fake.host(1)).expect("ok").status,
            Status::Ok
        );
    }

    #[test]
    fn odd_content_is_an_error() {
        let fake = FakeRoot::new();
        fake.file(PATH, "-1\n");
        assert!(matches!(
            Swappiness.check(&fake.host(1)),
            Err(Gap::Error(_))
        ));
    }
}
