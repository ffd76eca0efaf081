//! IRQ affinity of the WAL disk and the network cards: when all of a multi-queue device's
//! interrupts land on one CPU, that CPU's shard pays for every other shard's I/O.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::host::{Gap, Host, format_cpu_list, parse_cpu_list};
use crate::{Finding, Tuner};

/// The IRQ affinity check (advice only: managed NVMe IRQs refuse writes, and irqbalance may
/// undo them).
pub(crate) struct IrqAffinity;

/// A device's interrupts: IRQ number → the CPUs that service it and whether it serves an I/O
/// queue (rather than configuration or an admin queue, which fire rarely).
type Irqs = BTreeMap<usize, (BTreeSet<usize>, bool)>;

impl Tuner for IrqAffinity {
    fn name(&self) -> &'static str {
        "irq_affinity"
    }

    fn check(&self, host: &Host) -> Result<Finding, Gap> {
        let mut devices: Vec<(String, PathBuf)> = Vec::new();
        if let Ok(disk) = host.wal_disk() {
            devices.push((disk.name, disk.sys_dir));
        }
        devices.extend(nics(host));
        let mut found = Vec::new();
        for (name, sys_dir) in devices {
            let Some(pci) = msi_device(host, &sys_dir) else {
                continue; // no MSI interrupts (virtual device, legacy IRQ)
            };
            found.push((name, irqs(host, &pci)?));
        }
        if found.is_empty() {
            return Err(Gap::Unsupported(
                "no MSI interrupts found for the WAL disk or a network card".to_owned(),
            ));
        }
        let online = host
            .read("/sys/devices/system/cpu/online")
            .ok()
            .and_then(|text| parse_cpu_list(&text))
            .unwrap_or_default();
        Ok(evaluate(self.name(), &found, &online))
    }
}

/// Network interfaces backed by hardware (not lo, bridges, veth, ...), with their sysfs dirs.
fn nics(host: &Host) -> Vec<(String, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(host.path("/sys/class/net")) else {
        return Vec::new();
    };
    let virtual_dir = host.path("/sys/devices/virtual");
    let mut nics: Vec<(String, PathBuf)> = entries
        .flatten()
        .filter_map(|entry| {
            let dir = std::fs::canonicalize(entry.path()).ok()?;
            (!dir.starts_with(&virtual_dir))
                .then(|| (entry.file_name().to_string_lossy().into_owned(), dir))
        })
        .collect();
    nics.sort();
    nics
}

/// The nearest ancestor of `dir` (inside /sys/devices) that lists MSI interrupts.
fn msi_device(host: &Host, dir: &Path) -> Option<PathBuf> {
    let top = host.path("/sys/devices");
    dir.ancestors()
        .take_while(|d| d.starts_with(&top))
        .find(|d| d.join("msi_irqs").is_dir())
        .map(Path::to_path_buf)
}

fn irqs(host: &Host, pci: &Path) -> Result<Irqs, Gap> {
    let list = pci.join("msi_irqs");
    let entries = std::fs::read_dir(&list)
        .map_err(|e| Gap::Error(format!("reading {}: {e}", host.shown(&list))))?;
    let mut irqs = Irqs::new();
    for entry in entries.flatten() {
        let Ok(irq) = entry.file_name().to_string_lossy().parse::<usize>() else {
            continue;
        };
        // effective_affinity_list (4.13+) is where the IRQ really goes; the older file is the
        // allowed set.
        let cpus = ["effective_affinity_list", "smp_affinity_list"]
            .iter()
            .find_map(|file| host.read(&format!("/proc/irq/{irq}/{file}")).ok())
            .and_then(|text| parse_cpu_list(&text));
        if let Some(cpus) = cpus {
            irqs.insert(irq, (cpus, is_queue_irq(host, irq)));
        }
    }
    Ok(irqs)
}

/// Whether an IRQ serves an I/O queue, judged by its handler's name (the directory the
/// kernel makes under /proc/irq/N): virtio's `-config` vector and NVMe's admin queue `q0`
/// carry no I/O, so where they land does not matter.
fn is_queue_irq(host: &Host, irq: usize) -> bool {
    let Ok(entries) = std::fs::read_dir(host.path(&format!("/proc/irq/{irq}"))) else {
        return true;
    };
    !entries.flatten().any(|entry| {
        let name = entry.file_name().to_string_lossy().into_owned();
        entry.path().is_dir()
            && (name.ends_with("-config") || (name.starts_with("nvme") && name.ends_with("q0")))
    })
}

