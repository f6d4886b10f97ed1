//! TLS plumbing between tonic and rustls: a connector that dials TCP and runs our FIPS client
//! handshake, and the accepted server stream tonic serves, carrying who the peer proved to be.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use fipstun_identity::spiffe::SpiffeId;
use fipstun_identity::tls::peer_spiffe_id;
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tonic::transport::server::Connected;

/// Dials `address` over TCP and runs a rustls client handshake with `config` (built by the
/// FIPS policy). A tower `Service<Uri>` for tonic's `connect_with_connector`; the URI is ignored.
#[derive(Clone)]
pub(crate) struct TlsConnector {
    pub(crate) address: String,
    pub(crate) server_name: ServerName<'static>,
    pub(crate) config: Arc<rustls::ClientConfig>,
}

impl tower::Service<http::Uri> for TlsConnector {
    type Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = io::Error;
    type Future =
        Pin<Box<dyn std::future::Future<Output = Result<Self::Response, io::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), io::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: http::Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let tcp = TcpStream::connect(&this.address).await?;
            tcp.set_nodelay(true)?;
            let tls = tokio_rustls::TlsConnector::from(this.config)
                .connect(this.server_name, tcp)
                .await?;
            Ok(TokioIo::new(tls))
        })
    }
}

/// What the server knows about a caller's connection; tonic puts it in every request's
/// extensions (`request.extensions().get::<CallerConnection>()`).
#[derive(Clone, Debug)]
pub struct CallerConnection {
    /// The caller's address.
    pub remote: SocketAddr,
    /// The SPIFFE ID of the client SVID the caller presented and our verifier accepted, if any.
    pub peer_id: Option<SpiffeId>,
}

/// An accepted, handshaken TLS connection as tonic serves it.
pub(crate) struct ServerTlsStream {
    inner: tokio_rustls::server::TlsStream<TcpStream>,
    info: CallerConnection,
}

impl Connected for ServerTlsStream {
    type ConnectInfo = CallerConnection;

    fn connect_info(&self) -> CallerConnection {
        self.info.clone()
    }
}

impl AsyncRead for ServerTlsStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for ServerTlsStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// At most this many TLS handshakes in progress; accepting pauses beyond it, so a flood of
/// half-open connections costs bounded memory.
const MAX_PENDING_HANDSHAKES: usize = 256;

/// Accept TCP connections and hand each finished TLS handshake to the returned channel. Each
/// handshake runs in its own task under `handshake_timeout` (at most
/// [`MAX_PENDING_HANDSHAKES`] at once), so a slow or hostile client cannot hold up the others;
/// failed handshakes are logged and dropped. The task ends when the receiver is dropped.
pub(crate) fn accept_tls(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    handshake_timeout: Duration,
) -> mpsc::Receiver<io::Result<ServerTlsStream>> {
    let (tx, rx) = mpsc::channel(64);
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let pending = Arc::new(tokio::sync::Semaphore::new(MAX_PENDING_HANDSHAKES));
    tokio::spawn(async move {
        loop {
            let Ok(permit) = pending.clone().acquire_owned().await else {
                return;
            };
            let (tcp, remote) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = tx.closed() => return,
            };
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                let _permit = permit;
                let _ = tcp.set_nodelay(true);
                match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let peer_id = peer_spiffe_id(tls.get_ref().1);
                        let info = CallerConnection { remote, peer_id };
                        let _ = tx.send(Ok(ServerTlsStream { inner: tls, info })).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%remote, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%remote, "TLS handshake timed out"),
                }
            });
        }
    });
    rx
}
