//! Protocol behaviour through the public API, against a raw gotatun engine the test drives by
//! hand over a plain UDP socket on 127.0.0.1: replayed data packets are dropped, an over-limit
//! handshake gets a cookie reply (and the cookie then lets it through), rekeying happens after
//! the rekey interval, garbage is dropped, and FIPS is refused.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use fipstun_transport::{FipsRequirement, Target, Transport, TransportError, TunnelListener};
use fipstun_wireguard::{WgConfig, WgNode, WgPeer, WgPrivateKey};
use gotatun::noise::index_table::IndexTable;
use gotatun::noise::rate_limiter::RateLimiter;
use gotatun::noise::{Tunn, TunnResult};
use gotatun::packet::Packet;
use gotatun::x25519::{PublicKey, StaticSecret};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UdpSocket;

const NODE_IP: [u8; 4] = [10, 99, 9, 1];
const RAW_IP: [u8; 4] = [10, 99, 9, 2];

/// A hand-driven WireGuard peer: gotatun's engine and a UDP socket, no TCP/IP stack.
struct RawPeer {
    tunn: Tunn,
    udp: UdpSocket,
    node: SocketAddr,
}

impl RawPeer {
    async fn new(key: &WgPrivateKey, node: &WgNode) -> Self {
        let secret = StaticSecret::from(key_bytes(key));
        let public = PublicKey::from(&secret);
        let tunn = Tunn::new(
            secret,
            PublicKey::from(node.public_key().0),
            None,
            None,
            IndexTable::from_os_rng(),
            Arc::new(RateLimiter::new(&public, 1000)),
        );
        Self {
            tunn,
            udp: UdpSocket::bind("127.0.0.1:0").await.unwrap(),
            node: node.local_addr(),
        }
    }

    async fn send(&self, p: impl Into<Packet>) {
        let p: Packet = p.into();
        self.udp.send_to(&p, self.node).await.unwrap();
    }

    async fn recv(&self) -> Vec<u8> {
        let mut buf = vec![0u8; 2048];
        let (n, _) = tokio::time::timeout(Duration::from_secs(5), self.udp.recv_from(&mut buf))
            .await
            .expect("the node answered within 5 s")
            .unwrap();
        buf.truncate(n);
        buf
    }

    fn feed(&mut self, datagram: &[u8]) -> TunnResult {
        let wg = Packet::from_bytes(BytesMut::from(datagram))
            .try_into_wg()
            .expect("a WireGuard message");
        self.tunn.handle_incoming_packet(wg)
    }

    async fn handshake(&mut self) {
        let init = self.tunn.format_handshake_initiation(false).unwrap();
        self.send(init).await;
        let resp = self.recv().await;
        assert_eq!(resp.len(), 92, "a handshake response");
        match self.feed(&resp) {
            // Our first data packet (a keepalive) confirms the session to the responder.
            TunnResult::WriteToNetwork(keepalive) => self.send(keepalive).await,
            other => panic!("handshake response not accepted: {other:?}"),
        }
    }
}

fn key_bytes(k: &WgPrivateKey) -> [u8; 32] {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(k.to_base64().as_bytes())
        .unwrap()
        .try_into()
        .unwrap()
}

