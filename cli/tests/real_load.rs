//! Real load through the tunnel (issue 8, item 4): `wrk` drives HTTP/1.1 keep-alive requests
//! through `fipstun proxy` -> HBONE -> `fipstun node` -> this test's own HTTP server for a few
//! seconds, and every request must succeed.

mod support;

use std::net::SocketAddr;
use std::process::Command;

use support::{Daemon, Pki, hbone_proxy, s};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const BODY: &str = "hello through fipstun\n";

/// A tiny HTTP/1.1 keep-alive server: every request head gets 200 and BODY.
async fn http_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut c, _)) = l.accept().await {
            let _ = c.set_nodelay(true);
            tokio::spawn(async move {
                let mut buf = Vec::with_capacity(4096);
                let mut chunk = [0u8; 4096];
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{BODY}",
                    BODY.len()
                );
                loop {
                    // Answer every complete request head in the buffer (pipelining included).
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        if c.write_all(response.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                    match c.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    addr
}

/// The numbers wrk prints that decide pass or fail.
#[derive(Debug, Default, PartialEq)]
struct WrkResult {
    requests: u64,
    socket_errors: u64,
    non_2xx: u64,
}

fn parse_wrk(out: &str) -> WrkResult {
    let mut r = WrkResult::default();
    for line in out.lines().map(str::trim) {
        // "12345 requests in 3.00s, 1.23MB read"
        if let Some((n, _)) = line.split_once(" requests in ") {
            r.requests = n.trim().parse().expect("request count");
        }
        // "Socket errors: connect 0, read 1, write 0, timeout 0"
        if let Some(rest) = line.strip_prefix("Socket errors:") {
            r.socket_errors = rest
                .split(',')
                .filter_map(|kv| kv.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum();
        }
        // "Non-2xx or 3xx responses: 7"
        if let Some(n) = line.strip_prefix("Non-2xx or 3xx responses:") {
            r.non_2xx = n.trim().parse().expect("non-2xx count");
        }
    }
    r
}

#[test]
fn wrk_output_is_parsed() {
    let out = "Running 3s test @ http://127.0.0.1:1/\n  2 threads and 16 connections\n  \
               5329 requests in 3.00s, 1.2MB read\n  Socket errors: connect 0, read 2, write 1, timeout 3\n  \
               Non-2xx or 3xx responses: 4\nRequests/sec:   1776.33\n";
    assert_eq!(
        parse_wrk(out),
        WrkResult {
            requests: 5329,
            socket_errors: 6,
            non_2xx: 4
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrk_through_proxy_and_node_over_hbone_has_no_errors() {
    let wrk_present = Command::new("wrk").arg("--version").output().is_ok();
    assert!(
        wrk_present,
        "wrk is not installed: this test needs it (run ./x setup, or apt-get install wrk)"
    );
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let upstream = http_server().await;
    let node = Daemon::start(&[
        "node",
        "--hbone-listen",
        "127.0.0.1:0",
        "--identity-dir",
        s(&pki.node),
        "--allow-target",
        "127.0.0.1/32",
    ]);
    let proxy = hbone_proxy(&pki, &node, upstream, &["--fips", "required"]);
    let url = format!("http://{}/", proxy.addr("listener"));
    let out = tokio::task::spawn_blocking(move || {
        Command::new("wrk")
            .args(["-t2", "-c16", "-d3s", "--timeout", "5s", &url])
            .output()
            .expect("run wrk")
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "wrk failed: {text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = parse_wrk(&text);
    assert!(r.requests > 0, "no requests completed:\n{text}");
    assert_eq!(r.socket_errors, 0, "socket errors:\n{text}");
    assert_eq!(r.non_2xx, 0, "non-2xx responses:\n{text}");
    eprintln!("{text}");
    drop(proxy);
    drop(node);
}
