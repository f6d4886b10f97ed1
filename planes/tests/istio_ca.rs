//! The Istio CA API client against fipstun's own Istio CA API server (embedded CA), both over
//! FIPS TLS on 127.0.0.1, and against a misbehaving server.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use fipstun_identity::bundle::{BundleSet, TrustStore};
use fipstun_identity::ca::{IssuerConfig, SvidIssuer};
use fipstun_identity::keys::{KeyAlgorithm, PrivateKey, csr_for};
use fipstun_identity::manager::{
    BoxFuture, CaClient, CaClientError, Clock, IdentityManager, ManagerConfig, SignRequest,
};
use fipstun_identity::policy::CryptoPolicy;
use fipstun_identity::spiffe::{SpiffeId, TrustDomain};
use fipstun_identity::svid::{Svid, SvidError};
use fipstun_identity::tls::{Authorizer, SvidSlot};
use fipstun_planes::istio::{
    BearerToken, CallerConnection, EmbeddedIstioCa, IstioCaClient, IstioCaClientConfig,
    IstioCaServer, IstioCertificateService, ServerAuth, TokenTable,
};
use fipstun_planes::proto::{IstioCertificateRequest, IstioCertificateResponse};
use fipstun_planes::{Error, ResponseError};
use rustls_pki_types::CertificateDer;
use tokio::net::TcpListener;

/// Whether a refusal has the expected reason.
type Verdict = fn(&ResponseError) -> bool;

const WAIT: Duration = Duration::from_secs(20);
const TOKEN: &str = "web-service-account-token";

fn id(s: &str) -> SpiffeId {
    SpiffeId::parse(s).unwrap()
}

fn web() -> SpiffeId {
    id("spiffe://example.org/ns/prod/sa/web")
}

fn istiod() -> SpiffeId {
    id("spiffe://example.org/ns/istio-system/sa/istiod")
}

fn issuer() -> Arc<SvidIssuer> {
    let config = IssuerConfig {
        min_ttl: Duration::from_secs(2),
        max_ttl: Duration::from_secs(3600),
        default_ttl: Duration::from_secs(3600),
        // No backdating, so a 4 s certificate has a 4 s life and renews within seconds.
        backdate: Duration::ZERO,
    };
    Arc::new(
        SvidIssuer::generate_root(
            TrustDomain::new("example.org").unwrap(),
            KeyAlgorithm::EcdsaP256,
            Duration::from_secs(86400),
            config,
        )
        .unwrap(),
    )
}

struct Plane {
    issuer: Arc<SvidIssuer>,
    trust: TrustStore,
    addr: SocketAddr,
}

/// A CA server on 127.0.0.1 presenting istiod's SVID, serving `service` with default limits.
async fn start(issuer: Arc<SvidIssuer>, service: Arc<dyn IstioCertificateService>) -> Plane {
    start_server(issuer, IstioCaServer::new(service)).await
}

/// A CA server on 127.0.0.1 presenting istiod's SVID: `server` (keep a clone for its metrics).
async fn start_server(issuer: Arc<SvidIssuer>, server: IstioCaServer) -> Plane {
    let policy = CryptoPolicy::default();
    let trust = TrustStore::new(BundleSet::new().with(issuer.bundle().clone()));
    let slot = Arc::new(SvidSlot::new());
    slot.set(
        &issuer
            .issue(&istiod(), KeyAlgorithm::EcdsaP256, None)
            .unwrap(),
    )
    .unwrap();
    let tls = IstioCaServer::tls_config(
        &policy,
        trust.clone(),
        Authorizer::trust_domains([issuer.trust_domain().clone()]),
        slot,
    )
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(server.serve(listener, Arc::new(tls), std::future::pending()));
    Plane {
        issuer,
        trust,
        addr,
    }
}

async fn embedded() -> Plane {
    let issuer = issuer();
    let ca = EmbeddedIstioCa::new(issuer.clone(), TokenTable::new().with(TOKEN, web()));
    start(issuer, Arc::new(ca)).await
}

fn client_config(plane: &Plane, token: BearerToken) -> IstioCaClientConfig {
    let mut c = IstioCaClientConfig::new(
        plane.addr.to_string(),
        ServerAuth::Spiffe {
            trust: plane.trust.clone(),
            authorizer: Authorizer::ids([istiod()]),
        },
    );
    c.token = token;
    c
}

