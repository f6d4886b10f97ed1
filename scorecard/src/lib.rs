//! fipstun-scorecard: the head-to-head scorecard harness behind `fipstun scorecard`.
//!
//! The `fipstun` binary starts the tunnel processes (node and proxy); this crate gives it the
//! rest: loopback servers to load ([`Sinks`]), the load generator ([`load`]: closed-loop
//! request/response, bulk and stream setup against a TCP address), CPU and peak memory of every
//! process in the path ([`procfs`]), and the report ([`Scorecard`]: text table, JSON, SVG
//! chart, each figure a median with its min-max range over repeated runs; [`diff`] of two
//! runs; [`idle`] cost at rest). Nothing here hard-codes a figure: every number in a [`Scorecard`] comes from a
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
//! use fipstun_scorecard::{
//!     BackendResult, Process, Role, Scorecard, Sinks, Window, Workload, WorkloadResult,
//! };
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
//! // Three repetitions of a cell reduce to a median with its min-max range.
//! let cell = WorkloadResult::from_runs(vec![m.clone(), m.clone(), m]).unwrap();
//! let card = Scorecard {
//!     schema_version: fipstun_scorecard::SCHEMA_VERSION,
//!     machine: fipstun_scorecard::machine("now".into(), "0.1.0".into(), "none".into()),
//!     reps: 3,
//!     warmup_s: 0.0,
//!     measure_s: 0.2,
//!     backends: vec![BackendResult {
//!         name: "plain".into(),
//!         protocol: "TCP".into(),
//!         cipher: "none".into(),
//!         fips: false,
//!         path: "load -> sink".into(),
//!         results: vec![cell],
//!         idle: None,
//!         streams: None,
//!         churn: None,
//!     }],
//!     fanout: None,
//! };
//! assert!(card.to_table().contains("1024 B each way, 4 connections"));
//! assert!(card.to_svg().contains("Requests per second"));
//! # });
//! ```
#![forbid(unsafe_code)]

pub mod diff;
pub mod fanout;
pub mod idle;
pub mod load;
pub mod procfs;
mod render;
mod sinks;
pub mod spread;
pub mod streams;
pub mod targets;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use fanout::{Fanout, FanoutPoint};
pub use idle::{Idle, IdleProcess};
pub use load::{Latency, Measurement, Process, ProcessUsage, Role, Window, Workload};
pub use sinks::Sinks;
pub use spread::{Better, Figure, Ratio, RatioStyle, Spread};
pub use streams::{Held, HeldProcess, Streams};

/// The version of the JSON layout [`Scorecard::to_json`] writes (`schema_version`). Version 1
/// (no field) had one measurement per cell; version 2 has repetitions, spreads and idle cost.
pub const SCHEMA_VERSION: u32 = 2;

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

/// One backend x workload cell: every repetition, and each figure's spread over them.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WorkloadResult {
    /// The workload.
    pub workload: Workload,
    /// Each applicable [`Figure`] by name: median, min and max over the repetitions.
    pub figures: BTreeMap<String, Spread>,
    /// Failed operations over all repetitions.
    pub errors: u64,
    /// The repetitions in the order they ran.
    pub runs: Vec<Measurement>,
}

impl WorkloadResult {
    /// Reduce the repetitions of one workload (all with the same workload; `None` if empty).
    pub fn from_runs(runs: Vec<Measurement>) -> Option<Self> {
        let workload = runs.first()?.workload;
        let figures = Figure::ALL
            .iter()
            .filter_map(|f| {
                let values: Vec<f64> = runs.iter().filter_map(|m| f.of(m)).collect();
                Some((f.name().to_string(), Spread::of(&values)?))
            })
            .collect();
        Some(Self {
            workload,
            figures,
            errors: runs.iter().map(|m| m.errors).sum(),
            runs,
        })
    }

    /// The spread of one figure, if it applies to this workload.
    pub fn figure(&self, f: Figure) -> Option<Spread> {
        self.figures.get(f.name()).copied()
    }
}

