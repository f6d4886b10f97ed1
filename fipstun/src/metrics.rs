//! The libraries' own counters (forwarders, HBONE servers and clients, WireGuard nodes) as a
//! [`prometheus_client`] collector, read at scrape time.
//!
//! fipstun's crates count on their data paths with relaxed atomics and hand out snapshots
//! ([`ForwarderStats`], `fipstun_hbone::MetricsSnapshot`, `fipstun_wireguard::WgStats`); they do
//! not depend on a metrics library. [`TunnelCollector`] turns those snapshots into OpenMetrics
//! families when the registry is encoded, so nothing is copied between scrapes and counters
//! never go backwards. Each source is named by a `source` label you choose.
//!
//! ```
//! use fipstun::metrics::{TunnelCollector, prometheus_client};
//! use fipstun::transport::ForwarderStats;
//! use prometheus_client::registry::Registry;
//!
//! let mut registry = Registry::with_prefix("fipstun");
//! // In a node: `forwarder.stats()` of a running `fipstun::transport::Forwarder`.
//! let collector = TunnelCollector::new().with_forwarder("inbound", ForwarderStats::default);
//! registry.register_collector(Box::new(collector));
//!
//! let mut text = String::new();
//! prometheus_client::encoding::text::encode(&mut text, &registry)?;
//! assert!(text.contains("fipstun_forwarder_streams_accepted_total{source=\"inbound\"} 0"));
//! # Ok::<(), std::fmt::Error>(())
//! ```

use std::fmt;

use fipstun_transport::ForwarderStats;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// The prometheus-client this module is built against, so callers register into the same
/// version's `Registry`.
pub use prometheus_client;

type Labels = Vec<(&'static str, String)>;

/// One value of one family, before grouping.
struct Sample {
    name: &'static str,
    help: &'static str,
    labels: Labels,
    value: Value,
}

#[derive(Clone, Copy)]
enum Value {
    Counter(u64),
    Gauge(u64),
}

/// Where the counters come from.
enum Source {
    Forwarder {
        name: String,
        stats: Box<dyn Fn() -> ForwarderStats + Send + Sync>,
    },
    #[cfg(feature = "hbone")]
    HboneServer {
        name: String,
        server: fipstun_hbone::HboneServer,
    },
    #[cfg(feature = "hbone")]
    HboneClient {
        name: String,
        client: fipstun_hbone::HboneClient,
    },
    #[cfg(feature = "wireguard")]
    Wireguard {
        name: String,
        node: fipstun_wireguard::WgNode,
    },
}

/// A [`Collector`] over fipstun's library counters. Register it once with
/// [`Registry::register_collector`](prometheus_client::registry::Registry::register_collector);
/// every family carries a `source` label naming the forwarder, server, client or node.
#[derive(Default)]
pub struct TunnelCollector {
    sources: Vec<Source>,
}

impl fmt::Debug for TunnelCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TunnelCollector")
            .field("sources", &self.sources.len())
            .finish()
    }
}

impl TunnelCollector {
    /// A collector with no sources.
    pub fn new() -> Self {
        Self::default()
    }

    /// A forwarder's counters: pass `move || forwarder.stats()` (a `Forwarder` clone).
    /// Families `forwarder_streams_{accepted,forwarded,active,refused,idle_closed}`,
    /// `forwarder_accept_errors` and `forwarder_bytes{direction="from_peer"|"to_peer"}`;
    /// refusals carry a `reason` (`policy`, `unreachable`, `overloaded`, `shutting_down`).
    pub fn with_forwarder(
        mut self,
        source: impl Into<String>,
        stats: impl Fn() -> ForwarderStats + Send + Sync + 'static,
    ) -> Self {
        self.sources.push(Source::Forwarder {
            name: source.into(),
            stats: Box::new(stats),
        });
        self
    }

    /// An HBONE server's counters (families `hbone_*{role="server"}`).
    #[cfg(feature = "hbone")]
    pub fn with_hbone_server(
        mut self,
        source: impl Into<String>,
        server: fipstun_hbone::HboneServer,
    ) -> Self {
        self.sources.push(Source::HboneServer {
            name: source.into(),
            server,
        });
        self
    }

    /// An HBONE client's counters (families `hbone_*{role="client"}`).
    #[cfg(feature = "hbone")]
    pub fn with_hbone_client(
        mut self,
        source: impl Into<String>,
        client: fipstun_hbone::HboneClient,
    ) -> Self {
        self.sources.push(Source::HboneClient {
            name: source.into(),
            client,
        });
        self
    }

