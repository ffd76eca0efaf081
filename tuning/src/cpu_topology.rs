//! CPU topology and NUMA: where the shards will land. `sluice start` pins shard i to
//! `shard_cpus[i % n]` ([`crate::cpu_layout`]): one shard per physical core first, CPU 0's
//! NUMA node first, only CPUs the process may run on. For the lowest latency each shard should
//! have a core of its own (not a hyperthread sibling of another shard), all on one NUMA node.
//!
//! The layout comes from `/sys`; built with the `hwloc` feature, from hwloc (hwlocality) on
//! the live machine, which also sees what `/sys` hides in some containers.

use std::collections::BTreeSet;

use crate::cpu_layout::{CpuLayout, allowed_cpus};
use crate::host::{Gap, Host, format_cpu_list};
use crate::{Finding, Tuner};

/// The topology check.
pub(crate) struct CpuTopology;

impl Tuner for CpuTopology {
    fn name(&self) -> &'static str {
        "cpu_topology"
    }

    fn check(&self, host: &Host) -> Result<Finding, Gap> {
        let layout = layout(host)?;
        let allowed = if host.root == std::path::Path::new("/") {
            allowed_cpus().map_err(|e| Gap::Error(format!("sched_getaffinity: {e}")))?
        } else {
            layout.cpus.clone()
        };
        Ok(evaluate(self.name(), &layout, &allowed, host.shards))
    }
}

#[cfg(feature = "hwloc")]
fn layout(host: &Host) -> Result<CpuLayout, Gap> {
    // hwloc reads the live /sys; a fake root cannot be handed to it (its HWLOC_FSROOT is a
    // process-wide environment variable, unsafe to set in a threaded process).
    if host.root != std::path::Path::new("/") {
        return CpuLayout::from_sys(&host.root).map_err(|e| Gap::Unsupported(format!("/sys: {e}")));
    }
    let topology = hwlocality::Topology::new().map_err(|e| Gap::Error(format!("hwloc: {e}")))?;
    Ok(hwloc::layout(&topology))
}

#[cfg(not(feature = "hwloc"))]
fn layout(host: &Host) -> Result<CpuLayout, Gap> {
    CpuLayout::from_sys(&host.root).map_err(|e| Gap::Unsupported(format!("/sys: {e}")))
}

#[cfg(feature = "hwloc")]
mod hwloc {
    use std::collections::BTreeSet;

    use hwlocality::Topology;
    use hwlocality::object::types::ObjectType;

    use crate::cpu_layout::CpuLayout;

    /// The layout as hwloc describes it.
    pub(super) fn layout(topology: &Topology) -> CpuLayout {
        let cpus_of = |ty: ObjectType| -> Vec<BTreeSet<usize>> {
            topology
                .objects_with_type(ty)
                .filter_map(|object| object.cpuset())
                .map(|set| set.iter_set().map(usize::from).collect())
                .collect()
        };
        let mut cores = cpus_of(ObjectType::Core);
        cores.sort_by_key(|core| core.first().copied());
        CpuLayout {
            packages: topology.objects_with_type(ObjectType::Package).count(),
            cores,
            nodes: cpus_of(ObjectType::NUMANode),
            cpus: topology.cpuset().iter_set().map(usize::from).collect(),
        }
    }
}

fn evaluate(
    tuner: &'static str,
    layout: &CpuLayout,
    allowed: &BTreeSet<usize>,
    shards: usize,
) -> Finding {
    let smt = layout.cores.iter().map(BTreeSet::len).max().unwrap_or(1);
    let current = format!(
        "{} package(s), {} NUMA node(s), {} cores, {} CPUs{}; allowed CPUs {}",
        layout.packages,
        layout.nodes.len().max(1),
        layout.cores.len(),
        layout.cpus.len(),
        if smt > 1 {
            format!(" (SMT x{smt})")
        } else {
            String::new()
        },
        format_cpu_list(allowed),
    );
    let best = best_shards(layout, allowed);
    let recommended = format!("--shards <= {best}");
    let order = layout.shard_cpus(allowed);
    let used: BTreeSet<usize> = (0..shards)
        .filter_map(|i| order.get(i % order.len().max(1)).copied())
        .collect();
    let mut problems = Vec::new();
    if shards > order.len() {
        problems.push(format!(
            "{shards} shards on {} allowed CPUs share CPUs",
            order.len()
        ));
    }
    if layout
        .cores
        .iter()
        .any(|core| core.intersection(&used).count() > 1)
    {
        problems.push("some shards are hyperthread siblings of one core".to_owned());
    }
    if layout
        .nodes
        .iter()
        .filter(|node| !node.is_disjoint(&used))
        .count()
        > 1
    {
        problems.push(
            "shards span NUMA nodes (remote memory; keep the NIC and WAL disk on the shards' node)"
                .to_owned(),
        );
    }
    if problems.is_empty() {
        Finding::ok(
            tuner,
            current,
            recommended,
            format!(
                "{shards} shard(s) on CPUs {}: own cores, one NUMA node",
                format_cpu_list(&used)
            ),
        )
    } else {
        let fix = if best > 0 {
            format!("; `sluice start --shards {best}` avoids that")
        } else {
            String::new()
        };
        Finding::advice(tuner, current, recommended, problems.join("; ") + &fix)
    }
}

