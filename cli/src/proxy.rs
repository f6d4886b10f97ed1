//! `fipstun proxy`: the outbound side. Each listener accepts local plaintext TCP connections
//! and carries each one through a backend (HBONE, WireGuard or plain TCP), on the one forwarder
//! of `fipstun-transport`:
//!
//! - `mode = "fixed"`: every connection to the listener's one target, through its `via`;
//! - `mode = "redirect"`: connections iptables captured (REDIRECT), each to its original
//!   destination (`SO_ORIGINAL_DST`), routed by `[[route]]`;
//! - `mode = "socks5"`: SOCKS5 CONNECT requests, routed by `[[route]]`.
//!
//! SIGHUP re-reads the configuration: listeners added are bound, listeners removed stop
//! accepting (their streams run on), and the route table and its policy are replaced for new
//! streams. Identity, FIPS mode, `[wireguard]`, limits and the metrics address need a restart.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use fipstun_hbone::{ClientConfig, HboneClient, HboneRoute, HboneTransport, TlsIdentity};
use fipstun_identity::policy::CryptoPolicy;
use fipstun_transport::policy::{Action, Destination, Policy, Ports, Principal, Rule};
use fipstun_transport::redirect::RedirectAcceptor;
use fipstun_transport::socks5::{Socks5Acceptor, Socks5Config};
use fipstun_transport::{
    Acceptor, Authorize, AuthorizedByAcceptor, Forwarder, ForwarderConfig, PlainTcp, TcpAcceptor,
    Transport,
};
#[cfg(feature = "wireguard")]
use fipstun_wireguard::WgNode;
use tokio::net::TcpListener;

use crate::admin::{Admin, Listeners, Readiness};
use crate::config::AccessLog;
use crate::config::{
    ConfigError, ListenerKind, ListenerSettings, ProxyConfig, RouteSettings, RouteVia, Via,
};
use crate::metrics::{Fold, Metrics, TlsTimer};
use crate::reload::{LivePolicy, hangups};
use crate::route::{Backends, Router};
use crate::signals::termination;
use crate::streams::{Direction, StreamEvents};

