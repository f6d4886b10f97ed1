//! The live identity of a node or proxy: an `SvidSlot` and `TrustStore` that its TLS configs
//! are built on, fed from `fipstun ca issue` files (re-read when replaced), from a SPIFFE
//! Workload API endpoint (a SPIRE agent streams SVIDs and bundles), or from the Istio CA API
//! (the library's identity manager sends CSRs to istiod or `fipstun ca serve` and renews
//! before expiry, with jitter and back-off). Whatever the source, every SVID installed is
//! logged (`SVID installed`, with its notAfter).

use std::sync::Arc;
use std::time::Duration;

use fipstun_identity::bundle::{BundleSet, TrustStore};
use fipstun_identity::manager::{Clock, IdentityManager, ManagerConfig};
use fipstun_identity::spiffe::SpiffeId;
use fipstun_identity::tls::SvidSlot;
use fipstun_planes::istio::IstioCaClient;
use fipstun_planes::workload::{WorkloadConfig, WorkloadX509Source};

use crate::config::Identity;

/// How long start-up waits for the first SVID from the Workload API or the Istio CA.
const FIRST_SVID_TIMEOUT: Duration = Duration::from_secs(30);

/// What the TLS configs are built on.
pub(crate) struct LiveIdentity {
    /// The current SVID (rotated in place).
    pub(crate) slot: Arc<SvidSlot>,
    /// The trust bundles (rotated in place).
    pub(crate) trust: TrustStore,
    /// The SPIFFE ID held at start.
    pub(crate) id: SpiffeId,
}

/// Load or fetch the first SVID and keep it current for the life of the process.
pub(crate) async fn start(identity: &Identity) -> Result<LiveIdentity, String> {
    tracing::debug!(source = identity.kind(), "identity source");
    match identity {
        Identity::Files(files) => {
            let slot = Arc::new(SvidSlot::new());
            slot.set(&files.svid).map_err(|e| {
                format!(
                    "identity {}: the SVID key is unusable: {e}",
                    files.dir.display()
                )
            })?;
            let trust = TrustStore::new(BundleSet::new().with(files.bundle.clone()));
            crate::svid_reload::spawn(files.dir.clone(), slot.clone(), trust.clone());
            Ok(LiveIdentity {
                slot,
                trust,
                id: files.svid.id().clone(),
            })
        }
        Identity::WorkloadApi(socket) => {
            let slot = Arc::new(SvidSlot::new());
            let trust = TrustStore::new(BundleSet::new());
            let config = WorkloadConfig::new(socket.clone());
            let source = WorkloadX509Source::start_with(config, slot.clone(), trust.clone());
            let id = source.wait_for_svid(FIRST_SVID_TIMEOUT).await.map_err(|e| {
                format!(
                    "identity: no SVID from the Workload API at {} within {FIRST_SVID_TIMEOUT:?}: {e}",
                    socket.path().display()
                )
            })?;
            tracing::info!(%id, socket = %socket.path().display(), "SVID from the Workload API");
            // The source streams rotations into the slot and store while it lives: keep it for
            // the life of the process.
            tokio::spawn(async move {
                let _source = source;
                std::future::pending::<()>().await
            });
            watch_rotations(slot.clone());
            Ok(LiveIdentity { slot, trust, id })
        }
        Identity::IstioCa(ca) => {
            let client = IstioCaClient::new(ca.client.clone())
                .map_err(|e| format!("identity: Istio CA client for {}: {e}", ca.client.address))?;
            let client = Arc::new(client);
            let config = ManagerConfig {
                ttl: ca.ttl,
                ..ManagerConfig::default()
            };
            let manager = IdentityManager::start(client.clone(), config, Clock::system());
            let slot = first_svid(&manager, &ca.id, &ca.client.address).await?;
            // Renewals authenticate with the SVID held (istiod and `fipstun ca serve` accept
            // it), so a token that expired since start does not stop rotation.
            client.present_client_svid(slot.clone());
            tracing::info!(id = %ca.id, ca = %ca.client.address, "SVID from the Istio CA");
            let trust = TrustStore::new(BundleSet::new().with(ca.bundle.clone()));
            watch_rotations(slot.clone());
            // The manager renews while it lives: keep it for the life of the process.
            tokio::spawn(async move {
                let _manager = manager;
                std::future::pending::<()>().await
            });
            Ok(LiveIdentity {
                slot,
                trust,
                id: ca.id.clone(),
            })
        }
    }
}

/// The first SVID for `id` from the manager, waiting up to [`FIRST_SVID_TIMEOUT`] while the
/// CA is unreachable (a node started beside istiod, or before it, must not exit because the CA
/// was a second late), with back-off from 250 ms to 4 s between attempts. An answer that
/// cannot change by retrying (the token or the CSR refused) ends the wait at once.
async fn first_svid(
    manager: &IdentityManager,
    id: &SpiffeId,
    address: &str,
) -> Result<Arc<SvidSlot>, String> {
    let deadline = tokio::time::Instant::now() + FIRST_SVID_TIMEOUT;
    let mut pause = Duration::from_millis(250);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let err = match tokio::time::timeout(left, manager.fetch(id)).await {
            Ok(Ok(slot)) => return Ok(slot),
            Ok(Err(e)) => e,
            Err(_) => {
                return Err(format!(
                    "identity: no SVID for {id} from the Istio CA at {address} within {FIRST_SVID_TIMEOUT:?}"
                ));
            }
        };
        let retryable = matches!(&err, fipstun_identity::Error::Ca(c) if c.is_retryable());
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if !retryable || left <= pause {
            return Err(format!(
                "identity: the Istio CA at {address} did not issue {id}: {err}"
            ));
        }
        tracing::warn!(%id, ca = address, error = %err, retry_in = ?pause, "waiting for the first SVID");
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(4));
    }
}

/// Log every SVID that replaces the one in `slot` (rotation by any source), checked once a
/// second.
fn watch_rotations(slot: Arc<SvidSlot>) {
    tokio::spawn(async move {
        let mut seen = slot.current();
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let now = slot.current();
            let changed = match (&seen, &now) {
                (Some(a), Some(b)) => !Arc::ptr_eq(a, b),
                (None, None) => false,
                _ => true,
            };
            if changed {
                match &now {
                    Some(cur) => tracing::info!(
                        id = %cur.id,
                        not_after = %humantime_utc(cur.not_after),
                        "SVID installed"
                    ),
                    None => tracing::warn!("SVID removed: handshakes fail until the next one"),
                }
                seen = now;
            }
        }
    });
}

/// `t` as RFC 3339 UTC, for logs.
fn humantime_utc(t: std::time::SystemTime) -> String {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|d| {
            d.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("{secs} (unix seconds)"))
}
