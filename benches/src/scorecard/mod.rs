//! The head-to-head scorecard: the load generator, process accounting and the report
//! (text table, JSON, SVG chart) behind `fipstun scorecard`.
//!
//! The `fipstun` binary starts the tunnel processes and the sinks; this module drives load
//! through them and renders what it measured. Nothing here hard-codes a figure: every number
//! in a [`Scorecard`] comes from a [`load::Measurement`].

pub mod load;
pub mod procfs;
mod render;

use serde::Serialize;

pub use load::{Latency, Measurement, Process, ProcessUsage, Role, Window, Workload};

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
