//! Batched UDP I/O for the tunnel: recvmmsg with GRO and sendmsg with GSO (through quinn-udp),
//! on a socket whose kernel buffers the backend sizes itself.

use std::io::{self, IoSliceMut};
use std::net::SocketAddr;

use gotatun::packet::{Packet, PacketBufPool};
use quinn_udp::{RecvMeta, Transmit, UdpSocketState};
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// One receive buffer holds a GRO train of up to 64 KiB.
const RX_BUF_BYTES: usize = 64 * 1024;
/// The largest GSO train: the sum of the segments must fit one UDP length field.
const MAX_GSO_BYTES: usize = 65_000;

/// What the kernel granted for the UDP socket's buffers (Linux reports twice what was asked,
/// as it counts its own overhead).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SocketBuffers {
    /// SO_RCVBUF as read back.
    pub recv_bytes: usize,
    /// SO_SNDBUF as read back.
    pub send_bytes: usize,
    /// Segments per GSO send (1: no GSO).
    pub gso_segments: usize,
    /// Segments per GRO receive (1: no GRO).
    pub gro_segments: usize,
}

pub(crate) struct UdpIo {
    sock: UdpSocket,
    state: UdpSocketState,
    bufs: Vec<Box<[u8]>>,
    meta: Vec<RecvMeta>,
    gso_buf: Vec<u8>,
}

impl UdpIo {
    pub(crate) fn bind(addr: SocketAddr, buffer_bytes: usize) -> io::Result<(Self, SocketBuffers)> {
        let domain = socket2::Domain::for_address(addr);
        let s = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
        s.set_nonblocking(true)?;
        // As root, SO_*BUFFORCE goes past net.core.{r,w}mem_max; otherwise the kernel clamps.
        if nix::sys::socket::setsockopt(&s, nix::sys::socket::sockopt::RcvBufForce, &buffer_bytes)
            .is_err()
        {
            s.set_recv_buffer_size(buffer_bytes)?;
        }
        if nix::sys::socket::setsockopt(&s, nix::sys::socket::sockopt::SndBufForce, &buffer_bytes)
            .is_err()
        {
            s.set_send_buffer_size(buffer_bytes)?;
        }
        s.bind(&addr.into())?;
        let std_sock: std::net::UdpSocket = s.into();
        let state = UdpSocketState::new((&std_sock).into())?;
        let sock = UdpSocket::from_std(std_sock)?;
        let sref = socket2::SockRef::from(&sock);
        let granted = SocketBuffers {
            recv_bytes: sref.recv_buffer_size()?,
            send_bytes: sref.send_buffer_size()?,
            gso_segments: state.max_gso_segments(),
            gro_segments: state.gro_segments(),
        };
        tracing::debug!(?granted, asked = buffer_bytes, "UDP socket buffers");
        let batch = quinn_udp::BATCH_SIZE.max(1);
        Ok((
            Self {
                sock,
                state,
                bufs: (0..batch)
                    .map(|_| vec![0u8; RX_BUF_BYTES].into_boxed_slice())
                    .collect(),
                meta: vec![RecvMeta::default(); batch],
                gso_buf: Vec::with_capacity(RX_BUF_BYTES),
            },
            granted,
        ))
    }

    pub(crate) fn local_addr(&self) -> io::Result<SocketAddr> {
        self.sock.local_addr()
    }

    pub(crate) async fn readable(&self) -> io::Result<()> {
        self.sock.readable().await
    }

    /// One recvmmsg call without waiting: every datagram it returned (GRO trains split at their
    /// stride) is copied into a pooled packet and pushed on `out`. Returns the datagram count;
    /// `Err(WouldBlock)` when nothing is queued.
    pub(crate) fn try_recv(
        &mut self,
        pool: &PacketBufPool,
        out: &mut Vec<(SocketAddr, Packet)>,
    ) -> io::Result<usize> {
        let Self {
            sock,
            state,
            bufs,
            meta,
            ..
        } = self;
        let mut iovs: Vec<IoSliceMut<'_>> = bufs.iter_mut().map(|b| IoSliceMut::new(b)).collect();
        let n = sock.try_io(Interest::READABLE, || {
            state.recv((&*sock).into(), &mut iovs, meta)
        })?;
        let mut count = 0;
        for (m, buf) in meta.iter().zip(bufs.iter()).take(n) {
            let stride = if m.stride == 0 { m.len } else { m.stride };
            let Some(data) = buf.get(..m.len) else {
                continue;
            };
            for dgram in data.chunks(stride.max(1)) {
                let mut p = pool.get();
                if dgram.len() > p.len() {
                    continue; // larger than any WireGuard message we accept
                }
                p[..dgram.len()].copy_from_slice(dgram);
                p.truncate(dgram.len());
                out.push((m.addr, p));
                count += 1;
            }
        }
        Ok(count)
    }

    /// Send every queued datagram, coalescing runs to one destination with equal sizes into GSO
    /// sends. Waits for socket space rather than dropping. Returns the number of send calls.
    pub(crate) async fn send_all(&mut self, items: &mut Vec<(SocketAddr, Packet)>) -> usize {
        let max_seg = self.state.max_gso_segments().max(1);
        let mut calls = 0;
        let mut i = 0;
        while i < items.len() {
            let dst = items[i].0;
            let seg = items[i].1.len();
            // A GSO send is one UDP datagram to the kernel: at most 64 KiB in all.
            let max_seg = max_seg.min(MAX_GSO_BYTES / seg.max(1)).max(1);
            let mut j = i + 1;
            while j < items.len() && j - i < max_seg && items[j].0 == dst {
                let len = items[j].1.len();
                if len == seg {
                    j += 1;
                } else {
                    if len < seg {
                        j += 1; // a shorter datagram may end a GSO train
                    }
                    break;
                }
            }
            let gso = j - i > 1 && seg > 0;
            if gso {
                self.gso_buf.clear();
                for (_, p) in &items[i..j] {
                    self.gso_buf.extend_from_slice(p);
                }
            }
            let contents: &[u8] = if gso { &self.gso_buf } else { &items[i].1 };
            let t = Transmit {
                destination: dst,
                ecn: None,
                contents,
                segment_size: gso.then_some(seg),
                src_ip: None,
            };
            calls += 1;
            if let Err(e) = send_one(&self.sock, &self.state, &t).await {
                tracing::debug!(%dst, error = %e, gso, "UDP send failed");
                if gso {
                    // Some paths refuse GSO: fall back to one datagram per call.
                    for (_, p) in &items[i..j] {
                        let single = Transmit {
                            contents: p,
                            segment_size: None,
                            ..t.clone()
                        };
                        calls += 1;
                        let _ = send_one(&self.sock, &self.state, &single).await;
                    }
                }
            }
            i = j;
        }
        items.clear();
        calls
    }
}

async fn send_one(sock: &UdpSocket, state: &UdpSocketState, t: &Transmit<'_>) -> io::Result<()> {
    loop {
        match sock.try_io(Interest::WRITABLE, || state.try_send(sock.into(), t)) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => sock.writable().await?,
            r => return r,
        }
    }
}
