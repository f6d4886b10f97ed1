//! Connection lifecycle: graceful drain, drain timeout, a peer killed mid-stream, and the
//! server's connection and handshake limits.

mod common;

use std::time::{Duration, Instant};

use common::*;
use fipstun_hbone::{AllowAll, ClientConfig, Error, HandshakeFailure, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_lets_active_streams_finish_and_refuses_new_ones() {
    let pki = Pki::new();
    let (target, _) = echo_upstream().await;
    let srv = start_server(
        &pki,
        ServerConfig::default().with_drain_timeout(Duration::from_secs(10)),
        AllowAll,
    )
    .await;
    let client = pki.client(ClientConfig::default());
    let mut active = client
        .connect(
            target,
            &fipstun_hbone::HboneRoute::new(srv.addr, server_id()),
        )
        .await
        .unwrap();
    echo_once(&mut active, b"before drain").await;

    let t0 = Instant::now();
    let shutdown = tokio::spawn({
        let server = srv.server.clone();
        async move { server.shutdown().await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !shutdown.is_finished(),
        "drain must wait for the open stream"
    );

    // New streams fail cleanly: GOAWAY on the pooled connection, and the listener is gone.
    let err = tokio::time::timeout(
        Duration::from_secs(5),
        client.connect(
            target,
            &fipstun_hbone::HboneRoute::new(srv.addr, server_id()),
        ),
    )
    .await
    .expect("a new stream during drain must fail, not hang")
    .unwrap_err();
    assert!(
        matches!(err, Error::Dial(_) | Error::Stream { .. }),
        "unexpected error during drain: {err}"
    );

    // The active stream still works both ways and ends normally.
    echo_once(&mut active, b"during drain").await;
    active.shutdown().await.unwrap();
    let mut rest = Vec::new();
    active.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());
    drop(active);

    tokio::time::timeout(Duration::from_secs(5), shutdown)
        .await
        .expect("drain did not finish after the last stream closed")
        .unwrap();
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "drain waited for its timeout"
    );
    let m = srv.server.metrics();
    assert_eq!(m.connections_active, 0);
    assert_eq!(m.streams_active, 0);
    assert_eq!(m.streams_opened, 1);
}

#[tokio::test]
async fn drain_timeout_closes_streams_that_do_not_finish() {
    let pki = Pki::new();
    let (target, _) = echo_upstream().await;
    let srv = start_server(
        &pki,
        ServerConfig::default().with_drain_timeout(Duration::from_millis(300)),
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
    echo_once(&mut s, b"x").await;
    let t0 = Instant::now();
    srv.server.shutdown().await;
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(3),
        "{took:?}"
    );
    let mut buf = [0u8; 8];
    let r = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("the stream must end when the drain timeout closes its connection");
    assert!(
        r.is_err(),
        "expected an error after a forced close, got {r:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_killed_mid_stream_errors_evicts_and_next_connect_works() {
    let pki = Pki::new();
    let (target, _) = echo_upstream().await;
    let srv = start_server(&pki, ServerConfig::default(), AllowAll).await;
    let proxy = Proxy::start(srv.addr).await;
    let client = pki.client(ClientConfig::default());
    let mut s = client
        .connect(
            target,
            &fipstun_hbone::HboneRoute::new(proxy.addr, server_id()),
        )
        .await
        .unwrap();
    echo_once(&mut s, b"before").await;

    // Keep writing in the background; then the peer dies.
    proxy.set(ProxyState::Kill);
    let mut buf = [0u8; 64];
    let res = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Err(e) = s.write_all(&[7u8; 4096]).await {
                return e;
            }
            match s.read(&mut buf).await {
                Ok(0) => return std::io::Error::other("unexpected clean EOF"),
                Ok(_) => {}
                Err(e) => return e,
            }
        }
    })
    .await
    .expect("the stream did not notice its peer died");
    assert_ne!(
        res.to_string(),
        "unexpected clean EOF",
        "a dead peer must be an error"
    );
    // The broken connection leaves the pool.
    let deadline = Instant::now() + Duration::from_secs(5);
    while client.pooled_connections() > 0 {
        assert!(Instant::now() < deadline, "dead connection still pooled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(client.metrics().connections_active, 0);

    // A fresh server: the next connect works.
    let srv2 = start_server(&pki, ServerConfig::default(), AllowAll).await;
    let mut s2 = client
        .connect(
            target,
            &fipstun_hbone::HboneRoute::new(srv2.addr, server_id()),
        )
        .await
        .unwrap();
    echo_once(&mut s2, b"after").await;
}

#[tokio::test]
async fn server_task_aborted_fails_the_stream_cleanly() {
    // The server process "dies": its serving task and connections are gone with a forced
    // shutdown; the client stream errors and a retry against the same address fails fast.
    let pki = Pki::new();
    let (target, _) = echo_upstream().await;
    let srv = start_server(
        &pki,
        ServerConfig::default().with_drain_timeout(Duration::ZERO),
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
    echo_once(&mut s, b"x").await;
    srv.task.abort();
    srv.server.shutdown().await;
    let mut buf = [0u8; 8];
    let r = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("stream hung after its server died");
    assert!(r.is_err(), "{r:?}");
    let err = client
        .connect(
            target,
            &fipstun_hbone::HboneRoute::new(srv.addr, server_id()),
        )
        .await
        .unwrap_err();
    match err {
        Error::Dial(d) => assert_eq!(d.kind, HandshakeFailure::Tcp),
        other => panic!("expected a TCP dial error, got {other}"),
    }
}

#[tokio::test]
async fn connection_limit_refuses_extra_connections() {
    let pki = Pki::new();
    let (target, _) = echo_upstream().await;
    let srv = start_server(
        &pki,
        ServerConfig::default().with_max_connections(1),
        AllowAll,
    )
    .await;
    let first = pki.client(ClientConfig::default());
    let mut s = first
        .connect(
            target,
            &fipstun_hbone::HboneRoute::new(srv.addr, server_id()),
        )
        .await
        .unwrap();
    echo_once(&mut s, b"one").await;
    // The second completes its handshake (handshakes have their own slots), then finds the
    // established limit reached and is closed before any stream.
    let second = pki.client(ClientConfig::default());
    assert!(
        second
            .connect(
                target,
                &fipstun_hbone::HboneRoute::new(srv.addr, server_id())
            )
            .await
            .is_err()
    );
    assert!(srv.server.metrics().connections_refused >= 1);
    // The first connection is unaffected.
    echo_once(&mut s, b"two").await;
}

#[tokio::test]
async fn handshake_timeout_closes_silent_clients() {
    let pki = Pki::new();
    let srv = start_server(
        &pki,
        ServerConfig::default().with_handshake_timeout(Duration::from_millis(200)),
        AllowAll,
    )
    .await;
    let mut silent = tcp(srv.addr).await;
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(3), silent.read(&mut buf))
        .await
        .expect("the server kept a silent client past its handshake timeout");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    assert_eq!(
        srv.server
            .metrics()
            .handshake_failures_of(HandshakeFailure::Timeout),
        1
    );
}

#[tokio::test]
async fn client_without_alpn_is_refused() {
    use fipstun_identity::policy::CryptoPolicy;
    use fipstun_identity::tls::Authorizer;
    use rustls_pki_types::ServerName;
    let pki = Pki::new();
    let srv = start_server(&pki, ServerConfig::default(), AllowAll).await;
    let id = pki.identity(&client_id());
    // A client offering http/1.1 only: the server must not speak anything but h2.
    let mut cfg = fipstun_identity::tls::client_config(
        &CryptoPolicy::default(),
        id.trust.clone(),
        Authorizer::ids([server_id()]),
        id.svid.clone(),
    )
    .unwrap();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let r = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg))
        .connect(
            ServerName::IpAddress(srv.addr.ip().into()),
            tcp(srv.addr).await,
        )
        .await;
    assert!(r.is_err(), "the server accepted a non-h2 ALPN");
    eventually("server counts the ALPN failure", || {
        srv.server
            .metrics()
            .handshake_failures_of(HandshakeFailure::Alpn)
            == 1
    })
    .await;
    // And with no ALPN at all the TLS handshake may finish, but the connection is closed.
    let mut cfg = fipstun_identity::tls::client_config(
        &CryptoPolicy::default(),
        id.trust.clone(),
        Authorizer::ids([server_id()]),
        id.svid.clone(),
    )
    .unwrap();
    cfg.alpn_protocols.clear();
    if let Ok(mut tls) = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg))
        .connect(
            ServerName::IpAddress(srv.addr.ip().into()),
            tcp(srv.addr).await,
        )
        .await
    {
        let mut buf = [0u8; 8];
        let n = tokio::time::timeout(Duration::from_secs(3), tls.read(&mut buf))
            .await
            .unwrap();
        assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    }
    eventually("server counts the missing ALPN", || {
        srv.server
            .metrics()
            .handshake_failures_of(HandshakeFailure::Alpn)
            == 2
    })
    .await;
    assert_eq!(srv.server.metrics().connections_opened, 0);
}

