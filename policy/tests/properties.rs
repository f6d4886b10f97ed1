//! Properties of the policy engine over random rule sets: deny always wins, allow rules do not
//! depend on their order, and protected destinations are never allowed by a rule that does
//! not name them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use fipstun_identity::spiffe::SpiffeId;
use fipstun_policy::{Action, Cidr, Destination, Policy, Ports, Principal, Rule, Verdict};
use proptest::prelude::*;

const PEERS: [&str; 4] = [
    "spiffe://a.test/ns/prod/sa/web",
    "spiffe://a.test/ns/prod/sa/db",
    "spiffe://a.test/ns/dev/sa/web",
    "spiffe://b.test/ns/prod/sa/web",
];

fn principal() -> impl Strategy<Value = Principal> {
    prop_oneof![
        Just("*".to_string()),
        proptest::sample::select(PEERS.to_vec()).prop_map(str::to_string),
        Just("spiffe://a.test/*".to_string()),
        Just("spiffe://a.test/ns/prod/*".to_string()),
        Just("spiffe://b.test/*".to_string()),
    ]
    .prop_map(|s| s.parse().unwrap())
}

/// Addresses biased towards the interesting places: protected ranges, small private ranges.
fn v4() -> impl Strategy<Value = Ipv4Addr> {
    prop_oneof![
        any::<u32>().prop_map(Ipv4Addr::from),
        (0u8..4, any::<u8>()).prop_map(|(c, d)| Ipv4Addr::new(10, 0, c, d)),
        (any::<u8>(), any::<u8>()).prop_map(|(c, d)| Ipv4Addr::new(127, 0, c, d)),
        (any::<u8>(), any::<u8>()).prop_map(|(c, d)| Ipv4Addr::new(169, 254, c, d)),
        any::<u8>().prop_map(|d| Ipv4Addr::new(0, 0, 0, d)),
    ]
}

fn ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        4 => v4().prop_map(IpAddr::V4),
        1 => v4().prop_map(|a| IpAddr::V6(a.to_ipv6_mapped())),
        1 => prop_oneof![
            Just(Ipv6Addr::LOCALHOST),
            Just(Ipv6Addr::UNSPECIFIED),
            any::<u16>().prop_map(|x| Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, x)),
            any::<u128>().prop_map(Ipv6Addr::from),
        ]
        .prop_map(IpAddr::V6),
    ]
}

fn port() -> impl Strategy<Value = u16> {
    prop_oneof![
        Just(80u16),
        Just(443),
        Just(8080),
        Just(15008),
        1u16..=65535
    ]
}

fn destination() -> impl Strategy<Value = Destination> {
    let cidr = ip().prop_flat_map(|ip| {
        let max: u8 = if ip.is_ipv4() { 32 } else { 128 };
        (Just(ip), 0..=max).prop_map(|(ip, len)| Cidr::new(ip, len).expect("len fits"))
    });
    let ports = prop_oneof![
        Just(Ports::Any),
        proptest::collection::vec((port(), 0u16..100), 1..3).prop_map(|v| {
            Ports::List(
                v.into_iter()
                    .map(|(p, w)| p..=p.saturating_add(w))
                    .collect(),
            )
        }),
    ];
    (cidr, ports).prop_map(|(cidr, ports)| Destination { cidr, ports })
}

fn rule() -> impl Strategy<Value = Rule> {
    (
        prop_oneof![Just(Action::Allow), Just(Action::Deny)],
        proptest::collection::vec(principal(), 0..3),
        proptest::collection::vec(destination(), 0..3),
    )
        .prop_map(|(action, from, to)| Rule {
            name: None,
            action,
            from,
            to,
        })
}

fn peer() -> impl Strategy<Value = Option<SpiffeId>> {
    prop_oneof![
        4 => proptest::sample::select(PEERS.to_vec()).prop_map(|s| Some(SpiffeId::parse(s).unwrap())),
        1 => Just(None),
    ]
}

fn target() -> impl Strategy<Value = SocketAddr> {
    (ip(), port()).prop_map(|(ip, port)| SocketAddr::new(ip, port))
}

/// The protected ranges as the crate documents them.
fn protected(ip: IpAddr) -> Option<Cidr> {
    let ip = fipstun_policy::canonical_ip(ip);
    [
        "127.0.0.0/8",
        "::1/128",
        "169.254.0.0/16",
        "fe80::/10",
        "0.0.0.0/8",
        "::/128",
    ]
    .iter()
    .map(|s| s.parse::<Cidr>().unwrap())
    .find(|c| c.contains(ip))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn deny_always_wins(rules in proptest::collection::vec(rule(), 0..6), peer in peer(), t in target()) {
        let policy = Policy::new(rules.clone());
        let denied_by_a_rule = rules.iter().any(|r| {
            r.action == Action::Deny && r.matches_peer(peer.as_ref()) && r.covers(t)
        });
        let v = policy.check(peer.as_ref(), t);
        if denied_by_a_rule {
            prop_assert!(matches!(v, Verdict::DeniedByRule { .. }), "{v:?}");
        }
        // And nothing is allowed without an allow rule that matches.
        if v.is_allowed() {
            let allowed_by_a_rule = rules.iter().any(|r| {
                r.action == Action::Allow && r.matches_peer(peer.as_ref()) && r.covers(t)
            });
            prop_assert!(allowed_by_a_rule);
        }
    }

    #[test]
    fn rule_order_does_not_matter(rules in proptest::collection::vec(rule(), 0..6), peer in peer(), t in target(), rot in 0usize..6) {
        let forward = Policy::new(rules.clone()).check(peer.as_ref(), t);
        let mut reversed = rules.clone();
        reversed.reverse();
        let mut rotated = rules.clone();
        if !rotated.is_empty() {
            let n = rot % rotated.len();
            rotated.rotate_left(n);
        }
        for other in [reversed, rotated] {
            let v = Policy::new(other).check(peer.as_ref(), t);
            prop_assert_eq!(v.is_allowed(), forward.is_allowed());
            prop_assert_eq!(
                matches!(v, Verdict::DeniedByRule { .. }),
                matches!(forward, Verdict::DeniedByRule { .. })
            );
        }
    }

    #[test]
    fn protected_ranges_are_never_allowed_by_accident(rules in proptest::collection::vec(rule(), 0..6), peer in peer(), t in target()) {
        let Some(range) = protected(t.ip()) else { return Ok(()) };
        let v = Policy::new(rules.clone()).check(peer.as_ref(), t);
        if v.is_allowed() {
            // Some allow rule for this peer names a destination inside the protected range.
            let named = rules.iter().any(|r| {
                r.action == Action::Allow
                    && r.matches_peer(peer.as_ref())
                    && r.to.iter().any(|d| d.contains(t) && range.covers(&d.cidr))
            });
            prop_assert!(named, "{t} allowed by {v:?} without a rule naming {range}");
        }
    }

    #[test]
    fn own_listeners_are_never_allowed_by_accident(rules in proptest::collection::vec(rule(), 0..6), peer in peer(), ip in ip(), port in port()) {
        let own = SocketAddr::new(ip, port);
        let policy = Policy::new(rules.clone()).with_own_listeners([own], []);
        let v = policy.check(peer.as_ref(), own);
        if v.is_allowed() {
            let named = rules.iter().any(|r| {
                r.action == Action::Allow
                    && r.matches_peer(peer.as_ref())
                    && r.to.iter().any(|d| d.contains(own) && d.cidr.is_host() && matches!(d.ports, Ports::List(_)))
            });
            prop_assert!(named, "{own} allowed by {v:?}");
        }
    }
}
