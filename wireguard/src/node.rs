//! The node: one UDP socket, the peers' protocol engines, the userspace TCP/IP stack, and the
//! tokio task that drives them. [`WgNode`] is the outbound side, [`WgListener`] the inbound one.

use std::collections::{HashMap, HashSet};
use std::future::poll_fn;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;
use std::time::Duration;

use fipstun_identity::spiffe::SpiffeId;
use fipstun_transport::{
    Acceptor, Inbound, PeerIdentity, PendingInbound, Refusal, SecurityInfo, Target, Transport,
    TransportError, TunnelListener,
};
use gotatun::noise::errors::WireGuardError;
use gotatun::noise::handshake::parse_handshake_anon;
use gotatun::noise::index_table::IndexTable;
use gotatun::noise::rate_limiter::RateLimiter;
use gotatun::noise::{TimerParams, Tunn, TunnResult};
use gotatun::packet::{Packet, PacketBufPool, WgKind};
use gotatun::tun::MtuWatcher;
use smoltcp::iface::{Config as IfaceConfig, Interface, SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::wire::{
    HardwareAddress, IpAddress, IpCidr, IpEndpoint, IpListenEndpoint, Ipv4Packet, Ipv6Packet,
};
use tokio::sync::{Notify, mpsc};

use crate::config::{AllowedIps, WgConfig, WgPublicKey};
use crate::device::TunnelDevice;
use crate::error::WgError;
use crate::flows::{Sent, SentFlows, TcpSegment};
use crate::stream::WgStream;
use crate::udp::{SocketBuffers, UdpIo};

/// Backend name in [`SecurityInfo`].
pub const BACKEND: &str = "wireguard";
/// The Noise protocol name WireGuard uses (whitepaper §5).
pub const NOISE_PROTOCOL: &str = "Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s";
/// The data-packet AEAD.
pub const CIPHER: &str = "ChaCha20-Poly1305";

/// What protects the WireGuard backend's bytes: never FIPS-approved.
pub fn security_info() -> SecurityInfo {
    SecurityInfo {
        backend: BACKEND,
        protocol: NOISE_PROTOCOL.into(),
        cipher: CIPHER.into(),
        fips: false,
    }
}

/// How often the protocol timers (rekey, keepalive, handshake retry) are evaluated, as in
/// gotatun's and wireguard-go's devices.
const TIMER_TICK: Duration = Duration::from_millis(250);
/// Packet buffers the pool keeps (4 KiB each, allocated up front and kept when returned):
/// enough for a round of request/response traffic; a bulk burst beyond it allocates and the
/// surplus is freed when returned, so an idle node holds 2 MiB here, not the 16 MiB of 4096.
const POOL_PACKETS: usize = 512;
/// At most this many recvmmsg calls per driver round, so ACKs and window updates go out.
const RECV_CALLS_PER_ROUND: usize = 8;
/// No further recvmmsg call in a round once this many datagrams are in (one call returns
/// up to 32 GRO trains, so a round may end a call past it). Unbounded, a receiver behind
/// 1 MiB windows took thousands of datagrams per round, each a pooled buffer, and held them
/// all before the stack saw the first: the node's RSS grew with the bytes in flight.
const RX_DATAGRAMS_PER_ROUND: usize = crate::device::TX_PACKETS_PER_ROUND;
/// Ephemeral ports for the streams we open.
const EPHEMERAL_PORTS: std::ops::RangeInclusive<u16> = 49152..=65535;
/// A listening socket made for a SYN that another socket took is dropped after this.
const IDLE_LISTENER: Duration = Duration::from_secs(10);
/// A stream the application dropped gets this long to finish its FIN exchange.
const LINGER: Duration = Duration::from_secs(30);
/// Inbound sockets not yet accepted (listening or mid-handshake), at most: an authenticated
/// peer's SYN flood costs bounded memory. Further SYNs are answered with RST by the stack.
const MAX_PENDING_INBOUND: usize = 1024;

/// Counters a node keeps; read them with [`WgNode::stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WgStats {
    /// UDP datagrams received.
    pub rx_datagrams: u64,
    /// recvmmsg calls that returned data.
    pub rx_recv_calls: u64,
    /// UDP datagrams sent.
    pub tx_datagrams: u64,
    /// send calls (a GSO send carries many datagrams).
    pub tx_send_calls: u64,
    /// Data packets decrypted and accepted (keepalives included).
    pub rx_data_packets: u64,
    /// Data packets dropped because their counter was already seen or too old (replays).
    pub rx_replayed: u64,
    /// Datagrams dropped for any other reason (bad MAC or tag, unknown index, wrong source IP).
    pub rx_dropped: u64,
    /// Handshake initiations sent (first attempts, retries and rekeys).
    pub handshakes_initiated: u64,
    /// Sessions established, as initiator or responder.
    pub sessions_established: u64,
    /// Cookie replies sent because a source was over the handshake rate limit.
    pub cookie_replies_sent: u64,
    /// Cookie replies received.
    pub cookie_replies_received: u64,
    /// Rounds of the node's driver loop (an idle node runs about four a second).
    pub driver_rounds: u64,
    /// TCP segments our stack sent again (their sequence range was sent before): every
    /// retransmission, fast or after a timeout.
    pub tcp_retransmitted_segments: u64,
    /// Retransmissions that followed a silence of the flow of at least
    /// [`WgStats::RTO_SILENCE`]: the stack waited for its retransmission timer, a stall.
    pub tcp_retransmit_timeouts: u64,
    /// The silences those timeouts ended, summed: how long bulk stood still waiting for the
    /// retransmission timer.
    pub tcp_retransmit_stalled: Duration,
    /// ACKs from peers advertising a zero receive window (our sends had to stop).
    pub tcp_zero_window_acks: u64,
    /// The most datagrams one driver round has sent: the largest burst the node put on the
    /// wire at once. Rounds are bounded (256 packets from the stack, plus its answers to at
    /// most one receive batch past 256 datagrams, plus timers), so this stays in the low
    /// thousands whatever the windows.
    pub largest_send_round: u64,
}

