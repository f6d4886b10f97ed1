//! fipstun-hbone: the FIPS backend — TCP streams tunnelled as HTTP/2 `CONNECT` over mutual TLS
//! (HBONE), wire-compatible with Istio's ztunnel.
//!
//! - [`wire`]: the CONNECT request and response as plain types, parsed and built without
//!   sockets.
//! - [`HboneServer`]: accepts mTLS + HTTP/2, asks a [`Handler`] per CONNECT, dials the target
//!   and copies bytes both ways with half-close; or, in delivery mode
//!   ([`HboneServer::with_delivery`]), hands each authorized CONNECT to the application as a
//!   [`PendingConnect`] to accept (200 and an [`HboneStream`]) or refuse.
//! - [`HboneClient`]: opens [`HboneStream`]s (tokio `AsyncRead + AsyncWrite`) through a peer,
//!   pooling connections.
//!
//! All TLS goes through the FIPS configs of `fipstun-identity` (AWS-LC FIPS module, TLS 1.3
//! with AES-GCM on P-256/P-384); both sides re-check `fips()` after setting ALPN.
//!
//! Building against this crate needs `AWS_LC_FIPS_SYS_USE_SYSTEM = "0"` in your
//! `.cargo/config.toml` `[env]`, and its exact rustls / aws-lc-rs pins become your graph's:
//! `fipstun_identity`'s crate docs, "Building against fipstun", say why and what changes when
//! the next module version is validated. Use the re-exports ([`rustls`], [`h2`], [`http`],
//! [`bytes`], [`pki_types`]) instead of depending on those crates yourself.
//!
//! # Wire format (as ztunnel speaks it)
//!
//! - TLS 1.3, mutual: each side presents an X.509-SVID whose only identity is the SPIFFE ID in
//!   its URI SAN; no SNI and no DNS names are used. ALPN must select `h2`, otherwise the
//!   connection is closed.
//! - HTTP/2 plain `CONNECT` (RFC 9113 §8.5): `:method CONNECT` and `:authority ip:port` of the
//!   final destination (IPv6 in brackets); no `:scheme`, `:path` or `:protocol` (extended
//!   CONNECT is refused with 400). A hostname authority is refused with 400 unless the server's
//!   [`wire::HostnamePolicy`] admits it.
//! - Optional request headers, passed to the [`Handler`] typed: `baggage` (W3C Baggage, joined
//!   when repeated, at most 8192 bytes), `traceparent` (W3C Trace Context, validated: version,
//!   32/16 lowercase hex IDs not all zero, flags), `forwarded` (RFC 7239; the first `for=` node
//!   is the original client). An invalid one makes the request malformed (400).
//! - Response status: `200` only after the [`Handler`] allowed the stream **and** the TCP
//!   connect to the target succeeded. `400` malformed request or authority; `401` not
//!   authorized and `403` forbidden (both without any connection attempt to the target); `503`
//!   target unreachable. The client maps them to [`wire::Rejection`] in [`Error::Rejected`].
//!   After the 200, a failure is a stream reset (RST_STREAM CANCEL).
//! - Stream data are the raw TCP bytes; END_STREAM is a TCP half-close (FIN) in that direction
//!   and is kept end to end.
//! - HTTP/2 settings (both sides): stream window 4 MiB, connection window 16 MiB, max frame
//!   1 MiB, max concurrent streams 100 (configurable); both sides PING every 10 s and drop a
//!   connection after 20 s without a PONG; shutdown is a graceful GOAWAY drain.
//!
//! # Observability
//!
//! - `tracing` spans: `hbone_server_conn` (remote address) and `hbone_stream` (stream id) on the
//!   server; `hbone_client_conn` (peer, pool id) and `hbone_connect` (peer, target) on the
//!   client. Refusals are logged at `debug` with the reason; limits at `warn`.
//! - [`HboneServer::metrics`] and [`HboneClient::metrics`] return a [`MetricsSnapshot`]:
//!   connections opened/active/refused, streams opened/active/rejected, payload bytes in/out,
//!   and handshake failures by [`HandshakeFailure`] reason (TCP, timeout, certificate, TLS,
//!   ALPN, HTTP/2). All counters are relaxed atomics updated on the data path.
//! - A [`HandshakeObserver`] set with [`ClientConfig::with_handshake_observer`] or
//!   [`ServerConfig::with_handshake_observer`] is told how long each completed TLS handshake
//!   took (for a latency histogram).
//!
//! # Example: a round trip on loopback
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use fipstun_hbone::{AllowAll, ClientConfig, HboneClient, HboneServer, ServerConfig, TlsIdentity};
//! use fipstun_identity::{bundle::*, ca::*, keys::KeyAlgorithm, policy::CryptoPolicy, spiffe::*, tls::*};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! tokio::runtime::Runtime::new()?.block_on(async {
//!     let td = TrustDomain::new("example.org")?;
//!     let ca = SvidIssuer::generate_root(td.clone(), KeyAlgorithm::EcdsaP256, Duration::from_secs(3600), IssuerConfig::default())?;
//!     let trust = TrustStore::new(BundleSet::new().with(ca.bundle().clone()));
//!     let identity = |id: &SpiffeId| -> Result<TlsIdentity, fipstun_identity::Error> {
//!         let slot = Arc::new(SvidSlot::new());
//!         slot.set(&ca.issue(id, KeyAlgorithm::EcdsaP256, None)?)?;
//!         Ok(TlsIdentity::new(CryptoPolicy::default(), trust.clone(), slot))
//!     };
//!     let node = SpiffeId::parse("spiffe://example.org/ns/istio-system/sa/ztunnel")?;
//!     let app = SpiffeId::parse("spiffe://example.org/ns/prod/sa/web")?;
//!
//!     // An upstream echo service, and an HBONE server in front of it.
//!     let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//!     let target = upstream.local_addr()?;
//!     tokio::spawn(async move {
//!         let (mut s, _) = upstream.accept().await.unwrap();
//!         let (mut r, mut w) = s.split();
//!         tokio::io::copy(&mut r, &mut w).await.unwrap();
//!     });
//!     let server = HboneServer::new(
//!         &identity(&node)?, Authorizer::trust_domains([td]), ServerConfig::default(), AllowAll)?;
//!     let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//!     let peer = listener.local_addr()?;
//!     tokio::spawn({ let server = server.clone(); async move { server.serve(listener).await } });
//!
//!     // The client expects exactly the node's identity at `peer`.
//!     let client = HboneClient::new(identity(&app)?, ClientConfig::default())?;
//!     let mut stream = client.connect(target, &fipstun_hbone::HboneRoute::new(peer, node.clone())).await?;
//!     assert_eq!(stream.peer_identity(), &node);
//!     stream.write_all(b"hello through HBONE").await?;
//!     stream.shutdown().await?; // END_STREAM: the echo sees EOF and closes its side
//!     let mut back = Vec::new();
//!     stream.read_to_end(&mut back).await?;
//!     assert_eq!(back, b"hello through HBONE");
//!     server.shutdown().await;
//!     Ok::<_, Box<dyn std::error::Error>>(())
//! })
//! # }
//! ```
#![forbid(unsafe_code)]

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use fipstun_identity::bundle::{BundleSet, TrustStore};
use fipstun_identity::files::IdentityFiles;
use fipstun_identity::policy::{CryptoPolicy, PolicyError};
use fipstun_identity::tls::{Authorizer, SvidSlot};

