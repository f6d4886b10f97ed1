//! Where a stream should end up: an IP address or a DNS name, and a port. Parsing an authority
//! (`10.0.0.1:80`, `[::1]:80`, `svc.ns.svc.cluster.local:8080`) never panics and says what was
//! wrong; resolving a name is a separate, explicit step ([`Target::resolve`]).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use crate::TransportError;

/// Longest DNS name, without the trailing dot (RFC 1035 §2.3.4: 255 octets on the wire).
const MAX_NAME_LEN: usize = 253;
/// Longest DNS label (RFC 1035 §2.3.4).
const MAX_LABEL_LEN: usize = 63;

/// Why a string is not a [`Target`] or a [`DnsName`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TargetError {
    /// The authority is empty.
    #[error("the target is empty; expected host:port")]
    Empty,
    /// The authority has no `:port`.
    #[error("target {0:?} has no port; expected host:port")]
    MissingPort(String),
    /// The port is not a decimal number in 1..=65535 without leading zeros.
    #[error("target {authority:?} has an invalid port {port:?} (1..=65535)")]
    BadPort {
        /// The whole authority (truncated to 64 bytes).
        authority: String,
        /// The port text (truncated).
        port: String,
    },
    /// An IPv6 address must be written in brackets, like `[::1]:8080`.
    #[error("target {0:?}: an IPv6 address must be written in brackets, like [::1]:80")]
    UnbracketedIpv6(String),
    /// The text in brackets is not an IPv6 address, or something follows the brackets.
    #[error("target {0:?}: not a bracketed IPv6 address followed by :port")]
    BadIpv6(String),
    /// The host is not an IP address and not a valid DNS name.
    #[error("{name:?} is not a valid DNS name: {reason}")]
    BadName {
        /// The host text (truncated to 64 bytes).
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
}

fn truncated(s: &str) -> String {
    let mut end = s.len().min(64);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// A validated DNS host name, stored lowercase without a trailing dot: 1..=253 bytes of
/// labels of 1..=63 letters, digits and `-` (not first or last), and not an IP literal.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DnsName(String);

impl DnsName {
    /// Check and normalize `name` (one trailing dot is accepted and dropped).
    ///
    /// ```
    /// use fipstun_transport::DnsName;
    ///
    /// assert_eq!(DnsName::new("Svc.NS.svc.cluster.local.").unwrap().as_str(), "svc.ns.svc.cluster.local");
    /// assert!(DnsName::new("10.0.0.1").is_err());
    /// assert!(DnsName::new("-bad.example").is_err());
    /// ```
    pub fn new(name: &str) -> Result<Self, TargetError> {
        let bad = |reason| TargetError::BadName {
            name: truncated(name),
            reason,
        };
        let s = name.strip_suffix('.').unwrap_or(name);
        if s.is_empty() {
            return Err(bad("it is empty"));
        }
        if s.len() > MAX_NAME_LEN {
            return Err(bad("it is longer than 253 bytes"));
        }
        for label in s.split('.') {
            if label.is_empty() {
                return Err(bad("it has an empty label"));
            }
            if label.len() > MAX_LABEL_LEN {
                return Err(bad("a label is longer than 63 bytes"));
            }
            if !label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            {
                return Err(bad("only letters, digits, '-' and '.' are allowed"));
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err(bad("a label starts or ends with '-'"));
            }
        }
        // `1.2.3`, `010.0.0.1`: malformed addresses, not names a resolver should be asked for.
        if s.split('.').all(|l| l.bytes().all(|b| b.is_ascii_digit())) {
            return Err(bad("it is an IP address (or looks like one), not a name"));
        }
        Ok(Self(s.to_ascii_lowercase()))
    }

    /// The name, lowercase, without a trailing dot.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for DnsName {
    type Err = TargetError;

    fn from_str(s: &str) -> Result<Self, TargetError> {
        Self::new(s)
    }
}

impl fmt::Display for DnsName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The host part of a [`Target`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Host {
    /// An IP address.
    Ip(IpAddr),
    /// A DNS name, resolved by whoever dials it (or by the forwarder, to judge it).
    Name(DnsName),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            Self::Ip(ip) => ip.fmt(f),
            Self::Name(n) => n.fmt(f),
        }
    }
}

/// Where a tunnelled stream should end up: the final destination, as the peer node will dial
/// it — an IP address or a DNS name, and a port. Written in authority form (`1.2.3.4:80`,
/// `[::1]:80`, `svc.ns.svc.cluster.local:8080`), which is what HBONE puts in `:authority`.
///
/// ```
/// use fipstun_transport::{Host, Target};
///
/// let t: Target = "svc.ns.svc.cluster.local:8080".parse().unwrap();
/// assert!(matches!(t.host(), Host::Name(_)));
/// assert_eq!(t.socket_addr(), None);
/// assert_eq!(t.to_string(), "svc.ns.svc.cluster.local:8080");
/// let ip = Target::parse("[::1]:80").unwrap();
/// assert_eq!(ip.socket_addr(), Some("[::1]:80".parse().unwrap()));
/// assert!(Target::parse("10.0.0.1:0").is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Target {
    host: Host,
    port: u16,
}

