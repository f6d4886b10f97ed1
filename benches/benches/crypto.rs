//! Crypto head to head, all from one library (aws-lc-rs, built with the FIPS module):
//! AEADs by record size, key agreements, ECDSA, a full in-memory TLS 1.3 mTLS handshake with
//! our FIPS configs, and the TLS record path against raw AES-GCM. Measures only; the ratios
//! are computed by `cargo run -p fipstun-benches --bin bench-report` into BENCHMARKS.md.
//!
//! `cargo bench -p fipstun-benches --bench crypto`

use std::hint::black_box;
use std::io::{Read, Write};
use std::sync::Arc;

use aws_lc_rs::aead::{
    AES_128_GCM, AES_256_GCM, Aad, Algorithm, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey,
};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair,
    UnparsedPublicKey,
};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use fipstun_benches::Pki;
use fipstun_identity::tls::{client_config, server_config};
use rustls::client::UnbufferedClientConnection;
use rustls::crypto::SupportedKxGroup;
use rustls::crypto::aws_lc_rs::kx_group;
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, UnbufferedStatus};
use rustls::{ClientConnection, ServerConnection};

const SIZES: [usize; 3] = [64, 1420, 16384];

fn aead_key(alg: &'static Algorithm) -> LessSafeKey {
    let key = vec![0x42; alg.key_len()];
    LessSafeKey::new(UnboundKey::new(alg, &key).unwrap())
}

fn aead(c: &mut Criterion) {
    let algs: [(&str, &'static Algorithm); 3] = [
        ("aes128gcm", &AES_128_GCM),
        ("aes256gcm", &AES_256_GCM),
        ("chacha20poly1305", &CHACHA20_POLY1305),
    ];
    for op in ["seal", "open"] {
        let mut g = c.benchmark_group(format!("aead_{op}"));
        for size in SIZES {
            g.throughput(Throughput::Bytes(size as u64));
            for (name, alg) in algs {
                let key = aead_key(alg);
                let mut sealed = vec![7u8; size];
                key.seal_in_place_append_tag(
                    Nonce::assume_unique_for_key([1; 12]),
                    Aad::empty(),
                    &mut sealed,
                )
                .unwrap();
                let mut buf = Vec::with_capacity(size + 16);
                g.bench_with_input(BenchmarkId::new(name, size), &size, |b, &size| {
                    b.iter(|| {
                        buf.clear();
                        if op == "seal" {
                            buf.resize(size, 7);
                            key.seal_in_place_append_tag(
                                Nonce::assume_unique_for_key([1; 12]),
                                Aad::empty(),
                                &mut buf,
                            )
                            .unwrap();
                        } else {
                            buf.extend_from_slice(&sealed);
                            key.open_in_place(
                                Nonce::assume_unique_for_key([1; 12]),
                                Aad::empty(),
                                &mut buf,
                            )
                            .unwrap();
                        }
                        black_box(&buf);
                    })
                });
            }
        }
        g.finish();
    }
}

/// A complete exchange, both sides: the initiator's key share, the responder's share and
/// secret, the initiator's secret.
fn key_agreement(c: &mut Criterion) {
    let mut g = c.benchmark_group("kx_full_exchange");
    let groups: [(&str, &'static dyn SupportedKxGroup); 4] = [
        ("secp256r1", kx_group::SECP256R1),
        ("secp384r1", kx_group::SECP384R1),
        ("secp256r1mlkem768", kx_group::SECP256R1MLKEM768),
        ("x25519", kx_group::X25519),
    ];
    for (name, group) in groups {
        g.bench_function(name, |b| {
            b.iter(|| {
                let initiator = group.start().unwrap();
                let responder = group.start_and_complete(initiator.pub_key()).unwrap();
                let secret = initiator.complete(&responder.pub_key).unwrap();
                black_box((secret, responder.secret));
            })
        });
    }
    g.finish();
}

fn signatures(c: &mut Criterion) {
    let rng = SystemRandom::new();
    let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
    let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, doc.as_ref()).unwrap();
    let msg = [0x5a; 130]; // about a TLS 1.3 CertificateVerify input
    let sig = key.sign(&rng, &msg).unwrap();
    let public = UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, key.public_key().as_ref());
    let mut g = c.benchmark_group("ecdsa_p256");
    g.bench_function("sign", |b| {
        b.iter(|| key.sign(&rng, black_box(&msg)).unwrap())
    });
    g.bench_function("verify", |b| {
        b.iter(|| public.verify(black_box(&msg), sig.as_ref()).unwrap())
    });
    g.finish();
}

