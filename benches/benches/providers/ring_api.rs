//! The comparison's workloads written once for the crates with ring's API: aws-lc-rs (with
//! and without the FIPS module) and ring itself, so that each measures the same calls. The
//! including module names the crate `api` and supplies the two calls whose signatures differ
//! between them: loading a PKCS#8 ECDSA key (`ecdsa_key_pair`) and `agree`.

use std::hint::black_box;

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId};

use super::api::aead::{AES_128_GCM, AES_256_GCM, Aad, Algorithm, LessSafeKey, Nonce, UnboundKey};
use super::api::agreement::{ECDH_P256, EphemeralPrivateKey, UnparsedPublicKey, X25519};
use super::api::digest::{SHA256, digest};
use super::api::rand::SystemRandom;
use super::api::signature::{
    ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair,
    UnparsedPublicKey as SignaturePublicKey,
};
use super::{agree, ecdsa_key_pair};
use crate::workload::{AEAD_NONCE, ECDSA_MESSAGE, Provider, Row};

/// Keys and inputs, made once outside the timing.
pub(crate) struct Fixture {
    rng: SystemRandom,
    aes128: LessSafeKey,
    aes256: LessSafeKey,
    ecdsa: EcdsaKeyPair,
    ecdsa_public: Vec<u8>,
    signature: Vec<u8>,
    p256_peer: Vec<u8>,
    x25519_peer: Vec<u8>,
}

fn aead_key(alg: &'static Algorithm) -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(alg, &vec![0x42; alg.key_len()]).expect("AEAD key"))
}

fn peer_public(alg: &'static super::api::agreement::Algorithm, rng: &SystemRandom) -> Vec<u8> {
    let peer = EphemeralPrivateKey::generate(alg, rng).expect("peer key");
    peer.compute_public_key()
        .expect("peer public key")
        .as_ref()
        .to_vec()
}

impl Fixture {
    pub(crate) fn new() -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
            .expect("ECDSA P-256 key");
        let ecdsa = ecdsa_key_pair(pkcs8.as_ref(), &rng);
        let ecdsa_public = ecdsa.public_key().as_ref().to_vec();
        let signature = ecdsa
            .sign(&rng, &ECDSA_MESSAGE)
            .expect("ECDSA signature")
            .as_ref()
            .to_vec();
        Fixture {
            aes128: aead_key(&AES_128_GCM),
            aes256: aead_key(&AES_256_GCM),
            ecdsa,
            ecdsa_public,
            signature,
            p256_peer: peer_public(&ECDH_P256, &rng),
            x25519_peer: peer_public(&X25519, &rng),
            rng,
        }
    }
}

/// Runs `row` for `provider` in `g`; panics on a primitive this file has no workload for, so a
/// row added to the table cannot go unmeasured quietly.
pub(crate) fn bench(
    g: &mut BenchmarkGroup<'_, WallTime>,
    row: &Row,
    provider: &Provider,
    fx: &Fixture,
) {
    let id = BenchmarkId::new(row.function(), provider.id);
    let size = row.bytes.unwrap_or(0);
    match row.primitive {
        "aes128gcm_seal" => seal(g, id, &fx.aes128, size),
        "aes128gcm_open" => open(g, id, &fx.aes128, size),
        "aes256gcm_seal" => seal(g, id, &fx.aes256, size),
        "aes256gcm_open" => open(g, id, &fx.aes256, size),
        "ecdsa_p256_sign" => {
            g.bench_function(id, |b| {
                b.iter(|| {
                    fx.ecdsa
                        .sign(&fx.rng, black_box(&ECDSA_MESSAGE))
                        .expect("sign")
                })
            });
        }
        "ecdsa_p256_verify" => {
            g.bench_function(id, |b| {
                b.iter(|| {
                    SignaturePublicKey::new(&ECDSA_P256_SHA256_ASN1, black_box(&fx.ecdsa_public))
                        .verify(&ECDSA_MESSAGE, black_box(&fx.signature))
                        .expect("verify")
                })
            });
        }
        "ecdh_p256" => key_agreement(g, id, &ECDH_P256, &fx.p256_peer, &fx.rng),
        "x25519" => key_agreement(g, id, &X25519, &fx.x25519_peer, &fx.rng),
        "sha256" => {
            let data = vec![0x5a; size];
            g.bench_function(id, |b| b.iter(|| digest(&SHA256, black_box(&data))));
        }
        other => panic!("{}: no workload for {other}", provider.id),
    }
}

fn seal(g: &mut BenchmarkGroup<'_, WallTime>, id: BenchmarkId, key: &LessSafeKey, size: usize) {
    let mut buf = Vec::with_capacity(size + key.algorithm().tag_len());
    g.bench_function(id, |b| {
        b.iter(|| {
            buf.clear();
            buf.resize(size, 7);
            key.seal_in_place_append_tag(
                Nonce::assume_unique_for_key(AEAD_NONCE),
                Aad::empty(),
                &mut buf,
            )
            .expect("seal");
            black_box(&buf);
        })
    });
}

fn open(g: &mut BenchmarkGroup<'_, WallTime>, id: BenchmarkId, key: &LessSafeKey, size: usize) {
    let mut sealed = vec![7u8; size];
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(AEAD_NONCE),
        Aad::empty(),
        &mut sealed,
    )
    .expect("seal");
    let mut buf = Vec::with_capacity(sealed.len());
    g.bench_function(id, |b| {
        b.iter(|| {
            buf.clear();
            buf.extend_from_slice(&sealed);
            let plain = key
                .open_in_place(
                    Nonce::assume_unique_for_key(AEAD_NONCE),
                    Aad::empty(),
                    &mut buf,
                )
                .expect("open");
            black_box(plain);
        })
    });
}

fn key_agreement(
    g: &mut BenchmarkGroup<'_, WallTime>,
    id: BenchmarkId,
    alg: &'static super::api::agreement::Algorithm,
    peer: &[u8],
    rng: &SystemRandom,
) {
    g.bench_function(id, |b| {
        b.iter(|| {
            let me = EphemeralPrivateKey::generate(alg, rng).expect("key pair");
            let public = me.compute_public_key().expect("public key");
            let secret = agree(me, &UnparsedPublicKey::new(alg, black_box(peer)));
            black_box((public, secret));
        })
    });
}
