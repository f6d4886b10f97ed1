//! fipstun-planes: take identities from the identity planes meshes already run, and serve one.
//!
//! - [`workload`]: a SPIFFE Workload API client (what SPIRE agents serve on
//!   `SPIFFE_ENDPOINT_SOCKET`). [`workload::WorkloadX509Source`] streams X.509-SVIDs and
//!   bundles, checks each update, and swaps it into an [`SvidSlot`] and a [`TrustStore`] — the
//!   same credential path the identity manager feeds, so rustls configs built once keep
//!   working across rotations. It reconnects with jittered exponential backoff.
//!   [`workload::WorkloadApiServer`] serves the same API to the workloads of one node (from
//!   the embedded CA or an upstream such as SPIRE or istiod): it attests each caller by its
//!   uid and gid ([`attestation`], as SPIRE's Unix attestor does) and streams only the SVIDs
//!   registered for it. Standard SPIFFE clients of every language can call it ([`authority`]
//!   explains the `:authority` adapter that takes). It is not SPIRE across machines: the
//!   client side is how fipstun takes identity from SPIRE.
//! - [`istio`]: the Istio CA API (`istio.v1.auth.IstioCertificateService/CreateCertificate`,
//!   istiod's port 15012). [`istio::IstioCaClient`] implements identity's
//!   [`CaClient`](fipstun_identity::manager::CaClient), so the identity manager renews through
//!   istiod; [`istio::IstioCaServer`] serves the API from the embedded CA, authenticating
//!   callers by bearer token or client SVID (before any request body is read) and binding the
//!   SAN to the caller, under per-caller rate, concurrency, stream and size limits.
//! - [`rate_limit`]: the sans-IO per-caller token bucket the CA server uses.
//! - [`proto`]: the protobuf messages, written by hand (no `protoc` at build time).
//! - [`response`]: the checks every answer passes before anything is installed.
//!
//! All TLS is rustls with identity's FIPS policy (AWS-LC FIPS module); tonic's own TLS features
//! are off. Message sizes are bounded (4 MiB by default; 64 KiB for requests to the CA server).
//!
//! Serve SVIDs from the embedded CA on a Workload API socket, take them with the client, and
//! build a server config once (against a SPIRE agent, use `EndpointSocket::from_env()`):
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use std::time::Duration;
//! use fipstun_identity::{ca::*, keys::KeyAlgorithm, policy::CryptoPolicy, spiffe::*, tls::*};
//! use fipstun_planes::attestation::{RegistrationEntry, UnixSelector, WorkloadRegistry};
//! use fipstun_planes::proto::{X509Svid, X509SvidResponse};
//! use fipstun_planes::workload::*;
//! use rustls_pki_types::PrivateKeyDer;
//!
//! let ca = SvidIssuer::generate_root(TrustDomain::new("example.org")?, KeyAlgorithm::EcdsaP256,
//!     Duration::from_secs(86400), IssuerConfig::default())?;
//! let web = SpiffeId::parse("spiffe://example.org/ns/prod/sa/web")?;
//! let svid = ca.issue(&web, KeyAlgorithm::EcdsaP256, None)?;
//! let PrivateKeyDer::Pkcs8(key) = svid.key().to_rustls() else { unreachable!() };
//! let update = X509SvidResponse {
//!     svids: vec![X509Svid {
//!         spiffe_id: web.to_string(),
//!         x509_svid: svid.chain().iter().flat_map(|c| c.to_vec()).collect(),
//!         x509_svid_key: key.secret_pkcs8_der().to_vec(),
//!         bundle: ca.bundle().roots()[0].to_vec(),
//!         hint: String::new(),
//!     }],
//!     ..Default::default()
//! };
//!
//! // The agent side: callers running as this process's user get `web`; others are refused.
//! use std::os::unix::fs::MetadataExt;
//! let uid = std::fs::metadata("/proc/self")?.uid();
//! let registry = WorkloadRegistry::new()
//!     .with(RegistrationEntry::new(web.clone(), [UnixSelector::Uid(uid)])?);
//! let dir = tempfile::tempdir()?;
//! let socket = EndpointSocket::parse(&format!("unix://{}/agent.sock", dir.path().display()))?;
//! let (_updates, rx) = tokio::sync::watch::channel(Some(update));
//! let listener = tokio::net::UnixListener::bind(socket.path())?;
//! tokio::spawn(WorkloadApiServer::new(rx, registry).serve(listener, std::future::pending()));
//!
//! // The workload side: checked updates land in the slot and trust store the config reads.
//! let source = WorkloadX509Source::start(WorkloadConfig::new(socket));
//! assert_eq!(source.wait_for_svid(Duration::from_secs(10)).await?, web);
//! let config = server_config(&CryptoPolicy::default(), source.trust(),
//!     Authorizer::trust_domains([web.trust_domain()]), source.slot())?;
//! assert!(config.fips());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```
//!
//! [`SvidSlot`]: fipstun_identity::tls::SvidSlot
//! [`TrustStore`]: fipstun_identity::bundle::TrustStore
#![forbid(unsafe_code)]

pub mod attestation;
pub mod authority;
mod backoff;
mod error;
pub mod istio;
pub mod proto;
pub mod rate_limit;
pub mod response;
mod tls_io;
pub mod workload;

pub use backoff::Backoff;
pub use error::Error;
pub use response::ResponseError;

/// Default bound on one gRPC message, both directions: 4 MiB (gRPC's usual default).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

// The crate README's example, compiled and run by `cargo test --doc` so it cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
