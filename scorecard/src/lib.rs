//! fipstun-scorecard: the head-to-head scorecard harness behind `fipstun scorecard`.
//!
//! The `fipstun` binary starts the tunnel processes (node and proxy); this crate gives it the
//! rest: loopback servers to load ([`Sinks`]), the load generator ([`load`]: closed-loop
//! request/response, bulk and stream setup against a TCP address), CPU and peak memory of every
//! process in the path ([`procfs`]), and the report ([`Scorecard`]: text table, JSON, SVG
//! chart). Nothing here hard-codes a figure: every number in a [`Scorecard`] comes from a
//! [`load::Measurement`].
//!
//! It is a production crate (the binary links it), so it depends on nothing from `benches/`;
//! the benchmarks use its [`Sinks`] instead (`cli/tests/layering.rs` checks the layering).
//!
//! One workload straight against the echo sink (the no-mesh baseline), rendered as a table:
//!
//! ```
//! use std::sync::Arc;
//! use std::sync::atomic::AtomicU64;
//! use std::time::Duration;
//!
//! use fipstun_scorecard::procfs::Pid;
//! use fipstun_scorecard::{BackendResult, Process, Role, Scorecard, Sinks, Window, Workload};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let sinks = Sinks::start().await.unwrap();
//! let window = Window {
//!     warmup: Duration::ZERO,
//!     measure: Duration::from_millis(200),
//! };
//! let me = [Process {
//!     name: "load+sinks".into(),
//!     pid: Pid::Current,
//!     role: Role::App,
//! }];
//! let workload = Workload::RequestResponse {
//!     connections: 4,
//!     size: 1024,
//! };
//! let progress = Arc::new(AtomicU64::new(0));
//! let m = fipstun_scorecard::load::run(workload, sinks.echo, window, &me, progress)
//!     .await
//!     .unwrap();
//! assert!(m.ops > 0 && m.errors == 0);
//!
//! let card = Scorecard {
//!     machine: fipstun_scorecard::machine("now".into(), "0.1.0".into(), "none".into()),
//!     warmup_s: 0.0,
//!     measure_s: 0.2,
//!     backends: vec![BackendResult {
//!         name: "plain".into(),
//!         protocol: "TCP".into(),
//!         cipher: "none".into(),
//!         fips: false,
//!         path: "load -> sink".into(),
//!         results: vec![m],
//!     }],
//! };
//! assert!(card.to_table().contains("1024 B each way, 4 connections"));
//! assert!(card.to_svg().contains("rr-1KiB-c4"));
//! # });
//! ```
#![forbid(unsafe_code)]

pub mod load;
pub mod procfs;
mod render;
mod sinks;

use serde::Serialize;

pub use load::{Latency, Measurement, Process, ProcessUsage, Role, Window, Workload};
pub use sinks::Sinks;

/// The workloads every backend runs, in order: request/response 1 KiB at 64 connections
/// (the Istio study's Fortio shape), bulk with 1 and 8 streams, and the stream-setup rate.
pub fn standard_workloads() -> Vec<Workload> {
    vec![
        Workload::RequestResponse {
            connections: 64,
            size: 1024,
        },
        Workload::Bulk { streams: 1 },
        Workload::Bulk { streams: 8 },
        Workload::StreamSetup { concurrency: 16 },
    ]
}

/// One backend's row set.
#[derive(Clone, Debug, Serialize)]
pub struct BackendResult {
    /// Short name (`plain`, `hbone`, `wireguard`).
    pub name: String,
    /// What protects the bytes, as the backend reports it.
    pub protocol: String,
    /// Cipher suite or AEAD.
    pub cipher: String,
    /// Whether the backend's crypto runs in the FIPS module with approved algorithms only.
    pub fips: bool,
    /// The path the bytes take.
    pub path: String,
    /// One measurement per workload.
    pub results: Vec<Measurement>,
}

/// Where and when the scorecard ran.
#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    /// Logical CPUs.
    pub cpus: usize,
    /// CPU model name.
    pub cpu_model: String,
    /// Kernel release.
    pub kernel: String,
    /// UTC start time (RFC 3339).
    pub started: String,
    /// fipstun version.
    pub version: String,
    /// The FIPS module the HBONE backend uses.
    pub fips_module: String,
}

/// A whole scorecard run.
#[derive(Clone, Debug, Serialize)]
pub struct Scorecard {
    /// The machine.
    pub machine: Machine,
    /// Warm-up per workload, seconds.
    pub warmup_s: f64,
    /// Measured time per workload, seconds.
    pub measure_s: f64,
    /// Baseline first, then the tunnels.
    pub backends: Vec<BackendResult>,
}

impl Scorecard {
    /// The scorecard as a text table, one block per workload, like the study's table.
    pub fn to_table(&self) -> String {
        render::table(self)
    }

    /// The scorecard as an SVG chart.
    pub fn to_svg(&self) -> String {
        render::svg(self)
    }

    /// The scorecard as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// Total failed operations across all runs.
    pub fn errors(&self) -> u64 {
        self.backends
            .iter()
            .flat_map(|b| &b.results)
            .map(|m| m.errors)
            .sum()
    }
}

/// What this machine is, read from `/proc` (best effort: unknown fields say so).
pub fn machine(started: String, version: String, fips_module: String) -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    Machine {
        cpus: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        cpu_model,
        kernel,
        started,
        version,
        fips_module,
    }
}
