//! The headline, the text table and the SVG chart of a [`Scorecard`]. Every figure is a
//! median over the repetitions with its min-max range.

use std::fmt::Write;

use super::{BackendResult, Fanout, Figure, Scorecard, Spread, Workload, WorkloadResult};

/// A number in three significant digits with an SI prefix: `174k`, `17.4k`, `1.74`, `0.05`.
pub(crate) fn num(v: f64) -> String {
    let (d, p) = prefix(v.abs());
    format!("{}{p}", sig3(v / d))
}

fn prefix(v: f64) -> (f64, &'static str) {
    if v >= 999.5e6 {
        (1e9, "G")
    } else if v >= 999.5e3 {
        (1e6, "M")
    } else if v >= 999.5 {
        (1e3, "k")
    } else {
        (1.0, "")
    }
}

fn sig3(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if a >= 99.95 {
        format!("{v:.0}")
    } else if a >= 9.995 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// `170–180k`: both ends with the prefix of the larger.
fn num_range(s: &Spread) -> String {
    let (d, p) = prefix(s.max.abs().max(s.min.abs()));
    format!("{}–{}{p}", sig3(s.min / d), sig3(s.max / d))
}

/// Latency: `350µs`, `1.20ms`.
fn us(v: f64) -> String {
    if v >= 999.5 {
        format!("{}ms", sig3(v / 1000.0))
    } else {
        format!("{v:.0}µs")
    }
}

fn us_range(s: &Spread) -> String {
    if s.max >= 999.5 {
        format!("{}–{}ms", sig3(s.min / 1000.0), sig3(s.max / 1000.0))
    } else {
        format!("{:.0}–{:.0}µs", s.min, s.max)
    }
}

fn mib(v: f64) -> String {
    format!("{:.1}MiB", v / (1024.0 * 1024.0))
}

fn mib_range(s: &Spread) -> String {
    format!(
        "{:.1}–{:.1}MiB",
        s.min / (1024.0 * 1024.0),
        s.max / (1024.0 * 1024.0)
    )
}

fn title(w: &Workload) -> String {
    match w {
        Workload::RequestResponse { connections, size } => {
            format!("Request/response, {size} B each way, {connections} connections (closed loop)")
        }
        Workload::Bulk { streams } => format!(
            "Bulk upload, {streams} stream{}",
            if *streams == 1 { "" } else { "s" }
        ),
        Workload::StreamSetup { concurrency } => {
            format!("Stream setup (connect + 1-byte round trip + close), {concurrency} in parallel")
        }
    }
}

/// The cell of workload `w` of every backend that ran it.
fn column<'a>(s: &'a Scorecard, w: &Workload) -> Vec<(&'a BackendResult, &'a WorkloadResult)> {
    s.backends
        .iter()
        .filter_map(|b| b.cell(|x| x == w).map(|c| (b, c)))
        .collect()
}

/// Workloads in first-seen order.
fn workloads(s: &Scorecard) -> Vec<Workload> {
    let mut out: Vec<Workload> = Vec::new();
    for r in s.backends.iter().flat_map(|b| &b.results) {
        if !out.contains(&r.workload) {
            out.push(r.workload);
        }
    }
    out
}

/// The headline as text: one block per pair, with both sides' cost at rest.
pub(super) fn headline(s: &Scorecard) -> String {
    let h = s.headline();
    let reps = s.reps;
    let mut out = String::new();
    if h.is_empty() {
        return out;
    }
    let _ = writeln!(
        out,
        "Headline: median of {reps} interleaved rep{}, [the range the two min-max ranges allow]; \
         \"~\" = within noise (the ranges overlap or differ by under 2%): no winner{}",
        if reps == 1 { "" } else { "s" },
        if reps == 1 {
            " — one rep has no spread: run --reps 3 or more"
        } else {
            ""
        }
    );
    for c in &h {
        let _ = writeln!(out, "  {} vs {}", c.a, c.b);
        for r in &c.ratios {
            let _ = writeln!(out, "    {:<24} {}", r.what, r.text());
        }
        let idle = |n: &str| {
            let i = s.backends.iter().find(|b| b.name == n)?.idle.as_ref()?;
            Some(format!(
                "{n} {:.2} CPU-s/min, {}",
                i.tunnel_cpu_s_per_min.median,
                mib(i.tunnel_rss_bytes.median)
            ))
        };
        if let (Some(a), Some(b)) = (idle(&c.a), idle(&c.b)) {
            let _ = writeln!(out, "    {:<24} {a}; {b}", "at rest");
        }
    }
    for b in &s.backends {
        let Some(ch) = &b.churn else { continue };
        let Some(calm) = b.cell(|w| *w == ch.result.workload) else {
            continue;
        };
        let _ = writeln!(
            out,
            "  {} under churn ({}) vs without: {} errors",
            b.name, ch.what, ch.result.errors
        );
        for r in ch.against(calm) {
            let _ = writeln!(out, "    {:<24} {}", r.what, r.text());
        }
    }
    for p in s.fanout.iter().flat_map(|f| &f.points) {
        let _ = writeln!(
            out,
            "  hbone fan-out over {} nodes: {} requests/s, p99 {}, {} new connections/s cold, \
             proxy {} per peer, {} errors",
            p.peers,
            p.ops_per_sec().map(num).unwrap_or_else(|| "–".into()),
            p.p99_us().map(us).unwrap_or_else(|| "–".into()),
            num(p.setups_per_sec()),
            kib(p.proxy_rss_per_peer_bytes()),
            p.result.errors
        );
    }
    out
}

/// A table with a line of medians and a line of min–max ranges under it per backend.
struct Table {
    out: String,
    widths: Vec<usize>,
}

impl Table {
    fn new(headers: &[&str], widths: &[usize]) -> Self {
        let mut t = Table {
            out: String::new(),
            widths: widths.to_vec(),
        };
        t.line(&headers.iter().map(|h| h.to_string()).collect::<Vec<_>>());
        t
    }

    /// One backend's row of figures: medians on the first line (after the name, then the
    /// error count), their ranges under them.
    fn figure_row(&mut self, name: &str, cols: impl IntoIterator<Item = [String; 2]>, errors: u64) {
        let mut first = vec![name.to_string()];
        let mut second = vec![String::new()];
        for [median, range] in cols {
            first.push(median);
            second.push(range);
        }
        first.push(errors.to_string());
        self.line(&first);
        self.line(&second);
    }

    fn line(&mut self, cells: &[String]) {
        let mut l = String::from("  ");
        for (i, c) in cells.iter().enumerate() {
            let w = self.widths.get(i).copied().unwrap_or(10);
            if i == 0 {
                let _ = write!(l, "{c:<w$}");
            } else {
                let _ = write!(l, " {c:>w$}");
            }
        }
        let _ = writeln!(self.out, "{}", l.trim_end());
    }
}

/// Median line and range line for one figure, formatted by `one` and `range`, or dashes.
fn pair(s: Option<Spread>, one: fn(f64) -> String, range: fn(&Spread) -> String) -> [String; 2] {
    match s {
        Some(s) => [one(s.median), range(&s)],
        None => ["—".into(), String::new()],
    }
}

