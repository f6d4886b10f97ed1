//! The FIPS crypto policy: which TLS algorithms fipstun may negotiate, and config builders that
//! refuse to hand out a rustls config that is not FIPS.
//!
//! Everything here is derived from rustls' FIPS provider on aws-lc-rs built with `fips` (the
//! AWS-LC FIPS module). We never touch rustls' process-default provider: every config is built
//! with [`rustls::ClientConfig::builder_with_provider`] / its server twin and an explicit
//! [`CryptoProvider`].

use std::fmt;
use std::sync::Arc;

use rustls::client::ResolvesClientCert;
use rustls::client::danger::ServerCertVerifier;
use rustls::crypto::aws_lc_rs::{cipher_suite, kx_group};
use rustls::crypto::{CryptoProvider, SupportedKxGroup, WebPkiSupportedAlgorithms};
use rustls::server::ResolvesServerCert;
use rustls::server::danger::ClientCertVerifier;
use rustls::{
    CipherSuite, ClientConfig, NamedGroup, ProtocolVersion, ServerConfig, SignatureScheme,
    SupportedCipherSuite, SupportedProtocolVersion,
};
use serde::Serialize;
use webpki::aws_lc_rs as webpki_algs;

/// The AWS-LC FIPS module this build links, as named on its CMVP certificate.
///
/// Changing the module line (for example to AWS-LC FIPS 4.x once it is certified) means changing
/// the `aws-lc-rs` pin in the workspace `Cargo.toml` and these constants together.
pub const MODULE: ModuleInfo = ModuleInfo {
    name: "AWS-LC Cryptographic Module (static)",
    line: "AWS-LC FIPS 3.x (aws-lc-fips-sys 0.13)",
    standard: "FIPS 140-3",
    certificate: "CMVP #5314 (static build); #5298 is the dynamic build",
    coverage: "The certificate covers the cryptographic algorithms implemented inside the AWS-LC \
               module boundary (AES-GCM, SHA-2, HMAC, HKDF/TLS KDFs, ECDH and ECDSA on P-256/P-384, \
               RSA, the DRBG) on the operational environments listed in its security policy. It \
               does not cover TLS protocol logic (rustls), HTTP/2, X.509 parsing, SPIFFE checks, \
               or the WireGuard backend. fipstun does not check that this machine is one of the \
               tested operational environments, nor that the linked version is one the \
               certificate lists: compare both with the certificate before relying on it.",
};

/// Static facts about the linked cryptographic module.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ModuleInfo {
    /// The module name on its certificate.
    pub name: &'static str,
    /// The module release line and the crate that builds it.
    pub line: &'static str,
    /// The standard it is validated against.
    pub standard: &'static str,
    /// The CMVP certificate(s).
    pub certificate: &'static str,
    /// What the certificate covers and, just as important, what it does not.
    pub coverage: &'static str,
}

/// Errors from building or checking a configuration under the FIPS policy.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum PolicyError {
    /// The AWS-LC module is not operating in FIPS mode.
    #[error("the AWS-LC module is not in FIPS mode: {0}")]
    ModuleNotInFipsMode(&'static str),
    /// A built config does not report `fips() == true`.
    #[error("the {side} config does not report fips() == true ({reason})")]
    NotFips {
        /// `"client"` or `"server"`.
        side: &'static str,
        /// The first reason found.
        reason: &'static str,
    },
    /// rustls refused the protocol versions for the provider.
    #[error("rustls refused the policy's protocol versions: {0}")]
    Rustls(String),
}

/// Which TLS algorithms the FIPS backend may negotiate.
///
/// The default is the strict policy: TLS 1.3 only, `TLS13_AES_256_GCM_SHA384` and
/// `TLS13_AES_128_GCM_SHA256`, key exchange on secp256r1 and secp384r1, signatures ECDSA
/// P-256/P-384 and RSA (PSS or PKCS#1, 2048 to 8192 bits). X25519 and ChaCha20-Poly1305 are never
/// offered or accepted.
///
/// ```
/// use fipstun_identity::policy::CryptoPolicy;
///
/// let strict = CryptoPolicy::default();
/// assert!(strict.provider().fips());
/// // Opt-ins, for peers that need them:
/// let legacy = CryptoPolicy::default().with_tls12(true).with_hybrid_kex(true);
/// assert!(legacy.provider().fips());
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CryptoPolicy {
    tls12: bool,
    hybrid_kex: bool,
    aes128_first: bool,
}

