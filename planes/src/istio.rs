//! The Istio CA API (`istio.v1.auth.IstioCertificateService/CreateCertificate`, istiod's port
//! 15012): a client the identity manager renews through, and a server backed by the embedded
//! CA.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use fipstun_identity::bundle::TrustStore;
use fipstun_identity::ca::{CsrError, SvidIssuer};
use fipstun_identity::manager::{BoxFuture, CaClient, CaClientError, Clock, SignRequest};
use fipstun_identity::policy::{CryptoPolicy, check_client, check_server};
use fipstun_identity::spiffe::SpiffeId;
use fipstun_identity::tls::{Authorizer, SpiffeVerifier, SvidSlot};
use http::uri::PathAndQuery;
use rustls::client::ResolvesClientCert;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateSigningRequestDer, ServerName, UnixTime};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};
use tonic_prost::ProstCodec;

use crate::DEFAULT_MAX_MESSAGE_BYTES;
use crate::error::Error;
use crate::proto::{CREATE_CERTIFICATE, IstioCertificateRequest, IstioCertificateResponse};
use crate::rate_limit::{RateLimiter, RetryAfter};
use crate::response::{check_issued_chain, parse_pem_chain};
pub use crate::tls_io::CallerConnection;
use crate::tls_io::{TlsConnector, accept_tls};

/// istiod's CA API port (plaintext 15010 is never used by fipstun).
pub const ISTIOD_CA_PORT: u16 = 15012;

/// The name istiod's serving certificate carries by default.
pub const ISTIOD_SERVER_NAME: &str = "istiod.istio-system.svc";

/// How the client authenticates the CA server.
#[derive(Clone, Debug)]
pub enum ServerAuth {
    /// The server presents an X.509-SVID (fipstun's own CA server): chain to `trust`, ID
    /// accepted by `authorizer`.
    Spiffe {
        /// Bundles to chain the server's SVID to.
        trust: TrustStore,
        /// Which server IDs are accepted.
        authorizer: Authorizer,
    },
    /// The server presents a WebPKI certificate for the configured server name (istiod's
    /// usual `istiod.istio-system.svc`), chaining to one of `roots` (Istio's root-cert.pem).
    DnsName {
        /// Trust anchors (DER).
        roots: Vec<CertificateDer<'static>>,
    },
}

/// Where the bearer token comes from.
#[derive(Clone)]
pub enum BearerToken {
    /// No `authorization` header (the client authenticates by client SVID only).
    None,
    /// A fixed token.
    Static(String),
    /// A file read on every request (Kubernetes projects rotating service-account tokens,
    /// e.g. `/var/run/secrets/tokens/istio-token`).
    File(PathBuf),
}

impl fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::None => f.write_str("None"),
            Self::Static(_) => f.write_str("Static(<redacted>)"),
            Self::File(p) => f.debug_tuple("File").field(p).finish(),
        }
    }
}

/// Tokens larger than this are refused (Kubernetes tokens are about 1 KiB).
const MAX_TOKEN_BYTES: u64 = 64 * 1024;

impl BearerToken {
    fn read(&self) -> Result<Option<String>, Error> {
        match self {
            Self::None => Ok(None),
            Self::Static(t) => Ok(Some(t.clone())),
            Self::File(path) => {
                let bad = |reason: String| Error::Token {
                    path: path.display().to_string(),
                    reason,
                };
                let meta = std::fs::metadata(path).map_err(|e| bad(e.to_string()))?;
                if meta.len() > MAX_TOKEN_BYTES {
                    return Err(bad(format!("larger than {MAX_TOKEN_BYTES} bytes")));
                }
                let token = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
                let token = token.trim();
                if token.is_empty() {
                    return Err(bad("empty".into()));
                }
                Ok(Some(token.to_string()))
            }
        }
    }
}

/// How an [`IstioCaClient`] reaches and trusts the CA.
#[derive(Clone, Debug)]
pub struct IstioCaClientConfig {
    /// `host:port` of the CA (istiod: port [`ISTIOD_CA_PORT`]).
    pub address: String,
    /// The TLS server name sent and, for [`ServerAuth::DnsName`], verified.
    pub server_name: String,
    /// How the server is authenticated.
    pub server_auth: ServerAuth,
    /// The bearer token sent as `authorization: Bearer <token>`.
    pub token: BearerToken,
    /// Bundles every issued chain must validate against (its trust domain's bundle).
    /// `None`: only the leaf's profile, SPIFFE ID and validity are checked.
    pub issued_trust: Option<TrustStore>,
    /// The FIPS policy for the TLS connection.
    pub policy: CryptoPolicy,
    /// Sent as the `ClusterID` header when set (multi-cluster istiod uses it).
    pub cluster_id: Option<String>,
    /// Deadline for one CreateCertificate call.
    pub request_timeout: Duration,
    /// Deadline for one TCP+TLS connection attempt.
    pub connect_timeout: Duration,
    /// Bound on one message (both directions).
    pub max_message_bytes: usize,
}

