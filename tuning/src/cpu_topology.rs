//! CPU topology and NUMA, from hwloc (hwlocality): where the shards will land. `sluice start`
//! pins shard i to CPU `i % n` (n = available parallelism, shards/src/runtime.rs), so the
//! shards use CPUs 0..shards-1. For the lowest latency each should have a core of its own
//! (not a hyperthread sibling of another shard), on one NUMA node, and be a CPU the process
//! may run on at all.

use std::collections::BTreeSet;
use std::path::Path;

use hwlocality::Topology;
use hwlocality::object::types::ObjectType;

use crate::host::{Gap, Host, format_cpu_list};
use crate::{Finding, Tuner};

/// The topology check.
pub(crate) struct CpuTopology;

/// The machine as hwloc describes it.
#[derive(Debug)]
struct Layout {
    packages: usize,
    /// The CPUs of each core (more than one with SMT).
    cores: Vec<BTreeSet<usize>>,
    /// The CPUs of each NUMA node.
    nodes: Vec<BTreeSet<usize>>,
    /// Every CPU hwloc knows (online).
    cpus: BTreeSet<usize>,
}

/// What the process may use, as `sluice start` will see it.
#[derive(Debug)]
struct Allowed {
    /// CPUs of the process's affinity mask (taskset, cgroup cpuset).
    cpus: BTreeSet<usize>,
    /// `available_parallelism`, which also counts a cgroup CPU quota: the modulus of pinning.
    parallelism: usize,
}

impl Tuner for CpuTopology {
    fn name(&self) -> &'static str {
        "cpu_topology"
    }

    fn check(&self, host: &Host) -> Result<Finding, Gap> {
        // hwloc reads the live /sys; a fake root cannot be handed to it (its HWLOC_FSROOT
        // is a process-wide environment variable, unsafe to set in a threaded process).
        if host.root != Path::new("/") {
            return Err(Gap::Unsupported(
                "hwloc reads only the live machine's topology".to_owned(),
            ));
        }
        let topology = Topology::new().map_err(|e| Gap::Error(format!("hwloc: {e}")))?;
        let parallelism = std::thread::available_parallelism().map_or(1, |n| n.get());
        let allowed = Allowed {
            cpus: affinity()?,
            parallelism,
        };
        Ok(evaluate(
            self.name(),
            &layout(&topology),
            &allowed,
            host.shards,
        ))
    }
}

fn layout(topology: &Topology) -> Layout {
    let cpus_of = |ty: ObjectType| -> Vec<BTreeSet<usize>> {
        topology
            .objects_with_type(ty)
            .filter_map(|object| object.cpuset())
            .map(|set| set.iter_set().map(usize::from).collect())
            .collect()
    };
    Layout {
        packages: topology.objects_with_type(ObjectType::Package).count(),
        cores: cpus_of(ObjectType::Core),
        nodes: cpus_of(ObjectType::NUMANode),
        cpus: topology.cpuset().iter_set().map(usize::from).collect(),
    }
}

/// The CPUs this process may run on (sched_getaffinity).
fn affinity() -> Result<BTreeSet<usize>, Gap> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: the kernel writes at most size_of::<cpu_set_t>() bytes into `set`.
    let rc =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return Err(Gap::Error(format!(
            "sched_getaffinity: {}",
            std::io::Error::last_os_error()
        )));
    }
    let max = usize::try_from(libc::CPU_SETSIZE).unwrap_or(1024);
    // SAFETY: CPU_ISSET only reads `set` at indexes below CPU_SETSIZE.
    Ok((0..max)
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect())
}

