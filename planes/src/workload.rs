//! The SPIFFE Workload API over its Unix socket: a client that streams X.509-SVIDs into the
//! credentials live rustls configs read, and a server for the same API that attests its callers.

use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use fipstun_identity::bundle::{BundleSet, TrustStore};
use fipstun_identity::spiffe::SpiffeId;
use fipstun_identity::tls::SvidSlot;
use futures_util::StreamExt;
use http::uri::PathAndQuery;
use hyper_util::rt::TokioIo;
use rand::Rng;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};
use tonic_prost::ProstCodec;

use crate::DEFAULT_MAX_MESSAGE_BYTES;
use crate::attestation::{CallerProcess, WorkloadRegistry};
use crate::authority::UdsConnection;
use crate::backoff::Backoff;
use crate::error::Error;
use crate::proto::{
    FETCH_X509_BUNDLES, FETCH_X509_SVID, WORKLOAD_HEADER, X509BundlesRequest, X509BundlesResponse,
    X509SvidRequest, X509SvidResponse,
};
use crate::response::X509Context;

/// Where the Workload API listens: a Unix socket path, from `unix:///path` or `unix:/path`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointSocket(PathBuf);

impl EndpointSocket {
    /// The environment variable SPIFFE workloads read the address from.
    pub const ENV: &'static str = "SPIFFE_ENDPOINT_SOCKET";

    /// Parse `unix:///abs/path` or `unix:/abs/path`. TCP addresses and relative paths are
    /// refused (fipstun only speaks to a local agent over its socket).
    pub fn parse(value: &str) -> Result<Self, Error> {
        let bad = |reason| Error::EndpointAddress {
            value: value.to_string(),
            reason,
        };
        let path = if let Some(rest) = value.strip_prefix("unix://") {
            // unix://host/path is not allowed: the authority must be empty.
            if !rest.starts_with('/') {
                return Err(bad(
                    "unix:// must be followed by an absolute path (unix:///path)",
                ));
            }
            rest
        } else if let Some(rest) = value.strip_prefix("unix:") {
            rest
        } else if value.contains("://") || value.starts_with("tcp:") {
            return Err(bad("only unix: socket addresses are supported"));
        } else {
            return Err(bad("expected unix:///path or unix:/path"));
        };
        if !path.starts_with('/') {
            return Err(bad("the socket path must be absolute"));
        }
        if path.contains(['?', '#']) {
            return Err(bad("a socket address has no query or fragment"));
        }
        Ok(Self(PathBuf::from(path)))
    }

    /// The address in `SPIFFE_ENDPOINT_SOCKET`.
    pub fn from_env() -> Result<Self, Error> {
        let value = std::env::var(Self::ENV).map_err(|_| Error::EndpointAddress {
            value: String::new(),
            reason: "SPIFFE_ENDPOINT_SOCKET is not set",
        })?;
        Self::parse(&value)
    }

    /// A socket at `path` (must be absolute).
    pub fn from_path(path: impl Into<PathBuf>) -> Self {
        Self(path.into())
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl fmt::Display for EndpointSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unix://{}", self.0.display())
    }
}

/// A connected Workload API client (one HTTP/2 connection over the socket).
#[derive(Clone)]
pub struct WorkloadApiClient {
    grpc: tonic::client::Grpc<Channel>,
    endpoint: String,
}

impl fmt::Debug for WorkloadApiClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkloadApiClient")
            .field("endpoint", &self.endpoint)
            .finish()
    }
}

impl WorkloadApiClient {
    /// Connect to `socket`; messages larger than `max_message_bytes` are refused.
    pub async fn connect(
        socket: &EndpointSocket,
        max_message_bytes: usize,
        connect_timeout: Duration,
    ) -> Result<Self, Error> {
        let path = socket.path().to_path_buf();
        let connector = tower::service_fn(move |_: http::Uri| {
            let path = path.clone();
            async move { UnixStream::connect(path).await.map(TokioIo::new) }
        });
        let endpoint = socket.to_string();
        // The authority is only a label here; go-spiffe sends "localhost" too.
        let channel = Endpoint::from_static("http://localhost")
            .connect_timeout(connect_timeout)
            .connect_with_connector(connector)
            .await
            .map_err(|e| Error::Connect {
                endpoint: endpoint.clone(),
                reason: error_chain(&e),
            })?;
        let grpc = tonic::client::Grpc::new(channel)
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(max_message_bytes);
        Ok(Self { grpc, endpoint })
    }

