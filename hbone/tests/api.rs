//! What a proxy author touches, tested through the public API only: typed handshake causes
//! through the `Transport` trait, the negotiated suite per stream, identities from the files
//! `fipstun ca issue` writes, a closure handler without annotations, and a backend picked at
//! run time, and the handshake observer on both sides.

mod common;

use std::sync::Arc;

use common::*;
use fipstun_hbone::rustls::{self, AlertDescription, CertificateError, CipherSuite};
use fipstun_hbone::{
    AllowAll, ClientConfig, Decision, DialError, HboneClient, HboneRoute, HboneTransport,
    ServerConfig, TlsIdentity, handler_fn,
};
use fipstun_identity::policy::CryptoPolicy;
use fipstun_transport::{DynTransport, FipsRequirement, Target, Transport, TransportError};

fn transport(client: HboneClient, node: std::net::SocketAddr) -> HboneTransport {
    HboneTransport::new(client, FipsRequirement::Required)
        .unwrap()
        .with_default_route(HboneRoute::new(node, server_id()))
}

/// The TLS cause of a failed connect, found through the trait's error without reading text.
fn tls_cause(err: &TransportError) -> &rustls::Error {
    let dial = err.find_cause::<DialError>().and_then(DialError::tls_error);
    let direct = err.find_cause::<rustls::Error>();
    assert_eq!(
        dial, direct,
        "the DialError's TLS error is next in the chain"
    );
    direct.unwrap_or_else(|| panic!("no typed TLS cause in {err:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_of_another_ca_is_an_unknown_issuer() {
    let (ours, theirs) = (Pki::new(), Pki::new());
    let server = start_server(&theirs, ServerConfig::default(), AllowAll).await;
    let (upstream, _) = echo_upstream().await;
    let t: Arc<dyn DynTransport> =
        Arc::new(transport(ours.client(ClientConfig::default()), server.addr));
    let err = t.connect(&Target::new(upstream)).await.err().unwrap();
    assert!(matches!(err, TransportError::Tunnel { .. }), "{err:?}");
    assert!(
        matches!(
            tls_cause(&err),
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)
        ),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_refuses_our_ca_answers_with_an_alert() {
    let (ours, theirs) = (Pki::new(), Pki::new());
    // The server trusts only its own CA; the client trusts both, so its side of the TLS 1.3
    // handshake completes and the refusal arrives as an alert on the first read.
    let server = start_server(&theirs, ServerConfig::default(), AllowAll).await;
    let (upstream, _) = echo_upstream().await;
    let mine = ours.identity(&client_id());
    let both = fipstun_identity::bundle::TrustStore::new(
        fipstun_identity::bundle::BundleSet::new()
            .with(ours.ca.bundle().clone())
            .with(theirs.ca.bundle().clone()),
    );
    let client = HboneClient::new(
        TlsIdentity::new(mine.policy, both, mine.svid),
        ClientConfig::default(),
    )
    .unwrap();
    let t = transport(client, server.addr);
    let err = t.connect(&Target::new(upstream)).await.err().unwrap();
    let dial = err.find_cause::<DialError>().expect("a DialError");
    assert_eq!(
        dial.alert_received(),
        Some(AlertDescription::UnknownCA),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_negotiated_suite_follows_the_clients_preference() {
    let pki = Pki::new();
    let server = start_server(&pki, ServerConfig::default(), AllowAll).await;
    let (upstream, _) = echo_upstream().await;
    for (aes128_first, expected) in [
        (false, CipherSuite::TLS13_AES_256_GCM_SHA384),
        (true, CipherSuite::TLS13_AES_128_GCM_SHA256),
    ] {
        let identity = pki
            .identity(&client_id())
            .with_policy(CryptoPolicy::default().with_aes128_first(aes128_first));
        let client = HboneClient::new(identity, ClientConfig::default()).unwrap();
        let mut s = client
            .connect(upstream, &HboneRoute::new(server.addr, server_id()))
            .await
            .unwrap();
        let n = s
            .negotiated()
            .expect("a finished handshake reports its suite");
        assert_eq!(n.cipher_suite, expected);
        assert_eq!(n.protocol_version, rustls::ProtocolVersion::TLSv1_3);
        echo_once(&mut s, b"suite").await;
        // What the transport reports is what may be negotiated, the preferred first.
        let security = transport(client, server.addr).security();
        assert!(
            security.cipher.starts_with(&format!("{expected:?}")),
            "{security:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identity_loads_from_the_files_and_serves() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let svid = pki.svid(&client_id());
    std::fs::write(dir.path().join("svid.pem"), svid.chain_pem()).unwrap();
    std::fs::write(
        dir.path().join("svid-key.pem"),
        svid.key().to_pem().as_bytes(),
    )
    .unwrap();
    std::fs::write(dir.path().join("bundle.pem"), pki.ca.bundle().to_pem()).unwrap();
    let identity = TlsIdentity::from_dir(dir.path()).unwrap();
    let server = start_server(&pki, ServerConfig::default(), AllowAll).await;
    let (upstream, _) = echo_upstream().await;
    let client = HboneClient::new(identity, ClientConfig::default()).unwrap();
    let mut s = client
        .connect(upstream, &HboneRoute::new(server.addr, server_id()))
        .await
        .unwrap();
    echo_once(&mut s, b"from files").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closure_handler_needs_no_annotation() {
    let pki = Pki::new();
    let (upstream, _) = echo_upstream().await;
    let allowed_port = upstream.port();
    let only_upstream = handler_fn(move |ctx| match ctx.target_addr() {
        Some(a) if a.port() == allowed_port => Decision::Allow,
        _ => Decision::Forbidden,
    });
    let server = start_server(&pki, ServerConfig::default(), only_upstream).await;
    let client = pki.client(ClientConfig::default());
    let route = HboneRoute::new(server.addr, server_id());
    let mut s = client.connect(upstream, &route).await.unwrap();
    echo_once(&mut s, b"allowed").await;
    let other = std::net::SocketAddr::new(upstream.ip(), allowed_port.wrapping_add(1));
    let err = client.connect(other, &route).await.unwrap_err();
    assert_eq!(
        err.rejection(),
        Some(fipstun_hbone::Rejection::Forbidden),
        "{err}"
    );
}

/// Keeps every handshake time it is told.
#[derive(Default)]
struct Timer(std::sync::Mutex<Vec<std::time::Duration>>);

impl fipstun_hbone::HandshakeObserver for Timer {
    fn tls_handshake_done(&self, took: std::time::Duration) {
        self.0.lock().unwrap().push(took);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_observers_hear_each_completed_tls_handshake_on_both_sides() {
    let pki = Pki::new();
    let (server_times, client_times) = (Arc::new(Timer::default()), Arc::new(Timer::default()));
    let server = start_server(
        &pki,
        ServerConfig::default().with_handshake_observer(server_times.clone()),
        AllowAll,
    )
    .await;
    let (upstream, _) = echo_upstream().await;
    let client = pki.client(ClientConfig::default().with_handshake_observer(client_times.clone()));
    let route = HboneRoute::new(server.addr, server_id());
    for _ in 0..3 {
        // Pooled: one connection, one handshake each side.
        let mut s = client.connect(upstream, &route).await.unwrap();
        echo_once(&mut s, b"timed").await;
    }
    eventually("the server saw its handshake", || {
        server_times.0.lock().unwrap().len() == 1
    })
    .await;
    let times = client_times.0.lock().unwrap().clone();
    assert_eq!(times.len(), 1, "{times:?}");
    assert!(times[0] < std::time::Duration::from_secs(10));
    assert!(
        format!(
            "{:?}",
            ClientConfig::default().with_handshake_observer(client_times.clone())
        )
        .contains("HandshakeObserver")
    );
}
