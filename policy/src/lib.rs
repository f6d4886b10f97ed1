//! fipstun-policy: who may reach what through a tunnel node. Deny by default.
//!
//! A [`Policy`] is a set of [`Rule`]s, each `allow` or `deny`, each naming peers (`from`: an
//! exact SPIFFE ID, a whole trust domain `spiffe://td/*`, or a path prefix
//! `spiffe://td/ns/prod/*`) and destinations (`to`: a CIDR with optional ports and port
//! ranges, `10.0.0.0/8:80,443,8000-8100`, `[fd00::/8]:443`). Every backend judges each stream
//! with [`Policy::check`] before it dials anything:
//!
//! - a matching `deny` rule wins over any `allow` rule (rule order never matters);
//! - otherwise a matching `allow` rule allows;
//! - otherwise — and always when there are no rules — the stream is denied.
//!
//! Some destinations are **protected**: loopback (`127.0.0.0/8`, `::1`), link-local
//! (`169.254.0.0/16` with the cloud metadata address, `fe80::/10`), the unspecified "this
//! host" addresses (`0.0.0.0/8`, `::`), and the node's own listening sockets. An `allow` rule
//! reaches them only if it names them: its CIDR lies inside the protected range
//! (`127.0.0.0/8`, `169.254.169.254/32`), and for the node's own listeners it names the
//! single address and the port. `0.0.0.0/0` therefore never opens loopback or the metadata
//! service by accident. IPv4-mapped IPv6 targets (`::ffff:127.0.0.1`) are judged as the IPv4
//! address they reach.
//!
//! ```
//! use fipstun_identity::spiffe::SpiffeId;
//! use fipstun_policy::{Policy, Rule};
//!
//! let policy = Policy::new(vec![
//!     Rule::allow(["spiffe://example.org/ns/prod/*"], ["0.0.0.0/0:443", "127.0.0.1/32:8080"])?,
//!     Rule::deny(["spiffe://example.org/ns/prod/sa/batch"], ["10.0.0.0/8"])?,
//! ]);
//! let web = SpiffeId::parse("spiffe://example.org/ns/prod/sa/web")?;
//! let batch = SpiffeId::parse("spiffe://example.org/ns/prod/sa/batch")?;
//!
//! assert!(policy.check(Some(&web), "10.1.2.3:443".parse()?).is_allowed());
//! assert!(policy.check(Some(&web), "127.0.0.1:8080".parse()?).is_allowed());
//! // 0.0.0.0/0 does not include loopback or link-local: only a rule naming them does.
//! assert!(!policy.check(Some(&web), "127.0.0.1:443".parse()?).is_allowed());
//! assert!(!policy.check(Some(&web), "169.254.169.254:443".parse()?).is_allowed());
//! // Deny wins.
//! assert!(!policy.check(Some(&batch), "10.1.2.3:443".parse()?).is_allowed());
//! // No rule at all: nothing is allowed.
//! assert!(!Policy::deny_all().check(Some(&web), "10.1.2.3:443".parse()?).is_allowed());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]

mod cidr;
mod rule;

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use fipstun_identity::spiffe::SpiffeId;

pub use cidr::Cidr;
pub use rule::{Action, Destination, Ports, Principal, Rule};

/// A rule, principal or destination that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// A `from` entry is not a SPIFFE ID, `spiffe://td/*`, `spiffe://td/path/*` or `*`.
    #[error("`{input}` is not a peer pattern: {why}")]
    BadPrincipal {
        /// The text given.
        input: String,
        /// What is wrong with it.
        why: String,
    },
    /// A `to` entry is not `CIDR`, `CIDR:PORTS` or `[IPv6-CIDR]:PORTS`.
    #[error("`{input}` is not a destination: {why}")]
    BadDestination {
        /// The text given.
        input: String,
        /// What is wrong with it.
        why: String,
    },
}

/// Why a destination is protected (see the crate docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protected {
    /// `127.0.0.0/8` or `::1`: the node's own host.
    Loopback,
    /// `169.254.0.0/16` (cloud metadata at 169.254.169.254) or `fe80::/10`.
    LinkLocal,
    /// `0.0.0.0/8` or `::`: Linux connects these to the local host.
    Unspecified,
    /// One of the node's own listening sockets: a CONNECT back into the node is a loop.
    OwnListener,
}

