//! SPIFFE IDs (`spiffe://<trust-domain>/<path>`) and trust domains, parsed and validated exactly
//! as the SPIFFE-ID specification requires, with errors that name the broken rule and its byte.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::marker::PhantomData;
use std::str::FromStr;
use std::sync::Arc;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// The longest SPIFFE ID fipstun *generates*, in bytes: the SPIFFE-ID specification's limit
/// (SPIFFE-ID §2.3, "Maximum SPIFFE ID Length": implementations MUST support URIs up to 2048
/// bytes and SHOULD NOT generate longer ones).
///
/// Parsing accepts longer IDs, up to [`MAX_PARSED_ID_LEN`], as the Go and Rust reference
/// libraries do, so a peer's over-long ID is judged by policy rather than failing to parse.
/// Anything that puts an ID into a CSR or certificate ([`crate::keys::csr_for`],
/// [`crate::ca::SvidIssuer`]) refuses one longer than this with
/// [`crate::ca::CsrError::IdTooLong`].
pub const MAX_ID_LEN: usize = 2048;

/// The longest SPIFFE ID [`SpiffeId::parse`] (and [`SpiffeId::new`]) accept, in bytes: 64 KiB.
///
/// The specification sets no upper bound for parsing; this one is ours, against abuse, so a
/// hostile certificate or request cannot make every later copy, comparison or log line of an
/// ID arbitrarily large. Longer input fails with [`Rule::TooLong`] at this offset, before any
/// other check.
pub const MAX_PARSED_ID_LEN: usize = 64 * 1024;

/// The longest trust domain name accepted, in bytes.
pub const MAX_TRUST_DOMAIN_LEN: usize = 255;

/// The canonical (lowercase) scheme prefix every stored ID starts with.
const SCHEME: &str = "spiffe://";
const SCHEME_LEN: usize = SCHEME.len();

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// A SPIFFE ID or trust domain that breaks the specification: which rule, and where.
///
/// Displays as, for example,
/// `invalid SPIFFE ID: trust domain character 'A' is not allowed (at byte 9)`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid SPIFFE ID: {rule} (at byte {position})")]
pub struct SpiffeIdError {
    /// The first rule the input breaks, scanning left to right.
    pub rule: Rule,
    /// The byte offset in the input where the rule broke. For [`SpiffeId::new`] and
    /// [`SpiffeId::from_istio`] it is the offset in the ID that would have been built.
    pub position: usize,
}

/// A rule of the SPIFFE-ID specification; each [`SpiffeIdError`] names the first one broken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Rule {
    /// The input is empty.
    Empty,
    /// The input does not start with `spiffe://` (matched case-insensitively). The position is
    /// the first byte that differs (the input length if it ends early).
    WrongScheme,
    /// Nothing between `spiffe://` and the path.
    MissingTrustDomain,
    /// The trust domain is longer than [`MAX_TRUST_DOMAIN_LEN`] bytes. The position is where
    /// byte 256 of the trust domain is.
    TrustDomainTooLong,
    /// A trust domain character outside `[a-z0-9._-]` (uppercase included).
    BadTrustDomainChar(char),
    /// A `:` in the trust domain: ports are not allowed.
    Port,
    /// An `@` in the trust domain: userinfo is not allowed.
    UserInfo,
    /// An empty path segment (`//`). The position is the second `/`.
    EmptySegment,
    /// The path ends with `/`. The position is that `/`.
    TrailingSlash,
    /// A path segment that is `.` or `..`. The position is the segment's first byte.
    DotSegment,
    /// A path character outside `[a-zA-Z0-9._-]` (`%` included: no percent-encoding).
    BadPathChar(char),
    /// A `?`: queries are not allowed.
    Query,
    /// A `#`: fragments are not allowed.
    Fragment,
    /// The ID is longer than [`MAX_PARSED_ID_LEN`] bytes; reported at that offset before
    /// anything else.
    TooLong,
    /// A trust domain given to [`TrustDomain::new`] has a path.
    PathNotAllowed,
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("the input is empty"),
            Self::WrongScheme => f.write_str("the scheme must be \"spiffe://\""),
            Self::MissingTrustDomain => f.write_str("the trust domain is missing"),
            Self::TrustDomainTooLong => write!(
                f,
                "the trust domain is longer than {MAX_TRUST_DOMAIN_LEN} bytes"
            ),
            Self::BadTrustDomainChar(c) => write!(f, "trust domain character {c:?} is not allowed"),
            Self::Port => f.write_str("the trust domain must not have a port (':')"),
            Self::UserInfo => f.write_str("the trust domain must not have userinfo ('@')"),
            Self::EmptySegment => f.write_str("path segments must not be empty (\"//\")"),
            Self::TrailingSlash => f.write_str("the path must not end with '/'"),
            Self::DotSegment => f.write_str("path segments must not be \".\" or \"..\""),
            Self::BadPathChar(c) => write!(f, "path character {c:?} is not allowed"),
            Self::Query => f.write_str("a query ('?') is not allowed"),
            Self::Fragment => f.write_str("a fragment ('#') is not allowed"),
            Self::TooLong => write!(f, "the ID is longer than {MAX_PARSED_ID_LEN} bytes"),
            Self::PathNotAllowed => f.write_str("a trust domain must not have a path"),
        }
    }
}

