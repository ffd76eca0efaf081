//! I/O scheduler of the WAL disk. An SSD or NVMe drive orders requests better than the
//! kernel can, and the WAL already issues large aligned writes, so `none` saves the
//! scheduler's CPU and queueing delay; a spinning disk still gains from `mq-deadline`.

use crate::host::{Gap, Host};
use crate::{Finding, SysWrite, Tuner};

/// The scheduler check (safe to apply: a sysfs write, undone by writing the old name).
pub(crate) struct DiskScheduler;

impl Tuner for DiskScheduler {
    fn name(&self) -> &'static str {
        "disk_scheduler"
    }

    fn check(&self, host: &Host) -> Result<Finding, Gap> {
        let disk = host.wal_disk()?;
        let text = host.read_at(&disk.sys_dir.join("queue/scheduler"))?;
        let (current, available) = parse_scheduler(&text).ok_or_else(|| {
            Gap::Error(format!(
                "{} holds {text:?}, not a scheduler list",
                disk.queue_path("scheduler")
            ))
        })?;
        let rotational = disk.rotational(host)?;
        let wanted = if rotational && !disk.name.starts_with("nvme") {
            "mq-deadline"
        } else {
            "none"
        };
        let kind = if rotational {
            "rotational"
        } else {
            "solid-state"
        };
        let shown = format!("{current} ({}, {kind})", disk.name);
        if current == wanted {
            return Ok(Finding::ok(
                self.name(),
                shown,
                wanted,
                format!("{wanted} suits a {kind} disk"),
            ));
        }
        if !available.contains(&wanted) {
            return Ok(Finding::ok(
                self.name(),
                shown,
                wanted,
                format!(
                    "the kernel offers no {wanted} here (only {})",
                    available.join(", ")
                ),
            ));
        }
        let path = disk.queue_path("scheduler");
        Ok(Finding::advice(
            self.name(),
            shown,
            wanted,
            format!(
                "`echo {wanted} > {path}`; to persist, a udev rule in \
                 /etc/udev/rules.d/60-sluice.rules: ACTION==\"add|change\", \
                 KERNEL==\"{}\", ATTR{{queue/scheduler}}=\"{wanted}\"",
                disk.name
            ),
        )
        .with_fix(vec![SysWrite::new(path, wanted)]))
    }
}

/// "none [mq-deadline] kyber" → ("mq-deadline", every name). A device that offers a single
/// scheduler may print it bare ("none").
fn parse_scheduler(text: &str) -> Option<(&str, Vec<&str>)> {
    let mut current = None;
    let mut available = Vec::new();
    for word in text.split_whitespace() {
        match word.strip_prefix('[').and_then(|w| w.strip_suffix(']')) {
            Some(name) => {
                current = Some(name);
                available.push(name);
            }
            None => available.push(word),
        }
    }
    match (current, available.as_slice()) {
        (Some(name), _) => Some((name, available)),
        (None, [only]) => Some((*only, available)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Status;
    use crate::testing::FakeRoot;

    #[test]
    fn nvme_with_mq_deadline_gets_none() {
        let fake = FakeRoot::new();
        fake.disk(
            "nvme0n1",
            true,
            &[
                ("scheduler", "none [mq-deadline] kyber bfq\n"),
                ("rotational", "0\n"),
            ],
        );
        let finding = DiskScheduler.check(&fake.host(1)).expect("readable");
        assert_eq!(finding.status, Status::Advice, "{finding:?}");
        assert_eq!(finding.current, "mq-deadline (nvme0n1, solid-state)");
        assert_eq!(
            finding.fix,
            vec![SysWrite::new("/sys/block/nvme0n1/queue/scheduler", "none")]
        );
    }

    #[test]
    fn rotational_disk_keeps_mq_deadline() {
        let fake = FakeRoot::new();
        fake.disk(
            "sda",
            false,
            &[("scheduler", "[mq-deadline] none\n"), ("rotational", "1\n")],
        );
        let finding = DiskScheduler.check(&fake.host(1)).expect("readable");
        assert_eq!(finding.status, Status::Ok, "{finding:?}");
    }

    #[test]
    fn odd_content_is_an_error_and_missing_files_unsupported() {
        let fake = FakeRoot::new();
        fake.disk("vda", false, &[("scheduler", "a b c"), ("rotational", "0")]);
        assert!(matches!(
            DiskScheduler.check(&fake.host(1)),
            Err(Gap::Error(_))
        ));
        // No /sys at all: the data dir's device cannot be found.
        assert!(matches!(
            DiskScheduler.check(&FakeRoot::new().host(1)),
            Err(Gap::Unsupported(_))
        ));
    }

    #[test]
    fn scheduler_lists_parse() {
        assert_eq!(
            parse_scheduler("[none] mq-deadline"),
            Some(("none", vec!["none", "mq-deadline"]))
        );
        assert_eq!(parse_scheduler("none"), Some(("none", vec!["none"])));
        assert_eq!(parse_scheduler(""), None);
    }
}
