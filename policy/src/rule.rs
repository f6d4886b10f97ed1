//! One authorization rule: an action, the peers it is about, the destinations it is about.

use std::fmt;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::str::FromStr;

use fipstun_identity::spiffe::{SpiffeId, TrustDomain};
use serde::{Deserialize, Serialize};

use crate::{Cidr, PolicyError, Protected};

/// What a matching rule does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Let the stream through (unless a `deny` rule also matches).
    Allow,
    /// Refuse the stream, whatever else matches.
    Deny,
}

/// A pattern over authenticated peers (`from`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Principal {
    /// `*`: any authenticated peer, including a WireGuard peer with no SPIFFE ID.
    Any,
    /// One SPIFFE ID, compared exactly.
    Exact(SpiffeId),
    /// `spiffe://td/*`: every ID in a trust domain.
    TrustDomain(TrustDomain),
    /// `spiffe://td/ns/prod/*`: IDs in the trust domain whose path starts with these whole
    /// segments.
    PathPrefix {
        /// The trust domain.
        trust_domain: TrustDomain,
        /// The path prefix with a trailing `/` (`/ns/prod/`), so `/ns/production` is not in it.
        prefix: String,
    },
}

impl Principal {
    /// Whether `peer` (None: a peer with no SPIFFE ID) is one of these.
    pub fn matches(&self, peer: Option<&SpiffeId>) -> bool {
        match (self, peer) {
            (Self::Any, _) => true,
            (_, None) => false,
            (Self::Exact(id), Some(p)) => p == id,
            (Self::TrustDomain(td), Some(p)) => p.is_member_of(td),
            (
                Self::PathPrefix {
                    trust_domain,
                    prefix,
                },
                Some(p),
            ) => p.is_member_of(trust_domain) && p.path().starts_with(prefix.as_str()),
        }
    }
}

impl FromStr for Principal {
    type Err = PolicyError;

    fn from_str(s: &str) -> Result<Self, PolicyError> {
        let bad = |why: String| PolicyError::BadPrincipal {
            input: s.to_string(),
            why,
        };
        if s == "*" {
            return Ok(Self::Any);
        }
        let Some(base) = s.strip_suffix("/*") else {
            return SpiffeId::parse(s)
                .map(Self::Exact)
                .map_err(|e| bad(e.to_string()));
        };
        if let Some(td) = base
            .strip_prefix("spiffe://")
            .filter(|rest| !rest.contains('/'))
        {
            return TrustDomain::new(td)
                .map(Self::TrustDomain)
                .map_err(|e| bad(e.to_string()));
        }
        let id = SpiffeId::parse(base).map_err(|e| bad(e.to_string()))?;
        Ok(Self::PathPrefix {
            trust_domain: id.trust_domain(),
            prefix: format!("{}/", id.path()),
        })
    }
}

impl TryFrom<String> for Principal {
    type Error = PolicyError;
    fn try_from(s: String) -> Result<Self, PolicyError> {
        s.parse()
    }
}

impl From<Principal> for String {
    fn from(p: Principal) -> String {
        p.to_string()
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("*"),
            Self::Exact(id) => id.fmt(f),
            Self::TrustDomain(td) => write!(f, "spiffe://{td}/*"),
            Self::PathPrefix {
                trust_domain,
                prefix,
            } => write!(f, "spiffe://{trust_domain}{prefix}*"),
        }
    }
}

/// The ports a destination names.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Ports {
    /// Every port.
    Any,
    /// These ports and inclusive ranges.
    List(Vec<RangeInclusive<u16>>),
}

impl Ports {
    /// Whether `port` is named.
    pub fn contains(&self, port: u16) -> bool {
        match self {
            Self::Any => true,
            Self::List(ranges) => ranges.iter().any(|r| r.contains(&port)),
        }
    }
}

/// A destination (`to`): an address prefix and the ports on it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Destination {
    /// The addresses.
    pub cidr: Cidr,
    /// The ports.
    pub ports: Ports,
}

impl Destination {
    /// Exactly one socket address: its host prefix and its port. A destination like this
    /// names even a protected address (loopback, an own listener).
    pub fn exact(addr: SocketAddr) -> Self {
        Self {
            cidr: Cidr::host(addr.ip()),
            ports: Ports::List(vec![addr.port()..=addr.port()]),
        }
    }

    /// Whether `target` is inside this destination.
    pub fn contains(&self, target: SocketAddr) -> bool {
        self.cidr.contains(target.ip()) && self.ports.contains(target.port())
    }
}

impl FromStr for Destination {
    type Err = PolicyError;

