//! `fipstun node` and `fipstun proxy` as separate processes on 127.0.0.1: bytes through HBONE
//! and WireGuard with content checked, half-close, the target policy, metrics, and the
//! SIGTERM drain.

mod support;

use std::net::TcpStream;
use std::time::Duration;

use support::{
    Daemon, Pki, exchange, hbone_proxy, pattern, reverse_server, s, sample, scrape, try_sample,
    write,
};

fn expect_reversed(data: &[u8], back: &[u8]) {
    let mut want = data.to_vec();
    want.reverse();
    assert_eq!(back.len(), want.len(), "every byte came back");
    assert!(back == want.as_slice(), "content and order kept");
}

#[test]
fn hbone_node_and_proxy_carry_bytes_enforce_targets_and_count() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let upstream = reverse_server(Duration::ZERO);
    let node_toml = write(
        dir.path(),
        "node.toml",
        &format!(
            r#"
metrics = "127.0.0.1:0"
drain = "2s"
allow_targets = ["127.0.0.1/32"]
[identity]
dir = "{}"
[hbone]
listen = "127.0.0.1:0"
allow = ["{}"]
"#,
            s(&pki.node),
            pki.proxy_id
        ),
    );
    let node = Daemon::start(&["node", "--config", s(&node_toml)]);
    let proxy_toml = write(
        dir.path(),
        "proxy.toml",
        &format!(
            r#"
metrics = "127.0.0.1:0"
drain = "2s"
fips = "required"
[identity]
dir = "{id}"
[[listener]]
listen = "127.0.0.1:0"
target = "{upstream}"
via = "hbone"
node = "{node}"
node_id = "{node_id}"
[[listener]]
listen = "127.0.0.1:0"
target = "127.0.0.2:9"
via = "hbone"
node = "{node}"
node_id = "{node_id}"
"#,
            id = s(&pki.proxy),
            node = node.addr("hbone"),
            node_id = pki.node_id,
        ),
    );
    let proxy = Daemon::start(&["proxy", "--config", s(&proxy_toml)]);
    let listeners: Vec<_> = proxy
        .ready
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("listener="))
        .map(|a| a.parse::<std::net::SocketAddr>().unwrap())
        .collect();
    assert_eq!(listeners.len(), 2, "{}", proxy.ready);
    assert_ne!(listeners[0].port(), 0, "port 0 resolved to the bound port");

    // 1 MiB through the tunnel; the upstream answers only after our FIN (half-close).
    let data = pattern(1 << 20);
    expect_reversed(&data, &exchange(listeners[0], &data).unwrap());
    // A few more streams on the pooled connection.
    for n in [1, 1000, 70_000] {
        let d = pattern(n);
        expect_reversed(&d, &exchange(listeners[0], &d).unwrap());
    }
    // A target no rule allows (127.0.0.2 is loopback, and only 127.0.0.1/32 is named): the
    // node answers 403 before any dial, the proxy closes without data.
    let refused = exchange(listeners[1], b"hello").unwrap_or_default();
    assert!(refused.is_empty(), "nothing from a refused target");

    let (ctype, node_metrics) = scrape(node.addr("metrics"));
    assert_eq!(
        ctype,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert_eq!(
        sample(&node_metrics, "fipstun_streams_total{backend=\"hbone\"}"),
        4.0
    );
    assert!(
        sample(
            &node_metrics,
            "fipstun_tunnel_bytes_total{backend=\"hbone\",direction=\"in\"}"
        ) >= (1 << 20) as f64
    );
    assert_eq!(
        sample(
            &node_metrics,
            "fipstun_streams_refused_total{backend=\"hbone\",reason=\"policy\"}"
        ),
        1.0
    );
    // The refusal is logged (the counter can be read before the line reaches our pipe).
    node.wait_log("stream refused by policy", 1, Duration::from_secs(10));
    let (_, proxy_metrics) = scrape(proxy.addr("metrics"));
    assert_eq!(
        sample(
            &proxy_metrics,
            "fipstun_connections_accepted_total{backend=\"hbone\"}"
        ),
        5.0
    );
    assert_eq!(
        sample(&proxy_metrics, "fipstun_streams_total{backend=\"hbone\"}"),
        4.0
    );
    assert_eq!(
        sample(
            &proxy_metrics,
            "fipstun_streams_refused_total{backend=\"hbone\",reason=\"refused\"}"
        ),
        1.0
    );
    assert!(
        sample(
            &proxy_metrics,
            "fipstun_tunnel_bytes_total{backend=\"hbone\",direction=\"out\"}"
        ) >= (1 << 20) as f64
    );
    // The client saw EOF; the proxy's stream task finishes right after.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while sample(
        &scrape(proxy.addr("metrics")).1,
        "fipstun_streams_active{backend=\"hbone\"}",
    ) != 0.0
    {
        assert!(std::time::Instant::now() < deadline, "streams stay active");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn an_unauthorized_proxy_identity_is_refused_in_the_handshake() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let upstream = reverse_server(Duration::ZERO);
    // The node admits only some other workload.
    let node = Daemon::start(&[
        "node",
        "--hbone-listen",
        "127.0.0.1:0",
        "--identity-dir",
        s(&pki.node),
        "--allow",
        "spiffe://example.org/ns/default/sa/someone-else",
        "--metrics",
        "127.0.0.1:0",
    ]);
    let proxy = hbone_proxy(&pki, &node, upstream, &["--metrics", "127.0.0.1:0"]);
    let back = exchange(proxy.addr("listener"), b"hello").unwrap_or_default();
    assert!(back.is_empty());
    // The proxy may see the server's alert before the node has counted it; the HBONE client
    // may also have tried more than once.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, m) = scrape(node.addr("metrics"));
        let n = try_sample(
            &m,
            "fipstun_handshake_failures_total{backend=\"hbone\",reason=\"certificate\"}",
        );
        if n.is_some_and(|n| n >= 1.0) {
            assert_eq!(
                sample(&m, "fipstun_streams_total{backend=\"hbone\"}"),
                0.0,
                "no stream got through"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no certificate failure counted:\n{m}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (_, m) = scrape(proxy.addr("metrics"));
    assert_eq!(
        sample(
            &m,
            "fipstun_streams_refused_total{backend=\"hbone\",reason=\"tunnel\"}"
        ),
        1.0
    );
}

fn wg_key(dir: &std::path::Path, name: &str) -> (std::path::PathBuf, String) {
    use std::os::unix::fs::OpenOptionsExt;
    let key = fipstun_wireguard::WgPrivateKey::generate();
    let path = dir.join(name);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .unwrap();
    std::io::Write::write_all(&mut f, key.to_base64().as_bytes()).unwrap();
    (path, key.public_key().to_string())
}

#[test]
fn wireguard_node_and_proxy_carry_bytes_and_enforce_targets() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = reverse_server(Duration::ZERO);
    let (node_key, node_pub) = wg_key(dir.path(), "node.key");
    let (proxy_key, proxy_pub) = wg_key(dir.path(), "proxy.key");
    // Tunnel-internal addresses exist only inside the encrypted tunnel.
    let node_toml = write(
        dir.path(),
        "node.toml",
        &format!(
            r#"
metrics = "127.0.0.1:0"
fips = "off"
allow_targets = ["127.0.0.1/32"]
[wireguard]
listen = "127.0.0.1:0"
private_key = "{}"
address = "10.99.0.1"
[[wireguard.peer]]
public_key = "{proxy_pub}"
allowed_ips = ["10.99.0.2/32"]
spiffe_id = "spiffe://example.org/ns/default/sa/proxy"
"#,
            s(&node_key)
        ),
    );
    let node = Daemon::start(&["node", "--config", s(&node_toml)]);
    let proxy_toml = write(
        dir.path(),
        "proxy.toml",
        &format!(
            r#"
metrics = "127.0.0.1:0"
fips = "off"
[wireguard]
listen = "127.0.0.1:0"
private_key = "proxy.key"
address = "10.99.0.2"
[[wireguard.peer]]
public_key = "{node_pub}"
allowed_ips = ["127.0.0.0/8"]
endpoint = "{}"
[[listener]]
listen = "127.0.0.1:0"
target = "{upstream}"
via = "wireguard"
[[listener]]
listen = "127.0.0.1:0"
target = "127.0.0.2:9"
via = "wireguard"
"#,
            node.addr("wireguard")
        ),
    );
    let _ = proxy_key; // referenced relative to the config file's directory
    let proxy = Daemon::start(&["proxy", "--config", s(&proxy_toml)]);
    let listeners: Vec<std::net::SocketAddr> = proxy
        .ready
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("listener="))
        .map(|a| a.parse().unwrap())
        .collect();
    let data = pattern(1 << 20);
    expect_reversed(&data, &exchange(listeners[0], &data).unwrap());
    let d = pattern(3000);
    expect_reversed(&d, &exchange(listeners[0], &d).unwrap());
    let refused = exchange(listeners[1], b"hello").unwrap_or_default();
    assert!(refused.is_empty(), "nothing from a refused target");

    let (_, m) = scrape(node.addr("metrics"));
    assert_eq!(
        sample(&m, "fipstun_streams_total{backend=\"wireguard\"}"),
        2.0
    );
    assert_eq!(
        sample(
            &m,
            "fipstun_streams_refused_total{backend=\"wireguard\",reason=\"policy\"}"
        ),
        1.0
    );
    assert!(sample(&m, "fipstun_wireguard_sessions_established_total") >= 1.0);
    assert!(
        sample(
            &m,
            "fipstun_tunnel_bytes_total{backend=\"wireguard\",direction=\"in\"}"
        ) >= (1 << 20) as f64
    );
    node.wait_log("stream refused by policy", 1, Duration::from_secs(10));
    let (_, m) = scrape(proxy.addr("metrics"));
    assert!(sample(&m, "fipstun_wireguard_handshakes_initiated_total") >= 1.0);
    assert!(
        sample(
            &m,
            "fipstun_tunnel_bytes_total{backend=\"wireguard\",direction=\"in\"}"
        ) >= (1 << 20) as f64
    );
}

