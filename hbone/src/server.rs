//! The HBONE server: accepts mTLS + HTTP/2 connections, authorizes each CONNECT, dials the
//! target and copies bytes both ways.

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fipstun_identity::policy::{Negotiated, negotiated};
use fipstun_identity::spiffe::SpiffeId;
use fipstun_identity::tls::{Authorizer, peer_not_after, peer_spiffe_id};
use fipstun_transport::{
    Acceptor, AuthorizedByAcceptor, Forwarder, ForwarderConfig, PeerIdentity, PendingInbound,
    PlainTcp, Refusal, SecurityInfo, Target, TransportError,
};
use h2::RecvStream;
use h2::server::SendResponse;
use http::{HeaderMap, Request};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tracing::Instrument;

use crate::metrics::{
    HandshakeFailure, HandshakeObserver, HandshakeObserverHandle, Metrics, MetricsSnapshot,
};
use crate::stream::{HboneStream, Hold};
use crate::wire::{ConnectRequest, ConnectResponse, HostnamePolicy, Rejection};
use crate::{ALPN_H2, Error, H2Settings, TlsIdentity, classify_tls_error};

/// Server settings. Times are wall-clock durations.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Established connections at most; a handshake that completes beyond it is closed and
    /// counted in [`MetricsSnapshot::connections_refused`]. Handshakes in progress do not
    /// count here: they have their own slots ([`ServerConfig::max_handshakes`]), so idle or
    /// stalled TCP peers cannot lock established clients out. Default 1024.
    pub max_connections: u32,
    /// TLS + HTTP/2 handshakes in progress at most. When every slot is taken, a new connection
    /// evicts the oldest unfinished handshake (counted as [`HandshakeFailure::Evicted`]), so a
    /// flood of sockets that never finish cannot keep a real client from getting in, and the
    /// flood itself is bounded. Default 128.
    pub max_handshakes: u32,
    /// The longest a connection lives: it is drained (GOAWAY, then closed once its streams
    /// end or [`ServerConfig::drain_timeout`] passes) at this age, and in any case at the
    /// peer certificate's notAfter. Default 24 h.
    pub max_connection_age: Duration,
    /// SETTINGS_MAX_CONCURRENT_STREAMS we advertise; h2 refuses streams beyond it with
    /// REFUSED_STREAM. Default 100.
    pub max_streams_per_conn: u32,
    /// Limit for the TLS plus HTTP/2 handshake. Default 5 s.
    pub handshake_timeout: Duration,
    /// A connection without streams for this long is closed with GOAWAY. Default 5 min.
    pub idle_timeout: Duration,
    /// How often an HTTP/2 PING checks each client connection. Default 10 s.
    pub keepalive_interval: Duration,
    /// How long a PING may go unanswered before the connection (and its streams) is closed.
    /// Default 20 s.
    pub keepalive_timeout: Duration,
    /// How long [`HboneServer::shutdown`] lets open streams finish. Default 30 s.
    pub drain_timeout: Duration,
    /// Limit for the TCP connect to a target; past it the CONNECT gets 503. Default 10 s.
    pub upstream_connect_timeout: Duration,
    /// Whether a CONNECT may name a host instead of an IP. Default: refused (400).
    pub hostnames: HostnamePolicy,
    /// HTTP/2 windows and frame size.
    pub h2: H2Settings,
    /// Told the time of each completed TLS handshake. Default none.
    pub handshake_observer: Option<HandshakeObserverHandle>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            max_handshakes: 128,
            max_connection_age: Duration::from_secs(24 * 3600),
            max_streams_per_conn: 100,
            handshake_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(300),
            keepalive_interval: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(20),
            drain_timeout: Duration::from_secs(30),
            upstream_connect_timeout: Duration::from_secs(10),
            hostnames: HostnamePolicy::Reject,
            h2: H2Settings::default(),
            handshake_observer: None,
        }
    }
}

impl ServerConfig {
    /// Set [`ServerConfig::handshake_observer`].
    pub fn with_handshake_observer(mut self, observer: Arc<dyn HandshakeObserver>) -> Self {
        self.handshake_observer = Some(HandshakeObserverHandle(observer));
        self
    }

    /// Set [`ServerConfig::max_connections`].
    pub fn with_max_connections(mut self, n: u32) -> Self {
        self.max_connections = n.max(1);
        self
    }

