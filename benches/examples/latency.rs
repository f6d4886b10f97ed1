//! Per-operation latency percentiles through each backend on loopback (criterion reports means):
//! stream setup on a warm tunnel and 1 KiB request/response on an open stream, `N` each.
//! Prints JSON; `./x bench` writes it to `$CARGO_TARGET_DIR/latency.json` for bench-report.
//!
//! `cargo run --release -p fipstun-benches --example latency -- [N]`
#![allow(clippy::print_stdout, missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use fipstun_benches::{hbone, plain, round_trip, stream_setup, wireguard};
use fipstun_scorecard::Sinks;
use fipstun_transport::{Target, Transport};

/// The allocator the `fipstun` binary ships (jemalloc), so library figures match the binary's.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn percentiles(mut d: Vec<Duration>) -> String {
    d.sort();
    let at = |q: f64| {
        let i = ((d.len() as f64 - 1.0) * q).round() as usize;
        d[i].as_secs_f64() * 1e6
    };
    format!(
        "{{\"n\":{},\"p50_us\":{:.1},\"p90_us\":{:.1},\"p99_us\":{:.1},\"p999_us\":{:.1}}}",
        d.len(),
        at(0.5),
        at(0.9),
        at(0.99),
        at(0.999)
    )
}

async fn measure<T: Transport>(t: Arc<T>, sinks: &Sinks, n: usize) -> Result<String, String> {
    for _ in 0..50 {
        stream_setup(&*t, sinks.echo).await?; // warm the pool / session
    }
    let mut setup = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        stream_setup(&*t, sinks.echo).await?;
        setup.push(start.elapsed());
    }
    let mut s = t
        .connect(&Target::new(sinks.echo))
        .await
        .map_err(|e| e.to_string())?;
    let (msg, mut back) = ([0x42u8; 1024], [0u8; 1024]);
    let mut rr = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        round_trip(&mut s, &msg, &mut back)
            .await
            .map_err(|e| e.to_string())?;
        rr.push(start.elapsed());
    }
    Ok(format!(
        "{{\"stream_setup\":{},\"rr_1k\":{}}}",
        percentiles(setup),
        percentiles(rr)
    ))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5000);
    let sinks = Sinks::start().await.expect("sinks");
    let relayed = sinks.through_relay().await.expect("relay");
    let (wg, _server) = wireguard().await;
    let result = async {
        Ok::<_, String>(format!(
            "{{\"plain_tcp\":{},\"plain_relay\":{},\"hbone_fips\":{},\"wireguard\":{}}}",
            measure(plain(), &sinks, n).await?,
            measure(plain(), &relayed, n).await?,
            measure(hbone().await, &sinks, n).await?,
            measure(wg, &sinks, n).await?
        ))
    };
    match result.await {
        Ok(json) => println!("{json}"),
        Err(e) => {
            eprintln!("latency: {e}");
            std::process::exit(1);
        }
    }
}
