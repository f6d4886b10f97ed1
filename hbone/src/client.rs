//! The HBONE client: opens tunnelled streams through a peer node, pooling one mTLS + HTTP/2
//! connection for many streams.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fipstun_identity::policy::{Negotiated, negotiated};
use fipstun_identity::spiffe::{SpiffeId, TrustDomain};
use fipstun_identity::tls::{Authorizer, peer_spiffe_id};
use fipstun_transport::Target;
use h2::client::SendRequest;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tracing::Instrument;

use crate::metrics::{
    HandshakeFailure, HandshakeObserver, HandshakeObserverHandle, Metrics, MetricsSnapshot,
};
use crate::pool::{Checkout, IdleCheck, Lease, Pool, Pooled};
use crate::stream::HboneStream;
use crate::tap::{SeenTlsError, TlsErrorTap, rustls_error};
use crate::transport::HboneRoute;
use crate::wire::{ConnectRequest, ConnectResponse};
use crate::{ALPN_H2, DialError, Error, H2Settings, TlsIdentity, classify_tls_error};

/// Client settings. Times are wall-clock durations; counts are per connection.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ClientConfig {
    /// Streams carried by one pooled connection at most (never more than the peer's
    /// SETTINGS_MAX_CONCURRENT_STREAMS). Default 100.
    pub max_streams_per_conn: usize,
    /// Limit for the TCP connect to the peer. Default 10 s.
    pub connect_timeout: Duration,
    /// Limit for the TLS plus HTTP/2 handshake. Default 10 s.
    pub handshake_timeout: Duration,
    /// Limit for the peer's answer to a CONNECT (it dials the target first). Default 30 s.
    pub response_timeout: Duration,
    /// How often an HTTP/2 PING checks a pooled connection. Default 10 s.
    pub keepalive_interval: Duration,
    /// How long a PING may go unanswered before the connection is dropped. Default 20 s.
    pub keepalive_timeout: Duration,
    /// How long a connection with no stream stays pooled. Default 5 min.
    pub idle_timeout: Duration,
    /// HTTP/2 windows and frame size.
    pub h2: H2Settings,
    /// Told the time of each completed TLS handshake. Default none.
    pub handshake_observer: Option<HandshakeObserverHandle>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            max_streams_per_conn: 100,
            connect_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            response_timeout: Duration::from_secs(30),
            keepalive_interval: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(300),
            h2: H2Settings::default(),
            handshake_observer: None,
        }
    }
}

impl ClientConfig {
    /// Set [`ClientConfig::max_streams_per_conn`].
    pub fn with_max_streams_per_conn(mut self, n: usize) -> Self {
        self.max_streams_per_conn = n.max(1);
        self
    }

    /// Set [`ClientConfig::idle_timeout`].
    pub fn with_idle_timeout(mut self, t: Duration) -> Self {
        self.idle_timeout = t;
        self
    }

    /// Set [`ClientConfig::keepalive_interval`] and [`ClientConfig::keepalive_timeout`].
    pub fn with_keepalive(mut self, interval: Duration, timeout: Duration) -> Self {
        self.keepalive_interval = interval;
        self.keepalive_timeout = timeout;
        self
    }

    /// Set [`ClientConfig::handshake_observer`].
    pub fn with_handshake_observer(mut self, observer: Arc<dyn HandshakeObserver>) -> Self {
        self.handshake_observer = Some(HandshakeObserverHandle(observer));
        self
    }

    /// Set [`ClientConfig::handshake_timeout`].
    pub fn with_handshake_timeout(mut self, t: Duration) -> Self {
        self.handshake_timeout = t;
        self
    }
}

/// Whom the client expects to find at the peer address; checked inside the TLS handshake.
/// Part of the pool key, so streams for different expectations never share a connection.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ExpectedPeer {
    /// One of these SPIFFE IDs.
    Ids(BTreeSet<SpiffeId>),
    /// Any ID in one of these trust domains.
    TrustDomains(BTreeSet<TrustDomain>),
}

impl ExpectedPeer {
    /// Exactly these IDs.
    pub fn ids(ids: impl IntoIterator<Item = SpiffeId>) -> Self {
        Self::Ids(ids.into_iter().collect())
    }

    /// Any ID in these trust domains.
    pub fn trust_domains(tds: impl IntoIterator<Item = TrustDomain>) -> Self {
        Self::TrustDomains(tds.into_iter().collect())
    }

