//! The Prometheus (OpenMetrics text) endpoint of a node or proxy: counters the forwarders
//! update on the data path, plus the HBONE and WireGuard libraries' own counters folded in at
//! scrape time, plus histograms of stream setup and lifetime (fed by each forwarder's
//! `StreamObserver`, crate::streams) and of HBONE TLS handshakes. Served at `GET /metrics` by
//! the `stats` admin listener (crate::admin).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fipstun_hbone::{HboneClient, HboneServer, MetricsSnapshot};
use fipstun_identity::tls::SvidSlot;
use fipstun_transport::{ForwarderStats, StreamRecord, StreamResult};
#[cfg(feature = "wireguard")]
use fipstun_wireguard::WgNode;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The content type OpenMetrics 1.0 text is served with.
pub(crate) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type Labels = Vec<(&'static str, &'static str)>;

/// A family of histograms with fixed buckets.
type Histograms = Family<Labels, Histogram, fn() -> Histogram>;

/// Buckets for times from 0.5 ms to about 4.6 h: stream setups are milliseconds, stream
/// lifetimes anything up to the idle timeout.
fn time_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 4.0, 13))
}

/// A library whose own counters are folded into the registry at scrape time.
enum Source {
    /// An HBONE server, and a count of the CONNECTs its forwarder refused (already counted by
    /// that forwarder's source), so the rest of its rejections are reported as `rejected`.
    HboneServer(HboneServer, StatsFn),
    HboneClient(HboneClient),
    #[cfg(feature = "wireguard")]
    Wireguard(WgNode),
    Forwarder {
        backend: &'static str,
        stats: StatsFn,
        fold: Fold,
    },
}

/// Reads a forwarder's counters.
pub(crate) type StatsFn = Box<dyn Fn() -> ForwarderStats + Send>;

/// Which of a forwarder's counters a source reports (the rest come from another source, so
/// nothing is counted twice).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Fold {
    /// Streams handed over count as accepted connections.
    pub(crate) accepted: bool,
    /// Established streams, open streams and payload bytes.
    pub(crate) streams_and_bytes: bool,
    /// Bytes read from the inbound side went into the tunnel (`out`): true on a proxy, whose
    /// inbound side is the local client; false on a node, whose inbound side is the tunnel.
    pub(crate) inbound_is_local: bool,
}

/// The process's metrics.
pub(crate) struct Metrics {
    registry: Registry,
    accepted: Family<Labels, Counter>,
    streams: Family<Labels, Counter>,
    active: Family<Labels, Gauge>,
    refused: Family<Labels, Counter>,
    bytes: Family<Labels, Counter>,
    handshake_failures: Family<Labels, Counter>,
    #[cfg(feature = "wireguard")]
    wg: WgMetrics,
    fips_mode: Family<Labels, Gauge>,
    fips_module: Gauge,
    stream_setup: Histograms,
    stream_duration: Histograms,
    tls_handshake: Histograms,
    svid_expiry: Gauge<f64, std::sync::atomic::AtomicU64>,
    sources: Mutex<Scrape>,
}

/// The WireGuard node's counters (declared only in a build with the WireGuard backend).
#[cfg(feature = "wireguard")]
struct WgMetrics {
    handshakes: Counter,
    sessions: Counter,
    datagrams: Family<Labels, Counter>,
    dropped: Family<Labels, Counter>,
}

#[cfg(feature = "wireguard")]
impl WgMetrics {
    fn register(registry: &mut Registry) -> Self {
        let handshakes = Counter::default();
        registry.register(
            "wireguard_handshakes_initiated",
            "WireGuard handshake initiations sent",
            handshakes.clone(),
        );
        let sessions = Counter::default();
        registry.register(
            "wireguard_sessions_established",
            "WireGuard sessions established",
            sessions.clone(),
        );
        let datagrams = Family::<Labels, Counter>::default();
        registry.register(
            "wireguard_datagrams",
            "WireGuard UDP datagrams, by direction",
            datagrams.clone(),
        );
        let dropped = Family::<Labels, Counter>::default();
        registry.register(
            "wireguard_packets_dropped",
            "WireGuard packets dropped, by reason",
            dropped.clone(),
        );
        Self {
            handshakes,
            sessions,
            datagrams,
            dropped,
        }
    }
}

