//! The Workload API client against a Workload API server started here on a Unix socket in a
//! tempdir, serving SVIDs from the embedded CA; and the server's caller attestation.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fipstun_identity::bundle::{BundleSet, TrustStore};
use fipstun_identity::ca::{IssuerConfig, SvidIssuer};
use fipstun_identity::keys::{KeyAlgorithm, PrivateKey};
use fipstun_identity::policy::CryptoPolicy;
use fipstun_identity::spiffe::{SpiffeId, TrustDomain};
use fipstun_identity::svid::{Svid, SvidError};
use fipstun_identity::tls::{Authorizer, SvidSlot, client_config, server_config};
use fipstun_planes::attestation::{RegistrationEntry, UnixSelector, WorkloadRegistry};
use fipstun_planes::proto::{
    FETCH_X509_SVID, WORKLOAD_HEADER, X509Svid, X509SvidRequest, X509SvidResponse,
};
use fipstun_planes::response::{X509Context, bundles_from_response};
use fipstun_planes::workload::{
    EndpointSocket, SourceStatus, WorkloadApiClient, WorkloadApiServer, WorkloadConfig,
    WorkloadX509Source,
};
use fipstun_planes::{Error, ResponseError};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::UnixListener;
use tokio::sync::{oneshot, watch};

/// Whether a refusal has the expected reason.
type Verdict = fn(&ResponseError) -> bool;

const WAIT: Duration = Duration::from_secs(15);

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

fn entry(issuer: &SvidIssuer, svid: &Svid) -> X509Svid {
    X509Svid {
        spiffe_id: svid.id().to_string(),
        x509_svid: concat(svid.chain()),
        x509_svid_key: pkcs8(svid.key()),
        bundle: concat(issuer.bundle().roots()),
        hint: "internal".into(),
    }
}

fn message(issuer: &SvidIssuer, svid: &Svid) -> X509SvidResponse {
    X509SvidResponse {
        svids: vec![entry(issuer, svid)],
        ..Default::default()
    }
}

/// This test process's effective uid: what the server reads from the socket for our clients.
fn my_uid() -> u32 {
    std::fs::metadata("/proc/self").unwrap().uid()
}

/// A registry giving every identity these tests serve to callers running as this process.
fn registry_for_me() -> WorkloadRegistry {
    [
        "spiffe://example.org/ns/prod/sa/web",
        "spiffe://example.org/web",
        "spiffe://example.org/a",
        "spiffe://example.org/db",
    ]
    .into_iter()
    .fold(WorkloadRegistry::new(), |r, s| {
        r.with(RegistrationEntry::new(id(s), [UnixSelector::Uid(my_uid())]).unwrap())
    })
}

struct Server {
    updates: watch::Sender<Option<X509SvidResponse>>,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), Error>>,
}

fn serve(path: &Path, first: Option<X509SvidResponse>) -> Server {
    serve_to(path, first, registry_for_me())
}

fn serve_to(path: &Path, first: Option<X509SvidResponse>, registry: WorkloadRegistry) -> Server {
    let listener = UnixListener::bind(path).unwrap();
    let (updates, rx) = watch::channel(first);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(WorkloadApiServer::new(rx, registry).serve(listener, async {
        let _ = stopped.await;
    }));
    Server {
        updates,
        stop,
        task,
    }
}

impl Server {
    async fn shut_down(self, path: &Path) {
        // Dropping the sender ends the open streams; then the server drains and exits.
        drop(self.updates);
        let _ = self.stop.send(());
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("server stops")
            .unwrap()
            .unwrap();
        std::fs::remove_file(path).unwrap();
    }
}

fn config(path: &Path) -> WorkloadConfig {
    let mut c = WorkloadConfig::new(EndpointSocket::from_path(path));
    c.initial_backoff = Duration::from_millis(50);
    c.max_backoff = Duration::from_millis(400);
    c
}