impl IstioCaClientConfig {
    /// Defaults: no token, server name [`ISTIOD_SERVER_NAME`], 10 s requests, 5 s connects,
    /// 4 MiB messages, issued chains checked against the server's trust store when
    /// `server_auth` is [`ServerAuth::Spiffe`].
    pub fn new(address: impl Into<String>, server_auth: ServerAuth) -> Self {
        let issued_trust = match &server_auth {
            ServerAuth::Spiffe { trust, .. } => Some(trust.clone()),
            ServerAuth::DnsName { .. } => None,
        };
        Self {
            address: address.into(),
            server_name: ISTIOD_SERVER_NAME.into(),
            server_auth,
            token: BearerToken::None,
            issued_trust,
            policy: CryptoPolicy::default(),
            cluster_id: None,
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
        }
    }
}

/// The client certificate an [`IstioCaClient`] presents: set later (the identity manager's
/// slot exists only after the manager, which needs the client, has started).
#[derive(Debug, Default)]
struct DeferredSlot(ArcSwapOption<SvidSlot>);

impl ResolvesClientCert for DeferredSlot {
    fn resolve(&self, hints: &[&[u8]], schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        self.0.load().as_ref()?.resolve(hints, schemes)
    }

    fn has_certs(&self) -> bool {
        self.0.load().as_ref().is_some_and(|s| s.has_certs())
    }
}

/// An Istio CA API client: sends a CSR with the bearer token over FIPS TLS and checks the chain
/// that comes back. Implements [`CaClient`], so [`IstioCaClient`] plugs into
/// [`fipstun_identity::manager::IdentityManager`].
///
/// ```no_run
/// use std::sync::Arc;
/// use fipstun_identity::manager::{Clock, IdentityManager, ManagerConfig};
/// use fipstun_planes::istio::{BearerToken, IstioCaClient, IstioCaClientConfig, ServerAuth};
/// use rustls_pki_types::{CertificateDer, pem::PemObject};
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let roots = CertificateDer::pem_file_iter("/var/run/secrets/istio/root-cert.pem")?
///     .collect::<Result<Vec<_>, _>>()?;
/// let mut config = IstioCaClientConfig::new("istiod.istio-system.svc:15012", ServerAuth::DnsName { roots });
/// config.token = BearerToken::File("/var/run/secrets/tokens/istio-token".into());
/// let ca = Arc::new(IstioCaClient::new(config)?);
/// let manager = IdentityManager::start(ca, ManagerConfig::default(), Clock::system());
/// # Ok(()) }
/// ```
pub struct IstioCaClient {
    grpc: tonic::client::Grpc<Channel>,
    endpoint: String,
    token: BearerToken,
    cluster_id: Option<MetadataValue<tonic::metadata::Ascii>>,
    issued_trust: Option<TrustStore>,
    client_svid: Arc<DeferredSlot>,
    request_timeout: Duration,
    clock: Clock,
}

impl fmt::Debug for IstioCaClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IstioCaClient")
            .field("endpoint", &self.endpoint)
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

