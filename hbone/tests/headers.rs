//! Oversized CONNECT header blocks from an authenticated client: the server refuses them in
//! HTTP/2 (431 for a block over SETTINGS_MAX_HEADER_LIST_SIZE, GOAWAY ENHANCE_YOUR_CALM for
//! abuse) before the request reaches the handler, never dials upstream, and keeps serving.
//!
//! The server advertises a 64 KiB header list limit (`MAX_HEADER_LIST_BYTES` in the crate) and
//! 1 MiB frames. h2 0.4 then answers:
//! - decoded list > 64 KiB: 431 with END_STREAM on that stream, the connection stays up;
//! - decoded list > 4 × 64 KiB (h2's abuse multiplier): GOAWAY ENHANCE_YOUR_CALM;
//! - more CONTINUATION frames than a full-size list needs (5 here): GOAWAY ENHANCE_YOUR_CALM.
//!
//! Without the limit in the server's h2 builder, h2's default (16 MiB) applies: the 431 and
//! the GOAWAY turn into 200s and upstream dials, and a short CONTINUATION run (8 frames) is
//! let through; these tests fail (checked by removing the limit).

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use fipstun_hbone::{ClientConfig, ConnectContext, ConnectRequest, Decision, ServerConfig};
use h2::client::SendRequest;
use http::header::{HeaderName, HeaderValue};
use http::{Request, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A handler that allows everything and counts how often it was asked.
fn counting(calls: Arc<AtomicUsize>) -> impl Fn(&ConnectContext<'_>) -> Decision + Send + Sync {
    move |_: &ConnectContext<'_>| {
        calls.fetch_add(1, Ordering::SeqCst);
        Decision::Allow
    }
}

/// Send one CONNECT on `send` and return the response status (or h2's error).
async fn status_of(send: &SendRequest<Bytes>, req: Request<()>) -> Result<StatusCode, h2::Error> {
    let mut send = send.clone().ready().await?;
    let (resp, _body) = send.send_request(req, false)?;
    let resp = tokio::time::timeout(Duration::from_secs(10), resp)
        .await
        .expect("no answer to the CONNECT")?;
    Ok(resp.status())
}

/// A normal CONNECT through `send` to the echo `target`: 200, then `msg` comes back.
async fn tunnel_echo(send: &SendRequest<Bytes>, target: SocketAddr, msg: &'static [u8]) {
    let mut ready = send.clone().ready().await.unwrap();
    let (resp, mut up) = ready
        .send_request(ConnectRequest::new(target).to_http(), false)
        .unwrap();
    let resp = resp.await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    up.send_data(Bytes::from_static(msg), true).unwrap();
    let mut body = resp.into_body();
    let mut back = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        body.flow_control().release_capacity(chunk.len()).unwrap();
        back.extend_from_slice(&chunk);
    }
    assert_eq!(back, msg);
}

