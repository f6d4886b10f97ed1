//! WireGuard's handshake (Noise_IKpsk2, whitepaper §5.4) written out independently of
//! gotatun, so a fuzz target can build handshake messages with chosen fields that are still
//! correctly encrypted and MACed: the engine under test then gets past mac1 and the AEADs
//! into the checks behind them. It also computes the responder's side of any DH from the
//! responder's secret, which lets a message carry an arbitrary public key.

use blake2::digest::{FixedOutput, KeyInit, Mac, Update};
use blake2::{Blake2s256, Blake2sMac, Digest};
use chacha20poly1305::aead::{Aead, AeadInPlace, Payload};
use chacha20poly1305::{ChaCha20Poly1305, XChaCha20Poly1305};
use gotatun::x25519::{PublicKey, StaticSecret};
use hmac::SimpleHmac;

/// The Noise protocol name (whitepaper §5.4: CONSTRUCTION).
const CONSTRUCTION: &[u8] = b"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s";
/// WireGuard's prologue (whitepaper §5.4: IDENTIFIER).
const IDENTIFIER: &[u8] = b"WireGuard v1 zx2c4 Jason@zx2c4.com";
/// Whitepaper §5.4.4: the mac1 key is HASH(LABEL_MAC1 || receiver's static public key).
const LABEL_MAC1: &[u8] = b"mac1----";
/// Whitepaper §5.4.7: the cookie key is HASH(LABEL_COOKIE || cookie sender's public key).
const LABEL_COOKIE: &[u8] = b"cookie--";

/// Byte offsets of the handshake messages (whitepaper §5.4.2, §5.4.3, §5.4.7).
pub mod layout {
    /// Handshake initiation: total length, mac1 and mac2 offsets.
    pub const INIT_LEN: usize = 148;
    /// Where the initiation's mac1 starts (everything before it is MACed).
    pub const INIT_MAC1: usize = 116;
    /// Handshake response: total length.
    pub const RESP_LEN: usize = 92;
    /// Where the response's mac1 starts.
    pub const RESP_MAC1: usize = 60;
    /// Cookie reply: total length.
    pub const COOKIE_LEN: usize = 64;
}

/// HASH(a || b), BLAKE2s-256.
pub fn hash(a: &[u8], b: &[u8]) -> [u8; 32] {
    Blake2s256::new().chain(a).chain(b).finalize().into()
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut m = <SimpleHmac<Blake2s256> as KeyInit>::new_from_slice(key).expect("any key length");
    for p in parts {
        Mac::update(&mut m, p);
    }
    m.finalize_fixed().into()
}

/// KDF_n of the whitepaper (HKDF with HMAC-BLAKE2s): up to three 32-byte outputs.
fn kdf<const N: usize>(key: &[u8; 32], input: &[u8]) -> [[u8; 32]; N] {
    let t0 = hmac(key, &[input]);
    let mut out = [[0u8; 32]; N];
    let mut prev: Vec<u8> = Vec::new();
    for (i, slot) in out.iter_mut().enumerate() {
        let counter = [i as u8 + 1];
        *slot = hmac(&t0, &[&prev, &counter]);
        prev = slot.to_vec();
    }
    out
}

/// MAC(key, data): keyed BLAKE2s with a 16-byte output (mac1, mac2).
pub fn mac(key: &[u8], data: &[u8]) -> [u8; 16] {
    let mut m = <Blake2sMac<blake2::digest::consts::U16> as KeyInit>::new_from_slice(key)
        .expect("key <= 32");
    Update::update(&mut m, data);
    m.finalize_fixed().into()
}

