//! A node that takes its SVID from a SPIFFE Workload API endpoint (what a SPIRE agent serves)
//! instead of files: the proxy reaches it over HBONE, and the node presents the streamed SVID.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use fipstun_planes::attestation::{RegistrationEntry, UnixSelector, WorkloadRegistry};
use fipstun_planes::proto::{X509Svid, X509SvidResponse};
use fipstun_planes::workload::WorkloadApiServer;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use support::{Daemon, Pki, exchange, fipstun, hbone_proxy, pattern, reverse_server, s, write};

/// The Workload API message for the SVID files `fipstun ca issue` wrote into `dir`.
fn response_from_files(dir: &Path, id: &str) -> X509SvidResponse {
    let der_chain = |file: &str| -> Vec<u8> {
        CertificateDer::pem_file_iter(dir.join(file))
            .unwrap()
            .flat_map(|c| c.unwrap().to_vec())
            .collect()
    };
    let key = PrivateKeyDer::from_pem_file(dir.join("svid-key.pem")).unwrap();
    X509SvidResponse {
        svids: vec![X509Svid {
            spiffe_id: id.into(),
            x509_svid: der_chain("svid.pem"),
            x509_svid_key: key.secret_der().to_vec(),
            bundle: der_chain("bundle.pem"),
            hint: String::new(),
        }],
        ..Default::default()
    }
}

/// A SPIFFE Workload API server (what a SPIRE agent serves) on a Unix socket in `dir` that
/// serves `node_id` to this test's uid, starting with `first`. Send the returned channel a new
/// response to rotate.
fn agent(
    dir: &Path,
    node_id: &'static str,
    first: X509SvidResponse,
) -> (
    PathBuf,
    tokio::sync::watch::Sender<Option<X509SvidResponse>>,
) {
    let socket = dir.join("agent.sock");
    let (tx, rx) = tokio::sync::watch::channel(Some(first));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let agent_socket = socket.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async move {
            let listener = tokio::net::UnixListener::bind(&agent_socket).unwrap();
            // The node runs as this test's user: register that uid for the node's identity.
            let uid =
                std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap());
            let entry = RegistrationEntry::new(
                fipstun_identity::spiffe::SpiffeId::parse(node_id).unwrap(),
                [UnixSelector::Uid(uid)],
            )
            .unwrap();
            let registry = WorkloadRegistry::new().with(entry);
            ready_tx.send(()).unwrap();
            let _ = WorkloadApiServer::new(rx, registry)
                .serve(listener, std::future::pending())
                .await;
        });
    });
    ready_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    (socket, tx)
}

#[test]
fn node_serves_hbone_with_an_svid_from_the_workload_api() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    // The node's SVID files are only the agent's source: the node never reads them.
    let update = response_from_files(&pki.node, pki.node_id);
    let (socket, _agent) = agent(dir.path(), pki.node_id, update);
    std::fs::remove_dir_all(&pki.node).unwrap();

    let upstream = reverse_server(Duration::ZERO);
    let uri = format!("unix://{}", s(&socket));
    let node = Daemon::start(&[
        "node",
        "--workload-api",
        &uri,
        "--hbone-listen",
        "127.0.0.1:0",
        "--allow-target",
        "127.0.0.1/32",
    ]);
    assert!(
        node.stderr().contains("SVID from the Workload API"),
        "{}",
        node.stderr()
    );
    let proxy = hbone_proxy(&pki, &node, upstream, &["--fips", "required"]);
    let data = pattern(256 * 1024);
    let back = exchange(proxy.addr("listener"), &data).unwrap();
    let mut expected = data.clone();
    expected.reverse();
    assert!(back == expected, "{} bytes back", back.len());
}

#[test]
fn identity_takes_files_or_the_workload_api_not_both() {
    let dir = tempfile::tempdir().unwrap();
    let both = write(
        dir.path(),
        "node.toml",
        "[identity]\ndir = \"pki\"\nworkload_api = \"unix:///run/agent.sock\"\n[hbone]\n",
    );
    let out = fipstun(&["node", "--config", s(&both)]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("`identity`: set one of dir, workload_api and istio_ca, not several"),
        "{err}"
    );
    let tcp = write(
        dir.path(),
        "tcp.toml",
        "[identity]\nworkload_api = \"tcp://127.0.0.1:8081\"\n[hbone]\n",
    );
    let out = fipstun(&["node", "--config", s(&tcp)]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("`identity.workload_api`"), "{err}");
}

/// Configured by environment only, as a SPIFFE workload is: no `[identity]`, no flag, just
/// `SPIFFE_ENDPOINT_SOCKET`. The agent rotates the node's SVID while streams run; the node
/// installs it live, and no stream fails.
#[test]
fn node_takes_spiffe_endpoint_socket_and_rotates_live() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let first = response_from_files(&pki.node, pki.node_id);
    let (socket, agent_tx) = agent(dir.path(), pki.node_id, first);
    let upstream = reverse_server(Duration::ZERO);
    let env = format!("unix://{}", s(&socket));
    let node = Daemon::start_with_env(
        &[
            "node",
            "--hbone-listen",
            "127.0.0.1:0",
            "--allow-target",
            "127.0.0.1/32",
        ],
        &[("SPIFFE_ENDPOINT_SOCKET", &env)],
    );
    assert!(
        node.stderr().contains("SVID from the Workload API"),
        "{}",
        node.stderr()
    );
    let proxy = hbone_proxy(&pki, &node, upstream, &[]);
    let data = pattern(64 * 1024);
    let mut expected = data.clone();
    expected.reverse();
    let listener = proxy.addr("listener");
    let run = |n: usize| {
        for _ in 0..n {
            assert!(exchange(listener, &data).unwrap() == expected);
        }
    };
    run(20);
    // A new SVID for the same ID, issued now: the agent streams it.
    let renewed = dir.path().join("renewed");
    let out = support::fipstun(&[
        "ca",
        "issue",
        "--ca",
        s(&dir.path().join("ca")),
        "--id",
        pki.node_id,
        "--out",
        s(&renewed),
    ]);
    assert!(out.status.success());
    agent_tx
        .send(Some(response_from_files(&renewed, pki.node_id)))
        .unwrap();
    let start = std::time::Instant::now();
    while !node.stderr().contains("SVID installed") {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no rotation logged:\n{}",
            node.stderr()
        );
        run(5);
    }
    run(20);
}