async fn wait_until(source: &WorkloadX509Source, what: &str, f: impl Fn(&SourceStatus) -> bool) {
    let mut rx = source.subscribe();
    tokio::time::timeout(WAIT, async {
        loop {
            if f(&rx.borrow_and_update()) {
                return;
            }
            rx.changed().await.unwrap();
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}; status {:?}", source.status()));
}

fn served_leaf(source: &WorkloadX509Source) -> CertificateDer<'static> {
    source
        .slot()
        .current()
        .expect("an SVID is installed")
        .certified
        .cert[0]
        .clone()
}

#[test]
fn endpoint_socket_accepts_only_unix_socket_uris() {
    assert_eq!(
        EndpointSocket::parse("unix:///run/spire/agent.sock")
            .unwrap()
            .path(),
        Path::new("/run/spire/agent.sock")
    );
    assert_eq!(
        EndpointSocket::parse("unix:/run/spire/agent.sock")
            .unwrap()
            .path(),
        Path::new("/run/spire/agent.sock")
    );
    for bad in [
        "tcp://127.0.0.1:8081",
        "unix://host/agent.sock",
        "unix:relative.sock",
        "/run/spire/agent.sock",
        "unix:///a.sock?x=1",
        "",
    ] {
        assert!(
            matches!(
                EndpointSocket::parse(bad),
                Err(Error::EndpointAddress { .. })
            ),
            "{bad:?} should be refused"
        );
    }
}

#[tokio::test]
async fn svids_arrive_and_rotations_are_picked_up() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("agent.sock");
    let issuer = ca("example.org");
    let web = id("spiffe://example.org/ns/prod/sa/web");
    let first = issuer.issue(&web, KeyAlgorithm::EcdsaP256, None).unwrap();
    let server = serve(&sock, Some(message(&issuer, &first)));

    let source = WorkloadX509Source::start(config(&sock));
    assert_eq!(source.wait_for_svid(WAIT).await.unwrap(), web);
    assert_eq!(served_leaf(&source), first.chain()[0]);
    let bundles = source.trust().current();
    assert_eq!(
        bundles.get(issuer.trust_domain()).unwrap().roots(),
        issuer.bundle().roots()
    );

    // The agent rotates: the slot serves the new SVID without the client reconnecting.
    let second = issuer.issue(&web, KeyAlgorithm::EcdsaP384, None).unwrap();
    server.updates.send_replace(Some(message(&issuer, &second)));
    wait_until(&source, "the rotation", |s| s.installed == 2).await;
    assert_eq!(served_leaf(&source), second.chain()[0]);
    let status = source.status();
    assert_eq!((status.streams, status.refused), (1, 0));
    server.shut_down(&sock).await;
}

#[tokio::test]
async fn requests_without_the_security_header_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("agent.sock");
    let issuer = ca("example.org");
    let svid = issuer
        .issue(&id("spiffe://example.org/a"), KeyAlgorithm::EcdsaP256, None)
        .unwrap();
    let server = serve(&sock, Some(message(&issuer, &svid)));

    let path = sock.clone();
    let channel = tonic::transport::Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_: http::Uri| {
            let path = path.clone();
            async move {
                tokio::net::UnixStream::connect(path)
                    .await
                    .map(hyper_util::rt::TokioIo::new)
            }
        }))
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    for header in [None, Some("false")] {
        let mut request = tonic::Request::new(X509SvidRequest {});
        if let Some(v) = header {
            request
                .metadata_mut()
                .insert(WORKLOAD_HEADER, v.parse().unwrap());
        }
        grpc.ready().await.unwrap();
        let codec: tonic_prost::ProstCodec<X509SvidRequest, X509SvidResponse> = Default::default();
        let status = grpc
            .server_streaming(
                request,
                http::uri::PathAndQuery::from_static(FETCH_X509_SVID),
                codec,
            )
            .await
            .expect_err("refused without the header");
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{header:?}");
    }

    // With the header the same server answers.
    let mut request = tonic::Request::new(X509SvidRequest {});
    request
        .metadata_mut()
        .insert(WORKLOAD_HEADER, "true".parse().unwrap());
    grpc.ready().await.unwrap();
    let codec: tonic_prost::ProstCodec<X509SvidRequest, X509SvidResponse> = Default::default();
    let mut stream = grpc
        .server_streaming(
            request,
            http::uri::PathAndQuery::from_static(FETCH_X509_SVID),
            codec,
        )
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(first.svids[0].spiffe_id, "spiffe://example.org/a");
    drop(stream);
    server.shut_down(&sock).await;
}

