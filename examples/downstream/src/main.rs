//! A proxy author's first program against fipstun: an embedded CA issues two SVIDs, an HBONE
//! server forwards to an echo service, and a client stream goes through the `Transport` trait.
use std::sync::Arc;
use std::time::Duration;

use fipstun_hbone::{
    AllowAll, ClientConfig, HboneClient, HboneRoute, HboneServer, HboneTransport, ServerConfig,
    TlsIdentity,
};
use fipstun_identity::bundle::{BundleSet, TrustStore};
use fipstun_identity::ca::{IssuerConfig, SvidIssuer};
use fipstun_identity::keys::KeyAlgorithm;
use fipstun_identity::policy::CryptoPolicy;
use fipstun_identity::spiffe::{SpiffeId, TrustDomain};
use fipstun_identity::tls::{Authorizer, SvidSlot};
use fipstun_transport::{FipsRequirement, Target, Transport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type Error = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let td = TrustDomain::new("example.org")?;
    let ca = SvidIssuer::generate_root(
        td.clone(),
        KeyAlgorithm::EcdsaP256,
        Duration::from_secs(3600),
        IssuerConfig::default(),
    )?;
    let trust = TrustStore::new(BundleSet::new().with(ca.bundle().clone()));
    let identity = |id: &SpiffeId| -> Result<TlsIdentity, Error> {
        let slot = Arc::new(SvidSlot::new());
        slot.set(&ca.issue(id, KeyAlgorithm::EcdsaP256, None)?)?;
        Ok(TlsIdentity::new(CryptoPolicy::default(), trust.clone(), slot))
    };
    let node_id = SpiffeId::parse("spiffe://example.org/ns/istio-system/sa/node")?;
    let app_id = SpiffeId::parse("spiffe://example.org/ns/prod/sa/app")?;

    // The echo service the tunnel ends at.
    let echo = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let echo_addr = echo.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut s, _)) = echo.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });

    // The HBONE node: any SVID of the trust domain may connect, every CONNECT is forwarded.
    let server = HboneServer::new(
        &identity(&node_id)?,
        Authorizer::trust_domains([td]),
        ServerConfig::default(),
        AllowAll,
    )?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let node_addr = listener.local_addr()?;
    tokio::spawn({
        let server = server.clone();
        async move { server.serve(listener).await }
    });

    // The client side, through the backend-neutral trait.
    let client = HboneClient::new(identity(&app_id)?, ClientConfig::default())?;
    let transport = HboneTransport::new(client, FipsRequirement::Required)?
        .with_default_route(HboneRoute::new(node_addr, node_id.clone()));
    let mut stream = transport.connect(&Target::new(echo_addr)).await?;
    stream.write_all(b"round trip").await?;
    stream.shutdown().await?;
    let mut back = Vec::new();
    stream.read_to_end(&mut back).await?;
    assert_eq!(back, b"round trip");

    let suite = stream.negotiated().map(|n| n.to_string()).unwrap_or_default();
    println!(
        "round trip ok: {} bytes via {} ({suite}, fips={})",
        back.len(),
        stream.peer_identity(),
        transport.security().fips
    );
    server.shutdown().await;
    Ok(())
}