struct Pair {
    client: Arc<rustls::ClientConfig>,
    server: Arc<rustls::ServerConfig>,
}

/// Our FIPS configs with SPIFFE verifiers and P-256 SVIDs from one root.
fn pair() -> Pair {
    let pki = Pki::new();
    let client = client_config(
        &pki.policy,
        pki.trust.clone(),
        pki.anyone(),
        pki.slot("c").1,
    );
    let server = server_config(
        &pki.policy,
        pki.trust.clone(),
        pki.anyone(),
        pki.slot("s").1,
    );
    Pair {
        client: Arc::new(client.unwrap()),
        server: Arc::new(server.unwrap()),
    }
}

fn move_tls<A, B>(
    from: &mut rustls::ConnectionCommon<A>,
    to: &mut rustls::ConnectionCommon<B>,
    buf: &mut Vec<u8>,
) {
    buf.clear();
    while from.wants_write() {
        from.write_tls(buf).unwrap();
    }
    let mut rd = &buf[..];
    while !rd.is_empty() {
        to.read_tls(&mut rd).unwrap();
    }
    to.process_new_packets().unwrap();
}

fn connect(p: &Pair) -> (ClientConnection, ServerConnection) {
    let mut c = ClientConnection::new(p.client.clone(), "bench".try_into().unwrap()).unwrap();
    let mut s = ServerConnection::new(p.server.clone()).unwrap();
    let mut buf = Vec::with_capacity(8192);
    while c.is_handshaking() || s.is_handshaking() {
        move_tls(&mut c, &mut s, &mut buf);
        move_tls(&mut s, &mut c, &mut buf);
    }
    (c, s)
}

fn handshake(c: &mut Criterion) {
    let p = pair();
    let mut g = c.benchmark_group("handshake");
    g.throughput(Throughput::Elements(1));
    g.bench_function("tls13_mtls_p256", |b| b.iter(|| black_box(connect(&p))));
    g.finish();
}

/// 16 KiB of application data through a connected rustls pair (seal, frame, parse, open)
/// against raw AES-256-GCM seal + open of the same bytes (the suite our policy prefers).
fn record_path(c: &mut Criterion) {
    const RECORD: usize = 16384;
    let p = pair();
    let (mut client, mut server) = connect(&p);
    let payload = vec![0xa5u8; RECORD];
    let mut wire = Vec::with_capacity(RECORD + 64);
    let mut out = vec![0u8; RECORD];
    let mut g = c.benchmark_group("record_16k");
    g.throughput(Throughput::Bytes(RECORD as u64));
    g.bench_function("tls13_aes256gcm_rustls", |b| {
        b.iter(|| {
            client.writer().write_all(&payload).unwrap();
            wire.clear();
            while client.wants_write() {
                client.write_tls(&mut wire).unwrap();
            }
            let mut rd = &wire[..];
            while !rd.is_empty() {
                server.read_tls(&mut rd).unwrap();
                server.process_new_packets().unwrap();
            }
            server.reader().read_exact(&mut out).unwrap();
            black_box(&out);
        })
    });
    let key = aead_key(&AES_256_GCM);
    let mut buf = Vec::with_capacity(RECORD + 16);
    g.bench_function("raw_aes256gcm_seal_open", |b| {
        b.iter(|| {
            buf.clear();
            buf.extend_from_slice(&payload);
            key.seal_in_place_append_tag(
                Nonce::assume_unique_for_key([3; 12]),
                Aad::empty(),
                &mut buf,
            )
            .unwrap();
            let plain = key
                .open_in_place(
                    Nonce::assume_unique_for_key([3; 12]),
                    Aad::empty(),
                    &mut buf,
                )
                .unwrap();
            black_box(plain);
        })
    });
    g.finish();
}

