//! An in-memory tunnel for testing code built on the traits: a [`MemoryTransport`] whose
//! streams arrive at a [`MemoryAcceptor`] in the same process, with the peer identity the test
//! chose. Like HBONE, a connect resolves only once the far side established or refused the
//! stream, so refusals surface as typed errors.

use std::sync::Arc;

use tokio::io::DuplexStream;
use tokio::sync::{Mutex, mpsc, oneshot};

use crate::{
    Acceptor, PeerIdentity, PendingInbound, Refusal, SecurityInfo, Target, Transport,
    TransportError,
};

/// Bytes buffered per direction of an in-memory stream.
const PIPE_BYTES: usize = 256 * 1024;

/// The connecting side of an in-memory tunnel.
#[derive(Clone, Debug)]
pub struct MemoryTransport {
    tx: mpsc::Sender<MemoryPending>,
    peer: Arc<Mutex<PeerIdentity>>,
}

/// The accepting side of an in-memory tunnel.
#[derive(Debug)]
pub struct MemoryAcceptor {
    rx: mpsc::Receiver<MemoryPending>,
}

/// A stream that arrived at a [`MemoryAcceptor`] and waits for its answer.
#[derive(Debug)]
pub struct MemoryPending {
    stream: DuplexStream,
    peer: PeerIdentity,
    target: Target,
    answer: oneshot::Sender<Result<(), Refusal>>,
}

/// A connected pair; streams from the transport claim to come from `peer`.
pub fn memory_tunnel(peer: PeerIdentity) -> (MemoryTransport, MemoryAcceptor) {
    let (tx, rx) = mpsc::channel(64);
    (
        MemoryTransport {
            tx,
            peer: Arc::new(Mutex::new(peer)),
        },
        MemoryAcceptor { rx },
    )
}

impl MemoryTransport {
    /// Streams opened from now on claim to come from `peer`.
    pub async fn set_peer(&self, peer: PeerIdentity) {
        *self.peer.lock().await = peer;
    }
}

impl Transport for MemoryTransport {
    type Stream = DuplexStream;

    async fn connect(&self, target: &Target) -> Result<DuplexStream, TransportError> {
        let (near, far) = tokio::io::duplex(PIPE_BYTES);
        let (answer, answered) = oneshot::channel();
        let pending = MemoryPending {
            stream: far,
            peer: self.peer.lock().await.clone(),
            target: target.clone(),
            answer,
        };
        self.tx
            .send(pending)
            .await
            .map_err(|_| TransportError::Closed)?;
        let refused = |reason: Refusal| match reason {
            Refusal::Unreachable => {
                TransportError::unreachable(target, "the far side could not dial it")
            }
            other => TransportError::refused(target, other.label()),
        };
        match answered.await {
            Ok(Ok(())) => Ok(near),
            Ok(Err(reason)) => Err(refused(reason)),
            Err(_) => Err(TransportError::Closed),
        }
    }

    fn security(&self) -> SecurityInfo {
        SecurityInfo {
            backend: "memory",
            protocol: "in-process pipe".into(),
            cipher: "none".into(),
            fips: false,
        }
    }
}

impl PendingInbound for MemoryPending {
    type Stream = DuplexStream;

    fn peer(&self) -> &PeerIdentity {
        &self.peer
    }

    fn target(&self) -> &Target {
        &self.target
    }

    fn establish(self) -> Result<DuplexStream, TransportError> {
        self.answer
            .send(Ok(()))
            .map_err(|_| TransportError::Closed)?;
        Ok(self.stream)
    }

    fn refuse(self, why: Refusal) {
        let _ = self.answer.send(Err(why));
    }
}

impl Acceptor for MemoryAcceptor {
    type Pending = MemoryPending;

    async fn accept(&mut self) -> Result<MemoryPending, TransportError> {
        self.rx.recv().await.ok_or(TransportError::Closed)
    }
}