impl WgStats {
    /// A retransmission after this long without sending on the flow counts as a
    /// retransmission timeout in [`WgStats::tcp_retransmit_timeouts`]; fast retransmits and
    /// recovery go out within a round trip.
    pub const RTO_SILENCE: Duration = Duration::from_millis(150);
}

#[derive(Default)]
struct Counters {
    rx_datagrams: AtomicU64,
    rx_recv_calls: AtomicU64,
    tx_datagrams: AtomicU64,
    tx_send_calls: AtomicU64,
    rx_data_packets: AtomicU64,
    rx_replayed: AtomicU64,
    rx_dropped: AtomicU64,
    handshakes_initiated: AtomicU64,
    sessions_established: AtomicU64,
    cookie_replies_sent: AtomicU64,
    cookie_replies_received: AtomicU64,
    driver_rounds: AtomicU64,
    tcp_retransmitted_segments: AtomicU64,
    tcp_retransmit_timeouts: AtomicU64,
    tcp_retransmit_stalled_micros: AtomicU64,
    tcp_zero_window_acks: AtomicU64,
    largest_send_round: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

struct PeerState {
    tunn: Tunn,
    endpoint: Option<SocketAddr>,
    public_key: WgPublicKey,
    spiffe: Option<SpiffeId>,
}

enum ConnKind {
    /// We opened it from `port`; `connect` is waiting or a [`WgStream`] owns it.
    Outbound { port: u16 },
    /// Made for an inbound SYN; `reported` once handed to the listener.
    Inbound { reported: bool },
}

struct Conn {
    kind: ConnKind,
    created: std::time::Instant,
    /// Set when the application dropped its stream.
    dropped: Option<std::time::Instant>,
}

pub(crate) struct Core {
    iface: Interface,
    sockets: SocketSet<'static>,
    device: TunnelDevice,
    peers: Vec<PeerState>,
    routes: AllowedIps,
    by_index: HashMap<u32, usize>,
    index_table: IndexTable,
    rate_limiter: Arc<RateLimiter>,
    private: gotatun::x25519::StaticSecret,
    public: gotatun::x25519::PublicKey,
    conns: HashMap<SocketHandle, Conn>,
    used_ports: HashSet<u16>,
    next_port: u16,
    inbound: Option<mpsc::Sender<Inbound<WgStream>>>,
    mtu: MtuWatcher,
    to_send: Vec<(SocketAddr, Packet)>,
    started: std::time::Instant,
    next_timer_tick: Duration,
    tcp_buffer_bytes: usize,
    /// Inbound sockets not yet handed to the listener (listening or mid-handshake).
    pending_inbound: usize,
    /// A stream was dropped or a timer ran: look for sockets to forget.
    housekeeping_due: bool,
    /// Our TCP segments seen on the way out, to count retransmissions.
    sent_flows: SentFlows,
}

pub(crate) struct Shared {
    core: Mutex<Core>,
    pub(crate) wake_driver: Notify,
    closed: AtomicBool,
    counters: Counters,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Core> {
        // A panic while holding the lock leaves smoltcp state usable; keep going.
        self.core.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

impl Core {
    pub(crate) fn socket(&mut self, h: SocketHandle) -> &mut tcp::Socket<'static> {
        self.sockets.get_mut::<tcp::Socket<'static>>(h)
    }

    pub(crate) fn stream_dropped(&mut self, h: SocketHandle) {
        self.housekeeping_due = true;
        if let Some(c) = self.conns.get_mut(&h) {
            c.dropped = Some(std::time::Instant::now());
        }
        let s = self.socket(h);
        // As the kernel does: closing with unread data resets the connection, so the far
        // end learns its bytes were not consumed; otherwise a graceful FIN.
        if s.recv_queue() > 0 {
            s.abort();
        } else {
            s.close();
        }
    }

    pub(crate) fn endpoints(
        &mut self,
        h: SocketHandle,
    ) -> (Option<SocketAddr>, Option<SocketAddr>) {
        let s = self.socket(h);
        let conv = |e: IpEndpoint| SocketAddr::new(ip_of(e.addr), e.port);
        (s.local_endpoint().map(conv), s.remote_endpoint().map(conv))
    }

    fn now(&self) -> smoltcp::time::Instant {
        smoltcp::time::Instant::from_micros(self.started.elapsed().as_micros() as i64)
    }

    fn new_socket(&self) -> tcp::Socket<'static> {
        let rx = tcp::SocketBuffer::new(vec![0u8; self.tcp_buffer_bytes]);
        let tx = tcp::SocketBuffer::new(vec![0u8; self.tcp_buffer_bytes]);
        let mut s = tcp::Socket::new(rx, tx);
        s.set_nagle_enabled(false);
        // Without congestion control smoltcp answers every loss with a full window burst; a
        // slow peer (wireguard-go drops at its socket buffer) then never catches up.
        s.set_congestion_control(tcp::CongestionControl::Cubic);
        s
    }

