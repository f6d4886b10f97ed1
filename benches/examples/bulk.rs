//! One bulk measurement through a backend on loopback, printed as JSON (throughput, and the
//! process's CPU seconds over the measured transfer):
//! `cargo run --release -p fipstun-benches --example bulk -- wireguard|hbone|plain|relay [MiB]`.
//! `relay` is plain TCP through a user-space TCP relay ([`Sinks::through_relay`]): two
//! loopback hops, no crypto.
//! Used by `benches/scripts/wg-go-compare.sh` to put our WireGuard backend beside
//! wireguard-go in one script run.
//!
//! `... --example bulk -- compare [MiB] [rounds]` alternates plain TCP, the relay and HBONE in
//! one process (default 5 rounds) and prints each round and the median ratios: on a busy
//! machine, neighbouring runs see the same load.
#![allow(clippy::print_stdout, missing_docs)]

use std::time::Instant;

use fipstun_benches::{bulk, hbone, plain, wireguard};
use fipstun_scorecard::Sinks;
use fipstun_scorecard::procfs::{Pid, cpu_times};

/// The allocator the `fipstun` binary ships (jemalloc), so library figures match the binary's.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// One measured transfer: wall seconds, and user + system CPU seconds of this process.
struct Run {
    secs: f64,
    cpu: Option<f64>,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let backend = args.next().unwrap_or_else(|| "wireguard".into());
    let mib: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(512);
    let sinks = Sinks::start().await.expect("sinks");
    let bytes = mib << 20;
    if backend == "compare" {
        let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(5);
        return compare(&sinks, bytes, rounds.max(1)).await;
    }
    let run = async {
        match backend.as_str() {
            "plain" => {
                let t = plain();
                time(|| bulk(&t, sinks.discard, bytes, 1)).await
            }
            "relay" => {
                let relayed = sinks.through_relay().await.map_err(|e| e.to_string())?;
                let t = plain();
                time(|| bulk(&t, relayed.discard, bytes, 1)).await
            }
            "hbone" => {
                let t = hbone().await;
                time(|| bulk(&t, sinks.discard, bytes, 1)).await
            }
            "wireguard" => {
                let (t, _server) = wireguard().await;
                time(|| bulk(&t, sinks.discard, bytes, 1)).await
            }
            other => Err(format!("unknown backend {other}")),
        }
    };
    match run.await {
        Ok(run) => println!(
            "{{\"backend\":\"{backend}\",\"bytes\":{bytes},\"seconds\":{:.4},\"gbit_per_s\":{:.3},\"cpu_seconds\":{},\"cores\":{}}}",
            run.secs,
            bytes as f64 * 8.0 / run.secs / 1e9,
            run.cpu.map_or("null".into(), |c| format!("{c:.3}")),
            run.cpu
                .map_or("null".into(), |c| format!("{:.2}", c / run.secs)),
        ),
        Err(e) => {
            eprintln!("bulk: {e}");
            std::process::exit(1);
        }
    }
}

async fn compare(sinks: &Sinks, bytes: u64, rounds: usize) {
    let p = plain();
    let h = hbone().await;
    let relayed = sinks.through_relay().await.unwrap_or_else(|e| {
        eprintln!("bulk: relay: {e}");
        std::process::exit(1);
    });
    let gbit = |secs: f64| bytes as f64 * 8.0 / secs / 1e9;
    let or_exit = |r: Result<Run, String>| {
        r.map(|run| run.secs).unwrap_or_else(|e| {
            eprintln!("bulk: {e}");
            std::process::exit(1);
        })
    };
    let (mut vs_plain, mut relay_vs_plain, mut vs_relay) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let plain_s = or_exit(time(|| bulk(&p, sinks.discard, bytes, 1)).await);
        let relay_s = or_exit(time(|| bulk(&p, relayed.discard, bytes, 1)).await);
        let hbone_s = or_exit(time(|| bulk(&h, sinks.discard, bytes, 1)).await);
        println!(
            "{{\"round\":{round},\"plain_gbit_per_s\":{:.3},\"relay_gbit_per_s\":{:.3},\"hbone_gbit_per_s\":{:.3},\"hbone_vs_plain\":{:.3},\"hbone_vs_relay\":{:.3}}}",
            gbit(plain_s),
            gbit(relay_s),
            gbit(hbone_s),
            plain_s / hbone_s,
            relay_s / hbone_s
        );
        vs_plain.push(plain_s / hbone_s);
        relay_vs_plain.push(plain_s / relay_s);
        vs_relay.push(relay_s / hbone_s);
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "{{\"median_hbone_vs_plain\":{:.3},\"median_relay_vs_plain\":{:.3},\"median_hbone_vs_relay\":{:.3}}}",
        median(vs_plain),
        median(relay_vs_plain),
        median(vs_relay)
    );
}

/// Run `f` once to warm up (handshake, windows), then once measured.
async fn time<F, Fut>(f: F) -> Result<Run, String>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    f().await?;
    let cpu0 = cpu_times(Pid::Current).ok();
    let start = Instant::now();
    f().await?;
    let secs = start.elapsed().as_secs_f64();
    let cpu = cpu0
        .zip(cpu_times(Pid::Current).ok())
        .map(|(a, b)| b.since(&a).total().as_secs_f64());
    Ok(Run { secs, cpu })
}
