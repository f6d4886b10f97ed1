//! The one forwarder: accept -> authorize -> dial -> copy. Every inbound path in fipstun runs
//! it — the node behind HBONE and WireGuard, the proxy's local listeners, the benches' relay
//! and the conformance suite — so limits, timeouts and policy hold the same everywhere.
//!
//! An [`Acceptor`] yields [`PendingInbound`] streams whose peer and target are known but which
//! are not yet answered; [`Forwarder::run`] judges each with an [`Authorize`] (usually a
//! [`Policy`]), dials the target through a [`Transport`] (plain TCP on a node, a tunnel on a
//! proxy) within a timeout, and only then establishes the inbound stream (HBONE's `200`) or
//! refuses it with a [`Refusal`] the backend maps to its own signal (HBONE: 403 or 503;
//! WireGuard and TCP: a reset). Bytes are then copied both ways with half-close kept, until
//! both sides are done or the stream has been idle for [`ForwarderConfig::idle_timeout`].
//!
//! When a stream ends, or is refused, the forwarder hands one [`StreamRecord`] to the
//! [`StreamObserver`] set with [`ForwarderConfig::with_observer`] (access logs, histograms).
//!
//! A target given as a DNS name is resolved first (unless [`ForwarderConfig::resolve_names`]
//! is off), so that the policy judges, and the dialer dials, an address.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use fipstun_policy::{Policy, Verdict};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{Notify, watch};

use crate::{Inbound, PeerIdentity, Target, Transport, TransportError, TunnelListener};

/// Why the forwarder refused a stream before establishing it. Each backend answers in its
/// own way: HBONE with a status (403, 503), WireGuard and TCP with a reset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Refusal {
    /// The authorization policy does not allow this peer to reach this target.
    Policy,
    /// The target could not be dialled (refused, unreachable, or the dial timed out).
    Unreachable,
    /// A concurrency limit (per listener or per peer) is reached.
    Overloaded,
    /// The forwarder is shutting down.
    ShuttingDown,
}

impl Refusal {
    /// A short label for metrics and logs (`policy`, `unreachable`, `overloaded`,
    /// `shutting_down`).
    pub fn label(self) -> &'static str {
        match self {
            Self::Policy => "policy",
            Self::Unreachable => "unreachable",
            Self::Overloaded => "overloaded",
            Self::ShuttingDown => "shutting_down",
        }
    }
}

/// How a stream the forwarder handled ended.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StreamResult {
    /// Established, and both directions finished (end of stream each way).
    Ok,
    /// Refused before it was established; nothing was copied.
    Refused(Refusal),
    /// Established (or about to be) and then cut: a copy error, the idle timeout, or the peer
    /// going away before the stream could be established. The text says which.
    Error(String),
}

/// What the forwarder knows about one stream once it is over: given to the
/// [`StreamObserver`] exactly once per stream the acceptor handed over.
///
/// Bytes are payload bytes, counted on the inbound (peer) side: `bytes_sent` went from the
/// peer toward the target, `bytes_received` came back from the target to the peer.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct StreamRecord {
    /// Who sent the stream, as the backend authenticated it (its SPIFFE ID, if any, through
    /// [`PeerIdentity::spiffe_id`]).
    pub peer: PeerIdentity,
    /// The peer's socket address, when the acceptor knows it
    /// ([`PendingInbound::peer_addr`]).
    pub peer_addr: Option<SocketAddr>,
    /// Where the stream asked to go.
    pub target: Target,
    /// The address the dialer actually connected to, when it reports one
    /// ([`Transport::dialled_addr`]); `None` if the stream was refused before a dial.
    pub dialled: Option<SocketAddr>,
    /// Payload bytes from the peer toward the target.
    pub bytes_sent: u64,
    /// Payload bytes from the target back to the peer.
    pub bytes_received: u64,
    /// From the hand-over by the acceptor to established (or refused): authorization, the
    /// slot and the dial of the target.
    pub setup: Duration,
    /// From established to closed; zero for a refused stream.
    pub duration: Duration,
    /// How it ended.
    pub result: StreamResult,
    /// For a refusal, the detail behind it (the policy verdict, the dial error, the limit
    /// reached); `None` otherwise.
    pub refusal_detail: Option<String>,
}