    fn local_ip_for(&self, remote: IpAddr) -> Option<IpAddress> {
        self.iface.ip_addrs().iter().map(|c| c.address()).find(|a| {
            matches!(
                (a, remote),
                (IpAddress::Ipv4(_), IpAddr::V4(_)) | (IpAddress::Ipv6(_), IpAddr::V6(_))
            )
        })
    }

    fn alloc_port(&mut self) -> Option<u16> {
        let span = usize::from(EPHEMERAL_PORTS.end() - EPHEMERAL_PORTS.start()) + 1;
        for _ in 0..span {
            let p = self.next_port;
            self.next_port = if p == *EPHEMERAL_PORTS.end() {
                *EPHEMERAL_PORTS.start()
            } else {
                p + 1
            };
            if self.used_ports.insert(p) {
                return Some(p);
            }
        }
        None
    }

    fn remove_conn(&mut self, h: SocketHandle) {
        match self.conns.remove(&h).map(|c| c.kind) {
            Some(ConnKind::Inbound { reported: false }) => self.pending_inbound -= 1,
            // The socket forgets its endpoints once closed; the port is ours to free.
            Some(ConnKind::Outbound { port }) => {
                self.used_ports.remove(&port);
            }
            _ => {}
        }
        self.sockets.remove(h);
    }

    /// Register the sender index of a handshake we send so replies find the peer.
    fn note_outgoing(&mut self, peer: usize, p: &WgKind, counters: &Counters) {
        match p {
            WgKind::HandshakeInit(h) => {
                bump(&counters.handshakes_initiated);
                self.by_index.insert(h.sender_idx.get(), peer);
            }
            WgKind::HandshakeResp(h) => {
                bump(&counters.sessions_established);
                self.by_index.insert(h.sender_idx.get(), peer);
            }
            _ => {}
        }
    }

    /// One received datagram through the rate limiter and the right peer's engine.
    fn ingest(&mut self, from: SocketAddr, datagram: Packet, counters: &Counters) {
        let wg = match self.rate_limiter.verify_packet(from, datagram) {
            Ok(wg) => wg,
            Err(TunnResult::WriteToNetwork(cookie)) => {
                bump(&counters.cookie_replies_sent);
                self.to_send.push((from, cookie.into()));
                return;
            }
            Err(_) => {
                bump(&counters.rx_dropped);
                return;
            }
        };
        let peer = match &wg {
            WgKind::HandshakeInit(p) => parse_handshake_anon(&self.private, &self.public, p)
                .ok()
                .and_then(|h| {
                    self.peers
                        .iter()
                        .position(|s| s.public_key.0 == h.peer_static_public)
                }),
            WgKind::HandshakeResp(p) => self.by_index.get(&p.receiver_idx.get()).copied(),
            WgKind::CookieReply(p) => {
                bump(&counters.cookie_replies_received);
                self.by_index.get(&p.receiver_idx.get()).copied()
            }
            WgKind::Data(p) => self.by_index.get(&p.header.receiver_idx.get()).copied(),
        };
        let Some(peer) = peer else {
            bump(&counters.rx_dropped);
            return;
        };
        let is_data = matches!(wg, WgKind::Data(_));
        let is_resp = matches!(wg, WgKind::HandshakeResp(_));
        match self.peers[peer].tunn.handle_incoming_packet(wg) {
            TunnResult::Done => {}
            TunnResult::Err(WireGuardError::DuplicateCounter | WireGuardError::InvalidCounter) => {
                bump(&counters.rx_replayed);
            }
            TunnResult::Err(e) => {
                tracing::trace!(peer, error = ?e, "dropped a packet");
                bump(&counters.rx_dropped);
            }
            TunnResult::WriteToNetwork(reply) => {
                if is_resp {
                    bump(&counters.sessions_established);
                }
                // Authenticated: the peer is at `from` now (roaming, as WireGuard does).
                self.peers[peer].endpoint = Some(from);
                self.note_outgoing(peer, &reply, counters);
                self.to_send.push((from, reply.into()));
                self.flush_queued(peer);
            }
            TunnResult::WriteToTunnel(inner) => {
                if is_data {
                    bump(&counters.rx_data_packets);
                }
                self.peers[peer].endpoint = Some(from);
                if inner.is_empty() {
                    return; // keepalive
                }
                let Ok(ip) = inner.try_into_ipvx() else {
                    bump(&counters.rx_dropped);
                    return;
                };
                let (src, inner): (IpAddr, Packet) = ip.either(
                    |v4| (v4.header.source().into(), v4.into()),
                    |v6| (v6.header.source().into(), v6.into()),
                );
                // Crypto-key routing: accept only sources that route back to this very peer.
                if self.routes.route(src) != Some(peer) {
                    tracing::debug!(peer, %src, "source address not allowed for this peer");
                    bump(&counters.rx_dropped);
                    return;
                }
                if let Some(seg) = TcpSegment::parse(&inner)
                    && seg.ack
                    && !seg.syn
                    && !seg.rst
                    && seg.window == 0
                {
                    bump(&counters.tcp_zero_window_acks);
                }
                self.device.rx.push_back(inner);
            }
        }
    }

    /// Packets the engine queued while it had no session go out once it has one.
    fn flush_queued(&mut self, peer: usize) {
        let Some(ep) = self.peers[peer].endpoint else {
            return;
        };
        let Core {
            peers,
            mtu,
            to_send,
            ..
        } = self;
        for p in peers[peer].tunn.get_queued_packets(mtu) {
            to_send.push((ep, p.into()));
        }
    }

