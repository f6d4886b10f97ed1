//! FIPS conformance of the crypto policy: configs report `fips()`, our client and server
//! negotiate only approved algorithms, and non-FIPS peers are refused with the reason.

use std::sync::Arc;

use fipstun_identity::policy::{CryptoPolicy, PolicyError, check_client, check_server};
use rcgen::{
    BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SignatureAlgorithm,
};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::crypto::aws_lc_rs as plain;
use rustls::server::WebPkiClientVerifier;
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{
    CipherSuite, ClientConfig, ClientConnection, Error, NamedGroup, PeerIncompatible,
    ProtocolVersion, RootCertStore, ServerConfig, ServerConnection,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};

/// A test PKI: one root, one server leaf and one client leaf, all on `alg`.
struct Pki {
    roots: Arc<RootCertStore>,
    server: (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>),
    client: (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>),
}

fn pki(alg: &'static SignatureAlgorithm) -> Pki {
    let ca_key = KeyPair::generate_for(alg).unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);

    let leaf = |name: &str, eku: ExtendedKeyUsagePurpose| {
        let key = KeyPair::generate_for(alg).unwrap();
        let mut params = CertificateParams::new(vec![name.to_string()]).unwrap();
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![eku];
        let cert = params.signed_by(&key, &issuer).unwrap();
        (
            vec![cert.der().clone(), ca_cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
    };
    let mut roots = RootCertStore::empty();
    roots.add(ca_cert.der().clone()).unwrap();
    Pki {
        roots: Arc::new(roots),
        server: leaf("server.test", ExtendedKeyUsagePurpose::ServerAuth),
        client: leaf("client.test", ExtendedKeyUsagePurpose::ClientAuth),
    }
}

fn certified(
    (chain, key): &(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>),
    provider: &CryptoProvider,
) -> Arc<SingleCertAndKey> {
    let ck = CertifiedKey::from_der(chain.clone(), key.clone_key(), provider).unwrap();
    Arc::new(SingleCertAndKey::from(ck))
}

fn our_server(policy: CryptoPolicy, pki: &Pki) -> ServerConfig {
    let provider = policy.provider();
    let verifier = WebPkiClientVerifier::builder_with_provider(pki.roots.clone(), provider.clone())
        .build()
        .unwrap();
    policy
        .server_config(verifier, certified(&pki.server, &provider))
        .expect("our server config must be FIPS")
}

fn our_client(policy: CryptoPolicy, pki: &Pki) -> ClientConfig {
    let provider = policy.provider();
    let verifier = WebPkiServerVerifier::builder_with_provider(pki.roots.clone(), provider.clone())
        .build()
        .unwrap();
    policy
        .client_config(verifier, certified(&pki.client, &provider))
        .expect("our client config must be FIPS")
}

/// A client on rustls' ordinary aws-lc-rs provider, restricted by `shape`. Not FIPS.
fn plain_client(pki: &Pki, shape: impl FnOnce(&mut CryptoProvider)) -> ClientConfig {
    plain_client_versions(pki, shape, rustls::ALL_VERSIONS)
}

fn plain_client_versions(
    pki: &Pki,
    shape: impl FnOnce(&mut CryptoProvider),
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> ClientConfig {
    let mut provider = plain::default_provider();
    provider.cipher_suites = plain::ALL_CIPHER_SUITES.to_vec();
    provider.kx_groups = plain::ALL_KX_GROUPS.to_vec();
    shape(&mut provider);
    let provider = Arc::new(provider);
    let verifier = WebPkiServerVerifier::builder_with_provider(pki.roots.clone(), provider.clone())
        .build()
        .unwrap();
    ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(certified(&pki.client, &provider))
}

/// Outcome of an in-memory handshake.
struct Handshake {
    client: Result<ClientConnection, Error>,
    server: Result<ServerConnection, Error>,
}

fn handshake(client: ClientConfig, server: ServerConfig) -> Handshake {
    let name = ServerName::try_from("server.test").unwrap();
    let mut c = ClientConnection::new(Arc::new(client), name).unwrap();
    let mut s = ServerConnection::new(Arc::new(server)).unwrap();
    let mut buf = Vec::new();
    let (mut c_err, mut s_err) = (None, None);
    for _ in 0..20 {
        buf.clear();
        while c.wants_write() {
            c.write_tls(&mut buf).unwrap();
        }
        if !buf.is_empty() && s_err.is_none() {
            let mut rd = &buf[..];
            while !rd.is_empty() {
                s.read_tls(&mut rd).unwrap();
            }
            if let Err(e) = s.process_new_packets() {
                s_err = Some(e);
            }
        }
        buf.clear();
        while s.wants_write() {
            s.write_tls(&mut buf).unwrap();
        }
        if !buf.is_empty() && c_err.is_none() {
            let mut rd = &buf[..];
            while !rd.is_empty() {
                c.read_tls(&mut rd).unwrap();
            }
            if let Err(e) = c.process_new_packets() {
                c_err = Some(e);
            }
        }
        let done = !c.is_handshaking() && !s.is_handshaking();
        let stalled = !c.wants_write() && !s.wants_write();
        if (done || c_err.is_some() || s_err.is_some()) && stalled {
            break;
        }
    }
    Handshake {
        client: match c_err {
            Some(e) => Err(e),
            None if c.is_handshaking() => Err(Error::General("client did not finish".into())),
            None => Ok(c),
        },
        server: match s_err {
            Some(e) => Err(e),
            None if s.is_handshaking() => Err(Error::General("server did not finish".into())),
            None => Ok(s),
        },
    }
}

fn suite_and_group(conn: &rustls::CommonState) -> (ProtocolVersion, CipherSuite, NamedGroup) {
    (
        conn.protocol_version().unwrap(),
        conn.negotiated_cipher_suite().unwrap().suite(),
        conn.negotiated_key_exchange_group().unwrap().name(),
    )
}

#[test]
fn every_config_we_build_reports_fips() {
    let pki = pki(&rcgen::PKCS_ECDSA_P256_SHA256);
    for policy in [
        CryptoPolicy::strict(),
        CryptoPolicy::strict().with_tls12(true),
        CryptoPolicy::strict().with_hybrid_kex(true),
        CryptoPolicy::strict()
            .with_tls12(true)
            .with_hybrid_kex(true),
    ] {
        assert!(policy.provider().fips(), "{policy:?} provider");
        let server = our_server(policy, &pki);
        let client = our_client(policy, &pki);
        assert!(server.fips() && client.fips(), "{policy:?} configs");
        assert!(server.require_ems && client.require_ems);
        assert_eq!(check_server(&server), Ok(()));
        assert_eq!(check_client(&client), Ok(()));
    }
    assert!(aws_lc_rs::try_fips_mode().is_ok(), "module in FIPS mode");
}

#[test]
fn checks_name_why_a_config_is_not_fips() {
    let pki = pki(&rcgen::PKCS_ECDSA_P256_SHA256);
    let mut client = our_client(CryptoPolicy::strict(), &pki);
    client.require_ems = false;
    assert_eq!(
        check_client(&client),
        Err(PolicyError::NotFips {
            side: "client",
            reason: "extended master secret is not required"
        })
    );
    let x25519 = plain_client(&pki, |p| {
        p.kx_groups = vec![plain::kx_group::X25519];
        p.cipher_suites = vec![plain::cipher_suite::TLS13_AES_128_GCM_SHA256];
    });
    assert_eq!(
        check_client(&x25519),
        Err(PolicyError::NotFips {
            side: "client",
            reason: "a key-exchange group is not FIPS-approved"
        })
    );
    let chacha = plain_client(&pki, |p| {
        p.cipher_suites = vec![plain::cipher_suite::TLS13_CHACHA20_POLY1305_SHA256]
    });
    assert_eq!(
        check_client(&chacha),
        Err(PolicyError::NotFips {
            side: "client",
            reason: "a cipher suite is not FIPS-approved"
        })
    );
    let mut server = our_server(CryptoPolicy::strict(), &pki);
    server.require_ems = false;
    assert!(matches!(
        check_server(&server),
        Err(PolicyError::NotFips { side: "server", .. })
    ));
}

#[test]
fn our_client_and_server_negotiate_aes_gcm_on_p256() {
    let pki = pki(&rcgen::PKCS_ECDSA_P256_SHA256);
    let hs = handshake(
        our_client(CryptoPolicy::strict(), &pki),
        our_server(CryptoPolicy::strict(), &pki),
    );
    let (c, s) = (hs.client.unwrap(), hs.server.unwrap());
    let want = (
        ProtocolVersion::TLSv1_3,
        CipherSuite::TLS13_AES_256_GCM_SHA384,
        NamedGroup::secp256r1,
    );
    assert_eq!(suite_and_group(&c), want);
    assert_eq!(suite_and_group(&s), want);
    // Mutual: the server saw and verified the client's chain.
    assert_eq!(s.peer_certificates().unwrap().len(), 2);
}

#[test]
fn p384_pki_and_p384_only_client_negotiate_p384() {
    let pki = pki(&rcgen::PKCS_ECDSA_P384_SHA384);
    // A plain-provider client restricted to FIPS-approved choices, preferring P-384 and AES-128.
    let client = plain_client_versions(
        &pki,
        |p| {
            p.kx_groups = vec![plain::kx_group::SECP384R1];
            p.cipher_suites = vec![plain::cipher_suite::TLS13_AES_128_GCM_SHA256];
        },
        &[&rustls::version::TLS13],
    );
    let hs = handshake(client, our_server(CryptoPolicy::strict(), &pki));
    let s = hs.server.unwrap();
    assert_eq!(
        suite_and_group(&s),
        (
            ProtocolVersion::TLSv1_3,
            CipherSuite::TLS13_AES_128_GCM_SHA256,
            NamedGroup::secp384r1
        )
    );
    hs.client.unwrap();
}

#[test]
fn a_peer_preferring_x25519_and_chacha_still_gets_approved_algorithms() {
    let pki = pki(&rcgen::PKCS_ECDSA_P256_SHA256);
    let client = plain_client(&pki, |p| {
        p.cipher_suites.sort_by_key(|s| {
            s.suite() != CipherSuite::TLS13_CHACHA20_POLY1305_SHA256 // ChaCha20 first
        });
    });
    let hs = handshake(client, our_server(CryptoPolicy::strict(), &pki));
    let s = hs.server.unwrap();
    let (version, suite, group) = suite_and_group(&s);
    assert_eq!(version, ProtocolVersion::TLSv1_3);
    assert_eq!(suite, CipherSuite::TLS13_AES_256_GCM_SHA384);
    assert_eq!(group, NamedGroup::secp256r1);
}

#[test]
fn x25519_only_peer_is_refused() {
    let pki = pki(&rcgen::PKCS_ECDSA_P256_SHA256);
    let client = plain_client(&pki, |p| p.kx_groups = vec![plain::kx_group::X25519]);
    let hs = handshake(client, our_server(CryptoPolicy::strict(), &pki));
    assert_eq!(
        hs.server.err(),
        Some(Error::PeerIncompatible(
            PeerIncompatible::NoKxGroupsInCommon
        ))
    );
    assert!(hs.client.is_err());

    // And the other way round: our client against an X25519-only server.
    let mut provider = plain::default_provider();
    provider.kx_groups = vec![plain::kx_group::X25519];
    let provider = Arc::new(provider);
    let verifier = WebPkiClientVerifier::builder_with_provider(pki.roots.clone(), provider.clone())
        .build()
        .unwrap();
    let server = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(certified(&pki.server, &provider));
    let hs = handshake(our_client(CryptoPolicy::strict(), &pki), server);
    assert_eq!(
        hs.server.err(),
        Some(Error::PeerIncompatible(
            PeerIncompatible::NoKxGroupsInCommon
        ))
    );
}

#[test]
fn chacha20_only_peer_is_refused() {
    let pki = pki(&rcgen::PKCS_ECDSA_P256_SHA256);
    let client = plain_client(&pki, |p| {
        p.cipher_suites = vec![plain::cipher_suite::TLS13_CHACHA20_POLY1305_SHA256]
    });
    let hs = handshake(client, our_server(CryptoPolicy::strict(), &pki));
    assert_eq!(
        hs.server.err(),
        Some(Error::PeerIncompatible(
            PeerIncompatible::NoCipherSuitesInCommon
        ))
    );
}

#[test]
fn tls12_peer_is_refused_by_the_strict_policy() {
    let pki = pki(&rcgen::PKCS_ECDSA_P256_SHA256);
    let client = plain_client_versions(&pki, |_| {}, &[&rustls::version::TLS12]);
    let hs = handshake(client, our_server(CryptoPolicy::strict(), &pki));
    assert_eq!(
        hs.server.err(),
        Some(Error::PeerIncompatible(
            PeerIncompatible::Tls12NotOfferedOrEnabled
        ))
    );
}

#[test]
fn tls12_opt_in_negotiates_ecdhe_aes_gcm_with_ems() {
    let pki = pki(&rcgen::PKCS_ECDSA_P256_SHA256);
    let policy = CryptoPolicy::strict().with_tls12(true);
    let client = plain_client_versions(&pki, |_| {}, &[&rustls::version::TLS12]);
    let hs = handshake(client, our_server(policy, &pki));
    let s = hs.server.unwrap();
    let (version, suite, group) = suite_and_group(&s);
    assert_eq!(version, ProtocolVersion::TLSv1_2);
    assert_eq!(suite, CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384);
    assert_eq!(group, NamedGroup::secp256r1);
}

/// A TLS 1.2 ClientHello with every field a server needs but *no* extended_master_secret
/// extension (RFC 7627), built by hand because rustls clients always send it.
fn tls12_client_hello_without_ems() -> Vec<u8> {
    let mut ext = Vec::new();
    // supported_groups: secp256r1
    ext.extend_from_slice(&[0x00, 0x0a, 0x00, 0x04, 0x00, 0x02, 0x00, 0x17]);
    // ec_point_formats: uncompressed
    ext.extend_from_slice(&[0x00, 0x0b, 0x00, 0x02, 0x01, 0x00]);
    // signature_algorithms: ecdsa_secp256r1_sha256, rsa_pss_rsae_sha256
    ext.extend_from_slice(&[0x00, 0x0d, 0x00, 0x06, 0x00, 0x04, 0x04, 0x03, 0x08, 0x04]);
    let mut body = vec![0x03, 0x03];
    body.extend_from_slice(&[0x42; 32]); // random
    body.push(0); // no session id
    body.extend_from_slice(&[0x00, 0x04, 0xc0, 0x2b, 0xc0, 0x2f]); // ECDHE-{ECDSA,RSA}-AES128-GCM
    body.extend_from_slice(&[0x01, 0x00]); // null compression
    body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    body.extend_from_slice(&ext);
    let mut hs = vec![0x01, 0x00];
    hs.extend_from_slice(&(body.len() as u16).to_be_bytes());
    hs.extend_from_slice(&body);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    record.extend_from_slice(&hs);
    record
}

#[test]
fn tls12_peer_without_extended_master_secret_is_refused() {
    let pki = pki(&rcgen::PKCS_ECDSA_P256_SHA256);
    let server = our_server(CryptoPolicy::strict().with_tls12(true), &pki);
    let mut s = ServerConnection::new(Arc::new(server)).unwrap();
    let hello = tls12_client_hello_without_ems();
    s.read_tls(&mut &hello[..]).unwrap();
    assert_eq!(
        s.process_new_packets().err(),
        Some(Error::PeerIncompatible(
            PeerIncompatible::ExtendedMasterSecretExtensionRequired
        ))
    );
}

#[test]
fn hybrid_opt_in_negotiates_secp256r1mlkem768() {
    let pki = pki(&rcgen::PKCS_ECDSA_P256_SHA256);
    let policy = CryptoPolicy::strict().with_hybrid_kex(true);
    let hs = handshake(our_client(policy, &pki), our_server(policy, &pki));
    let s = hs.server.unwrap();
    assert_eq!(suite_and_group(&s).2, NamedGroup::secp256r1MLKEM768);
    // A strict server never picks the hybrid even if the client offers it.
    let hs = handshake(
        our_client(policy, &pki),
        our_server(CryptoPolicy::strict(), &pki),
    );
    assert_eq!(
        suite_and_group(&hs.server.unwrap()).2,
        NamedGroup::secp256r1
    );
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// The exact lists: a dependency upgrade that changes what we negotiate fails here.
#[test]
fn negotiable_lists_are_pinned() {
    let strict = CryptoPolicy::strict().negotiable();
    assert_eq!(strict.protocol_versions, strings(&["TLSv1_3"]));
    assert_eq!(
        strict.cipher_suites,
        strings(&["TLS13_AES_256_GCM_SHA384", "TLS13_AES_128_GCM_SHA256"])
    );
    assert_eq!(strict.kx_groups, strings(&["secp256r1", "secp384r1"]));
    let schemes = strings(&[
        "ECDSA_NISTP384_SHA384",
        "ECDSA_NISTP256_SHA256",
        "RSA_PSS_SHA512",
        "RSA_PSS_SHA384",
        "RSA_PSS_SHA256",
        "RSA_PKCS1_SHA512",
        "RSA_PKCS1_SHA384",
        "RSA_PKCS1_SHA256",
    ]);
    assert_eq!(strict.signature_schemes, schemes);

    let all = CryptoPolicy::strict()
        .with_tls12(true)
        .with_hybrid_kex(true)
        .negotiable();
    assert_eq!(all.protocol_versions, strings(&["TLSv1_3", "TLSv1_2"]));
    assert_eq!(
        all.cipher_suites,
        strings(&[
            "TLS13_AES_256_GCM_SHA384",
            "TLS13_AES_128_GCM_SHA256",
            "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
            "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
            "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
            "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        ])
    );
    assert_eq!(
        all.kx_groups,
        strings(&["secp256r1MLKEM768", "secp256r1", "secp384r1"])
    );
    assert_eq!(all.signature_schemes, schemes);
}

#[test]
fn status_reports_fips_mode_and_the_validated_module() {
    let status = fipstun_identity::policy::fips_status();
    assert!(status.fips_mode_active, "{:?}", status.fips_mode_error);
    assert!(status.provider_fips);
    assert_eq!(status.self_test.known_answer_failure, None);
    assert!(status.ok());
    assert_eq!(
        status.fips_branch,
        Some(3),
        "AWS-LC FIPS 3.x is the validated line"
    );
    assert!(status.module.certificate.contains("#5314"));
    assert!(
        status.linked_version.starts_with('3'),
        "{}",
        status.linked_version
    );
}