    /// Set [`ServerConfig::max_handshakes`] (at least 1).
    pub fn with_max_handshakes(mut self, n: u32) -> Self {
        self.max_handshakes = n.max(1);
        self
    }

    /// Set [`ServerConfig::max_connection_age`].
    pub fn with_max_connection_age(mut self, age: Duration) -> Self {
        self.max_connection_age = age;
        self
    }

    /// Set [`ServerConfig::max_streams_per_conn`].
    pub fn with_max_streams_per_conn(mut self, n: u32) -> Self {
        self.max_streams_per_conn = n.max(1);
        self
    }

    /// Set [`ServerConfig::handshake_timeout`].
    pub fn with_handshake_timeout(mut self, t: Duration) -> Self {
        self.handshake_timeout = t;
        self
    }

    /// Set [`ServerConfig::idle_timeout`].
    pub fn with_idle_timeout(mut self, t: Duration) -> Self {
        self.idle_timeout = t;
        self
    }

    /// Set [`ServerConfig::keepalive_interval`] and [`ServerConfig::keepalive_timeout`].
    pub fn with_keepalive(mut self, interval: Duration, timeout: Duration) -> Self {
        self.keepalive_interval = interval;
        self.keepalive_timeout = timeout;
        self
    }

    /// Set [`ServerConfig::drain_timeout`].
    pub fn with_drain_timeout(mut self, t: Duration) -> Self {
        self.drain_timeout = t;
        self
    }

    /// Set [`ServerConfig::hostnames`].
    pub fn with_hostnames(mut self, p: HostnamePolicy) -> Self {
        self.hostnames = p;
        self
    }
}

/// What the server knows about a CONNECT when it asks the [`Handler`].
#[derive(Debug)]
#[non_exhaustive]
pub struct ConnectContext<'a> {
    /// The client's SPIFFE ID, verified in the TLS handshake.
    pub peer_id: &'a SpiffeId,
    /// The client's socket address.
    pub peer_addr: SocketAddr,
    /// The parsed request (target and optional headers).
    pub request: &'a ConnectRequest,
    /// All request headers, for anything the typed request does not carry.
    pub headers: &'a HeaderMap,
}

impl ConnectContext<'_> {
    /// The target as a socket address (always present unless a [`HostnamePolicy`] admitted a
    /// host name).
    pub fn target_addr(&self) -> Option<SocketAddr> {
        self.request.target().socket_addr()
    }
}

/// The application's answer to a CONNECT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Dial the target and, once connected, answer 200 (in delivery mode: hand the CONNECT
    /// to the application, see [`HboneServer::with_delivery`]).
    Allow,
    /// Answer 401 without dialing.
    Unauthorized,
    /// Answer 403 without dialing.
    Forbidden,
}

/// Decides, per CONNECT, whether the authenticated peer may reach the target. Runs before any
/// upstream connection is attempted.
pub trait Handler: Send + Sync + 'static {
    /// Allow or refuse one CONNECT.
    fn authorize(&self, ctx: &ConnectContext<'_>) -> Decision;
}

impl<F> Handler for F
where
    F: Fn(&ConnectContext<'_>) -> Decision + Send + Sync + 'static,
{
    fn authorize(&self, ctx: &ConnectContext<'_>) -> Decision {
        self(ctx)
    }
}

/// A [`Handler`] from a closure, with the closure's argument type inferred:
///
/// ```
/// use fipstun_hbone::{Decision, handler_fn};
///
/// // Only port 443 may be reached, whoever asks.
/// let only_https = handler_fn(|ctx| match ctx.target_addr() {
///     Some(a) if a.port() == 443 => Decision::Allow,
///     _ => Decision::Forbidden,
/// });
/// # let _: fipstun_hbone::HandlerFn<_> = only_https;
/// ```
///
/// A bare closure also implements [`Handler`], but Rust cannot infer its argument's lifetime
/// without an annotation (`|ctx: &ConnectContext<'_>|`); `handler_fn` supplies it.
pub fn handler_fn<F>(f: F) -> HandlerFn<F>
where
    F: Fn(&ConnectContext<'_>) -> Decision + Send + Sync + 'static,
{
    HandlerFn(f)
}

/// The [`Handler`] [`handler_fn`] returns.
#[derive(Clone, Copy)]
pub struct HandlerFn<F>(F);

impl<F> fmt::Debug for HandlerFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HandlerFn")
    }
}