impl Protected {
    /// A short label for logs and metrics.
    pub fn label(self) -> &'static str {
        match self {
            Self::Loopback => "loopback",
            Self::LinkLocal => "link-local",
            Self::Unspecified => "unspecified",
            Self::OwnListener => "own listener",
        }
    }
}

/// The protected address ranges and the kind each one is.
fn protected_ranges() -> [(Cidr, Protected); 6] {
    use std::net::{Ipv4Addr, Ipv6Addr};
    let v4 = |a, b, c, d, len| Cidr::new(IpAddr::V4(Ipv4Addr::new(a, b, c, d)), len);
    let v6 = |addr: Ipv6Addr, len| Cidr::new(IpAddr::V6(addr), len);
    let fe80 = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0);
    [
        (v4(127, 0, 0, 0, 8), Protected::Loopback),
        (v6(Ipv6Addr::LOCALHOST, 128), Protected::Loopback),
        (v4(169, 254, 0, 0, 16), Protected::LinkLocal),
        (v6(fe80, 10), Protected::LinkLocal),
        (v4(0, 0, 0, 0, 8), Protected::Unspecified),
        (v6(Ipv6Addr::UNSPECIFIED, 128), Protected::Unspecified),
    ]
    .map(|(c, p)| (c.expect("static prefixes are valid"), p))
}

/// The IPv4 address an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) reaches; other addresses
/// as they are.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// Which rule decided, or why nothing allowed the stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// An `allow` rule matched and no `deny` rule did.
    Allow {
        /// The rule's name (`policy[i]` when it has none).
        rule: String,
    },
    /// A `deny` rule matched.
    DeniedByRule {
        /// The rule's name.
        rule: String,
    },
    /// An `allow` rule covers the target only through a wider range; the target is
    /// protected and no rule names it.
    Protected {
        /// What kind of protected destination it is.
        kind: Protected,
        /// The wider rule that did not count.
        rule: String,
    },
    /// Rules exist, none allows this peer to reach this target.
    NoRuleMatched,
    /// The policy has no rules: everything is denied.
    NoRules,
    /// The target is a DNS name nobody resolved: the policy judges addresses only, so it is
    /// denied.
    UnresolvedName {
        /// The target as asked for (`name:port`).
        target: String,
    },
}

impl Verdict {
    /// Whether the stream may proceed.
    pub fn is_allowed(&self) -> bool {
        matches!(self, Self::Allow { .. })
    }

    /// The rule that decided, if one did.
    pub fn rule(&self) -> Option<&str> {
        match self {
            Self::Allow { rule } | Self::DeniedByRule { rule } | Self::Protected { rule, .. } => {
                Some(rule)
            }
            Self::NoRuleMatched | Self::NoRules | Self::UnresolvedName { .. } => None,
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Allow { rule } => write!(f, "allowed by {rule}"),
            Self::DeniedByRule { rule } => write!(f, "denied by {rule}"),
            Self::Protected { kind, rule } => write!(
                f,
                "the target is {} and {rule} does not name it (only a rule naming a protected range allows it)",
                kind.label()
            ),
            Self::NoRuleMatched => f.write_str("no rule allows it"),
            Self::NoRules => f.write_str("the policy has no rules: everything is denied"),
            Self::UnresolvedName { target } => write!(
                f,
                "the target {target} is a name that was not resolved; the policy judges addresses only"
            ),
        }
    }
}

/// A deny-by-default authorization policy: rules plus the node's own listening sockets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    rules: Vec<Rule>,
    /// The node's listeners; a listener on an unspecified address (`0.0.0.0:15008`) stands
    /// for that port on every address in `local_ips` (and on every protected address).
    own_listeners: Vec<SocketAddr>,
    local_ips: Vec<IpAddr>,
}

impl Policy {
    /// A policy of `rules` (their order does not matter).
    pub fn new(rules: Vec<Rule>) -> Self {
        Self {
            rules,
            ..Self::default()
        }
    }