impl StreamRecord {
    /// A record of a stream from `peer` to `target` that moved nothing and took no time,
    /// ended [`StreamResult::Ok`]; set the public fields for the rest (for observers' tests).
    pub fn new(peer: PeerIdentity, target: Target) -> Self {
        Self {
            peer,
            peer_addr: None,
            target,
            dialled: None,
            bytes_sent: 0,
            bytes_received: 0,
            setup: Duration::ZERO,
            duration: Duration::ZERO,
            result: StreamResult::Ok,
            refusal_detail: None,
        }
    }
}

/// Told about every stream a forwarder handled, once, when it ends or is refused. Called on
/// the stream's own task: keep it short and never block (log, bump a metric).
pub trait StreamObserver: Send + Sync + 'static {
    /// One stream is over.
    fn stream_ended(&self, record: &StreamRecord);
}

/// A [`StreamObserver`] held by a [`ForwarderConfig`] (which is `Clone` and `Debug`).
#[derive(Clone)]
pub struct ObserverHandle(pub Arc<dyn StreamObserver>);

impl std::fmt::Debug for ObserverHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StreamObserver")
    }
}

/// A stream that arrived and has not been answered yet.
pub trait PendingInbound: Send + 'static {
    /// The byte stream once established.
    type Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static;

    /// Who sent it, as the backend authenticated it.
    fn peer(&self) -> &PeerIdentity;

    /// Where it asks to go.
    fn target(&self) -> &Target;

    /// The peer's socket address as this side sees it (the TCP client of a local listener, the
    /// HBONE client's connection), if the backend knows one; reported in
    /// [`StreamRecord::peer_addr`]. The default knows none.
    fn peer_addr(&self) -> Option<SocketAddr> {
        None
    }

    /// Accept it (HBONE: answer 200) and take the byte stream.
    fn establish(self) -> Result<Self::Stream, TransportError>;

    /// Refuse it in the backend's own way.
    fn refuse(self, why: Refusal);
}

/// A source of pending inbound streams: a backend's listener, or a local TCP listener.
pub trait Acceptor: Send + 'static {
    /// What it yields.
    type Pending: PendingInbound;

    /// The next stream. [`TransportError::Closed`] ends [`Forwarder::run`]; any other error is
    /// logged and retried after a back-off.
    fn accept(&mut self) -> impl Future<Output = Result<Self::Pending, TransportError>> + Send;
}

/// A stream a [`TunnelListener`] already established: refusing it drops it, which each
/// backend turns into its own close.
impl<S: AsyncRead + AsyncWrite + Send + Unpin + 'static> PendingInbound for Inbound<S> {
    type Stream = S;

    fn peer(&self) -> &PeerIdentity {
        &self.peer
    }

    fn target(&self) -> &Target {
        &self.target
    }

    fn establish(self) -> Result<S, TransportError> {
        Ok(self.stream)
    }

    fn refuse(self, _why: Refusal) {}
}

/// Any [`TunnelListener`] as an [`Acceptor`].
#[derive(Debug)]
pub struct ListenerAcceptor<L>(pub Arc<L>);

impl<L: TunnelListener> Acceptor for ListenerAcceptor<L> {
    type Pending = Inbound<L::Stream>;

    fn accept(&mut self) -> impl Future<Output = Result<Self::Pending, TransportError>> + Send {
        let l = self.0.clone();
        async move { l.accept().await }
    }
}

/// A local TCP listener whose every connection goes to one configured target (a proxy's
/// listener, a relay). Its peers are [`PeerIdentity::Local`] clients.
#[derive(Debug)]
pub struct TcpAcceptor {
    listener: tokio::net::TcpListener,
    target: Target,
}

