#![no_main]
//! CSR handling in the CA: arbitrary bytes as a PKCS#10 request. Never panics; anything it
//! signs is an SVID for the caller that validates.
use std::time::SystemTime;

use fipstun_fuzz::fixture;
use fipstun_identity::svid::{self, Usage};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    if let Ok(chain) = f.ca.sign_csr(data, &f.caller, None) {
        let id = svid::validate(&chain, &f.bundles, SystemTime::now(), Usage::Client)
            .expect("an SVID the CA signed must validate");
        assert_eq!(id, f.caller);
    }
});