impl IstioCaClient {
    /// A client for `config`. Connects lazily (and reconnects) on use; call inside a tokio
    /// runtime.
    pub fn new(config: IstioCaClientConfig) -> Result<Self, Error> {
        let client_svid = Arc::new(DeferredSlot::default());
        let mut tls = match &config.server_auth {
            ServerAuth::Spiffe { trust, authorizer } => config.policy.client_config(
                Arc::new(SpiffeVerifier::new(trust.clone(), authorizer.clone())),
                client_svid.clone(),
            ),
            ServerAuth::DnsName { roots } => {
                let mut store = rustls::RootCertStore::empty();
                for root in roots {
                    store
                        .add(root.clone())
                        .map_err(|e| Error::Identity(format!("CA root: {e}")))?;
                }
                let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
                    Arc::new(store),
                    config.policy.provider(),
                )
                .build()
                .map_err(|e| Error::Identity(format!("server verifier: {e}")))?;
                config.policy.client_config(verifier, client_svid.clone())
            }
        }
        .map_err(|e| Error::Identity(e.to_string()))?;
        // gRPC servers (grpc-go in istiod) require ALPN h2.
        tls.alpn_protocols = vec![b"h2".to_vec()];
        check_client(&tls).map_err(|e| Error::Identity(e.to_string()))?;
        let server_name = ServerName::try_from(config.server_name.clone())
            .map_err(|e| Error::Identity(format!("server name {:?}: {e}", config.server_name)))?;
        let endpoint = format!("https://{}", config.address);
        let channel = Endpoint::from_shared(endpoint.clone())
            .map_err(|e| Error::Connect {
                endpoint: endpoint.clone(),
                reason: e.to_string(),
            })?
            .connect_timeout(config.connect_timeout)
            .connect_with_connector_lazy(TlsConnector {
                address: config.address.clone(),
                server_name,
                config: Arc::new(tls),
            });
        let cluster_id = config
            .cluster_id
            .as_deref()
            .map(MetadataValue::try_from)
            .transpose()
            .map_err(|e| Error::Identity(format!("cluster ID: {e}")))?;
        Ok(Self {
            grpc: tonic::client::Grpc::new(channel)
                .max_decoding_message_size(config.max_message_bytes)
                .max_encoding_message_size(config.max_message_bytes),
            endpoint,
            token: config.token,
            cluster_id,
            issued_trust: config.issued_trust,
            client_svid,
            request_timeout: config.request_timeout,
            clock: Clock::system(),
        })
    }

    /// Check issued certificates' validity with `clock` (tests, virtual time).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Present `slot`'s SVID as client certificate on new connections (istiod and fipstun's
    /// server accept it for renewals). Typically the identity manager's slot for our ID.
    pub fn present_client_svid(&self, slot: Arc<SvidSlot>) {
        self.client_svid.0.store(Some(slot));
    }

    /// One raw `CreateCertificate` call (bearer token and cluster ID attached).
    pub async fn create_certificate(
        &self,
        request: IstioCertificateRequest,
    ) -> Result<IstioCertificateResponse, Error> {
        let mut request = tonic::Request::new(request);
        request.set_timeout(self.request_timeout);
        if let Some(token) = self.token.read()? {
            let value =
                MetadataValue::try_from(format!("Bearer {token}")).map_err(|_| Error::Token {
                    path: format!("{:?}", self.token),
                    reason: "not a valid header value".into(),
                })?;
            request.metadata_mut().insert("authorization", value);
        }
        if let Some(cluster) = &self.cluster_id {
            request.metadata_mut().insert("clusterid", cluster.clone());
        }
        let mut grpc = self.grpc.clone();
        let call = async {
            grpc.ready().await.map_err(|e| Error::Connect {
                endpoint: self.endpoint.clone(),
                reason: e.to_string(),
            })?;
            let codec: ProstCodec<IstioCertificateRequest, IstioCertificateResponse> =
                ProstCodec::default();
            grpc.unary(
                request,
                PathAndQuery::from_static(CREATE_CERTIFICATE),
                codec,
            )
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| Error::status(&self.endpoint, &s))
        };
        // grpc-timeout asks the server to give up; this makes sure we do too, connect included.
        tokio::time::timeout(self.request_timeout, call)
            .await
            .unwrap_or_else(|_| {
                Err(Error::Status {
                    endpoint: self.endpoint.clone(),
                    code: tonic::Code::DeadlineExceeded,
                    message: format!("no answer within {:?}", self.request_timeout),
                })
            })
    }

    /// Ask for a certificate for `request` and check the answer: PEM chain well-formed, leaf an
    /// X.509-SVID for `request.id`, valid now, chaining to the configured bundle. Returns leaf
    /// first, root excluded.
    pub async fn sign_checked(
        &self,
        request: &SignRequest,
    ) -> Result<Vec<CertificateDer<'static>>, Error> {
        let csr = pem_encode("CERTIFICATE REQUEST", &request.csr);
        let validity = request
            .ttl
            .map_or(0, |t| t.as_secs().min(i64::MAX as u64) as i64);
        let response = self
            .create_certificate(IstioCertificateRequest {
                csr,
                validity_duration: validity,
            })
            .await?;
        let bad = |reason| Error::BadResponse {
            endpoint: self.endpoint.clone(),
            reason,
        };
        let chain = parse_pem_chain(&response.cert_chain).map_err(bad)?;
        let bundles = self.issued_trust.as_ref().map(TrustStore::current);
        check_issued_chain(chain, &request.id, bundles.as_deref(), self.clock.now()).map_err(bad)
    }
}

impl CaClient for IstioCaClient {
    fn sign(
        &self,
        request: SignRequest,
    ) -> BoxFuture<'_, Result<Vec<CertificateDer<'static>>, CaClientError>> {
        Box::pin(async move {
            self.sign_checked(&request)
                .await
                .map_err(|e| ca_client_error(&e))
        })
    }
}

/// How the identity manager should treat a failed call: refusals wait, the rest back off.
pub fn ca_client_error(e: &Error) -> CaClientError {
    match e {
        Error::BadResponse { .. } => CaClientError::BadResponse(e.to_string()),
        Error::Status {
            code:
                tonic::Code::Unauthenticated
                | tonic::Code::PermissionDenied
                | tonic::Code::InvalidArgument
                | tonic::Code::FailedPrecondition
                | tonic::Code::Unimplemented,
            ..
        } => CaClientError::Refused(e.to_string()),
        Error::Identity(_) | Error::EndpointAddress { .. } => CaClientError::Refused(e.to_string()),
        _ => CaClientError::Unavailable(e.to_string()),
    }
}

