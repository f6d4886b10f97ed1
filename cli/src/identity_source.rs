//! The live identity of a node or proxy: an `SvidSlot` and `TrustStore` that its TLS configs
//! are built on, fed either from `fipstun ca issue` files (re-read when replaced) or from a
//! SPIFFE Workload API endpoint (a SPIRE agent streams SVIDs and bundles).

use std::sync::Arc;
use std::time::Duration;

use fipstun_identity::bundle::{BundleSet, TrustStore};
use fipstun_identity::spiffe::SpiffeId;
use fipstun_identity::tls::SvidSlot;
use fipstun_planes::workload::{WorkloadConfig, WorkloadX509Source};

use crate::config::Identity;

/// How long start-up waits for the Workload API's first SVID.
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
            Ok(LiveIdentity { slot, trust, id })
        }
    }
}