fn client(plane: &Plane, token: BearerToken) -> IstioCaClient {
    IstioCaClient::new(client_config(plane, token)).unwrap()
}

fn request_for(id: &SpiffeId) -> (SignRequest, PrivateKey) {
    let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
    let request = SignRequest {
        csr: csr_for(id, &key).unwrap(),
        id: id.clone(),
        ttl: Some(Duration::from_secs(600)),
    };
    (request, key)
}

fn status_code(result: Result<Vec<CertificateDer<'static>>, Error>) -> tonic::Code {
    match result {
        Err(Error::Status { code, .. }) => code,
        other => panic!("expected a gRPC status, got {other:?}"),
    }
}

#[tokio::test]
async fn the_embedded_ca_issues_over_the_istio_api() {
    let plane = embedded().await;
    let client = client(&plane, BearerToken::Static(TOKEN.into()));
    let (request, key) = request_for(&web());
    let chain = client.sign_checked(&request).await.unwrap();
    // Leaf first, the root (sent last by the server) stripped.
    assert_eq!(chain.len(), 1);
    let svid = Svid::new(chain, key).unwrap();
    assert_eq!(svid.id(), &web());
    let life = svid.not_after().duration_since(svid.not_before()).unwrap();
    assert_eq!(life, Duration::from_secs(600));

    // The raw answer is leaf then CA root, as PEM.
    let raw = client
        .create_certificate(IstioCertificateRequest {
            csr: pem(&request.csr),
            validity_duration: 0,
        })
        .await
        .unwrap();
    assert_eq!(raw.cert_chain.len(), 2);
    assert_eq!(raw.cert_chain[1], plane.issuer.bundle().to_pem());
}

fn pem(csr_der: &[u8]) -> String {
    // Go through the client-facing encoder the server decodes: rustls-pki-types' parser.
    let b64 = base64(csr_der);
    format!("-----BEGIN CERTIFICATE REQUEST-----\n{b64}\n-----END CERTIFICATE REQUEST-----\n")
}

fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in bytes.chunks(3) {
        let n = c
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            out.push(if i <= c.len() {
                A[((n >> (18 - 6 * i)) & 63) as usize] as char
            } else {
                '='
            });
        }
    }
    out
}

