//! X.509-SVIDs: the certificate-and-key a workload presents, and validation of a peer's SVID per
//! the SPIFFE X.509-SVID specification.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls_pki_types::{CertificateDer, UnixTime};
use webpki::{EndEntityCert, KeyUsage};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::bundle::BundleSet;
use crate::keys::PrivateKey;
use crate::spiffe::{SpiffeId, SpiffeIdError, TrustDomain};

/// Why an SVID was refused. Each variant names the rule of the X.509-SVID spec that failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SvidError {
    /// No certificate was presented.
    #[error("no certificate presented")]
    Empty,
    /// The leaf is not a well-formed X.509 certificate.
    #[error("malformed certificate: {0}")]
    Malformed(String),
    /// The leaf has no URI SAN (for example only DNS SANs).
    #[error("the leaf has no URI SAN, so no SPIFFE ID")]
    NoUriSan,
    /// The leaf has more than one URI SAN.
    #[error("the leaf has {0} URI SANs; an X.509-SVID has exactly one")]
    MultipleUriSans(usize),
    /// The URI SAN is not a valid SPIFFE ID.
    #[error("the URI SAN is not a SPIFFE ID: {0}")]
    NotSpiffeId(SpiffeIdError),
    /// The leaf is a CA certificate (`CA:TRUE`).
    #[error("the leaf certificate is a CA (CA:TRUE)")]
    LeafIsCa,
    /// The leaf has no key usage extension, or it lacks `digitalSignature`.
    #[error("the leaf's key usage lacks digitalSignature")]
    MissingDigitalSignature,
    /// The leaf's key usage sets `keyCertSign` or `cRLSign`.
    #[error("the leaf's key usage sets {0}, which a leaf SVID must not")]
    ForbiddenKeyUsage(&'static str),
    /// `now` is after the leaf's notAfter.
    #[error("the SVID for {id} expired at {not_after} (unix seconds)")]
    Expired {
        /// The SVID's identity.
        id: SpiffeId,
        /// notAfter, seconds since the Unix epoch.
        not_after: i64,
    },
    /// `now` is before the leaf's notBefore.
    #[error("the SVID for {id} is not valid before {not_before} (unix seconds)")]
    NotYetValid {
        /// The SVID's identity.
        id: SpiffeId,
        /// notBefore, seconds since the Unix epoch.
        not_before: i64,
    },
    /// No bundle is trusted for the SVID's trust domain.
    #[error("no trust bundle for trust domain {0}")]
    UntrustedTrustDomain(TrustDomain),
    /// The chain does not lead to a root in the trust domain's bundle.
    #[error("the chain of {0} does not lead to a root in its trust domain's bundle")]
    UnknownIssuer(SpiffeId),
    /// The chain failed another path-validation check (signature, constraints, usage).
    #[error("chain validation failed for {id}: {reason}")]
    InvalidChain {
        /// The SVID's identity.
        id: SpiffeId,
        /// What webpki reported.
        reason: String,
    },
    /// The peer is valid but not authorized to connect.
    #[error("{0} is not authorized")]
    Unauthorized(SpiffeId),
}

/// Which side of a TLS connection the SVID authenticates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Usage {
    /// A server SVID (checked by a client): EKU serverAuth if an EKU is present.
    Server,
    /// A client SVID (checked by a server): EKU clientAuth if an EKU is present.
    Client,
}

/// An X.509-SVID with its private key: what a workload presents in a handshake.
pub struct Svid {
    id: SpiffeId,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKey,
    not_before: SystemTime,
    not_after: SystemTime,
}

impl fmt::Debug for Svid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Svid")
            .field("id", &self.id)
            .field("chain_len", &self.chain.len())
            .field("key", &self.key)
            .field("not_after", &self.not_after)
            .finish()
    }
}

impl Svid {
    /// Assemble an SVID from its chain (leaf first) and key. The leaf is parsed for its ID and
    /// validity; it is not chain-validated here (use [`validate`] for that).
    pub fn new(chain: Vec<CertificateDer<'static>>, key: PrivateKey) -> Result<Self, SvidError> {
        let leaf = chain.first().ok_or(SvidError::Empty)?;
        let facts = LeafFacts::parse(leaf)?;
        Ok(Self {
            id: facts.id,
            chain,
            key,
            not_before: unix_to_system(facts.not_before),
            not_after: unix_to_system(facts.not_after),
        })
    }

    /// The SPIFFE ID this SVID proves.
    pub fn id(&self) -> &SpiffeId {
        &self.id
    }

    /// The chain, leaf first (without the root).
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    /// The private key.
    pub fn key(&self) -> &PrivateKey {
        &self.key
    }

    /// Start of validity.
    pub fn not_before(&self) -> SystemTime {
        self.not_before
    }

    /// End of validity.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// The leaf and chain as PEM.
    pub fn chain_pem(&self) -> String {
        self.chain
            .iter()
            .map(|c| crate::keys::pem_encode("CERTIFICATE", c))
            .collect()
    }
}

/// What we need from a leaf before any chain work: parsed once, checked against the spec.
struct LeafFacts {
    id: SpiffeId,
    not_before: i64,
    not_after: i64,
}