impl TcpAcceptor {
    /// Connections to `listener` go to `target`.
    pub fn new(listener: tokio::net::TcpListener, target: Target) -> Self {
        Self { listener, target }
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

/// A connection accepted by a [`TcpAcceptor`].
#[derive(Debug)]
pub struct TcpPending {
    stream: tokio::net::TcpStream,
    peer: PeerIdentity,
    target: Target,
}

impl PendingInbound for TcpPending {
    type Stream = tokio::net::TcpStream;

    fn peer(&self) -> &PeerIdentity {
        &self.peer
    }

    fn target(&self) -> &Target {
        &self.target
    }

    fn peer_addr(&self) -> Option<SocketAddr> {
        match self.peer {
            PeerIdentity::Local(a) => Some(a),
            _ => None,
        }
    }

    fn establish(self) -> Result<tokio::net::TcpStream, TransportError> {
        Ok(self.stream)
    }

    /// A reset (SO_LINGER 0), as a failed dial through a kernel proxy looks to the client.
    fn refuse(self, _why: Refusal) {
        let _ = self.stream.set_zero_linger();
    }
}

impl Acceptor for TcpAcceptor {
    type Pending = TcpPending;

    async fn accept(&mut self) -> Result<TcpPending, TransportError> {
        let (stream, addr) = self.listener.accept().await?;
        let _ = stream.set_nodelay(true);
        Ok(TcpPending {
            stream,
            peer: PeerIdentity::Local(addr),
            target: self.target.clone(),
        })
    }
}

/// Decides whether a peer may reach a target.
pub trait Authorize: Send + Sync + 'static {
    /// The verdict for one stream.
    fn authorize(&self, peer: &PeerIdentity, target: &Target) -> Verdict;
}

/// A name target is denied ([`Verdict::UnresolvedName`]): the policy judges addresses, and a
/// forwarder that resolves names ([`ForwarderConfig::resolve_names`]) hands it the address.
impl Authorize for Policy {
    fn authorize(&self, peer: &PeerIdentity, target: &Target) -> Verdict {
        match target.socket_addr() {
            Some(addr) => self.check(peer.spiffe_id(), addr),
            None => Verdict::UnresolvedName {
                target: target.to_string(),
            },
        }
    }
}

impl<T: Authorize + ?Sized> Authorize for Arc<T> {
    fn authorize(&self, peer: &PeerIdentity, target: &Target) -> Verdict {
        (**self).authorize(peer, target)
    }
}

/// For acceptors that authorize every stream themselves before handing it over (an HBONE
/// server's [`Handler`](https://docs.rs/fipstun-hbone) in forwarding mode): the forwarder
/// allows what it is given. Say it explicitly; there is no default.
#[derive(Clone, Copy, Debug, Default)]
pub struct AuthorizedByAcceptor;

impl Authorize for AuthorizedByAcceptor {
    fn authorize(&self, _peer: &PeerIdentity, _target: &Target) -> Verdict {
        Verdict::Allow {
            rule: "authorized by the acceptor".into(),
        }
    }
}

/// Forwarder limits and timeouts. Durations are wall-clock.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ForwarderConfig {
    /// How long a dial of the target may take; past it the stream is refused as unreachable.
    /// Default 10 s.
    pub dial_timeout: Duration,
    /// Streams open at once through this forwarder (dialling or established); more are
    /// refused as overloaded. Default 16,384.
    pub max_streams: usize,
    /// Streams open at once for one peer identity, so that one peer cannot take every slot.
    /// Default 4,096.
    pub max_streams_per_peer: usize,
    /// A stream with no byte in either direction for this long is closed. Default 1 h.
    pub idle_timeout: Duration,
    /// Copy buffer per direction: 64 KiB moves bulk in a few large reads and writes.
    pub copy_buffer_bytes: usize,
    /// The longest pause after repeated accept errors (out of file descriptors and the
    /// like); the first is 5 ms, doubling. Default 1 s.
    pub max_accept_backoff: Duration,
    /// Told about every stream when it ends or is refused. Default none.
    pub observer: Option<ObserverHandle>,
    /// Whether a target given as a DNS name is resolved here (within
    /// [`ForwarderConfig::dial_timeout`]) so that the [`Authorize`] judges, and the dialer
    /// dials, its first address. Off, the name goes to both as it is: for a proxy that passes
    /// names through a tunnel for the far node to resolve (a [`Policy`] denies a name).
    /// Default true.
    pub resolve_names: bool,
}

impl Default for ForwarderConfig {
    fn default() -> Self {
        Self {
            dial_timeout: Duration::from_secs(10),
            max_streams: 16_384,
            max_streams_per_peer: 4_096,
            idle_timeout: Duration::from_secs(3600),
            copy_buffer_bytes: 64 * 1024,
            max_accept_backoff: Duration::from_secs(1),
            observer: None,
            resolve_names: true,
        }
    }
}

impl ForwarderConfig {
    /// Set [`ForwarderConfig::dial_timeout`].
    pub fn with_dial_timeout(mut self, t: Duration) -> Self {
        self.dial_timeout = t;
        self
    }

    /// Set [`ForwarderConfig::max_streams`] and [`ForwarderConfig::max_streams_per_peer`]
    /// (each at least 1).
    pub fn with_max_streams(mut self, total: usize, per_peer: usize) -> Self {
        self.max_streams = total.max(1);
        self.max_streams_per_peer = per_peer.max(1);
        self
    }