    /// The identity authorizer the TLS verifier applies.
    pub fn authorizer(&self) -> Authorizer {
        match self {
            Self::Ids(ids) => Authorizer::ids(ids.iter().cloned()),
            Self::TrustDomains(tds) => Authorizer::trust_domains(tds.iter().cloned()),
        }
    }
}

impl TryFrom<&Authorizer> for ExpectedPeer {
    type Error = Error;

    /// The ID and trust-domain forms convert; a custom closure cannot key a pool.
    fn try_from(a: &Authorizer) -> Result<Self, Error> {
        match a {
            Authorizer::AnyOf(ids) => Ok(Self::ids(ids.iter().cloned())),
            Authorizer::TrustDomains(tds) => Ok(Self::trust_domains(tds.iter().cloned())),
            Authorizer::Custom(_) => Err(Error::CustomAuthorizer),
        }
    }
}

impl From<SpiffeId> for ExpectedPeer {
    fn from(id: SpiffeId) -> Self {
        Self::ids([id])
    }
}

impl From<&SpiffeId> for ExpectedPeer {
    fn from(id: &SpiffeId) -> Self {
        Self::ids([id.clone()])
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct PoolKey {
    local: SpiffeId,
    expected: ExpectedPeer,
    peer: SocketAddr,
}

/// A pooled connection as the pool sees it.
pub(crate) struct ClientConn {
    send: SendRequest<Bytes>,
    peer_id: SpiffeId,
    max_streams: usize,
    /// What the TLS handshake negotiated.
    negotiated: Option<Negotiated>,
    /// The first typed rustls error on the connection (an alert after the handshake).
    seen_tls: SeenTlsError,
}

impl Pooled for ClientConn {
    fn usable(&self) -> bool {
        // After a GOAWAY or a connection error h2 refuses new streams at once; a fresh clone
        // has no pending stream, so anything but Ready(Ok) means the connection is done.
        let mut probe = self.send.clone();
        matches!(
            probe.poll_ready(&mut Context::from_waker(Waker::noop())),
            Poll::Ready(Ok(()))
        )
    }

    fn stream_cap(&self) -> usize {
        self.max_streams.min(self.send.current_max_send_streams())
    }
}

/// An HBONE client with a connection pool. Cheap to clone; clones share the pool.
///
/// See the [crate documentation](crate) for an example.
#[derive(Clone)]
pub struct HboneClient {
    inner: Arc<ClientInner>,
}

struct ClientInner {
    identity: TlsIdentity,
    config: ClientConfig,
    pool: Pool<PoolKey, ClientConn, DialError>,
    tls_configs: Mutex<HashMap<ExpectedPeer, Arc<rustls::ClientConfig>>>,
    metrics: Arc<Metrics>,
}

impl fmt::Debug for HboneClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HboneClient")
            .field("config", &self.inner.config)
            .field("pooled_connections", &self.inner.pool.total_connections())
            .finish_non_exhaustive()
    }
}

type H2Connection = h2::client::Connection<TlsErrorTap<TlsStream<TcpStream>>, Bytes>;

impl HboneClient {
    /// A client presenting `identity`'s SVID. Fails if the FIPS policy refuses the TLS config.
    pub fn new(identity: TlsIdentity, config: ClientConfig) -> Result<Self, Error> {
        // Build one config now so a non-FIPS setup fails here, not on the first connect.
        let probe = build_tls(&identity, &ExpectedPeer::Ids(BTreeSet::new()))?;
        drop(probe);
        Ok(Self {
            inner: Arc::new(ClientInner {
                identity,
                config,
                pool: Pool::new(),
                tls_configs: Mutex::new(HashMap::new()),
                metrics: Arc::new(Metrics::default()),
            }),
        })
    }

    /// Open a stream to `target` through the HBONE node `via` names (its address and the
    /// identities it must prove in the handshake).
    pub async fn connect(
        &self,
        target: impl Into<Target>,
        via: &HboneRoute,
    ) -> Result<HboneStream, Error> {
        self.connect_with(ConnectRequest::new(target.into()), via)
            .await
    }