impl Target {
    /// A target at the socket address `addr` (an IPv6 scope id is not kept).
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            host: Host::Ip(addr.ip()),
            port: addr.port(),
        }
    }

    /// A target at `host` (a DNS name, or an IP address written without brackets) and `port`
    /// (not 0).
    pub fn name(host: &str, port: u16) -> Result<Self, TargetError> {
        if port == 0 {
            return Err(TargetError::BadPort {
                authority: truncated(&format!("{host}:0")),
                port: "0".into(),
            });
        }
        let host = match IpAddr::from_str(host) {
            Ok(ip) => Host::Ip(ip),
            Err(_) => Host::Name(DnsName::new(host)?),
        };
        Ok(Self { host, port })
    }

    /// Parse an authority: `ip:port`, `[v6]:port` or `name:port`, port 1..=65535.
    pub fn parse(authority: &str) -> Result<Self, TargetError> {
        let s = authority;
        if s.is_empty() {
            return Err(TargetError::Empty);
        }
        if let Some(rest) = s.strip_prefix('[') {
            let Some((inner, after)) = rest.split_once(']') else {
                return Err(TargetError::BadIpv6(truncated(s)));
            };
            let ip = Ipv6Addr::from_str(inner).map_err(|_| TargetError::BadIpv6(truncated(s)))?;
            let port = match after.strip_prefix(':') {
                Some(p) => parse_port(s, p)?,
                None if after.is_empty() => return Err(TargetError::MissingPort(truncated(s))),
                None => return Err(TargetError::BadIpv6(truncated(s))),
            };
            return Ok(Self {
                host: Host::Ip(IpAddr::V6(ip)),
                port,
            });
        }
        let Some((host, port)) = s.rsplit_once(':') else {
            return Err(TargetError::MissingPort(truncated(s)));
        };
        if host.contains(':') {
            // `::1:80` or a bare IPv6 address: its last group would be read as a port.
            return Err(TargetError::UnbracketedIpv6(truncated(s)));
        }
        let port = parse_port(s, port)?;
        let host = match Ipv4Addr::from_str(host) {
            Ok(ip) => Host::Ip(IpAddr::V4(ip)),
            Err(_) => Host::Name(DnsName::new(host)?),
        };
        Ok(Self { host, port })
    }

    /// The socket address, when the host is an IP address.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        match &self.host {
            Host::Ip(ip) => Some(SocketAddr::new(*ip, self.port)),
            Host::Name(_) => None,
        }
    }

    /// The host: an IP address or a DNS name.
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// The port (never 0 for a parsed or named target).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The addresses to dial: the address itself, or what the system resolver
    /// (`tokio::net::lookup_host`) gives for the name. A name that resolves to nothing is an
    /// error ([`TransportError::Unreachable`]), as is a failed lookup (with the `io::Error` as
    /// its source).
    pub async fn resolve(&self) -> Result<Vec<SocketAddr>, TransportError> {
        let name = match &self.host {
            Host::Ip(ip) => return Ok(vec![SocketAddr::new(*ip, self.port)]),
            Host::Name(n) => n,
        };
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), self.port))
            .await
            .map_err(|e| TransportError::Unreachable {
                target: self.clone(),
                reason: format!("cannot resolve {name}: {e}"),
                source: Some(e.into()),
            })?
            .collect();
        if addrs.is_empty() {
            return Err(TransportError::unreachable(
                self,
                format!("{name} resolves to no address"),
            ));
        }
        Ok(addrs)
    }
}

fn parse_port(authority: &str, p: &str) -> Result<u16, TargetError> {
    if p.is_empty() {
        return Err(TargetError::MissingPort(truncated(authority)));
    }
    let bad = || TargetError::BadPort {
        authority: truncated(authority),
        port: truncated(p),
    };
    if p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) || (p.len() > 1 && p.starts_with('0'))
    {
        return Err(bad());
    }
    match p.parse::<u16>() {
        Ok(0) | Err(_) => Err(bad()),
        Ok(v) => Ok(v),
    }
}

impl FromStr for Target {
    type Err = TargetError;

    fn from_str(s: &str) -> Result<Self, TargetError> {
        Self::parse(s)
    }
}