fn with_header(target: SocketAddr, name: &'static str, value_len: usize) -> Request<()> {
    let mut req = ConnectRequest::new(target).to_http();
    req.headers_mut().insert(
        HeaderName::from_static(name),
        HeaderValue::from_str(&"a".repeat(value_len)).unwrap(),
    );
    req
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_block_over_the_limit_gets_431_and_the_connection_keeps_serving() {
    let pki = Pki::new();
    let (target, accepted) = echo_upstream().await;
    let calls = Arc::new(AtomicUsize::new(0));
    let srv = start_server(&pki, ServerConfig::default(), counting(calls.clone())).await;
    let (send, driver) = raw_h2(&pki, tcp(srv.addr).await).await;

    // A normal CONNECT first. Its answer also means the server's SETTINGS (1 MiB frames) are
    // applied, so each oversized block below goes out as one HEADERS frame, not a CONTINUATION
    // run (which would hit the CONTINUATION limit instead).
    tunnel_echo(&send, target, b"first").await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(accepted.load(Ordering::SeqCst), 1);

    // One header of 100 KiB.
    let big = with_header(target, "x-pad", 100 * 1024);
    // Many small headers: 3,000 × (8 + 1 + 32 bytes of RFC 7541 §4.1 entry overhead) ≈ 120 KB.
    let mut many = ConnectRequest::new(target).to_http();
    for i in 0..3000 {
        many.headers_mut().append(
            HeaderName::from_bytes(format!("x-h-{i:04}").as_bytes()).unwrap(),
            HeaderValue::from_static("v"),
        );
    }
    for (what, req) in [("one 100 KiB header", big), ("3,000 headers", many)] {
        let status = status_of(&send, req).await;
        assert_eq!(
            status.as_ref().ok(),
            Some(&StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
            "{what}: {status:?}"
        );
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "an oversized CONNECT reached the handler"
    );
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "an oversized CONNECT was dialed"
    );

    // The same connection still works: the server kept its HPACK state in step.
    tunnel_echo(&send, target, b"after").await;
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
    let m = srv.server.metrics();
    assert_eq!((m.connections_opened, m.streams_opened), (1, 2), "{m:?}");
    driver.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_block_far_over_the_limit_ends_the_connection_with_goaway() {
    let pki = Pki::new();
    let (target, accepted) = echo_upstream().await;
    let calls = Arc::new(AtomicUsize::new(0));
    let srv = start_server(&pki, ServerConfig::default(), counting(calls.clone())).await;
    let (send, driver) = raw_h2(&pki, tcp(srv.addr).await).await;
    tunnel_echo(&send, target, b"first").await;

    // 300 KiB decoded: past h2's abuse limit of 4 × the advertised 64 KiB.
    let err = status_of(&send, with_header(target, "x-pad", 300 * 1024))
        .await
        .expect_err("a 300 KiB header block was answered");
    assert!(err.is_go_away() && err.is_remote(), "{err:?}");
    assert_eq!(err.reason(), Some(h2::Reason::ENHANCE_YOUR_CALM), "{err:?}");
    tokio::time::timeout(Duration::from_secs(5), driver)
        .await
        .expect("the client connection outlived the GOAWAY")
        .unwrap();
    eventually("server closed the connection", || {
        srv.server.metrics().connections_active == 0
    })
    .await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(accepted.load(Ordering::SeqCst), 1);

    // A fresh client right after.
    let client = pki.client(ClientConfig::default());
    let mut s = client
        .connect(
            target,
            &fipstun_hbone::HboneRoute::new(srv.addr, server_id()),
        )
        .await
        .unwrap();
    echo_once(&mut s, b"still serving").await;
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

// Hand-made HTTP/2 (RFC 9113 §4.1 frame layout, §6 frame types) for what `h2` will not send.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;
/// RFC 9113 §7 error code ENHANCE_YOUR_CALM.
const ENHANCE_YOUR_CALM: u32 = 0xb;

fn frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    let len = payload.len() as u32;
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
}

/// RFC 7541 §5.2 string literal, no Huffman, shorter than 127 bytes.
fn hpack_string(out: &mut Vec<u8>, s: &[u8]) {
    assert!(s.len() < 127);
    out.push(s.len() as u8);
    out.extend_from_slice(s);
}

/// RFC 7541 §6.2.2 literal without indexing; `name_index` 0 means a literal name.
fn hpack_literal(out: &mut Vec<u8>, name_index: u8, name: &[u8], value: &[u8]) {
    assert!(name_index < 15);
    out.push(name_index);
    if name_index == 0 {
        hpack_string(out, name);
    }
    hpack_string(out, value);
}

/// Open a connection, send a CONNECT whose header block never ends (HEADERS without
/// END_HEADERS, then `frames` CONTINUATION frames of one small header each, none with
/// END_HEADERS), and return the GOAWAY (last stream id, error code) the server answered with
/// before it closed the connection.
async fn continuation_run(
    pki: &Pki,
    server: SocketAddr,
    target: SocketAddr,
    frames: usize,
) -> Option<(u32, u32)> {
    let mut tls = raw_tls(pki, tcp(server).await).await;
    let mut out = PREFACE.to_vec();
    frame(&mut out, SETTINGS, 0, 0, &[]);
    let mut block = Vec::new();
    hpack_literal(&mut block, 2, b":method", b"CONNECT"); // static table 2 = :method
    hpack_literal(&mut block, 1, b":authority", target.to_string().as_bytes()); // 1 = :authority
    frame(&mut out, HEADERS, 0, 1, &block);
    let mut one = Vec::new();
    hpack_literal(&mut one, 0, b"x-flood", b"v");
    for _ in 0..frames {
        frame(&mut out, CONTINUATION, 0, 1, &one);
    }
    // One TLS record, so the server has read all of it when it gives up (no RST from unread
    // data racing the GOAWAY).
    assert!(out.len() < 16 * 1024);
    tls.write_all(&out).await.unwrap();
    tls.flush().await.unwrap();

    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match tls.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the server kept a run of {frames} CONTINUATION frames open"));

    let mut goaway = None;
    let mut rest = &got[..];
    while rest.len() >= 9 {
        let len = u32::from_be_bytes([0, rest[0], rest[1], rest[2]]) as usize;
        let (kind, payload) = (rest[3], &rest[9..(9 + len).min(rest.len())]);
        if kind == GOAWAY && payload.len() >= 8 {
            let last = u32::from_be_bytes(payload[..4].try_into().unwrap()) & 0x7fff_ffff;
            let code = u32::from_be_bytes(payload[4..8].try_into().unwrap());
            goaway = Some((last, code));
        }
        rest = &rest[(9 + len).min(rest.len())..];
    }
    goaway
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continuation_flood_is_cut_with_goaway() {
    let pki = Pki::new();
    let (target, accepted) = echo_upstream().await;
    let calls = Arc::new(AtomicUsize::new(0));
    let srv = start_server(&pki, ServerConfig::default(), counting(calls.clone())).await;

    // 8 frames: just past the 5 a 64 KiB list needs at 1 MiB frames (h2's default limit of
    // 16 MiB would allow 20, so this one fails if the server's limit goes missing). 500: the
    // classic flood, about 10 KB of frames.
    for frames in [8, 500] {
        // Last stream 0: stream 1 was never processed, so a client may retry it elsewhere.
        assert_eq!(
            continuation_run(&pki, srv.addr, target, frames).await,
            Some((0, ENHANCE_YOUR_CALM)),
            "{frames} CONTINUATION frames"
        );
    }
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    assert_eq!(accepted.load(Ordering::SeqCst), 0);
    eventually("server closed the connections", || {
        srv.server.metrics().connections_active == 0
    })
    .await;

    let client = pki.client(ClientConfig::default());
    let mut s = client
        .connect(
            target,
            &fipstun_hbone::HboneRoute::new(srv.addr, server_id()),
        )
        .await
        .unwrap();
    echo_once(&mut s, b"still serving").await;
    assert_eq!(srv.server.metrics().connections_opened, 3);
}
