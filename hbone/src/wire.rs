//! The HBONE wire format as plain types: the `CONNECT` request and its response, built into and
//! parsed from `http` types without any socket. The h2 glue in [`HboneServer`](crate::HboneServer) and
//! [`HboneClient`](crate::HboneClient) is a thin layer over these.
//!
//! Parsing never panics and returns a [`WireError`] that names what was wrong; policy (who may
//! connect where) is not decided here.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};

/// The `baggage` request header (W3C Baggage).
pub const BAGGAGE: HeaderName = HeaderName::from_static("baggage");
/// The `traceparent` request header (W3C Trace Context, §3.2).
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// The `forwarded` request header (RFC 7239).
pub const FORWARDED: HeaderName = HeaderName::from_static("forwarded");

/// Longest `baggage` value we accept (W3C Baggage §3.3.1 lets a platform limit it to 8192 bytes).
pub const MAX_BAGGAGE_LEN: usize = 8192;
/// Longest DNS name accepted in an authority (RFC 1035 §2.3.4, without the trailing dot).
const MAX_HOSTNAME_LEN: usize = 253;

/// Why a request or response is not valid HBONE.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The method is not `CONNECT`.
    #[error("method is {0}, HBONE requires CONNECT")]
    NotConnect(String),
    /// The request carries a `:protocol` pseudo-header (RFC 8441 extended CONNECT).
    #[error("extended CONNECT (:protocol {0}) is not HBONE; HBONE uses plain CONNECT")]
    ExtendedConnect(String),
    /// The request is not HTTP/2.
    #[error("HBONE runs over HTTP/2, the request is {0:?}")]
    NotHttp2(Version),
    /// A plain CONNECT must not carry `:scheme` or `:path` (RFC 9113 §8.5).
    #[error("CONNECT must not carry :scheme or :path (got URI {0:?})")]
    SchemeOrPath(String),
    /// No `:authority`.
    #[error("CONNECT has no :authority")]
    MissingAuthority,
    /// The authority has no port.
    #[error("authority {0:?} has no port; HBONE needs ip:port")]
    MissingPort(String),
    /// The port is not a decimal number in 1..=65535 without leading zeros.
    #[error("authority {authority:?} has an invalid port {port:?}")]
    BadPort {
        /// The whole authority.
        authority: String,
        /// The port text.
        port: String,
    },
    /// An IPv6 address must be in brackets, like `[::1]:8080`.
    #[error("authority {0:?}: an IPv6 address must be written in brackets")]
    UnbracketedIpv6(String),
    /// The host is neither an IP address nor (where allowed) a valid DNS name.
    #[error("authority {authority:?}: host {host:?} is not an IP address or a valid DNS name")]
    BadHost {
        /// The whole authority.
        authority: String,
        /// The host part.
        host: String,
    },
    /// The host is a DNS name and the hostname policy refuses it.
    #[error("authority {0:?} names a host; this endpoint accepts only ip:port")]
    HostnameNotAllowed(String),
    /// The authority carries user info (`user@host`).
    #[error("authority {0:?} carries user info, which HBONE forbids")]
    UserInfo(String),
    /// A header that may appear once appeared more than once.
    #[error("header {0} appears more than once")]
    DuplicateHeader(&'static str),
    /// A header value is not visible ASCII.
    #[error("header {0} is not visible ASCII")]
    NotAscii(&'static str),
    /// The `traceparent` header is malformed.
    #[error("traceparent {value:?}: {reason}")]
    BadTraceparent {
        /// The header value (truncated to 64 bytes).
        value: String,
        /// What rule failed.
        reason: &'static str,
    },
    /// The `baggage` header is longer than [`MAX_BAGGAGE_LEN`].
    #[error("baggage is {0} bytes, more than {MAX_BAGGAGE_LEN}")]
    BaggageTooLong(usize),
    /// The `forwarded` header is malformed or has no `for=` parameter.
    #[error("forwarded {value:?}: {reason}")]
    BadForwarded {
        /// The header value (truncated to 64 bytes).
        value: String,
        /// What rule failed.
        reason: &'static str,
    },
    /// A response carried an informational (1xx) status where a final one was required.
    #[error("response status {0} is informational, not a final answer to CONNECT")]
    InformationalStatus(u16),
}

fn truncated(s: &str) -> String {
    let mut end = s.len().min(64);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// Whether a CONNECT authority may name a host instead of an IP address.
///
/// ztunnel sends only `ip:port`; a hostname is refused by default.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum HostnamePolicy {
    /// Only `ip:port` (the default, and what ztunnel sends).
    #[default]
    Reject,
    /// Any valid DNS name, resolved by the server when it dials.
    Allow,
    /// DNS names equal to, or ending in `.` + , one of these suffixes (lowercase, no leading dot).
    AllowSuffixes(Vec<String>),
}

impl HostnamePolicy {
    fn allows(&self, host: &str) -> bool {
        match self {
            Self::Reject => false,
            Self::Allow => true,
            Self::AllowSuffixes(suffixes) => suffixes.iter().any(|s| {
                host == s
                    || (host.len() > s.len()
                        && host.ends_with(s.as_str())
                        && host.as_bytes()[host.len() - s.len() - 1] == b'.')
            }),
        }
    }
}

/// Where a CONNECT goes: the `:authority` of the request.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Authority {
    /// `ip:port` (IPv6 in brackets on the wire).
    Addr(SocketAddr),
    /// `host:port`, only where a [`HostnamePolicy`] allows it. The host is lowercase.
    Host {
        /// A valid DNS name, lowercase.
        host: String,
        /// The port, 1..=65535.
        port: u16,
    },
}

