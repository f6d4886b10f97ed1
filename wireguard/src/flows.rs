//! What the node sees of its own TCP traffic on the way into the tunnel: which segments were
//! sent before (retransmissions) and which came after a silence (the stack's retransmission
//! timer fired: a stall). smoltcp keeps no such counters, so the node reads the segments.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use smoltcp::wire::{IpAddress, IpEndpoint, IpProtocol, Ipv4Packet, Ipv6Packet, TcpPacket};

/// The TCP header fields the node looks at. Parsed from bytes the stack wrote or a peer sent
/// (authenticated, still untrusted): [`TcpSegment::parse`] never panics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TcpSegment {
    pub(crate) src: IpEndpoint,
    pub(crate) dst: IpEndpoint,
    pub(crate) seq: u32,
    /// Sequence space the segment occupies: payload, plus one each for SYN and FIN.
    pub(crate) len: u32,
    pub(crate) syn: bool,
    pub(crate) ack: bool,
    pub(crate) rst: bool,
    pub(crate) fin: bool,
    /// The raw window field (unscaled): zero means zero whatever the scale.
    pub(crate) window: u16,
}

impl TcpSegment {
    /// `None` for anything that is not a whole, unfragmented TCP segment in IPv4 or IPv6.
    pub(crate) fn parse(p: &[u8]) -> Option<Self> {
        let (src, dst, payload): (IpAddress, IpAddress, &[u8]) = match p.first()? >> 4 {
            4 => {
                let ip = Ipv4Packet::new_checked(p).ok()?;
                if ip.next_header() != IpProtocol::Tcp || ip.more_frags() || ip.frag_offset() != 0 {
                    return None;
                }
                let hl = usize::from(ip.header_len());
                let tl = usize::from(ip.total_len());
                (ip.src_addr().into(), ip.dst_addr().into(), p.get(hl..tl)?)
            }
            6 => {
                let ip = Ipv6Packet::new_checked(p).ok()?;
                if ip.next_header() != IpProtocol::Tcp {
                    return None;
                }
                let len = usize::from(ip.payload_len());
                (
                    ip.src_addr().into(),
                    ip.dst_addr().into(),
                    p.get(40..40 + len)?,
                )
            }
            _ => return None,
        };
        let tcp = TcpPacket::new_checked(payload).ok()?;
        let data = payload.len().checked_sub(usize::from(tcp.header_len()))?;
        let len = u32::try_from(data).ok()? + u32::from(tcp.syn()) + u32::from(tcp.fin());
        Some(Self {
            src: IpEndpoint::new(src, tcp.src_port()),
            dst: IpEndpoint::new(dst, tcp.dst_port()),
            seq: tcp.seq_number().0 as u32,
            len,
            syn: tcp.syn(),
            ack: tcp.ack(),
            rst: tcp.rst(),
            fin: tcp.fin(),
            window: tcp.window_len(),
        })
    }
}

/// What [`SentFlows::on_sent`] made of a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sent {
    /// New sequence space (or no sequence space: a bare ACK).
    New,
    /// Sent before, within a round trip of the flow's last segment (fast retransmit, recovery).
    Retransmit,
    /// Sent before, after the flow was silent this long (at least the given threshold): the
    /// retransmission timer fired.
    RetransmitAfterSilence(Duration),
}

struct Flow {
    /// One past the highest sequence number sent.
    snd_max: u32,
    last_sent: Instant,
    /// Our FIN was sent: the flow is queued in [`SentFlows::closed`].
    fin: bool,
}

/// Per flow (our end, their end): the highest sequence number sent and when.
#[derive(Default)]
pub(crate) struct SentFlows {
    flows: HashMap<(IpEndpoint, IpEndpoint), Flow>,
    /// Flows whose FIN went out, oldest first, with when: forgotten [`CLOSED_GRACE`] after
    /// (popped from the front, so a burst of short connections costs no walk of the table).
    closed: VecDeque<((IpEndpoint, IpEndpoint), Instant)>,
    /// When [`SentFlows::forget_idle`] next looks at every flow (`None`: at its next call).
    next_sweep: Option<Instant>,
}

/// Flows silent this long are forgotten (their connection is gone or idle).
const FORGET_AFTER: Duration = Duration::from_secs(120);

/// How long a flow is kept after our FIN: retransmissions of its last data or of the FIN within
/// this time (three back-offs from a 200 ms timeout) are still told from new data; later ones
/// count as new. Short, so that a burst of closing connections is forgotten while the burst
/// goes on, not in one lump a while after it when the node is otherwise at rest.
const CLOSED_GRACE: Duration = Duration::from_secs(2);

