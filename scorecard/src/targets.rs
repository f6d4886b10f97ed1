//! The data-path targets the scorecard can judge from one run: HBONE bulk and request/response
//! against the relay, tunnel memory under load, and held streams. Each is a figure with its
//! spread, a goal, and whether the median meets it. The record-path and wireguard-go targets
//! need in-process and two-namespace benchmarks: they are judged in BENCHMARKS.md.

use serde::Serialize;

use super::{BackendResult, Figure, Scorecard, Spread, Workload, WorkloadResult};

/// Which way a target points.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", content = "value", rename_all = "kebab-case")]
pub enum Goal {
    /// The median must be at least this.
    AtLeast(f64),
    /// The median must be at most this.
    AtMost(f64),
}

/// How a figure reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Unit {
    /// A ratio, printed as a percentage.
    Ratio,
    /// Bytes, printed in MiB.
    Bytes,
    /// A count.
    Count,
}

/// One target judged on this run.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    /// What is measured.
    pub what: String,
    /// The figure: median and min-max over the reps (one reading for held streams).
    pub measured: Spread,
    /// How it reads.
    pub unit: Unit,
    /// The goal.
    pub goal: Goal,
    /// Whether the median meets the goal.
    pub met: bool,
    /// What else the reader needs to judge the figure (absent when nothing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl Check {
    fn new(what: &str, measured: Spread, unit: Unit, goal: Goal) -> Check {
        let met = match goal {
            Goal::AtLeast(g) => measured.median >= g,
            Goal::AtMost(g) => measured.median <= g,
        };
        Check {
            what: what.into(),
            note: None,
            measured,
            unit,
            goal,
            met,
        }
    }

    fn fmt(&self, v: f64) -> String {
        match self.unit {
            Unit::Ratio => format!("{:.0}%", v * 100.0),
            Unit::Bytes => format!("{:.1} MiB", v / (1024.0 * 1024.0)),
            Unit::Count => format!("{v:.0}"),
        }
    }

    /// The same check with `note` attached.
    fn with_note(mut self, note: Option<String>) -> Check {
        self.note = note;
        self
    }

    /// `77% [70% .. 81%]`, or one reading when there is no spread.
    pub fn measured_text(&self) -> String {
        let m = &self.measured;
        if m.min == m.max {
            self.fmt(m.median)
        } else {
            format!(
                "{} [{} .. {}]",
                self.fmt(m.median),
                self.fmt(m.min),
                self.fmt(m.max)
            )
        }
    }

    /// `>= 90%`, `<= 24.0 MiB`.
    pub fn goal_text(&self) -> String {
        match self.goal {
            Goal::AtLeast(g) => format!(">= {}", self.fmt(g)),
            Goal::AtMost(g) => format!("<= {}", self.fmt(g)),
        }
    }
}

const MIB: f64 = 1024.0 * 1024.0;

/// `a / b` medians, with the widest range the two spreads allow.
fn ratio(a: Spread, b: Spread) -> Option<Spread> {
    a.ratio_to(&b)
}

/// Bytes per tunnel CPU-second of each run of a bulk cell.
/// How much of a tunnel's RSS is the binary's file-backed pages (counted in full by each of
/// the two processes, though the kernel keeps one copy) and what the rest is.
fn file_note(file: f64, rss: f64) -> String {
    format!(
        "of which file-backed (the binary's pages, shared) {:.1} MiB, the rest {:.1} MiB",
        file / MIB,
        (rss - file).max(0.0) / MIB
    )
}

fn bytes_per_tunnel_cpu(c: &WorkloadResult) -> Option<Spread> {
    let v: Vec<f64> = c
        .runs
        .iter()
        .filter(|m| m.cpu_tunnel_s() > 0.0)
        .map(|m| m.bytes as f64 / m.cpu_tunnel_s())
        .collect();
    Spread::of(&v)
}

fn bulk1(b: &BackendResult) -> Option<&WorkloadResult> {
    b.cell(|w| *w == Workload::Bulk { streams: 1 })
}

fn rr(b: &BackendResult) -> Option<&WorkloadResult> {
    b.cell(|w| {
        matches!(
            w,
            Workload::RequestResponse {
                connections: 64,
                size: 1024
            }
        )
    })
}