/// PEM with 64-column base64 (RFC 7468).
pub(crate) fn pem_encode(label: &str, der: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = Vec::with_capacity(der.len().div_ceil(3) * 4);
    for chunk in der.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            b64.push(if i <= chunk.len() {
                ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]
            } else {
                b'='
            });
        }
    }
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.chunks(64) {
        out.extend(line.iter().map(|&b| b as char));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// What serves `CreateCertificate`: the embedded CA ([`EmbeddedIstioCa`]) or anything else.
/// The request's extensions carry the [`CallerConnection`] of its TLS connection.
pub trait IstioCertificateService: Send + Sync + 'static {
    /// Who the caller is, from the request's metadata (e.g. `authorization`) and extensions
    /// (the [`CallerConnection`]) alone. [`IstioCaServer`] calls this before it reads the
    /// request body, so an unauthenticated caller never has a message decoded, and rate-limits
    /// per returned ID. Refuse with `Unauthenticated`.
    fn authenticate(&self, request: &tonic::Request<()>) -> Result<SpiffeId, tonic::Status>;

    /// Answer one `CreateCertificate` call.
    fn create_certificate(
        &self,
        request: tonic::Request<IstioCertificateRequest>,
    ) -> BoxFuture<'_, Result<tonic::Response<IstioCertificateResponse>, tonic::Status>>;
}

/// Bearer tokens and the identity each one authenticates. Tokens are kept only as SHA-256
/// digests (computed in the FIPS module), so the table holds no usable secret and lookups do
/// not compare secrets byte by byte.
#[derive(Clone, Default)]
pub struct TokenTable {
    by_digest: HashMap<Vec<u8>, SpiffeId>,
}

impl fmt::Debug for TokenTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenTable")
            .field("tokens", &self.by_digest.len())
            .finish()
    }
}

impl TokenTable {
    /// An empty table: no token authenticates anyone.
    pub fn new() -> Self {
        Self::default()
    }

    /// `token` authenticates its bearer as `id`.
    pub fn insert(&mut self, token: &str, id: SpiffeId) {
        self.by_digest.insert(digest(token), id);
    }

    /// Builder form of [`TokenTable::insert`].
    pub fn with(mut self, token: &str, id: SpiffeId) -> Self {
        self.insert(token, id);
        self
    }

    /// Who `token` authenticates.
    pub fn lookup(&self, token: &str) -> Option<&SpiffeId> {
        self.by_digest.get(&digest(token))
    }
}

fn digest(token: &str) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes())
        .as_ref()
        .to_vec()
}

/// The embedded CA behind the Istio CA API. A caller is authenticated by its client SVID (when
/// [`EmbeddedIstioCa::accept_client_svids`] is on and it presented one our verifier accepted)
/// or else by its bearer token; the certificate is issued for that identity only — a CSR
/// asking for another is refused with `PermissionDenied`. The answer is the leaf, the CA chain,
/// and the root last, as istiod sends it.
pub struct EmbeddedIstioCa {
    issuer: Arc<SvidIssuer>,
    tokens: TokenTable,
    accept_client_svids: bool,
    clock: Clock,
}

impl fmt::Debug for EmbeddedIstioCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddedIstioCa")
            .field("trust_domain", self.issuer.trust_domain())
            .field("tokens", &self.tokens)
            .field("accept_client_svids", &self.accept_client_svids)
            .finish()
    }
}

impl EmbeddedIstioCa {
    /// Issue from `issuer` to callers holding a token in `tokens`. Client SVIDs are accepted.
    pub fn new(issuer: Arc<SvidIssuer>, tokens: TokenTable) -> Self {
        Self {
            issuer,
            tokens,
            accept_client_svids: true,
            clock: Clock::system(),
        }
    }

    /// Whether a verified client SVID authenticates its holder (renewals without a token).
    pub fn accept_client_svids(mut self, on: bool) -> Self {
        self.accept_client_svids = on;
        self
    }

    /// Stamp certificates with `clock`.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Who the caller of `request` is, or `Unauthenticated`.
    pub fn authenticate<T>(&self, request: &tonic::Request<T>) -> Result<SpiffeId, tonic::Status> {
        if self.accept_client_svids
            && let Some(id) = request
                .extensions()
                .get::<CallerConnection>()
                .and_then(|c| c.peer_id.clone())
        {
            return Ok(id);
        }
        let header = request.metadata().get("authorization").ok_or_else(|| {
            tonic::Status::unauthenticated("no client certificate or bearer token")
        })?;
        let token = header
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(|| tonic::Status::unauthenticated("authorization is not a bearer token"))?;
        self.tokens
            .lookup(token)
            .cloned()
            .ok_or_else(|| tonic::Status::unauthenticated("unknown bearer token"))
    }

