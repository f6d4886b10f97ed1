//! fipstun-transport: what a tunnel is, independent of how it is protected.
//!
//! Two backends implement the same two traits, so a proxy (and the benchmarks) can swap them
//! on one workload:
//!
//! - [`Transport`] — the outbound side: open a tunnelled byte stream to a [`Target`] through the
//!   peer node that serves it.
//! - [`TunnelListener`] — the inbound side: accept a tunnelled stream and learn the
//!   authenticated [`PeerIdentity`] and the [`Target`] it asked for.
//!
//! Each says what protects its bytes with [`SecurityInfo`]; [`FipsRequirement::check`] refuses a
//! backend that is not FIPS where FIPS is required (the WireGuard backend never is).
//!
//! ```
//! use fipstun_transport::{FipsRequirement, SecurityInfo, TransportError};
//!
//! let wg = SecurityInfo {
//!     backend: "wireguard",
//!     protocol: "Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s".into(),
//!     cipher: "ChaCha20-Poly1305".into(),
//!     fips: false,
//! };
//! assert!(matches!(
//!     FipsRequirement::Required.check(&wg),
//!     Err(TransportError::FipsRequired { backend: "wireguard", .. })
//! ));
//! assert!(FipsRequirement::NotRequired.check(&wg).is_ok());
//! ```
//!
//! The inbound side of every path — a node behind either backend, a proxy's local listeners,
//! a relay — runs the one [`Forwarder`]: accept -> authorize ([`policy`], deny by default) ->
//! dial -> copy, with dial and idle timeouts, limits per listener and per peer, and accept
//! errors that never end the loop. The shared conformance suite in [`conformance`] is written
//! once against these traits; every backend's tests run it with the forwarder on the far side.
//!
//! A [`Target`] is an IP address or a DNS name with a port; the policy judges addresses, so the
//! forwarder resolves a name before it authorizes it ([`ForwarderConfig::resolve_names`]).
//! Besides a fixed-target [`TcpAcceptor`], a node proxy's local entries are [`socks5`] (the
//! SOCKS5 `CONNECT` port) and, on Linux, `redirect` (iptables-captured connections, each to
//! its original destination).
#![forbid(unsafe_code)]

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use fipstun_identity::spiffe::SpiffeId;
use tokio::io::{AsyncRead, AsyncWrite};

pub mod conformance;
mod copy;
mod forward;
pub mod memory;
#[cfg(target_os = "linux")]
pub mod redirect;
pub mod socks5;
mod target;

pub use fipstun_policy as policy;
pub use forward::{
    Acceptor, Authorize, AuthorizedByAcceptor, Forwarder, ForwarderConfig, ForwarderStats,
    ListenerAcceptor, ObserverHandle, PendingInbound, Refusal, StreamObserver, StreamRecord,
    StreamResult, TcpAcceptor, TcpPending,
};
pub use target::{DnsName, Host, Target, TargetError};

/// Who is on the other end of a tunnel, as the backend authenticated it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PeerIdentity {
    /// A SPIFFE ID proven by an X.509-SVID in mutual TLS.
    Spiffe(SpiffeId),
    /// A WireGuard static public key, with the SPIFFE ID it is mapped to, if configured.
    WireGuard {
        /// The peer's Curve25519 static public key.
        public_key: [u8; 32],
        /// The SPIFFE ID the operator mapped this key to.
        spiffe: Option<SpiffeId>,
    },
    /// A plain TCP client of a local listener (a proxy's, a relay's): nothing is proven but
    /// its address.
    Local(SocketAddr),
}

impl PeerIdentity {
    /// The SPIFFE ID, if the identity carries or maps to one.
    pub fn spiffe_id(&self) -> Option<&SpiffeId> {
        match self {
            Self::Spiffe(id) => Some(id),
            Self::WireGuard { spiffe, .. } => spiffe.as_ref(),
            Self::Local(_) => None,
        }
    }
}

impl fmt::Display for PeerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Spiffe(id) => id.fmt(f),
            Self::WireGuard {
                spiffe: Some(id), ..
            } => write!(f, "{id} (wireguard key)"),
            Self::WireGuard { public_key, .. } => {
                f.write_str("wireguard:")?;
                public_key[..8]
                    .iter()
                    .try_for_each(|b| write!(f, "{b:02x}"))
            }
            Self::Local(addr) => write!(f, "local:{addr}"),
        }
    }
}