#[tokio::test]
async fn identity_manager_renews_through_the_istio_ca_client() {
    let plane = embedded().await;
    let ca = Arc::new(client(&plane, BearerToken::Static(TOKEN.into())));
    let config = ManagerConfig {
        ttl: Some(Duration::from_secs(4)),
        jitter_seed: Some(7),
        ..ManagerConfig::default()
    };
    let manager = IdentityManager::start(ca, config, Clock::system());
    let slot = manager.fetch(&web()).await.unwrap();
    let first = slot.current().unwrap().certified.cert[0].clone();
    tokio::time::timeout(WAIT, async {
        while manager.metrics().renewals < 3 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no renewals: {:?}", manager.metrics()));
    let now = slot.current().unwrap();
    assert_ne!(now.certified.cert[0], first, "renewal swapped the SVID");
    assert_eq!(now.id, web());
    assert_eq!(manager.metrics().failures, 0);
}

#[tokio::test]
async fn a_wrong_or_missing_token_is_refused() {
    let plane = embedded().await;
    let (request, _) = request_for(&web());
    let wrong = client(&plane, BearerToken::Static("not-the-token".into()));
    assert_eq!(
        status_code(wrong.sign_checked(&request).await),
        tonic::Code::Unauthenticated
    );
    let none = client(&plane, BearerToken::None);
    assert_eq!(
        status_code(none.sign_checked(&request).await),
        tonic::Code::Unauthenticated
    );
    // Through the CaClient trait the manager sees a refusal (waits, does not hammer).
    assert!(matches!(
        wrong.sign(request).await,
        Err(CaClientError::Refused(_))
    ));

    let manager =
        IdentityManager::start(Arc::new(wrong), ManagerConfig::default(), Clock::system());
    let err = tokio::time::timeout(WAIT, manager.fetch(&web()))
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(err, fipstun_identity::Error::Ca(CaClientError::Refused(_))),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_token_file_is_read_per_request() {
    let plane = embedded().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("istio-token");
    let client = client(&plane, BearerToken::File(file.clone()));
    let (request, _) = request_for(&web());
    assert!(matches!(
        client.sign_checked(&request).await,
        Err(Error::Token { .. })
    ));
    std::fs::write(&file, format!("{TOKEN}\n")).unwrap();
    client.sign_checked(&request).await.unwrap();
}

#[tokio::test]
async fn a_csr_for_another_identity_is_refused() {
    let plane = embedded().await;
    let client = client(&plane, BearerToken::Static(TOKEN.into()));
    let (request, _) = request_for(&id("spiffe://example.org/ns/prod/sa/db"));
    assert_eq!(
        status_code(client.sign_checked(&request).await),
        tonic::Code::PermissionDenied
    );
    let (request, _) = request_for(&id("spiffe://other.org/ns/prod/sa/web"));
    assert_eq!(
        status_code(client.sign_checked(&request).await),
        tonic::Code::PermissionDenied
    );
    let garbage = client
        .create_certificate(IstioCertificateRequest {
            csr: "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"
                .into(),
            validity_duration: 60,
        })
        .await;
    assert!(matches!(
        garbage,
        Err(Error::Status {
            code: tonic::Code::InvalidArgument,
            ..
        })
    ));
}

#[tokio::test]
async fn a_client_svid_authenticates_renewals_without_a_token() {
    let plane = embedded().await;
    let client = client(&plane, BearerToken::None);
    let slot = Arc::new(SvidSlot::new());
    slot.set(
        &plane
            .issuer
            .issue(&web(), KeyAlgorithm::EcdsaP256, None)
            .unwrap(),
    )
    .unwrap();
    client.present_client_svid(slot);
    let (request, _) = request_for(&web());
    client.sign_checked(&request).await.unwrap();
    // The SVID binds the caller just as a token does.
    let (request, _) = request_for(&id("spiffe://example.org/ns/prod/sa/db"));
    assert_eq!(
        status_code(client.sign_checked(&request).await),
        tonic::Code::PermissionDenied
    );
}

#[tokio::test]
async fn a_server_with_another_identity_is_not_trusted() {
    let plane = embedded().await;
    let mut config = client_config(&plane, BearerToken::Static(TOKEN.into()));
    config.server_auth = ServerAuth::Spiffe {
        trust: plane.trust.clone(),
        authorizer: Authorizer::ids([id("spiffe://example.org/ns/istio-system/sa/other")]),
    };
    let client = IstioCaClient::new(config).unwrap();
    let (request, _) = request_for(&web());
    let err = client.sign_checked(&request).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Connect { .. }
                | Error::Status {
                    code: tonic::Code::Unavailable,
                    ..
                }
        ),
        "{err:?}"
    );
    assert!(matches!(
        fipstun_planes::istio::ca_client_error(&err),
        CaClientError::Unavailable(_)
    ));
}

/// The embedded CA's caller authentication (web's token, client SVIDs), for test doubles.
fn web_token_auth(issuer: &Arc<SvidIssuer>) -> EmbeddedIstioCa {
    EmbeddedIstioCa::new(issuer.clone(), TokenTable::new().with(TOKEN, web()))
}

/// A CA that answers whatever the test put in `answer`, and records who called.
struct Scripted {
    auth: EmbeddedIstioCa,
    answer: Mutex<IstioCertificateResponse>,
    callers: Mutex<Vec<Option<CallerConnection>>>,
}

impl IstioCertificateService for Scripted {
    fn authenticate(&self, request: &tonic::Request<()>) -> Result<SpiffeId, tonic::Status> {
        self.auth.authenticate(request)
    }

    fn create_certificate(
        &self,
        request: tonic::Request<IstioCertificateRequest>,
    ) -> BoxFuture<'_, Result<tonic::Response<IstioCertificateResponse>, tonic::Status>> {
        self.callers
            .lock()
            .unwrap()
            .push(request.extensions().get::<CallerConnection>().cloned());
        let answer = self.answer.lock().unwrap().clone();
        Box::pin(async move { Ok(tonic::Response::new(answer)) })
    }
}

