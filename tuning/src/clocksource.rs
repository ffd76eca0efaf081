//! Clock source: the broker reads the clock for every batch (timestamps, timeouts, latency
//! histograms). `tsc` (x86), `kvm-clock` and `arch_sys_counter` (arm64) are read in user
//! space through the vDSO; `hpet`, `acpi_pm` and `xen` cost a system call or a slow device
//! read each time. Check only: switching a clock source on a live host is not for a tool.

use crate::host::{Gap, Host};
use crate::{Finding, Tuner};

/// The clock source check (advice only).
pub(crate) struct Clocksource;

const DIR: &str = "/sys/devices/system/clocksource/clocksource0";

/// Clock sources that cannot be read through the vDSO (or are slow to read).
const SLOW: &[&str] = &["hpet", "acpi_pm", "xen", "jiffies", "refined-jiffies"];

impl Tuner for Clocksource {
    fn name(&self) -> &'static str {
        "clocksource"
    }

    fn check(&self, host: &Host) -> Result<Finding, Gap> {
        let current = host.read(&format!("{DIR}/current_clocksource"))?;
        let available = host
            .read(&format!("{DIR}/available_clocksource"))
            .unwrap_or_default();
        let has_tsc = available.split_whitespace().any(|c| c == "tsc");
        if !SLOW.contains(&current.as_str()) {
            return Ok(Finding::ok(
                self.name(),
                current,
                "a vDSO clock (tsc, kvm-clock, arch_sys_counter)",
                "clock reads stay in user space",
            ));
        }
        if !has_tsc {
            return Ok(Finding::ok(
                self.name(),
                current.clone(),
                "tsc",
                format!("{current} is slow to read, but this host offers nothing faster"),
            ));
        }
        Ok(Finding::advice(
            self.name(),
            current,
            "tsc",
            format!(
                "`echo tsc > {DIR}/current_clocksource`, and to persist add \
                 `clocksource=tsc tsc=reliable` to the kernel command line"
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Status;
    use crate::testing::FakeRoot;

    fn clock(current: &str, available: &str) -> Status {
        let fake = FakeRoot::new();
        fake.file(&format!("{DIR}/current_clocksource"), current)
            .file(&format!("{DIR}/available_clocksource"), available);
        Clocksource.check(&fake.host(1)).expect("readable").status
    }

    #[test]
    fn slow_clock_with_tsc_available_is_advice() {
        assert_eq!(clock("xen\n", "xen tsc hpet acpi_pm\n"), Status::Advice);
        assert_eq!(clock("hpet\n", "hpet acpi_pm\n"), Status::Ok);
        assert_eq!(clock("tsc\n", "tsc kvm-clock\n"), Status::Ok);
        assert_eq!(clock("kvm-clock\n", "kvm-clock tsc\n"), Status::Ok);
    }

    #[test]
    fn missing_clocksource_is_unsupported() {
        let fake = FakeRoot::new();
        assert!(matches!(
            Clocksource.check(&fake.host(1)),
            Err(Gap::Unsupported(_))
        ));
    }
}
