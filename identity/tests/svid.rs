//! The embedded CA, SVID validation and the handshake-time verifiers, through the public API.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fipstun_identity::Error;
use fipstun_identity::bundle::{BundleSet, TrustBundle, TrustStore};
use fipstun_identity::ca::{CsrError, IssuerConfig, SvidIssuer};
use fipstun_identity::keys::{KeyAlgorithm, PrivateKey, csr_for};
use fipstun_identity::policy::CryptoPolicy;
use fipstun_identity::spiffe::{MAX_ID_LEN, SpiffeId, TrustDomain};
use fipstun_identity::svid::{self, Svid, SvidError, Usage};
use fipstun_identity::tls::{
    Authorizer, SpiffeVerifier, SvidSlot, client_config, peer_spiffe_id, server_config,
};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyUsagePurpose, SanType,
};
use rustls::{CertificateError, ClientConnection, ServerConnection};
use rustls_pki_types::CertificateDer;
use x509_parser::prelude::{FromDer, X509Certificate};

const DAY: Duration = Duration::from_secs(86400);

fn td(name: &str) -> TrustDomain {
    TrustDomain::new(name).unwrap()
}

fn id(s: &str) -> SpiffeId {
    SpiffeId::parse(s).unwrap()
}

fn root(name: &str) -> SvidIssuer {
    SvidIssuer::generate_root(
        td(name),
        KeyAlgorithm::EcdsaP256,
        365 * DAY,
        IssuerConfig::default(),
    )
    .unwrap()
}

fn bundles(cas: &[&SvidIssuer]) -> BundleSet {
    cas.iter()
        .fold(BundleSet::new(), |set, ca| set.with(ca.bundle().clone()))
}

/// rcgen's view of `ca`, to forge certificates the CA itself would never issue.
fn forger(ca: &SvidIssuer) -> Issuer<'static, rcgen::KeyPair> {
    let key = rcgen::KeyPair::from_pem(&ca.ca_key_pem()).unwrap();
    Issuer::from_ca_cert_der(ca.ca_cert(), key).unwrap()
}

/// A leaf signed by `ca` with the given SANs and profile tweaks.
fn forged_leaf(
    ca: &SvidIssuer,
    sans: Vec<SanType>,
    tweak: impl FnOnce(&mut CertificateParams),
) -> (Vec<CertificateDer<'static>>, PrivateKey) {
    let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
    let pair = rcgen::KeyPair::from_pem(&key.to_pem()).unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = sans;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    tweak(&mut params);
    let cert = params.signed_by(&pair, &forger(ca)).unwrap();
    (vec![cert.der().clone()], key)
}

fn uri(s: &str) -> SanType {
    SanType::URI(s.try_into().unwrap())
}

fn validate(chain: &[CertificateDer<'_>], set: &BundleSet) -> Result<SpiffeId, SvidError> {
    svid::validate(chain, set, SystemTime::now(), Usage::Client)
}

#[test]
fn issued_svid_has_the_x509_svid_profile() {
    let ca = root("example.org");
    let me = id("spiffe://example.org/ns/default/sa/web");
    let svid = ca
        .issue(&me, KeyAlgorithm::EcdsaP256, Some(Duration::from_secs(600)))
        .unwrap();
    assert_eq!(svid.chain().len(), 1);
    assert_eq!(svid.id(), &me);
    let (_, leaf) = X509Certificate::from_der(&svid.chain()[0]).unwrap();
    assert!(leaf.subject().iter().next().is_none(), "empty subject");
    let san = leaf.subject_alternative_name().unwrap().unwrap();
    assert!(san.critical, "SAN is critical when the subject is empty");
    assert_eq!(san.value.general_names.len(), 1);
    assert!(!leaf.basic_constraints().unwrap().unwrap().value.ca);
    let ku = leaf.key_usage().unwrap().unwrap().value;
    assert!(ku.digital_signature() && !ku.key_cert_sign() && !ku.crl_sign());
    let eku = leaf.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.client_auth && eku.server_auth);
    let life = leaf.validity().not_after.timestamp() - leaf.validity().not_before.timestamp();
    assert_eq!(life, 600 + 30, "TTL plus the 30 s backdate");
    assert!(leaf.extensions().iter().any(|e| matches!(
        e.parsed_extension(),
        x509_parser::extensions::ParsedExtension::AuthorityKeyIdentifier(_)
    )));

    let again = ca.issue(&me, KeyAlgorithm::EcdsaP256, None).unwrap();
    let (_, leaf2) = X509Certificate::from_der(&again.chain()[0]).unwrap();
    assert_ne!(leaf.raw_serial(), leaf2.raw_serial(), "random serials");
    assert_eq!(leaf.raw_serial().len(), 16);

    assert_eq!(validate(svid.chain(), &bundles(&[&ca])), Ok(me));
}

