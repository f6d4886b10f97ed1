//! `fipstun node`: the inbound side. An HBONE server and/or a WireGuard node accept
//! authenticated streams and forward the authorized ones to their targets over TCP.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use fipstun_hbone::{ConnectContext, Decision, HboneServer, ServerConfig};
use fipstun_identity::policy::CryptoPolicy;
use fipstun_identity::tls::{Authorizer, server_config};
use fipstun_transport::{Inbound, TunnelListener};
use fipstun_wireguard::{IpPrefix, WgConfig, WgListener, WgNode};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::config::NodeConfig;
use crate::metrics::{BackendMetrics, Metrics};
use crate::relay::{ActiveStreams, COPY_BUFFER_BYTES, Counted, termination};

/// How long the node waits for a target's TCP connect.
const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Which targets the node may dial (`allow_targets`; empty = any).
#[derive(Debug, Clone)]
struct TargetPolicy(Arc<Vec<IpPrefix>>);

impl TargetPolicy {
    fn allows(&self, target: SocketAddr) -> bool {
        self.0.is_empty() || self.0.iter().any(|p| p.contains(target.ip()))
    }
}

/// Run the node until SIGTERM/SIGINT, then drain.
pub(crate) async fn run(cfg: NodeConfig) -> Result<(), String> {
    let metrics = Arc::new(Metrics::new());
    let targets = TargetPolicy(Arc::new(cfg.allow_targets.clone()));
    let stop_signal = termination().map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut ready = Vec::new();

    let hbone = match (&cfg.hbone, &cfg.identity) {
        (Some(h), Some(identity)) => {
            let policy = CryptoPolicy::default();
            let live = crate::identity_source::start(identity, policy).await?;
            let (slot, trust) = (live.slot.clone(), live.trust.clone());
            let clients = if h.allow.is_empty() {
                Authorizer::trust_domains([live.id.trust_domain()])
            } else {
                Authorizer::ids(h.allow.iter().cloned())
            };
            let tls = server_config(&policy, trust, clients, slot)
                .map_err(|e| format!("hbone: TLS configuration refused: {e}"))?;
            let refusals = Arc::new(AtomicU64::new(0));
            let handler = {
                let (targets, refusals) = (targets.clone(), refusals.clone());
                let m = metrics.backend("hbone");
                move |ctx: &ConnectContext<'_>| match ctx.target_addr() {
                    Some(t) if targets.allows(t) => Decision::Allow,
                    target => {
                        refusals.fetch_add(1, Ordering::Relaxed);
                        m.refused("target_not_allowed");
                        tracing::warn!(
                            peer = %ctx.peer_id,
                            target = %ctx.request.target(),
                            ?target,
                            "target not in allow_targets: 403"
                        );
                        Decision::Forbidden
                    }
                }
            };
            let server = HboneServer::new(
                tls,
                ServerConfig::default().with_drain_timeout(cfg.drain),
                handler,
            )
            .map_err(|e| format!("hbone: {e}"))?;
            let listener = TcpListener::bind(h.listen)
                .await
                .map_err(|e| format!("hbone: cannot listen on {}: {e}", h.listen))?;
            let addr = listener.local_addr().map_err(|e| e.to_string())?;
            ready.push(format!("hbone={addr}"));
            metrics.watch_hbone_server(server.clone(), refusals);
            let serving = server.clone();
            tokio::spawn(async move {
                if let Err(e) = serving.serve(listener).await {
                    tracing::error!(error = %e, "hbone server stopped");
                }
            });
            tracing::info!(%addr, id = %live.id, "HBONE server listening");
            Some(server)
        }
        (Some(_), None) => return Err("[hbone] needs [identity]".into()),
        _ => None,
    };

    let streams = Arc::new(ActiveStreams::default());
    let wireguard = match &cfg.wireguard {
        Some(w) => {
            let mut wg =
                WgConfig::new(w.private_key.clone(), w.listen, w.address).accepting_inbound();
            wg.peers = w.peers.clone();
            let node = WgNode::bind(wg)
                .await
                .map_err(|e| format!("wireguard: cannot start on {}: {e}", w.listen))?;
            ready.push(format!("wireguard={}", node.local_addr()));
            metrics.watch_wireguard(node.clone());
            tracing::info!(addr = %node.local_addr(), public_key = %node.public_key(), "WireGuard node listening");
            tokio::spawn(forward_wireguard(
                node.listener(),
                targets.clone(),
                metrics.backend("wireguard"),
                streams.clone(),
                stop_rx.clone(),
            ));
            Some(node)
        }
        None => None,
    };

    if let Some(l) = crate::metrics::bind(cfg.metrics).await? {
        ready.push(format!(
            "metrics={}",
            l.local_addr().map_err(|e| e.to_string())?
        ));
        tokio::spawn(crate::metrics::serve(l, metrics.clone()));
    }
    eprintln!("fipstun node: ready {}", ready.join(" "));

    let signal = stop_signal.await;
    tracing::info!(signal, drain = ?cfg.drain, "stopping: no new streams, draining open ones");
    let _ = stop_tx.send(true);
    let hbone_drain = async {
        if let Some(server) = &hbone {
            server.shutdown().await;
        }
    };
    let (_, wg_drained) = tokio::join!(hbone_drain, streams.drained(cfg.drain));
    if !wg_drained {
        tracing::warn!(
            open = streams.count(),
            "drain time over; closing WireGuard streams still open"
        );
    }
    drop(wireguard);
    tracing::info!("stopped");
    Ok(())
}

/// Accept tunnelled WireGuard streams, refuse targets outside the policy (the stream is
/// dropped), and relay the rest to their targets until `stop`.
async fn forward_wireguard(
    listener: WgListener,
    targets: TargetPolicy,
    m: BackendMetrics,
    streams: Arc<ActiveStreams>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let inbound = tokio::select! {
            r = listener.accept() => r,
            _ = stop.changed() => return,
        };
        let Inbound {
            stream,
            peer,
            target,
        } = match inbound {
            Ok(i) => i,
            Err(e) => {
                tracing::error!(error = %e, "WireGuard listener failed");
                return;
            }
        };
        m.accepted.inc();
        if !targets.allows(target.addr) {
            m.refused("target_not_allowed");
            tracing::warn!(%peer, %target, "target not in allow_targets: stream dropped");
            continue;
        }
        let guard = streams.start(&m.active);
        let m = m.clone();
        tokio::spawn(async move {
            let _guard = guard;
            let upstream =
                tokio::time::timeout(UPSTREAM_CONNECT_TIMEOUT, TcpStream::connect(target.addr))
                    .await;
            let mut upstream = match upstream {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    m.refused("unreachable");
                    tracing::info!(%peer, %target, error = %e, "target unreachable: stream dropped");
                    return;
                }
                Err(_) => {
                    m.refused("unreachable");
                    tracing::info!(%peer, %target, "target connect timed out: stream dropped");
                    return;
                }
            };
            let _ = upstream.set_nodelay(true);
            m.streams.inc();
            tracing::debug!(%peer, %target, "stream forwarded");
            let mut tunnel = Counted::new(stream, m.bytes_in.clone(), m.bytes_out.clone());
            if let Err(e) = tokio::io::copy_bidirectional_with_sizes(
                &mut tunnel,
                &mut upstream,
                COPY_BUFFER_BYTES,
                COPY_BUFFER_BYTES,
            )
            .await
            {
                tracing::debug!(%peer, %target, error = %e, "stream ended with an error");
            }
        });
    }
}
