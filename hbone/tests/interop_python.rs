//! Interop with an independent HTTP/2 + TLS stack: Python's `ssl` (OpenSSL) and the `h2`
//! package, as HBONE client against our server and as HBONE server for our client. Also checks
//! the ztunnel wire facts: plain CONNECT, `:authority` ip:port, ALPN h2, TLS 1.3 AES-GCM, and
//! the identity only in the URI SAN.

mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use common::json::Json;
use common::*;
use fipstun_hbone::wire::{Forwarded, TraceParent};
use fipstun_hbone::{AllowAll, ClientConfig, ConnectRequest, ServerConfig};
use fipstun_identity::spiffe::SpiffeId;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/hbone_peer.py");

/// Fail (not skip) when the interop tooling is missing: the set-up script installs it.
fn require_python_h2() {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import h2, ssl; print(h2.__version__, ssl.OPENSSL_VERSION)",
        ])
        .output();
    match out {
        Ok(o) if o.status.success() => {
            eprintln!(
                "interop peer: python h2 {}",
                String::from_utf8_lossy(&o.stdout).trim()
            );
        }
        Ok(o) => panic!(
            "python3 is present but cannot import the `h2` package (run ./x setup): {}",
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => panic!("python3 is not installed (run ./x setup): {e}"),
    }
}

/// PEM files for `id` (chain, key) and the CA bundle, in a fresh temp dir.
struct PemFiles {
    dir: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    ca: PathBuf,
}

