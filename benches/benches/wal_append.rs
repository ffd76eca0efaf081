//! WAL append micro-benchmarks (criterion).
//!
//! `cargo bench -p sluice-benches --bench wal_append`
//! The WAL file goes to $SLUICE_WAL_BENCH_DIR (default /work/wal-bench, the
//! same disk as the workspace). For the comparison with fio on the same file,
//! run the wal-bench example instead (README of wal-direct).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use glommio::{LocalExecutor, LocalExecutorBuilder, Placement};
use sluice_wal::{Wal, WalConfig, WalPosition};

const CAPACITY_BYTES: u64 = 1 << 30;

fn wal_path() -> PathBuf {
    let dir = std::env::var("SLUICE_WAL_BENCH_DIR").unwrap_or_else(|_| "/work/wal-bench".into());
    std::fs::create_dir_all(&dir).expect("bench dir");
    PathBuf::from(dir).join("criterion-wal")
}

fn executor() -> LocalExecutor {
    LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(32 << 20)
        .make()
        .expect("glommio executor (RLIMIT_MEMLOCK too low?)")
}

/// Opens the WAL, runs `body` on it and returns only `body`'s time; trims
/// everything before closing so the next open recovers nothing.
fn timed<F>(executor: &LocalExecutor, body: impl FnOnce(Wal) -> F) -> Duration
where
    F: std::future::Future<Output = (Wal, Duration)>,
{
    executor.run(async {
        let (wal, _) = Wal::open(WalConfig::new(wal_path(), CAPACITY_BYTES))
            .await
            .expect("open");
        let (wal, elapsed) = body(wal).await;
        wal.trim(wal.durable_position()).await.expect("trim");
        wal.close().await.expect("close");
        elapsed
    })
}

fn append_throughput(c: &mut Criterion) {
    let executor = executor();
    let mut group = c.benchmark_group("wal_append_sequential");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5));
    for record_bytes in [1usize << 10, 16 << 10, 1 << 20] {
        group.throughput(Throughput::Bytes(record_bytes as u64));
        group.bench_function(BenchmarkId::from_parameter(record_bytes), |b| {
            b.iter_custom(|iterations| {
                timed(&executor, |wal| async move {
                    let payload = vec![0xabu8; record_bytes];
                    let started = Instant::now();
                    let mut last = WalPosition(0);
                    for i in 0..iterations {
                        last = wal.append(1, i, i, &payload).await.expect("append");
                        if wal.stats().used_bytes > CAPACITY_BYTES / 2 {
                            wal.trim(wal.durable_position()).await.expect("trim");
                        }
                    }
                    wal.wait_durable(last).await.expect("durable");
                    let elapsed = started.elapsed();
                    (wal, elapsed)
                })
            });
        });
    }
    group.finish();
}

fn durable_append_qd1(c: &mut Criterion) {
    let executor = executor();
    let mut group = c.benchmark_group("wal_durable_append_qd1");
    group.sample_size(20);
    group.bench_function("1024", |b| {
        b.iter_custom(|iterations| {
            timed(&executor, |wal| async move {
                let payload = vec![0xcdu8; 1 << 10];
                let started = Instant::now();
                for i in 0..iterations {
                    let end = wal.append(2, i, i, &payload).await.expect("append");
                    wal.wait_durable(end).await.expect("durable");
                }
                let elapsed = started.elapsed();
                (wal, elapsed)
            })
        });
    });
    group.finish();
}

criterion_group!(benches, append_throughput, durable_append_qd1);
criterion_main!(benches);