    /// Open the `FetchX509SVID` stream: every message is the complete current set of SVIDs
    /// and bundles. Check each with [`X509Context::from_response`] before using it.
    pub async fn fetch_x509_svid(&mut self) -> Result<tonic::Streaming<X509SvidResponse>, Error> {
        let mut request = tonic::Request::new(X509SvidRequest {});
        request
            .metadata_mut()
            .insert(WORKLOAD_HEADER, MetadataValue::from_static("true"));
        self.grpc.ready().await.map_err(|e| Error::Connect {
            endpoint: self.endpoint.clone(),
            reason: error_chain(&e),
        })?;
        let codec: ProstCodec<X509SvidRequest, X509SvidResponse> = ProstCodec::default();
        self.grpc
            .server_streaming(request, PathAndQuery::from_static(FETCH_X509_SVID), codec)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| Error::status(&self.endpoint, &s))
    }

    /// Open the `FetchX509Bundles` stream: every message is the complete current bundle set.
    /// Check each with [`crate::response::bundles_from_response`] before using it.
    pub async fn fetch_x509_bundles(
        &mut self,
    ) -> Result<tonic::Streaming<X509BundlesResponse>, Error> {
        let mut request = tonic::Request::new(X509BundlesRequest {});
        request
            .metadata_mut()
            .insert(WORKLOAD_HEADER, MetadataValue::from_static("true"));
        self.grpc.ready().await.map_err(|e| Error::Connect {
            endpoint: self.endpoint.clone(),
            reason: error_chain(&e),
        })?;
        let codec: ProstCodec<X509BundlesRequest, X509BundlesResponse> = ProstCodec::default();
        self.grpc
            .server_streaming(
                request,
                PathAndQuery::from_static(FETCH_X509_BUNDLES),
                codec,
            )
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| Error::status(&self.endpoint, &s))
    }

    /// Where this client is connected.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// How a [`WorkloadX509Source`] behaves.
#[derive(Clone, Debug)]
pub struct WorkloadConfig {
    /// The Workload API socket.
    pub socket: EndpointSocket,
    /// Take the SVID for this ID; `None` takes the first (the agent's default).
    pub expected_id: Option<SpiffeId>,
    /// First reconnect delay; doubles per failure.
    pub initial_backoff: Duration,
    /// Longest reconnect delay.
    pub max_backoff: Duration,
    /// Bound on one message (both directions).
    pub max_message_bytes: usize,
    /// How long one connection attempt may take.
    pub connect_timeout: Duration,
}

impl WorkloadConfig {
    /// Defaults for `socket`: first SVID, 1 s .. 30 s backoff, 4 MiB messages, 5 s connects.
    pub fn new(socket: EndpointSocket) -> Self {
        Self {
            socket,
            expected_id: None,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// What a [`WorkloadX509Source`] has done so far.
#[derive(Clone, Debug, Default)]
pub struct SourceStatus {
    /// Updates checked and installed.
    pub installed: u64,
    /// Updates refused (the previous SVID stayed).
    pub refused: u64,
    /// Streams opened (1 + reconnects that got as far as the stream).
    pub streams: u64,
    /// The identity currently installed.
    pub current_id: Option<SpiffeId>,
    /// The last failure: a refused update, a lost stream, a failed connect.
    pub last_error: Option<Error>,
}

/// Keeps an [`SvidSlot`] and a [`TrustStore`] current from the Workload API: every update is
/// checked ([`X509Context::from_response`]) and then swapped in; refused updates leave the
/// previous SVID in place. Lost streams are reopened with jittered exponential backoff. The
/// driver task stops when this is dropped.
pub struct WorkloadX509Source {
    slot: Arc<SvidSlot>,
    trust: TrustStore,
    status: watch::Receiver<SourceStatus>,
    task: tokio::task::AbortHandle,
}

impl fmt::Debug for WorkloadX509Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkloadX509Source")
            .field("slot", &self.slot)
            .field("status", &*self.status.borrow())
            .finish()
    }
}

impl Drop for WorkloadX509Source {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl WorkloadX509Source {
    /// Start on the current tokio runtime with a fresh slot and an empty trust store (both
    /// fail closed until the first update).
    pub fn start(config: WorkloadConfig) -> Self {
        Self::start_with(
            config,
            Arc::new(SvidSlot::new()),
            TrustStore::new(BundleSet::new()),
        )
    }

