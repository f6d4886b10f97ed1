//! Both directions of a forwarded stream, with copy buffers held only while bytes are in
//! flight.
//!
//! `tokio::io::copy_bidirectional_with_sizes` gives every stream two buffers for its whole
//! life, so a proxy holding thousands of idle streams keeps a touched page or more of each
//! resident. Here a direction takes a buffer from a small per-thread pool when it reads, keeps
//! it while the bytes it read are being written, and gives it back as soon as the reader has
//! nothing more (its read returns `Pending`) or ends. A buffer only lends its memory to the
//! reader for the length of one `poll_read` call, so returning it on `Pending` is sound for
//! every [`AsyncRead`]. Under load a direction keeps its buffer from read to read; idle
//! streams hold none. Pooled buffers are reused without being cleared (they only ever hold
//! bytes that were already forwarded), so the pool also spares the allocator a zeroed 64 KiB
//! allocation per burst.

use std::cell::RefCell;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Buffers kept per thread for reuse; more are freed. At the default 64 KiB this bounds the
/// pool at 1 MiB per thread.
const POOL_PER_THREAD: usize = 16;

thread_local! {
    static POOL: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
}

/// A buffer of `size` bytes, from this thread's pool if it has one of that size.
fn take(size: usize) -> Box<[u8]> {
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        match p.iter().rposition(|b| b.len() == size) {
            Some(i) => p.swap_remove(i),
            None => vec![0u8; size].into_boxed_slice(),
        }
    })
}

/// Give a buffer back to this thread's pool (or free it when the pool is full).
fn give(buf: Box<[u8]>) {
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        if p.len() < POOL_PER_THREAD {
            p.push(buf);
        }
    });
}

/// One direction: read from one side, write to the other.
struct Direction {
    size: usize,
    /// Held while `buf[pos..cap]` waits to be written.
    buf: Option<Box<[u8]>>,
    pos: usize,
    cap: usize,
    copied: u64,
    read_done: bool,
    need_flush: bool,
    done: bool,
}

impl Direction {
    fn new(size: usize) -> Self {
        Self {
            size,
            buf: None,
            pos: 0,
            cap: 0,
            copied: 0,
            read_done: false,
            need_flush: false,
            done: false,
        }
    }

    fn release(&mut self) {
        if let Some(b) = self.buf.take() {
            give(b);
        }
        self.pos = 0;
        self.cap = 0;
    }

    fn poll_copy<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        mut reader: Pin<&mut R>,
        mut writer: Pin<&mut W>,
    ) -> Poll<io::Result<u64>>
    where
        R: AsyncRead + ?Sized,
        W: AsyncWrite + ?Sized,
    {
        if self.done {
            return Poll::Ready(Ok(self.copied));
        }
        loop {
            if self.pos == self.cap && !self.read_done {
                let mut buf = self.buf.take().unwrap_or_else(|| take(self.size));
                let mut rb = ReadBuf::new(&mut buf);
                match reader.as_mut().poll_read(cx, &mut rb) {
                    Poll::Pending => {
                        // Nothing to forward now: hold no buffer while waiting.
                        give(buf);
                        self.pos = 0;
                        self.cap = 0;
                        if self.need_flush {
                            ready!(writer.as_mut().poll_flush(cx))?;
                            self.need_flush = false;
                        }
                        return Poll::Pending;
                    }
                    Poll::Ready(Err(e)) => {
                        give(buf);
                        return Poll::Ready(Err(e));
                    }
                    Poll::Ready(Ok(())) => {
                        let n = rb.filled().len();
                        self.pos = 0;
                        self.cap = n;
                        if n == 0 {
                            self.read_done = true;
                            give(buf);
                        } else {
                            self.buf = Some(buf);
                        }
                    }
                }
            }
            while self.pos < self.cap {
                let Some(buf) = self.buf.as_deref() else {
                    break;
                };
                let n = match writer.as_mut().poll_write(cx, &buf[self.pos..self.cap]) {
                    Poll::Ready(Ok(n)) => n,
                    Poll::Ready(Err(e)) => {
                        self.release();
                        return Poll::Ready(Err(e));
                    }
                    // Keep the buffer: its bytes are not written yet.
                    Poll::Pending => return Poll::Pending,
                };
                if n == 0 {
                    self.release();
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "write zero bytes into writer",
                    )));
                }
                self.pos += n;
                self.copied += n as u64;
                self.need_flush = true;
            }
            if self.read_done && self.pos == self.cap {
                self.release();
                ready!(writer.as_mut().poll_flush(cx))?;
                ready!(writer.as_mut().poll_shutdown(cx))?;
                self.done = true;
                return Poll::Ready(Ok(self.copied));
            }
        }
    }
}

