//! `fipstun proxy`: the outbound side. Each listener accepts local plaintext TCP connections
//! and carries each one through its backend (HBONE, WireGuard or plain TCP) to a fixed target.

use std::sync::Arc;

use fipstun_hbone::{ClientConfig, HboneClient, HboneRoute, HboneTransport, TlsIdentity};
use fipstun_identity::policy::CryptoPolicy;
use fipstun_transport::{PlainTcp, Target, Transport, TransportError};
use fipstun_wireguard::{WgConfig, WgNode};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::{ProxyConfig, Via};
use crate::metrics::{BackendMetrics, Metrics};
use crate::relay::{ActiveStreams, COPY_BUFFER_BYTES, Counted, termination};

/// Run the proxy until SIGTERM/SIGINT, then drain.
pub(crate) async fn run(cfg: ProxyConfig) -> Result<(), String> {
    let metrics = Arc::new(Metrics::new());
    let stop_signal = termination().map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let streams = Arc::new(ActiveStreams::default());
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
            c.fips = cfg.fips;
            let node = WgNode::bind(c)
                .await
                .map_err(|e| format!("wireguard: cannot start on {}: {e}", w.listen))?;
            metrics.watch_wireguard(node.clone());
            tracing::info!(addr = %node.local_addr(), public_key = %node.public_key(), "WireGuard node up");
            Some(Arc::new(node))
        }
        None => None,
    };

    let mut ready = Vec::new();
    for l in &cfg.listeners {
        let listener = TcpListener::bind(l.listen)
            .await
            .map_err(|e| format!("listener {}: cannot listen: {e}", l.listen))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        ready.push(format!("listener={addr}"));
        let target = Target::new(l.target);
        let m = metrics.backend(l.via.label());
        let (streams, stop) = (streams.clone(), stop_rx.clone());
        tracing::info!(%addr, %target, via = l.via.label(), "listening");
        match &l.via {
            Via::Hbone { node, node_id } => {
                let client = hbone_client
                    .clone()
                    .ok_or("via = \"hbone\" needs [identity]")?;
                let t = HboneTransport::new(client, policy, cfg.fips)
                    .map_err(|e| format!("listener {addr}: {e}"))?
                    .with_default_route(HboneRoute::new(*node, node_id.clone()));
                tokio::spawn(accept(listener, Arc::new(t), target, m, streams, stop));
            }
            Via::Wireguard => {
                let t = wg.clone().ok_or("via = \"wireguard\" needs [wireguard]")?;
                tokio::spawn(accept(listener, t, target, m, streams, stop));
            }
            Via::Plain => {
                tokio::spawn(accept(
                    listener,
                    Arc::new(PlainTcp),
                    target,
                    m,
                    streams,
                    stop,
                ));
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
    eprintln!("fipstun proxy: ready {}", ready.join(" "));

    let signal = stop_signal.await;
    tracing::info!(signal, drain = ?cfg.drain, "stopping: no new connections, draining open ones");
    let _ = stop_tx.send(true);
    if !streams.drained(cfg.drain).await {
        tracing::warn!(
            open = streams.count(),
            "drain time over; closing streams still open"
        );
    }
    tracing::info!("stopped");
    Ok(())
}

/// Accept local connections until `stop`; carry each through `transport` to `target`.
async fn accept<T: Transport>(
    listener: TcpListener,
    transport: Arc<T>,
    target: Target,
    m: BackendMetrics,
    streams: Arc<ActiveStreams>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = stop.changed() => return,
        };
        let (tcp, client) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        m.accepted.inc();
        let _ = tcp.set_nodelay(true);
        let guard = streams.start(&m.active);
        let (transport, target, m) = (transport.clone(), target.clone(), m.clone());
        tokio::spawn(async move {
            let _guard = guard;
            let mut tunnel = match transport.connect(&target).await {
                Ok(s) => s,
                Err(e) => {
                    m.refused(refusal_reason(&e));
                    tracing::warn!(%client, %target, error = %e, "cannot open the tunnel stream; closing");
                    return;
                }
            };
            m.streams.inc();
            tracing::debug!(%client, %target, "stream open");
            // Reads from the local client go into the tunnel; writes to it came out.
            let mut local = Counted::new(tcp, m.bytes_out.clone(), m.bytes_in.clone());
            if let Err(e) = tokio::io::copy_bidirectional_with_sizes(
                &mut local,
                &mut tunnel,
                COPY_BUFFER_BYTES,
                COPY_BUFFER_BYTES,
            )
            .await
            {
                tracing::debug!(%client, %target, error = %e, "stream ended with an error");
            }
        });
    }
}

/// The `reason` label of a failed tunnel connect.
fn refusal_reason(e: &TransportError) -> &'static str {
    match e {
        TransportError::Refused { .. } => "refused",
        TransportError::Unreachable { .. } => "unreachable",
        TransportError::NoRoute(_) => "no_route",
        TransportError::FipsRequired { .. } => "fips_required",
        TransportError::Closed => "closed",
        _ => "tunnel",
    }
}
