//! Turns criterion's output into BENCHMARKS.md: the machine, the date, a table per group, and
//! the ratios fipstun's targets are stated in.
//!
//! `cargo run -p fipstun-benches --bin bench-report -- [CRITERION_DIR] [OUT]`
//! (defaults: `$CARGO_TARGET_DIR/criterion` or `target/criterion`, and `BENCHMARKS.md`).
#![allow(clippy::print_stdout)] // a report tool prints where it wrote

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

/// One measured benchmark.
struct Measured {
    mean_ns: f64,
    throughput: Option<(String, f64)>,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = args.first().map(PathBuf::from).unwrap_or_else(|| {
        std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("target"))
            .join("criterion")
    });
    let out = args
        .get(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("BENCHMARKS.md"));
    let mut found = BTreeMap::new();
    collect(&dir, &mut found);
    let wg_go = dir
        .parent()
        .and_then(|target| read_json(&target.join("wg-go-compare.json")));
    if found.is_empty() {
        eprintln!("bench-report: no criterion results under {}", dir.display());
        std::process::exit(1);
    }
    let latency = dir
        .parent()
        .and_then(|target| read_json(&target.join("latency.json")));
    let mut text = render(&found, wg_go.as_ref());
    if let Some(l) = latency {
        text.push_str(&render_latency(&l));
    }
    text.push_str(&render_profiles(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles"),
    ));
    if let Err(e) = std::fs::write(&out, text) {
        eprintln!("bench-report: cannot write {}: {e}", out.display());
        std::process::exit(1);
    }
    println!("wrote {} ({} benchmarks)", out.display(), found.len());
}

fn collect(dir: &Path, found: &mut BTreeMap<String, Measured>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if !path.is_dir() {
            continue;
        }
        if path.file_name().is_some_and(|n| n == "new") {
            if let Some((id, m)) = read_one(&path) {
                found.insert(id, m);
            }
        } else if path
            .file_name()
            .is_none_or(|n| n != "base" && n != "report")
        {
            collect(&path, found);
        }
    }
}

fn read_json(path: &Path) -> Option<Value> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

fn read_one(new: &Path) -> Option<(String, Measured)> {
    let bench = read_json(&new.join("benchmark.json"))?;
    let est = read_json(&new.join("estimates.json"))?;
    let id = bench["full_id"].as_str()?.to_string();
    let mean_ns = est["mean"]["point_estimate"].as_f64()?;
    let throughput = bench["throughput"].as_object().and_then(|t| {
        let (kind, n) = t.iter().next()?;
        Some((kind.clone(), n.as_f64()?))
    });
    Some((
        id,
        Measured {
            mean_ns,
            throughput,
        },
    ))
}

fn human_time(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{ns:.1} ns")
    }
}

fn human_rate(m: &Measured) -> String {
    match &m.throughput {
        Some((kind, n)) if kind == "Bytes" => {
            let bps = n / (m.mean_ns / 1e9);
            format!(
                "{:.1} MiB/s ({:.2} Gbit/s)",
                bps / 1048576.0,
                bps * 8.0 / 1e9
            )
        }
        Some((_, n)) => format!("{:.0} /s", n / (m.mean_ns / 1e9)),
        None => format!("{:.0} /s", 1e9 / m.mean_ns),
    }
}

fn machine() -> (String, usize, String) {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown kernel".into());
    (cpu, cores, kernel)
}

/// Civil date (UTC) from the Unix clock (Howard Hinnant's days-to-civil).
fn today() -> String {
    let days = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86400) as i64;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

struct Ratio {
    name: &'static str,
    target: &'static str,
    value: Option<f64>,
    how: &'static str,
    met: Option<bool>,
}