    /// [`HboneClient::connect`] with a full request (optional `baggage`, `traceparent`,
    /// `forwarded`, or a hostname target).
    pub async fn connect_with(
        &self,
        request: ConnectRequest,
        via: &HboneRoute,
    ) -> Result<HboneStream, Error> {
        let peer = via.node;
        let inner = &self.inner;
        let local = inner
            .identity
            .svid
            .current()
            .ok_or(Error::NoLocalIdentity)?
            .id
            .clone();
        let key = PoolKey {
            local,
            expected: via.expected.clone(),
            peer,
        };
        let target = request.target().clone();
        let span = tracing::debug_span!("hbone_connect", %peer, %target);
        async move {
            let mut retried = false;
            loop {
                let lease = self.checkout(&key).await?;
                let send = lease.slot().conn().send.clone();
                let attempt = async {
                    let mut send = send.ready().await?;
                    let (resp, stream) = send.send_request(request.to_http(), false)?;
                    Ok::<_, h2::Error>((resp.await?, stream))
                };
                let (resp, send_stream) = match tokio::time::timeout(
                    inner.config.response_timeout,
                    attempt,
                )
                .await
                {
                    Err(_) => {
                        return Err(Error::ResponseTimeout {
                            peer,
                            target: target.to_string(),
                        });
                    }
                    Ok(Ok(r)) => r,
                    Ok(Err(e)) => {
                        // In TLS 1.3 the server checks our certificate after our side of the
                        // handshake finished: its refusal arrives as the first read.
                        let seen = lease.slot().conn().seen_tls.get().cloned();
                        if let Some(kind) = seen.as_ref().and_then(refused_handshake) {
                            inner.pool.evict(&key, lease.slot().id());
                            inner.metrics.handshake_failed(kind);
                            return Err(Error::Dial(DialError {
                                peer,
                                kind,
                                message: format!("the peer refused the handshake: {e}"),
                                tls: seen.map(Box::new),
                            }));
                        }
                        let conn_level = e.is_go_away() || e.is_io();
                        if conn_level {
                            inner.pool.evict(&key, lease.slot().id());
                        }
                        // GOAWAY and REFUSED_STREAM promise the request was not processed;
                        // an I/O failure before the answer leaves nothing to undo either.
                        if !retried
                            && (conn_level || e.reason() == Some(h2::Reason::REFUSED_STREAM))
                        {
                            tracing::debug!(error = %e, "retrying CONNECT on another connection");
                            retried = true;
                            continue;
                        }
                        return Err(Error::Stream {
                            peer,
                            target: target.to_string(),
                            source: e,
                        });
                    }
                };
                let answer = ConnectResponse::parse(&resp)?;
                if let Err(rejection) = answer.result() {
                    inner.metrics.stream_rejected();
                    tracing::debug!(status = %answer.status(), "CONNECT refused");
                    return Err(Error::Rejected {
                        peer,
                        target: target.to_string(),
                        rejection,
                    });
                }
                let peer_id = lease.slot().conn().peer_id.clone();
                let negotiated = lease.slot().conn().negotiated;
                tracing::trace!(%peer_id, "hbone stream open");
                return Ok(HboneStream::new(
                    (send_stream, resp.into_body()),
                    peer,
                    peer_id,
                    negotiated,
                    target,
                    inner.metrics.clone(),
                    crate::stream::Hold::Pool { _lease: lease },
                ));
            }
        }
        .instrument(span)
        .await
    }

    /// The identity the client presents and the trust it verifies peers against.
    pub fn identity(&self) -> &TlsIdentity {
        &self.inner.identity
    }

