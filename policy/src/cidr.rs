//! IP prefixes (`10.0.0.0/8`, `fd00::/8`) with their host bits cleared, as policy rules name
//! them.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use crate::{PolicyError, canonical_ip};

/// An IP prefix: an address and a prefix length, host bits zero. An IPv4-mapped IPv6 prefix
/// (`::ffff:10.0.0.0/104`) is stored as the IPv4 prefix it covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr {
    addr: IpAddr,
    len: u8,
}

fn v4_mask(len: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0)
}

fn v6_mask(len: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0)
}

impl Cidr {
    /// `addr/len` with the host bits of `addr` cleared; fails if `len` is longer than the
    /// address (32 or 128 bits).
    pub fn new(addr: IpAddr, len: u8) -> Result<Self, PolicyError> {
        let bad = |why: String| PolicyError::BadDestination {
            input: format!("{addr}/{len}"),
            why,
        };
        match addr {
            IpAddr::V4(a) if len <= 32 => Ok(Self {
                addr: IpAddr::V4(Ipv4Addr::from(u32::from(a) & v4_mask(len))),
                len,
            }),
            IpAddr::V6(a) if len <= 128 => match a.to_ipv4_mapped() {
                // ::ffff:0:0/96 and longer: the IPv4 prefix these reach.
                Some(v4) if len >= 96 => Self::new(IpAddr::V4(v4), len - 96),
                _ => Ok(Self {
                    addr: IpAddr::V6(Ipv6Addr::from(u128::from(a) & v6_mask(len))),
                    len,
                }),
            },
            IpAddr::V4(_) => Err(bad("an IPv4 prefix is at most 32 bits".into())),
            IpAddr::V6(_) => Err(bad("an IPv6 prefix is at most 128 bits".into())),
        }
    }

    /// A single address (`/32` or `/128`).
    pub fn host(addr: IpAddr) -> Self {
        let addr = canonical_ip(addr);
        let len = if addr.is_ipv4() { 32 } else { 128 };
        Self { addr, len }
    }

    /// The network address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length in bits.
    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    /// Whether the prefix is a single address.
    pub fn is_host(&self) -> bool {
        self.len == if self.addr.is_ipv4() { 32 } else { 128 }
    }

    /// Whether `ip` (taken as [`canonical_ip`]) is inside this prefix.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical_ip(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                u32::from(ip) & v4_mask(self.len) == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                u128::from(ip) & v6_mask(self.len) == u128::from(net)
            }
            _ => false,
        }
    }

    /// Whether every address of `other` is inside this prefix.
    pub fn covers(&self, other: &Cidr) -> bool {
        other.len >= self.len && self.contains(other.addr)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl FromStr for Cidr {
    type Err = PolicyError;

    /// `ADDR/LEN`, or a bare address for a single host.
    fn from_str(s: &str) -> Result<Self, PolicyError> {
        let bad = |why: &str| PolicyError::BadDestination {
            input: s.to_string(),
            why: why.to_string(),
        };
        let (ip, len) = match s.split_once('/') {
            Some((ip, len)) => (ip, Some(len)),
            None => (s, None),
        };
        let ip: IpAddr = ip
            .parse()
            .map_err(|_| bad("expected an IPv4 or IPv6 address before the `/`"))?;
        match len {
            None => Ok(Self::host(ip)),
            Some(len) => {
                let len: u8 = len
                    .parse()
                    .map_err(|_| bad("the prefix length is not a number"))?;
                Self::new(ip, len).map_err(|e| match e {
                    PolicyError::BadDestination { why, .. } => bad(&why),
                    other => other,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_and_clears_host_bits() {
        assert_eq!(c("10.1.2.3/8").to_string(), "10.0.0.0/8");
        assert_eq!(c("10.1.2.3").to_string(), "10.1.2.3/32");
        assert_eq!(c("fd00::1/8").to_string(), "fd00::/8");
        assert_eq!(c("0.0.0.0/0").to_string(), "0.0.0.0/0");
        assert_eq!(c("::ffff:127.0.0.1/128").to_string(), "127.0.0.1/32");
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("::/129".parse::<Cidr>().is_err());
        assert!("10.0.0/8".parse::<Cidr>().is_err());
        assert!("10.0.0.0/x".parse::<Cidr>().is_err());
    }

    #[test]
    fn contains_and_covers() {
        assert!(c("10.0.0.0/8").contains("10.255.0.1".parse().unwrap()));
        assert!(!c("10.0.0.0/8").contains("11.0.0.1".parse().unwrap()));
        assert!(c("0.0.0.0/0").contains("::ffff:1.2.3.4".parse().unwrap()));
        assert!(!c("::/0").contains("1.2.3.4".parse().unwrap()));
        assert!(c("127.0.0.0/8").covers(&c("127.0.0.1/32")));
        assert!(!c("127.0.0.0/8").covers(&c("0.0.0.0/0")));
        assert!(c("fe80::/10").covers(&c("fe80::1")));
    }
}