    /// Set [`ForwarderConfig::copy_buffer_bytes`] (at least 1 KiB).
    pub fn with_copy_buffer_bytes(mut self, bytes: usize) -> Self {
        self.copy_buffer_bytes = bytes.max(1024);
        self
    }

    /// Set [`ForwarderConfig::idle_timeout`].
    pub fn with_idle_timeout(mut self, t: Duration) -> Self {
        self.idle_timeout = t;
        self
    }

    /// Set [`ForwarderConfig::observer`]: `observer` gets one [`StreamRecord`] per stream.
    pub fn with_observer(mut self, observer: Arc<dyn StreamObserver>) -> Self {
        self.observer = Some(ObserverHandle(observer));
        self
    }

    /// Set [`ForwarderConfig::resolve_names`].
    pub fn with_resolve_names(mut self, resolve: bool) -> Self {
        self.resolve_names = resolve;
        self
    }
}

/// Counters since the forwarder was created (relaxed atomics, read at any time).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ForwarderStats {
    /// Streams the acceptor handed over.
    pub accepted: u64,
    /// Streams established (target dialled, inbound answered).
    pub forwarded: u64,
    /// Streams open now.
    pub active: u64,
    /// Refused by the policy.
    pub refused_policy: u64,
    /// Refused because the target could not be dialled.
    pub refused_unreachable: u64,
    /// Refused because a concurrency limit was reached.
    pub refused_overloaded: u64,
    /// Refused during shutdown.
    pub refused_shutting_down: u64,
    /// Established streams closed for being idle.
    pub idle_closed: u64,
    /// Accept errors (each followed by a back-off).
    pub accept_errors: u64,
    /// Bytes read from the inbound side (peer -> target).
    pub bytes_from_peer: u64,
    /// Bytes written to the inbound side (target -> peer).
    pub bytes_to_peer: u64,
    /// Failed dials by the dialer's error ([`TransportError::label`]); each is also one of
    /// `refused_unreachable`. Labels with a zero count are left out.
    pub dial_failures: Vec<(&'static str, u64)>,
}

/// The labels [`TransportError::label`] gives, in a fixed order for the counters.
const DIAL_FAILURE_LABELS: [&str; 7] = [
    "fips_required",
    "no_route",
    "refused",
    "unreachable",
    "tunnel",
    "closed",
    "io",
];

#[derive(Debug, Default)]
struct Counters {
    accepted: AtomicU64,
    forwarded: AtomicU64,
    refused: [AtomicU64; 4],
    idle_closed: AtomicU64,
    accept_errors: AtomicU64,
    bytes_from_peer: AtomicU64,
    bytes_to_peer: AtomicU64,
    dial_failures: [AtomicU64; 7],
}

fn refusal_index(r: Refusal) -> usize {
    match r {
        Refusal::Policy => 0,
        Refusal::Unreachable => 1,
        Refusal::Overloaded => 2,
        Refusal::ShuttingDown => 3,
    }
}

struct Inner<D> {
    dialer: D,
    authorize: Arc<dyn Authorize>,
    config: ForwarderConfig,
    counters: Counters,
    active: AtomicUsize,
    per_peer: Mutex<HashMap<PeerIdentity, usize>>,
    idle: Notify,
    stop: watch::Sender<bool>,
    epoch: Instant,
}

/// The one accept -> authorize -> dial -> copy loop. Cheap to clone; clones share limits,
/// counters and shutdown, so one forwarder can serve several acceptors.
pub struct Forwarder<D: Transport> {
    inner: Arc<Inner<D>>,
}

impl<D: Transport> Clone for Forwarder<D> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<D: Transport> std::fmt::Debug for Forwarder<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarder")
            .field("config", &self.inner.config)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// One slot of the forwarder's limits, released on drop.
struct Slot<D: Transport> {
    inner: Arc<Inner<D>>,
    peer: PeerIdentity,
}

impl<D: Transport> Drop for Slot<D> {
    fn drop(&mut self) {
        {
            let mut map = self
                .inner
                .per_peer
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if let Some(n) = map.get_mut(&self.peer) {
                *n -= 1;
                if *n == 0 {
                    map.remove(&self.peer);
                }
            }
        }
        if self.inner.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.inner.idle.notify_waiters();
        }
    }
}

