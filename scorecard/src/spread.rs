//! Repeated measurements reduced to a median and its min-max range, the figures the report
//! names, and ratios between two spreads that say when a difference is only noise.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::{Measurement, Role, Workload};

/// The median of repeated readings of one figure, with the smallest and largest reading.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    /// Median (the mean of the two middle readings for an even count).
    pub median: f64,
    /// Smallest reading.
    pub min: f64,
    /// Largest reading.
    pub max: f64,
}

impl Spread {
    /// The spread of `values` (non-finite readings are ignored); `None` if none is left.
    pub fn of(values: &[f64]) -> Option<Spread> {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Spread {
            median,
            min: v[0],
            max: v[n - 1],
        })
    }

    /// One reading: no spread.
    pub fn single(value: f64) -> Spread {
        Spread {
            median: value,
            min: value,
            max: value,
        }
    }

    /// Whether the two min-max ranges share a point: the difference between the medians is
    /// within the noise the repetitions showed.
    pub fn overlaps(&self, other: &Spread) -> bool {
        self.min <= other.max && other.min <= self.max
    }

    /// Whether `self` and `other` cannot be told apart: their min-max ranges overlap, or their
    /// medians differ by less than [`NOISE_FLOOR`] (a figure that does not vary between reps,
    /// such as resident memory, has no range, yet a 0.1% change in it is not news).
    pub fn same_within_noise(&self, other: &Spread) -> bool {
        if self.overlaps(other) {
            return true;
        }
        let scale = self.median.abs().max(other.median.abs());
        scale > 0.0 && (self.median - other.median).abs() < NOISE_FLOOR * scale
    }

    /// `self / other`: the ratio of the medians, and the widest ratio the ranges allow
    /// (`self.min / other.max` to `self.max / other.min`). `None` when `other` can be zero.
    pub fn ratio_to(&self, other: &Spread) -> Option<Spread> {
        if other.min <= 0.0 || other.median <= 0.0 {
            return None;
        }
        Some(Spread {
            median: self.median / other.median,
            min: self.min / other.max,
            max: self.max / other.min,
        })
    }

    /// Every field multiplied by `k` (a unit change).
    pub fn scaled(&self, k: f64) -> Spread {
        Spread {
            median: self.median * k,
            min: self.min * k,
            max: self.max * k,
        }
    }
}

/// The smallest relative difference between two medians that counts as a difference even
/// when the figures' ranges do not overlap: 2%.
pub const NOISE_FLOOR: f64 = 0.02;

/// Which way a figure is better.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Better {
    /// More is better (rates).
    Higher,
    /// Less is better (latency, memory).
    Lower,
    /// Neither (cores used by a closed loop grow with the rate it reaches).
    Neither,
}

/// A figure the report derives from a [`Measurement`]; its [`Figure::name`] is the key in
/// the JSON's `figures` maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Figure {
    /// Completed operations per second (request/response, stream setup).
    OpsPerSec,
    /// Operations per CPU-second of every process ("queries per core").
    OpsPerCpuS,
    /// Payload bits per second (bulk).
    BitsPerSec,
    /// Payload bytes per CPU-second of every process (bulk).
    BytesPerCpuS,
    /// Median latency, µs.
    P50Us,
    /// 90th percentile latency, µs.
    P90Us,
    /// 99th percentile latency, µs.
    P99Us,
    /// 99.9th percentile latency, µs.
    P999Us,
    /// Cores busy on average, all processes.
    Cores,
    /// Cores busy on average, tunnel processes only (proxy + node or relay).
    TunnelCores,
    /// Sum of the tunnel processes' peak RSS in the window, bytes.
    TunnelPeakRssBytes,
}

impl Figure {
    /// Every figure, in report order.
    pub const ALL: [Figure; 11] = [
        Figure::OpsPerSec,
        Figure::OpsPerCpuS,
        Figure::BitsPerSec,
        Figure::BytesPerCpuS,
        Figure::P50Us,
        Figure::P90Us,
        Figure::P99Us,
        Figure::P999Us,
        Figure::Cores,
        Figure::TunnelCores,
        Figure::TunnelPeakRssBytes,
    ];