impl Authority {
    /// Parse an authority under `policy`: `ip:port`, `[v6]:port`, or (if allowed) `host:port`.
    pub fn parse(s: &str, policy: &HostnamePolicy) -> Result<Self, WireError> {
        if s.is_empty() {
            return Err(WireError::MissingAuthority);
        }
        if s.contains('@') {
            return Err(WireError::UserInfo(truncated(s)));
        }
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let Some((inner, after)) = rest.split_once(']') else {
                return Err(WireError::BadHost {
                    authority: truncated(s),
                    host: truncated(s),
                });
            };
            let ip = Ipv6Addr::from_str(inner).map_err(|_| WireError::BadHost {
                authority: truncated(s),
                host: truncated(inner),
            })?;
            let port = match after.strip_prefix(':') {
                Some(p) => p,
                None if after.is_empty() => return Err(WireError::MissingPort(truncated(s))),
                None => {
                    return Err(WireError::BadHost {
                        authority: truncated(s),
                        host: truncated(s),
                    });
                }
            };
            let port = parse_port(s, port)?;
            return Ok(Self::Addr(SocketAddr::new(IpAddr::V6(ip), port)));
        } else {
            match s.rsplit_once(':') {
                None => return Err(WireError::MissingPort(truncated(s))),
                Some((h, p)) => (h, p),
            }
        };
        if host.contains(':') {
            // `::1:80` or a bare IPv6 address: its last group would be read as a port.
            return Err(if Ipv6Addr::from_str(s).is_ok() {
                WireError::MissingPort(truncated(s))
            } else {
                WireError::UnbracketedIpv6(truncated(s))
            });
        }
        let port = parse_port(s, port)?;
        if let Ok(ip) = Ipv4Addr::from_str(host) {
            return Ok(Self::Addr(SocketAddr::new(IpAddr::V4(ip), port)));
        }
        if !is_dns_name(host) || looks_like_ipv4(host) {
            return Err(WireError::BadHost {
                authority: truncated(s),
                host: truncated(host),
            });
        }
        let host = host.to_ascii_lowercase();
        if !policy.allows(&host) {
            return Err(WireError::HostnameNotAllowed(truncated(s)));
        }
        Ok(Self::Host { host, port })
    }

    /// The socket address, when the authority is `ip:port`.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        match self {
            Self::Addr(a) => Some(*a),
            Self::Host { .. } => None,
        }
    }

    /// The port.
    pub fn port(&self) -> u16 {
        match self {
            Self::Addr(a) => a.port(),
            Self::Host { port, .. } => *port,
        }
    }
}

impl From<SocketAddr> for Authority {
    fn from(a: SocketAddr) -> Self {
        Self::Addr(a)
    }
}

impl fmt::Display for Authority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // SocketAddr's Display brackets IPv6 and drops the scope id, which HBONE never uses.
            Self::Addr(SocketAddr::V6(a)) => write!(f, "[{}]:{}", a.ip(), a.port()),
            Self::Addr(a) => write!(f, "{a}"),
            Self::Host { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

/// A target's authority: its address, or its (already validated, lowercase) name.
impl From<&fipstun_transport::Target> for Authority {
    fn from(t: &fipstun_transport::Target) -> Self {
        match (t.socket_addr(), t.host()) {
            (Some(a), _) => Self::Addr(a),
            (None, host) => Self::Host {
                host: host.to_string(),
                port: t.port(),
            },
        }
    }
}

impl From<fipstun_transport::Target> for Authority {
    fn from(t: fipstun_transport::Target) -> Self {
        Self::from(&t)
    }
}

/// The target an authority names (`Target::parse` of its text form).
impl TryFrom<&Authority> for fipstun_transport::Target {
    type Error = fipstun_transport::TargetError;

    fn try_from(a: &Authority) -> Result<Self, Self::Error> {
        match a {
            Authority::Addr(addr) => Ok(Self::new(*addr)),
            Authority::Host { host, port } => Self::name(host, *port),
        }
    }
}

fn parse_port(authority: &str, p: &str) -> Result<u16, WireError> {
    let bad = || WireError::BadPort {
        authority: truncated(authority),
        port: truncated(p),
    };
    if p.is_empty() {
        return Err(WireError::MissingPort(truncated(authority)));
    }
    if p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) || (p.len() > 1 && p.starts_with('0'))
    {
        return Err(bad());
    }
    match p.parse::<u16>() {
        Ok(0) | Err(_) => Err(bad()),
        Ok(v) => Ok(v),
    }
}

/// RFC 1123 host name: dot-separated labels of letters, digits and hyphens, 1..=63 bytes each,
/// not starting or ending with a hyphen.
fn is_dns_name(s: &str) -> bool {
    if s.is_empty() || s.len() > MAX_HOSTNAME_LEN {
        return false;
    }
    s.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    })
}