const fn err(rule: Rule, position: usize) -> SpiffeIdError {
    SpiffeIdError { rule, position }
}

// ---------------------------------------------------------------------------------------------
// The scanner. Every function advances only over ASCII bytes before it stops, so any offset it
// reports, or decodes a character at, is a char boundary. It never indexes out of bounds and
// looks at each byte a bounded number of times: O(n).
// ---------------------------------------------------------------------------------------------

/// The character starting at byte `i` of `s` (for error reports).
fn char_at(s: &str, i: usize) -> char {
    s.get(i..)
        .and_then(|rest| rest.chars().next())
        .unwrap_or(char::REPLACEMENT_CHARACTER)
}

const fn is_trust_domain_byte(b: u8) -> bool {
    matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'_')
}

const fn is_path_byte(b: u8) -> bool {
    matches!(b, b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'-' | b'_')
}

/// Checks that `s` starts with `spiffe://` in any case; returns the offset just after it.
fn check_scheme(s: &str) -> Result<usize, SpiffeIdError> {
    let bytes = s.as_bytes();
    for (i, want) in SCHEME.bytes().enumerate() {
        match bytes.get(i) {
            Some(b) if b.eq_ignore_ascii_case(&want) => {}
            _ => return Err(err(Rule::WrongScheme, i)),
        }
    }
    Ok(SCHEME_LEN)
}

/// Scans a trust domain starting at `start`; returns the offset of the first byte after it
/// (a `/`, `?`, `#`, or the end of `s`).
fn scan_trust_domain(s: &str, start: usize) -> Result<usize, SpiffeIdError> {
    let bytes = s.as_bytes();
    let mut i = start;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'/' | b'?' | b'#' => break,
            b':' => return Err(err(Rule::Port, i)),
            b'@' => return Err(err(Rule::UserInfo, i)),
            _ if i - start >= MAX_TRUST_DOMAIN_LEN => {
                return Err(err(Rule::TrustDomainTooLong, i));
            }
            _ if is_trust_domain_byte(b) => i += 1,
            _ => return Err(err(Rule::BadTrustDomainChar(char_at(s, i)), i)),
        }
    }
    if i == start {
        return Err(err(Rule::MissingTrustDomain, start));
    }
    Ok(i)
}

/// Checks one path segment (without its leading `/`) that starts at byte `pos` of the ID.
fn check_segment(segment: &str, pos: usize) -> Result<(), SpiffeIdError> {
    if segment.is_empty() {
        return Err(err(Rule::EmptySegment, pos));
    }
    for (i, b) in segment.bytes().enumerate() {
        if !is_path_byte(b) {
            let rule = match b {
                b'?' => Rule::Query,
                b'#' => Rule::Fragment,
                _ => Rule::BadPathChar(char_at(segment, i)),
            };
            return Err(err(rule, pos + i));
        }
    }
    if segment == "." || segment == ".." {
        return Err(err(Rule::DotSegment, pos));
    }
    Ok(())
}

/// Checks the path of `s`, which starts at `start` (right after the trust domain).
fn scan_path(s: &str, start: usize) -> Result<(), SpiffeIdError> {
    let rest = s.get(start..).unwrap_or("");
    let path = match rest.as_bytes().first() {
        None => return Ok(()),
        Some(b'/') => rest.get(1..).unwrap_or(""),
        Some(b'?') => return Err(err(Rule::Query, start)),
        Some(b'#') => return Err(err(Rule::Fragment, start)),
        Some(_) => return Err(err(Rule::BadPathChar(char_at(s, start)), start)),
    };
    let mut pos = start + 1;
    for segment in path.split('/') {
        if segment.is_empty() && pos == s.len() {
            return Err(err(Rule::TrailingSlash, pos - 1));
        }
        check_segment(segment, pos)?;
        pos += segment.len() + 1;
    }
    Ok(())
}