fn checksum(chunks: &[&[u8]]) -> u16 {
    let mut sum = 0u32;
    for c in chunks {
        for pair in c.chunks(2) {
            let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
            sum += u32::from(word);
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IPv4 TCP SYN from RAW_IP:src_port to NODE_IP:dst_port, checksums right.
fn tcp_syn(src_port: u16, dst_port: u16) -> Vec<u8> {
    let mut ip = vec![
        0x45, 0, 0, 40, 0, 1, 0x40, 0, 64, 6, 0, 0, //
        RAW_IP[0], RAW_IP[1], RAW_IP[2], RAW_IP[3], NODE_IP[0], NODE_IP[1], NODE_IP[2], NODE_IP[3],
    ];
    let c = checksum(&[&ip]);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let mut tcp = Vec::new();
    tcp.extend_from_slice(&src_port.to_be_bytes());
    tcp.extend_from_slice(&dst_port.to_be_bytes());
    tcp.extend_from_slice(&1000u32.to_be_bytes()); // seq
    tcp.extend_from_slice(&0u32.to_be_bytes()); // ack
    tcp.extend_from_slice(&[0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]); // offset 5, SYN, window
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&ip[12..20]);
    pseudo.extend_from_slice(&[0, 6, 0, 20]);
    let c = checksum(&[&pseudo, &tcp]);
    tcp[16..18].copy_from_slice(&c.to_be_bytes());
    ip.extend_from_slice(&tcp);
    ip
}

async fn node_for(raw: &WgPrivateKey, rate_limit: u64) -> WgNode {
    let mut cfg = WgConfig::new(
        WgPrivateKey::generate(),
        "127.0.0.1:0".parse().unwrap(),
        NODE_IP.into(),
    )
    .accepting_inbound()
    .with_peer(WgPeer::new(raw.public_key()).with_allowed_ip("10.99.9.2/32".parse().unwrap()));
    cfg.handshake_rate_limit = rate_limit;
    WgNode::bind(cfg).await.unwrap()
}

async fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_data_packet_is_dropped() {
    let raw_key = WgPrivateKey::generate();
    let node = node_for(&raw_key, 100).await;
    let _listener = node.listener();
    let mut raw = RawPeer::new(&raw_key, &node).await;
    raw.handshake().await;
    wait_for("the keepalive", || node.stats().rx_data_packets == 1).await;

    let syn = raw
        .tunn
        .handle_outgoing_packet(Packet::copy_from(&tcp_syn(40000, 7777)[..]), None)
        .expect("a data packet");
    let syn: Packet = syn.into();
    let captured = syn.to_vec();
    raw.send(syn).await;
    // The node's stack answers the SYN once: SYN-ACK back through the tunnel.
    let reply = raw.recv().await;
    match raw.feed(&reply) {
        TunnResult::WriteToTunnel(ip) => assert_eq!(ip[33] & 0x12, 0x12, "SYN-ACK"),
        other => panic!("expected a tunnelled SYN-ACK, got {other:?}"),
    }
    assert_eq!(node.stats().rx_data_packets, 2);
    assert_eq!(node.stats().rx_replayed, 0);

    // The same captured datagram again: authentic, but its counter was already seen.
    raw.udp.send_to(&captured, raw.node).await.unwrap();
    wait_for("the replay to be counted", || node.stats().rx_replayed == 1).await;
    let s = node.stats();
    assert_eq!(s.rx_data_packets, 2, "the replay was not delivered: {s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_handshake_limit_a_cookie_reply_comes_back_and_then_works() {
    let raw_key = WgPrivateKey::generate();
    let node = node_for(&raw_key, 1).await;
    let mut raw = RawPeer::new(&raw_key, &node).await;

    // Initiations back to back from one address: past 1 per second the node is under load and
    // answers with a cookie reply (64 bytes, type 3) instead of doing the DH work.
    let mut cookie = None;
    for _ in 0..10 {
        let init = raw.tunn.format_handshake_initiation(true).unwrap();
        raw.send(init).await;
        let answer = raw.recv().await;
        if answer.len() == 64 && answer[0] == 3 {
            cookie = Some(answer);
            break;
        }
        assert_eq!(answer.len(), 92, "a response or a cookie reply");
    }
    let cookie = cookie.expect("a cookie reply under load");
    assert!(node.stats().cookie_replies_sent >= 1);
    assert!(matches!(raw.feed(&cookie), TunnResult::Done));

    // With the cookie, the next initiation carries a valid mac2 and is answered while the node
    // is still under load.
    let init = raw.tunn.format_handshake_initiation(true).unwrap();
    raw.send(init).await;
    let answer = raw.recv().await;
    assert_eq!(answer.len(), 92, "handshake response after the cookie");
    assert!(matches!(raw.feed(&answer), TunnResult::WriteToNetwork(_)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_datagrams_are_dropped_and_the_tunnel_still_works() {
    let raw_key = WgPrivateKey::generate();
    let node = node_for(&raw_key, 100).await;
    let _listener = node.listener();
    let mut raw = RawPeer::new(&raw_key, &node).await;
    let junk: [&[u8]; 6] = [
        b"",
        b"\x01",
        &[4u8; 15],
        &[4u8; 200],
        &[1u8; 148],
        &[3u8; 64],
    ];
    for j in junk {
        raw.udp.send_to(j, raw.node).await.unwrap();
    }
    wait_for("the junk to be dropped", || node.stats().rx_dropped >= 5).await;
    raw.handshake().await;
    wait_for("the keepalive", || node.stats().rx_data_packets == 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_initiator_rekeys_after_the_rekey_interval() {
    // The protocol says 120 s; the engine's timer parameters compress it to 1 s here.
    let (server_key, client_key) = (WgPrivateKey::generate(), WgPrivateKey::generate());
    let any = "127.0.0.1:0".parse().unwrap();
    let server = WgNode::bind(
        WgConfig::new(server_key.clone(), any, NODE_IP.into())
            .accepting_inbound()
            .with_peer(
                WgPeer::new(client_key.public_key())
                    .with_allowed_ip("10.99.9.2/32".parse().unwrap()),
            ),
    )
    .await
    .unwrap();
    let listener = server.listener();
    tokio::spawn(async move {
        while let Ok(mut inbound) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = tokio::io::split(&mut inbound.stream);
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    let mut cfg = WgConfig::new(client_key, any, RAW_IP.into()).with_peer(
        WgPeer::new(server_key.public_key())
            .with_endpoint(server.local_addr())
            .with_allowed_ip("10.99.9.0/24".parse().unwrap()),
    );
    cfg.rekey_after_time = Duration::from_secs(1);
    let client = WgNode::bind(cfg).await.unwrap();

    let mut s = client
        .connect(&Target::new("10.99.9.1:7".parse().unwrap()))
        .await
        .unwrap();
    let started = Instant::now();
    let mut round = 0u32;
    while started.elapsed() < Duration::from_millis(3500) {
        let msg = round.to_be_bytes();
        s.write_all(&msg).await.unwrap();
        let mut back = [0u8; 4];
        s.read_exact(&mut back).await.unwrap();
        assert_eq!(back, msg, "the stream survives rekeying");
        round += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let c = client.stats();
    let sv = server.stats();
    assert!(
        c.handshakes_initiated >= 3,
        "client rekeyed about every second: {c:?}"
    );
    assert!(c.sessions_established >= 3, "{c:?}");
    assert!(sv.sessions_established >= 3, "{sv:?}");
}

#[tokio::test]
async fn fips_required_is_refused() {
    let mut cfg = WgConfig::new(
        WgPrivateKey::generate(),
        "127.0.0.1:0".parse().unwrap(),
        NODE_IP.into(),
    );
    cfg.fips = FipsRequirement::Required;
    match WgNode::bind(cfg.clone()).await {
        Err(TransportError::FipsRequired { backend, cipher }) => {
            assert_eq!(backend, "wireguard");
            assert_eq!(cipher, "ChaCha20-Poly1305");
        }
        other => panic!("expected FipsRequired, got {other:?}"),
    }
    cfg.fips = FipsRequirement::NotRequired;
    let node = WgNode::bind(cfg).await.unwrap();
    let info = Transport::security(&node);
    assert_eq!(info.backend, "wireguard");
    assert_eq!(info.protocol, "Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s");
    assert_eq!(info.cipher, "ChaCha20-Poly1305");
    assert!(!info.fips);
    assert_eq!(node.listener().security(), info);
    assert!(matches!(
        FipsRequirement::Required.check(&info),
        Err(TransportError::FipsRequired { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_to_a_dead_peer_fails_in_time_and_an_idle_node_sleeps() {
    // A UDP port nobody reads: the handshake is never answered.
    let dead = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut cfg = WgConfig::new(
        WgPrivateKey::generate(),
        "127.0.0.1:0".parse().unwrap(),
        RAW_IP.into(),
    )
    .with_peer(
        WgPeer::new(WgPrivateKey::generate().public_key())
            .with_endpoint(dead.local_addr().unwrap())
            .with_allowed_ip("10.99.9.0/24".parse().unwrap()),
    );
    cfg.connect_timeout = Duration::from_millis(800);
    let node = WgNode::bind(cfg).await.unwrap();
    let started = Instant::now();
    let r = node
        .connect(&Target::new("10.99.9.1:80".parse().unwrap()))
        .await;
    let Err(err) = r else {
        panic!("no peer answers: the connect must fail")
    };
    assert!(
        matches!(
            err.find_cause::<fipstun_wireguard::WgError>(),
            Some(fipstun_wireguard::WgError::ConnectTimeout(_))
        ),
        "{err:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(node.stats().handshakes_initiated >= 1);
    // Not routed anywhere: refused at once.
    assert!(matches!(
        node.connect(&Target::new("192.0.2.1:80".parse().unwrap()))
            .await,
        Err(TransportError::NoRoute(_))
    ));

    // Idle now: the driver wakes for the protocol timers (4/s) and smoltcp's, not in a loop.
    let before = node.stats().driver_rounds;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rounds = node.stats().driver_rounds - before;
    assert!(
        rounds < 40,
        "an idle node ran {rounds} driver rounds in 2 s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_cannot_send_from_outside_its_allowed_ips() {
    let raw_key = WgPrivateKey::generate();
    let node = node_for(&raw_key, 100).await;
    let _listener = node.listener();
    let mut raw = RawPeer::new(&raw_key, &node).await;
    raw.handshake().await;
    wait_for("the keepalive", || node.stats().rx_data_packets == 1).await;

    // Authentic and decrypted, but from 10.99.9.99: the peer is allowed only 10.99.9.2/32.
    let mut spoofed = tcp_syn(40001, 7777);
    spoofed[15] = 99;
    let c = checksum(&[&{
        let mut h = spoofed[..20].to_vec();
        h[10] = 0;
        h[11] = 0;
        h
    }]);
    spoofed[10..12].copy_from_slice(&c.to_be_bytes());
    let p = raw
        .tunn
        .handle_outgoing_packet(Packet::copy_from(&spoofed[..]), None)
        .unwrap();
    raw.send(p).await;
    wait_for("the spoofed packet to be dropped", || {
        node.stats().rx_dropped == 1
    })
    .await;
    let mut buf = [0u8; 2048];
    let answer =
        tokio::time::timeout(Duration::from_millis(300), raw.udp.recv_from(&mut buf)).await;
    assert!(answer.is_err(), "nothing answers a spoofed SYN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_initiator_answers_a_loaded_responder_with_the_cookie() {
    // A responder that is always under load (0 handshakes/s before cookies): the first
    // initiation gets a cookie reply; the retry (after REKEY_TIMEOUT, 5 s) carries mac2 and
    // is answered.
    let (server_key, client_key) = (WgPrivateKey::generate(), WgPrivateKey::generate());
    let any = "127.0.0.1:0".parse().unwrap();
    let mut server_cfg = WgConfig::new(server_key.clone(), any, NODE_IP.into())
        .accepting_inbound()
        .with_peer(
            WgPeer::new(client_key.public_key()).with_allowed_ip("10.99.9.2/32".parse().unwrap()),
        );
    server_cfg.handshake_rate_limit = 0;
    let server = WgNode::bind(server_cfg).await.unwrap();
    let listener = server.listener();
    tokio::spawn(async move {
        while let Ok(mut inbound) = listener.accept().await {
            let _ = inbound.stream.write_all(b"hi").await;
            let _ = inbound.stream.shutdown().await;
        }
    });
    let mut cfg = WgConfig::new(client_key, any, RAW_IP.into()).with_peer(
        WgPeer::new(server_key.public_key())
            .with_endpoint(server.local_addr())
            .with_allowed_ip("10.99.9.0/24".parse().unwrap()),
    );
    cfg.connect_timeout = Duration::from_secs(15);
    let client = WgNode::bind(cfg).await.unwrap();
    let mut s = client
        .connect(&Target::new("10.99.9.1:80".parse().unwrap()))
        .await
        .unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"hi");
    let (c, sv) = (client.stats(), server.stats());
    assert!(sv.cookie_replies_sent >= 1, "{sv:?}");
    assert!(c.cookie_replies_received >= 1, "{c:?}");
    assert!(c.handshakes_initiated >= 2, "{c:?}");
}
