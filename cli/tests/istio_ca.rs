//! Identity from the Istio CA API, configured only by TOML as a user would: `fipstun ca serve`
//! signs CSRs from a node and a proxy (`[identity] istio_ca`), both rotate their short-lived
//! SVIDs several times while streams run through them, and no stream fails.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use support::{Daemon, exchange, fipstun, pattern, reverse_server, s, write};

const NODE_ID: &str = "spiffe://example.org/ns/default/sa/node";
const PROXY_ID: &str = "spiffe://example.org/ns/default/sa/proxy";
const SERVER_ID: &str = "spiffe://example.org/ns/istio-system/sa/istiod";

/// `[identity]` for `id` from the CA at `ca`, as the README shows it.
fn identity_toml(ca: &str, id: &str, token: &str) -> String {
    format!(
        "[identity]\nid = \"{id}\"\nttl = \"12s\"\n\
         istio_ca = {{ address = \"{ca}\", token_file = \"{token}\", root_cert = \"ca/bundle.pem\", \
         server_id = \"{SERVER_ID}\" }}\n"
    )
}

fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

fn start_ca(dir: &Path) -> Daemon {
    let out = fipstun(&[
        "ca",
        "init",
        "--trust-domain",
        "example.org",
        "--out",
        s(&dir.join("ca")),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    write(dir, "node-token", "node-secret-token\n");
    write(dir, "proxy-token", "proxy-secret-token\n");
    let node_token = format!("{NODE_ID}={}", s(&dir.join("node-token")));
    let proxy_token = format!("{PROXY_ID}={}", s(&dir.join("proxy-token")));
    Daemon::start(&[
        "ca",
        "serve",
        "--ca",
        s(&dir.join("ca")),
        "--listen",
        "127.0.0.1:0",
        "--token",
        &node_token,
        "--token",
        &proxy_token,
        "--ttl",
        "12s",
    ])
}

#[test]
fn node_and_proxy_rotate_istio_ca_svids_under_load_without_a_failed_stream() {
    let dir = tempfile::tempdir().unwrap();
    let ca = start_ca(dir.path());
    let ca_addr = ca.addr("listen").to_string();
    assert!(
        ca.ready.contains(&format!("server_id={SERVER_ID}")),
        "{}",
        ca.ready
    );

    let upstream = reverse_server(Duration::ZERO);
    let node_cfg = write(
        dir.path(),
        "node.toml",
        &format!(
            "allow_targets = [\"127.0.0.1/32\"]\n{}[hbone]\nlisten = \"127.0.0.1:0\"\nallow = [\"{PROXY_ID}\"]\n",
            identity_toml(&ca_addr, NODE_ID, "node-token")
        ),
    );
    let node = Daemon::start(&["node", "--config", s(&node_cfg)]);
    assert!(
        node.stderr().contains("SVID from the Istio CA"),
        "{}",
        node.stderr()
    );
    let proxy_cfg = write(
        dir.path(),
        "proxy.toml",
        &format!(
            "{}[[listener]]\nlisten = \"127.0.0.1:0\"\ntarget = \"{upstream}\"\nvia = \"hbone\"\n\
             node = \"{}\"\nnode_id = \"{NODE_ID}\"\n",
            identity_toml(&ca_addr, PROXY_ID, "proxy-token"),
            node.addr("hbone")
        ),
    );
    let proxy = Daemon::start(&["proxy", "--config", s(&proxy_cfg)]);
    let listener = proxy.addr("listener");

    // Four clients in a loop for 20 s: at 12 s per SVID (renewed at about half its life),
    // node and proxy each rotate at least twice, and pooled connections outlive no SVID.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let workers: Vec<_> = (0..4)
        .map(|i| {
            let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
            std::thread::spawn(move || {
                let data = pattern(4096 + i * 1000);
                let mut expected = data.clone();
                expected.reverse();
                let mut errors = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    match exchange(listener, &data) {
                        Ok(back) if back == expected => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(back) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            errors.push(format!("{} bytes back", back.len()));
                        }
                        Err(e) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            errors.push(e.to_string());
                        }
                    }
                }
                errors
            })
        })
        .collect();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(250));
    }
    stop.store(true, Ordering::Relaxed);
    let errors: Vec<String> = workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();

    let (node_log, proxy_log) = (node.stderr(), proxy.stderr());
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert!(ok > 100, "only {ok} streams in 20 s");
    assert_eq!(
        failed,
        0,
        "{failed} of {} streams failed: {errors:?}\nnode:\n{node_log}\nproxy:\n{proxy_log}",
        ok + failed
    );
    for (who, log) in [("node", &node_log), ("proxy", &proxy_log)] {
        let rotations = count(log, "SVID installed");
        assert!(
            rotations >= 2,
            "{who} rotated {rotations} times in 20 s:\n{log}"
        );
    }
}

#[test]
fn a_wrong_token_or_server_id_fails_start_up_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let ca = start_ca(dir.path());
    let ca_addr = ca.addr("listen").to_string();
    write(dir.path(), "wrong-token", "not-a-known-token\n");
    let cfg = write(
        dir.path(),
        "node.toml",
        &format!(
            "{}[hbone]\nlisten = \"127.0.0.1:0\"\n",
            identity_toml(&ca_addr, NODE_ID, "wrong-token")
        ),
    );
    let out = fipstun(&["node", "--config", s(&cfg)]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("did not issue") && err.contains(NODE_ID),
        "{err}"
    );

    // A token for another identity: the CA issues only what the token authenticates.
    let cfg = write(
        dir.path(),
        "node2.toml",
        &format!(
            "{}[hbone]\nlisten = \"127.0.0.1:0\"\n",
            identity_toml(&ca_addr, NODE_ID, "proxy-token")
        ),
    );
    let out = fipstun(&["node", "--config", s(&cfg)]);
    assert!(!out.status.success());

    // Missing keys name themselves.
    let cfg = write(
        dir.path(),
        "node3.toml",
        "[identity]\nistio_ca = { address = \"127.0.0.1:15012\" }\n[hbone]\n",
    );
    let out = fipstun(&["node", "--config", s(&cfg)]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("`identity.id`"), "{err}");
}

#[test]
fn spiffe_endpoint_socket_is_the_identity_when_none_is_configured() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(
        dir.path(),
        "node.toml",
        "[hbone]\nlisten = \"127.0.0.1:0\"\n",
    );
    // Nothing listens there: start-up waits for the first SVID and names the socket. A short
    // check: the error must name the env's socket, not "needs [identity]".
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fipstun"))
        .args(["node", "--config", s(&cfg)])
        .env("SPIFFE_ENDPOINT_SOCKET", "tcp://127.0.0.1:1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("SPIFFE_ENDPOINT_SOCKET"), "{err}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fipstun"))
        .args(["node", "--config", s(&cfg)])
        .env_remove("SPIFFE_ENDPOINT_SOCKET")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("needs [identity]"), "{err}");
}
