//! Shared set-up for the HBONE integration tests: an embedded CA, identities, servers and
//! upstream services, all on 127.0.0.1.
#![allow(dead_code, unreachable_pub)]

pub mod json;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use aws_lc_rs::digest;
use fipstun_hbone::{ClientConfig, Handler, HboneClient, HboneServer, ServerConfig, TlsIdentity};
use fipstun_identity::bundle::{BundleSet, TrustStore};
use fipstun_identity::ca::{IssuerConfig, SvidIssuer};
use fipstun_identity::keys::KeyAlgorithm;
use fipstun_identity::policy::CryptoPolicy;
use fipstun_identity::spiffe::{SpiffeId, TrustDomain};
use fipstun_identity::svid::Svid;
use fipstun_identity::tls::{Authorizer, SvidSlot};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

pub const SERVER_ID: &str = "spiffe://example.org/ns/istio-system/sa/ztunnel";
pub const CLIENT_ID: &str = "spiffe://example.org/ns/prod/sa/web";

pub struct Pki {
    pub td: TrustDomain,
    pub ca: SvidIssuer,
    pub trust: TrustStore,
}

impl Pki {
    pub fn new() -> Self {
        let td = TrustDomain::new("example.org").unwrap();
        let ca = SvidIssuer::generate_root(
            td.clone(),
            KeyAlgorithm::EcdsaP256,
            Duration::from_secs(24 * 3600),
            IssuerConfig::default(),
        )
        .unwrap();
        let trust = TrustStore::new(BundleSet::new().with(ca.bundle().clone()));
        Self { td, ca, trust }
    }

    pub fn svid(&self, id: &SpiffeId) -> Svid {
        self.ca.issue(id, KeyAlgorithm::EcdsaP256, None).unwrap()
    }

    pub fn identity(&self, id: &SpiffeId) -> TlsIdentity {
        let slot = Arc::new(SvidSlot::new());
        slot.set(&self.svid(id)).unwrap();
        TlsIdentity::new(CryptoPolicy::default(), self.trust.clone(), slot)
    }

    pub fn client(&self, config: ClientConfig) -> HboneClient {
        HboneClient::new(self.identity(&client_id()), config).unwrap()
    }
}

pub fn server_id() -> SpiffeId {
    SpiffeId::parse(SERVER_ID).unwrap()
}

pub fn client_id() -> SpiffeId {
    SpiffeId::parse(CLIENT_ID).unwrap()
}

pub struct RunningServer {
    pub server: HboneServer,
    pub addr: SocketAddr,
    pub task: JoinHandle<()>,
}

/// An HBONE server for `SERVER_ID` admitting any client of the trust domain at the TLS layer.
pub async fn start_server(pki: &Pki, config: ServerConfig, handler: impl Handler) -> RunningServer {
    let server = HboneServer::new(
        &pki.identity(&server_id()),
        Authorizer::trust_domains([pki.td.clone()]),
        config,
        handler,
    )
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn({
        let server = server.clone();
        async move {
            server.serve(listener).await;
        }
    });
    RunningServer { server, addr, task }
}

/// An upstream that echoes every connection until EOF, then closes its side. Counts accepts.
pub async fn echo_upstream() -> (SocketAddr, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    (addr, accepted)
}

/// A TCP port on 127.0.0.1 that nothing listens on.
pub async fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    addr
}

/// Deterministic test data for `buf` at stream position `offset`: a fixed pseudo-random
/// block with the position stamped into every 4 KiB, so that no two chunks are equal and a
/// reordered, duplicated or dropped chunk changes the hash. Cheap even in debug builds.
pub fn fill(buf: &mut [u8], offset: u64) {
    static BLOCK: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let block = BLOCK.get_or_init(|| {
        let mut b = vec![0u8; 1 << 20];
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for chunk in b.chunks_mut(8) {
            // xorshift64
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
        }
        b
    });
    let mut done = 0usize;
    while done < buf.len() {
        let pos = offset + done as u64;
        let start = (pos % block.len() as u64) as usize;
        let n = (block.len() - start).min(buf.len() - done);
        buf[done..done + n].copy_from_slice(&block[start..start + n]);
        done += n;
    }
    // Stamp the absolute position at each 4 KiB boundary (also the part of a stamp that
    // straddles the start or end of `buf`).
    let end = offset + buf.len() as u64;
    let mut p = offset.saturating_sub(7) / 4096 * 4096;
    while p < end {
        let stamp = p.to_le_bytes();
        for (k, byte) in stamp.iter().enumerate() {
            let at = p + k as u64;
            if at >= offset && at < end {
                buf[(at - offset) as usize] = *byte;
            }
        }
        p += 4096;
    }
}

/// Write `total` bytes of [`fill`] data to `w`, returning their SHA-256.
pub async fn send_pattern<W: AsyncWriteExt + Unpin>(w: &mut W, total: u64) -> Vec<u8> {
    const CHUNK: usize = 256 * 1024;
    let mut buf = vec![0u8; CHUNK];
    let mut ctx = digest::Context::new(&digest::SHA256);
    let mut sent = 0u64;
    while sent < total {
        let n = CHUNK.min((total - sent) as usize);
        fill(&mut buf[..n], sent);
        ctx.update(&buf[..n]);
        w.write_all(&buf[..n]).await.unwrap();
        sent += n as u64;
    }
    ctx.finish().as_ref().to_vec()
}