    fn issue(
        &self,
        request: tonic::Request<IstioCertificateRequest>,
    ) -> Result<tonic::Response<IstioCertificateResponse>, tonic::Status> {
        let caller = self.authenticate(&request)?;
        let body = request.into_inner();
        let csr = CertificateSigningRequestDer::from_pem_slice(body.csr.as_bytes())
            .map_err(|e| tonic::Status::invalid_argument(format!("csr is not PEM: {e}")))?;
        let ttl = u64::try_from(body.validity_duration)
            .ok()
            .filter(|s| *s > 0)
            .map(Duration::from_secs);
        let chain = self
            .issuer
            .sign_csr_at(csr.as_ref(), &caller, ttl, self.clock.now())
            .map_err(|e| match e {
                fipstun_identity::Error::Csr(
                    CsrError::IdentityMismatch { .. } | CsrError::ForeignTrustDomain { .. },
                ) => tonic::Status::permission_denied(e.to_string()),
                fipstun_identity::Error::Csr(_) => tonic::Status::invalid_argument(e.to_string()),
                other => tonic::Status::internal(other.to_string()),
            })?;
        tracing::info!(%caller, "issued a certificate over the Istio CA API");
        let mut cert_chain: Vec<String> =
            chain.iter().map(|c| pem_encode("CERTIFICATE", c)).collect();
        cert_chain.push(self.issuer.bundle().to_pem());
        Ok(tonic::Response::new(IstioCertificateResponse {
            cert_chain,
        }))
    }
}

impl IstioCertificateService for EmbeddedIstioCa {
    fn authenticate(&self, request: &tonic::Request<()>) -> Result<SpiffeId, tonic::Status> {
        EmbeddedIstioCa::authenticate(self, request)
    }

    fn create_certificate(
        &self,
        request: tonic::Request<IstioCertificateRequest>,
    ) -> BoxFuture<'_, Result<tonic::Response<IstioCertificateResponse>, tonic::Status>> {
        let result = self.issue(request);
        Box::pin(async move { result })
    }
}

/// Asks for a client certificate but does not require one: callers authenticate by token on
/// their first request and by SVID on renewals. A certificate that is presented must pass the
/// SPIFFE verifier, or the handshake fails.
#[derive(Debug)]
struct OptionalClientAuth(SpiffeVerifier);

impl ClientCertVerifier for OptionalClientAuth {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.0.verify_client_cert(end_entity, intermediates, now)
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        ClientCertVerifier::verify_tls12_signature(&self.0, message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        ClientCertVerifier::verify_tls13_signature(&self.0, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        ClientCertVerifier::supported_verify_schemes(&self.0)
    }
}

/// Limits of an [`IstioCaServer`]. Every refusal is a gRPC status and a counter in
/// [`IstioCaServerMetrics`]; nothing beyond a limit is queued.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct IstioCaServerConfig {
    /// Largest `CreateCertificate` request message accepted, in bytes (the protobuf message,
    /// without gRPC's 5-byte frame header). Larger ones are refused with `ResourceExhausted`
    /// from the frame header alone, before the body is buffered, and counted in
    /// [`IstioCaServerMetrics::refused_too_large`]. Default 64 KiB (a CSR request is about
    /// 1 KiB).
    pub max_request_bytes: usize,
    /// SETTINGS_MAX_CONCURRENT_STREAMS advertised on each connection (requests in flight on
    /// one connection). Default 16.
    pub max_streams_per_conn: u32,
    /// Requests in progress at once over all connections (from authentication to the answer).
    /// Beyond it requests are refused with `Unavailable` and counted in
    /// [`IstioCaServerMetrics::refused_overloaded`]. Default 64.
    pub max_concurrent_requests: usize,
    /// Requests per second each authenticated caller (SPIFFE ID) may make on average. Beyond it
    /// requests are refused with `ResourceExhausted` (and `grpc-retry-pushback-ms`) and counted
    /// in [`IstioCaServerMetrics::refused_rate_limited`]. Default 10.
    pub rate_per_caller_per_s: u32,
    /// Requests each caller may make at once before the rate applies. Default 20.
    pub rate_burst: u32,
    /// Callers the rate limiter tracks at most; idle ones are forgotten first (see
    /// [`RateLimiter`]). Default 10,000.
    pub rate_max_callers: usize,
    /// Limit for one request from authentication to the answer, body upload included, so a
    /// slow caller cannot hold a slot of `max_concurrent_requests`. Past it:
    /// `DeadlineExceeded`, counted in [`IstioCaServerMetrics::timed_out`]. Default 10 s.
    pub request_timeout: Duration,
    /// Limit for the TLS handshake of one connection. Default 10 s.
    pub handshake_timeout: Duration,
}