fn pem_chain(certs: &[CertificateDer<'_>]) -> Vec<String> {
    certs
        .iter()
        .map(|c| {
            format!(
                "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
                base64(c)
            )
        })
        .collect()
}

#[tokio::test]
async fn bad_responses_are_refused_by_the_client() {
    let issuer = issuer();
    let scripted = Arc::new(Scripted {
        auth: web_token_auth(&issuer),
        answer: Mutex::new(IstioCertificateResponse::default()),
        callers: Mutex::new(Vec::new()),
    });
    let plane = start(issuer.clone(), scripted.clone()).await;
    let client = client(&plane, BearerToken::Static(TOKEN.into()));
    let (request, _) = request_for(&web());

    let other = issuer
        .issue(
            &id("spiffe://example.org/ns/prod/sa/db"),
            KeyAlgorithm::EcdsaP256,
            None,
        )
        .unwrap();
    let expired = issuer
        .issue_at(
            &web(),
            KeyAlgorithm::EcdsaP256,
            Some(Duration::from_secs(60)),
            SystemTime::now() - Duration::from_secs(3600),
        )
        .unwrap();
    let impostor = SvidIssuer::generate_root(
        TrustDomain::new("example.org").unwrap(),
        KeyAlgorithm::EcdsaP256,
        Duration::from_secs(86400),
        IssuerConfig::default(),
    )
    .unwrap()
    .issue(&web(), KeyAlgorithm::EcdsaP256, None)
    .unwrap();

    let cases: Vec<(&str, Vec<String>, Verdict)> = vec![
        ("empty chain", Vec::new(), |e| {
            *e == ResponseError::EmptyChain
        }),
        (
            "wrong SAN",
            pem_chain(other.chain()),
            |e| matches!(e, ResponseError::UnexpectedId { got, .. } if got == "spiffe://example.org/ns/prod/sa/db"),
        ),
        ("expired", pem_chain(expired.chain()), |e| {
            matches!(e, ResponseError::Invalid(SvidError::Expired { .. }))
        }),
        ("foreign issuer", pem_chain(impostor.chain()), |e| {
            matches!(e, ResponseError::Invalid(SvidError::UnknownIssuer(_)))
        }),
        ("not PEM", vec!["hello".into()], |e| {
            matches!(e, ResponseError::MalformedCertificate(_))
        }),
    ];
    for (name, chain, expected) in cases {
        *scripted.answer.lock().unwrap() = IstioCertificateResponse { cert_chain: chain };
        match client.sign_checked(&request).await {
            Err(Error::BadResponse { reason, .. }) => {
                assert!(expected(&reason), "{name}: unexpected reason {reason:?}")
            }
            other => panic!("{name}: expected a refused response, got {other:?}"),
        }
        assert!(
            matches!(
                client.sign(request.clone()).await,
                Err(CaClientError::BadResponse(_))
            ),
            "{name}"
        );
    }

    // The server saw the caller's TLS connection (no client SVID on a token-only client).
    let callers = scripted.callers.lock().unwrap();
    assert!(!callers.is_empty());
    assert!(
        callers
            .iter()
            .all(|c| c.as_ref().is_some_and(|c| c.peer_id.is_none()))
    );
}

/// istiod's usual serving certificate: a DNS SAN under a WebPKI-style root, not an SVID.
fn dns_named_server(
    policy: &CryptoPolicy,
) -> (CertificateDer<'static>, Arc<rustls::sign::SingleCertAndKey>) {
    let root_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut root = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    root.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    root.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
    let root_cert = root.self_signed(&root_key).unwrap();
    let issuer = rcgen::Issuer::new(root, root_key);
    let leaf_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["istiod.istio-system.svc".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    let key = rustls_pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into());
    let certified =
        rustls::sign::CertifiedKey::from_der(vec![leaf.der().clone()], key, &policy.provider())
            .unwrap();
    (root_cert.der().clone(), Arc::new(certified.into()))
}

#[tokio::test]
async fn istiod_is_verified_by_dns_name_against_configured_roots() {
    let policy = CryptoPolicy::default();
    let issuer = issuer();
    let trust = TrustStore::new(BundleSet::new().with(issuer.bundle().clone()));
    let (root, resolver) = dns_named_server(&policy);
    let tls = IstioCaServer::tls_config_with_resolver(
        &policy,
        trust.clone(),
        Authorizer::trust_domains([issuer.trust_domain().clone()]),
        resolver,
    )
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let ca = EmbeddedIstioCa::new(issuer.clone(), TokenTable::new().with(TOKEN, web()));
    tokio::spawn(IstioCaServer::new(Arc::new(ca)).serve(
        listener,
        Arc::new(tls),
        std::future::pending(),
    ));
    let (request, _) = request_for(&web());

    let mut config = IstioCaClientConfig::new(
        addr.to_string(),
        ServerAuth::DnsName {
            roots: vec![root.clone()],
        },
    );
    config.token = BearerToken::Static(TOKEN.into());
    config.issued_trust = Some(trust.clone());
    let client = IstioCaClient::new(config.clone()).unwrap();
    assert_eq!(client.sign_checked(&request).await.unwrap().len(), 1);

    // Another name, or roots that did not sign the server's certificate: no connection.
    let mut wrong_name = config.clone();
    wrong_name.server_name = "istiod.other.svc".into();
    let mut wrong_root = config.clone();
    wrong_root.server_auth = ServerAuth::DnsName {
        roots: vec![issuer.bundle().roots()[0].clone()],
    };
    for bad in [wrong_name, wrong_root] {
        let err = IstioCaClient::new(bad)
            .unwrap()
            .sign_checked(&request)
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::Connect { .. }
                    | Error::Status {
                        code: tonic::Code::Unavailable,
                        ..
                    }
            ),
            "{err:?}"
        );
    }
}