/// How often the silent flows are swept. A sweep visits every flow (and every empty slot of
/// the table), so it must not run on every timer tick: sweeping four times a second was most
/// of an idle node's CPU. Closed flows leave through [`SentFlows::closed`], so what a sweep
/// finds is connections still open but silent for [`FORGET_AFTER`].
const SWEEP_EVERY: Duration = Duration::from_secs(30);

impl SentFlows {
    pub(crate) fn on_sent(&mut self, s: &TcpSegment, now: Instant, silence: Duration) -> Sent {
        let end = s.seq.wrapping_add(s.len);
        let key = (s.src, s.dst);
        if s.rst {
            self.flows.remove(&key);
            return Sent::New;
        }
        let Some(f) = self.flows.get_mut(&key) else {
            if s.len > 0 {
                self.flows.insert(
                    key,
                    Flow {
                        snd_max: end,
                        last_sent: now,
                        fin: s.fin,
                    },
                );
                if s.fin {
                    self.closed.push_back((key, now));
                }
            }
            return Sent::New;
        };
        if s.syn && f.fin {
            // A new connection on the four-tuple of one that closed.
            *f = Flow {
                snd_max: end,
                last_sent: now,
                fin: false,
            };
            return Sent::New;
        }
        let quiet = now.duration_since(f.last_sent);
        f.last_sent = now;
        if s.fin && !f.fin {
            f.fin = true;
            self.closed.push_back((key, now));
        }
        if s.len == 0 {
            return Sent::New;
        }
        // Serial-number arithmetic (RFC 1982): `end` at or before `snd_max` was sent already.
        if (f.snd_max.wrapping_sub(end) as i32) >= 0 {
            if s.syn {
                return Sent::Retransmit;
            }
            return if quiet >= silence {
                Sent::RetransmitAfterSilence(quiet)
            } else {
                Sent::Retransmit
            };
        }
        f.snd_max = end;
        Sent::New
    }