    /// The JSON key.
    pub fn name(self) -> &'static str {
        match self {
            Figure::OpsPerSec => "ops_per_sec",
            Figure::OpsPerCpuS => "ops_per_cpu_s",
            Figure::BitsPerSec => "bits_per_sec",
            Figure::BytesPerCpuS => "bytes_per_cpu_s",
            Figure::P50Us => "p50_us",
            Figure::P90Us => "p90_us",
            Figure::P99Us => "p99_us",
            Figure::P999Us => "p999_us",
            Figure::Cores => "cores",
            Figure::TunnelCores => "tunnel_cores",
            Figure::TunnelPeakRssBytes => "tunnel_peak_rss_bytes",
        }
    }

    /// Which way is better.
    pub fn better(self) -> Better {
        match self {
            Figure::OpsPerSec | Figure::OpsPerCpuS | Figure::BitsPerSec | Figure::BytesPerCpuS => {
                Better::Higher
            }
            Figure::P50Us
            | Figure::P90Us
            | Figure::P99Us
            | Figure::P999Us
            | Figure::TunnelPeakRssBytes => Better::Lower,
            Figure::Cores | Figure::TunnelCores => Better::Neither,
        }
    }

    /// The figure's value in one measurement, or `None` where it does not apply (no rate of
    /// operations for bulk, no tunnel figures for the no-mesh baseline).
    pub fn of(self, m: &Measurement) -> Option<f64> {
        let bulk = matches!(m.workload, Workload::Bulk { .. });
        let tunnel = m.processes.iter().any(|p| p.role == Role::Tunnel);
        let l = m.latency;
        match self {
            Figure::OpsPerSec => (!bulk).then(|| m.ops_per_sec()),
            Figure::OpsPerCpuS => (!bulk).then(|| m.ops_per_core()),
            Figure::BitsPerSec => bulk.then(|| m.bytes_per_sec() * 8.0),
            Figure::BytesPerCpuS => bulk.then(|| m.bytes_per_core()),
            Figure::P50Us => l.map(|l| l.p50_us),
            Figure::P90Us => l.map(|l| l.p90_us),
            Figure::P99Us => l.map(|l| l.p99_us),
            Figure::P999Us => l.map(|l| l.p999_us),
            Figure::Cores => Some(m.cores()),
            Figure::TunnelCores => tunnel.then(|| m.cpu_tunnel_s() / m.wall_s.max(1e-9)),
            Figure::TunnelPeakRssBytes => tunnel.then(|| m.tunnel_peak_rss() as f64),
        }
    }
}

impl fmt::Display for Figure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How a ratio reads: as a change in percent (`+12%`) or as a factor (`x1.40`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RatioStyle {
    /// `(ratio - 1) * 100`, signed.
    Percent,
    /// The ratio itself.
    Factor,
}

/// One ratio between two backends' spreads of the same figure.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Ratio {
    /// What is compared (`queries`, `p99`, ...).
    pub what: String,
    /// The ratio: medians, and the widest ratio the two ranges allow.
    pub ratio: Spread,
    /// The two min-max ranges overlap: no winner.
    pub within_noise: bool,
    /// How it reads.
    pub style: RatioStyle,
}

impl Ratio {
    /// The ratio `a / b` of two spreads, or `None` when `b` can be zero.
    pub fn between(what: &str, a: &Spread, b: &Spread, style: RatioStyle) -> Option<Ratio> {
        Some(Ratio {
            what: what.into(),
            ratio: a.ratio_to(b)?,
            within_noise: a.same_within_noise(b),
            style,
        })
    }

    /// `+12% [+3% .. +20%]`, `x1.40 [x1.10 .. x1.62]`, or `~ (+2%, ranges overlap)`.
    pub fn text(&self) -> String {
        let r = &self.ratio;
        if self.within_noise {
            return format!("~ (within noise: {})", self.one(r.median));
        }
        format!(
            "{} [{} .. {}]",
            self.one(r.median),
            self.one(r.min),
            self.one(r.max)
        )
    }

    fn one(&self, v: f64) -> String {
        match self.style {
            RatioStyle::Percent => format!("{:+.0}%", (v - 1.0) * 100.0),
            RatioStyle::Factor => format!("x{v:.2}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_min_and_max_of_odd_and_even_counts() {
        let s = Spread::of(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        let s = Spread::of(&[4.0, 1.0, 2.0, 10.0]).unwrap();
        assert_eq!((s.median, s.min, s.max), (3.0, 1.0, 10.0));
        assert_eq!(Spread::of(&[]), None);
        assert_eq!(Spread::of(&[f64::NAN]), None);
        assert_eq!(Spread::of(&[5.0]).unwrap(), Spread::single(5.0));
    }

    #[test]
    fn overlapping_ranges_are_within_noise() {
        let a = Spread::of(&[100.0, 110.0, 120.0]).unwrap();
        let b = Spread::of(&[115.0, 130.0, 140.0]).unwrap();
        let c = Spread::of(&[121.0, 130.0, 140.0]).unwrap();
        assert!(a.overlaps(&b) && b.overlaps(&a));
        assert!(!a.overlaps(&c) && !c.overlaps(&a));
        let r = Ratio::between("queries", &a, &b, RatioStyle::Percent).unwrap();
        assert!(r.within_noise);
        assert!(r.text().starts_with("~"), "{}", r.text());
        let r = Ratio::between("queries", &c, &a, RatioStyle::Percent).unwrap();
        assert!(!r.within_noise);
        // 130/110 = +18%, 121/120 = +1%, 140/100 = +40%.
        assert_eq!(r.text(), "+18% [+1% .. +40%]");
        let r = Ratio::between("bulk", &a, &c, RatioStyle::Factor).unwrap();
        assert_eq!(r.text(), "x0.85 [x0.71 .. x0.99]");
    }

    #[test]
    fn differences_under_the_floor_are_noise_even_without_a_range() {
        let a = Spread::single(100.0);
        assert!(a.same_within_noise(&Spread::single(101.9)));
        assert!(!a.same_within_noise(&Spread::single(102.1)));
        assert!(!a.overlaps(&Spread::single(101.9)));
        assert!(Spread::single(0.0).same_within_noise(&Spread::single(0.0)));
    }

    #[test]
    fn a_ratio_to_a_possible_zero_is_refused() {
        let zero = Spread::of(&[0.0, 1.0]).unwrap();
        assert!(Spread::single(1.0).ratio_to(&zero).is_none());
    }
}
