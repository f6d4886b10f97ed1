//! The byte stream of one established HBONE tunnel, and the flow-controlled send/receive
//! helpers the server's copy loop shares with it.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use fipstun_identity::policy::Negotiated;
use fipstun_identity::spiffe::SpiffeId;
use h2::{RecvStream, SendStream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::client::ClientConn;
use crate::metrics::Metrics;
use crate::pool::Lease;
use crate::server::StreamGuard;
use crate::wire::Authority;

/// Largest amount one `poll_write` hands to h2; h2 splits it into DATA frames of at most the
/// peer's SETTINGS_MAX_FRAME_SIZE.
const MAX_WRITE_CHUNK: usize = 1 << 20;
/// Writes are copied into blocks shared by consecutive writes, so that each write does not
/// allocate. Blocks start RPC-sized and double while large writes keep filling them.
const MIN_WRITE_BLOCK: usize = 16 * 1024;
/// The largest write block.
const MAX_WRITE_BLOCK: usize = 256 * 1024;

/// An established HBONE stream: the tunnelled TCP connection, as tokio I/O. The client gets
/// one from [`HboneClient::connect`](crate::HboneClient::connect); a server in delivery mode
/// gets one from [`PendingConnect::accept`](crate::PendingConnect::accept).
///
/// Reading returns the bytes the far end sent, then EOF when it half-closed (END_STREAM).
/// [`AsyncWriteExt::shutdown`](tokio::io::AsyncWriteExt::shutdown) half-closes our direction
/// (END_STREAM) and keeps reading possible. Dropping the stream before both directions ended
/// resets it (RST_STREAM CANCEL). A reset or a lost connection surfaces as an I/O error.
pub struct HboneStream {
    send: SendStream<Bytes>,
    recv: RecvStream,
    read_buf: Bytes,
    read_eof: bool,
    write_buf: BytesMut,
    write_block: usize,
    write_shut: bool,
    peer_addr: SocketAddr,
    peer_id: SpiffeId,
    negotiated: Option<Negotiated>,
    target: Authority,
    metrics: Arc<Metrics>,
    _hold: Hold,
}

/// What an open stream keeps counted while it lives.
pub(crate) enum Hold {
    /// A stream slot on a pooled client connection.
    Pool {
        /// Released on drop.
        _lease: Lease<ClientConn>,
    },
    /// A stream of a server connection (idle tracking).
    Server {
        /// Released on drop.
        _guard: StreamGuard,
    },
}

impl fmt::Debug for HboneStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HboneStream")
            .field("peer_addr", &self.peer_addr)
            .field("peer_id", &self.peer_id)
            .field("target", &self.target)
            .field("stream_id", &self.send.stream_id().as_u32())
            .finish()
    }
}

impl HboneStream {
    pub(crate) fn new(
        (send, recv): (SendStream<Bytes>, RecvStream),
        peer_addr: SocketAddr,
        peer_id: SpiffeId,
        negotiated: Option<Negotiated>,
        target: Authority,
        metrics: Arc<Metrics>,
        hold: Hold,
    ) -> Self {
        metrics.stream_opened();
        Self {
            send,
            recv,
            read_buf: Bytes::new(),
            read_eof: false,
            write_buf: BytesMut::new(),
            write_block: MIN_WRITE_BLOCK,
            write_shut: false,
            peer_addr,
            peer_id,
            negotiated,
            target,
            metrics,
            _hold: hold,
        }
    }

    /// The other end of the tunnel: the HBONE server we connected through (client side), or
    /// the client that connected (server side).
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer_addr
    }

    /// The peer's SPIFFE ID, as verified in the TLS handshake.
    pub fn peer_identity(&self) -> &SpiffeId {
        &self.peer_id
    }

    /// The target the CONNECT named.
    pub fn target(&self) -> &Authority {
        &self.target
    }

    /// What this stream's connection negotiated in its TLS handshake: protocol version,
    /// cipher suite and key-exchange group (`None` only if rustls did not report them).
    pub fn negotiated(&self) -> Option<Negotiated> {
        self.negotiated
    }
}

