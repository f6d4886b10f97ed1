//! fipstun-identity: who a workload is and whom it trusts, with every cryptographic operation in
//! the FIPS 140-3 validated AWS-LC module.
//!
//! Today this crate holds the bottom of the stack, the [`policy`] module: the FIPS crypto policy
//! (which TLS versions, suites, groups and signature schemes may be negotiated), config builders
//! that refuse to return a config that is not FIPS, and [`policy::fips_status`]. SPIFFE IDs, keys
//! and CSRs, the embedded CA, SVID validation, trust bundles, rotation and the SPIFFE rustls
//! verifiers and resolvers build on it.
//!
//! ```
//! use fipstun_identity::policy::{CryptoPolicy, fips_status};
//!
//! let status = fips_status();
//! assert!(status.fips_mode_active, "the AWS-LC FIPS module must be in FIPS mode");
//! assert!(CryptoPolicy::default().provider().fips());
//! println!("{status}");
//! ```
#![forbid(unsafe_code)]

pub mod policy;