#[test]
fn p384_keys_and_ca_work_end_to_end() {
    let ca = SvidIssuer::generate_root(
        td("p384.test"),
        KeyAlgorithm::EcdsaP384,
        DAY,
        IssuerConfig::default(),
    )
    .unwrap();
    let me = id("spiffe://p384.test/batch");
    let svid = ca.issue(&me, KeyAlgorithm::EcdsaP384, None).unwrap();
    assert_eq!(svid.key().algorithm(), KeyAlgorithm::EcdsaP384);
    assert_eq!(validate(svid.chain(), &bundles(&[&ca])), Ok(me));
}

#[test]
fn ttl_is_clamped_to_the_configured_bounds() {
    let ca = root("example.org");
    let me = id("spiffe://example.org/a");
    let now = SystemTime::now();
    let long = ca
        .issue_at(&me, KeyAlgorithm::EcdsaP256, Some(30 * DAY), now)
        .unwrap();
    let short = ca
        .issue_at(
            &me,
            KeyAlgorithm::EcdsaP256,
            Some(Duration::from_secs(1)),
            now,
        )
        .unwrap();
    let secs = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap().as_secs();
    assert_eq!(secs(long.not_after()), secs(now + DAY));
    assert_eq!(secs(short.not_after()), secs(now + Duration::from_secs(60)));
}

#[test]
fn ttl_never_outlives_the_ca() {
    let ca = SvidIssuer::generate_root(
        td("example.org"),
        KeyAlgorithm::EcdsaP256,
        Duration::from_secs(300),
        IssuerConfig::default(),
    )
    .unwrap();
    let now = SystemTime::now();
    let svid = ca
        .issue_at(
            &id("spiffe://example.org/a"),
            KeyAlgorithm::EcdsaP256,
            Some(DAY),
            now,
        )
        .unwrap();
    let secs = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap().as_secs();
    assert_eq!(secs(svid.not_after()), secs(now + Duration::from_secs(300)));
}

#[test]
fn csr_for_another_identity_is_refused() {
    let ca = root("example.org");
    let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
    let csr = csr_for(&id("spiffe://example.org/admin"), &key).unwrap();
    let err = ca
        .sign_csr(&csr, &id("spiffe://example.org/web"), None)
        .unwrap_err();
    match err {
        Error::Csr(CsrError::IdentityMismatch { requested, caller }) => {
            assert_eq!(requested.as_str(), "spiffe://example.org/admin");
            assert_eq!(caller.as_str(), "spiffe://example.org/web");
        }
        other => panic!("expected IdentityMismatch, got {other:?}"),
    }
}

/// `spiffe://example.org/aaa...` padded to exactly `len` bytes.
fn id_of_len(len: usize) -> SpiffeId {
    let prefix = "spiffe://example.org/";
    id(&format!("{prefix}{}", "a".repeat(len - prefix.len())))
}

