//! Checks of what an identity plane hands us, before anything is installed: the Workload API's
//! X.509-SVID responses and the Istio CA's certificate chains. Sans-IO: bytes and `now` in,
//! typed verdicts out, so fuzzers and unit tests drive them directly.

use std::time::SystemTime;

use fipstun_identity::bundle::{BundleSet, TrustBundle};
use fipstun_identity::keys::PrivateKey;
use fipstun_identity::spiffe::{SpiffeId, SpiffeIdError, TrustDomain};
use fipstun_identity::svid::{self, Svid, SvidError, Usage};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::proto::{X509BundlesResponse, X509SvidResponse};

/// At most this many certificates in one chain or bundle: real chains have two or three, and
/// the bound keeps a hostile peer from making us parse without end.
pub const MAX_CERTIFICATES: usize = 32;

/// Why an answer from the Workload API or a CA was refused. Nothing of a refused answer is
/// installed; the previous SVID and bundles stay in place.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResponseError {
    /// The Workload API response carried no SVID at all.
    #[error("the response carries no SVID")]
    NoSvid,
    /// The SVID's certificate chain is empty.
    #[error("the certificate chain is empty")]
    EmptyChain,
    /// The chain or a bundle is not a sequence of well-formed certificates.
    #[error("malformed certificate data: {0}")]
    MalformedCertificate(String),
    /// More certificates than [`MAX_CERTIFICATES`].
    #[error("more than {MAX_CERTIFICATES} certificates")]
    TooManyCertificates,
    /// The response's `spiffe_id` field is missing or not a SPIFFE ID.
    #[error("the response's spiffe_id field is not a SPIFFE ID: {0}")]
    BadSpiffeId(SpiffeIdError),
    /// The ID the response claims differs from the one its leaf certifies.
    #[error("the response claims {claimed} but the leaf certifies {certified}")]
    IdMismatch {
        /// The `spiffe_id` field.
        claimed: SpiffeId,
        /// The leaf's URI SAN.
        certified: SpiffeId,
    },
    /// The SVID is not for the identity we asked for or are configured to take.
    #[error("expected an SVID for {expected}, got {got}")]
    UnexpectedId {
        /// What we wanted.
        expected: SpiffeId,
        /// What came (for the Workload API: every ID in the response, comma-separated).
        got: String,
    },
    /// The private key is not PKCS#8 ECDSA P-256/P-384 (for example Ed25519, which the FIPS
    /// policy does not allow, or garbage).
    #[error("the private key is unusable under the FIPS policy: {0}")]
    UnsupportedKey(String),
    /// The key does not belong to the leaf certificate.
    #[error("the private key does not match the leaf certificate's public key")]
    KeyMismatch,
    /// A trust bundle in the response is unusable.
    #[error("the bundle for {trust_domain} is unusable: {reason}")]
    BadBundle {
        /// Which bundle.
        trust_domain: String,
        /// What was wrong.
        reason: String,
    },
    /// The SVID failed X.509-SVID validation (profile, expiry, chain to its bundle).
    #[error(transparent)]
    Invalid(#[from] SvidError),
}

/// Split concatenated DER certificates (the Workload API's encoding of chains and bundles).
pub fn split_der_certificates(
    mut bytes: &[u8],
) -> Result<Vec<CertificateDer<'static>>, ResponseError> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        if out.len() == MAX_CERTIFICATES {
            return Err(ResponseError::TooManyCertificates);
        }
        let (rest, _) = X509Certificate::from_der(bytes).map_err(|e| {
            ResponseError::MalformedCertificate(format!("certificate {}: {e}", out.len()))
        })?;
        let used = bytes.len() - rest.len();
        out.push(CertificateDer::from(bytes[..used].to_vec()));
        bytes = rest;
    }
    Ok(out)
}

