//! The CPUs, cores and NUMA nodes of the machine as `/sys` describes them, and the CPUs
//! `sluice start` pins its shards to: one shard per physical core first, cores of CPU 0's
//! NUMA node before others, hyperthread siblings last.
//!
//! Read from `/sys` rather than through hwloc so that the broker binary needs no system
//! library (hwloc, udev) to build or run; `sluice tune` may use hwloc instead (feature
//! `hwloc`). Memory is NUMA-local without more work: each shard allocates its pools on its
//! own pinned thread, and Linux places pages on the node of the CPU that first touches them.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::Path;

use crate::host::parse_cpu_list;

/// The machine's CPUs grouped by core and by NUMA node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuLayout {
    /// Number of physical packages (sockets).
    pub packages: usize,
    /// The CPUs of each core (more than one with SMT), ordered by their first CPU.
    pub cores: Vec<BTreeSet<usize>>,
    /// The CPUs of each NUMA node, ordered by node number (one node when the kernel has none).
    pub nodes: Vec<BTreeSet<usize>>,
    /// Every online CPU.
    pub cpus: BTreeSet<usize>,
}

impl CpuLayout {
    /// Reads the layout under `root` (`/` for this machine): `devices/system/cpu/online`,
    /// each CPU's `topology/{physical_package_id,core_id}` and `devices/system/node/node*/cpulist`.
    pub fn from_sys(root: &Path) -> io::Result<CpuLayout> {
        let sys_cpu = root.join("sys/devices/system/cpu");
        let online = std::fs::read_to_string(sys_cpu.join("online"))?;
        let cpus = parse_cpu_list(online.trim()).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{}: not a CPU list: {online:?}",
                    sys_cpu.join("online").display()
                ),
            )
        })?;
        let mut cores: BTreeMap<(u64, u64), BTreeSet<usize>> = BTreeMap::new();
        for &cpu in &cpus {
            let topology = sys_cpu.join(format!("cpu{cpu}/topology"));
            // A CPU without topology files (some containers) counts as a core of its own.
            let read = |name: &str| -> Option<u64> {
                std::fs::read_to_string(topology.join(name))
                    .ok()?
                    .trim()
                    .parse()
                    .ok()
            };
            let key = match (read("physical_package_id"), read("core_id")) {
                (Some(package), Some(core)) => (package, core),
                _ => (u64::MAX, cpu as u64),
            };
            cores.entry(key).or_default().insert(cpu);
        }
        let packages = cores
            .keys()
            .map(|(package, _)| *package)
            .collect::<BTreeSet<_>>()
            .len();
        let mut cores: Vec<BTreeSet<usize>> = cores.into_values().collect();
        cores.sort_by_key(|core| core.first().copied());
        let mut nodes = BTreeMap::new();
        if let Ok(entries) = std::fs::read_dir(root.join("sys/devices/system/node")) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().to_string();
                let Some(index) = name
                    .strip_prefix("node")
                    .and_then(|n| n.parse::<usize>().ok())
                else {
                    continue;
                };
                let list = std::fs::read_to_string(entry.path().join("cpulist"))?;
                let node_cpus = parse_cpu_list(list.trim()).unwrap_or_default();
                if !node_cpus.is_empty() {
                    nodes.insert(index, node_cpus);
                }
            }
        }
        let mut nodes: Vec<BTreeSet<usize>> = nodes.into_values().collect();
        if nodes.is_empty() {
            nodes.push(cpus.clone());
        }
        Ok(CpuLayout {
            packages,
            cores,
            nodes,
            cpus,
        })
    }

    /// One core per CPU, one node: what pinning assumes when `/sys` cannot be read.
    pub fn flat(cpus: usize) -> CpuLayout {
        let all: BTreeSet<usize> = (0..cpus.max(1)).collect();
        CpuLayout {
            packages: 1,
            cores: all.iter().map(|&cpu| BTreeSet::from([cpu])).collect(),
            nodes: vec![all.clone()],
            cpus: all,
        }
    }

    /// The CPUs shards are pinned to, in shard order: shard `i` runs on `cpus[i % len]`. Only
    /// `allowed` CPUs are used. The first CPU of every core comes before any second sibling;
    /// among those, the NUMA node holding the lowest allowed CPU comes first, then the other
    /// nodes in order, and CPU numbers break ties.
    pub fn shard_cpus(&self, allowed: &BTreeSet<usize>) -> Vec<usize> {
        let home = allowed
            .first()
            .and_then(|cpu| self.nodes.iter().position(|node| node.contains(cpu)));
        let node_rank = |cpu: usize| -> usize {
            match self.nodes.iter().position(|node| node.contains(&cpu)) {
                Some(node) if Some(node) == home => 0,
                Some(node) => node + 1,
                None => usize::MAX,
            }
        };
        let mut ranked: Vec<(usize, usize, usize)> = Vec::new();
        for core in &self.cores {
            for (sibling, &cpu) in core.iter().filter(|c| allowed.contains(c)).enumerate() {
                ranked.push((sibling, node_rank(cpu), cpu));
            }
        }
        // Allowed CPUs the topology does not list (offline in /sys, odd containers) go last.
        let listed: BTreeSet<usize> = ranked.iter().map(|r| r.2).collect();
        for &cpu in allowed.difference(&listed) {
            ranked.push((usize::MAX, usize::MAX, cpu));
        }
        ranked.sort_unstable();
        ranked.into_iter().map(|(_, _, cpu)| cpu).collect()
    }
}

/// The CPUs this process may run on (`sched_getaffinity`: taskset, a cgroup cpuset).
pub fn allowed_cpus() -> io::Result<BTreeSet<usize>> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: the kernel writes at most size_of::<cpu_set_t>() bytes into `set`.
    let rc =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let max = usize::try_from(libc::CPU_SETSIZE).unwrap_or(1024);
    // SAFETY: CPU_ISSET only reads `set` at indexes below CPU_SETSIZE.
    Ok((0..max)
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect())
}