// TLS 1.3 suites, preferred first.
static TLS13_SUITES: &[SupportedCipherSuite] = &[
    cipher_suite::TLS13_AES_256_GCM_SHA384,
    cipher_suite::TLS13_AES_128_GCM_SHA256,
];

// TLS 1.2 suites, only with `with_tls12(true)`: ECDHE with AES-GCM, never CBC or ChaCha20.
static TLS12_SUITES: &[SupportedCipherSuite] = &[
    cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    cipher_suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    cipher_suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
];

static TLS13_ONLY: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13];
static TLS13_AND_TLS12: &[&SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// Signature algorithms we verify: ECDSA on P-256/P-384 with SHA-256/SHA-384, RSA-PSS and
/// RSA PKCS#1 v1.5 with 2048..=8192-bit keys. No Ed25519, no P-521, no SHA-1.
pub(crate) static SIGNATURE_VERIFICATION: WebPkiSupportedAlgorithms = WebPkiSupportedAlgorithms {
    all: &[
        webpki_algs::ECDSA_P256_SHA256,
        webpki_algs::ECDSA_P256_SHA384,
        webpki_algs::ECDSA_P384_SHA256,
        webpki_algs::ECDSA_P384_SHA384,
        webpki_algs::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
        webpki_algs::RSA_PSS_2048_8192_SHA384_LEGACY_KEY,
        webpki_algs::RSA_PSS_2048_8192_SHA512_LEGACY_KEY,
        webpki_algs::RSA_PKCS1_2048_8192_SHA256,
        webpki_algs::RSA_PKCS1_2048_8192_SHA384,
        webpki_algs::RSA_PKCS1_2048_8192_SHA512,
    ],
    // In TLS 1.3 rustls additionally pins the curve to the scheme; for TLS 1.2 and for
    // certificate signatures any listed curve may appear with the hash.
    mapping: &[
        (
            SignatureScheme::ECDSA_NISTP384_SHA384,
            &[
                webpki_algs::ECDSA_P384_SHA384,
                webpki_algs::ECDSA_P256_SHA384,
            ],
        ),
        (
            SignatureScheme::ECDSA_NISTP256_SHA256,
            &[
                webpki_algs::ECDSA_P256_SHA256,
                webpki_algs::ECDSA_P384_SHA256,
            ],
        ),
        (
            SignatureScheme::RSA_PSS_SHA512,
            &[webpki_algs::RSA_PSS_2048_8192_SHA512_LEGACY_KEY],
        ),
        (
            SignatureScheme::RSA_PSS_SHA384,
            &[webpki_algs::RSA_PSS_2048_8192_SHA384_LEGACY_KEY],
        ),
        (
            SignatureScheme::RSA_PSS_SHA256,
            &[webpki_algs::RSA_PSS_2048_8192_SHA256_LEGACY_KEY],
        ),
        (
            SignatureScheme::RSA_PKCS1_SHA512,
            &[webpki_algs::RSA_PKCS1_2048_8192_SHA512],
        ),
        (
            SignatureScheme::RSA_PKCS1_SHA384,
            &[webpki_algs::RSA_PKCS1_2048_8192_SHA384],
        ),
        (
            SignatureScheme::RSA_PKCS1_SHA256,
            &[webpki_algs::RSA_PKCS1_2048_8192_SHA256],
        ),
    ],
};

impl CryptoPolicy {
    /// The strict default: TLS 1.3, AES-GCM, P-256/P-384. Same as [`CryptoPolicy::default`].
    pub const fn strict() -> Self {
        Self {
            tls12: false,
            hybrid_kex: false,
            aes128_first: false,
        }
    }

    /// Also allow TLS 1.2 with ECDHE-{ECDSA,RSA}-AES-GCM suites. Extended master secret
    /// (RFC 7627) stays required, so peers without it are refused.
    pub const fn with_tls12(mut self, on: bool) -> Self {
        self.tls12 = on;
        self
    }

    /// Also offer the post-quantum hybrid `SECP256R1MLKEM768` (preferred first when on).
    ///
    /// Only its P-256 half is an approved algorithm in the 3.x module (ML-KEM is not validated
    /// there); rustls counts a hybrid as FIPS by its first component, and so do we. Off by
    /// default.
    pub const fn with_hybrid_kex(mut self, on: bool) -> Self {
        self.hybrid_kex = on;
        self
    }

    /// Prefer AES-128-GCM over AES-256-GCM (both stay allowed). AES-256 is preferred by
    /// default; AES-128 costs fewer rounds per block, which a bulk path may want. In TLS 1.3
    /// the server follows the client's order (rustls' default), so the client's policy decides.
    pub const fn with_aes128_first(mut self, on: bool) -> Self {
        self.aes128_first = on;
        self
    }

    /// Whether AES-128-GCM is preferred over AES-256-GCM.
    pub const fn aes128_first(&self) -> bool {
        self.aes128_first
    }

    /// Whether TLS 1.2 is allowed.
    pub const fn tls12(&self) -> bool {
        self.tls12
    }

    /// Whether the post-quantum hybrid group is offered.
    pub const fn hybrid_kex(&self) -> bool {
        self.hybrid_kex
    }

    /// The rustls provider for this policy: rustls' FIPS aws-lc-rs provider restricted to the
    /// policy's suites, groups and signature algorithms.
    pub fn provider(&self) -> Arc<CryptoProvider> {
        let base = rustls::crypto::default_fips_provider();
        let mut suites = TLS13_SUITES.to_vec();
        if self.tls12 {
            suites.extend_from_slice(TLS12_SUITES);
        }
        if self.aes128_first {
            // Stable: within each version and signature family, AES-128 moves ahead.
            suites.sort_by_key(|s| {
                (
                    s.version().version != rustls::ProtocolVersion::TLSv1_3,
                    !name_of_suite(s.suite()).contains("AES_128"),
                )
            });
        }
        let mut groups: Vec<&'static dyn SupportedKxGroup> = Vec::with_capacity(3);
        if self.hybrid_kex {
            groups.push(kx_group::SECP256R1MLKEM768);
        }
        groups.push(kx_group::SECP256R1);
        groups.push(kx_group::SECP384R1);
        Arc::new(CryptoProvider {
            cipher_suites: suites,
            kx_groups: groups,
            signature_verification_algorithms: SIGNATURE_VERIFICATION,
            secure_random: base.secure_random,
            key_provider: base.key_provider,
        })
    }

    /// The protocol versions this policy enables, newest first.
    pub fn protocol_versions(&self) -> &'static [&'static SupportedProtocolVersion] {
        if self.tls12 {
            TLS13_AND_TLS12
        } else {
            TLS13_ONLY
        }
    }

    /// Build a server config that requires and verifies client certificates with `verifier`
    /// and presents the certificate `resolver` gives. Fails unless the result is FIPS.
    /// Session resumption is off, so every handshake runs `verifier` against the current
    /// trust bundles and authorization.
    pub fn server_config(
        &self,
        verifier: Arc<dyn ClientCertVerifier>,
        resolver: Arc<dyn ResolvesServerCert>,
    ) -> Result<ServerConfig, PolicyError> {
        module_fips_mode()?;
        let mut config = ServerConfig::builder_with_provider(self.provider())
            .with_protocol_versions(self.protocol_versions())
            .map_err(|e| PolicyError::Rustls(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(resolver);
        config.require_ems = true;
        // No resumption: a resumed session skips the client-certificate verifier, so a peer
        // whose bundle or authorization was withdrawn could come back without a check.
        config.send_tls13_tickets = 0;
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        check_server(&config)?;
        Ok(config)
    }

    /// Build a client config that verifies the server with `verifier` and authenticates with
    /// the certificate `resolver` gives. Fails unless the result is FIPS.
    pub fn client_config(
        &self,
        verifier: Arc<dyn ServerCertVerifier>,
        resolver: Arc<dyn ResolvesClientCert>,
    ) -> Result<ClientConfig, PolicyError> {
        module_fips_mode()?;
        let mut config = ClientConfig::builder_with_provider(self.provider())
            .with_protocol_versions(self.protocol_versions())
            .map_err(|e| PolicyError::Rustls(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_cert_resolver(resolver);
        config.require_ems = true;
        // Every handshake verifies the peer against the current bundles: no resumption.
        config.resumption = rustls::client::Resumption::disabled();
        check_client(&config)?;
        Ok(config)
    }

    /// What this policy lets a handshake negotiate, as IANA names.
    pub fn negotiable(&self) -> Negotiable {
        let provider = self.provider();
        Negotiable {
            protocol_versions: self
                .protocol_versions()
                .iter()
                .map(|v| name_of_version(v.version))
                .collect(),
            cipher_suites: provider
                .cipher_suites
                .iter()
                .map(|s| name_of_suite(s.suite()))
                .collect(),
            kx_groups: provider
                .kx_groups
                .iter()
                .map(|g| name_of_group(g.name()))
                .collect(),
            signature_schemes: provider
                .signature_verification_algorithms
                .supported_schemes()
                .into_iter()
                .map(name_of_scheme)
                .collect(),
        }
    }
}

/// Check a server config someone else built or changed: it must report `fips()`.
pub fn check_server(config: &ServerConfig) -> Result<(), PolicyError> {
    if config.fips() {
        return Ok(());
    }
    Err(PolicyError::NotFips {
        side: "server",
        reason: not_fips_reason(config.crypto_provider(), config.require_ems),
    })
}

/// Check a client config someone else built or changed: it must report `fips()`.
pub fn check_client(config: &ClientConfig) -> Result<(), PolicyError> {
    if config.fips() {
        return Ok(());
    }
    Err(PolicyError::NotFips {
        side: "client",
        reason: not_fips_reason(config.crypto_provider(), config.require_ems),
    })
}

fn not_fips_reason(provider: &CryptoProvider, require_ems: bool) -> &'static str {
    if aws_lc_rs::try_fips_mode().is_err() {
        "the module is not in FIPS mode"
    } else if !provider.cipher_suites.iter().all(|s| s.fips()) {
        "a cipher suite is not FIPS-approved"
    } else if !provider.kx_groups.iter().all(|g| g.fips()) {
        "a key-exchange group is not FIPS-approved"
    } else if !provider.signature_verification_algorithms.fips() {
        "a signature verification algorithm is not FIPS-approved"
    } else if !provider.secure_random.fips() || !provider.key_provider.fips() {
        "the RNG or key provider is not FIPS"
    } else if !require_ems {
        "extended master secret is not required"
    } else {
        "rustls reported it without a reason we know"
    }
}

fn module_fips_mode() -> Result<(), PolicyError> {
    aws_lc_rs::try_fips_mode().map_err(PolicyError::ModuleNotInFipsMode)
}

/// The algorithms a policy can negotiate, by IANA name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Negotiable {
    /// e.g. `TLSv1_3`.
    pub protocol_versions: Vec<String>,
    /// e.g. `TLS13_AES_256_GCM_SHA384`.
    pub cipher_suites: Vec<String>,
    /// e.g. `secp256r1`.
    pub kx_groups: Vec<String>,
    /// e.g. `ECDSA_NISTP256_SHA256`.
    pub signature_schemes: Vec<String>,
}

/// The answer to "is this process doing its TLS crypto in a FIPS module, and which one?".
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FipsStatus {
    /// The linked module, as certified.
    pub module: ModuleInfo,
    /// The version string the linked library reports at run time.
    pub linked_version: String,
    /// The FIPS branch major version compiled in, if the build is from a FIPS branch.
    pub fips_branch: Option<u32>,
    /// Whether the module reports FIPS mode (`FIPS_mode() == 1`).
    pub fips_mode_active: bool,
    /// Why FIPS mode is off, if it is.
    pub fips_mode_error: Option<String>,
    /// The module's power-on self tests and fipstun's own known-answer checks.
    pub self_test: SelfTest,
    /// What the default (strict) policy negotiates.
    pub strict: Negotiable,
    /// What the policy with every opt-in (TLS 1.2, hybrid key exchange) negotiates.
    pub with_opt_ins: Negotiable,
    /// Whether the strict policy's provider reports `fips()`.
    pub provider_fips: bool,
}

/// Self-test results.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SelfTest {
    /// AWS-LC runs its power-on self tests inside the module before first use and aborts the
    /// process if one fails; a running process has therefore passed them.
    pub module_power_on: &'static str,
    /// fipstun's own known-answer checks through the module (SHA-256, HMAC-SHA-256,
    /// AES-128-GCM): `None` when all passed, otherwise the first failure.
    pub known_answer_failure: Option<String>,
}

impl FipsStatus {
    /// True when everything the status reports is as it must be for the FIPS backend.
    pub fn ok(&self) -> bool {
        self.fips_mode_active && self.provider_fips && self.self_test.known_answer_failure.is_none()
    }
}

/// Report on the linked module and the policy. Runs the known-answer checks.
pub fn fips_status() -> FipsStatus {
    let mode = aws_lc_rs::try_fips_mode();
    FipsStatus {
        module: MODULE,
        linked_version: aws_lc_rs::awslc_version().to_string(),
        fips_branch: aws_lc_rs::fips_version(),
        fips_mode_active: mode.is_ok(),
        fips_mode_error: mode.err().map(str::to_string),
        self_test: SelfTest {
            module_power_on: "passed (AWS-LC aborts the process on a power-on self-test failure)",
            known_answer_failure: known_answer_checks().err(),
        },
        strict: CryptoPolicy::strict().negotiable(),
        with_opt_ins: CryptoPolicy::strict()
            .with_tls12(true)
            .with_hybrid_kex(true)
            .negotiable(),
        provider_fips: CryptoPolicy::strict().provider().fips(),
    }
}

/// Known-answer checks: published test vectors computed through the module.
fn known_answer_checks() -> Result<(), String> {
    use aws_lc_rs::{aead, digest, hmac};

    // FIPS 180-2 appendix B.1: SHA-256("abc").
    let sha = digest::digest(&digest::SHA256, b"abc");
    expect_hex(
        "SHA-256",
        sha.as_ref(),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
    )?;

    // RFC 4231 test case 2: HMAC-SHA-256, key "Jefe".
    let key = hmac::Key::new(hmac::HMAC_SHA256, b"Jefe");
    let tag = hmac::sign(&key, b"what do ya want for nothing?");
    expect_hex(
        "HMAC-SHA-256",
        tag.as_ref(),
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
    )?;

    // GCM spec (McGrew & Viega) test case 2: AES-128, zero key and IV, one zero block.
    let key = aead::LessSafeKey::new(
        aead::UnboundKey::new(&aead::AES_128_GCM, &[0u8; 16])
            .map_err(|_| "AES-128-GCM key rejected".to_string())?,
    );
    let mut block = vec![0u8; 16];
    key.seal_in_place_append_tag(
        aead::Nonce::assume_unique_for_key([0u8; 12]),
        aead::Aad::empty(),
        &mut block,
    )
    .map_err(|_| "AES-128-GCM seal failed".to_string())?;
    expect_hex(
        "AES-128-GCM",
        &block,
        "0388dace60b6a392f328c2b971b2fe78ab6e47d42cec13bdf53a67b21257bddf",
    )
}

fn expect_hex(what: &str, got: &[u8], want: &str) -> Result<(), String> {
    let got_hex: String = got.iter().map(|b| format!("{b:02x}")).collect();
    if got_hex == want {
        Ok(())
    } else {
        Err(format!("{what} known-answer check failed: got {got_hex}"))
    }
}

fn name_of_version(v: ProtocolVersion) -> String {
    match v {
        ProtocolVersion::TLSv1_3 => "TLSv1_3".into(),
        ProtocolVersion::TLSv1_2 => "TLSv1_2".into(),
        other => format!("{other:?}"),
    }
}

fn name_of_suite(s: CipherSuite) -> String {
    format!("{s:?}")
}

fn name_of_group(g: NamedGroup) -> String {
    format!("{g:?}")
}

fn name_of_scheme(s: SignatureScheme) -> String {
    format!("{s:?}")
}

impl fmt::Display for Negotiable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "  versions    {}", self.protocol_versions.join(", "))?;
        writeln!(f, "  suites      {}", self.cipher_suites.join(", "))?;
        writeln!(f, "  groups      {}", self.kx_groups.join(", "))?;
        write!(f, "  signatures  {}", self.signature_schemes.join(", "))
    }
}

