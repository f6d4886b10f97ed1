//! The criterion settings every provider bench runs under, shared by the workspace bench and
//! `benches/providers-nonfips` so both halves of the table are measured alike.

use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, Throughput};

use crate::workload::{GROUP, Row};

/// The `providers` group. Shorter than criterion's defaults (3 s warm-up, 5 s measurement):
/// 72 cells of primitives that each take at most tens of microseconds, where 2 s already gives
/// criterion its full 100 samples of many iterations each.
pub(crate) fn providers_group(c: &mut Criterion) -> BenchmarkGroup<'_, WallTime> {
    let mut g = c.benchmark_group(GROUP);
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(2));
    g
}

/// Bytes for the sized rows (AEAD, SHA-256), one operation for the others.
pub(crate) fn set_throughput(g: &mut BenchmarkGroup<'_, WallTime>, row: &Row) {
    g.throughput(match row.bytes {
        Some(n) => Throughput::Bytes(n as u64),
        None => Throughput::Elements(1),
    });
}