mod client;
mod metrics;
mod pool;
mod server;
mod stream;
mod tap;
mod transport;
pub mod wire;

pub use client::{ClientConfig, ExpectedPeer, HboneClient};
pub use metrics::{HandshakeFailure, HandshakeObserver, HandshakeObserverHandle, MetricsSnapshot};
pub use server::{
    AllowAll, ConnectContext, Decision, Handler, HandlerFn, HboneServer, Incoming, PendingConnect,
    ServerConfig, handler_fn,
};

// The foreign crates whose types this crate's API takes and returns, re-exported so a
// dependent names exactly the versions fipstun was built with (the FIPS line pins rustls:
// see the workspace manifest). `fipstun_hbone::rustls::AlertDescription`, not `rustls::...`.
pub use bytes;
pub use fipstun_identity::policy::Negotiated;
pub use h2;
pub use http;
pub use rustls;
pub use rustls_pki_types as pki_types;
pub use stream::HboneStream;
pub use transport::{HboneListener, HboneRoute, HboneTransport, security_info};
pub use wire::{ConnectRequest, ConnectResponse, Rejection, WireError};

/// The ALPN protocol HBONE negotiates (RFC 9113 §3.2).
pub const ALPN_H2: &[u8] = b"h2";

/// The port ztunnel listens on for HBONE.
pub const HBONE_PORT: u16 = 15008;

