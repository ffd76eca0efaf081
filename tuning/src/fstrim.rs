//! Periodic TRIM of the data disk. The WAL reuses its ring in place, but uploads, compaction
//! and retention delete files all the time; an SSD that is never told which blocks are free
//! garbage-collects under load, and write latency spikes.

use crate::host::{Gap, Host};
use crate::{Finding, Tuner};

/// The fstrim check (advice only: enabling a systemd unit is not a sysfs write).
pub(crate) struct Fstrim;

/// Where `systemctl enable fstrim.timer` links the unit.
const TIMER_LINK: &str = "/etc/systemd/system/timers.target.wants/fstrim.timer";

impl Tuner for Fstrim {
    fn name(&self) -> &'static str {
        "fstrim"
    }

    fn check(&self, host: &Host) -> Result<Finding, Gap> {
        let disk = host.wal_disk()?;
        let discard_bytes = host.read_u64_at(&disk.sys_dir.join("queue/discard_max_bytes"))?;
        let recommended = "fstrim.timer enabled";
        if discard_bytes == 0 {
            return Ok(Finding::ok(
                self.name(),
                format!("{}: no discard support", disk.name),
                recommended,
                "the device cannot be trimmed",
            ));
        }
        // symlink_metadata: the link itself is what `systemctl enable` leaves.
        if std::fs::symlink_metadata(host.path(TIMER_LINK)).is_ok() {
            return Ok(Finding::ok(
                self.name(),
                format!("{}: discard supported, fstrim.timer enabled", disk.name),
                recommended,
                "free blocks are trimmed weekly",
            ));
        }
        Ok(Finding::advice(
            self.name(),
            format!("{}: discard supported, fstrim.timer not enabled", disk.name),
            recommended,
            "`systemctl enable --now fstrim.timer` (without systemd: a weekly \
             `fstrim -v MOUNTPOINT` from cron)",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Status;
    use crate::testing::FakeRoot;

    #[test]
    fn discard_without_timer_is_advice() {
        let fake = FakeRoot::new();
        fake.disk("nvme0n1", true, &[("discard_max_bytes", "2199023255040\n")]);
        let finding = Fstrim.check(&fake.host(1)).expect("readable");
        assert_eq!(finding.status, Status::Advice);
        assert!(
            finding
                .advice
                .contains("systemctl enable --now fstrim.timer")
        );

        fake.symlink(TIMER_LINK, "/lib/systemd/system/fstrim.timer");
        assert_eq!(Fstrim.check(&fake.host(1)).expect("ok").status, Status::Ok);
    }

    #[test]
    fn no_discard_is_ok() {
        let fake = FakeRoot::new();
        fake.disk("sda", false, &[("discard_max_bytes", "0")]);
        assert_eq!(Fstrim.check(&fake.host(1)).expect("ok").status, Status::Ok);
    }
}
