//! TCP faults around an established tunnel: a client that half-closes while the upstream keeps
//! sending, a client that stalls while the upstream pushes, and resets (SO_LINGER 0) from the
//! client and from the upstream mid-stream. The silent client cut by the handshake timeout and
//! a dead or frozen client are in `lifecycle.rs`; a flood of silent clients in `flood.rs`.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use fipstun_hbone::{AllowAll, ClientConfig, ConnectRequest, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_closed_client_keeps_receiving_until_the_upstream_closes() {
    // 8 MiB is twice the 4 MiB stream window: the server must keep sending (and the client
    // keep opening the window) on a stream whose client side has ended. A server that tore
    // the tunnel down at the client's END_STREAM, or stopped the copy towards the client once
    // the other direction finished, cuts this short.
    const REPLY: u64 = 8 << 20;
    let pki = Pki::new();
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = l.local_addr().unwrap();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut request = Vec::new();
        // Returns only at the client's FIN, carried as END_STREAM and then a TCP half-close.
        s.read_to_end(&mut request).await.unwrap();
        let sent = send_pattern(&mut s, REPLY).await;
        s.shutdown().await.unwrap();
        done_tx.send((request, sent)).unwrap();
    });
    let srv = start_server(&pki, ServerConfig::default(), AllowAll).await;
    let client = pki.client(ClientConfig::default());
    let mut s = client
        .connect(
            target,
            &fipstun_hbone::HboneRoute::new(srv.addr, server_id()),
        )
        .await
        .unwrap();
    s.write_all(b"request, then FIN").await.unwrap();
    s.shutdown().await.unwrap();
    let (n, got) = tokio::time::timeout(Duration::from_secs(20), hash_to_eof(&mut s))
        .await
        .expect("the reply after a half-close did not finish");
    let (request, sent) = done_rx.await.unwrap();
    assert_eq!(request, b"request, then FIN");
    assert_eq!(n, REPLY);
    assert_eq!(got, sent, "the reply was corrupted");
    drop(s);
    eventually("server stream closed", || {
        srv.server.metrics().streams_active == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_client_is_cut_by_keepalive_while_the_upstream_pushes() {
    // The client stops reading (its relay freezes: no FIN, no RST) while the upstream keeps
    // pushing, so the server's copy towards the client is blocked on flow control and its
    // PING sits behind full socket buffers. The keepalive must still end the connection and
    // with it the upstream socket (the upstream's blocked write then fails).
    let pki = Pki::new();
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = l.local_addr().unwrap();
    let (ended_tx, ended_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let chunk = vec![0x5a; 64 * 1024];
        let mut written = 0u64;
        while s.write_all(&chunk).await.is_ok() {
            written += chunk.len() as u64;
        }
        ended_tx.send(written).unwrap();
    });
    let keepalive = (Duration::from_millis(100), Duration::from_millis(300));
    let srv = start_server(
        &pki,
        ServerConfig::default().with_keepalive(keepalive.0, keepalive.1),
        AllowAll,
    )
    .await;
    let proxy = Proxy::start(srv.addr).await;
    let client = pki.client(ClientConfig::default());
    let mut s = client
        .connect(
            target,
            &fipstun_hbone::HboneRoute::new(proxy.addr, server_id()),
        )
        .await
        .unwrap();
    let mut buf = vec![0u8; 256 * 1024];
    s.read_exact(&mut buf).await.unwrap();
    proxy.set(ProxyState::Freeze);
    // Bound on a hang only: the keepalive needs interval + timeout (0.4 s) to notice.
    let written = tokio::time::timeout(Duration::from_secs(10), ended_rx)
        .await
        .expect("the server kept pushing a stalled client's upstream")
        .unwrap();
    assert!(written >= buf.len() as u64);
    eventually("server connection closed", || {
        let m = srv.server.metrics();
        m.connections_active == 0 && m.streams_active == 0
    })
    .await;
    drop(s);

    // And it serves the next client.
    let (echo, _) = echo_upstream().await;
    let mut s2 = pki
        .client(ClientConfig::default())
        .connect(echo, &fipstun_hbone::HboneRoute::new(srv.addr, server_id()))
        .await
        .unwrap();
    echo_once(&mut s2, b"next").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_reset_mid_stream_closes_the_upstream_and_the_server_keeps_serving() {
    let pki = Pki::new();
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = l.local_addr().unwrap();
    let (ended_tx, ended_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0usize;
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
        ended_tx.send(total).unwrap();
    });
    let srv = start_server(&pki, ServerConfig::default(), AllowAll).await;

    // SO_LINGER 0 (`set_zero_linger`): closing the socket sends RST instead of FIN.
    let sock = tcp(srv.addr).await;
    sock.set_zero_linger().unwrap();
    let (send, driver) = raw_h2(&pki, sock).await;
    let mut ready = send.ready().await.unwrap();
    let (resp, mut up) = ready
        .send_request(ConnectRequest::new(target).to_http(), false)
        .unwrap();
    assert_eq!(resp.await.unwrap().status(), http::StatusCode::OK);
    up.send_data(Bytes::from(vec![1u8; 100_000]), false)
        .unwrap();
    eventually("server tunnel open", || {
        srv.server.metrics().streams_active == 1
    })
    .await;
    // The task owns the connection and so the socket: aborting it closes the socket, mid-stream.
    driver.abort();
    assert!(driver.await.unwrap_err().is_cancelled());

    let got = tokio::time::timeout(Duration::from_secs(5), ended_rx)
        .await
        .expect("the upstream connection outlived its reset client")
        .unwrap();
    assert!(got <= 100_000);
    eventually("server stream and connection released", || {
        let m = srv.server.metrics();
        m.streams_active == 0 && m.connections_active == 0
    })
    .await;
    drop((ready, up));

    let (echo, _) = echo_upstream().await;
    let mut s2 = pki
        .client(ClientConfig::default())
        .connect(echo, &fipstun_hbone::HboneRoute::new(srv.addr, server_id()))
        .await
        .unwrap();
    echo_once(&mut s2, b"next").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_reset_mid_stream_resets_only_that_stream() {
    // After the 200 the server can report an upstream failure only as RST_STREAM: the client
    // must see an error (not a clean EOF that would pass for a complete reply), and the pooled
    // connection keeps carrying other streams.
    let pki = Pki::new();
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = l.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).await.unwrap();
        s.write_all(b"partial").await.unwrap();
        s.set_zero_linger().unwrap();
        drop(s);
    });
    let srv = start_server(&pki, ServerConfig::default(), AllowAll).await;
    let client = pki.client(ClientConfig::default());
    let mut s = client
        .connect(
            target,
            &fipstun_hbone::HboneRoute::new(srv.addr, server_id()),
        )
        .await
        .unwrap();
    s.write_all(b"hello").await.unwrap();
    let mut got = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got))
        .await
        .expect("the stream hung after its upstream reset");
    let e = r.expect_err("an upstream reset ended the stream like a clean close");
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
    assert!(got.len() <= b"partial".len());
    drop(s);

    let (echo, _) = echo_upstream().await;
    let mut s2 = client
        .connect(echo, &fipstun_hbone::HboneRoute::new(srv.addr, server_id()))
        .await
        .unwrap();
    echo_once(&mut s2, b"same connection").await;
    assert_eq!(client.pooled_connections(), 1);
    assert_eq!(srv.server.metrics().connections_opened, 1);
}
