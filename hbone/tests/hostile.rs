//! Hostile bytes before authentication: garbage instead of a ClientHello, a truncated
//! handshake, an HTTP/2 preface without TLS. Each connection is closed cleanly (EOF or reset,
//! within the handshake timeout) and the server keeps serving real clients.

mod common;

use std::time::Duration;

use common::*;
use fipstun_hbone::{AllowAll, ClientConfig, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Send `bytes`, then wait for the server to close: Ok(n) bytes it answered (a TLS alert at
/// most) before EOF or reset. Fails the test if the server keeps the connection open.
async fn send_and_wait_close(addr: std::net::SocketAddr, bytes: &[u8]) -> usize {
    let mut s = tcp(addr).await;
    s.write_all(bytes).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the server kept a hostile connection open");
    got.len()
}

/// A real ClientHello from a rustls client, to truncate.
fn client_hello() -> Vec<u8> {
    let mut conn = rustls::ClientConnection::new(
        std::sync::Arc::new(
            rustls::ClientConfig::builder_with_provider(
                fipstun_identity::policy::CryptoPolicy::default().provider(),
            )
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth(),
        ),
        "node.test".try_into().unwrap(),
    )
    .unwrap();
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).unwrap();
    hello
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_handshakes_are_closed_and_the_server_keeps_serving() {
    let pki = Pki::new();
    let config = ServerConfig::default().with_handshake_timeout(Duration::from_millis(500));
    let running = start_server(&pki, config, AllowAll).await;
    let (upstream, _) = echo_upstream().await;

    // Garbage instead of a ClientHello: at most a TLS alert comes back.
    let answered = send_and_wait_close(running.addr, &[0x42; 1024]).await;
    assert!(answered <= 7, "garbage got {answered} bytes back");
    // An HTTP/2 preface without TLS.
    let answered = send_and_wait_close(
        running.addr,
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00",
    )
    .await;
    assert!(answered <= 7, "cleartext h2 got {answered} bytes back");
    // A truncated ClientHello: nothing more arrives, the handshake timeout cuts it.
    let hello = client_hello();
    assert!(hello.len() > 100);
    send_and_wait_close(running.addr, &hello[..hello.len() / 2]).await;
    // A record header announcing more than a TLS record may hold.
    send_and_wait_close(running.addr, &[0x16, 0x03, 0x01, 0xff, 0xff, 0x01]).await;

    // A real client still gets through, on a fresh connection.
    let client = pki.client(ClientConfig::default());
    let mut s = client
        .connect(
            upstream,
            &fipstun_hbone::HboneRoute::new(running.addr, server_id()),
        )
        .await
        .unwrap();
    echo_once(&mut s, b"still serving").await;
    let m = running.server.metrics();
    let failures: u64 = m.handshake_failures.iter().map(|(_, n)| n).sum();
    assert!(failures >= 4, "{m:?}");
    assert_eq!(
        m.connections_opened, 1,
        "only the real client got a connection"
    );
}
