//! The smoltcp device inside the tunnel: decrypted IP packets queue in, IP packets to encrypt
//! queue out. Buffers come from gotatun's packet pool, so the steady state does not allocate.

use std::collections::VecDeque;

use gotatun::packet::{Packet, PacketBufPool};
use smoltcp::phy::{self, Checksum, ChecksumCapabilities, DeviceCapabilities, Medium};
use smoltcp::time::Instant;

/// Packets the stack may emit through [`phy::Device::transmit`] per driver round (packets
/// answering received ones, ACKs mostly, are not counted against it). smoltcp's egress
/// otherwise sends every socket's whole window in one poll: with 1 MiB windows, eight bulk
/// streams queued thousands of packets per round (each past the pool a fresh 4 KiB
/// allocation), all encrypted before the first left: a quarter less throughput and 150 MiB
/// of proxy RSS. Smaller rounds send the same bytes sooner: the stack resumes where it
/// stopped on the next round, after the batch is out and the peer's ACKs are in. Half the
/// packet pool.
pub(crate) const TX_PACKETS_PER_ROUND: usize = 256;

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
        // "Device exhausted": smoltcp stops its egress for this poll and reports the sockets
        // with data left as due now (poll_delay zero), so the driver comes straight back.
        if self.tx.len() >= TX_PACKETS_PER_ROUND {
            return None;
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::phy::{Device, TxToken as _};

    fn device() -> TunnelDevice {
        TunnelDevice::new(PacketBufPool::<4096>::new(4), 1420)
    }

    #[test]
    fn transmit_stops_at_the_round_budget_and_resumes_once_the_round_is_sent() {
        let mut d = device();
        let now = Instant::from_millis(0);
        for i in 0..TX_PACKETS_PER_ROUND {
            let t = d
                .transmit(now)
                .unwrap_or_else(|| panic!("refused packet {i}"));
            t.consume(60, |b| b[0] = 0x45);
        }
        assert_eq!(d.tx.len(), TX_PACKETS_PER_ROUND);
        assert!(
            d.transmit(now).is_none(),
            "a packet past the round's budget"
        );
        // The driver encrypts and sends the round (drains tx): the budget is whole again.
        d.tx.clear();
        assert!(d.transmit(now).is_some());
    }

    #[test]
    fn answers_to_received_packets_are_not_held_by_the_budget() {
        let mut d = device();
        let now = Instant::from_millis(0);
        while let Some(t) = d.transmit(now) {
            t.consume(60, |_| ());
        }
        d.rx.push_back(Packet::from_bytes(bytes::BytesMut::zeroed(60)));
        let (_rx, tx) = d
            .receive(now)
            .expect("a received packet and its answer token");
        tx.consume(40, |_| ());
        assert_eq!(d.tx.len(), TX_PACKETS_PER_ROUND + 1);
    }
}
