//! SIGHUP reload: the pieces of a running node or proxy that a new configuration replaces in
//! place. A [`LivePolicy`] is the forwarders' authorizer; reload swaps the policy inside it,
//! so new streams are judged by the new rules and established streams are left alone.

use std::sync::{Arc, RwLock};

use fipstun_transport::policy::{Policy, Verdict};
use fipstun_transport::{Authorize, PeerIdentity, Target};

/// A policy that can be replaced while forwarders use it.
#[derive(Clone, Debug)]
pub(crate) struct LivePolicy(Arc<RwLock<Arc<Policy>>>);

impl LivePolicy {
    /// Start with `policy`.
    pub(crate) fn new(policy: Policy) -> Self {
        Self(Arc::new(RwLock::new(Arc::new(policy))))
    }

    /// Judge new streams by `policy` from now on.
    pub(crate) fn replace(&self, policy: Policy) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(policy);
    }

    /// The policy in force.
    pub(crate) fn current(&self) -> Arc<Policy> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Authorize for LivePolicy {
    fn authorize(&self, peer: &PeerIdentity, target: &Target) -> Verdict {
        self.current().authorize(peer, target)
    }
}

/// SIGHUP, as a stream of reload requests. Installed at once, so a SIGHUP that arrives before
/// the first `recv` is not lost (and does not kill the process, SIGHUP's default).
pub(crate) fn hangups() -> std::io::Result<tokio::signal::unix::Signal> {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
}

#[cfg(test)]
mod tests {
    use fipstun_transport::policy::Policy;

    use super::*;

    #[test]
    fn replace_changes_the_verdict_for_new_streams() {
        let to: std::net::SocketAddr = "10.0.0.1:80".parse().unwrap();
        let live = LivePolicy::new(Policy::deny_all());
        let peer = PeerIdentity::Local("127.0.0.1:5000".parse().unwrap());
        assert!(!live.authorize(&peer, &Target::new(to)).is_allowed());
        live.replace(Policy::only_to([to]));
        assert!(live.authorize(&peer, &Target::new(to)).is_allowed());
    }
}