/// Validates a whole SPIFFE ID; returns the offset where the trust domain ends.
fn validate_id(s: &str) -> Result<usize, SpiffeIdError> {
    if s.is_empty() {
        return Err(err(Rule::Empty, 0));
    }
    if s.len() > MAX_PARSED_ID_LEN {
        return Err(err(Rule::TooLong, MAX_PARSED_ID_LEN));
    }
    let td_start = check_scheme(s)?;
    let td_end = scan_trust_domain(s, td_start)?;
    scan_path(s, td_end)?;
    Ok(td_end)
}

/// Whether a [`TrustDomain::new`] argument is meant as an ID (`spiffe://name`, or any other
/// `scheme://`) rather than a bare name.
fn looks_like_id(name: &str) -> bool {
    name.contains("://")
        || name
            .as_bytes()
            .get(..SCHEME_LEN - 2)
            .is_some_and(|p| p.eq_ignore_ascii_case(b"spiffe:"))
}

/// `s` with its (already validated) scheme lowercased.
fn canonical(s: &str) -> Arc<str> {
    if s.starts_with(SCHEME) {
        Arc::from(s)
    } else {
        let mut out = String::with_capacity(s.len());
        out.push_str(SCHEME);
        out.push_str(s.get(SCHEME_LEN..).unwrap_or(""));
        Arc::from(out)
    }
}

// ---------------------------------------------------------------------------------------------
// TrustDomain
// ---------------------------------------------------------------------------------------------

/// A SPIFFE trust domain, such as `example.org`: 1 to 255 bytes of `[a-z0-9._-]`.
///
/// Cheap to clone. Displays, serializes and compares as the bare name (`example.org`).
#[derive(Clone)]
pub struct TrustDomain {
    /// `spiffe://<name>...`; the name is `id[SCHEME_LEN..end]`. Shared with the [`SpiffeId`] it
    /// may have come from, so [`SpiffeId::trust_domain`] does not allocate.
    id: Arc<str>,
    end: usize,
}

impl TrustDomain {
    /// Parses a trust domain from its bare name (`example.org`) or its ID with an empty path
    /// (`spiffe://example.org`, scheme in any case).
    ///
    /// Errors as [`SpiffeId::parse`] would, plus [`Rule::PathNotAllowed`] for anything after
    /// the name, and [`Rule::Empty`] for an empty string.
    pub fn new(name: &str) -> Result<Self, SpiffeIdError> {
        if name.is_empty() {
            return Err(err(Rule::Empty, 0));
        }
        let start = if looks_like_id(name) {
            check_scheme(name)?
        } else {
            0
        };
        let end = scan_trust_domain(name, start)?;
        match name.as_bytes().get(end) {
            None => {}
            Some(b'?') => return Err(err(Rule::Query, end)),
            Some(b'#') => return Err(err(Rule::Fragment, end)),
            Some(_) => return Err(err(Rule::PathNotAllowed, end)),
        }
        let bare = name.get(start..end).unwrap_or("");
        let mut id = String::with_capacity(SCHEME_LEN + bare.len());
        id.push_str(SCHEME);
        id.push_str(bare);
        Ok(Self {
            end: id.len(),
            id: Arc::from(id),
        })
    }

    /// The bare name, e.g. `example.org`.
    pub fn as_str(&self) -> &str {
        &self.id[SCHEME_LEN..self.end]
    }

    /// The trust domain's own SPIFFE ID, e.g. `spiffe://example.org` (empty path).
    pub fn id(&self) -> SpiffeId {
        let id = if self.end == self.id.len() {
            Arc::clone(&self.id)
        } else {
            Arc::from(&self.id[..self.end])
        };
        SpiffeId {
            id,
            td_end: self.end,
        }
    }
}

