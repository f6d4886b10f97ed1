//! Turns criterion's output into BENCHMARKS.md: the machine, the date, a table per group, and
//! the ratios fipstun's targets are stated in; with `wg-go-compare.json` beside the criterion
//! folder (`./x bench-wg`) the WireGuard like-for-like table, with `scorecard/scorecard.json`
//! beside it (`./x bench` runs the scorecard after criterion) the scorecard's data-path targets
//! (HBONE against the relay, tunnel memory, held streams: figures only a multi-process run can
//! give), and `benches/profiles/*.txt` verbatim. The crypto provider comparison
//! (`providers/...`, from two builds: `benches/providers.rs` and `benches/providers-nonfips`) is
//! one table with each provider's ratio to the FIPS module.
//!
//! `cargo run -p fipstun-benches --bin bench-report -- [CRITERION_DIR] [OUT]`
//! (defaults: `$CARGO_TARGET_DIR/criterion` or `target/criterion`, and `BENCHMARKS.md`).
#![allow(clippy::print_stdout)] // a report tool prints where it wrote

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

#[path = "../../benches/providers/workload.rs"]
mod workload;

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
    let scorecard = dir
        .parent()
        .and_then(|target| read_json(&target.join("scorecard").join("scorecard.json")));
    let mut text = render(&found, wg_go.as_ref());
    if let Some(sc) = &scorecard {
        text.push_str(&render_scorecard_targets(sc));
    }
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
    let client_ratio = |figure: fn(&Value) -> Option<f64>| {
        let v = wg_go?;
        Some(figure(&v["our_client"])? / figure(&v["wireguard_go_client"])?)
    };
    let ours_vs_go_bulk = client_ratio(|c| c["bulk"]["gbit_per_s"].as_f64());
    let ours_vs_go_per_core = client_ratio(requests_per_core);
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
            name: "our WireGuard client / wireguard-go client, one bulk stream, same wireguard-go server (x)",
            target: ">= 2x",
            met: ours_vs_go_bulk.map(|r| r >= 2.0),
            value: ours_vs_go_bulk,
            how: "benches/scripts/wg-go-compare.sh (`./x bench-wg`): one veth between two namespaces, the same wireguard-go server (TUN, kernel TCP sink); client (a) wireguard-go + kernel TCP, (b) our backend",
        },
        Ratio {
            name: "our WireGuard client / wireguard-go client, requests per core (1 KiB x 64 connections) (x)",
            target: ">= 1x",
            met: ours_vs_go_per_core.map(|r| r >= 1.0),
            value: ours_vs_go_per_core,
            how: "same script and path; requests over the CPU seconds of every process on both sides (/proc)",
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

/// Requests per CPU second of every process on both sides, from one case of
/// wg-go-compare.json.
fn requests_per_core(case: &Value) -> Option<f64> {
    let rr = &case["rr"];
    let cpu = rr["client_cpu_seconds"].as_f64()? + rr["server_cpu_seconds"].as_f64()?;
    let requests = rr["requests"].as_f64()?;
    (cpu > 0.0).then(|| requests / cpu)
}

/// The like-for-like table from benches/scripts/wg-go-compare.sh's JSON.
fn render_wg_go(v: &Value) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\n## WireGuard: like for like against wireguard-go\n\n\
         `./x bench-wg` ({}; bulk {} MiB over one stream; request/response {} B x {} connections \
         for {} s). The server namespace runs a wireguard-go server with the kernel's TCP \
         behind its TUN device (cases a and b) or our node (case c). CPU is user+system of \
         every process on that side, from /proc, over the phase.\n",
        v["path"].as_str().unwrap_or("?"),
        v["bulk_mib"],
        v["our_client"]["rr"]["message_bytes"],
        v["rr_connections"],
        v["rr_seconds"]
    );
    let _ = writeln!(
        s,
        "| case | bulk Gbit/s | bulk CPU-s client / server | requests/s | requests per core | rr CPU-s client / server | RTO stalls (ours) |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|");
    for (key, label) in [
        (
            "wireguard_go_client",
            "(a) wireguard-go client -> wireguard-go server",
        ),
        (
            "our_client",
            "(b) our client -> the same wireguard-go server",
        ),
        ("our_pair", "(c) our client -> our node"),
    ] {
        let c = &v[key];
        if c.is_null() {
            continue;
        }
        let (b, r) = (&c["bulk"], &c["rr"]);
        let f = |x: &Value, d: usize| x.as_f64().map_or("—".into(), |x| format!("{x:.d$}"));
        let stalls = match b["tcp_retransmit_timeouts"].as_u64() {
            Some(n) => format!("{n} ({} s)", f(&b["tcp_retransmit_stalled_seconds"], 2)),
            None => "—".into(),
        };
        let _ = writeln!(
            s,
            "| {label} | {} | {} / {} | {} | {} | {} / {} | {stalls} |",
            f(&b["gbit_per_s"], 3),
            f(&b["client_cpu_seconds"], 2),
            f(&b["server_cpu_seconds"], 2),
            f(&r["requests_per_s"], 0),
            requests_per_core(c).map_or("—".into(), |x| format!("{x:.0}")),
            f(&r["client_cpu_seconds"], 2),
            f(&r["server_cpu_seconds"], 2),
        );
    }
    s
}