    /// A WireGuard node's counters (families `wireguard_*`).
    #[cfg(feature = "wireguard")]
    pub fn with_wireguard(
        mut self,
        source: impl Into<String>,
        node: fipstun_wireguard::WgNode,
    ) -> Self {
        self.sources.push(Source::Wireguard {
            name: source.into(),
            node,
        });
        self
    }

    fn samples(&self) -> Vec<Sample> {
        let mut out = Vec::new();
        for source in &self.sources {
            match source {
                Source::Forwarder { name, stats } => forwarder_samples(name, &stats(), &mut out),
                #[cfg(feature = "hbone")]
                Source::HboneServer { name, server } => {
                    hbone_samples(name, "server", &server.metrics(), &mut out);
                }
                #[cfg(feature = "hbone")]
                Source::HboneClient { name, client } => {
                    hbone_samples(name, "client", &client.metrics(), &mut out);
                }
                #[cfg(feature = "wireguard")]
                Source::Wireguard { name, node } => {
                    wireguard_samples(name, &node.stats(), &mut out)
                }
            }
        }
        out
    }
}

impl Collector for TunnelCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let samples = self.samples();
        // One descriptor per family, in first-seen order, then every source's values under it.
        let mut families: Vec<&'static str> = Vec::new();
        for s in &samples {
            if !families.contains(&s.name) {
                families.push(s.name);
            }
        }
        for family in families {
            let mut members = samples.iter().filter(|s| s.name == family).peekable();
            let Some(first) = members.peek() else {
                continue;
            };
            let metric_type = match first.value {
                Value::Counter(_) => MetricType::Counter,
                Value::Gauge(_) => MetricType::Gauge,
            };
            let mut metric = encoder.encode_descriptor(family, first.help, None, metric_type)?;
            for s in members {
                let labelled = metric.encode_family(&s.labels)?;
                match s.value {
                    Value::Counter(v) => ConstCounter::new(v).encode(labelled)?,
                    Value::Gauge(v) => {
                        ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX)).encode(labelled)?;
                    }
                }
            }
        }
        Ok(())
    }
}

fn push(
    out: &mut Vec<Sample>,
    name: &'static str,
    help: &'static str,
    labels: Labels,
    value: Value,
) {
    out.push(Sample {
        name,
        help,
        labels,
        value,
    });
}

fn forwarder_samples(source: &str, s: &ForwarderStats, out: &mut Vec<Sample>) {
    let l = || vec![("source", source.to_owned())];
    let with = |k: &'static str, v: &str| vec![("source", source.to_owned()), (k, v.to_owned())];
    push(
        out,
        "forwarder_streams_accepted",
        "Streams the acceptor handed to the forwarder",
        l(),
        Value::Counter(s.accepted),
    );
    push(
        out,
        "forwarder_streams_forwarded",
        "Streams established (target dialled, inbound answered)",
        l(),
        Value::Counter(s.forwarded),
    );
    push(
        out,
        "forwarder_streams_active",
        "Streams open now",
        l(),
        Value::Gauge(s.active),
    );
    for (reason, n) in [
        ("policy", s.refused_policy),
        ("unreachable", s.refused_unreachable),
        ("overloaded", s.refused_overloaded),
        ("shutting_down", s.refused_shutting_down),
    ] {
        push(
            out,
            "forwarder_streams_refused",
            "Streams refused, by reason",
            with("reason", reason),
            Value::Counter(n),
        );
    }
    push(
        out,
        "forwarder_streams_idle_closed",
        "Established streams closed for being idle",
        l(),
        Value::Counter(s.idle_closed),
    );
    push(
        out,
        "forwarder_accept_errors",
        "Accept errors, each followed by a back-off",
        l(),
        Value::Counter(s.accept_errors),
    );
    for (direction, n) in [
        ("from_peer", s.bytes_from_peer),
        ("to_peer", s.bytes_to_peer),
    ] {
        push(
            out,
            "forwarder_bytes",
            "Payload bytes copied, by direction (from_peer: inbound side to target)",
            with("direction", direction),
            Value::Counter(n),
        );
    }
}

