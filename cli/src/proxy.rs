//! `fipstun proxy`: the outbound side. Each listener accepts local plaintext TCP connections
//! and carries each one through its backend (HBONE, WireGuard or plain TCP) to a fixed target,
//! on the one forwarder of `fipstun-transport` with the backend as its dialer.

use std::net::SocketAddr;
use std::sync::Arc;

use fipstun_hbone::{ClientConfig, HboneClient, HboneRoute, HboneTransport, TlsIdentity};
use fipstun_identity::policy::CryptoPolicy;
use fipstun_transport::policy::{Policy, Rule};
use fipstun_transport::{Forwarder, ForwarderConfig, PlainTcp, Target, TcpAcceptor, Transport};
use fipstun_wireguard::{WgConfig, WgNode};
use tokio::net::TcpListener;

use crate::config::{ProxyConfig, Via};
use crate::metrics::{Fold, Metrics};
use crate::signals::termination;

/// Run the proxy until SIGTERM/SIGINT, then drain.
pub(crate) async fn run(cfg: ProxyConfig) -> Result<(), String> {
    let metrics = Arc::new(Metrics::new());
    metrics.set_fips(cfg.fips);
    let stop_signal = termination().map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let policy = CryptoPolicy::default();

    // One HBONE client (one pool) for every HBONE listener.
    let hbone_client = match &cfg.identity {
        Some(identity)
            if cfg
                .listeners
                .iter()
                .any(|l| matches!(l.via, Via::Hbone { .. })) =>
        {
            let live = crate::identity_source::start(identity, policy).await?;
            let (slot, trust) = (live.slot, live.trust);
            let client = HboneClient::new(
                TlsIdentity::new(policy, trust, slot),
                ClientConfig::default(),
            )
            .map_err(|e| format!("hbone client: {e}"))?;
            metrics.watch_hbone_client(client.clone());
            Some(client)
        }
        _ => None,
    };
    // One WireGuard node for every WireGuard listener.
    let wg = match &cfg.wireguard {
        Some(w) => {
            let mut c = WgConfig::new(w.private_key.clone(), w.listen, w.address);
            c.peers = w.peers.clone();
            c.fips = cfg.fips.requirement();
            let node = WgNode::bind(c)
                .await
                .map_err(|e| format!("wireguard: cannot start on {}: {e}", w.listen))?;
            metrics.watch_wireguard(node.clone());
            tracing::info!(addr = %node.local_addr(), public_key = %node.public_key(), "WireGuard node up");
            Some(node)
        }
        None => None,
    };

    let mut ready = Vec::new();
    let mut forwarders: Vec<Box<dyn Drain>> = Vec::new();
    for l in &cfg.listeners {
        let listener = TcpListener::bind(l.listen)
            .await
            .map_err(|e| format!("listener {}: cannot listen: {e}", l.listen))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        ready.push(format!("listener={addr}"));
        let target = Target::new(l.target);
        tracing::info!(%addr, %target, via = l.via.label(), "listening");
        let acceptor = TcpAcceptor::new(listener, target);
        let backend = l.via.label();
        match &l.via {
            Via::Hbone { node, node_id } => {
                let client = hbone_client
                    .clone()
                    .ok_or("via = \"hbone\" needs [identity]")?;
                let t = HboneTransport::new(client, policy, cfg.fips.requirement())
                    .map_err(|e| format!("listener {addr}: {e}"))?
                    .with_default_route(HboneRoute::new(*node, node_id.clone()));
                forwarders.push(serve(
                    &metrics,
                    backend,
                    &cfg.limits,
                    t,
                    l.target,
                    acceptor,
                )?);
            }
            Via::Wireguard => {
                let t = wg.clone().ok_or("via = \"wireguard\" needs [wireguard]")?;
                forwarders.push(serve(
                    &metrics,
                    backend,
                    &cfg.limits,
                    t,
                    l.target,
                    acceptor,
                )?);
            }
            Via::Plain => {
                forwarders.push(serve(
                    &metrics,
                    backend,
                    &cfg.limits,
                    PlainTcp,
                    l.target,
                    acceptor,
                )?);
            }
        }
    }
    if let Some(l) = crate::metrics::bind(cfg.metrics).await? {
        ready.push(format!(
            "metrics={}",
            l.local_addr().map_err(|e| e.to_string())?
        ));
        tokio::spawn(crate::metrics::serve(l, metrics.clone()));
    }
    ready.push(format!("fips={}", cfg.fips.label()));
    eprintln!("fipstun proxy: ready {}", ready.join(" "));

    let signal = stop_signal.await;
    tracing::info!(signal, drain = ?cfg.drain, "stopping: no new connections, draining open ones");
    for f in &forwarders {
        f.stop();
    }
    for f in &forwarders {
        if !f.drained(cfg.drain).await {
            tracing::warn!("drain time over; closing streams still open");
        }
    }
    tracing::info!("stopped");
    Ok(())
}

/// A forwarder of any dialer, as the drain sees it.
trait Drain: Send + Sync {
    fn stop(&self);
    fn drained(
        &self,
        limit: std::time::Duration,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send + '_>>;
}

impl<D: Transport> Drain for Forwarder<D> {
    fn stop(&self) {
        self.shutdown();
    }
    fn drained(
        &self,
        limit: std::time::Duration,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send + '_>> {
        Box::pin(Forwarder::drained(self, limit))
    }
}

/// Run the one forwarder on a local listener: every connection goes through `dialer` to the
/// listener's fixed `target`, the only destination its policy allows.
fn serve<D: Transport>(
    metrics: &Metrics,
    backend: &'static str,
    limits: &ForwarderConfig,
    dialer: D,
    target: SocketAddr,
    acceptor: TcpAcceptor,
) -> Result<Box<dyn Drain>, String> {
    let to = match target {
        SocketAddr::V4(a) => format!("{}/32:{}", a.ip(), a.port()),
        SocketAddr::V6(a) => format!("[{}/128]:{}", a.ip(), a.port()),
    };
    let only_target = Policy::new(vec![
        Rule::allow(["*"], [to]).map_err(|e| format!("listener target {target}: {e}"))?,
    ]);
    let fwd = Forwarder::new(dialer, only_target, limits.clone());
    let view = fwd.clone();
    metrics.watch_forwarder(
        backend,
        Box::new(move || view.stats()),
        Fold {
            accepted: true,
            streams_and_bytes: true,
            inbound_is_local: true,
        },
    );
    let run = fwd.clone();
    tokio::spawn(async move { run.run(acceptor).await });
    Ok(Box::new(fwd))
}