#[test]
fn sigterm_drains_an_active_stream_then_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    // The upstream answers 2 s after the client's FIN: the stream is active across SIGTERM.
    let upstream = reverse_server(Duration::from_secs(2));
    let mut node = Daemon::start(&[
        "node",
        "--hbone-listen",
        "127.0.0.1:0",
        "--identity-dir",
        s(&pki.node),
        "--allow-target",
        "127.0.0.0/8",
        "--drain",
        "20s",
    ]);
    let mut proxy = hbone_proxy(&pki, &node, upstream, &["--drain", "20s"]);
    let listener = proxy.addr("listener");
    let data = pattern(100_000);
    let client = std::thread::spawn(move || exchange(listener, &data));
    std::thread::sleep(Duration::from_millis(700));
    proxy.terminate();
    node.terminate();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(listener).is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "the proxy still accepts after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let back = client.join().unwrap().expect("the active stream finished");
    expect_reversed(&pattern(100_000), &back);
    for (name, d) in [("proxy", &mut proxy), ("node", &mut node)] {
        let status = d
            .wait_exit(Duration::from_secs(15))
            .unwrap_or_else(|| panic!("{name} did not exit after the drain:\n{}", d.stderr()));
        assert!(
            status.success(),
            "{name} exit status {status}:\n{}",
            d.stderr()
        );
        assert!(d.stderr().contains("SIGTERM"), "{}", d.stderr());
    }
}

