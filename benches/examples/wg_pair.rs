//! One side of `benches/scripts/wg-go-compare.sh` (`./x bench-wg`): the same load code for
//! every client, so the script compares like with like on one veth path.
//!
//! - `sink IP` serves kernel TCP on `IP`: a discard on port 5001 (reads to EOF, answers one
//!   byte) and an echo on 5002. It runs behind the wireguard-go server (its TUN device).
//! - `node KEY LISTEN TUN_IP PEER_PUB` is our node: a `WgNode` accepting inbound tunnelled
//!   streams and serving the same discard and echo in-process (our pair's server side).
//! - `kernel SERVER_IP bulk MIB | rr SECS CONNS` is the client over kernel TCP (through
//!   wireguard-go's TUN when the script routes it so).
//! - `ours KEY LISTEN TUN_IP PEER_PUB ENDPOINT SERVER_IP bulk MIB | rr SECS CONNS` is the
//!   client through our backend (`WgNode`, userspace TCP).
//!
//! Clients print one JSON line: the phase's figures and this process's CPU seconds over it;
//! `ours` adds the node's counters (TCP retransmissions among them).
#![allow(clippy::print_stdout, missing_docs)]

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fipstun_scorecard::procfs::{Pid, cpu_times, rss};
use fipstun_transport::{Target, Transport, TunnelListener};
use fipstun_wireguard::{WgConfig, WgNode, WgPeer, WgPrivateKey, WgPublicKey};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The allocator the `fipstun` binary ships (jemalloc), so figures match the binary's.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const DISCARD: u16 = 5001;
const ECHO: u16 = 5002;
const MSG: usize = 1024;

type BoxErr = Box<dyn std::error::Error + Send + Sync>;

fn die(e: impl std::fmt::Display) -> ! {
    eprintln!("wg_pair: {e}");
    std::process::exit(1)
}

/// `WG_TCP_BUFFER_KIB` overrides the per-connection TCP buffers (experiments only).
fn tuned(mut c: WgConfig) -> WgConfig {
    if let Some(k) = std::env::var("WG_TCP_BUFFER_KIB")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        c.tcp_buffer_bytes = k << 10;
    }
    c
}

/// This process's resident set now, KiB (at the end of a phase, its streams still open).
fn rss_kib() -> u64 {
    rss(Pid::Current).map_or(0, |b| b >> 10)
}

fn cpu_now() -> f64 {
    cpu_times(Pid::Current).map_or(0.0, |c| c.total().as_secs_f64())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let a = |i: usize| {
        args.get(i)
            .cloned()
            .unwrap_or_else(|| die(format!("missing argument {i}; see the file's doc")))
    };
    match a(0).as_str() {
        "sink" => {
            let ip: IpAddr = a(1).parse().unwrap_or_else(|e| die(e));
            let d = TcpListener::bind((ip, DISCARD))
                .await
                .unwrap_or_else(|e| die(e));
            let e = TcpListener::bind((ip, ECHO))
                .await
                .unwrap_or_else(|e| die(e));
            println!("ready");
            tokio::spawn(async move {
                while let Ok((s, _)) = d.accept().await {
                    let _ = s.set_nodelay(true);
                    tokio::spawn(discard(s));
                }
            });
            while let Ok((s, _)) = e.accept().await {
                let _ = s.set_nodelay(true);
                tokio::spawn(echo(s));
            }
        }
        "node" => {
            let node = WgNode::bind(tuned(
                WgConfig::new(
                    a(1).parse::<WgPrivateKey>().unwrap_or_else(|e| die(e)),
                    a(2).parse().unwrap_or_else(|e| die(e)),
                    a(3).parse().unwrap_or_else(|e| die(e)),
                )
                .accepting_inbound()
                .with_peer(
                    WgPeer::new(a(4).parse::<WgPublicKey>().unwrap_or_else(|e| die(e)))
                        .with_allowed_ip("0.0.0.0/0".parse().unwrap_or_else(|e| die(e))),
                ),
            ))
            .await
            .unwrap_or_else(|e| die(e));
            println!("ready");
            let l = node.listener();
            while let Ok(i) = l.accept().await {
                match i.target.socket_addr().map(|a| a.port()) {
                    Some(DISCARD) => tokio::spawn(discard(i.stream)),
                    _ => tokio::spawn(echo(i.stream)),
                };
            }
        }
        "kernel" => {
            let server: IpAddr = a(1).parse().unwrap_or_else(|e| die(e));
            let dial = move |port: u16| async move {
                let s = TcpStream::connect((server, port)).await?;
                s.set_nodelay(true)?;
                Ok::<_, BoxErr>(s)
            };
            let out = phase(&args[2..], dial).await.unwrap_or_else(|e| die(e));
            println!(
                "{{\"client\":\"kernel\",{out},\"client_rss_kib\":{}}}",
                rss_kib()
            );
        }
        "ours" => {
            let server: IpAddr = a(6).parse().unwrap_or_else(|e| die(e));
            let node = Arc::new(
                WgNode::bind(tuned(
                    WgConfig::new(
                        a(1).parse::<WgPrivateKey>().unwrap_or_else(|e| die(e)),
                        a(2).parse().unwrap_or_else(|e| die(e)),
                        a(3).parse().unwrap_or_else(|e| die(e)),
                    )
                    .with_peer(
                        WgPeer::new(a(4).parse::<WgPublicKey>().unwrap_or_else(|e| die(e)))
                            .with_endpoint(a(5).parse().unwrap_or_else(|e| die(e)))
                            .with_allowed_ip("0.0.0.0/0".parse().unwrap_or_else(|e| die(e))),
                    ),
                ))
                .await
                .unwrap_or_else(|e| die(e)),
            );
            let n = node.clone();
            let dial = move |port: u16| {
                let n = n.clone();
                async move {
                    Ok::<_, BoxErr>(
                        n.connect(&Target::new(SocketAddr::new(server, port)))
                            .await?,
                    )
                }
            };
            let out = phase(&args[7..], dial).await.unwrap_or_else(|e| die(e));
            let st = node.stats();
            println!(
                "{{\"client\":\"ours\",{out},\"tcp_retransmit_timeouts\":{},\"tcp_retransmitted_segments\":{},\"tcp_retransmit_stalled_seconds\":{:.3},\"tcp_zero_window_acks\":{},\"client_rss_kib\":{}}}",
                st.tcp_retransmit_timeouts,
                st.tcp_retransmitted_segments,
                st.tcp_retransmit_stalled.as_secs_f64(),
                st.tcp_zero_window_acks,
                rss_kib()
            );
        }
        other => die(format!("unknown mode {other}")),
    }
}