impl Drop for Direction {
    fn drop(&mut self) {
        self.release();
    }
}

/// Copy `a` to `b` and `b` to `a` until both ends have finished (each EOF shuts the other
/// side's write half), with `a_to_b` and `b_to_a` byte buffers taken only while bytes are in
/// flight; returns the bytes copied each way, as `tokio::io::copy_bidirectional` does.
pub(crate) async fn copy_bidirectional<A, B>(
    a: &mut A,
    b: &mut B,
    a_to_b: usize,
    b_to_a: usize,
) -> io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let mut ab = Direction::new(a_to_b);
    let mut ba = Direction::new(b_to_a);
    poll_fn(|cx| {
        let r1 = ab.poll_copy(cx, Pin::new(&mut *a), Pin::new(&mut *b))?;
        let r2 = ba.poll_copy(cx, Pin::new(&mut *b), Pin::new(&mut *a))?;
        match (r1, r2) {
            (Poll::Ready(x), Poll::Ready(y)) => Poll::Ready(Ok((x, y))),
            _ => Poll::Pending,
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    use super::*;

    fn pooled() -> usize {
        POOL.with(|p| p.borrow().len())
    }

    /// Bytes cross both ways intact, EOF on one side shuts the other's write half, the counts
    /// are the bytes copied, and no buffer is held by a direction once it is done.
    #[tokio::test(flavor = "current_thread")]
    async fn copies_both_ways_and_shuts_down() {
        let (mut client, mut near) = duplex(1024);
        let (mut far, server) = duplex(1024);
        let copy = tokio::spawn(async move {
            copy_bidirectional(&mut near, &mut far, 4096, 4096)
                .await
                .unwrap()
        });
        let up: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let down: Vec<u8> = (0..70_000u32).map(|i| (i % 13) as u8).collect();
        let (up2, down2) = (up.clone(), down.clone());
        let srv = tokio::spawn(async move {
            let mut got = Vec::new();
            let (mut r, mut w) = tokio::io::split(server);
            let writer = tokio::spawn(async move {
                w.write_all(&down2).await.unwrap();
                w.shutdown().await.unwrap();
            });
            r.read_to_end(&mut got).await.unwrap();
            writer.await.unwrap();
            assert_eq!(got, up2);
        });
        let (mut r, mut w) = tokio::io::split(&mut client);
        let (_, got) = tokio::join!(
            async {
                w.write_all(&up).await.unwrap();
                w.shutdown().await.unwrap();
            },
            async {
                let mut got = Vec::new();
                r.read_to_end(&mut got).await.unwrap();
                got
            }
        );
        assert_eq!(got, down);
        srv.await.unwrap();
        let (a, b) = copy.await.unwrap();
        assert_eq!((a, b), (up.len() as u64, down.len() as u64));
    }

    /// An idle stream holds no buffer: after a round trip the buffer is back in the pool. One
    /// buffer serves both directions here: each direction gives it back as its read turns
    /// pending, before the other direction is polled.
    #[tokio::test(flavor = "current_thread")]
    async fn idle_streams_hold_no_buffer() {
        POOL.with(|p| p.borrow_mut().clear());
        let (mut client, mut near) = duplex(1024);
        let (mut far, mut server) = duplex(1024);
        let copy = tokio::spawn(async move {
            copy_bidirectional(&mut near, &mut far, 8192, 8192)
                .await
                .unwrap()
        });
        client.write_all(b"ping").await.unwrap();
        let mut b = [0u8; 4];
        server.read_exact(&mut b).await.unwrap();
        server.write_all(b"pong").await.unwrap();
        client.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"pong");
        // Let the copy task run until both of its reads are pending again.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert_eq!(pooled(), 1, "the idle stream gave its buffer back");
        drop(client);
        drop(server);
        copy.await.unwrap();
        assert_eq!(pooled(), 1);
    }

    /// A pool never keeps more than its bound, and only hands out buffers of the size asked.
    #[test]
    fn pool_is_bounded_and_sized() {
        POOL.with(|p| p.borrow_mut().clear());
        for _ in 0..POOL_PER_THREAD + 5 {
            give(vec![0u8; 100].into_boxed_slice());
        }
        assert_eq!(pooled(), POOL_PER_THREAD);
        assert_eq!(take(200).len(), 200);
        assert_eq!(pooled(), POOL_PER_THREAD);
        assert_eq!(take(100).len(), 100);
        assert_eq!(pooled(), POOL_PER_THREAD - 1);
    }
}
