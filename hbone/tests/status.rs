//! Status mapping through the real server and client: 401/403 without an upstream attempt,
//! 400 for bad authorities, 503 for an unreachable target; each checked on the status and on
//! the client's error kind.

mod common;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use fipstun_hbone::wire::{Authority, Forwarded, TraceParent};
use fipstun_hbone::{
    AllowAll, ClientConfig, ConnectRequest, Decision, Error, HandshakeFailure, Rejection,
    ServerConfig,
};
use fipstun_identity::policy::CryptoPolicy;
use fipstun_identity::spiffe::SpiffeId;
use fipstun_identity::tls::Authorizer;
use http::{Method, Request, StatusCode, Version};
use rustls_pki_types::ServerName;
use tokio_rustls::TlsConnector;

#[tokio::test]
async fn unauthorized_peer_gets_401_and_no_upstream_connect() {
    let pki = Pki::new();
    let (target, accepted) = echo_upstream().await;
    let srv = start_server(
        &pki,
        ServerConfig::default(),
        |ctx: &fipstun_hbone::ConnectContext<'_>| {
            if ctx.peer_id == &client_id() {
                Decision::Unauthorized
            } else {
                Decision::Allow
            }
        },
    )
    .await;
    let client = pki.client(ClientConfig::default());
    let err = client
        .connect(
            target,
            &fipstun_hbone::HboneRoute::new(srv.addr, server_id()),
        )
        .await
        .unwrap_err();
    assert_eq!(err.rejection(), Some(Rejection::Unauthorized), "{err}");
    assert_eq!(Rejection::Unauthorized.status(), StatusCode::UNAUTHORIZED);
    assert!(matches!(
        err,
        Error::Rejected {
            rejection: Rejection::Unauthorized,
            ..
        }
    ));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        0,
        "upstream must not be dialed"
    );
    let m = srv.server.metrics();
    assert_eq!((m.streams_rejected, m.streams_opened), (1, 0));
    assert_eq!(client.metrics().streams_rejected, 1);

    // The same connection still serves an allowed identity's neighbour: a different client.
    let other = fipstun_hbone::HboneClient::new(
        pki.identity(&SpiffeId::parse("spiffe://example.org/ns/prod/sa/api").unwrap()),
        ClientConfig::default(),
    )
    .unwrap();
    let mut s = other
        .connect(
            target,
            &fipstun_hbone::HboneRoute::new(srv.addr, server_id()),
        )
        .await
        .unwrap();
    echo_once(&mut s, b"allowed").await;
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn forbidden_gets_403_and_no_upstream_connect() {
    let pki = Pki::new();
    let (target, accepted) = echo_upstream().await;
    let srv = start_server(
        &pki,
        ServerConfig::default(),
        |_: &fipstun_hbone::ConnectContext<'_>| Decision::Forbidden,
    )
    .await;
    let client = pki.client(ClientConfig::default());
    let err = client
        .connect(
            target,
            &fipstun_hbone::HboneRoute::new(srv.addr, server_id()),
        )
        .await
        .unwrap_err();
    assert_eq!(err.rejection(), Some(Rejection::Forbidden), "{err}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(accepted.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn handler_sees_peer_identity_target_and_typed_headers() {
    let pki = Pki::new();
    let (target, _) = echo_upstream().await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let srv = start_server(
        &pki,
        ServerConfig::default(),
        move |ctx: &fipstun_hbone::ConnectContext<'_>| {
            record.lock().unwrap().push((
                ctx.peer_id.clone(),
                ctx.target_addr(),
                ctx.request.clone(),
                ctx.headers.contains_key("traceparent"),
            ));
            Decision::Allow
        },
    )
    .await;
    let client = pki.client(ClientConfig::default());
    let tp = TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
    let req = ConnectRequest::new(target)
        .with_traceparent(tp)
        .with_baggage("k=v")
        .unwrap()
        .with_forwarded(Forwarded::for_addr("10.1.2.3:4567".parse().unwrap()));
    let mut s = client
        .connect_with(
            req.clone(),
            &fipstun_hbone::HboneRoute::new(srv.addr, server_id()),
        )
        .await
        .unwrap();
    echo_once(&mut s, b"x").await;
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].0, client_id());
    assert_eq!(seen[0].1, Some(target));
    assert_eq!(seen[0].2, req);
    assert!(seen[0].3);
}