impl LeafFacts {
    fn parse(der: &[u8]) -> Result<Self, SvidError> {
        let (rest, cert) =
            X509Certificate::from_der(der).map_err(|e| SvidError::Malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(SvidError::Malformed(format!(
                "{} trailing bytes after the certificate",
                rest.len()
            )));
        }
        let id = spiffe_id_of(&cert)?;
        let bc = cert
            .basic_constraints()
            .map_err(|e| SvidError::Malformed(format!("basicConstraints: {e}")))?;
        if bc.is_some_and(|bc| bc.value.ca) {
            return Err(SvidError::LeafIsCa);
        }
        let ku = cert
            .key_usage()
            .map_err(|e| SvidError::Malformed(format!("keyUsage: {e}")))?
            .ok_or(SvidError::MissingDigitalSignature)?;
        if ku.value.key_cert_sign() {
            return Err(SvidError::ForbiddenKeyUsage("keyCertSign"));
        }
        if ku.value.crl_sign() {
            return Err(SvidError::ForbiddenKeyUsage("cRLSign"));
        }
        if !ku.value.digital_signature() {
            return Err(SvidError::MissingDigitalSignature);
        }
        let validity = cert.validity();
        Ok(Self {
            id,
            not_before: validity.not_before.timestamp(),
            not_after: validity.not_after.timestamp(),
        })
    }
}

fn spiffe_id_of(cert: &X509Certificate<'_>) -> Result<SpiffeId, SvidError> {
    let san = cert
        .subject_alternative_name()
        .map_err(|e| SvidError::Malformed(format!("subjectAltName: {e}")))?
        .ok_or(SvidError::NoUriSan)?;
    let uris: Vec<&str> = san
        .value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::URI(u) => Some(*u),
            _ => None,
        })
        .collect();
    match uris.as_slice() {
        [] => Err(SvidError::NoUriSan),
        [one] => SpiffeId::parse(one).map_err(SvidError::NotSpiffeId),
        many => Err(SvidError::MultipleUriSans(many.len())),
    }
}

/// The SPIFFE ID in a leaf certificate, with the leaf checked against the SVID profile (one URI
/// SAN, not a CA, key usage) but not chain-validated. For a peer that rustls already verified
/// with this crate's verifiers, this is how to learn who it is.
pub fn peer_id(leaf: &CertificateDer<'_>) -> Result<SpiffeId, SvidError> {
    LeafFacts::parse(leaf).map(|f| f.id)
}

/// When a leaf certificate stops being valid (its notAfter), with the leaf checked against the
/// SVID profile like [`peer_id`]. A connection authenticated by this leaf must not outlive it.
pub fn peer_not_after(leaf: &CertificateDer<'_>) -> Result<SystemTime, SvidError> {
    let secs = LeafFacts::parse(leaf)?.not_after;
    Ok(match u64::try_from(secs) {
        Ok(s) => UNIX_EPOCH + Duration::from_secs(s),
        Err(_) => UNIX_EPOCH,
    })
}

/// Validate `chain` (leaf first, then intermediates) as an X.509-SVID at `now`: the leaf profile,
/// its validity window, and a path to a root in the bundle of the leaf's own trust domain.
/// Returns the proven SPIFFE ID.
pub fn validate(
    chain: &[CertificateDer<'_>],
    bundles: &BundleSet,
    now: SystemTime,
    usage: Usage,
) -> Result<SpiffeId, SvidError> {
    let leaf = chain.first().ok_or(SvidError::Empty)?;
    let facts = LeafFacts::parse(leaf)?;
    let now_unix = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    if now_unix < facts.not_before {
        return Err(SvidError::NotYetValid {
            id: facts.id,
            not_before: facts.not_before,
        });
    }
    if now_unix > facts.not_after {
        return Err(SvidError::Expired {
            id: facts.id,
            not_after: facts.not_after,
        });
    }
    let td = facts.id.trust_domain();
    let bundle = bundles
        .get(&td)
        .ok_or_else(|| SvidError::UntrustedTrustDomain(td.clone()))?;
    let ee = EndEntityCert::try_from(leaf).map_err(|e| SvidError::InvalidChain {
        id: facts.id.clone(),
        reason: format!("{e:?}"),
    })?;
    let eku = match usage {
        Usage::Server => KeyUsage::server_auth(),
        Usage::Client => KeyUsage::client_auth(),
    };
    let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    ee.verify_for_usage(
        crate::policy::SIGNATURE_VERIFICATION.all,
        bundle.anchors(),
        &chain[1..],
        UnixTime::since_unix_epoch(since_epoch),
        eku,
        None,
        None,
    )
    .map_err(|e| match e {
        // No root of the bundle matched by name, or one did (an impostor CA with the same
        // subject) but its key did not sign the chain: either way no path reaches the bundle.
        webpki::Error::UnknownIssuer | webpki::Error::InvalidSignatureForPublicKey => {
            SvidError::UnknownIssuer(facts.id.clone())
        }
        other => SvidError::InvalidChain {
            id: facts.id.clone(),
            reason: format!("{other:?}"),
        },
    })?;
    Ok(facts.id)
}

fn unix_to_system(secs: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs as u64)
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}