/// `vs plain`: the ratio in percent, `~` within noise, the ratio's range below.
fn vs_base(c: &WorkloadResult, base: Option<&WorkloadResult>, f: Figure) -> [String; 2] {
    let (Some(a), Some(b)) = (c.figure(f), base.and_then(|b| b.figure(f))) else {
        return ["—".into(), String::new()];
    };
    let Some(r) = a.ratio_to(&b) else {
        return ["—".into(), String::new()];
    };
    let med = if a.same_within_noise(&b) {
        "~".to_string()
    } else {
        format!("{:.0}%", r.median * 100.0)
    };
    [med, format!("{:.0}–{:.0}%", r.min * 100.0, r.max * 100.0)]
}

pub(super) fn table(s: &Scorecard) -> String {
    let mut out = headline(s);
    out.push_str(&targets_block(s));
    let m = &s.machine;
    let _ = writeln!(
        out,
        "\nfipstun scorecard {} — {} CPUs ({}), Linux {}, {}",
        m.version, m.cpus, m.cpu_model, m.kernel, m.started
    );
    let _ = writeln!(
        out,
        "{} interleaved rep{} of every cell, each {:.2} s warm-up + {:.2} s measured.\n\
         Per backend a line of medians and a line of min–max; \"~\" in vs plain = within noise.\n\
         CPU = user+sys of every process (load generator and sinks, proxy, node); per core = per \
         CPU-second of all of them.",
        s.reps,
        if s.reps == 1 { "" } else { "s" },
        s.warmup_s,
        s.measure_s
    );
    for b in &s.backends {
        let _ = writeln!(
            out,
            "  {:<10} {} / {} — FIPS: {} — {}",
            b.name,
            b.protocol,
            b.cipher,
            if b.fips { "yes" } else { "no" },
            b.path
        );
    }
    for w in workloads(s) {
        let col = column(s, &w);
        let base = col.iter().find(|(b, _)| b.name == "plain").map(|(_, c)| *c);
        let _ = writeln!(out, "\n{}", title(&w));
        let bulk = matches!(w, Workload::Bulk { .. });
        let mut t = if bulk {
            Table::new(
                &[
                    "backend",
                    "Gbit/s",
                    "vs plain",
                    "MB/CPU-s",
                    "cores",
                    "tunnel cores",
                    "tunnel RSS",
                    "errors",
                ],
                &[10, 13, 9, 11, 10, 12, 14, 6],
            )
        } else {
            Table::new(
                &[
                    "backend",
                    "per sec",
                    "vs plain",
                    "p50",
                    "p99",
                    "p99.9",
                    "per core",
                    "cores",
                    "tunnel cores",
                    "tunnel RSS",
                    "errors",
                ],
                &[10, 11, 9, 11, 13, 13, 11, 10, 12, 14, 6],
            )
        };
        for (b, c) in &col {
            let cores = |f| {
                pair(
                    c.figure(f),
                    |v| format!("{v:.2}"),
                    |s| format!("{:.2}–{:.2}", s.min, s.max),
                )
            };
            let rss = pair(c.figure(Figure::TunnelPeakRssBytes), mib, mib_range);
            let vs = |f| {
                if b.name == "plain" {
                    ["base".to_string(), String::new()]
                } else {
                    vs_base(c, base, f)
                }
            };
            let cols: Vec<[String; 2]> = if bulk {
                vec![
                    pair(
                        c.figure(Figure::BitsPerSec).map(|s| s.scaled(1e-9)),
                        |v| format!("{v:.2}"),
                        |s| format!("{:.2}–{:.2}", s.min, s.max),
                    ),
                    vs(Figure::BitsPerSec),
                    pair(
                        c.figure(Figure::BytesPerCpuS).map(|s| s.scaled(1e-6)),
                        |v| format!("{v:.0}"),
                        |s| format!("{:.0}–{:.0}", s.min, s.max),
                    ),
                    cores(Figure::Cores),
                    cores(Figure::TunnelCores),
                    rss,
                ]
            } else {
                vec![
                    pair(c.figure(Figure::OpsPerSec), num, num_range),
                    vs(Figure::OpsPerSec),
                    pair(c.figure(Figure::P50Us), us, us_range),
                    pair(c.figure(Figure::P99Us), us, us_range),
                    pair(c.figure(Figure::P999Us), us, us_range),
                    pair(c.figure(Figure::OpsPerCpuS), num, num_range),
                    cores(Figure::Cores),
                    cores(Figure::TunnelCores),
                    rss,
                ]
            };
            t.figure_row(&b.name, cols, c.errors);
        }
        out.push_str(&t.out);
    }
    for b in &s.backends {
        let Some(ch) = &b.churn else { continue };
        let c = &ch.result;
        let _ = writeln!(
            out,
            "\nUnder churn: {} {} while {} (changes per run: {:?}; {} failed)",
            b.name,
            c.workload.label(),
            ch.what,
            ch.changes,
            ch.change_failures
        );
        let mut t = Table::new(
            &["backend", "per sec", "p50", "p99", "p99.9", "errors"],
            &[10, 11, 11, 13, 13, 6],
        );
        let cols = [
            pair(c.figure(Figure::OpsPerSec), num, num_range),
            pair(c.figure(Figure::P50Us), us, us_range),
            pair(c.figure(Figure::P99Us), us, us_range),
            pair(c.figure(Figure::P999Us), us, us_range),
        ];
        t.figure_row(&b.name, cols, c.errors);
        out.push_str(&t.out);
    }
    if let Some(f) = &s.fanout {
        out.push_str(&fanout_table(f));
    }
    out.push_str(&streams_table(s));
    let idle: Vec<&BackendResult> = s.backends.iter().filter(|b| b.idle.is_some()).collect();
    if let Some(i0) = idle.first().and_then(|b| b.idle.as_ref()) {
        let _ = writeln!(
            out,
            "\nAt rest: tunnels up (pool warm, handshakes done, keepalives running), nothing sent \
             for {:.1} s in all, in {} windows, one at the end of each round (median and min–max over them)",
            i0.window_s, i0.slices
        );
        let mut t = Table::new(
            &[
                "backend",
                "CPU-s/min",
                "range",
                "RSS",
                "range",
                "per process",
            ],
            &[10, 10, 11, 10, 14, 0],
        );
        for b in idle {
            let Some(i) = &b.idle else { continue };
            let procs: Vec<String> = i
                .processes
                .iter()
                .map(|p| {
                    format!(
                        "{} {:.2} CPU-s/min {}",
                        p.name,
                        p.cpu_s_per_min.median,
                        mib(p.rss_bytes.median)
                    )
                })
                .collect();
            let (c, r) = (i.tunnel_cpu_s_per_min, i.tunnel_rss_bytes);
            t.line(&[
                b.name.clone(),
                format!("{:.2}", c.median),
                format!("{:.2}–{:.2}", c.min, c.max),
                mib(r.median),
                mib_range(&r),
                format!("  {}", procs.join("; ")),
            ]);
        }
        out.push_str(&t.out);
    }
    out
}

