//! CPU frequency governor: a shard spins between bursts, and a power-saving governor lowers
//! its clock exactly when the next request arrives. `performance` keeps the clock up.

use std::collections::BTreeMap;

use crate::host::{Gap, Host};
use crate::{Finding, SysWrite, Tuner};

/// The governor check (safe to apply: one sysfs write per CPU, undone by writing back).
pub(crate) struct CpuGovernor;

const CPU_DIR: &str = "/sys/devices/system/cpu";
const WANTED: &str = "performance";

impl Tuner for CpuGovernor {
    fn name(&self) -> &'static str {
        "cpu_governor"
    }

    fn check(&self, host: &Host) -> Result<Finding, Gap> {
        let entries = std::fs::read_dir(host.path(CPU_DIR))
            .map_err(|e| Gap::Unsupported(format!("{CPU_DIR}: {e}")))?;
        // CPU number → its governor, for CPUs with cpufreq.
        let mut governors = BTreeMap::new();
        let mut available = String::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(cpu) = name
                .strip_prefix("cpu")
                .and_then(|n| n.parse::<usize>().ok())
            else {
                continue; // cpufreq, cpuidle, online, ...
            };
            let governor = match host.read_at(&entry.path().join("cpufreq/scaling_governor")) {
                Ok(governor) => governor,
                Err(Gap::Unsupported(_)) => continue,
                Err(gap) => return Err(gap),
            };
            if available.is_empty() {
                available = host
                    .read_at(&entry.path().join("cpufreq/scaling_available_governors"))
                    .unwrap_or_default();
            }
            governors.insert(cpu, governor);
        }
        if governors.is_empty() {
            return Err(Gap::Unsupported(
                "no cpufreq: the firmware or hypervisor sets the CPU frequency".to_owned(),
            ));
        }
        Ok(evaluate(self.name(), &governors, &available))
    }
}

fn evaluate(tuner: &'static str, governors: &BTreeMap<usize, String>, available: &str) -> Finding {
    let mut distinct: Vec<&str> = governors.values().map(String::as_str).collect();
    distinct.sort_unstable();
    distinct.dedup();
    let current = distinct.join(",");
    let slow: Vec<usize> = governors
        .iter()
        .filter(|(_, g)| *g != WANTED)
        .map(|(cpu, _)| *cpu)
        .collect();
    if slow.is_empty() {
        return Finding::ok(tuner, current, WANTED, "every CPU runs at full clock");
    }
    if !available.split_whitespace().any(|g| g == WANTED) {
        return Finding::ok(
            tuner,
            current,
            WANTED,
            format!("the cpufreq driver offers no `{WANTED}` governor (it has: {available})"),
        );
    }
    let fix = slow
        .iter()
        .map(|cpu| {
            SysWrite::new(
                format!("{CPU_DIR}/cpu{cpu}/cpufreq/scaling_governor"),
                WANTED,
            )
        })
        .collect();
    Finding::advice(
        tuner,
        current,
        WANTED,
        format!(
            "`cpupower frequency-set -g {WANTED}` or `echo {WANTED} | tee \
             {CPU_DIR}/cpu*/cpufreq/scaling_governor` (not persistent: add it to a boot unit)"
        ),
    )
    .with_fix(fix)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Status;
    use crate::testing::FakeRoot;

    fn cpus(fake: &FakeRoot, governors: &[&str]) {
        fake.file(&format!("{CPU_DIR}/online"), "0-1");
        for (cpu, governor) in governors.iter().enumerate() {
            let dir = format!("{CPU_DIR}/cpu{cpu}/cpufreq");
            fake.file(&format!("{dir}/scaling_governor"), governor);
            fake.file(
                &format!("{dir}/scaling_available_governors"),
                "performance powersave\n",
            );
        }
    }

    #[test]
    fn powersave_gets_a_fix_per_cpu() {
        let fake = FakeRoot::new();
        cpus(&fake, &["powersave\n", "performance\n"]);
        let finding = CpuGovernor.check(&fake.host(2)).expect("readable");
        assert_eq!(finding.status, Status::Advice);
        assert_eq!(finding.current, "performance,powersave");
        assert_eq!(
            finding.fix,
            vec![SysWrite::new(
                format!("{CPU_DIR}/cpu0/cpufreq/scaling_governor"),
                WANTED
            )]
        );
    }

    #[test]
    fn performance_is_ok_and_no_cpufreq_is_unsupported() {
        let fake = FakeRoot::new();
        cpus(&fake, &["performance", "performance"]);
        assert_eq!(
            CpuGovernor.check(&fake.host(2)).expect("ok").status,
            Status::Ok
        );

        let bare = FakeRoot::new();
        bare.file(&format!("{CPU_DIR}/cpu0/online"), "1");
        assert!(matches!(
            CpuGovernor.check(&bare.host(1)),
            Err(Gap::Unsupported(_))
        ));
        assert!(matches!(
            CpuGovernor.check(&FakeRoot::new().host(1)),
            Err(Gap::Unsupported(_))
        ));
    }
}
