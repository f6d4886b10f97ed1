//! Keeps the typed rustls error of a TLS stream that h2 would otherwise flatten.
//!
//! h2 stores I/O errors as kind and text only (its errors must be `Clone`), so a TLS alert the
//! peer sends after our side of the handshake finished (a TLS 1.3 server refusing our
//! certificate) would reach the caller as a string. The tap sits between the TLS stream and
//! h2 and remembers the first rustls error that passes through.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The first rustls error seen on a connection, shared with whoever reports its failure.
pub(crate) type SeenTlsError = Arc<OnceLock<rustls::Error>>;

/// A stream that records the rustls error inside any I/O error it returns.
pub(crate) struct TlsErrorTap<S> {
    inner: S,
    seen: SeenTlsError,
}

impl<S> TlsErrorTap<S> {
    pub(crate) fn new(inner: S) -> (Self, SeenTlsError) {
        let seen = SeenTlsError::default();
        (
            Self {
                inner,
                seen: seen.clone(),
            },
            seen,
        )
    }

    fn note<T>(&self, r: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if let Poll::Ready(Err(e)) = &r
            && let Some(tls) = rustls_error(e)
        {
            let _ = self.seen.set(tls.clone());
        }
        r
    }
}

/// The rustls error an I/O error carries, if any.
pub(crate) fn rustls_error(e: &io::Error) -> Option<&rustls::Error> {
    e.get_ref()?.downcast_ref::<rustls::Error>()
}

impl<S: AsyncRead + Unpin> AsyncRead for TlsErrorTap<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        self.note(r)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for TlsErrorTap<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.note(r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.note(r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        self.note(r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.note(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    struct Failing;

    impl AsyncRead for Failing {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                rustls::Error::AlertReceived(rustls::AlertDescription::UnknownCA),
            )))
        }
    }

    #[tokio::test]
    async fn the_first_rustls_error_is_kept_typed() {
        let (mut tap, seen) = TlsErrorTap::new(Failing);
        assert!(tap.read(&mut [0; 8]).await.is_err());
        assert_eq!(
            seen.get(),
            Some(&rustls::Error::AlertReceived(
                rustls::AlertDescription::UnknownCA
            ))
        );
    }
}