    /// Make a listening socket for every inbound SYN no socket owns yet: the tunnel accepts
    /// connections to any destination, like a transparent proxy.
    fn listen_for_new_syns(&mut self) {
        if self.inbound.as_ref().is_none_or(|tx| tx.is_closed()) {
            return;
        }
        let mut wanted: Vec<(IpEndpoint, IpEndpoint)> = Vec::new();
        for p in &self.device.rx {
            if let Some((src, dst)) = parse_syn(p) {
                wanted.push((src, dst));
            }
        }
        wanted.sort_unstable_by_key(|(s, d)| (*d, *s));
        wanted.dedup();
        // SYNs that no connected socket owns, counted per destination.
        let mut need: HashMap<IpEndpoint, usize> = HashMap::new();
        for (src, dst) in wanted {
            let owned = self.conns.keys().any(|h| {
                let s = self.sockets.get::<tcp::Socket<'static>>(*h);
                s.state() != tcp::State::Listen
                    && s.remote_endpoint() == Some(src)
                    && s.local_endpoint() == Some(dst)
            });
            if !owned {
                *need.entry(dst).or_default() += 1;
            }
        }
        for (dst, n) in need {
            let listening = self
                .conns
                .keys()
                .filter(|h| {
                    let s = self.sockets.get::<tcp::Socket<'static>>(**h);
                    s.state() == tcp::State::Listen
                        && s.listen_endpoint() == IpListenEndpoint::from(dst)
                })
                .count();
            for _ in listening..n {
                if self.pending_inbound >= MAX_PENDING_INBOUND {
                    tracing::debug!(%dst, "too many pending inbound connections; refusing");
                    return;
                }
                self.pending_inbound += 1;
                let mut s = self.new_socket();
                if s.listen(IpListenEndpoint::from(dst)).is_err() {
                    break;
                }
                let h = self.sockets.add(s);
                self.conns.insert(
                    h,
                    Conn {
                        kind: ConnKind::Inbound { reported: false },
                        created: std::time::Instant::now(),
                        dropped: None,
                    },
                );
            }
        }
    }

    /// Encrypt what the TCP/IP stack sent and queue it for the peer that owns the destination.
    fn encapsulate_tx(&mut self, counters: &Counters) {
        // Taken and put back so the queue keeps its capacity from round to round.
        let mut out = std::mem::take(&mut self.device.tx);
        let now = std::time::Instant::now();
        for p in out.drain(..) {
            if let Some(seg) = TcpSegment::parse(&p) {
                match self.sent_flows.on_sent(&seg, now, WgStats::RTO_SILENCE) {
                    Sent::New => {}
                    Sent::Retransmit => bump(&counters.tcp_retransmitted_segments),
                    Sent::RetransmitAfterSilence(quiet) => {
                        bump(&counters.tcp_retransmitted_segments);
                        bump(&counters.tcp_retransmit_timeouts);
                        counters
                            .tcp_retransmit_stalled_micros
                            .fetch_add(quiet.as_micros() as u64, Ordering::Relaxed);
                    }
                }
            }
            let Some(dst) = destination(&p) else { continue };
            let Some(peer) = self.routes.route(dst) else {
                tracing::trace!(%dst, "no peer for destination");
                continue;
            };
            let Core { peers, mtu, .. } = self;
            let Some(wg) = peers[peer].tunn.handle_outgoing_packet(p, Some(mtu)) else {
                continue; // queued until the handshake completes
            };
            self.note_outgoing(peer, &wg, counters);
            if let Some(ep) = self.peers[peer].endpoint {
                self.to_send.push((ep, wg.into()));
            }
        }
        self.device.tx = out;
    }

    fn run_timers(&mut self, counters: &Counters) {
        self.rate_limiter.try_reset_count();
        for i in 0..self.peers.len() {
            let Some(ep) = self.peers[i].endpoint else {
                continue;
            };
            match self.peers[i].tunn.update_timers() {
                Ok(Some(p)) => {
                    self.note_outgoing(i, &p, counters);
                    self.to_send.push((ep, p.into()));
                }
                Ok(None) | Err(WireGuardError::ConnectionExpired) => {}
                Err(e) => tracing::debug!(peer = i, error = ?e, "timer error"),
            }
        }
        let table = &self.index_table;
        self.by_index.retain(|idx, _| table.in_use(*idx));
        self.sent_flows.forget_idle(std::time::Instant::now());
    }

