//! fipstun-wireguard: a WireGuard-compatible tunnel backend for fipstun — the real WireGuard
//! wire format, interoperable with wireguard-go, and **never FIPS-approved**.
//!
//! A [`WgNode`] owns one UDP socket, one protocol engine per peer and a userspace TCP/IP stack
//! inside the tunnel, so it needs neither root nor a TUN device:
//!
//! - outbound ([`fipstun_transport::Transport`]): `connect(target)` opens a TCP connection
//!   through the tunnel to `target` and returns it as a tokio stream ([`WgStream`]);
//! - inbound ([`WgListener`], a [`fipstun_transport::TunnelListener`]): with
//!   [`WgConfig::accept_inbound`] the node accepts tunnelled TCP connections to *any*
//!   destination, like a transparent proxy, and reports the peer's key (mapped to a SPIFFE ID if
//!   configured) and the destination as the target. As an [`fipstun_transport::Acceptor`] it
//!   feeds the one [`fipstun_transport::Forwarder`], which judges each stream by a policy,
//!   dials the target, and resets the streams it refuses.
//!
//! ```
//! use std::sync::Arc;
//! use fipstun_transport::{FipsRequirement, Target, Transport, TransportError};
//! use fipstun_wireguard::{WgConfig, WgNode, WgPeer, WgPrivateKey};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let (server_key, client_key) = (WgPrivateKey::generate(), WgPrivateKey::generate());
//! let any = "127.0.0.1:0".parse()?;
//! let server = WgNode::bind(
//!     WgConfig::new(server_key.clone(), any, "10.99.9.1".parse()?)
//!         .accepting_inbound()
//!         .with_peer(WgPeer::new(client_key.public_key()).with_allowed_ip("10.99.9.2/32".parse()?)),
//! )
//! .await?;
//! // The server side: any peer may reach loopback targets (a rule must name loopback).
//! use fipstun_transport::{Forwarder, ForwarderConfig, PlainTcp, policy::{Policy, Rule}};
//! let policy = Policy::new(vec![Rule::allow(["*"], ["127.0.0.0/8"])?]);
//! let forwarder = Forwarder::new(PlainTcp, policy, ForwarderConfig::default());
//! let listener = server.listener();
//! tokio::spawn(async move { forwarder.run(listener).await });
//!
//! let client = WgNode::bind(WgConfig::new(client_key, any, "10.99.9.2".parse()?).with_peer(
//!     WgPeer::new(server_key.public_key())
//!         .with_endpoint(server.local_addr())
//!         .with_allowed_ip("0.0.0.0/0".parse()?),
//! ))
//! .await?;
//!
//! // An echo server on loopback; the server node dials it for us.
//! let echo = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let target = Target::new(echo.local_addr()?);
//! tokio::spawn(async move {
//!     let (mut s, _) = echo.accept().await.unwrap();
//!     let (mut r, mut w) = s.split();
//!     tokio::io::copy(&mut r, &mut w).await.unwrap();
//! });
//! let mut stream = client.connect(&target).await?;
//! stream.write_all(b"ping").await?;
//! let mut back = [0u8; 4];
//! stream.read_exact(&mut back).await?;
//! assert_eq!(&back, b"ping");
//!
//! // WireGuard is never FIPS: asking for FIPS is refused.
//! assert!(!client.security().fips);
//! let mut strict = WgConfig::new(WgPrivateKey::generate(), any, "10.99.9.3".parse()?);
//! strict.fips = FipsRequirement::Required;
//! assert!(matches!(WgNode::bind(strict).await, Err(TransportError::FipsRequired { .. })));
//! # Ok(()) }
//! ```
//!
//! ## Protocol engine: gotatun, not boringtun
//!
//! The Noise_IKpsk2 handshake, data packets, timers, replay window and cookies come from
//! [gotatun](https://crates.io/crates/gotatun) 0.10, Mullvad's maintained fork of boringtun,
//! driven through its sans-IO `Tunn` API (`handle_incoming_packet`, `handle_outgoing_packet`,
//! `update_timers`); this crate owns the sockets, the clock and the TCP/IP stack. We chose it
//! over boringtun 0.7 because it is maintained; its replay window is 8192 bits (RFC 6479
//! style, as the protocol and the kernel use); it pads data packets to 16 bytes; it enforces
//! `REJECT_AFTER_MESSAGES`; it rate-limits handshakes per source IP and answers with cookie
//! replies; it lets the timers be tuned (used here to test rekeying); and its data-path AEAD
//! comes from aws-lc-rs, the library the workspace already links, so it adds no `ring`
//! (`cargo tree -i ring` stays empty). It does bring a second crypto stack for the handshake
//! (RustCrypto and dalek, below). boringtun 0.7 is older and, per the project's evaluation,
//! brings `ring`, a 1024-bit window and no padding; it was not built here.
//!
//! Where each primitive runs — none of them is FIPS-approved:
//!
//! - data-packet ChaCha20-Poly1305: aws-lc-rs. The workspace builds aws-lc-rs with `fips`, so
//!   this runs inside the AWS-LC FIPS module, but as a **non-approved service**;
//! - handshake X25519: `x25519-dalek`; BLAKE2s, its HMAC and the MACs: RustCrypto `blake2`;
//!   handshake ChaCha20-Poly1305 and cookie XChaCha20-Poly1305: RustCrypto
//!   `chacha20poly1305` — outside any FIPS module.
//!
//! [`WgNode::security`] therefore reports `fips: false`, and [`WgNode::bind`] refuses a
//! configuration with [`fipstun_transport::FipsRequirement::Required`] with
//! [`fipstun_transport::TransportError::FipsRequired`].
//!
//! ## Data path
//!
//! smoltcp 0.14 (medium IP, IPv4 and IPv6, Cubic congestion control) is the TCP/IP stack
//! inside the tunnel. UDP goes through quinn-udp: recvmmsg with GRO in, sendmsg with GSO out
//! (trains of equal-size datagrams to one peer, at most 64 KiB each), so a full window costs a
//! few dozen syscalls rather than one per packet. The node sizes the socket buffers itself
//! ([`WgConfig::udp_socket_buffer_bytes`], 8 MiB by default, forced past `rmem_max` when it
//! runs as root); [`WgNode::socket_buffers`] reports what the kernel granted. Packet buffers
//! come from gotatun's pool; gotatun still allocates one buffer per encrypted packet.
//!
//! ## Inbound policy
//!
//! The inbound side accepts a TCP connection to any destination from any configured peer, as
//! long as the inner source address is inside that peer's allowed IPs (crypto-key routing:
//! anything else is dropped before the TCP/IP stack sees it). Whether the peer may reach the
//! destination is the application's decision, made on [`fipstun_transport::Inbound::peer`]
//! and [`fipstun_transport::Inbound::target`]; the [`fipstun_transport::Forwarder`] makes it
//! with a deny-by-default policy that judges the peer by its configured SPIFFE ID (a peer
//! without one matches only `*` rules) and resets what it refuses. Inbound connections wait
//! in a bounded queue (1,024); beyond it they are reset.
//!
//! ## Timers
//!
//! The engine's timers (rekey after 120 s, keepalive after 10 s, handshake retry after 5 s
//! plus jitter, give up after 90 s) are evaluated every 250 ms by the node's driver task.
//! [`WgConfig::rekey_after_time`] shortens the rekey interval for tests; the engine reads the
//! system clock itself, so tests run in compressed real time rather than virtual time.
#![forbid(unsafe_code)]

mod config;
mod device;
mod error;
mod flows;
mod node;
mod stream;
mod udp;

pub use config::{
    DEFAULT_MTU, DEFAULT_PORT, IpPrefix, MTU_RANGE, WgConfig, WgPeer, WgPresharedKey, WgPrivateKey,
    WgPublicKey,
};
pub use error::WgError;
pub use node::{
    BACKEND, CIPHER, NOISE_PROTOCOL, WgListener, WgNode, WgPending, WgStats, security_info,
};
pub use stream::WgStream;
pub use udp::SocketBuffers;

/// Parsers of the decrypted packets that arrive inside the tunnel (untrusted bytes from an
/// authenticated peer), public for fuzzing and tests.
pub mod inner_packet {
    pub use crate::node::{destination, parse_syn};
}

// The crate README's example, compiled and run by `cargo test --doc` so it cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
