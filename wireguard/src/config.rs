//! Node and peer configuration: keys as `wg` writes them (base64), allowed IPs, endpoints.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use fipstun_identity::spiffe::SpiffeId;
use fipstun_transport::FipsRequirement;
use zeroize::Zeroizing;

use crate::WgError;

/// The inner MTU WireGuard uses on a 1500-byte path (DESIGN §5): 1500 - 20 (IPv4) - 8 (UDP) -
/// 32 (WireGuard data header and tag) - 20 spare for an IPv6 outer header.
pub const DEFAULT_MTU: u16 = 1420;

/// The inner MTUs [`crate::WgNode::bind`] accepts: IPv6's minimum link MTU up to what the
/// node's packet buffers hold.
pub const MTU_RANGE: std::ops::RangeInclusive<u16> = 1280..=4000;

/// The standard WireGuard UDP port.
pub const DEFAULT_PORT: u16 = 51820;

fn decode_key(what: &'static str, s: &str) -> Result<[u8; 32], WgError> {
    let bytes = Zeroizing::new(BASE64.decode(s.trim()).map_err(|_| WgError::BadKey {
        what,
        reason: "not base64",
    })?);
    bytes.as_slice().try_into().map_err(|_| WgError::BadKey {
        what,
        reason: "not 32 bytes",
    })
}

/// A Curve25519 static private key. `Debug` never prints it.
#[derive(Clone)]
pub struct WgPrivateKey(Zeroizing<[u8; 32]>);

impl WgPrivateKey {
    /// A new random key (from the OS RNG), like `wg genkey`.
    pub fn generate() -> Self {
        Self::from_bytes(rand::random())
    }

    /// The key from its 32 raw bytes (clamped when used, as X25519 does).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// The matching public key, like `wg pubkey`.
    pub fn public_key(&self) -> WgPublicKey {
        let secret = gotatun::x25519::StaticSecret::from(*self.0);
        WgPublicKey(gotatun::x25519::PublicKey::from(&secret).to_bytes())
    }

    /// The key as base64, as `wg` writes it (for handing to `wg set ... private-key`).
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(BASE64.encode(*self.0))
    }

    pub(crate) fn secret(&self) -> gotatun::x25519::StaticSecret {
        gotatun::x25519::StaticSecret::from(*self.0)
    }
}

impl FromStr for WgPrivateKey {
    type Err = WgError;
    fn from_str(s: &str) -> Result<Self, WgError> {
        decode_key("private key", s).map(Self::from_bytes)
    }
}

impl fmt::Debug for WgPrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WgPrivateKey(public {})", self.public_key())
    }
}

/// A Curve25519 static public key; displays as base64, like `wg show`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct WgPublicKey(pub [u8; 32]);

impl FromStr for WgPublicKey {
    type Err = WgError;
    fn from_str(s: &str) -> Result<Self, WgError> {
        decode_key("public key", s).map(Self)
    }
}

impl fmt::Display for WgPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&BASE64.encode(self.0))
    }
}

impl fmt::Debug for WgPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WgPublicKey({self})")
    }
}

/// A 32-byte pre-shared key mixed into the handshake (the `psk2` of the Noise pattern).
#[derive(Clone)]
pub struct WgPresharedKey(Zeroizing<[u8; 32]>);

impl WgPresharedKey {
    /// A new random pre-shared key, like `wg genpsk`.
    pub fn generate() -> Self {
        Self(Zeroizing::new(rand::random()))
    }

    /// The key as base64, as `wg` writes it.
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(BASE64.encode(*self.0))
    }

    pub(crate) fn bytes(&self) -> [u8; 32] {
        *self.0
    }
}

impl FromStr for WgPresharedKey {
    type Err = WgError;
    fn from_str(s: &str) -> Result<Self, WgError> {
        decode_key("pre-shared key", s).map(|k| Self(Zeroizing::new(k)))
    }
}

impl fmt::Debug for WgPresharedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WgPresharedKey(..)")
    }
}

/// An IP prefix such as `10.99.1.0/24` or `0.0.0.0/0`: an allowed-IPs entry or a tunnel address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IpPrefix {
    addr: IpAddr,
    len: u8,
}

