#![no_main]
//! TLS handshake bytes into our FIPS server config (SPIFFE client verifier, SVID resolver).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| fipstun_fuzz::feed_server(data));
