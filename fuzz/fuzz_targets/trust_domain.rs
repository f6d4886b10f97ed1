#![no_main]
//! Trust domain parsing: never panics; round trips.
use fipstun_identity::spiffe::TrustDomain;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data)
        && let Ok(td) = TrustDomain::new(s)
    {
        assert_eq!(TrustDomain::new(td.as_str()).unwrap(), td);
    }
});
