//! Loopback servers the workloads talk to: an echo sink and a discard sink on 127.0.0.1, and
//! the same two behind a plain user-space relay (the floor for a terminating tunnel).

use std::net::SocketAddr;
use std::sync::Arc;

use fipstun_transport::policy::Policy;
use fipstun_transport::{Forwarder, ForwarderConfig, PlainTcp, Target, TcpAcceptor};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// Loopback servers the workloads talk to through a tunnel.
#[derive(Debug)]
pub struct Sinks {
    /// Echoes every byte.
    pub echo: SocketAddr,
    /// Reads to EOF and answers one byte (an acknowledgement, so a bulk run ends when the far
    /// end has everything).
    pub discard: SocketAddr,
    tasks: JoinSet<()>,
}

impl Sinks {
    /// Start both servers on 127.0.0.1.
    pub async fn start() -> std::io::Result<Self> {
        let mut tasks = JoinSet::new();
        let echo = serve(&mut tasks, |mut s: TcpStream| async move {
            let (mut r, mut w) = s.split();
            let _ = tokio::io::copy(&mut r, &mut w).await;
        })
        .await?;
        let discard = serve(&mut tasks, |mut s: TcpStream| async move {
            let mut buf = vec![0u8; 256 * 1024];
            while let Ok(n) = s.read(&mut buf).await {
                if n == 0 {
                    let _ = s.write_all(b"k").await;
                    let _ = s.shutdown().await;
                    return;
                }
            }
        })
        .await?;
        Ok(Self {
            echo,
            discard,
            tasks,
        })
    }

    /// Sinks served by another process (`fipstun scorecard sink`), known by their addresses;
    /// nothing runs here.
    pub fn elsewhere(echo: SocketAddr, discard: SocketAddr) -> Self {
        Self {
            echo,
            discard,
            tasks: JoinSet::new(),
        }
    }

    /// The same two servers reached through a plain TCP relay on 127.0.0.1: each accepted
    /// connection is dialled on to the real sink and copied both ways in user space (tokio's
    /// bidirectional copy, 256 KiB buffers), with no crypto and no framing.
    ///
    /// This is the floor for every tunnel that terminates TCP in a user-space process, as the
    /// HBONE server does: two loopback hops and a read/write per chunk in between. Benchmarks
    /// put HBONE beside it to separate what the relay hop costs from what mTLS and HTTP/2 add.
    pub async fn through_relay(&self) -> std::io::Result<Self> {
        let mut tasks = JoinSet::new();
        let echo = relay(&mut tasks, self.echo).await?;
        let discard = relay(&mut tasks, self.discard).await?;
        Ok(Self {
            echo,
            discard,
            tasks,
        })
    }
}

/// A relay on 127.0.0.1 to `to`: the one forwarder over a local TCP listener, allowed to reach
/// exactly `to` (the path the binary's plain listeners run).
async fn relay(tasks: &mut JoinSet<()>, to: SocketAddr) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let forwarder = Forwarder::new(
        PlainTcp,
        Policy::only_to([to]),
        ForwarderConfig::default().with_copy_buffer_bytes(RELAY_BUFFER_BYTES),
    );
    let acceptor = TcpAcceptor::new(listener, Target::new(to));
    tasks.spawn(async move {
        let _ = forwarder.run(acceptor).await;
    });
    Ok(addr)
}

/// Copy buffer per direction of the plain relay, as large as the discard sink's read buffer.
const RELAY_BUFFER_BYTES: usize = 256 * 1024;

impl Drop for Sinks {
    fn drop(&mut self) {
        self.tasks.abort_all();
    }
}

async fn serve<F, Fut>(tasks: &mut JoinSet<()>, f: F) -> std::io::Result<SocketAddr>
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let f = Arc::new(f);
    tasks.spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let _ = s.set_nodelay(true);
            tokio::spawn(f(s));
        }
    });
    Ok(addr)
}