#[test]
fn ids_longer_than_2048_bytes_parse_but_are_never_generated() {
    let ca = root("example.org");
    let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();

    // 2048 bytes: the longest ID the spec lets us generate. CSR, signing and validation work.
    let fits = id_of_len(MAX_ID_LEN);
    let csr = csr_for(&fits, &key).unwrap();
    let chain = ca.sign_csr(&csr, &fits, None).unwrap();
    assert_eq!(validate(&chain, &bundles(&[&ca])), Ok(fits.clone()));
    let svid = ca.issue(&fits, KeyAlgorithm::EcdsaP256, None).unwrap();
    assert_eq!(svid.id(), &fits);

    // 2049 bytes parses, but neither the CSR builder nor the CA generates it.
    let over = id_of_len(MAX_ID_LEN + 1);
    let too_long = |e: Error| match e {
        Error::Csr(CsrError::IdTooLong { len, max }) => {
            assert_eq!((len, max), (2049, 2048));
            e.to_string()
        }
        other => panic!("expected IdTooLong, got {other:?}"),
    };
    let shown = too_long(csr_for(&over, &key).unwrap_err());
    assert!(shown.contains("2049") && shown.contains("2048"), "{shown}");
    too_long(ca.issue(&over, KeyAlgorithm::EcdsaP256, None).unwrap_err());
    // A CSR for it made by another implementation is refused by the CA all the same.
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = vec![uri(over.as_str())];
    let pair = rcgen::KeyPair::from_pem(&key.to_pem()).unwrap();
    let foreign_csr = params.serialize_request(&pair).unwrap();
    too_long(ca.sign_csr(foreign_csr.der(), &over, None).unwrap_err());

    // A peer's SVID with a long ID, issued elsewhere, still validates: parsing is not issuing.
    let long = id_of_len(4096);
    let (chain, _) = forged_leaf(&ca, vec![uri(long.as_str())], |_| {});
    assert_eq!(validate(&chain, &bundles(&[&ca])), Ok(long));
}

#[test]
fn caller_from_another_trust_domain_is_refused() {
    let ca = root("example.org");
    let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
    let other = id("spiffe://other.org/web");
    let csr = csr_for(&other, &key).unwrap();
    assert!(matches!(
        ca.sign_csr(&csr, &other, None),
        Err(Error::Csr(CsrError::ForeignTrustDomain { .. }))
    ));
}

#[test]
fn csr_with_a_bad_signature_is_refused() {
    let ca = root("example.org");
    let me = id("spiffe://example.org/web");
    let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
    let mut csr = csr_for(&me, &key).unwrap();
    // The last byte is inside the ECDSA signature's `s` integer: still DER, no longer valid.
    *csr.last_mut().unwrap() ^= 0x01;
    assert!(matches!(
        ca.sign_csr(&csr, &me, None),
        Err(Error::Csr(CsrError::BadSignature))
    ));
    // A CSR whose signed part was altered (SAN swapped by a man in the middle) fails too.
    let good = csr_for(&me, &key).unwrap();
    let pos = good
        .windows(3)
        .position(|w| w == b"web")
        .expect("the SAN is in the CSR");
    let mut tampered = good.clone();
    tampered[pos..pos + 3].copy_from_slice(b"wef");
    assert!(matches!(
        ca.sign_csr(&tampered, &id("spiffe://example.org/wef"), None),
        Err(Error::Csr(CsrError::BadSignature))
    ));
    assert!(matches!(
        ca.sign_csr(b"\x30\x03\x02\x01\x00", &me, None),
        Err(Error::Csr(CsrError::Malformed(_)))
    ));
}

#[test]
fn wrong_trust_domain_is_refused() {
    let a = root("a.test");
    let b = root("b.test");
    let svid = b
        .issue(&id("spiffe://b.test/x"), KeyAlgorithm::EcdsaP256, None)
        .unwrap();
    assert_eq!(
        validate(svid.chain(), &bundles(&[&a])),
        Err(SvidError::UntrustedTrustDomain(td("b.test")))
    );
    // Federated: trusting b's bundle too makes it valid, but only under b's own root.
    assert!(validate(svid.chain(), &bundles(&[&a, &b])).is_ok());
}

#[test]
fn unknown_root_is_refused() {
    let real = root("example.org");
    let impostor = root("example.org");
    let svid = impostor
        .issue(&id("spiffe://example.org/x"), KeyAlgorithm::EcdsaP256, None)
        .unwrap();
    assert_eq!(
        validate(svid.chain(), &bundles(&[&real])),
        Err(SvidError::UnknownIssuer(id("spiffe://example.org/x")))
    );
}