/// Hand-kept WireGuard profile summaries and before/after figures (benches/profiles/*.txt),
/// in name order: bench-report regenerates the rest of the file around them.
fn render_profiles(dir: &Path) -> String {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "txt"))
                .collect()
        })
        .unwrap_or_default();
    if files.is_empty() {
        return String::new();
    }
    files.sort();
    let mut s = String::from(
        "\n## Profiles and before/after (HBONE, TLS record path, WireGuard)\n\n\
         Kept by hand in `benches/profiles/` (one file per change: the figures before and after, \
         the commands, and the profile that showed where time or memory went).\n",
    );
    for f in files {
        let name = f.file_name().map(|n| n.to_string_lossy().into_owned());
        if let (Some(name), Ok(text)) = (name, std::fs::read_to_string(&f)) {
            let _ = writeln!(s, "\n### {name}\n\n```text\n{}\n```", text.trim_end());
        }
    }
    s
}

/// The `targets` of a scorecard JSON (`fipstun scorecard`, schema 2): what each check measured
/// (median, min-max over the rounds), its goal and whether it was met.
fn render_scorecard_targets(sc: &Value) -> String {
    let Some(checks) = sc.get("targets").and_then(Value::as_array) else {
        return String::new();
    };
    let mut s = String::new();
    let _ = writeln!(s, "\n## Scorecard targets (processes, loopback)\n");
    let reps = sc.get("reps").and_then(Value::as_u64);
    let duration = sc.get("measure_s").and_then(Value::as_f64);
    let _ = writeln!(
        s,
        "From `fipstun scorecard` run by `./x bench` after criterion{}: proxy and node as \
         separate processes, load from a third; median of the rounds with [min .. max].\n",
        match (reps, duration) {
            (Some(r), Some(d)) => format!(" ({r} rounds of {d:.0} s per cell)"),
            _ => String::new(),
        }
    );
    let _ = writeln!(s, "| target | measured | goal | met | note |");
    let _ = writeln!(s, "|---|---|---|---|---|");
    for c in checks {
        let what = c.get("what").and_then(Value::as_str).unwrap_or("?");
        let unit = c.get("unit").and_then(Value::as_str).unwrap_or("count");
        let fmt = |v: f64| match unit {
            "ratio" => format!("{:.0}%", v * 100.0),
            "bytes" => format!("{:.1} MiB", v / (1024.0 * 1024.0)),
            _ => format!("{v:.0}"),
        };
        let m = c.get("measured");
        let num = |k: &str| m.and_then(|m| m.get(k)).and_then(Value::as_f64);
        let measured = match (num("median"), num("min"), num("max")) {
            (Some(med), Some(lo), Some(hi)) if lo != hi => {
                format!("{} [{} .. {}]", fmt(med), fmt(lo), fmt(hi))
            }
            (Some(med), _, _) => fmt(med),
            _ => "not measured".into(),
        };
        let goal = c.get("goal");
        let value = goal.and_then(|g| g.get("value")).and_then(Value::as_f64);
        let goal = match (
            goal.and_then(|g| g.get("kind")).and_then(Value::as_str),
            value,
        ) {
            (Some("at-least"), Some(v)) => format!(">= {}", fmt(v)),
            (Some("at-most"), Some(v)) => format!("<= {}", fmt(v)),
            _ => "?".into(),
        };
        let met = match c.get("met").and_then(Value::as_bool) {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "—",
        };
        let note = c.get("note").and_then(Value::as_str).unwrap_or("");
        let _ = writeln!(s, "| {what} | {measured} | {goal} | {met} | {note} |");
    }
    s
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
        s.push_str(&render_wg_go(v));
    }
    s.push_str(&render_providers(f, &provider_versions()));
    for (group, rows) in groups {
        if group == workload::GROUP {
            continue; // the provider table above has them all
        }
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

/// The crates behind each provider column, as the two Cargo.lock files pin them: the
/// workspace's (FIPS module, ring, RustCrypto) and `benches/providers-nonfips`'s.
fn provider_versions() -> String {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let read = |p: PathBuf| std::fs::read_to_string(p).unwrap_or_default();
    let workspace = read(here.join("../Cargo.lock"));
    let nonfips = read(here.join("providers-nonfips/Cargo.lock"));
    let pins = |lock: &str, names: &[&str]| {
        names
            .iter()
            .flat_map(|n| {
                locked_versions(lock, n)
                    .into_iter()
                    .map(move |v| format!("{n} {v}"))
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "{}: {}; {}: {}; {}: {}; {}: {}",
        workload::AWS_LC_FIPS.label,
        pins(&workspace, &["aws-lc-rs", "aws-lc-fips-sys"]),
        workload::AWS_LC.label,
        pins(&nonfips, &["aws-lc-rs", "aws-lc-sys"]),
        workload::RING.label,
        pins(&workspace, &["ring"]),
        workload::RUSTCRYPTO.label,
        pins(&workspace, &["aes-gcm", "p256", "sha2", "x25519-dalek"]),
    )
}

/// Every version of package `name` a Cargo.lock holds.
fn locked_versions(lock: &str, name: &str) -> Vec<String> {
    let wanted = format!("name = \"{name}\"");
    let mut lines = lock.lines();
    let mut found = Vec::new();
    while let Some(line) = lines.next() {
        if line == wanted
            && let Some(v) = lines
                .next()
                .and_then(|l| l.strip_prefix("version = \""))
                .and_then(|l| l.strip_suffix('"'))
        {
            found.push(v.to_owned());
        }
    }
    found
}

/// Time and rate of one provider cell: throughput in GiB/s for the sized rows, operations per
/// second for the others.
fn provider_cell(m: &Measured, bytes: Option<usize>) -> String {
    let per_s = 1e9 / m.mean_ns;
    let rate = match bytes {
        Some(n) => format!("{:.2} GiB/s", n as f64 * per_s / (1024.0 * 1024.0 * 1024.0)),
        None => format!("{per_s:.0} /s"),
    };
    format!("{} ({rate})", human_time(m.mean_ns))
}

/// The crypto provider comparison: one row per primitive and input, one column per provider,
/// and beside every other provider its speed relative to the FIPS module (FIPS time / its
/// time: above 1x it is faster). Empty when the run measured none of it.
fn render_providers(f: &BTreeMap<String, Measured>, versions: &str) -> String {
    use workload::{AWS_LC_FIPS, PROVIDERS};
    let rows = workload::rows();
    if !rows
        .iter()
        .any(|r| PROVIDERS.iter().any(|p| f.contains_key(&r.id(p))))
    {
        return String::new();
    }
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\n## Crypto providers: the FIPS module against aws-lc-rs, ring and RustCrypto\n\n\
         `benches/benches/providers.rs` (the FIPS module, ring, RustCrypto) and \
         `benches/providers-nonfips` (aws-lc-rs without `fips`: a workspace of its own, as cargo \
         would unify it with the FIPS pin), both run by `./x bench` one after the other; the \
         ring-API crates run the same workload source. Each cell is the mean time of one \
         operation with its rate; \"vs FIPS\" is the FIPS module's time over that provider's \
         (above 1x the provider is faster). AEAD: seal or open in place of a fresh buffer, \
         empty AAD. ECDSA: P-256 with SHA-256, DER signatures; verify parses the SEC 1 public \
         key each time. Key agreement: one side of an exchange (fresh key pair, its public key, \
         the secret with a fixed peer key). X25519 in the FIPS column runs inside the module \
         but is not a FIPS-approved service. RustCrypto signs deterministically (RFC 6979) and \
         draws fresh keys from the OS (`OsRng`); aws-lc-rs uses its own DRBG, ring the OS. \
         RustCrypto's AES and GHASH pick AES-NI and CLMUL at run time (no `target-cpu` flag).\n"
    );
    let _ = writeln!(s, "- crates: {versions}\n");
    let mut head = format!("| primitive | {} |", AWS_LC_FIPS.label);
    let mut rule = String::from("|---|---|");
    for p in &PROVIDERS[1..] {
        let _ = write!(head, " {} | vs FIPS |", p.label);
        rule.push_str("---|---|");
    }
    let _ = writeln!(s, "{head}\n{rule}");
    let mut missing = false;
    for row in &rows {
        let fips = f.get(&row.id(&AWS_LC_FIPS));
        let cell = |m: Option<&Measured>| m.map_or("—".into(), |m| provider_cell(m, row.bytes));
        let _ = write!(s, "| {} | {} |", row.label, cell(fips));
        missing |= fips.is_none();
        for p in &PROVIDERS[1..] {
            let m = f.get(&row.id(p));
            missing |= m.is_none();
            let ratio = match (fips, m) {
                (Some(fips), Some(m)) => format!("{:.2}x", fips.mean_ns / m.mean_ns),
                _ => "—".into(),
            };
            let _ = write!(s, " {} | {ratio} |", cell(m));
        }
        s.push('\n');
    }
    if missing {
        let _ = writeln!(
            s,
            "\n—: not measured in this run (a filter, or one of the two builds not run: the \
             aws-lc-rs column comes from `benches/providers-nonfips`)."
        );
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
    fn wireguard_go_rows_compare_clients_against_the_same_server() {
        let case = |gbit: f64, requests: u64, cpu: f64| {
            serde_json::json!({
                "bulk": {"gbit_per_s": gbit, "client_cpu_seconds": 1.0, "server_cpu_seconds": 1.0,
                         "tcp_retransmit_timeouts": 0, "tcp_retransmit_stalled_seconds": 0.0},
                "rr": {"requests": requests, "requests_per_s": requests as f64 / 10.0,
                       "message_bytes": 1024, "client_cpu_seconds": cpu, "server_cpu_seconds": cpu},
            })
        };
        let v = serde_json::json!({
            "path": "veth", "bulk_mib": 256, "rr_seconds": 10, "rr_connections": 64,
            "wireguard_go_client": case(0.5, 100_000, 5.0),
            "our_client": case(0.6, 150_000, 5.0),
            "our_pair": case(3.0, 900_000, 5.0),
        });
        let mut f = BTreeMap::new();
        f.insert("handshake/tls13_mtls_p256".into(), m(400_000.0));
        let t = render(&f, Some(&v));
        assert!(
            t.contains("same wireguard-go server (x) | 1.20x | >= 2x | **no** |"),
            "{t}"
        );
        assert!(
            t.contains("(1 KiB x 64 connections) (x) | 1.50x | >= 1x | yes |"),
            "{t}"
        );
        assert!(t.contains("| (c) our client -> our node | 3.000 |"), "{t}");
        assert!(!t.contains("wireguard-go <-> wireguard-go"), "{t}");
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
    fn scorecard_targets_show_measured_goal_and_verdict() {
        let sc = serde_json::json!({
            "reps": 3, "measure_s": 3.0,
            "targets": [
                {"what": "HBONE / relay, bulk 1 stream, Gbit/s", "unit": "ratio",
                 "measured": {"median": 0.62, "min": 0.58, "max": 0.66},
                 "goal": {"kind": "at-least", "value": 0.9}, "met": false},
                {"what": "WireGuard tunnel RSS (proxy + node), rr 1 KiB x 64", "unit": "bytes",
                 "measured": {"median": 41943040.0, "min": 41943040.0, "max": 41943040.0},
                 "goal": {"kind": "at-most", "value": 50331648.0}, "met": true, "note": "x"},
            ]
        });
        let t = render_scorecard_targets(&sc);
        assert!(t.contains("(3 rounds of 3 s per cell)"), "{t}");
        assert!(
            t.contains(
                "| HBONE / relay, bulk 1 stream, Gbit/s | 62% [58% .. 66%] | >= 90% | **no** |  |"
            ),
            "{t}"
        );
        assert!(
            t.contains("| WireGuard tunnel RSS (proxy + node), rr 1 KiB x 64 | 40.0 MiB | <= 48.0 MiB | yes | x |"),
            "{t}"
        );
        assert_eq!(render_scorecard_targets(&serde_json::json!({})), "");
    }

    #[test]
    fn provider_table_puts_every_provider_beside_the_fips_module() {
        let mut f = BTreeMap::new();
        let sized = |mean_ns: f64, n: u64| Measured {
            mean_ns,
            throughput: Some(("Bytes".into(), n as f64)),
        };
        let seal = "providers/aes128gcm_seal/16384";
        f.insert(format!("{seal}/aws-lc-rs-fips"), sized(1_000.0, 16384));
        f.insert(format!("{seal}/aws-lc-rs"), sized(800.0, 16384));
        f.insert(format!("{seal}/ring"), sized(2_000.0, 16384));
        f.insert(format!("{seal}/rustcrypto"), sized(8_000.0, 16384));
        let sign = "providers/ecdsa_p256_sign/130";
        f.insert(format!("{sign}/aws-lc-rs-fips"), m(20_000.0));
        f.insert(format!("{sign}/ring"), m(40_000.0));
        f.insert(format!("{sign}/rustcrypto"), m(10_000.0));
        let t = render_providers(&f, "test crates");
        assert!(
            t.contains(
                "| primitive | aws-lc-rs FIPS | aws-lc-rs (non-FIPS) | vs FIPS | ring | vs FIPS \
                 | RustCrypto | vs FIPS |\n|---|---|---|---|---|---|---|---|\n"
            ),
            "{t}"
        );
        // 16384 B in 1 µs is 15.26 GiB/s; ratios are the FIPS time over the provider's.
        assert!(
            t.contains(
                "| AES-128-GCM seal, 16384 B | 1.00 µs (15.26 GiB/s) | 800.0 ns (19.07 GiB/s) \
                 | 1.25x | 2.00 µs (7.63 GiB/s) | 0.50x | 8.00 µs (1.91 GiB/s) | 0.12x |\n"
            ),
            "{t}"
        );
        // No non-FIPS cell for signing: a dash and no ratio, and the note says why.
        assert!(
            t.contains(
                "| ECDSA P-256 sign, 130 B message | 20.00 µs (50000 /s) | — | — \
                 | 40.00 µs (25000 /s) | 0.50x | 10.00 µs (100000 /s) | 2.00x |\n"
            ),
            "{t}"
        );
        assert!(t.contains("—: not measured in this run"), "{t}");
        // One line per row of the workload, in its order, even for rows nobody measured.
        let body: Vec<&str> = t
            .lines()
            .filter(|l| l.starts_with("| ") && !l.starts_with("| primitive"))
            .collect();
        assert_eq!(body.len(), workload::rows().len());
        assert!(
            body[0].starts_with("| AES-128-GCM seal, 64 B | — |"),
            "{}",
            body[0]
        );
        assert!(t.contains("- crates: test crates"));
        // The generic per-group tables leave the providers out: the table above has them.
        let whole = render(&f, None);
        assert!(whole.contains("## Crypto providers"), "{whole}");
        assert!(!whole.contains("\n## providers\n"), "{whole}");
        assert_eq!(render_providers(&BTreeMap::new(), "x"), "");
    }

    #[test]
    fn locked_versions_reads_every_copy_of_a_package() {
        let lock = "[[package]]\nname = \"rand\"\nversion = \"0.8.5\"\n\n\
                    [[package]]\nname = \"rand\"\nversion = \"0.9.2\"\n\n\
                    [[package]]\nname = \"rand_core\"\nversion = \"0.6.4\"\n";
        assert_eq!(locked_versions(lock, "rand"), ["0.8.5", "0.9.2"]);
        assert_eq!(locked_versions(lock, "ring"), Vec::<String>::new());
        let v = provider_versions();
        assert!(v.contains("aws-lc-fips-sys 0.13."), "{v}");
        assert!(v.contains("aws-lc-sys 0."), "{v}");
    }

    #[test]
    fn dates_are_civil() {
        let d = today();
        assert_eq!(d.len(), 10);
        assert!(d.starts_with("20"));
    }
}
