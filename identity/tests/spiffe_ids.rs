//! SPIFFE-ID parsing and validation, through the public API of `fipstun_identity::spiffe`.

use std::collections::{BTreeSet, HashSet};

use fipstun_identity::spiffe::{
    IstioIdentity, MAX_ID_LEN, MAX_PARSED_ID_LEN, MAX_TRUST_DOMAIN_LEN, Rule, SpiffeId,
    SpiffeIdError, TrustDomain,
};
use proptest::prelude::*;

// ---------------------------------------------------------------------------------------------
// The table
// ---------------------------------------------------------------------------------------------

/// What parsing one input must give.
#[derive(Debug)]
enum Want {
    /// Valid: the canonical display, the trust domain name and the path.
    Ok {
        display: String,
        td: String,
        path: String,
    },
    /// Invalid: the rule, and the byte position when the case pins it.
    Err(Rule, Option<usize>),
}

struct Case {
    name: &'static str,
    input: String,
    want: Want,
}

fn ok(name: &'static str, input: &str, td: &str, path: &str) -> Case {
    let display = format!("spiffe://{}", &input[9..]);
    Case {
        name,
        input: input.to_owned(),
        want: Want::Ok {
            display,
            td: td.to_owned(),
            path: path.to_owned(),
        },
    }
}

fn bad(name: &'static str, input: &str, rule: Rule, position: usize) -> Case {
    Case {
        name,
        input: input.to_owned(),
        want: Want::Err(rule, Some(position)),
    }
}

fn bad_rule(name: &'static str, input: &str, rule: Rule) -> Case {
    Case {
        name,
        input: input.to_owned(),
        want: Want::Err(rule, None),
    }
}

/// `spiffe://example.org/aaa...` padded to exactly `len` bytes.
fn id_of_len(len: usize) -> String {
    let mut s = String::from("spiffe://example.org/");
    while s.len() < len {
        s.push('a');
    }
    s
}

