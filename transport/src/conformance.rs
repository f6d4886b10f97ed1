//! The shared conformance suite: the same checks, written once against [`Transport`], that every
//! backend must pass. A backend's test builds its client transport and its inbound side — the
//! one [`crate::Forwarder`] over the backend's acceptor, with [`Upstreams::policy`] — routed
//! to the [`Upstreams`] this module starts on 127.0.0.1, then calls [`run_forwarded`] (or the
//! checks one by one).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::digest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use crate::policy::Policy;
use crate::{Target, Transport};

/// Test servers on 127.0.0.1 that tunnelled streams are sent to.
#[derive(Debug)]
pub struct Upstreams {
    /// Echoes every byte; half-closes after the client half-closes.
    pub echo: SocketAddr,
    /// Reads to EOF, then answers with the SHA-256 of everything it read (32 bytes), then
    /// writes `reply_len` bytes of pattern from its first 8 bytes (u64, big-endian) and closes.
    pub hasher: SocketAddr,
    /// Writes a greeting and closes at once, without reading.
    pub closer: SocketAddr,
    /// A loopback address nothing listens on.
    pub unreachable: SocketAddr,
    /// An echo server that [`Upstreams::policy`] does not allow: a stream to it must be
    /// refused by policy, never echoed.
    pub forbidden: SocketAddr,
    tasks: JoinSet<()>,
}

/// What [`Upstreams::closer`] writes before closing.
pub const GREETING: &[u8] = b"hello from upstream, goodbye\n";

impl Upstreams {
    /// Start the servers.
    pub async fn start() -> std::io::Result<Self> {
        let mut tasks = JoinSet::new();
        let echo = spawn_server(&mut tasks, |mut s| async move {
            let (mut r, mut w) = s.split();
            let _ = tokio::io::copy(&mut r, &mut w).await;
            let _ = w.shutdown().await;
        })
        .await?;
        let hasher = spawn_server(&mut tasks, |mut s| async move {
            let mut ctx = digest::Context::new(&digest::SHA256);
            let mut buf = vec![0u8; 256 * 1024];
            let mut head = Vec::with_capacity(8);
            loop {
                match s.read(&mut buf).await {
                    Ok(0) => break,
                    Ok(n) => {
                        if head.len() < 8 {
                            let take = (8 - head.len()).min(n);
                            head.extend_from_slice(&buf[..take]);
                        }
                        ctx.update(&buf[..n]);
                    }
                    Err(_) => return,
                }
            }
            if s.write_all(ctx.finish().as_ref()).await.is_err() {
                return;
            }
            let reply_len = head.try_into().map(u64::from_be_bytes).unwrap_or(0);
            let _ = write_pattern(&mut s, reply_len).await;
            let _ = s.shutdown().await;
        })
        .await?;
        let closer = spawn_server(&mut tasks, |mut s| async move {
            let _ = s.write_all(GREETING).await;
            let _ = s.shutdown().await;
        })
        .await?;
        let forbidden = spawn_server(&mut tasks, |mut s| async move {
            let (mut r, mut w) = s.split();
            let _ = tokio::io::copy(&mut r, &mut w).await;
        })
        .await?;
        // Bind and drop: the port is free and nothing answers on it.
        let unreachable = TcpListener::bind("127.0.0.1:0").await?.local_addr()?;
        Ok(Self {
            echo,
            hasher,
            closer,
            unreachable,
            forbidden,
            tasks,
        })
    }

    /// Every target the suite uses (for backends that need routes configured).
    pub fn targets(&self) -> [SocketAddr; 5] {
        [
            self.echo,
            self.hasher,
            self.closer,
            self.unreachable,
            self.forbidden,
        ]
    }

    /// The policy the far side's [`crate::Forwarder`] runs: any peer may reach exactly the
    /// echo, hasher, closer and unreachable targets (each named by address and port, as a
    /// loopback target must be), and nothing else — [`Upstreams::forbidden`] included.
    pub fn policy(&self) -> Policy {
        Policy::only_to([self.echo, self.hasher, self.closer, self.unreachable])
    }
}

impl Drop for Upstreams {
    fn drop(&mut self) {
        self.tasks.abort_all();
    }
}

async fn spawn_server<F, Fut>(tasks: &mut JoinSet<()>, serve: F) -> std::io::Result<SocketAddr>
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let serve = Arc::new(serve);
    tasks.spawn(async move {
        let mut conns = JoinSet::new();
        while let Ok((s, _)) = listener.accept().await {
            let serve = serve.clone();
            conns.spawn(async move { serve(s).await });
        }
    });
    Ok(addr)
}

