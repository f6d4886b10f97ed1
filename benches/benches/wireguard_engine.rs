//! The WireGuard engine (gotatun, the one the backend uses) against its primitive: a full
//! handshake (initiation + response + confirming keepalive, both sides) and 1420-byte data
//! packets (encapsulate + decapsulate) beside raw ChaCha20-Poly1305 seal + open of the same
//! size. Measures only.
//!
//! `cargo bench -p fipstun-benches --bench wireguard_engine`

use std::hint::black_box;
use std::sync::Arc;

use aws_lc_rs::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use gotatun::noise::index_table::IndexTable;
use gotatun::noise::rate_limiter::RateLimiter;
use gotatun::noise::{Tunn, TunnResult};
use gotatun::packet::{Packet, WgKind};
use gotatun::x25519::{PublicKey, StaticSecret};

const PACKET: usize = 1420;

fn pair() -> (Tunn, Tunn) {
    let secret = || {
        let mut k = [0u8; 32];
        aws_lc_rs::rand::fill(&mut k).expect("DRBG");
        StaticSecret::from(k)
    };
    let (a, b) = (secret(), secret());
    let (pa, pb) = (PublicKey::from(&a), PublicKey::from(&b));
    let limiter = |p: &PublicKey| Arc::new(RateLimiter::new(p, u64::MAX));
    let initiator = Tunn::new(a, pb, None, None, IndexTable::from_os_rng(), limiter(&pa));
    let responder = Tunn::new(b, pa, None, None, IndexTable::from_os_rng(), limiter(&pb));
    (initiator, responder)
}

/// Initiation -> response -> keepalive; returns the established pair.
fn handshake(mut i: Tunn, mut r: Tunn) -> (Tunn, Tunn) {
    let init: WgKind = i
        .format_handshake_initiation(false)
        .expect("initiation")
        .into();
    let TunnResult::WriteToNetwork(resp) = r.handle_incoming_packet(init) else {
        panic!("responder refused the initiation")
    };
    let TunnResult::WriteToNetwork(keepalive) = i.handle_incoming_packet(resp) else {
        panic!("initiator refused the response")
    };
    let _ = r.handle_incoming_packet(keepalive);
    (i, r)
}

/// A 1420-byte IPv4 packet (valid header, zero payload) from 10.99.0.1 to 10.99.0.2.
fn ip_packet() -> Vec<u8> {
    let mut p = vec![0u8; PACKET];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(PACKET as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&[10, 99, 0, 1]);
    p[16..20].copy_from_slice(&[10, 99, 0, 2]);
    p
}

fn engine(c: &mut Criterion) {
    let mut g = c.benchmark_group("wireguard");
    g.throughput(Throughput::Elements(1));
    g.bench_function("handshake", |b| {
        b.iter_batched(
            pair,
            |(i, r)| black_box(handshake(i, r)),
            BatchSize::SmallInput,
        )
    });
    g.finish();

    let (a, b) = pair();
    let (mut i, mut r) = handshake(a, b);
    let ip = ip_packet();
    let mut g = c.benchmark_group("data_1420");
    g.throughput(Throughput::Bytes(PACKET as u64));
    g.bench_function("wireguard_encap_decap", |bn| {
        bn.iter(|| {
            let sealed = i
                .encapsulate_with_session(Packet::copy_from(&ip[..]))
                .unwrap_or_else(|_| panic!("no session"));
            match r.handle_incoming_packet(sealed.into()) {
                TunnResult::WriteToTunnel(p) => black_box(p),
                other => panic!("data packet refused: {other:?}"),
            };
        })
    });
    let key = LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &[9; 32]).expect("key"));
    let mut buf = Vec::with_capacity(PACKET + 16);
    g.bench_function("raw_chacha20poly1305_seal_open", |bn| {
        bn.iter(|| {
            buf.clear();
            buf.extend_from_slice(&ip);
            key.seal_in_place_append_tag(
                Nonce::assume_unique_for_key([0; 12]),
                Aad::empty(),
                &mut buf,
            )
            .expect("seal");
            black_box(
                key.open_in_place(
                    Nonce::assume_unique_for_key([0; 12]),
                    Aad::empty(),
                    &mut buf,
                )
                .expect("open"),
            );
        })
    });
    g.finish();
}

criterion_group!(benches, engine);
criterion_main!(benches);
