//! An identity on disk: the three PEM files `fipstun ca issue` writes (and SPIRE's
//! `spire-agent api fetch x509 -write` writes under other names), loaded and checked together.
//!
//! ```no_run
//! use fipstun_identity::files::IdentityFiles;
//!
//! let files = IdentityFiles::load("identity/web".as_ref())?;
//! println!("{} until {:?}", files.svid.id(), files.svid.not_after());
//! # Ok::<(), fipstun_identity::Error>(())
//! ```

use std::fs;
use std::path::Path;
use std::time::SystemTime;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::Error;
use crate::bundle::{BundleSet, TrustBundle};
use crate::keys::PrivateKey;
use crate::svid::{self, Svid, Usage};

/// The SVID's certificate chain, leaf first (PEM `CERTIFICATE` blocks).
pub const SVID_CHAIN_FILE: &str = "svid.pem";
/// The SVID's private key (PEM PKCS#8), readable only by its owner.
pub const SVID_KEY_FILE: &str = "svid-key.pem";
/// The trust bundle of the SVID's trust domain (PEM `CERTIFICATE` blocks).
pub const BUNDLE_FILE: &str = "bundle.pem";

/// An SVID with the trust bundle of its own trust domain, checked to chain to it.
#[derive(Debug)]
pub struct IdentityFiles {
    /// The SVID (chain and key).
    pub svid: Svid,
    /// The roots of the SVID's trust domain.
    pub bundle: TrustBundle,
}

impl IdentityFiles {
    /// Read [`SVID_CHAIN_FILE`], [`SVID_KEY_FILE`] and [`BUNDLE_FILE`] from `dir` and check that
    /// the SVID is valid now under the bundle. Errors name the file at fault.
    pub fn load(dir: &Path) -> Result<Self, Error> {
        let read = |name: &str| {
            let path = dir.join(name);
            fs::read_to_string(&path).map_err(|source| Error::ReadFile { path, source })
        };
        let chain = read(SVID_CHAIN_FILE)?;
        let key = zeroize::Zeroizing::new(read(SVID_KEY_FILE)?);
        let bundle = read(BUNDLE_FILE)?;
        Self::from_pem(&chain, &key, &bundle).map_err(|e| {
            let file = match &e {
                PemError::Chain(_) => SVID_CHAIN_FILE,
                PemError::Key(_) => SVID_KEY_FILE,
                PemError::Bundle(_) => BUNDLE_FILE,
            };
            Error::InFile {
                path: dir.join(file),
                source: Box::new(e.into_inner()),
            }
        })
    }

    /// The same checks on PEM text held in memory (a secret store, a Kubernetes secret).
    pub fn from_pem(chain_pem: &str, key_pem: &str, bundle_pem: &str) -> Result<Self, PemError> {
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(chain_pem.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(|e| PemError::Chain(Error::Pem(e.to_string())))?;
        if chain.is_empty() {
            return Err(PemError::Chain(Error::Pem(
                "no CERTIFICATE block in the SVID chain".into(),
            )));
        }
        let key = PrivateKey::from_pem(key_pem).map_err(PemError::Key)?;
        let svid = Svid::new(chain, key).map_err(|e| PemError::Chain(e.into()))?;
        let bundle = TrustBundle::from_pem(svid.id().trust_domain().clone(), bundle_pem)
            .map_err(PemError::Bundle)?;
        svid::validate(
            svid.chain(),
            &BundleSet::new().with(bundle.clone()),
            SystemTime::now(),
            Usage::Server,
        )
        .map_err(|e| PemError::Chain(e.into()))?;
        Ok(Self { svid, bundle })
    }
}

/// Which of the three PEM inputs [`IdentityFiles::from_pem`] refused, and why.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PemError {
    /// The SVID chain does not parse, is empty, or does not chain to the bundle.
    #[error("SVID chain: {0}")]
    Chain(#[source] Error),
    /// The private key does not parse or is not an allowed algorithm.
    #[error("SVID key: {0}")]
    Key(#[source] Error),
    /// The bundle does not parse.
    #[error("trust bundle: {0}")]
    Bundle(#[source] Error),
}

impl PemError {
    fn into_inner(self) -> Error {
        match self {
            Self::Chain(e) | Self::Key(e) | Self::Bundle(e) => e,
        }
    }
}

impl From<PemError> for Error {
    fn from(e: PemError) -> Self {
        e.into_inner()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::{IssuerConfig, SvidIssuer};
    use crate::keys::KeyAlgorithm;
    use crate::spiffe::{SpiffeId, TrustDomain};
    use std::time::Duration;

    fn issued() -> (String, String, String) {
        let td = TrustDomain::new("files.test").unwrap();
        let ca = SvidIssuer::generate_root(
            td,
            KeyAlgorithm::EcdsaP256,
            Duration::from_secs(3600),
            IssuerConfig::default(),
        )
        .unwrap();
        let id = SpiffeId::parse("spiffe://files.test/ns/a/sa/b").unwrap();
        let svid = ca.issue(&id, KeyAlgorithm::EcdsaP256, None).unwrap();
        (
            svid.chain_pem(),
            svid.key().to_pem().to_string(),
            ca.bundle().to_pem(),
        )
    }

    #[test]
    fn loads_what_was_written_and_names_the_bad_file() {
        let (chain, key, bundle) = issued();
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(SVID_CHAIN_FILE), &chain).unwrap();
        fs::write(dir.path().join(SVID_KEY_FILE), &key).unwrap();
        fs::write(dir.path().join(BUNDLE_FILE), &bundle).unwrap();
        let files = IdentityFiles::load(dir.path()).unwrap();
        assert_eq!(files.svid.id().to_string(), "spiffe://files.test/ns/a/sa/b");

        fs::write(dir.path().join(SVID_KEY_FILE), "not a key").unwrap();
        match IdentityFiles::load(dir.path()).unwrap_err() {
            Error::InFile { path, .. } => assert!(path.ends_with(SVID_KEY_FILE)),
            e => panic!("{e:?}"),
        }
        fs::remove_file(dir.path().join(BUNDLE_FILE)).unwrap();
        match IdentityFiles::load(dir.path()).unwrap_err() {
            Error::ReadFile { path, .. } => assert!(path.ends_with(BUNDLE_FILE)),
            e => panic!("{e:?}"),
        }
    }

    #[test]
    fn a_chain_from_another_ca_is_refused() {
        let (chain, key, _) = issued();
        let (_, _, other_bundle) = issued();
        assert!(matches!(
            IdentityFiles::from_pem(&chain, &key, &other_bundle),
            Err(PemError::Chain(_))
        ));
    }
}