/// The byte at offset `i` of the pattern seeded by `seed`.
fn pattern_byte(seed: u64, i: u64) -> u8 {
    let x = (i ^ seed).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (x >> 56) as u8
}

fn fill_pattern(seed: u64, offset: u64, buf: &mut [u8]) {
    for (k, b) in buf.iter_mut().enumerate() {
        *b = pattern_byte(seed, offset + k as u64);
    }
}

async fn write_pattern<W: AsyncWriteExt + Unpin>(w: &mut W, len: u64) -> std::io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut sent = 0u64;
    while sent < len {
        let n = (len - sent).min(buf.len() as u64) as usize;
        fill_pattern(0, sent, &mut buf[..n]);
        w.write_all(&buf[..n]).await?;
        sent += n as u64;
    }
    Ok(())
}

/// Echo: what goes in comes back, in order, on several round trips.
pub async fn echo<T: Transport>(t: &T, u: &Upstreams) -> Result<(), String> {
    let mut s = t
        .connect(&Target::new(u.echo))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    for round in 0..8u64 {
        let len = 1 << (round * 2); // 1 B .. 16 KiB
        let mut msg = vec![0u8; len];
        fill_pattern(round, 0, &mut msg);
        s.write_all(&msg).await.map_err(|e| format!("write: {e}"))?;
        let mut back = vec![0u8; len];
        s.read_exact(&mut back)
            .await
            .map_err(|e| format!("read round {round}: {e}"))?;
        if back != msg {
            return Err(format!("echo round {round} returned different bytes"));
        }
    }
    Ok(())
}

/// Half-close: after we shut down our write side, the far end still answers, and then EOF.
pub async fn half_close<T: Transport>(t: &T, u: &Upstreams) -> Result<(), String> {
    let mut s = t
        .connect(&Target::new(u.hasher))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let reply_len: u64 = 100_000;
    let mut msg = reply_len.to_be_bytes().to_vec();
    msg.extend_from_slice(b"and some more bytes after the length");
    s.write_all(&msg).await.map_err(|e| format!("write: {e}"))?;
    s.shutdown().await.map_err(|e| format!("shutdown: {e}"))?;
    let mut reply = Vec::new();
    s.read_to_end(&mut reply)
        .await
        .map_err(|e| format!("read after half-close: {e}"))?;
    let want_hash = digest::digest(&digest::SHA256, &msg);
    if reply.len() != 32 + reply_len as usize {
        return Err(format!(
            "expected {} bytes after half-close, got {}",
            32 + reply_len,
            reply.len()
        ));
    }
    if &reply[..32] != want_hash.as_ref() {
        return Err("upstream saw different bytes".into());
    }
    let mut want = vec![0u8; reply_len as usize];
    fill_pattern(0, 0, &mut want);
    if reply[32..] != want[..] {
        return Err("reply after half-close was corrupted".into());
    }
    Ok(())
}

/// Bulk: `bytes` of pattern to the hasher; the SHA-256 it returns must match ours.
pub async fn bulk_sha256<T: Transport>(t: &T, u: &Upstreams, bytes: u64) -> Result<(), String> {
    let mut s = t
        .connect(&Target::new(u.hasher))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let mut ctx = digest::Context::new(&digest::SHA256);
    let mut buf = vec![0u8; 256 * 1024];
    let mut sent = 0u64;
    while sent < bytes {
        let n = (bytes - sent).min(buf.len() as u64) as usize;
        fill_pattern(7, sent, &mut buf[..n]);
        if sent == 0 && n >= 8 {
            buf[..8].copy_from_slice(&0u64.to_be_bytes()); // no reply payload
        }
        ctx.update(&buf[..n]);
        s.write_all(&buf[..n])
            .await
            .map_err(|e| format!("write at {sent}: {e}"))?;
        sent += n as u64;
    }
    s.shutdown().await.map_err(|e| format!("shutdown: {e}"))?;
    let mut hash = Vec::new();
    s.read_to_end(&mut hash)
        .await
        .map_err(|e| format!("read hash: {e}"))?;
    if hash != ctx.finish().as_ref() {
        return Err(format!("SHA-256 differs after {bytes} bytes"));
    }
    Ok(())
}