#[test]
fn a_node_picks_up_reissued_svid_files_without_restart() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let upstream = reverse_server(Duration::ZERO);
    let node = Daemon::start(&[
        "node",
        "--hbone-listen",
        "127.0.0.1:0",
        "--identity-dir",
        s(&pki.node),
        "--allow-target",
        "127.0.0.0/8",
    ]);
    // A new root for the same trust domain: a proxy holding only the new bundle can talk to
    // the node only if the node now presents an SVID from the new root.
    let rotated = Pki::new(&dir.path().join("rotated"));
    for f in ["svid.pem", "svid-key.pem", "bundle.pem"] {
        std::fs::copy(rotated.node.join(f), pki.node.join(f)).unwrap();
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !node.stderr().contains("reloaded the SVID and bundle") {
        assert!(
            std::time::Instant::now() < deadline,
            "no reload logged:\n{}",
            node.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let proxy = hbone_proxy(&rotated, &node, upstream, &[]);
    let d = pattern(5000);
    expect_reversed(&d, &exchange(proxy.addr("listener"), &d).unwrap());
}

#[test]
fn plain_proxy_from_flags_carries_bytes_and_refuses_under_fips_required() {
    let upstream = reverse_server(Duration::ZERO);
    let target = upstream.to_string();
    let proxy = Daemon::start(&[
        "proxy",
        "--listen",
        "127.0.0.1:0",
        "--target",
        &target,
        "--via",
        "plain",
        "--fips",
        "off",
    ]);
    let d = pattern(200_000);
    expect_reversed(&d, &exchange(proxy.addr("listener"), &d).unwrap());
    let out = support::fipstun(&[
        "proxy",
        "--listen",
        "127.0.0.1:0",
        "--target",
        &target,
        "--via",
        "plain",
        "--fips",
        "required",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(
            "command line: `listener[0].via`: `plain` is not FIPS-approved but fips = \"required\""
        ),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
