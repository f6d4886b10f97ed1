//! Counters a proxy exports for one HBONE client or server: lock-free atomics updated on the
//! data path, read as a [`MetricsSnapshot`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Told how long each completed TLS handshake took (client: TCP connected to TLS done;
/// server: TCP accepted to TLS done), for a latency histogram. Called on the connection's
/// task: keep it short and never block. Failed handshakes are counted by
/// [`HandshakeFailure`] instead.
pub trait HandshakeObserver: Send + Sync + 'static {
    /// One TLS handshake completed in `took`.
    fn tls_handshake_done(&self, took: Duration);
}

/// A [`HandshakeObserver`] held by a `ClientConfig` or `ServerConfig` (which are `Clone` and
/// `Debug`).
#[derive(Clone)]
pub struct HandshakeObserverHandle(pub Arc<dyn HandshakeObserver>);

impl std::fmt::Debug for HandshakeObserverHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HandshakeObserver")
    }
}

/// Why a TLS or HTTP/2 connection setup failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HandshakeFailure {
    /// The TCP connect failed (client side only).
    Tcp,
    /// The TLS or HTTP/2 handshake did not finish in time.
    Timeout,
    /// The peer's certificate was refused, or the peer refused ours.
    Certificate,
    /// Any other TLS failure (protocol, no common algorithm, I/O during the handshake).
    Tls,
    /// ALPN did not select `h2`.
    Alpn,
    /// The HTTP/2 connection preface or SETTINGS exchange failed.
    Http2,
    /// The server dropped this unfinished handshake to make room for a newer one: every
    /// handshake slot was taken (server side; see `ServerConfig::max_handshakes`).
    Evicted,
}

impl HandshakeFailure {
    const ALL: [Self; 7] = [
        Self::Tcp,
        Self::Timeout,
        Self::Certificate,
        Self::Tls,
        Self::Alpn,
        Self::Http2,
        Self::Evicted,
    ];

    fn index(self) -> usize {
        match self {
            Self::Tcp => 0,
            Self::Timeout => 1,
            Self::Certificate => 2,
            Self::Tls => 3,
            Self::Alpn => 4,
            Self::Http2 => 5,
            Self::Evicted => 6,
        }
    }

    /// A stable label for exporters.
    pub fn label(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Timeout => "timeout",
            Self::Certificate => "certificate",
            Self::Tls => "tls",
            Self::Alpn => "alpn",
            Self::Http2 => "http2",
            Self::Evicted => "evicted",
        }
    }
}

/// Live counters; shared by a client or server and its connection and stream tasks.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    connections_opened: AtomicU64,
    connections_closed: AtomicU64,
    connections_refused: AtomicU64,
    streams_opened: AtomicU64,
    streams_closed: AtomicU64,
    streams_rejected: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    handshake_failures: [AtomicU64; 7],
    connections_expired: AtomicU64,
}

impl Metrics {
    pub(crate) fn connection_opened(&self) {
        self.connections_opened.fetch_add(1, Relaxed);
    }
    pub(crate) fn connection_closed(&self) {
        self.connections_closed.fetch_add(1, Relaxed);
    }
    pub(crate) fn connection_refused(&self) {
        self.connections_refused.fetch_add(1, Relaxed);
    }
    pub(crate) fn stream_opened(&self) {
        self.streams_opened.fetch_add(1, Relaxed);
    }
    pub(crate) fn stream_closed(&self) {
        self.streams_closed.fetch_add(1, Relaxed);
    }
    pub(crate) fn stream_rejected(&self) {
        self.streams_rejected.fetch_add(1, Relaxed);
    }
    pub(crate) fn bytes_in(&self, n: usize) {
        self.bytes_in.fetch_add(n as u64, Relaxed);
    }
    pub(crate) fn bytes_out(&self, n: usize) {
        self.bytes_out.fetch_add(n as u64, Relaxed);
    }
    pub(crate) fn connection_expired(&self) {
        self.connections_expired.fetch_add(1, Relaxed);
    }
    pub(crate) fn handshake_failed(&self, why: HandshakeFailure) {
        self.handshake_failures[why.index()].fetch_add(1, Relaxed);
    }

    pub(crate) fn snapshot(&self) -> MetricsSnapshot {
        let opened = self.connections_opened.load(Relaxed);
        let closed = self.connections_closed.load(Relaxed);
        let s_opened = self.streams_opened.load(Relaxed);
        let s_closed = self.streams_closed.load(Relaxed);
        MetricsSnapshot {
            connections_opened: opened,
            connections_active: opened.saturating_sub(closed),
            connections_refused: self.connections_refused.load(Relaxed),
            streams_opened: s_opened,
            streams_active: s_opened.saturating_sub(s_closed),
            streams_rejected: self.streams_rejected.load(Relaxed),
            bytes_in: self.bytes_in.load(Relaxed),
            bytes_out: self.bytes_out.load(Relaxed),
            connections_expired: self.connections_expired.load(Relaxed),
            handshake_failures: HandshakeFailure::ALL
                .iter()
                .map(|&f| (f, self.handshake_failures[f.index()].load(Relaxed)))
                .filter(|&(_, n)| n > 0)
                .collect(),
        }
    }
}

/// A point-in-time copy of the counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MetricsSnapshot {
    /// TLS + HTTP/2 connections established since start.
    pub connections_opened: u64,
    /// Established connections not yet closed.
    pub connections_active: u64,
    /// Connections refused because the limit of established connections was reached (server
    /// side; counted after the handshake, which has its own slots).
    pub connections_refused: u64,
    /// Connections drained because they reached the peer certificate's notAfter or the
    /// maximum connection age (server side).
    pub connections_expired: u64,
    /// Streams established (the CONNECT answered 200) since start.
    pub streams_opened: u64,
    /// Established streams not yet finished.
    pub streams_active: u64,
    /// CONNECTs answered (server) or received (client) with a non-2xx status.
    pub streams_rejected: u64,
    /// Payload bytes received from HBONE peers (DATA frame payload, not TLS overhead).
    pub bytes_in: u64,
    /// Payload bytes sent to HBONE peers.
    pub bytes_out: u64,
    /// Failed connection setups by reason; reasons with a zero count are left out.
    pub handshake_failures: Vec<(HandshakeFailure, u64)>,
}

impl MetricsSnapshot {
    /// Failed handshakes of one kind.
    pub fn handshake_failures_of(&self, why: HandshakeFailure) -> u64 {
        self.handshake_failures
            .iter()
            .find(|(f, _)| *f == why)
            .map_or(0, |(_, n)| *n)
    }
}