    /// Forget flows closed [`CLOSED_GRACE`] ago (on every call: only those due are looked at)
    /// and flows silent for [`FORGET_AFTER`] (a walk of the table, at most once per
    /// [`SWEEP_EVERY`]); gives the table's memory back once most of it is empty.
    pub(crate) fn forget_idle(&mut self, now: Instant) {
        let mut forgot = false;
        while let Some(&(key, at)) = self.closed.front() {
            if now.duration_since(at) < CLOSED_GRACE {
                break;
            }
            self.closed.pop_front();
            // The same four-tuple may carry a newer connection by now: only a flow that is
            // still closed and quiet since goes.
            if self
                .flows
                .get(&key)
                .is_some_and(|f| f.fin && now.duration_since(f.last_sent) >= CLOSED_GRACE)
            {
                self.flows.remove(&key);
                forgot = true;
            }
        }
        if self.next_sweep.is_none_or(|at| now >= at) {
            self.next_sweep = Some(now + SWEEP_EVERY);
            self.flows
                .retain(|_, f| now.duration_since(f.last_sent) < FORGET_AFTER);
            forgot = true;
        }
        if forgot && self.flows.capacity() > 64 && self.flows.len() * 4 < self.flows.capacity() {
            self.flows.shrink_to(self.flows.len() * 2);
        }
        if self.closed.capacity() > 64 && self.closed.len() * 4 < self.closed.capacity() {
            self.closed.shrink_to(self.closed.len() * 2);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silent_flows_are_swept_at_most_every_sweep_interval_and_the_table_shrinks() {
        let mut f = SentFlows::default();
        let t0 = Instant::now();
        for port in 0..10_000u16 {
            let s = TcpSegment {
                src: IpEndpoint::new(IpAddress::v4(10, 0, 0, 1), port),
                ..seg(1, 100)
            };
            f.on_sent(&s, t0, Duration::from_millis(200));
        }
        let big = f.flows.capacity();
        assert!(big >= 10_000);
        f.forget_idle(t0);
        assert_eq!(f.flows.len(), 10_000, "nothing is silent yet");
        // Past FORGET_AFTER but before the next sweep: untouched (no full walk per tick).
        let later = t0 + FORGET_AFTER + Duration::from_secs(1);
        f.next_sweep = Some(later + Duration::from_secs(1));
        f.forget_idle(later);
        assert_eq!(f.flows.len(), 10_000);
        // At the sweep: all forgotten, and the table's memory given back.
        f.forget_idle(later + SWEEP_EVERY);
        assert!(f.flows.is_empty());
        assert!(
            f.flows.capacity() < big / 4,
            "{} of {big}",
            f.flows.capacity()
        );
    }

    #[test]
    fn closed_flows_leave_after_the_grace_without_a_sweep() {
        let mut f = SentFlows::default();
        let t0 = Instant::now();
        let q = Duration::from_millis(200);
        f.forget_idle(t0); // the first sweep; the next is SWEEP_EVERY away
        for port in 0..10_000u16 {
            let data = TcpSegment {
                src: IpEndpoint::new(IpAddress::v4(10, 0, 0, 1), port),
                ..seg(1, 100)
            };
            f.on_sent(&data, t0, q);
            let fin = TcpSegment {
                seq: 101,
                len: 1,
                fin: true,
                ..data
            };
            f.on_sent(&fin, t0, q);
        }
        // One connection stays open; one closes later than the rest.
        let open = TcpSegment {
            src: IpEndpoint::new(IpAddress::v4(10, 0, 0, 9), 1),
            ..seg(1, 100)
        };
        f.on_sent(&open, t0, q);
        let late = TcpSegment {
            src: IpEndpoint::new(IpAddress::v4(10, 0, 0, 9), 2),
            ..seg(1, 100)
        };
        f.on_sent(&late, t0, q);
        let late_fin = TcpSegment {
            seq: 101,
            len: 1,
            fin: true,
            ..late
        };
        f.on_sent(&late_fin, t0 + Duration::from_secs(1), q);
        let big = f.flows.capacity();
        // Within the grace a FIN retransmission is still one.
        let first_fin = TcpSegment {
            src: IpEndpoint::new(IpAddress::v4(10, 0, 0, 1), 7),
            ..seg(101, 1)
        };
        let first_fin = TcpSegment {
            fin: true,
            ..first_fin
        };
        assert_eq!(
            f.on_sent(&first_fin, t0 + Duration::from_millis(300), q),
            Sent::RetransmitAfterSilence(Duration::from_millis(300))
        );
        f.forget_idle(t0 + Duration::from_millis(1500));
        assert_eq!(f.flows.len(), 10_002);
        // After the grace, long before the next sweep: the closed ones are gone, the open one
        // and the later-closed one stay, and the memory is given back.
        let after = t0 + CLOSED_GRACE + Duration::from_millis(500);
        assert!(after < t0 + SWEEP_EVERY);
        f.forget_idle(after);
        assert_eq!(f.flows.len(), 2, "closed flows forgotten");
        assert!(
            f.flows.capacity() < big / 4,
            "{} of {big}",
            f.flows.capacity()
        );
        assert_eq!(
            f.on_sent(&open, after, q),
            Sent::RetransmitAfterSilence(after - t0)
        );
        f.forget_idle(t0 + CLOSED_GRACE + Duration::from_secs(1));
        assert_eq!(f.flows.len(), 1, "the later FIN's grace ran out too");
        // A four-tuple reused by a new connection within the grace is not forgotten.
        let reused = TcpSegment {
            src: IpEndpoint::new(IpAddress::v4(10, 0, 0, 3), 3),
            ..seg(1, 100)
        };
        let t1 = t0 + Duration::from_secs(20);
        f.on_sent(&reused, t1, q);
        f.on_sent(
            &TcpSegment {
                seq: 101,
                len: 1,
                fin: true,
                ..reused
            },
            t1,
            q,
        );
        let syn = TcpSegment {
            seq: 5000,
            len: 1,
            syn: true,
            ..reused
        };
        assert_eq!(f.on_sent(&syn, t1 + Duration::from_secs(1), q), Sent::New);
        f.forget_idle(t1 + CLOSED_GRACE + Duration::from_secs(2));
        assert!(f.flows.contains_key(&(reused.src, reused.dst)));
    }

    fn seg(seq: u32, len: u32) -> TcpSegment {
        TcpSegment {
            src: IpEndpoint::new(IpAddress::v4(10, 0, 0, 1), 40000),
            dst: IpEndpoint::new(IpAddress::v4(10, 0, 0, 2), 80),
            seq,
            len,
            syn: false,
            ack: true,
            rst: false,
            fin: false,
            window: 100,
        }
    }

    #[test]
    fn tells_new_data_from_retransmissions_and_timeouts() {
        let mut f = SentFlows::default();
        let t = Instant::now();
        let q = Duration::from_millis(150);
        assert_eq!(f.on_sent(&seg(u32::MAX - 10, 100), t, q), Sent::New);
        assert_eq!(f.on_sent(&seg(89, 100), t, q), Sent::New); // wrapped
        assert_eq!(f.on_sent(&seg(89, 100), t, q), Sent::Retransmit);
        assert_eq!(f.on_sent(&seg(189, 0), t, q), Sent::New); // a bare ACK
        let later = t + Duration::from_millis(200);
        assert_eq!(
            f.on_sent(&seg(89, 100), later, q),
            Sent::RetransmitAfterSilence(Duration::from_millis(200))
        );
        f.forget_idle(later + FORGET_AFTER);
        assert_eq!(f.on_sent(&seg(89, 100), later, q), Sent::New);
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..120)) {
            let _ = TcpSegment::parse(&bytes);
        }
    }
}