fn aead_seal(key: &[u8; 32], plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
    // Handshake AEADs use counter 0: a nonce of 12 zero bytes.
    ChaCha20Poly1305::new(key.into())
        .encrypt(
            &[0u8; 12].into(),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .expect("sealing cannot fail")
}

fn aead_open(key: &[u8; 32], ciphertext: &[u8], aad: &[u8]) -> Option<Vec<u8>> {
    ChaCha20Poly1305::new(key.into())
        .decrypt(
            &[0u8; 12].into(),
            Payload {
                msg: ciphertext,
                aad,
            },
        )
        .ok()
}

/// The mac1 key for messages sent to `receiver`.
pub fn mac1_key(receiver: &PublicKey) -> [u8; 32] {
    hash(LABEL_MAC1, receiver.as_bytes())
}

/// Writes a valid mac1 for `receiver` into `msg` (whose mac1 starts at `at`), and mac2 from
/// `cookie` when there is one (zeros otherwise, as an initiator without a cookie sends).
pub fn seal_macs(msg: &mut [u8], at: usize, receiver: &PublicKey, cookie: Option<&[u8; 16]>) {
    if msg.len() < at + 32 {
        return;
    }
    let m1 = mac(&mac1_key(receiver), &msg[..at]);
    msg[at..at + 16].copy_from_slice(&m1);
    let m2 = cookie.map_or([0u8; 16], |c| mac(c, &msg[..at + 16]));
    msg[at + 16..at + 32].copy_from_slice(&m2);
}

/// Decrypts a cookie reply's cookie (whitepaper §5.4.7): XChaCha20-Poly1305 under
/// HASH(LABEL_COOKIE || sender's public key), with the mac1 it answers as associated data.
pub fn open_cookie(reply: &[u8], sender: &PublicKey, mac1: &[u8]) -> Option<[u8; 16]> {
    if reply.len() != layout::COOKIE_LEN {
        return None;
    }
    let key = hash(LABEL_COOKIE, sender.as_bytes());
    let mut buf = reply[32..64].to_vec();
    let (ct, tag) = buf.split_at_mut(16);
    XChaCha20Poly1305::new((&key).into())
        .decrypt_in_place_detached(reply[8..32].into(), mac1, ct, (&*tag).into())
        .ok()?;
    ct.try_into().ok()
}

/// Builds a cookie reply: `cookie` sealed for the holder of `sender`'s peer, answering `mac1`.
pub fn seal_cookie(
    receiver_index: u32,
    nonce: &[u8; 24],
    cookie: &[u8; 16],
    sender: &PublicKey,
    mac1: &[u8],
) -> Vec<u8> {
    let key = hash(LABEL_COOKIE, sender.as_bytes());
    let mut ct = cookie.to_vec();
    let tag = XChaCha20Poly1305::new((&key).into())
        .encrypt_in_place_detached(nonce.into(), mac1, &mut ct)
        .expect("sealing cannot fail");
    let mut msg = vec![3, 0, 0, 0];
    msg.extend_from_slice(&receiver_index.to_le_bytes());
    msg.extend_from_slice(nonce);
    msg.extend_from_slice(&ct);
    msg.extend_from_slice(&tag);
    msg
}

/// The running Noise state (chaining key and hash) of one handshake.
#[derive(Clone)]
pub struct Transcript {
    chaining_key: [u8; 32],
    hash: [u8; 32],
}

impl Transcript {
    /// The state both sides start from, for a handshake with responder `responder`.
    pub fn start(responder: &PublicKey) -> Self {
        let chaining_key: [u8; 32] = Blake2s256::digest(CONSTRUCTION).into();
        let h = hash(&chaining_key, IDENTIFIER);
        Self {
            chaining_key,
            hash: hash(&h, responder.as_bytes()),
        }
    }

    fn mix_hash(&mut self, data: &[u8]) {
        self.hash = hash(&self.hash, data);
    }

    fn mix_public(&mut self, public: &[u8; 32]) {
        let [ck] = kdf::<1>(&self.chaining_key, public);
        self.chaining_key = ck;
        self.mix_hash(public);
    }

    fn mix_dh(&mut self, shared: &[u8; 32]) -> [u8; 32] {
        let [ck, key] = kdf::<2>(&self.chaining_key, shared);
        self.chaining_key = ck;
        key
    }

    fn seal(&mut self, key: &[u8; 32], plaintext: &[u8]) -> Vec<u8> {
        let ct = aead_seal(key, plaintext, &self.hash);
        self.mix_hash(&ct);
        ct
    }

    fn open(&mut self, key: &[u8; 32], ciphertext: &[u8]) -> Option<Vec<u8>> {
        let pt = aead_open(key, ciphertext, &self.hash)?;
        self.mix_hash(ciphertext);
        Some(pt)
    }

    /// The transport keys once both messages are done: (initiator -> responder, back).
    pub fn transport_keys(&self) -> ([u8; 32], [u8; 32]) {
        let [send, recv] = kdf::<2>(&self.chaining_key, &[]);
        (send, recv)
    }
}

/// Fields of a handshake initiation to build (whitepaper §5.4.2).
pub struct Initiation<'a> {
    /// The initiator's sender index.
    pub sender_index: u32,
    /// The ephemeral public key sent in the clear.
    pub ephemeral: [u8; 32],
    /// DH(ephemeral, responder static), as the responder will compute it.
    pub ephemeral_shared: [u8; 32],
    /// The static public key sent encrypted.
    pub static_public: [u8; 32],
    /// DH(initiator static, responder static), as the responder will compute it.
    pub static_shared: [u8; 32],
    /// The TAI64N timestamp sent encrypted.
    pub timestamp: &'a [u8],
}

/// Builds an initiation (macs left zero: see [`seal_macs`]) and the transcript after it.
pub fn build_initiation(responder: &PublicKey, f: &Initiation<'_>) -> (Vec<u8>, Transcript) {
    let mut t = Transcript::start(responder);
    t.mix_public(&f.ephemeral);
    let key = t.mix_dh(&f.ephemeral_shared);
    let encrypted_static = t.seal(&key, &f.static_public);
    let key = t.mix_dh(&f.static_shared);
    let encrypted_timestamp = t.seal(&key, f.timestamp);
    let mut msg = vec![1, 0, 0, 0];
    msg.extend_from_slice(&f.sender_index.to_le_bytes());
    msg.extend_from_slice(&f.ephemeral);
    msg.extend_from_slice(&encrypted_static);
    msg.extend_from_slice(&encrypted_timestamp);
    msg.resize(msg.len() + 32, 0);
    (msg, t)
}