#[tokio::test]
async fn hostname_authority_gets_400_unless_allowed() {
    let pki = Pki::new();
    let (_, accepted) = echo_upstream().await;
    let srv = start_server(&pki, ServerConfig::default(), AllowAll).await;
    let client = pki.client(ClientConfig::default());
    let req = ConnectRequest::new(Authority::Host {
        host: "localhost".into(),
        port: 80,
    });
    let err = client
        .connect_with(req, &fipstun_hbone::HboneRoute::new(srv.addr, server_id()))
        .await
        .unwrap_err();
    assert_eq!(err.rejection(), Some(Rejection::BadRequest), "{err}");
    assert_eq!(accepted.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn hostname_allowed_by_policy_is_dialed() {
    let pki = Pki::new();
    let (target, accepted) = echo_upstream().await;
    let config = ServerConfig::default().with_hostnames(
        fipstun_hbone::wire::HostnamePolicy::AllowSuffixes(vec!["localhost".into()]),
    );
    let srv = start_server(&pki, config, AllowAll).await;
    let client = pki.client(ClientConfig::default());
    let req = ConnectRequest::new(Authority::Host {
        host: "localhost".into(),
        port: target.port(),
    });
    match client
        .connect_with(req, &fipstun_hbone::HboneRoute::new(srv.addr, server_id()))
        .await
    {
        Ok(mut s) => {
            echo_once(&mut s, b"via name").await;
            assert_eq!(accepted.load(Ordering::SeqCst), 1);
        }
        // `localhost` may resolve to ::1 first on some machines, where nothing listens: 503.
        Err(e) => assert_eq!(e.rejection(), Some(Rejection::Unreachable), "{e}"),
    }
}

/// Send one raw CONNECT with `authority` through an independent h2 client and return the
/// status.
async fn raw_connect_status(pki: &Pki, addr: std::net::SocketAddr, authority: &str) -> StatusCode {
    let id = pki.identity(&client_id());
    let mut cfg = fipstun_identity::tls::client_config(
        &CryptoPolicy::default(),
        id.trust.clone(),
        Authorizer::ids([server_id()]),
        id.svid.clone(),
    )
    .unwrap();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tcp(addr).await;
    let tls = TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::IpAddress(addr.ip().into()), tcp)
        .await
        .unwrap();
    let (send, conn) = h2::client::handshake(tls).await.unwrap();
    tokio::spawn(conn);
    let mut send = send.ready().await.unwrap();
    let mut req = Request::new(());
    *req.method_mut() = Method::CONNECT;
    *req.version_mut() = Version::HTTP_2;
    *req.uri_mut() = authority.parse().unwrap();
    let (resp, mut body) = send.send_request(req, false).unwrap();
    let resp = resp.await.unwrap();
    body.send_data(Bytes::new(), true).ok();
    resp.status()
}

#[tokio::test]
async fn missing_port_gets_400() {
    let pki = Pki::new();
    let srv = start_server(&pki, ServerConfig::default(), AllowAll).await;
    let status = raw_connect_status(&pki, srv.addr, "127.0.0.1").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(Rejection::from_status(status), Some(Rejection::BadRequest));
    let status = raw_connect_status(&pki, srv.addr, "example.com:443").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(srv.server.metrics().streams_rejected, 2);
}

#[tokio::test]
async fn unreachable_target_gets_503() {
    let pki = Pki::new();
    let srv = start_server(&pki, ServerConfig::default(), AllowAll).await;
    let client = pki.client(ClientConfig::default());
    let target = closed_port().await;
    let err = client
        .connect(
            target,
            &fipstun_hbone::HboneRoute::new(srv.addr, server_id()),
        )
        .await
        .unwrap_err();
    assert_eq!(err.rejection(), Some(Rejection::Unreachable), "{err}");
    assert_eq!(
        Rejection::Unreachable.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    let status = raw_connect_status(&pki, srv.addr, &target.to_string()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn wrong_server_identity_fails_in_the_handshake() {
    let pki = Pki::new();
    let (target, accepted) = echo_upstream().await;
    let srv = start_server(&pki, ServerConfig::default(), AllowAll).await;
    let client = pki.client(ClientConfig::default());
    let expected = SpiffeId::parse("spiffe://example.org/ns/other/sa/ztunnel").unwrap();
    let err = client
        .connect(target, &fipstun_hbone::HboneRoute::new(srv.addr, expected))
        .await
        .unwrap_err();
    match &err {
        Error::Dial(d) => assert_eq!(d.kind, HandshakeFailure::Certificate, "{err}"),
        other => panic!("expected a dial error, got {other}"),
    }
    assert_eq!(err.rejection(), None);
    assert_eq!(
        client
            .metrics()
            .handshake_failures_of(HandshakeFailure::Certificate),
        1
    );
    eventually("server counts the certificate failure", || {
        srv.server
            .metrics()
            .handshake_failures_of(HandshakeFailure::Certificate)
            >= 1
    })
    .await;
    assert_eq!(accepted.load(Ordering::SeqCst), 0);
    assert_eq!(client.pooled_connections(), 0);
}

#[tokio::test]
async fn client_from_untrusted_domain_is_refused_in_the_handshake() {
    let pki = Pki::new();
    let (target, _) = echo_upstream().await;
    let srv = start_server(&pki, ServerConfig::default(), AllowAll).await;
    // Another CA for the same trust domain name: its SVIDs do not chain to our bundle.
    let rogue = Pki::new();
    let mut id = rogue.identity(&client_id());
    id.trust = pki.trust.clone();
    let client = fipstun_hbone::HboneClient::new(id, ClientConfig::default()).unwrap();
    let err = client
        .connect(
            target,
            &fipstun_hbone::HboneRoute::new(srv.addr, server_id()),
        )
        .await
        .unwrap_err();
    match &err {
        Error::Dial(d) => assert_eq!(d.kind, HandshakeFailure::Certificate, "{err}"),
        other => panic!("expected a dial error, got {other}"),
    }
    assert_eq!(
        client
            .metrics()
            .handshake_failures_of(HandshakeFailure::Certificate),
        1
    );
    eventually("server counts the certificate failure", || {
        srv.server
            .metrics()
            .handshake_failures_of(HandshakeFailure::Certificate)
            >= 1
    })
    .await;
    assert_eq!(srv.server.metrics().connections_opened, 0);
}