    /// Counters since the client was created.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.inner.metrics.snapshot()
    }

    /// Connections currently in the pool.
    pub fn pooled_connections(&self) -> usize {
        self.inner.pool.total_connections()
    }

    async fn checkout(&self, key: &PoolKey) -> Result<Lease<ClientConn>, Error> {
        loop {
            match self.inner.pool.checkout(key) {
                Checkout::Ready(lease) => return Ok(lease),
                Checkout::Wait(mut rx) => loop {
                    if let Some(outcome) = rx.borrow_and_update().clone() {
                        outcome.map_err(Error::Dial)?;
                        break;
                    }
                    if rx.changed().await.is_err() {
                        break;
                    }
                },
                Checkout::Dial(ticket) => {
                    // No pool lock is held here: the handshake runs unlocked.
                    match self.dial(key).await {
                        Ok((conn, h2conn)) => {
                            let id = ticket.id();
                            let lease = ticket.complete(conn);
                            self.spawn_driver(key.clone(), id, h2conn);
                            return Ok(lease);
                        }
                        Err(e) => {
                            self.inner.metrics.handshake_failed(e.kind);
                            ticket.fail(e.clone());
                            return Err(Error::Dial(e));
                        }
                    }
                }
            }
        }
    }

    fn tls_config(&self, expected: &ExpectedPeer) -> Result<Arc<rustls::ClientConfig>, Error> {
        let mut cache = self
            .inner
            .tls_configs
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(c) = cache.get(expected) {
            return Ok(c.clone());
        }
        let c = Arc::new(build_tls(&self.inner.identity, expected)?);
        cache.insert(expected.clone(), c.clone());
        Ok(c)
    }

    async fn dial(&self, key: &PoolKey) -> Result<(ClientConn, H2Connection), DialError> {
        let cfg = &self.inner.config;
        let peer = key.peer;
        let fail = |kind, message: String| DialError {
            peer,
            kind,
            message,
            tls: None,
        };
        let tls = self
            .tls_config(&key.expected)
            .map_err(|e| fail(HandshakeFailure::Tls, e.to_string()))?;
        let tcp = match tokio::time::timeout(cfg.connect_timeout, TcpStream::connect(peer)).await {
            Err(_) => return Err(fail(HandshakeFailure::Tcp, "TCP connect timed out".into())),
            Ok(Err(e)) => return Err(fail(HandshakeFailure::Tcp, e.to_string())),
            Ok(Ok(s)) => s,
        };
        let _ = tcp.set_nodelay(true);
        // SNI is not used for SPIFFE: an IP server name makes rustls send none.
        let name = ServerName::IpAddress(peer.ip().into());
        let handshake = async {
            let tls_started = Instant::now();
            let mut tls = TlsConnector::from(tls)
                .connect(name, tcp)
                .await
                .map_err(|e| DialError {
                    tls: rustls_error(&e).cloned().map(Box::new),
                    ..fail(classify_tls_error(&e), e.to_string())
                })?;
            if let Some(o) = &cfg.handshake_observer {
                o.0.tls_handshake_done(tls_started.elapsed());
            }
            tls.get_mut()
                .1
                .set_buffer_limit(Some(crate::TLS_SEND_BUFFER_BYTES));
            let (_, session) = tls.get_ref();
            if session.alpn_protocol() != Some(ALPN_H2) {
                return Err(fail(
                    HandshakeFailure::Alpn,
                    format!(
                        "the peer selected ALPN {:?}, not h2",
                        session.alpn_protocol().map(String::from_utf8_lossy)
                    ),
                ));
            }
            let peer_id = peer_spiffe_id(session).ok_or_else(|| {
                fail(
                    HandshakeFailure::Certificate,
                    "the peer certificate has no SPIFFE ID".into(),
                )
            })?;
            let negotiated = negotiated(session);
            let (tls, seen_tls) = TlsErrorTap::new(tls);
            let (send, conn) = cfg
                .h2
                .client_builder(cfg.max_streams_per_conn)
                .handshake::<_, Bytes>(tls)
                .await
                .map_err(|e| DialError {
                    tls: seen_tls.get().cloned().map(Box::new),
                    ..fail(HandshakeFailure::Http2, e.to_string())
                })?;
            Ok((send, conn, peer_id, negotiated, seen_tls))
        };
        let (send, conn, peer_id, negotiated, seen_tls) =
            match tokio::time::timeout(cfg.handshake_timeout, handshake).await {
                Err(_) => {
                    return Err(fail(
                        HandshakeFailure::Timeout,
                        format!("handshake took longer than {:?}", cfg.handshake_timeout),
                    ));
                }
                Ok(r) => r?,
            };
        self.inner.metrics.connection_opened();
        tracing::debug!(%peer, %peer_id, "hbone connection established");
        Ok((
            ClientConn {
                send,
                peer_id,
                max_streams: cfg.max_streams_per_conn,
                negotiated,
                seen_tls,
            },
            conn,
        ))
    }

    fn spawn_driver(&self, key: PoolKey, id: u64, conn: H2Connection) {
        let inner = Arc::downgrade(&self.inner);
        let cfg = self.inner.config.clone();
        let metrics = self.inner.metrics.clone();
        let span = tracing::debug_span!("hbone_client_conn", peer = %key.peer, id);
        tokio::spawn(
            async move {
                let why = drive(conn, inner.clone(), &key, id, &cfg).await;
                tracing::debug!(reason = why, "hbone connection closed");
                if let Some(inner) = inner.upgrade() {
                    inner.pool.evict(&key, id);
                }
                metrics.connection_closed();
            }
            .instrument(span),
        );
    }
}

