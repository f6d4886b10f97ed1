//! fipstun-benches: criterion benchmarks and the helpers they share.
//!
//! The benchmarks live in `benches/` beside this file (`./x bench` runs them and writes
//! BENCHMARKS.md); they measure and never assert timings. This library holds what they share:
//! the three backends set up the same way on 127.0.0.1 ([`plain`], [`hbone`], [`wireguard`]),
//! and the workloads, generic over [`Transport`] ([`bulk`], [`round_trip`], [`stream_setup`]).
//! The loopback servers they talk to (`Sinks`) are the scorecard's, from `fipstun-scorecard`.
//!
//! Nothing in the production crates depends on this one (`cli/tests/layering.rs` checks it).
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let sinks = fipstun_scorecard::Sinks::start().await.unwrap();
//! let t = fipstun_benches::plain();
//! fipstun_benches::bulk(&t, sinks.discard, 1 << 20, 2).await.unwrap();
//! # });
//! ```

use std::net::SocketAddr;
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
use fipstun_identity::tls::{Authorizer, SvidSlot, server_config};
use fipstun_transport::policy::{Policy, Rule};
use fipstun_transport::{FipsRequirement, Forwarder, ForwarderConfig, PlainTcp, Target, Transport};
use fipstun_wireguard::{WgConfig, WgNode, WgPeer, WgPrivateKey};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// Plain loopback TCP: the baseline.
pub fn plain() -> Arc<PlainTcp> {
    Arc::new(PlainTcp)
}

/// A fresh embedded CA for `bench.test` with the FIPS policy and its trust store: what every
/// FIPS bench needs to build SVIDs and rustls configs.
pub struct Pki {
    /// The trust domain (`bench.test`).
    pub td: TrustDomain,
    /// The FIPS crypto policy.
    pub policy: CryptoPolicy,
    /// The store holding the CA's bundle.
    pub trust: TrustStore,
    ca: SvidIssuer,
}

impl Pki {
    /// A new root CA.
    pub fn new() -> Self {
        let td = TrustDomain::new("bench.test").expect("valid trust domain");
        let ca = SvidIssuer::generate_root(
            td.clone(),
            KeyAlgorithm::EcdsaP256,
            Duration::from_secs(86400),
            IssuerConfig::default(),
        )
        .expect("CA");
        let trust = TrustStore::new(BundleSet::new().with(ca.bundle().clone()));
        Self {
            td,
            policy: CryptoPolicy::default(),
            trust,
            ca,
        }
    }

    /// `spiffe://bench.test/<path>` and a slot holding a fresh P-256 SVID for it.
    pub fn slot(&self, path: &str) -> (SpiffeId, Arc<SvidSlot>) {
        let id = SpiffeId::parse(&format!("spiffe://bench.test/{path}")).expect("valid ID");
        let slot = Arc::new(SvidSlot::new());
        let svid = self
            .ca
            .issue(&id, KeyAlgorithm::EcdsaP256, None)
            .expect("SVID");
        slot.set(&svid).expect("FIPS key");
        (id, slot)
    }

    /// Anyone in `bench.test`.
    pub fn anyone(&self) -> Authorizer {
        Authorizer::trust_domains([self.td.clone()])
    }
}

impl Default for Pki {
    fn default() -> Self {
        Self::new()
    }
}

/// An HBONE pair on loopback: a forwarding server (AllowAll) and a pooled client, both with
/// SVIDs from one fresh embedded CA. The server task runs until the runtime ends.
pub async fn hbone() -> Arc<HboneTransport> {
    let pki = Pki::new();
    let (server_id, server_slot) = pki.slot("node");
    let (_, client_slot) = pki.slot("proxy");
    let tls = server_config(&pki.policy, pki.trust.clone(), pki.anyone(), server_slot)
        .expect("server TLS");
    let server = HboneServer::from_rustls(tls, ServerConfig::default(), AllowAll).expect("server");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let node = listener.local_addr().expect("addr");
    tokio::spawn(async move { server.serve(listener).await });
    let client = HboneClient::new(
        TlsIdentity::new(pki.policy, pki.trust.clone(), client_slot),
        ClientConfig::default(),
    )
    .expect("client");
    Arc::new(
        HboneTransport::new(client, FipsRequirement::Required)
            .expect("FIPS")
            .with_default_route(HboneRoute::new(node, server_id)),
    )
}