#[tokio::test]
async fn garbage_connections_do_not_stop_the_server() {
    use tokio::io::AsyncWriteExt;
    let plane = embedded().await;
    for junk in [
        &b"GET / HTTP/1.1\r\n\r\n"[..],
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        &[0x16, 3, 1, 0xff, 0xff, 1],
    ] {
        let mut tcp = tokio::net::TcpStream::connect(plane.addr).await.unwrap();
        tcp.write_all(junk).await.unwrap();
        drop(tcp);
    }
    // A client that never finishes its handshake does not block others either.
    let _silent = tokio::net::TcpStream::connect(plane.addr).await.unwrap();
    let client = client(&plane, BearerToken::Static(TOKEN.into()));
    let (request, _) = request_for(&web());
    tokio::time::timeout(WAIT, client.sign_checked(&request))
        .await
        .unwrap()
        .unwrap();
}

// ---------------------------------------------------------------------------------------------
// Server limits: size, authentication order, per-caller rate, concurrency, streams, time.

const DB_TOKEN: &str = "db-service-account-token";

fn db() -> SpiffeId {
    id("spiffe://example.org/ns/prod/sa/db")
}

/// The embedded CA for web (TOKEN) and db (DB_TOKEN) behind `configure(IstioCaServer::new)`;
/// returns the plane and a clone of the server for its metrics.
async fn limited(configure: impl FnOnce(IstioCaServer) -> IstioCaServer) -> (Plane, IstioCaServer) {
    let issuer = issuer();
    let tokens = TokenTable::new().with(TOKEN, web()).with(DB_TOKEN, db());
    let server = configure(IstioCaServer::new(Arc::new(EmbeddedIstioCa::new(
        issuer.clone(),
        tokens,
    ))));
    (start_server(issuer, server.clone()).await, server)
}

/// The raw call's status, or a panic naming what came back instead.
fn raw_status(result: Result<IstioCertificateResponse, Error>) -> (tonic::Code, String) {
    match result {
        Err(Error::Status { code, message, .. }) => (code, message),
        other => panic!("expected a gRPC status, got {other:?}"),
    }
}

/// A request whose protobuf encoding is a little over `csr_bytes`.
fn oversized(csr_bytes: usize) -> IstioCertificateRequest {
    IstioCertificateRequest {
        csr: "A".repeat(csr_bytes),
        validity_duration: 60,
    }
}

#[tokio::test]
async fn an_oversized_request_is_refused_and_the_server_keeps_serving() {
    let (plane, server) = limited(|s| s).await;
    assert_eq!(server.config().max_request_bytes, 64 * 1024);
    let client = client(&plane, BearerToken::Static(TOKEN.into()));

    let (code, message) = raw_status(client.create_certificate(oversized(100 * 1024)).await);
    assert_eq!(code, tonic::Code::ResourceExhausted, "{message}");
    assert!(message.contains("65536-byte limit"), "{message}");
    let m = server.metrics();
    assert_eq!(m.refused_too_large, 1, "{m:?}");
    assert_eq!(m.requests_in_progress, 0, "{m:?}");

    // Just under the limit is decoded and reaches the CA, which finds no PEM in it.
    let (code, message) = raw_status(client.create_certificate(oversized(60 * 1024)).await);
    assert_eq!(code, tonic::Code::InvalidArgument, "{message}");
    assert_eq!(server.metrics().refused_too_large, 1);

    // Same client, same connection: a real request is still served.
    let (request, _) = request_for(&web());
    client.sign_checked(&request).await.unwrap();

    // The limit is configurable.
    let (plane, server) = limited(|s| s.with_max_request_bytes(512)).await;
    let client =
        IstioCaClient::new(client_config(&plane, BearerToken::Static(TOKEN.into()))).unwrap();
    let (code, message) = raw_status(client.create_certificate(oversized(1024)).await);
    assert_eq!(code, tonic::Code::ResourceExhausted, "{message}");
    assert!(message.contains("512-byte limit"), "{message}");
    assert_eq!(server.metrics().refused_too_large, 1);
}

