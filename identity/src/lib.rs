//! fipstun-identity: who a workload is and whom it trusts, with every cryptographic operation in
//! the FIPS 140-3 validated AWS-LC module.
//!
//! - [`spiffe`]: SPIFFE IDs and trust domains, parsed exactly per the SPIFFE-ID spec.
//! - [`keys`]: ECDSA P-256/P-384 keys (zeroized on drop) and PKCS#10 CSRs.
//! - [`ca`]: the embedded CA ([`ca::SvidIssuer`]) that signs SVIDs from CSRs.
//! - [`svid`]: X.509-SVIDs and their validation per the X.509-SVID spec.
//! - [`files`]: an SVID and its bundle from PEM files or memory, checked together.
//! - [`bundle`]: trust bundles, federation sets, and a swappable [`bundle::TrustStore`].
//! - [`tls`]: rustls verifiers that check chain *and* SPIFFE ID inside the handshake, and
//!   resolvers backed by a swappable current SVID.
//! - [`rotation`] and [`manager`]: renewal before expiry with a new key each time, jittered and
//!   backed off, swapped into live TLS configs without dropping connections.
//! - [`policy`]: the FIPS crypto policy, FIPS-checked config builders and [`policy::fips_status`].
//!
//! Issue two SVIDs from the embedded CA, build FIPS server and client configs, and handshake:
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use fipstun_identity::{bundle::*, ca::*, keys::KeyAlgorithm, policy::CryptoPolicy, spiffe::*, tls::*};
//!
//! let td = TrustDomain::new("example.org")?;
//! let ca = SvidIssuer::generate_root(td.clone(), KeyAlgorithm::EcdsaP256, Duration::from_secs(86400), IssuerConfig::default())?;
//! let trust = TrustStore::new(BundleSet::new().with(ca.bundle().clone()));
//! let policy = CryptoPolicy::default();
//!
//! let server_id = SpiffeId::parse("spiffe://example.org/ns/prod/sa/db")?;
//! let client_id = SpiffeId::parse("spiffe://example.org/ns/prod/sa/web")?;
//! let (server_slot, client_slot) = (Arc::new(SvidSlot::new()), Arc::new(SvidSlot::new()));
//! server_slot.set(&ca.issue(&server_id, KeyAlgorithm::EcdsaP256, None)?)?;
//! client_slot.set(&ca.issue(&client_id, KeyAlgorithm::EcdsaP256, None)?)?;
//!
//! // The server admits only web; the client only talks to db. Both checks run in the handshake.
//! let server = server_config(&policy, trust.clone(), Authorizer::ids([client_id.clone()]), server_slot)?;
//! let client = client_config(&policy, trust, Authorizer::ids([server_id.clone()]), client_slot)?;
//! assert!(server.fips() && client.fips());
//!
//! let mut c = rustls::ClientConnection::new(Arc::new(client), "db".try_into().unwrap()).unwrap();
//! let mut s = rustls::ServerConnection::new(Arc::new(server)).unwrap();
//! while c.is_handshaking() || s.is_handshaking() {
//!     let mut buf = Vec::new();
//!     while c.wants_write() { c.write_tls(&mut buf).unwrap(); }
//!     s.read_tls(&mut &buf[..]).unwrap();
//!     s.process_new_packets().unwrap();
//!     buf.clear();
//!     while s.wants_write() { s.write_tls(&mut buf).unwrap(); }
//!     c.read_tls(&mut &buf[..]).unwrap();
//!     c.process_new_packets().unwrap();
//! }
//! assert_eq!(peer_spiffe_id(&s), Some(client_id));
//! assert_eq!(peer_spiffe_id(&c), Some(server_id));
//! # Ok::<(), fipstun_identity::Error>(())
//! ```
//!
//! # Building against fipstun: the FIPS module and the version pins
//!
//! - **The module is built from source.** `aws-lc-rs` with its `fips` feature builds
//!   `aws-lc-fips-sys`, which compiles AWS-LC's FIPS module with CMake, Go, Perl and a C
//!   compiler. Put `AWS_LC_FIPS_SYS_USE_SYSTEM = "0"` under `[env]` in your project's
//!   `.cargo/config.toml`: without it, `aws-lc-fips-sys` first looks for an AWS-LC installed on
//!   the system and links that one if it finds it, and that library is not the module fipstun
//!   pins (nobody checked its version or its certificate). `examples/downstream/` in the
//!   repository is a crate outside the workspace set up that way; `./x test` builds it.
//! - **Exact pins carry over to you.** The workspace pins `aws-lc-rs =1.17.4`,
//!   `rustls =0.23.43`, `rustls-webpki =0.103.13` and `rcgen =0.14.9`: the newest releases that
//!   still build `aws-lc-fips-sys` 0.13, i.e. AWS-LC FIPS 3.x, the module line with a FIPS 140-3
//!   certificate (CMVP #5314 for the static build). Newer releases of those crates build module
//!   4.x, which is not validated yet. An `=` requirement binds your whole dependency graph,
//!   because cargo links one version per semver-compatible line: a dependency of yours that
//!   needs, say, rustls 0.23.44 cannot be resolved beside fipstun. Name rustls and the PKI
//!   types through the re-exports ([`rustls`], [`pki_types`]; `fipstun_hbone` adds `h2`,
//!   `http` and `bytes`) so your code always uses the versions the FIPS line allows.
//! - **When module 4.x is validated**, fipstun raises the pins in one release: `aws-lc-rs` to the
//!   line that builds `aws-lc-fips-sys` 0.14, the other three to the newest releases that
//!   resolve with it, and [`policy::MODULE`] to the new name and certificate. Code that names
//!   rustls through the re-exports moves with it (a new rustls major line would make that a
//!   new fipstun major release). Until the certificate exists, fipstun stays on the 3.x module.
#![forbid(unsafe_code)]

pub mod bundle;
pub mod ca;
pub mod files;
pub mod keys;
pub mod manager;
pub mod policy;
pub mod rotation;
pub mod spiffe;
pub mod svid;
pub mod tls;

// The foreign crates whose types this crate's API takes and returns, so a dependent names the
// exact versions fipstun is built with (the FIPS line pins them: see the workspace manifest).
pub use rustls;
pub use rustls_pki_types as pki_types;

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A SPIFFE ID or trust domain did not parse.
    #[error(transparent)]
    SpiffeId(#[from] spiffe::SpiffeIdError),
    /// The FIPS policy refused a configuration.
    #[error(transparent)]
    Policy(#[from] policy::PolicyError),
    /// The CA refused a CSR.
    #[error(transparent)]
    Csr(#[from] ca::CsrError),
    /// The CA did not deliver an SVID.
    #[error(transparent)]
    Ca(#[from] manager::CaClientError),
    /// An SVID is not valid.
    #[error(transparent)]
    Svid(#[from] svid::SvidError),
    /// A key could not be generated, loaded or used.
    #[error("key: {0}")]
    Key(String),
    /// PEM input did not hold what was expected.
    #[error("PEM: {0}")]
    Pem(String),
    /// A trust bundle is unusable.
    #[error("trust bundle: {0}")]
    Bundle(String),
    /// Encoding a certificate or CSR failed.
    #[error("encoding: {0}")]
    Encoding(String),
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    ReadFile {
        /// The file.
        path: std::path::PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A file was read but its content is refused.
    #[error("{}: {source}", path.display())]
    InFile {
        /// The file.
        path: std::path::PathBuf,
        /// Why it is refused.
        source: Box<Error>,
    },
}

// The crate README's example, compiled and run by `cargo test --doc` so it cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