    /// Start, feeding an existing `slot` and `trust` (for configs already built with them).
    /// Each update replaces the whole bundle set: the Workload API is its authority.
    pub fn start_with(config: WorkloadConfig, slot: Arc<SvidSlot>, trust: TrustStore) -> Self {
        let (tx, rx) = watch::channel(SourceStatus::default());
        let task = tokio::spawn(drive(config, slot.clone(), trust.clone(), tx));
        Self {
            slot,
            trust,
            status: rx,
            task: task.abort_handle(),
        }
    }

    /// The slot rustls resolvers read.
    pub fn slot(&self) -> Arc<SvidSlot> {
        self.slot.clone()
    }

    /// The trust store verifiers read.
    pub fn trust(&self) -> TrustStore {
        self.trust.clone()
    }

    /// A snapshot of the counters.
    pub fn status(&self) -> SourceStatus {
        self.status.borrow().clone()
    }

    /// A receiver that wakes on every change of [`SourceStatus`].
    pub fn subscribe(&self) -> watch::Receiver<SourceStatus> {
        self.status.clone()
    }

    /// Wait until an SVID is installed, at most `timeout`. On timeout the last error is
    /// returned (or a `Connect` error saying nothing arrived).
    pub async fn wait_for_svid(&self, timeout: Duration) -> Result<SpiffeId, Error> {
        let mut rx = self.status.clone();
        let waited = tokio::time::timeout(timeout, async {
            loop {
                if let Some(id) = rx.borrow_and_update().current_id.clone() {
                    return Some(id);
                }
                if rx.changed().await.is_err() {
                    return None;
                }
            }
        })
        .await;
        match waited {
            Ok(Some(id)) => Ok(id),
            _ => Err(self.status().last_error.unwrap_or(Error::Connect {
                endpoint: "Workload API".into(),
                reason: format!("no SVID within {timeout:?}"),
            })),
        }
    }
}

async fn drive(
    config: WorkloadConfig,
    slot: Arc<SvidSlot>,
    trust: TrustStore,
    status: watch::Sender<SourceStatus>,
) {
    let mut backoff = Backoff::new(config.initial_backoff, config.max_backoff);
    loop {
        let err = stream_once(&config, &slot, &trust, &status, &mut backoff).await;
        let delay = backoff.next_delay(rand::rng().random::<f64>());
        tracing::warn!(endpoint = %config.socket, error = %err, retry_in = ?delay, "Workload API stream lost");
        status.send_modify(|s| s.last_error = Some(err));
        tokio::time::sleep(delay).await;
    }
}

/// One connection: connect, open the stream, install updates until it ends. Returns why it
/// ended.
async fn stream_once(
    config: &WorkloadConfig,
    slot: &SvidSlot,
    trust: &TrustStore,
    status: &watch::Sender<SourceStatus>,
    backoff: &mut Backoff,
) -> Error {
    let mut client = match WorkloadApiClient::connect(
        &config.socket,
        config.max_message_bytes,
        config.connect_timeout,
    )
    .await
    {
        Ok(c) => c,
        Err(e) => return e,
    };
    let mut stream = match client.fetch_x509_svid().await {
        Ok(s) => s,
        Err(e) => return e,
    };
    status.send_modify(|s| s.streams += 1);
    let endpoint = client.endpoint().to_string();
    loop {
        let message = match stream.message().await {
            Ok(Some(m)) => m,
            Ok(None) => {
                return Error::Connect {
                    endpoint,
                    reason: "the Workload API closed the stream".into(),
                };
            }
            Err(s) => return Error::status(&endpoint, &s),
        };
        // A message arrived: the agent is up, so the next loss starts the backoff afresh.
        backoff.reset();
        match install(config, slot, trust, &message) {
            Ok(id) => {
                tracing::info!(%id, "SVID from the Workload API installed");
                status.send_modify(|s| {
                    s.installed += 1;
                    s.current_id = Some(id);
                });
            }
            Err(reason) => {
                tracing::warn!(%endpoint, error = %reason, "Workload API update refused; keeping the previous SVID");
                status.send_modify(|s| {
                    s.refused += 1;
                    s.last_error = Some(reason);
                });
            }
        }
    }
}

fn install(
    config: &WorkloadConfig,
    slot: &SvidSlot,
    trust: &TrustStore,
    message: &X509SvidResponse,
) -> Result<SpiffeId, Error> {
    let context =
        X509Context::from_response(message, config.expected_id.as_ref(), SystemTime::now())
            .map_err(|reason| Error::BadResponse {
                endpoint: config.socket.to_string(),
                reason,
            })?;
    // The SVID first: if rustls refuses its key nothing has changed yet.
    slot.set(&context.svid)?;
    trust.replace(context.bundles);
    Ok(context.svid.id().clone())
}

/// A Workload API server for the workloads of one node: serves `FetchX509SVID` (and
/// `FetchX509Bundles`, derived from the same updates) on a Unix socket, from the SVIDs the
/// `updates` watch channel holds (minted by the embedded CA, or taken from an upstream such as
/// SPIRE or istiod). Streams end when the sender is dropped.
///
/// Every caller is attested: its uid, gid and pid are read from the socket (`SO_PEERCRED`) when
/// the connection is accepted and matched against the [`WorkloadRegistry`]; a caller is
/// streamed only the SVIDs of the entries it matches, and a caller that matches none is
/// refused with `PermissionDenied` (as a SPIRE agent does). Requests without the
/// `workload.spiffe.io: true` header are refused with `InvalidArgument` first.
///
/// The socket answers the standard SPIFFE clients of every language: the `:authority` values
/// gRPC clients send on Unix sockets (the socket path, raw or percent-encoded, or empty) are
/// accepted through a Unix-socket-only adapter (see [`crate::authority`]).
///
/// It is not a replacement for SPIRE across machines: no node attestation, no registration
/// API, one node's callers only.
#[derive(Clone)]
pub struct WorkloadApiServer {
    updates: watch::Receiver<Option<X509SvidResponse>>,
    registry: Arc<WorkloadRegistry>,
    max_message_bytes: usize,
}

impl fmt::Debug for WorkloadApiServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkloadApiServer")
            .field("registry", &self.registry)
            .finish_non_exhaustive()
    }
}

