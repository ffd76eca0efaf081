//! WAL benchmark next to fio on the same file, in the same run.
//!
//! ```text
//! cargo run --release -p sluice-wal --example wal-bench -- \
//!     --path /work/wal-bench/wal --capacity-mib 2048 --seconds 5
//! ```
//!
//! Measures, for each durability mode (O_DSYNC, fdatasync):
//! sequential append throughput with 1 KiB, 16 KiB and 1 MiB records, and the
//! p50 / p99 latency of a durable 1 KiB append at queue depth 1; then runs
//! fio (if installed) on the same file:
//! `--direct=1 --ioengine=io_uring --rw=write --bs=1M --iodepth=16` and
//! `--bs=4k --iodepth=1 --fdatasync=1` (plus `--sync=dsync` for O_DSYNC).

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use glommio::{LocalExecutorBuilder, Placement};
use sluice_wal::{Durability, FenceCheck, Wal, WalConfig, WalPosition};

struct Args {
    path: PathBuf,
    capacity_bytes: u64,
    seconds: f64,
    inflight_writes_max: usize,
    group_commit_bytes_max: u64,
    latency_samples: usize,
    fio: bool,
    modes: Vec<Durability>,
    fence_check: FenceCheck,
    record_sizes: Vec<usize>,
    latency_only: bool,
    spin_before_park_us: u64,
}

fn parse_args() -> Args {
    let mut args = Args {
        path: PathBuf::from("/work/wal-bench/wal"),
        capacity_bytes: 2048 << 20,
        seconds: 5.0,
        inflight_writes_max: 16,
        group_commit_bytes_max: 1 << 20,
        latency_samples: 5000,
        fio: true,
        modes: vec![Durability::Dsync, Durability::Fdatasync],
        fence_check: FenceCheck::AfterWrite,
        record_sizes: vec![1 << 10, 16 << 10, 1 << 20],
        latency_only: false,
        spin_before_park_us: 0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--path" => args.path = PathBuf::from(value()),
            "--capacity-mib" => args.capacity_bytes = value().parse::<u64>().expect("MiB") << 20,
            "--seconds" => args.seconds = value().parse().expect("seconds"),
            "--inflight" => args.inflight_writes_max = value().parse().expect("count"),
            "--group-kib" => {
                args.group_commit_bytes_max = value().parse::<u64>().expect("KiB") << 10
            }
            "--latency-samples" => args.latency_samples = value().parse().expect("count"),
            "--no-fio" => args.fio = false,
            "--latency-only" => args.latency_only = true,
            "--spin-us" => args.spin_before_park_us = value().parse().expect("microseconds"),
            "--fence" => {
                args.fence_check = match value().as_str() {
                    "off" => FenceCheck::Off,
                    "after" => FenceCheck::AfterWrite,
                    "both" => FenceCheck::BeforeAndAfterWrite,
                    other => panic!("--fence off|after|both, not {other}"),
                }
            }
            "--record-kib" => {
                args.record_sizes = value()
                    .split(',')
                    .map(|kib| kib.parse::<usize>().expect("KiB") << 10)
                    .collect()
            }
            "--mode" => {
                args.modes = match value().as_str() {
                    "dsync" => vec![Durability::Dsync],
                    "fdatasync" => vec![Durability::Fdatasync],
                    other => panic!("--mode dsync|fdatasync, not {other}"),
                }
            }
            other => panic!("unknown flag {other}"),
        }
    }
    args
}

fn main() {
    let args = parse_args();
    if let Some(dir) = args.path.parent() {
        std::fs::create_dir_all(dir).expect("bench dir");
    }
    println!(
        "wal-bench: {} capacity {} MiB, group commit {} KiB, {} writes in flight",
        args.path.display(),
        args.capacity_bytes >> 20,
        args.group_commit_bytes_max >> 10,
        args.inflight_writes_max
    );
    let mut builder = LocalExecutorBuilder::new(Placement::Fixed(0)).io_memory(64 << 20);
    if args.spin_before_park_us > 0 {
        builder = builder.spin_before_park(Duration::from_micros(args.spin_before_park_us));
    }
    let executor = builder
        .make()
        .expect("glommio executor (needs RLIMIT_MEMLOCK >= 3 x 64 MiB or CAP_IPC_LOCK)");
    for mode in &args.modes {
        let mode = *mode;
        executor.run(bench_mode(&args, mode));
    }
    executor.run(glommio_write_fdatasync(&args));
    raw_write_fdatasync(&args);
    if args.fio {
        run_fio(&args);
    }
}

