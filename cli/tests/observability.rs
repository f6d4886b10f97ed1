//! Issue 19's observability through the real binary: the JSON access log of a node and a
//! proxy (ztunnel's field names, byte counts, refusals, `off`), and the admin endpoints
//! (`/healthz/ready`, `/metrics`, `/config_dump`), including readiness before the first SVID.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Daemon, Pki, exchange, hbone_proxy, pattern, reverse_server, s};

/// The `fipstun::access` events in a JSON log, as their `fields` objects.
fn access_events(stderr: &str) -> Vec<Value> {
    stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["target"] == "fipstun::access")
        .map(|v| v["fields"].clone())
        .collect()
}

/// Wait up to 10 s for `n` access events in `d`'s log.
fn wait_events(d: &Daemon, n: usize) -> Vec<Value> {
    let start = Instant::now();
    loop {
        let events = access_events(&d.stderr());
        if events.len() >= n || start.elapsed() > Duration::from_secs(10) {
            return events;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `GET path` (or another method) from `addr`: (status, body).
fn http(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let mut c = TcpStream::connect(addr).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(format!("{method} {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes())
        .expect("send");
    let mut text = String::new();
    c.read_to_string(&mut text).expect("read");
    let (head, body) = text.split_once("\r\n\r\n").expect("HTTP response");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    (status, body.to_string())
}

fn node(pki: &Pki, extra: &[&str]) -> Daemon {
    let mut args = vec![
        "node",
        "--hbone-listen",
        "127.0.0.1:0",
        "--identity-dir",
        s(&pki.node),
        "--allow",
        pki.proxy_id,
        "--allow-target",
        "127.0.0.1/32",
        "--log-format",
        "json",
    ];
    args.extend_from_slice(extra);
    Daemon::start(&args)
}

#[test]
fn access_log_has_ztunnel_fields_byte_counts_refusals_and_can_be_off() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let upstream = reverse_server(Duration::ZERO);
    let node = node(&pki, &[]);
    let proxy = hbone_proxy(&pki, &node, upstream, &["--log-format", "json"]);

    let data = pattern(100_000);
    let back = exchange(proxy.addr("listener"), &data).unwrap();
    assert_eq!(back.len(), data.len());

    let hbone = node.addr("hbone").to_string();
    let p = wait_events(&proxy, 1);
    assert_eq!(p.len(), 1, "one event per stream: {p:?}");
    let p = &p[0];
    assert_eq!(p["direction"], "outbound", "{p}");
    assert_eq!(p["bytes_sent"], 100_000, "client -> target: {p}");
    assert_eq!(p["bytes_recv"], 100_000, "target -> client: {p}");
    assert_eq!(p["dst.addr"], upstream.to_string(), "{p}");
    assert_eq!(p["dst.hbone_addr"], hbone, "{p}");
    assert_eq!(p["dst.identity"], pki.node_id, "{p}");
    assert!(
        p["src.addr"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{p}"
    );
    assert!(p["duration"].is_u64(), "{p}");
    assert!(p.get("error").is_none(), "no error on success: {p}");

    let n = wait_events(&node, 1);
    assert_eq!(n.len(), 1, "{n:?}");
    let n = &n[0];
    assert_eq!(n["direction"], "inbound", "{n}");
    assert_eq!(n["src.identity"], pki.proxy_id, "{n}");
    assert!(
        n["src.addr"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{n}"
    );
    assert_eq!(n["dst.addr"], upstream.to_string(), "{n}");
    assert_eq!(
        (n["bytes_sent"].clone(), n["bytes_recv"].clone()),
        (100_000.into(), 100_000.into()),
        "{n}"
    );
    assert!(n.get("dst.hbone_addr").is_none(), "{n}");
    assert!(n.get("error").is_none(), "{n}");

    // A target the node's policy does not allow: both sides log the refusal.
    let denied = hbone_proxy(
        &pki,
        &node,
        "127.0.0.2:9".parse().unwrap(),
        &["--log-format", "json"],
    );
    let _ = exchange(denied.addr("listener"), b"x");
    let n = wait_events(&node, 2);
    let refused = n.last().unwrap();
    assert!(
        refused["error"].as_str().unwrap_or("").contains("policy"),
        "{refused}"
    );
    assert_eq!(refused["bytes_sent"], 0, "{refused}");
    let d = wait_events(&denied, 1);
    assert!(d[0]["error"].is_string(), "{:?}", d[0]);

    // `off`: streams pass, nothing is logged.
    let quiet = hbone_proxy(
        &pki,
        &node,
        upstream,
        &["--log-format", "json", "--access-log", "off"],
    );
    assert_eq!(exchange(quiet.addr("listener"), b"abc").unwrap(), b"cba");
    let _ = wait_events(&node, 3);
    assert!(
        access_events(&quiet.stderr()).is_empty(),
        "{}",
        quiet.stderr()
    );
}

#[test]
fn admin_endpoints_answer_readiness_metrics_and_config_dump() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let upstream = reverse_server(Duration::ZERO);
    let node = node(
        &pki,
        &[
            "--ready",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--metrics",
            "127.0.0.1:0",
        ],
    );
    let (ready, admin, stats) = (node.addr("ready"), node.addr("admin"), node.addr("stats"));
    assert_eq!(stats, node.addr("metrics"), "stats is the metrics listener");

    assert_eq!(
        http(ready, "GET", "/healthz/ready"),
        (200, "ready\n".into())
    );
    assert_eq!(http(admin, "GET", "/healthz/ready").0, 200);
    assert_eq!(http(ready, "GET", "/config_dump").0, 404);
    assert_eq!(http(admin, "GET", "/nothing").0, 404);
    assert_eq!(http(admin, "POST", "/config_dump").0, 405);

    let (status, dump) = http(admin, "GET", "/config_dump");
    assert_eq!(status, 200);
    assert!(!dump.contains("PRIVATE KEY"), "{dump}");
    let dump: Value = serde_json::from_str(&dump).expect("JSON");
    assert_eq!(dump["mode"], "node");
    assert_eq!(dump["svid"]["spiffe_id"], pki.node_id, "{dump}");
    assert_eq!(dump["svid"]["trust_domains"][0], "example.org", "{dump}");
    assert!(
        dump["svid"]["serial"].as_str().unwrap().len() >= 2,
        "{dump}"
    );
    assert!(
        dump["svid"]["not_after"].as_str().unwrap().ends_with('Z'),
        "{dump}"
    );
    assert_eq!(dump["identity"]["source"], "files", "{dump}");
    assert_eq!(dump["admin"]["access_log"], "on", "{dump}");
    assert_eq!(dump["policy"][0]["name"], "allow_targets", "{dump}");

    // One stream through, then the histograms and the SVID gauge are there.
    let proxy = hbone_proxy(&pki, &node, upstream, &[]);
    assert_eq!(exchange(proxy.addr("listener"), b"abc").unwrap(), b"cba");
    let start = Instant::now();
    let metrics = loop {
        let (status, body) = http(stats, "GET", "/metrics");
        assert_eq!(status, 200);
        if body.contains(
            "fipstun_stream_duration_seconds_count{backend=\"hbone\",direction=\"inbound\"} 1",
        ) || start.elapsed() > Duration::from_secs(10)
        {
            break body;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    for series in [
        "fipstun_stream_setup_seconds_count{backend=\"hbone\",direction=\"inbound\"} 1",
        "fipstun_stream_duration_seconds_count{backend=\"hbone\",direction=\"inbound\"} 1",
        "fipstun_tls_handshake_seconds_count{backend=\"hbone\",side=\"server\"} 1",
        "fipstun_svid_expiry_seconds ",
    ] {
        assert!(metrics.contains(series), "{series} in\n{metrics}");
    }
}

/// A child process killed on drop, for a proxy that never gets ready.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn readiness_says_no_svid_yet_while_the_workload_api_is_silent() {
    let dir = tempfile::tempdir().unwrap();
    // A port that was free a moment ago, for an admin listener that answers before the ready
    // line (which never comes).
    let admin = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let socket = format!("unix://{}", s(&dir.path().join("no-agent.sock")));
    let _proxy = Child(
        Command::new(env!("CARGO_BIN_EXE_fipstun"))
            .args([
                "proxy",
                "--listen",
                "127.0.0.1:0",
                "--target",
                "127.0.0.1:9",
                "--via",
                "hbone",
                "--node",
                "127.0.0.1:9",
                "--node-id",
                "spiffe://example.org/node",
                "--workload-api",
                &socket,
                "--admin",
                &admin.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn fipstun"),
    );
    let start = Instant::now();
    let answer = loop {
        match TcpStream::connect(admin) {
            Ok(_) => break http(admin, "GET", "/healthz/ready"),
            Err(_) if start.elapsed() < Duration::from_secs(20) => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("the admin listener never came up: {e}"),
        }
    };
    assert_eq!(answer, (503, "no SVID yet\n".into()));
    let (status, dump) = http(admin, "GET", "/config_dump");
    assert_eq!(status, 200);
    let dump: Value = serde_json::from_str(&dump).unwrap();
    assert_eq!(dump["svid"], Value::Null);
    assert_eq!(dump["identity"]["source"], "workload_api", "{dump}");
}