impl From<SocketAddr> for Target {
    fn from(addr: SocketAddr) -> Self {
        Self::new(addr)
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorities_round_trip() {
        for s in [
            "10.0.0.1:80",
            "[::1]:80",
            "[2001:db8::7]:65535",
            "svc.ns.svc.cluster.local:8080",
            "localhost:1",
            "a-b.c:443",
            "xn--bcher-kva.example:80",
        ] {
            let t = Target::parse(s).unwrap();
            assert_eq!(t.to_string(), s);
            assert_eq!(s.parse::<Target>().unwrap(), t);
        }
    }

    #[test]
    fn names_are_normalized() {
        let t = Target::parse("Svc.Example.COM.:80").unwrap();
        assert_eq!(t.to_string(), "svc.example.com:80");
        assert_eq!(t.port(), 80);
        assert_eq!(
            t.host(),
            &Host::Name(DnsName::new("svc.example.com").unwrap())
        );
        assert_eq!(t.socket_addr(), None);
        assert_eq!(
            Target::name("Example.org", 9).unwrap().to_string(),
            "example.org:9"
        );
        assert_eq!(
            Target::name("::1", 9).unwrap(),
            Target::new("[::1]:9".parse().unwrap())
        );
    }

    #[test]
    fn addresses_keep_their_socket_addr() {
        let a: SocketAddr = "[fe80::1]:22".parse().unwrap();
        let t = Target::new(a);
        assert_eq!(t.socket_addr(), Some(a));
        assert_eq!(t.to_string(), "[fe80::1]:22");
        assert_eq!(Target::from(a), t);
    }

    #[test]
    fn every_rejection() {
        use TargetError as E;
        type Check = fn(&TargetError) -> bool;
        let cases: &[(&str, Check)] = &[
            ("", |e| matches!(e, E::Empty)),
            ("example.com", |e| matches!(e, E::MissingPort(_))),
            ("example.com:", |e| matches!(e, E::MissingPort(_))),
            ("[::1]", |e| matches!(e, E::MissingPort(_))),
            ("example.com:0", |e| matches!(e, E::BadPort { .. })),
            ("example.com:65536", |e| matches!(e, E::BadPort { .. })),
            ("example.com:080", |e| matches!(e, E::BadPort { .. })),
            ("example.com:+80", |e| matches!(e, E::BadPort { .. })),
            ("example.com:8o", |e| matches!(e, E::BadPort { .. })),
            ("::1:80", |e| matches!(e, E::UnbracketedIpv6(_))),
            ("[::1:80", |e| matches!(e, E::BadIpv6(_))),
            ("[zz::1]:80", |e| matches!(e, E::BadIpv6(_))),
            ("[::1]x:80", |e| matches!(e, E::BadIpv6(_))),
            ("[10.0.0.1]:80", |e| matches!(e, E::BadIpv6(_))),
            (":80", |e| matches!(e, E::BadName { .. })),
            ("a..b:80", |e| matches!(e, E::BadName { .. })),
            ("-a.b:80", |e| matches!(e, E::BadName { .. })),
            ("a-.b:80", |e| matches!(e, E::BadName { .. })),
            ("a_b.c:80", |e| matches!(e, E::BadName { .. })),
            ("user@host:80", |e| matches!(e, E::BadName { .. })),
            ("bücher.example:80", |e| matches!(e, E::BadName { .. })),
            ("1.2.3:80", |e| matches!(e, E::BadName { .. })),
            ("010.0.0.1:80", |e| matches!(e, E::BadName { .. })),
            ("a.b..:80", |e| matches!(e, E::BadName { .. })),
        ];
        for (s, want) in cases {
            let e = Target::parse(s).unwrap_err();
            assert!(want(&e), "{s:?} gave {e:?}");
            assert!(!e.to_string().is_empty());
        }
        let long_label = format!("{}.example:80", "a".repeat(64));
        assert!(matches!(
            Target::parse(&long_label),
            Err(E::BadName { reason, .. }) if reason.contains("63")
        ));
        let long_name = format!("{}a:80", "a.".repeat(127));
        assert!(matches!(
            Target::parse(&long_name),
            Err(E::BadName { reason, .. }) if reason.contains("253")
        ));
        let max_name = format!("{}a", "a.".repeat(126));
        assert_eq!(max_name.len(), 253);
        assert!(DnsName::new(&max_name).is_ok());
        assert!(matches!(
            Target::name("example.com", 0),
            Err(E::BadPort { .. })
        ));
        assert!(matches!(Target::name("", 80), Err(E::BadName { .. })));
        assert!(matches!(Target::name(".", 80), Err(E::BadName { .. })));
    }

    #[tokio::test]
    async fn resolve_gives_addresses() {
        let ip = Target::new("127.0.0.1:7".parse().unwrap());
        assert_eq!(ip.resolve().await.unwrap(), vec![ip.socket_addr().unwrap()]);
        let local = Target::parse("localhost:7").unwrap();
        let addrs = local.resolve().await.unwrap();
        assert!(addrs.iter().all(|a| a.ip().is_loopback() && a.port() == 7));
        let nowhere = Target::parse("nowhere.invalid:7").unwrap();
        let e = nowhere.resolve().await.unwrap_err();
        assert!(matches!(e, TransportError::Unreachable { .. }), "{e}");
    }
}