/// What a workload presents and trusts: the FIPS crypto policy, the trust bundles, and the
/// slot holding its current SVID (which rotation swaps in place). Client and server take it
/// the same way ([`HboneClient::new`], [`HboneServer::new`]); the policy is given here once.
///
/// ```no_run
/// use fipstun_hbone::TlsIdentity;
///
/// // The three files `fipstun ca issue --out identity/web` wrote.
/// let identity = TlsIdentity::from_dir("identity/web")?;
/// # Ok::<(), fipstun_identity::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct TlsIdentity {
    /// The FIPS crypto policy for every handshake.
    pub policy: CryptoPolicy,
    /// Roots the peer's SVID must chain to.
    pub trust: TrustStore,
    /// The SVID presented; an empty slot fails closed.
    pub svid: Arc<SvidSlot>,
}

impl TlsIdentity {
    /// Bundle the three.
    pub fn new(policy: CryptoPolicy, trust: TrustStore, svid: Arc<SvidSlot>) -> Self {
        Self {
            policy,
            trust,
            svid,
        }
    }

    /// The SVID and bundle in `dir` (`svid.pem`, `svid-key.pem`, `bundle.pem`, as
    /// `fipstun ca issue` writes them), checked to chain together, under the default
    /// [`CryptoPolicy`]. Errors name the file at fault.
    pub fn from_dir(dir: impl AsRef<std::path::Path>) -> Result<Self, fipstun_identity::Error> {
        Self::from_files(IdentityFiles::load(dir.as_ref())?)
    }

    /// The same from PEM text held in memory.
    pub fn from_pem(
        chain_pem: &str,
        key_pem: &str,
        bundle_pem: &str,
    ) -> Result<Self, fipstun_identity::Error> {
        Self::from_files(IdentityFiles::from_pem(chain_pem, key_pem, bundle_pem)?)
    }

    /// An SVID and the bundle it chains to, already loaded.
    pub fn from_files(files: IdentityFiles) -> Result<Self, fipstun_identity::Error> {
        let slot = Arc::new(SvidSlot::new());
        slot.set(&files.svid)?;
        Ok(Self::new(
            CryptoPolicy::default(),
            TrustStore::new(BundleSet::new().with(files.bundle)),
            slot,
        ))
    }

    /// The same identity under another crypto policy (e.g. TLS 1.2 allowed for a legacy
    /// peer, or AES-128 preferred).
    pub fn with_policy(mut self, policy: CryptoPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// A FIPS rustls server config presenting this identity to clients that pass `clients`.
    pub fn server_config(&self, clients: Authorizer) -> Result<rustls::ServerConfig, Error> {
        Ok(fipstun_identity::tls::server_config(
            &self.policy,
            self.trust.clone(),
            clients,
            self.svid.clone(),
        )?)
    }
}

/// Encrypted bytes rustls may queue for the socket (rustls' default is 64 KiB). h2 hands the
/// TLS stream at most this much per write before the stream writes it out, so a bulk stream
/// made one `writev` (and woke the receiver once) per 64 KiB.
const TLS_SEND_BUFFER_BYTES: usize = 1 << 20;

/// The largest header block the server accepts (SETTINGS_MAX_HEADER_LIST_SIZE): a CONNECT
/// carries an authority and a few tracing headers, never more.
const MAX_HEADER_LIST_BYTES: u32 = 64 * 1024;

/// HTTP/2 flow-control and framing settings. The defaults keep one bulk stream near line rate
/// (DESIGN §4); the connection window is larger than the stream window so that one stalled
/// stream cannot starve the others.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct H2Settings {
    /// SETTINGS_INITIAL_WINDOW_SIZE (per stream receive window), bytes. Default 4 MiB.
    pub stream_window_bytes: u32,
    /// Connection receive window, bytes. Default 16 MiB.
    pub connection_window_bytes: u32,
    /// SETTINGS_MAX_FRAME_SIZE we accept, bytes (16 KiB..16 MiB). Default 1 MiB.
    pub max_frame_bytes: u32,
    /// Data h2 may buffer per stream before a writer waits, bytes. Default 4 MiB.
    pub max_send_buffer_bytes: usize,
}

