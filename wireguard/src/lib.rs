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
//!   configured) and the destination as the target. [`fipstun_transport::forward`] dials it.
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
//! tokio::spawn(fipstun_transport::forward(server.listener()));
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
//! used through its sans-IO `Tunn` API (`handle_incoming_packet`, `handle_outgoing_packet`,
//! `update_timers`). It was chosen over boringtun 0.7 because it is maintained, keeps an
//! 8192-bit replay window (boringtun: 1024), pads data packets to 16 bytes as the protocol
//! asks, enforces the message limits, has per-source-IP handshake rate limiting with cookie
//! replies, exposes timer tuning, and does not pull `ring` (boringtun does). `cargo tree -i
//! ring` stays empty with it.
//!
//! Where each primitive runs (none of them is FIPS-approved):
//!
//! - data-packet ChaCha20-Poly1305: aws-lc-rs. The workspace builds aws-lc-rs with `fips`, so
//!   this runs inside the AWS-LC FIPS module, but as a **non-approved service**;
//! - handshake X25519: `x25519-dalek`; BLAKE2s/HMAC: RustCrypto `blake2`; handshake AEAD and
//!   cookie XChaCha20-Poly1305: RustCrypto `chacha20poly1305` — outside any FIPS module.
//!
//! [`WgNode::security`] therefore reports `fips: false`, and [`WgNode::bind`] refuses a
//! configuration with [`fipstun_transport::FipsRequirement::Required`] with
//! [`fipstun_transport::TransportError::FipsRequired`].
//!
//! ## Data path
//!
//! smoltcp 0.14 (medium IP) is the TCP/IP stack inside the tunnel; UDP uses quinn-udp
//! (recvmmsg + GRO in, sendmsg + GSO out) on a socket whose buffers the node sizes itself
//! ([`WgConfig::udp_socket_buffer_bytes`], forced past `rmem_max` when running as root;
//! [`WgNode::socket_buffers`] reports what the kernel granted). Packet buffers come from
//! gotatun's pool; gotatun itself still allocates one buffer per encrypted packet.
#![forbid(unsafe_code)]

mod config;
mod device;
mod error;
mod node;
mod stream;
mod udp;

pub use config::{
    DEFAULT_MTU, DEFAULT_PORT, IpPrefix, WgConfig, WgPeer, WgPresharedKey, WgPrivateKey,
    WgPublicKey,
};
pub use error::WgError;
pub use node::{BACKEND, CIPHER, NOISE_PROTOCOL, WgListener, WgNode, WgStats, security_info};
pub use stream::WgStream;
pub use udp::SocketBuffers;