/// Run the proxy until SIGTERM/SIGINT, then drain. SIGHUP calls `reload` and applies what it
/// can of the new configuration.
pub(crate) async fn run(
    cfg: ProxyConfig,
    reload: impl Fn() -> Result<ProxyConfig, ConfigError>,
) -> Result<(), String> {
    let metrics = Arc::new(Metrics::new());
    metrics.set_fips(cfg.fips);
    let mut stop_signal =
        Box::pin(termination().map_err(|e| format!("cannot install signal handlers: {e}"))?);
    let mut hangup = hangups().map_err(|e| format!("cannot install the SIGHUP handler: {e}"))?;
    let policy = CryptoPolicy::default();
    // One HBONE client (one pool) for every HBONE listener and route.
    let needs_hbone = cfg.listeners.iter().any(|l| {
        matches!(
            l.kind,
            ListenerKind::Fixed {
                via: Via::Hbone { .. },
                ..
            }
        )
    }) || cfg
        .routes
        .iter()
        .any(|r| matches!(r.via, RouteVia::Hbone { .. }));
    // The admin listeners first, so readiness answers (503) while the identity arrives.
    let readiness = Arc::new(Readiness::new(
        needs_hbone && cfg.identity.is_some(),
        cfg.listeners.iter().map(|l| l.listen),
    ));
    let admin = Listeners::bind(cfg.observe.ready, cfg.metrics, cfg.observe.admin).await?;
    let admin_addrs = admin.addrs();
    admin.serve(Arc::new(Admin {
        readiness: readiness.clone(),
        metrics: metrics.clone(),
        config: crate::admin::proxy_dump(&cfg),
    }));

    let hbone_client = match &cfg.identity {
        Some(identity) if needs_hbone => {
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
    // One WireGuard node for every WireGuard listener and route.
    #[cfg(feature = "wireguard")]
    let wg = match &cfg.wireguard {
        Some(w) => {
            crate::config::warn_if_rekey_shortened(w);
            let node = WgNode::bind(w.wg_config(cfg.fips))
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
    let backends = Backends {
        hbone: hbone_client,
        #[cfg(feature = "wireguard")]
        wireguard: wg,
    };
    let router = Router::new(&cfg.routes, &backends, cfg.fips.requirement())?;

    let mut proxy = Proxy {
        metrics: metrics.clone(),
        limits: cfg.limits.clone(),
        fips: cfg.fips.requirement(),
        backends,
        router,
        route_policy: LivePolicy::new(Policy::deny_all()),
        admin_addrs: admin_addrs.iter().map(|(_, a)| *a).collect(),
        readiness: readiness.clone(),
        access_log: cfg.observe.access_log,
        running: Vec::new(),
        retired: Vec::new(),
    };
    // Bind every listener before any serves, so the route policy knows them all.
    let mut bound = Vec::new();
    for l in &cfg.listeners {
        bound.push((l.clone(), bind(l.listen).await?));
    }
    let own: Vec<SocketAddr> = bound
        .iter()
        .filter_map(|(_, b)| b.local_addr().ok())
        .collect();
    proxy
        .route_policy
        .replace(route_policy(&cfg.routes, proxy.own_addrs(&own)));
    let mut ready = Vec::new();
    for (l, listener) in bound {
        let r = proxy.start(l, listener)?;
        ready.push(format!("listener={}", r.addr));
        proxy.running.push(r);
    }
    ready.extend(crate::admin::ready_words(&admin_addrs));
    ready.push(format!("fips={}", cfg.fips.label()));
    readiness.started();
    eprintln!("fipstun proxy: ready {}", ready.join(" "));

    let mut current = cfg;
    let signal = loop {
        tokio::select! {
            signal = &mut stop_signal => break signal,
            _ = hangup.recv() => match reload() {
                Ok(new) => {
                    proxy.apply(&current, &new).await;
                    current = new;
                }
                Err(e) => tracing::error!(
                    "reload: bad configuration, nothing changed: {e}"
                ),
            },
        }
    };
    tracing::info!(signal, drain = ?current.drain, "stopping: no new connections, draining open ones");
    let all: Vec<&Running> = proxy.running.iter().chain(proxy.retired.iter()).collect();
    for r in &all {
        r.forwarder.stop();
    }
    for r in &all {
        if !r.forwarder.drained(current.drain).await {
            tracing::warn!("drain time over; closing streams still open");
        }
    }
    tracing::info!("stopped");
    Ok(())
}

/// Bind `addr`; on reload the port may have been released a moment ago by the listener it
/// replaces, so an address in use is retried for a second.
async fn bind(addr: SocketAddr) -> Result<TcpListener, String> {
    let mut tries = 0;
    loop {
        match TcpListener::bind(addr).await {
            Ok(l) => return Ok(l),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && tries < 20 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(format!("listener {addr}: cannot listen: {e}")),
        }
    }
}

/// The policy of routed (redirect, SOCKS5) listeners: a destination is allowed when a route
/// covers it — loopback, link-local and the proxy's own listeners only when a route names
/// them — and everything else is refused.
fn route_policy(routes: &[RouteSettings], own: Vec<SocketAddr>) -> Policy {
    let to = routes
        .iter()
        .map(|r| Destination {
            cidr: r.cidr,
            ports: Ports::Any,
        })
        .collect();
    let local_ips = crate::node::local_ips(&own);
    Policy::new(vec![Rule {
        name: Some("route".into()),
        action: Action::Allow,
        from: vec![Principal::Any],
        to,
    }])
    .with_own_listeners(own, local_ips)
}

/// A listener that is serving.
struct Running {
    settings: ListenerSettings,
    addr: SocketAddr,
    forwarder: Box<dyn Drain>,
}

/// What the proxy keeps between reloads.
struct Proxy {
    metrics: Arc<Metrics>,
    limits: ForwarderConfig,
    fips: fipstun_transport::FipsRequirement,
    backends: Backends,
    router: Router,
    route_policy: LivePolicy,
    /// The admin endpoints' addresses (own sockets, like the listeners).
    admin_addrs: Vec<SocketAddr>,
    readiness: Arc<Readiness>,
    access_log: AccessLog,
    running: Vec<Running>,
    /// Listeners a reload removed: no longer accepting, their streams still draining.
    retired: Vec<Running>,
}

impl Proxy {
    /// The proxy's own sockets, which captured or SOCKS5 streams must never reach (a loop).
    fn own_addrs(&self, listeners: &[SocketAddr]) -> Vec<SocketAddr> {
        listeners.iter().chain(&self.admin_addrs).copied().collect()
    }

    /// Serve `settings` on `listener`.
    fn start(&self, settings: ListenerSettings, listener: TcpListener) -> Result<Running, String> {
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        self.readiness.bound(settings.listen);
        let label = settings.kind.label();
        let events = StreamEvents::new(
            self.metrics.clone(),
            label,
            Direction::Outbound,
            self.access_log,
        );
        let forwarder = match &settings.kind {
            ListenerKind::Fixed { target, via } => {
                tracing::info!(%addr, %target, via = via.label(), "listening");
                let acceptor = TcpAcceptor::new(listener, target.clone());
                // The target is the configuration's, not the client's: the acceptor has
                // decided. A name is passed through for the far end to resolve.
                let limits = self.limits.clone().with_resolve_names(false);
                match via {
                    Via::Hbone { node, node_id } => {
                        let client = self
                            .backends
                            .hbone
                            .clone()
                            .ok_or("via = \"hbone\" needs [identity]")?;
                        let t = HboneTransport::new(client, self.fips)
                            .map_err(|e| format!("listener {addr}: {e}"))?
                            .with_default_route(HboneRoute::new(*node, node_id.clone()));
                        let events = events.via_hbone_node(*node, node_id.clone());
                        self.serve(label, t, AuthorizedByAcceptor, limits, acceptor, events)
                    }
                    #[cfg(feature = "wireguard")]
                    Via::Wireguard => self.serve(
                        label,
                        self.backends
                            .wireguard
                            .clone()
                            .ok_or("via = \"wireguard\" needs [wireguard]")?,
                        AuthorizedByAcceptor,
                        limits,
                        acceptor,
                        events,
                    ),
                    Via::Plain => self.serve(
                        label,
                        PlainTcp,
                        AuthorizedByAcceptor,
                        limits,
                        acceptor,
                        events,
                    ),
                }
            }
            ListenerKind::Redirect => {
                tracing::info!(%addr, "listening for redirected (captured) connections");
                self.serve(
                    label,
                    self.router.clone(),
                    self.route_policy.clone(),
                    self.limits.clone(),
                    RedirectAcceptor::new(listener),
                    events,
                )
            }
            ListenerKind::Socks5 => {
                tracing::info!(%addr, "listening for SOCKS5");
                self.serve(
                    label,
                    self.router.clone(),
                    self.route_policy.clone(),
                    self.limits.clone(),
                    Socks5Acceptor::new(listener, Socks5Config::default()),
                    events,
                )
            }
        };
        Ok(Running {
            settings,
            addr,
            forwarder,
        })
    }

    /// Run the one forwarder over `acceptor`, dialling through `dialer`.
    fn serve<D: Transport, A: Acceptor>(
        &self,
        backend: &'static str,
        dialer: D,
        authorize: impl Authorize,
        limits: ForwarderConfig,
        acceptor: A,
        events: StreamEvents,
    ) -> Box<dyn Drain> {
        let limits = limits.with_observer(Arc::new(events));
        let fwd = Forwarder::new(dialer, authorize, limits);
        let view = fwd.clone();
        self.metrics.watch_forwarder(
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
        Box::new(fwd)
    }

    /// Apply a reloaded configuration: routes and listeners; warn about what needs a restart.
    async fn apply(&mut self, old: &ProxyConfig, new: &ProxyConfig) {
        let restart = [
            (
                "identity",
                format!("{:?}", old.identity.as_ref().map(|i| i.kind()))
                    != format!("{:?}", new.identity.as_ref().map(|i| i.kind())),
            ),
            ("fips", old.fips != new.fips),
            (
                "wireguard",
                old.wireguard.is_some() != new.wireguard.is_some(),
            ),
            (
                "limits",
                format!("{:?}", old.limits) != format!("{:?}", new.limits),
            ),
            ("metrics", old.metrics != new.metrics),
        ];
        for (key, changed) in restart {
            if changed {
                tracing::warn!(
                    key,
                    "reload: `{key}` changed; it takes effect at the next restart"
                );
            }
        }
        if let Err(e) = self.router.replace(&new.routes, &self.backends) {
            tracing::error!("reload: routes not replaced: {e}");
            return;
        }
        // Stop what is gone (or changed) first: a changed listener may keep its address.
        let (keep, gone): (Vec<Running>, Vec<Running>) = std::mem::take(&mut self.running)
            .into_iter()
            .partition(|r| new.listeners.contains(&r.settings));
        for r in gone {
            tracing::info!(addr = %r.addr, mode = r.settings.kind.label(), "reload: listener removed; its streams run on");
            r.forwarder.stop();
            self.retired.push(r);
        }
        self.running = keep;
        let mut added = 0;
        for l in &new.listeners {
            if self.running.iter().any(|r| &r.settings == l) {
                continue;
            }
            match bind(l.listen).await {
                Ok(listener) => match self.start(l.clone(), listener) {
                    Ok(r) => {
                        added += 1;
                        self.running.push(r);
                    }
                    Err(e) => tracing::error!("reload: {e}"),
                },
                Err(e) => tracing::error!("reload: {e}"),
            }
        }
        let own: Vec<SocketAddr> = self.running.iter().map(|r| r.addr).collect();
        self.route_policy
            .replace(route_policy(&new.routes, self.own_addrs(&own)));
        let addrs: Vec<String> = self.running.iter().map(|r| r.addr.to_string()).collect();
        tracing::info!(
            routes = new.routes.len(),
            added,
            listeners = %addrs.join(","),
            "reloaded"
        );
        // Forget retired listeners whose streams are done.
        let mut still = Vec::new();
        for r in std::mem::take(&mut self.retired) {
            if !r.forwarder.drained(Duration::ZERO).await {
                still.push(r);
            }
        }
        self.retired = still;
    }
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