    /// `CIDR`, `CIDR:PORTS` (IPv4), `IPv6-CIDR` or `[IPv6-CIDR]:PORTS`, where PORTS is a
    /// comma-separated list of ports and `low-high` ranges.
    fn from_str(s: &str) -> Result<Self, PolicyError> {
        let bad = |why: &str| PolicyError::BadDestination {
            input: s.to_string(),
            why: why.to_string(),
        };
        let (cidr, ports) = if let Some(rest) = s.strip_prefix('[') {
            let (cidr, after) = rest
                .split_once(']')
                .ok_or_else(|| bad("a `[` without its `]`"))?;
            match after {
                "" => (cidr, None),
                _ => (
                    cidr,
                    Some(
                        after
                            .strip_prefix(':')
                            .ok_or_else(|| bad("expected `:PORTS` after `]`"))?,
                    ),
                ),
            }
        } else if s.matches(':').count() > 1 {
            (s, None) // IPv6 without ports
        } else {
            match s.split_once(':') {
                Some((cidr, ports)) => (cidr, Some(ports)),
                None => (s, None),
            }
        };
        let cidr: Cidr = cidr.parse().map_err(|e| match e {
            PolicyError::BadDestination { why, .. } => bad(&why),
            other => other,
        })?;
        let ports = match ports {
            None => Ports::Any,
            Some(list) => Ports::List(
                list.split(',')
                    .map(|p| parse_port_range(p.trim()).ok_or_else(|| bad(PORTS_HELP)))
                    .collect::<Result<_, _>>()?,
            ),
        };
        Ok(Self { cidr, ports })
    }
}

const PORTS_HELP: &str =
    "ports are 1-65535, written as a comma-separated list of ports and low-high ranges";

fn parse_port_range(p: &str) -> Option<RangeInclusive<u16>> {
    let (lo, hi) = p.split_once('-').unwrap_or((p, p));
    let (lo, hi): (u16, u16) = (lo.parse().ok()?, hi.parse().ok()?);
    (lo >= 1 && lo <= hi).then_some(lo..=hi)
}

impl TryFrom<String> for Destination {
    type Error = PolicyError;
    fn try_from(s: String) -> Result<Self, PolicyError> {
        s.parse()
    }
}

impl From<Destination> for String {
    fn from(d: Destination) -> String {
        d.to_string()
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Ports::List(ranges) = &self.ports else {
            return self.cidr.fmt(f);
        };
        if self.cidr.addr().is_ipv6() {
            write!(f, "[{}]:", self.cidr)?;
        } else {
            write!(f, "{}:", self.cidr)?;
        }
        for (i, r) in ranges.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if r.start() == r.end() {
                write!(f, "{}", r.start())?;
            } else {
                write!(f, "{}-{}", r.start(), r.end())?;
            }
        }
        Ok(())
    }
}

/// One rule. An empty `from` means any authenticated peer; an empty `to` means any
/// destination except the protected ones (see the crate docs).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// A name for logs and metrics (default `policy[i]`, its position).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Allow or deny.
    pub action: Action,
    /// The peers this rule is about.
    #[serde(default)]
    pub from: Vec<Principal>,
    /// The destinations this rule is about.
    #[serde(default)]
    pub to: Vec<Destination>,
}

impl Rule {
    fn build<F, T>(action: Action, from: F, to: T) -> Result<Self, PolicyError>
    where
        F: IntoIterator,
        F::Item: AsRef<str>,
        T: IntoIterator,
        T::Item: AsRef<str>,
    {
        Ok(Self {
            name: None,
            action,
            from: from
                .into_iter()
                .map(|p| p.as_ref().parse())
                .collect::<Result<_, _>>()?,
            to: to
                .into_iter()
                .map(|d| d.as_ref().parse())
                .collect::<Result<_, _>>()?,
        })
    }

    /// An `allow` rule from textual patterns (`*`, IDs, `spiffe://td/*`, `spiffe://td/p/*`)
    /// to textual destinations (`10.0.0.0/8:80,443`).
    pub fn allow<F, T>(from: F, to: T) -> Result<Self, PolicyError>
    where
        F: IntoIterator,
        F::Item: AsRef<str>,
        T: IntoIterator,
        T::Item: AsRef<str>,
    {
        Self::build(Action::Allow, from, to)
    }

    /// A `deny` rule, written like [`Rule::allow`].
    pub fn deny<F, T>(from: F, to: T) -> Result<Self, PolicyError>
    where
        F: IntoIterator,
        F::Item: AsRef<str>,
        T: IntoIterator,
        T::Item: AsRef<str>,
    {
        Self::build(Action::Deny, from, to)
    }

