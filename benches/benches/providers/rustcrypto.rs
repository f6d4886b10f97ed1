//! RustCrypto in the comparison: aes-gcm, p256 (ECDSA and ECDH), sha2, and x25519-dalek for
//! X25519 (the crate the WireGuard engine's handshake uses). The same work as the ring-API
//! workloads, call for call: a fresh AEAD buffer per seal or open, the ECDSA public key parsed
//! on each verify, a fresh key pair per agreement. Two differences the table notes: p256 signs
//! deterministically (RFC 6979) where aws-lc-rs and ring draw a random nonce, and fresh keys
//! come from the OS (`OsRng`, one getrandom call each) where aws-lc-rs uses its own DRBG.

use std::hint::black_box;

use aes_gcm::aead::{self, AeadInPlace, KeyInit};
use aes_gcm::{Aes128Gcm, Aes256Gcm};
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId};
use p256::ecdsa::signature::{Signer, Verifier};
use p256::ecdsa::{DerSignature, SigningKey, VerifyingKey};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use rand_core::OsRng;
use sha2::{Digest, Sha256};

use crate::workload::{AEAD_NONCE, ECDSA_MESSAGE, Provider, Row};

/// Keys and inputs, made once outside the timing.
pub(crate) struct Fixture {
    aes128: Aes128Gcm,
    aes256: Aes256Gcm,
    ecdsa: SigningKey,
    ecdsa_public: Vec<u8>,
    signature: Vec<u8>,
    p256_peer: Vec<u8>,
    x25519_peer: [u8; 32],
}

impl Fixture {
    pub(crate) fn new() -> Self {
        let ecdsa = SigningKey::random(&mut OsRng);
        let ecdsa_public = VerifyingKey::from(&ecdsa)
            .to_encoded_point(false)
            .as_bytes()
            .to_vec();
        let signature: DerSignature = ecdsa.sign(&ECDSA_MESSAGE);
        let p256_peer = p256::ecdh::EphemeralSecret::random(&mut OsRng)
            .public_key()
            .to_encoded_point(false)
            .as_bytes()
            .to_vec();
        let x25519_secret = x25519_dalek::EphemeralSecret::random_from_rng(OsRng);
        Fixture {
            aes128: Aes128Gcm::new_from_slice(&[0x42; 16]).expect("AES-128 key"),
            aes256: Aes256Gcm::new_from_slice(&[0x42; 32]).expect("AES-256 key"),
            ecdsa,
            ecdsa_public,
            signature: signature.as_bytes().to_vec(),
            p256_peer,
            x25519_peer: x25519_dalek::PublicKey::from(&x25519_secret).to_bytes(),
        }
    }
}

/// Runs `row` for `provider` in `g`; panics on a primitive this file has no workload for.
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
                b.iter(|| -> DerSignature { fx.ecdsa.sign(black_box(&ECDSA_MESSAGE)) })
            });
        }
        "ecdsa_p256_verify" => {
            g.bench_function(id, |b| {
                b.iter(|| {
                    let public = VerifyingKey::from_sec1_bytes(black_box(&fx.ecdsa_public))
                        .expect("public key");
                    let signature =
                        DerSignature::from_bytes(black_box(&fx.signature)).expect("DER signature");
                    public.verify(&ECDSA_MESSAGE, &signature).expect("verify")
                })
            });
        }
        "ecdh_p256" => {
            g.bench_function(id, |b| {
                b.iter(|| {
                    let me = p256::ecdh::EphemeralSecret::random(&mut OsRng);
                    let public = me.public_key().to_encoded_point(false);
                    let peer = p256::PublicKey::from_sec1_bytes(black_box(&fx.p256_peer))
                        .expect("peer public key");
                    let secret = me.diffie_hellman(&peer);
                    black_box((public, secret.raw_secret_bytes()[0]));
                })
            });
        }
        "x25519" => {
            g.bench_function(id, |b| {
                b.iter(|| {
                    let me = x25519_dalek::EphemeralSecret::random_from_rng(OsRng);
                    let public = x25519_dalek::PublicKey::from(&me);
                    let peer = x25519_dalek::PublicKey::from(black_box(fx.x25519_peer));
                    let secret = me.diffie_hellman(&peer);
                    black_box((public, secret.to_bytes()));
                })
            });
        }
        "sha256" => {
            let data = vec![0x5a; size];
            g.bench_function(id, |b| b.iter(|| Sha256::digest(black_box(&data))));
        }
        other => panic!("{}: no workload for {other}", provider.id),
    }
}

fn seal<A: AeadInPlace>(
    g: &mut BenchmarkGroup<'_, WallTime>,
    id: BenchmarkId,
    key: &A,
    size: usize,
) {
    let nonce = aead::Nonce::<A>::from_slice(&AEAD_NONCE);
    let mut buf = Vec::with_capacity(size + 16);
    g.bench_function(id, |b| {
        b.iter(|| {
            buf.clear();
            buf.resize(size, 7);
            key.encrypt_in_place(nonce, &[], &mut buf).expect("seal");
            black_box(&buf);
        })
    });
}

fn open<A: AeadInPlace>(
    g: &mut BenchmarkGroup<'_, WallTime>,
    id: BenchmarkId,
    key: &A,
    size: usize,
) {
    let nonce = aead::Nonce::<A>::from_slice(&AEAD_NONCE);
    let mut sealed = vec![7u8; size];
    key.encrypt_in_place(nonce, &[], &mut sealed).expect("seal");
    let mut buf = Vec::with_capacity(sealed.len());
    g.bench_function(id, |b| {
        b.iter(|| {
            buf.clear();
            buf.extend_from_slice(&sealed);
            key.decrypt_in_place(nonce, &[], &mut buf).expect("open");
            black_box(&buf);
        })
    });
}
