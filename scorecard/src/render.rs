//! Text table and SVG chart of a [`Scorecard`].

use std::fmt::Write;

use super::{BackendResult, Measurement, Role, Scorecard, Workload};

fn si(v: f64) -> String {
    if v >= 1e9 {
        format!("{:.2}G", v / 1e9)
    } else if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e4 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

fn us(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.1}ms", v / 1000.0)
    } else {
        format!("{v:.0}µs")
    }
}

fn has_tunnel(m: &Measurement) -> bool {
    m.processes.iter().any(|p| p.role == Role::Tunnel)
}

/// Tunnel CPU seconds, or a dash for the no-mesh baseline (nothing to charge).
fn tunnel_cpu(m: &Measurement) -> String {
    if has_tunnel(m) {
        format!("{:.2}", m.cpu_tunnel_s())
    } else {
        "—".into()
    }
}

/// Peak RSS of proxy + node, or a dash for the baseline.
fn tunnel_rss(m: &Measurement) -> String {
    if has_tunnel(m) {
        format!("{:.1} MiB", m.tunnel_peak_rss() as f64 / (1024.0 * 1024.0))
    } else {
        "—".into()
    }
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

/// The measurement for workload index `i` of every backend.
fn column(s: &Scorecard, i: usize) -> Vec<(&BackendResult, &Measurement)> {
    s.backends
        .iter()
        .filter_map(|b| b.results.get(i).map(|m| (b, m)))
        .collect()
}

fn workload_count(s: &Scorecard) -> usize {
    s.backends
        .iter()
        .map(|b| b.results.len())
        .max()
        .unwrap_or(0)
}

pub(super) fn table(s: &Scorecard) -> String {
    let mut out = String::new();
    let m = &s.machine;
    let _ = writeln!(
        out,
        "fipstun scorecard {} — {} CPUs ({}), Linux {}, {}",
        m.version, m.cpus, m.cpu_model, m.kernel, m.started
    );
    let _ = writeln!(
        out,
        "each workload: {:.1} s warm-up, {:.1} s measured; CPU = user+sys of every process \
         (load generator and sinks, proxy, node); per core = per CPU-second of all of them",
        s.warmup_s, s.measure_s
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
    for i in 0..workload_count(s) {
        let col = column(s, i);
        let Some((_, first)) = col.first() else {
            continue;
        };
        let base = col.iter().find(|(b, _)| b.name == "plain").map(|(_, m)| *m);
        let _ = writeln!(out, "\n{}", title(&first.workload));
        match first.workload {
            Workload::Bulk { .. } => {
                let _ = writeln!(
                    out,
                    "  {:<10} {:>9} {:>8} {:>8} {:>8} {:>7} {:>11} {:>11} {:>7}",
                    "backend",
                    "Gbit/s",
                    "vs base",
                    "CPU s",
                    "tunnel",
                    "cores",
                    "MB/core·s",
                    "tunnel RSS",
                    "errors"
                );
                for (b, m) in &col {
                    let rel = base
                        .map(|p| {
                            format!(
                                "{:.0}%",
                                100.0 * m.bytes_per_sec() / p.bytes_per_sec().max(1e-9)
                            )
                        })
                        .unwrap_or_default();
                    let _ = writeln!(
                        out,
                        "  {:<10} {:>9.2} {:>8} {:>8.2} {:>8} {:>7.2} {:>11.0} {:>12} {:>7}",
                        b.name,
                        m.bytes_per_sec() * 8.0 / 1e9,
                        rel,
                        m.cpu_total_s(),
                        tunnel_cpu(m),
                        m.cores(),
                        m.bytes_per_core() / 1e6,
                        tunnel_rss(m),
                        m.errors
                    );
                }
            }
            _ => {
                let _ = writeln!(
                    out,
                    "  {:<10} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>6} {:>9} {:>11} {:>7}",
                    "backend",
                    "per sec",
                    "vs base",
                    "p50",
                    "p90",
                    "p99",
                    "p99.9",
                    "CPU s",
                    "tunnel",
                    "cores",
                    "per core",
                    "tunnel RSS",
                    "errors"
                );
                for (b, m) in &col {
                    let l = m.latency.unwrap_or_default();
                    let rel = base
                        .map(|p| {
                            format!(
                                "{:.0}%",
                                100.0 * m.ops_per_sec() / p.ops_per_sec().max(1e-9)
                            )
                        })
                        .unwrap_or_default();
                    let _ = writeln!(
                        out,
                        "  {:<10} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8.2} {:>8} {:>6.2} {:>9} {:>11} {:>7}",
                        b.name,
                        si(m.ops_per_sec()),
                        rel,
                        us(l.p50_us),
                        us(l.p90_us),
                        us(l.p99_us),
                        us(l.p999_us),
                        m.cpu_total_s(),
                        tunnel_cpu(m),
                        m.cores(),
                        si(m.ops_per_core()),
                        tunnel_rss(m),
                        m.errors
                    );
                }
            }
        }
    }
    out
}

const COLORS: [&str; 4] = ["#7f7f7f", "#1f77b4", "#d62728", "#2ca02c"];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// One bar panel: groups on the x axis, one bar per backend in each group.
struct Panel {
    title: String,
    unit: &'static str,
    groups: Vec<(String, Vec<f64>)>,
}

fn panel_svg(out: &mut String, p: &Panel, x0: f64, y0: f64, w: f64, h: f64, names: &[String]) {
    let top = y0 + 34.0;
    let bottom = y0 + h - 40.0;
    let left = x0 + 56.0;
    let right = x0 + w - 10.0;
    let max = p
        .groups
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .fold(0.0f64, f64::max)
        .max(1e-9);
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{:.1}" font-size="14" font-weight="bold">{}</text>"#,
        x0 + 8.0,
        y0 + 18.0,
        esc(&p.title)
    );
    for k in 0..=4 {
        let v = max * k as f64 / 4.0;
        let y = bottom - (bottom - top) * k as f64 / 4.0;
        let _ = writeln!(
            out,
            r##"<line x1="{left:.1}" y1="{y:.1}" x2="{right:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" font-size="10" text-anchor="end">{} {}</text>"##,
            left - 4.0,
            y + 3.0,
            esc(&si(v)),
            p.unit
        );
    }
    let gw = (right - left) / p.groups.len().max(1) as f64;
    for (gi, (label, values)) in p.groups.iter().enumerate() {
        let gx = left + gw * gi as f64;
        let bw = (gw * 0.8) / values.len().max(1) as f64;
        for (bi, v) in values.iter().enumerate() {
            let bh = (bottom - top) * v / max;
            let x = gx + gw * 0.1 + bw * bi as f64;
            let _ = writeln!(
                out,
                r#"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{bh:.1}" fill="{}"><title>{}: {}</title></rect>"#,
                bottom - bh,
                (bw - 2.0).max(1.0),
                COLORS[bi % COLORS.len()],
                esc(names.get(bi).map(String::as_str).unwrap_or("")),
                esc(&si(*v))
            );
            let _ = writeln!(
                out,
                r#"<text x="{:.1}" y="{:.1}" font-size="9" text-anchor="middle">{}</text>"#,
                x + (bw - 2.0).max(1.0) / 2.0,
                bottom - bh - 3.0,
                esc(&si(*v))
            );
        }
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="middle">{}</text>"#,
            gx + gw / 2.0,
            bottom + 14.0,
            esc(label)
        );
    }
}