#[test]
fn a_federated_bundle_cannot_vouch_for_another_trust_domain() {
    // b's root signs an SVID claiming to be in a.test: it must chain to a.test's bundle.
    let a = root("a.test");
    let b = root("b.test");
    let (chain, _) = forged_leaf(&b, vec![uri("spiffe://a.test/admin")], |_| {});
    assert_eq!(
        validate(&chain, &bundles(&[&a, &b])),
        Err(SvidError::UnknownIssuer(id("spiffe://a.test/admin")))
    );
}

#[test]
fn expired_and_not_yet_valid_are_refused() {
    let ca = root("example.org");
    let me = id("spiffe://example.org/x");
    let set = bundles(&[&ca]);
    let past = ca
        .issue_at(
            &me,
            KeyAlgorithm::EcdsaP256,
            Some(Duration::from_secs(60)),
            SystemTime::now() - Duration::from_secs(3600),
        )
        .unwrap();
    assert!(matches!(
        validate(past.chain(), &set),
        Err(SvidError::Expired { id, .. }) if id == me
    ));
    let future = ca
        .issue_at(
            &me,
            KeyAlgorithm::EcdsaP256,
            None,
            SystemTime::now() + Duration::from_secs(3600),
        )
        .unwrap();
    assert!(matches!(
        validate(future.chain(), &set),
        Err(SvidError::NotYetValid { id, .. }) if id == me
    ));
}

#[test]
fn leaf_profile_violations_are_refused() {
    let ca = root("example.org");
    let set = bundles(&[&ca]);
    let one = || vec![uri("spiffe://example.org/x")];

    let (ca_leaf, _) = forged_leaf(&ca, one(), |p| {
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    });
    assert_eq!(validate(&ca_leaf, &set), Err(SvidError::LeafIsCa));

    let (two, _) = forged_leaf(
        &ca,
        vec![uri("spiffe://example.org/x"), uri("spiffe://example.org/y")],
        |_| {},
    );
    assert_eq!(validate(&two, &set), Err(SvidError::MultipleUriSans(2)));

    let (dns_only, _) = forged_leaf(
        &ca,
        vec![SanType::DnsName("web.example.org".try_into().unwrap())],
        |_| {},
    );
    assert_eq!(validate(&dns_only, &set), Err(SvidError::NoUriSan));

    let (dns_and_uri, _) = forged_leaf(
        &ca,
        vec![
            SanType::DnsName("web.example.org".try_into().unwrap()),
            uri("spiffe://example.org/x"),
        ],
        |_| {},
    );
    assert_eq!(
        validate(&dns_and_uri, &set),
        Ok(id("spiffe://example.org/x")),
        "other SAN types may accompany the one URI SAN"
    );

    let (not_spiffe, _) = forged_leaf(&ca, vec![uri("https://example.org/x")], |_| {});
    assert!(matches!(
        validate(&not_spiffe, &set),
        Err(SvidError::NotSpiffeId(_))
    ));

    let (cert_sign, _) = forged_leaf(&ca, one(), |p| {
        p.key_usages.push(KeyUsagePurpose::KeyCertSign);
    });
    assert_eq!(
        validate(&cert_sign, &set),
        Err(SvidError::ForbiddenKeyUsage("keyCertSign"))
    );

    let (crl_sign, _) = forged_leaf(&ca, one(), |p| {
        p.key_usages.push(KeyUsagePurpose::CrlSign);
    });
    assert_eq!(
        validate(&crl_sign, &set),
        Err(SvidError::ForbiddenKeyUsage("cRLSign"))
    );

    let (no_ds, _) = forged_leaf(&ca, one(), |p| {
        p.key_usages = vec![KeyUsagePurpose::KeyAgreement];
    });
    assert_eq!(
        validate(&no_ds, &set),
        Err(SvidError::MissingDigitalSignature)
    );

    let (server_only, _) = forged_leaf(&ca, one(), |p| {
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    });
    assert!(matches!(
        validate(&server_only, &set),
        Err(SvidError::InvalidChain { .. })
    ));
    assert!(svid::validate(&server_only, &set, SystemTime::now(), Usage::Server).is_ok());

    assert_eq!(validate(&[], &set), Err(SvidError::Empty));
    assert!(matches!(
        validate(&[CertificateDer::from(vec![0x30, 0x00])], &set),
        Err(SvidError::Malformed(_))
    ));
}