/// The key a peer's concurrency is counted under: a local client by its IP, not its port.
fn limit_key(peer: &PeerIdentity) -> PeerIdentity {
    match peer {
        PeerIdentity::Local(a) => PeerIdentity::Local(SocketAddr::new(a.ip(), 0)),
        other => other.clone(),
    }
}

impl<D: Transport> Forwarder<D> {
    /// A forwarder that dials targets through `dialer` (for a node: [`crate::PlainTcp`]) and
    /// lets through what `authorize` allows.
    pub fn new(dialer: D, authorize: impl Authorize, config: ForwarderConfig) -> Self {
        let (stop, _) = watch::channel(false);
        Self {
            inner: Arc::new(Inner {
                dialer,
                authorize: Arc::new(authorize),
                config,
                counters: Counters::default(),
                active: AtomicUsize::new(0),
                per_peer: Mutex::new(HashMap::new()),
                idle: Notify::new(),
                stop,
                epoch: Instant::now(),
            }),
        }
    }

    /// The dialer's security (what protects the dialled side).
    pub fn dialer(&self) -> &D {
        &self.inner.dialer
    }

    /// Accept from `acceptor` until [`Forwarder::shutdown`] (returns `Ok`) or until the
    /// acceptor reports [`TransportError::Closed`] (returns that error). Other accept errors
    /// are logged and backed off; they never end the loop. Each stream runs in its own task.
    pub async fn run<A: Acceptor>(&self, mut acceptor: A) -> Result<(), TransportError> {
        let mut stop = self.inner.stop.subscribe();
        let mut backoff = Duration::ZERO;
        loop {
            if *stop.borrow_and_update() {
                return Ok(());
            }
            let next = tokio::select! {
                next = acceptor.accept() => next,
                _ = stop.changed() => continue,
            };
            match next {
                Ok(pending) => {
                    backoff = Duration::ZERO;
                    let this = self.clone();
                    tokio::spawn(async move { this.handle(pending).await });
                }
                Err(TransportError::Closed) => return Err(TransportError::Closed),
                Err(e) => {
                    self.inner
                        .counters
                        .accept_errors
                        .fetch_add(1, Ordering::Relaxed);
                    backoff = (backoff * 2).clamp(
                        Duration::from_millis(5),
                        self.inner.config.max_accept_backoff,
                    );
                    tracing::warn!(error = %e, ?backoff, "accept failed; backing off");
                    tokio::time::sleep(backoff).await;
                }
            }
        }
    }

    fn refuse<P: PendingInbound>(
        &self,
        pending: P,
        why: Refusal,
        detail: &dyn std::fmt::Display,
        accepted_at: Instant,
    ) {
        self.inner.counters.refused[refusal_index(why)].fetch_add(1, Ordering::Relaxed);
        let (peer, target) = (pending.peer(), pending.target());
        match why {
            Refusal::Policy => {
                tracing::warn!(%peer, %target, verdict = %detail, "stream refused by policy")
            }
            Refusal::Overloaded => {
                tracing::warn!(%peer, %target, limit = %detail, "stream refused: limit reached")
            }
            _ => {
                tracing::info!(%peer, %target, reason = %detail, "stream refused: {}", why.label())
            }
        }
        if let Some(observer) = &self.inner.config.observer {
            observer.0.stream_ended(&StreamRecord {
                peer: peer.clone(),
                peer_addr: pending.peer_addr(),
                target: target.clone(),
                dialled: None,
                bytes_sent: 0,
                bytes_received: 0,
                setup: accepted_at.elapsed(),
                duration: Duration::ZERO,
                result: StreamResult::Refused(why),
                refusal_detail: Some(detail.to_string()),
            });
        }
        pending.refuse(why);
    }

