#![no_main]
//! WireGuard datagrams into the receive path the backend uses: gotatun's message parser and
//! engine (an established responder session, so data packets reach decryption and replay
//! checks), the anonymous handshake parser the node uses to find the sender, and our parsers
//! of what comes out of the tunnel. Never panics.
use std::sync::{Arc, Mutex, OnceLock};

use bytes::BytesMut;
use fipstun_wireguard::inner_packet::{destination, parse_syn};
use gotatun::noise::handshake::parse_handshake_anon;
use gotatun::noise::index_table::IndexTable;
use gotatun::noise::rate_limiter::RateLimiter;
use gotatun::noise::{Tunn, TunnResult};
use gotatun::packet::{Packet, WgKind};
use gotatun::x25519::{PublicKey, StaticSecret};
use libfuzzer_sys::fuzz_target;

struct Engine {
    responder: Tunn,
    secret: StaticSecret,
    public: PublicKey,
}

fn engine() -> &'static Mutex<Engine> {
    static E: OnceLock<Mutex<Engine>> = OnceLock::new();
    E.get_or_init(|| {
        let (a, b) = (StaticSecret::from([1u8; 32]), StaticSecret::from([2u8; 32]));
        let (pa, pb) = (PublicKey::from(&a), PublicKey::from(&b));
        let mut initiator = Tunn::new(
            a,
            pb,
            None,
            None,
            IndexTable::from_os_rng(),
            Arc::new(RateLimiter::new(&pa, 1 << 20)),
        );
        let mut responder = Tunn::new(
            b.clone(),
            pa,
            None,
            None,
            IndexTable::from_os_rng(),
            Arc::new(RateLimiter::new(&pb, 1 << 20)),
        );
        let init: WgKind = initiator.format_handshake_initiation(false).unwrap().into();
        if let TunnResult::WriteToNetwork(resp) = responder.handle_incoming_packet(init)
            && let TunnResult::WriteToNetwork(ka) = initiator.handle_incoming_packet(resp)
        {
            let _ = responder.handle_incoming_packet(ka);
        }
        Mutex::new(Engine {
            responder,
            secret: b,
            public: pb,
        })
    })
}

fuzz_target!(|data: &[u8]| {
    let _ = destination(data);
    let _ = parse_syn(data);
    let Ok(wg) = Packet::from_bytes(BytesMut::from(data)).try_into_wg() else {
        return;
    };
    let mut e = engine().lock().unwrap_or_else(|p| p.into_inner());
    if let WgKind::HandshakeInit(p) = &wg {
        let _ = parse_handshake_anon(&e.secret, &e.public, p);
    }
    if let TunnResult::WriteToTunnel(inner) = e.responder.handle_incoming_packet(wg) {
        let _ = destination(&inner);
        let _ = parse_syn(&inner);
    }
});
