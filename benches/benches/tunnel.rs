//! Tunnels head to head on loopback, one generic workload over `T: Transport`: plain TCP
//! (baseline), plain TCP through a user-space relay (two hops, no crypto: the floor for a
//! terminating tunnel), HBONE over FIPS mTLS, and the WireGuard backend. Bulk with 1 and 8 streams,
//! 1 KiB request/response on an open stream, and stream setup on a warm tunnel. Measures only.
//!
//! `cargo bench -p fipstun-benches --bench tunnel`

use std::sync::Arc;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use fipstun_benches::{bulk, hbone, plain, round_trip, stream_setup, wireguard};
use fipstun_scorecard::Sinks;
use fipstun_transport::{Target, Transport};
use tokio::runtime::Runtime;

const BULK_BYTES: u64 = 64 << 20;

/// The allocator the `fipstun` binary ships (jemalloc), so library figures match the binary's.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn one_backend<T: Transport>(
    c: &mut Criterion,
    rt: &Runtime,
    name: &str,
    t: Arc<T>,
    sinks: &Sinks,
) {
    let mut g = c.benchmark_group("tunnel_bulk");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(8));
    g.throughput(Throughput::Bytes(BULK_BYTES));
    for streams in [1usize, 8] {
        g.bench_with_input(
            BenchmarkId::new(name, format!("{streams}_streams")),
            &streams,
            |b, &n| {
                b.iter(|| {
                    rt.block_on(bulk(&t, sinks.discard, BULK_BYTES, n))
                        .expect("bulk")
                })
            },
        );
    }
    g.finish();

    let mut g = c.benchmark_group("tunnel_rr_1k");
    g.throughput(Throughput::Elements(1));
    let mut s = rt
        .block_on(t.connect(&Target::new(sinks.echo)))
        .expect("echo stream");
    let msg = [0x42u8; 1024];
    let mut back = [0u8; 1024];
    g.bench_function(name, |b| {
        b.iter(|| {
            rt.block_on(round_trip(&mut s, &msg, &mut back))
                .expect("rr")
        })
    });
    g.finish();

    let mut g = c.benchmark_group("tunnel_stream_setup");
    g.throughput(Throughput::Elements(1));
    g.bench_function(name, |b| {
        b.iter(|| rt.block_on(stream_setup(&*t, sinks.echo)).expect("setup"))
    });
    g.finish();
}

fn tunnels(c: &mut Criterion) {
    let rt = runtime();
    let sinks = rt.block_on(Sinks::start()).expect("sinks");
    one_backend(c, &rt, "plain_tcp", plain(), &sinks);
    // The same plain TCP through a user-space relay: the two-hop floor every terminating
    // tunnel (the HBONE server among them) starts from.
    let relayed = rt.block_on(sinks.through_relay()).expect("relay");
    one_backend(c, &rt, "plain_relay", plain(), &relayed);
    let h = rt.block_on(hbone());
    one_backend(c, &rt, "hbone_fips", h, &sinks);
    let (w, _server) = rt.block_on(wireguard());
    one_backend(c, &rt, "wireguard", w, &sinks);
}

criterion_group!(benches, tunnels);
criterion_main!(benches);