/// `bulk MIB` or `rr SECS CONNS`, as JSON fields (no braces).
async fn phase<S, F, Fut>(args: &[String], dial: F) -> Result<String, BoxErr>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: Fn(u16) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<S, BoxErr>> + Send,
{
    let num = |i: usize| -> Result<u64, BoxErr> {
        Ok(args.get(i).ok_or("missing number")?.parse::<u64>()?)
    };
    match args.first().map(String::as_str) {
        Some("bulk") => {
            let bytes = num(1)? << 20;
            // A warm-up stream first (handshake, congestion window), then the timed one.
            one_bulk(&dial, 8 << 20).await?;
            let cpu0 = cpu_now();
            let t = Instant::now();
            one_bulk(&dial, bytes).await?;
            let secs = t.elapsed().as_secs_f64();
            Ok(format!(
                "\"phase\":\"bulk\",\"bytes\":{bytes},\"seconds\":{secs:.4},\"gbit_per_s\":{:.3},\"cpu_seconds\":{:.3}",
                bytes as f64 * 8.0 / secs / 1e9,
                cpu_now() - cpu0
            ))
        }
        Some("rr") => {
            let secs = num(1)?;
            let conns = num(2)?;
            let mut streams = Vec::new();
            for _ in 0..conns {
                streams.push(dial(ECHO).await?);
            }
            let done = Arc::new(AtomicU64::new(0));
            let cpu0 = cpu_now();
            let t = Instant::now();
            let until = t + Duration::from_secs(secs);
            let mut tasks = tokio::task::JoinSet::new();
            for mut s in streams {
                let done = done.clone();
                tasks.spawn(async move {
                    let msg = [7u8; MSG];
                    let mut back = [0u8; MSG];
                    while Instant::now() < until {
                        s.write_all(&msg).await?;
                        s.read_exact(&mut back).await?;
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok::<_, std::io::Error>(())
                });
            }
            while let Some(r) = tasks.join_next().await {
                r??;
            }
            let wall = t.elapsed().as_secs_f64();
            let n = done.load(Ordering::Relaxed);
            Ok(format!(
                "\"phase\":\"rr\",\"connections\":{conns},\"message_bytes\":{MSG},\"requests\":{n},\"seconds\":{wall:.3},\"requests_per_s\":{:.1},\"cpu_seconds\":{:.3}",
                n as f64 / wall,
                cpu_now() - cpu0
            ))
        }
        _ => Err("phase: bulk MIB | rr SECS CONNS".into()),
    }
}

async fn one_bulk<S, F, Fut>(dial: &F, bytes: u64) -> Result<(), BoxErr>
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: Fn(u16) -> Fut,
    Fut: std::future::Future<Output = Result<S, BoxErr>>,
{
    let mut s = dial(DISCARD).await?;
    let buf = vec![0x5au8; 256 << 10];
    let mut left = bytes;
    while left > 0 {
        let k = left.min(buf.len() as u64) as usize;
        s.write_all(&buf[..k]).await?;
        left -= k as u64;
    }
    s.shutdown().await?;
    let mut ack = [0u8; 16];
    let n = s.read(&mut ack).await?;
    let got: u64 = std::str::from_utf8(&ack[..n])?.trim().parse()?;
    if got != bytes {
        return Err(format!("the sink counted {got} bytes, sent {bytes}").into());
    }
    Ok(())
}

/// Reads to EOF, then answers the byte count.
async fn discard<S: AsyncRead + AsyncWrite + Unpin>(mut s: S) {
    let mut buf = vec![0u8; 256 << 10];
    let mut n = 0u64;
    loop {
        match s.read(&mut buf).await {
            Ok(0) => break,
            Ok(k) => n += k as u64,
            Err(_) => return,
        }
    }
    let _ = s.write_all(format!("{n}\n").as_bytes()).await;
    let _ = s.shutdown().await;
}

async fn echo<S: AsyncRead + AsyncWrite + Unpin>(s: S) {
    let (mut r, mut w) = tokio::io::split(s);
    let _ = tokio::io::copy(&mut r, &mut w).await;
}
