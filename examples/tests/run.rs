//! The example programs, run as a user runs them: identities on disk from the embedded CA, an
//! echo service on 127.0.0.1, `hbone-server` with a policy, `hbone-client` on stdin/stdout,
//! and `proxy` over HBONE and over WireGuard (against an in-process WireGuard node). Every
//! process is started here and killed by PID when its guard drops.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fipstun_identity::ca::{IssuerConfig, SvidIssuer};
use fipstun_identity::keys::KeyAlgorithm;
use fipstun_identity::spiffe::{SpiffeId, TrustDomain};
use fipstun_transport::policy::Policy;
use fipstun_transport::{Forwarder, ForwarderConfig, PlainTcp};
use fipstun_wireguard::{WgConfig, WgNode, WgPeer, WgPrivateKey};

const NODE_ID: &str = "spiffe://example.org/ns/istio-system/sa/node";
const WEB_ID: &str = "spiffe://example.org/ns/prod/sa/web";

/// A child process, killed when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start `exe` and wait for its `listening on ADDR` line.
fn start(exe: &str, args: &[&str]) -> (Running, SocketAddr) {
    let mut child = Command::new(exe)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .strip_prefix("listening on ")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("{exe} printed {line:?}"))
        .parse()
        .unwrap();
    (Running(child), addr)
}

fn write_identity(ca: &SvidIssuer, id: &str, dir: &Path) {
    let svid = ca
        .issue(&SpiffeId::parse(id).unwrap(), KeyAlgorithm::EcdsaP256, None)
        .unwrap();
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("svid.pem"), svid.chain_pem()).unwrap();
    std::fs::write(dir.join("svid-key.pem"), svid.key().to_pem().as_bytes()).unwrap();
    std::fs::write(dir.join("bundle.pem"), ca.bundle().to_pem()).unwrap();
}

/// An echo service on 127.0.0.1 that answers each connection until its EOF.
fn echo_service() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            std::thread::spawn(move || {
                let mut reader = conn.try_clone().unwrap();
                let _ = std::io::copy(&mut reader, &mut conn);
            });
        }
    });
    addr
}

fn echo_through(addr: SocketAddr, msg: &[u8]) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(msg).unwrap();
    let mut back = vec![0; msg.len()];
    s.read_exact(&mut back).unwrap();
    assert_eq!(back, msg);
}

fn hbone_client(
    client: &Path,
    node: SocketAddr,
    target: SocketAddr,
    input: &[u8],
) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hbone-client"))
        .args(["--identity", client.to_str().unwrap()])
        .args(["--node", &node.to_string(), "--node-id", NODE_ID])
        .arg(target.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn the_examples_tunnel_through_hbone_and_wireguard() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = SvidIssuer::generate_root(
        TrustDomain::new("example.org").unwrap(),
        KeyAlgorithm::EcdsaP256,
        Duration::from_secs(3600),
        IssuerConfig::default(),
    )
    .unwrap();
    let (node_dir, web_dir) = (tmp.path().join("node"), tmp.path().join("web"));
    write_identity(&ca, NODE_ID, &node_dir);
    write_identity(&ca, WEB_ID, &web_dir);
    let echo = echo_service();
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };

    // (b) The server allows web to reach the echo service and nothing else.
    let allow = format!("{WEB_ID}=127.0.0.1/32:{}", echo.port());
    let (_server, node) = start(
        env!("CARGO_BIN_EXE_hbone-server"),
        &[
            "--identity",
            node_dir.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--allow",
            &allow,
        ],
    );

    // (a) stdin goes through the tunnel to the echo service and comes back on stdout.
    let out = hbone_client(&web_dir, node, echo, b"hello through HBONE\n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"hello through HBONE\n");
    // A target the policy does not name is refused (403), and the client says so.
    let out = hbone_client(&web_dir, node, closed, b"x");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("403") || err.contains("orbidden"), "{err}");

    // (c) The proxy over HBONE.
    let (_proxy, local) = start(
        env!("CARGO_BIN_EXE_proxy"),
        &[
            "--listen",
            "127.0.0.1:0",
            "--target",
            &echo.to_string(),
            "hbone",
            "--identity",
            web_dir.to_str().unwrap(),
            "--node",
            &node.to_string(),
            "--node-id",
            NODE_ID,
        ],
    );
    echo_through(local, b"proxied over HBONE");

    // (c) The same proxy over WireGuard, against a WireGuard node in this process that
    // forwards what its policy allows.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (proxy_key, node_key) = (WgPrivateKey::generate(), WgPrivateKey::generate());
    let wg_node = rt.block_on(async {
        let node = WgNode::bind(
            WgConfig::new(
                node_key.clone(),
                "127.0.0.1:0".parse().unwrap(),
                "10.99.7.1".parse().unwrap(),
            )
            .accepting_inbound()
            .with_peer(
                WgPeer::new(proxy_key.public_key())
                    .with_allowed_ip("10.99.7.2/32".parse().unwrap()),
            ),
        )
        .await
        .unwrap();
        let fwd = Forwarder::new(
            PlainTcp,
            Policy::only_to([echo]),
            ForwarderConfig::default(),
        );
        let listener = node.listener();
        tokio::spawn(async move { fwd.run(listener).await });
        node
    });
    let key_file = tmp.path().join("wg.key");
    std::fs::write(&key_file, proxy_key.to_base64().as_bytes()).unwrap();
    let (_wg_proxy, wg_local) = start(
        env!("CARGO_BIN_EXE_proxy"),
        &[
            "--listen",
            "127.0.0.1:0",
            "--target",
            &echo.to_string(),
            "wireguard",
            "--key",
            key_file.to_str().unwrap(),
            "--peer",
            &node_key.public_key().to_string(),
            "--endpoint",
            &wg_node.local_addr().to_string(),
            "--address",
            "10.99.7.2",
        ],
    );
    echo_through(wg_local, b"proxied over WireGuard");
    drop(wg_node);
}
