//! aws-lc-rs in the comparison, through the ring-API workloads. Both halves include this file:
//! the workspace bench, where aws-lc-rs is built with `fips`, and `benches/providers-nonfips`,
//! where it is not; [`require_module`] checks which one was linked before anything is timed.

use aws_lc_rs as api;

use api::agreement::{EphemeralPrivateKey, UnparsedPublicKey, agree_ephemeral};
use api::rand::SystemRandom;
use api::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair};

use crate::workload::{AWS_LC_FIPS, Provider};

// The same file is ring's module too, compiled against that crate: that is the point.
#[allow(clippy::duplicate_mod)]
#[path = "ring_api.rs"]
mod ring_api;
pub(crate) use ring_api::{Fixture, bench};

/// aws-lc-rs reads the key without a random source (ring needs one).
fn ecdsa_key_pair(pkcs8: &[u8], _rng: &SystemRandom) -> EcdsaKeyPair {
    EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8).expect("PKCS#8 key")
}

/// aws-lc-rs's `agree_ephemeral` takes the error value to return (ring's has a fixed one).
fn agree(me: EphemeralPrivateKey, peer: &UnparsedPublicKey<&[u8]>) -> [u8; 32] {
    agree_ephemeral(me, peer, "agreement failed", |secret| {
        secret.try_into().map_err(|_| "secret is not 32 bytes")
    })
    .expect("agree")
}

/// Panics unless the AWS-LC this binary links is the FIPS module exactly when `provider` is
/// the FIPS column: a column labelled FIPS must not silently measure the other library, nor
/// the other way round. Prints the library's version to stderr.
pub(crate) fn require_module(provider: &Provider) {
    let fips = api::try_fips_mode();
    let want_fips = *provider == AWS_LC_FIPS;
    assert_eq!(
        fips.is_ok(),
        want_fips,
        "{}: the linked AWS-LC (version {}) says {fips:?} to FIPS_mode(); this column needs {}",
        provider.id,
        api::awslc_version(),
        if want_fips {
            "the FIPS module"
        } else {
            "the non-FIPS library"
        }
    );
    eprintln!(
        "{}: AWS-LC {} (FIPS mode: {})",
        provider.id,
        api::awslc_version(),
        fips.is_ok()
    );
}
