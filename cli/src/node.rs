//! `fipstun node`: the inbound side. An HBONE server and/or a WireGuard node accept
//! authenticated streams; the one forwarder of `fipstun-transport` judges each by the node's
//! policy (deny by default), dials the allowed ones and copies bytes both ways.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use fipstun_hbone::{AllowAll, HboneServer, TlsIdentity};
use fipstun_identity::policy::CryptoPolicy;
use fipstun_identity::tls::Authorizer;
use fipstun_transport::{Forwarder, PlainTcp};
#[cfg(feature = "wireguard")]
use fipstun_wireguard::WgNode;
use tokio::net::TcpListener;

use crate::admin::{Admin, Listeners, Readiness};
use crate::config::NodeConfig;
use crate::metrics::{Fold, Metrics, TlsTimer};
use crate::reload::{LivePolicy, hangups};
use crate::signals::termination;
use crate::streams::{Direction, StreamEvents};

/// CONNECTs an HBONE server may hold for the forwarder at once; more get 503.
const HBONE_QUEUE: usize = 1024;

/// Run the node until SIGTERM/SIGINT, then drain.
pub(crate) async fn run(
    cfg: NodeConfig,
    reload: impl Fn() -> Result<NodeConfig, crate::config::ConfigError>,
) -> Result<(), String> {
    let metrics = Arc::new(Metrics::new());
    metrics.set_fips(cfg.fips);
    let mut stop_signal =
        Box::pin(termination().map_err(|e| format!("cannot install signal handlers: {e}"))?);
    let mut hangup = hangups().map_err(|e| format!("cannot install the SIGHUP handler: {e}"))?;
    let mut ready = Vec::new();
    // The admin listeners first, so readiness answers (503) while the identity arrives.
    let mut expected = Vec::new();
    expected.extend(cfg.hbone.as_ref().map(|h| h.listen));
    #[cfg(feature = "wireguard")]
    expected.extend(cfg.wireguard.as_ref().map(|w| w.listen));
    let readiness = Arc::new(Readiness::new(
        cfg.hbone.is_some() && cfg.identity.is_some(),
        expected,
    ));
    let admin = Listeners::bind(cfg.observe.ready, cfg.metrics, cfg.observe.admin).await?;
    let admin_addrs = admin.addrs();
    admin.serve(Arc::new(Admin {
        readiness: readiness.clone(),
        metrics: metrics.clone(),
        config: crate::admin::node_dump(&cfg),
    }));
    if cfg.policy.is_empty() {
        tracing::warn!(
            "no policy rules ([[policy]] or --allow-target): every stream will be refused; \
             add an allow rule naming the targets this node may reach"
        );
    }

    // Bind every socket first: the policy must know the node's own listeners.
    let hbone_listener = match &cfg.hbone {
        Some(h) => Some(
            TcpListener::bind(h.listen)
                .await
                .map_err(|e| format!("hbone: cannot listen on {}: {e}", h.listen))?,
        ),
        None => None,
    };
    let mut own: Vec<SocketAddr> = admin_addrs.iter().map(|(_, a)| *a).collect();
    for l in hbone_listener.iter() {
        own.push(l.local_addr().map_err(|e| e.to_string())?);
    }
    let own_ips = local_ips(&own);
    let policy = LivePolicy::new(
        cfg.policy
            .clone()
            .with_own_listeners(own.clone(), own_ips.clone()),
    );
    let forwarder = |backend: &'static str| {
        let events = StreamEvents::new(
            metrics.clone(),
            backend,
            Direction::Inbound,
            cfg.observe.access_log,
        );
        let limits = cfg.limits.clone().with_observer(Arc::new(events));
        let fwd = Forwarder::new(PlainTcp, policy.clone(), limits);
        let view = fwd.clone();
        (
            fwd,
            Box::new(move || view.stats()) as crate::metrics::StatsFn,
            backend,
        )
    };

    let mut forwarders = Vec::new();
    let hbone = match (&cfg.hbone, &cfg.identity, hbone_listener) {
        (Some(h), Some(identity), Some(listener)) => {
            let crypto = CryptoPolicy::default();
            let live = crate::identity_source::start(identity).await?;
            let (slot, trust) = (live.slot.clone(), live.trust.clone());
            readiness.identity_loaded(slot.clone(), trust.clone());
            metrics.watch_svid(slot.clone());
            let clients = if h.allow.is_empty() {
                Authorizer::trust_domains([live.id.trust_domain()])
            } else {
                Authorizer::ids(h.allow.iter().cloned())
            };
            let identity = TlsIdentity::new(crypto, trust, slot);
            let (server, incoming) = HboneServer::with_delivery(
                &identity,
                clients,
                h.server
                    .clone()
                    .with_drain_timeout(cfg.drain)
                    .with_handshake_observer(TlsTimer::new(metrics.clone(), "server")),
                AllowAll,
                HBONE_QUEUE,
            )
            .map_err(|e| format!("hbone: {e}"))?;
            let addr = listener.local_addr().map_err(|e| e.to_string())?;
            ready.push(format!("hbone={addr}"));
            readiness.bound(h.listen);
            let (fwd, stats, backend) = forwarder("hbone");
            // The server counts connections, streams and bytes; the forwarder its refusals.
            let refusals = {
                let view = fwd.clone();
                Box::new(move || view.stats()) as crate::metrics::StatsFn
            };
            metrics.watch_hbone_server(server.clone(), refusals);
            metrics.watch_forwarder(
                backend,
                stats,
                Fold {
                    accepted: false,
                    streams_and_bytes: false,
                    inbound_is_local: false,
                },
            );
            let serving = server.clone();
            tokio::spawn(async move { serving.serve(listener).await });
            let run = fwd.clone();
            tokio::spawn(async move { run.run(incoming).await });
            forwarders.push(fwd);
            tracing::info!(%addr, id = %live.id, "HBONE server listening");
            Some(server)
        }
        (Some(_), None, _) => return Err("[hbone] needs [identity]".into()),
        _ => None,
    };

    #[cfg(feature = "wireguard")]
    let wireguard = match &cfg.wireguard {
        Some(w) => {
            let wg = w.wg_config(cfg.fips).accepting_inbound();
            crate::config::warn_if_rekey_shortened(w);
            let node = WgNode::bind(wg)
                .await
                .map_err(|e| format!("wireguard: cannot start on {}: {e}", w.listen))?;
            ready.push(format!("wireguard={}", node.local_addr()));
            readiness.bound(w.listen);
            metrics.watch_wireguard(node.clone());
            let (fwd, stats, backend) = forwarder("wireguard");
            metrics.watch_forwarder(
                backend,
                stats,
                Fold {
                    accepted: true,
                    streams_and_bytes: true,
                    inbound_is_local: false,
                },
            );
            let (run, listener) = (fwd.clone(), node.listener());
            tokio::spawn(async move { run.run(listener).await });
            forwarders.push(fwd);
            tracing::info!(addr = %node.local_addr(), public_key = %node.public_key(), "WireGuard node listening");
            Some(node)
        }
        None => None,
    };
    // Built without WireGuard, the config loader refused `[wireguard]`: there is none here.
    #[cfg(not(feature = "wireguard"))]
    if let Some(w) = &cfg.wireguard {
        match *w {}
    }

    ready.extend(crate::admin::ready_words(&admin_addrs));
    ready.push(format!("fips={}", cfg.fips.label()));
    readiness.started();
    eprintln!("fipstun node: ready {}", ready.join(" "));

    let signal = loop {
        tokio::select! {
            signal = &mut stop_signal => break signal,
            _ = hangup.recv() => match reload() {
                Ok(new) => {
                    for (key, changed) in [
                        ("hbone", format!("{:?}", cfg.hbone.as_ref().map(|h| (h.listen, &h.allow))) != format!("{:?}", new.hbone.as_ref().map(|h| (h.listen, &h.allow)))),
                        ("wireguard", cfg.wireguard.is_some() != new.wireguard.is_some()),
                        ("identity", format!("{:?}", cfg.identity.as_ref().map(|i| i.kind())) != format!("{:?}", new.identity.as_ref().map(|i| i.kind()))),
                        ("fips", cfg.fips != new.fips),
                        ("limits", format!("{:?}", cfg.limits) != format!("{:?}", new.limits)),
                        ("metrics", cfg.metrics != new.metrics),
                    ] {
                        if changed {
                            tracing::warn!(key, "reload: `{key}` changed; it takes effect at the next restart");
                        }
                    }
                    if new.policy.is_empty() {
                        tracing::warn!("reload: no policy rules: every new stream will be refused");
                    }
                    let rules = new.policy.rules().len();
                    policy.replace(new.policy.with_own_listeners(own.clone(), own_ips.clone()));
                    tracing::info!(rules, "reloaded: new streams are judged by the new policy");
                }
                Err(e) => tracing::error!("reload: bad configuration, nothing changed: {e}"),
            },
        }
    };
    tracing::info!(signal, drain = ?cfg.drain, "stopping: no new streams, draining open ones");
    for f in &forwarders {
        f.shutdown();
    }
    let hbone_drain = async {
        if let Some(server) = &hbone {
            server.shutdown().await;
        }
    };
    let streams_drain = async {
        for f in &forwarders {
            if !f.drained(cfg.drain).await {
                tracing::warn!(
                    open = f.stats().active,
                    "drain time over; closing streams still open"
                );
            }
        }
    };
    tokio::join!(hbone_drain, streams_drain);
    #[cfg(feature = "wireguard")]
    drop(wireguard);
    tracing::info!("stopped");
    Ok(())
}

/// The host's addresses, when a listener is bound to an unspecified address (`0.0.0.0`):
/// a CONNECT to any of them on that port would come back into the node.
pub(crate) fn local_ips(listeners: &[SocketAddr]) -> Vec<IpAddr> {
    if !listeners.iter().any(|a| a.ip().is_unspecified()) {
        return Vec::new();
    }
    match nix::ifaddrs::getifaddrs() {
        Ok(addrs) => addrs
            .filter_map(|i| i.address)
            .filter_map(|a| {
                a.as_sockaddr_in()
                    .map(|v4| IpAddr::V4(v4.ip()))
                    .or_else(|| a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())))
            })
            .collect(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot list the host's addresses; only loopback is known as this node");
            Vec::new()
        }
    }
}