/// Baseline on the same runtime without the WAL: glommio DmaFile 4 KiB
/// write_at + fdatasync at QD1.
async fn glommio_write_fdatasync(args: &Args) {
    let file = glommio::io::OpenOptions::new()
        .read(true)
        .write(true)
        .dma_open(&args.path)
        .await
        .expect("open for the glommio baseline");
    let mut samples_us = Vec::with_capacity(args.latency_samples);
    for i in 0..args.latency_samples as u64 {
        let started = Instant::now();
        let buf = file.alloc_dma_buffer(4096);
        let position = sluice_wal::format::RING_OFFSET + (i * 4096) % args.capacity_bytes;
        file.write_at(buf, position).await.expect("write_at");
        file.fdatasync().await.expect("fdatasync");
        samples_us.push(started.elapsed().as_secs_f64() * 1e6);
    }
    file.close().await.expect("close");
    samples_us.sort_by(f64::total_cmp);
    println!(
        "[glommio] DmaFile write_at(4 KiB) + fdatasync, QD1: p50 {:.0} us  p99 {:.0} us  p99.9 {:.0} us  mean {:.0} us ({} samples)",
        percentile(&samples_us, 50.0),
        percentile(&samples_us, 99.0),
        percentile(&samples_us, 99.9),
        samples_us.iter().sum::<f64>() / samples_us.len() as f64,
        samples_us.len()
    );
}

/// Baseline without glommio or the WAL: blocking O_DIRECT 4 KiB pwrite +
/// fdatasync at QD1 on the same file, timed per operation (fio reports the
/// write and the sync separately).
fn raw_write_fdatasync(args: &Args) {
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    let file = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(&args.path)
        .expect("open for the raw baseline");
    let layout = std::alloc::Layout::from_size_align(4096, 4096).expect("layout");
    // SAFETY: non-zero size; freed below; zeroed so the slice is initialised.
    let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
    assert!(!ptr.is_null());
    // SAFETY: ptr holds 4096 initialised bytes.
    let block = unsafe { std::slice::from_raw_parts(ptr, 4096) };
    let mut samples_us = Vec::with_capacity(args.latency_samples);
    for i in 0..args.latency_samples as u64 {
        let started = Instant::now();
        file.write_all_at(
            block,
            sluice_wal::format::RING_OFFSET + (i * 4096) % args.capacity_bytes,
        )
        .expect("pwrite");
        file.sync_data().expect("fdatasync");
        samples_us.push(started.elapsed().as_secs_f64() * 1e6);
    }
    // SAFETY: allocated above with this layout.
    unsafe { std::alloc::dealloc(ptr, layout) };
    samples_us.sort_by(f64::total_cmp);
    println!(
        "[raw] pwrite(O_DIRECT, 4 KiB) + fdatasync, QD1: p50 {:.0} us  p99 {:.0} us  p99.9 {:.0} us  mean {:.0} us ({} samples)",
        percentile(&samples_us, 50.0),
        percentile(&samples_us, 99.0),
        percentile(&samples_us, 99.9),
        samples_us.iter().sum::<f64>() / samples_us.len() as f64,
        samples_us.len()
    );
}

fn config(args: &Args, durability: Durability, fence_check: FenceCheck) -> WalConfig {
    let mut config = WalConfig::new(&args.path, args.capacity_bytes);
    config.durability = durability;
    config.fence_check = fence_check;
    config.inflight_writes_max = args.inflight_writes_max;
    config.group_commit_bytes_max = args.group_commit_bytes_max;
    config
}