    /// Hand established inbound connections to the listener; forget finished sockets.
    fn housekeeping(&mut self, shared: &Arc<Shared>) {
        let now = std::time::Instant::now();
        let mut remove = Vec::new();
        let mut report = Vec::new();
        for (h, c) in &self.conns {
            let s = self.sockets.get::<tcp::Socket<'static>>(*h);
            let state = s.state();
            match (&c.kind, c.dropped) {
                (_, Some(at))
                    if matches!(state, tcp::State::Closed | tcp::State::TimeWait)
                        || now.duration_since(at) > LINGER =>
                {
                    remove.push(*h);
                }
                (ConnKind::Inbound { reported: false }, None) => match state {
                    tcp::State::Listen if now.duration_since(c.created) > IDLE_LISTENER => {
                        remove.push(*h)
                    }
                    tcp::State::Closed => remove.push(*h),
                    tcp::State::Established | tcp::State::CloseWait => report.push(*h),
                    _ => {}
                },
                _ => {}
            }
        }
        for h in report {
            let (Some(remote), Some(local)) = (
                self.socket(h).remote_endpoint(),
                self.socket(h).local_endpoint(),
            ) else {
                continue;
            };
            let remote_ip = ip_of(remote.addr);
            let Some(peer) = self.routes.route(remote_ip) else {
                self.socket(h).abort();
                continue;
            };
            if let Some(c) = self.conns.get_mut(&h) {
                c.kind = ConnKind::Inbound { reported: true };
                self.pending_inbound -= 1;
            }
            let inbound = Inbound {
                stream: WgStream::new(shared.clone(), h),
                peer: PeerIdentity::WireGuard {
                    public_key: self.peers[peer].public_key.0,
                    spiffe: self.peers[peer].spiffe.clone(),
                },
                target: Target::new(SocketAddr::new(ip_of(local.addr), local.port)),
            };
            let refused = match self.inbound.as_ref() {
                Some(tx) => tx.try_send(inbound).err().map(|e| match e {
                    mpsc::error::TrySendError::Full(i) => (i, "the accept queue is full"),
                    mpsc::error::TrySendError::Closed(i) => (i, "no listener"),
                }),
                None => Some((inbound, "no listener")),
            };
            if let Some((inbound, why)) = refused {
                // Nobody takes it now: reset, as a kernel with a full accept queue would drop
                // it. Dropping the stream here would re-take the lock we hold.
                let h = inbound.stream.disarm();
                tracing::warn!(reason = why, "inbound tunnelled connection refused");
                self.socket(h).abort();
            }
        }
        for h in remove {
            let s = self.socket(h);
            if !matches!(s.state(), tcp::State::Closed | tcp::State::TimeWait) {
                s.abort();
            }
            self.remove_conn(h);
        }
    }
}

fn ip_of(a: IpAddress) -> IpAddr {
    match a {
        IpAddress::Ipv4(v4) => IpAddr::V4(v4),
        IpAddress::Ipv6(v6) => IpAddr::V6(v6),
    }
}

/// The destination address of an IP packet (IPv4 or IPv6), or `None` if `p` is not one.
/// Parses untrusted bytes: never panics.
pub fn destination(p: &[u8]) -> Option<IpAddr> {
    match p.first()? >> 4 {
        4 => Some(IpAddr::V4(Ipv4Packet::new_checked(p).ok()?.dst_addr())),
        6 => Some(IpAddr::V6(Ipv6Packet::new_checked(p).ok()?.dst_addr())),
        _ => None,
    }
}

/// `(source, destination)` if `p` is a TCP SYN opening a connection (SYN without ACK): how the
/// inbound side learns a tunnelled stream's target. Parses untrusted bytes: never panics.
pub fn parse_syn(p: &[u8]) -> Option<(IpEndpoint, IpEndpoint)> {
    let seg = crate::flows::TcpSegment::parse(p)?;
    (seg.syn && !seg.ack && !seg.rst).then_some((seg.src, seg.dst))
}

struct NodeInner {
    shared: Arc<Shared>,
    driver: tokio::task::JoinHandle<()>,
    local_addr: SocketAddr,
    public_key: WgPublicKey,
    buffers: SocketBuffers,
    connect_timeout: Duration,
    inbound_rx: tokio::sync::Mutex<Option<mpsc::Receiver<Inbound<WgStream>>>>,
}

impl Drop for NodeInner {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Release);
        self.driver.abort();
        let mut core = self.shared.lock();
        core.inbound = None;
        let handles: Vec<SocketHandle> = core.conns.keys().copied().collect();
        for h in handles {
            core.socket(h).abort(); // wakes every stream waiting on it
        }
    }
}

/// A WireGuard node: a UDP socket, its peers and a userspace TCP/IP stack inside the tunnel.
///
/// It opens tunnelled TCP streams ([`Transport`]) and, with
/// [`WgConfig::accept_inbound`], accepts them ([`WgNode::listener`]). Clones share the node;
/// the node stops when the last clone and listener are dropped.
#[derive(Clone)]
pub struct WgNode {
    inner: Arc<NodeInner>,
}

impl std::fmt::Debug for WgNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WgNode")
            .field("local_addr", &self.inner.local_addr)
            .field("public_key", &self.inner.public_key)
            .finish_non_exhaustive()
    }
}