/// Authentication comes first and reads only headers and the TLS connection, so an
/// unauthenticated caller is told `Unauthenticated` whatever it sends, and its body is never
/// decoded: had it been, tonic's decoder would have refused it for size first.
#[tokio::test]
async fn an_unauthenticated_oversized_request_is_refused_before_its_body_is_decoded() {
    let (plane, server) = limited(|s| s).await;
    for token in [
        BearerToken::Static("not-the-token".into()),
        BearerToken::None,
    ] {
        let stranger = client(&plane, token);
        let (code, message) = raw_status(stranger.create_certificate(oversized(100 * 1024)).await);
        assert_eq!(code, tonic::Code::Unauthenticated, "{message}");
    }
    let m = server.metrics();
    assert_eq!(m.refused_unauthenticated, 2, "{m:?}");
    assert_eq!(m.refused_too_large, 0, "no body was decoded: {m:?}");
    assert_eq!(m.requests_admitted, 0, "{m:?}");
}

#[tokio::test]
async fn the_rate_limit_refuses_one_caller_while_another_is_served() {
    // 1 request/s, burst 3: the 4th request within a second is refused.
    let (plane, server) = limited(|s| s.with_rate_per_caller(1, 3)).await;
    let web_client = client(&plane, BearerToken::Static(TOKEN.into()));
    let db_client = client(&plane, BearerToken::Static(DB_TOKEN.into()));
    let requests: Vec<_> = (0..4).map(|_| request_for(&web()).0).collect();
    let (db_request, _) = request_for(&db());

    for request in &requests[..3] {
        web_client.sign_checked(request).await.unwrap();
    }
    let refused = web_client.sign_checked(&requests[3]).await.unwrap_err();
    let Error::Status { code, message, .. } = &refused else {
        panic!("expected a status, got {refused:?}");
    };
    assert_eq!(*code, tonic::Code::ResourceExhausted, "{message}");
    assert!(
        message.contains("rate limit for spiffe://example.org/ns/prod/sa/web"),
        "{message}"
    );
    // The identity manager backs off and retries rather than giving up.
    assert!(refused.is_retryable());
    assert!(matches!(
        fipstun_planes::istio::ca_client_error(&refused),
        CaClientError::Unavailable(_)
    ));

    // Another caller has its own bucket.
    db_client.sign_checked(&db_request).await.unwrap();
    let m = server.metrics();
    assert_eq!(m.refused_rate_limited, 1, "{m:?}");
    assert_eq!(m.requests_admitted, 4, "{m:?}");
}

/// A CA that holds every request until the test opens the gate, counting who is inside.
struct Gated {
    auth: EmbeddedIstioCa,
    gate: tokio::sync::Semaphore,
    inside: std::sync::atomic::AtomicUsize,
}

