//! The Workload API server against the standard clients of another language: py-spiffe (the
//! SPIFFE project's Python library) and bare grpcio, both on gRPC C-core, which sends the
//! percent-encoded socket path as `:authority` (h2 alone resets such streams). Also the
//! server's caller attestation, with Python workloads running as different users.
//!
//! The Python peer is `tests/workload_peer.py`; `./x setup` installs its packages.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use fipstun_identity::ca::{IssuerConfig, SvidIssuer};
use fipstun_identity::keys::{KeyAlgorithm, PrivateKey};
use fipstun_identity::spiffe::{SpiffeId, TrustDomain};
use fipstun_identity::svid::Svid;
use fipstun_planes::attestation::{RegistrationEntry, UnixSelector, WorkloadRegistry};
use fipstun_planes::proto::{X509Svid, X509SvidResponse};
use fipstun_planes::workload::WorkloadApiServer;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::UnixListener;
use tokio::process::{Child, ChildStdout, Command};
use tokio::sync::watch;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/workload_peer.py");
const WAIT: Duration = Duration::from_secs(30);

/// Fail (not skip) when the Python side is missing: `./x setup` installs it.
fn require_python_spiffe() {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import importlib.metadata as m, grpc, spiffe, cryptography; \
             print('spiffe', m.version('spiffe'), 'grpcio', grpc.__version__)",
        ])
        .output();
    match out {
        Ok(o) if o.status.success() => {
            eprintln!("python peer: {}", String::from_utf8_lossy(&o.stdout).trim());
        }
        Ok(o) => panic!(
            "python3 cannot import the `spiffe` / `grpc` packages (./x setup installs them: \
             pip install spiffe grpcio): {}",
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => panic!("python3 is not installed (./x setup installs it): {e}"),
    }
}

fn ca(td: &str) -> SvidIssuer {
    SvidIssuer::generate_root(
        TrustDomain::new(td).unwrap(),
        KeyAlgorithm::EcdsaP256,
        Duration::from_secs(86400),
        IssuerConfig::default(),
    )
    .unwrap()
}

fn id(s: &str) -> SpiffeId {
    SpiffeId::parse(s).unwrap()
}

fn pkcs8(key: &PrivateKey) -> Vec<u8> {
    match key.to_rustls() {
        PrivateKeyDer::Pkcs8(k) => k.secret_pkcs8_der().to_vec(),
        other => panic!("unexpected key form {other:?}"),
    }
}

