#![no_main]
//! WireGuard handshakes, structure-aware: initiations, responses, cookie replies and the first
//! data message, built from fuzzer-chosen fields (ephemeral and static keys, including
//! low-order points; timestamps; indexes; mac2 and cookies; byte edits and lengths) but with
//! valid mac1, valid AEADs and real keys (`fipstun_fuzz::wireguard` writes the Noise
//! handshake out independently). Random bytes almost never carry a valid mac1, so
//! `wireguard_datagram` stops at the rate limiter; here every message reaches the Noise
//! processing behind it.
//!
//! Each input is a fresh session between the two engines fipstun's WireGuard backend runs
//! (gotatun `Tunn`s, a responder and an initiator, with fixed key pairs) and the fuzzer as the
//! other side of each, every datagram going through the path `wireguard/src/node.rs`
//! (`Core::ingest`) takes: rate limiter (mac1, mac2, cookies), peer lookup (anonymous
//! initiation parse or receiver index), then the engine. Never panics; whenever both sides
//! hold the secrets, each side's result must open under the other's transcript.
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use fipstun_fuzz::wireguard::{self as noise, Transcript, layout};
use gotatun::noise::handshake::parse_handshake_anon;
use gotatun::noise::index_table::IndexTable;
use gotatun::noise::rate_limiter::RateLimiter;
use gotatun::noise::{Tunn, TunnResult};
use gotatun::packet::{Packet, WgKind};
use gotatun::x25519::{PublicKey, StaticSecret};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

/// The fixed key pairs: the responder engine's (the same as `wireguard_datagram`'s) and the
/// initiator engine's, each the other's configured peer.
const RESPONDER_SECRET: [u8; 32] = [2; 32];
const INITIATOR_SECRET: [u8; 32] = [1; 32];
/// The address every datagram comes from (cookies are bound to it).
const FROM: &str = "192.0.2.1:51820";
/// At most this many steps per session: longer inputs add time, not depth.
const MAX_STEPS: usize = 12;

#[derive(Arbitrary, Debug)]
struct Session {
    /// Handshakes per source address before each side's rate limiter demands a cookie
    /// (taken modulo 4: small, so the cookie path is reached).
    responder_limit: u8,
    initiator_limit: u8,
    steps: Vec<Step>,
}

#[derive(Arbitrary, Debug)]
enum Step {
    /// The fuzzer initiates to the responder engine.
    Initiate(InitStep),
    /// The fuzzer sends the first data message of its finished handshake (confirming it).
    Confirm {
        counter: u64,
        payload: Vec<u8>,
        receiver: Index,
    },
    /// The initiator engine initiates; the fuzzer answers as its responder.
    Respond(RespStep),
    /// The fuzzer sends the initiator engine a cookie reply for its last initiation.
    Cookie(CookieStep),
    /// Raw bytes, with a valid mac1 for the receiving engine written in if `seal`.
    Raw {
        to_initiator: bool,
        seal: bool,
        bytes: Vec<u8>,
    },
}

/// An ephemeral key the fuzzer sends.
#[derive(Arbitrary, Debug)]
enum Ephemeral {
    /// From a secret the fuzzer knows (so it can finish the handshake).
    Secret([u8; 32]),
    /// Any 32 bytes as the public key (the DH is computed from the engine's side).
    Public([u8; 32]),
    /// A low-order point (u = 0 or u = 1): every DH with it is all zeros.
    LowOrder(bool),
}

/// The static key an initiation claims.
#[derive(Arbitrary, Debug)]
enum Static {
    /// The initiator key pair the responder engine has as its peer.
    Configured,
    /// A key the responder does not know.
    Stranger([u8; 32]),
}

#[derive(Arbitrary, Debug)]
enum Timestamp {
    /// One second after the last one sent.
    Next,
    /// The last one again (a replay).
    Repeat,
    Raw([u8; 12]),
}

#[derive(Arbitrary, Debug)]
enum Mac2 {
    /// Zeros: no cookie.
    Zero,
    /// From the last cookie the receiver sent (zeros if none yet).
    Cookie,
    Raw([u8; 16]),
}

#[derive(Arbitrary, Debug)]
enum Index {
    /// The index the receiver expects.
    Expected,
    Other(u32),
}