impl WgNode {
    /// Check the FIPS requirement, bind the UDP socket, and start the node on the current
    /// tokio runtime. Under [`fipstun_transport::FipsRequirement::Required`] this returns
    /// [`TransportError::FipsRequired`]: WireGuard's algorithms are not FIPS-approved.
    pub async fn bind(config: WgConfig) -> Result<Self, TransportError> {
        config.fips.check(&security_info())?;
        if config.addresses.is_empty() {
            return Err(crate::WgError::Config("no tunnel address".into()).into());
        }
        if !crate::MTU_RANGE.contains(&config.mtu) {
            return Err(crate::WgError::Config(format!(
                "MTU {} outside {:?}",
                config.mtu,
                crate::MTU_RANGE
            ))
            .into());
        }
        let (udp, buffers) = UdpIo::bind(config.listen_addr, config.udp_socket_buffer_bytes)?;
        let local_addr = udp.local_addr()?;

        let private = config.private_key.secret();
        let public = gotatun::x25519::PublicKey::from(&private);
        let rate_limiter = Arc::new(RateLimiter::new(&public, config.handshake_rate_limit));
        let index_table = IndexTable::from_os_rng();
        let timer_params =
            (config.rekey_after_time != Duration::from_secs(120)).then(|| TimerParams {
                rekey_after_time: config.rekey_after_time..=config.rekey_after_time,
                ..TimerParams::default()
            });
        let peers = config
            .peers
            .iter()
            .map(|p| {
                let mut tunn = Tunn::new(
                    private.clone(),
                    gotatun::x25519::PublicKey::from(p.public_key.0),
                    p.preshared_key.as_ref().map(|k| k.bytes()),
                    p.persistent_keepalive_secs,
                    index_table.clone(),
                    rate_limiter.clone(),
                );
                if let Some(t) = &timer_params {
                    tunn.dangerously_set_timer_params(t.clone());
                }
                PeerState {
                    tunn,
                    endpoint: p.endpoint,
                    public_key: p.public_key,
                    spiffe: p.spiffe.clone(),
                }
            })
            .collect();

        let pool = PacketBufPool::<4096>::new(POOL_PACKETS);
        let mut device = TunnelDevice::new(pool, usize::from(config.mtu));
        let mut iface_cfg = IfaceConfig::new(HardwareAddress::Ip);
        iface_cfg.random_seed = rand::random();
        let started = std::time::Instant::now();
        let mut iface = Interface::new(iface_cfg, &mut device, smoltcp::time::Instant::ZERO);
        let mut addr_err = None;
        iface.update_ip_addrs(|addrs| {
            for a in &config.addresses {
                let cidr = IpCidr::new(IpAddress::from(a.addr()), a.prefix_len());
                if addrs.push(cidr).is_err() {
                    addr_err = Some(format!("too many tunnel addresses at {a}"));
                }
            }
        });
        if let Some(e) = addr_err {
            return Err(crate::WgError::Config(e).into());
        }
        // Everything routes into the tunnel; crypto-key routing picks the peer.
        for a in &config.addresses {
            let r = match a.addr() {
                IpAddr::V4(v4) => iface.routes_mut().add_default_ipv4_route(v4).map(|_| ()),
                IpAddr::V6(v6) => iface.routes_mut().add_default_ipv6_route(v6).map(|_| ()),
            };
            if r.is_err() {
                return Err(crate::WgError::Config("route table full".into()).into());
            }
        }
        iface.set_any_ip(config.accept_inbound);

        let (inbound_tx, inbound_rx) = if config.accept_inbound {
            let (tx, rx) = mpsc::channel(INBOUND_QUEUE);
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let core = Core {
            iface,
            sockets: SocketSet::new(Vec::new()),
            device,
            routes: AllowedIps::new(&config.peers),
            peers,
            by_index: HashMap::new(),
            index_table,
            rate_limiter,
            private,
            public,
            conns: HashMap::new(),
            used_ports: HashSet::new(),
            next_port: *EPHEMERAL_PORTS.start() + rand::random::<u16>() % 1000,
            inbound: inbound_tx,
            mtu: MtuWatcher::new(config.mtu),
            to_send: Vec::new(),
            started,
            next_timer_tick: Duration::ZERO,
            tcp_buffer_bytes: config.tcp_buffer_bytes,
            pending_inbound: 0,
            housekeeping_due: false,
            sent_flows: SentFlows::default(),
        };
        let shared = Arc::new(Shared {
            core: Mutex::new(core),
            wake_driver: Notify::new(),
            closed: AtomicBool::new(false),
            counters: Counters::default(),
        });
        let driver = tokio::spawn(drive(Arc::downgrade(&shared), udp));
        tracing::debug!(%local_addr, public_key = %WgPublicKey(public.to_bytes()), "WireGuard node up");
        Ok(Self {
            inner: Arc::new(NodeInner {
                shared,
                driver,
                local_addr,
                public_key: WgPublicKey(public.to_bytes()),
                buffers,
                connect_timeout: config.connect_timeout,
                inbound_rx: tokio::sync::Mutex::new(inbound_rx),
            }),
        })
    }

    /// The bound UDP address.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// Our public key (what peers configure for us).
    pub fn public_key(&self) -> WgPublicKey {
        self.inner.public_key
    }

    /// The UDP socket buffers the kernel granted and the GSO/GRO batch sizes in use.
    pub fn socket_buffers(&self) -> SocketBuffers {
        self.inner.buffers
    }

    /// A snapshot of the node's counters.
    pub fn stats(&self) -> WgStats {
        let c = &self.inner.shared.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        WgStats {
            rx_datagrams: l(&c.rx_datagrams),
            rx_recv_calls: l(&c.rx_recv_calls),
            tx_datagrams: l(&c.tx_datagrams),
            tx_send_calls: l(&c.tx_send_calls),
            rx_data_packets: l(&c.rx_data_packets),
            rx_replayed: l(&c.rx_replayed),
            rx_dropped: l(&c.rx_dropped),
            handshakes_initiated: l(&c.handshakes_initiated),
            sessions_established: l(&c.sessions_established),
            cookie_replies_sent: l(&c.cookie_replies_sent),
            cookie_replies_received: l(&c.cookie_replies_received),
            driver_rounds: l(&c.driver_rounds),
            tcp_retransmitted_segments: l(&c.tcp_retransmitted_segments),
            tcp_retransmit_timeouts: l(&c.tcp_retransmit_timeouts),
            tcp_retransmit_stalled: Duration::from_micros(l(&c.tcp_retransmit_stalled_micros)),
            tcp_zero_window_acks: l(&c.tcp_zero_window_acks),
            largest_send_round: l(&c.largest_send_round),
        }
    }

    /// TCP connections (and listening sockets for inbound SYNs) the node holds right now,
    /// including closed ones not yet forgotten.
    pub fn connection_count(&self) -> usize {
        self.inner.shared.lock().conns.len()
    }

    /// The inbound side. It accepts only if the node was configured with
    /// [`WgConfig::accept_inbound`]; otherwise `accept` fails with [`TransportError::Closed`].
    pub fn listener(&self) -> WgListener {
        WgListener {
            node: self.inner.clone(),
        }
    }

    /// What protects the bytes (same as [`Transport::security`]).
    pub fn security(&self) -> SecurityInfo {
        security_info()
    }
}

impl Transport for WgNode {
    type Stream = WgStream;

