//! Picking up replaced SVID files while running: the identity directory is polled, and a new,
//! valid SVID and bundle are swapped into the live TLS configs (their `SvidSlot` and
//! `TrustStore`), so a node or proxy outlives the SVID it started with.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fipstun_identity::bundle::{BundleSet, TrustStore};
use fipstun_identity::tls::SvidSlot;

use crate::ca::{BUNDLE, SVID_CHAIN, SVID_KEY};
use crate::config::reload_identity;

/// How often the files' modification times are checked.
const POLL_EVERY: Duration = Duration::from_secs(2);

/// The newest modification time of the three files, if all exist.
fn newest_mtime(dir: &Path) -> Option<SystemTime> {
    [SVID_CHAIN, SVID_KEY, BUNDLE]
        .iter()
        .map(|f| {
            std::fs::metadata(dir.join(f))
                .and_then(|m| m.modified())
                .ok()
        })
        .try_fold(SystemTime::UNIX_EPOCH, |acc, t| t.map(|t| acc.max(t)))
}

/// Watch `dir` until the runtime ends; install each new valid SVID into `slot` and its bundle
/// into `trust`. A half-written or invalid set is logged and retried on the next change.
pub(crate) fn spawn(dir: PathBuf, slot: Arc<SvidSlot>, trust: TrustStore) {
    tokio::spawn(async move {
        let mut seen = newest_mtime(&dir);
        let mut warned_expiry = false;
        loop {
            tokio::time::sleep(POLL_EVERY).await;
            let now = newest_mtime(&dir);
            if now != seen {
                seen = now;
                match reload_identity(&dir) {
                    Ok(id) => match slot.set(&id.svid) {
                        Ok(()) => {
                            trust.replace(BundleSet::new().with(id.bundle.clone()));
                            warned_expiry = false;
                            tracing::info!(
                                dir = %dir.display(),
                                id = %id.svid.id(),
                                "reloaded the SVID and bundle"
                            );
                        }
                        Err(e) => {
                            tracing::warn!(dir = %dir.display(), error = %e, "new SVID key refused; keeping the old SVID")
                        }
                    },
                    Err(e) => {
                        tracing::warn!(error = %e, "identity files changed but do not load; keeping the old SVID")
                    }
                }
            }
            if !warned_expiry
                && slot
                    .seconds_to_expiry(SystemTime::now())
                    .is_some_and(|s| s < 0.0)
            {
                warned_expiry = true;
                tracing::error!(dir = %dir.display(), "the SVID has expired: handshakes will fail until new files are issued");
            }
        }
    });
}
