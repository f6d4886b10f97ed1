//! fipstun: service-mesh tunnels whose cryptography is FIPS 140-3 validated, as one dependency.
//!
//! This crate holds no code of its own but the optional `metrics` collector: it re-exports
//! the fipstun layers, so a proxy names one crate and picks the backends it links with cargo
//! features.
//!
//! | module | crate | feature |
//! |---|---|---|
//! | [`identity`] | `fipstun-identity`: SPIFFE IDs, the embedded CA, SVIDs, bundles, rotation, FIPS rustls configs | always |
//! | [`policy`] | `fipstun-policy`: deny-by-default authorization | always |
//! | [`transport`] | `fipstun-transport`: the `Transport` traits and the forwarder | always |
//! | `hbone` | `fipstun-hbone`: HBONE (HTTP/2 CONNECT over FIPS mTLS), the FIPS backend | `hbone` (default) |
//! | `wireguard` | `fipstun-wireguard`: the WireGuard-compatible backend, never FIPS | `wireguard` |
//! | `planes` | `fipstun-planes`: SPIFFE Workload API and Istio CA API | `planes` |
//! | `metrics` | prometheus-client collector over the libraries' counters | `metrics` |
//!
//! The FIPS module is never optional: identity (and so HBONE) always run their cryptography
//! in the AWS-LC FIPS 140-3 validated module. What the features decide is what else is linked:
//! without `wireguard`, no WireGuard crate and none of its non-approved primitives (X25519,
//! BLAKE2s, ChaCha20-Poly1305 outside the module) is in the build at all
//! (`fipstun/tests/features.rs` holds that against `cargo tree`).
//!
//! Building needs `AWS_LC_FIPS_SYS_USE_SYSTEM = "0"` under `[env]` in your
//! `.cargo/config.toml`; the crate docs of [`identity`] ("Building against fipstun") say why,
//! and why the rustls and aws-lc-rs pins become your graph's.
//!
//! A client that opens a stream through an HBONE node, refusing to run unless the backend is
//! FIPS:
//!
//! ```no_run
//! # #[cfg(feature = "hbone")]
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use fipstun::hbone::{ClientConfig, HboneClient, HboneRoute, HboneTransport, TlsIdentity};
//! use fipstun::identity::spiffe::SpiffeId;
//! use fipstun::transport::{FipsRequirement, Target, Transport};
//! use tokio::io::AsyncWriteExt;
//!
//! // svid.pem, svid-key.pem and bundle.pem, as `fipstun ca issue` (or any SPIFFE CA) wrote them.
//! let identity = TlsIdentity::from_dir("identity/web")?;
//! let client = HboneClient::new(identity, ClientConfig::default())?;
//! let node = SpiffeId::parse("spiffe://example.org/ns/istio-system/sa/ztunnel")?;
//! let transport = HboneTransport::new(client, FipsRequirement::Required)?
//!     .with_default_route(HboneRoute::standard_port("10.0.0.7".parse()?, node));
//! assert!(transport.security().fips);
//!
//! let target: std::net::SocketAddr = "10.0.0.7:8080".parse()?;
//! let mut stream = transport.connect(&Target::new(target)).await?;
//! stream.write_all(b"GET / HTTP/1.0\r\n\r\n").await?;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

pub use fipstun_identity as identity;
pub use fipstun_policy as policy;
pub use fipstun_transport as transport;

/// HBONE, the FIPS backend: `fipstun-hbone`.
#[cfg(feature = "hbone")]
pub use fipstun_hbone as hbone;

/// The WireGuard-compatible backend (never FIPS): `fipstun-wireguard`.
#[cfg(feature = "wireguard")]
pub use fipstun_wireguard as wireguard;

/// Identity planes (SPIFFE Workload API, Istio CA API): `fipstun-planes`.
#[cfg(feature = "planes")]
pub use fipstun_planes as planes;

#[cfg(feature = "metrics")]
pub mod metrics;

// The crate README's example, compiled by `cargo test --doc` so it cannot rot.
#[cfg(all(doctest, feature = "hbone"))]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