    /// A name target is resolved first; the first of its addresses that a peer's allowed IPs
    /// cover is dialled (WireGuard routes by IP).
    async fn connect(&self, target: &Target) -> Result<WgStream, TransportError> {
        let shared = &self.inner.shared;
        if shared.is_closed() {
            return Err(TransportError::Closed);
        }
        let addr = match target.socket_addr() {
            Some(a) => a,
            None => {
                let addrs = target.resolve().await?;
                let core = shared.lock();
                addrs
                    .into_iter()
                    .find(|a| core.routes.route(a.ip()).is_some())
                    .ok_or_else(|| TransportError::NoRoute(target.clone()))?
            }
        };
        let h = {
            let mut core = shared.lock();
            let Some(peer) = core.routes.route(addr.ip()) else {
                return Err(TransportError::NoRoute(target.clone()));
            };
            if core.peers[peer].endpoint.is_none() {
                return Err(TransportError::tunnel(
                    Some(target),
                    WgError::NoEndpoint {
                        peer: core.peers[peer].public_key.to_string(),
                    },
                ));
            }
            let Some(local_ip) = core.local_ip_for(addr.ip()) else {
                return Err(TransportError::NoRoute(target.clone()));
            };
            let Some(port) = core.alloc_port() else {
                return Err(TransportError::tunnel(Some(target), WgError::OutOfPorts));
            };
            let mut s = core.new_socket();
            let core = &mut *core;
            let remote = IpEndpoint::new(IpAddress::from(addr.ip()), addr.port());
            if let Err(e) = s.connect(
                core.iface.context(),
                remote,
                IpListenEndpoint {
                    addr: Some(local_ip),
                    port,
                },
            ) {
                core.used_ports.remove(&port);
                return Err(TransportError::tunnel(
                    Some(target),
                    WgError::Connect(e.to_string()),
                ));
            }
            let h = core.sockets.add(s);
            core.conns.insert(
                h,
                Conn {
                    kind: ConnKind::Outbound { port },
                    created: std::time::Instant::now(),
                    dropped: None,
                },
            );
            h
        };
        shared.wake_driver.notify_one();
        let established = poll_fn(|cx| {
            if shared.is_closed() {
                return Poll::Ready(Err(TransportError::Closed));
            }
            let mut core = shared.lock();
            let s = core.socket(h);
            match s.state() {
                tcp::State::SynSent | tcp::State::SynReceived => {
                    s.register_send_waker(cx.waker());
                    Poll::Pending
                }
                tcp::State::Closed => Poll::Ready(Err(TransportError::unreachable(
                    target,
                    "connection refused through the tunnel",
                ))),
                _ => Poll::Ready(Ok(())),
            }
        });
        let outcome = match tokio::time::timeout(self.inner.connect_timeout, established).await {
            Ok(r) => r,
            Err(_) => Err(TransportError::tunnel(
                Some(target),
                WgError::ConnectTimeout(self.inner.connect_timeout),
            )),
        };
        match outcome {
            Ok(()) => Ok(WgStream::new(shared.clone(), h)),
            Err(e) => {
                if !shared.is_closed() {
                    let mut core = shared.lock();
                    core.socket(h).abort();
                    core.remove_conn(h);
                }
                Err(e)
            }
        }
    }

    fn security(&self) -> SecurityInfo {
        security_info()
    }
}

/// Inbound tunnelled connections waiting for the application's accept at most; more are
/// reset (the queue is bounded so a peer opening connections faster than they are taken
/// cannot grow memory without limit).
const INBOUND_QUEUE: usize = 1024;

/// The inbound side of a [`WgNode`]: tunnelled TCP connections to any destination, each with
/// the peer's key (and mapped SPIFFE ID) and the destination it was sent to.
pub struct WgListener {
    node: Arc<NodeInner>,
}

impl std::fmt::Debug for WgListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WgListener")
            .field("local_addr", &self.node.local_addr)
            .finish_non_exhaustive()
    }
}

impl TunnelListener for WgListener {
    type Stream = WgStream;

    async fn accept(&self) -> Result<Inbound<WgStream>, TransportError> {
        let mut rx = self.node.inbound_rx.lock().await;
        match rx.as_mut() {
            Some(rx) => rx.recv().await.ok_or(TransportError::Closed),
            None => Err(TransportError::Closed),
        }
    }

    fn security(&self) -> SecurityInfo {
        security_info()
    }
}

/// An inbound connection as the one forwarder sees it: the TCP handshake inside the tunnel is
/// already done, so establishing hands the stream over and refusing resets it.
#[derive(Debug)]
pub struct WgPending(Inbound<WgStream>);

impl PendingInbound for WgPending {
    type Stream = WgStream;

    fn peer(&self) -> &PeerIdentity {
        &self.0.peer
    }