/// The data-path targets judged on this run (BENCHMARKS.md judges the in-process ones).
pub(super) fn targets_block(s: &Scorecard) -> String {
    let checks = s.targets();
    let mut out = String::new();
    if checks.is_empty() {
        return out;
    }
    let _ = writeln!(
        out,
        "Targets (medians of this run; the TLS record path and the wireguard-go comparison are in BENCHMARKS.md)"
    );
    let width = checks
        .iter()
        .map(|c| c.what.chars().count())
        .max()
        .unwrap_or(0);
    for c in &checks {
        let _ = writeln!(
            out,
            "  {:<width$}  {:<24} {:<12} {}",
            c.what,
            c.measured_text(),
            c.goal_text(),
            if c.met { "met" } else { "NOT met" }
        );
        if let Some(note) = &c.note {
            let _ = writeln!(out, "  {:<width$}    {note}", "");
        }
    }
    out
}

/// The held-streams block: per backend and stream count, how fast they opened, errors, and
/// the tunnel's memory before, while held, and per stream.
pub(super) fn streams_table(s: &Scorecard) -> String {
    let mut out = String::new();
    let held: Vec<(&BackendResult, &crate::Streams)> = s
        .backends
        .iter()
        .filter_map(|b| b.streams.as_ref().map(|x| (b, x)))
        .collect();
    if held.is_empty() {
        return out;
    }
    let _ = writeln!(
        out,
        "\nHeld streams: per backend {}.\n\
         RSS = proxy + node (or relay) VmRSS before the first stream and with all held; per stream = the growth / streams opened.",
        held[0]
            .1
            .what
            .replacen(held[0].0.name.as_str(), "<backend>", 1)
    );
    let mut t = Table::new(
        &[
            "backend",
            "streams",
            "opened",
            "opens/s",
            "errors",
            "RSS before",
            "RSS held",
            "per stream",
        ],
        &[10, 8, 8, 9, 7, 11, 11, 11],
    );
    for (b, x) in held {
        for h in &x.points {
            t.line(&[
                b.name.clone(),
                h.streams.to_string(),
                h.opened.to_string(),
                sig3(h.opens_per_sec()),
                h.errors.to_string(),
                mib(h.rss_before_bytes() as f64),
                mib(h.rss_held_bytes() as f64),
                kib(h.rss_per_stream_bytes()),
            ]);
        }
    }
    out.push_str(&t.out);
    out
}

/// The fan-out block: one line per K, then how the proxy's memory grows with K.
pub(super) fn fanout_table(f: &Fanout) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nFan-out: {}; one run per K.\n\
         Cold start = a fresh proxy's first stream to each of the K nodes, all at once \
         (setups/s = K / cold start);\n\
         RSS = peak under the load; per peer = the proxy's VmRSS growth over the cold start / K.",
        f.what
    );
    let mut t = Table::new(
        &[
            "K",
            "per sec",
            "p99",
            "cold start",
            "setups/s",
            "proxy RSS",
            "nodes RSS",
            "per peer",
            "errors",
        ],
        &[4, 9, 9, 10, 9, 10, 10, 9, 6],
    );
    for p in &f.points {
        t.line(&[
            p.peers.to_string(),
            p.ops_per_sec().map(num).unwrap_or_else(|| "–".into()),
            p.p99_us().map(us).unwrap_or_else(|| "–".into()),
            format!("{:.0}ms", p.setup_s * 1000.0),
            num(p.setups_per_sec()),
            mib(p.proxy_peak_rss_bytes() as f64),
            mib(p.nodes_peak_rss_bytes() as f64),
            kib(p.proxy_rss_per_peer_bytes()),
            p.result.errors.to_string(),
        ]);
    }
    out.push_str(&t.out);
    if let (Some(slope), Some(lo), Some(hi)) = (
        f.proxy_rss_slope_bytes(),
        f.points.iter().map(|p| p.peers).min(),
        f.points.iter().map(|p| p.peers).max(),
    ) {
        let _ = writeln!(
            out,
            "  proxy RSS under load grows by {} per added peer (K = {lo} -> {hi})",
            kib(slope)
        );
    }
    out
}

fn kib(v: f64) -> String {
    format!("{:.0}KiB", v / 1024.0)
}

// ---- the chart ----

const COLORS: [&str; 4] = ["#7f7f7f", "#1f77b4", "#d62728", "#2ca02c"];

/// Width of a text in px, estimated from its font size (sans-serif averages under 0.6 em per
/// character; the estimate errs wide). The layout and the chart test use the same estimate.
pub(crate) const CHAR_WIDTH_EM: f64 = 0.6;

