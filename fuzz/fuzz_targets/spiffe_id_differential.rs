#![no_main]
//! Differential fuzzing of SPIFFE ID and trust domain parsing: fipstun's `SpiffeId::parse` and
//! `TrustDomain::new` against the independent `spiffe` crate (crates.io) on the same string.
//! A parser that never panics can still accept what the specification forbids; only a second
//! implementation tells us which inputs we judge differently. Both must accept or both reject,
//! and accepted IDs must agree on trust domain, path and printed form.
//!
//! Where we differ on purpose (FUZZING.md lists each class with the specification's reason),
//! the input is recognised by a named predicate below and compared in the form on which both
//! implementations must agree, after checking that fipstun still refuses the original.
use fipstun_identity::spiffe::{MAX_PARSED_ID_LEN, SpiffeId, TrustDomain};
use libfuzzer_sys::fuzz_target;

/// Intended difference 1: ASCII uppercase letters in the trust domain. SPIFFE-ID §2.1: the
/// host part "MUST be lowercase"; fipstun (like go-spiffe) refuses uppercase, the `spiffe`
/// crate lowercases it (reading §2.4's "case-insensitive" as a normalisation).
/// The trust domain is what follows the first `://` up to the next `/`, as the `spiffe`
/// crate splits it; for a bare trust domain name (no `://`) it is everything up to the first
/// `/`.
fn uppercase_trust_domain(s: &str) -> Option<std::ops::Range<usize>> {
    let start = s.find("://").map_or(0, |i| i + 3);
    let end = s[start..].find('/').map_or(s.len(), |i| start + i);
    s[start..end]
        .bytes()
        .any(|b| b.is_ascii_uppercase())
        .then_some(start..end)
}

/// `s` with the trust domain range lowercased: the form both parsers must judge alike.
fn lowercase_range(s: &str, range: std::ops::Range<usize>) -> String {
    let mut out = String::with_capacity(s.len());
    out.push_str(&s[..range.start]);
    out.push_str(&s[range.clone()].to_ascii_lowercase());
    out.push_str(&s[range.end..]);
    out
}

/// Intended difference 2: IDs longer than [`MAX_PARSED_ID_LEN`] (64 KiB). SPIFFE-ID §2.3 sets
/// no upper bound for parsing (only "MUST support ... up to 2048 bytes"); fipstun refuses
/// beyond 64 KiB against abuse, the `spiffe` crate parses any length.
fn beyond_parse_limit(s: &str) -> bool {
    s.len() > MAX_PARSED_ID_LEN
}

/// Intended difference 3: a SPIFFE ID with a path given as a trust domain
/// (`spiffe://example.org/path`). The specification defines no trust-domain-from-ID parsing;
/// fipstun's `TrustDomain::new` takes a name or the trust domain's own ID (empty path) and
/// refuses anything more (`Rule::PathNotAllowed`), so a workload ID cannot be configured
/// where a trust domain is meant by mistake; the `spiffe` crate (like go-spiffe) keeps the
/// trust domain and ignores the path, without validating it. Returns the part both must judge
/// alike: the input up to that `/`.
fn id_with_path_as_trust_domain(s: &str) -> Option<&str> {
    let start = s.find("://")? + 3;
    let slash = s[start..].find('/')? + start;
    Some(&s[..slash])
}

fn compare_ids(s: &str) {
    if beyond_parse_limit(s) {
        assert!(SpiffeId::parse(s).is_err());
        return;
    }
    let normalised;
    let ours_input = match uppercase_trust_domain(s) {
        Some(range) => {
            assert!(
                SpiffeId::parse(s).is_err(),
                "fipstun must refuse an uppercase trust domain: {s:?}"
            );
            normalised = lowercase_range(s, range);
            normalised.as_str()
        }
        None => s,
    };
    let ours = SpiffeId::parse(ours_input);
    let theirs = spiffe::SpiffeId::new(s);
    match (&ours, &theirs) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a.trust_domain_name(), b.trust_domain_name(), "{s:?}");
            assert_eq!(a.path(), b.path(), "{s:?}");
            assert_eq!(a.to_string(), b.to_string(), "{s:?}");
        }
        (Err(_), Err(_)) => {}
        _ => panic!("SPIFFE ID {s:?}: fipstun {ours:?}, spiffe crate {theirs:?}"),
    }
}

fn compare_trust_domains(s: &str) {
    let mut input = s;
    if let Some(prefix) = id_with_path_as_trust_domain(s) {
        assert!(
            TrustDomain::new(s).is_err(),
            "fipstun must refuse a trust domain with a path: {s:?}"
        );
        input = prefix;
    }
    let normalised;
    let ours_input = match uppercase_trust_domain(input) {
        Some(range) => {
            assert!(TrustDomain::new(input).is_err(), "{input:?}");
            normalised = lowercase_range(input, range);
            normalised.as_str()
        }
        None => input,
    };
    let ours = TrustDomain::new(ours_input);
    let theirs = spiffe::TrustDomain::new(s);
    match (&ours, &theirs) {
        (Ok(a), Ok(b)) => assert_eq!(a.as_str(), b.as_str(), "{s:?}"),
        (Err(_), Err(_)) => {}
        _ => panic!("trust domain {s:?}: fipstun {ours:?}, spiffe crate {theirs:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    compare_ids(s);
    compare_trust_domains(s);
});