/// `n` streams at once, each echoing its own bytes.
pub async fn concurrent_streams<T: Transport>(
    t: Arc<T>,
    u: &Upstreams,
    n: usize,
) -> Result<(), String> {
    let mut set = JoinSet::new();
    for i in 0..n {
        let t = t.clone();
        let target = Target::new(u.echo);
        set.spawn(async move {
            let mut s = t
                .connect(&target)
                .await
                .map_err(|e| format!("stream {i} connect: {e}"))?;
            let mut msg = vec![0u8; 4096];
            fill_pattern(i as u64, 0, &mut msg);
            s.write_all(&msg)
                .await
                .map_err(|e| format!("stream {i} write: {e}"))?;
            s.shutdown()
                .await
                .map_err(|e| format!("stream {i} shutdown: {e}"))?;
            let mut back = Vec::new();
            s.read_to_end(&mut back)
                .await
                .map_err(|e| format!("stream {i} read: {e}"))?;
            if back != msg {
                return Err(format!("stream {i} got another stream's bytes"));
            }
            Ok::<(), String>(())
        });
    }
    while let Some(r) = set.join_next().await {
        r.map_err(|e| format!("task: {e}"))??;
    }
    Ok(())
}

/// Peer close: the upstream writes and closes; we read it all, then EOF.
pub async fn peer_close<T: Transport>(t: &T, u: &Upstreams) -> Result<(), String> {
    let mut s = t
        .connect(&Target::new(u.closer))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got))
        .await
        .map_err(|_| "no EOF after the upstream closed".to_string())?
        .map_err(|e| format!("read: {e}"))?;
    if got != GREETING {
        return Err(format!("expected the greeting, got {} bytes", got.len()));
    }
    Ok(())
}

/// Unknown target: a loopback port nobody listens on. The connect fails, or the stream ends
/// without a single byte; it must not hang or pretend to work.
pub async fn unknown_target<T: Transport>(t: &T, u: &Upstreams) -> Result<(), String> {
    nothing_comes_back(t, u.unreachable)
        .await
        .map_err(|e| format!("a target that does not exist: {e}"))
}

/// Policy: a stream to [`Upstreams::forbidden`] (listening, but outside
/// [`Upstreams::policy`]) is refused — the connect fails, or the stream ends at once — and
/// never reaches the server.
pub async fn policy_refusal<T: Transport>(t: &T, u: &Upstreams) -> Result<(), String> {
    nothing_comes_back(t, u.forbidden)
        .await
        .map_err(|e| format!("a target the policy forbids: {e}"))
}

/// A stream to `target` must not work: the connect fails, or the stream ends (EOF or an
/// error) without a single byte coming back, within 20 s.
pub async fn nothing_comes_back<T: Transport>(t: &T, target: SocketAddr) -> Result<(), String> {
    let attempt = async {
        match t.connect(&Target::new(target)).await {
            Err(_) => Ok(()),
            Ok(mut s) => {
                let _ = s.write_all(b"anyone?").await;
                let mut buf = [0u8; 16];
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => Ok(()),
                    Ok(n) => Err(format!("{n} bytes came back")),
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), attempt)
        .await
        .map_err(|_| "the stream hung".to_string())?
}

/// [`run_all`] plus [`policy_refusal`]: for a backend whose far side runs the
/// [`crate::Forwarder`] with [`Upstreams::policy`].
pub async fn run_forwarded<T: Transport>(t: Arc<T>, u: &Upstreams) -> Result<(), String> {
    policy_refusal(&*t, u)
        .await
        .map_err(|e| format!("policy_refusal: {e}"))?;
    run_all(t, u).await
}

/// Every check, with the sizes the issue names: 256 MiB bulk, 100 concurrent streams.
pub async fn run_all<T: Transport>(t: Arc<T>, u: &Upstreams) -> Result<(), String> {
    echo(&*t, u).await.map_err(|e| format!("echo: {e}"))?;
    half_close(&*t, u)
        .await
        .map_err(|e| format!("half_close: {e}"))?;
    peer_close(&*t, u)
        .await
        .map_err(|e| format!("peer_close: {e}"))?;
    unknown_target(&*t, u)
        .await
        .map_err(|e| format!("unknown_target: {e}"))?;
    concurrent_streams(t.clone(), u, 100)
        .await
        .map_err(|e| format!("concurrent_streams: {e}"))?;
    bulk_sha256(&*t, u, 256 << 20)
        .await
        .map_err(|e| format!("bulk_sha256: {e}"))?;
    Ok(())
}