impl<F> Handler for HandlerFn<F>
where
    F: Fn(&ConnectContext<'_>) -> Decision + Send + Sync + 'static,
{
    fn authorize(&self, ctx: &ConnectContext<'_>) -> Decision {
        (self.0)(ctx)
    }
}

/// A [`Handler`] that allows every CONNECT from a peer that passed the TLS authorizer.
#[derive(Clone, Copy, Debug, Default)]
pub struct AllowAll;

impl Handler for AllowAll {
    fn authorize(&self, _ctx: &ConnectContext<'_>) -> Decision {
        Decision::Allow
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Running,
    Draining,
    Stopped,
}

/// An HBONE server. Cheap to clone; clones share limits, metrics and shutdown.
#[derive(Clone)]
pub struct HboneServer {
    inner: Arc<ServerInner>,
}

struct ServerInner {
    acceptor: TlsAcceptor,
    config: ServerConfig,
    handler: Arc<dyn Handler>,
    metrics: Arc<Metrics>,
    connections: Arc<Semaphore>,
    handshakes: HandshakeSlots,
    state: watch::Sender<State>,
    /// Delivery mode: allowed CONNECTs go to the application instead of being dialed.
    deliver: Option<mpsc::Sender<PendingConnect>>,
    /// What the TLS config may negotiate.
    security: SecurityInfo,
    /// Forwarding mode: the one forwarder of `fipstun-transport` dials and copies; the
    /// [`Handler`] has authorized each CONNECT before it gets there.
    forwarder: Forwarder<PlainTcp>,
}

impl fmt::Debug for HboneServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HboneServer")
            .field("config", &self.inner.config)
            .field("state", &*self.inner.state.borrow())
            .finish_non_exhaustive()
    }
}

impl HboneServer {
    /// A server presenting `identity`'s SVID to clients that pass `clients` (checked in the
    /// TLS handshake, before any [`Handler`] call). Allowed CONNECTs are dialled and forwarded.
    pub fn new(
        identity: &TlsIdentity,
        clients: Authorizer,
        config: ServerConfig,
        handler: impl Handler,
    ) -> Result<Self, Error> {
        Self::from_rustls(identity.server_config(clients)?, config, handler)
    }

    /// A server on a rustls config you built, e.g. with
    /// [`fipstun_identity::tls::server_config`] (client certificates required). ALPN is set
    /// to `h2` and resumption is turned off here; the config is then re-checked against the
    /// FIPS policy, so a non-FIPS config is refused.
    pub fn from_rustls(
        mut tls: rustls::ServerConfig,
        config: ServerConfig,
        handler: impl Handler,
    ) -> Result<Self, Error> {
        tls.alpn_protocols = vec![ALPN_H2.to_vec()];
        // No resumption: a resumed session skips the client-certificate verifier, so a
        // changed trust bundle or authorizer would not apply to returning clients.
        tls.send_tls13_tickets = 0;
        tls.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        fipstun_identity::policy::check_server(&tls)?;
        let security = crate::transport::security_of_server(&tls);
        let (state, _) = watch::channel(State::Running);
        let config_dial = config.upstream_connect_timeout;
        Ok(Self {
            inner: Arc::new(ServerInner {
                acceptor: TlsAcceptor::from(Arc::new(tls)),
                connections: Arc::new(Semaphore::new(config.max_connections as usize)),
                handshakes: HandshakeSlots::new(config.max_handshakes as usize),
                config,
                handler: Arc::new(handler),
                metrics: Arc::new(Metrics::default()),
                state,
                deliver: None,
                security,
                forwarder: Forwarder::new(
                    PlainTcp,
                    AuthorizedByAcceptor,
                    ForwarderConfig::default().with_dial_timeout(config_dial),
                ),
            }),
        })
    }

    /// A server that hands allowed CONNECTs to the application instead of dialing their
    /// targets: each arrives on the returned [`Incoming`] as a [`PendingConnect`], which the
    /// application answers with [`PendingConnect::accept`] (200, then a byte stream) or
    /// [`PendingConnect::reject`]. At most `queue` CONNECTs wait unanswered; beyond that, or
    /// once [`Incoming`] is dropped, they get 503.
    pub fn with_delivery(
        identity: &TlsIdentity,
        clients: Authorizer,
        config: ServerConfig,
        handler: impl Handler,
        queue: usize,
    ) -> Result<(Self, Incoming), Error> {
        Self::with_delivery_from_rustls(identity.server_config(clients)?, config, handler, queue)
    }

