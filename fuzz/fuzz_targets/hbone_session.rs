#![no_main]
//! Whole HTTP/2 sessions against fipstun's HBONE server: the client preface, then frames the
//! input describes (SETTINGS; HEADERS and CONTINUATION with CONNECT requests whose pseudo
//! headers are right, missing, repeated or wrong, big header blocks; DATA, RST_STREAM, GOAWAY,
//! WINDOW_UPDATE, PING, PRIORITY, PUSH_PROMISE and arbitrary frame types), encoded here (HPACK
//! literals without indexing, plus static-table references and size updates). Random bytes
//! almost never make a valid preface, SETTINGS and HPACK block, so `hbone_connect` parses the
//! request head alone; here the frames reach the server's real path after TLS: h2 with our
//! settings, the connection loop (limits, keepalive, idle and drain timers), CONNECT parsing,
//! the `Handler`, and delivery, where the input accepts (then writes and reads the stream) or
//! rejects each CONNECT.
//!
//! The server runs through `HboneServer::serve_h2_for_fuzzing` (hbone's `fuzzing` feature:
//! the same code as an accepted connection, without the TLS handshake) over an in-memory
//! duplex, on a current-thread runtime with paused time, so timers fire as soon as everything
//! waits and each input ends deterministically. The server must answer with errors (status
//! codes, RST_STREAM, GOAWAY), never panic or hang.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use fipstun_fuzz::fixture;
use fipstun_hbone::wire::{Authority, HostnamePolicy};
use fipstun_hbone::{Decision, HboneServer, Rejection, ServerConfig, handler_fn};
use fipstun_identity::spiffe::SpiffeId;
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Frames per session at most.
const MAX_FRAMES: usize = 32;
/// Payload bytes per frame at most (frames may still claim more in `Raw`).
const MAX_PAYLOAD: usize = 20_000;
/// RFC 9113 §3.4: the client connection preface.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

#[derive(Arbitrary, Debug)]
struct Session {
    preface: Preface,
    /// Whether the server admits host names ending in `.svc.cluster.local` (the handler then
    /// forbids them, so nothing is resolved).
    hostnames: bool,
    /// What the handler decides for each CONNECT, in order (then Allow).
    decisions: Vec<Verdict>,
    /// What the application does with each delivered CONNECT, in order (then accept).
    answers: Vec<Answer>,
    frames: Vec<Frame>,
}

#[derive(Arbitrary, Debug)]
enum Preface {
    Valid,
    Missing,
    Corrupt(Vec<u8>),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Verdict {
    Allow,
    Unauthorized,
    Forbidden,
}

#[derive(Arbitrary, Debug)]
enum Answer {
    /// 200, then write these bytes, read once, and close.
    Accept(Vec<u8>),
    Reject(u8),
    /// Leave it unanswered (dropped with the session).
    Ignore,
}

/// A stream identifier: the session's current or next client stream, or any value.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Stream {
    Current,
    Next,
    Zero,
    Raw(u32),
}

#[derive(Arbitrary, Debug)]
enum Frame {
    Settings {
        ack: bool,
        params: Vec<(u16, u32)>,
    },
    /// HEADERS with `:method CONNECT` and `:authority` first, then `extra` fields.
    Connect {
        stream: Stream,
        target: Target,
        extra: Vec<Field>,
        end_stream: bool,
    },
    Headers {
        stream: Stream,
        fields: Vec<Field>,
        end_stream: bool,
        end_headers: bool,
        priority: Option<(u32, u8)>,
        padding: Option<u8>,
    },
    Continuation {
        stream: Stream,
        fields: Vec<Field>,
        end_headers: bool,
    },
    Data {
        stream: Stream,
        data: Vec<u8>,
        end_stream: bool,
        padding: Option<u8>,
    },
    RstStream {
        stream: Stream,
        code: u32,
    },
    GoAway {
        last_stream: u32,
        code: u32,
        debug: Vec<u8>,
    },
    WindowUpdate {
        stream: Stream,
        increment: u32,
    },
    Ping {
        ack: bool,
        data: [u8; 8],
    },
    Priority {
        stream: Stream,
        dependency: u32,
        weight: u8,
    },
    PushPromise {
        stream: Stream,
        promised: u32,
        fields: Vec<Field>,
    },
    Raw {
        kind: u8,
        flags: u8,
        stream: Stream,
        payload: Vec<u8>,
    },
    /// Let the server run until everything waits (time moves on when it does).
    Pause {
        millis: u16,
    },
}

#[derive(Arbitrary, Debug)]
enum Target {
    V4([u8; 4], u16),
    V6([u16; 8], u16),
    /// A name in the admitted suffix (`<label>.svc.cluster.local:<port>`).
    Service(String, u16),
    Text(String),
}

