//! Request merging on the WAL disk. The WAL already sends large aligned writes, so on an SSD
//! or NVMe drive looking for merges only costs CPU on the submit path: `nomerges=2` turns it
//! off. On a spinning disk merged requests save seeks, so it is left alone there.

use crate::host::{Gap, Host};
use crate::{Finding, SysWrite, Tuner};

/// The nomerges check (safe to apply: a sysfs write, undone by writing the old value).
pub(crate) struct DiskNomerges;

/// 2: no merge attempts at all (1 keeps the cheap one-hit cache lookup).
const WANTED: u64 = 2;

impl Tuner for DiskNomerges {
    fn name(&self) -> &'static str {
        "disk_nomerges"
    }

    fn check(&self, host: &Host) -> Result<Finding, Gap> {
        let disk = host.wal_disk()?;
        let current = host.read_u64_at(&disk.sys_dir.join("queue/nomerges"))?;
        let shown = format!("{current} ({})", disk.name);
        if disk.rotational(host)? {
            return Ok(Finding::ok(
                self.name(),
                shown,
                current.to_string(),
                "rotational disk: merging saves seeks",
            ));
        }
        if current == WANTED {
            return Ok(Finding::ok(
                self.name(),
                shown,
                WANTED.to_string(),
                "merging is off",
            ));
        }
        let path = disk.queue_path("nomerges");
        Ok(Finding::advice(
            self.name(),
            shown,
            WANTED.to_string(),
            format!(
                "`echo {WANTED} > {path}`; to persist, a udev rule: ACTION==\"add|change\", \
                 KERNEL==\"{}\", ATTR{{queue/nomerges}}=\"{WANTED}\"",
                disk.name
            ),
        )
        .with_fix(vec![SysWrite::new(path, WANTED.to_string())]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Status;
    use crate::testing::FakeRoot;

    #[test]
    fn ssd_with_merges_gets_two() {
        let fake = FakeRoot::new();
        fake.disk(
            "nvme0n1",
            false,
            &[("nomerges", "0\n"), ("rotational", "0\n")],
        );
        let finding = DiskNomerges.check(&fake.host(1)).expect("readable");
        assert_eq!(finding.status, Status::Advice);
        assert_eq!(
            finding.fix,
            vec![SysWrite::new("/sys/block/nvme0n1/queue/nomerges", "2")]
        );
    }

    #[test]
    fn rotational_and_already_off_are_ok() {
        let fake = FakeRoot::new();
        fake.disk("sda", true, &[("nomerges", "0"), ("rotational", "1")]);
        assert_eq!(
            DiskNomerges.check(&fake.host(1)).expect("ok").status,
            Status::Ok
        );

        let fake = FakeRoot::new();
        fake.disk("nvme0n1", true, &[("nomerges", "2"), ("rotational", "0")]);
        assert_eq!(
            DiskNomerges.check(&fake.host(1)).expect("ok").status,
            Status::Ok
        );
    }

    #[test]
    fn missing_rotational_is_unsupported() {
        let fake = FakeRoot::new();
        fake.disk("nvme0n1", false, &[("nomerges", "0")]);
        assert!(matches!(
            DiskNomerges.check(&fake.host(1)),
            Err(Gap::Unsupported(_))
        ));
    }
}
