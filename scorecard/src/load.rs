//! The scorecard's load generator: Fortio-like request/response, bulk and stream-setup loads
//! against a TCP address (a proxy's listener, or the sink itself for the no-mesh baseline),
//! with CPU and peak memory of every process involved sampled over the same window.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use super::procfs::{self, CpuTimes, Pid};

/// What a measured process does in the path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Part of the tunnel (proxy or node).
    Tunnel,
    /// The load generator and the echo/discard servers.
    App,
}

/// A process whose CPU and memory are charged to a run.
#[derive(Clone, Debug)]
pub struct Process {
    /// Short name for the report (`proxy`, `node`, `load+sinks`).
    pub name: String,
    /// Which process.
    pub pid: Pid,
    /// Its role.
    pub role: Role,
}

/// A workload shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Workload {
    /// `connections` persistent connections, each sending `size` bytes and reading them back
    /// as fast as answers come (closed loop, like Fortio at `-qps 0`).
    RequestResponse {
        /// Concurrent connections.
        connections: usize,
        /// Request and response size in bytes.
        size: usize,
    },
    /// `streams` connections writing 256 KiB chunks to a discard server.
    Bulk {
        /// Concurrent streams.
        streams: usize,
    },
    /// `concurrency` loops of connect, 1-byte round trip, close.
    StreamSetup {
        /// Concurrent loops.
        concurrency: usize,
    },
}

impl Workload {
    /// A short label: `rr-1KiB-c64`, `bulk-1`, `setup-c16`.
    pub fn label(&self) -> String {
        match self {
            Workload::RequestResponse { connections, size } if size % 1024 == 0 => {
                format!("rr-{}KiB-c{connections}", size / 1024)
            }
            Workload::RequestResponse { connections, size } => format!("rr-{size}B-c{connections}"),
            Workload::Bulk { streams } => format!("bulk-{streams}"),
            Workload::StreamSetup { concurrency } => format!("setup-c{concurrency}"),
        }
    }
}

/// Latency percentiles in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Median.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Largest sample.
    pub max_us: f64,
    /// Mean.
    pub mean_us: f64,
}

/// CPU and memory of one process over a window.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ProcessUsage {
    /// Name from [`Process`].
    pub name: String,
    /// Its role.
    pub role: Role,
    /// User-mode CPU seconds in the window.
    pub cpu_user_s: f64,
    /// Kernel-mode CPU seconds in the window.
    pub cpu_sys_s: f64,
    /// Peak resident set in the window, bytes.
    pub peak_rss_bytes: u64,
    /// Of the resident set at the end of the window, the file-backed pages (`RssFile`: the
    /// binary's code and data, shared with every process running it), bytes; 0 in files
    /// written before the field was added, or when unreadable.
    #[serde(default)]
    pub rss_file_bytes: u64,
}

/// What one workload window measured.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Measurement {
    /// The workload.
    pub workload: Workload,
    /// Measured wall time, seconds.
    pub wall_s: f64,
    /// Completed operations in the window (requests, setups; 0 for bulk).
    pub ops: u64,
    /// Payload bytes moved in the window (one direction).
    pub bytes: u64,
    /// Failed operations (connect or I/O errors) during the whole run.
    pub errors: u64,
    /// Latency of each operation (not for bulk).
    pub latency: Option<Latency>,
    /// CPU and memory per process.
    pub processes: Vec<ProcessUsage>,
}