#[tokio::test]
async fn the_client_reconnects_after_the_server_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("agent.sock");
    let issuer = ca("example.org");
    let web = id("spiffe://example.org/web");
    let first = issuer.issue(&web, KeyAlgorithm::EcdsaP256, None).unwrap();
    let server = serve(&sock, Some(message(&issuer, &first)));
    let source = WorkloadX509Source::start(config(&sock));
    source.wait_for_svid(WAIT).await.unwrap();

    server.shut_down(&sock).await;
    wait_until(&source, "the loss to be noticed", |s| {
        s.last_error.as_ref().is_some_and(Error::is_retryable)
    })
    .await;
    // While the agent is down the last good SVID keeps being served.
    assert_eq!(served_leaf(&source), first.chain()[0]);

    let second = issuer.issue(&web, KeyAlgorithm::EcdsaP256, None).unwrap();
    let server = serve(&sock, Some(message(&issuer, &second)));
    wait_until(&source, "the reconnect", |s| s.installed == 2).await;
    assert_eq!(served_leaf(&source), second.chain()[0]);
    assert_eq!(source.status().streams, 2);
    server.shut_down(&sock).await;
}

#[tokio::test]
async fn a_missing_agent_is_a_connect_error() {
    let dir = tempfile::tempdir().unwrap();
    let source = WorkloadX509Source::start(config(&dir.path().join("nobody.sock")));
    let err = source
        .wait_for_svid(Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Connect { .. }), "{err:?}");
    assert!(source.slot().current().is_none());
}

