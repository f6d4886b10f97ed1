#![no_main]
//! SPIFFE ID parsing: never panics; what parses prints back to something that parses equal.
use fipstun_identity::spiffe::SpiffeId;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data)
        && let Ok(id) = SpiffeId::parse(s)
    {
        // Display, not the stored string: printing is what must round-trip.
        let printed = format!("{id}");
        let again = SpiffeId::parse(&printed).expect("printed ID must parse");
        assert_eq!(again, id);
        let _ = id.istio();
    }
});
