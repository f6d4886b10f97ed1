#![no_main]
//! Trust bundles from arbitrary PEM text.
use fipstun_identity::bundle::TrustBundle;
use fipstun_identity::spiffe::TrustDomain;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let td = TrustDomain::new("fuzz.test").unwrap();
        if let Ok(b) = TrustBundle::from_pem(td.clone(), s) {
            assert!(!b.roots().is_empty());
            TrustBundle::from_pem(td, &b.to_pem()).expect("printed bundle must load");
        }
    }
});