/// What a responder learns from a valid initiation.
pub struct ReceivedInitiation {
    /// The initiator's sender index.
    pub sender_index: u32,
    /// The initiator's ephemeral public key.
    pub ephemeral: PublicKey,
    /// The initiator's static public key.
    pub static_public: PublicKey,
    /// The transcript after the initiation.
    pub transcript: Transcript,
}

/// Opens an initiation as the responder with secret `secret` would; `None` if it does not
/// decrypt.
pub fn open_initiation(secret: &StaticSecret, msg: &[u8]) -> Option<ReceivedInitiation> {
    if msg.len() != layout::INIT_LEN || msg[0] != 1 {
        return None;
    }
    let public = PublicKey::from(secret);
    let sender_index = u32::from_le_bytes(msg[4..8].try_into().ok()?);
    let ephemeral: [u8; 32] = msg[8..40].try_into().ok()?;
    let ephemeral = PublicKey::from(ephemeral);
    let mut t = Transcript::start(&public);
    t.mix_public(ephemeral.as_bytes());
    let key = t.mix_dh(secret.diffie_hellman(&ephemeral).as_bytes());
    let static_bytes: [u8; 32] = t.open(&key, &msg[40..88])?.try_into().ok()?;
    let static_public = PublicKey::from(static_bytes);
    let key = t.mix_dh(secret.diffie_hellman(&static_public).as_bytes());
    t.open(&key, &msg[88..116])?;
    Some(ReceivedInitiation {
        sender_index,
        ephemeral,
        static_public,
        transcript: t,
    })
}

/// Fields of a handshake response to build (whitepaper §5.4.3).
pub struct Response {
    /// The responder's sender index.
    pub sender_index: u32,
    /// The receiver index (the initiator's sender index when valid).
    pub receiver_index: u32,
    /// The responder's ephemeral public key.
    pub ephemeral: [u8; 32],
    /// DH(responder ephemeral, initiator ephemeral).
    pub ephemeral_ephemeral: [u8; 32],
    /// DH(responder ephemeral, initiator static).
    pub ephemeral_static: [u8; 32],
    /// The pre-shared key (zeros when none).
    pub psk: [u8; 32],
}

/// Builds a response after `t` (macs left zero) and the transcript after it.
pub fn build_response(mut t: Transcript, f: &Response) -> (Vec<u8>, Transcript) {
    t.mix_public(&f.ephemeral);
    let [ck] = kdf::<1>(&t.chaining_key, &f.ephemeral_ephemeral);
    t.chaining_key = ck;
    let [ck] = kdf::<1>(&t.chaining_key, &f.ephemeral_static);
    t.chaining_key = ck;
    let [ck, tau, key] = kdf::<3>(&t.chaining_key, &f.psk);
    t.chaining_key = ck;
    t.mix_hash(&tau);
    let empty = t.seal(&key, &[]);
    let mut msg = vec![2, 0, 0, 0];
    msg.extend_from_slice(&f.sender_index.to_le_bytes());
    msg.extend_from_slice(&f.receiver_index.to_le_bytes());
    msg.extend_from_slice(&f.ephemeral);
    msg.extend_from_slice(&empty);
    msg.resize(msg.len() + 32, 0);
    (msg, t)
}

/// Opens a response as the initiator whose ephemeral and static secrets are given: the
/// transcript after it, or `None` if its empty AEAD does not verify.
pub fn open_response(
    t: &Transcript,
    ephemeral: &StaticSecret,
    static_secret: &StaticSecret,
    msg: &[u8],
) -> Option<Transcript> {
    if msg.len() != layout::RESP_LEN || msg[0] != 2 {
        return None;
    }
    let their: [u8; 32] = msg[12..44].try_into().ok()?;
    let their = PublicKey::from(their);
    // Sealing an empty plaintext is deterministic: the tag must equal the one received.
    let (expected, t) = build_response(
        t.clone(),
        &Response {
            sender_index: 0,
            receiver_index: 0,
            ephemeral: *their.as_bytes(),
            ephemeral_ephemeral: *ephemeral.diffie_hellman(&their).as_bytes(),
            ephemeral_static: *static_secret.diffie_hellman(&their).as_bytes(),
            psk: [0; 32],
        },
    );
    (expected[44..60] == msg[44..60]).then_some(t)
}

/// A transport data message (whitepaper §5.4.6) carrying `payload` under `key`.
pub fn seal_data(receiver_index: u32, counter: u64, key: &[u8; 32], payload: &[u8]) -> Vec<u8> {
    let mut nonce = [0u8; 12];
    nonce[4..].copy_from_slice(&counter.to_le_bytes());
    let ct = ChaCha20Poly1305::new(key.into())
        .encrypt(&nonce.into(), payload)
        .expect("sealing cannot fail");
    let mut msg = vec![4, 0, 0, 0];
    msg.extend_from_slice(&receiver_index.to_le_bytes());
    msg.extend_from_slice(&counter.to_le_bytes());
    msg.extend_from_slice(&ct);
    msg
}