fn cases() -> Vec<Case> {
    let td255 = "a".repeat(255);
    let td256 = "a".repeat(256);
    let id2048 = id_of_len(2048);
    let id2049 = id_of_len(2049);
    let id64k = id_of_len(MAX_PARSED_ID_LEN);
    let id64k1 = id_of_len(MAX_PARSED_ID_LEN + 1);
    vec![
        // ---- valid ----
        ok(
            "td only, empty path",
            "spiffe://example.org",
            "example.org",
            "",
        ),
        ok(
            "istio style path",
            "spiffe://example.org/ns/default/sa/web",
            "example.org",
            "/ns/default/sa/web",
        ),
        ok(
            "uppercase scheme",
            "SPIFFE://example.org/a",
            "example.org",
            "/a",
        ),
        ok(
            "mixed-case scheme",
            "SpIfFe://example.org",
            "example.org",
            "",
        ),
        ok(
            "three dots is a valid segment",
            "spiffe://td/...",
            "td",
            "/...",
        ),
        ok(
            "dots inside segments",
            "spiffe://td/.a/..b/a../a.b",
            "td",
            "/.a/..b/a../a.b",
        ),
        ok(
            "every td char class",
            "spiffe://a-b_c.d09/x",
            "a-b_c.d09",
            "/x",
        ),
        ok(
            "uppercase allowed in path",
            "spiffe://td/ABC/Zz-_.9",
            "td",
            "/ABC/Zz-_.9",
        ),
        ok("single char td and segment", "spiffe://a/b", "a", "/b"),
        ok("ip-like td", "spiffe://10.0.0.1/x", "10.0.0.1", "/x"),
        ok("td of dots", "spiffe://.../x", "...", "/x"),
        Case {
            name: "255-byte td",
            input: format!("spiffe://{td255}/x"),
            want: Want::Ok {
                display: format!("spiffe://{td255}/x"),
                td: td255.clone(),
                path: "/x".to_owned(),
            },
        },
        Case {
            name: "2048-byte id",
            input: id2048.clone(),
            want: Want::Ok {
                display: id2048.clone(),
                td: "example.org".to_owned(),
                path: id2048[20..].to_owned(),
            },
        },
        // Longer than the spec lets an implementation generate, but it must still parse: the
        // reference libraries accept it, and issuing is what fipstun refuses (tests/svid.rs).
        Case {
            name: "2049-byte id",
            input: id2049.clone(),
            want: Want::Ok {
                display: id2049.clone(),
                td: "example.org".to_owned(),
                path: id2049[20..].to_owned(),
            },
        },
        Case {
            name: "64 KiB id",
            input: id64k.clone(),
            want: Want::Ok {
                display: id64k.clone(),
                td: "example.org".to_owned(),
                path: id64k[20..].to_owned(),
            },
        },
        // ---- scheme ----
        bad("empty", "", Rule::Empty, 0),
        bad("no scheme", "example.org/a", Rule::WrongScheme, 0),
        bad("single slash", "spiffe:/example.org", Rule::WrongScheme, 8),
        bad("http", "http://example.org", Rule::WrongScheme, 0),
        bad("https", "https://example.org/a", Rule::WrongScheme, 0),
        bad("no colon", "spiffe//example.org", Rule::WrongScheme, 6),
        bad("scheme only, cut short", "spiffe:", Rule::WrongScheme, 7),
        bad("spiffes", "spiffes://example.org", Rule::WrongScheme, 6),
        bad(
            "leading space",
            " spiffe://example.org",
            Rule::WrongScheme,
            0,
        ),
        bad("unicode in scheme", "spiff\u{e9}://x", Rule::WrongScheme, 5),
        // ---- trust domain ----
        bad("scheme only", "spiffe://", Rule::MissingTrustDomain, 9),
        bad(
            "missing td, path",
            "spiffe:///a/b",
            Rule::MissingTrustDomain,
            9,
        ),
        bad(
            "missing td, query",
            "spiffe://?x",
            Rule::MissingTrustDomain,
            9,
        ),
        bad(
            "uppercase td",
            "spiffe://Example.org",
            Rule::BadTrustDomainChar('E'),
            9,
        ),
        bad(
            "uppercase later in td",
            "spiffe://example.ORG/a",
            Rule::BadTrustDomainChar('O'),
            17,
        ),
        bad("port", "spiffe://example.org:8443/a", Rule::Port, 20),
        bad("empty port", "spiffe://example.org:/a", Rule::Port, 20),
        bad(
            "userinfo",
            "spiffe://user@example.org/a",
            Rule::UserInfo,
            13,
        ),
        bad(
            "user:password is a port first",
            "spiffe://user:pw@example.org",
            Rule::Port,
            13,
        ),
        bad(
            "percent in td",
            "spiffe://exa%6Dple.org",
            Rule::BadTrustDomainChar('%'),
            12,
        ),
        bad(
            "space in td",
            "spiffe://exa mple.org",
            Rule::BadTrustDomainChar(' '),
            12,
        ),
        bad(
            "trailing space",
            "spiffe://example.org ",
            Rule::BadTrustDomainChar(' '),
            20,
        ),
        bad(
            "unicode td",
            "spiffe://ex\u{e4}mple.org/a",
            Rule::BadTrustDomainChar('\u{e4}'),
            11,
        ),
        bad(
            "ipv6 brackets",
            "spiffe://[::1]/a",
            Rule::BadTrustDomainChar('['),
            9,
        ),
        Case {
            name: "256-byte td",
            input: format!("spiffe://{td256}/x"),
            want: Want::Err(Rule::TrustDomainTooLong, Some(9 + 255)),
        },
        Case {
            name: "too-long td wins over a later bad char",
            input: format!("spiffe://{td256}A"),
            want: Want::Err(Rule::TrustDomainTooLong, Some(9 + 255)),
        },
        // ---- path ----
        bad(
            "percent encoding in path",
            "spiffe://example.org/a%20b",
            Rule::BadPathChar('%'),
            22,
        ),
        bad(
            "encoded dots",
            "spiffe://example.org/%2e%2e",
            Rule::BadPathChar('%'),
            21,
        ),
        bad(
            "leading //",
            "spiffe://example.org//a",
            Rule::EmptySegment,
            21,
        ),
        bad(
            "inner //",
            "spiffe://example.org/a//b",
            Rule::EmptySegment,
            23,
        ),
        bad(
            "trailing slash",
            "spiffe://example.org/",
            Rule::TrailingSlash,
            20,
        ),
        bad(
            "trailing slash after segment",
            "spiffe://example.org/a/",
            Rule::TrailingSlash,
            22,
        ),
        bad(
            "dot segment",
            "spiffe://example.org/.",
            Rule::DotSegment,
            21,
        ),
        bad(
            "dotdot segment",
            "spiffe://example.org/..",
            Rule::DotSegment,
            21,
        ),
        bad(
            "inner dot",
            "spiffe://example.org/a/./b",
            Rule::DotSegment,
            23,
        ),
        bad(
            "inner dotdot",
            "spiffe://example.org/a/../b",
            Rule::DotSegment,
            23,
        ),
        bad(
            "dot before trailing slash",
            "spiffe://example.org/./",
            Rule::DotSegment,
            21,
        ),
        bad(
            "space in path",
            "spiffe://example.org/a b",
            Rule::BadPathChar(' '),
            22,
        ),
        bad(
            "backslash in path",
            "spiffe://example.org/a\\b",
            Rule::BadPathChar('\\'),
            22,
        ),
        bad(
            "unicode in path",
            "spiffe://example.org/caf\u{e9}",
            Rule::BadPathChar('\u{e9}'),
            24,
        ),
        bad(
            "emoji in path",
            "spiffe://example.org/a/\u{1f600}",
            Rule::BadPathChar('\u{1f600}'),
            23,
        ),
        bad(
            "nul in path",
            "spiffe://example.org/a\0",
            Rule::BadPathChar('\0'),
            22,
        ),
        bad(
            "newline in path",
            "spiffe://example.org/a\n",
            Rule::BadPathChar('\n'),
            22,
        ),
        // ---- query / fragment ----
        bad(
            "query after path",
            "spiffe://example.org/a?x=1",
            Rule::Query,
            22,
        ),
        bad("query after td", "spiffe://example.org?x", Rule::Query, 20),
        bad(
            "query after slash",
            "spiffe://example.org/?x",
            Rule::Query,
            21,
        ),
        bad(
            "fragment after path",
            "spiffe://example.org/a#f",
            Rule::Fragment,
            22,
        ),
        bad(
            "fragment after td",
            "spiffe://example.org#f",
            Rule::Fragment,
            20,
        ),
        bad_rule(
            "query before fragment",
            "spiffe://example.org/a?b#c",
            Rule::Query,
        ),
        // ---- length ----
        Case {
            name: "64 KiB + 1 byte id",
            input: id64k1,
            want: Want::Err(Rule::TooLong, Some(MAX_PARSED_ID_LEN)),
        },
        Case {
            name: "too long is checked before the scheme",
            input: format!("HTTP://{}", "!".repeat(MAX_PARSED_ID_LEN)),
            want: Want::Err(Rule::TooLong, Some(65536)),
        },
    ]
}