    /// [`HboneServer::with_delivery`] on a rustls config you built (see
    /// [`HboneServer::from_rustls`]).
    pub fn with_delivery_from_rustls(
        tls: rustls::ServerConfig,
        config: ServerConfig,
        handler: impl Handler,
        queue: usize,
    ) -> Result<(Self, Incoming), Error> {
        let server = Self::from_rustls(tls, config, handler)?;
        let (tx, rx) = mpsc::channel(queue.max(1));
        let inner = Arc::into_inner(server.inner).ok_or(Error::ShuttingDown)?;
        let security = inner.security.clone();
        let server = Self {
            inner: Arc::new(ServerInner {
                deliver: Some(tx),
                ..inner
            }),
        };
        Ok((server, Incoming { rx, security }))
    }

    /// What protects this server's connections: the suites and versions its config may
    /// negotiate and whether it is FIPS.
    pub fn security(&self) -> SecurityInfo {
        self.inner.security.clone()
    }

    /// Accept connections from `listener` until [`HboneServer::shutdown`] starts; each
    /// connection runs in its own task. Returns when shutdown begins. Accept errors (out of
    /// file descriptors and the like) are logged and retried, never returned: a serving loop
    /// has nothing to report but its end.
    pub async fn serve(&self, listener: TcpListener) {
        let mut state = self.inner.state.subscribe();
        loop {
            if *state.borrow_and_update() != State::Running {
                return;
            }
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((tcp, remote)) => {
                        let server = self.clone();
                        tokio::spawn(async move {
                            if let Err(e) = server.serve_connection(tcp).await {
                                tracing::debug!(%remote, error = %e, "hbone connection ended with an error");
                            }
                        });
                    }
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                _ = state.changed() => {}
            }
        }
    }

    /// Serve one accepted TCP connection to completion (for callers that own the accept
    /// loop). Honours the connection limit, the handshake timeout and shutdown.
    pub async fn serve_connection(&self, tcp: TcpStream) -> Result<(), Error> {
        let inner = &self.inner;
        let remote = tcp.peer_addr()?;
        let mut state = inner.state.subscribe();
        if *state.borrow_and_update() != State::Running {
            return Err(Error::ShuttingDown);
        }
        let _ = tcp.set_nodelay(true);
        let span = tracing::debug_span!("hbone_server_conn", %remote);
        async move {
            // A handshake slot, not a connection permit: a peer that never finishes its
            // handshake holds only this, and a newer connection can evict it.
            let (slot, evicted) = inner.handshakes.enter();
            let handshake = tokio::select! {
                r = self.handshake(tcp, remote) => r,
                _ = evicted => Err((
                    HandshakeFailure::Evicted,
                    format!("{} handshakes in progress: evicted for a newer connection", inner.config.max_handshakes),
                )),
            };
            drop(slot);
            let (conn, peer_id, peer_not_after, negotiated) = match handshake {
                Ok(c) => c,
                Err((kind, message)) => {
                    inner.metrics.handshake_failed(kind);
                    tracing::debug!(reason = kind.label(), %message, "handshake failed");
                    return Err(Error::Handshake {
                        peer: remote,
                        kind,
                        message,
                    });
                }
            };
            self.serve_h2(conn, peer_id, peer_not_after, negotiated, remote, &mut state)
                .await
        }
        .instrument(span)
        .await
    }

    /// Test hook, only with the `fuzzing` feature: serve HTTP/2 on `io` as if a TLS
    /// handshake with a client holding `peer` had just finished (the notAfter is a day away),
    /// through the same code as every accepted connection: h2 handshake with this server's
    /// settings, connection limits, CONNECT parsing, the [`Handler`], delivery or forwarding.
    /// The `hbone_session` fuzz target drives whole HTTP/2 sessions through it without TLS.
    #[cfg(feature = "fuzzing")]
    #[doc(hidden)]
    pub async fn serve_h2_for_fuzzing<T>(
        &self,
        io: T,
        peer: SpiffeId,
        remote: SocketAddr,
    ) -> Result<(), Error>
    where
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let cfg = &self.inner.config;
        let conn = cfg
            .h2
            .server_builder(cfg.max_streams_per_conn)
            .handshake(io)
            .await
            .map_err(|e| Error::Http2 {
                peer: remote,
                source: e,
            })?;
        let not_after = std::time::SystemTime::now() + Duration::from_secs(86400);
        let mut state = self.inner.state.subscribe();
        self.serve_h2(conn, peer, not_after, None, remote, &mut state)
            .await
    }

    /// An established connection (TLS and the h2 handshake done) until it ends.
    async fn serve_h2<T>(
        &self,
        mut conn: h2::server::Connection<T, Bytes>,
        peer_id: SpiffeId,
        peer_not_after: std::time::SystemTime,
        negotiated: Option<Negotiated>,
        remote: SocketAddr,
        state: &mut watch::Receiver<State>,
    ) -> Result<(), Error>
    where
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let inner = &self.inner;
        let Ok(_permit) = inner.connections.clone().try_acquire_owned() else {
            inner.metrics.connection_refused();
            tracing::warn!(%remote, max = inner.config.max_connections, "connection limit reached; closing");
            return Err(Error::ConnectionLimit {
                max: inner.config.max_connections,
            });
        };
        if *state.borrow_and_update() != State::Running {
            return Err(Error::ShuttingDown);
        }
        inner.metrics.connection_opened();
        tracing::debug!(%peer_id, "hbone connection established");
        let shared = Arc::new(ConnShared {
            active: AtomicUsize::new(0),
            idle_since: Mutex::new(Instant::now()),
        });
        let idle_timeout = inner.config.idle_timeout;
        // PINGs ride on the same connection future: they progress while `accept` polls it.
        let mut pings = conn.ping_pong();
        let (ka_every, ka_timeout) = (
            inner.config.keepalive_interval,
            inner.config.keepalive_timeout,
        );
        let keepalive = async move {
            let Some(pings) = pings.as_mut() else {
                return std::future::pending().await;
            };
            loop {
                tokio::time::sleep(ka_every).await;
                match tokio::time::timeout(ka_timeout, pings.ping(h2::Ping::opaque())).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return format!("keepalive PING failed: {e}"),
                    Err(_) => return format!("no PONG within {ka_timeout:?}"),
                }
            }
        };
        tokio::pin!(keepalive);
        let idle = tokio::time::sleep(idle_timeout);
        tokio::pin!(idle);
        // Never past the peer certificate's notAfter, nor past the maximum age.
        let until_expiry = peer_not_after
            .duration_since(std::time::SystemTime::now())
            .unwrap_or_default();
        let lifetime = until_expiry.min(inner.config.max_connection_age);
        let expires = tokio::time::sleep(lifetime);
        tokio::pin!(expires);
        // After the GOAWAY of an expiry, open streams get the drain time, then the
        // connection is closed whatever is left.
        let hard_close = tokio::time::sleep(Duration::MAX / 4);
        tokio::pin!(hard_close);
        let mut expired = false;
        let mut draining = false;
        let result = loop {
            tokio::select! {
                next = conn.accept() => match next {
                    Some(Ok((req, respond))) => {
                        let guard = StreamGuard::new(shared.clone());
                        let server = self.clone();
                        let peer_id = peer_id.clone();
                        let span = tracing::debug_span!("hbone_stream", stream = respond.stream_id().as_u32());
                        tokio::spawn(async move {
                            server.handle_stream(req, respond, (&peer_id, negotiated), remote, guard).await;
                        }.instrument(span));
                    }
                    Some(Err(e)) => break Err(Error::Http2 { peer: remote, source: e }),
                    None => break Ok(()),
                },
                _ = state.changed() => {
                    match *state.borrow_and_update() {
                        State::Draining if !draining => {
                            tracing::debug!("draining: GOAWAY sent");
                            conn.graceful_shutdown();
                            draining = true;
                        }
                        State::Stopped => {
                            tracing::debug!("drain timeout: closing with streams open");
                            break Ok(());
                        }
                        _ => {}
                    }
                }
                _ = &mut expires, if !expired => {
                    expired = true;
                    inner.metrics.connection_expired();
                    tracing::info!(%peer_id, ?lifetime, "connection reached the peer certificate's notAfter or the maximum age: GOAWAY");
                    if !draining {
                        conn.graceful_shutdown();
                        draining = true;
                    }
                    hard_close.as_mut().reset(tokio::time::Instant::now() + inner.config.drain_timeout);
                }
                _ = &mut hard_close, if expired => {
                    tracing::debug!("expired connection still had streams after the drain time: closing");
                    break Ok(());
                }
                why = &mut keepalive => {
                    tracing::debug!(reason = %why, "client unresponsive: closing");
                    break Err(Error::KeepaliveTimeout { peer: remote, reason: why });
                }
                _ = &mut idle, if !draining => {
                    let since = *shared.idle_since.lock().unwrap_or_else(|p| p.into_inner());
                    let busy = shared.active.load(Ordering::Acquire) > 0;
                    if !busy && since.elapsed() >= idle_timeout {
                        tracing::debug!("idle: GOAWAY sent");
                        conn.graceful_shutdown();
                        draining = true;
                    } else {
                        let base = if busy { Instant::now() } else { since };
                        idle.as_mut().reset((base + idle_timeout).into());
                    }
                }
            }
        };
        inner.metrics.connection_closed();
        result
    }

    async fn handshake(
        &self,
        tcp: TcpStream,
        remote: SocketAddr,
    ) -> Result<
        (
            h2::server::Connection<tokio_rustls::server::TlsStream<TcpStream>, Bytes>,
            SpiffeId,
            std::time::SystemTime,
            Option<Negotiated>,
        ),
        (HandshakeFailure, String),
    > {
        let cfg = &self.inner.config;
        let fut = async {
            let tls_started = std::time::Instant::now();
            let mut tls = self
                .inner
                .acceptor
                .accept(tcp)
                .await
                .map_err(|e| (classify_tls_error(&e), e.to_string()))?;
            if let Some(o) = &cfg.handshake_observer {
                o.0.tls_handshake_done(tls_started.elapsed());
            }
            tls.get_mut()
                .1
                .set_buffer_limit(Some(crate::TLS_SEND_BUFFER_BYTES));
            let (_, session) = tls.get_ref();
            if session.alpn_protocol() != Some(ALPN_H2) {
                return Err((
                    HandshakeFailure::Alpn,
                    format!("{remote} did not negotiate ALPN h2"),
                ));
            }
            let peer_id = peer_spiffe_id(session).ok_or((
                HandshakeFailure::Certificate,
                "the client certificate has no SPIFFE ID".to_string(),
            ))?;
            let not_after = peer_not_after(session).ok_or((
                HandshakeFailure::Certificate,
                "the client certificate has no readable notAfter".to_string(),
            ))?;
            let negotiated = negotiated(session);
            let conn = cfg
                .h2
                .server_builder(cfg.max_streams_per_conn)
                .handshake(tls)
                .await
                .map_err(|e| (HandshakeFailure::Http2, e.to_string()))?;
            Ok((conn, peer_id, not_after, negotiated))
        };
        match tokio::time::timeout(cfg.handshake_timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err((
                HandshakeFailure::Timeout,
                format!("handshake took longer than {:?}", cfg.handshake_timeout),
            )),
        }
    }

    async fn handle_stream(
        &self,
        req: Request<RecvStream>,
        mut respond: SendResponse<Bytes>,
        (peer_id, negotiated): (&SpiffeId, Option<Negotiated>),
        peer_addr: SocketAddr,
        guard: StreamGuard,
    ) {
        let inner = &self.inner;
        let (parts, body) = req.into_parts();
        let head = Request::from_parts(parts, ());
        let reject = |respond: &mut SendResponse<Bytes>, r: Rejection| {
            inner.metrics.stream_rejected();
            let _ = respond.send_response(ConnectResponse::rejected(r).to_http(), true);
        };
        let request = match ConnectRequest::parse(&head, &inner.config.hostnames) {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(error = %e, "malformed CONNECT: 400");
                return reject(&mut respond, Rejection::BadRequest);
            }
        };
        let target = request.target().clone();
        let ctx = ConnectContext {
            peer_id,
            peer_addr,
            request: &request,
            headers: head.headers(),
        };
        match inner.handler.authorize(&ctx) {
            Decision::Allow => {}
            Decision::Unauthorized => {
                tracing::debug!(%peer_id, %target, "not authorized: 401");
                return reject(&mut respond, Rejection::Unauthorized);
            }
            Decision::Forbidden => {
                tracing::debug!(%peer_id, %target, "forbidden: 403");
                return reject(&mut respond, Rejection::Forbidden);
            }
        }
        let Ok(named) = Target::try_from(&target) else {
            tracing::debug!(%target, "not a valid target: 400");
            return reject(&mut respond, Rejection::BadRequest);
        };
        // The policy judges addresses: a name is resolved here, and the pending stream carries
        // the address it resolved to.
        let lookup = named.resolve();
        let resolved =
            match tokio::time::timeout(inner.config.upstream_connect_timeout, lookup).await {
                Ok(Ok(addrs)) => addrs
                    .first()
                    .copied()
                    .ok_or_else(|| "no address".to_string()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("name lookup timed out".to_string()),
            };
        let addr = match resolved {
            Ok(a) => a,
            Err(e) => {
                tracing::debug!(%target, error = %e, "cannot resolve the target: 503");
                return reject(&mut respond, Rejection::Unreachable);
            }
        };
        let pending = PendingConnect {
            respond: Some(respond),
            body: Some(body),
            request,
            peer_id: peer_id.clone(),
            negotiated,
            peer: PeerIdentity::Spiffe(peer_id.clone()),
            target: Target::new(addr),
            peer_addr,
            metrics: inner.metrics.clone(),
            guard: Some(guard),
        };
        match &inner.deliver {
            // A full queue or a dropped `Incoming` drops the pending CONNECT: 503.
            Some(deliver) => {
                if let Err(e) = deliver.try_send(pending) {
                    tracing::debug!(%target, "delivery queue full or closed: 503");
                    drop(e);
                }
            }
            // 200 only once the target is dialled; after it, failures are stream resets.
            None => inner.forwarder.handle(pending).await,
        }
    }

    /// Stop accepting, send GOAWAY on every connection, and let open streams finish for up to
    /// [`ServerConfig::drain_timeout`]; connections still open then are closed.
    pub async fn shutdown(&self) {
        let inner = &self.inner;
        inner.state.send_replace(State::Draining);
        let all = inner.config.max_connections;
        let drained = tokio::time::timeout(
            inner.config.drain_timeout,
            inner.connections.acquire_many(all),
        )
        .await;
        if drained.is_err() {
            tracing::info!("drain timeout reached; closing remaining connections");
        }
        drop(drained);
        inner.state.send_replace(State::Stopped);
        // Connections notice Stopped at once; wait briefly for their tasks to wind down.
        let _ =
            tokio::time::timeout(Duration::from_secs(1), inner.connections.acquire_many(all)).await;
    }

    /// Counters since the server was created.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.inner.metrics.snapshot()
    }
}

