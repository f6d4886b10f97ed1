//! The client pool: 1,000 concurrent streams over at most ceil(1000 / cap) connections, the
//! peer's SETTINGS cap, idle release, and keepalive on a hung peer.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use fipstun_hbone::{AllowAll, ClientConfig, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_concurrent_streams_use_ten_connections() {
    const STREAMS: usize = 1000;
    const CAP: usize = 100;
    let pki = Pki::new();
    let (target, accepted) = echo_upstream().await;
    let srv = start_server(&pki, ServerConfig::default(), AllowAll).await;
    let client = pki.client(ClientConfig::default().with_max_streams_per_conn(CAP));
    // Every stream stays open until all are open, so all 1,000 are concurrent.
    let barrier = Arc::new(tokio::sync::Barrier::new(STREAMS));
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..STREAMS)
        .map(|i| {
            let client = client.clone();
            let barrier = barrier.clone();
            let peer = srv.addr;
            tokio::spawn(async move {
                let mut s = client
                    .connect(target, &fipstun_hbone::HboneRoute::new(peer, server_id()))
                    .await
                    .unwrap();
                barrier.wait().await;
                let msg = format!("stream {i} ").repeat(100);
                s.write_all(msg.as_bytes()).await.unwrap();
                s.shutdown().await.unwrap();
                let mut back = Vec::new();
                s.read_to_end(&mut back).await.unwrap();
                assert_eq!(back, msg.as_bytes());
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    eprintln!("1000 concurrent streams: {:?}", t0.elapsed());
    let m = client.metrics();
    assert_eq!(m.streams_opened, STREAMS as u64);
    assert_eq!(
        m.connections_opened,
        STREAMS.div_ceil(CAP) as u64,
        "1,000 concurrent streams at 100 per connection need exactly 10 connections"
    );
    assert_eq!(
        srv.server.metrics().connections_opened,
        m.connections_opened
    );
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), STREAMS);
    eventually("all client streams closed", || {
        client.metrics().streams_active == 0
    })
    .await;
    eventually("all server streams closed", || {
        srv.server.metrics().streams_active == 0
    })
    .await;
}

#[tokio::test]
async fn streams_never_exceed_the_peers_settings() {
    let pki = Pki::new();
    let (target, _) = echo_upstream().await;
    let srv = start_server(
        &pki,
        ServerConfig::default().with_max_streams_per_conn(2),
        AllowAll,
    )
    .await;
    let client = pki.client(ClientConfig::default().with_max_streams_per_conn(100));
    let mut open = Vec::new();
    for _ in 0..3 {
        let route = fipstun_hbone::HboneRoute::new(srv.addr, server_id());
        let connect = client.connect(target, &route);
        let mut s = tokio::time::timeout(Duration::from_secs(5), connect)
            .await
            .expect("a stream queued behind the peer's limit instead of a new connection")
            .unwrap();
        echo_once(&mut s, b"ping").await;
        open.push(s);
    }
    assert_eq!(
        client.metrics().connections_opened,
        2,
        "the server allows 2 streams per connection, so the third needs a second connection"
    );
    assert_eq!(srv.server.metrics().streams_opened, 3);
}

#[tokio::test]
async fn sequential_streams_reuse_one_connection() {
    let pki = Pki::new();
    let (target, _) = echo_upstream().await;
    let srv = start_server(&pki, ServerConfig::default(), AllowAll).await;
    let client = pki.client(ClientConfig::default());
    for _ in 0..20 {
        let mut s = client
            .connect(
                target,
                &fipstun_hbone::HboneRoute::new(srv.addr, server_id()),
            )
            .await
            .unwrap();
        echo_once(&mut s, b"again").await;
    }
    assert_eq!(client.metrics().connections_opened, 1);
    assert_eq!(client.pooled_connections(), 1);
}

#[tokio::test]
async fn idle_connections_are_released() {
    let pki = Pki::new();
    let (target, _) = echo_upstream().await;
    let srv = start_server(&pki, ServerConfig::default(), AllowAll).await;
    let client = pki.client(ClientConfig::default().with_idle_timeout(Duration::from_millis(200)));
    let mut s = client
        .connect(
            target,
            &fipstun_hbone::HboneRoute::new(srv.addr, server_id()),
        )
        .await
        .unwrap();
    echo_once(&mut s, b"one").await;
    // Busy connections stay, however long.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        client.pooled_connections(),
        1,
        "a connection with an open stream is kept"
    );
    drop(s);
    let deadline = Instant::now() + Duration::from_secs(5);
    while client.pooled_connections() > 0 {
        assert!(Instant::now() < deadline, "idle connection never released");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eventually("client connection closed", || {
        client.metrics().connections_active == 0
    })
    .await;
    assert_eq!(
        srv.server.metrics().connections_active,
        0,
        "server saw the close"
    );
    let mut s = client
        .connect(
            target,
            &fipstun_hbone::HboneRoute::new(srv.addr, server_id()),
        )
        .await
        .unwrap();
    echo_once(&mut s, b"two").await;
    assert_eq!(client.metrics().connections_opened, 2);
}

#[tokio::test]
async fn server_idle_timeout_sends_goaway_and_client_evicts() {
    let pki = Pki::new();
    let (target, _) = echo_upstream().await;
    let srv = start_server(
        &pki,
        ServerConfig::default().with_idle_timeout(Duration::from_millis(200)),
        AllowAll,
    )
    .await;
    let client = pki.client(ClientConfig::default());
    let mut s = client
        .connect(
            target,
            &fipstun_hbone::HboneRoute::new(srv.addr, server_id()),
        )
        .await
        .unwrap();
    echo_once(&mut s, b"one").await;
    drop(s);
    let deadline = Instant::now() + Duration::from_secs(5);
    while srv.server.metrics().connections_active > 0 || client.metrics().connections_active > 0 {
        assert!(
            Instant::now() < deadline,
            "server idle timeout did not close the connection"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut s = client
        .connect(
            target,
            &fipstun_hbone::HboneRoute::new(srv.addr, server_id()),
        )
        .await
        .unwrap();
    echo_once(&mut s, b"two").await;
    assert_eq!(client.metrics().connections_opened, 2);
}

#[tokio::test]
async fn keepalive_detects_a_hung_peer() {
    let pki = Pki::new();
    let (target, _) = echo_upstream().await;
    let srv = start_server(&pki, ServerConfig::default(), AllowAll).await;
    let proxy = Proxy::start(srv.addr).await;
    let client = pki.client(
        ClientConfig::default()
            .with_keepalive(Duration::from_millis(100), Duration::from_millis(300)),
    );
    let mut s = client
        .connect(
            target,
            &fipstun_hbone::HboneRoute::new(proxy.addr, server_id()),
        )
        .await
        .unwrap();
    echo_once(&mut s, b"alive").await;
    // Wait past a few PINGs: an answered PING keeps the connection.
    tokio::time::sleep(Duration::from_millis(400)).await;
    echo_once(&mut s, b"still alive").await;
    proxy.set(ProxyState::Freeze);
    let t0 = Instant::now();
    let mut buf = [0u8; 16];
    let r = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await;
    let r = r.expect("keepalive never gave up on the hung peer");
    assert!(
        r.is_err(),
        "read on a dead connection must error, got {r:?}"
    );
    assert!(t0.elapsed() < Duration::from_secs(2));
    assert_eq!(client.pooled_connections(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_dial_per_key_is_shared_and_blocks_no_other_key() {
    let pki = Pki::new();
    let (target, _) = echo_upstream().await;
    // A peer that accepts TCP and never answers the TLS handshake.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            held.push(s);
        }
    });
    let srv = start_server(&pki, ServerConfig::default(), AllowAll).await;
    let client =
        pki.client(ClientConfig::default().with_handshake_timeout(Duration::from_millis(800)));

    let waiting: Vec<_> = (0..50)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move {
                client
                    .connect(
                        target,
                        &fipstun_hbone::HboneRoute::new(silent_addr, server_id()),
                    )
                    .await
            })
        })
        .collect();
    // While that dial hangs, another peer (another pool key) is reachable at once.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t0 = Instant::now();
    let mut s = client
        .connect(
            target,
            &fipstun_hbone::HboneRoute::new(srv.addr, server_id()),
        )
        .await
        .unwrap();
    echo_once(&mut s, b"not blocked").await;
    assert!(
        t0.elapsed() < Duration::from_millis(650),
        "{:?}",
        t0.elapsed()
    );

    for w in waiting {
        let err = w.await.unwrap().unwrap_err();
        match err {
            fipstun_hbone::Error::Dial(d) => {
                assert_eq!(d.kind, fipstun_hbone::HandshakeFailure::Timeout)
            }
            other => panic!("expected a shared dial timeout, got {other}"),
        }
    }
    assert_eq!(
        accepted.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "50 concurrent streams to one key must share one dial"
    );
    assert_eq!(
        client
            .metrics()
            .handshake_failures_of(fipstun_hbone::HandshakeFailure::Timeout),
        1
    );
}