#[test]
fn table_of_ids() {
    let cases = cases();
    assert!(cases.len() >= 45, "only {} cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let got = SpiffeId::parse(&case.input);
        let pass = match (&case.want, &got) {
            (Want::Ok { display, td, path }, Ok(id)) => {
                id.to_string() == *display
                    && id.as_str() == display
                    && id.trust_domain_name() == *td
                    && id.trust_domain().as_str() == *td
                    && id.path() == path
                    && id.segments().collect::<Vec<_>>().join("/") == path.trim_start_matches('/')
            }
            (Want::Err(rule, position), Err(e)) => {
                e.rule == *rule && position.is_none_or(|p| e.position == p)
            }
            _ => false,
        };
        if !pass {
            failures.push(format!(
                "{}: input {:?}: want {:?}, got {:?}",
                case.name,
                case.input.chars().take(80).collect::<String>(),
                case.want,
                got
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_table_is_large_and_mostly_pins_positions() {
    let cases = cases();
    let ok = cases
        .iter()
        .filter(|c| matches!(c.want, Want::Ok { .. }))
        .count();
    let pinned = cases
        .iter()
        .filter(|c| matches!(c.want, Want::Err(_, Some(_))))
        .count();
    assert!(cases.len() >= 45, "{} cases", cases.len());
    assert!(ok >= 10, "{ok} valid cases");
    assert!(pinned >= 40, "{pinned} cases pin the position");
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

#[test]
fn error_display_names_rule_and_position() {
    let e = SpiffeId::parse("spiffe://Aexample.org").unwrap_err();
    assert_eq!(
        e,
        SpiffeIdError {
            rule: Rule::BadTrustDomainChar('A'),
            position: 9
        }
    );
    assert_eq!(
        e.to_string(),
        "invalid SPIFFE ID: trust domain character 'A' is not allowed (at byte 9)"
    );
    let msgs = [
        ("", "invalid SPIFFE ID: the input is empty (at byte 0)"),
        (
            "spiffe://td:1",
            "invalid SPIFFE ID: the trust domain must not have a port (':') (at byte 11)",
        ),
        (
            "spiffe://td/a/",
            "invalid SPIFFE ID: the path must not end with '/' (at byte 13)",
        ),
        (
            "spiffe://td/a\n",
            "invalid SPIFFE ID: path character '\\n' is not allowed (at byte 13)",
        ),
        (
            "spiffe://td#x",
            "invalid SPIFFE ID: a fragment ('#') is not allowed (at byte 11)",
        ),
    ];
    for (input, want) in msgs {
        assert_eq!(SpiffeId::parse(input).unwrap_err().to_string(), want);
    }
    let boxed: Box<dyn std::error::Error> = Box::new(e);
    assert!(boxed.to_string().contains("at byte 9"));
}

// ---------------------------------------------------------------------------------------------
// The rest of the API
// ---------------------------------------------------------------------------------------------

fn id(s: &str) -> SpiffeId {
    SpiffeId::parse(s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
}

fn td(s: &str) -> TrustDomain {
    TrustDomain::new(s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
}

#[test]
fn scheme_is_normalised_and_nothing_else() {
    let upper = id("SPIFFE://td/X/y");
    assert_eq!(upper.to_string(), "spiffe://td/X/y");
    assert_eq!(upper, id("spiffe://td/X/y"));
    assert_ne!(upper, id("spiffe://td/x/y"));
}

#[test]
fn accessors() {
    let a = id("spiffe://example.org/ns/default/sa/web");
    assert_eq!(a.as_str(), "spiffe://example.org/ns/default/sa/web");
    assert_eq!(
        AsRef::<str>::as_ref(&a),
        "spiffe://example.org/ns/default/sa/web"
    );
    assert_eq!(a.trust_domain_name(), "example.org");
    assert_eq!(a.trust_domain(), td("example.org"));
    assert_eq!(a.path(), "/ns/default/sa/web");
    assert_eq!(
        a.segments().collect::<Vec<_>>(),
        ["ns", "default", "sa", "web"]
    );
    assert_eq!(a.segments().next_back(), Some("web"));
    let bare = id("spiffe://example.org");
    assert_eq!(bare.path(), "");
    assert_eq!(bare.segments().count(), 0);
    assert_eq!(
        format!("{a:?}"),
        r#"SpiffeId("spiffe://example.org/ns/default/sa/web")"#
    );
    assert_eq!(
        format!("{:?}", td("example.org")),
        r#"TrustDomain("example.org")"#
    );
}

#[test]
fn conversions() {
    let parsed: SpiffeId = "spiffe://td/a".parse().unwrap();
    let tried = SpiffeId::try_from("spiffe://td/a").unwrap();
    assert_eq!(parsed, tried);
    assert_eq!(
        "spiffe://td/a/".parse::<SpiffeId>().unwrap_err().rule,
        Rule::TrailingSlash
    );
    assert_eq!(
        SpiffeId::try_from("td/a").unwrap_err().rule,
        Rule::WrongScheme
    );
    let t: TrustDomain = "example.org".parse().unwrap();
    assert_eq!(t, TrustDomain::try_from("spiffe://example.org").unwrap());
    assert_eq!(AsRef::<str>::as_ref(&t), "example.org");
    assert_eq!(
        TrustDomain::try_from("Example.org").unwrap_err(),
        SpiffeIdError {
            rule: Rule::BadTrustDomainChar('E'),
            position: 0
        }
    );
}

#[test]
fn membership() {
    let a = id("spiffe://example.org/a");
    assert!(a.is_member_of(&td("example.org")));
    assert!(!a.is_member_of(&td("example.or")));
    assert!(!a.is_member_of(&td("example.org.evil")));
    assert!(!a.is_member_of(&td("evil.example.org")));
    assert!(td("example.org").id().is_member_of(&td("example.org")));
}

#[test]
fn equality_hash_and_order_follow_the_string() {
    let set: HashSet<SpiffeId> = ["spiffe://td/a", "SPIFFE://td/a", "spiffe://td/b"]
        .into_iter()
        .map(id)
        .collect();
    assert_eq!(set.len(), 2);
    let sorted: Vec<String> = [
        "spiffe://td/b",
        "spiffe://td/a/b",
        "spiffe://a/z",
        "spiffe://td",
    ]
    .into_iter()
    .map(id)
    .collect::<BTreeSet<_>>()
    .into_iter()
    .map(|i| i.to_string())
    .collect();
    assert_eq!(
        sorted,
        [
            "spiffe://a/z",
            "spiffe://td",
            "spiffe://td/a/b",
            "spiffe://td/b"
        ]
    );
    // A trust domain taken from an ID equals (and hashes like) one built from its name.
    let tds: HashSet<TrustDomain> = [
        id("spiffe://td/x/y").trust_domain(),
        td("td"),
        td("spiffe://td"),
    ]
    .into_iter()
    .collect();
    assert_eq!(tds.len(), 1);
    assert!(td("a") < td("b"));
    assert!(id("spiffe://td/x").trust_domain() < td("tdz"));
}

#[test]
fn trust_domain_new() {
    type Expected = Result<&'static str, (Rule, usize)>;
    let cases: &[(&str, Expected)] = &[
        ("example.org", Ok("example.org")),
        ("spiffe://example.org", Ok("example.org")),
        ("SPIFFE://example.org", Ok("example.org")),
        ("a-b_c.0", Ok("a-b_c.0")),
        ("", Err((Rule::Empty, 0))),
        ("Example.org", Err((Rule::BadTrustDomainChar('E'), 0))),
        ("example.org:443", Err((Rule::Port, 11))),
        ("me@example.org", Err((Rule::UserInfo, 2))),
        ("example.org/a", Err((Rule::PathNotAllowed, 11))),
        ("example.org/", Err((Rule::PathNotAllowed, 11))),
        ("spiffe://example.org/a", Err((Rule::PathNotAllowed, 20))),
        ("spiffe://example.org?q", Err((Rule::Query, 20))),
        ("example.org#f", Err((Rule::Fragment, 11))),
        ("spiffe://", Err((Rule::MissingTrustDomain, 9))),
        ("/a", Err((Rule::MissingTrustDomain, 0))),
        ("http://example.org", Err((Rule::WrongScheme, 0))),
        ("spiffe:/example.org", Err((Rule::WrongScheme, 8))),
        ("ex\u{e4}mple", Err((Rule::BadTrustDomainChar('\u{e4}'), 2))),
    ];
    for (input, want) in cases {
        let got = TrustDomain::new(input)
            .map(|t| t.as_str().to_owned())
            .map_err(|e| (e.rule, e.position));
        assert_eq!(got, want.map(str::to_owned), "input {input:?}");
    }
    let long = "a".repeat(MAX_TRUST_DOMAIN_LEN);
    assert_eq!(td(&long).as_str(), long);
    assert_eq!(
        TrustDomain::new(&format!("{long}a")).unwrap_err(),
        SpiffeIdError {
            rule: Rule::TrustDomainTooLong,
            position: 255
        }
    );
    let t = td("example.org");
    assert_eq!(t.to_string(), "example.org");
    assert_eq!(t.id(), id("spiffe://example.org"));
    assert_eq!(t.id().path(), "");
    // A trust domain taken from a long ID still gives its own, path-less ID.
    assert_eq!(
        id("spiffe://example.org/a/b").trust_domain().id().as_str(),
        "spiffe://example.org"
    );
}

#[test]
fn new_from_segments() {
    let t = td("example.org");
    assert_eq!(SpiffeId::new(&t, &[]).unwrap(), t.id());
    let built = SpiffeId::new(&t, &["a", "B-c", "..."]).unwrap();
    assert_eq!(built.as_str(), "spiffe://example.org/a/B-c/...");
    assert_eq!(built.path(), "/a/B-c/...");
    assert_eq!(built.trust_domain(), t);
    let errs: &[(&[&str], Rule, usize)] = &[
        (&[""], Rule::EmptySegment, 21),
        (&["a", ""], Rule::EmptySegment, 23),
        (&["a", "b/c"], Rule::BadPathChar('/'), 24),
        (&["."], Rule::DotSegment, 21),
        (&["a", ".."], Rule::DotSegment, 23),
        (&["a b"], Rule::BadPathChar(' '), 22),
        (&["a%2F"], Rule::BadPathChar('%'), 22),
        (&["x?y"], Rule::Query, 22),
        (&["x#y"], Rule::Fragment, 22),
        (&["\u{e9}"], Rule::BadPathChar('\u{e9}'), 21),
    ];
    for (segments, rule, position) in errs {
        assert_eq!(
            SpiffeId::new(&t, segments).unwrap_err(),
            SpiffeIdError {
                rule: *rule,
                position: *position
            },
            "segments {segments:?}"
        );
    }
    // The parser's bound holds here too: past the spec's 2048 bytes is fine (issuing is what
    // refuses it), 64 KiB exactly is fine, one more is too long.
    let spec = "a".repeat(MAX_ID_LEN + 1 - "spiffe://example.org/".len());
    assert_eq!(SpiffeId::new(&t, &[&spec]).unwrap().as_str().len(), 2049);
    let fits = "a".repeat(MAX_PARSED_ID_LEN - "spiffe://example.org/".len());
    assert_eq!(SpiffeId::new(&t, &[&fits]).unwrap().as_str().len(), 65536);
    let over = format!("{fits}a");
    assert_eq!(
        SpiffeId::new(&t, &[&over]).unwrap_err(),
        SpiffeIdError {
            rule: Rule::TooLong,
            position: 65536
        }
    );
}

// ---------------------------------------------------------------------------------------------
// Istio
// ---------------------------------------------------------------------------------------------

#[test]
fn istio_accessor() {
    assert_eq!(
        id("spiffe://cluster.local/ns/default/sa/web").istio(),
        Some(IstioIdentity {
            namespace: "default",
            service_account: "web"
        })
    );
    assert_eq!(
        id("spiffe://cluster.local/ns/a/sa/b").istio(),
        Some(IstioIdentity {
            namespace: "a",
            service_account: "b"
        })
    );
    for not_istio in [
        "spiffe://cluster.local/ns/a/sa/b/c",
        "spiffe://cluster.local/ns/a",
        "spiffe://cluster.local/ns/a/sa",
        "spiffe://cluster.local/ns/a/sb/b",
        "spiffe://cluster.local/NS/a/sa/b",
        "spiffe://cluster.local/x/ns/a/sa/b",
        "spiffe://cluster.local",
    ] {
        assert_eq!(id(not_istio).istio(), None, "{not_istio}");
    }
}

#[test]
fn from_istio_round_trips() {
    let t = td("cluster.local");
    let built = SpiffeId::from_istio(&t, "default", "web").unwrap();
    assert_eq!(built.as_str(), "spiffe://cluster.local/ns/default/sa/web");
    assert_eq!(
        built.istio(),
        Some(IstioIdentity {
            namespace: "default",
            service_account: "web"
        })
    );
    // "spiffe://cluster.local/ns/" is 26 bytes.
    assert_eq!(
        SpiffeId::from_istio(&t, "", "web").unwrap_err(),
        SpiffeIdError {
            rule: Rule::EmptySegment,
            position: 26
        }
    );
    assert_eq!(
        SpiffeId::from_istio(&t, "a/b", "web").unwrap_err(),
        SpiffeIdError {
            rule: Rule::BadPathChar('/'),
            position: 27
        }
    );
    assert_eq!(
        SpiffeId::from_istio(&t, "ns", "..").unwrap_err(),
        SpiffeIdError {
            rule: Rule::DotSegment,
            position: 32
        }
    );
    // Positions are those parsing the joined ID would report.
    assert_eq!(
        SpiffeId::from_istio(&t, "ns", "..").unwrap_err(),
        SpiffeId::parse("spiffe://cluster.local/ns/ns/sa/..").unwrap_err()
    );
}

// ---------------------------------------------------------------------------------------------
// serde
// ---------------------------------------------------------------------------------------------

#[test]
fn serde_round_trip() {
    let a = id("SPIFFE://example.org/ns/default/sa/web");
    let json = serde_json::to_string(&a).unwrap();
    assert_eq!(json, r#""spiffe://example.org/ns/default/sa/web""#);
    let back: SpiffeId = serde_json::from_str(&json).unwrap();
    assert_eq!(back, a);

    let ids: Vec<SpiffeId> = serde_json::from_str(r#"["spiffe://a/b", "spiffe://c"]"#).unwrap();
    assert_eq!(ids, [id("spiffe://a/b"), id("spiffe://c")]);

    let t = td("example.org");
    assert_eq!(serde_json::to_string(&t).unwrap(), r#""example.org""#);
    let back: TrustDomain = serde_json::from_str(r#""example.org""#).unwrap();
    assert_eq!(back, t);
    let back: TrustDomain = serde_json::from_str(r#""spiffe://example.org""#).unwrap();
    assert_eq!(back, t);
}

#[test]
fn serde_rejects_invalid() {
    let e = serde_json::from_str::<SpiffeId>(r#""spiffe://Example.org/a""#).unwrap_err();
    assert!(
        e.to_string()
            .contains("trust domain character 'E' is not allowed (at byte 9)"),
        "{e}"
    );
    let e = serde_json::from_str::<SpiffeId>(r#""spiffe://example.org/a/""#).unwrap_err();
    assert!(e.to_string().contains("must not end with '/'"), "{e}");
    let e = serde_json::from_str::<SpiffeId>("42").unwrap_err();
    assert!(e.to_string().contains("a SPIFFE ID string"), "{e}");
    let e = serde_json::from_str::<TrustDomain>(r#""example.org:443""#).unwrap_err();
    assert!(e.to_string().contains("port"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------------

/// An independent, obviously-correct (if slower) reading of the spec.
fn oracle_is_valid(s: &str) -> bool {
    let allowed_td = |c: char| matches!(c, 'a'..='z' | '0'..='9' | '.' | '-' | '_');
    let allowed_path = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_');
    if s.len() > 64 * 1024 || s.len() < 9 || !s.is_char_boundary(9) {
        return false;
    }
    if !s[..9].eq_ignore_ascii_case("spiffe://") {
        return false;
    }
    let rest = &s[9..];
    let (td, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    if td.is_empty() || td.len() > 255 || !td.chars().all(allowed_td) {
        return false;
    }
    path.is_empty()
        || path[1..].split('/').all(|seg| {
            !seg.is_empty() && seg != "." && seg != ".." && seg.chars().all(allowed_path)
        })
}

fn valid_td() -> impl Strategy<Value = String> {
    "[a-z0-9._-]{1,40}"
}

fn valid_segment() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9._-]{1,12}".prop_filter("not a dot segment", |s| s != "." && s != "..")
}

/// Strings that are often close to valid IDs, to reach deep into the scanner.
fn near_id() -> impl Strategy<Value = String> {
    (
        prop_oneof![
            Just("spiffe://"),
            Just("SPIFFE://"),
            Just("spiffe:/"),
            Just("http://"),
            Just(""),
        ],
        "[a-zA-Z0-9._:@%/?# \u{e9}-]{0,40}",
    )
        .prop_map(|(scheme, rest)| format!("{scheme}{rest}"))
}

proptest! {
    #[test]
    fn valid_parts_round_trip(
        td in valid_td(),
        segments in prop::collection::vec(valid_segment(), 0..6),
        upper_scheme in any::<bool>(),
    ) {
        let input = format!(
            "{}{td}{}",
            if upper_scheme { "SPIFFE://" } else { "spiffe://" },
            segments.iter().map(|s| format!("/{s}")).collect::<String>()
        );
        let canonical = format!("spiffe://{}", &input[9..]);
        let parsed = SpiffeId::parse(&input).unwrap();
        prop_assert_eq!(parsed.to_string(), canonical.clone());
        let shown = parsed.to_string();
        prop_assert_eq!(SpiffeId::parse(&shown).unwrap(), parsed.clone());
        prop_assert_eq!(parsed.trust_domain_name(), td.as_str());
        prop_assert_eq!(parsed.segments().collect::<Vec<_>>(), segments.iter().map(String::as_str).collect::<Vec<_>>());

        // The same ID built from its parts.
        let t = TrustDomain::new(&td).unwrap();
        let refs: Vec<&str> = segments.iter().map(String::as_str).collect();
        let built = SpiffeId::new(&t, &refs).unwrap();
        prop_assert_eq!(&built, &parsed);
        prop_assert_eq!(built.to_string(), canonical);
    }

    #[test]
    fn lowercase_valid_ids_display_as_given(
        td in valid_td(),
        segments in prop::collection::vec(valid_segment(), 0..6),
    ) {
        let input = format!("spiffe://{td}{}", segments.iter().map(|s| format!("/{s}")).collect::<String>());
        let parsed = SpiffeId::parse(&input).unwrap();
        prop_assert_eq!(parsed.to_string(), input.clone());
        prop_assert_eq!(parsed, input.parse::<SpiffeId>().unwrap());
    }

    #[test]
    fn arbitrary_strings_never_panic(s in prop_oneof![any::<String>(), near_id()]) {
        check_arbitrary(&s)?;
    }
}

fn check_arbitrary(s: &str) -> Result<(), TestCaseError> {
    match SpiffeId::parse(s) {
        Ok(parsed) => {
            prop_assert!(
                oracle_is_valid(s),
                "accepted but the oracle rejects {:?}",
                s
            );
            let shown = parsed.to_string();
            let again = SpiffeId::parse(&shown).unwrap();
            prop_assert_eq!(&again, &parsed);
            prop_assert_eq!(&parsed.as_str()[9..], &s[9..]);
        }
        Err(e) => {
            prop_assert!(
                !oracle_is_valid(s),
                "rejected but the oracle accepts {:?}: {}",
                s,
                e
            );
            if e.rule == Rule::TooLong {
                prop_assert!(s.len() > MAX_PARSED_ID_LEN);
                prop_assert_eq!(e.position, MAX_PARSED_ID_LEN);
            } else {
                prop_assert!(e.position <= s.len(), "{:?}: {}", s, e);
            }
            if let Rule::BadTrustDomainChar(c) | Rule::BadPathChar(c) = e.rule {
                prop_assert!(s[e.position..].starts_with(c), "{:?}: {}", s, e);
            }
        }
    }
    // TrustDomain::new must not panic either, and agree with itself.
    if let Ok(t) = TrustDomain::new(s) {
        prop_assert_eq!(TrustDomain::new(t.as_str()).unwrap(), t.clone());
        prop_assert_eq!(t.id().trust_domain(), t);
    }
    Ok(())
}

#[test]
fn oracle_agrees_with_the_table() {
    // Guards the property above: an oracle that rejects everything would make it vacuous.
    for case in cases() {
        assert_eq!(
            oracle_is_valid(&case.input),
            matches!(case.want, Want::Ok { .. }),
            "{}",
            case.name
        );
    }
}