/// Handshakes in progress, oldest first. Entering when full evicts the oldest: its holder is
/// told through the receiver it got and gives up.
struct HandshakeSlots {
    max: usize,
    next_id: std::sync::atomic::AtomicU64,
    waiting: Mutex<std::collections::VecDeque<(u64, tokio::sync::oneshot::Sender<()>)>>,
}

/// One handshake's slot; leaving it (drop) frees the slot.
struct HandshakeSlot<'a> {
    slots: &'a HandshakeSlots,
    id: u64,
}

impl HandshakeSlots {
    fn new(max: usize) -> Self {
        Self {
            max: max.max(1),
            next_id: std::sync::atomic::AtomicU64::new(0),
            waiting: Mutex::new(std::collections::VecDeque::new()),
        }
    }

    fn enter(&self) -> (HandshakeSlot<'_>, tokio::sync::oneshot::Receiver<()>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        while waiting.len() >= self.max {
            if let Some((_, oldest)) = waiting.pop_front() {
                let _ = oldest.send(());
            }
        }
        waiting.push_back((id, tx));
        (HandshakeSlot { slots: self, id }, rx)
    }
}

impl Drop for HandshakeSlot<'_> {
    fn drop(&mut self) {
        let mut waiting = self.slots.waiting.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = waiting.iter().position(|(id, _)| *id == self.id) {
            waiting.remove(i);
        }
    }
}

