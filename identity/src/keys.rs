//! Private keys and PKCS#10 CSRs for SVIDs, generated and used inside the AWS-LC FIPS module.

use std::fmt;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P384_SHA384_ASN1_SIGNING, EcdsaKeyPair, KeyPair as _,
};
use rcgen::{CertificateParams, DistinguishedName, SanType};
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::Error;
use crate::spiffe::SpiffeId;

/// The key algorithms fipstun generates for SVIDs and CAs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyAlgorithm {
    /// ECDSA on NIST P-256 with SHA-256 (the default; what Istio and SPIRE issue).
    #[default]
    EcdsaP256,
    /// ECDSA on NIST P-384 with SHA-384.
    EcdsaP384,
}

impl KeyAlgorithm {
    pub(crate) fn rcgen(self) -> &'static rcgen::SignatureAlgorithm {
        match self {
            Self::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            Self::EcdsaP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
        }
    }

    fn signing(self) -> &'static aws_lc_rs::signature::EcdsaSigningAlgorithm {
        match self {
            Self::EcdsaP256 => &ECDSA_P256_SHA256_ASN1_SIGNING,
            Self::EcdsaP384 => &ECDSA_P384_SHA384_ASN1_SIGNING,
        }
    }
}

/// A private key in PKCS#8 form. The bytes are zeroized on drop and never printed.
pub struct PrivateKey {
    algorithm: KeyAlgorithm,
    pkcs8: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateKey")
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl PrivateKey {
    /// Generate a fresh key inside the FIPS module.
    pub fn generate(algorithm: KeyAlgorithm) -> Result<Self, Error> {
        let doc = EcdsaKeyPair::generate_pkcs8(algorithm.signing(), &SystemRandom::new())
            .map_err(|_| Error::Key("key generation failed in the AWS-LC module".into()))?;
        Ok(Self {
            algorithm,
            pkcs8: Zeroizing::new(doc.as_ref().to_vec()),
        })
    }

    /// Load an ECDSA P-256 or P-384 key from PKCS#8 DER.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, Error> {
        for algorithm in [KeyAlgorithm::EcdsaP256, KeyAlgorithm::EcdsaP384] {
            if EcdsaKeyPair::from_pkcs8(algorithm.signing(), der).is_ok() {
                return Ok(Self {
                    algorithm,
                    pkcs8: Zeroizing::new(der.to_vec()),
                });
            }
        }
        Err(Error::Key(
            "not a PKCS#8 ECDSA P-256 or P-384 private key".into(),
        ))
    }

    /// Load a key from a PEM `PRIVATE KEY` (PKCS#8) block.
    pub fn from_pem(pem: &str) -> Result<Self, Error> {
        use rustls_pki_types::pem::PemObject;
        let der = PrivatePkcs8KeyDer::from_pem_slice(pem.as_bytes())
            .map_err(|e| Error::Pem(format!("private key: {e}")))?;
        Self::from_pkcs8_der(der.secret_pkcs8_der())
    }

    /// The key's algorithm.
    pub fn algorithm(&self) -> KeyAlgorithm {
        self.algorithm
    }

    /// The key as a PEM `PRIVATE KEY` block (zeroized when dropped).
    pub fn to_pem(&self) -> Zeroizing<String> {
        Zeroizing::new(pem_encode("PRIVATE KEY", &self.pkcs8))
    }

    /// The key for rustls (a copy the caller owns).
    pub fn to_rustls(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.pkcs8.to_vec()))
    }

    /// The public key, as the raw SEC1 point.
    pub fn public_key(&self) -> Result<Vec<u8>, Error> {
        let pair = EcdsaKeyPair::from_pkcs8(self.algorithm.signing(), &self.pkcs8)
            .map_err(|_| Error::Key("stored key no longer parses".into()))?;
        Ok(pair.public_key().as_ref().to_vec())
    }

    /// The key as rcgen's signing key (which signs through aws-lc-rs, i.e. the FIPS module).
    pub(crate) fn rcgen_key_pair(&self) -> Result<rcgen::KeyPair, Error> {
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(&self.pkcs8[..]));
        rcgen::KeyPair::from_der_and_sign_algo(&der, self.algorithm.rcgen())
            .map_err(|e| Error::Key(format!("rcgen refused the key: {e}")))
    }
}

/// Build a PKCS#10 CSR asking for `id`, signed by `key`.
///
/// The subject is empty and the SPIFFE ID is the single URI SAN, which is then marked critical
/// (RFC 5280 §4.2.1.6 requires it when the subject is empty).
///
/// An ID longer than [`MAX_ID_LEN`](crate::spiffe::MAX_ID_LEN) (2048 bytes) is refused with
/// [`CsrError::IdTooLong`](crate::ca::CsrError::IdTooLong): the SPIFFE-ID specification
/// (§2.3) lets implementations parse such IDs but not generate them.
pub fn csr_for(id: &SpiffeId, key: &PrivateKey) -> Result<Vec<u8>, Error> {
    crate::ca::check_generated_id_len(id)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    let uri = id
        .as_str()
        .try_into()
        .map_err(|e| Error::Encoding(format!("SPIFFE ID as IA5String: {e}")))?;
    params.subject_alt_names = vec![SanType::URI(uri)];
    let pair = key.rcgen_key_pair()?;
    let csr = params
        .serialize_request(&pair)
        .map_err(|e| Error::Encoding(format!("CSR: {e}")))?;
    Ok(csr.der().to_vec())
}

pub(crate) fn pem_encode(label: &str, der: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::with_capacity(der.len().div_ceil(3) * 4);
    for chunk in der.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                b64.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                b64.push('=');
            }
        }
    }
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_prints_key_bytes() {
        let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
        let shown = format!("{key:?}");
        assert_eq!(shown, "PrivateKey { algorithm: EcdsaP256, .. }");
    }

    #[test]
    fn pem_round_trip_keeps_algorithm() {
        for alg in [KeyAlgorithm::EcdsaP256, KeyAlgorithm::EcdsaP384] {
            let key = PrivateKey::generate(alg).unwrap();
            let back = PrivateKey::from_pem(&key.to_pem()).unwrap();
            assert_eq!(back.algorithm(), alg);
            assert_eq!(back.public_key().unwrap(), key.public_key().unwrap());
        }
    }

    #[test]
    fn pem_encoding_matches_rfc4648_padding() {
        assert!(pem_encode("X", b"f").contains("\nZg==\n"));
        assert!(pem_encode("X", b"fo").contains("\nZm8=\n"));
        assert!(pem_encode("X", b"foo").contains("\nZm9v\n"));
    }

    #[test]
    fn garbage_is_not_a_key() {
        assert!(matches!(
            PrivateKey::from_pkcs8_der(b"nope"),
            Err(Error::Key(_))
        ));
    }
}
