//! HBONE through the shared Transport conformance suite, in both server modes: forwarding
//! (the server's Handler authorizes, the one forwarder dials and copies) and delivery (the
//! node's path: the one forwarder over the delivery queue, with the suite's policy).

mod common;

use std::sync::Arc;

use common::*;
use fipstun_hbone::{
    AllowAll, ClientConfig, HboneListener, HboneRoute, HboneTransport, ServerConfig,
};
use fipstun_transport::conformance::{self, Upstreams};
use fipstun_transport::{FipsRequirement, Forwarder, ForwarderConfig, PlainTcp, Transport};

fn transport(pki: &Pki, node: std::net::SocketAddr) -> HboneTransport {
    HboneTransport::new(
        pki.client(ClientConfig::default()),
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
async fn delivery_queue_with_the_one_forwarder_passes_the_suite_and_the_policy() {
    let pki = Pki::new();
    let (_server, addr, incoming) = delivery_server(&pki, AllowAll, 256).await;
    let u = Upstreams::start().await.unwrap();
    let fwd = Forwarder::new(PlainTcp, u.policy(), ForwarderConfig::default());
    let f = fwd.clone();
    tokio::spawn(async move { f.run(incoming).await });
    let t = Arc::new(transport(&pki, addr));
    conformance::run_forwarded(t.clone(), &u).await.unwrap();
    // The refusal is HBONE's 403 (policy), distinct from the 503 of an unreachable target.
    let err = t
        .connect(&fipstun_transport::Target::new(u.forbidden))
        .await
        .unwrap_err();
    assert!(
        matches!(err, fipstun_transport::TransportError::Refused { .. }),
        "{err:?}"
    );
    assert_eq!(fwd.stats().refused_policy, 2);
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
async fn delivery_listener_hands_out_established_streams() {
    let pki = Pki::new();
    let (_server, addr, incoming) = delivery_server(&pki, AllowAll, 256).await;
    let inbound = Arc::new(HboneListener::new(incoming));
    assert!(fipstun_transport::TunnelListener::security(&*inbound).fips);
    let u = Upstreams::start().await.unwrap();
    let fwd = Forwarder::new(PlainTcp, u.policy(), ForwarderConfig::default());
    tokio::spawn(async move { fwd.run(fipstun_transport::ListenerAcceptor(inbound)).await });
    conformance::run_forwarded(Arc::new(transport(&pki, addr)), &u)
        .await
        .unwrap();
}

#[tokio::test]
async fn no_route_is_a_typed_error() {
    let pki = Pki::new();
    let t = HboneTransport::new(
        pki.client(ClientConfig::default()),
        FipsRequirement::Required,
    )
    .unwrap();
    let target = fipstun_transport::Target::new("127.0.0.1:9".parse().unwrap());
    assert!(matches!(
        t.connect(&target).await,
        Err(fipstun_transport::TransportError::NoRoute(_))
    ));
}