#[derive(Arbitrary, Debug)]
enum Field {
    Method(Method),
    Authority(Target),
    Scheme(String),
    Path(String),
    Protocol(String),
    Status(u16),
    Header(Name, Vec<u8>),
    /// A header with a value of `len` bytes (up to 70,000: past the 64 KiB list limit).
    Big(Name, u32),
    /// HPACK indexed field from the static table (RFC 7541 Appendix A), or beyond it.
    Indexed(u8),
    /// HPACK dynamic table size update.
    SizeUpdate(u32),
    /// Any bytes as part of the block.
    RawHpack(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
enum Method {
    Connect,
    Get,
    Post,
    Other(String),
}

#[derive(Arbitrary, Debug)]
enum Name {
    Baggage,
    TraceParent,
    Forwarded,
    ContentLength,
    Te,
    Connection,
    Host,
    Other(String),
}

impl Name {
    fn as_bytes(&self) -> &[u8] {
        match self {
            Self::Baggage => b"baggage",
            Self::TraceParent => b"traceparent",
            Self::Forwarded => b"forwarded",
            Self::ContentLength => b"content-length",
            Self::Te => b"te",
            Self::Connection => b"connection",
            Self::Host => b"host",
            Self::Other(s) => s.as_bytes(),
        }
    }
}

impl Target {
    fn text(&self) -> String {
        match self {
            Self::V4(ip, port) => {
                SocketAddr::new(IpAddr::V4(Ipv4Addr::from(*ip)), *port).to_string()
            }
            Self::V6(seg, port) => {
                SocketAddr::new(IpAddr::V6(Ipv6Addr::from(*seg)), *port).to_string()
            }
            Self::Service(label, port) => format!("{label}.svc.cluster.local:{port}"),
            Self::Text(s) => s.clone(),
        }
    }
}

/// RFC 7541 §5.1: an integer with an `n`-bit prefix, the prefix's high bits set to `flags`.
fn hpack_int(out: &mut Vec<u8>, flags: u8, n: u32, mut value: u64) {
    let max = (1u64 << n) - 1;
    if value < max {
        out.push(flags | value as u8);
        return;
    }
    out.push(flags | max as u8);
    value -= max;
    while value >= 128 {
        out.push((value % 128) as u8 | 0x80);
        value /= 128;
    }
    out.push(value as u8);
}

/// RFC 7541 §6.2.2: literal header field without indexing, new name, no Huffman coding.
fn hpack_literal(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.push(0x00);
    hpack_int(out, 0, 7, name.len() as u64);
    out.extend_from_slice(name);
    hpack_int(out, 0, 7, value.len() as u64);
    out.extend_from_slice(value);
}

fn encode_fields(fields: &[Field]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in fields.iter().take(16) {
        match f {
            Field::Method(m) => {
                let m = match m {
                    Method::Connect => "CONNECT",
                    Method::Get => "GET",
                    Method::Post => "POST",
                    Method::Other(s) => s,
                };
                hpack_literal(&mut out, b":method", m.as_bytes());
            }
            Field::Authority(t) => hpack_literal(&mut out, b":authority", t.text().as_bytes()),
            Field::Scheme(s) => hpack_literal(&mut out, b":scheme", s.as_bytes()),
            Field::Path(s) => hpack_literal(&mut out, b":path", s.as_bytes()),
            Field::Protocol(s) => hpack_literal(&mut out, b":protocol", s.as_bytes()),
            Field::Status(s) => hpack_literal(&mut out, b":status", s.to_string().as_bytes()),
            Field::Header(n, v) => hpack_literal(&mut out, n.as_bytes(), v),
            Field::Big(n, len) => {
                let value = vec![b'a'; (*len % 70_000) as usize];
                hpack_literal(&mut out, n.as_bytes(), &value);
            }
            Field::Indexed(i) => hpack_int(&mut out, 0x80, 7, u64::from(*i)),
            Field::SizeUpdate(s) => hpack_int(&mut out, 0x20, 5, u64::from(*s)),
            Field::RawHpack(b) => out.extend(b.iter().take(256)),
        }
    }
    out
}

/// Frame types and flags (RFC 9113 §6).
mod kind {
    pub const DATA: u8 = 0x0;
    pub const HEADERS: u8 = 0x1;
    pub const PRIORITY: u8 = 0x2;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const PUSH_PROMISE: u8 = 0x5;
    pub const PING: u8 = 0x6;
    pub const GOAWAY: u8 = 0x7;
    pub const WINDOW_UPDATE: u8 = 0x8;
    pub const CONTINUATION: u8 = 0x9;
    pub const END_STREAM: u8 = 0x1;
    pub const ACK: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;
    pub const PADDED: u8 = 0x8;
    pub const PRIORITY_FLAG: u8 = 0x20;
}

/// RFC 9113 §4.1: the 9-byte frame header, then the payload.
fn frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    let len = payload.len().min(MAX_PAYLOAD) as u32;
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(&payload[..len as usize]);
}

/// With the PADDED flag: pad length, payload, padding (RFC 9113 §6.1).
fn padded(payload: Vec<u8>, padding: Option<u8>) -> (u8, Vec<u8>) {
    match padding {
        None => (0, payload),
        Some(p) => {
            let mut out = vec![p];
            out.extend(payload);
            out.extend(std::iter::repeat_n(0, usize::from(p)));
            (kind::PADDED, out)
        }
    }
}

/// Client stream numbering: odd, rising.
struct Streams {
    current: u32,
}

impl Streams {
    fn id(&mut self, s: Stream) -> u32 {
        match s {
            Stream::Current => self.current.max(1),
            Stream::Next => {
                self.current = if self.current == 0 {
                    1
                } else {
                    self.current.saturating_add(2)
                };
                self.current
            }
            Stream::Zero => 0,
            Stream::Raw(id) => id,
        }
    }
}

fn encode(f: &Frame, streams: &mut Streams, out: &mut Vec<u8>) {
    match f {
        Frame::Settings { ack, params } => {
            let mut p = Vec::new();
            for (id, value) in params.iter().take(16) {
                p.extend_from_slice(&id.to_be_bytes());
                p.extend_from_slice(&value.to_be_bytes());
            }
            let flags = if *ack { kind::ACK } else { 0 };
            frame(out, kind::SETTINGS, flags, 0, &p);
        }
        Frame::Connect {
            stream,
            target,
            extra,
            end_stream,
        } => {
            let mut block = Vec::new();
            hpack_literal(&mut block, b":method", b"CONNECT");
            hpack_literal(&mut block, b":authority", target.text().as_bytes());
            block.extend(encode_fields(extra));
            let mut flags = kind::END_HEADERS;
            if *end_stream {
                flags |= kind::END_STREAM;
            }
            let id = streams.id(*stream);
            frame(out, kind::HEADERS, flags, id, &block);
        }
        Frame::Headers {
            stream,
            fields,
            end_stream,
            end_headers,
            priority,
            padding,
        } => {
            let mut p = Vec::new();
            let mut flags = 0;
            if let Some((dep, weight)) = priority {
                p.extend_from_slice(&dep.to_be_bytes());
                p.push(*weight);
                flags |= kind::PRIORITY_FLAG;
            }
            p.extend(encode_fields(fields));
            let (pad_flag, p) = padded(p, *padding);
            flags |= pad_flag;
            if *end_stream {
                flags |= kind::END_STREAM;
            }
            if *end_headers {
                flags |= kind::END_HEADERS;
            }
            let id = streams.id(*stream);
            frame(out, kind::HEADERS, flags, id, &p);
        }
        Frame::Continuation {
            stream,
            fields,
            end_headers,
        } => {
            let flags = if *end_headers { kind::END_HEADERS } else { 0 };
            let id = streams.id(*stream);
            frame(out, kind::CONTINUATION, flags, id, &encode_fields(fields));
        }
        Frame::Data {
            stream,
            data,
            end_stream,
            padding,
        } => {
            let (mut flags, p) = padded(data.clone(), *padding);
            if *end_stream {
                flags |= kind::END_STREAM;
            }
            let id = streams.id(*stream);
            frame(out, kind::DATA, flags, id, &p);
        }
        Frame::RstStream { stream, code } => {
            let id = streams.id(*stream);
            frame(out, kind::RST_STREAM, 0, id, &code.to_be_bytes());
        }
        Frame::GoAway {
            last_stream,
            code,
            debug,
        } => {
            let mut p = last_stream.to_be_bytes().to_vec();
            p.extend_from_slice(&code.to_be_bytes());
            p.extend(debug.iter().take(64));
            frame(out, kind::GOAWAY, 0, 0, &p);
        }
        Frame::WindowUpdate { stream, increment } => {
            let id = streams.id(*stream);
            frame(out, kind::WINDOW_UPDATE, 0, id, &increment.to_be_bytes());
        }
        Frame::Ping { ack, data } => {
            let flags = if *ack { kind::ACK } else { 0 };
            frame(out, kind::PING, flags, 0, data);
        }
        Frame::Priority {
            stream,
            dependency,
            weight,
        } => {
            let mut p = dependency.to_be_bytes().to_vec();
            p.push(*weight);
            let id = streams.id(*stream);
            frame(out, kind::PRIORITY, 0, id, &p);
        }
        Frame::PushPromise {
            stream,
            promised,
            fields,
        } => {
            let mut p = promised.to_be_bytes().to_vec();
            p.extend(encode_fields(fields));
            let id = streams.id(*stream);
            frame(out, kind::PUSH_PROMISE, kind::END_HEADERS, id, &p);
        }
        Frame::Raw {
            kind,
            flags,
            stream,
            payload,
        } => {
            let id = streams.id(*stream);
            frame(out, *kind, *flags, id, payload);
        }
        Frame::Pause { .. } => {}
    }
}

fn rejection(code: u8) -> Rejection {
    match code % 4 {
        0 => Rejection::BadRequest,
        1 => Rejection::Unauthorized,
        2 => Rejection::Forbidden,
        _ => Rejection::Unreachable,
    }
}

async fn run(session: Session) {
    let f = fixture();
    let decisions: Vec<Verdict> = session.decisions.iter().take(32).copied().collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    // Host names are admitted by the policy but never resolved: the handler forbids them.
    let handler = handler_fn(move |ctx: &fipstun_hbone::ConnectContext<'_>| {
        if matches!(ctx.request.target(), Authority::Host { .. }) {
            return Decision::Forbidden;
        }
        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match decisions.get(i) {
            None | Some(Verdict::Allow) => Decision::Allow,
            Some(Verdict::Unauthorized) => Decision::Unauthorized,
            Some(Verdict::Forbidden) => Decision::Forbidden,
        }
    });
    let hostnames = if session.hostnames {
        HostnamePolicy::AllowSuffixes(vec!["svc.cluster.local".to_string()])
    } else {
        HostnamePolicy::Reject
    };
    let config = ServerConfig::default().with_hostnames(hostnames);
    let (server, mut incoming) =
        HboneServer::with_delivery_from_rustls((*f.server).clone(), config, handler, 8)
            .expect("the fixture's config is FIPS");