impl Default for H2Settings {
    fn default() -> Self {
        Self {
            stream_window_bytes: 4 << 20,
            connection_window_bytes: 16 << 20,
            max_frame_bytes: 1 << 20,
            max_send_buffer_bytes: 4 << 20,
        }
    }
}

impl H2Settings {
    fn frame_size(&self) -> u32 {
        // RFC 9113 §6.5.2: 2^14 ..= 2^24 - 1.
        self.max_frame_bytes.clamp(1 << 14, (1 << 24) - 1)
    }

    fn server_builder(&self, max_streams: u32) -> h2::server::Builder {
        let mut b = h2::server::Builder::new();
        b.initial_window_size(self.stream_window_bytes)
            .initial_connection_window_size(self.connection_window_bytes)
            .max_frame_size(self.frame_size())
            .max_send_buffer_size(self.max_send_buffer_bytes)
            .max_concurrent_streams(max_streams)
            .max_header_list_size(MAX_HEADER_LIST_BYTES);
        b
    }

    fn client_builder(&self, max_streams: usize) -> h2::client::Builder {
        let mut b = h2::client::Builder::new();
        b.initial_window_size(self.stream_window_bytes)
            .initial_connection_window_size(self.connection_window_bytes)
            .max_frame_size(self.frame_size())
            .max_send_buffer_size(self.max_send_buffer_bytes)
            .initial_max_send_streams(max_streams)
            .enable_push(false);
        b
    }
}

/// A failed connection setup to an HBONE peer. Cloneable: every stream waiting on the same
/// dial receives it.
///
/// When TLS failed, [`DialError::tls_error`] is rustls' own error, to match on without
/// reading text: `rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)` when the
/// peer's SVID does not chain to our bundle, `rustls::Error::AlertReceived(UnknownCA)` when
/// the peer refused ours.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct DialError {
    /// The peer address.
    pub peer: SocketAddr,
    /// Which step failed.
    pub kind: HandshakeFailure,
    /// What the failing layer said.
    pub message: String,
    /// The rustls error, when the failure was TLS's (also the [`std::error::Error::source`]).
    /// Boxed so that every `Result<_, Error>` of this crate stays small.
    pub tls: Option<Box<rustls::Error>>,
}

impl DialError {
    /// The rustls error, when the failure was TLS's.
    pub fn tls_error(&self) -> Option<&rustls::Error> {
        self.tls.as_deref()
    }

    /// The alert the peer sent, when it refused the handshake with one.
    pub fn alert_received(&self) -> Option<rustls::AlertDescription> {
        match self.tls.as_deref() {
            Some(rustls::Error::AlertReceived(a)) => Some(*a),
            _ => None,
        }
    }
}

impl fmt::Display for DialError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "connecting to HBONE peer {} failed ({}): {}",
            self.peer,
            self.kind.label(),
            self.message
        )
    }
}