async fn bench_mode(args: &Args, durability: Durability) {
    if args.latency_only {
        for fence_check in [FenceCheck::AfterWrite, FenceCheck::Off] {
            let (wal, _) = Wal::open(config(args, durability, fence_check))
                .await
                .expect("open");
            latency(&wal, args, durability, fence_check).await;
            wal.close().await.expect("close");
        }
        return;
    }
    let opened = Instant::now();
    let (wal, recovered) = Wal::open(config(args, durability, args.fence_check))
        .await
        .expect("open");
    println!(
        "[{durability:?}] open + recovery: {} records in {:.1} ms",
        recovered.len(),
        opened.elapsed().as_secs_f64() * 1e3
    );
    drop(recovered);
    for &record_bytes in &args.record_sizes {
        throughput(&wal, args, durability, record_bytes).await;
    }
    recovery(&wal, args, durability).await;
    wal.close().await.expect("close");
    let opened = Instant::now();
    let (wal, recovered) = Wal::open(config(args, durability, args.fence_check))
        .await
        .expect("reopen");
    let elapsed = opened.elapsed().as_secs_f64();
    let bytes: u64 = recovered.iter().map(|r| r.payload.len() as u64 + 64).sum();
    println!(
        "[{durability:?}] recovery with open (all payloads kept): {} records, {:.0} MiB in {:.0} ms = {:.0} MiB/s",
        recovered.len(),
        bytes as f64 / (1 << 20) as f64,
        elapsed * 1e3,
        bytes as f64 / elapsed / (1 << 20) as f64
    );
    drop(recovered);
    wal.close().await.expect("close");
    let opened = Instant::now();
    let mut streamed = (0u64, 0u64);
    let wal = Wal::open_each(config(args, durability, args.fence_check), |record| {
        streamed.0 += 1;
        streamed.1 += record.payload.len() as u64 + 64;
    })
    .await
    .expect("reopen");
    let elapsed = opened.elapsed().as_secs_f64();
    println!(
        "[{durability:?}] recovery with open_each (payloads dropped): {} records, {:.0} MiB in {:.0} ms = {:.0} MiB/s",
        streamed.0,
        streamed.1 as f64 / (1 << 20) as f64,
        elapsed * 1e3,
        streamed.1 as f64 / elapsed / (1 << 20) as f64
    );
    wal.close().await.expect("close");
    for fence_check in [FenceCheck::AfterWrite, FenceCheck::Off] {
        let (wal, _) = Wal::open(config(args, durability, fence_check))
            .await
            .expect("open");
        latency(&wal, args, durability, fence_check).await;
        wal.close().await.expect("close");
    }
}

async fn throughput(wal: &Wal, args: &Args, durability: Durability, record_bytes: usize) {
    let payload = vec![0xabu8; record_bytes];
    let before = wal.stats();
    let started = Instant::now();
    let budget = Duration::from_secs_f64(args.seconds);
    let mut records = 0u64;
    let mut last = WalPosition(0);
    while started.elapsed() < budget {
        for _ in 0..64 {
            last = wal
                .append(1, records, records, &payload)
                .await
                .expect("append");
            records += 1;
        }
        if wal.stats().used_bytes > args.capacity_bytes / 2 {
            wal.trim(wal.durable_position()).await.expect("trim");
        }
    }
    wal.wait_durable(last).await.expect("durable");
    let elapsed = started.elapsed().as_secs_f64();
    let after = wal.stats();
    let payload_mib_s = (records * record_bytes as u64) as f64 / elapsed / (1 << 20) as f64;
    let device_mib_s =
        (after.write_bytes_total - before.write_bytes_total) as f64 / elapsed / (1 << 20) as f64;
    let writes = after.writes_total - before.writes_total;
    println!(
        "[{durability:?}] append {:>7} B records (fence check {:?}): {:>9.0} records/s  payload {:>7.1} MiB/s  device {:>7.1} MiB/s  ({} writes, {:.0} KiB avg, {} space waits)",
        record_bytes,
        args.fence_check,
        records as f64 / elapsed,
        payload_mib_s,
        device_mib_s,
        writes,
        (after.write_bytes_total - before.write_bytes_total) as f64 / writes.max(1) as f64 / 1024.0,
        after.space_waits_total - before.space_waits_total,
    );
}

/// Fills the ring to 90% with 64 KiB records for the recovery measurement.
async fn recovery(wal: &Wal, args: &Args, durability: Durability) {
    wal.trim(wal.durable_position()).await.expect("trim");
    let payload = vec![0x5au8; 64 << 10];
    let mut last = WalPosition(0);
    let mut records = 0u64;
    while wal.stats().used_bytes < args.capacity_bytes / 10 * 9 {
        last = wal
            .append(3, records, records, &payload)
            .await
            .expect("append");
        records += 1;
    }
    wal.wait_durable(last).await.expect("durable");
    println!("[{durability:?}] filled the ring with {records} records of 64 KiB for recovery");
}

async fn latency(wal: &Wal, args: &Args, durability: Durability, fence_check: FenceCheck) {
    let payload = vec![0xcdu8; 1 << 10];
    let mut samples_us = Vec::with_capacity(args.latency_samples);
    for i in 0..args.latency_samples as u64 {
        let started = Instant::now();
        let end = wal.append(2, i, i, &payload).await.expect("append");
        wal.wait_durable(end).await.expect("durable");
        samples_us.push(started.elapsed().as_secs_f64() * 1e6);
        if wal.stats().used_bytes > args.capacity_bytes / 2 {
            wal.trim(end).await.expect("trim");
        }
    }
    samples_us.sort_by(f64::total_cmp);
    println!(
        "[{durability:?}] durable 1 KiB append, QD1, fence check {fence_check:?}: p50 {:.0} us  p99 {:.0} us  p99.9 {:.0} us  mean {:.0} us ({} samples)",
        percentile(&samples_us, 50.0),
        percentile(&samples_us, 99.0),
        percentile(&samples_us, 99.9),
        samples_us.iter().sum::<f64>() / samples_us.len() as f64,
        samples_us.len()
    );
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank]
}

