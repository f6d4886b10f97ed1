//! `fipstun proxy`: the outbound side. Each listener accepts local plaintext TCP connections
//! and carries each one through its backend (HBONE, WireGuard or plain TCP) to a fixed target,
//! on the one forwarder of `fipstun-transport` with the backend as its dialer.

use std::net::SocketAddr;
use std::sync::Arc;

use fipstun_hbone::{ClientConfig, HboneClient, HboneRoute, HboneTransport, TlsIdentity};
use fipstun_identity::policy::CryptoPolicy;
use fipstun_transport::policy::Policy;
use fipstun_transport::{Forwarder, ForwarderConfig, PlainTcp, Target, TcpAcceptor, Transport};
#[cfg(feature = "wireguard")]
use fipstun_wireguard::{WgConfig, WgNode};
use tokio::net::TcpListener;

use crate::admin::{Admin, Listeners, Readiness};
use crate::config::{ProxyConfig, Via};
use crate::metrics::{Fold, Metrics, TlsTimer};
use crate::signals::termination;
use crate::streams::{Direction, StreamEvents};

/// Run the proxy until SIGTERM/SIGINT, then drain.
pub(crate) async fn run(cfg: ProxyConfig) -> Result<(), String> {
    let metrics = Arc::new(Metrics::new());
    metrics.set_fips(cfg.fips);
    let stop_signal = termination().map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let policy = CryptoPolicy::default();
    // The admin listeners first, so readiness answers (503) while the identity arrives.
    let hbone_listeners = cfg
        .listeners
        .iter()
        .any(|l| matches!(l.via, Via::Hbone { .. }));
    let readiness = Arc::new(Readiness::new(
        hbone_listeners && cfg.identity.is_some(),
        cfg.listeners.iter().map(|l| l.listen),
    ));
    let admin = Listeners::bind(cfg.observe.ready, cfg.metrics, cfg.observe.admin).await?;
    let admin_addrs = admin.addrs();
    admin.serve(Arc::new(Admin {
        readiness: readiness.clone(),
        metrics: metrics.clone(),
        config: crate::admin::proxy_dump(&cfg),
    }));

    // One HBONE client (one pool) for every HBONE listener.
    let hbone_client = match &cfg.identity {
        Some(identity)
            if cfg
                .listeners
                .iter()
                .any(|l| matches!(l.via, Via::Hbone { .. })) =>
        {
            let live = crate::identity_source::start(identity).await?;
            let (slot, trust) = (live.slot, live.trust);
            readiness.identity_loaded(slot.clone(), trust.clone());
            metrics.watch_svid(slot.clone());
            let client = HboneClient::new(
                TlsIdentity::new(policy, trust, slot),
                ClientConfig::default()
                    .with_handshake_observer(TlsTimer::new(metrics.clone(), "client")),
            )
            .map_err(|e| format!("hbone client: {e}"))?;
            metrics.watch_hbone_client(client.clone());
            Some(client)
        }
        _ => None,
    };
    // One WireGuard node for every WireGuard listener.
    #[cfg(feature = "wireguard")]
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
    // Built without WireGuard, the config loader refused `[wireguard]`: there is none here.
    #[cfg(not(feature = "wireguard"))]
    if let Some(w) = &cfg.wireguard {
        match *w {}
    }

    let mut ready = Vec::new();
    let mut forwarders: Vec<Box<dyn Drain>> = Vec::new();
    for l in &cfg.listeners {
        let listener = TcpListener::bind(l.listen)
            .await
            .map_err(|e| format!("listener {}: cannot listen: {e}", l.listen))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        ready.push(format!("listener={addr}"));
        readiness.bound(l.listen);
        let target = Target::new(l.target);
        tracing::info!(%addr, %target, via = l.via.label(), "listening");
        let events = StreamEvents::new(
            metrics.clone(),
            l.via.label(),
            Direction::Outbound,
            cfg.observe.access_log,
        );
        let mut site = Site {
            events,
            metrics: &metrics,
            backend: l.via.label(),
            limits: &cfg.limits,
            acceptor: TcpAcceptor::new(listener, target),
            target: l.target,
        };
        let forwarder = match &l.via {
            Via::Hbone { node, node_id } => {
                site.events = site.events.via_hbone_node(*node, node_id.clone());
                let client = hbone_client
                    .clone()
                    .ok_or("via = \"hbone\" needs [identity]")?;
                let t = HboneTransport::new(client, cfg.fips.requirement())
                    .map_err(|e| format!("listener {addr}: {e}"))?
                    .with_default_route(HboneRoute::new(*node, node_id.clone()));
                site.serve(t)
            }
            #[cfg(feature = "wireguard")]
            Via::Wireguard => {
                site.serve(wg.clone().ok_or("via = \"wireguard\" needs [wireguard]")?)
            }
            Via::Plain => site.serve(PlainTcp),
        };
        forwarders.push(forwarder);
    }
    ready.extend(crate::admin::ready_words(&admin_addrs));
    ready.push(format!("fips={}", cfg.fips.label()));
    readiness.started();
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

/// One listener, waiting for its dialer.
struct Site<'a> {
    /// The listener's stream observer (access log, histograms).
    events: StreamEvents,
    metrics: &'a Metrics,
    backend: &'static str,
    limits: &'a ForwarderConfig,
    acceptor: TcpAcceptor,
    target: SocketAddr,
}

impl Site<'_> {
    /// Run the one forwarder on the listener: every connection goes through `dialer` to the
    /// listener's fixed target, the only destination its policy allows.
    fn serve<D: Transport>(self, dialer: D) -> Box<dyn Drain> {
        let limits = self.limits.clone().with_observer(Arc::new(self.events));
        let fwd = Forwarder::new(dialer, Policy::only_to([self.target]), limits);
        let view = fwd.clone();
        self.metrics.watch_forwarder(
            self.backend,
            Box::new(move || view.stats()),
            Fold {
                accepted: true,
                streams_and_bytes: true,
                inbound_is_local: true,
            },
        );
        let (run, acceptor) = (fwd.clone(), self.acceptor);
        tokio::spawn(async move { run.run(acceptor).await });
        Box::new(fwd)
    }
}