struct ConnShared {
    active: AtomicUsize,
    idle_since: Mutex<Instant>,
}

/// Counts a stream against its connection while it lives (for the idle timeout).
pub(crate) struct StreamGuard(Arc<ConnShared>);

impl StreamGuard {
    fn new(shared: Arc<ConnShared>) -> Self {
        shared.active.fetch_add(1, Ordering::AcqRel);
        Self(shared)
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        if self.0.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            *self.0.idle_since.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        }
    }
}

/// The CONNECTs a server in delivery mode hands to the application
/// ([`HboneServer::with_delivery`]).
#[derive(Debug)]
pub struct Incoming {
    rx: mpsc::Receiver<PendingConnect>,
    security: SecurityInfo,
}

impl Incoming {
    /// What protects the connections these CONNECTs arrive on (the server's config).
    pub fn security(&self) -> &SecurityInfo {
        &self.security
    }

    /// The next authorized CONNECT, or `None` once the server is gone.
    pub async fn accept(&mut self) -> Option<PendingConnect> {
        self.rx.recv().await
    }
}

/// An authenticated, authorized CONNECT waiting for the application's answer. Dropping it
/// unanswered answers 503, as if the target were unreachable.
pub struct PendingConnect {
    respond: Option<SendResponse<Bytes>>,
    body: Option<RecvStream>,
    request: ConnectRequest,
    peer_id: SpiffeId,
    negotiated: Option<Negotiated>,
    peer: PeerIdentity,
    /// The request's target as an address (a host name admitted by the [`HostnamePolicy`]
    /// is resolved before the CONNECT is handed on).
    target: Target,
    peer_addr: SocketAddr,
    metrics: Arc<Metrics>,
    guard: Option<StreamGuard>,
}