fn ratios(f: &BTreeMap<String, Measured>, wg_go: Option<&Value>) -> Vec<Ratio> {
    let ns = |id: &str| f.get(id).map(|m| m.mean_ns);
    let handshake = (|| {
        let bound = 2.0 * ns("ecdsa_p256/sign")?
            + 4.0 * ns("ecdsa_p256/verify")?
            + ns("kx_full_exchange/secp256r1")?;
        Some(bound / ns("handshake/tls13_mtls_p256")?)
    })();
    let record = (|| {
        Some(ns("record_16k/raw_aes256gcm_seal_open")? / ns("record_16k/tls13_aes256gcm_rustls")?)
    })();
    let record_unbuffered = (|| {
        Some(
            ns("record_16k/raw_aes256gcm_seal_open")?
                / ns("record_16k/tls13_aes256gcm_rustls_unbuffered")?,
        )
    })();
    let issue = ns("svid_issue/sign_csr/p256").map(|t| 1e9 / t);
    let vs_plain = |backend: &str| {
        Some(
            ns("tunnel_bulk/plain_tcp/1_streams")?
                / ns(&format!("tunnel_bulk/{backend}/1_streams"))?,
        )
    };
    let wg_data = (|| {
        Some(
            ns("data_1420/raw_chacha20poly1305_seal_open")?
                / ns("data_1420/wireguard_encap_decap")?,
        )
    })();
    let tls_vs_wg = (|| Some(ns("wireguard/handshake")? / ns("handshake/tls13_mtls_p256")?))();
    let hbone_bulk = vs_plain("hbone_fips");
    let relay_bulk = vs_plain("plain_relay");
    let hbone_vs_relay = (|| {
        Some(ns("tunnel_bulk/plain_relay/1_streams")? / ns("tunnel_bulk/hbone_fips/1_streams")?)
    })();
    let ours_vs_go = wg_go.and_then(|v| {
        Some(v["ours"]["gbit_per_s"].as_f64()? / v["wireguard_go"]["gbit_per_s"].as_f64()?)
    });
    let wg_bulk = vs_plain("wireguard");
    vec![
        Ratio {
            name: "TLS 1.3 mTLS handshake rate / primitive bound",
            target: ">= 70%",
            met: handshake.map(|r| r >= 0.70),
            value: handshake.map(|r| r * 100.0),
            how: "bound = 2 ECDSA P-256 signs + 4 verifies + 1 full P-256 ECDH exchange, all measured in this run",
        },
        Ratio {
            name: "TLS record path (16 KiB, rustls pair) / raw AES-256-GCM seal+open",
            target: ">= 80%",
            met: record.map(|r| r >= 0.80),
            value: record.map(|r| r * 100.0),
            how: "throughput ratio of record_16k/tls13_aes256gcm_rustls to record_16k/raw_aes256gcm_seal_open; rustls' buffered API (what tokio-rustls drives): 5 copies of each record, raw 1 (benches/profiles/record-path.txt)",
        },
        Ratio {
            name: "TLS record path (16 KiB, rustls unbuffered API) / raw AES-256-GCM seal+open",
            target: ">= 80%",
            met: record_unbuffered.map(|r| r >= 0.80),
            value: record_unbuffered.map(|r| r * 100.0),
            how: "throughput ratio of record_16k/tls13_aes256gcm_rustls_unbuffered to record_16k/raw_aes256gcm_seal_open: encrypt into the wire buffer, decrypt in place; rustls 0.23.43 still makes 3 copies (benches/profiles/record-path.txt)",
        },
        Ratio {
            name: "WireGuard data packets (1420 B, encap+decap) / raw ChaCha20-Poly1305 seal+open",
            target: "(no target) %",
            met: None,
            value: wg_data.map(|r| r * 100.0),
            how: "throughput ratio of data_1420/wireguard_encap_decap to data_1420/raw_chacha20poly1305_seal_open",
        },
        Ratio {
            name: "TLS 1.3 mTLS handshake rate / WireGuard handshake rate",
            target: "(no target) %",
            met: None,
            value: tls_vs_wg.map(|r| r * 100.0),
            how: "handshake/tls13_mtls_p256 against wireguard/handshake (both sides, in memory)",
        },
        Ratio {
            name: "HBONE (FIPS mTLS) one-stream bulk / plain loopback TCP",
            target: ">= 50%",
            met: hbone_bulk.map(|r| r >= 0.50),
            value: hbone_bulk.map(|r| r * 100.0),
            how: "throughput ratio of tunnel_bulk/hbone_fips/1_streams to tunnel_bulk/plain_tcp/1_streams (64 MiB)",
        },
        Ratio {
            name: "plain TCP through a user-space relay (two hops, no crypto) / plain loopback TCP",
            target: "(no target) %",
            met: None,
            value: relay_bulk.map(|r| r * 100.0),
            how: "throughput ratio of tunnel_bulk/plain_relay/1_streams to tunnel_bulk/plain_tcp/1_streams: the ceiling for any tunnel whose server terminates TCP, HBONE included",
        },
        Ratio {
            name: "HBONE (FIPS mTLS) one-stream bulk / plain TCP relay",
            target: "(no target) %",
            met: None,
            value: hbone_vs_relay.map(|r| r * 100.0),
            how: "throughput ratio of tunnel_bulk/hbone_fips/1_streams to tunnel_bulk/plain_relay/1_streams: what mTLS and HTTP/2 cost on top of the relay hop",
        },
        Ratio {
            name: "our WireGuard backend / wireguard-go, one bulk stream (x)",
            target: ">= 2.5x",
            met: ours_vs_go.map(|r| r >= 2.5),
            value: ours_vs_go,
            how: "benches/scripts/wg-go-compare.sh: ours on loopback vs wireguard-go <-> wireguard-go across two namespaces, same run",
        },
        Ratio {
            name: "WireGuard backend one-stream bulk / plain loopback TCP",
            target: "(no target) %",
            met: None,
            value: wg_bulk.map(|r| r * 100.0),
            how: "throughput ratio of tunnel_bulk/wireguard/1_streams to tunnel_bulk/plain_tcp/1_streams",
        },
        Ratio {
            name: "SVIDs issued per second per core (CSR check + sign + encode, P-256)",
            target: ">= 5000 /s",
            met: issue.map(|r| r >= 5000.0),
            value: issue,
            how: "svid_issue/sign_csr/p256, one thread",
        },
    ]
}