impl WorkloadApiServer {
    /// A server streaming what `updates` holds (`None`: nothing to hand out yet; clients wait)
    /// to the callers `registry` names. `updates` carries every SVID the node serves; each
    /// caller is sent the SVIDs whose SPIFFE IDs its entries name, in the order of `updates`
    /// (the first is the caller's default), with the update's federated bundles and CRLs.
    pub fn new(
        updates: watch::Receiver<Option<X509SvidResponse>>,
        registry: WorkloadRegistry,
    ) -> Self {
        Self {
            updates,
            registry: Arc::new(registry),
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
        }
    }

    /// Bound one message to `bytes` (both directions; default 4 MiB).
    pub fn with_max_message_bytes(mut self, bytes: usize) -> Self {
        self.max_message_bytes = bytes;
        self
    }

    /// Serve on `listener` until `shutdown` completes and open streams have ended. Who may
    /// connect is up to the socket file's permissions; who gets what is up to the registry.
    pub async fn serve(
        self,
        listener: UnixListener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), Error> {
        let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener).filter_map(
            |accepted| {
                std::future::ready(match accepted {
                    Ok(stream) => match stream.peer_cred() {
                        Ok(cred) => Some(Ok::<_, std::io::Error>(UdsConnection::new(
                            stream,
                            CallerProcess::from_ucred(&cred),
                        ))),
                        // Fail closed: a caller we cannot attest is not served at all.
                        Err(e) => {
                            tracing::warn!(error = %e, "Workload API caller without SO_PEERCRED; connection dropped");
                            None
                        }
                    },
                    Err(e) => Some(Err(e)),
                })
            },
        );
        tonic::transport::Server::builder()
            .serve_with_incoming_shutdown(self, incoming, shutdown)
            .await
            .map_err(|e| Error::Io {
                what: "Workload API server".into(),
                reason: error_chain(&e),
            })
    }

    /// The identities the caller of `request` may have; `PermissionDenied` when none.
    fn attest<T>(&self, request: &tonic::Request<T>) -> Result<Vec<SpiffeId>, tonic::Status> {
        let Some(caller) = request.extensions().get::<CallerProcess>() else {
            return Err(tonic::Status::permission_denied(
                "the caller could not be attested",
            ));
        };
        let ids = self.registry.ids_for(caller);
        if ids.is_empty() {
            tracing::warn!(uid = caller.uid, gid = caller.gid, pid = ?caller.pid, "Workload API caller matches no registration entry; refused");
            // SPIRE's words for the same refusal.
            return Err(tonic::Status::permission_denied("no identity issued"));
        }
        tracing::debug!(uid = caller.uid, gid = caller.gid, pid = ?caller.pid, ids = ?ids, "Workload API caller attested");
        Ok(ids)
    }

    fn fetch_x509_svid(
        &self,
        request: &tonic::Request<X509SvidRequest>,
    ) -> Result<FetchStream<X509SvidResponse>, tonic::Status> {
        check_security_header(request)?;
        let ids = self.attest(request)?;
        let stream = tokio_stream::wrappers::WatchStream::new(self.updates.clone())
            .filter_map(move |m| std::future::ready(m.and_then(|m| svids_for(&m, &ids)).map(Ok)));
        Ok(Box::pin(stream))
    }

    /// The bundles of the current update: the caller's first SVID's own bundle plus the
    /// federated ones.
    fn fetch_x509_bundles(
        &self,
        request: &tonic::Request<X509BundlesRequest>,
    ) -> Result<FetchStream<X509BundlesResponse>, tonic::Status> {
        check_security_header(request)?;
        let ids = self.attest(request)?;
        let stream =
            tokio_stream::wrappers::WatchStream::new(self.updates.clone()).filter_map(move |m| {
                std::future::ready(
                    m.and_then(|m| svids_for(&m, &ids))
                        .and_then(|m| bundles_of(&m))
                        .map(Ok),
                )
            });
        Ok(Box::pin(stream))
    }
}