/// One backend's row set.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BackendResult {
    /// Short name (`plain`, `relay`, `hbone`, `wireguard`).
    pub name: String,
    /// What protects the bytes, as the backend reports it.
    pub protocol: String,
    /// Cipher suite or AEAD.
    pub cipher: String,
    /// Whether the backend's crypto runs in the FIPS module with approved algorithms only.
    pub fips: bool,
    /// The path the bytes take.
    pub path: String,
    /// One cell per workload, in workload order.
    pub results: Vec<WorkloadResult>,
    /// What the tunnel processes cost at rest (none for the no-mesh baseline).
    #[serde(default)]
    pub idle: Option<Idle>,
    /// Streams held open through a fresh pair of this backend's processes (none for the
    /// no-mesh baseline, or with `--streams 0`).
    #[serde(default)]
    pub streams: Option<Streams>,
    /// The request/response load again while something the tunnel depends on churns (HBONE:
    /// the node's SVID and policy; WireGuard: the session re-keyed every few seconds).
    #[serde(default)]
    pub churn: Option<Churn>,
}

/// A load run while something the tunnel depends on keeps changing, to hold against the same
/// load without the change.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Churn {
    /// What changed, and how often.
    pub what: String,
    /// Changes made during each run (one entry per rep).
    pub changes: Vec<u64>,
    /// Changes that failed (the tool that makes them returned an error), all reps.
    pub change_failures: u64,
    /// The load under churn, one run per rep.
    pub result: WorkloadResult,
}

impl Churn {
    /// Queries and p99 under churn against `calm` (the same workload without churn).
    pub fn against(&self, calm: &WorkloadResult) -> Vec<Ratio> {
        let mut out = Vec::new();
        for (what, f) in [("queries", Figure::OpsPerSec), ("p99", Figure::P99Us)] {
            if let (Some(a), Some(b)) = (self.result.figure(f), calm.figure(f)) {
                out.extend(Ratio::between(what, &a, &b, RatioStyle::Percent));
            }
        }
        out
    }
}

impl BackendResult {
    /// The cell of the first workload matching `pick`.
    pub fn cell(&self, pick: impl Fn(&Workload) -> bool) -> Option<&WorkloadResult> {
        self.results.iter().find(|r| pick(&r.workload))
    }
}

/// Where and when the scorecard ran.
#[derive(Clone, Debug, Serialize, Deserialize)]
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
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Scorecard {
    /// [`SCHEMA_VERSION`] when written (files without the field are version 1).
    #[serde(default = "schema_v1")]
    pub schema_version: u32,
    /// The machine.
    pub machine: Machine,
    /// Repetitions of every cell, run in interleaved rounds.
    #[serde(default = "one")]
    pub reps: u32,
    /// Warm-up per cell and repetition, seconds.
    pub warmup_s: f64,
    /// Measured time per cell and repetition, seconds.
    pub measure_s: f64,
    /// Baseline first, then the tunnels.
    pub backends: Vec<BackendResult>,
    /// HBONE fan-out over K nodes (absent when HBONE did not run).
    #[serde(default)]
    pub fanout: Option<Fanout>,
}

fn schema_v1() -> u32 {
    1
}

fn one() -> u32 {
    1
}

/// One pair of backends compared in the headline: `a` against `b`.
#[derive(Clone, Debug, Serialize)]
pub struct Comparison {
    /// The backend the ratios are about.
    pub a: String,
    /// The backend it is measured against.
    pub b: String,
    /// `a / b` for each headline figure both have.
    pub ratios: Vec<Ratio>,
}