impl PartialEq for TrustDomain {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for TrustDomain {}

impl Hash for TrustDomain {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl PartialOrd for TrustDomain {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for TrustDomain {
    fn cmp(&self, other: &Self) -> Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl fmt::Debug for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("TrustDomain").field(&self.as_str()).finish()
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl AsRef<str> for TrustDomain {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl FromStr for TrustDomain {
    type Err = SpiffeIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl TryFrom<&str> for TrustDomain {
    type Error = SpiffeIdError;

    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl Serialize for TrustDomain {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for TrustDomain {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(ParseVisitor::new("a SPIFFE trust domain string"))
    }
}

// ---------------------------------------------------------------------------------------------
// SpiffeId
// ---------------------------------------------------------------------------------------------

/// A valid SPIFFE ID, such as `spiffe://example.org/ns/default/sa/web`.
///
/// Stores the canonical string once (the scheme lowercased, nothing else changed) and is cheap
/// to clone. Displays, serializes, compares and hashes as that string.
#[derive(Clone)]
pub struct SpiffeId {
    /// The canonical ID.
    id: Arc<str>,
    /// Where the trust domain ends and the path starts.
    td_end: usize,
}

impl SpiffeId {
    /// Parses and validates a SPIFFE ID. The scheme may be in any case; it is stored and
    /// displayed as `spiffe://`.
    ///
    /// IDs up to [`MAX_PARSED_ID_LEN`] (64 KiB) parse, longer than the 2048 bytes
    /// ([`MAX_ID_LEN`]) the specification lets an implementation generate: peers built on other
    /// libraries may present them. fipstun itself never issues or requests such an ID (see
    /// [`MAX_ID_LEN`]). Beyond 64 KiB: [`Rule::TooLong`].
    pub fn parse(s: &str) -> Result<Self, SpiffeIdError> {
        let td_end = validate_id(s)?;
        Ok(Self {
            id: canonical(s),
            td_end,
        })
    }

    /// Builds `spiffe://<trust_domain>/<segments[0]>/<segments[1]>...`, validating each segment
    /// (an empty slice gives the trust domain's own ID). A `/` inside a segment is a
    /// [`Rule::BadPathChar`]; error positions are offsets in the ID that would have been built.
    /// The length bound is the parser's, [`MAX_PARSED_ID_LEN`]; issuing an SVID for the ID
    /// checks [`MAX_ID_LEN`].
    pub fn new(trust_domain: &TrustDomain, segments: &[&str]) -> Result<Self, SpiffeIdError> {
        let td_end = trust_domain.end;
        let total = segments.iter().fold(td_end, |len, segment| {
            len.saturating_add(segment.len()).saturating_add(1)
        });
        if total > MAX_PARSED_ID_LEN {
            return Err(err(Rule::TooLong, MAX_PARSED_ID_LEN));
        }
        let mut pos = td_end + 1;
        for segment in segments {
            check_segment(segment, pos)?;
            pos += segment.len() + 1;
        }
        let mut id = String::with_capacity(total);
        id.push_str(&trust_domain.id[..td_end]);
        for segment in segments {
            id.push('/');
            id.push_str(segment);
        }
        Ok(Self {
            id: Arc::from(id),
            td_end,
        })
    }

    /// The trust domain. Shares this ID's storage: no allocation.
    pub fn trust_domain(&self) -> TrustDomain {
        TrustDomain {
            id: Arc::clone(&self.id),
            end: self.td_end,
        }
    }

    /// The trust domain's bare name, e.g. `example.org`.
    pub fn trust_domain_name(&self) -> &str {
        &self.id[SCHEME_LEN..self.td_end]
    }

    /// The path: empty, or `/segment` repeated, e.g. `/ns/default/sa/web`.
    pub fn path(&self) -> &str {
        &self.id[self.td_end..]
    }

    /// The path segments, in order (none for an empty path).
    pub fn segments(&self) -> impl DoubleEndedIterator<Item = &str> + Clone {
        self.path()
            .strip_prefix('/')
            .into_iter()
            .flat_map(|path| path.split('/'))
    }

    /// The canonical ID string, e.g. `spiffe://example.org/ns/default/sa/web`.
    pub fn as_str(&self) -> &str {
        &self.id
    }

    /// Whether this ID belongs to trust domain `td`.
    pub fn is_member_of(&self, td: &TrustDomain) -> bool {
        self.trust_domain_name() == td.as_str()
    }

    /// The Istio identity, when the path is exactly `/ns/<namespace>/sa/<service-account>`.
    pub fn istio(&self) -> Option<IstioIdentity<'_>> {
        let mut segments = self.segments();
        match (
            segments.next(),
            segments.next(),
            segments.next(),
            segments.next(),
            segments.next(),
        ) {
            (Some("ns"), Some(namespace), Some("sa"), Some(service_account), None) => {
                Some(IstioIdentity {
                    namespace,
                    service_account,
                })
            }
            _ => None,
        }
    }

    /// Builds the Istio ID `spiffe://<td>/ns/<namespace>/sa/<service_account>`, validating both
    /// names as path segments (see [`SpiffeId::new`]).
    pub fn from_istio(
        td: &TrustDomain,
        namespace: &str,
        service_account: &str,
    ) -> Result<Self, SpiffeIdError> {
        Self::new(td, &["ns", namespace, "sa", service_account])
    }
}

impl PartialEq for SpiffeId {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for SpiffeId {}

impl Hash for SpiffeId {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl PartialOrd for SpiffeId {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for SpiffeId {
    fn cmp(&self, other: &Self) -> Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl fmt::Debug for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SpiffeId").field(&self.as_str()).finish()
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl AsRef<str> for SpiffeId {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl FromStr for SpiffeId {
    type Err = SpiffeIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<&str> for SpiffeId {
    type Error = SpiffeIdError;

    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Self::parse(s)
    }
}

impl Serialize for SpiffeId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for SpiffeId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(ParseVisitor::new("a SPIFFE ID string"))
    }
}

/// Deserializes a string and validates it through `T::from_str`.
struct ParseVisitor<T> {
    expecting: &'static str,
    target: PhantomData<fn() -> T>,
}

impl<T> ParseVisitor<T> {
    const fn new(expecting: &'static str) -> Self {
        Self {
            expecting,
            target: PhantomData,
        }
    }
}

impl<T: FromStr<Err = SpiffeIdError>> Visitor<'_> for ParseVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        v.parse().map_err(E::custom)
    }
}

// ---------------------------------------------------------------------------------------------
// Istio
// ---------------------------------------------------------------------------------------------

/// The Istio view of a SPIFFE ID whose path is `/ns/<namespace>/sa/<service-account>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IstioIdentity<'a> {
    /// The Kubernetes namespace.
    pub namespace: &'a str,
    /// The Kubernetes service account.
    pub service_account: &'a str,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheme_mismatch_reports_first_differing_byte() {
        assert_eq!(check_scheme("spiffe://x"), Ok(9));
        assert_eq!(check_scheme("SPIFFE://x"), Ok(9));
        assert_eq!(check_scheme("spiffe:/x"), Err(err(Rule::WrongScheme, 8)));
        assert_eq!(check_scheme("spif"), Err(err(Rule::WrongScheme, 4)));
        assert_eq!(
            check_scheme("\u{e9}spiffe://"),
            Err(err(Rule::WrongScheme, 0))
        );
    }

    #[test]
    fn char_at_decodes_multibyte_and_never_panics() {
        assert_eq!(char_at("a\u{e9}", 1), '\u{e9}');
        assert_eq!(char_at("a\u{e9}", 2), char::REPLACEMENT_CHARACTER);
        assert_eq!(char_at("a", 5), char::REPLACEMENT_CHARACTER);
    }

    #[test]
    fn trust_domain_scan_stops_at_path_query_fragment() {
        assert_eq!(scan_trust_domain("ab/c", 0), Ok(2));
        assert_eq!(scan_trust_domain("ab?c", 0), Ok(2));
        assert_eq!(scan_trust_domain("ab#c", 0), Ok(2));
        assert_eq!(scan_trust_domain("ab", 0), Ok(2));
        assert_eq!(
            scan_trust_domain("/x", 0),
            Err(err(Rule::MissingTrustDomain, 0))
        );
    }

    #[test]
    fn segment_checks() {
        assert_eq!(check_segment("...", 3), Ok(()));
        assert_eq!(check_segment("", 3), Err(err(Rule::EmptySegment, 3)));
        assert_eq!(check_segment("..", 3), Err(err(Rule::DotSegment, 3)));
        assert_eq!(check_segment("a/b", 3), Err(err(Rule::BadPathChar('/'), 4)));
        assert_eq!(check_segment("a?", 3), Err(err(Rule::Query, 4)));
    }

    #[test]
    fn spiffe_id_shares_storage_with_its_trust_domain() {
        let id = SpiffeId::parse("spiffe://example.org/a").unwrap_or_else(|e| panic!("{e}"));
        let td = id.trust_domain();
        assert!(Arc::ptr_eq(&id.id, &td.id));
        assert_eq!(td.as_str(), "example.org");
        assert_eq!(td.id().as_str(), "spiffe://example.org");
    }
}
