//! The bad-input catalogue: malformed inputs across every parser of untrusted bytes, each
//! answered with its own typed error — no panic, no hang, nothing accepted by accident.

use std::time::SystemTime;

use fipstun_hbone::ConnectRequest;
use fipstun_hbone::wire::{Authority, Forwarded, HostnamePolicy, TraceParent, WireError};
use fipstun_identity::Error;
use fipstun_identity::bundle::TrustBundle;
use fipstun_identity::ca::{CsrError, IssuerConfig, SvidIssuer};
use fipstun_identity::keys::{KeyAlgorithm, PrivateKey, csr_for};
use fipstun_identity::spiffe::{Rule, SpiffeId, TrustDomain};
use fipstun_identity::svid::{self, SvidError, Usage};
use fipstun_wireguard::{IpPrefix, WgError, WgPresharedKey, WgPrivateKey, WgPublicKey};
use rustls_pki_types::CertificateDer;

/// Counts the cases so the catalogue cannot shrink below what it promises.
struct Catalogue(usize);

impl Catalogue {
    fn case(&mut self, ok: bool, what: &str) {
        self.0 += 1;
        assert!(ok, "catalogue case {} failed: {what}", self.0);
    }
}

#[test]
fn every_parser_refuses_bad_input_with_its_typed_error() {
    let mut c = Catalogue(0);

    // SPIFFE IDs: the broken rule is named.
    let long = format!("spiffe://td/{}", "a".repeat(64 * 1024));
    for (input, rule) in [
        ("", Rule::Empty),
        ("https://example.org/a", Rule::WrongScheme),
        ("spiffe://", Rule::MissingTrustDomain),
        ("spiffe://Example.org/a", Rule::BadTrustDomainChar('E')),
        ("spiffe://example.org:443/a", Rule::Port),
        ("spiffe://admin@example.org/a", Rule::UserInfo),
        ("spiffe://example.org/a//b", Rule::EmptySegment),
        ("spiffe://example.org/a/", Rule::TrailingSlash),
        ("spiffe://example.org/../a", Rule::DotSegment),
        ("spiffe://example.org/a?x=1", Rule::Query),
        ("spiffe://example.org/a#frag", Rule::Fragment),
        ("spiffe://example.org/a%2Fb", Rule::BadPathChar('%')),
        (long.as_str(), Rule::TooLong),
    ] {
        let got = SpiffeId::parse(input).map_err(|e| e.rule);
        c.case(got == Err(rule), &format!("{input:.40} -> {got:?}"));
    }
    c.case(
        TrustDomain::new("exa mple.org").map_err(|e| e.rule) == Err(Rule::BadTrustDomainChar(' ')),
        "trust domain with a space",
    );

    // CSRs into the CA.
    let td = TrustDomain::new("example.org").unwrap();
    let ca = SvidIssuer::generate_root(
        td.clone(),
        KeyAlgorithm::EcdsaP256,
        std::time::Duration::from_secs(3600),
        IssuerConfig::default(),
    )
    .unwrap();
    let me = SpiffeId::parse("spiffe://example.org/me").unwrap();
    let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
    let good_csr = csr_for(&me, &key).unwrap();
    let csr_err = |bytes: &[u8], caller: &SpiffeId| match ca.sign_csr(bytes, caller, None) {
        Err(Error::Csr(e)) => Some(e),
        _ => None,
    };
    c.case(
        matches!(csr_err(b"", &me), Some(CsrError::Malformed(_))),
        "empty CSR",
    );
    c.case(
        matches!(
            csr_err(b"not DER at all", &me),
            Some(CsrError::Malformed(_))
        ),
        "text CSR",
    );
    c.case(
        matches!(
            csr_err(&good_csr[..good_csr.len() / 2], &me),
            Some(CsrError::Malformed(_))
        ),
        "truncated CSR",
    );
    let mut trailing = good_csr.clone();
    trailing.push(0);
    c.case(
        matches!(csr_err(&trailing, &me), Some(CsrError::Malformed(_))),
        "CSR + trailing byte",
    );
    let mut bad_sig = good_csr.clone();
    *bad_sig.last_mut().unwrap() ^= 1;
    c.case(
        matches!(csr_err(&bad_sig, &me), Some(CsrError::BadSignature)),
        "CSR bad signature",
    );
    let other = SpiffeId::parse("spiffe://example.org/other").unwrap();
    c.case(
        matches!(
            csr_err(&good_csr, &other),
            Some(CsrError::IdentityMismatch { .. })
        ),
        "CSR for someone else",
    );
    let foreign = SpiffeId::parse("spiffe://evil.org/me").unwrap();
    c.case(
        matches!(
            csr_err(&csr_for(&foreign, &key).unwrap(), &foreign),
            Some(CsrError::ForeignTrustDomain { .. })
        ),
        "CSR from another trust domain",
    );

    // SVIDs.
    let bundles = fipstun_identity::bundle::BundleSet::new().with(ca.bundle().clone());
    let leaf = ca
        .issue(&me, KeyAlgorithm::EcdsaP256, None)
        .unwrap()
        .chain()[0]
        .to_vec();
    let validate = |der: Vec<u8>| {
        svid::validate(
            &[CertificateDer::from(der)],
            &bundles,
            SystemTime::now(),
            Usage::Client,
        )
    };
    c.case(
        svid::validate(&[], &bundles, SystemTime::now(), Usage::Client) == Err(SvidError::Empty),
        "no certificate",
    );
    c.case(
        matches!(validate(b"garbage".to_vec()), Err(SvidError::Malformed(_))),
        "garbage SVID",
    );
    c.case(
        matches!(
            validate(leaf[..leaf.len() - 10].to_vec()),
            Err(SvidError::Malformed(_))
        ),
        "truncated SVID",
    );
    let mut long_leaf = leaf.clone();
    long_leaf.extend_from_slice(b"xx");
    c.case(
        matches!(validate(long_leaf), Err(SvidError::Malformed(_))),
        "SVID + trailing bytes",
    );
    c.case(
        matches!(
            validate(ca.bundle().roots()[0].to_vec()),
            Err(SvidError::LeafIsCa)
        ),
        "the CA certificate presented as a leaf",
    );

    // PEM and keys.
    c.case(
        matches!(
            TrustBundle::from_pem(td.clone(), "hello"),
            Err(Error::Bundle(_))
        ),
        "bundle without PEM",
    );
    c.case(
        matches!(
            TrustBundle::from_pem(
                td.clone(),
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
            ),
            Err(Error::Bundle(_))
        ),
        "bundle with a non-certificate",
    );
    c.case(
        matches!(
            TrustBundle::from_pem(
                td.clone(),
                "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n"
            ),
            Err(Error::Pem(_))
        ),
        "bundle with broken base64",
    );
    c.case(
        matches!(PrivateKey::from_pem("nope"), Err(Error::Pem(_))),
        "key without PEM",
    );
    c.case(
        matches!(
            PrivateKey::from_pkcs8_der(&[0x30, 0x00]),
            Err(Error::Key(_))
        ),
        "empty PKCS#8",
    );

    // HBONE CONNECT requests and headers.
    let reject = HostnamePolicy::Reject;
    for (authority, want) in [
        ("10.0.0.1", "MissingPort"),
        ("10.0.0.1:99999", "BadPort"),
        ("10.0.0.1:http", "BadPort"),
        ("fe80::1::2:80", "UnbracketedIpv6"),
        ("[::1]", "MissingPort"),
        ("db.example.org:5432", "HostnameNotAllowed"),
        ("user@10.0.0.1:80", "UserInfo"),
        ("bad_host!:80", "BadHost"),
    ] {
        let got = Authority::parse(authority, &reject);
        let kind = match &got {
            Err(WireError::MissingPort(_)) => "MissingPort",
            Err(WireError::BadPort { .. }) => "BadPort",
            Err(WireError::UnbracketedIpv6(_)) => "UnbracketedIpv6",
            Err(WireError::HostnameNotAllowed(_)) => "HostnameNotAllowed",
            Err(WireError::UserInfo(_)) => "UserInfo",
            Err(WireError::BadHost { .. }) => "BadHost",
            _ => "other",
        };
        c.case(kind == want, &format!("authority {authority}: {got:?}"));
    }
    for tp in [
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
        "00-00000000000000000000000000000000-b7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
        "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
    ] {
        c.case(
            matches!(
                TraceParent::parse(tp),
                Err(WireError::BadTraceparent { .. })
            ),
            &format!("traceparent {tp}"),
        );
    }
    for fwd in ["", "by=10.0.0.1", "for=\"not an ip", "for=\"10.0.0.1"] {
        c.case(
            matches!(Forwarded::parse(fwd), Err(WireError::BadForwarded { .. })),
            &format!("forwarded {fwd:?}"),
        );
    }
    let request = |method: http::Method, version: http::Version, uri: &str| {
        http::Request::builder()
            .method(method)
            .version(version)
            .uri(uri)
            .body(())
            .unwrap()
    };
    c.case(
        matches!(
            ConnectRequest::parse(
                &request(http::Method::GET, http::Version::HTTP_2, "10.0.0.1:80"),
                &reject
            ),
            Err(WireError::NotConnect(_))
        ),
        "GET instead of CONNECT",
    );
    c.case(
        matches!(
            ConnectRequest::parse(
                &request(http::Method::CONNECT, http::Version::HTTP_11, "10.0.0.1:80"),
                &reject
            ),
            Err(WireError::NotHttp2(_))
        ),
        "HTTP/1.1 CONNECT",
    );
    c.case(
        matches!(
            ConnectRequest::parse(
                &request(
                    http::Method::CONNECT,
                    http::Version::HTTP_2,
                    "https://10.0.0.1:80/x"
                ),
                &reject
            ),
            Err(WireError::SchemeOrPath(_))
        ),
        "CONNECT with scheme and path",
    );

    // WireGuard configuration text.
    c.case(
        matches!(
            "not base64!".parse::<WgPrivateKey>(),
            Err(WgError::BadKey { .. })
        ),
        "private key text",
    );
    c.case(
        matches!("AAAA".parse::<WgPublicKey>(), Err(WgError::BadKey { .. })),
        "short public key",
    );
    c.case(
        matches!("".parse::<WgPresharedKey>(), Err(WgError::BadKey { .. })),
        "empty PSK",
    );
    c.case(
        matches!(
            "10.0.0.0/33".parse::<IpPrefix>(),
            Err(WgError::BadPrefix(_))
        ),
        "prefix /33",
    );
    c.case(
        matches!("ten/8".parse::<IpPrefix>(), Err(WgError::BadPrefix(_))),
        "prefix not an IP",
    );

    assert!(
        c.0 >= 40,
        "the catalogue holds {} cases; it promises at least 40",
        c.0
    );
}