/// All-numeric dotted names (`1.2.3`, `010.0.0.1`) are malformed addresses, not host names.
fn looks_like_ipv4(s: &str) -> bool {
    s.split('.').all(|l| l.bytes().all(|b| b.is_ascii_digit()))
}

/// A W3C Trace Context `traceparent` value: `version-traceid-parentid-flags`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TraceParent {
    /// Version byte; `ff` is invalid.
    pub version: u8,
    /// 16-byte trace ID, not all zero.
    pub trace_id: [u8; 16],
    /// 8-byte parent (span) ID, not all zero.
    pub parent_id: [u8; 8],
    /// Trace flags (bit 0: sampled).
    pub flags: u8,
}

impl TraceParent {
    /// Parse per W3C Trace Context §3.2: lowercase hex fields of 2, 32, 16 and 2 digits joined by
    /// `-`; version `ff` and all-zero IDs are invalid; a version above `00` may carry more
    /// fields after the flags, which are ignored.
    pub fn parse(s: &str) -> Result<Self, WireError> {
        let bad = |reason| WireError::BadTraceparent {
            value: truncated(s),
            reason,
        };
        let b = s.as_bytes();
        if b.len() < 55 {
            return Err(bad("shorter than the 55 characters of version 00"));
        }
        if b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
            return Err(bad(
                "fields must be separated by '-' at offsets 2, 35 and 52",
            ));
        }
        let version =
            hex_byte(&b[0..2]).ok_or_else(|| bad("version is not 2 lowercase hex digits"))?;
        if version == 0xff {
            return Err(bad("version ff is invalid"));
        }
        if b.len() > 55 && (version == 0 || b[55] != b'-') {
            return Err(bad("unexpected characters after the flags"));
        }
        let mut trace_id = [0u8; 16];
        for (i, out) in trace_id.iter_mut().enumerate() {
            *out = hex_byte(&b[3 + 2 * i..5 + 2 * i])
                .ok_or_else(|| bad("trace-id is not 32 lowercase hex digits"))?;
        }
        let mut parent_id = [0u8; 8];
        for (i, out) in parent_id.iter_mut().enumerate() {
            *out = hex_byte(&b[36 + 2 * i..38 + 2 * i])
                .ok_or_else(|| bad("parent-id is not 16 lowercase hex digits"))?;
        }
        let flags =
            hex_byte(&b[53..55]).ok_or_else(|| bad("flags are not 2 lowercase hex digits"))?;
        if trace_id == [0; 16] {
            return Err(bad("trace-id is all zero"));
        }
        if parent_id == [0; 8] {
            return Err(bad("parent-id is all zero"));
        }
        Ok(Self {
            version,
            trace_id,
            parent_id,
            flags,
        })
    }

    /// Whether the sampled flag is set.
    pub fn sampled(&self) -> bool {
        self.flags & 1 == 1
    }
}

fn hex_byte(two: &[u8]) -> Option<u8> {
    fn nib(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        }
    }
    match two {
        [h, l] => Some(nib(*h)? << 4 | nib(*l)?),
        _ => None,
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02x}-", self.version)?;
        for b in self.trace_id {
            write!(f, "{b:02x}")?;
        }
        f.write_str("-")?;
        for b in self.parent_id {
            write!(f, "{b:02x}")?;
        }
        write!(f, "-{:02x}", self.flags)
    }
}

impl FromStr for TraceParent {
    type Err = WireError;
    fn from_str(s: &str) -> Result<Self, WireError> {
        Self::parse(s)
    }
}

/// The `for=` node of a `Forwarded` header (RFC 7239 §6): who originally opened the stream.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ForwardedFor {
    /// An IP address without a port.
    Ip(IpAddr),
    /// An IP address and port.
    Socket(SocketAddr),
    /// `unknown`.
    Unknown,
    /// An obfuscated identifier (`_` followed by letters, digits, `.`, `_`, `-`).
    Obfuscated(String),
}

/// A `Forwarded` header reduced to what HBONE uses: the first element's `for=` parameter.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Forwarded {
    /// The original client.
    pub for_node: ForwardedFor,
}

impl Forwarded {
    /// A header naming `addr` as the original client.
    pub fn for_addr(addr: SocketAddr) -> Self {
        Self {
            for_node: ForwardedFor::Socket(addr),
        }
    }

    /// A header naming `ip` as the original client.
    pub fn for_ip(ip: IpAddr) -> Self {
        Self {
            for_node: ForwardedFor::Ip(ip),
        }
    }