/// Read `r` to EOF, returning (bytes, SHA-256).
pub async fn hash_to_eof<R: AsyncReadExt + Unpin>(r: &mut R) -> (u64, Vec<u8>) {
    let mut buf = vec![0u8; 256 * 1024];
    let mut ctx = digest::Context::new(&digest::SHA256);
    let mut total = 0u64;
    loop {
        let n = r.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
        total += n as u64;
    }
    (total, ctx.finish().as_ref().to_vec())
}

pub async fn echo_once(stream: &mut (impl AsyncReadExt + AsyncWriteExt + Unpin), msg: &[u8]) {
    stream.write_all(msg).await.unwrap();
    let mut back = vec![0u8; msg.len()];
    stream.read_exact(&mut back).await.unwrap();
    assert_eq!(back, msg);
}

pub async fn tcp(addr: SocketAddr) -> TcpStream {
    TcpStream::connect(addr).await.unwrap()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyState {
    Forward,
    /// Stop forwarding but keep the sockets open (a hung peer).
    Freeze,
    /// Drop every socket (a dead peer).
    Kill,
}

/// A TCP relay on 127.0.0.1 in front of `to`, to simulate hung or dead peers.
pub struct Proxy {
    pub addr: SocketAddr,
    state: tokio::sync::watch::Sender<ProxyState>,
}

impl Proxy {
    pub async fn start(to: SocketAddr) -> Self {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (state, _) = tokio::sync::watch::channel(ProxyState::Forward);
        let st = state.clone();
        tokio::spawn(async move {
            loop {
                let mut rx = st.subscribe();
                let accepted = tokio::select! {
                    a = l.accept() => a,
                    _ = rx.wait_for(|s| *s == ProxyState::Kill) => return,
                };
                let Ok((a, _)) = accepted else { return };
                let Ok(b) = TcpStream::connect(to).await else {
                    continue;
                };
                let (ar, aw) = a.into_split();
                let (br, bw) = b.into_split();
                tokio::spawn(relay(ar, bw, st.subscribe()));
                tokio::spawn(relay(br, aw, st.subscribe()));
            }
        });
        Self { addr, state }
    }

    pub fn set(&self, s: ProxyState) {
        self.state.send_replace(s);
    }
}

async fn relay(
    mut r: tokio::net::tcp::OwnedReadHalf,
    mut w: tokio::net::tcp::OwnedWriteHalf,
    mut state: tokio::sync::watch::Receiver<ProxyState>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let st = *state.borrow_and_update();
        match st {
            ProxyState::Kill => return,
            ProxyState::Freeze => {
                let _ = state.wait_for(|s| *s == ProxyState::Kill).await;
                return;
            }
            ProxyState::Forward => {}
        }
        tokio::select! {
            n = r.read(&mut buf) => match n {
                Ok(0) | Err(_) => { let _ = w.shutdown().await; return; }
                Ok(n) => if w.write_all(&buf[..n]).await.is_err() { return },
            },
            _ = state.changed() => {}
        }
    }
}

/// Wait until `cond` holds (checked every 20 ms), failing with `what` after 10 s.
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A raw mTLS connection to an HBONE server as `CLIENT_ID`, ALPN h2, for tests that speak
/// HTTP/2 themselves (`h2` directly, or hand-made frames) instead of through `HboneClient`.
pub async fn raw_tls(pki: &Pki, tcp: TcpStream) -> tokio_rustls::client::TlsStream<TcpStream> {
    let addr = tcp.peer_addr().unwrap();
    let id = pki.identity(&client_id());
    let mut cfg = fipstun_identity::tls::client_config(
        &CryptoPolicy::default(),
        id.trust.clone(),
        Authorizer::ids([server_id()]),
        id.svid.clone(),
    )
    .unwrap();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(
            rustls_pki_types::ServerName::IpAddress(addr.ip().into()),
            tcp,
        )
        .await
        .unwrap()
}

/// An HTTP/2 client (the `h2` crate) on [`raw_tls`], its connection driven by a task; abort
/// the task to drop the socket.
pub async fn raw_h2(
    pki: &Pki,
    tcp: TcpStream,
) -> (h2::client::SendRequest<bytes::Bytes>, JoinHandle<()>) {
    let tls = raw_tls(pki, tcp).await;
    let (send, conn) = h2::client::handshake(tls).await.unwrap();
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    (send, driver)
}

/// A delivery-mode server for `SERVER_ID` (any client of the trust domain at the TLS layer):
/// allowed CONNECTs arrive on the returned `Incoming`.
pub async fn delivery_server(
    pki: &Pki,
    handler: impl Handler,
    queue: usize,
) -> (HboneServer, SocketAddr, fipstun_hbone::Incoming) {
    let id = pki.identity(&server_id());
    let tls = fipstun_identity::tls::server_config(
        &id.policy,
        id.trust.clone(),
        Authorizer::trust_domains([pki.td.clone()]),
        id.svid.clone(),
    )
    .unwrap();
    let (server, incoming) =
        HboneServer::with_delivery_from_rustls(tls, ServerConfig::default(), handler, queue)
            .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn({
        let server = server.clone();
        async move { server.serve(listener).await }
    });
    (server, addr, incoming)
}
