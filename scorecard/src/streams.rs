//! Many streams at once: what each open stream costs the tunnel in memory, and whether a
//! tunnel serves thousands of them without an error.
//!
//! [`hold`] opens `n` connections through a path (each does a 1-byte round trip with the echo
//! sink, so the stream is known to reach the far side), holds them all open and idle, reads the
//! tunnel processes' resident memory, then does one more round trip on every held stream (a
//! stream the tunnel dropped while idle is an error) and closes them. Run on a fresh pair of
//! tunnel processes, the growth divided by `n` is the memory one idle stream costs.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::load::{Process, Role};
use super::procfs;

/// Connections opened (or checked) at once while the streams are being set up.
pub const OPEN_CONCURRENCY: usize = 64;

/// How long one round trip on one stream may take before it counts as an error.
const ROUND_TRIP_TIMEOUT: Duration = Duration::from_secs(20);

/// One tunnel process while the streams were held.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HeldProcess {
    /// Name from [`Process`].
    pub name: String,
    /// `VmRSS` before the first stream was opened, bytes.
    pub rss_before_bytes: u64,
    /// `VmRSS` with every stream open and idle, bytes.
    pub rss_held_bytes: u64,
    /// Of `rss_held_bytes`, the file-backed pages (`RssFile`: the binary's, shared), bytes;
    /// 0 in files written before the field was added.
    #[serde(default)]
    pub rss_file_bytes: u64,
}

/// `n` streams held open through one path.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Held {
    /// Streams asked for.
    pub streams: usize,
    /// Streams that opened and did their first round trip.
    pub opened: usize,
    /// Failures: streams that did not open, plus held streams whose second round trip failed.
    pub errors: u64,
    /// Seconds from the first connect until every stream had opened (or failed).
    pub open_s: f64,
    /// Each tunnel process (proxy, node or relay).
    pub processes: Vec<HeldProcess>,
}

impl Held {
    /// Tunnel processes' `VmRSS` together before the streams, bytes.
    pub fn rss_before_bytes(&self) -> u64 {
        self.processes.iter().map(|p| p.rss_before_bytes).sum()
    }

    /// Tunnel processes' `VmRSS` together with every stream held, bytes.
    pub fn rss_held_bytes(&self) -> u64 {
        self.processes.iter().map(|p| p.rss_held_bytes).sum()
    }

    /// Tunnel processes' file-backed resident pages together with every stream held, bytes.
    pub fn rss_file_bytes(&self) -> u64 {
        self.processes.iter().map(|p| p.rss_file_bytes).sum()
    }

    /// Memory one held stream costs the tunnel: the growth over the opened streams, bytes
    /// (a shrink reads as 0).
    pub fn rss_per_stream_bytes(&self) -> f64 {
        self.rss_held_bytes()
            .saturating_sub(self.rss_before_bytes()) as f64
            / self.opened.max(1) as f64
    }

    /// Streams opened per second (the cold setup rate at [`OPEN_CONCURRENCY`] in flight).
    pub fn opens_per_sec(&self) -> f64 {
        self.opened as f64 / self.open_s.max(1e-9)
    }
}

/// One backend's held-stream points, one per stream count, smallest first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Streams {
    /// What ran, for the report.
    pub what: String,
    /// One point per stream count.
    pub points: Vec<Held>,
}

/// One round trip of one byte on `s`.
async fn round_trip(s: &mut TcpStream) -> std::io::Result<()> {
    let step = async {
        s.write_all(b"x").await?;
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await?;
        Ok(())
    };
    tokio::time::timeout(ROUND_TRIP_TIMEOUT, step)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "round trip timed out"))?
}

fn rss_of(procs: &[&Process]) -> Result<Vec<u64>, String> {
    procs
        .iter()
        .map(|p| procfs::rss(p.pid).map_err(|e| format!("{}: {e}", p.name)))
        .collect()
}