    /// Whether the rule is about `peer`.
    pub fn matches_peer(&self, peer: Option<&SpiffeId>) -> bool {
        self.from.is_empty() || self.from.iter().any(|p| p.matches(peer))
    }

    /// Whether the rule's destinations include `target` (ignoring protection).
    pub fn covers(&self, target: SocketAddr) -> bool {
        self.to.is_empty() || self.to.iter().any(|d| d.contains(target))
    }

    /// Whether one of this rule's destinations that includes `target` names the protection
    /// `p`: lies inside the protected range, or (own listener) is that single address with
    /// that port listed.
    pub(crate) fn names_protected(
        &self,
        target: SocketAddr,
        p: &(Option<Cidr>, Protected),
    ) -> bool {
        self.to
            .iter()
            .filter(|d| d.contains(target))
            .any(|d| match p {
                (Some(range), _) => range.covers(&d.cidr),
                (None, _) => d.cidr.is_host() && matches!(d.ports, Ports::List(_)),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn principals_parse_and_print_back() {
        for s in [
            "*",
            "spiffe://a.test/ns/prod/sa/web",
            "spiffe://a.test/*",
            "spiffe://a.test/ns/prod/*",
        ] {
            assert_eq!(s.parse::<Principal>().unwrap().to_string(), s);
        }
        for bad in [
            "",
            "spiffe://",
            "spiffe:///*",
            "http://a.test/x",
            "spiffe://A b/*",
        ] {
            assert!(bad.parse::<Principal>().is_err(), "{bad}");
        }
    }

    #[test]
    fn path_prefixes_match_whole_segments() {
        let p: Principal = "spiffe://a.test/ns/prod/*".parse().unwrap();
        let id = |s| SpiffeId::parse(s).unwrap();
        assert!(p.matches(Some(&id("spiffe://a.test/ns/prod/sa/web"))));
        assert!(!p.matches(Some(&id("spiffe://a.test/ns/production/sa/web"))));
        assert!(!p.matches(Some(&id("spiffe://a.test/ns/prod"))));
        assert!(!p.matches(Some(&id("spiffe://b.test/ns/prod/sa/web"))));
        assert!(!p.matches(None));
    }

    #[test]
    fn destinations_parse_and_print_back() {
        for s in [
            "10.0.0.0/8",
            "10.0.0.0/8:80,443,8000-8100",
            "127.0.0.1/32:8080",
            "fd00::/8",
            "[fd00::/8]:443",
            "[::1/128]:80-81",
        ] {
            assert_eq!(s.parse::<Destination>().unwrap().to_string(), s);
        }
        assert_eq!(
            "10.1.2.3".parse::<Destination>().unwrap().to_string(),
            "10.1.2.3/32"
        );
        for bad in [
            "10.0.0.0/8:",
            "10.0.0.0/8:0",
            "10.0.0.0/8:70000",
            "10.0.0.0/8:90-80",
            "10.0.0.0/8:http",
            "[fd00::/8",
            "[fd00::/8]443",
            "example.com:80",
        ] {
            assert!(bad.parse::<Destination>().is_err(), "{bad}");
        }
        let d: Destination = "10.0.0.0/8:80,8000-8100".parse().unwrap();
        assert!(d.contains("10.9.9.9:8050".parse().unwrap()));
        assert!(!d.contains("10.9.9.9:443".parse().unwrap()));
    }

    #[test]
    fn rules_read_from_toml() {
        #[derive(Deserialize)]
        struct File {
            policy: Vec<Rule>,
        }
        let f: File = toml::from_str(
            r#"
            [[policy]]
            name = "web"
            action = "allow"
            from = ["spiffe://a.test/ns/prod/*"]
            to = ["10.0.0.0/8:80,443"]

            [[policy]]
            action = "deny"
            to = ["10.1.0.0/16"]
            "#,
        )
        .unwrap();
        assert_eq!(f.policy.len(), 2);
        assert_eq!(f.policy[0].name.as_deref(), Some("web"));
        assert_eq!(f.policy[1].action, Action::Deny);
        assert!(f.policy[1].from.is_empty());
        let err =
            toml::from_str::<File>("[[policy]]\naction = \"allow\"\nto = [\"10.0.0.0/8:x\"]\n")
                .err()
                .unwrap()
                .to_string();
        assert!(err.contains("10.0.0.0/8:x"), "{err}");
        assert!(toml::from_str::<File>("[[policy]]\naction = \"permit\"\n").is_err());
        assert!(toml::from_str::<File>("[[policy]]\naction = \"allow\"\nport = 1\n").is_err());
    }
}
