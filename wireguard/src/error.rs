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
}

impl From<WgError> for fipstun_transport::TransportError {
    fn from(e: WgError) -> Self {
        Self::Tunnel(e.to_string())
    }
}