#[tokio::test]
async fn bad_updates_are_refused_and_the_previous_svid_stays() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("agent.sock");
    let issuer = ca("example.org");
    let web = id("spiffe://example.org/web");
    let good = issuer.issue(&web, KeyAlgorithm::EcdsaP256, None).unwrap();
    let server = serve(&sock, Some(message(&issuer, &good)));
    let mut cfg = config(&sock);
    cfg.expected_id = Some(web.clone());
    let source = WorkloadX509Source::start(cfg);
    source.wait_for_svid(WAIT).await.unwrap();

    let fresh = || issuer.issue(&web, KeyAlgorithm::EcdsaP256, None).unwrap();
    let other = id("spiffe://example.org/db");
    let mut cases: Vec<(&str, X509SvidResponse, Verdict)> = Vec::new();

    // An update without SVIDs never reaches the client through this server (it waits for
    // one that has the caller's); the client's check is still there for other agents.
    assert_eq!(
        X509Context::from_response(&X509SvidResponse::default(), None, SystemTime::now())
            .unwrap_err(),
        ResponseError::NoSvid
    );

    let mut m = message(&issuer, &fresh());
    m.svids[0].x509_svid.clear();
    cases.push(("empty chain", m, |e| *e == ResponseError::EmptyChain));

    // The entry claims web, but the certificate is for db.
    let db = issuer.issue(&other, KeyAlgorithm::EcdsaP256, None).unwrap();
    let mut m = message(&issuer, &db);
    m.svids[0].spiffe_id = web.to_string();
    cases.push(("wrong SAN", m, |e| {
        matches!(e, ResponseError::IdMismatch { certified, .. } if certified.as_str() == "spiffe://example.org/db")
    }));

    // A valid SVID, but not the identity this workload is configured to take.
    cases.push(("unexpected identity", message(&issuer, &db), |e| {
        matches!(e, ResponseError::UnexpectedId { got, .. } if got == "spiffe://example.org/db")
    }));

    let expired = issuer
        .issue_at(
            &web,
            KeyAlgorithm::EcdsaP256,
            Some(Duration::from_secs(60)),
            SystemTime::now() - Duration::from_secs(3600),
        )
        .unwrap();
    cases.push(("expired", message(&issuer, &expired), |e| {
        matches!(e, ResponseError::Invalid(SvidError::Expired { .. }))
    }));

    let mut m = message(&issuer, &fresh());
    m.svids[0].x509_svid_key = pkcs8(&PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap());
    cases.push(("key mismatch", m, |e| *e == ResponseError::KeyMismatch));

    let ed25519 =
        aws_lc_rs::signature::Ed25519KeyPair::generate_pkcs8(&aws_lc_rs::rand::SystemRandom::new())
            .unwrap();
    let mut m = message(&issuer, &fresh());
    m.svids[0].x509_svid_key = ed25519.as_ref().to_vec();
    cases.push(("Ed25519 key", m, |e| {
        matches!(e, ResponseError::UnsupportedKey(_))
    }));

    // Signed by a CA of the same name that is not in the bundle sent along.
    let impostor = ca("example.org");
    let mut m = message(
        &issuer,
        &impostor.issue(&web, KeyAlgorithm::EcdsaP256, None).unwrap(),
    );
    m.svids[0].bundle = concat(issuer.bundle().roots());
    cases.push(("foreign issuer", m, |e| {
        matches!(e, ResponseError::Invalid(SvidError::UnknownIssuer(_)))
    }));

    let mut m = message(&issuer, &fresh());
    m.svids[0].x509_svid.truncate(40);
    cases.push(("truncated chain", m, |e| {
        matches!(e, ResponseError::MalformedCertificate(_))
    }));

    let mut m = message(&issuer, &fresh());
    m.svids[0].bundle.clear();
    cases.push(("no bundle", m, |e| {
        matches!(e, ResponseError::BadBundle { .. })
    }));

    for (n, (name, bad, expected)) in cases.into_iter().enumerate() {
        server.updates.send_replace(Some(bad));
        wait_until(&source, name, |s| s.refused == n as u64 + 1).await;
        let status = source.status();
        match &status.last_error {
            Some(Error::BadResponse { reason, .. }) => {
                assert!(expected(reason), "{name}: unexpected reason {reason:?}")
            }
            other => panic!("{name}: expected a refused response, got {other:?}"),
        }
        assert_eq!(
            served_leaf(&source),
            good.chain()[0],
            "{name}: SVID replaced"
        );
        assert_eq!(status.installed, 1, "{name}");
    }

    // A good update after all that is taken.
    let next = fresh();
    server.updates.send_replace(Some(message(&issuer, &next)));
    wait_until(&source, "the good update", |s| s.installed == 2).await;
    assert_eq!(served_leaf(&source), next.chain()[0]);
    server.shut_down(&sock).await;
}

#[tokio::test]
async fn messages_over_the_size_bound_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("agent.sock");
    let issuer = ca("example.org");
    let svid = issuer
        .issue(
            &id("spiffe://example.org/web"),
            KeyAlgorithm::EcdsaP256,
            None,
        )
        .unwrap();
    let mut big = message(&issuer, &svid);
    big.crl = vec![vec![0u8; 64 * 1024]];
    let server = serve(&sock, Some(big));
    let mut cfg = config(&sock);
    cfg.max_message_bytes = 16 * 1024;
    let source = WorkloadX509Source::start(cfg);
    wait_until(&source, "the oversized message to be refused", |s| {
        s.last_error.is_some() && s.streams >= 1
    })
    .await;
    assert!(
        matches!(
            source.status().last_error,
            Some(Error::Status {
                code: tonic::Code::OutOfRange,
                ..
            })
        ),
        "{:?}",
        source.status()
    );
    assert!(source.slot().current().is_none());
    server.shut_down(&sock).await;
}

