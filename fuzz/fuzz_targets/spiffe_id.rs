#![no_main]
//! SPIFFE ID parsing: never panics; what parses prints back to something that parses equal.
use fipstun_identity::spiffe::SpiffeId;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(id) = SpiffeId::parse(s) {
            let again = SpiffeId::parse(&id.to_string()).expect("printed ID must parse");
            assert_eq!(again, id);
            let _ = id.istio();
        }
    }
});