#[tokio::test]
async fn every_connection_is_verified_against_the_current_trust_bundle() {
    // No TLS resumption: once the bundle is withdrawn, a new connection must fail even though
    // the same client and server completed a handshake a moment ago.
    use fipstun_identity::bundle::BundleSet;
    let pki = Pki::new();
    let (target, _) = echo_upstream().await;
    let srv = start_server(&pki, ServerConfig::default(), AllowAll).await;
    let client = pki.client(ClientConfig::default().with_idle_timeout(Duration::from_millis(50)));
    let mut s = client
        .connect(
            target,
            &fipstun_hbone::HboneRoute::new(srv.addr, server_id()),
        )
        .await
        .unwrap();
    echo_once(&mut s, b"trusted").await;
    drop(s);
    eventually("idle connection released", || {
        client.pooled_connections() == 0
    })
    .await;
    pki.trust.replace(BundleSet::new());
    let err = client
        .connect(
            target,
            &fipstun_hbone::HboneRoute::new(srv.addr, server_id()),
        )
        .await
        .unwrap_err();
    match &err {
        Error::Dial(d) => assert_eq!(d.kind, HandshakeFailure::Certificate, "{err}"),
        other => panic!("expected a certificate failure, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_killed_mid_stream_frees_the_server_side() {
    // The upstream reports when its connection ends; the server must not leak the tunnel.
    let pki = Pki::new();
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
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
    let proxy = Proxy::start(srv.addr).await;
    let client = pki.client(ClientConfig::default());
    let mut s = client
        .connect(
            target,
            &fipstun_hbone::HboneRoute::new(proxy.addr, server_id()),
        )
        .await
        .unwrap();
    s.write_all(&[1u8; 100_000]).await.unwrap();
    eventually("server tunnel open", || {
        srv.server.metrics().streams_active == 1
    })
    .await;
    proxy.set(ProxyState::Kill);
    let got = tokio::time::timeout(Duration::from_secs(5), ended_rx)
        .await
        .expect("the upstream connection outlived its dead client")
        .unwrap();
    assert!(got <= 100_000);
    eventually("server stream released", || {
        srv.server.metrics().streams_active == 0
    })
    .await;
    eventually("server connection released", || {
        srv.server.metrics().connections_active == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_keepalive_closes_a_hung_client() {
    let pki = Pki::new();
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = l.local_addr().unwrap();
    let (ended_tx, ended_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut buf = [0u8; 1024];
        while let Ok(n) = s.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
        ended_tx.send(()).unwrap();
    });
    let srv = start_server(
        &pki,
        ServerConfig::default()
            .with_keepalive(Duration::from_millis(100), Duration::from_millis(300)),
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
    s.write_all(b"hello").await.unwrap();
    // Answered PINGs keep an idle-but-alive stream open.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(srv.server.metrics().streams_active, 1);
    // The client hangs (no FIN, no RST): only the keepalive can notice.
    proxy.set(ProxyState::Freeze);
    tokio::time::timeout(Duration::from_secs(5), ended_rx)
        .await
        .expect("the server kept a hung client's tunnel open")
        .unwrap();
    eventually("server connection closed", || {
        srv.server.metrics().connections_active == 0
    })
    .await;
    drop(s);
}