#[cfg(feature = "hbone")]
fn hbone_samples(
    source: &str,
    role: &'static str,
    s: &fipstun_hbone::MetricsSnapshot,
    out: &mut Vec<Sample>,
) {
    let l = || vec![("source", source.to_owned()), ("role", role.to_owned())];
    let with = |k: &'static str, v: &str| {
        vec![
            ("source", source.to_owned()),
            ("role", role.to_owned()),
            (k, v.to_owned()),
        ]
    };
    let counters = [
        (
            "hbone_connections_opened",
            "TLS + HTTP/2 connections established",
            s.connections_opened,
        ),
        (
            "hbone_connections_refused",
            "Connections refused at the established-connection limit (server)",
            s.connections_refused,
        ),
        (
            "hbone_connections_expired",
            "Connections drained at the peer certificate's notAfter or the maximum age (server)",
            s.connections_expired,
        ),
        (
            "hbone_streams_opened",
            "Streams established (CONNECT answered 200)",
            s.streams_opened,
        ),
        (
            "hbone_streams_rejected",
            "CONNECTs answered (server) or received (client) with a non-2xx status",
            s.streams_rejected,
        ),
    ];
    for (name, help, n) in counters {
        push(out, name, help, l(), Value::Counter(n));
    }
    push(
        out,
        "hbone_connections_active",
        "Established connections not yet closed",
        l(),
        Value::Gauge(s.connections_active),
    );
    push(
        out,
        "hbone_streams_active",
        "Established streams not yet finished",
        l(),
        Value::Gauge(s.streams_active),
    );
    for (direction, n) in [("in", s.bytes_in), ("out", s.bytes_out)] {
        push(
            out,
            "hbone_payload_bytes",
            "DATA frame payload bytes, by direction (in: from HBONE peers)",
            with("direction", direction),
            Value::Counter(n),
        );
    }
    for (why, n) in &s.handshake_failures {
        push(
            out,
            "hbone_handshake_failures",
            "Failed connection setups, by reason",
            with("reason", why.label()),
            Value::Counter(*n),
        );
    }
}

#[cfg(feature = "wireguard")]
fn wireguard_samples(source: &str, s: &fipstun_wireguard::WgStats, out: &mut Vec<Sample>) {
    let l = || vec![("source", source.to_owned())];
    let with = |k: &'static str, v: &str| vec![("source", source.to_owned()), (k, v.to_owned())];
    push(
        out,
        "wireguard_handshakes_initiated",
        "Handshake initiations sent (first attempts, retries and rekeys)",
        l(),
        Value::Counter(s.handshakes_initiated),
    );
    push(
        out,
        "wireguard_sessions_established",
        "Sessions established, as initiator or responder",
        l(),
        Value::Counter(s.sessions_established),
    );
    for (direction, n) in [("rx", s.rx_datagrams), ("tx", s.tx_datagrams)] {
        push(
            out,
            "wireguard_datagrams",
            "UDP datagrams, by direction",
            with("direction", direction),
            Value::Counter(n),
        );
    }
    for (reason, n) in [("replayed", s.rx_replayed), ("invalid", s.rx_dropped)] {
        push(
            out,
            "wireguard_packets_dropped",
            "Packets dropped, by reason",
            with("reason", reason),
            Value::Counter(n),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::text::encode;
    use prometheus_client::registry::Registry;

    fn render(collector: TunnelCollector) -> String {
        let mut registry = Registry::with_prefix("fipstun");
        registry.register_collector(Box::new(collector));
        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        text
    }

    #[test]
    fn two_forwarders_share_one_family_per_metric() {
        let busy = || {
            let mut s = ForwarderStats::default();
            s.accepted = 3;
            s.active = 2;
            s.refused_policy = 1;
            s.bytes_from_peer = 42;
            s
        };
        let text = render(
            TunnelCollector::new()
                .with_forwarder("inbound", busy)
                .with_forwarder("outbound", ForwarderStats::default),
        );
        for line in [
            "# TYPE fipstun_forwarder_streams_accepted counter",
            "fipstun_forwarder_streams_accepted_total{source=\"inbound\"} 3",
            "fipstun_forwarder_streams_accepted_total{source=\"outbound\"} 0",
            "# TYPE fipstun_forwarder_streams_active gauge",
            "fipstun_forwarder_streams_active{source=\"inbound\"} 2",
            "fipstun_forwarder_streams_refused_total{source=\"inbound\",reason=\"policy\"} 1",
            "fipstun_forwarder_bytes_total{source=\"inbound\",direction=\"from_peer\"} 42",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
        assert_eq!(
            text.matches("# TYPE fipstun_forwarder_streams_accepted ")
                .count(),
            1,
            "one descriptor per family:\n{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
