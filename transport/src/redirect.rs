//! Transparent capture (Linux): connections an iptables `REDIRECT` (or `TPROXY`) rule sent to
//! a local listener, each forwarded to the destination it was originally addressed to — the
//! node proxy's outbound capture port (ztunnel's 15001).
//!
//! The original destination comes from the kernel's NAT table (`SO_ORIGINAL_DST`, or
//! `IP6T_SO_ORIGINAL_DST` on an IPv6 socket) through socket2. A connection whose original
//! destination is the listener itself is refused: it was not redirected at all, or it is the
//! proxy's own outbound traffic captured back into it (a loop the iptables rules must exclude,
//! by owner or mark).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use socket2::SockRef;
use tokio::net::{TcpListener, TcpStream};

use crate::{Acceptor, PeerIdentity, PendingInbound, Refusal, Target, TransportError};

/// The destination `stream` was addressed to before a `REDIRECT`/`TPROXY` rule sent it here:
/// `SO_ORIGINAL_DST` on an IPv4 socket, `IP6T_SO_ORIGINAL_DST` on an IPv6 one. Fails (`ENOENT`)
/// for a connection with no NAT entry, that is one that was not redirected.
pub fn original_dst(stream: &TcpStream) -> io::Result<SocketAddr> {
    let sock = SockRef::from(stream);
    let addr = match stream.local_addr()? {
        SocketAddr::V4(_) => sock.original_dst_v4()?,
        SocketAddr::V6(_) => sock.original_dst_v6()?,
    };
    addr.as_socket().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "the original destination is not an IP address",
        )
    })
}

/// Counters of a [`RedirectAcceptor`] since it was created.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedirectStats {
    /// Connections handed to the forwarder, each with its original destination.
    pub redirected: u64,
    /// Connections whose original destination was the listener itself (not redirected, or
    /// the proxy's own traffic captured back: a loop), refused.
    pub refused_loop: u64,
    /// Connections whose original destination could not be read (no NAT entry), refused.
    pub refused_no_original_dst: u64,
}

#[derive(Debug, Default)]
struct Counters {
    redirected: AtomicU64,
    refused_loop: AtomicU64,
    refused_no_original_dst: AtomicU64,
}

/// A cloneable view of a [`RedirectAcceptor`]'s counters, to read after the acceptor moved
/// into [`Forwarder::run`](crate::Forwarder::run).
#[derive(Clone, Debug)]
pub struct RedirectStatsHandle(Arc<Counters>);

impl RedirectStatsHandle {
    /// The counters now.
    pub fn get(&self) -> RedirectStats {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        RedirectStats {
            redirected: get(&self.0.redirected),
            refused_loop: get(&self.0.refused_loop),
            refused_no_original_dst: get(&self.0.refused_no_original_dst),
        }
    }
}

/// A listener that iptables redirects captured connections to, as an [`Acceptor`]: each
/// connection's target is its original destination; its peer the [`PeerIdentity::Local`]
/// client. Connections without a usable original destination are reset at once and never
/// reach the forwarder.
#[derive(Debug)]
pub struct RedirectAcceptor {
    listener: TcpListener,
    counters: Arc<Counters>,
}

impl RedirectAcceptor {
    /// Accept captured connections on `listener`.
    pub fn new(listener: TcpListener) -> Self {
        Self {
            listener,
            counters: Arc::default(),
        }
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The counters now.
    pub fn stats(&self) -> RedirectStats {
        self.stats_handle().get()
    }

    /// A handle to the counters that outlives moving the acceptor into a forwarder.
    pub fn stats_handle(&self) -> RedirectStatsHandle {
        RedirectStatsHandle(self.counters.clone())
    }
}

/// Whether `dst` is the listener `listener` itself (an unspecified listener address stands
/// for its port on every local address).
fn is_self(dst: SocketAddr, listener: SocketAddr, accepted_on: SocketAddr) -> bool {
    dst == listener || dst == accepted_on
}

impl Acceptor for RedirectAcceptor {
    type Pending = RedirectPending;

    async fn accept(&mut self) -> Result<RedirectPending, TransportError> {
        loop {
            let (stream, client) = self.listener.accept().await?;
            let listener = self.listener.local_addr()?;
            let accepted_on = stream.local_addr()?;
            match original_dst(&stream) {
                Ok(dst) if is_self(dst, listener, accepted_on) => {
                    self.counters.refused_loop.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%client, original_dst = %dst, "capture: the original destination is this listener (not redirected, or a loop); refused");
                    let _ = stream.set_zero_linger();
                }
                Ok(dst) => {
                    self.counters.redirected.fetch_add(1, Ordering::Relaxed);
                    let _ = stream.set_nodelay(true);
                    return Ok(RedirectPending {
                        stream,
                        peer: PeerIdentity::Local(client),
                        target: Target::new(dst),
                    });
                }
                Err(e) => {
                    self.counters
                        .refused_no_original_dst
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%client, error = %e, "capture: no original destination (not redirected); refused");
                    let _ = stream.set_zero_linger();
                }
            }
        }
    }
}

/// A captured connection, not answered yet.
#[derive(Debug)]
pub struct RedirectPending {
    stream: TcpStream,
    peer: PeerIdentity,
    target: Target,
}

impl PendingInbound for RedirectPending {
    type Stream = TcpStream;

    fn peer(&self) -> &PeerIdentity {
        &self.peer
    }

    fn target(&self) -> &Target {
        &self.target
    }

    fn peer_addr(&self) -> Option<std::net::SocketAddr> {
        match self.peer {
            PeerIdentity::Local(a) => Some(a),
            _ => None,
        }
    }

    fn establish(self) -> Result<TcpStream, TransportError> {
        Ok(self.stream)
    }

    /// A reset (SO_LINGER 0), as the client would see an unreachable destination.
    fn refuse(self, _why: Refusal) {
        let _ = self.stream.set_zero_linger();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listener_itself_is_a_loop() {
        let l: SocketAddr = "0.0.0.0:15001".parse().unwrap();
        let on: SocketAddr = "10.0.0.5:15001".parse().unwrap();
        assert!(is_self(on, l, on));
        assert!(is_self(l, l, on));
        assert!(!is_self("10.0.0.9:80".parse().unwrap(), l, on));
    }
}
