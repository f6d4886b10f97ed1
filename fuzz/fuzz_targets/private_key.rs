#![no_main]
//! Private keys from arbitrary PKCS#8 DER and PEM.
use fipstun_identity::keys::PrivateKey;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(k) = PrivateKey::from_pkcs8_der(data) {
        let back = PrivateKey::from_pem(&k.to_pem()).expect("printed key must load");
        assert_eq!(back.algorithm(), k.algorithm());
    }
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = PrivateKey::from_pem(s);
    }
});
