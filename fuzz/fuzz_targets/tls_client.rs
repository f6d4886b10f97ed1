#![no_main]
//! TLS handshake bytes into our FIPS client config after it sent its ClientHello.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| fipstun_fuzz::feed_client(data));