impl fmt::Debug for PendingConnect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingConnect")
            .field("peer_id", &self.peer_id)
            .field("peer_addr", &self.peer_addr)
            .field("request", &self.request)
            .finish_non_exhaustive()
    }
}

impl PendingConnect {
    /// The client's SPIFFE ID, verified in the TLS handshake.
    pub fn peer_id(&self) -> &SpiffeId {
        &self.peer_id
    }

    /// The client's socket address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer_addr
    }

    /// The request: target and optional headers.
    pub fn request(&self) -> &ConnectRequest {
        &self.request
    }

    /// Answer 200 and take the tunnel as a byte stream. Fails if the client already gave up.
    pub fn accept(mut self) -> Result<HboneStream, Error> {
        let (Some(mut respond), Some(body), Some(guard)) =
            (self.respond.take(), self.body.take(), self.guard.take())
        else {
            return Err(Error::ShuttingDown);
        };
        let send = respond
            .send_response(ConnectResponse::established().to_http(), false)
            .map_err(|source| Error::Http2 {
                peer: self.peer_addr,
                source,
            })?;
        Ok(HboneStream::new(
            (send, body),
            self.peer_addr,
            self.peer_id.clone(),
            self.negotiated,
            self.request.target().clone(),
            self.metrics.clone(),
            Hold::Server { _guard: guard },
        ))
    }

    /// Refuse with `rejection`'s status.
    pub fn reject(mut self, rejection: Rejection) {
        self.answer(rejection);
    }

    fn answer(&mut self, rejection: Rejection) {
        if let Some(mut respond) = self.respond.take() {
            self.metrics.stream_rejected();
            let _ = respond.send_response(ConnectResponse::rejected(rejection).to_http(), true);
        }
    }
}

impl Drop for PendingConnect {
    fn drop(&mut self) {
        self.answer(Rejection::Unreachable);
    }
}

/// The forwarder's view: a policy refusal is a 403, every other refusal a 503 (target
/// unreachable, limits, shutdown) — all before any 200, as ztunnel answers.
impl PendingInbound for PendingConnect {
    type Stream = HboneStream;

    fn peer(&self) -> &PeerIdentity {
        &self.peer
    }

    fn target(&self) -> &Target {
        &self.target
    }

    fn peer_addr(&self) -> Option<SocketAddr> {
        Some(self.peer_addr)
    }

    fn establish(self) -> Result<HboneStream, TransportError> {
        let target = self.target.clone();
        self.accept()
            .map_err(|e| TransportError::tunnel(Some(&target), e))
    }

    fn refuse(self, why: Refusal) {
        self.reject(match why {
            Refusal::Policy => Rejection::Forbidden,
            _ => Rejection::Unreachable,
        });
    }
}

impl Acceptor for Incoming {
    type Pending = PendingConnect;

    async fn accept(&mut self) -> Result<PendingConnect, TransportError> {
        Incoming::accept(self).await.ok_or(TransportError::Closed)
    }
}
