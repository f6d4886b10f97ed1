//! ring in the comparison, through the same ring-API workloads as aws-lc-rs.

use ring as api;

use api::agreement::{EphemeralPrivateKey, UnparsedPublicKey, agree_ephemeral};
use api::rand::SystemRandom;
use api::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair};

// The same file is aws-lc-rs's module too, compiled against that crate: that is the point.
#[allow(clippy::duplicate_mod)]
#[path = "ring_api.rs"]
mod ring_api;
pub(crate) use ring_api::{Fixture, bench};

/// ring takes ECDSA keys only as PKCS#8 (here its own `generate_pkcs8` output) and wants a
/// random source to load one.
fn ecdsa_key_pair(pkcs8: &[u8], rng: &SystemRandom) -> EcdsaKeyPair {
    EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8, rng).expect("PKCS#8 key")
}

fn agree(me: EphemeralPrivateKey, peer: &UnparsedPublicKey<&[u8]>) -> [u8; 32] {
    agree_ephemeral(me, peer, |secret| secret.try_into())
        .expect("agree")
        .expect("secret is 32 bytes")
}
