//! Delivery mode: the server hands authorized CONNECTs to the application (the shape a
//! `TunnelListener` needs) instead of dialing their targets.

mod common;

use std::time::Duration;

use common::*;
use fipstun_hbone::{AllowAll, ClientConfig, ConnectContext, Decision, Rejection};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn accepted_connect_becomes_an_application_stream() {
    let pki = Pki::new();
    let (server, addr, mut incoming) = delivery_server(&pki, AllowAll, 8).await;
    // Nothing listens at the target: delivery mode must not dial it.
    let target = closed_port().await;
    let app = tokio::spawn(async move {
        let pending = incoming.accept().await.unwrap();
        assert_eq!(pending.peer_id(), &client_id());
        assert_eq!(pending.request().target().socket_addr(), Some(target));
        let mut s = pending.accept().unwrap();
        assert_eq!(s.peer_identity(), &client_id());
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        s.write_all(&got).await.unwrap();
        s.write_all(b" back").await.unwrap();
        s.shutdown().await.unwrap();
    });
    let client = pki.client(ClientConfig::default());
    let mut s = client
        .connect(target, &fipstun_hbone::HboneRoute::new(addr, server_id()))
        .await
        .unwrap();
    s.write_all(b"hello").await.unwrap();
    s.shutdown().await.unwrap();
    let mut back = Vec::new();
    s.read_to_end(&mut back).await.unwrap();
    assert_eq!(back, b"hello back");
    app.await.unwrap();
    eventually("delivered stream closed", || {
        server.metrics().streams_active == 0
    })
    .await;
    assert_eq!(server.metrics().streams_opened, 1);
}

#[tokio::test]
async fn rejected_or_dropped_connects_get_their_status() {
    let pki = Pki::new();
    let (_server, addr, mut incoming) = delivery_server(&pki, AllowAll, 8).await;
    let target = closed_port().await;
    let app = tokio::spawn(async move {
        incoming
            .accept()
            .await
            .unwrap()
            .reject(Rejection::Forbidden);
        drop(incoming.accept().await.unwrap());
    });
    let client = pki.client(ClientConfig::default());
    let err = client
        .connect(target, &fipstun_hbone::HboneRoute::new(addr, server_id()))
        .await
        .unwrap_err();
    assert_eq!(err.rejection(), Some(Rejection::Forbidden), "{err}");
    let err = client
        .connect(target, &fipstun_hbone::HboneRoute::new(addr, server_id()))
        .await
        .unwrap_err();
    assert_eq!(err.rejection(), Some(Rejection::Unreachable), "{err}");
    app.await.unwrap();
}

#[tokio::test]
async fn handler_still_runs_first_and_closed_incoming_means_503() {
    let pki = Pki::new();
    let (_server, addr, incoming) =
        delivery_server(&pki, |_: &ConnectContext<'_>| Decision::Unauthorized, 8).await;
    let target = closed_port().await;
    let client = pki.client(ClientConfig::default());
    let err = client
        .connect(target, &fipstun_hbone::HboneRoute::new(addr, server_id()))
        .await
        .unwrap_err();
    assert_eq!(err.rejection(), Some(Rejection::Unauthorized), "{err}");

    let (_server, addr, incoming2) = delivery_server(&pki, AllowAll, 8).await;
    drop(incoming2);
    drop(incoming);
    let err = tokio::time::timeout(
        Duration::from_secs(5),
        client.connect(target, &fipstun_hbone::HboneRoute::new(addr, server_id())),
    )
    .await
    .unwrap()
    .unwrap_err();
    assert_eq!(err.rejection(), Some(Rejection::Unreachable), "{err}");
}

/// A CONNECT to `localhost:PORT` from an `HboneTransport`: the node's server admits the name
/// (its HostnamePolicy), resolves it, and the forwarder's policy judges the loopback address:
/// allowed by a rule naming it, denied (403) by one that names another port.
#[tokio::test]
async fn a_name_target_reaches_a_loopback_upstream_the_policy_allows() {
    use fipstun_hbone::wire::HostnamePolicy;
    use fipstun_hbone::{HboneRoute, HboneServer, HboneTransport, ServerConfig};
    use fipstun_transport::policy::Policy;
    use fipstun_transport::{
        FipsRequirement, Forwarder, ForwarderConfig, PlainTcp, Target, Transport,
    };

    let pki = Pki::new();
    // The upstream listens where `localhost` resolves first on this machine.
    let first = Target::parse("localhost:1")
        .unwrap()
        .resolve()
        .await
        .unwrap()[0];
    let upstream = tokio::net::TcpListener::bind((first.ip(), 0))
        .await
        .unwrap();
    let echo = upstream.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = upstream.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });

    let node = |policy: Policy| {
        let pki = &pki;
        async move {
            let id = pki.identity(&server_id());
            let tls = fipstun_identity::tls::server_config(
                &id.policy,
                id.trust.clone(),
                fipstun_identity::tls::Authorizer::trust_domains([pki.td.clone()]),
                id.svid.clone(),
            )
            .unwrap();
            let config = ServerConfig::default().with_hostnames(HostnamePolicy::Allow);
            let (server, incoming) =
                HboneServer::with_delivery_from_rustls(tls, config, AllowAll, 8).unwrap();
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn({
                let server = server.clone();
                async move { server.serve(listener).await }
            });
            let fwd = Forwarder::new(PlainTcp, policy, ForwarderConfig::default());
            tokio::spawn({
                let fwd = fwd.clone();
                async move { fwd.run(incoming).await }
            });
            (server, addr, fwd)
        }
    };
    let by_name = Target::parse(&format!("localhost:{}", echo.port())).unwrap();

    let (_server, addr, fwd) = node(Policy::only_to([echo])).await;
    let t = HboneTransport::new(
        pki.client(ClientConfig::default()),
        FipsRequirement::Required,
    )
    .unwrap()
    .with_default_route(HboneRoute::new(addr, server_id()));
    let mut s = t.connect(&by_name).await.unwrap();
    echo_once(&mut s, b"by name").await;
    assert_eq!(fwd.stats().forwarded, 1);

    let elsewhere = std::net::SocketAddr::new(echo.ip(), echo.port().wrapping_add(1).max(1));
    let (_server, addr, fwd) = node(Policy::only_to([elsewhere])).await;
    let t = HboneTransport::new(
        pki.client(ClientConfig::default()),
        FipsRequirement::Required,
    )
    .unwrap()
    .with_default_route(HboneRoute::new(addr, server_id()));
    let Err(err) = t.connect(&by_name).await else {
        panic!("the policy names another port: denied")
    };
    assert!(
        matches!(err, fipstun_transport::TransportError::Refused { .. }),
        "{err}"
    );
    assert_eq!(fwd.stats().refused_policy, 1);
}