/// Parse the PEM strings of an Istio `cert_chain` (each element may hold several blocks) into
/// DER certificates, in order. Anything but `CERTIFICATE` blocks and whitespace is an error.
pub fn parse_pem_chain(
    elements: &[impl AsRef<str>],
) -> Result<Vec<CertificateDer<'static>>, ResponseError> {
    let mut out = Vec::new();
    for (i, element) in elements.iter().enumerate() {
        let before = out.len();
        for item in <(rustls_pki_types::pem::SectionKind, Vec<u8>)>::pem_slice_iter(
            element.as_ref().as_bytes(),
        ) {
            let (kind, der) = item.map_err(|e| {
                ResponseError::MalformedCertificate(format!("cert_chain[{i}]: {e}"))
            })?;
            if kind != rustls_pki_types::pem::SectionKind::Certificate {
                return Err(ResponseError::MalformedCertificate(format!(
                    "cert_chain[{i}] holds a {kind:?} block"
                )));
            }
            if out.len() == MAX_CERTIFICATES {
                return Err(ResponseError::TooManyCertificates);
            }
            let (rest, _) = X509Certificate::from_der(&der).map_err(|e| {
                ResponseError::MalformedCertificate(format!("cert_chain[{i}]: {e}"))
            })?;
            if !rest.is_empty() {
                return Err(ResponseError::MalformedCertificate(format!(
                    "cert_chain[{i}]: trailing bytes after a certificate"
                )));
            }
            out.push(CertificateDer::from(der));
        }
        if out.len() == before {
            return Err(ResponseError::MalformedCertificate(format!(
                "cert_chain[{i}] holds no CERTIFICATE block"
            )));
        }
    }
    Ok(out)
}

/// Check a chain a CA issued for `id`: not empty, the leaf is an X.509-SVID for `id`, valid at
/// `now`, and (when `bundles` is given) chaining to the bundle of `id`'s trust domain. Trailing
/// self-signed roots are dropped: the result is leaf first, root excluded, as
/// [`fipstun_identity::manager::CaClient`] returns it. That the leaf certifies the key we sent
/// is the identity manager's check (it holds the key).
pub fn check_issued_chain(
    mut chain: Vec<CertificateDer<'static>>,
    id: &SpiffeId,
    bundles: Option<&BundleSet>,
    now: SystemTime,
) -> Result<Vec<CertificateDer<'static>>, ResponseError> {
    let leaf = chain.first().ok_or(ResponseError::EmptyChain)?;
    let certified = svid::peer_id(leaf)?;
    if &certified != id {
        return Err(ResponseError::UnexpectedId {
            expected: id.clone(),
            got: certified.to_string(),
        });
    }
    while chain.len() > 1 && chain.last().is_some_and(|c| is_self_signed(c)) {
        chain.pop();
    }
    match bundles {
        Some(bundles) => {
            for usage in [Usage::Client, Usage::Server] {
                svid::validate(&chain, bundles, now, usage)?;
            }
        }
        None => {
            // Without a bundle we can still refuse what is already dead.
            let (_, cert) = X509Certificate::from_der(&chain[0])
                .map_err(|e| ResponseError::MalformedCertificate(e.to_string()))?;
            let unix = |t: SystemTime| {
                t.duration_since(SystemTime::UNIX_EPOCH)
                    .map(|d| d.as_secs() as i64)
                    .unwrap_or(0)
            };
            let validity = cert.validity();
            if unix(now) > validity.not_after.timestamp() {
                return Err(SvidError::Expired {
                    id: id.clone(),
                    not_after: validity.not_after.timestamp(),
                }
                .into());
            }
            if unix(now) < validity.not_before.timestamp() {
                return Err(SvidError::NotYetValid {
                    id: id.clone(),
                    not_before: validity.not_before.timestamp(),
                }
                .into());
            }
        }
    }
    Ok(chain)
}

fn is_self_signed(der: &CertificateDer<'_>) -> bool {
    X509Certificate::from_der(der)
        .map(|(_, c)| c.subject() == c.issuer())
        .unwrap_or(false)
}

/// A checked Workload API update: the SVID to present and the bundles to trust.
#[derive(Debug)]
pub struct X509Context {
    /// The SVID selected from the response (see [`X509Context::from_response`]).
    pub svid: Svid,
    /// The hint the Workload API gave it (may be empty).
    pub hint: String,
    /// The SVID's own trust domain bundle and every federated bundle.
    pub bundles: BundleSet,
}