impl Measurement {
    /// Operations per second.
    pub fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.wall_s.max(1e-9)
    }

    /// Bytes per second.
    pub fn bytes_per_sec(&self) -> f64 {
        self.bytes as f64 / self.wall_s.max(1e-9)
    }

    /// CPU seconds of every process.
    pub fn cpu_total_s(&self) -> f64 {
        self.processes
            .iter()
            .map(|p| p.cpu_user_s + p.cpu_sys_s)
            .sum()
    }

    /// CPU seconds of the tunnel's processes (0 for the baseline).
    pub fn cpu_tunnel_s(&self) -> f64 {
        self.processes
            .iter()
            .filter(|p| p.role == Role::Tunnel)
            .map(|p| p.cpu_user_s + p.cpu_sys_s)
            .sum()
    }

    /// Cores busy on average over the window, all processes.
    pub fn cores(&self) -> f64 {
        self.cpu_total_s() / self.wall_s.max(1e-9)
    }

    /// Operations per CPU-second of all processes: QPS / cores used.
    pub fn ops_per_core(&self) -> f64 {
        self.ops as f64 / self.cpu_total_s().max(1e-9)
    }

    /// Bytes per CPU-second of all processes.
    pub fn bytes_per_core(&self) -> f64 {
        self.bytes as f64 / self.cpu_total_s().max(1e-9)
    }

    /// Sum of the tunnel processes' file-backed resident pages at the end, bytes.
    pub fn tunnel_rss_file(&self) -> u64 {
        self.processes
            .iter()
            .filter(|p| p.role == Role::Tunnel)
            .map(|p| p.rss_file_bytes)
            .sum()
    }

    /// Sum of the tunnel processes' peak RSS, bytes.
    pub fn tunnel_peak_rss(&self) -> u64 {
        self.processes
            .iter()
            .filter(|p| p.role == Role::Tunnel)
            .map(|p| p.peak_rss_bytes)
            .sum()
    }
}

/// How long to warm up and to measure.
#[derive(Clone, Copy, Debug)]
pub struct Window {
    /// Load runs but is not recorded.
    pub warmup: Duration,
    /// Recorded time.
    pub measure: Duration,
}

struct Sampler {
    procs: Vec<Process>,
    start: Vec<CpuTimes>,
}

impl Sampler {
    fn start(procs: &[Process]) -> Result<Self, String> {
        let mut start = Vec::with_capacity(procs.len());
        for p in procs {
            // A process that cannot reset its peak (not ours) still gets a CPU reading.
            let _ = procfs::reset_peak_rss(p.pid);
            start.push(procfs::cpu_times(p.pid).map_err(|e| format!("{}: {e}", p.name))?);
        }
        Ok(Self {
            procs: procs.to_vec(),
            start,
        })
    }

    fn finish(self) -> Result<Vec<ProcessUsage>, String> {
        self.procs
            .iter()
            .zip(&self.start)
            .map(|(p, s)| {
                let cpu = procfs::cpu_times(p.pid)
                    .map_err(|e| format!("{}: {e}", p.name))?
                    .since(s);
                Ok(ProcessUsage {
                    name: p.name.clone(),
                    role: p.role,
                    cpu_user_s: cpu.user.as_secs_f64(),
                    cpu_sys_s: cpu.system.as_secs_f64(),
                    peak_rss_bytes: procfs::peak_rss(p.pid).unwrap_or(0),
                    rss_file_bytes: procfs::rss_file(p.pid).unwrap_or(0),
                })
            })
            .collect()
    }
}

fn histogram() -> Histogram<u64> {
    // 1 µs .. 60 s at 3 significant digits.
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("static histogram bounds are valid")
}

fn latency(h: &Histogram<u64>) -> Option<Latency> {
    if h.is_empty() {
        return None;
    }
    Some(Latency {
        p50_us: h.value_at_quantile(0.50) as f64,
        p90_us: h.value_at_quantile(0.90) as f64,
        p99_us: h.value_at_quantile(0.99) as f64,
        p999_us: h.value_at_quantile(0.999) as f64,
        max_us: h.max() as f64,
        mean_us: h.mean(),
    })
}

async fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// Run `workload` against `addr` (an echo server for request/response and stream setup, a
/// discard server that acknowledges EOF with one byte for bulk), charging `procs`.
/// `progress` counts completed operations (or bytes, for bulk) as they happen.
pub async fn run(
    workload: Workload,
    addr: SocketAddr,
    window: Window,
    procs: &[Process],
    progress: Arc<AtomicU64>,
) -> Result<Measurement, String> {
    run_spread(workload, &[addr], window, procs, progress).await
}