#[test]
fn ca_from_pem_round_trips_and_intermediates_chain() {
    let root_ca = root("example.org");
    let again = SvidIssuer::from_pem(
        td("example.org"),
        &root_ca.ca_chain_pem(),
        &root_ca.ca_key_pem(),
        IssuerConfig::default(),
    )
    .unwrap();
    let me = id("spiffe://example.org/x");
    let svid = again.issue(&me, KeyAlgorithm::EcdsaP256, None).unwrap();
    assert_eq!(
        validate(svid.chain(), &bundles(&[&root_ca])),
        Ok(me.clone())
    );

    // An intermediate signed by the root, then SVIDs from the intermediate.
    let int_key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
    let int_pair = rcgen::KeyPair::from_pem(&int_key.to_pem()).unwrap();
    let mut p = CertificateParams::default();
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.distinguished_name
        .push(rcgen::DnType::CommonName, "intermediate");
    let int_cert = p.signed_by(&int_pair, &forger(&root_ca)).unwrap();
    let chain_pem = format!("{}{}", int_cert.pem(), root_ca.bundle().to_pem());
    let int_ca = SvidIssuer::from_pem(
        td("example.org"),
        &chain_pem,
        &int_key.to_pem(),
        IssuerConfig::default(),
    )
    .unwrap();
    let svid = int_ca.issue(&me, KeyAlgorithm::EcdsaP256, None).unwrap();
    assert_eq!(svid.chain().len(), 2, "leaf + intermediate");
    assert_eq!(
        validate(svid.chain(), &bundles(&[&root_ca])),
        Ok(me.clone())
    );
    // Without the intermediate the chain is broken.
    assert_eq!(
        validate(&svid.chain()[..1], &bundles(&[&root_ca])),
        Err(SvidError::UnknownIssuer(me))
    );
}

#[test]
fn bundles_load_from_pem_and_refuse_garbage() {
    let ca = root("example.org");
    let b = TrustBundle::from_pem(td("example.org"), &ca.bundle().to_pem()).unwrap();
    assert_eq!(b.roots(), ca.bundle().roots());
    assert!(matches!(
        TrustBundle::from_pem(td("example.org"), "no pem here"),
        Err(Error::Bundle(_))
    ));
    assert!(matches!(
        TrustBundle::from_der(td("x.test"), [CertificateDer::from(vec![1, 2, 3])]),
        Err(Error::Bundle(_))
    ));
}

// ---- handshakes ----------------------------------------------------------------------------

struct Side {
    slot: Arc<SvidSlot>,
}

fn side(ca: &SvidIssuer, who: &str) -> Side {
    let slot = Arc::new(SvidSlot::new());
    slot.set(&ca.issue(&id(who), KeyAlgorithm::EcdsaP256, None).unwrap())
        .unwrap();
    Side { slot }
}

/// Run a handshake; returns (client error, server error) or the two connections.
#[allow(clippy::result_large_err)] // a test helper; the errors are what the tests inspect
fn handshake(
    client: rustls::ClientConfig,
    server: rustls::ServerConfig,
) -> Result<(ClientConnection, ServerConnection), (Option<rustls::Error>, Option<rustls::Error>)> {
    let mut c = ClientConnection::new(Arc::new(client), "ignored".try_into().unwrap()).unwrap();
    let mut s = ServerConnection::new(Arc::new(server)).unwrap();
    let (mut ce, mut se) = (None, None);
    for _ in 0..10 {
        let mut buf = Vec::new();
        while c.wants_write() {
            c.write_tls(&mut buf).unwrap();
        }
        if se.is_none() && !buf.is_empty() {
            s.read_tls(&mut &buf[..]).unwrap();
            se = s.process_new_packets().err();
        }
        buf.clear();
        while s.wants_write() {
            s.write_tls(&mut buf).unwrap();
        }
        if ce.is_none() && !buf.is_empty() {
            c.read_tls(&mut &buf[..]).unwrap();
            ce = c.process_new_packets().err();
        }
        if ce.is_some() || se.is_some() {
            return Err((ce, se));
        }
        if !c.is_handshaking() && !s.is_handshaking() {
            return Ok((c, s));
        }
    }
    Err((ce, se))
}