fn concat(certs: &[CertificateDer<'_>]) -> Vec<u8> {
    certs.iter().flat_map(|c| c.to_vec()).collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn update(issuer: &SvidIssuer, svids: &[&Svid]) -> X509SvidResponse {
    X509SvidResponse {
        svids: svids
            .iter()
            .map(|svid| X509Svid {
                spiffe_id: svid.id().to_string(),
                x509_svid: concat(svid.chain()),
                x509_svid_key: pkcs8(svid.key()),
                bundle: concat(issuer.bundle().roots()),
                hint: String::new(),
            })
            .collect(),
        ..Default::default()
    }
}

fn my_uid() -> u32 {
    std::fs::metadata("/proc/self").unwrap().uid()
}

/// Bind the server in a directory and socket any user may reach (attestation, not file
/// permissions, decides who gets what here).
fn serve(
    dir: &Path,
    first: X509SvidResponse,
    registry: WorkloadRegistry,
) -> watch::Sender<Option<X509SvidResponse>> {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let sock = dir.join("agent.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).unwrap();
    let (tx, rx) = watch::channel(Some(first));
    tokio::spawn(WorkloadApiServer::new(rx, registry).serve(listener, std::future::pending()));
    tx
}

struct Peer {
    child: Child,
    lines: tokio::io::Lines<BufReader<ChildStdout>>,
    what: String,
}

impl Peer {
    fn start(dir: &Path, args: &[&str]) -> Self {
        let sock = dir.join("agent.sock");
        let mut cmd = Command::new("python3");
        cmd.arg(SCRIPT)
            .args(args)
            .arg("--socket")
            .arg(&sock)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("python3 runs (./x setup installs it)");
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut peer = Self {
            child,
            lines,
            what: args.join(" "),
        };
        peer.what.push_str(&format!(" (pid {:?})", peer.child.id()));
        peer
    }

    async fn next(&mut self) -> Value {
        let line = tokio::time::timeout(WAIT, self.lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("{}: no report within {WAIT:?}", self.what))
            .unwrap()
            .unwrap_or_else(|| panic!("{}: exited without a report", self.what));
        serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("{}: bad JSON ({e}): {line}", self.what))
    }

    async fn expect(&mut self, event: &str) -> Value {
        let report = self.next().await;
        assert_eq!(report["event"], event, "{}: {report}", self.what);
        report
    }

    /// Wait for the peer to exit by itself with `code`; killed (by its PID) on timeout.
    async fn exits(mut self, code: i32) {
        match tokio::time::timeout(WAIT, self.child.wait()).await {
            Ok(status) => assert_eq!(status.unwrap().code(), Some(code), "{}", self.what),
            Err(_) => {
                let _ = self.child.kill().await;
                panic!("{}: did not exit within {WAIT:?}", self.what);
            }
        }
    }
}

/// The report's SVIDs: one per entry, (id, chain hex).
fn svids(report: &Value) -> Vec<(String, String)> {
    report["svids"]
        .as_array()
        .unwrap_or_else(|| panic!("no svids in {report}"))
        .iter()
        .map(|s| {
            (
                s["id"].as_str().unwrap().to_string(),
                s["chain_hex"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// py-spiffe's own checks of an SVID it parsed: key pairs with the leaf, chain to the bundle.
fn assert_checked(report: &Value) {
    for svid in report["svids"].as_array().unwrap() {
        for check in ["key_matches", "chains_to_bundle", "valid_now"] {
            assert_eq!(svid[check], true, "{check} failed: {report}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn py_spiffe_fetches_the_x509_context_and_watches_rotations() {
    require_python_spiffe();
    let dir = tempfile::tempdir().unwrap();
    let issuer = ca("example.org");
    let partner = ca("partner.org");
    let web = id("spiffe://example.org/ns/prod/sa/web");
    let first = issuer.issue(&web, KeyAlgorithm::EcdsaP256, None).unwrap();
    let mut message = update(&issuer, &[&first]);
    message.federated_bundles = [(
        "spiffe://partner.org".to_string(),
        concat(partner.bundle().roots()),
    )]
    .into();
    let registry = WorkloadRegistry::new()
        .with(RegistrationEntry::new(web.clone(), [UnixSelector::Uid(my_uid())]).unwrap());
    let updates = serve(dir.path(), message.clone(), registry);

    let mut peer = Peer::start(dir.path(), &["spiffe", "--updates", "2"]);
    peer.expect("started").await;
    let fetched = peer.expect("fetch").await;
    assert_eq!(
        svids(&fetched),
        [(web.to_string(), hex(&concat(first.chain())))]
    );
    assert_checked(&fetched);
    assert_eq!(
        fetched["bundles"],
        serde_json::json!(["example.org", "partner.org"])
    );

    // The watch stream starts with the current context, then the rotation arrives on it.
    let watched = peer.expect("update").await;
    assert_eq!(svids(&watched), svids(&fetched));
    let second = issuer.issue(&web, KeyAlgorithm::EcdsaP384, None).unwrap();
    message.svids = update(&issuer, &[&second]).svids;
    updates.send_replace(Some(message));
    let rotated = peer.expect("update").await;
    assert_eq!(
        svids(&rotated),
        [(web.to_string(), hex(&concat(second.chain())))]
    );
    assert_checked(&rotated);
    peer.exits(0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcio_is_served_with_the_authorities_unix_socket_clients_send() {
    require_python_spiffe();
    let dir = tempfile::tempdir().unwrap();
    let issuer = ca("example.org");
    let web = id("spiffe://example.org/ns/prod/sa/web");
    let first = issuer.issue(&web, KeyAlgorithm::EcdsaP256, None).unwrap();
    let registry = WorkloadRegistry::new()
        .with(RegistrationEntry::new(web.clone(), [UnixSelector::Uid(my_uid())]).unwrap());
    let updates = serve(dir.path(), update(&issuer, &[&first]), registry);
    let expected_first = vec![(web.to_string(), hex(&concat(first.chain())))];

    // C-core's default (the percent-encoded socket path), watched across a rotation.
    let mut peer = Peer::start(dir.path(), &["grpcio", "--updates", "2"]);
    peer.expect("started").await;
    assert_eq!(svids(&peer.expect("update").await), expected_first);
    let second = issuer.issue(&web, KeyAlgorithm::EcdsaP256, None).unwrap();
    updates.send_replace(Some(update(&issuer, &[&second])));
    assert_eq!(
        svids(&peer.expect("update").await),
        [(web.to_string(), hex(&concat(second.chain())))]
    );
    peer.exits(0).await;

    // grpc-java's and grpc-swift's form (the raw path), an empty one, and grpc-go's.
    let raw_path = dir.path().join("agent.sock").display().to_string();
    for authority in [raw_path.as_str(), "", "localhost"] {
        let mut peer = Peer::start(dir.path(), &["grpcio", "--authority", authority]);
        peer.expect("started").await;
        let report = peer.expect("update").await;
        assert_eq!(svids(&report)[0].0, web.to_string(), "{authority}");
        peer.exits(0).await;
    }
}

/// The identity a caller is served and its SVID.
type Served<'a> = (&'a SpiffeId, &'a Svid);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_workloads_are_served_by_uid_and_gid_and_strangers_refused() {
    require_python_spiffe();
    assert_eq!(
        my_uid(),
        0,
        "this test starts workloads as other users and must run as root (CI and ./x test do)"
    );
    let dir = tempfile::tempdir().unwrap();
    let issuer = ca("example.org");
    let web = id("spiffe://example.org/ns/prod/sa/web");
    let db = id("spiffe://example.org/ns/prod/sa/db");
    let batch = id("spiffe://example.org/ns/batch/sa/job");
    let (w, d, b) = (
        issuer.issue(&web, KeyAlgorithm::EcdsaP256, None).unwrap(),
        issuer.issue(&db, KeyAlgorithm::EcdsaP256, None).unwrap(),
        issuer.issue(&batch, KeyAlgorithm::EcdsaP256, None).unwrap(),
    );
    let registry = WorkloadRegistry::new()
        .with(RegistrationEntry::new(web.clone(), [UnixSelector::Uid(1000)]).unwrap())
        .with(RegistrationEntry::new(db.clone(), [UnixSelector::Uid(1001)]).unwrap())
        .with(
            RegistrationEntry::new(
                batch.clone(),
                [UnixSelector::Uid(1002), UnixSelector::Gid(2000)],
            )
            .unwrap(),
        );
    let _updates = serve(dir.path(), update(&issuer, &[&d, &b, &w]), registry);

    // (uid, gid, the only SVID it may get; None: refused)
    let callers: [(u32, u32, Option<Served<'_>>); 5] = [
        (1000, 1000, Some((&web, &w))),
        (1001, 1001, Some((&db, &d))),
        (1002, 2000, Some((&batch, &b))),
        // The group alone, or the uid alone, is not the whole entry.
        (1003, 2000, None),
        (1002, 1002, None),
    ];
    let mut peers = Vec::new();
    for (uid, gid, _) in &callers {
        let (uid, gid) = (uid.to_string(), gid.to_string());
        peers.push(Peer::start(
            dir.path(),
            &["spiffe", "--uid", &uid, "--gid", &gid],
        ));
    }
    for ((uid, gid, allowed), mut peer) in callers.into_iter().zip(peers) {
        let started = peer.expect("started").await;
        assert_eq!(
            (started["uid"].as_u64(), started["gid"].as_u64()),
            (Some(uid.into()), Some(gid.into())),
            "the peer did not drop to its user: {started}"
        );
        match allowed {
            Some((id, svid)) => {
                let fetched = peer.expect("fetch").await;
                assert_eq!(
                    svids(&fetched),
                    [(id.to_string(), hex(&concat(svid.chain())))],
                    "uid {uid} gid {gid}"
                );
                assert_checked(&fetched);
                let watched = peer.expect("update").await;
                assert_eq!(svids(&watched), svids(&fetched), "uid {uid} gid {gid}");
                peer.exits(0).await;
            }
            None => {
                let refused = peer.expect("error").await;
                assert_eq!(
                    refused["code"], "PERMISSION_DENIED",
                    "uid {uid} gid {gid}: {refused}"
                );
                peer.exits(3).await;
            }
        }
    }
}