/// [`run`] with its connections (streams, loops) spread round-robin over `addrs`: connection
/// `i` goes to `addrs[i % addrs.len()]` (the fan-out load: one proxy listener per peer).
pub async fn run_spread(
    workload: Workload,
    addrs: &[SocketAddr],
    window: Window,
    procs: &[Process],
    progress: Arc<AtomicU64>,
) -> Result<Measurement, String> {
    if addrs.is_empty() {
        return Err("no address to load".into());
    }
    let addrs: Arc<[SocketAddr]> = addrs.into();
    match workload {
        Workload::RequestResponse { connections, size } => {
            request_response(workload, addrs, connections, size, window, procs, progress).await
        }
        Workload::Bulk { streams } => bulk(workload, addrs, streams, window, procs, progress).await,
        Workload::StreamSetup { concurrency } => {
            stream_setup(workload, addrs, concurrency, window, procs, progress).await
        }
    }
}

struct TaskResult {
    hist: Histogram<u64>,
    ops: u64,
    bytes: u64,
    errors: u64,
    end: Instant,
}

impl TaskResult {
    fn new(until: Instant) -> Self {
        Self {
            hist: histogram(),
            ops: 0,
            bytes: 0,
            errors: 0,
            end: until,
        }
    }

    /// Count one completed operation (`start..done`, `bytes` moved) if it lies wholly inside
    /// the measured window `from..until`.
    fn record(&mut self, start: Instant, done: Instant, from: Instant, until: Instant, bytes: u64) {
        if start >= from && done <= until {
            let _ = self.hist.record((done - start).as_micros().max(1) as u64);
            self.ops += 1;
            self.bytes += bytes;
        }
    }
}

async fn measure_loops<F, Fut>(
    workload: Workload,
    tasks: usize,
    window: Window,
    procs: &[Process],
    body: F,
) -> Result<Measurement, String>
where
    F: Fn(usize, Instant, Instant) -> Fut,
    Fut: std::future::Future<Output = TaskResult> + Send + 'static,
{
    let t0 = Instant::now();
    let from = t0 + window.warmup;
    let until = from + window.measure;
    let mut set = JoinSet::new();
    for i in 0..tasks {
        set.spawn(body(i, from, until));
    }
    tokio::time::sleep_until(from.into()).await;
    let sampler = Sampler::start(procs)?;
    let mut hist = histogram();
    let (mut ops, mut bytes, mut errors) = (0, 0, 0);
    let mut end = until;
    while let Some(r) = set.join_next().await {
        let r = r.map_err(|e| format!("load task: {e}"))?;
        hist.add(&r.hist).map_err(|e| e.to_string())?;
        ops += r.ops;
        bytes += r.bytes;
        errors += r.errors;
        end = end.max(r.end);
    }
    let processes = sampler.finish()?;
    Ok(Measurement {
        workload,
        wall_s: (end - from).as_secs_f64(),
        ops,
        bytes,
        errors,
        latency: latency(&hist),
        processes,
    })
}