impl std::error::Error for DialError {
    // The rustls error itself (not its box), so `downcast_ref::<rustls::Error>` finds it.
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.tls.as_deref().map(|e| e as _)
    }
}

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A request or response is not valid HBONE.
    #[error("{0}")]
    Wire(#[from] WireError),
    /// The peer answered the CONNECT with a non-2xx status.
    #[error("HBONE peer {peer} refused CONNECT {target}: {rejection}")]
    Rejected {
        /// The HBONE peer.
        peer: SocketAddr,
        /// The requested target.
        target: String,
        /// What the status means.
        rejection: Rejection,
    },
    /// Connecting (TCP, TLS, ALPN, HTTP/2) to the peer failed.
    #[error("{0}")]
    Dial(#[from] DialError),
    /// The peer did not answer the CONNECT in time.
    #[error("HBONE peer {peer} did not answer CONNECT {target} in time")]
    ResponseTimeout {
        /// The HBONE peer.
        peer: SocketAddr,
        /// The requested target.
        target: String,
    },
    /// The HTTP/2 stream failed before the tunnel was established.
    #[error("HBONE stream to {target} via {peer} failed: {source}")]
    Stream {
        /// The HBONE peer.
        peer: SocketAddr,
        /// The requested target.
        target: String,
        /// What h2 reported.
        source: h2::Error,
    },
    /// A server-side handshake with a client failed.
    #[error("handshake with {peer} failed ({}): {message}", kind.label())]
    Handshake {
        /// The client address.
        peer: SocketAddr,
        /// Which step failed.
        kind: HandshakeFailure,
        /// What the failing layer said.
        message: String,
    },
    /// An HTTP/2 connection failed after its handshake.
    #[error("HTTP/2 connection with {peer} failed: {source}")]
    Http2 {
        /// The remote address.
        peer: SocketAddr,
        /// What h2 reported.
        source: h2::Error,
    },
    /// A peer stopped answering HTTP/2 PINGs; its connection was closed.
    #[error("HBONE peer {peer} unresponsive: {reason}")]
    KeepaliveTimeout {
        /// The remote address.
        peer: SocketAddr,
        /// What the keepalive saw.
        reason: String,
    },
    /// The server's connection limit is reached.
    #[error("connection limit of {max} reached")]
    ConnectionLimit {
        /// The configured limit.
        max: u32,
    },
    /// The server is shutting down and takes no new connections.
    #[error("the server is shutting down")]
    ShuttingDown,
    /// A custom [`fipstun_identity::tls::Authorizer`] cannot say whom to expect in a way a
    /// connection pool can key by; use IDs or trust domains.
    #[error("a custom authorizer cannot key the connection pool; expect IDs or trust domains")]
    CustomAuthorizer,
    /// The SVID slot is empty: nothing to present, so we fail closed.
    #[error("no local SVID yet; refusing to connect")]
    NoLocalIdentity,
    /// The FIPS policy refused a TLS config.
    #[error("{0}")]
    Policy(#[from] PolicyError),
    /// Building a TLS config failed.
    #[error("{0}")]
    Identity(#[from] fipstun_identity::Error),
    /// Socket I/O failed.
    #[error("I/O: {0}")]
    Io(#[from] io::Error),
}

impl Error {
    /// The peer's refusal, when this error is one: tells 401 from 503.
    pub fn rejection(&self) -> Option<Rejection> {
        match self {
            Self::Rejected { rejection, .. } => Some(*rejection),
            _ => None,
        }
    }
}

/// Sort a TLS handshake failure into a metrics reason.
fn classify_tls_error(e: &io::Error) -> metrics::HandshakeFailure {
    tap::rustls_error(e).map_or(metrics::HandshakeFailure::Tls, classify_rustls_error)
}

/// [`classify_tls_error`] for the typed rustls error.
fn classify_rustls_error(r: &rustls::Error) -> metrics::HandshakeFailure {
    use rustls::AlertDescription as A;
    use rustls::Error as R;
    match r {
        R::InvalidCertificate(_) | R::NoCertificatesPresented => {
            metrics::HandshakeFailure::Certificate
        }
        R::AlertReceived(
            A::BadCertificate
            | A::UnsupportedCertificate
            | A::CertificateRevoked
            | A::CertificateExpired
            | A::CertificateUnknown
            | A::UnknownCA
            | A::AccessDenied
            | A::CertificateRequired,
        ) => metrics::HandshakeFailure::Certificate,
        R::NoApplicationProtocol | R::AlertReceived(A::NoApplicationProtocol) => {
            metrics::HandshakeFailure::Alpn
        }
        _ => metrics::HandshakeFailure::Tls,
    }
}

impl fmt::Display for HandshakeFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics::HandshakeFailure as F;

    #[test]
    fn tls_failures_are_classified() {
        let wrap = |e: rustls::Error| io::Error::new(io::ErrorKind::InvalidData, e);
        assert_eq!(
            classify_tls_error(&wrap(rustls::Error::NoCertificatesPresented)),
            F::Certificate
        );
        assert_eq!(
            classify_tls_error(&wrap(rustls::Error::AlertReceived(
                rustls::AlertDescription::UnknownCA
            ))),
            F::Certificate
        );
        assert_eq!(
            classify_tls_error(&wrap(rustls::Error::NoApplicationProtocol)),
            F::Alpn
        );
        assert_eq!(
            classify_tls_error(&wrap(rustls::Error::HandshakeNotComplete)),
            F::Tls
        );
        assert_eq!(classify_tls_error(&io::Error::other("reset")), F::Tls);
    }
}

// The crate README's example, compiled and run by `cargo test --doc` so it cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