impl Drop for HboneStream {
    fn drop(&mut self) {
        self.metrics.stream_closed();
        tracing::trace!(peer = %self.peer_addr, target = %self.target, "hbone stream closed");
    }
}

pub(crate) fn h2_to_io(e: h2::Error) -> io::Error {
    if e.is_io() {
        return e
            .into_io()
            .unwrap_or_else(|| io::Error::other("h2 I/O error"));
    }
    let kind = if e.is_reset() || e.is_go_away() {
        io::ErrorKind::ConnectionReset
    } else {
        io::ErrorKind::Other
    };
    io::Error::new(kind, e)
}

impl AsyncRead for HboneStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.read_buf.is_empty() {
                let n = this.read_buf.len().min(buf.remaining());
                buf.put_slice(&this.read_buf[..n]);
                this.read_buf.advance(n);
                if this.read_buf.is_empty() {
                    // An empty slice still shares (and keeps alive) h2's receive buffer: an
                    // idle stream must not pin it.
                    this.read_buf = Bytes::new();
                }
                return Poll::Ready(Ok(()));
            }
            if this.read_eof {
                return Poll::Ready(Ok(()));
            }
            match ready!(this.recv.poll_data(cx)) {
                None => this.read_eof = true,
                Some(Ok(data)) => {
                    // Released on receipt: we hold at most this one chunk outside the window,
                    // and the peer can keep the pipe full while the application copies it.
                    let n = data.len();
                    this.recv
                        .flow_control()
                        .release_capacity(n)
                        .map_err(h2_to_io)?;
                    this.metrics.bytes_in(n);
                    this.read_buf = data;
                }
                Some(Err(e)) => return Poll::Ready(Err(h2_to_io(e))),
            }
        }
    }
}

/// Wait until h2 has send capacity for this stream; `want` is how much we would like.
pub(crate) fn poll_send_capacity(
    send: &mut SendStream<Bytes>,
    want: usize,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    if send.capacity() < want {
        send.reserve_capacity(want);
    }
    loop {
        let cap = send.capacity();
        if cap > 0 {
            return Poll::Ready(Ok(cap));
        }
        match ready!(send.poll_capacity(cx)) {
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Poll::Ready(Err(h2_to_io(e))),
            None => {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "the HBONE stream is closed for sending",
                )));
            }
        }
    }
}

impl AsyncWrite for HboneStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.write_shut {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "write after shutdown",
            )));
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let want = buf.len().min(MAX_WRITE_CHUNK);
        let cap = ready!(poll_send_capacity(&mut this.send, want, cx))?;
        let n = cap.min(want);
        if this.write_buf.capacity() < n {
            this.write_buf.reserve(n.max(this.write_block));
            // Grow only for writes that are large against the block (a bulk flow): a stream
            // of small RPC writes keeps 16 KiB blocks instead of ratcheting up to 256 KiB each.
            if n.saturating_mul(4) >= this.write_block {
                this.write_block = (this.write_block * 2).min(MAX_WRITE_BLOCK);
            }
        }
        this.write_buf.extend_from_slice(&buf[..n]);
        let chunk = this.write_buf.split().freeze();
        this.send.send_data(chunk, false).map_err(h2_to_io)?;
        if n == buf.len() {
            // The write is done: hand back connection-window capacity assigned beyond what is
            // queued, so an idle stream does not hoard window its neighbours need. The next
            // write reserves again (assigned at once while the connection window has room).
            this.send.reserve_capacity(0);
        }
        this.metrics.bytes_out(n);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // h2 owns the queue; the connection task writes it out as soon as it can. A flush
        // means the writer has nothing more for now (the forwarder flushes when its reader
        // runs dry), so let go of the rest of the write block: an idle stream keeps none.
        // The next write takes a fresh block (uninitialised: no clearing cost).
        let this = self.get_mut();
        this.write_buf = BytesMut::new();
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.write_shut {
            this.write_shut = true;
            this.send.send_data(Bytes::new(), true).map_err(h2_to_io)?;
        }
        Poll::Ready(Ok(()))
    }
}
