//! The embedded CA: signs X.509-SVIDs from CSRs, for the identity the caller was authenticated
//! as, with every signature made inside the AWS-LC FIPS module.

use std::fmt;
use std::time::{Duration, SystemTime};

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA384_ASN1, ECDSA_P384_SHA256_ASN1, ECDSA_P384_SHA384_ASN1,
    UnparsedPublicKey,
};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_SIG_ECDSA_WITH_SHA256,
    OID_SIG_ECDSA_WITH_SHA384,
};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::Error;
use crate::bundle::TrustBundle;
use crate::keys::{KeyAlgorithm, PrivateKey, csr_for};
use crate::spiffe::{MAX_ID_LEN, SpiffeId, TrustDomain};
use crate::svid::Svid;

/// Refuses an ID fipstun must not generate: longer than [`MAX_ID_LEN`] (SPIFFE-ID §2.3).
pub(crate) fn check_generated_id_len(id: &SpiffeId) -> Result<(), CsrError> {
    let len = id.as_str().len();
    if len > MAX_ID_LEN {
        return Err(CsrError::IdTooLong {
            len,
            max: MAX_ID_LEN,
        });
    }
    Ok(())
}

/// Why the CA refused a CSR.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CsrError {
    /// The bytes are not a PKCS#10 request.
    #[error("malformed CSR: {0}")]
    Malformed(String),
    /// The request's self-signature does not verify with its own public key.
    #[error("the CSR's signature does not verify")]
    BadSignature,
    /// The key or signature algorithm is not one the CA accepts (ECDSA P-256/P-384).
    #[error("unsupported CSR key or signature algorithm: {0}")]
    UnsupportedAlgorithm(String),
    /// The request does not carry exactly one URI SAN that is a SPIFFE ID.
    #[error("the CSR must carry exactly one SPIFFE ID as URI SAN: {0}")]
    BadSan(String),
    /// The request asks for an identity other than the one the caller was authenticated as.
    #[error("the CSR asks for {requested} but the caller is authenticated as {caller}")]
    IdentityMismatch {
        /// The ID in the CSR.
        requested: SpiffeId,
        /// The ID the caller proved.
        caller: SpiffeId,
    },
    /// The ID to be put into the CSR or certificate is longer than the SPIFFE-ID
    /// specification lets an implementation generate ([`MAX_ID_LEN`], 2048 bytes). Such an ID
    /// still parses (up to [`crate::spiffe::MAX_PARSED_ID_LEN`]); fipstun only refuses to issue
    /// or request an SVID for it.
    #[error("the SPIFFE ID is {len} bytes long; SVIDs are issued for IDs of at most {max} bytes")]
    IdTooLong {
        /// The ID's length in bytes.
        len: usize,
        /// The longest ID fipstun generates ([`MAX_ID_LEN`]).
        max: usize,
    },
    /// The caller's identity is not in this CA's trust domain.
    #[error("{caller} is not in this CA's trust domain {ca}")]
    ForeignTrustDomain {
        /// The ID the caller proved.
        caller: SpiffeId,
        /// The CA's trust domain.
        ca: TrustDomain,
    },
}

/// TTL bounds and clock allowances for issued SVIDs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IssuerConfig {
    /// The shortest TTL the CA issues; shorter requests are raised to it.
    pub min_ttl: Duration,
    /// The longest TTL the CA issues; longer requests are cut to it (and never past the CA's
    /// own notAfter).
    pub max_ttl: Duration,
    /// The TTL when the caller does not ask for one.
    pub default_ttl: Duration,
    /// How far notBefore is set in the past, to tolerate clock skew between peers.
    pub backdate: Duration,
}

impl Default for IssuerConfig {
    fn default() -> Self {
        Self {
            min_ttl: Duration::from_secs(60),
            max_ttl: Duration::from_secs(24 * 3600),
            default_ttl: Duration::from_secs(3600),
            backdate: Duration::from_secs(30),
        }
    }
}

