//! Fair admission and connection lifetime on the HBONE server: idle sockets and stalled
//! handshakes (twice the handshake limit of each) cannot keep a real client out, and no
//! connection outlives the peer certificate that authenticated it or the maximum age.

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use common::*;
use fipstun_hbone::{
    AllowAll, ClientConfig, HandshakeFailure, HboneClient, ServerConfig, TlsIdentity,
};
use fipstun_identity::keys::KeyAlgorithm;
use fipstun_identity::policy::CryptoPolicy;
use fipstun_identity::tls::SvidSlot;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const LIMIT: u32 = 16;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sockets_and_stalled_handshakes_cannot_keep_a_real_client_out() {
    let pki = Pki::new();
    let (target, _) = echo_upstream().await;
    let srv = start_server(
        &pki,
        ServerConfig::default()
            .with_max_handshakes(LIMIT)
            .with_max_connections(LIMIT),
        AllowAll,
    )
    .await;
    let mut held = Vec::new();
    // 2x the limit of TCP sockets that never send a byte...
    for _ in 0..2 * LIMIT {
        held.push(TcpStream::connect(srv.addr).await.unwrap());
    }
    // ...and 2x the limit that start a TLS record (a ClientHello header announcing 512 bytes)
    // and stall in the middle of it.
    for _ in 0..2 * LIMIT {
        let mut s = TcpStream::connect(srv.addr).await.unwrap();
        s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00])
            .await
            .unwrap();
        held.push(s);
    }
    eventually("the server took in the attack sockets", || {
        srv.server
            .metrics()
            .handshake_failures_of(HandshakeFailure::Evicted)
            >= u64::from(3 * LIMIT)
    })
    .await;

    // A real client gets a working stream within 1 s, with every attack socket still open.
    let client = pki.client(ClientConfig::default());
    let real = async {
        let mut s = client
            .connect(
                target,
                &fipstun_hbone::HboneRoute::new(srv.addr, server_id()),
            )
            .await
            .unwrap();
        echo_once(&mut s, b"a real client").await;
    };
    tokio::time::timeout(Duration::from_secs(1), real)
        .await
        .expect("a real client got a stream within 1 s despite the attack");
    let m = srv.server.metrics();
    assert_eq!(m.connections_opened, 1, "{m:?}");
    assert_eq!(m.connections_refused, 0, "{m:?}");
    drop(held);
}

/// A client whose SVID expires `life` from now (the CA's minimum TTL is a minute, so the
/// certificate is dated back).
fn short_lived_client(pki: &Pki, life: Duration) -> HboneClient {
    let ttl = Duration::from_secs(60);
    let svid = pki
        .ca
        .issue_at(
            &client_id(),
            KeyAlgorithm::EcdsaP256,
            Some(ttl),
            SystemTime::now() - (ttl - life),
        )
        .unwrap();
    let slot = Arc::new(SvidSlot::new());
    slot.set(&svid).unwrap();
    let identity = TlsIdentity::new(CryptoPolicy::default(), pki.trust.clone(), slot);
    HboneClient::new(identity, ClientConfig::default()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_is_drained_at_the_peer_certificate_not_after() {
    let pki = Pki::new();
    let (target, _) = echo_upstream().await;
    let srv = start_server(
        &pki,
        ServerConfig::default().with_drain_timeout(Duration::from_millis(500)),
        AllowAll,
    )
    .await;
    let client = short_lived_client(&pki, Duration::from_secs(3));
    let mut s = client
        .connect(
            target,
            &fipstun_hbone::HboneRoute::new(srv.addr, server_id()),
        )
        .await
        .unwrap();
    echo_once(&mut s, b"before notAfter").await;
    // The stream stays open across notAfter: after the GOAWAY it gets the drain time, then
    // the connection is closed with it.
    let mut buf = [0u8; 8];
    let ended = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
        .await
        .expect("the stream was cut by notAfter + drain time");
    assert!(matches!(ended, Ok(0) | Err(_)), "{ended:?}");
    let m = srv.server.metrics();
    assert_eq!(m.connections_expired, 1, "{m:?}");
    eventually("the connection is closed", || {
        srv.server.metrics().connections_active == 0
    })
    .await;
    // And the expired certificate cannot open a new one. (X.509 times are whole seconds and
    // notAfter is inclusive: certificate checks accept it until the end of that second.)
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let again = client
        .connect(
            target,
            &fipstun_hbone::HboneRoute::new(srv.addr, server_id()),
        )
        .await;
    assert!(again.is_err(), "{:?}", srv.server.metrics());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_is_drained_at_the_maximum_age_and_the_client_reconnects() {
    let pki = Pki::new();
    let (target, _) = echo_upstream().await;
    let srv = start_server(
        &pki,
        ServerConfig::default()
            .with_max_connection_age(Duration::from_millis(500))
            .with_drain_timeout(Duration::from_millis(500)),
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
    echo_once(&mut s, b"young").await;
    drop(s);
    eventually("the old connection is drained", || {
        let m = srv.server.metrics();
        m.connections_expired >= 1 && m.connections_active == 0
    })
    .await;
    // The pool notices the GOAWAY and dials a fresh connection.
    let mut s = client
        .connect(
            target,
            &fipstun_hbone::HboneRoute::new(srv.addr, server_id()),
        )
        .await
        .unwrap();
    echo_once(&mut s, b"reconnected").await;
    assert!(srv.server.metrics().connections_opened >= 2);
}