    /// Parse the first `for=` of the first element that has one (RFC 7239 §4). Values may be
    /// tokens or quoted strings; IPv6 nodes must be bracketed and quoted.
    pub fn parse(s: &str) -> Result<Self, WireError> {
        let bad = |reason| WireError::BadForwarded {
            value: truncated(s),
            reason,
        };
        for element in split_unquoted(s, b',').map_err(bad)? {
            for pair in split_unquoted(element, b';').map_err(bad)? {
                let pair = pair.trim_matches([' ', '\t']);
                if pair.is_empty() {
                    continue;
                }
                let Some((k, v)) = pair.split_once('=') else {
                    return Err(bad("a parameter has no '='"));
                };
                if !k.eq_ignore_ascii_case("for") {
                    continue;
                }
                let (v, quoted) = match v.strip_prefix('"') {
                    Some(inner) => (
                        inner
                            .strip_suffix('"')
                            .ok_or_else(|| bad("unterminated quoted string"))?,
                        true,
                    ),
                    None => (v, false),
                };
                if v.contains('\\') || v.contains('"') {
                    return Err(bad("escapes are not allowed in a node"));
                }
                return parse_node(v, quoted)
                    .map(|for_node| Self { for_node })
                    .map_err(bad);
            }
        }
        Err(bad("no for= parameter"))
    }
}

fn split_unquoted(s: &str, sep: u8) -> Result<Vec<&str>, &'static str> {
    let mut parts = Vec::new();
    let mut in_quotes = false;
    let mut start = 0;
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' => in_quotes = !in_quotes,
            b'\\' if in_quotes => i += 1,
            c if c == sep && !in_quotes => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    if in_quotes {
        return Err("unterminated quoted string");
    }
    parts.push(&s[start.min(s.len())..]);
    Ok(parts)
}

fn parse_node(v: &str, quoted: bool) -> Result<ForwardedFor, &'static str> {
    if v.eq_ignore_ascii_case("unknown") {
        return Ok(ForwardedFor::Unknown);
    }
    if let Some(rest) = v.strip_prefix('_') {
        if !rest.is_empty()
            && rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
        {
            return Ok(ForwardedFor::Obfuscated(v.to_string()));
        }
        return Err("bad obfuscated node");
    }
    if let Some(rest) = v.strip_prefix('[') {
        if !quoted {
            return Err("an IPv6 node must be quoted");
        }
        let (inner, after) = rest.split_once(']').ok_or("unterminated IPv6 bracket")?;
        let ip = Ipv6Addr::from_str(inner).map_err(|_| "bad IPv6 address")?;
        return match after.strip_prefix(':') {
            None if after.is_empty() => Ok(ForwardedFor::Ip(IpAddr::V6(ip))),
            None => Err("garbage after the IPv6 address"),
            Some(p) => Ok(ForwardedFor::Socket(SocketAddr::new(
                IpAddr::V6(ip),
                parse_node_port(p)?,
            ))),
        };
    }
    match v.split_once(':') {
        None => Ipv4Addr::from_str(v)
            .map(|ip| ForwardedFor::Ip(IpAddr::V4(ip)))
            .map_err(|_| "the node is not an IP address, unknown, or an obfuscated name"),
        Some((ip, p)) => {
            if !quoted {
                return Err("a node with a port must be quoted");
            }
            let ip =
                Ipv4Addr::from_str(ip).map_err(|_| "bad IPv4 address (IPv6 needs brackets)")?;
            Ok(ForwardedFor::Socket(SocketAddr::new(
                IpAddr::V4(ip),
                parse_node_port(p)?,
            )))
        }
    }
}

fn parse_node_port(p: &str) -> Result<u16, &'static str> {
    if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
        return Err("bad port");
    }
    p.parse().map_err(|_| "bad port")
}

impl fmt::Display for Forwarded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.for_node {
            ForwardedFor::Ip(IpAddr::V4(ip)) => write!(f, "for={ip}"),
            ForwardedFor::Ip(IpAddr::V6(ip)) => write!(f, "for=\"[{ip}]\""),
            ForwardedFor::Socket(SocketAddr::V4(a)) => write!(f, "for=\"{a}\""),
            ForwardedFor::Socket(SocketAddr::V6(a)) => {
                write!(f, "for=\"[{}]:{}\"", a.ip(), a.port())
            }
            ForwardedFor::Unknown => f.write_str("for=unknown"),
            ForwardedFor::Obfuscated(s) => write!(f, "for={s}"),
        }
    }
}

/// An HBONE `CONNECT` request: where to go and the optional tracing/forwarding headers.
///
/// On the wire (HTTP/2, RFC 9113 §8.5): `:method CONNECT`, `:authority ip:port`, no `:scheme`,
/// no `:path`, no `:protocol`; optional `baggage`, `traceparent`, `forwarded` headers.
///
/// ```
/// use fipstun_hbone::wire::{ConnectRequest, HostnamePolicy, TraceParent};
///
/// let req = ConnectRequest::new("10.0.0.7:8080".parse::<std::net::SocketAddr>().unwrap())
///     .with_traceparent(TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap());
/// let http = req.to_http();
/// assert_eq!(http.method(), http::Method::CONNECT);
/// assert_eq!(http.uri().to_string(), "10.0.0.7:8080");
/// assert_eq!(ConnectRequest::parse(&http, &HostnamePolicy::Reject).unwrap(), req);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectRequest {
    target: Authority,
    baggage: Option<String>,
    traceparent: Option<TraceParent>,
    forwarded: Option<Forwarded>,
}

impl ConnectRequest {
    /// A request for `target` without optional headers.
    pub fn new(target: impl Into<Authority>) -> Self {
        Self {
            target: target.into(),
            baggage: None,
            traceparent: None,
            forwarded: None,
        }
    }