/// One side of an unbuffered pair: process what `incoming` holds, encode every handshake
/// record it has into `outgoing`, and say whether it reached `WriteTraffic` (handshake done,
/// nothing queued).
macro_rules! unbuffered_step {
    ($conn:expr, $incoming:expr, $outgoing:expr) => {{
        let mut ready = false;
        let mut scratch = vec![0u8; 64 * 1024];
        loop {
            let UnbufferedStatus { discard, state } = $conn.process_tls_records(&mut $incoming[..]);
            let mut again = true;
            match state.unwrap() {
                ConnectionState::EncodeTlsData(mut e) => {
                    let n = e.encode(&mut scratch).unwrap();
                    $outgoing.extend_from_slice(&scratch[..n]);
                }
                ConnectionState::TransmitTlsData(t) => t.done(),
                ConnectionState::BlockedHandshake => again = false,
                ConnectionState::WriteTraffic(_) => {
                    ready = true;
                    again = false;
                }
                other => panic!("unexpected state during the handshake: {other:?}"),
            }
            $incoming.drain(..discard);
            if !again {
                break;
            }
        }
        ready
    }};
}

fn connect_unbuffered(p: &Pair) -> (UnbufferedClientConnection, UnbufferedServerConnection) {
    let mut c =
        UnbufferedClientConnection::new(p.client.clone(), "bench".try_into().unwrap()).unwrap();
    let mut s = UnbufferedServerConnection::new(p.server.clone()).unwrap();
    let (mut to_server, mut to_client) = (Vec::new(), Vec::new());
    for _ in 0..16 {
        let c_ready = unbuffered_step!(c, to_client, to_server);
        let s_ready = unbuffered_step!(s, to_server, to_client);
        if c_ready && s_ready && to_client.is_empty() && to_server.is_empty() {
            return (c, s);
        }
    }
    panic!("the unbuffered handshake did not finish");
}

/// The same 16 KiB record through rustls' unbuffered API, as a sans-IO data path would use
/// it: the sender encrypts straight into its socket buffer (one copy, sealed in place), the
/// receiver decrypts in place in the buffer it read into (rustls 0.23 then moves the
/// plaintext into one `Vec`: a second copy). The buffered API above makes five.
fn record_path_unbuffered(c: &mut Criterion) {
    const RECORD: usize = 16384;
    let p = pair();
    let (mut client, mut server) = connect_unbuffered(&p);
    let payload = vec![0xa5u8; RECORD];
    let mut wire = vec![0u8; RECORD + 64];
    let mut one_record = || {
        let n = match client.process_tls_records(&mut []).state.unwrap() {
            ConnectionState::WriteTraffic(mut w) => w.encrypt(&payload, &mut wire).unwrap(),
            other => panic!("client not ready to write: {other:?}"),
        };
        let UnbufferedStatus { discard, state } = server.process_tls_records(&mut wire[..n]);
        let len = match state.unwrap() {
            ConnectionState::ReadTraffic(mut r) => {
                let record = r.next_record().unwrap().unwrap();
                black_box(record.payload).len()
            }
            other => panic!("server has no record to read: {other:?}"),
        };
        (n, discard, len)
    };
    // Outside the timing: one record in, one record out, all of it consumed.
    let (n, discard, len) = one_record();
    assert_eq!((discard, len), (n, RECORD));
    let mut g = c.benchmark_group("record_16k");
    g.throughput(Throughput::Bytes(RECORD as u64));
    g.bench_function("tls13_aes256gcm_rustls_unbuffered", |b| {
        b.iter(|| black_box(one_record()))
    });
    g.finish();
}

criterion_group!(
    benches,
    aead,
    key_agreement,
    signatures,
    handshake,
    record_path,
    record_path_unbuffered
);
criterion_main!(benches);
