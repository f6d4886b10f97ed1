//! What a node or proxy does with each stream its forwarders finish or refuse: one access-log
//! event (target `fipstun::access`, ztunnel's field names) and the stream histograms.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use fipstun_identity::spiffe::SpiffeId;
use fipstun_transport::{StreamObserver, StreamRecord, StreamResult};

use crate::config::AccessLog;
use crate::metrics::Metrics;

/// `inbound` on a node (streams arrive through a tunnel), `outbound` on a proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Direction {
    /// A node's streams.
    Inbound,
    /// A proxy's streams.
    Outbound,
}

impl Direction {
    fn label(self) -> &'static str {
        match self {
            Self::Inbound => "inbound",
            Self::Outbound => "outbound",
        }
    }
}

/// One forwarder's observer: the access log and the histograms of its streams.
pub(crate) struct StreamEvents {
    metrics: Arc<Metrics>,
    backend: &'static str,
    direction: Direction,
    access_log: AccessLog,
    /// The node a proxy listener tunnels to over HBONE (`dst.hbone_addr`) and the identity it
    /// must present (`dst.identity`).
    hbone_node: Option<(SocketAddr, SpiffeId)>,
    /// Finished streams, for `sample:N`.
    seen: AtomicU64,
}

impl StreamEvents {
    /// An observer for the streams of one `backend` forwarder.
    pub(crate) fn new(
        metrics: Arc<Metrics>,
        backend: &'static str,
        direction: Direction,
        access_log: AccessLog,
    ) -> Self {
        Self {
            metrics,
            backend,
            direction,
            access_log,
            hbone_node: None,
            seen: AtomicU64::new(0),
        }
    }

    /// Streams go over HBONE to `node`, which proves `id`.
    pub(crate) fn via_hbone_node(mut self, node: SocketAddr, id: SpiffeId) -> Self {
        self.hbone_node = Some((node, id));
        self
    }

    /// Whether this record makes an access-log event.
    fn logs(&self, record: &StreamRecord) -> bool {
        match self.access_log {
            AccessLog::Off => false,
            AccessLog::On => true,
            AccessLog::Sample(n) => {
                !matches!(record.result, StreamResult::Ok)
                    || self.seen.fetch_add(1, Ordering::Relaxed).is_multiple_of(n)
            }
        }
    }
}

/// The `error` field: the refusal and its detail, or the error text; `None` on success.
fn error_text(record: &StreamRecord) -> Option<String> {
    match &record.result {
        StreamResult::Ok => None,
        StreamResult::Refused(why) => Some(match &record.refusal_detail {
            Some(d) => format!("refused ({}): {d}", why.label()),
            None => format!("refused ({})", why.label()),
        }),
        StreamResult::Error(e) => Some(e.clone()),
        // Results added later: say something rather than nothing.
        other => Some(format!("{other:?}")),
    }
}

impl StreamObserver for StreamEvents {
    fn stream_ended(&self, record: &StreamRecord) {
        self.metrics
            .observe_stream(self.backend, self.direction.label(), record);
        if !self.logs(record) {
            return;
        }
        let error = error_text(record);
        let (hbone_addr, dst_identity) = match &self.hbone_node {
            Some((addr, id)) => (Some(addr), Some(id)),
            None => (None, None),
        };
        let message = if error.is_some() {
            "stream failed"
        } else {
            "stream complete"
        };
        tracing::info!(
            target: "fipstun::access",
            direction = self.direction.label(),
            src.addr = record.peer_addr.map(tracing::field::display),
            src.identity = record.peer.spiffe_id().map(tracing::field::display),
            dst.addr = %record.target,
            dst.hbone_addr = hbone_addr.map(tracing::field::display),
            dst.identity = dst_identity.map(tracing::field::display),
            backend = self.backend,
            bytes_sent = record.bytes_sent,
            bytes_recv = record.bytes_received,
            duration = u64::try_from(record.duration.as_millis()).unwrap_or(u64::MAX),
            error = error.as_deref(),
            "{message}",
        );
    }
}