/// The CPUs shards of this process are pinned to, in shard order (see
/// [`CpuLayout::shard_cpus`]); CPUs 0..n when neither `/sys` nor the affinity mask can be read.
pub fn shard_cpus_of_this_machine() -> Vec<usize> {
    let parallelism = std::thread::available_parallelism().map_or(1, |n| n.get());
    let layout =
        CpuLayout::from_sys(Path::new("/")).unwrap_or_else(|_| CpuLayout::flat(parallelism));
    let allowed = allowed_cpus().unwrap_or_else(|_| layout.cpus.clone());
    let cpus = layout.shard_cpus(&allowed);
    if cpus.is_empty() {
        (0..parallelism).collect()
    } else {
        cpus
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::FakeRoot;

    /// A fake /sys with `packages` × `cores` × `threads` CPUs numbered as Linux does on x86
    /// (first threads of every core, then second threads), `nodes` nodes splitting the packages.
    fn machine(packages: usize, cores: usize, threads: usize, nodes: usize) -> FakeRoot {
        let root = FakeRoot::new();
        let total = packages * cores * threads;
        root.file(
            "/sys/devices/system/cpu/online",
            &format!("0-{}", total - 1),
        );
        let mut node_cpus: Vec<Vec<usize>> = vec![Vec::new(); nodes];
        for cpu in 0..total {
            let core_global = cpu % (packages * cores);
            let package = core_global / cores;
            let core = core_global % cores;
            let dir = format!("/sys/devices/system/cpu/cpu{cpu}/topology");
            root.file(&format!("{dir}/physical_package_id"), &package.to_string());
            root.file(&format!("{dir}/core_id"), &core.to_string());
            node_cpus[package * nodes / packages].push(cpu);
        }
        for (node, cpus) in node_cpus.iter().enumerate() {
            let list: Vec<String> = cpus.iter().map(usize::to_string).collect();
            root.file(
                &format!("/sys/devices/system/node/node{node}/cpulist"),
                &list.join(","),
            );
        }
        root
    }

    #[test]
    fn cores_and_nodes_are_read_from_sys() {
        let root = machine(2, 2, 2, 2);
        let layout = CpuLayout::from_sys(root.root()).expect("layout");
        assert_eq!(layout.packages, 2);
        assert_eq!(layout.cpus.len(), 8);
        assert_eq!(
            layout.cores,
            vec![
                BTreeSet::from([0, 4]),
                BTreeSet::from([1, 5]),
                BTreeSet::from([2, 6]),
                BTreeSet::from([3, 7])
            ]
        );
        assert_eq!(
            layout.nodes,
            vec![BTreeSet::from([0, 1, 4, 5]), BTreeSet::from([2, 3, 6, 7])]
        );
    }

    #[test]
    fn shards_take_physical_cores_first_then_siblings() {
        let root = machine(2, 2, 2, 2);
        let layout = CpuLayout::from_sys(root.root()).expect("layout");
        assert_eq!(
            layout.shard_cpus(&layout.cpus),
            vec![0, 1, 2, 3, 4, 5, 6, 7]
        );
        // Siblings numbered next to each other (as hwloc and some ARM kernels do).
        let paired = CpuLayout {
            packages: 1,
            cores: vec![BTreeSet::from([0, 1]), BTreeSet::from([2, 3])],
            nodes: vec![BTreeSet::from([0, 1, 2, 3])],
            cpus: BTreeSet::from([0, 1, 2, 3]),
        };
        assert_eq!(paired.shard_cpus(&paired.cpus), vec![0, 2, 1, 3]);
    }

    #[test]
    fn pinning_stays_inside_the_affinity_mask_and_starts_on_its_node() {
        let root = machine(2, 2, 1, 2);
        let layout = CpuLayout::from_sys(root.root()).expect("layout");
        assert_eq!(layout.shard_cpus(&BTreeSet::from([2, 3])), vec![2, 3]);
        assert_eq!(layout.shard_cpus(&BTreeSet::from([1, 3])), vec![1, 3]);
        // The node of the lowest allowed CPU first.
        assert_eq!(layout.shard_cpus(&BTreeSet::from([1, 2, 3])), vec![1, 2, 3]);
        // An allowed CPU /sys does not list still runs a shard, last.
        assert_eq!(layout.shard_cpus(&BTreeSet::from([0, 9])), vec![0, 9]);
    }

    #[test]
    fn a_machine_without_node_or_topology_files_is_flat() {
        let root = FakeRoot::new();
        root.file("/sys/devices/system/cpu/online", "0-2");
        let layout = CpuLayout::from_sys(root.root()).expect("layout");
        assert_eq!(layout.cores.len(), 3);
        assert_eq!(layout.nodes, vec![BTreeSet::from([0, 1, 2])]);
        assert_eq!(layout.shard_cpus(&layout.cpus), vec![0, 1, 2]);
    }

    #[test]
    fn a_missing_sys_is_an_error_not_a_panic() {
        let root = FakeRoot::new();
        assert!(CpuLayout::from_sys(root.root()).is_err());
        root.file("/sys/devices/system/cpu/online", "garbage");
        assert!(CpuLayout::from_sys(root.root()).is_err());
    }

    #[test]
    fn this_machine_pins_every_allowed_cpu_once() {
        let cpus = shard_cpus_of_this_machine();
        let unique: BTreeSet<usize> = cpus.iter().copied().collect();
        assert_eq!(unique.len(), cpus.len(), "{cpus:?}");
        assert!(!cpus.is_empty());
    }
}
