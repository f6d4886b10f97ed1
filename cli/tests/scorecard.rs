//! `fipstun scorecard` end to end: a short run through all four paths (plain, relay, HBONE,
//! WireGuard) writes a table, JSON and an SVG whose figures come from traffic that really went
//! through the relay or node and the proxy.

use std::process::Command;

#[test]
fn short_scorecard_measures_every_backend() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("card");
    // A relative --out: the node and proxy configs the scorecard writes must still name their
    // key folders correctly (the binary reads paths in a config relative to the config's folder).
    let o = Command::new(env!("CARGO_BIN_EXE_fipstun"))
        .args([
            "scorecard",
            "--duration",
            "4s",
            "--no-progress",
            "--out",
            "card",
        ])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("Request/response, 1024 B each way, 64 connections"));
    for f in ["scorecard.txt", "scorecard.json", "scorecard.svg"] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let svg = std::fs::read_to_string(out.join("scorecard.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("wireguard"));

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("scorecard.json")).unwrap())
            .unwrap();
    let backends = json["backends"].as_array().unwrap();
    let names: Vec<&str> = backends
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["plain", "relay", "hbone", "wireguard"]);
    assert_eq!(backends[1]["fips"], false, "the relay carries plaintext");
    assert_eq!(backends[2]["fips"], true, "HBONE runs in the FIPS module");
    assert_eq!(backends[3]["fips"], false, "WireGuard is never FIPS");
    // HBONE reports what its handshake negotiated, not the list its policy allows.
    assert_eq!(
        backends[2]["cipher"], "TLSv1_3 TLS13_AES_256_GCM_SHA384 secp256r1",
        "the default policy prefers AES-256 and P-256"
    );
    for b in backends {
        let results = b["results"].as_array().unwrap();
        assert_eq!(results.len(), 4, "{}", b["name"]);
        // CPU per process over the backend's four windows: one 0.2 s window can fall between
        // two of the kernel's 10 ms accounting ticks for an idle-ish process.
        let mut cpu_by_process = std::collections::BTreeMap::<String, f64>::new();
        for m in results {
            let what = format!("{} {}", b["name"], m["workload"]);
            assert_eq!(m["errors"], 0, "{what}");
            let moved = m["ops"].as_u64().unwrap() + m["bytes"].as_u64().unwrap();
            assert!(moved > 0, "{what}: nothing measured");
            let procs = m["processes"].as_array().unwrap();
            // The baseline charges only the load generator; the relay and the tunnels also
            // charge their two processes (proxy and relay or node), which did real work in
            // the window.
            let expect = if b["name"] == "plain" { 1 } else { 3 };
            assert_eq!(procs.len(), expect, "{what}");
            for p in procs {
                let cpu = p["cpu_user_s"].as_f64().unwrap() + p["cpu_sys_s"].as_f64().unwrap();
                *cpu_by_process
                    .entry(p["name"].as_str().unwrap().to_string())
                    .or_default() += cpu;
                assert!(p["peak_rss_bytes"].as_u64().unwrap() > 0, "{what}");
            }
        }
        for (name, cpu) in cpu_by_process {
            assert!(cpu > 0.0, "{}: {name} used no CPU", b["name"]);
        }
    }
}