/// Open `n` streams to `echo` (an echo server behind the tunnel), hold them, and read what
/// the tunnel processes among `procs` cost meanwhile; see the module documentation.
/// `settle` is waited with every stream open before the memory is read.
pub async fn hold(
    echo: SocketAddr,
    n: usize,
    procs: &[Process],
    settle: Duration,
) -> Result<Held, String> {
    let tunnel: Vec<&Process> = procs.iter().filter(|p| p.role == Role::Tunnel).collect();
    let before = rss_of(&tunnel)?;
    let gate = Arc::new(Semaphore::new(OPEN_CONCURRENCY));
    let started = Instant::now();
    let mut opening = JoinSet::new();
    for _ in 0..n {
        let gate = gate.clone();
        opening.spawn(async move {
            let _permit = gate.acquire_owned().await.ok()?;
            let mut s = TcpStream::connect(echo).await.ok()?;
            s.set_nodelay(true).ok()?;
            round_trip(&mut s).await.ok()?;
            Some(s)
        });
    }
    let mut held = Vec::with_capacity(n);
    let mut errors = 0u64;
    while let Some(r) = opening.join_next().await {
        match r {
            Ok(Some(s)) => held.push(s),
            _ => errors += 1,
        }
    }
    let open_s = started.elapsed().as_secs_f64();
    let opened = held.len();
    tokio::time::sleep(settle).await;
    let during = rss_of(&tunnel)?;
    let during_file: Vec<u64> = tunnel
        .iter()
        .map(|p| procfs::rss_file(p.pid).unwrap_or(0))
        .collect();
    // Every held stream must still carry a byte each way after idling.
    let mut checking = JoinSet::new();
    for mut s in held {
        let gate = gate.clone();
        checking.spawn(async move {
            let _permit = gate.acquire_owned().await.ok()?;
            round_trip(&mut s).await.ok()?;
            Some(s)
        });
    }
    let mut still = Vec::with_capacity(opened);
    while let Some(r) = checking.join_next().await {
        match r {
            Ok(Some(s)) => still.push(s),
            _ => errors += 1,
        }
    }
    drop(still);
    Ok(Held {
        streams: n,
        opened,
        errors,
        open_s,
        processes: tunnel
            .iter()
            .zip(before.iter().zip(during.iter().zip(&during_file)))
            .map(|(p, (b, (d, f)))| HeldProcess {
                name: p.name.clone(),
                rss_before_bytes: *b,
                rss_held_bytes: *d,
                rss_file_bytes: *f,
            })
            .collect(),
    })
}

/// Open files `n` held streams need in the process that holds their near ends (one socket
/// per stream; the far ends are in another process), plus room for everything else. Each
/// tunnel process needs about as many: a proxy holds the streams' accepted sockets, a node its
/// dialled ones.
pub fn files_needed(n: usize) -> u64 {
    n as u64 + 1024
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Sinks;
    use crate::procfs::Pid;

    /// Straight against the echo sink (no tunnel): every stream opens and survives its idle
    /// time; with this process named as a tunnel, its memory is read before and during.
    #[tokio::test]
    async fn streams_are_held_and_checked() {
        let sinks = Sinks::start().await.unwrap();
        let me = [Process {
            name: "me".into(),
            pid: Pid::Current,
            role: Role::Tunnel,
        }];
        let h = hold(sinks.echo, 200, &me, Duration::from_millis(50))
            .await
            .unwrap();
        assert_eq!((h.streams, h.opened, h.errors), (200, 200, 0), "{h:?}");
        assert_eq!(h.processes.len(), 1);
        assert!(h.rss_before_bytes() > 0 && h.rss_held_bytes() > 0);
        assert!(h.opens_per_sec() > 0.0);
    }

    /// Nothing listening: every stream is an error, none is counted as opened.
    #[tokio::test]
    async fn a_dead_address_counts_errors() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let h = hold(addr, 10, &[], Duration::ZERO).await.unwrap();
        assert_eq!((h.opened, h.errors), (0, 10));
        assert_eq!(h.rss_per_stream_bytes(), 0.0);
    }

    #[test]
    fn per_stream_memory_is_the_growth_over_the_opened_streams() {
        let h = Held {
            streams: 1000,
            opened: 1000,
            errors: 0,
            open_s: 0.5,
            processes: vec![
                HeldProcess {
                    name: "proxy".into(),
                    rss_before_bytes: 10_000_000,
                    rss_held_bytes: 14_000_000,
                    rss_file_bytes: 9_000_000,
                },
                HeldProcess {
                    name: "node".into(),
                    rss_before_bytes: 10_000_000,
                    rss_held_bytes: 12_000_000,
                    rss_file_bytes: 9_000_000,
                },
            ],
        };
        assert_eq!(h.rss_per_stream_bytes(), 6000.0);
        assert_eq!(h.opens_per_sec(), 2000.0);
        assert_eq!(h.rss_held_bytes(), 26_000_000);
    }
}