fn render(f: &BTreeMap<String, Measured>, wg_go: Option<&Value>) -> String {
    let (cpu, cores, kernel) = machine();
    let mut s = String::new();
    let _ = writeln!(s, "# fipstun benchmarks\n");
    let _ = writeln!(
        s,
        "Generated by `cargo run -p fipstun-benches --bin bench-report` from criterion's output \
         of `./x bench`. Same machine, same run; quote ratios, not absolute figures.\n"
    );
    let _ = writeln!(s, "- machine: {cpu}, {cores} cores, Linux {kernel}");
    let _ = writeln!(s, "- date: {}\n", today());
    let _ = writeln!(s, "## Targets\n");
    let _ = writeln!(s, "| ratio | measured | target | met | how |");
    let _ = writeln!(s, "|---|---|---|---|---|");
    for r in ratios(f, wg_go) {
        let value = match r.value {
            Some(v) if r.target.ends_with('%') => format!("{v:.1}%"),
            Some(v) if r.target.ends_with('x') => format!("{v:.2}x"),
            Some(v) => format!("{v:.0} /s"),
            None => "not measured in this run".into(),
        };
        let met = match r.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "—",
        };
        let _ = writeln!(
            s,
            "| {} | {value} | {} | {met} | {} |",
            r.name, r.target, r.how
        );
    }
    let mut groups: BTreeMap<&str, Vec<(&str, &Measured)>> = BTreeMap::new();
    for (id, m) in f {
        let (group, name) = id.split_once('/').unwrap_or((id.as_str(), ""));
        groups.entry(group).or_default().push((name, m));
    }
    if let Some(v) = wg_go {
        let _ = writeln!(s, "\n## wireguard-go comparison (one bulk stream)\n");
        let _ = writeln!(s, "| side | bytes | seconds | Gbit/s |");
        let _ = writeln!(s, "|---|---|---|---|");
        for side in ["wireguard_go", "ours"] {
            let x = &v[side];
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} |",
                x["backend"].as_str().unwrap_or(side),
                x["bytes"],
                x["seconds"],
                x["gbit_per_s"]
            );
        }
    }
    for (group, rows) in groups {
        let _ = writeln!(s, "\n## {group}\n");
        let _ = writeln!(s, "| benchmark | mean time | rate |");
        let _ = writeln!(s, "|---|---|---|");
        for (name, m) in rows {
            let _ = writeln!(
                s,
                "| {name} | {} | {} |",
                human_time(m.mean_ns),
                human_rate(m)
            );
        }
    }
    s
}

/// The committed profiles (benches/profiles/*.txt, written by hand from perf and strace runs:
/// see each file): one line each, the file's first line being its summary.
fn render_profiles(dir: &Path) -> String {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "txt"));
    files.sort();
    if files.is_empty() {
        return String::new();
    }
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\n## Profiles (data path: copies, syscalls, where the CPU goes)\n"
    );
    let _ = writeln!(
        s,
        "Not generated by criterion: perf and strace runs written up by hand, each file with \
         its commands and before/after figures.\n"
    );
    for p in files {
        let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
        let first = std::fs::read_to_string(&p)
            .ok()
            .and_then(|t| t.lines().next().map(str::to_owned));
        if let (Some(name), Some(first)) = (name, first) {
            let _ = writeln!(
                s,
                "- [benches/profiles/{name}](benches/profiles/{name}): {first}"
            );
        }
    }
    s
}