impl IstioCaServerConfig {
    /// Zero limits raised to 1: a zero would refuse every request, a configuration mistake
    /// rather than a policy.
    fn normalized(mut self) -> Self {
        self.max_request_bytes = self.max_request_bytes.max(1);
        self.max_streams_per_conn = self.max_streams_per_conn.max(1);
        self.max_concurrent_requests = self.max_concurrent_requests.max(1);
        self.rate_per_caller_per_s = self.rate_per_caller_per_s.max(1);
        self.rate_burst = self.rate_burst.max(1);
        self.rate_max_callers = self.rate_max_callers.max(1);
        self
    }
}

impl Default for IstioCaServerConfig {
    fn default() -> Self {
        Self {
            max_request_bytes: 64 * 1024,
            max_streams_per_conn: 16,
            max_concurrent_requests: 64,
            rate_per_caller_per_s: 10,
            rate_burst: 20,
            rate_max_callers: 10_000,
            request_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

/// What an [`IstioCaServer`] has done since it was created (all clones share it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct IstioCaServerMetrics {
    /// Requests that passed authentication, their caller's rate and the concurrency limit, so
    /// had their body decoded (up to `max_request_bytes`; larger ones are then also counted in
    /// `refused_too_large`).
    pub requests_admitted: u64,
    /// Requests holding a slot of `max_concurrent_requests` now.
    pub requests_in_progress: u64,
    /// Requests whose caller [`IstioCertificateService::authenticate`] refused (the body was
    /// not read).
    pub refused_unauthenticated: u64,
    /// Requests larger than `max_request_bytes` (`ResourceExhausted`).
    pub refused_too_large: u64,
    /// Requests over their caller's rate (`ResourceExhausted`).
    pub refused_rate_limited: u64,
    /// Requests refused because `max_concurrent_requests` were in progress (`Unavailable`).
    pub refused_overloaded: u64,
    /// Requests cut by `request_timeout` (`DeadlineExceeded`).
    pub timed_out: u64,
}

#[derive(Debug, Default)]
struct Counters {
    admitted: AtomicU64,
    unauthenticated: AtomicU64,
    too_large: AtomicU64,
    rate_limited: AtomicU64,
    overloaded: AtomicU64,
    timed_out: AtomicU64,
}

/// The admission state built from a config: slots for requests in progress and the rate
/// limiter.
#[derive(Debug)]
struct Admission {
    in_progress: Arc<Semaphore>,
    rate: Mutex<RateLimiter>,
}

impl Admission {
    fn new(config: &IstioCaServerConfig) -> Self {
        Self {
            in_progress: Arc::new(Semaphore::new(config.max_concurrent_requests)),
            rate: Mutex::new(RateLimiter::new(
                config.rate_per_caller_per_s,
                config.rate_burst,
                config.rate_max_callers,
            )),
        }
    }
}

/// Serves the Istio CA API over FIPS TLS on a TCP listener.
///
/// Each request is handled in this order: the caller is authenticated from the headers and
/// the TLS connection ([`IstioCertificateService::authenticate`]); its rate is checked; a slot
/// of `max_concurrent_requests` is taken; only then is the body decoded, bounded by
/// `max_request_bytes`. So an unauthenticated caller never has a body decoded, and an
/// authenticated one at most 64 KiB by default. TLS handshakes in progress are bounded too
/// (256, each under `handshake_timeout`). Limits: [`IstioCaServerConfig`]; refusals are
/// counted in [`IstioCaServer::metrics`].
#[derive(Clone)]
pub struct IstioCaServer {
    service: Arc<dyn IstioCertificateService>,
    config: IstioCaServerConfig,
    admission: Arc<Admission>,
    counters: Arc<Counters>,
}

impl fmt::Debug for IstioCaServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IstioCaServer")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl IstioCaServer {
    /// Serve `service` with the default limits ([`IstioCaServerConfig::default`]).
    pub fn new(service: Arc<dyn IstioCertificateService>) -> Self {
        Self::with_config(service, IstioCaServerConfig::default())
    }

    /// Serve `service` with `config`. Zero limits are raised to 1.
    pub fn with_config(
        service: Arc<dyn IstioCertificateService>,
        config: IstioCaServerConfig,
    ) -> Self {
        let config = config.normalized();
        Self {
            service,
            admission: Arc::new(Admission::new(&config)),
            config,
            counters: Arc::default(),
        }
    }

    /// Apply `change` to the config and rebuild the admission state. Clones made before keep
    /// the old limits, so configure before serving.
    fn reconfigured(mut self, change: impl FnOnce(&mut IstioCaServerConfig)) -> Self {
        change(&mut self.config);
        self.config = self.config.normalized();
        self.admission = Arc::new(Admission::new(&self.config));
        self
    }

    /// Set [`IstioCaServerConfig::max_request_bytes`].
    pub fn with_max_request_bytes(self, bytes: usize) -> Self {
        self.reconfigured(|c| c.max_request_bytes = bytes)
    }

    /// Set [`IstioCaServerConfig::max_streams_per_conn`].
    pub fn with_max_streams_per_conn(self, streams: u32) -> Self {
        self.reconfigured(|c| c.max_streams_per_conn = streams)
    }

    /// Set [`IstioCaServerConfig::max_concurrent_requests`].
    pub fn with_max_concurrent_requests(self, requests: usize) -> Self {
        self.reconfigured(|c| c.max_concurrent_requests = requests)
    }

    /// Set [`IstioCaServerConfig::rate_per_caller_per_s`] and
    /// [`IstioCaServerConfig::rate_burst`].
    pub fn with_rate_per_caller(self, per_s: u32, burst: u32) -> Self {
        self.reconfigured(|c| {
            c.rate_per_caller_per_s = per_s;
            c.rate_burst = burst;
        })
    }

    /// Set [`IstioCaServerConfig::request_timeout`].
    pub fn with_request_timeout(self, timeout: Duration) -> Self {
        self.reconfigured(|c| c.request_timeout = timeout)
    }

    /// Set [`IstioCaServerConfig::handshake_timeout`].
    pub fn with_handshake_timeout(self, timeout: Duration) -> Self {
        self.reconfigured(|c| c.handshake_timeout = timeout)
    }

    /// The limits in force.
    pub fn config(&self) -> &IstioCaServerConfig {
        &self.config
    }

    /// Counters since creation; clones (and the running server) share them, so keep a clone
    /// to read them while [`IstioCaServer::serve`] runs.
    pub fn metrics(&self) -> IstioCaServerMetrics {
        let c = &self.counters;
        let slots = self.config.max_concurrent_requests;
        let free = self.admission.in_progress.available_permits();
        IstioCaServerMetrics {
            requests_admitted: c.admitted.load(Relaxed),
            requests_in_progress: slots.saturating_sub(free) as u64,
            refused_unauthenticated: c.unauthenticated.load(Relaxed),
            refused_too_large: c.too_large.load(Relaxed),
            refused_rate_limited: c.rate_limited.load(Relaxed),
            refused_overloaded: c.overloaded.load(Relaxed),
            timed_out: c.timed_out.load(Relaxed),
        }
    }

    /// The FIPS server config for a CA server presenting `slot`'s SVID: client certificates
    /// are requested, optional, and when presented must chain to `trust` and pass
    /// `authorizer`; ALPN `h2`.
    pub fn tls_config(
        policy: &CryptoPolicy,
        trust: TrustStore,
        authorizer: Authorizer,
        slot: Arc<SvidSlot>,
    ) -> Result<rustls::ServerConfig, Error> {
        Self::tls_config_with_resolver(policy, trust, authorizer, slot)
    }

    /// [`IstioCaServer::tls_config`] presenting whatever `resolver` gives: for example a
    /// certificate with the DNS SAN `istiod.istio-system.svc`, which Istio's own agents verify
    /// istiod by. Keys are still loaded and used under the FIPS policy.
    pub fn tls_config_with_resolver(
        policy: &CryptoPolicy,
        trust: TrustStore,
        authorizer: Authorizer,
        resolver: Arc<dyn rustls::server::ResolvesServerCert>,
    ) -> Result<rustls::ServerConfig, Error> {
        let verifier = Arc::new(OptionalClientAuth(SpiffeVerifier::new(trust, authorizer)));
        let mut config = policy
            .server_config(verifier, resolver)
            .map_err(|e| Error::Identity(e.to_string()))?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        check_server(&config).map_err(|e| Error::Identity(e.to_string()))?;
        Ok(config)
    }

    /// Accept on `listener`, handshake with `tls`, serve until `shutdown` completes.
    pub async fn serve(
        self,
        listener: TcpListener,
        tls: Arc<rustls::ServerConfig>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), Error> {
        let what = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let incoming = tokio_stream::wrappers::ReceiverStream::new(accept_tls(
            listener,
            tls,
            self.config.handshake_timeout,
        ));
        tonic::transport::Server::builder()
            .max_concurrent_streams(self.config.max_streams_per_conn)
            .serve_with_incoming_shutdown(self, incoming, shutdown)
            .await
            .map_err(|e| Error::Io {
                what,
                reason: e.to_string(),
            })
    }

    /// One `CreateCertificate` call, limits first (see the type's doc for the order).
    async fn create_certificate(
        self,
        request: http::Request<tonic::body::Body>,
    ) -> http::Response<tonic::body::Body> {
        let (parts, body) = request.into_parts();
        // The headers and the connection only: the body has not been read yet.
        let head = tonic::Request::from_parts(
            tonic::metadata::MetadataMap::from_headers(parts.headers.clone()),
            parts.extensions.clone(),
            (),
        );
        let caller = match self.service.authenticate(&head) {
            Ok(caller) => caller,
            Err(status) => {
                self.counters.unauthenticated.fetch_add(1, Relaxed);
                return status.into_http();
            }
        };
        let rate = self
            .admission
            .rate
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .check(&caller, Instant::now());
        if let Err(retry) = rate {
            self.counters.rate_limited.fetch_add(1, Relaxed);
            tracing::debug!(%caller, %retry, "Istio CA request over the caller's rate");
            return rate_limited(&caller, &self.config, retry).into_http();
        }
        let Ok(_slot) = self.admission.in_progress.clone().try_acquire_owned() else {
            self.counters.overloaded.fetch_add(1, Relaxed);
            return tonic::Status::unavailable(format!(
                "overloaded: {} requests in progress (max_concurrent_requests); retry later",
                self.config.max_concurrent_requests
            ))
            .into_http();
        };
        // tonic refuses an oversized message with OutOfRange from the 5-byte frame header,
        // before the service runs; this tells that refusal apart from one the service makes.
        let reached_service = Arc::new(AtomicBool::new(false));
        let (service, reached) = (self.service.clone(), reached_service.clone());
        let method = tower::service_fn(move |r: tonic::Request<IstioCertificateRequest>| {
            let service = service.clone();
            reached.store(true, Relaxed);
            async move { service.create_certificate(r).await }
        });
        let codec: ProstCodec<IstioCertificateResponse, IstioCertificateRequest> =
            ProstCodec::default();
        let max = self.config.max_request_bytes;
        let mut grpc = tonic::server::Grpc::new(codec)
            .max_decoding_message_size(max)
            // The answer is ours (a chain and a root), not the caller's.
            .max_encoding_message_size(DEFAULT_MAX_MESSAGE_BYTES);
        self.counters.admitted.fetch_add(1, Relaxed);
        let request = http::Request::from_parts(parts, body);
        let timeout = self.config.request_timeout;
        let Ok(response) = tokio::time::timeout(timeout, grpc.unary(method, request)).await else {
            self.counters.timed_out.fetch_add(1, Relaxed);
            return tonic::Status::deadline_exceeded(format!(
                "no complete request and answer within {timeout:?} (request_timeout)"
            ))
            .into_http();
        };
        let refused_by_decoder = !reached_service.load(Relaxed)
            && tonic::Status::from_header_map(response.headers())
                .is_some_and(|s| s.code() == tonic::Code::OutOfRange);
        if refused_by_decoder {
            self.counters.too_large.fetch_add(1, Relaxed);
            tracing::debug!(%caller, max, "Istio CA request over max_request_bytes");
            return tonic::Status::resource_exhausted(format!(
                "request message larger than the {max}-byte limit (max_request_bytes)"
            ))
            .into_http();
        }
        response
    }
}

/// `ResourceExhausted` with gRPC's retry pushback (`grpc-retry-pushback-ms`, gRFC A6), so
/// clients that honour it wait exactly as long as needed.
fn rate_limited(
    caller: &SpiffeId,
    config: &IstioCaServerConfig,
    retry: RetryAfter,
) -> tonic::Status {
    let mut metadata = tonic::metadata::MetadataMap::new();
    let millis = retry.0.as_millis().max(1);
    if let Ok(value) = MetadataValue::try_from(millis.to_string()) {
        metadata.insert("grpc-retry-pushback-ms", value);
    }
    tonic::Status::with_metadata(
        tonic::Code::ResourceExhausted,
        format!(
            "rate limit for {caller}: {} requests/s, burst {} (rate_per_caller_per_s, rate_burst); {retry}",
            config.rate_per_caller_per_s, config.rate_burst
        ),
        metadata,
    )
}

type HttpFuture = Pin<
    Box<
        dyn Future<Output = Result<http::Response<tonic::body::Body>, std::convert::Infallible>>
            + Send,
    >,
>;

impl tower::Service<http::Request<tonic::body::Body>> for IstioCaServer {
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = HttpFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Always ready: limits refuse in `call` instead of queueing callers.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        if req.uri().path() != CREATE_CERTIFICATE {
            return Box::pin(async { Ok(crate::workload::unimplemented_response()) });
        }
        let this = self.clone();
        Box::pin(async move { Ok(this.create_certificate(req).await) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_encoding_round_trips() {
        for len in [0usize, 1, 2, 3, 47, 48, 49, 100] {
            let der: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let pem = pem_encode("CERTIFICATE REQUEST", &der);
            if len == 0 {
                continue;
            }
            let back = CertificateSigningRequestDer::from_pem_slice(pem.as_bytes()).unwrap();
            assert_eq!(back.as_ref(), &der[..]);
        }
    }

    #[test]
    fn tokens_are_looked_up_by_digest() {
        let id = SpiffeId::parse("spiffe://example.org/a").unwrap();
        let table = TokenTable::new().with("secret", id.clone());
        assert_eq!(table.lookup("secret"), Some(&id));
        assert_eq!(table.lookup("secret "), None);
        assert!(!format!("{table:?}").contains("secret"));
    }
}
