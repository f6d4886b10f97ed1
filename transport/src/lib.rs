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
#![forbid(unsafe_code)]

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;

use fipstun_identity::spiffe::SpiffeId;
use tokio::io::{AsyncRead, AsyncWrite};

pub mod conformance;
mod forward;
pub mod memory;

pub use fipstun_policy as policy;
pub use forward::{
    Acceptor, Authorize, AuthorizedByAcceptor, Forwarder, ForwarderConfig, ForwarderStats,
    ListenerAcceptor, PendingInbound, Refusal, TcpAcceptor, TcpPending,
};

/// Where a tunnelled stream should end up: the final destination, as the peer node will dial it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Target {
    /// The destination address (what HBONE puts in `:authority`, what WireGuard routes by).
    pub addr: SocketAddr,
}

impl Target {
    /// A target at `addr`.
    pub fn new(addr: SocketAddr) -> Self {
        Self { addr }
    }
}

impl From<SocketAddr> for Target {
    fn from(addr: SocketAddr) -> Self {
        Self::new(addr)
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.addr.fmt(f)
    }
}

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
    /// The record cipher(s), e.g. `"TLS13_AES_256_GCM_SHA384"`.
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

/// Errors any backend can report.
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
    /// The peer refused the stream (not authorized).
    #[error("{target}: the peer refused the stream: {reason}")]
    Refused {
        /// The target asked for.
        target: Target,
        /// What the peer said.
        reason: String,
    },
    /// The peer could not reach the target.
    #[error("{target}: the peer could not reach it: {reason}")]
    Unreachable {
        /// The target asked for.
        target: Target,
        /// What the peer said.
        reason: String,
    },
    /// The tunnel to the peer failed (handshake, I/O, protocol).
    #[error("tunnel to the peer failed: {0}")]
    Tunnel(String),
    /// The listener or transport was shut down.
    #[error("the transport is closed")]
    Closed,
    /// An I/O error.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl TransportError {
    /// A short label for metrics: `fips_required`, `no_route`, `refused`, `unreachable`,
    /// `tunnel`, `closed` or `io`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::FipsRequired { .. } => "fips_required",
            Self::NoRoute(_) => "no_route",
            Self::Refused { .. } => "refused",
            Self::Unreachable { .. } => "unreachable",
            Self::Tunnel(_) => "tunnel",
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

    async fn connect(&self, target: &Target) -> Result<Self::Stream, TransportError> {
        let s = tokio::net::TcpStream::connect(target.addr)
            .await
            .map_err(|e| TransportError::Unreachable {
                target: target.clone(),
                reason: e.to_string(),
            })?;
        s.set_nodelay(true)?;
        Ok(s)
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