/// Run one pooled connection: drive h2, PING it, and release it when idle.
async fn drive(
    mut conn: H2Connection,
    inner: Weak<ClientInner>,
    key: &PoolKey,
    id: u64,
    cfg: &ClientConfig,
) -> &'static str {
    let mut pings = conn.ping_pong();
    let mut conn = pin!(conn);
    let tick_every = cfg
        .keepalive_interval
        .min(cfg.idle_timeout / 2)
        .max(Duration::from_millis(10));
    let mut tick = tokio::time::interval(tick_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut next_ping = Instant::now() + cfg.keepalive_interval;
    let mut pooled = true;
    loop {
        tokio::select! {
            r = &mut conn => return match r { Ok(()) => "closed", Err(_) => "connection error" },
            _ = tick.tick() => {}
        }
        let now = Instant::now();
        if pooled {
            match inner.upgrade() {
                // The client is gone: keep serving the streams still open, nothing more.
                None => pooled = false,
                Some(inner) => match inner.pool.evict_if_idle(key, id, cfg.idle_timeout, now) {
                    IdleCheck::Busy => {}
                    IdleCheck::Evicted => return "idle",
                    // Evicted after GOAWAY or an error: let the open streams finish.
                    IdleCheck::Gone => pooled = false,
                },
            }
        }
        if now >= next_ping
            && let Some(p) = pings.as_mut()
        {
            let pong = tokio::time::timeout(cfg.keepalive_timeout, p.ping(h2::Ping::opaque()));
            tokio::select! {
                r = &mut conn => return match r { Ok(()) => "closed", Err(_) => "connection error" },
                r = pong => match r {
                    Ok(Ok(_)) => {}
                    Ok(Err(_)) => return "keepalive failed",
                    Err(_) => return "keepalive timeout",
                },
            }
            next_ping = Instant::now() + cfg.keepalive_interval;
        }
    }
}

/// A TLS alert about certificates or ALPN received on an established-looking connection.
fn refused_handshake(tls: &rustls::Error) -> Option<HandshakeFailure> {
    match crate::classify_rustls_error(tls) {
        k @ (HandshakeFailure::Certificate | HandshakeFailure::Alpn) => Some(k),
        _ => None,
    }
}

fn build_tls(
    identity: &TlsIdentity,
    expected: &ExpectedPeer,
) -> Result<rustls::ClientConfig, Error> {
    let mut c = fipstun_identity::tls::client_config(
        &identity.policy,
        identity.trust.clone(),
        expected.authorizer(),
        identity.svid.clone(),
    )?;
    c.alpn_protocols = vec![ALPN_H2.to_vec()];
    // Every dial verifies the peer's SVID against the current bundles: no resumption.
    c.resumption = rustls::client::Resumption::disabled();
    fipstun_identity::policy::check_client(&c)?;
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_peer_from_authorizer() {
        let id = SpiffeId::parse("spiffe://example.org/ns/a/sa/b").unwrap();
        let td = TrustDomain::new("example.org").unwrap();
        let e = ExpectedPeer::try_from(&Authorizer::ids([id.clone()])).unwrap();
        assert_eq!(e, ExpectedPeer::from(id.clone()));
        assert!(e.authorizer().allows(&id));
        let e = ExpectedPeer::try_from(&Authorizer::trust_domains([td.clone()])).unwrap();
        assert_eq!(e, ExpectedPeer::trust_domains([td]));
        assert!(e.authorizer().allows(&id));
        let custom = Authorizer::Custom(Arc::new(|_: &SpiffeId| true));
        assert!(matches!(
            ExpectedPeer::try_from(&custom),
            Err(Error::CustomAuthorizer)
        ));
        // Order does not matter for the pool key.
        let other = SpiffeId::parse("spiffe://example.org/ns/a/sa/c").unwrap();
        assert_eq!(
            ExpectedPeer::ids([id.clone(), other.clone()]),
            ExpectedPeer::ids([other, id])
        );
    }
}