    /// Set the `baggage` header. Refused if longer than [`MAX_BAGGAGE_LEN`] or not visible
    /// ASCII.
    pub fn with_baggage(mut self, baggage: impl Into<String>) -> Result<Self, WireError> {
        let baggage = baggage.into();
        check_baggage(&baggage)?;
        self.baggage = Some(baggage);
        Ok(self)
    }

    /// Set the `traceparent` header.
    pub fn with_traceparent(mut self, tp: TraceParent) -> Self {
        self.traceparent = Some(tp);
        self
    }

    /// Set the `forwarded` header.
    pub fn with_forwarded(mut self, fwd: Forwarded) -> Self {
        self.forwarded = Some(fwd);
        self
    }

    /// The target authority.
    pub fn target(&self) -> &Authority {
        &self.target
    }

    /// The `baggage` header, if any (several headers are joined with `,`).
    pub fn baggage(&self) -> Option<&str> {
        self.baggage.as_deref()
    }

    /// The `traceparent` header, if any.
    pub fn traceparent(&self) -> Option<&TraceParent> {
        self.traceparent.as_ref()
    }

    /// The `forwarded` header, if any.
    pub fn forwarded(&self) -> Option<&Forwarded> {
        self.forwarded.as_ref()
    }

    /// The HTTP/2 request h2 sends: plain CONNECT with an authority-form URI.
    pub fn to_http(&self) -> Request<()> {
        let mut req = Request::new(());
        *req.method_mut() = Method::CONNECT;
        *req.version_mut() = Version::HTTP_2;
        // Always valid: an IP literal or a checked DNS name, and a port.
        *req.uri_mut() = Uri::try_from(self.target.to_string()).unwrap_or_default();
        let h = req.headers_mut();
        if let Some(b) = &self.baggage
            && let Ok(v) = HeaderValue::from_str(b)
        {
            h.insert(BAGGAGE, v);
        }
        if let Some(tp) = &self.traceparent
            && let Ok(v) = HeaderValue::from_str(&tp.to_string())
        {
            h.insert(TRACEPARENT, v);
        }
        if let Some(fwd) = &self.forwarded
            && let Ok(v) = HeaderValue::from_str(&fwd.to_string())
        {
            h.insert(FORWARDED, v);
        }
        req
    }

    /// Parse a received request. `policy` decides whether a hostname authority is acceptable.
    pub fn parse<B>(req: &Request<B>, policy: &HostnamePolicy) -> Result<Self, WireError> {
        if req.method() != Method::CONNECT {
            return Err(WireError::NotConnect(truncated(req.method().as_str())));
        }
        if req.version() != Version::HTTP_2 {
            return Err(WireError::NotHttp2(req.version()));
        }
        if let Some(p) = req.extensions().get::<h2::ext::Protocol>() {
            return Err(WireError::ExtendedConnect(truncated(p.as_str())));
        }
        let uri = req.uri();
        if uri.scheme().is_some() || uri.path_and_query().is_some() {
            return Err(WireError::SchemeOrPath(truncated(&uri.to_string())));
        }
        let authority = uri.authority().ok_or(WireError::MissingAuthority)?;
        let target = Authority::parse(authority.as_str(), policy)?;
        Self::from_headers(target, req.headers())
    }

    fn from_headers(target: Authority, h: &HeaderMap) -> Result<Self, WireError> {
        let mut baggage: Option<String> = None;
        for v in h.get_all(BAGGAGE) {
            let v = v.to_str().map_err(|_| WireError::NotAscii("baggage"))?;
            match &mut baggage {
                None => baggage = Some(v.to_string()),
                Some(b) => {
                    b.push(',');
                    b.push_str(v);
                }
            }
            if let Some(b) = &baggage {
                check_baggage(b)?;
            }
        }
        let traceparent = single(h, &TRACEPARENT, "traceparent")?
            .map(TraceParent::parse)
            .transpose()?;
        let forwarded = single(h, &FORWARDED, "forwarded")?
            .map(Forwarded::parse)
            .transpose()?;
        Ok(Self {
            target,
            baggage,
            traceparent,
            forwarded,
        })
    }
}

fn check_baggage(b: &str) -> Result<(), WireError> {
    if b.len() > MAX_BAGGAGE_LEN {
        return Err(WireError::BaggageTooLong(b.len()));
    }
    if !b
        .bytes()
        .all(|c| c == b' ' || c == b'\t' || c.is_ascii_graphic())
    {
        return Err(WireError::NotAscii("baggage"));
    }
    Ok(())
}

fn single<'h>(
    h: &'h HeaderMap,
    name: &HeaderName,
    label: &'static str,
) -> Result<Option<&'h str>, WireError> {
    let mut it = h.get_all(name).iter();
    let first = it.next();
    if it.next().is_some() {
        return Err(WireError::DuplicateHeader(label));
    }
    first
        .map(|v| v.to_str().map_err(|_| WireError::NotAscii(label)))
        .transpose()
}

/// Why a peer refused a CONNECT, from the response status (DESIGN §4, as ztunnel maps them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Rejection {
    /// 400: the request or its authority was malformed.
    BadRequest,
    /// 401: the peer identity is not authorized for the target.
    Unauthorized,
    /// 403: the request is forbidden by policy.
    Forbidden,
    /// 503: the server could not reach the target.
    Unreachable,
    /// Any other non-2xx status.
    Other(StatusCode),
}