/// `update` cut down to the SVIDs whose IDs are in `ids`; `None` when it holds none of them
/// (the caller waits for an update that does: an empty answer would be an error to clients).
fn svids_for(update: &X509SvidResponse, ids: &[SpiffeId]) -> Option<X509SvidResponse> {
    let svids: Vec<_> = update
        .svids
        .iter()
        .filter(|s| SpiffeId::parse(&s.spiffe_id).is_ok_and(|id| ids.contains(&id)))
        .cloned()
        .collect();
    if svids.is_empty() {
        return None;
    }
    Some(X509SvidResponse {
        svids,
        crl: update.crl.clone(),
        federated_bundles: update.federated_bundles.clone(),
    })
}

fn check_security_header<T>(request: &tonic::Request<T>) -> Result<(), tonic::Status> {
    let header = request.metadata().get(WORKLOAD_HEADER);
    if header.and_then(|v| v.to_str().ok()) != Some("true") {
        return Err(tonic::Status::invalid_argument(
            "security header missing from request",
        ));
    }
    Ok(())
}

fn bundles_of(update: &X509SvidResponse) -> Option<X509BundlesResponse> {
    let first = update.svids.first()?;
    let own = SpiffeId::parse(&first.spiffe_id).ok()?.trust_domain();
    let mut bundles = update.federated_bundles.clone();
    bundles.retain(|name, _| {
        fipstun_identity::spiffe::TrustDomain::new(name).map_or(true, |td| td != own)
    });
    bundles.insert(own.id().to_string(), first.bundle.clone());
    Some(X509BundlesResponse {
        crl: update.crl.clone(),
        bundles,
    })
}

type FetchStream<T> =
    Pin<Box<dyn futures_util::Stream<Item = Result<T, tonic::Status>> + Send + 'static>>;

type HttpFuture = Pin<
    Box<
        dyn Future<Output = Result<http::Response<tonic::body::Body>, std::convert::Infallible>>
            + Send,
    >,
>;

impl tower::Service<http::Request<tonic::body::Body>> for WorkloadApiServer {
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = HttpFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let server = self.clone();
        let max = self.max_message_bytes;
        match req.uri().path() {
            FETCH_X509_SVID => Box::pin(async move {
                let method = tower::service_fn(move |r: tonic::Request<X509SvidRequest>| {
                    std::future::ready(server.fetch_x509_svid(&r).map(tonic::Response::new))
                });
                let codec: ProstCodec<X509SvidResponse, X509SvidRequest> = ProstCodec::default();
                let mut grpc = tonic::server::Grpc::new(codec)
                    .max_decoding_message_size(max)
                    .max_encoding_message_size(max);
                Ok(grpc.server_streaming(method, req).await)
            }),
            FETCH_X509_BUNDLES => Box::pin(async move {
                let method = tower::service_fn(move |r: tonic::Request<X509BundlesRequest>| {
                    std::future::ready(server.fetch_x509_bundles(&r).map(tonic::Response::new))
                });
                let codec: ProstCodec<X509BundlesResponse, X509BundlesRequest> =
                    ProstCodec::default();
                let mut grpc = tonic::server::Grpc::new(codec)
                    .max_decoding_message_size(max)
                    .max_encoding_message_size(max);
                Ok(grpc.server_streaming(method, req).await)
            }),
            _ => Box::pin(async { Ok(unimplemented_response()) }),
        }
    }
}

/// The answer for an unknown method: HTTP 200 with `grpc-status: 12` (UNIMPLEMENTED).
pub(crate) fn unimplemented_response() -> http::Response<tonic::body::Body> {
    tonic::Status::unimplemented("unknown method").into_http()
}