fn evaluate(tuner: &'static str, devices: &[(String, Irqs)], online: &BTreeSet<usize>) -> Finding {
    let mut current = Vec::new();
    let mut commands = Vec::new();
    for (name, irqs) in devices {
        let used: BTreeSet<usize> = irqs.values().flat_map(|(cpus, _)| cpus).copied().collect();
        let numbers: BTreeSet<usize> = irqs.keys().copied().collect();
        let queues: Vec<usize> = irqs
            .iter()
            .filter(|(_, (_, queue))| *queue)
            .map(|(irq, _)| *irq)
            .collect();
        let queue_cpus: BTreeSet<usize> = queues
            .iter()
            .filter_map(|irq| irqs.get(irq))
            .flat_map(|(cpus, _)| cpus)
            .copied()
            .collect();
        current.push(format!(
            "{name}: irq {} -> cpu {}",
            format_cpu_list(&numbers),
            format_cpu_list(&used)
        ));
        if queues.len() > 1 && queue_cpus.len() == 1 && online.len() > 1 {
            // Round-robin over the online CPUs: each queue's interrupt on its own CPU.
            for (irq, cpu) in queues.iter().zip(online.iter().cycle()) {
                commands.push(format!("echo {cpu} > /proc/irq/{irq}/smp_affinity_list"));
            }
        }
    }
    let current = current.join("; ");
    let recommended = "each device's IRQs spread over the CPUs";
    if commands.is_empty() {
        Finding::ok(
            tuner,
            current,
            recommended,
            "no device funnels its IRQs into one CPU",
        )
    } else {
        Finding::advice(
            tuner,
            current,
            recommended,
            format!("{} (or let irqbalance spread them)", commands.join("; ")),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Status;
    use crate::testing::{FakeRoot, PCI_DEVICE};

    fn machine(affinities: &[(usize, &str)]) -> FakeRoot {
        let fake = FakeRoot::new();
        fake.disk("nvme0n1", true, &[("rotational", "0")]);
        fake.file("/sys/devices/system/cpu/online", "0-3\n");
        for (irq, cpus) in affinities {
            fake.file(&format!("{PCI_DEVICE}/msi_irqs/{irq}"), "msix");
            fake.file(&format!("/proc/irq/{irq}/effective_affinity_list"), cpus);
        }
        // A NIC on its own PCI device, and lo, which is virtual.
        fake.file("/sys/devices/pci0000:00/0000:00:05.0/msi_irqs/50", "msix")
            .file("/proc/irq/50/smp_affinity_list", "0-3")
            .file("/sys/devices/pci0000:00/0000:00:05.0/net/eth0/mtu", "1500")
            .symlink(
                "/sys/class/net/eth0",
                "../../devices/pci0000:00/0000:00:05.0/net/eth0",
            )
            .file("/sys/devices/virtual/net/lo/mtu", "65536")
            .symlink("/sys/class/net/lo", "../../devices/virtual/net/lo");
        fake
    }

    #[test]
    fn queues_on_one_cpu_are_spread() {
        let fake = machine(&[(39, "0\n"), (40, "0\n"), (41, "0\n"), (42, "0\n")]);
        // 39 is the admin queue: left out of the advice.
        fake.file("/proc/irq/39/nvme0q0/.keep", "");
        let finding = IrqAffinity.check(&fake.host(4)).expect("readable");
        assert_eq!(finding.status, Status::Advice, "{finding:?}");
        assert_eq!(
            finding.current,
            "nvme0n1: irq 39-42 -> cpu 0; eth0: irq 50 -> cpu 0-3"
        );
        assert!(
            finding
                .advice
                .starts_with("echo 0 > /proc/irq/40/smp_affinity_list; echo 1 > /proc/irq/41"),
            "{}",
            finding.advice
        );
    }

    #[test]
    fn spread_queues_are_ok() {
        let fake = machine(&[(40, "0"), (41, "1"), (42, "garbage")]);
        let finding = IrqAffinity.check(&fake.host(4)).expect("readable");
        assert_eq!(finding.status, Status::Ok, "{finding:?}");
        assert!(finding.current.starts_with("nvme0n1: irq 40-41 -> cpu 0-1"));
    }

    #[test]
    fn a_config_vector_beside_one_queue_is_ok() {
        // virtio-blk: one config vector and one request queue, both on CPU 1.
        let fake = machine(&[(35, "1"), (36, "1")]);
        fake.file("/proc/irq/35/virtio1-config/.keep", "");
        let finding = IrqAffinity.check(&fake.host(4)).expect("readable");
        assert_eq!(finding.status, Status::Ok, "{finding:?}");
    }

    #[test]
    fn no_devices_is_unsupported() {
        let fake = FakeRoot::new();
        assert!(matches!(
            IrqAffinity.check(&fake.host(1)),
            Err(Gap::Unsupported(_))
        ));
    }
}