/// What protects a backend's bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecurityInfo {
    /// Backend name, e.g. `"hbone"` or `"wireguard"`.
    pub backend: &'static str,
    /// The protocol, e.g. `"TLS 1.3 + HTTP/2 CONNECT"`.
    pub protocol: String,
    /// The record ciphers this backend may negotiate, e.g. `"TLS13_AES_256_GCM_SHA384 |
    /// TLS13_AES_128_GCM_SHA256"` for HBONE under the default policy (every suite the policy
    /// allows, in preference order). What one connection actually chose is reported by the
    /// stream (`fipstun_hbone::HboneStream::negotiated`).
    pub cipher: String,
    /// Whether every algorithm is FIPS-approved and runs in the validated module.
    pub fips: bool,
}

/// Whether a deployment demands FIPS-approved protection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FipsRequirement {
    /// Only FIPS backends may be used.
    Required,
    /// Any backend may be used.
    #[default]
    NotRequired,
}

impl FipsRequirement {
    /// Refuse `security` if FIPS is required and it is not FIPS.
    pub fn check(self, security: &SecurityInfo) -> Result<(), TransportError> {
        match self {
            Self::Required if !security.fips => Err(TransportError::FipsRequired {
                backend: security.backend,
                cipher: security.cipher.clone(),
            }),
            _ => Ok(()),
        }
    }
}

/// A backend's own error, kept whole under a [`TransportError`] so that a caller can walk
/// [`std::error::Error::source`] and downcast to the backend's typed cause (for HBONE a
/// `fipstun_hbone::Error` holding the rustls error or alert, for WireGuard a
/// `fipstun_wireguard::WgError`). [`TransportError::find_cause`] does the walk.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Errors any backend can report. The variants say what happened in terms every backend
/// shares; the backend's own typed error is the [`source`](std::error::Error::source).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// FIPS is required and this backend is not FIPS-approved.
    #[error("FIPS is required but the {backend} backend uses non-approved cryptography ({cipher})")]
    FipsRequired {
        /// The refused backend.
        backend: &'static str,
        /// Its cipher.
        cipher: String,
    },
    /// No configured peer serves this target.
    #[error("no peer serves {0}")]
    NoRoute(Target),
    /// The peer refused the stream (not authorized, or over a limit).
    #[error("{target}: the peer refused the stream: {reason}")]
    Refused {
        /// The target asked for.
        target: Target,
        /// What the peer said, in a word or a sentence (`policy`, `overloaded`, ...).
        reason: String,
        /// The backend's typed error, if it has one.
        source: Option<BoxError>,
    },
    /// The peer could not reach the target.
    #[error("{target}: the peer could not reach it: {reason}")]
    Unreachable {
        /// The target asked for.
        target: Target,
        /// What the peer said.
        reason: String,
        /// The backend's typed error, if it has one.
        source: Option<BoxError>,
    },
    /// The tunnel to the peer failed (handshake, I/O, protocol). The source is the backend's
    /// typed error: match on it with [`TransportError::find_cause`].
    #[error("tunnel{} failed: {source}", target.as_ref().map(|t| format!(" for {t}")).unwrap_or_default())]
    Tunnel {
        /// The target the stream was for, when the failure belongs to one stream.
        target: Option<Target>,
        /// What failed, typed by the backend.
        source: BoxError,
    },
    /// The listener or transport was shut down.
    #[error("the transport is closed")]
    Closed,
    /// An I/O error.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl TransportError {
    /// The peer refused a stream to `target` for `reason`, with no typed cause.
    pub fn refused(target: &Target, reason: impl Into<String>) -> Self {
        Self::Refused {
            target: target.clone(),
            reason: reason.into(),
            source: None,
        }
    }

    /// The peer could not reach `target`, for `reason`, with no typed cause.
    pub fn unreachable(target: &Target, reason: impl Into<String>) -> Self {
        Self::Unreachable {
            target: target.clone(),
            reason: reason.into(),
            source: None,
        }
    }

    /// The tunnel for `target` (if the failure is one stream's) failed with `source`.
    pub fn tunnel(target: Option<&Target>, source: impl Into<BoxError>) -> Self {
        Self::Tunnel {
            target: target.cloned(),
            source: source.into(),
        }
    }

    /// The first error of type `E` in this error's [`source`](std::error::Error::source)
    /// chain: how a caller matches a backend's typed cause through the [`Transport`] trait.
    ///
    /// ```
    /// use fipstun_transport::{Target, TransportError};
    ///
    /// let e = TransportError::tunnel(None, std::io::Error::from(std::io::ErrorKind::TimedOut));
    /// let io = e.find_cause::<std::io::Error>().unwrap();
    /// assert_eq!(io.kind(), std::io::ErrorKind::TimedOut);
    /// ```
    pub fn find_cause<E: std::error::Error + 'static>(&self) -> Option<&E> {
        let mut next: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(e) = next {
            if let Some(found) = e.downcast_ref::<E>() {
                return Some(found);
            }
            next = e.source();
        }
        None
    }

    /// A short label for metrics: `fips_required`, `no_route`, `refused`, `unreachable`,
    /// `tunnel`, `closed` or `io`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::FipsRequired { .. } => "fips_required",
            Self::NoRoute(_) => "no_route",
            Self::Refused { .. } => "refused",
            Self::Unreachable { .. } => "unreachable",
            Self::Tunnel { .. } => "tunnel",
            Self::Closed => "closed",
            Self::Io(_) => "io",
        }
    }
}