impl IpPrefix {
    /// `addr/len`; fails if `len` exceeds the address width (32 or 128).
    pub fn new(addr: IpAddr, len: u8) -> Result<Self, WgError> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if len > max {
            return Err(WgError::BadPrefix(format!(
                "{addr}/{len}: prefix longer than {max}"
            )));
        }
        Ok(Self { addr, len })
    }

    /// A single host: `/32` or `/128`.
    pub fn host(addr: IpAddr) -> Self {
        Self {
            addr,
            len: if addr.is_ipv4() { 32 } else { 128 },
        }
    }

    /// The address part, as written.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length in bits.
    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    /// Whether `ip` lies inside this prefix.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.len))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for IpPrefix {
    type Err = WgError;
    fn from_str(s: &str) -> Result<Self, WgError> {
        let bad = || WgError::BadPrefix(s.to_string());
        match s.split_once('/') {
            Some((a, l)) => {
                let addr: IpAddr = a.parse().map_err(|_| bad())?;
                let len: u8 = l.parse().map_err(|_| bad())?;
                Self::new(addr, len)
            }
            None => Ok(Self::host(s.parse().map_err(|_| bad())?)),
        }
    }
}

impl fmt::Display for IpPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// One peer: who it is (public key, optional SPIFFE ID), how to reach it, what it may send.
#[derive(Clone, Debug)]
pub struct WgPeer {
    /// The peer's static public key.
    pub public_key: WgPublicKey,
    /// Optional pre-shared key (must match the peer's).
    pub preshared_key: Option<WgPresharedKey>,
    /// Where to send handshakes first; learned (and updated) from authenticated packets too.
    pub endpoint: Option<SocketAddr>,
    /// Inner addresses this peer may send from and that we route to it (crypto-key routing).
    pub allowed_ips: Vec<IpPrefix>,
    /// Send a keepalive after this many idle seconds (`None`: off).
    pub persistent_keepalive_secs: Option<u16>,
    /// The SPIFFE ID inbound streams from this peer are reported under.
    pub spiffe: Option<SpiffeId>,
}

impl WgPeer {
    /// A peer with `public_key` and nothing else configured.
    pub fn new(public_key: WgPublicKey) -> Self {
        Self {
            public_key,
            preshared_key: None,
            endpoint: None,
            allowed_ips: Vec::new(),
            persistent_keepalive_secs: None,
            spiffe: None,
        }
    }

    /// Set the endpoint.
    pub fn with_endpoint(mut self, endpoint: SocketAddr) -> Self {
        self.endpoint = Some(endpoint);
        self
    }

    /// Add an allowed-IPs entry.
    pub fn with_allowed_ip(mut self, prefix: IpPrefix) -> Self {
        self.allowed_ips.push(prefix);
        self
    }

    /// Set the pre-shared key.
    pub fn with_preshared_key(mut self, psk: WgPresharedKey) -> Self {
        self.preshared_key = Some(psk);
        self
    }

    /// Map this peer's key to a SPIFFE ID.
    pub fn with_spiffe(mut self, id: SpiffeId) -> Self {
        self.spiffe = Some(id);
        self
    }
}

/// Everything a [`crate::WgNode`] needs.
#[derive(Clone, Debug)]
pub struct WgConfig {
    /// Our static private key.
    pub private_key: WgPrivateKey,
    /// The UDP address to bind (port 0: any free port).
    pub listen_addr: SocketAddr,
    /// Our addresses inside the tunnel (the source of the streams we open). At least one.
    pub addresses: Vec<IpPrefix>,
    /// The inner MTU (IP packet size inside the tunnel).
    pub mtu: u16,
    /// The peers.
    pub peers: Vec<WgPeer>,
    /// Whether the deployment demands FIPS; WireGuard is never FIPS, so `Required` is refused.
    pub fips: FipsRequirement,
    /// Accept inbound tunnelled TCP connections to any destination (the server role).
    pub accept_inbound: bool,
    /// SO_RCVBUF and SO_SNDBUF asked of the kernel for the UDP socket, in bytes.
    pub udp_socket_buffer_bytes: usize,
    /// Receive and send buffer of each tunnelled TCP connection, in bytes (the TCP window).
    /// The default, 1 MiB, keeps one bulk stream through two userspace stacks from waiting on
    /// its window (256 KiB: -20% on one stream, BENCHMARKS.md). Memory follows use: the rings
    /// restart at their front when empty, so a request/response connection touches its first
    /// pages only, and a busy bulk stream about twice this per side.
    pub tcp_buffer_bytes: usize,
    /// How long [`fipstun_transport::Transport::connect`] waits for the handshake and the TCP
    /// three-way handshake.
    pub connect_timeout: Duration,
    /// Handshake messages per second per source IP before the node answers with cookie
    /// replies instead (WireGuard's under-load mode).
    pub handshake_rate_limit: u64,
    /// Session age after which the initiator rekeys. The protocol's value is 120 s; change it
    /// only to test rekeying.
    pub rekey_after_time: Duration,
}