impl PemFiles {
    fn write(pki: &Pki, id: &SpiffeId, tag: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = std::env::temp_dir().join(format!(
            "fipstun-hbone-{tag}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let svid = pki.svid(id);
        let (cert, key, ca) = (
            dir.join("cert.pem"),
            dir.join("key.pem"),
            dir.join("ca.pem"),
        );
        std::fs::write(&cert, svid.chain_pem()).unwrap();
        std::fs::write(&key, svid.key().to_pem().as_bytes()).unwrap();
        std::fs::write(&ca, pki.ca.bundle().to_pem()).unwrap();
        Self { dir, cert, key, ca }
    }

    fn args(&self) -> Vec<String> {
        vec![
            "--cert".into(),
            self.cert.display().to_string(),
            "--key".into(),
            self.key.display().to_string(),
            "--ca".into(),
            self.ca.display().to_string(),
        ]
    }
}

impl Drop for PemFiles {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn next_json_line(
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
) -> Json {
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("python peer printed nothing within 30 s")
        .unwrap()
        .expect("python peer exited without a report");
    Json::parse(&line).unwrap_or_else(|e| panic!("bad JSON from python peer ({e}): {line}"))
}

async fn stop(mut child: Child) {
    // Stop by PID (our own child), never by name.
    let _ = child.kill().await;
}

fn assert_tls_facts(report: &Json, peer_id: &str) {
    assert_eq!(
        report.get("version").as_str(),
        Some("TLSv1.3"),
        "{report:?}"
    );
    assert_eq!(report.get("alpn").as_str(), Some("h2"), "{report:?}");
    let cipher = report.get("cipher").as_str().unwrap();
    assert!(
        cipher == "TLS_AES_256_GCM_SHA384" || cipher == "TLS_AES_128_GCM_SHA256",
        "cipher {cipher} is not a FIPS AES-GCM suite"
    );
    // Identity only in the URI SAN: empty subject, exactly one SAN, a URI.
    assert_eq!(
        report.get("peer_subject").as_array().map(|a| a.len()),
        Some(0),
        "{report:?}"
    );
    let san = report.get("peer_san").as_array().unwrap();
    assert_eq!(san.len(), 1, "{report:?}");
    let entry = san[0].as_array().unwrap();
    assert_eq!(entry[0].as_str(), Some("URI"));
    assert_eq!(entry[1].as_str(), Some(peer_id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_h2_client_tunnels_through_our_server() {
    require_python_h2();
    let pki = Pki::new();
    let (target, accepted) = echo_upstream().await;
    let srv = start_server(&pki, ServerConfig::default(), AllowAll).await;
    let pem = PemFiles::write(&pki, &client_id(), "pyclient");
    let closed = closed_port().await;
    let mut cmd = Command::new("python3");
    cmd.arg(SCRIPT)
        .arg("client")
        .args([
            "--connect",
            &srv.addr.to_string(),
            "--target",
            &target.to_string(),
        ])
        .args([
            "--bad-target",
            "example.com:80",
            "--bad-target",
            "127.0.0.1",
        ])
        .args(["--bad-target", &closed.to_string()])
        .args(["--bytes", &(4 << 20).to_string()])
        .args(pem.args())
        .stdout(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().expect("start python3");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let report = next_json_line(&mut lines).await;
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("python client did not exit")
        .unwrap();
    eprintln!("python client report: {report:?}");
    assert_eq!(report.get("status").as_i64(), Some(200));
    assert_eq!(report.get("echo_bytes").as_i64(), Some(4 << 20));
    assert_eq!(report.get("echo_ok").as_bool(), Some(true));
    assert!(status.success());
    assert_tls_facts(&report, SERVER_ID);
    let bad = report.get("bad");
    assert_eq!(bad.get("example.com:80").as_i64(), Some(400));
    assert_eq!(bad.get("127.0.0.1").as_i64(), Some(400));
    assert_eq!(bad.get(&closed.to_string()).as_i64(), Some(503));
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
    let m = srv.server.metrics();
    assert_eq!((m.streams_opened, m.streams_rejected), (1, 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_client_tunnels_through_a_python_h2_server() {
    require_python_h2();
    let pki = Pki::new();
    let pem = PemFiles::write(&pki, &server_id(), "pyserver");
    let mut cmd = Command::new("python3");
    cmd.arg(SCRIPT)
        .arg("server")
        .args(pem.args())
        .stdout(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().expect("start python3");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let hello = next_json_line(&mut lines).await;
    let port = hello.get("listening").as_i64().expect("listening port") as u16;
    let peer = std::net::SocketAddr::from(([127, 0, 0, 1], port));

    let client = pki.client(ClientConfig::default());
    let target: std::net::SocketAddr = "127.0.0.1:7777".parse().unwrap();
    let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let req = ConnectRequest::new(target)
        .with_traceparent(TraceParent::parse(tp).unwrap())
        .with_forwarded(Forwarded::for_ip("10.0.0.9".parse().unwrap()));
    let mut stream = client
        .connect_with(req, &fipstun_hbone::HboneRoute::new(peer, server_id()))
        .await
        .unwrap();
    assert_eq!(stream.peer_identity(), &server_id());
    let sent = send_pattern(&mut stream, 3 << 20).await;
    stream.shutdown().await.unwrap();
    let (n, got) = hash_to_eof(&mut stream).await;
    assert_eq!(n, 3 << 20);
    assert_eq!(got, sent, "echo from the python server differs");

    let report = next_json_line(&mut lines).await;
    stop(child).await;
    eprintln!("python server report: {report:?}");
    assert_eq!(report.get("bytes").as_i64(), Some(3 << 20));
    assert_tls_facts(&report, CLIENT_ID);
    // The request as it went over the wire.
    let headers: Vec<(String, String)> = report
        .get("headers")
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            let h = h.as_array().unwrap();
            (
                h[0].as_str().unwrap().to_string(),
                h[1].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let get = |k: &str| {
        headers
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(get(":method"), Some("CONNECT"));
    assert_eq!(get(":authority"), Some("127.0.0.1:7777"));
    assert_eq!(get(":scheme"), None, "plain CONNECT has no :scheme");
    assert_eq!(get(":path"), None, "plain CONNECT has no :path");
    assert_eq!(get(":protocol"), None, "not extended CONNECT");
    assert_eq!(get("traceparent"), Some(tp));
    assert_eq!(get("forwarded"), Some("for=10.0.0.9"));
    // Half-close from the python side reached us as EOF, and our END_STREAM reached it.
    let mut extra = [0u8; 1];
    assert_eq!(stream.read(&mut extra).await.unwrap(), 0);
}

#[test]
fn json_reader_parses_a_report() {
    let j =
        Json::parse(r#"{"a": [1, "x\"y", true, null], "b": {"c": -2.5}, "d": "\u00e9"}"#).unwrap();
    assert_eq!(j.get("a").as_array().unwrap()[1].as_str(), Some("x\"y"));
    assert_eq!(j.get("a").as_array().unwrap()[0].as_i64(), Some(1));
    assert_eq!(j.get("b").get("c"), &Json::Num(-2.5));
    assert_eq!(j.get("d").as_str(), Some("é"));
    assert!(Json::parse("{\"a\": }").is_err());
    assert!(Json::parse("[1, 2").is_err());
}