/// A change to the built message's bytes, before or after the macs are written.
#[derive(Arbitrary, Debug)]
enum Edit {
    Xor { at: u8, mask: u8 },
    Set { at: u8, value: u8 },
    Truncate(u8),
    Append(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
struct InitStep {
    sender_index: u32,
    ephemeral: Ephemeral,
    static_key: Static,
    timestamp: Timestamp,
    mac2: Mac2,
    edits: Vec<Edit>,
    /// Edits after the macs (so mac1 breaks) rather than before.
    edit_after_macs: bool,
}

#[derive(Arbitrary, Debug)]
struct RespStep {
    sender_index: u32,
    receiver: Index,
    ephemeral: Ephemeral,
    /// A pre-shared key the initiator does not have.
    psk: Option<[u8; 32]>,
    mac2: Mac2,
    edits: Vec<Edit>,
    edit_after_macs: bool,
}

#[derive(Arbitrary, Debug)]
struct CookieStep {
    receiver: Index,
    nonce: [u8; 24],
    cookie: [u8; 16],
    /// Seal it over the wrong mac1.
    wrong_mac1: bool,
    edits: Vec<Edit>,
}

fn apply(msg: &mut Vec<u8>, edits: &[Edit]) {
    for e in edits.iter().take(4) {
        let at = |i: u8| usize::from(i) % msg.len().max(1);
        match e {
            Edit::Xor { at: i, mask } if !msg.is_empty() => {
                let i = at(*i);
                msg[i] ^= mask;
            }
            Edit::Set { at: i, value } if !msg.is_empty() => {
                let i = at(*i);
                msg[i] = *value;
            }
            Edit::Truncate(n) => msg.truncate(usize::from(*n)),
            Edit::Append(extra) => msg.extend(extra.iter().take(64)),
            _ => {}
        }
    }
}

fn low_order(one: bool) -> [u8; 32] {
    let mut p = [0u8; 32];
    p[0] = u8::from(one);
    p
}

/// The fuzzer's own handshake as initiator, while the responder engine has not answered.
struct OwnInitiation {
    transcript: Transcript,
    ephemeral: StaticSecret,
    sender_index: u32,
}

/// What the fuzzer knows about the initiator engine's last initiation.
struct EngineInitiation {
    received: Option<noise::ReceivedInitiation>,
    sender_index: u32,
    mac1: [u8; 16],
}

struct Harness {
    from: SocketAddr,
    responder: Tunn,
    responder_limiter: RateLimiter,
    responder_public: PublicKey,
    responder_secret: StaticSecret,
    /// Receiver indexes the responder engine handed out (the node's `by_index`).
    responder_indexes: HashSet<u32>,
    initiator: Tunn,
    initiator_limiter: RateLimiter,
    initiator_public: PublicKey,
    initiator_secret: StaticSecret,
    last_timestamp: u64,
    /// The cookie the responder engine last gave the fuzzer.
    cookie_from_responder: Option<[u8; 16]>,
    /// (receiver index, key) of the fuzzer's finished handshake with the responder engine.
    own_session: Option<(u32, [u8; 32])>,
    engine_initiation: Option<EngineInitiation>,
}

fn tunn(secret: StaticSecret, peer: PublicKey, limiter_key: &PublicKey) -> Tunn {
    Tunn::new(
        secret,
        peer,
        None,
        None,
        IndexTable::from_os_rng(),
        Arc::new(RateLimiter::new(limiter_key, 1 << 20)),
    )
}

impl Harness {
    fn new(s: &Session) -> Self {
        let responder_secret = StaticSecret::from(RESPONDER_SECRET);
        let initiator_secret = StaticSecret::from(INITIATOR_SECRET);
        let responder_public = PublicKey::from(&responder_secret);
        let initiator_public = PublicKey::from(&initiator_secret);
        Self {
            from: FROM.parse().expect("a socket address"),
            responder: tunn(
                responder_secret.clone(),
                initiator_public,
                &responder_public,
            ),
            responder_limiter: RateLimiter::new(
                &responder_public,
                u64::from(s.responder_limit % 4),
            ),
            responder_public,
            responder_secret,
            responder_indexes: HashSet::new(),
            initiator: tunn(
                initiator_secret.clone(),
                responder_public,
                &initiator_public,
            ),
            initiator_limiter: RateLimiter::new(
                &initiator_public,
                u64::from(s.initiator_limit % 4),
            ),
            initiator_public,
            initiator_secret,
            last_timestamp: 0,
            cookie_from_responder: None,
            own_session: None,
            engine_initiation: None,
        }
    }

    /// A datagram into the responder engine, as the node's `ingest` takes it; the reply.
    fn send_to_responder(&mut self, bytes: &[u8]) -> Option<Vec<u8>> {
        let packet = Packet::from_bytes(BytesMut::from(bytes));
        let wg = match self.responder_limiter.verify_packet(self.from, packet) {
            Ok(wg) => wg,
            Err(TunnResult::WriteToNetwork(cookie)) => {
                let reply = Packet::from(cookie).to_vec();
                let mac1 = bytes.get(layout::INIT_MAC1..layout::INIT_MAC1 + 16)?;
                self.cookie_from_responder =
                    noise::open_cookie(&reply, &self.responder_public, mac1);
                assert!(
                    self.cookie_from_responder.is_some(),
                    "a cookie reply from the responder must open"
                );
                return None;
            }
            Err(_) => return None,
        };
        let known = match &wg {
            WgKind::HandshakeInit(p) => {
                parse_handshake_anon(&self.responder_secret, &self.responder_public, p)
                    .is_ok_and(|h| h.peer_static_public == *self.initiator_public.as_bytes())
            }
            WgKind::HandshakeResp(p) => self.responder_indexes.contains(&p.receiver_idx.get()),
            WgKind::CookieReply(p) => self.responder_indexes.contains(&p.receiver_idx.get()),
            WgKind::Data(p) => self
                .responder_indexes
                .contains(&p.header.receiver_idx.get()),
        };
        if !known {
            return None;
        }
        match self.responder.handle_incoming_packet(wg) {
            TunnResult::WriteToNetwork(reply) => {
                let reply = Packet::from(reply).to_vec();
                if reply.len() == layout::RESP_LEN {
                    self.responder_indexes
                        .insert(u32::from_le_bytes(reply[4..8].try_into().ok()?));
                }
                Some(reply)
            }
            _ => None,
        }
    }

    /// A datagram into the initiator engine, as the node's `ingest` takes it; the reply.
    fn send_to_initiator(&mut self, bytes: &[u8]) -> Option<Vec<u8>> {
        let packet = Packet::from_bytes(BytesMut::from(bytes));
        let wg = self
            .initiator_limiter
            .verify_packet(self.from, packet)
            .ok()?;
        let expected = self.engine_initiation.as_ref().map(|e| e.sender_index);
        let known = match &wg {
            // Its peer initiating back: the same lookup as for the responder.
            WgKind::HandshakeInit(p) => {
                parse_handshake_anon(&self.initiator_secret, &self.initiator_public, p)
                    .is_ok_and(|h| h.peer_static_public == *self.responder_public.as_bytes())
            }
            WgKind::HandshakeResp(p) => Some(p.receiver_idx.get()) == expected,
            WgKind::CookieReply(p) => Some(p.receiver_idx.get()) == expected,
            WgKind::Data(p) => Some(p.header.receiver_idx.get()) == expected,
        };
        if !known {
            return None;
        }
        match self.initiator.handle_incoming_packet(wg) {
            TunnResult::WriteToNetwork(reply) => Some(Packet::from(reply).to_vec()),
            _ => None,
        }
    }

    fn initiate(&mut self, f: &InitStep) {
        let (ephemeral_public, ephemeral_secret) = match &f.ephemeral {
            Ephemeral::Secret(s) => {
                let s = StaticSecret::from(*s);
                (*PublicKey::from(&s).as_bytes(), Some(s))
            }
            Ephemeral::Public(p) => (*p, None),
            Ephemeral::LowOrder(one) => (low_order(*one), None),
        };
        let static_public = match &f.static_key {
            Static::Configured => self.initiator_public,
            Static::Stranger(s) => PublicKey::from(&StaticSecret::from(*s)),
        };
        let timestamp = match &f.timestamp {
            Timestamp::Next => {
                self.last_timestamp += 1;
                tai64n(self.last_timestamp)
            }
            Timestamp::Repeat => tai64n(self.last_timestamp),
            Timestamp::Raw(t) => *t,
        };
        // Every DH as the responder computes it, from its secret: any public key works.
        let dh = |p: &[u8; 32]| {
            *self
                .responder_secret
                .diffie_hellman(&PublicKey::from(*p))
                .as_bytes()
        };
        let (mut msg, transcript) = noise::build_initiation(
            &self.responder_public,
            &noise::Initiation {
                sender_index: f.sender_index,
                ephemeral: ephemeral_public,
                ephemeral_shared: dh(&ephemeral_public),
                static_public: *static_public.as_bytes(),
                static_shared: dh(static_public.as_bytes()),
                timestamp: &timestamp,
            },
        );
        let cookie = match &f.mac2 {
            Mac2::Zero => None,
            Mac2::Cookie => self.cookie_from_responder,
            Mac2::Raw(m) => Some(*m),
        };
        if !f.edit_after_macs {
            apply(&mut msg, &f.edits);
        }
        noise::seal_macs(
            &mut msg,
            layout::INIT_MAC1,
            &self.responder_public,
            cookie.as_ref(),
        );
        if let Mac2::Raw(m) = &f.mac2
            && msg.len() == layout::INIT_LEN
        {
            msg[layout::INIT_MAC1 + 16..].copy_from_slice(m);
        }
        if f.edit_after_macs {
            apply(&mut msg, &f.edits);
        }
        let sent_index = msg
            .get(4..8)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        let own = ephemeral_secret
            .filter(|_| matches!(f.static_key, Static::Configured))
            .zip(sent_index)
            .map(|(ephemeral, sender_index)| OwnInitiation {
                transcript,
                ephemeral,
                sender_index,
            });
        let Some(reply) = self.send_to_responder(&msg) else {
            return;
        };
        // The responder accepted: when the fuzzer knows its own secrets, the response must
        // open under its transcript (both implementations derived the same keys).
        if let Some(own) = own {
            let after = noise::open_response(
                &own.transcript,
                &own.ephemeral,
                &self.initiator_secret,
                &reply,
            )
            .expect("the responder engine's response must open under our transcript");
            assert_eq!(
                u32::from_le_bytes(reply[8..12].try_into().expect("4 bytes")),
                own.sender_index
            );
            let receiver = u32::from_le_bytes(reply[4..8].try_into().expect("4 bytes"));
            self.own_session = Some((receiver, after.transport_keys().0));
        }
    }

    fn confirm(&mut self, counter: u64, payload: &[u8], receiver: &Index) {
        let Some((expected, key)) = self.own_session else {
            return;
        };
        let index = match receiver {
            Index::Expected => expected,
            Index::Other(i) => *i,
        };
        let payload = &payload[..payload.len().min(256)];
        let _ = self.send_to_responder(&noise::seal_data(index, counter, &key, payload));
    }

    fn respond(&mut self, f: &RespStep) {
        let Some(init) = self.initiator.format_handshake_initiation(true) else {
            return;
        };
        let bytes = Packet::from(WgKind::from(init)).to_vec();
        let received = noise::open_initiation(&self.responder_secret, &bytes);
        assert!(
            received.is_some(),
            "the initiator engine's initiation must open under our transcript"
        );
        let mut mac1 = [0u8; 16];
        mac1.copy_from_slice(&bytes[layout::INIT_MAC1..layout::INIT_MAC1 + 16]);
        let sender_index = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes"));
        self.engine_initiation = Some(EngineInitiation {
            received,
            sender_index,
            mac1,
        });
        let Some(EngineInitiation {
            received: Some(r), ..
        }) = &self.engine_initiation
        else {
            return;
        };
        let (ephemeral, ee, es) = match &f.ephemeral {
            Ephemeral::Secret(s) => {
                let s = StaticSecret::from(*s);
                let ee = *s.diffie_hellman(&r.ephemeral).as_bytes();
                let es = *s.diffie_hellman(&r.static_public).as_bytes();
                (*PublicKey::from(&s).as_bytes(), ee, es)
            }
            // Without its secret the DHs are unknown: the response cannot verify.
            Ephemeral::Public(p) => (*p, [0; 32], [0; 32]),
            Ephemeral::LowOrder(one) => (low_order(*one), [0; 32], [0; 32]),
        };
        let (mut msg, after) = noise::build_response(
            r.transcript.clone(),
            &noise::Response {
                sender_index: f.sender_index,
                receiver_index: match f.receiver {
                    Index::Expected => r.sender_index,
                    Index::Other(i) => i,
                },
                ephemeral,
                ephemeral_ephemeral: ee,
                ephemeral_static: es,
                psk: f.psk.unwrap_or_default(),
            },
        );
        // The fuzzer never asks the initiator engine for a cookie, so it holds none.
        let cookie = match &f.mac2 {
            Mac2::Zero | Mac2::Cookie => None,
            Mac2::Raw(m) => Some(*m),
        };
        if !f.edit_after_macs {
            apply(&mut msg, &f.edits);
        }
        noise::seal_macs(
            &mut msg,
            layout::RESP_MAC1,
            &self.initiator_public,
            cookie.as_ref(),
        );
        if f.edit_after_macs {
            apply(&mut msg, &f.edits);
        }
        let Some(keepalive) = self.send_to_initiator(&msg) else {
            return;
        };
        // The initiator accepted our response and sent its first data message: with a secret
        // ephemeral and no pre-shared key, it must be sealed under our transport key.
        if matches!(f.ephemeral, Ephemeral::Secret(_)) && f.psk.is_none() {
            let (send, _) = after.transport_keys();
            let sent = u32::from_le_bytes(msg[4..8].try_into().expect("4 bytes"));
            let counter = u64::from_le_bytes(keepalive[8..16].try_into().expect("8 bytes"));
            let expected = noise::seal_data(sent, counter, &send, &[]);
            assert_eq!(keepalive, expected, "the initiator engine's keepalive");
        }
    }

    fn cookie(&mut self, f: &CookieStep) {
        let Some(init) = &self.engine_initiation else {
            return;
        };
        let index = match f.receiver {
            Index::Expected => init.sender_index,
            Index::Other(i) => i,
        };
        let mut mac1 = init.mac1;
        if f.wrong_mac1 {
            mac1[0] ^= 1;
        }
        let mut msg = noise::seal_cookie(index, &f.nonce, &f.cookie, &self.responder_public, &mac1);
        apply(&mut msg, &f.edits);
        let _ = self.send_to_initiator(&msg);
    }

    fn raw(&mut self, to_initiator: bool, seal: bool, bytes: &[u8]) {
        let mut msg = bytes[..bytes.len().min(256)].to_vec();
        if seal {
            let receiver = if to_initiator {
                self.initiator_public
            } else {
                self.responder_public
            };
            match msg.len() {
                layout::INIT_LEN => noise::seal_macs(&mut msg, layout::INIT_MAC1, &receiver, None),
                layout::RESP_LEN => noise::seal_macs(&mut msg, layout::RESP_MAC1, &receiver, None),
                _ => {}
            }
        }
        let _ = if to_initiator {
            self.send_to_initiator(&msg)
        } else {
            self.send_to_responder(&msg)
        };
    }
}

/// A TAI64N label `seconds` after an arbitrary epoch (only their order matters).
fn tai64n(seconds: u64) -> [u8; 12] {
    let mut t = [0u8; 12];
    t[..8].copy_from_slice(&((1u64 << 62) + seconds).to_be_bytes());
    t
}

fuzz_target!(|session: Session| {
    let mut h = Harness::new(&session);
    for step in session.steps.iter().take(MAX_STEPS) {
        match step {
            Step::Initiate(f) => h.initiate(f),
            Step::Confirm {
                counter,
                payload,
                receiver,
            } => h.confirm(*counter, payload, receiver),
            Step::Respond(f) => h.respond(f),
            Step::Cookie(f) => h.cookie(f),
            Step::Raw {
                to_initiator,
                seal,
                bytes,
            } => h.raw(*to_initiator, *seal, bytes),
        }
    }
});