/// The outbound side of a tunnel backend.
pub trait Transport: Send + Sync + 'static {
    /// The tunnelled byte stream. `shutdown()` half-closes it.
    type Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static;

    /// Open a tunnelled stream to `target` through the peer node that serves it.
    fn connect(
        &self,
        target: &Target,
    ) -> impl Future<Output = Result<Self::Stream, TransportError>> + Send;

    /// What protects the bytes.
    fn security(&self) -> SecurityInfo;

    /// The address `stream` (one this transport opened) is connected to, if the backend
    /// knows it: for plain TCP the target's address as dialled. Reported in
    /// [`StreamRecord::dialled`]. The default knows none.
    fn dialled_addr(&self, _stream: &Self::Stream) -> Option<SocketAddr> {
        None
    }
}

/// Any tunnelled byte stream: what [`DynTransport`] hands out, boxed.
pub trait TunnelStream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> TunnelStream for T {}

/// A boxed [`TunnelStream`].
pub type BoxStream = Box<dyn TunnelStream>;

/// A future returned by [`DynTransport::dyn_connect`].
pub type ConnectFuture<'a> =
    Pin<Box<dyn Future<Output = Result<BoxStream, TransportError>> + Send + 'a>>;

/// The object-safe form of [`Transport`], so a proxy can pick its backend from configuration
/// at run time and hold it as `Arc<dyn DynTransport>`. Every [`Transport`] is one; and
/// `Arc<dyn DynTransport>` is itself a [`Transport`] (with [`BoxStream`] streams), so it fits
/// everything generic over the trait, the [`Forwarder`] included.
///
/// ```
/// use std::sync::Arc;
/// use fipstun_transport::{DynTransport, PlainTcp, Transport};
///
/// fn backend(name: &str) -> Arc<dyn DynTransport> {
///     match name {
///         // "hbone" => Arc::new(hbone_transport), "wireguard" => Arc::new(wg_transport), ...
///         _ => Arc::new(PlainTcp),
///     }
/// }
/// let chosen = backend("plain");
/// assert_eq!(Transport::security(&chosen).backend, "plain-tcp");
/// ```
pub trait DynTransport: Send + Sync + 'static {
    /// [`Transport::connect`], boxed.
    fn dyn_connect<'a>(&'a self, target: &'a Target) -> ConnectFuture<'a>;

    /// [`Transport::security`].
    fn dyn_security(&self) -> SecurityInfo;
}

impl<T: Transport> DynTransport for T {
    fn dyn_connect<'a>(&'a self, target: &'a Target) -> ConnectFuture<'a> {
        Box::pin(async move {
            let stream = Transport::connect(self, target).await?;
            Ok(Box::new(stream) as BoxStream)
        })
    }

    fn dyn_security(&self) -> SecurityInfo {
        Transport::security(self)
    }
}

impl Transport for Arc<dyn DynTransport> {
    type Stream = BoxStream;

    async fn connect(&self, target: &Target) -> Result<BoxStream, TransportError> {
        self.as_ref().dyn_connect(target).await
    }

    fn security(&self) -> SecurityInfo {
        self.as_ref().dyn_security()
    }
}

/// A stream that arrived through a tunnel.
#[derive(Debug)]
pub struct Inbound<S> {
    /// The tunnelled byte stream.
    pub stream: S,
    /// Who sent it, as authenticated by the backend.
    pub peer: PeerIdentity,
    /// Where the peer asked it to go.
    pub target: Target,
}

/// The inbound side of a tunnel backend.
pub trait TunnelListener: Send + Sync + 'static {
    /// The tunnelled byte stream.
    type Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static;

    /// The next authenticated, authorized stream.
    fn accept(&self) -> impl Future<Output = Result<Inbound<Self::Stream>, TransportError>> + Send;

    /// What protects the bytes.
    fn security(&self) -> SecurityInfo;
}

/// Plain TCP with no tunnel and no protection: the baseline every benchmark quotes beside the
/// real backends, and a check that the conformance suite itself is right.
#[derive(Clone, Copy, Debug, Default)]
pub struct PlainTcp;

