//! Fan-out: one proxy spreading request/response load over K HBONE nodes, each its own process
//! with its own SVID, so the proxy holds K pooled connections; what that costs as K grows.

use serde::{Deserialize, Serialize};

use super::load::Measurement;
use super::{Figure, WorkloadResult};

/// The fan-out runs of one scorecard: one point per K (the default run has one, K = 16;
/// `--scale` has K = 1, 4, 16, 64).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Fanout {
    /// What ran (path and load), for the report.
    pub what: String,
    /// One point per peer count, smallest K first.
    pub points: Vec<FanoutPoint>,
}

/// One fan-out run over `peers` nodes.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FanoutPoint {
    /// K: nodes (peer identities), each its own `fipstun node` and SVID.
    pub peers: usize,
    /// Cold start: seconds from a fresh proxy (no pooled connection) until the first stream
    /// to each of the K nodes (all K started at once) has done a round trip.
    pub setup_s: f64,
    /// The proxy's `VmRSS` before the cold start (no connections), bytes.
    pub proxy_rss_before_bytes: u64,
    /// The proxy's `VmRSS` right after the cold start (K pooled connections), bytes.
    pub proxy_rss_after_bytes: u64,
    /// The request/response load spread round-robin over the K nodes (one run); its
    /// processes are the load generator, `proxy` and `node-<i>`.
    pub result: WorkloadResult,
}

impl FanoutPoint {
    /// New HBONE connections per second during the cold start: K / [`Self::setup_s`].
    pub fn setups_per_sec(&self) -> f64 {
        self.peers as f64 / self.setup_s.max(1e-9)
    }

    /// What one pooled peer connection adds to the proxy: its `VmRSS` growth over the cold
    /// start divided by K, bytes (negative growth reads as 0).
    pub fn proxy_rss_per_peer_bytes(&self) -> f64 {
        self.proxy_rss_after_bytes
            .saturating_sub(self.proxy_rss_before_bytes) as f64
            / self.peers.max(1) as f64
    }

    fn run(&self) -> Option<&Measurement> {
        self.result.runs.first()
    }

    /// Requests per second under the load.
    pub fn ops_per_sec(&self) -> Option<f64> {
        self.result.figure(Figure::OpsPerSec).map(|s| s.median)
    }

    /// p99 latency under the load, µs.
    pub fn p99_us(&self) -> Option<f64> {
        self.result.figure(Figure::P99Us).map(|s| s.median)
    }

    /// The proxy's peak RSS under the load, bytes.
    pub fn proxy_peak_rss_bytes(&self) -> u64 {
        self.run()
            .map(|m| {
                m.processes
                    .iter()
                    .filter(|p| p.name == "proxy")
                    .map(|p| p.peak_rss_bytes)
                    .sum()
            })
            .unwrap_or(0)
    }

    /// The K nodes' peak RSS under the load, summed, bytes.
    pub fn nodes_peak_rss_bytes(&self) -> u64 {
        self.run()
            .map(|m| {
                m.processes
                    .iter()
                    .filter(|p| p.name.starts_with("node"))
                    .map(|p| p.peak_rss_bytes)
                    .sum()
            })
            .unwrap_or(0)
    }
}

impl Fanout {
    /// The point for K = `peers`.
    pub fn point(&self, peers: usize) -> Option<&FanoutPoint> {
        self.points.iter().find(|p| p.peers == peers)
    }

    /// Growth of the proxy's peak RSS under load per added peer between the smallest and
    /// the largest K measured: (RSS at K_max - RSS at K_min) / (K_max - K_min), bytes; `None`
    /// with fewer than two peer counts.
    pub fn proxy_rss_slope_bytes(&self) -> Option<f64> {
        let lo = self.points.iter().min_by_key(|p| p.peers)?;
        let hi = self.points.iter().max_by_key(|p| p.peers)?;
        (hi.peers > lo.peers).then(|| {
            (hi.proxy_peak_rss_bytes() as f64 - lo.proxy_peak_rss_bytes() as f64)
                / (hi.peers - lo.peers) as f64
        })
    }
}