    fn target(&self) -> &Target {
        &self.0.target
    }

    fn establish(self) -> Result<WgStream, TransportError> {
        Ok(self.0.stream)
    }

    fn refuse(self, _why: Refusal) {
        self.0.stream.reset();
    }
}

impl Acceptor for WgListener {
    type Pending = WgPending;

    async fn accept(&mut self) -> Result<WgPending, TransportError> {
        TunnelListener::accept(&*self).await.map(WgPending)
    }
}

/// The node's driver: UDP in, engines, TCP/IP stack, UDP out, timers. Holds only a weak
/// reference so dropping the node stops it.
async fn drive(shared: std::sync::Weak<Shared>, mut udp: UdpIo) {
    let mut rx: Vec<(SocketAddr, Packet)> = Vec::with_capacity(1024);
    let mut tx: Vec<(SocketAddr, Packet)> = Vec::with_capacity(1024);
    let pool = match shared.upgrade() {
        Some(s) => s.lock().device.pool.clone(),
        None => return,
    };
    loop {
        let Some(sh) = shared.upgrade() else { return };
        if sh.is_closed() {
            return;
        }
        bump(&sh.counters.driver_rounds);
        rx.clear();
        for _ in 0..RECV_CALLS_PER_ROUND {
            if rx.len() >= RX_DATAGRAMS_PER_ROUND {
                break;
            }
            match udp.try_recv(&pool, &mut rx) {
                Ok(n) => {
                    sh.counters.rx_recv_calls.fetch_add(1, Ordering::Relaxed);
                    sh.counters
                        .rx_datagrams
                        .fetch_add(n as u64, Ordering::Relaxed);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    tracing::debug!(error = %e, "UDP receive failed");
                    break;
                }
            }
        }
        let got_input = !rx.is_empty();
        let next_wake = {
            let mut core = sh.lock();
            let core = &mut *core;
            for (from, p) in rx.drain(..) {
                core.ingest(from, p, &sh.counters);
            }
            core.listen_for_new_syns();
            let now = core.now();
            let changed = core.iface.poll(now, &mut core.device, &mut core.sockets);
            core.encapsulate_tx(&sh.counters);
            let elapsed = core.started.elapsed();
            if elapsed >= core.next_timer_tick {
                core.run_timers(&sh.counters);
                core.next_timer_tick = elapsed + TIMER_TICK;
                core.housekeeping_due = true;
            }
            if matches!(changed, smoltcp::iface::PollResult::SocketStateChanged)
                || core.housekeeping_due
            {
                core.housekeeping_due = false;
                core.housekeeping(&sh);
            }
            // The stack may have more to send once this batch is out (window, timers).
            let until_stack = core
                .iface
                .poll_delay(core.now(), &core.sockets)
                .map(|d| Duration::from_micros(d.total_micros()))
                .unwrap_or(TIMER_TICK);
            let until_timer = core.next_timer_tick.saturating_sub(core.started.elapsed());
            std::mem::swap(&mut core.to_send, &mut tx);
            until_stack.min(until_timer)
        };
        if !tx.is_empty() {
            let n = tx.len() as u64;
            sh.counters
                .largest_send_round
                .fetch_max(n, Ordering::Relaxed);
            let calls = udp.send_all(&mut tx).await;
            sh.counters.tx_datagrams.fetch_add(n, Ordering::Relaxed);
            sh.counters
                .tx_send_calls
                .fetch_add(calls as u64, Ordering::Relaxed);
        }
        if got_input {
            drop(sh);
            tokio::task::yield_now().await;
            continue;
        }
        if next_wake.is_zero() {
            drop(sh);
            tokio::task::yield_now().await;
            continue;
        }
        let sleep = tokio::time::sleep(next_wake);
        let woken = sh.wake_driver.notified();
        tokio::select! {
            r = udp.readable() => {
                if let Err(e) = r {
                    tracing::warn!(error = %e, "UDP socket failed; node stops");
                    return;
                }
            }
            _ = woken => {}
            _ = sleep => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SYN_V4: [u8; 40] = [
        0x45, 0, 0, 40, 0, 1, 0x40, 0, 64, 6, 0, 0, 10, 99, 9, 2, 10, 99, 9, 1, //
        0x9c, 0x40, 0x1e, 0x61, 0, 0, 3, 0xe8, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0,
    ];

    #[test]
    fn recognises_a_syn_and_only_a_syn() {
        let (src, dst) = parse_syn(&SYN_V4).unwrap();
        assert_eq!(src.to_string(), "10.99.9.2:40000");
        assert_eq!(dst.to_string(), "10.99.9.1:7777");
        let mut syn_ack = SYN_V4;
        syn_ack[33] = 0x12;
        assert_eq!(parse_syn(&syn_ack), None);
        let mut udp = SYN_V4;
        udp[9] = 17;
        assert_eq!(parse_syn(&udp), None);
        assert_eq!(parse_syn(&SYN_V4[..39]), None);
        assert_eq!(destination(&SYN_V4), Some("10.99.9.1".parse().unwrap()));
    }

    proptest! {
        /// Decrypted packets are authenticated but still come from a peer: never panic on them.
        #[test]
        fn packet_classifiers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..120)) {
            let _ = parse_syn(&bytes);
            let _ = destination(&bytes);
        }

        #[test]
        fn mutated_syns_never_panic(i in 0usize..40, b in any::<u8>()) {
            let mut p = SYN_V4;
            p[i] = b;
            let _ = parse_syn(&p);
        }
    }
}