    let (client, server_io) = tokio::io::duplex(64 * 1024);
    let (mut from_server, mut to_server) = tokio::io::split(client);
    // The server's output is read and dropped, so it never blocks on a full pipe.
    tokio::spawn(async move {
        let _ = tokio::io::copy(&mut from_server, &mut tokio::io::sink()).await;
    });
    let answers = session.answers;
    tokio::spawn(async move {
        let mut answers = answers.into_iter().take(32);
        // Unanswered CONNECTs stay pending until the session's runtime goes away.
        let mut ignored = Vec::new();
        while let Some(pending) = incoming.accept().await {
            match answers.next() {
                None => drop(pending.accept()),
                Some(Answer::Accept(bytes)) => {
                    if let Ok(mut stream) = pending.accept() {
                        tokio::spawn(async move {
                            let _ = stream.write_all(&bytes[..bytes.len().min(4096)]).await;
                            let mut buf = [0u8; 1024];
                            let _ = stream.read(&mut buf).await;
                        });
                    }
                }
                Some(Answer::Reject(code)) => pending.reject(rejection(code)),
                Some(Answer::Ignore) => ignored.push(pending),
            }
        }
    });

    let peer = SpiffeId::parse("spiffe://fuzz.test/client").expect("an ID");
    let remote: SocketAddr = "192.0.2.7:40000".parse().expect("an address");
    let serve = server.serve_h2_for_fuzzing(server_io, peer, remote);
    let client = async move {
        match &session.preface {
            Preface::Valid => {
                let _ = to_server.write_all(PREFACE).await;
            }
            Preface::Missing => {}
            Preface::Corrupt(b) => {
                let _ = to_server.write_all(&b[..b.len().min(64)]).await;
            }
        }
        let mut streams = Streams { current: 0 };
        for f in session.frames.iter().take(MAX_FRAMES) {
            if let Frame::Pause { millis } = f {
                tokio::time::sleep(Duration::from_millis(u64::from(*millis))).await;
                continue;
            }
            let mut bytes = Vec::new();
            encode(f, &mut streams, &mut bytes);
            if to_server.write_all(&bytes).await.is_err() {
                break;
            }
            tokio::task::yield_now().await;
        }
        // Let the server answer everything, then close our side.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let _ = to_server.shutdown().await;
    };
    let (served, ()) = tokio::join!(serve, client);
    drop(served);
}

fuzz_target!(|session: Session| {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a runtime");
    // Paused time moves on whenever every task waits: keepalive (10 s + 20 s) and idle timers
    // end any session that stalls. An hour of virtual time is far past all of them.
    let done =
        rt.block_on(async { tokio::time::timeout(Duration::from_secs(3600), run(session)).await });
    assert!(
        done.is_ok(),
        "the session did not end within an hour of server time"
    );
});
