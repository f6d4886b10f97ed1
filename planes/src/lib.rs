//! fipstun-planes: take identities from the identity planes meshes already run, and serve one.
//!
//! - [`workload`]: a SPIFFE Workload API client (what SPIRE agents serve on
//!   `SPIFFE_ENDPOINT_SOCKET`). [`workload::WorkloadX509Source`] streams X.509-SVIDs and
//!   bundles, checks each update, and swaps it into an [`SvidSlot`] and a [`TrustStore`] — the
//!   same credential path the identity manager feeds, so rustls configs built once keep
//!   working across rotations. It reconnects with jittered exponential backoff.
//!   [`workload::WorkloadApiServer`] is a small server for the same API.
//! - [`istio`]: the Istio CA API (`istio.v1.auth.IstioCertificateService/CreateCertificate`,
//!   istiod's port 15012). [`istio::IstioCaClient`] implements identity's
//!   [`CaClient`](fipstun_identity::manager::CaClient), so the identity manager renews through
//!   istiod; [`istio::IstioCaServer`] serves the API from the embedded CA, authenticating
//!   callers by bearer token or client SVID and binding the SAN to the caller.
//! - [`proto`]: the protobuf messages, written by hand (no `protoc` at build time).
//! - [`response`]: the checks every answer passes before anything is installed.
//!
//! All TLS is rustls with identity's FIPS policy (AWS-LC FIPS module); tonic's own TLS features
//! are off. Message sizes are bounded (4 MiB by default).
//!
//! Take SVIDs from a SPIRE agent and build a server config once:
//!
//! ```no_run
//! use fipstun_identity::{policy::CryptoPolicy, tls::{server_config, Authorizer}};
//! use fipstun_planes::workload::{EndpointSocket, WorkloadConfig, WorkloadX509Source};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let source = WorkloadX509Source::start(WorkloadConfig::new(EndpointSocket::from_env()?));
//! source.wait_for_svid(std::time::Duration::from_secs(30)).await?;
//! let me = source.slot().current().unwrap().id.clone();
//! let config = server_config(
//!     &CryptoPolicy::default(),
//!     source.trust(),
//!     Authorizer::trust_domains([me.trust_domain()]),
//!     source.slot(),
//! )?;
//! // Rotations pushed by the agent swap the SVID and bundles inside `config`.
//! # let _ = config; Ok(()) }
//! ```
//!
//! [`SvidSlot`]: fipstun_identity::tls::SvidSlot
//! [`TrustStore`]: fipstun_identity::bundle::TrustStore
#![forbid(unsafe_code)]

mod backoff;
mod error;
pub mod istio;
pub mod proto;
pub mod response;
mod tls_io;
pub mod workload;

pub use backoff::Backoff;
pub use error::Error;
pub use response::ResponseError;

/// Default bound on one gRPC message, both directions: 4 MiB (gRPC's usual default).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;