fn run_fio(args: &Args) {
    let common = |name: &str| -> Vec<String> {
        vec![
            format!("--name={name}"),
            format!("--filename={}", args.path.display()),
            "--direct=1".into(),
            "--ioengine=io_uring".into(),
            "--rw=write".into(),
            format!("--offset={}", sluice_wal::format::RING_OFFSET),
            format!("--size={}", args.capacity_bytes),
            "--time_based".into(),
            format!("--runtime={}", args.seconds.ceil() as u64),
            "--output-format=json".into(),
        ]
    };
    let mut seq = common("seq");
    seq.extend(["--bs=1M".into(), "--iodepth=16".into()]);
    if args.latency_only {
        // only the QD1 fio runs below
    } else if let Some(json) = fio(&seq) {
        let write = &json["jobs"][0]["write"];
        println!(
            "[fio] --bs=1M --iodepth=16: {:.1} MiB/s",
            write["bw_bytes"].as_f64().unwrap_or(0.0) / (1 << 20) as f64
        );
    }
    let mut read = common("read");
    read.iter_mut().for_each(|arg| {
        if arg == "--rw=write" {
            *arg = "--rw=read".into();
        }
    });
    read.extend(["--bs=4M".into(), "--iodepth=4".into()]);
    if args.latency_only {
        // only the QD1 fio runs below
    } else if let Some(json) = fio(&read) {
        let read = &json["jobs"][0]["read"];
        println!(
            "[fio] --rw=read --bs=4M --iodepth=4 (recovery's read pattern): {:.1} MiB/s",
            read["bw_bytes"].as_f64().unwrap_or(0.0) / (1 << 20) as f64
        );
    }
    let mut sync = common("fdatasync");
    sync.extend([
        "--bs=4k".into(),
        "--iodepth=1".into(),
        "--fdatasync=1".into(),
    ]);
    if let Some(json) = fio(&sync) {
        let job = &json["jobs"][0];
        let write_p = |p: &str| {
            job["write"]["clat_ns"]["percentile"][p]
                .as_f64()
                .unwrap_or(0.0)
                / 1e3
        };
        let sync_p = |p: &str| {
            job["sync"]["lat_ns"]["percentile"][p]
                .as_f64()
                .unwrap_or(0.0)
                / 1e3
        };
        let iops = job["write"]["iops"].as_f64().unwrap_or(0.0);
        println!(
            "[fio] --bs=4k --iodepth=1 --fdatasync=1: write p50 {:.0} us p99 {:.0} us; fdatasync p50 {:.0} us p99 {:.0} us; write+fdatasync p99 (sum) {:.0} us; {:.0} ops/s = {:.0} us mean per write+fdatasync",
            write_p("50.000000"),
            write_p("99.000000"),
            sync_p("50.000000"),
            sync_p("99.000000"),
            write_p("99.000000") + sync_p("99.000000"),
            iops,
            1e6 / iops.max(1.0)
        );
    }
    let mut dsync = common("dsync");
    dsync.extend([
        "--bs=4k".into(),
        "--iodepth=1".into(),
        "--sync=dsync".into(),
    ]);
    if let Some(json) = fio(&dsync) {
        let write = &json["jobs"][0]["write"];
        let p = |p: &str| write["clat_ns"]["percentile"][p].as_f64().unwrap_or(0.0) / 1e3;
        println!(
            "[fio] --bs=4k --iodepth=1 --sync=dsync (O_DSYNC): write p50 {:.0} us p99 {:.0} us",
            p("50.000000"),
            p("99.000000")
        );
    }
}

fn fio(args: &[String]) -> Option<serde_json::Value> {
    let output = match Command::new("fio").args(args).output() {
        Ok(output) => output,
        Err(error) => {
            println!("[fio] not run ({error}); install it with `apt-get install -y fio`");
            return None;
        }
    };
    if !output.status.success() {
        println!("[fio] failed: {}", String::from_utf8_lossy(&output.stderr));
        return None;
    }
    serde_json::from_slice(&output.stdout).ok()
}