impl IssuerConfig {
    /// The TTL actually issued for a request of `ttl`.
    pub fn clamp(&self, ttl: Option<Duration>) -> Duration {
        ttl.unwrap_or(self.default_ttl)
            .clamp(self.min_ttl, self.max_ttl.max(self.min_ttl))
    }
}

/// The embedded CA for one trust domain.
///
/// ```
/// use fipstun_identity::ca::{IssuerConfig, SvidIssuer};
/// use fipstun_identity::keys::{KeyAlgorithm, PrivateKey, csr_for};
/// use fipstun_identity::spiffe::{SpiffeId, TrustDomain};
/// use std::time::Duration;
///
/// let td = TrustDomain::new("example.org")?;
/// let ca = SvidIssuer::generate_root(td, KeyAlgorithm::EcdsaP256, Duration::from_secs(86400 * 365), IssuerConfig::default())?;
/// let me = SpiffeId::parse("spiffe://example.org/ns/default/sa/web")?;
/// let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256)?;
/// // The caller was authenticated as `me` (by the transport the CSR came over).
/// let chain = ca.sign_csr(&csr_for(&me, &key)?, &me, Some(Duration::from_secs(600)))?;
/// assert_eq!(chain.len(), 1); // leaf only: the root is in the bundle
/// # Ok::<(), fipstun_identity::Error>(())
/// ```
pub struct SvidIssuer {
    trust_domain: TrustDomain,
    issuer: Issuer<'static, rcgen::KeyPair>,
    key: PrivateKey,
    ca_cert: CertificateDer<'static>,
    ca_not_after: i64,
    /// Certificates sent after the leaf: the signing cert and intermediates, never the root.
    chain_tail: Vec<CertificateDer<'static>>,
    bundle: TrustBundle,
    config: IssuerConfig,
    rng: SystemRandom,
}