impl Gated {
    fn new(issuer: &Arc<SvidIssuer>) -> Arc<Self> {
        Arc::new(Self {
            auth: web_token_auth(issuer),
            gate: tokio::sync::Semaphore::new(0),
            inside: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    fn inside(&self) -> usize {
        self.inside.load(std::sync::atomic::Ordering::SeqCst)
    }

    async fn wait_inside(&self, n: usize) {
        tokio::time::timeout(WAIT, async {
            while self.inside() < n {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{} of {n} requests reached the service", self.inside()));
    }

    fn open(&self) {
        self.gate
            .add_permits(tokio::sync::Semaphore::MAX_PERMITS / 2);
    }
}

impl IstioCertificateService for Gated {
    fn authenticate(&self, request: &tonic::Request<()>) -> Result<SpiffeId, tonic::Status> {
        self.auth.authenticate(request)
    }

    fn create_certificate(
        &self,
        _request: tonic::Request<IstioCertificateRequest>,
    ) -> BoxFuture<'_, Result<tonic::Response<IstioCertificateResponse>, tonic::Status>> {
        self.inside
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Box::pin(async move {
            // Each pass is used up, so `add_permits(n)` lets exactly n requests through.
            self.gate.acquire().await.unwrap().forget();
            Ok(tonic::Response::new(IstioCertificateResponse::default()))
        })
    }
}

fn raw_request() -> IstioCertificateRequest {
    IstioCertificateRequest {
        csr: "not used by the gated CA".into(),
        validity_duration: 60,
    }
}

#[tokio::test]
async fn the_concurrency_limit_refuses_when_saturated() {
    let issuer = issuer();
    let gated = Gated::new(&issuer);
    let server = IstioCaServer::new(gated.clone()).with_max_concurrent_requests(2);
    let plane = start_server(issuer, server.clone()).await;
    let client = Arc::new(client(&plane, BearerToken::Static(TOKEN.into())));

    let held: Vec<_> = (0..2)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.create_certificate(raw_request()).await })
        })
        .collect();
    gated.wait_inside(2).await;
    assert_eq!(server.metrics().requests_in_progress, 2);

    // Refused at once, not queued behind the two held requests.
    let third = tokio::time::timeout(WAIT, client.create_certificate(raw_request()))
        .await
        .expect("a saturated server answers instead of queueing");
    let (code, message) = raw_status(third);
    assert_eq!(code, tonic::Code::Unavailable, "{message}");
    assert!(message.contains("max_concurrent_requests"), "{message}");
    assert_eq!(
        gated.inside(),
        2,
        "the refused request never reached the service"
    );
    assert_eq!(server.metrics().refused_overloaded, 1);

    gated.open();
    for h in held {
        h.await.unwrap().unwrap();
    }
    client.create_certificate(raw_request()).await.unwrap();
    let m = server.metrics();
    assert_eq!(
        (m.requests_admitted, m.requests_in_progress),
        (3, 0),
        "{m:?}"
    );
}

#[tokio::test]
async fn streams_per_connection_are_limited() {
    let issuer = issuer();
    let gated = Gated::new(&issuer);
    let server = IstioCaServer::new(gated.clone()).with_max_streams_per_conn(1);
    let plane = start_server(issuer, server.clone()).await;
    // One client is one HTTP/2 connection. One request completes first, so the client has our
    // SETTINGS before it opens two streams at once (streams opened before them would be
    // refused with REFUSED_STREAM instead of waiting).
    let first = Arc::new(client(&plane, BearerToken::Static(TOKEN.into())));
    gated.gate.add_permits(1);
    first.create_certificate(raw_request()).await.unwrap();
    let held: Vec<_> = (0..2)
        .map(|_| {
            let first = first.clone();
            tokio::spawn(async move { first.create_certificate(raw_request()).await })
        })
        .collect();
    gated.wait_inside(2).await;
    // The second stream waits for the first one's slot (SETTINGS_MAX_CONCURRENT_STREAMS 1).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(gated.inside(), 2);
    // Another connection has its own streams.
    let second = client(&plane, BearerToken::Static(TOKEN.into()));
    let other = tokio::spawn(async move { second.create_certificate(raw_request()).await });
    gated.wait_inside(3).await;

    gated.open();
    for h in held {
        h.await.unwrap().unwrap();
    }
    other.await.unwrap().unwrap();
    assert_eq!(gated.inside(), 4);
    assert_eq!(server.metrics().refused_overloaded, 0);
}

#[tokio::test]
async fn a_request_that_takes_too_long_is_cut_and_frees_its_slot() {
    let issuer = issuer();
    let gated = Gated::new(&issuer);
    let server = IstioCaServer::new(gated.clone())
        .with_max_concurrent_requests(1)
        .with_request_timeout(Duration::from_millis(300));
    let plane = start_server(issuer, server.clone()).await;
    let client = client(&plane, BearerToken::Static(TOKEN.into()));
    let (code, message) = raw_status(client.create_certificate(raw_request()).await);
    assert_eq!(code, tonic::Code::DeadlineExceeded, "{message}");
    assert!(message.contains("request_timeout"), "{message}");
    let m = server.metrics();
    assert_eq!((m.timed_out, m.requests_in_progress), (1, 0), "{m:?}");
    // The only slot is free again.
    gated.open();
    client.create_certificate(raw_request()).await.unwrap();
}