async fn request_response(
    workload: Workload,
    addrs: Arc<[SocketAddr]>,
    connections: usize,
    size: usize,
    window: Window,
    procs: &[Process],
    progress: Arc<AtomicU64>,
) -> Result<Measurement, String> {
    measure_loops(workload, connections, window, procs, |i, from, until| {
        let progress = progress.clone();
        let addr = addrs[i % addrs.len()];
        async move {
            let mut r = TaskResult::new(until);
            let msg = vec![0xa5u8; size];
            let mut back = vec![0u8; size];
            let mut conn: Option<TcpStream> = None;
            while Instant::now() < until {
                let s = match conn.as_mut() {
                    Some(s) => s,
                    None => match connect(addr).await {
                        Ok(s) => conn.insert(s),
                        Err(_) => {
                            r.errors += 1;
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    },
                };
                let start = Instant::now();
                let ok = s.write_all(&msg).await.is_ok() && s.read_exact(&mut back).await.is_ok();
                let done = Instant::now();
                if !ok || back != msg {
                    r.errors += 1;
                    conn = None;
                    continue;
                }
                progress.fetch_add(1, Ordering::Relaxed);
                r.record(start, done, from, until, size as u64);
            }
            r
        }
    })
    .await
}

async fn stream_setup(
    workload: Workload,
    addrs: Arc<[SocketAddr]>,
    concurrency: usize,
    window: Window,
    procs: &[Process],
    progress: Arc<AtomicU64>,
) -> Result<Measurement, String> {
    measure_loops(workload, concurrency, window, procs, |i, from, until| {
        let progress = progress.clone();
        let addr = addrs[i % addrs.len()];
        async move {
            let mut r = TaskResult::new(until);
            while Instant::now() < until {
                let start = Instant::now();
                let ok = async {
                    let mut s = connect(addr).await?;
                    s.write_all(b"x").await?;
                    let mut b = [0u8; 1];
                    s.read_exact(&mut b).await?;
                    s.shutdown().await?;
                    Ok::<bool, std::io::Error>(b == *b"x")
                }
                .await;
                let done = Instant::now();
                if !matches!(ok, Ok(true)) {
                    r.errors += 1;
                    continue;
                }
                progress.fetch_add(1, Ordering::Relaxed);
                r.record(start, done, from, until, 0);
            }
            r
        }
    })
    .await
}

async fn bulk(
    workload: Workload,
    addrs: Arc<[SocketAddr]>,
    streams: usize,
    window: Window,
    procs: &[Process],
    progress: Arc<AtomicU64>,
) -> Result<Measurement, String> {
    // Bytes count from the first write that completes inside the window; the window ends when
    // the far end has acknowledged everything, so buffered bytes are not counted as moved.
    measure_loops(workload, streams, window, procs, |i, from, until| {
        let progress = progress.clone();
        let addr = addrs[i % addrs.len()];
        async move {
            let mut r = TaskResult::new(until);
            let result = async {
                let mut s = connect(addr).await?;
                let chunk = vec![0x5au8; 256 * 1024];
                while Instant::now() < until {
                    s.write_all(&chunk).await?;
                    progress.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                    if Instant::now() >= from {
                        r.bytes += chunk.len() as u64;
                    }
                }
                s.shutdown().await?;
                let mut ack = [0u8; 1];
                s.read_exact(&mut ack).await?;
                Ok::<(), std::io::Error>(())
            }
            .await;
            if result.is_err() {
                r.errors += 1;
                r.bytes = 0;
            }
            r.end = Instant::now();
            r
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Sinks;

    /// Every workload moves real bytes through loopback servers and charges this process.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn workloads_measure_real_traffic() {
        let sinks = Sinks::start().await.unwrap();
        let procs = [Process {
            name: "self".into(),
            pid: Pid::Current,
            role: Role::App,
        }];
        let window = Window {
            warmup: Duration::from_millis(100),
            measure: Duration::from_millis(400),
        };
        for w in crate::standard_workloads() {
            let addr = match w {
                Workload::Bulk { .. } => sinks.discard,
                _ => sinks.echo,
            };
            let progress = Arc::new(AtomicU64::new(0));
            let m = run(w, addr, window, &procs, progress.clone())
                .await
                .unwrap();
            assert_eq!(m.errors, 0, "{w:?}");
            assert!(m.wall_s >= 0.4, "{w:?}: {}", m.wall_s);
            assert!(progress.load(Ordering::Relaxed) > 0);
            match w {
                Workload::Bulk { .. } => {
                    assert!(m.bytes > 0 && m.latency.is_none());
                }
                _ => {
                    assert!(m.ops > 0, "{w:?}");
                    let l = m.latency.unwrap();
                    assert!(l.p50_us <= l.p99_us && l.p99_us <= l.p999_us && l.p999_us <= l.max_us);
                }
            }
            assert!(m.cpu_total_s() > 0.0, "{w:?}");
            assert_eq!(m.cpu_tunnel_s(), 0.0);
        }
    }

    /// Nothing listening: every attempt is an error, not a silent zero.
    #[tokio::test]
    async fn refused_connections_are_counted_as_errors() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let window = Window {
            warmup: Duration::ZERO,
            measure: Duration::from_millis(100),
        };
        let m = run(
            Workload::StreamSetup { concurrency: 2 },
            addr,
            window,
            &[],
            Arc::new(AtomicU64::new(0)),
        )
        .await
        .unwrap();
        assert_eq!(m.ops, 0);
        assert!(m.errors > 0);
    }
}