/// Run a TLS handshake in memory; returns the leaf the client saw.
fn handshake(
    client: &Arc<rustls::ClientConfig>,
    server: &Arc<rustls::ServerConfig>,
) -> Result<CertificateDer<'static>, rustls::Error> {
    let mut c = rustls::ClientConnection::new(client.clone(), "web".try_into().unwrap()).unwrap();
    let mut s = rustls::ServerConnection::new(server.clone()).unwrap();
    while c.is_handshaking() || s.is_handshaking() {
        let mut buf = Vec::new();
        while c.wants_write() {
            c.write_tls(&mut buf).unwrap();
        }
        s.read_tls(&mut &buf[..]).unwrap();
        s.process_new_packets()?;
        buf.clear();
        while s.wants_write() {
            s.write_tls(&mut buf).unwrap();
        }
        c.read_tls(&mut &buf[..]).unwrap();
        c.process_new_packets()?;
    }
    Ok(c.peer_certificates().unwrap()[0].clone().into_owned())
}

#[tokio::test]
async fn configs_built_once_follow_workload_api_rotations() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("agent.sock");
    let issuer = ca("example.org");
    let web = id("spiffe://example.org/web");
    let first = issuer.issue(&web, KeyAlgorithm::EcdsaP256, None).unwrap();
    let server = serve(&sock, Some(message(&issuer, &first)));
    let source = WorkloadX509Source::start(config(&sock));

    // Both configs are built once; the server's reads the source's slot and trust store.
    let policy = CryptoPolicy::default();
    let server_config = Arc::new(
        server_config(
            &policy,
            source.trust(),
            Authorizer::trust_domains([TrustDomain::new("example.org").unwrap()]),
            source.slot(),
        )
        .unwrap(),
    );
    let client_slot = Arc::new(SvidSlot::new());
    let client_id = id("spiffe://example.org/client");
    client_slot
        .set(
            &issuer
                .issue(&client_id, KeyAlgorithm::EcdsaP256, None)
                .unwrap(),
        )
        .unwrap();
    let client_trust = TrustStore::new(BundleSet::new().with(issuer.bundle().clone()));
    let client_config = Arc::new(
        client_config(
            &policy,
            client_trust,
            Authorizer::ids([web.clone()]),
            client_slot,
        )
        .unwrap(),
    );

    source.wait_for_svid(WAIT).await.unwrap();
    assert_eq!(
        handshake(&client_config, &server_config).unwrap(),
        first.chain()[0]
    );

    let second = issuer.issue(&web, KeyAlgorithm::EcdsaP256, None).unwrap();
    server.updates.send_replace(Some(message(&issuer, &second)));
    wait_until(&source, "the rotation", |s| s.installed == 2).await;
    assert_eq!(
        handshake(&client_config, &server_config).unwrap(),
        second.chain()[0]
    );

    // A move to a new CA: the server's trust store (the Workload API's) no longer holds the
    // client's root, and the client does not trust the new one, so the handshake fails.
    let next_ca = ca("example.org");
    let third = next_ca.issue(&web, KeyAlgorithm::EcdsaP256, None).unwrap();
    server.updates.send_replace(Some(message(&next_ca, &third)));
    wait_until(&source, "the bundle rotation", |s| s.installed == 3).await;
    assert!(handshake(&client_config, &server_config).is_err());
    server.shut_down(&sock).await;
}

#[tokio::test]
async fn federated_bundles_are_trusted_but_cannot_replace_the_own_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("agent.sock");
    let issuer = ca("example.org");
    let partner = ca("partner.org");
    let impostor = ca("example.org");
    let web = id("spiffe://example.org/web");
    let mut m = message(
        &issuer,
        &issuer.issue(&web, KeyAlgorithm::EcdsaP256, None).unwrap(),
    );
    m.federated_bundles = [
        (
            "spiffe://partner.org".to_string(),
            concat(partner.bundle().roots()),
        ),
        ("example.org".to_string(), concat(impostor.bundle().roots())),
    ]
    .into();
    let server = serve(&sock, Some(m.clone()));
    let source = WorkloadX509Source::start(config(&sock));
    source.wait_for_svid(WAIT).await.unwrap();
    let bundles = source.trust().current();
    assert_eq!(
        bundles.get(partner.trust_domain()).unwrap().roots(),
        partner.bundle().roots()
    );
    assert_eq!(
        bundles.get(issuer.trust_domain()).unwrap().roots(),
        issuer.bundle().roots(),
        "a federated entry replaced the SVID's own bundle"
    );

    // A federated bundle that does not parse refuses the whole update.
    m.federated_bundles = [("partner.org".to_string(), vec![0x30, 0x03, 1, 2, 3])].into();
    server.updates.send_replace(Some(m));
    wait_until(&source, "the refusal", |s| s.refused == 1).await;
    assert!(matches!(
        source.status().last_error,
        Some(Error::BadResponse {
            reason: ResponseError::BadBundle { .. },
            ..
        })
    ));
    server.shut_down(&sock).await;
}

