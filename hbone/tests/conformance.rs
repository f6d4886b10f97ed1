//! HBONE through the shared Transport conformance suite, in both server modes.

mod common;

use std::sync::Arc;

use common::*;
use fipstun_hbone::{
    AllowAll, ClientConfig, HboneListener, HboneRoute, HboneServer, HboneTransport, ServerConfig,
};
use fipstun_identity::policy::CryptoPolicy;
use fipstun_identity::tls::Authorizer;
use fipstun_transport::conformance::{self, Upstreams};
use fipstun_transport::{FipsRequirement, Transport, TunnelListener, forward};

fn transport(pki: &Pki, node: std::net::SocketAddr) -> HboneTransport {
    HboneTransport::new(
        pki.client(ClientConfig::default()),
        CryptoPolicy::default(),
        FipsRequirement::Required,
    )
    .unwrap()
    .with_default_route(HboneRoute::new(node, server_id()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_server_passes_the_suite() {
    let pki = Pki::new();
    let server = start_server(&pki, ServerConfig::default(), AllowAll).await;
    let t = Arc::new(transport(&pki, server.addr));
    let security = t.security();
    assert!(security.fips, "{security:?}");
    assert_eq!(security.backend, "hbone");
    assert!(security.cipher.contains("TLS13_AES_256_GCM_SHA384"));
    let u = Upstreams::start().await.unwrap();
    conformance::run_all(t.clone(), &u).await.unwrap();
    // The forwarding server answers 503 for the unreachable target, which the transport
    // reports as such.
    let err = t
        .connect(&fipstun_transport::Target::new(u.unreachable))
        .await
        .unwrap_err();
    assert!(
        matches!(err, fipstun_transport::TransportError::Unreachable { .. }),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_listener_with_the_generic_forwarder_passes_the_suite() {
    let pki = Pki::new();
    let id = pki.identity(&server_id());
    let tls = fipstun_identity::tls::server_config(
        &id.policy,
        id.trust.clone(),
        Authorizer::trust_domains([pki.td.clone()]),
        id.svid.clone(),
    )
    .unwrap();
    let (server, incoming) =
        HboneServer::with_delivery(tls, ServerConfig::default(), AllowAll, 256).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { server.serve(listener).await });
    let inbound = HboneListener::new(incoming, &CryptoPolicy::default());
    assert!(inbound.security().fips);
    tokio::spawn(forward(inbound));
    let u = Upstreams::start().await.unwrap();
    conformance::run_all(Arc::new(transport(&pki, addr)), &u)
        .await
        .unwrap();
}

#[tokio::test]
async fn no_route_is_a_typed_error() {
    let pki = Pki::new();
    let t = HboneTransport::new(
        pki.client(ClientConfig::default()),
        CryptoPolicy::default(),
        FipsRequirement::Required,
    )
    .unwrap();
    let target = fipstun_transport::Target::new("127.0.0.1:9".parse().unwrap());
    assert!(matches!(
        t.connect(&target).await,
        Err(fipstun_transport::TransportError::NoRoute(_))
    ));
}