    fn take_slot(&self, peer: &PeerIdentity) -> Result<Slot<D>, &'static str> {
        let inner = &self.inner;
        let key = limit_key(peer);
        let mut map = inner.per_peer.lock().unwrap_or_else(|p| p.into_inner());
        if inner.active.load(Ordering::Acquire) >= inner.config.max_streams {
            return Err("max_streams");
        }
        let n = map.entry(key.clone()).or_insert(0);
        if *n >= inner.config.max_streams_per_peer {
            return Err("max_streams_per_peer");
        }
        *n += 1;
        inner.active.fetch_add(1, Ordering::AcqRel);
        Ok(Slot {
            inner: inner.clone(),
            peer: key,
        })
    }

    /// Authorize, dial, establish and copy one pending stream to completion (for callers that
    /// own their accept loop, such as an HBONE server in forwarding mode).
    pub async fn handle<P: PendingInbound>(&self, pending: P) {
        let accepted_at = Instant::now();
        let inner = &self.inner;
        inner.counters.accepted.fetch_add(1, Ordering::Relaxed);
        if *inner.stop.borrow() {
            return self.refuse(
                pending,
                Refusal::ShuttingDown,
                &"shutting down",
                accepted_at,
            );
        }
        // One deadline for resolving a name and dialling its address.
        let deadline = tokio::time::Instant::now() + inner.config.dial_timeout;
        let target = match pending.target().socket_addr() {
            None if inner.config.resolve_names => {
                // Boxed, as the dial below: the lookup's state is freed once it is done.
                let resolve = Box::pin(pending.target().resolve());
                match tokio::time::timeout_at(deadline, resolve).await {
                    Ok(Ok(addrs)) => match addrs.first() {
                        Some(a) => Target::new(*a),
                        None => {
                            return self.refuse(
                                pending,
                                Refusal::Unreachable,
                                &"no address",
                                accepted_at,
                            );
                        }
                    },
                    Ok(Err(e)) => {
                        return self.refuse(pending, Refusal::Unreachable, &e, accepted_at);
                    }
                    Err(_) => {
                        let why = format!(
                            "name resolution timed out after {:?}",
                            inner.config.dial_timeout
                        );
                        return self.refuse(pending, Refusal::Unreachable, &why, accepted_at);
                    }
                }
            }
            _ => pending.target().clone(),
        };
        let verdict = inner.authorize.authorize(pending.peer(), &target);
        if !verdict.is_allowed() {
            return self.refuse(pending, Refusal::Policy, &verdict, accepted_at);
        }
        let slot = match self.take_slot(pending.peer()) {
            Ok(s) => s,
            Err(limit) => return self.refuse(pending, Refusal::Overloaded, &limit, accepted_at),
        };
        // The dial's future is boxed: a task keeps room for its future's largest state for
        // its whole life, and a tunnel's dial (a pooled connection, maybe a TLS and HTTP/2
        // handshake) is several KiB, so every idle stream would carry it. Boxed, it is freed
        // as soon as the stream is up: the HBONE proxy's held stream costs 9 KiB less.
        let dial = tokio::time::timeout_at(deadline, Box::pin(inner.dialer.connect(&target)));
        let mut upstream = match dial.await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                if let Some(i) = DIAL_FAILURE_LABELS.iter().position(|l| *l == e.label()) {
                    inner.counters.dial_failures[i].fetch_add(1, Ordering::Relaxed);
                }
                return self.refuse(pending, Refusal::Unreachable, &e, accepted_at);
            }
            Err(_) => {
                let why = format!("dial timed out after {:?}", inner.config.dial_timeout);
                return self.refuse(pending, Refusal::Unreachable, &why, accepted_at);
            }
        };
        let dialled = inner.dialer.dialled_addr(&upstream);
        let peer = pending.peer().clone();
        let peer_addr = pending.peer_addr();
        let record = |result, setup, sent, received, duration| StreamRecord {
            peer: peer.clone(),
            peer_addr,
            target: target.clone(),
            dialled,
            bytes_sent: sent,
            bytes_received: received,
            setup,
            duration,
            result,
            refusal_detail: None,
        };
        let stream = match pending.establish() {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(%peer, %target, error = %e, "peer went away before the stream was established");
                if let Some(observer) = &inner.config.observer {
                    let why = format!("the peer went away before the stream was established: {e}");
                    let r = record(
                        StreamResult::Error(why),
                        accepted_at.elapsed(),
                        0,
                        0,
                        Duration::ZERO,
                    );
                    observer.0.stream_ended(&r);
                }
                return;
            }
        };
        let setup = accepted_at.elapsed();
        inner.counters.forwarded.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(%peer, %target, rule = verdict.rule().unwrap_or(""), "stream forwarded");
        let activity = Arc::new(AtomicU64::new(0));
        let mut inbound = Tracked {
            inner: stream,
            read: &inner.counters.bytes_from_peer,
            written: &inner.counters.bytes_to_peer,
            stream_read: 0,
            stream_written: 0,
            activity: &activity,
            epoch: inner.epoch,
        };
        // Buffers only while bytes are in flight: idle streams hold none (crate::copy).
        let copy = crate::copy::copy_bidirectional(
            &mut inbound,
            &mut upstream,
            inner.config.copy_buffer_bytes,
            inner.config.copy_buffer_bytes,
        );
        let started = Instant::now();
        let result = tokio::select! {
            r = copy => match r {
                Ok((from_peer, to_peer)) => {
                    tracing::debug!(%peer, %target, from_peer, to_peer, elapsed = ?started.elapsed(), "stream closed");
                    StreamResult::Ok
                }
                Err(e) => {
                    tracing::debug!(%peer, %target, error = %e, "stream ended with an error");
                    StreamResult::Error(e.to_string())
                }
            },
            _ = idle_watch(&activity, inner.epoch, inner.config.idle_timeout) => {
                inner.counters.idle_closed.fetch_add(1, Ordering::Relaxed);
                tracing::info!(%peer, %target, idle = ?inner.config.idle_timeout, "stream idle: closed");
                StreamResult::Error(format!("idle timeout ({:?} without a byte)", inner.config.idle_timeout))
            }
        };
        let duration = started.elapsed();
        drop(slot);
        if let Some(observer) = &inner.config.observer {
            let r = record(
                result,
                setup,
                inbound.stream_read,
                inbound.stream_written,
                duration,
            );
            observer.0.stream_ended(&r);
        }
    }

    /// Stop accepting: every [`Forwarder::run`] returns, and streams that arrive from now on
    /// are refused as shutting down. Open streams go on; [`Forwarder::drained`] waits for
    /// them.
    pub fn shutdown(&self) {
        self.inner.stop.send_replace(true);
    }

    /// Wait until no stream is open, at most `limit`. True if they all finished.
    pub async fn drained(&self, limit: Duration) -> bool {
        let wait = async {
            loop {
                let idle = self.inner.idle.notified();
                if self.inner.active.load(Ordering::Acquire) == 0 {
                    return;
                }
                idle.await;
            }
        };
        tokio::time::timeout(limit, wait).await.is_ok()
    }

    /// Counters since the forwarder was created.
    pub fn stats(&self) -> ForwarderStats {
        let c = &self.inner.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ForwarderStats {
            accepted: get(&c.accepted),
            forwarded: get(&c.forwarded),
            active: self.inner.active.load(Ordering::Relaxed) as u64,
            refused_policy: get(&c.refused[0]),
            refused_unreachable: get(&c.refused[1]),
            refused_overloaded: get(&c.refused[2]),
            refused_shutting_down: get(&c.refused[3]),
            idle_closed: get(&c.idle_closed),
            accept_errors: get(&c.accept_errors),
            bytes_from_peer: get(&c.bytes_from_peer),
            bytes_to_peer: get(&c.bytes_to_peer),
            dial_failures: DIAL_FAILURE_LABELS
                .iter()
                .zip(&c.dial_failures)
                .map(|(l, n)| (*l, get(n)))
                .filter(|(_, n)| *n > 0)
                .collect(),
        }
    }
}