impl Scorecard {
    /// The study's opening sentence from this run: HBONE against WireGuard, and each against
    /// the plain relay, for every pair whose backends ran.
    pub fn headline(&self) -> Vec<Comparison> {
        let pairs = [
            ("hbone", "wireguard"),
            ("hbone", "relay"),
            ("wireguard", "relay"),
        ];
        pairs
            .iter()
            .filter_map(|(a, b)| {
                let find = |n: &str| self.backends.iter().find(|x| x.name == n);
                let (ba, bb) = (find(a)?, find(b)?);
                Some(Comparison {
                    a: a.to_string(),
                    b: b.to_string(),
                    ratios: headline_ratios(ba, bb),
                })
            })
            .collect()
    }

    /// The headline and the table, one block per workload, like the study's table.
    pub fn to_table(&self) -> String {
        render::table(self)
    }

    /// The scorecard as an SVG chart.
    pub fn to_svg(&self) -> String {
        render::svg(self)
    }

    /// The scorecard as pretty JSON, with the headline computed from it.
    pub fn to_json(&self) -> String {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            o.insert(
                "headline".into(),
                serde_json::to_value(self.headline()).unwrap_or_default(),
            );
            o.insert(
                "targets".into(),
                serde_json::to_value(self.targets()).unwrap_or_default(),
            );
        }
        serde_json::to_string_pretty(&v).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// Read a scorecard JSON file's text; refuses a schema other than [`SCHEMA_VERSION`].
    pub fn from_json(text: &str) -> Result<Self, String> {
        let v: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let version = v
            .get("schema_version")
            .and_then(|s| s.as_u64())
            .unwrap_or(1);
        if version != u64::from(SCHEMA_VERSION) {
            return Err(format!(
                "schema_version {version}, this fipstun reads {SCHEMA_VERSION} (rerun the scorecard with this build)"
            ));
        }
        serde_json::from_value(v).map_err(|e| e.to_string())
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

/// The headline ratios of `a` over `b`: queries, queries per core and p99 of the first
/// request/response workload, bulk rate per stream count, tunnel RSS under load, idle CPU and
/// idle RSS.
fn headline_ratios(a: &BackendResult, b: &BackendResult) -> Vec<Ratio> {
    let rr = |x: &BackendResult| {
        x.cell(|w| matches!(w, Workload::RequestResponse { .. }))
            .cloned()
    };
    let mut out = Vec::new();
    let mut push = |what: String, sa: Option<Spread>, sb: Option<Spread>, style| {
        if let (Some(sa), Some(sb)) = (sa, sb) {
            out.extend(Ratio::between(&what, &sa, &sb, style));
        }
    };
    if let (Some(ra), Some(rb)) = (rr(a), rr(b)) {
        for (what, f) in [
            ("queries", Figure::OpsPerSec),
            ("queries per core", Figure::OpsPerCpuS),
            ("p99", Figure::P99Us),
        ] {
            push(what.into(), ra.figure(f), rb.figure(f), RatioStyle::Percent);
        }
    }
    for ca in &a.results {
        if let Workload::Bulk { streams } = ca.workload {
            let cb = b.cell(|w| *w == ca.workload);
            push(
                format!(
                    "bulk, {streams} stream{}",
                    if streams == 1 { "" } else { "s" }
                ),
                ca.figure(Figure::BitsPerSec),
                cb.and_then(|c| c.figure(Figure::BitsPerSec)),
                RatioStyle::Factor,
            );
        }
    }
    if let (Some(ra), Some(rb)) = (rr(a), rr(b)) {
        push(
            "tunnel RSS under load".into(),
            ra.figure(Figure::TunnelPeakRssBytes),
            rb.figure(Figure::TunnelPeakRssBytes),
            RatioStyle::Factor,
        );
    }
    if let (Some(ia), Some(ib)) = (&a.idle, &b.idle) {
        push(
            "idle CPU".into(),
            Some(ia.tunnel_cpu_s_per_min),
            Some(ib.tunnel_cpu_s_per_min),
            RatioStyle::Factor,
        );
        push(
            "idle RSS".into(),
            Some(ia.tunnel_rss_bytes),
            Some(ib.tunnel_rss_bytes),
            RatioStyle::Factor,
        );
    }
    out
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