/// Feeds `fipstun_tls_handshake_seconds` from an HBONE client's or server's handshakes.
pub(crate) struct TlsTimer {
    metrics: Arc<Metrics>,
    side: &'static str,
}

impl TlsTimer {
    /// Handshakes on `side` (`client` or `server`).
    pub(crate) fn new(metrics: Arc<Metrics>, side: &'static str) -> Arc<Self> {
        Arc::new(Self { metrics, side })
    }
}

impl fipstun_hbone::HandshakeObserver for TlsTimer {
    fn tls_handshake_done(&self, took: Duration) {
        self.metrics.observe_tls_handshake(self.side, took);
    }
}

/// Library sources and the values last folded in from each, so counters advance by deltas.
#[derive(Default)]
struct Scrape {
    sources: Vec<Source>,
    /// The live SVID, for `fipstun_svid_expiry_seconds`.
    svid: Option<Arc<SvidSlot>>,
    last: HashMap<(usize, &'static str, &'static str), u64>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// An empty registry with every fipstun metric declared.
    pub(crate) fn new() -> Self {
        let mut registry = Registry::with_prefix("fipstun");
        let accepted = Family::<Labels, Counter>::default();
        registry.register(
            "connections_accepted",
            "Connections accepted (proxy: local TCP clients; node: tunnelled streams or HBONE connections)",
            accepted.clone(),
        );
        let streams = Family::<Labels, Counter>::default();
        registry.register("streams", "Streams established end to end", streams.clone());
        let active = Family::<Labels, Gauge>::default();
        registry.register("streams_active", "Streams open now", active.clone());
        let refused = Family::<Labels, Counter>::default();
        registry.register(
            "streams_refused",
            "Streams refused, by reason",
            refused.clone(),
        );
        let bytes = Family::<Labels, Counter>::default();
        registry.register(
            "tunnel_bytes",
            "Payload bytes through the tunnel (in: out of the tunnel, out: into it)",
            bytes.clone(),
        );
        let handshake_failures = Family::<Labels, Counter>::default();
        registry.register(
            "handshake_failures",
            "Failed tunnel connection setups, by reason",
            handshake_failures.clone(),
        );
        #[cfg(feature = "wireguard")]
        let wg = WgMetrics::register(&mut registry);
        let fips_mode = Family::<Labels, Gauge>::default();
        registry.register(
            "fips_mode",
            "The FIPS mode this process runs in (required: HBONE only, in the validated module; off: non-FIPS backends allowed)",
            fips_mode.clone(),
        );
        let fips_module = Gauge::default();
        registry.register(
            "fips_module_active",
            "1 when the AWS-LC module reports FIPS mode active",
            fips_module.clone(),
        );
        let stream_setup = Histograms::new_with_constructor(time_buckets as fn() -> Histogram);
        registry.register(
            "stream_setup_seconds",
            "Established streams: from accept to established (authorization and the dial of the target)",
            stream_setup.clone(),
        );
        let stream_duration = Histograms::new_with_constructor(time_buckets as fn() -> Histogram);
        registry.register(
            "stream_duration_seconds",
            "Established streams: from established to closed",
            stream_duration.clone(),
        );
        let tls_handshake = Histograms::new_with_constructor(time_buckets as fn() -> Histogram);
        registry.register(
            "tls_handshake_seconds",
            "Completed HBONE TLS handshakes (TCP connected to TLS done), by side",
            tls_handshake.clone(),
        );
        let svid_expiry = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "svid_expiry_seconds",
            "Seconds until the current SVID's notAfter (negative once expired; absent without an SVID)",
            svid_expiry.clone(),
        );
        Self {
            stream_setup,
            stream_duration,
            tls_handshake,
            svid_expiry,
            registry,
            fips_mode,
            fips_module,
            accepted,
            streams,
            active,
            refused,
            bytes,
            handshake_failures,
            #[cfg(feature = "wireguard")]
            wg,
            sources: Mutex::new(Scrape::default()),
        }
    }

    /// Report the FIPS mode the process runs in: `fipstun_fips_mode_info{mode}` = 1, and
    /// `fipstun_fips_module_active` = 1 when the AWS-LC module is in FIPS mode.
    pub(crate) fn set_fips(&self, mode: crate::config::FipsMode) {
        self.fips_mode
            .get_or_create(&vec![("mode", mode.label())])
            .set(1);
        self.fips_module
            .set(i64::from(fipstun_identity::policy::fips_status().ok()));
    }

    /// Fold an HBONE server's counters in at scrape time. `target_refusals` counts the
    /// CONNECTs our own handler refused (already counted as `target_not_allowed`), so the rest
    /// of the server's rejections are reported as `rejected`.
    pub(crate) fn watch_hbone_server(&self, server: HboneServer, forwarder: StatsFn) {
        self.lock()
            .sources
            .push(Source::HboneServer(server, forwarder));
    }

    /// Fold a forwarder's counters in at scrape time: refusals by reason (`policy`,
    /// `overloaded`, `shutting_down`, and failed dials by the dialer's error), and what `fold`
    /// names.
    pub(crate) fn watch_forwarder(&self, backend: &'static str, stats: StatsFn, fold: Fold) {
        self.lock().sources.push(Source::Forwarder {
            backend,
            stats,
            fold,
        });
    }

    /// Fold an HBONE client's handshake failures in at scrape time.
    pub(crate) fn watch_hbone_client(&self, client: HboneClient) {
        self.lock().sources.push(Source::HboneClient(client));
    }

    /// Fold a WireGuard node's counters in at scrape time.
    #[cfg(feature = "wireguard")]
    pub(crate) fn watch_wireguard(&self, node: WgNode) {
        self.lock().sources.push(Source::Wireguard(node));
    }

    /// Report `fipstun_svid_expiry_seconds` from `slot` at scrape time.
    pub(crate) fn watch_svid(&self, slot: Arc<SvidSlot>) {
        self.lock().svid = Some(slot);
    }

    /// One finished stream into the stream histograms. Refused streams are left out: they
    /// were never established (the refusal counters have them).
    pub(crate) fn observe_stream(
        &self,
        backend: &'static str,
        direction: &'static str,
        record: &StreamRecord,
    ) {
        if matches!(record.result, StreamResult::Refused(_)) {
            return;
        }
        let labels = vec![("backend", backend), ("direction", direction)];
        self.stream_setup
            .get_or_create(&labels)
            .observe(record.setup.as_secs_f64());
        self.stream_duration
            .get_or_create(&labels)
            .observe(record.duration.as_secs_f64());
    }

    /// One completed HBONE TLS handshake on `side` (`client` or `server`).
    pub(crate) fn observe_tls_handshake(&self, side: &'static str, took: Duration) {
        self.tls_handshake
            .get_or_create(&vec![("backend", "hbone"), ("side", side)])
            .observe(took.as_secs_f64());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Scrape> {
        self.sources.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The OpenMetrics text of every metric, library counters brought up to date.
    pub(crate) fn render(&self) -> String {
        self.refresh();
        let mut out = String::new();
        if let Err(e) = encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "encoding metrics failed");
        }
        out
    }

    fn refresh(&self) {
        let mut scrape = self.lock();
        let Scrape {
            sources,
            last,
            svid,
        } = &mut *scrape;
        if let Some(left) = svid
            .as_ref()
            .and_then(|s| s.seconds_to_expiry(std::time::SystemTime::now()))
        {
            self.svid_expiry.set(left);
        }
        for (i, source) in sources.iter().enumerate() {
            // Advance `counter` to the library's cumulative `now`.
            let mut bump = |counter: &Counter, metric: &'static str, label: &'static str, now| {
                let prev = last.insert((i, metric, label), now).unwrap_or(0);
                counter.inc_by(now.saturating_sub(prev));
            };
            match source {
                Source::HboneServer(server, ours) => {
                    let s = server.metrics();
                    let b = vec![("backend", "hbone")];
                    bump(
                        &self.accepted.get_or_create(&b),
                        "accepted",
                        "",
                        s.connections_opened,
                    );
                    bump(
                        &self.streams.get_or_create(&b),
                        "streams",
                        "",
                        s.streams_opened,
                    );
                    self.active
                        .get_or_create(&b)
                        .set(i64::try_from(s.streams_active).unwrap_or(i64::MAX));
                    let f = ours();
                    let ours = f.refused_policy
                        + f.refused_unreachable
                        + f.refused_overloaded
                        + f.refused_shutting_down;
                    bump(
                        &self
                            .refused
                            .get_or_create(&vec![("backend", "hbone"), ("reason", "rejected")]),
                        "refused",
                        "rejected",
                        s.streams_rejected.saturating_sub(ours),
                    );
                    bump(
                        &self.refused.get_or_create(&vec![
                            ("backend", "hbone"),
                            ("reason", "connection_limit"),
                        ]),
                        "refused",
                        "connection_limit",
                        s.connections_refused,
                    );
                    let dir = |d| vec![("backend", "hbone"), ("direction", d)];
                    bump(
                        &self.bytes.get_or_create(&dir("in")),
                        "bytes",
                        "in",
                        s.bytes_in,
                    );
                    bump(
                        &self.bytes.get_or_create(&dir("out")),
                        "bytes",
                        "out",
                        s.bytes_out,
                    );
                    self.fold_handshakes(&s, &mut bump);
                }
                Source::Forwarder {
                    backend,
                    stats,
                    fold,
                } => {
                    let f = stats();
                    let b = vec![("backend", *backend)];
                    let mut refused = |reason: &'static str, n: u64| {
                        bump(
                            &self
                                .refused
                                .get_or_create(&vec![("backend", *backend), ("reason", reason)]),
                            "refused",
                            reason,
                            n,
                        );
                    };
                    refused("policy", f.refused_policy);
                    refused("overloaded", f.refused_overloaded);
                    refused("shutting_down", f.refused_shutting_down);
                    for (label, n) in &f.dial_failures {
                        refused(label, *n);
                    }
                    if fold.accepted {
                        bump(&self.accepted.get_or_create(&b), "accepted", "", f.accepted);
                    }
                    if fold.streams_and_bytes {
                        bump(&self.streams.get_or_create(&b), "streams", "", f.forwarded);
                        self.active
                            .get_or_create(&b)
                            .set(i64::try_from(f.active).unwrap_or(i64::MAX));
                        let (into_tunnel, out_of_tunnel) = if fold.inbound_is_local {
                            (f.bytes_from_peer, f.bytes_to_peer)
                        } else {
                            (f.bytes_to_peer, f.bytes_from_peer)
                        };
                        let dir = |d| vec![("backend", *backend), ("direction", d)];
                        bump(
                            &self.bytes.get_or_create(&dir("in")),
                            "bytes",
                            "in",
                            out_of_tunnel,
                        );
                        bump(
                            &self.bytes.get_or_create(&dir("out")),
                            "bytes",
                            "out",
                            into_tunnel,
                        );
                    }
                }
                Source::HboneClient(client) => {
                    let s = client.metrics();
                    self.fold_handshakes(&s, &mut bump);
                }
                #[cfg(feature = "wireguard")]
                Source::Wireguard(node) => {
                    let s = node.stats();
                    bump(
                        &self.wg.handshakes,
                        "wg",
                        "handshakes",
                        s.handshakes_initiated,
                    );
                    bump(&self.wg.sessions, "wg", "sessions", s.sessions_established);
                    let d = |d| vec![("direction", d)];
                    bump(
                        &self.wg.datagrams.get_or_create(&d("rx")),
                        "wg",
                        "rx",
                        s.rx_datagrams,
                    );
                    bump(
                        &self.wg.datagrams.get_or_create(&d("tx")),
                        "wg",
                        "tx",
                        s.tx_datagrams,
                    );
                    let r = |r| vec![("reason", r)];
                    bump(
                        &self.wg.dropped.get_or_create(&r("replayed")),
                        "wg",
                        "replayed",
                        s.rx_replayed,
                    );
                    bump(
                        &self.wg.dropped.get_or_create(&r("invalid")),
                        "wg",
                        "invalid",
                        s.rx_dropped,
                    );
                }
            }
        }
    }

    fn fold_handshakes(
        &self,
        s: &MetricsSnapshot,
        bump: &mut impl FnMut(&Counter, &'static str, &'static str, u64),
    ) {
        for (why, n) in &s.handshake_failures {
            let label = why.label();
            bump(
                &self
                    .handshake_failures
                    .get_or_create(&vec![("backend", "hbone"), ("reason", label)]),
                "handshake",
                label,
                *n,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats() -> ForwarderStats {
        let mut s = ForwarderStats::default();
        s.accepted = 3;
        s.forwarded = 1;
        s.bytes_from_peer = 42;
        s.refused_policy = 1;
        s.refused_unreachable = 1;
        s.dial_failures = vec![("unreachable", 1)];
        s
    }

    #[test]
    fn forwarder_counters_render_as_openmetrics() {
        let m = Metrics::new();
        m.set_fips(crate::config::FipsMode::Off);
        let fold = Fold {
            accepted: true,
            streams_and_bytes: true,
            inbound_is_local: true,
        };
        m.watch_forwarder("plain", Box::new(stats), fold);
        let text = m.render();
        for line in [
            "fipstun_connections_accepted_total{backend=\"plain\"} 3",
            "fipstun_streams_total{backend=\"plain\"} 1",
            // A proxy's inbound side is the local client: what it sent went into the tunnel.
            "fipstun_tunnel_bytes_total{backend=\"plain\",direction=\"out\"} 42",
            "fipstun_streams_refused_total{backend=\"plain\",reason=\"policy\"} 1",
            "fipstun_streams_refused_total{backend=\"plain\",reason=\"unreachable\"} 1",
            "fipstun_fips_mode{mode=\"off\"} 1",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
        // Scraped twice, counters do not double.
        let again = m.render();
        assert!(again.contains("fipstun_connections_accepted_total{backend=\"plain\"} 3"));
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn streams_and_handshakes_fill_histograms_and_refusals_stay_out() {
        use fipstun_transport::{PeerIdentity, Refusal, Target};
        let m = Metrics::new();
        let peer = PeerIdentity::Local("127.0.0.1:5000".parse().unwrap());
        let mut r = StreamRecord::new(peer, Target::new("127.0.0.1:80".parse().unwrap()));
        r.setup = Duration::from_millis(3);
        r.duration = Duration::from_secs(2);
        m.observe_stream("plain", "outbound", &r);
        r.result = StreamResult::Refused(Refusal::Policy);
        m.observe_stream("plain", "outbound", &r);
        m.observe_tls_handshake("client", Duration::from_millis(4));
        let slot = Arc::new(SvidSlot::new());
        m.watch_svid(slot);
        let text = m.render();
        for line in [
            "fipstun_stream_setup_seconds_count{backend=\"plain\",direction=\"outbound\"} 1",
            "fipstun_stream_duration_seconds_sum{backend=\"plain\",direction=\"outbound\"} 2.0",
            "fipstun_tls_handshake_seconds_count{backend=\"hbone\",side=\"client\"} 1",
            "# TYPE fipstun_svid_expiry_seconds gauge",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
    }
}