    /// One rule: any peer may reach exactly `targets` (each address with its port), nothing
    /// else — what a listener with a fixed target, or a relay, allows.
    pub fn only_to(targets: impl IntoIterator<Item = SocketAddr>) -> Self {
        Self::new(vec![Rule {
            name: Some("only_to".into()),
            action: Action::Allow,
            from: vec![Principal::Any],
            to: targets.into_iter().map(Destination::exact).collect(),
        }])
    }

    /// No rules: every stream is denied.
    pub fn deny_all() -> Self {
        Self::default()
    }

    /// Protect the node's own listening sockets, and name the host's addresses so that a
    /// listener on `0.0.0.0` / `::` is recognised under any of them.
    pub fn with_own_listeners(
        mut self,
        listeners: impl IntoIterator<Item = SocketAddr>,
        local_ips: impl IntoIterator<Item = IpAddr>,
    ) -> Self {
        self.own_listeners = listeners
            .into_iter()
            .map(|a| SocketAddr::new(canonical_ip(a.ip()), a.port()))
            .collect();
        self.local_ips = local_ips.into_iter().map(canonical_ip).collect();
        self
    }

    /// The rules.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Whether the policy has no rules (and so denies everything).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// What protects `target`, if anything.
    pub fn protections(&self, target: SocketAddr) -> Vec<(Option<Cidr>, Protected)> {
        let ip = canonical_ip(target.ip());
        let mut out: Vec<(Option<Cidr>, Protected)> = protected_ranges()
            .into_iter()
            .filter(|(range, _)| range.contains(ip))
            .map(|(range, kind)| (Some(range), kind))
            .collect();
        let own = self.own_listeners.iter().any(|l| {
            l.port() == target.port()
                && (l.ip() == ip
                    || (l.ip().is_unspecified()
                        && (self.local_ips.contains(&ip) || !out.is_empty())))
        });
        if own {
            out.push((None, Protected::OwnListener));
        }
        out
    }

