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