impl Rejection {
    /// The HTTP status this rejection is sent as.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::Unreachable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Other(s) => *s,
        }
    }

    /// The rejection a status means, or `None` for a success (2xx) status.
    pub fn from_status(status: StatusCode) -> Option<Self> {
        Some(match status {
            s if s.is_success() => return None,
            StatusCode::BAD_REQUEST => Self::BadRequest,
            StatusCode::UNAUTHORIZED => Self::Unauthorized,
            StatusCode::FORBIDDEN => Self::Forbidden,
            StatusCode::SERVICE_UNAVAILABLE => Self::Unreachable,
            s => Self::Other(s),
        })
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.status();
        match self {
            Self::BadRequest => write!(f, "bad request ({s})"),
            Self::Unauthorized => write!(f, "unauthorized ({s})"),
            Self::Forbidden => write!(f, "forbidden ({s})"),
            Self::Unreachable => write!(f, "upstream unreachable ({s})"),
            Self::Other(_) => write!(f, "status {s}"),
        }
    }
}

/// The answer to a CONNECT: 200 (tunnel established) or a [`Rejection`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectResponse {
    status: StatusCode,
}

impl ConnectResponse {
    /// 200: authorized and the upstream connection is open.
    pub fn established() -> Self {
        Self {
            status: StatusCode::OK,
        }
    }

    /// A refusal.
    pub fn rejected(r: Rejection) -> Self {
        Self { status: r.status() }
    }

    /// The status code.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// `Ok` when the tunnel is established (any 2xx, RFC 9110 §9.3.6), else the rejection.
    pub fn result(&self) -> Result<(), Rejection> {
        match Rejection::from_status(self.status) {
            None => Ok(()),
            Some(r) => Err(r),
        }
    }

    /// The HTTP/2 response to send.
    pub fn to_http(&self) -> Response<()> {
        let mut r = Response::new(());
        *r.status_mut() = self.status;
        *r.version_mut() = Version::HTTP_2;
        r
    }

    /// Read a received response.
    pub fn parse<B>(resp: &Response<B>) -> Result<Self, WireError> {
        let status = resp.status();
        if status.is_informational() {
            return Err(WireError::InformationalStatus(status.as_u16()));
        }
        Ok(Self { status })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn p(s: &str) -> Result<Authority, WireError> {
        Authority::parse(s, &HostnamePolicy::Reject)
    }

    #[test]
    fn authorities() {
        assert_eq!(p("10.1.2.3:80").unwrap().to_string(), "10.1.2.3:80");
        assert_eq!(p("[::1]:443").unwrap().to_string(), "[::1]:443");
        assert_eq!(p(""), Err(WireError::MissingAuthority));
        assert!(matches!(p("10.1.2.3"), Err(WireError::MissingPort(_))));
        assert!(matches!(p("10.1.2.3:"), Err(WireError::MissingPort(_))));
        assert!(matches!(p("[::1]"), Err(WireError::MissingPort(_))));
        assert!(matches!(p("::1"), Err(WireError::MissingPort(_))));
        assert!(matches!(p("fe80::1:2:80"), Err(WireError::MissingPort(_))));
        assert!(matches!(
            p("fe80::1::2:80"),
            Err(WireError::UnbracketedIpv6(_))
        ));
        assert!(matches!(p("10.1.2.3:0"), Err(WireError::BadPort { .. })));
        assert!(matches!(p("10.1.2.3:080"), Err(WireError::BadPort { .. })));
        assert!(matches!(
            p("10.1.2.3:65536"),
            Err(WireError::BadPort { .. })
        ));
        assert!(matches!(p("10.1.2.3:+80"), Err(WireError::BadPort { .. })));
        assert!(matches!(p("010.1.2.3:80"), Err(WireError::BadHost { .. })));
        assert!(matches!(p("1.2.3:80"), Err(WireError::BadHost { .. })));
        assert!(matches!(p("u@1.2.3.4:80"), Err(WireError::UserInfo(_))));
        assert!(matches!(p("[::1%eth0]:80"), Err(WireError::BadHost { .. })));
        assert!(matches!(p("[::1]x:80"), Err(WireError::BadHost { .. })));
        assert!(matches!(
            p("example.com:80"),
            Err(WireError::HostnameNotAllowed(_))
        ));
        assert!(matches!(
            p("exa_mple.com:80"),
            Err(WireError::BadHost { .. })
        ));
        let allow = HostnamePolicy::Allow;
        assert_eq!(
            Authority::parse("Example.COM:80", &allow).unwrap(),
            Authority::Host {
                host: "example.com".into(),
                port: 80
            }
        );
        let sfx = HostnamePolicy::AllowSuffixes(vec!["svc.cluster.local".into()]);
        assert!(Authority::parse("db.ns.svc.cluster.local:5432", &sfx).is_ok());
        assert!(Authority::parse("svc.cluster.local:5432", &sfx).is_ok());
        assert!(Authority::parse("evilsvc.cluster.local:5432", &sfx).is_err());
    }

    #[test]
    fn traceparent_rules() {
        let ok = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let tp = TraceParent::parse(ok).unwrap();
        assert!(tp.sampled());
        assert_eq!(tp.to_string(), ok);
        for (bad, why) in [
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
                "short",
            ),
            (
                "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
                "uppercase",
            ),
            (
                "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                "version ff",
            ),
            (
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                "zero trace",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
                "zero parent",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
                "v00 trailing",
            ),
            (
                "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                "separator",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
                "not hex",
            ),
        ] {
            assert!(TraceParent::parse(bad).is_err(), "{why}");
        }
        // A future version may append fields.
        assert!(TraceParent::parse(&format!("01{}-extra", &ok[2..])).is_ok());
    }