impl fmt::Display for FipsStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let yes_no = |b: bool| if b { "yes" } else { "NO" };
        writeln!(f, "fipstun FIPS status")?;
        writeln!(f, "  module            {}", self.module.name)?;
        writeln!(f, "  module line       {}", self.module.line)?;
        writeln!(f, "  validation        {}", self.module.standard)?;
        writeln!(f, "  certificate       {}", self.module.certificate)?;
        writeln!(f, "  linked version    {}", self.linked_version)?;
        match self.fips_branch {
            Some(v) => writeln!(f, "  FIPS branch       {v}")?,
            None => writeln!(f, "  FIPS branch       (not a FIPS branch build)")?,
        }
        writeln!(
            f,
            "  FIPS mode active  {}{}",
            yes_no(self.fips_mode_active),
            self.fips_mode_error
                .as_deref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        )?;
        writeln!(f, "  provider fips()   {}", yes_no(self.provider_fips))?;
        writeln!(f, "  power-on tests    {}", self.self_test.module_power_on)?;
        match &self.self_test.known_answer_failure {
            None => writeln!(
                f,
                "  known answers     passed (SHA-256, HMAC-SHA-256, AES-128-GCM)"
            )?,
            Some(e) => writeln!(f, "  known answers     FAILED: {e}")?,
        }
        writeln!(f)?;
        writeln!(f, "strict policy (default):")?;
        writeln!(f, "{}", self.strict)?;
        writeln!(f, "with opt-ins (TLS 1.2 + SECP256R1MLKEM768):")?;
        writeln!(f, "{}", self.with_opt_ins)?;
        writeln!(f)?;
        writeln!(f, "what the certificate covers:")?;
        write!(f, "  {}", self.module.coverage)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_answers_pass_and_detect_mismatch() {
        assert_eq!(known_answer_checks(), Ok(()));
        assert!(expect_hex("x", &[0xab], "ac").is_err());
    }

    #[test]
    fn strict_policy_has_no_tls12_and_no_hybrid() {
        let p = CryptoPolicy::default().provider();
        assert_eq!(p.cipher_suites.len(), 2);
        assert!(p.cipher_suites.iter().all(|s| s.tls13().is_some()));
        let groups: Vec<_> = p.kx_groups.iter().map(|g| g.name()).collect();
        assert_eq!(groups, vec![NamedGroup::secp256r1, NamedGroup::secp384r1]);
    }
}

/// What one finished handshake negotiated: protocol, record cipher and key exchange. Read it
/// per connection ([`negotiated`]); a policy only says what *may* be negotiated
/// ([`CryptoPolicy::negotiable`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Negotiated {
    /// The protocol version, e.g. `TLSv1_3`.
    pub protocol_version: ProtocolVersion,
    /// The record cipher suite, e.g. `TLS13_AES_256_GCM_SHA384`.
    pub cipher_suite: CipherSuite,
    /// The key-exchange group, e.g. `secp256r1`.
    pub kx_group: NamedGroup,
}

/// What `conn`'s handshake negotiated, once it has finished (`None` before).
pub fn negotiated(conn: &rustls::CommonState) -> Option<Negotiated> {
    Some(Negotiated {
        protocol_version: conn.protocol_version()?,
        cipher_suite: conn.negotiated_cipher_suite()?.suite(),
        kx_group: conn.negotiated_key_exchange_group()?.name(),
    })
}

impl fmt::Display for Negotiated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {}",
            name_of_version(self.protocol_version),
            name_of_suite(self.cipher_suite),
            name_of_group(self.kx_group)
        )
    }
}
