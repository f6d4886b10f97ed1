//! The Istio CA API (`istio.v1.auth.IstioCertificateService/CreateCertificate`, istiod's port
//! 15012): a client the identity manager renews through, and a server backed by the embedded
//! CA.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

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
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};
use tonic_prost::ProstCodec;

use crate::DEFAULT_MAX_MESSAGE_BYTES;
use crate::error::Error;
use crate::proto::{CREATE_CERTIFICATE, IstioCertificateRequest, IstioCertificateResponse};
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

/// Serves the Istio CA API over FIPS TLS on a TCP listener.
#[derive(Clone)]
pub struct IstioCaServer {
    service: Arc<dyn IstioCertificateService>,
    max_message_bytes: usize,
    handshake_timeout: Duration,
}

impl fmt::Debug for IstioCaServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IstioCaServer")
            .field("max_message_bytes", &self.max_message_bytes)
            .finish_non_exhaustive()
    }
}

impl IstioCaServer {
    /// Serve `service` (4 MiB messages, 10 s TLS handshakes).
    pub fn new(service: Arc<dyn IstioCertificateService>) -> Self {
        Self {
            service,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            handshake_timeout: Duration::from_secs(10),
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
            self.handshake_timeout,
        ));
        tonic::transport::Server::builder()
            .serve_with_incoming_shutdown(self, incoming, shutdown)
            .await
            .map_err(|e| Error::Io {
                what,
                reason: e.to_string(),
            })
    }
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
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        if req.uri().path() != CREATE_CERTIFICATE {
            return Box::pin(async { Ok(crate::workload::unimplemented_response()) });
        }
        let service = self.service.clone();
        let max = self.max_message_bytes;
        Box::pin(async move {
            let method = tower::service_fn(move |r: tonic::Request<IstioCertificateRequest>| {
                let service = service.clone();
                async move { service.create_certificate(r).await }
            });
            let codec: ProstCodec<IstioCertificateResponse, IstioCertificateRequest> =
                ProstCodec::default();
            let mut grpc = tonic::server::Grpc::new(codec)
                .max_decoding_message_size(max)
                .max_encoding_message_size(max);
            Ok(grpc.unary(method, req).await)
        })
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
