//! fs.aio-max-nr: the system-wide cap on Linux AIO contexts' events. Sluice itself uses
//! io_uring, not AIO, so this only matters when other AIO users on the host (a Seastar
//! program such as Redpanda or ScyllaDB, databases using libaio) come close to the cap: then
//! their io_setup fails. Raised, as `rpk` does, only when half of it is in use.

use crate::host::{Gap, Host};
use crate::{Finding, SysWrite, Tuner};

/// The aio-max-nr check (safe to apply: raising a cap).
pub(crate) struct AioEvents;

const MAX_NR: &str = "/proc/sys/fs/aio-max-nr";
const NR: &str = "/proc/sys/fs/aio-nr";

/// The value `rpk redpanda tune aio_events` sets.
const RAISED: u64 = 1_048_576;

impl Tuner for AioEvents {
    fn name(&self) -> &'static str {
        "aio_events"
    }

    fn check(&self, host: &Host) -> Result<Finding, Gap> {
        let max = host.read_u64(MAX_NR)?;
        let used = host.read_u64(NR)?;
        let current = format!("aio-max-nr {max} ({used} in use)");
        if used < max / 2 {
            return Ok(Finding::ok(
                self.name(),
                current,
                format!("> 2 x {used} in use"),
                "sluice uses io_uring, not AIO; other AIO users have room",
            ));
        }
        let wanted = RAISED.max(used.saturating_mul(2));
        Ok(Finding::advice(
            self.name(),
            current,
            wanted.to_string(),
            format!(
                "other programs use most AIO events: `sysctl -w fs.aio-max-nr={wanted}` \
                 (persist in /etc/sysctl.d/60-sluice.conf)"
            ),
        )
        .with_fix(vec![SysWrite::new(MAX_NR, wanted.to_string())]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Status;
    use crate::testing::FakeRoot;

    #[test]
    fn idle_aio_is_ok_and_crowded_aio_is_raised() {
        let fake = FakeRoot::new();
        fake.file(MAX_NR, "65536\n").file(NR, "0\n");
        assert_eq!(
            AioEvents.check(&fake.host(1)).expect("ok").status,
            Status::Ok
        );

        fake.file(NR, "40000\n");
        let finding = AioEvents.check(&fake.host(1)).expect("readable");
        assert_eq!(finding.status, Status::Advice);
        assert_eq!(finding.fix, vec![SysWrite::new(MAX_NR, "1048576")]);
    }

    #[test]
    fn missing_and_odd_files() {
        let fake = FakeRoot::new();
        assert!(matches!(
            AioEvents.check(&fake.host(1)),
            Err(Gap::Unsupported(_))
        ));
        fake.file(MAX_NR, "lots").file(NR, "0");
        assert!(matches!(AioEvents.check(&fake.host(1)), Err(Gap::Error(_))));
    }
}