#[tokio::test]
async fn bundles_stream_on_their_own() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("agent.sock");
    let issuer = ca("example.org");
    let partner = ca("partner.org");
    let mut m = message(
        &issuer,
        &issuer
            .issue(
                &id("spiffe://example.org/web"),
                KeyAlgorithm::EcdsaP256,
                None,
            )
            .unwrap(),
    );
    m.federated_bundles = [(
        "spiffe://partner.org".to_string(),
        concat(partner.bundle().roots()),
    )]
    .into();
    let server = serve(&sock, Some(m));
    let mut client = WorkloadApiClient::connect(
        &EndpointSocket::from_path(&sock),
        fipstun_planes::DEFAULT_MAX_MESSAGE_BYTES,
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    let mut stream = client.fetch_x509_bundles().await.unwrap();
    let first = stream.message().await.unwrap().unwrap();
    let set = bundles_from_response(&first).unwrap();
    assert_eq!(
        set.get(issuer.trust_domain()).unwrap().roots(),
        issuer.bundle().roots()
    );
    assert_eq!(
        set.get(partner.trust_domain()).unwrap().roots(),
        partner.bundle().roots()
    );

    // The CA moves to a new root: the bundle stream follows.
    let next = ca("example.org");
    server.updates.send_replace(Some(message(
        &next,
        &next
            .issue(
                &id("spiffe://example.org/web"),
                KeyAlgorithm::EcdsaP256,
                None,
            )
            .unwrap(),
    )));
    let second = bundles_from_response(&stream.message().await.unwrap().unwrap()).unwrap();
    assert_eq!(
        second.get(issuer.trust_domain()).unwrap().roots(),
        next.bundle().roots()
    );

    assert!(matches!(
        bundles_from_response(&Default::default()),
        Err(ResponseError::BadBundle { .. })
    ));
    drop(stream);
    server.shut_down(&sock).await;
}

fn two_svid_update(issuer: &SvidIssuer, first: &Svid, second: &Svid) -> X509SvidResponse {
    X509SvidResponse {
        svids: vec![entry(issuer, first), entry(issuer, second)],
        ..Default::default()
    }
}

