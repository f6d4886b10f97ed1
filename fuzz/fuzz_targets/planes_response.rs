#![no_main]
//! Identity-plane answers from arbitrary bytes: a Workload API `X509SVIDResponse` /
//! `X509BundlesResponse` and an Istio CA `IstioCertificateResponse` as protobuf, then the
//! checks that run before anything is installed; and the raw DER / PEM chain splitters.
use std::time::SystemTime;

use fipstun_identity::spiffe::SpiffeId;
use fipstun_planes::proto::{IstioCertificateResponse, X509BundlesResponse, X509SvidResponse};
use fipstun_planes::response::{
    X509Context, bundles_from_response, check_issued_chain, parse_pem_chain, split_der_certificates,
};
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    // The real clock: the committed seeds are certificates with short lives, so past their
    // expiry they exercise the refusal paths (svid_der does the same).
    let now = SystemTime::now();
    match selector % 4 {
        0 => {
            if let Ok(r) = X509SvidResponse::decode(body) {
                let _ = X509Context::from_response(&r, None, now);
            }
        }
        1 => {
            if let Ok(r) = X509BundlesResponse::decode(body) {
                let _ = bundles_from_response(&r);
            }
        }
        2 => {
            if let Ok(r) = IstioCertificateResponse::decode(body)
                && let Ok(chain) = parse_pem_chain(&r.cert_chain)
            {
                let id = SpiffeId::parse("spiffe://fuzz.test/workload").unwrap();
                let _ = check_issued_chain(chain, &id, None, now);
            }
        }
        _ => {
            if let Ok(certs) = split_der_certificates(body) {
                assert!(!certs.is_empty() || body.is_empty());
            }
        }
    }
});
