//! The smoltcp device inside the tunnel: decrypted IP packets queue in, IP packets to encrypt
//! queue out. Buffers come from gotatun's packet pool, so the steady state does not allocate.

use std::collections::VecDeque;

use gotatun::packet::{Packet, PacketBufPool};
use smoltcp::phy::{self, Checksum, ChecksumCapabilities, DeviceCapabilities, Medium};
use smoltcp::time::Instant;

pub(crate) struct TunnelDevice {
    pub(crate) rx: VecDeque<Packet>,
    pub(crate) tx: Vec<Packet>,
    pub(crate) pool: PacketBufPool,
    pub(crate) mtu: usize,
}

impl TunnelDevice {
    pub(crate) fn new(pool: PacketBufPool, mtu: usize) -> Self {
        Self {
            rx: VecDeque::new(),
            tx: Vec::new(),
            pool,
            mtu,
        }
    }
}

pub(crate) struct RxToken(Packet);

pub(crate) struct TxToken<'a> {
    tx: &'a mut Vec<Packet>,
    pool: &'a PacketBufPool,
}

impl phy::Device for TunnelDevice {
    type RxToken<'a> = RxToken;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _now: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let p = self.rx.pop_front()?;
        Some((
            RxToken(p),
            TxToken {
                tx: &mut self.tx,
                pool: &self.pool,
            },
        ))
    }

    fn transmit(&mut self, _now: Instant) -> Option<Self::TxToken<'_>> {
        Some(TxToken {
            tx: &mut self.tx,
            pool: &self.pool,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = self.mtu;
        // Poly1305 already authenticated every received byte (as the kernel's WireGuard marks
        // decrypted packets CHECKSUM_UNNECESSARY); checksums are still computed on send for the
        // peer's stack.
        let mut ck = ChecksumCapabilities::default();
        ck.ipv4 = Checksum::Tx;
        ck.tcp = Checksum::Tx;
        ck.udp = Checksum::Tx;
        caps.checksum = ck;
        caps
    }
}

impl phy::RxToken for RxToken {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut p = self.pool.get();
        if len > p.len() {
            // Never with an MTU below the pool's buffer size; stay correct anyway.
            p = Packet::from_bytes(bytes::BytesMut::zeroed(len));
        }
        p.truncate(len);
        let r = f(&mut p);
        self.tx.push(p);
        r
    }
}