/// The most shards that each get a physical core of their own on one NUMA node: the length of
/// the pinning order's prefix that stays on its first CPU's node and takes no sibling.
fn best_shards(layout: &CpuLayout, allowed: &BTreeSet<usize>) -> usize {
    let order = layout.shard_cpus(allowed);
    let Some(first) = order.first() else {
        return 0;
    };
    let node = layout.nodes.iter().find(|node| node.contains(first));
    let mut cores_taken = BTreeSet::new();
    order
        .iter()
        .take_while(|cpu| {
            let same_node = node.is_none_or(|node| node.contains(cpu));
            let core = layout.cores.iter().position(|core| core.contains(cpu));
            same_node && core.is_some_and(|core| cores_taken.insert(core))
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Status;
    use crate::testing::FakeRoot;

    fn layout_of(cores: &[&[usize]], nodes: &[&[usize]]) -> CpuLayout {
        let cores: Vec<BTreeSet<usize>> =
            cores.iter().map(|c| c.iter().copied().collect()).collect();
        let cpus = cores.iter().flatten().copied().collect();
        CpuLayout {
            packages: nodes.len(),
            cores,
            nodes: nodes.iter().map(|n| n.iter().copied().collect()).collect(),
            cpus,
        }
    }

    #[test]
    fn one_node_without_smt_is_ok() {
        let machine = layout_of(&[&[0], &[1], &[2], &[3]], &[&[0, 1, 2, 3]]);
        let finding = evaluate("cpu_topology", &machine, &machine.cpus, 4);
        assert_eq!(finding.status, Status::Ok, "{finding:?}");
        assert_eq!(finding.recommended, "--shards <= 4");
    }

    #[test]
    fn two_nodes_with_smt_get_fewer_shards() {
        // Two packages of two cores with two threads, Linux numbering (siblings n and n+4).
        let machine = layout_of(
            &[&[0, 4], &[1, 5], &[2, 6], &[3, 7]],
            &[&[0, 1, 4, 5], &[2, 3, 6, 7]],
        );
        let finding = evaluate("cpu_topology", &machine, &machine.cpus, 8);
        assert_eq!(finding.status, Status::Advice);
        assert!(finding.current.contains("SMT x2"), "{}", finding.current);
        assert!(finding.advice.contains("hyperthread"), "{}", finding.advice);
        assert!(finding.advice.contains("NUMA"), "{}", finding.advice);
        assert_eq!(finding.recommended, "--shards <= 2");
        // Two shards land on the two physical cores of node 0: fine.
        let finding = evaluate("cpu_topology", &machine, &machine.cpus, 2);
        assert_eq!(finding.status, Status::Ok, "{finding:?}");
    }

    #[test]
    fn more_shards_than_allowed_cpus_is_named() {
        let machine = layout_of(&[&[0], &[1], &[2], &[3]], &[&[0, 1, 2, 3]]);
        let finding = evaluate("cpu_topology", &machine, &BTreeSet::from([2, 3]), 3);
        assert_eq!(finding.status, Status::Advice);
        assert!(finding.advice.contains("share CPUs"), "{}", finding.advice);
        assert_eq!(best_shards(&machine, &BTreeSet::from([2, 3])), 2);
    }

    #[test]
    fn a_fake_root_is_read_from_its_sys() {
        let fake = FakeRoot::new();
        fake.file("/sys/devices/system/cpu/online", "0-1");
        let finding = CpuTopology.check(&fake.host(1)).expect("fake /sys");
        assert!(finding.current.contains("2 cores"), "{finding:?}");
        let empty = FakeRoot::new();
        let gap = CpuTopology.check(&empty.host(1)).expect_err("no /sys");
        assert!(matches!(gap, Gap::Unsupported(_)));
    }

    #[test]
    fn this_machine_is_described() {
        let host = Host {
            root: "/".into(),
            data_dir: ".".into(),
            shards: 1,
        };
        let finding = CpuTopology.check(&host).expect("topology readable here");
        assert!(finding.current.contains("cores"), "{finding:?}");
    }

    /// hwloc and /sys agree on this machine.
    #[cfg(feature = "hwloc")]
    #[test]
    fn hwloc_and_sys_agree() {
        let topology = hwlocality::Topology::new().expect("hwloc");
        let from_hwloc = hwloc::layout(&topology);
        let from_sys = CpuLayout::from_sys(std::path::Path::new("/")).expect("/sys");
        assert_eq!(from_hwloc.cpus, from_sys.cpus);
        assert_eq!(from_hwloc.cores, from_sys.cores);
    }
}