#[tokio::test]
async fn callers_get_only_the_svids_registered_for_their_uid() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("agent.sock");
    let issuer = ca("example.org");
    let partner = ca("partner.org");
    let web = id("spiffe://example.org/ns/prod/sa/web");
    let db = id("spiffe://example.org/ns/prod/sa/db");
    let web_svid = issuer.issue(&web, KeyAlgorithm::EcdsaP256, None).unwrap();
    let db_svid = issuer.issue(&db, KeyAlgorithm::EcdsaP256, None).unwrap();
    // The node holds both; this process's uid is registered for web only, db for another uid.
    let mut update = two_svid_update(&issuer, &db_svid, &web_svid);
    update.federated_bundles = [(
        "spiffe://partner.org".to_string(),
        concat(partner.bundle().roots()),
    )]
    .into();
    let registry = WorkloadRegistry::new()
        .with(RegistrationEntry::new(web.clone(), [UnixSelector::Uid(my_uid())]).unwrap())
        .with(RegistrationEntry::new(db.clone(), [UnixSelector::Uid(my_uid() + 1)]).unwrap());
    let server = serve_to(&sock, Some(update), registry);

    let mut client = WorkloadApiClient::connect(
        &EndpointSocket::from_path(&sock),
        fipstun_planes::DEFAULT_MAX_MESSAGE_BYTES,
        WAIT,
    )
    .await
    .unwrap();
    let mut stream = client.fetch_x509_svid().await.unwrap();
    let first = stream.message().await.unwrap().unwrap();
    let ids: Vec<_> = first.svids.iter().map(|s| s.spiffe_id.as_str()).collect();
    assert_eq!(ids, [web.as_str()], "served another caller's SVID");
    assert_eq!(first.svids[0].x509_svid, concat(web_svid.chain()));
    assert!(first.federated_bundles.contains_key("spiffe://partner.org"));
    let mut bundles = client.fetch_x509_bundles().await.unwrap();
    let set = bundles_from_response(&bundles.message().await.unwrap().unwrap()).unwrap();
    assert_eq!(
        set.get(issuer.trust_domain()).unwrap().roots(),
        issuer.bundle().roots()
    );

    // An update that holds only db's SVID is not sent to web's caller: the next message it
    // sees is the one after, with its own rotated SVID.
    server
        .updates
        .send_replace(Some(message(&issuer, &db_svid)));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rotated = issuer.issue(&web, KeyAlgorithm::EcdsaP384, None).unwrap();
    server
        .updates
        .send_replace(Some(two_svid_update(&issuer, &rotated, &db_svid)));
    let next = tokio::time::timeout(WAIT, stream.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let ids: Vec<_> = next.svids.iter().map(|s| s.spiffe_id.as_str()).collect();
    assert_eq!(ids, [web.as_str()]);
    assert_eq!(next.svids[0].x509_svid, concat(rotated.chain()));
    drop((stream, bundles));
    server.shut_down(&sock).await;
}

#[tokio::test]
async fn a_caller_that_matches_no_entry_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("agent.sock");
    let issuer = ca("example.org");
    let web = id("spiffe://example.org/ns/prod/sa/web");
    let svid = issuer.issue(&web, KeyAlgorithm::EcdsaP256, None).unwrap();
    // Registered for another uid, and for this uid only together with a group it is not in.
    let registry = WorkloadRegistry::new()
        .with(RegistrationEntry::new(web.clone(), [UnixSelector::Uid(my_uid() + 1)]).unwrap())
        .with(
            RegistrationEntry::new(
                web.clone(),
                [UnixSelector::Uid(my_uid()), UnixSelector::Gid(u32::MAX - 7)],
            )
            .unwrap(),
        );
    let server = serve_to(&sock, Some(message(&issuer, &svid)), registry);
    let mut client = WorkloadApiClient::connect(
        &EndpointSocket::from_path(&sock),
        fipstun_planes::DEFAULT_MAX_MESSAGE_BYTES,
        WAIT,
    )
    .await
    .unwrap();
    let denied = |r: Result<_, Error>, what: &str| match r {
        Err(Error::Status { code, message, .. }) => {
            assert_eq!(code, tonic::Code::PermissionDenied, "{what}: {message}")
        }
        Err(e) => panic!("{what}: expected PermissionDenied, got {e:?}"),
        Ok(_) => panic!("{what}: an unregistered caller was served"),
    };
    denied(client.fetch_x509_svid().await.map(|_| ()), "FetchX509SVID");
    denied(
        client.fetch_x509_bundles().await.map(|_| ()),
        "FetchX509Bundles",
    );

    // The library's source sees the refusal and installs nothing.
    let source = WorkloadX509Source::start(config(&sock));
    wait_until(&source, "the refusal", |s| s.last_error.is_some()).await;
    assert!(
        matches!(
            source.status().last_error,
            Some(Error::Status {
                code: tonic::Code::PermissionDenied,
                ..
            })
        ),
        "{:?}",
        source.status()
    );
    assert!(source.slot().current().is_none());
    drop(source);
    server.shut_down(&sock).await;
}