fn text_width(s: &str, font_size: f64) -> f64 {
    s.chars().count() as f64 * font_size * CHAR_WIDTH_EM
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A step of 1, 2, 2.5 or 5 times a power of ten, at least `raw`.
fn nice_step(raw: f64) -> f64 {
    if raw <= 0.0 || !raw.is_finite() {
        return 1.0;
    }
    let p = 10f64.powf(raw.log10().floor());
    let m = raw / p;
    let n = [1.0, 2.0, 2.5, 5.0, 10.0]
        .into_iter()
        .find(|n| m <= n * (1.0 + 1e-9))
        .unwrap_or(10.0);
    n * p
}

/// Round ticks from 0 to at least `max`: about four steps of a [`nice_step`].
fn ticks(max: f64) -> Vec<f64> {
    let step = nice_step(max.max(1e-12) / 4.0);
    let n = (max / step - 1e-9).ceil().max(1.0) as usize;
    (0..=n).map(|k| k as f64 * step).collect()
}

/// A tick label: the SI prefix of the top tick, and as many decimals as the step needs.
fn tick_label(v: f64, step: f64, top: f64) -> String {
    let (d, p) = prefix(top);
    let decimals = (0..4)
        .find(|&k| {
            let x = step / d * 10f64.powi(k);
            (x - x.round()).abs() < 1e-6
        })
        .unwrap_or(3) as usize;
    if v == 0.0 {
        return "0".into();
    }
    format!("{:.*}{p}", decimals, v / d)
}

struct Bar {
    series: usize,
    value: Spread,
}

struct Group {
    label: String,
    bars: Vec<Bar>,
}

/// One bar panel: groups on the x axis, one bar per backend with a min–max whisker.
struct Panel {
    title: String,
    groups: Vec<Group>,
    /// A dashed line at this value (1.0 on the normalised panel).
    reference: Option<f64>,
    /// Logarithmic y axis, bars growing from the reference line.
    log: bool,
}

impl Panel {
    fn is_empty(&self) -> bool {
        self.groups.iter().all(|g| g.bars.is_empty())
    }
}

/// 1-2-5 steps: `k`-th value of the ladder ..., 0.1, 0.2, 0.5, 1, 2, 5, 10, ... (k = 0 is 1).
fn ladder(k: i32) -> f64 {
    let decade = k.div_euclid(3);
    [1.0, 2.0, 5.0][k.rem_euclid(3) as usize] * 10f64.powi(decade)
}

/// A log-scale tick label: as many decimals as its decade needs (`0.05`, `0.2`, `1`, `50`).
fn log_label(v: f64) -> String {
    if v >= 1.0 {
        let (d, p) = prefix(v);
        format!("{}{p}", v / d)
    } else {
        let decimals = (-v.log10().floor()) as usize;
        format!("{v:.decimals$}")
    }
}

/// The y axis of a panel: tick values with labels, and the bars' base value.
struct Axis {
    ticks: Vec<(f64, String)>,
    log: bool,
    lo: f64,
    hi: f64,
    base: f64,
}

impl Axis {
    /// Linear from 0 with round ticks, up to at least `max`.
    fn linear(max: f64) -> Axis {
        let ticks = ticks(max);
        let step = ticks.get(1).copied().unwrap_or(1.0);
        let hi = ticks.last().copied().unwrap_or(1.0).max(1e-12);
        Axis {
            ticks: ticks
                .iter()
                .map(|&t| (t, tick_label(t, step, hi)))
                .collect(),
            log: false,
            lo: 0.0,
            hi,
            base: 0.0,
        }
    }

    /// Logarithmic on the 1-2-5 ladder around `min..max` and `base` (bars grow from `base`),
    /// with room under the lowest value for its label; powers of ten only when the range is
    /// wide.
    fn log(min: f64, max: f64, base: f64) -> Axis {
        let min = min.min(base).max(1e-12);
        let max = max.max(base);
        let mut k_lo = (min / 3.0).log10().floor() as i32 * 3;
        while ladder(k_lo + 1) <= min / 3.0 {
            k_lo += 1;
        }
        let mut k_hi = max.log10().ceil() as i32 * 3;
        while ladder(k_hi - 1) >= max * 1.15 {
            k_hi -= 1;
        }
        let mut ks: Vec<i32> = (k_lo..=k_hi).collect();
        if ks.len() > 9 {
            k_lo = k_lo.div_euclid(3) * 3;
            k_hi = (k_hi + 2).div_euclid(3) * 3;
            ks = (k_lo..=k_hi).step_by(3).collect();
        }
        Axis {
            ticks: ks
                .iter()
                .map(|&k| (ladder(k), log_label(ladder(k))))
                .collect(),
            log: true,
            lo: ladder(k_lo),
            hi: ladder(k_hi),
            base,
        }
    }

    /// Fraction of the plot height from the bottom.
    fn frac(&self, v: f64) -> f64 {
        let f = if self.log {
            (v.max(1e-12).ln() - self.lo.ln()) / (self.hi.ln() - self.lo.ln())
        } else {
            (v - self.lo) / (self.hi - self.lo)
        };
        f.clamp(0.0, 1.0)
    }
}

fn panel_svg(out: &mut String, p: &Panel, x0: f64, y0: f64, w: f64, h: f64) {
    let top = y0 + 44.0;
    let bottom = y0 + h - 30.0;
    let values = || p.groups.iter().flat_map(|g| g.bars.iter().map(|b| b.value));
    let max = values()
        .map(|v| v.max.max(v.median))
        .chain(p.reference)
        .fold(0.0f64, f64::max);
    let axis = match p.reference {
        Some(r) if p.log => {
            let min = values()
                .map(|v| v.min.min(v.median))
                .filter(|v| *v > 0.0)
                .fold(r, f64::min);
            Axis::log(min, max, r)
        }
        _ => Axis::linear(max),
    };
    let label_w = axis
        .ticks
        .iter()
        .map(|(_, l)| text_width(l, 10.0))
        .fold(0.0, f64::max);
    let left = x0 + 12.0 + label_w;
    let right = x0 + w - 12.0;
    let y_of = |v: f64| bottom - (bottom - top) * axis.frac(v);
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{:.1}" font-size="13" font-weight="bold">{}</text>"#,
        x0 + 8.0,
        y0 + 20.0,
        esc(&p.title)
    );
    for (t, l) in &axis.ticks {
        let y = y_of(*t);
        let _ = writeln!(
            out,
            r##"<line x1="{left:.1}" y1="{y:.1}" x2="{right:.1}" y2="{y:.1}" stroke="#e4e4e4"/><text x="{:.1}" y="{:.1}" font-size="10" text-anchor="end">{}</text>"##,
            left - 5.0,
            y + 3.5,
            esc(l)
        );
    }
    let _ = writeln!(
        out,
        r##"<line x1="{left:.1}" y1="{bottom:.1}" x2="{right:.1}" y2="{bottom:.1}" stroke="#444"/>"##
    );
    let y_base = y_of(axis.base);
    let gw = (right - left) / p.groups.len().max(1) as f64;
    for (gi, g) in p.groups.iter().enumerate() {
        let gx = left + gw * gi as f64;
        let slot = (gw * 0.84) / g.bars.len().max(1) as f64;
        let bw = (slot - 4.0).max(1.0);
        for (bi, b) in g.bars.iter().enumerate() {
            let x = gx + gw * 0.08 + slot * bi as f64 + 2.0;
            let cx = x + bw / 2.0;
            let yb = y_of(b.value.median);
            let _ = writeln!(
                out,
                r#"<rect x="{x:.1}" y="{:.1}" width="{bw:.1}" height="{:.1}" fill="{}"/>"#,
                yb.min(y_base),
                (y_base - yb).abs(),
                COLORS[b.series % COLORS.len()]
            );
            let (ylo, yhi) = (y_of(b.value.min), y_of(b.value.max));
            let cap = (bw * 0.2).max(2.0);
            let _ = writeln!(
                out,
                r##"<path d="M{cx:.1} {ylo:.1}V{yhi:.1}M{:.1} {ylo:.1}H{:.1}M{:.1} {yhi:.1}H{:.1}" stroke="#111" stroke-width="1.2" fill="none"/>"##,
                cx - cap,
                cx + cap,
                cx - cap,
                cx + cap
            );
            // The value beyond the bar's end and whisker (above a bar that grows up, under
            // one that grows down), only where it fits over its bar.
            let label = num(b.value.median);
            let y = if b.value.median >= axis.base {
                yhi.min(yb) - 4.0
            } else {
                ylo.max(yb) + 11.0
            };
            if text_width(&label, 9.0) <= slot {
                let _ = writeln!(
                    out,
                    r#"<text x="{cx:.1}" y="{y:.1}" font-size="9" text-anchor="middle">{}</text>"#,
                    esc(&label)
                );
            }
        }
        if text_width(&g.label, 11.0) <= gw {
            let _ = writeln!(
                out,
                r#"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="middle">{}</text>"#,
                gx + gw / 2.0,
                bottom + 16.0,
                esc(&g.label)
            );
        }
    }
    if let Some(r) = p.reference {
        let y = y_of(r);
        let _ = writeln!(
            out,
            r##"<line x1="{left:.1}" y1="{y:.1}" x2="{right:.1}" y2="{y:.1}" stroke="#111" stroke-dasharray="5 4"/>"##
        );
    }
}

/// Bars of one figure of one workload, for every backend that has it, in display units.
fn bars(s: &Scorecard, w: &Workload, f: Figure, scale: f64) -> Vec<Bar> {
    s.backends
        .iter()
        .enumerate()
        .filter_map(|(i, b)| {
            let v = b.cell(|x| x == w)?.figure(f)?;
            Some(Bar {
                series: i,
                value: v.scaled(scale),
            })
        })
        .collect()
}

fn short(w: &Workload) -> String {
    match w {
        Workload::RequestResponse { .. } => "requests".into(),
        Workload::Bulk { streams: 1 } => "bulk 1 stream".into(),
        Workload::Bulk { streams } => format!("bulk {streams} streams"),
        Workload::StreamSetup { .. } => "setups".into(),
    }
}

