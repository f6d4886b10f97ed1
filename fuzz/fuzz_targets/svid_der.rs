#![no_main]
//! SVID validation on arbitrary DER: the first bytes say where to split leaf and intermediates.
use std::time::SystemTime;

use fipstun_fuzz::fixture;
use fipstun_identity::svid::{self, Usage};
use libfuzzer_sys::fuzz_target;
use rustls_pki_types::CertificateDer;

fuzz_target!(|data: &[u8]| {
    let (split, rest) = match data.split_first() {
        Some((s, r)) => (*s as usize, r),
        None => return,
    };
    let cut = if rest.is_empty() {
        0
    } else {
        (split * rest.len() / 256).min(rest.len())
    };
    let mut chain = vec![CertificateDer::from(rest[..cut].to_vec())];
    if cut < rest.len() {
        chain.push(CertificateDer::from(rest[cut..].to_vec()));
    }
    let _ = svid::validate(&chain, &fixture().bundles, SystemTime::now(), Usage::Client);
    let _ = svid::peer_id(&CertificateDer::from(rest.to_vec()));
});