impl fmt::Debug for SvidIssuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SvidIssuer")
            .field("trust_domain", &self.trust_domain)
            .field("key", &self.key)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl SvidIssuer {
    /// A new self-signed root CA for `trust_domain`, valid for `validity` from now.
    pub fn generate_root(
        trust_domain: TrustDomain,
        algorithm: KeyAlgorithm,
        validity: Duration,
        config: IssuerConfig,
    ) -> Result<Self, Error> {
        Self::generate_root_at(trust_domain, algorithm, validity, config, SystemTime::now())
    }

    /// [`SvidIssuer::generate_root`] with an explicit clock.
    pub fn generate_root_at(
        trust_domain: TrustDomain,
        algorithm: KeyAlgorithm,
        validity: Duration,
        config: IssuerConfig,
        now: SystemTime,
    ) -> Result<Self, Error> {
        let key = PrivateKey::generate(algorithm)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, trust_domain.as_str());
        dn.push(DnType::CommonName, "fipstun root CA");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let td_uri = trust_domain
            .id()
            .as_str()
            .try_into()
            .map_err(|e| Error::Encoding(format!("trust domain URI: {e}")))?;
        params.subject_alt_names = vec![SanType::URI(td_uri)];
        params.serial_number = Some(random_serial(&SystemRandom::new())?);
        params.not_before = (now - config.backdate).into();
        params.not_after = (now + validity).into();
        let pair = key.rcgen_key_pair()?;
        let cert = params
            .self_signed(&pair)
            .map_err(|e| Error::Encoding(format!("root CA: {e}")))?;
        let ca_cert = cert.der().clone();
        let bundle = TrustBundle::from_der(trust_domain.clone(), [ca_cert.clone()])?;
        Ok(Self {
            ca_not_after: params.not_after.unix_timestamp(),
            issuer: Issuer::new(params, pair),
            trust_domain,
            key,
            ca_cert,
            chain_tail: Vec::new(),
            bundle,
            config,
            rng: SystemRandom::new(),
        })
    }

    /// A CA from existing PEM: `chain_pem` holds the signing certificate first, then any
    /// intermediates, and last the self-signed root of the trust domain (which may be the
    /// signing certificate itself); `key_pem` is the signing key (PKCS#8).
    pub fn from_pem(
        trust_domain: TrustDomain,
        chain_pem: &str,
        key_pem: &str,
        config: IssuerConfig,
    ) -> Result<Self, Error> {
        let certs = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Error::Pem(format!("CA certificates: {e}")))?;
        let (ca_cert, root) = match certs.as_slice() {
            [] => return Err(Error::Pem("no CERTIFICATE block in the CA chain".into())),
            [first, .., last] => (first.clone(), last.clone()),
            [only] => (only.clone(), only.clone()),
        };
        let (_, parsed_root) = X509Certificate::from_der(&root)
            .map_err(|e| Error::Pem(format!("CA root does not parse: {e}")))?;
        if parsed_root.subject() != parsed_root.issuer() {
            return Err(Error::Pem(
                "the last certificate of the CA chain must be the self-signed root".into(),
            ));
        }
        let (_, parsed_ca) = X509Certificate::from_der(&ca_cert)
            .map_err(|e| Error::Pem(format!("CA certificate does not parse: {e}")))?;
        if !parsed_ca.is_ca() {
            return Err(Error::Pem("the signing certificate is not a CA".into()));
        }
        if let Some(named) = named_trust_domain(&parsed_ca)
            && named != trust_domain
        {
            return Err(Error::Pem(format!(
                "the CA certificate is for trust domain {named}, not {trust_domain}"
            )));
        }
        let ca_not_after = parsed_ca.validity().not_after.timestamp();
        let key = PrivateKey::from_pem(key_pem)?;
        let pair = key.rcgen_key_pair()?;
        let issuer = Issuer::from_ca_cert_der(&ca_cert, pair)
            .map_err(|e| Error::Pem(format!("CA certificate: {e}")))?;
        let chain_tail = certs[..certs.len() - 1].to_vec();
        let bundle = TrustBundle::from_der(trust_domain.clone(), [root])?;
        Ok(Self {
            trust_domain,
            issuer,
            key,
            ca_cert,
            ca_not_after,
            chain_tail,
            bundle,
            config,
            rng: SystemRandom::new(),
        })
    }

    /// The trust domain a CA chain (PEM, signing certificate first) names in its URI SAN
    /// (`spiffe://<td>`), as [`SvidIssuer::generate_root`] writes it. `None` if the signing
    /// certificate names none; external CAs often do not, and then the caller must know.
    pub fn trust_domain_of_pem(chain_pem: &str) -> Result<Option<TrustDomain>, Error> {
        let first = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
            .next()
            .ok_or_else(|| Error::Pem("no CERTIFICATE block in the CA chain".into()))?
            .map_err(|e| Error::Pem(format!("CA certificates: {e}")))?;
        let (_, cert) = X509Certificate::from_der(&first)
            .map_err(|e| Error::Pem(format!("CA certificate does not parse: {e}")))?;
        Ok(named_trust_domain(&cert))
    }

    /// The trust domain this CA issues for.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The trust bundle peers need to validate this CA's SVIDs.
    pub fn bundle(&self) -> &TrustBundle {
        &self.bundle
    }

    /// The CA's own (signing) certificate.
    pub fn ca_cert(&self) -> &CertificateDer<'static> {
        &self.ca_cert
    }

    /// The signing certificate as PEM, then intermediates, then the root (the `from_pem` input).
    pub fn ca_chain_pem(&self) -> String {
        let mut out: String = std::iter::once(&self.ca_cert)
            .chain(self.chain_tail.iter().skip(1))
            .map(|c| crate::keys::pem_encode("CERTIFICATE", c))
            .collect();
        if !self.chain_tail.is_empty() {
            out.push_str(&self.bundle.to_pem());
        }
        out
    }

    /// The signing key as PEM (zeroized on drop). Handle with care.
    pub fn ca_key_pem(&self) -> zeroize::Zeroizing<String> {
        self.key.to_pem()
    }

    /// The issuance limits.
    pub fn config(&self) -> &IssuerConfig {
        &self.config
    }

    /// Sign `csr_der` for `caller`, the identity the caller was authenticated as. Returns the
    /// chain to present: the new leaf, then the CA's chain without the root.
    ///
    /// An ID longer than [`MAX_ID_LEN`] (2048 bytes) is refused with [`CsrError::IdTooLong`]:
    /// the SPIFFE-ID specification lets implementations parse such IDs but not generate them.
    pub fn sign_csr(
        &self,
        csr_der: &[u8],
        caller: &SpiffeId,
        ttl: Option<Duration>,
    ) -> Result<Vec<CertificateDer<'static>>, Error> {
        self.sign_csr_at(csr_der, caller, ttl, SystemTime::now())
    }

    /// [`SvidIssuer::sign_csr`] with an explicit clock.
    pub fn sign_csr_at(
        &self,
        csr_der: &[u8],
        caller: &SpiffeId,
        ttl: Option<Duration>,
        now: SystemTime,
    ) -> Result<Vec<CertificateDer<'static>>, Error> {
        if !caller.is_member_of(&self.trust_domain) {
            return Err(CsrError::ForeignTrustDomain {
                caller: caller.clone(),
                ca: self.trust_domain.clone(),
            }
            .into());
        }
        check_generated_id_len(caller)?;
        let csr = VerifiedCsr::parse(csr_der)?;
        if &csr.requested != caller {
            return Err(CsrError::IdentityMismatch {
                requested: csr.requested,
                caller: caller.clone(),
            }
            .into());
        }

        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        let uri = caller
            .as_str()
            .try_into()
            .map_err(|e| Error::Encoding(format!("SPIFFE ID as IA5String: {e}")))?;
        params.subject_alt_names = vec![SanType::URI(uri)];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial(&self.rng)?);
        let not_before = time::OffsetDateTime::from(now - self.config.backdate);
        let mut not_after = time::OffsetDateTime::from(now + self.config.clamp(ttl));
        if not_after.unix_timestamp() > self.ca_not_after {
            not_after = time::OffsetDateTime::from_unix_timestamp(self.ca_not_after)
                .map_err(|e| Error::Encoding(format!("CA notAfter: {e}")))?;
        }
        params.not_before = not_before;
        params.not_after = not_after;
        let leaf = params
            .signed_by(&csr.public_key, &self.issuer)
            .map_err(|e| Error::Encoding(format!("SVID: {e}")))?;
        let mut chain = Vec::with_capacity(1 + self.chain_tail.len());
        chain.push(leaf.der().clone());
        chain.extend(self.chain_tail.iter().cloned());
        Ok(chain)
    }

    /// Generate a key and CSR for `id` and sign it: the in-process path for a workload whose
    /// identity the caller has already established. IDs longer than [`MAX_ID_LEN`] are refused
    /// with [`CsrError::IdTooLong`] before a key is generated.
    pub fn issue(
        &self,
        id: &SpiffeId,
        algorithm: KeyAlgorithm,
        ttl: Option<Duration>,
    ) -> Result<Svid, Error> {
        self.issue_at(id, algorithm, ttl, SystemTime::now())
    }

    /// [`SvidIssuer::issue`] with an explicit clock.
    pub fn issue_at(
        &self,
        id: &SpiffeId,
        algorithm: KeyAlgorithm,
        ttl: Option<Duration>,
        now: SystemTime,
    ) -> Result<Svid, Error> {
        check_generated_id_len(id)?;
        let key = PrivateKey::generate(algorithm)?;
        let csr = csr_for(id, &key)?;
        let chain = self.sign_csr_at(&csr, id, ttl, now)?;
        Ok(Svid::new(chain, key)?)
    }
}

