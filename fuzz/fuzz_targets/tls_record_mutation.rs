#![no_main]
//! TLS records mutated in flight: a real handshake between our FIPS client and server configs
//! (the fixture's, with SPIFFE verifiers, as every fipstun connection uses), run in memory
//! record by record, where the input names records by direction and position and says how to
//! change each (flip bytes, truncate, duplicate, drop, insert bytes, or rewrite the type,
//! version or length header). `tls_server` / `tls_client` feed random bytes to a fresh
//! connection and rarely get past the first message; here every later flight (certificate,
//! CertificateVerify, Finished, application data, alerts) is reached in a valid state and then
//! broken in one place. Never panics; both ends finish in a clean error or success, and with no
//! effective mutation the handshake must succeed and carry data both ways.
use fipstun_fuzz::fixture;
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use rustls::{ClientConnection, ServerConnection};

/// Rounds of (client flight, server flight) before giving up; a handshake needs three, data
/// and alerts a few more.
const MAX_ROUNDS: usize = 8;
/// Mutations per input: more only adds time.
const MAX_MUTATIONS: usize = 6;
/// TLS record header: type, legacy version, length (RFC 8446 §5.1).
const HEADER_LEN: usize = 5;

#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    ClientToServer,
    ServerToClient,
}

#[derive(Arbitrary, Debug)]
struct Mutation {
    direction: Direction,
    /// Which record in that direction (0 is the first ever sent).
    record: u8,
    op: Op,
}

#[derive(Arbitrary, Debug)]
enum Op {
    Flip {
        at: u16,
        mask: u8,
    },
    Truncate {
        keep: u16,
    },
    Duplicate,
    Drop,
    Insert {
        at: u16,
        bytes: Vec<u8>,
    },
    SetType(u8),
    SetVersion(u16),
    SetLength(u16),
    /// A whole extra record before this one.
    Prepend(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
struct Input {
    mutations: Vec<Mutation>,
    /// Application data the client sends once the handshake is done (the server echoes it).
    payload: Vec<u8>,
}

/// Splits a flight into records by their length headers; a trailing partial record is kept
/// as one piece.
fn records(mut bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let len = match bytes.get(3..HEADER_LEN) {
            Some(l) => HEADER_LEN + usize::from(u16::from_be_bytes([l[0], l[1]])),
            None => bytes.len(),
        };
        let (record, rest) = bytes.split_at(len.min(bytes.len()));
        out.push(record.to_vec());
        bytes = rest;
    }
    out
}

fn mutate(record: Vec<u8>, op: &Op) -> Vec<Vec<u8>> {
    let mut r = record;
    let at = |i: u16, len: usize| usize::from(i) % len.max(1);
    match op {
        Op::Flip { at: i, mask } => {
            if !r.is_empty() {
                let i = at(*i, r.len());
                r[i] ^= mask;
            }
        }
        Op::Truncate { keep } => r.truncate(usize::from(*keep) % (r.len() + 1)),
        Op::Duplicate => return vec![r.clone(), r],
        Op::Drop => return Vec::new(),
        Op::Insert { at: i, bytes } => {
            let i = at(*i, r.len() + 1);
            let tail = r.split_off(i.min(r.len()));
            r.extend(bytes.iter().take(256));
            r.extend(tail);
        }
        Op::SetType(t) => {
            if let Some(b) = r.first_mut() {
                *b = *t;
            }
        }
        Op::SetVersion(v) => {
            if r.len() >= 3 {
                r[1..3].copy_from_slice(&v.to_be_bytes());
            }
        }
        Op::SetLength(l) => {
            if r.len() >= HEADER_LEN {
                r[3..5].copy_from_slice(&l.to_be_bytes());
            }
        }
        Op::Prepend(extra) => return vec![extra.iter().take(256).copied().collect(), r],
    }
    vec![r]
}

/// One direction of the wire: counts records and applies the mutations aimed at them.
struct Wire<'a> {
    direction: Direction,
    sent: usize,
    mutations: &'a [Mutation],
    /// Whether any mutation changed a byte on the wire.
    changed: bool,
}

impl Wire<'_> {
    fn carry(&mut self, flight: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(flight.len());
        for record in records(flight) {
            let index = self.sent;
            self.sent += 1;
            let mut pieces = vec![record.clone()];
            for m in self.mutations.iter().take(MAX_MUTATIONS) {
                if m.direction == self.direction && usize::from(m.record) == index {
                    pieces = pieces.into_iter().flat_map(|p| mutate(p, &m.op)).collect();
                }
            }
            let joined = pieces.concat();
            self.changed |= joined != record;
            out.extend(joined);
        }
        out
    }
}

/// Everything a side wants to send now (its flight, or an alert after an error).
fn drain<D>(conn: &mut rustls::ConnectionCommon<D>) -> Vec<u8> {
    let mut out = Vec::new();
    while conn.wants_write() {
        match conn.write_tls(&mut out) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    out
}

/// Gives `bytes` to a side; false once it has failed.
fn deliver<D>(conn: &mut rustls::ConnectionCommon<D>, mut bytes: &[u8]) -> bool {
    while !bytes.is_empty() {
        match conn.read_tls(&mut bytes) {
            Ok(0) => break,
            Ok(_) => {}
            Err(_) => return false,
        }
        if conn.process_new_packets().is_err() {
            return false;
        }
    }
    true
}

fn read_plaintext<D>(conn: &mut rustls::ConnectionCommon<D>) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = std::io::Read::read(&mut conn.reader(), &mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    out
}

fuzz_target!(|input: Input| {
    let f = fixture();
    let name = "fuzz.test".try_into().expect("a server name");
    let mut client = ClientConnection::new(f.client.clone(), name).expect("client");
    let mut server = ServerConnection::new(f.server.clone()).expect("server");
    let mut up = Wire {
        direction: Direction::ClientToServer,
        sent: 0,
        mutations: &input.mutations,
        changed: false,
    };
    let mut down = Wire {
        direction: Direction::ServerToClient,
        ..up
    };
    let payload = &input.payload[..input.payload.len().min(1024)];
    let (mut client_ok, mut server_ok) = (true, true);
    let mut sent_payload = false;
    let (mut echoed, mut received) = (Vec::new(), Vec::new());
    for _ in 0..MAX_ROUNDS {
        if client_ok && !client.is_handshaking() && !sent_payload {
            sent_payload = true;
            let _ = std::io::Write::write_all(&mut client.writer(), payload);
        }
        let flight = up.carry(&drain(&mut client));
        server_ok = server_ok && deliver(&mut server, &flight);
        if server_ok && !server.is_handshaking() {
            let data = read_plaintext(&mut server);
            let _ = std::io::Write::write_all(&mut server.writer(), &data);
            received.extend(data);
        }
        let flight = down.carry(&drain(&mut server));
        client_ok = client_ok && deliver(&mut client, &flight);
        if client_ok && !client.is_handshaking() {
            echoed.extend(read_plaintext(&mut client));
        }
        if !client_ok && !server_ok {
            break;
        }
    }
    if !up.changed && !down.changed {
        assert!(
            client_ok && server_ok,
            "an untouched handshake must succeed"
        );
        assert!(!client.is_handshaking() && !server.is_handshaking());
        assert_eq!(received, payload, "the server must get the client's data");
        assert_eq!(echoed, payload, "the client must get the echo");
    }
});
