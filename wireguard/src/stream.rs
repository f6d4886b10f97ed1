//! A tunnelled TCP connection as a tokio byte stream over a smoltcp socket.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::node::Shared;

/// A TCP connection inside the WireGuard tunnel. `shutdown()` sends FIN and keeps the read
/// half open (half-close); dropping it closes gracefully.
pub struct WgStream {
    shared: Arc<Shared>,
    handle: SocketHandle,
    armed: bool,
}

impl std::fmt::Debug for WgStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WgStream")
            .field("handle", &self.handle)
            .finish()
    }
}

impl WgStream {
    pub(crate) fn new(shared: Arc<Shared>, handle: SocketHandle) -> Self {
        Self {
            shared,
            handle,
            armed: true,
        }
    }

    /// Our end inside the tunnel (our tunnel address for streams we open; the destination the
    /// peer asked for on inbound streams). `None` once the node is closed.
    pub fn local_addr(&self) -> Option<std::net::SocketAddr> {
        if self.shared.is_closed() {
            return None;
        }
        self.shared.lock().endpoints(self.handle).0
    }

    /// The far end inside the tunnel. `None` once the connection or the node is closed.
    pub fn peer_addr(&self) -> Option<std::net::SocketAddr> {
        if self.shared.is_closed() {
            return None;
        }
        self.shared.lock().endpoints(self.handle).1
    }

    /// Refuse the connection: a TCP reset (RST) to the far end instead of the graceful FIN a
    /// drop sends, as a kernel answers a connection nobody takes.
    pub fn reset(mut self) {
        self.armed = false;
        if self.shared.is_closed() {
            return;
        }
        {
            let mut core = self.shared.lock();
            core.socket(self.handle).abort();
            core.stream_dropped(self.handle);
        }
        self.shared.wake_driver.notify_one();
    }

    /// Forget the socket without touching it (the caller holds the node lock and cleans up).
    pub(crate) fn disarm(mut self) -> SocketHandle {
        self.armed = false;
        self.handle
    }

    fn closed_err() -> io::Error {
        io::Error::new(io::ErrorKind::NotConnected, "the WireGuard node is closed")
    }
}

impl AsyncRead for WgStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.shared.is_closed() {
            return Poll::Ready(Err(Self::closed_err()));
        }
        let mut core = self.shared.lock();
        let s = core.socket(self.handle);
        match s.recv_slice(buf.initialize_unfilled()) {
            Ok(0) => {
                s.register_recv_waker(cx.waker());
                Poll::Pending
            }
            Ok(n) => {
                buf.advance(n);
                drop(core);
                // The window opened: let the driver advertise it.
                self.shared.wake_driver.notify_one();
                Poll::Ready(Ok(()))
            }
            Err(tcp::RecvError::Finished) => Poll::Ready(Ok(())),
            Err(tcp::RecvError::InvalidState) => match s.state() {
                // Not yet open (cannot happen for streams we hand out); wait.
                tcp::State::SynSent | tcp::State::SynReceived | tcp::State::Listen => {
                    s.register_recv_waker(cx.waker());
                    Poll::Pending
                }
                _ => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::ConnectionReset,
                    "the tunnelled connection was reset",
                ))),
            },
        }
    }
}

impl AsyncWrite for WgStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.shared.is_closed() {
            return Poll::Ready(Err(Self::closed_err()));
        }
        let mut core = self.shared.lock();
        let s = core.socket(self.handle);
        if !s.may_send() {
            let kind = if s.state() == tcp::State::Closed {
                io::ErrorKind::ConnectionReset
            } else {
                io::ErrorKind::BrokenPipe
            };
            return Poll::Ready(Err(io::Error::new(
                kind,
                "the tunnelled connection cannot send",
            )));
        }
        match s.send_slice(data) {
            Ok(0) => {
                s.register_send_waker(cx.waker());
                Poll::Pending
            }
            Ok(n) => {
                drop(core);
                self.shared.wake_driver.notify_one();
                Poll::Ready(Ok(n))
            }
            Err(_) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the tunnelled connection cannot send",
            ))),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Bytes in the socket buffer are on their way; the driver was woken on write.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.shared.is_closed() {
            return Poll::Ready(Err(Self::closed_err()));
        }
        // FIN goes out after the queued bytes; the read half stays open.
        self.shared.lock().socket(self.handle).close();
        self.shared.wake_driver.notify_one();
        Poll::Ready(Ok(()))
    }
}

impl Drop for WgStream {
    fn drop(&mut self) {
        if !self.armed || self.shared.is_closed() {
            return;
        }
        self.shared.lock().stream_dropped(self.handle);
        self.shared.wake_driver.notify_one();
    }
}
