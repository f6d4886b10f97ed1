//! Read-ahead under TLS: one `recvfrom` per socket-full instead of per 4 KiB.
//!
//! rustls reads the socket through a deframer buffer that asks for at most 4 KiB past what it
//! holds (and shrinks back to 4 KiB whenever it empties), so tokio-rustls reads a bulk stream
//! in pieces of 4 to 16 KiB: on the scorecard's bulk upload the node made about 60 of its
//! 81 `recvfrom` per MiB for the TLS socket. [`ReadAhead`] reads the socket in 64 KiB gulps
//! and serves rustls' small reads from memory (a copy in cache is far cheaper than a system
//! call). The buffer is held only while bytes are in flight: it comes from a small per-thread
//! pool when a read starts and goes back as soon as it is drained and the socket has nothing
//! more, so an idle connection holds none (the forwarder's copy buffers follow the same rule).

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes read from the socket at once. 64 KiB is what one `recvfrom` usually finds on a busy
/// loopback or LAN socket, and four full TLS records.
const READ_AHEAD_BYTES: usize = 64 * 1024;

/// Buffers kept per thread for reuse (at most 256 KiB per thread); more are freed.
const POOL_PER_THREAD: usize = 4;

thread_local! {
    static POOL: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
}

fn take() -> Box<[u8]> {
    POOL.with(|p| p.borrow_mut().pop())
        .unwrap_or_else(|| vec![0u8; READ_AHEAD_BYTES].into_boxed_slice())
}

fn give(buf: Box<[u8]>) {
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        if p.len() < POOL_PER_THREAD {
            p.push(buf);
        }
    });
}

/// A byte stream whose reads go through a read-ahead buffer held only while it has bytes;
/// writes (vectored too) pass straight through.
#[derive(Debug)]
pub(crate) struct ReadAhead<S> {
    inner: S,
    buf: Option<Box<[u8]>>,
    pos: usize,
    end: usize,
}

impl<S> ReadAhead<S> {
    pub(crate) fn new(inner: S) -> Self {
        Self {
            inner,
            buf: None,
            pos: 0,
            end: 0,
        }
    }

    fn release(&mut self) {
        if let Some(b) = self.buf.take() {
            give(b);
        }
        self.pos = 0;
        self.end = 0;
    }
}

impl<S> Drop for ReadAhead<S> {
    fn drop(&mut self) {
        self.release();
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ReadAhead<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.pos == this.end {
            if out.remaining() >= READ_AHEAD_BYTES {
                // The caller reads big: no point staging it.
                this.release();
                return Pin::new(&mut this.inner).poll_read(cx, out);
            }
            let mut buf = this.buf.take().unwrap_or_else(take);
            let mut rb = ReadBuf::new(&mut buf[..]);
            match Pin::new(&mut this.inner).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) => {
                    let n = rb.filled().len();
                    if n == 0 {
                        // EOF: nothing to hold.
                        give(buf);
                        return Poll::Ready(Ok(()));
                    }
                    this.pos = 0;
                    this.end = n;
                    this.buf = Some(buf);
                }
                Poll::Ready(Err(e)) => {
                    give(buf);
                    return Poll::Ready(Err(e));
                }
                Poll::Pending => {
                    // Nothing in flight: hold no buffer while waiting.
                    give(buf);
                    this.pos = 0;
                    this.end = 0;
                    return Poll::Pending;
                }
            }
        }
        if let Some(buf) = this.buf.as_deref() {
            let n = (this.end - this.pos).min(out.remaining());
            out.put_slice(&buf[this.pos..this.pos + n]);
            this.pos += n;
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ReadAhead<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn small_reads_see_every_byte_in_order_and_eof() {
        let (a, mut b) = tokio::io::duplex(256 * 1024);
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            b.write_all(&sent).await.unwrap();
            b.shutdown().await.unwrap();
        });
        let mut r = ReadAhead::new(a);
        let mut got = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = r.read(&mut chunk).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&chunk[..n]);
        }
        writer.await.unwrap();
        assert_eq!(got, data);
        assert!(r.buf.is_none(), "no buffer held at EOF");
    }

    #[tokio::test]
    async fn an_idle_stream_holds_no_buffer() {
        let (a, mut b) = tokio::io::duplex(1024);
        let mut r = ReadAhead::new(a);
        b.write_all(b"hello").await.unwrap();
        let mut chunk = [0u8; 16];
        let n = r.read(&mut chunk).await.unwrap();
        assert_eq!(&chunk[..n], b"hello");
        // The next read finds nothing: the buffer goes back while we wait.
        let pending = tokio::time::timeout(
            std::time::Duration::from_millis(20),
            r.read(&mut chunk),
        )
        .await;
        assert!(pending.is_err());
        assert!(r.buf.is_none());
    }
}