/// The trust domain a CA certificate names as `spiffe://<td>` URI SAN, if any.
fn named_trust_domain(cert: &X509Certificate<'_>) -> Option<TrustDomain> {
    let san = cert.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|n| match n {
        GeneralName::URI(u) => TrustDomain::new(u).ok(),
        _ => None,
    })
}

fn random_serial(rng: &SystemRandom) -> Result<SerialNumber, Error> {
    let mut bytes = [0u8; 16];
    rng.fill(&mut bytes)
        .map_err(|_| Error::Key("the module's DRBG failed".into()))?;
    // Positive and without a leading zero octet: 127 random bits (RFC 5280 §4.1.2.2).
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

/// A CSR whose self-signature verified: the requested ID and the public key, nothing else.
struct VerifiedCsr {
    requested: SpiffeId,
    public_key: CsrPublicKey,
}

/// The subject public key of a CSR, in the form rcgen writes into the certificate.
struct CsrPublicKey {
    point: Vec<u8>,
    algorithm: &'static rcgen::SignatureAlgorithm,
}

impl rcgen::PublicKeyData for CsrPublicKey {
    fn der_bytes(&self) -> &[u8] {
        &self.point
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        self.algorithm
    }
}

impl VerifiedCsr {
    fn parse(der: &[u8]) -> Result<Self, CsrError> {
        let (rest, csr) = X509CertificationRequest::from_der(der)
            .map_err(|e| CsrError::Malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(CsrError::Malformed(format!(
                "{} trailing bytes after the CSR",
                rest.len()
            )));
        }
        let info = &csr.certification_request_info;
        let spki = &info.subject_pki;
        if spki.algorithm.algorithm != OID_KEY_TYPE_EC_PUBLIC_KEY {
            return Err(CsrError::UnsupportedAlgorithm(format!(
                "key type {}",
                spki.algorithm.algorithm
            )));
        }
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok())
            .ok_or_else(|| CsrError::Malformed("EC key without a named curve".into()))?;
        let sig_oid = &csr.signature_algorithm.algorithm;
        let (verify_alg, key_alg): (&'static dyn aws_lc_rs::signature::VerificationAlgorithm, _) =
            if curve == OID_EC_P256 && *sig_oid == OID_SIG_ECDSA_WITH_SHA256 {
                (&ECDSA_P256_SHA256_ASN1, KeyAlgorithm::EcdsaP256)
            } else if curve == OID_EC_P256 && *sig_oid == OID_SIG_ECDSA_WITH_SHA384 {
                (&ECDSA_P256_SHA384_ASN1, KeyAlgorithm::EcdsaP256)
            } else if curve == OID_NIST_EC_P384 && *sig_oid == OID_SIG_ECDSA_WITH_SHA384 {
                (&ECDSA_P384_SHA384_ASN1, KeyAlgorithm::EcdsaP384)
            } else if curve == OID_NIST_EC_P384 && *sig_oid == OID_SIG_ECDSA_WITH_SHA256 {
                (&ECDSA_P384_SHA256_ASN1, KeyAlgorithm::EcdsaP384)
            } else {
                return Err(CsrError::UnsupportedAlgorithm(format!(
                    "curve {curve} with signature {sig_oid}"
                )));
            };
        let point = spki.subject_public_key.data.to_vec();
        UnparsedPublicKey::new(verify_alg, &point)
            .verify(info.raw, &csr.signature_value.data)
            .map_err(|_| CsrError::BadSignature)?;

        let mut uris = Vec::new();
        for ext in csr.requested_extensions().into_iter().flatten() {
            if let ParsedExtension::SubjectAlternativeName(san) = ext {
                for name in &san.general_names {
                    if let GeneralName::URI(u) = name {
                        uris.push(*u);
                    }
                }
            }
        }
        let requested = match uris.as_slice() {
            [one] => SpiffeId::parse(one).map_err(|e| CsrError::BadSan(e.to_string()))?,
            [] => return Err(CsrError::BadSan("no URI SAN".into())),
            many => return Err(CsrError::BadSan(format!("{} URI SANs", many.len()))),
        };
        Ok(Self {
            requested,
            public_key: CsrPublicKey {
                point,
                algorithm: key_alg.rcgen(),
            },
        })
    }
}
