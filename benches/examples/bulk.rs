//! One bulk measurement through a backend on loopback, printed as JSON:
//! `cargo run --release -p fipstun-benches --example bulk -- wireguard|hbone|plain [MiB]`.
//! Used by `benches/scripts/wg-go-compare.sh` to put our WireGuard backend beside
//! wireguard-go in one script run.
//!
//! `... --example bulk -- compare [MiB] [rounds]` alternates plain TCP and HBONE in one
//! process (default 5 rounds) and prints each round and the median HBONE/plain ratio: on a
//! busy machine, neighbouring runs see the same load.
#![allow(clippy::print_stdout, missing_docs)]

use std::time::Instant;

use fipstun_benches::{Sinks, bulk, hbone, plain, wireguard};

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
        Ok(secs) => println!(
            "{{\"backend\":\"{backend}\",\"bytes\":{bytes},\"seconds\":{secs:.4},\"gbit_per_s\":{:.3}}}",
            bytes as f64 * 8.0 / secs / 1e9
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
    let gbit = |secs: f64| bytes as f64 * 8.0 / secs / 1e9;
    let or_exit = |r: Result<f64, String>| {
        r.unwrap_or_else(|e| {
            eprintln!("bulk: {e}");
            std::process::exit(1);
        })
    };
    let mut ratios = Vec::new();
    for round in 0..rounds {
        let plain_s = or_exit(time(|| bulk(&p, sinks.discard, bytes, 1)).await);
        let hbone_s = or_exit(time(|| bulk(&h, sinks.discard, bytes, 1)).await);
        let ratio = plain_s / hbone_s;
        println!(
            "{{\"round\":{round},\"plain_gbit_per_s\":{:.3},\"hbone_gbit_per_s\":{:.3},\"ratio\":{ratio:.3}}}",
            gbit(plain_s),
            gbit(hbone_s)
        );
        ratios.push(ratio);
    }
    ratios.sort_by(f64::total_cmp);
    println!("{{\"median_ratio\":{:.3}}}", ratios[ratios.len() / 2]);
}

async fn time<F, Fut>(f: F) -> Result<f64, String>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    f().await?; // warm-up: handshake, windows
    let start = Instant::now();
    f().await?;
    Ok(start.elapsed().as_secs_f64())
}
