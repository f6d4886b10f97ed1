//! Two scorecard runs side by side (`fipstun scorecard diff OLD.json NEW.json`): each figure's
//! change, and whether it left the noise band the repetitions showed.

use std::fmt::Write;

use super::render::num;
use super::{Better, Figure, Scorecard, Spread};

/// One figure of one backend and workload in both runs.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    /// Backend name.
    pub backend: String,
    /// Workload label, `idle`, `churn-<label>`, `streams-<n>`, or `fanout-K<k>`.
    pub workload: String,
    /// Figure name (the JSON key).
    pub figure: String,
    /// The old run's spread.
    pub old: Spread,
    /// The new run's spread.
    pub new: Spread,
    /// Which way is better for this figure.
    pub better: Better,
}

impl Change {
    /// The two min-max ranges overlap, or the medians differ by less than
    /// [`crate::spread::NOISE_FLOOR`]: the change is within noise.
    pub fn within_noise(&self) -> bool {
        self.old.same_within_noise(&self.new)
    }

    /// `~` within noise, else `better`, `worse` or `changed` (a figure with no good side).
    pub fn verdict(&self) -> &'static str {
        if self.within_noise() {
            return "~";
        }
        let up = self.new.median > self.old.median;
        match (self.better, up) {
            (Better::Higher, true) | (Better::Lower, false) => "better",
            (Better::Higher, false) | (Better::Lower, true) => "worse",
            (Better::Neither, _) => "changed",
        }
    }

    /// New median over old median, minus one, in percent (`None` when the old one is 0).
    pub fn percent(&self) -> Option<f64> {
        (self.old.median != 0.0).then(|| (self.new.median / self.old.median - 1.0) * 100.0)
    }
}

/// Every figure present in both runs, backend by backend in the new run's order.
pub fn diff(old: &Scorecard, new: &Scorecard) -> Vec<Change> {
    let mut out = Vec::new();
    for nb in &new.backends {
        let Some(ob) = old.backends.iter().find(|b| b.name == nb.name) else {
            continue;
        };
        for nc in &nb.results {
            let Some(oc) = ob.cell(|w| *w == nc.workload) else {
                continue;
            };
            for f in Figure::ALL {
                if let (Some(o), Some(n)) = (oc.figure(f), nc.figure(f)) {
                    out.push(Change {
                        backend: nb.name.clone(),
                        workload: nc.workload.label(),
                        figure: f.name().into(),
                        old: o,
                        new: n,
                        better: f.better(),
                    });
                }
            }
        }
        if let (Some(oc), Some(nc)) = (&ob.churn, &nb.churn) {
            for f in Figure::ALL {
                if let (Some(o), Some(n)) = (oc.result.figure(f), nc.result.figure(f)) {
                    out.push(Change {
                        backend: nb.name.clone(),
                        workload: format!("churn-{}", nc.result.workload.label()),
                        figure: f.name().into(),
                        old: o,
                        new: n,
                        better: f.better(),
                    });
                }
            }
        }
        if let (Some(o), Some(n)) = (&ob.idle, &nb.idle) {
            for (name, o, n) in [
                (
                    "tunnel_cpu_s_per_min",
                    o.tunnel_cpu_s_per_min,
                    n.tunnel_cpu_s_per_min,
                ),
                ("tunnel_rss_bytes", o.tunnel_rss_bytes, n.tunnel_rss_bytes),
            ] {
                out.push(Change {
                    backend: nb.name.clone(),
                    workload: "idle".into(),
                    figure: name.into(),
                    old: o,
                    new: n,
                    better: Better::Lower,
                });
            }
        }
        if let (Some(os), Some(ns)) = (&ob.streams, &nb.streams) {
            for np in &ns.points {
                let Some(op) = os.points.iter().find(|p| p.streams == np.streams) else {
                    continue;
                };
                type Of = fn(&crate::Held) -> f64;
                let figures: [(&str, Better, Of); 4] = [
                    ("rss_per_stream_bytes", Better::Lower, |h| {
                        h.rss_per_stream_bytes()
                    }),
                    ("rss_held_bytes", Better::Lower, |h| {
                        h.rss_held_bytes() as f64
                    }),
                    ("opens_per_sec", Better::Higher, |h| h.opens_per_sec()),
                    ("errors", Better::Lower, |h| h.errors as f64),
                ];
                for (name, better, f) in figures {
                    out.push(Change {
                        backend: nb.name.clone(),
                        workload: format!("streams-{}", np.streams),
                        figure: name.into(),
                        old: Spread::single(f(op)),
                        new: Spread::single(f(np)),
                        better,
                    });
                }
            }
        }
    }
    if let (Some(of), Some(nf)) = (&old.fanout, &new.fanout) {
        for np in &nf.points {
            let Some(op) = of.point(np.peers) else {
                continue;
            };
            let pair = |f: Of| Some((Spread::single(f(op)?), Spread::single(f(np)?)));
            type Of = fn(&crate::FanoutPoint) -> Option<f64>;
            let figures: [(&str, Better, Of); 5] = [
                ("ops_per_sec", Better::Higher, |p| p.ops_per_sec()),
                ("p99_us", Better::Lower, |p| p.p99_us()),
                ("setups_per_sec", Better::Higher, |p| {
                    Some(p.setups_per_sec())
                }),
                ("proxy_rss_per_peer_bytes", Better::Lower, |p| {
                    Some(p.proxy_rss_per_peer_bytes())
                }),
                ("proxy_peak_rss_bytes", Better::Lower, |p| {
                    Some(p.proxy_peak_rss_bytes() as f64)
                }),
            ];
            for (name, better, f) in figures {
                if let Some((o, n)) = pair(f) {
                    out.push(Change {
                        backend: "hbone".into(),
                        workload: format!("fanout-K{}", np.peers),
                        figure: name.into(),
                        old: o,
                        new: n,
                        better,
                    });
                }
            }
        }
    }
    out
}

