//! Transparent huge pages. Unlike Redpanda (whose Seastar allocator wants huge pages and
//! whose `rpk` turns THP on), Sluice allocates its pools once at start; with THP `always`,
//! a page fault may stop a shard for direct compaction and khugepaged rewrites live memory,
//! both latency spikes. `madvise` gives huge pages only to memory that asks for them.

use crate::host::{Gap, Host};
use crate::{Finding, SysWrite, Tuner};

/// The THP check (safe to apply: sysfs writes).
pub(crate) struct TransparentHugepages;

const ENABLED: &str = "/sys/kernel/mm/transparent_hugepage/enabled";
const DEFRAG: &str = "/sys/kernel/mm/transparent_hugepage/defrag";
const WANTED: &str = "madvise";

impl Tuner for TransparentHugepages {
    fn name(&self) -> &'static str {
        "transparent_hugepages"
    }

    fn check(&self, host: &Host) -> Result<Finding, Gap> {
        let enabled = selected(host, ENABLED)?;
        // defrag is only worth a change when it stalls faults outright.
        let defrag = selected(host, DEFRAG).ok();
        let current = format!(
            "enabled={enabled}{}",
            defrag
                .as_deref()
                .map(|d| format!(", defrag={d}"))
                .unwrap_or_default()
        );
        let mut fix = Vec::new();
        if enabled == "always" {
            fix.push(SysWrite::new(ENABLED, WANTED));
        }
        if defrag.as_deref() == Some("always") {
            fix.push(SysWrite::new(DEFRAG, WANTED));
        }
        let recommended = format!("enabled={WANTED} (or never), defrag not always");
        if fix.is_empty() {
            return Ok(Finding::ok(
                self.name(),
                current,
                recommended,
                "no THP compaction stalls on page faults",
            ));
        }
        let commands: Vec<String> = fix
            .iter()
            .map(|w| format!("echo {} > {}", w.value, w.path))
            .collect();
        Ok(Finding::advice(
            self.name(),
            current,
            recommended,
            format!(
                "`{}`; persist with `transparent_hugepage={WANTED}` on the kernel command line",
                commands.join("; ")
            ),
        )
        .with_fix(fix))
    }
}

/// The bracketed choice of a sysfs list such as "always [madvise] never".
fn selected(host: &Host, path: &str) -> Result<String, Gap> {
    let text = host.read(path)?;
    text.split_whitespace()
        .find_map(|w| w.strip_prefix('[').and_then(|w| w.strip_suffix(']')))
        .map(str::to_owned)
        .ok_or_else(|| Gap::Error(format!("{path} holds {text:?}, no [selected] choice")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Status;
    use crate::testing::FakeRoot;

    #[test]
    fn always_is_turned_to_madvise() {
        let fake = FakeRoot::new();
        fake.file(ENABLED, "[always] madvise never\n")
            .file(DEFRAG, "[always] defer defer+madvise madvise never\n");
        let finding = TransparentHugepages.check(&fake.host(1)).expect("readable");
        assert_eq!(finding.status, Status::Advice);
        assert_eq!(finding.current, "enabled=always, defrag=always");
        assert_eq!(finding.fix.len(), 2);
    }

    #[test]
    fn madvise_is_ok_and_garbage_is_an_error() {
        let fake = FakeRoot::new();
        fake.file(ENABLED, "always [madvise] never\n");
        let finding = TransparentHugepages.check(&fake.host(1)).expect("ok");
        assert_eq!(finding.status, Status::Ok);
        assert_eq!(finding.current, "enabled=madvise");
        fake.file(ENABLED, "always madvise never\n");
        assert!(matches!(
            TransparentHugepages.check(&fake.host(1)),
            Err(Gap::Error(_))
        ));
    }
}