fn panels(s: &Scorecard) -> (Option<Panel>, Vec<Panel>) {
    let ws = workloads(s);
    let rr = ws
        .iter()
        .find(|w| matches!(w, Workload::RequestResponse { .. }))
        .copied();
    let setup = ws
        .iter()
        .find(|w| matches!(w, Workload::StreamSetup { .. }))
        .copied();
    let bulks: Vec<Workload> = ws
        .iter()
        .filter(|w| matches!(w, Workload::Bulk { .. }))
        .copied()
        .collect();

    // Each tunnel relative to plain TCP, so the tunnels can be told apart.
    let normalised = s.backends.iter().position(|b| b.name == "plain").map(|pi| {
        let plain = &s.backends[pi];
        let mut groups = Vec::new();
        let mut add = |label: String, w: &Workload, f: Figure| {
            let Some(base) = plain.cell(|x| x == w).and_then(|c| c.figure(f)) else {
                return;
            };
            let bars = s
                .backends
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != pi)
                .filter_map(|(i, b)| {
                    let v = b.cell(|x| x == w)?.figure(f)?;
                    Some(Bar {
                        series: i,
                        value: v.ratio_to(&base)?,
                    })
                })
                .collect();
            groups.push(Group { label, bars });
        };
        if let Some(w) = &rr {
            add("requests/s".into(), w, Figure::OpsPerSec);
            add("requests/CPU-s".into(), w, Figure::OpsPerCpuS);
            add("p99 latency".into(), w, Figure::P99Us);
        }
        for w in &bulks {
            add(short(w), w, Figure::BitsPerSec);
        }
        if let Some(w) = &setup {
            add("setups/s".into(), w, Figure::OpsPerSec);
        }
        Panel {
            title: "Each path relative to plain TCP, log scale (dashed line = plain; p99: lower is better)"
                .into(),
            groups,
            reference: Some(1.0),
            log: true,
        }
    });

    let mut out = Vec::new();
    if let Some(w) = &rr {
        out.push(Panel {
            title: "Requests per second".into(),
            groups: vec![Group {
                label: w.label(),
                bars: bars(s, w, Figure::OpsPerSec, 1.0),
            }],
            reference: None,
            log: false,
        });
        out.push(Panel {
            title: "Requests per CPU-second (all processes)".into(),
            groups: vec![Group {
                label: w.label(),
                bars: bars(s, w, Figure::OpsPerCpuS, 1.0),
            }],
            reference: None,
            log: false,
        });
        let worst = s
            .backends
            .iter()
            .filter_map(|b| b.cell(|x| x == w)?.figure(Figure::P999Us))
            .map(|x| x.max)
            .fold(0.0, f64::max);
        let (unit, scale) = if worst >= 2000.0 {
            ("ms", 1e-3)
        } else {
            ("µs", 1.0)
        };
        out.push(Panel {
            title: format!("Request latency, {unit} ({})", w.label()),
            groups: [
                ("p50", Figure::P50Us),
                ("p99", Figure::P99Us),
                ("p99.9", Figure::P999Us),
            ]
            .iter()
            .map(|(l, f)| Group {
                label: l.to_string(),
                bars: bars(s, w, *f, scale),
            })
            .collect(),
            reference: None,
            log: false,
        });
    }
    if !bulks.is_empty() {
        out.push(Panel {
            title: "Bulk throughput, Gbit/s".into(),
            groups: bulks
                .iter()
                .map(|w| Group {
                    label: short(w),
                    bars: bars(s, w, Figure::BitsPerSec, 1e-9),
                })
                .collect(),
            reference: None,
            log: false,
        });
    }
    if let Some(w) = &setup {
        out.push(Panel {
            title: "Stream setups per second".into(),
            groups: vec![Group {
                label: w.label(),
                bars: bars(s, w, Figure::OpsPerSec, 1.0),
            }],
            reference: None,
            log: false,
        });
    }
    out.push(Panel {
        title: "Tunnel peak RSS under load, MiB".into(),
        groups: ws
            .iter()
            .map(|w| Group {
                label: short(w),
                bars: bars(s, w, Figure::TunnelPeakRssBytes, 1.0 / (1024.0 * 1024.0)),
            })
            .collect(),
        reference: None,
        log: false,
    });
    // p99 of each churned cell beside the same cell without churn, in ms.
    let churn_bars = |under: bool| -> Vec<Bar> {
        s.backends
            .iter()
            .enumerate()
            .filter_map(|(i, b)| {
                let ch = b.churn.as_ref()?;
                let cell = if under {
                    &ch.result
                } else {
                    b.cell(|w| *w == ch.result.workload)?
                };
                Some(Bar {
                    series: i,
                    value: cell.figure(Figure::P99Us)?.scaled(1e-3),
                })
            })
            .collect()
    };
    out.push(Panel {
        title: "Request p99 calm vs under churn, ms".into(),
        groups: vec![
            Group {
                label: "without churn".into(),
                bars: churn_bars(false),
            },
            Group {
                label: "under churn".into(),
                bars: churn_bars(true),
            },
        ],
        reference: None,
        log: false,
    });
    let idle = |f: fn(&super::Idle) -> Spread, scale: f64| -> Vec<Bar> {
        s.backends
            .iter()
            .enumerate()
            .filter_map(|(i, b)| {
                Some(Bar {
                    series: i,
                    value: f(b.idle.as_ref()?).scaled(scale),
                })
            })
            .collect()
    };
    out.push(Panel {
        title: "At rest: tunnel CPU-seconds per minute".into(),
        groups: vec![Group {
            label: "idle".into(),
            bars: idle(|i| i.tunnel_cpu_s_per_min, 1.0),
        }],
        reference: None,
        log: false,
    });
    out.push(Panel {
        title: "At rest: tunnel RSS, MiB".into(),
        groups: vec![Group {
            label: "idle".into(),
            bars: idle(|i| i.tunnel_rss_bytes, 1.0 / (1024.0 * 1024.0)),
        }],
        reference: None,
        log: false,
    });
    out.retain(|p| !p.is_empty());
    (normalised.filter(|p| !p.is_empty()), out)
}

/// Canvas width and the size of the half-width panels.
const WIDTH: f64 = 920.0;
const PANEL_H: f64 = 250.0;
const WIDE_H: f64 = 290.0;
const HEADER_H: f64 = 80.0;

