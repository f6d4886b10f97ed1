//! The crate's error type.

use crate::response::ResponseError;

/// Everything that can go wrong talking to an identity plane.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `SPIFFE_ENDPOINT_SOCKET` (or a configured address) is missing or not a Unix socket URI.
    #[error("bad Workload API address {value:?}: {reason}")]
    EndpointAddress {
        /// The value given.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The plane could not be reached (socket, TCP, TLS handshake, HTTP/2).
    #[error("cannot reach {endpoint}: {reason}")]
    Connect {
        /// Where we tried to go.
        endpoint: String,
        /// Why it failed.
        reason: String,
    },
    /// The plane answered with a gRPC error status.
    #[error("{endpoint} answered {code:?}: {message}")]
    Status {
        /// Who answered.
        endpoint: String,
        /// The gRPC status code.
        code: tonic::Code,
        /// The status message.
        message: String,
    },
    /// The plane answered, but with something we refuse to install.
    #[error("{endpoint} sent an unusable answer: {reason}")]
    BadResponse {
        /// Who answered.
        endpoint: String,
        /// What was wrong.
        reason: ResponseError,
    },
    /// The bearer token file could not be read.
    #[error("token file {path}: {reason}")]
    Token {
        /// The file.
        path: String,
        /// Why it is unusable.
        reason: String,
    },
    /// Building a TLS configuration or installing credentials failed in the identity crate.
    #[error("identity: {0}")]
    Identity(String),
    /// A Workload API caller's HTTP/2 stream could not be carried through the `:authority`
    /// adapter (undecodable or oversized header block); the connection is dropped.
    #[error("Workload API connection refused: {reason}")]
    Framing {
        /// What was wrong with the caller's frames.
        reason: String,
    },
    /// A workload selector or registration entry is malformed.
    #[error("bad workload selector {value:?}: {reason}")]
    Selector {
        /// The selector (or the entry's SPIFFE ID) given.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A socket could not be set up.
    #[error("I/O on {what}: {reason}")]
    Io {
        /// Which socket or file.
        what: String,
        /// The OS error.
        reason: String,
    },
}

impl From<fipstun_identity::Error> for Error {
    fn from(e: fipstun_identity::Error) -> Self {
        Self::Identity(e.to_string())
    }
}

impl Error {
    pub(crate) fn status(endpoint: &str, status: &tonic::Status) -> Self {
        Self::Status {
            endpoint: endpoint.to_string(),
            code: status.code(),
            message: status.message().to_string(),
        }
    }

    /// Whether trying again later may help (the plane was unreachable or overloaded, or sent
    /// a bad answer that a later one may fix).
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Connect { .. } | Self::BadResponse { .. } | Self::Io { .. } => true,
            Self::Status { code, .. } => matches!(
                code,
                tonic::Code::Unavailable
                    | tonic::Code::DeadlineExceeded
                    | tonic::Code::ResourceExhausted
                    | tonic::Code::Aborted
                    | tonic::Code::Internal
                    | tonic::Code::Unknown
                    | tonic::Code::Cancelled
            ),
            _ => false,
        }
    }
}