fn svid_error(e: &rustls::Error) -> Option<&SvidError> {
    match e {
        rustls::Error::InvalidCertificate(CertificateError::Other(o)) => o.0.downcast_ref(),
        _ => None,
    }
}

#[test]
fn mtls_between_two_identities_checks_both_in_the_handshake() {
    let ca = root("example.org");
    let trust = TrustStore::new(bundles(&[&ca]));
    let policy = CryptoPolicy::default();
    let (web, db) = (
        side(&ca, "spiffe://example.org/ns/prod/sa/web"),
        side(&ca, "spiffe://example.org/ns/prod/sa/db"),
    );
    let server = server_config(
        &policy,
        trust.clone(),
        Authorizer::trust_domains([td("example.org")]),
        db.slot.clone(),
    )
    .unwrap();
    let client = client_config(
        &policy,
        trust.clone(),
        Authorizer::ids([id("spiffe://example.org/ns/prod/sa/db")]),
        web.slot.clone(),
    )
    .unwrap();
    let (c, s) = handshake(client, server.clone()).unwrap();
    assert_eq!(
        peer_spiffe_id(&s).unwrap().istio().unwrap().service_account,
        "web"
    );
    assert_eq!(
        peer_spiffe_id(&c),
        Some(id("spiffe://example.org/ns/prod/sa/db"))
    );

    // The client expects someone else: refused inside the handshake, by the client.
    let client = client_config(
        &policy,
        trust.clone(),
        Authorizer::ids([id("spiffe://example.org/ns/prod/sa/cache")]),
        web.slot.clone(),
    )
    .unwrap();
    let (ce, _) = handshake(client, server).unwrap_err();
    assert_eq!(
        svid_error(ce.as_ref().unwrap()),
        Some(&SvidError::Unauthorized(id(
            "spiffe://example.org/ns/prod/sa/db"
        )))
    );

    // A custom authorizer on the server refuses web.
    let server = server_config(
        &policy,
        trust.clone(),
        Authorizer::Custom(Arc::new(|id: &SpiffeId| id.path().ends_with("/admin"))),
        db.slot.clone(),
    )
    .unwrap();
    let client = client_config(
        &policy,
        trust,
        Authorizer::trust_domains([td("example.org")]),
        web.slot.clone(),
    )
    .unwrap();
    let (_, se) = handshake(client, server).unwrap_err();
    assert!(matches!(
        svid_error(se.as_ref().unwrap()),
        Some(SvidError::Unauthorized(_))
    ));
}

#[test]
fn handshake_refusals_carry_the_rustls_kind() {
    let ca = root("example.org");
    let impostor = root("example.org");
    let policy = CryptoPolicy::default();
    let trust = TrustStore::new(bundles(&[&ca]));
    let server = || {
        server_config(
            &policy,
            trust.clone(),
            Authorizer::trust_domains([td("example.org")]),
            side(&ca, "spiffe://example.org/server").slot,
        )
        .unwrap()
    };
    let client_with = |slot: Arc<SvidSlot>| {
        client_config(
            &policy,
            trust.clone(),
            Authorizer::trust_domains([td("example.org")]),
            slot,
        )
        .unwrap()
    };

    let expired = Arc::new(SvidSlot::new());
    expired
        .set(
            &ca.issue_at(
                &id("spiffe://example.org/old"),
                KeyAlgorithm::EcdsaP256,
                Some(Duration::from_secs(60)),
                SystemTime::now() - Duration::from_secs(7200),
            )
            .unwrap(),
        )
        .unwrap();
    let (_, se) = handshake(client_with(expired), server()).unwrap_err();
    assert_eq!(
        se,
        Some(rustls::Error::InvalidCertificate(CertificateError::Expired))
    );

    let (_, se) = handshake(
        client_with(side(&impostor, "spiffe://example.org/evil").slot),
        server(),
    )
    .unwrap_err();
    assert_eq!(
        se,
        Some(rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer
        ))
    );

    // A client with no SVID yet fails closed: the server demands a certificate.
    let (_, se) = handshake(client_with(Arc::new(SvidSlot::new())), server()).unwrap_err();
    assert_eq!(se, Some(rustls::Error::NoCertificatesPresented));

    // A server with no SVID yet fails closed too.
    let empty_server = server_config(
        &policy,
        trust.clone(),
        Authorizer::trust_domains([td("example.org")]),
        Arc::new(SvidSlot::new()),
    )
    .unwrap();
    let (_, se) = handshake(
        client_with(side(&ca, "spiffe://example.org/c").slot),
        empty_server,
    )
    .unwrap_err();
    assert!(se.is_some());
}

