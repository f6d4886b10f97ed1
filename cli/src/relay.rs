//! Moving bytes between a tunnelled stream and a TCP socket: both directions with half-close
//! kept, every byte counted as it passes, and each stream registered for the drain.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

/// Buffer per direction when relaying: 64 KiB moves a bulk stream in a few large reads and
/// writes instead of tokio's default 8 KiB.
pub(crate) const COPY_BUFFER_BYTES: usize = 64 * 1024;

/// A stream that counts the bytes read from and written to it.
pub(crate) struct Counted<S> {
    inner: S,
    read: Counter,
    written: Counter,
}

impl<S> Counted<S> {
    /// Count what is read from `inner` in `read` and what is written to it in `written`.
    pub(crate) fn new(inner: S, read: Counter, written: Counter) -> Self {
        Self {
            inner,
            read,
            written,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.read.inc_by(n as u64);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            self.written.inc_by(n as u64);
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Streams in flight, so shutdown can wait for them.
#[derive(Debug, Default)]
pub(crate) struct ActiveStreams {
    count: AtomicUsize,
    idle: Notify,
}

/// One stream in flight: counted in [`ActiveStreams`] and its backend's gauge until dropped.
#[derive(Debug)]
pub(crate) struct StreamGuard {
    streams: Arc<ActiveStreams>,
    gauge: Gauge,
}

impl ActiveStreams {
    /// Register a stream.
    pub(crate) fn start(self: &Arc<Self>, gauge: &Gauge) -> StreamGuard {
        self.count.fetch_add(1, Ordering::AcqRel);
        gauge.inc();
        StreamGuard {
            streams: self.clone(),
            gauge: gauge.clone(),
        }
    }

    /// Streams open now.
    pub(crate) fn count(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Wait until no stream is open, at most `limit`. True if they all finished.
    pub(crate) async fn drained(&self, limit: Duration) -> bool {
        let wait = async {
            loop {
                let idle = self.idle.notified();
                if self.count() == 0 {
                    return;
                }
                idle.await;
            }
        };
        tokio::time::timeout(limit, wait).await.is_ok()
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.gauge.dec();
        if self.streams.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.streams.idle.notify_waiters();
        }
    }
}

/// Wait for SIGTERM or SIGINT; returns the signal's name. The handlers are installed at once,
/// so a signal that arrives before this is awaited is not lost (nor kills the process).
pub(crate) fn termination() -> io::Result<impl std::future::Future<Output = &'static str>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn counted_counts_both_ways() {
        let (a, mut b) = tokio::io::duplex(64);
        let (r, w) = (Counter::default(), Counter::default());
        let mut c = Counted::new(a, r.clone(), w.clone());
        c.write_all(b"hello").await.unwrap();
        b.write_all(b"abc").await.unwrap();
        let mut got = [0u8; 3];
        c.read_exact(&mut got).await.unwrap();
        assert_eq!((r.get(), w.get()), (3, 5));
    }

    #[tokio::test]
    async fn drain_waits_for_the_last_stream() {
        let streams = Arc::new(ActiveStreams::default());
        let gauge = Gauge::default();
        let guard = streams.start(&gauge);
        assert_eq!(gauge.get(), 1);
        assert!(!streams.drained(Duration::from_millis(20)).await);
        let s = streams.clone();
        let waiter = tokio::spawn(async move { s.drained(Duration::from_secs(5)).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(guard);
        assert!(waiter.await.unwrap());
        assert_eq!(gauge.get(), 0);
    }
}