fn range(s: &Spread) -> String {
    format!("{} [{}..{}]", num(s.median), num(s.min), num(s.max))
}

/// The changes as a table: old and new as `median [min..max]`, the change of the medians,
/// and the verdict (`~` = the ranges overlap, within noise).
pub fn render(old: &Scorecard, new: &Scorecard) -> String {
    let changes = diff(old, new);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "old: {} ({} reps)  new: {} ({} reps)",
        old.machine.started, old.reps, new.machine.started, new.reps
    );
    let _ = writeln!(
        out,
        "median [min..max] over the repetitions; \"~\" = within noise (the ranges overlap, or the \
         medians differ by under 2%)"
    );
    let _ = writeln!(
        out,
        "{:<10} {:<17} {:<22} {:>24} {:>24} {:>8}  verdict",
        "backend", "workload", "figure", "old", "new", "change"
    );
    for c in &changes {
        let pct = c
            .percent()
            .map(|p| format!("{p:+.1}%"))
            .unwrap_or_else(|| "—".into());
        let _ = writeln!(
            out,
            "{:<10} {:<17} {:<22} {:>24} {:>24} {:>8}  {}",
            c.backend,
            c.workload,
            c.figure,
            range(&c.old),
            range(&c.new),
            pct,
            c.verdict()
        );
    }
    let moved = changes.iter().filter(|c| !c.within_noise()).count();
    let _ = writeln!(
        out,
        "{} figures compared, {} outside the noise band ({} better, {} worse)",
        changes.len(),
        moved,
        changes.iter().filter(|c| c.verdict() == "better").count(),
        changes.iter().filter(|c| c.verdict() == "worse").count()
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(old: &[f64], new: &[f64], better: Better) -> Change {
        Change {
            backend: "hbone".into(),
            workload: "rr-1KiB-c64".into(),
            figure: "x".into(),
            old: Spread::of(old).unwrap(),
            new: Spread::of(new).unwrap(),
            better,
        }
    }

    #[test]
    fn verdicts_follow_the_ranges_and_the_better_side() {
        assert_eq!(
            change(&[10.0, 11.0, 12.0], &[11.5, 13.0, 14.0], Better::Higher).verdict(),
            "~"
        );
        assert_eq!(
            change(&[10.0, 11.0, 12.0], &[13.0, 14.0, 15.0], Better::Higher).verdict(),
            "better"
        );
        assert_eq!(
            change(&[10.0, 11.0, 12.0], &[13.0, 14.0, 15.0], Better::Lower).verdict(),
            "worse"
        );
        assert_eq!(
            change(&[10.0, 11.0, 12.0], &[1.0, 2.0, 3.0], Better::Neither).verdict(),
            "changed"
        );
        // No range, a 1% change: noise; 3%: a change.
        assert_eq!(change(&[100.0], &[101.0], Better::Lower).verdict(), "~");
        assert_eq!(change(&[100.0], &[103.0], Better::Lower).verdict(), "worse");
        let c = change(&[10.0], &[12.5], Better::Higher);
        assert_eq!(c.percent(), Some(25.0));
    }
}