    /// Judge a stream from `peer` (None: a peer with no SPIFFE ID, e.g. an unlabelled
    /// WireGuard key) to `target`.
    pub fn check(&self, peer: Option<&SpiffeId>, target: SocketAddr) -> Verdict {
        if self.rules.is_empty() {
            return Verdict::NoRules;
        }
        let target = SocketAddr::new(canonical_ip(target.ip()), target.port());
        let name = |i: usize, r: &Rule| r.name.clone().unwrap_or_else(|| format!("policy[{i}]"));
        let matching = |action: Action| {
            self.rules
                .iter()
                .enumerate()
                .filter(move |(_, r)| r.action == action && r.matches_peer(peer))
        };
        if let Some((i, r)) = matching(Action::Deny).find(|(_, r)| r.covers(target)) {
            return Verdict::DeniedByRule { rule: name(i, r) };
        }
        let protections = self.protections(target);
        let mut blocked = None;
        for (i, r) in matching(Action::Allow) {
            if !r.covers(target) {
                continue;
            }
            match protections.iter().find(|p| !r.names_protected(target, p)) {
                None => return Verdict::Allow { rule: name(i, r) },
                Some(&(_, kind)) => {
                    blocked.get_or_insert(Verdict::Protected {
                        kind,
                        rule: name(i, r),
                    });
                }
            }
        }
        blocked.unwrap_or(Verdict::NoRuleMatched)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> SpiffeId {
        SpiffeId::parse(s).unwrap()
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn only_to_allows_exactly_its_targets() {
        let p = Policy::only_to([addr("127.0.0.1:8080"), addr("[::1]:443")]);
        assert!(p.check(None, addr("127.0.0.1:8080")).is_allowed());
        assert!(p.check(None, addr("[::1]:443")).is_allowed());
        assert!(!p.check(None, addr("127.0.0.1:8081")).is_allowed());
        assert!(!p.check(None, addr("127.0.0.2:8080")).is_allowed());
    }

    #[test]
    fn no_rules_denies_everything() {
        let p = Policy::deny_all();
        assert_eq!(
            p.check(Some(&id("spiffe://a.test/x")), addr("10.0.0.1:80")),
            Verdict::NoRules
        );
    }

    #[test]
    fn wide_allow_does_not_open_protected_ranges() {
        let p = Policy::new(vec![Rule::allow(["*"], ["0.0.0.0/0", "::/0"]).unwrap()]);
        let peer = id("spiffe://a.test/x");
        assert!(p.check(Some(&peer), addr("10.0.0.1:80")).is_allowed());
        assert!(p.check(Some(&peer), addr("[2001:db8::1]:80")).is_allowed());
        for t in [
            "127.0.0.1:80",
            "127.9.9.9:22",
            "169.254.169.254:80",
            "0.0.0.0:80",
            "[::1]:80",
            "[::]:80",
            "[fe80::1]:80",
            "[::ffff:127.0.0.1]:80",
            "[::ffff:169.254.169.254]:80",
        ] {
            let v = p.check(Some(&peer), addr(t));
            assert!(matches!(v, Verdict::Protected { .. }), "{t}: {v:?}");
        }
    }

    #[test]
    fn a_rule_naming_a_protected_range_opens_it() {
        let p = Policy::new(vec![Rule::allow(["*"], ["127.0.0.0/8"]).unwrap()]);
        assert!(p.check(None, addr("127.0.0.1:8080")).is_allowed());
        assert!(p.check(None, addr("[::ffff:127.0.0.1]:8080")).is_allowed());
        assert!(!p.check(None, addr("169.254.169.254:80")).is_allowed());
    }

    #[test]
    fn own_listeners_need_a_rule_naming_address_and_port() {
        let own = [addr("10.0.0.5:15008"), addr("0.0.0.0:15020")];
        let base =
            |rules| Policy::new(rules).with_own_listeners(own, ["10.0.0.5".parse().unwrap()]);
        let wide = base(vec![
            Rule::allow(["*"], ["10.0.0.0/8", "127.0.0.0/8"]).unwrap(),
        ]);
        assert_eq!(
            wide.check(None, addr("10.0.0.5:15008")),
            Verdict::Protected {
                kind: Protected::OwnListener,
                rule: "policy[0]".into()
            }
        );
        // The unspecified listener is this node's port 15020 on every local address.
        assert!(!wide.check(None, addr("10.0.0.5:15020")).is_allowed());
        assert!(!wide.check(None, addr("127.0.0.1:15020")).is_allowed());
        assert!(wide.check(None, addr("10.0.0.6:15020")).is_allowed());
        assert!(wide.check(None, addr("10.0.0.5:80")).is_allowed());
        let named = base(vec![Rule::allow(["*"], ["10.0.0.5/32:15008"]).unwrap()]);
        assert!(named.check(None, addr("10.0.0.5:15008")).is_allowed());
    }

    #[test]
    fn deny_wins_and_names_its_rule() {
        let mut deny = Rule::deny(["spiffe://a.test/*"], ["10.1.0.0/16"]).unwrap();
        deny.name = Some("no-db".into());
        let p = Policy::new(vec![Rule::allow(["*"], ["10.0.0.0/8"]).unwrap(), deny]);
        let v = p.check(Some(&id("spiffe://a.test/web")), addr("10.1.2.3:5432"));
        assert_eq!(
            v,
            Verdict::DeniedByRule {
                rule: "no-db".into()
            }
        );
        assert_eq!(v.to_string(), "denied by no-db");
        // Another trust domain is not denied by that rule.
        assert!(
            p.check(Some(&id("spiffe://b.test/web")), addr("10.1.2.3:5432"))
                .is_allowed()
        );
    }

    #[test]
    fn peers_without_an_id_match_only_any_peer_rules() {
        let p = Policy::new(vec![
            Rule::allow(["spiffe://a.test/*"], ["10.0.0.0/8"]).unwrap(),
        ]);
        assert_eq!(p.check(None, addr("10.0.0.1:1")), Verdict::NoRuleMatched);
        let any = Policy::new(vec![Rule::allow(["*"], ["10.0.0.0/8"]).unwrap()]);
        assert!(any.check(None, addr("10.0.0.1:1")).is_allowed());
    }
}

// The crate README's example, compiled and run by `cargo test --doc` so it cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
