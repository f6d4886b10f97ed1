//! The node is deny-by-default, through the real binary: with no rule it refuses every
//! CONNECT; `--allow-target 0.0.0.0/0` still does not reach loopback or the cloud metadata
//! address; `--allow-target 127.0.0.0/8` lets a curl through the proxy reach a loopback HTTP
//! server. Refusals happen before any dial (the policy is checked first), so no packet is sent
//! towards 169.254.169.254: the test asserts the refusal is counted as `policy`, never as
//! `unreachable`.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::Command;
use std::time::Duration;

use support::*;

/// A loopback HTTP/1.1 server answering every request with `hello from the upstream`.
fn http_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut c) = conn else { return };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let _ = c.read(&mut buf);
                let body = "hello from the upstream";
                let _ = write!(
                    c,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    addr
}

fn node(pki: &Pki, extra: &[&str]) -> Daemon {
    let mut args = vec![
        "node",
        "--hbone-listen",
        "127.0.0.1:0",
        "--identity-dir",
        s(&pki.node),
        "--metrics",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(extra);
    Daemon::start(&args)
}

fn curl(proxy: SocketAddr) -> std::process::Output {
    Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .arg(format!("http://{proxy}/"))
        .output()
        .expect("run curl")
}

fn refused(node: &Daemon, reason: &str) -> f64 {
    let (_, m) = scrape(node.addr("metrics"));
    try_sample(
        &m,
        &format!("fipstun_streams_refused_total{{backend=\"hbone\",reason=\"{reason}\"}}"),
    )
    .unwrap_or(0.0)
}

/// Wait until the node has counted `n` refusals of `reason` (the scrape can trail the
/// client's view by a moment).
fn wait_refused(node: &Daemon, reason: &str, n: f64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while refused(node, reason) < n {
        assert!(
            std::time::Instant::now() < deadline,
            "{n} `{reason}` refusals expected; node log:\n{}",
            node.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_node_with_no_rule_refuses_every_connect() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let upstream = http_server();
    let node = node(&pki, &[]);
    assert!(
        node.stderr().contains("no policy rules"),
        "the start-up warning names the missing rules:\n{}",
        node.stderr()
    );
    assert!(node.ready.contains("fips=required"), "{}", node.ready);
    let proxy = hbone_proxy(&pki, &node, upstream, &[]);
    let out = curl(proxy.addr("listener"));
    assert!(!out.status.success(), "curl must fail: {out:?}");
    wait_refused(&node, "policy", 1.0);
    assert_eq!(refused(&node, "unreachable"), 0.0);
}

#[test]
fn allowing_everything_still_keeps_loopback_and_metadata_out() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let upstream = http_server();
    let node = node(&pki, &["--allow-target", "0.0.0.0/0"]);
    let to_loopback = hbone_proxy(&pki, &node, upstream, &[]);
    assert!(!curl(to_loopback.addr("listener")).status.success());
    let metadata: SocketAddr = "169.254.169.254:80".parse().unwrap();
    let to_metadata = hbone_proxy(&pki, &node, metadata, &[]);
    assert!(!curl(to_metadata.addr("listener")).status.success());
    wait_refused(&node, "policy", 2.0);
    // Both were refused by the policy, before any dial: none is an unreachable target.
    assert_eq!(refused(&node, "unreachable"), 0.0);
    // The counter can be read before the log line reaches our pipe.
    node.wait_log("link-local", 1, Duration::from_secs(10));
    assert!(
        node.stderr().contains("169.254.169.254:80"),
        "the refusal is logged with the target and why:\n{}",
        node.stderr()
    );
}

#[test]
fn a_rule_naming_loopback_lets_curl_through() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let upstream = http_server();
    let node = node(&pki, &["--allow-target", "127.0.0.0/8"]);
    let proxy = hbone_proxy(&pki, &node, upstream, &[]);
    let out = curl(proxy.addr("listener"));
    assert!(out.status.success(), "{out:?}\nnode:\n{}", node.stderr());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello from the upstream"
    );
    assert_eq!(refused(&node, "policy"), 0.0);
}

#[test]
fn a_connect_back_into_the_node_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let node = node(&pki, &["--allow-target", "127.0.0.0/8"]);
    // The node's own metrics listener, through the node: a loop, refused although loopback
    // is allowed, because no rule names that address and port.
    let proxy = hbone_proxy(&pki, &node, node.addr("metrics"), &[]);
    assert!(!curl(proxy.addr("listener")).status.success());
    wait_refused(&node, "policy", 1.0);
}