pub(super) fn svg(s: &Scorecard) -> String {
    let (wide, half) = panels(s);
    let rows = half.len().div_ceil(2);
    let wide_h = if wide.is_some() { WIDE_H } else { 0.0 };
    let height = HEADER_H + wide_h + PANEL_H * rows as f64 + 10.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH:.0}" height="{height:.0}" viewBox="0 0 {WIDTH:.0} {height:.0}" font-family="sans-serif">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="10" y="22" font-size="16" font-weight="bold">fipstun scorecard — {} CPUs, {}</text>"#,
        s.machine.cpus,
        esc(&s.machine.started)
    );
    let _ = writeln!(
        out,
        r#"<text x="10" y="42" font-size="11">bars: median of {} interleaved rep{}; whiskers: min–max; every figure with its range is in scorecard.json</text>"#,
        s.reps,
        if s.reps == 1 { "" } else { "s" }
    );
    let mut x = 10.0;
    for (i, b) in s.backends.iter().enumerate() {
        let _ = writeln!(
            out,
            r#"<rect x="{x:.0}" y="54" width="12" height="12" fill="{}"/><text x="{:.0}" y="65" font-size="12">{}</text>"#,
            COLORS[i % COLORS.len()],
            x + 17.0,
            esc(&b.name)
        );
        x += 17.0 + text_width(&b.name, 12.0) + 20.0;
    }
    if let Some(p) = &wide {
        panel_svg(&mut out, p, 0.0, HEADER_H, WIDTH, WIDE_H);
    }
    let pw = WIDTH / 2.0;
    for (i, p) in half.iter().enumerate() {
        let x = pw * (i % 2) as f64;
        let y = HEADER_H + wide_h + PANEL_H * (i / 2) as f64;
        panel_svg(&mut out, p, x, y, pw, PANEL_H);
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::super::*;
    use super::{CHAR_WIDTH_EM, fanout_table};

    pub(crate) fn measurement(
        w: Workload,
        ops: u64,
        bytes: u64,
        p99_us: f64,
        tunnel_cpu: Option<f64>,
    ) -> Measurement {
        let mut processes = vec![ProcessUsage {
            name: "load+sinks".into(),
            role: Role::App,
            cpu_user_s: 1.0,
            cpu_sys_s: 1.0,
            peak_rss_bytes: 1 << 20,
            rss_file_bytes: 0,
        }];
        if let Some(cpu) = tunnel_cpu {
            processes.push(ProcessUsage {
                name: "proxy".into(),
                role: Role::Tunnel,
                cpu_user_s: cpu,
                cpu_sys_s: 0.0,
                peak_rss_bytes: 8 << 20,
                rss_file_bytes: 6 << 20,
            });
        }
        let bulk = matches!(w, Workload::Bulk { .. });
        Measurement {
            workload: w,
            wall_s: 2.0,
            ops,
            bytes,
            errors: 0,
            latency: (!bulk).then_some(Latency {
                p50_us: p99_us / 3.0,
                p90_us: p99_us / 2.0,
                p99_us,
                p999_us: p99_us * 3.0,
                max_us: p99_us * 4.0,
                mean_us: p99_us / 2.5,
            }),
            processes,
        }
    }

    /// A backend with three reps: `ops` varied by `jitter` (fraction) between reps.
    pub(crate) fn backend(name: &str, ops: u64, jitter: f64, tunnel: bool) -> BackendResult {
        let w = standard_workloads();
        let reps = [1.0 - jitter, 1.0, 1.0 + jitter];
        let cell = |f: &dyn Fn(f64) -> Measurement| {
            WorkloadResult::from_runs(reps.iter().map(|&k| f(k)).collect()).unwrap()
        };
        let cpu = tunnel.then_some(2.0);
        let k_ops = |k: f64| (ops as f64 * k) as u64;
        BackendResult {
            name: name.into(),
            protocol: "p".into(),
            cipher: "c".into(),
            fips: name == "hbone",
            path: "x".into(),
            results: vec![
                cell(&|k| {
                    measurement(
                        w[0],
                        k_ops(k),
                        k_ops(k) * 1024,
                        2_000_000.0 / ops as f64,
                        cpu,
                    )
                }),
                cell(&|k| measurement(w[1], 0, (k_ops(k) as f64 * 400_000.0) as u64, 0.0, cpu)),
                cell(&|k| measurement(w[2], 0, (k_ops(k) as f64 * 800_000.0) as u64, 0.0, cpu)),
                cell(&|k| measurement(w[3], k_ops(k) / 10, 0, 900.0, cpu)),
            ],
            streams: None,
            churn: None,
            idle: tunnel.then(|| Idle {
                window_s: 15.0,
                slices: 3,
                tunnel_cpu_s_per_min: Spread::of(&[0.1, 0.2, 0.3]).unwrap(),
                tunnel_rss_bytes: Spread::single(20.0 * 1048576.0),
                processes: vec![],
            }),
        }
    }

    pub(crate) fn card(backends: Vec<BackendResult>) -> Scorecard {
        Scorecard {
            schema_version: SCHEMA_VERSION,
            machine: machine("2026-12-05T06:00:00Z".into(), "0".into(), "m".into()),
            reps: 3,
            warmup_s: 0.5,
            measure_s: 2.0,
            backends,
            fanout: None,
        }
    }

    fn four() -> Scorecard {
        card(vec![
            backend("plain", 348_600, 0.02, false),
            backend("relay", 60_000, 0.03, true),
            backend("hbone", 40_000, 0.05, true),
            backend("wireguard", 39_000, 0.05, true),
        ])
    }

    #[test]
    fn table_and_json_carry_medians_and_ranges() {
        let s = card(vec![
            backend("plain", 40_000, 0.1, false),
            backend("hbone", 20_000, 0.1, true),
        ]);
        let t = s.to_table();
        // 40,000 ops in 2 s = 20.0k/s, reps at 0.9x and 1.1x: 18.0k..22.0k.
        assert!(t.contains("20.0k"), "{t}");
        assert!(t.contains("18.0–22.0k"), "{t}");
        // HBONE: 10.0k/s = 50% of the baseline, ranges apart; 9.0/22.0 = 41% .. 11.0/18.0 = 61%.
        assert!(t.contains("50%") && t.contains("41–61%"), "{t}");
        // Bulk 1 stream: 40,000 x 400,000 B in 2 s = 64.00 Gbit/s.
        assert!(t.contains("64.00"), "{t}");
        // Per core: 20,000 ops / (2 + 2) CPU-seconds = 5.00k.
        assert!(t.contains("5.00k"), "{t}");
        assert!(t.contains("3 interleaved reps"), "{t}");
        let json: serde_json::Value = serde_json::from_str(&s.to_json()).unwrap();
        assert_eq!(json["schema_version"], SCHEMA_VERSION);
        let rr = &json["backends"][1]["results"][0];
        assert_eq!(rr["runs"].as_array().unwrap().len(), 3);
        assert_eq!(rr["figures"]["ops_per_sec"]["median"], 10_000.0);
        assert_eq!(rr["figures"]["ops_per_sec"]["min"], 9_000.0);
        assert!(rr["figures"].get("bits_per_sec").is_none());
        assert!(json["headline"].as_array().is_some());
        // And it reads back.
        let back = Scorecard::from_json(&s.to_json()).unwrap();
        assert_eq!(
            back.backends[1].results[0].figures,
            s.backends[1].results[0].figures
        );
        assert!(
            Scorecard::from_json(r#"{"machine":{}}"#)
                .unwrap_err()
                .contains("schema_version 1")
        );
    }

    #[test]
    fn headline_gives_winners_only_outside_the_noise() {
        // HBONE 40k ±5% against WireGuard 39k ±5%: the ranges overlap, no winner. Both
        // against the relay (60k ±3%): clearly fewer queries.
        let s = four();
        let h = s.headline();
        assert_eq!(h.len(), 3);
        assert_eq!((h[0].a.as_str(), h[0].b.as_str()), ("hbone", "wireguard"));
        let q = &h[0].ratios[0];
        assert_eq!(q.what, "queries");
        assert!(q.within_noise, "{q:?}");
        assert!(q.text().starts_with("~"));
        let q = &h[1].ratios[0];
        assert!(!q.within_noise);
        // 40k / 60k = -33%.
        assert!(q.text().starts_with("-33% ["), "{}", q.text());
        let whats: Vec<&str> = h[1].ratios.iter().map(|r| r.what.as_str()).collect();
        assert_eq!(
            whats,
            [
                "queries",
                "queries per core",
                "p99",
                "bulk, 1 stream",
                "bulk, 8 streams",
                "tunnel RSS under load",
                "idle CPU",
                "idle RSS"
            ]
        );
        let t = s.to_table();
        assert!(t.starts_with("Headline"), "the headline comes first:\n{t}");
        assert!(t.contains("hbone vs wireguard") && t.contains("~ (within noise"));
    }

    /// A fan-out point over `k` nodes: `ops` requests in 2 s, the proxy growing 64 KiB per
    /// peer and each node holding 10 MiB.
    fn fanout_point(k: usize, ops: u64) -> FanoutPoint {
        let w = standard_workloads()[0];
        let mut m = measurement(w, ops, ops * 1024, 900.0, Some(1.0));
        m.processes[1].peak_rss_bytes = (20 << 20) + k as u64 * (64 << 10);
        for i in 0..k {
            m.processes.push(ProcessUsage {
                name: format!("node-{i}"),
                role: Role::Tunnel,
                cpu_user_s: 0.1,
                cpu_sys_s: 0.0,
                peak_rss_bytes: 10 << 20,
                rss_file_bytes: 0,
            });
        }
        FanoutPoint {
            peers: k,
            setup_s: 0.002 * k as f64,
            proxy_rss_before_bytes: 20 << 20,
            proxy_rss_after_bytes: (20 << 20) + k as u64 * (64 << 10),
            result: WorkloadResult::from_runs(vec![m]).unwrap(),
        }
    }

    fn with_fanout(ks: &[usize]) -> Scorecard {
        let mut s = four();
        s.fanout = Some(Fanout {
            what: "hbone, one proxy -> K nodes".into(),
            points: ks.iter().map(|&k| fanout_point(k, 20_000)).collect(),
        });
        s
    }

    #[test]
    fn fanout_table_has_a_row_per_k_and_the_growth_per_peer() {
        let s = with_fanout(&[1, 4, 16, 64]);
        let t = s.to_table();
        assert!(t.contains("\nFan-out: hbone, one proxy -> K nodes"), "{t}");
        let block = &t[t.find("\nFan-out:").unwrap()..];
        let rows: Vec<usize> = block
            .lines()
            .skip(5)
            .map_while(|l| l.split_whitespace().next()?.parse().ok())
            .collect();
        assert_eq!(rows, [1, 4, 16, 64], "a row per K, in order:\n{block}");
        // 64 nodes at 10 MiB; the proxy grows 64 KiB per peer; 64 setups in 128 ms.
        let k64 = block
            .lines()
            .find(|l| l.trim_start().starts_with("64 "))
            .unwrap();
        for cell in ["10.0k", "640.0MiB", "64KiB", "128ms", "500"] {
            assert!(k64.contains(cell), "{cell} in {k64}");
        }
        assert!(
            block.contains("grows by 64KiB per added peer (K = 1 -> 64)"),
            "{block}"
        );
        assert!(
            t.contains("hbone fan-out over 16 nodes: 10.0k requests/s"),
            "the headline names every K:\n{t}"
        );
    }

    #[test]
    fn fanout_table_without_a_k_is_caught() {
        // The row check above must fail when a K is missing.
        let s = with_fanout(&[1, 4, 64]);
        let block = fanout_table(s.fanout.as_ref().unwrap());
        let rows: Vec<usize> = block
            .lines()
            .skip(5)
            .map_while(|l| l.split_whitespace().next()?.parse().ok())
            .collect();
        assert_eq!(rows, [1, 4, 64], "{block}");
        // One K: no growth line (nothing to compare), the row is still there.
        let one = with_fanout(&[16]);
        let block = fanout_table(one.fanout.as_ref().unwrap());
        assert!(
            block.contains("\n  16 ") && !block.contains("grows by"),
            "{block}"
        );
    }

    #[test]
    fn fanout_goes_into_the_json_and_the_diff() {
        let s = with_fanout(&[1, 16]);
        let v: serde_json::Value = serde_json::from_str(&s.to_json()).unwrap();
        let points = v["fanout"]["points"].as_array().unwrap();
        assert_eq!(points.len(), 2);
        assert_eq!(points[1]["peers"], 16);
        assert!(points[1]["setup_s"].as_f64().unwrap() > 0.0);
        assert!(points[1]["proxy_rss_after_bytes"].as_u64().unwrap() > 0);
        assert_eq!(
            points[1]["result"]["runs"][0]["processes"]
                .as_array()
                .unwrap()
                .len(),
            2 + 16
        );
        let back = Scorecard::from_json(&s.to_json()).unwrap();
        let mut faster = back.clone();
        faster.fanout = Some(Fanout {
            what: "x".into(),
            points: vec![fanout_point(16, 30_000)],
        });
        let d = crate::diff::diff(&back, &faster);
        let ops = d
            .iter()
            .find(|c| c.workload == "fanout-K16" && c.figure == "ops_per_sec")
            .expect("fan-out K=16 in the diff");
        assert_eq!(ops.verdict(), "better");
        assert!(
            !d.iter().any(|c| c.workload == "fanout-K1"),
            "K=1 only in one run"
        );
        // A file without the section (before fan-out) still reads.
        let mut old: serde_json::Value = serde_json::from_str(&four().to_json()).unwrap();
        old.as_object_mut().unwrap().remove("fanout");
        assert!(
            Scorecard::from_json(&old.to_string())
                .unwrap()
                .fanout
                .is_none()
        );
    }

    #[test]
    fn churn_is_held_against_the_same_load_without_it() {
        let mut s = four();
        let hb = &mut s.backends[2];
        let calm = hb.results[0].clone();
        // The same rate, twice the latency, and two failed requests in one rep.
        let runs = calm
            .runs
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let mut m = m.clone();
                let l = m.latency.as_mut().unwrap();
                l.p99_us *= 2.0;
                m.errors = if i == 1 { 2 } else { 0 };
                m
            })
            .collect();
        hb.churn = Some(Churn {
            what: "node SVID re-issued every 1 s".into(),
            changes: vec![2, 3, 2],
            change_failures: 0,
            result: WorkloadResult::from_runs(runs).unwrap(),
        });
        let r = hb.churn.as_ref().unwrap().against(&calm);
        assert_eq!(r.len(), 2);
        assert!(r[0].within_noise, "same rate: {:?}", r[0]);
        assert!(r[1].text().starts_with("+100% ["), "{}", r[1].text());
        let t = s.to_table();
        assert!(
            t.contains("hbone under churn (node SVID re-issued every 1 s) vs without: 2 errors"),
            "{t}"
        );
        assert!(
            t.contains("Under churn: hbone rr-1KiB-c64 while node SVID"),
            "{t}"
        );
        let svg = s.to_svg();
        assert!(svg.contains("Request p99 calm vs under churn"));
        let problems = label_problems(&svg);
        assert!(problems.is_empty(), "{problems:?}");
        let back = Scorecard::from_json(&s.to_json()).unwrap();
        let d = crate::diff::diff(&back, &s);
        assert!(
            d.iter()
                .any(|c| c.workload == "churn-rr-1KiB-c64" && c.figure == "p99_us")
        );
    }

    #[test]
    fn ticks_are_round_numbers() {
        assert_eq!(super::nice_step(0.7), 1.0);
        assert_eq!(super::nice_step(43.0), 50.0);
        assert_eq!(super::nice_step(2.2e4), 2.5e4);
        assert_eq!(super::ticks(174_300.0), [0.0, 50e3, 100e3, 150e3, 200e3]);
        assert_eq!(super::ticks(4946.0), [0.0, 2e3, 4e3, 6e3]);
        assert_eq!(super::tick_label(150e3, 50e3, 200e3), "150k");
        assert_eq!(super::tick_label(2.5, 2.5, 10.0), "2.5");
        assert_eq!(super::tick_label(1.5e9, 0.5e9, 2e9), "1.5G");
        assert_eq!(super::num(32.88e9), "32.9G");
        assert_eq!(super::num(1688.0), "1.69k");
        // Log: the 1-2-5 ladder around the values and the base, room under the lowest.
        let a = super::Axis::log(0.06, 8.9, 1.0);
        let t: Vec<&str> = a.ticks.iter().map(|(_, l)| l.as_str()).collect();
        assert_eq!(
            t,
            ["0.02", "0.05", "0.1", "0.2", "0.5", "1", "2", "5", "10"]
        );
        // Seven decades: powers of ten only.
        let a = super::Axis::log(1e-5, 9.0, 1.0);
        let t: Vec<&str> = a.ticks.iter().map(|(_, l)| l.as_str()).collect();
        assert_eq!(
            t,
            [
                "0.000001", "0.00001", "0.0001", "0.001", "0.01", "0.1", "1", "10"
            ]
        );
    }

    /// A text element's estimated box: left, top, right, bottom.
    #[derive(Debug)]
    struct TextBox {
        text: String,
        x0: f64,
        y0: f64,
        x1: f64,
        y1: f64,
    }

    fn attr(tag: &str, name: &str) -> Option<String> {
        let key = format!(" {name}=\"");
        let i = tag.find(&key)? + key.len();
        Some(tag[i..i + tag[i..].find('"')?].to_string())
    }

    /// Every `<text>` of an SVG with the box its glyphs can cover (width estimated from the
    /// font size, [`CHAR_WIDTH_EM`] per character; height one em, a fifth of it below the
    /// baseline), and the canvas size.
    fn text_boxes(svg: &str) -> ((f64, f64), Vec<TextBox>) {
        let root = &svg[svg.find("<svg").unwrap()..];
        let root = &root[..root.find('>').unwrap()];
        let size = |n| attr(root, n).unwrap().parse::<f64>().unwrap();
        let canvas = (size("width"), size("height"));
        let mut boxes = Vec::new();
        let mut rest = svg;
        while let Some(i) = rest.find("<text") {
            rest = &rest[i..];
            let open_end = rest.find('>').unwrap();
            let tag = &rest[..open_end];
            let close = rest.find("</text>").unwrap();
            let text = rest[open_end + 1..close]
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&amp;", "&");
            rest = &rest[close..];
            let num = |n| attr(tag, n).and_then(|v| v.parse::<f64>().ok());
            let (x, y) = (num("x").unwrap(), num("y").unwrap());
            let fs = num("font-size").unwrap_or(16.0);
            let w = text.chars().count() as f64 * fs * CHAR_WIDTH_EM;
            let x0 = match attr(tag, "text-anchor").as_deref() {
                Some("middle") => x - w / 2.0,
                Some("end") => x - w,
                _ => x,
            };
            boxes.push(TextBox {
                text,
                x0,
                y0: y - fs * 0.8,
                x1: x0 + w,
                y1: y + fs * 0.2,
            });
        }
        (canvas, boxes)
    }

    /// What is wrong with the chart's labels: any that leaves the canvas or overlaps another.
    fn label_problems(svg: &str) -> Vec<String> {
        let ((w, h), boxes) = text_boxes(svg);
        let mut out = Vec::new();
        for b in &boxes {
            if b.x0 < 0.0 || b.y0 < 0.0 || b.x1 > w || b.y1 > h {
                out.push(format!("{:?} leaves the {w}x{h} canvas: {b:?}", b.text));
            }
        }
        for (i, a) in boxes.iter().enumerate() {
            for b in &boxes[i + 1..] {
                if a.x0 < b.x1 && b.x0 < a.x1 && a.y0 < b.y1 && b.y0 < a.y1 {
                    out.push(format!("{:?} overlaps {:?}: {a:?} {b:?}", a.text, b.text));
                }
            }
        }
        out
    }

    #[test]
    fn chart_labels_stay_on_the_canvas_and_apart() {
        // Figures shaped like a real run: 10x between plain and the tunnels, tens of Gbit/s,
        // close latencies; and a lopsided one; and a two-backend one.
        let lopsided = card(vec![
            backend("plain", 9_999_999, 0.3, false),
            backend("relay", 100, 0.3, true),
            backend("hbone", 1_688, 0.01, true),
            backend("wireguard", 1_938, 0.01, true),
        ]);
        let two = card(vec![
            backend("plain", 40_000, 0.1, false),
            backend("hbone", 20_000, 0.1, true),
        ]);
        for (i, s) in [four(), lopsided, two].into_iter().enumerate() {
            let svg = s.to_svg();
            if let Ok(dir) = std::env::var("SCORECARD_CHART_DUMP") {
                std::fs::write(format!("{dir}/chart-{i}.svg"), &svg).unwrap();
            }
            let problems = label_problems(&svg);
            assert!(problems.is_empty(), "{}\n{svg}", problems.join("\n"));
            // The figures are there: titles, a normalised panel, tick labels, values.
            let (_, boxes) = text_boxes(&svg);
            let texts: Vec<&str> = boxes.iter().map(|b| b.text.as_str()).collect();
            assert!(
                texts
                    .iter()
                    .any(|t| t.starts_with("Each path relative to plain"))
            );
            assert!(texts.contains(&"requests/CPU-s") && texts.contains(&"p99"));
            assert!(texts.len() > 60, "{}", texts.len());
            assert!(svg.matches("<path d=\"M").count() > 20, "whiskers");
        }
    }

    /// The check is not vacuous: the chart this crate drew before (a real scorecard's numbers,
    /// kept as a fixture) has labels cut at the left edge and bar labels on top of each other.
    #[test]
    fn the_old_chart_fails_the_label_check() {
        let old = include_str!("../tests/fixtures/old-chart.svg");
        let problems = label_problems(old);
        if std::env::var("SCORECARD_CHART_DUMP").is_ok() {
            eprintln!("{}", problems.join("\n"));
        }
        assert!(
            problems.iter().any(|p| p.contains("leaves the")),
            "{problems:#?}"
        );
        assert!(
            problems.iter().any(|p| p.contains("overlaps")),
            "{problems:#?}"
        );
    }
}