    #[test]
    fn forwarded_for() {
        let f = |s: &str| Forwarded::parse(s).map(|f| f.for_node);
        assert_eq!(
            f("for=192.0.2.60"),
            Ok(ForwardedFor::Ip("192.0.2.60".parse().unwrap()))
        );
        assert_eq!(
            f("For=\"[2001:db8:cafe::17]:4711\""),
            Ok(ForwardedFor::Socket(
                "[2001:db8:cafe::17]:4711".parse().unwrap()
            ))
        );
        assert_eq!(
            f("proto=http;for=\"192.0.2.60:80\";by=203.0.113.43, for=10.0.0.1"),
            Ok(ForwardedFor::Socket("192.0.2.60:80".parse().unwrap()))
        );
        assert_eq!(f("for=unknown"), Ok(ForwardedFor::Unknown));
        assert_eq!(
            f("for=_hidden"),
            Ok(ForwardedFor::Obfuscated("_hidden".into()))
        );
        assert!(f("for=[::1]").is_err(), "v6 must be quoted");
        assert!(f("for=1.2.3.4:80").is_err(), "port must be quoted");
        assert!(f("proto=http").is_err());
        assert!(f("for=\"1.2.3.4").is_err());
        assert!(f("for=example.com").is_err());
    }

    #[test]
    fn request_shape_and_errors() {
        let req = ConnectRequest::new("[2001:db8::1]:15008".parse::<SocketAddr>().unwrap());
        let h = req.to_http();
        assert_eq!(h.uri().to_string(), "[2001:db8::1]:15008");
        assert!(h.uri().scheme().is_none() && h.uri().path_and_query().is_none());

        let mut get = h.clone();
        *get.method_mut() = Method::GET;
        assert!(matches!(
            ConnectRequest::parse(&get, &HostnamePolicy::Reject),
            Err(WireError::NotConnect(_))
        ));
        let mut ext = h.clone();
        ext.extensions_mut()
            .insert(h2::ext::Protocol::from_static("websocket"));
        assert!(matches!(
            ConnectRequest::parse(&ext, &HostnamePolicy::Reject),
            Err(WireError::ExtendedConnect(_))
        ));
        let mut dup = h.clone();
        for _ in 0..2 {
            dup.headers_mut().append(
                TRACEPARENT,
                HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            );
        }
        assert_eq!(
            ConnectRequest::parse(&dup, &HostnamePolicy::Reject),
            Err(WireError::DuplicateHeader("traceparent"))
        );
        let mut with_path = Request::new(());
        *with_path.method_mut() = Method::CONNECT;
        *with_path.version_mut() = Version::HTTP_2;
        *with_path.uri_mut() = Uri::from_static("https://1.2.3.4:80/");
        assert!(matches!(
            ConnectRequest::parse(&with_path, &HostnamePolicy::Reject),
            Err(WireError::SchemeOrPath(_))
        ));
        let mut two_baggage = h;
        two_baggage
            .headers_mut()
            .append(BAGGAGE, HeaderValue::from_static("a=1"));
        two_baggage
            .headers_mut()
            .append(BAGGAGE, HeaderValue::from_static("b=2"));
        let parsed = ConnectRequest::parse(&two_baggage, &HostnamePolicy::Reject).unwrap();
        assert_eq!(parsed.baggage(), Some("a=1,b=2"));
    }

    #[test]
    fn status_mapping() {
        for r in [
            Rejection::BadRequest,
            Rejection::Unauthorized,
            Rejection::Forbidden,
            Rejection::Unreachable,
            Rejection::Other(StatusCode::BAD_GATEWAY),
        ] {
            let resp = ConnectResponse::rejected(r).to_http();
            assert_eq!(ConnectResponse::parse(&resp).unwrap().result(), Err(r));
        }
        assert_eq!(Rejection::BadRequest.status(), 400);
        assert_eq!(Rejection::Unauthorized.status(), 401);
        assert_eq!(Rejection::Forbidden.status(), 403);
        assert_eq!(Rejection::Unreachable.status(), 503);
        assert_eq!(ConnectResponse::established().status(), 200);
        assert_eq!(ConnectResponse::established().result(), Ok(()));
        let mut info = Response::new(());
        *info.status_mut() = StatusCode::CONTINUE;
        assert!(ConnectResponse::parse(&info).is_err());
    }

    fn arb_socket() -> impl Strategy<Value = SocketAddr> {
        prop_oneof![
            (any::<[u8; 4]>(), 1u16..).prop_map(|(ip, port)| SocketAddr::from((ip, port))),
            (any::<[u16; 8]>(), 1u16..).prop_map(|(ip, port)| SocketAddr::from((ip, port))),
        ]
    }