impl WgConfig {
    /// A configuration with our key, bound to `listen_addr`, with the tunnel address `address`,
    /// and every other field at its default: MTU 1420, no peers, FIPS not required, inbound
    /// off, 8 MiB UDP socket buffers, 1 MiB TCP buffers, 10 s connect timeout, 100 handshakes
    /// per second per IP, rekey after 120 s.
    pub fn new(private_key: WgPrivateKey, listen_addr: SocketAddr, address: IpAddr) -> Self {
        Self {
            private_key,
            listen_addr,
            addresses: vec![IpPrefix::host(address)],
            mtu: DEFAULT_MTU,
            peers: Vec::new(),
            fips: FipsRequirement::NotRequired,
            accept_inbound: false,
            udp_socket_buffer_bytes: 8 << 20,
            tcp_buffer_bytes: 1 << 20,
            connect_timeout: Duration::from_secs(10),
            handshake_rate_limit: 100,
            rekey_after_time: Duration::from_secs(120),
        }
    }

    /// Add a peer.
    pub fn with_peer(mut self, peer: WgPeer) -> Self {
        self.peers.push(peer);
        self
    }

    /// Accept inbound tunnelled connections (needed for [`crate::WgNode::listener`]).
    pub fn accepting_inbound(mut self) -> Self {
        self.accept_inbound = true;
        self
    }
}

/// Longest-prefix match over every peer's allowed IPs: `route(ip)` is the peer index.
#[derive(Debug, Default)]
pub(crate) struct AllowedIps {
    /// Sorted by prefix length, longest first, so the first hit is the most specific.
    entries: Vec<(IpPrefix, usize)>,
}

impl AllowedIps {
    pub(crate) fn new(peers: &[WgPeer]) -> Self {
        let mut entries: Vec<(IpPrefix, usize)> = peers
            .iter()
            .enumerate()
            .flat_map(|(i, p)| p.allowed_ips.iter().map(move |a| (*a, i)))
            .collect();
        entries.sort_by_key(|e| std::cmp::Reverse(e.0.len));
        Self { entries }
    }

    pub(crate) fn route(&self, ip: IpAddr) -> Option<usize> {
        self.entries
            .iter()
            .find(|(p, _)| p.contains(ip))
            .map(|(_, i)| *i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_like_wg() {
        // `wg genkey` / `wg pubkey` vector: the RFC 7748 §6.1 Alice key pair, base64.
        let private: WgPrivateKey = "dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo="
            .parse()
            .unwrap();
        assert_eq!(
            private.public_key().to_string(),
            "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo="
        );
        assert_eq!(
            &*private.to_base64(),
            "dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo="
        );
        assert!(!format!("{private:?}").contains("dwdt"));
        assert!(matches!(
            "YWJj".parse::<WgPublicKey>(),
            Err(WgError::BadKey {
                reason: "not 32 bytes",
                ..
            })
        ));
        assert!(matches!(
            "!!!".parse::<WgPublicKey>(),
            Err(WgError::BadKey {
                reason: "not base64",
                ..
            })
        ));
    }

    #[test]
    fn prefixes_parse_and_match() {
        let p: IpPrefix = "10.99.1.0/24".parse().unwrap();
        assert!(p.contains("10.99.1.200".parse().unwrap()));
        assert!(!p.contains("10.99.2.1".parse().unwrap()));
        assert!(!p.contains("::1".parse().unwrap()));
        let all: IpPrefix = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("127.0.0.1".parse().unwrap()));
        let host: IpPrefix = "fd00::1".parse().unwrap();
        assert_eq!(host.prefix_len(), 128);
        assert!(host.contains("fd00::1".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<IpPrefix>().is_err());
        assert!("10.0.0/8".parse::<IpPrefix>().is_err());
        assert!("".parse::<IpPrefix>().is_err());
    }

    #[test]
    fn longest_prefix_wins() {
        let k = WgPublicKey([1; 32]);
        let peers = vec![
            WgPeer::new(k).with_allowed_ip("0.0.0.0/0".parse().unwrap()),
            WgPeer::new(k).with_allowed_ip("10.1.0.0/16".parse().unwrap()),
            WgPeer::new(k).with_allowed_ip("10.1.2.3/32".parse().unwrap()),
        ];
        let t = AllowedIps::new(&peers);
        assert_eq!(t.route("10.1.2.3".parse().unwrap()), Some(2));
        assert_eq!(t.route("10.1.9.9".parse().unwrap()), Some(1));
        assert_eq!(t.route("8.8.8.8".parse().unwrap()), Some(0));
        assert_eq!(t.route("::1".parse().unwrap()), None);
    }
}