pub(super) fn svg(s: &Scorecard) -> String {
    let names: Vec<String> = s.backends.iter().map(|b| b.name.clone()).collect();
    let mut panels = Vec::new();
    for i in 0..workload_count(s) {
        let col = column(s, i);
        let Some((_, first)) = col.first() else {
            continue;
        };
        let label = first.workload.label();
        match first.workload {
            Workload::Bulk { .. } => {
                panels.push(Panel {
                    title: format!("{label}: throughput"),
                    unit: "bit/s",
                    groups: vec![(
                        label.clone(),
                        col.iter().map(|(_, m)| m.bytes_per_sec() * 8.0).collect(),
                    )],
                });
            }
            _ => {
                panels.push(Panel {
                    title: format!("{label}: per second and per core"),
                    unit: "",
                    groups: vec![
                        (
                            "per second".into(),
                            col.iter().map(|(_, m)| m.ops_per_sec()).collect(),
                        ),
                        (
                            "per CPU-second".into(),
                            col.iter().map(|(_, m)| m.ops_per_core()).collect(),
                        ),
                    ],
                });
                panels.push(Panel {
                    title: format!("{label}: latency"),
                    unit: "µs",
                    groups: ["p50", "p90", "p99", "p99.9"]
                        .iter()
                        .enumerate()
                        .map(|(k, q)| {
                            (
                                q.to_string(),
                                col.iter()
                                    .map(|(_, m)| {
                                        let l = m.latency.unwrap_or_default();
                                        [l.p50_us, l.p90_us, l.p99_us, l.p999_us][k]
                                    })
                                    .collect(),
                            )
                        })
                        .collect(),
                });
            }
        }
    }
    let (pw, ph, cols) = (420.0, 260.0, 2usize);
    let rows = panels.len().div_ceil(cols);
    let width = pw * cols as f64;
    let height = 60.0 + ph * rows as f64;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" font-family="sans-serif">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="8" y="20" font-size="16" font-weight="bold">fipstun scorecard — {} CPUs, {}</text>"#,
        s.machine.cpus,
        esc(&s.machine.started)
    );
    for (i, n) in names.iter().enumerate() {
        let x = 8.0 + 150.0 * i as f64;
        let _ = writeln!(
            out,
            r#"<rect x="{x:.0}" y="32" width="12" height="12" fill="{}"/><text x="{:.0}" y="42" font-size="12">{}</text>"#,
            COLORS[i % COLORS.len()],
            x + 16.0,
            esc(n)
        );
    }
    for (i, p) in panels.iter().enumerate() {
        let x = pw * (i % cols) as f64;
        let y = 60.0 + ph * (i / cols) as f64;
        panel_svg(&mut out, p, x, y, pw, ph, &names);
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::super::*;

    fn fake(name: &str, ops: u64, tunnel_cpu: f64) -> BackendResult {
        let m = |w: Workload, ops: u64, bytes: u64| Measurement {
            workload: w,
            wall_s: 2.0,
            ops,
            bytes,
            errors: 0,
            latency: (ops > 0).then_some(Latency {
                p50_us: 100.0,
                p90_us: 150.0,
                p99_us: 300.0,
                p999_us: 900.0,
                max_us: 1000.0,
                mean_us: 110.0,
            }),
            processes: vec![
                ProcessUsage {
                    name: "load+sinks".into(),
                    role: Role::App,
                    cpu_user_s: 1.0,
                    cpu_sys_s: 1.0,
                    peak_rss_bytes: 1 << 20,
                },
                ProcessUsage {
                    name: "proxy".into(),
                    role: Role::Tunnel,
                    cpu_user_s: tunnel_cpu,
                    cpu_sys_s: 0.0,
                    peak_rss_bytes: 8 << 20,
                },
            ],
        };
        let w = standard_workloads();
        BackendResult {
            name: name.into(),
            protocol: "p".into(),
            cipher: "c".into(),
            fips: name == "hbone",
            path: "x".into(),
            results: vec![
                m(w[0], ops, ops * 1024),
                m(w[1], 0, 4 << 30),
                m(w[3], ops / 10, 0),
            ],
        }
    }

    #[test]
    fn table_and_chart_carry_the_measured_figures() {
        let s = Scorecard {
            machine: machine("now".into(), "0".into(), "m".into()),
            warmup_s: 0.5,
            measure_s: 2.0,
            backends: vec![fake("plain", 40_000, 0.0), fake("hbone", 20_000, 2.0)],
        };
        let t = s.to_table();
        // 40,000 ops in 2 s = 20.0k/s; 20,000 ops = 10.0k/s, 50% of the baseline.
        assert!(t.contains("20.0k"), "{t}");
        assert!(t.contains("10.0k"), "{t}");
        assert!(t.contains("50%"), "{t}");
        // Bulk: 4 GiB in 2 s = 17.18 Gbit/s.
        assert!(t.contains("17.18"), "{t}");
        // Per core: 20,000 ops / 4 CPU-seconds = 5000.
        assert!(t.contains(" 5000 "), "{t}");
        let svg = s.to_svg();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("hbone") && svg.contains("rr-1KiB-c64"));
        let json: serde_json::Value = serde_json::from_str(&s.to_json()).unwrap();
        assert_eq!(json["backends"][1]["results"][0]["ops"], 20_000);
    }
}