fn evaluate(tuner: &'static str, layout: &Layout, allowed: &Allowed, shards: usize) -> Finding {
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
        format_cpu_list(&allowed.cpus),
    );
    let best = best_shards(layout, allowed);
    let recommended = format!("--shards <= {best}");
    let used: BTreeSet<usize> = (0..shards)
        .map(|i| i % allowed.parallelism.max(1))
        .collect();
    let mut problems = Vec::new();
    let forbidden: BTreeSet<usize> = used.difference(&allowed.cpus).copied().collect();
    if !forbidden.is_empty() {
        problems.push(format!(
            "shards are pinned to CPUs {} but this process may not run on {} \
             (taskset or a cgroup cpuset): run it on CPUs 0-{}",
            format_cpu_list(&used),
            format_cpu_list(&forbidden),
            allowed.parallelism.saturating_sub(1)
        ));
    }
    if shards > allowed.parallelism {
        problems.push(format!(
            "{shards} shards on {} CPUs share CPUs",
            allowed.parallelism
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

/// The most shards that land on allowed CPUs, each on its own core, all on CPU 0's NUMA
/// node: the largest K for which CPUs 0..K-1 qualify.
fn best_shards(layout: &Layout, allowed: &Allowed) -> usize {
    let node = layout.nodes.iter().find(|node| node.contains(&0));
    let mut cores_taken = BTreeSet::new();
    let mut k = 0;
    while k < allowed.parallelism
        && allowed.cpus.contains(&k)
        && node.is_none_or(|node| node.contains(&k))
    {
        let Some(core) = layout.cores.iter().position(|core| core.contains(&k)) else {
            break;
        };
        if !cores_taken.insert(core) {
            break;
        }
        k += 1;
    }
    k
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Status;
    use crate::testing::FakeRoot;

    /// A synthetic machine from hwloc's own description language.
    fn synthetic(description: &str) -> Layout {
        let topology = Topology::builder()
            .from_synthetic(description)
            .expect("valid description")
            .build()
            .expect("builds");
        layout(&topology)
    }

    fn all_allowed(layout: &Layout) -> Allowed {
        Allowed {
            cpus: layout.cpus.clone(),
            parallelism: layout.cpus.len(),
        }
    }

    #[test]
    fn one_node_without_smt_is_ok() {
        let machine = synthetic("package:1 numa:1 core:4 pu:1");
        assert_eq!((machine.cores.len(), machine.cpus.len()), (4, 4));
        let finding = evaluate("cpu_topology", &machine, &all_allowed(&machine), 4);
        assert_eq!(finding.status, Status::Ok, "{finding:?}");
        assert_eq!(finding.recommended, "--shards <= 4");
    }

    #[test]
    fn two_nodes_with_smt_get_fewer_shards() {
        // hwloc numbers synthetic PUs depth-first: CPUs 0,1 are the two threads of core 0.
        let machine = synthetic("package:2 numa:1 core:2 pu:2");
        assert_eq!(machine.nodes.len(), 2);
        let finding = evaluate("cpu_topology", &machine, &all_allowed(&machine), 8);
        assert_eq!(finding.status, Status::Advice);
        assert!(finding.current.contains("SMT x2"), "{}", finding.current);
        assert!(finding.advice.contains("hyperthread"), "{}", finding.advice);
        assert!(finding.advice.contains("NUMA"), "{}", finding.advice);
        assert_eq!(finding.recommended, "--shards <= 1");
    }

    #[test]
    fn pinning_outside_the_affinity_mask_is_named() {
        let machine = synthetic("package:1 numa:1 core:4 pu:1");
        let allowed = Allowed {
            cpus: [2, 3].into(),
            parallelism: 2,
        };
        let finding = evaluate("cpu_topology", &machine, &allowed, 2);
        assert_eq!(finding.status, Status::Advice);
        assert!(
            finding.advice.contains("may not run on 0-1"),
            "{}",
            finding.advice
        );
        assert_eq!(best_shards(&machine, &allowed), 0);
    }

    #[test]
    fn a_fake_root_is_unsupported() {
        let fake = FakeRoot::new();
        let gap = CpuTopology.check(&fake.host(1)).expect_err("fake root");
        assert!(matches!(gap, Gap::Unsupported(_)));
    }

    #[test]
    fn this_machine_is_described() {
        let host = Host {
            root: "/".into(),
            data_dir: ".".into(),
            shards: 1,
        };
        let finding = CpuTopology.check(&host).expect("hwloc works here");
        assert!(finding.current.contains("cores"), "{finding:?}");
    }
}