/// Resolves once the stream has seen no byte for `limit`.
async fn idle_watch(activity: &AtomicU64, epoch: Instant, limit: Duration) {
    let mut deadline = tokio::time::Instant::now() + limit;
    loop {
        tokio::time::sleep_until(deadline).await;
        let last = epoch + Duration::from_millis(activity.load(Ordering::Relaxed));
        let next = tokio::time::Instant::from_std(last) + limit;
        if next <= tokio::time::Instant::now() {
            return;
        }
        deadline = next;
    }
}

/// The inbound stream, counting bytes each way and stamping the time of the last one.
struct Tracked<'a, S> {
    inner: S,
    read: &'a AtomicU64,
    written: &'a AtomicU64,
    /// This stream's own counts (the two above are the forwarder's totals).
    stream_read: u64,
    stream_written: u64,
    activity: &'a AtomicU64,
    epoch: Instant,
}

impl<S> Tracked<'_, S> {
    fn touch(&self, n: usize, counter: &AtomicU64) {
        if n > 0 {
            counter.fetch_add(n as u64, Ordering::Relaxed);
            let ms = self.epoch.elapsed().as_millis() as u64;
            self.activity.store(ms, Ordering::Relaxed);
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<'_, S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        self.stream_read += n as u64;
        self.touch(n, self.read);
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<'_, S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            self.stream_written += n as u64;
            self.touch(n, self.written);
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
