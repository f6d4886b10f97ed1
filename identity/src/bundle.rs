//! Trust bundles: the root certificates of a trust domain, and the set of bundles a workload
//! trusts (its own plus federated ones), swappable while handshakes read it.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, TrustAnchor};

use crate::Error;
use crate::spiffe::TrustDomain;

/// The roots one trust domain's SVIDs chain to.
#[derive(Clone, Debug)]
pub struct TrustBundle {
    trust_domain: TrustDomain,
    roots: Vec<CertificateDer<'static>>,
    anchors: Vec<TrustAnchor<'static>>,
}

impl TrustBundle {
    /// A bundle from DER certificates. Each must parse as a trust anchor.
    pub fn from_der(
        trust_domain: TrustDomain,
        roots: impl IntoIterator<Item = CertificateDer<'static>>,
    ) -> Result<Self, Error> {
        let roots: Vec<_> = roots.into_iter().collect();
        if roots.is_empty() {
            return Err(Error::Bundle(format!(
                "the bundle for {trust_domain} has no certificates"
            )));
        }
        let anchors = roots
            .iter()
            .map(|der| {
                webpki::anchor_from_trusted_cert(der)
                    .map(|a| a.to_owned())
                    .map_err(|e| {
                        Error::Bundle(format!("a root for {trust_domain} does not parse: {e:?}"))
                    })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            trust_domain,
            roots,
            anchors,
        })
    }

    /// A bundle from one or more PEM `CERTIFICATE` blocks.
    pub fn from_pem(trust_domain: TrustDomain, pem: &str) -> Result<Self, Error> {
        let roots = CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Error::Pem(format!("bundle for {trust_domain}: {e}")))?;
        Self::from_der(trust_domain, roots)
    }

    /// The trust domain this bundle is for.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The root certificates.
    pub fn roots(&self) -> &[CertificateDer<'static>] {
        &self.roots
    }

    /// The roots as webpki trust anchors.
    pub fn anchors(&self) -> &[TrustAnchor<'static>] {
        &self.anchors
    }

    /// This bundle plus `other`'s roots (for root rotation: the new root is added and the old
    /// one kept until the certificates it signed have expired).
    pub fn merged_with(&self, other: &TrustBundle) -> Result<Self, Error> {
        let mut roots = self.roots.clone();
        for r in &other.roots {
            if !roots.contains(r) {
                roots.push(r.clone());
            }
        }
        Self::from_der(self.trust_domain.clone(), roots)
    }

    /// This bundle without `root` (the last step of a root rotation, once every certificate
    /// the old root signed has expired). Fails if that would leave the bundle empty.
    pub fn without_root(&self, root: &CertificateDer<'_>) -> Result<Self, Error> {
        let roots = self
            .roots
            .iter()
            .filter(|r| r.as_ref() != root.as_ref())
            .cloned();
        Self::from_der(self.trust_domain.clone(), roots)
    }

    /// All roots as PEM.
    pub fn to_pem(&self) -> String {
        self.roots
            .iter()
            .map(|r| crate::keys::pem_encode("CERTIFICATE", r))
            .collect()
    }
}

/// Bundles keyed by trust domain: the local one and any federated ones.
#[derive(Clone, Debug, Default)]
pub struct BundleSet {
    bundles: HashMap<TrustDomain, TrustBundle>,
}

impl BundleSet {
    /// An empty set: nothing is trusted.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add or replace the bundle for its trust domain.
    pub fn insert(&mut self, bundle: TrustBundle) {
        self.bundles.insert(bundle.trust_domain.clone(), bundle);
    }

    /// Builder form of [`BundleSet::insert`].
    pub fn with(mut self, bundle: TrustBundle) -> Self {
        self.insert(bundle);
        self
    }

    /// The bundle for `td`, if trusted.
    pub fn get(&self, td: &TrustDomain) -> Option<&TrustBundle> {
        self.bundles.get(td)
    }

    /// Remove the bundle for `td`.
    pub fn remove(&mut self, td: &TrustDomain) -> Option<TrustBundle> {
        self.bundles.remove(td)
    }

    /// The trusted trust domains.
    pub fn trust_domains(&self) -> impl Iterator<Item = &TrustDomain> {
        self.bundles.keys()
    }
}

/// A [`BundleSet`] that can be replaced while handshakes read it. Cloning shares the set.
#[derive(Clone, Debug)]
pub struct TrustStore {
    current: Arc<ArcSwap<BundleSet>>,
}

impl TrustStore {
    /// A store starting with `set`.
    pub fn new(set: BundleSet) -> Self {
        Self {
            current: Arc::new(ArcSwap::from_pointee(set)),
        }
    }

    /// The current set (cheap; a handshake takes one snapshot).
    pub fn current(&self) -> Arc<BundleSet> {
        self.current.load_full()
    }

    /// Replace the whole set; handshakes that start afterwards see it.
    pub fn replace(&self, set: BundleSet) {
        self.current.store(Arc::new(set));
    }

    /// Add or replace one trust domain's bundle.
    pub fn update(&self, bundle: TrustBundle) {
        self.current.rcu(|old| {
            let mut next = BundleSet::clone(old);
            next.insert(bundle.clone());
            next
        });
    }
}