/// Percentile table from examples/latency.rs's JSON.
fn render_latency(l: &Value) -> String {
    let mut s = String::from(
        "\n## latency percentiles (examples/latency.rs, per operation)\n\n\
         | backend | workload | n | p50 | p90 | p99 | p99.9 |\n|---|---|---|---|---|---|---|\n",
    );
    for backend in ["plain_tcp", "plain_relay", "hbone_fips", "wireguard"] {
        for workload in ["stream_setup", "rr_1k"] {
            let x = &l[backend][workload];
            if x.is_null() {
                continue;
            }
            let us = |k: &str| x[k].as_f64().map_or("—".into(), |v| format!("{v:.1} µs"));
            let _ = writeln!(
                s,
                "| {backend} | {workload} | {} | {} | {} | {} | {} |",
                x["n"],
                us("p50_us"),
                us("p90_us"),
                us("p99_us"),
                us("p999_us")
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(mean_ns: f64) -> Measured {
        Measured {
            mean_ns,
            throughput: None,
        }
    }

    #[test]
    fn ratios_follow_the_definitions() {
        let mut f = BTreeMap::new();
        f.insert("ecdsa_p256/sign".into(), m(20_000.0));
        f.insert("ecdsa_p256/verify".into(), m(50_000.0));
        f.insert("kx_full_exchange/secp256r1".into(), m(60_000.0));
        f.insert("handshake/tls13_mtls_p256".into(), m(400_000.0));
        f.insert("record_16k/raw_aes256gcm_seal_open".into(), m(9_000.0));
        f.insert("record_16k/tls13_aes256gcm_rustls".into(), m(10_000.0));
        f.insert(
            "record_16k/tls13_aes256gcm_rustls_unbuffered".into(),
            m(12_000.0),
        );
        let r = ratios(&f, None);
        // bound = 40k + 200k + 60k = 300k ns; 300/400 = 75%.
        assert_eq!(r[0].value.map(|v| v.round()), Some(75.0));
        assert_eq!(r[0].met, Some(true));
        assert_eq!(r[1].value.map(|v| v.round()), Some(90.0));
        assert_eq!(r[2].value.map(|v| v.round()), Some(75.0));
        assert_eq!(r[2].met, Some(false));
        assert_eq!(r[3].value, None);
        assert!(
            render(&f, None).contains("| TLS 1.3 mTLS handshake rate / primitive bound | 75.0% |")
        );
    }

    #[test]
    fn bulk_ratios_put_hbone_beside_plain_and_the_relay() {
        let mut f = BTreeMap::new();
        f.insert("tunnel_bulk/plain_tcp/1_streams".into(), m(10_000.0));
        f.insert("tunnel_bulk/plain_relay/1_streams".into(), m(25_000.0));
        f.insert("tunnel_bulk/hbone_fips/1_streams".into(), m(40_000.0));
        let r = ratios(&f, None);
        let value = |prefix: &str| {
            r.iter()
                .find(|x| x.name.starts_with(prefix))
                .and_then(|x| x.value)
                .map(|v| (v * 10.0).round() / 10.0)
        };
        assert_eq!(
            value("HBONE (FIPS mTLS) one-stream bulk / plain loopback"),
            Some(25.0)
        );
        assert_eq!(value("plain TCP through a user-space relay"), Some(40.0));
        assert_eq!(
            value("HBONE (FIPS mTLS) one-stream bulk / plain TCP relay"),
            Some(62.5)
        );
    }

    #[test]
    fn latency_table_lists_each_backend_and_workload() {
        let l: Value = serde_json::from_str(
            r#"{"hbone_fips":{"stream_setup":{"n":10,"p50_us":300.0,"p90_us":350.0,"p99_us":400.5,"p999_us":410.0}}}"#,
        )
        .unwrap();
        let t = render_latency(&l);
        assert!(
            t.contains(
                "| hbone_fips | stream_setup | 10 | 300.0 µs | 350.0 µs | 400.5 µs | 410.0 µs |"
            ),
            "{t}"
        );
        assert!(!t.contains("wireguard"));
    }

    #[test]
    fn dates_are_civil() {
        let d = today();
        assert_eq!(d.len(), 10);
        assert!(d.starts_with("20"));
    }
}