impl X509Context {
    /// Check a `FetchX509SVID` response at `now`. With `expected` the SVID for that ID is
    /// taken, else the first (the Workload API's default). The SVID must have a non-empty
    /// chain, a `spiffe_id` equal to its leaf's URI SAN, a PKCS#8 ECDSA P-256/P-384 key that
    /// matches the leaf, and must validate as an X.509-SVID (both client and server use)
    /// against the bundle sent with it. Federated bundles must parse; none may replace the
    /// SVID's own trust domain bundle.
    pub fn from_response(
        response: &X509SvidResponse,
        expected: Option<&SpiffeId>,
        now: SystemTime,
    ) -> Result<Self, ResponseError> {
        let entry = match expected {
            None => response.svids.first().ok_or(ResponseError::NoSvid)?,
            Some(want) => response
                .svids
                .iter()
                .find(|s| s.spiffe_id == want.as_str())
                .ok_or_else(|| {
                    if response.svids.is_empty() {
                        ResponseError::NoSvid
                    } else {
                        ResponseError::UnexpectedId {
                            expected: want.clone(),
                            got: response
                                .svids
                                .iter()
                                .map(|s| s.spiffe_id.as_str())
                                .collect::<Vec<_>>()
                                .join(", "),
                        }
                    }
                })?,
        };
        let claimed = SpiffeId::parse(&entry.spiffe_id).map_err(ResponseError::BadSpiffeId)?;
        let chain = split_der_certificates(&entry.x509_svid)?;
        if chain.is_empty() {
            return Err(ResponseError::EmptyChain);
        }
        let certified = svid::peer_id(&chain[0])?;
        if certified != claimed {
            return Err(ResponseError::IdMismatch { claimed, certified });
        }
        let key = PrivateKey::from_pkcs8_der(&entry.x509_svid_key)
            .map_err(|e| ResponseError::UnsupportedKey(e.to_string()))?;
        let (_, leaf) = X509Certificate::from_der(&chain[0])
            .map_err(|e| ResponseError::MalformedCertificate(e.to_string()))?;
        let ours = key
            .public_key()
            .map_err(|e| ResponseError::UnsupportedKey(e.to_string()))?;
        if leaf.public_key().subject_public_key.data.as_ref() != ours.as_slice() {
            return Err(ResponseError::KeyMismatch);
        }

        let own_td = claimed.trust_domain();
        let mut bundles = BundleSet::new();
        for (name, der) in &response.federated_bundles {
            let td = TrustDomain::new(name).map_err(|e| ResponseError::BadBundle {
                trust_domain: name.clone(),
                reason: e.to_string(),
            })?;
            if td == own_td {
                // The SVID's own bundle comes with the SVID; a federated entry must not
                // override it.
                continue;
            }
            bundles.insert(bundle_from_der(td, der)?);
        }
        bundles.insert(bundle_from_der(own_td, &entry.bundle)?);

        for usage in [Usage::Client, Usage::Server] {
            svid::validate(&chain, &bundles, now, usage)?;
        }
        let svid = Svid::new(chain, key)?;
        Ok(Self {
            svid,
            hint: entry.hint.clone(),
            bundles,
        })
    }
}

/// Check a `FetchX509Bundles` response: every entry must name a trust domain and hold at least
/// one well-formed root certificate, and there must be at least one entry.
pub fn bundles_from_response(response: &X509BundlesResponse) -> Result<BundleSet, ResponseError> {
    if response.bundles.is_empty() {
        return Err(ResponseError::BadBundle {
            trust_domain: String::new(),
            reason: "the response carries no bundle".into(),
        });
    }
    let mut set = BundleSet::new();
    for (name, der) in &response.bundles {
        let td = TrustDomain::new(name).map_err(|e| ResponseError::BadBundle {
            trust_domain: name.clone(),
            reason: e.to_string(),
        })?;
        if set.get(&td).is_some() {
            return Err(ResponseError::BadBundle {
                trust_domain: name.clone(),
                reason: "named twice".into(),
            });
        }
        set.insert(bundle_from_der(td, der)?);
    }
    Ok(set)
}

fn bundle_from_der(td: TrustDomain, der: &[u8]) -> Result<TrustBundle, ResponseError> {
    let bad = |reason: String| ResponseError::BadBundle {
        trust_domain: td.to_string(),
        reason,
    };
    let roots = split_der_certificates(der).map_err(|e| bad(e.to_string()))?;
    TrustBundle::from_der(td.clone(), roots).map_err(|e| bad(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        assert!(matches!(
            split_der_certificates(&[0x30, 0x82, 0xff]),
            Err(ResponseError::MalformedCertificate(_))
        ));
        assert_eq!(split_der_certificates(&[]).unwrap(), Vec::new());
        assert!(matches!(
            parse_pem_chain(&["not pem"]),
            Err(ResponseError::MalformedCertificate(m)) if m.contains("no CERTIFICATE")
        ));
        assert!(matches!(
            parse_pem_chain(&["-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"]),
            Err(ResponseError::MalformedCertificate(_))
        ));
        assert!(matches!(
            parse_pem_chain(&["-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"]),
            Err(ResponseError::MalformedCertificate(m)) if m.contains("block")
        ));
    }
}