impl Transport for PlainTcp {
    type Stream = tokio::net::TcpStream;

    /// Connect to the target's address, or to the first of a name's addresses that accepts.
    async fn connect(&self, target: &Target) -> Result<Self::Stream, TransportError> {
        let mut last = None;
        for addr in target.resolve().await? {
            match tokio::net::TcpStream::connect(addr).await {
                Ok(s) => {
                    s.set_nodelay(true)?;
                    return Ok(s);
                }
                Err(e) => last = Some(e),
            }
        }
        let e = last.unwrap_or_else(|| std::io::ErrorKind::NotFound.into());
        Err(TransportError::Unreachable {
            target: target.clone(),
            reason: e.to_string(),
            source: Some(e.into()),
        })
    }

    fn dialled_addr(&self, stream: &Self::Stream) -> Option<SocketAddr> {
        stream.peer_addr().ok()
    }

    fn security(&self) -> SecurityInfo {
        SecurityInfo {
            backend: "plain-tcp",
            protocol: "TCP".into(),
            cipher: "none".into(),
            fips: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(fips: bool) -> SecurityInfo {
        SecurityInfo {
            backend: if fips { "hbone" } else { "wireguard" },
            protocol: "p".into(),
            cipher: "c".into(),
            fips,
        }
    }

    #[test]
    fn fips_requirement_refuses_only_non_fips() {
        assert!(FipsRequirement::Required.check(&info(true)).is_ok());
        let err = FipsRequirement::Required.check(&info(false)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "FIPS is required but the wireguard backend uses non-approved cryptography (c)"
        );
        assert!(FipsRequirement::NotRequired.check(&info(false)).is_ok());
    }

    #[tokio::test]
    async fn plain_tcp_passes_the_conformance_suite() {
        let u = conformance::Upstreams::start().await.unwrap();
        conformance::run_all(std::sync::Arc::new(PlainTcp), &u)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_backend_chosen_at_run_time_passes_the_conformance_suite() {
        let u = conformance::Upstreams::start().await.unwrap();
        let chosen: Arc<dyn DynTransport> = Arc::new(PlainTcp);
        conformance::run_all(Arc::new(chosen), &u).await.unwrap();
    }

    #[tokio::test]
    async fn a_typed_cause_survives_the_trait() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = closed.local_addr().unwrap();
        drop(closed);
        let chosen: Arc<dyn DynTransport> = Arc::new(PlainTcp);
        let err = Transport::connect(&chosen, &Target::new(addr))
            .await
            .err()
            .unwrap();
        let io = err.find_cause::<std::io::Error>().expect("the io::Error");
        assert_eq!(io.kind(), std::io::ErrorKind::ConnectionRefused);
    }

    /// A broken backend that sends every stream to the wrong place: the suite must notice.
    struct Misrouting(std::net::SocketAddr);

    impl Transport for Misrouting {
        type Stream = tokio::net::TcpStream;
        async fn connect(&self, _: &Target) -> Result<Self::Stream, TransportError> {
            Ok(tokio::net::TcpStream::connect(self.0).await?)
        }
        fn security(&self) -> SecurityInfo {
            PlainTcp.security()
        }
    }

    #[tokio::test]
    async fn the_suite_catches_a_broken_backend() {
        let u = conformance::Upstreams::start().await.unwrap();
        let to_closer = Misrouting(u.closer);
        assert!(conformance::echo(&to_closer, &u).await.is_err());
        assert!(conformance::half_close(&to_closer, &u).await.is_err());
        assert!(
            conformance::bulk_sha256(&to_closer, &u, 1 << 20)
                .await
                .is_err()
        );
        let to_echo = Misrouting(u.echo);
        assert!(conformance::unknown_target(&to_echo, &u).await.is_err());
        assert!(conformance::peer_close(&to_echo, &u).await.is_err());
    }

    #[test]
    fn peer_identity_display_and_spiffe() {
        let id = SpiffeId::parse("spiffe://a.test/x").unwrap();
        assert_eq!(
            PeerIdentity::Spiffe(id.clone()).to_string(),
            "spiffe://a.test/x"
        );
        let wg = PeerIdentity::WireGuard {
            public_key: [0xab; 32],
            spiffe: None,
        };
        assert_eq!(wg.to_string(), "wireguard:abababababababab");
        assert_eq!(wg.spiffe_id(), None);
        let mapped = PeerIdentity::WireGuard {
            public_key: [1; 32],
            spiffe: Some(id.clone()),
        };
        assert_eq!(mapped.spiffe_id(), Some(&id));
    }
}

// The crate README's example, compiled and run by `cargo test --doc` so it cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