    fn arb_forwarded() -> impl Strategy<Value = Forwarded> {
        prop_oneof![
            arb_socket().prop_map(Forwarded::for_addr),
            arb_socket().prop_map(|a| Forwarded::for_ip(a.ip())),
            Just(Forwarded {
                for_node: ForwardedFor::Unknown
            }),
            "_[a-zA-Z0-9._-]{1,20}".prop_map(|s| Forwarded {
                for_node: ForwardedFor::Obfuscated(s)
            }),
        ]
    }

    fn arb_traceparent() -> impl Strategy<Value = TraceParent> {
        (0u8..0xff, any::<[u8; 16]>(), any::<[u8; 8]>(), any::<u8>())
            .prop_filter("non-zero ids", |(_, t, p, _)| *t != [0; 16] && *p != [0; 8])
            .prop_map(|(version, trace_id, parent_id, flags)| TraceParent {
                version,
                trace_id,
                parent_id,
                flags,
            })
    }

    proptest! {
        #[test]
        fn request_round_trips(
            target in arb_socket(),
            baggage in proptest::option::of("[a-z0-9]{1,10}=[a-zA-Z0-9%]{0,20}(,[a-z]{1,5}=[0-9]{1,3}){0,3}"),
            tp in proptest::option::of(arb_traceparent()),
            fwd in proptest::option::of(arb_forwarded()),
        ) {
            let mut req = ConnectRequest::new(target);
            if let Some(b) = baggage { req = req.with_baggage(b).unwrap(); }
            if let Some(tp) = tp { req = req.with_traceparent(tp); }
            if let Some(f) = fwd { req = req.with_forwarded(f); }
            let parsed = ConnectRequest::parse(&req.to_http(), &HostnamePolicy::Reject).unwrap();
            prop_assert_eq!(parsed, req);
        }

        #[test]
        fn hostname_round_trips(host in "[a-z]([a-z0-9-]{0,10}[a-z0-9])?(\\.[a-z]([a-z0-9-]{0,10}[a-z0-9])?){0,3}", port in 1u16..) {
            let req = ConnectRequest::new(Authority::Host { host: host.clone(), port });
            let http = req.to_http();
            prop_assert_eq!(ConnectRequest::parse(&http, &HostnamePolicy::Allow).unwrap(), req);
            prop_assert!(matches!(
                ConnectRequest::parse(&http, &HostnamePolicy::Reject),
                Err(WireError::HostnameNotAllowed(_))
            ));
        }

        #[test]
        fn parsers_never_panic(s in "\\PC{0,80}") {
            let _ = Authority::parse(&s, &HostnamePolicy::Allow);
            let _ = TraceParent::parse(&s);
            let _ = Forwarded::parse(&s);
        }

        #[test]
        fn parsers_never_panic_on_near_misses(s in "[0-9a-f:\\[\\]._\";=, -]{0,70}") {
            let _ = Authority::parse(&s, &HostnamePolicy::AllowSuffixes(vec!["a".into()]));
            let _ = TraceParent::parse(&s);
            let _ = Forwarded::parse(&s);
        }

        #[test]
        fn request_parse_never_panics(
            method in prop_oneof![Just("CONNECT".to_string()), Just("GET".to_string()), "[A-Z]{1,8}"],
            uri in prop_oneof![
                "[0-9a-z.:\\[\\]%@_-]{0,40}",
                "(http|https)://[0-9.]{1,15}(:[0-9]{1,6})?/[a-z]{0,5}",
            ],
            headers in proptest::collection::vec(
                (prop_oneof![Just("traceparent"), Just("baggage"), Just("forwarded"), Just("x-other")],
                 "[ -~]{0,80}"),
                0..5,
            ),
            protocol in proptest::option::of("[a-z]{1,10}"),
        ) {
            let mut req = Request::new(());
            *req.version_mut() = Version::HTTP_2;
            if let Ok(m) = Method::from_bytes(method.as_bytes()) {
                *req.method_mut() = m;
            }
            if let Ok(u) = uri.parse::<Uri>() {
                *req.uri_mut() = u;
            }
            for (k, v) in headers {
                if let Ok(v) = HeaderValue::from_str(&v) {
                    req.headers_mut().append(HeaderName::from_static(k), v);
                }
            }
            if let Some(p) = protocol {
                req.extensions_mut().insert(h2::ext::Protocol::from(p.as_str()));
            }
            for policy in [HostnamePolicy::Reject, HostnamePolicy::Allow] {
                if let Ok(parsed) = ConnectRequest::parse(&req, &policy) {
                    // Whatever parses re-encodes to a request that parses to the same value.
                    prop_assert_eq!(ConnectRequest::parse(&parsed.to_http(), &policy), Ok(parsed));
                }
            }
        }

        #[test]
        fn status_round_trips(code in 200u16..600) {
            let status = StatusCode::from_u16(code).unwrap();
            match Rejection::from_status(status) {
                None => prop_assert!(status.is_success()),
                Some(r) => prop_assert_eq!(r.status(), status),
            }
        }
    }
}