impl Scorecard {
    /// The data-path targets this run can judge (only those whose backends and workloads ran).
    pub fn targets(&self) -> Vec<Check> {
        let find = |n: &str| self.backends.iter().find(|b| b.name == n);
        let mut out = Vec::new();
        if let (Some(h), Some(r)) = (find("hbone"), find("relay")) {
            if let (Some(hc), Some(rc)) = (bulk1(h), bulk1(r)) {
                if let Some(s) = hc
                    .figure(Figure::BitsPerSec)
                    .zip(rc.figure(Figure::BitsPerSec))
                    .and_then(|(a, b)| ratio(a, b))
                {
                    out.push(Check::new(
                        "HBONE / relay, bulk 1 stream, Gbit/s",
                        s,
                        Unit::Ratio,
                        Goal::AtLeast(0.9),
                    ));
                }
                if let Some(s) = bytes_per_tunnel_cpu(hc)
                    .zip(bytes_per_tunnel_cpu(rc))
                    .and_then(|(a, b)| ratio(a, b))
                {
                    out.push(Check::new(
                        "HBONE / relay, bulk 1 stream, bytes per tunnel CPU-second",
                        s,
                        Unit::Ratio,
                        Goal::AtLeast(0.9),
                    ));
                }
            }
            if let Some(s) = rr(h)
                .zip(rr(r))
                .and_then(|(a, b)| {
                    a.figure(Figure::OpsPerCpuS)
                        .zip(b.figure(Figure::OpsPerCpuS))
                })
                .and_then(|(a, b)| ratio(a, b))
            {
                out.push(Check::new(
                    "HBONE / relay, rr 1 KiB x 64, requests per CPU-second (all processes)",
                    s,
                    Unit::Ratio,
                    Goal::AtLeast(0.9),
                ));
            }
        }
        for (name, label, goal) in [
            ("hbone", "HBONE", 24.0 * MIB),
            ("wireguard", "WireGuard", 48.0 * MIB),
        ] {
            let cell = find(name).and_then(rr);
            if let Some(s) = cell.and_then(|c| c.figure(Figure::TunnelPeakRssBytes)) {
                let file = cell.and_then(|c| {
                    let v: Vec<f64> = c
                        .runs
                        .iter()
                        .map(|m| m.tunnel_rss_file() as f64)
                        .filter(|&b| b > 0.0)
                        .collect();
                    Spread::of(&v)
                });
                out.push(
                    Check::new(
                        &format!("{label} tunnel RSS (proxy + node), rr 1 KiB x 64"),
                        s,
                        Unit::Bytes,
                        Goal::AtMost(goal),
                    )
                    .with_note(file.map(|f| file_note(f.median, s.median))),
                );
            }
        }
        if let Some(points) = find("hbone").and_then(|h| h.streams.as_ref()) {
            if let Some(p) = points.points.iter().find(|p| p.streams == 1000) {
                let file = p.rss_file_bytes() as f64;
                let held = p.rss_held_bytes() as f64;
                out.push(
                    Check::new(
                        "HBONE tunnel RSS with 1,000 idle streams held (fresh pair)",
                        Spread::single(held),
                        Unit::Bytes,
                        Goal::AtMost(40.0 * MIB),
                    )
                    .with_note((file > 0.0).then(|| {
                        format!(
                            "{}; {:.1} KiB per stream",
                            file_note(file, held),
                            p.rss_per_stream_bytes() / 1024.0
                        )
                    })),
                );
            }
            if let Some(p) = points.points.iter().find(|p| p.streams == 10_000) {
                out.push(Check::new(
                    "HBONE, 10,000 concurrent streams: errors",
                    Spread::single(p.errors as f64),
                    Unit::Count,
                    Goal::AtMost(0.0),
                ));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn goals_are_judged_on_the_median_and_printed_with_the_range() {
        let s = Spread {
            median: 0.77,
            min: 0.70,
            max: 0.81,
        };
        let c = Check::new("x", s, Unit::Ratio, Goal::AtLeast(0.9));
        assert!(!c.met);
        assert_eq!(c.measured_text(), "77% [70% .. 81%]");
        assert_eq!(c.goal_text(), ">= 90%");
        let m = Check::new(
            "y",
            Spread::single(20.0 * MIB),
            Unit::Bytes,
            Goal::AtMost(24.0 * MIB),
        );
        assert!(m.met);
        assert_eq!(m.measured_text(), "20.0 MiB");
        assert_eq!(m.goal_text(), "<= 24.0 MiB");
        assert!(Check::new("z", Spread::single(0.0), Unit::Count, Goal::AtMost(0.0)).met);
    }
}
