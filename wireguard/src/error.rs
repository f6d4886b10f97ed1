//! The crate's error type for configuration and wire parsing; run-time tunnel failures are
//! reported as [`fipstun_transport::TransportError`] through the traits.

/// What went wrong configuring the WireGuard backend or parsing its input.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WgError {
    /// A key was not 32 bytes of base64.
    #[error("bad {what}: {reason}")]
    BadKey {
        /// Which key (`"private key"`, `"public key"`, `"pre-shared key"`).
        what: &'static str,
        /// Why it was refused.
        reason: &'static str,
    },
    /// An IP prefix (allowed IP or tunnel address) did not parse.
    #[error("bad IP prefix {0:?}")]
    BadPrefix(String),
    /// The configuration cannot work (e.g. no tunnel address).
    #[error("invalid WireGuard configuration: {0}")]
    Config(String),
    /// The peer serving the target has no endpoint: none is configured and it never sent a
    /// packet (roaming learns it from the first authenticated one).
    #[error("peer {peer} has no endpoint yet")]
    NoEndpoint {
        /// The peer's public key, base64.
        peer: String,
    },
    /// Every local port of the userspace TCP stack is in use.
    #[error("out of ephemeral ports")]
    OutOfPorts,
    /// The userspace TCP stack refused to open the connection.
    #[error("the userspace TCP stack cannot connect: {0}")]
    Connect(String),
    /// The target did not answer the SYN through the tunnel in time (no handshake with the
    /// peer, or the peer dropped it).
    #[error("no answer through the tunnel within {0:?}")]
    ConnectTimeout(std::time::Duration),
}

/// Run-time failures reach callers of the shared traits as
/// [`TransportError::Tunnel`](fipstun_transport::TransportError::Tunnel) with this error as the
/// source: `err.find_cause::<WgError>()` gets it back.
impl From<WgError> for fipstun_transport::TransportError {
    fn from(e: WgError) -> Self {
        Self::tunnel(None, e)
    }
}