/// A WireGuard pair on loopback UDP: the client node routing everything through the server
/// node, which forwards inbound streams to their targets. Keep the server alive while using
/// the client.
pub async fn wireguard() -> (Arc<WgNode>, WgNode) {
    let (server_key, client_key) = (WgPrivateKey::generate(), WgPrivateKey::generate());
    let any: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    // Tunnel-internal addresses: they exist only inside the encrypted tunnel.
    let server = WgNode::bind(
        WgConfig::new(server_key.clone(), any, [10, 99, 8, 1].into())
            .accepting_inbound()
            .with_peer(
                WgPeer::new(client_key.public_key())
                    .with_allowed_ip("10.99.8.2/32".parse().expect("prefix")),
            ),
    )
    .await
    .expect("server node");
    // The node's path: the one forwarder, allowed to reach the loopback sinks.
    let policy = Policy::new(vec![Rule::allow(["*"], ["127.0.0.0/8"]).expect("rule")]);
    let forwarder = Forwarder::new(PlainTcp, policy, ForwarderConfig::default());
    let listener = server.listener();
    tokio::spawn(async move { forwarder.run(listener).await });
    let client = WgNode::bind(
        WgConfig::new(client_key, any, [10, 99, 8, 2].into()).with_peer(
            WgPeer::new(server_key.public_key())
                .with_endpoint(server.local_addr())
                .with_allowed_ip("0.0.0.0/0".parse().expect("prefix")),
        ),
    )
    .await
    .expect("client node");
    (Arc::new(client), server)
}

/// Move `total` bytes to the discard sink over `streams` concurrent tunnelled streams (each
/// carries an equal share) and wait until the far end acknowledged all of it.
pub async fn bulk<T: Transport>(
    t: &Arc<T>,
    discard: SocketAddr,
    total: u64,
    streams: usize,
) -> Result<(), String> {
    let share = total / streams.max(1) as u64;
    let mut set = JoinSet::new();
    for i in 0..streams.max(1) {
        let t = t.clone();
        set.spawn(async move {
            let mut s = t
                .connect(&Target::new(discard))
                .await
                .map_err(|e| format!("stream {i}: {e}"))?;
            let chunk = vec![0x5au8; 256 * 1024];
            let mut sent = 0u64;
            while sent < share {
                let n = (share - sent).min(chunk.len() as u64) as usize;
                s.write_all(&chunk[..n])
                    .await
                    .map_err(|e| format!("stream {i} write: {e}"))?;
                sent += n as u64;
            }
            s.shutdown()
                .await
                .map_err(|e| format!("stream {i} shutdown: {e}"))?;
            let mut ack = [0u8; 1];
            s.read_exact(&mut ack)
                .await
                .map_err(|e| format!("stream {i} ack: {e}"))?;
            Ok::<(), String>(())
        });
    }
    while let Some(r) = set.join_next().await {
        r.map_err(|e| e.to_string())??;
    }
    Ok(())
}

/// One request/response on an open echo stream: write `msg`, read as many bytes back.
pub async fn round_trip<S>(s: &mut S, msg: &[u8], back: &mut [u8]) -> std::io::Result<()>
where
    S: AsyncReadExt + AsyncWriteExt + Unpin,
{
    s.write_all(msg).await?;
    s.read_exact(&mut back[..msg.len()]).await?;
    Ok(())
}

/// Open a stream to the echo sink, make one 1-byte round trip, close it: what a new
/// connection costs on a warm tunnel (the pool for HBONE, the session for WireGuard).
pub async fn stream_setup<T: Transport>(t: &T, echo: SocketAddr) -> Result<(), String> {
    let mut s = t
        .connect(&Target::new(echo))
        .await
        .map_err(|e| e.to_string())?;
    let mut b = [0u8; 1];
    round_trip(&mut s, b"x", &mut b)
        .await
        .map_err(|e| e.to_string())?;
    s.shutdown().await.map_err(|e| e.to_string())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use fipstun_scorecard::Sinks;

    /// The harness itself works through every backend (small sizes; the benches go big).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn workloads_run_through_all_three_backends() {
        let sinks = Sinks::start().await.unwrap();
        async fn all<T: Transport>(t: Arc<T>, sinks: &Sinks) {
            bulk(&t, sinks.discard, 4 << 20, 4).await.unwrap();
            stream_setup(&*t, sinks.echo).await.unwrap();
            let mut s = t.connect(&Target::new(sinks.echo)).await.unwrap();
            let mut back = [0u8; 1024];
            round_trip(&mut s, &[7u8; 1024], &mut back).await.unwrap();
            assert_eq!(back, [7u8; 1024]);
        }
        all(plain(), &sinks).await;
        let relayed = sinks.through_relay().await.unwrap();
        assert_ne!(relayed.echo, sinks.echo);
        assert_ne!(relayed.discard, sinks.discard);
        all(plain(), &relayed).await;
        let h = hbone().await;
        assert!(h.security().fips);
        all(h, &sinks).await;
        let (w, _server) = wireguard().await;
        assert!(!w.security().fips);
        all(w, &sinks).await;
    }
}