#[test]
fn verifier_clock_can_be_set_for_virtual_time() {
    let ca = root("example.org");
    let svid: Svid = ca
        .issue(
            &id("spiffe://example.org/x"),
            KeyAlgorithm::EcdsaP256,
            Some(Duration::from_secs(120)),
        )
        .unwrap();
    let trust = TrustStore::new(bundles(&[&ca]));
    let v = SpiffeVerifier::new(trust, Authorizer::trust_domains([td("example.org")]));
    let later = SystemTime::now() + Duration::from_secs(3600);
    assert!(
        v.verify(svid.chain(), SystemTime::now(), Usage::Server)
            .is_ok()
    );
    assert!(matches!(
        v.verify(svid.chain(), later, Usage::Server),
        Err(SvidError::Expired { .. })
    ));
}

#[test]
fn slot_swaps_atomically_and_reports_expiry() {
    let ca = root("example.org");
    let slot = SvidSlot::new();
    assert!(slot.current().is_none());
    let a = ca
        .issue(
            &id("spiffe://example.org/a"),
            KeyAlgorithm::EcdsaP256,
            Some(Duration::from_secs(600)),
        )
        .unwrap();
    slot.set(&a).unwrap();
    let left = slot.seconds_to_expiry(SystemTime::now()).unwrap();
    assert!((595.0..=600.5).contains(&left), "{left}");
    let b = ca
        .issue(&id("spiffe://example.org/b"), KeyAlgorithm::EcdsaP256, None)
        .unwrap();
    slot.set(&b).unwrap();
    assert_eq!(slot.current().unwrap().id, id("spiffe://example.org/b"));
    slot.clear();
    assert!(slot.current().is_none());
}

#[test]
fn a_ca_cannot_be_loaded_for_another_trust_domain() {
    let ca = root("example.org");
    let pem = ca.ca_chain_pem();
    assert_eq!(
        SvidIssuer::trust_domain_of_pem(&pem).unwrap(),
        Some(td("example.org"))
    );
    let err = SvidIssuer::from_pem(
        td("other.org"),
        &pem,
        &ca.ca_key_pem(),
        IssuerConfig::default(),
    )
    .unwrap_err();
    assert!(
        matches!(&err, Error::Pem(m) if m.contains("is for trust domain example.org")),
        "{err:?}"
    );
}

#[test]
fn configs_never_resume_so_every_handshake_is_verified() {
    let ca = root("example.org");
    let trust = TrustStore::new(bundles(&[&ca]));
    let policy = CryptoPolicy::default();
    let server = Arc::new(
        server_config(
            &policy,
            trust.clone(),
            Authorizer::trust_domains([td("example.org")]),
            side(&ca, "spiffe://example.org/s").slot,
        )
        .unwrap(),
    );
    let client = Arc::new(
        client_config(
            &policy,
            trust.clone(),
            Authorizer::trust_domains([td("example.org")]),
            side(&ca, "spiffe://example.org/c").slot,
        )
        .unwrap(),
    );
    assert_eq!(server.send_tls13_tickets, 0);
    assert!(handshake((*client).clone(), (*server).clone()).is_ok());
    // Withdraw the bundle: the next handshake with the same configs must fail, not resume.
    trust.replace(BundleSet::new());
    let (ce, _) = handshake((*client).clone(), (*server).clone()).unwrap_err();
    assert_eq!(
        svid_error(ce.as_ref().unwrap()),
        Some(&SvidError::UntrustedTrustDomain(td("example.org")))
    );
}
