//! SOCKS5 (RFC 1928), `CONNECT` only and no authentication only: the local outbound entry a
//! ztunnel-style node proxy offers on 15080, so that applications configured with a SOCKS
//! proxy reach targets by address or by name through the tunnel.
//!
//! Two halves: a pure, incremental parser of the client's untrusted bytes
//! ([`parse_greeting`], [`parse_request`], with encoders for every message so a parse round
//! trips), and [`Socks5Acceptor`], an [`Acceptor`] for the one [`Forwarder`](crate::Forwarder)
//! that runs each handshake in its own task under a deadline and hands over finished ones.
//! The success reply is sent by [`PendingInbound::establish`], that is only after the
//! forwarder authorized the target and dialled it; a refusal answers the matching [`Reply`].

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};

use crate::{
    Acceptor, DnsName, PeerIdentity, PendingInbound, Refusal, Target, TargetError, TransportError,
};

/// The protocol version byte, `X'05'` (RFC 1928 §3).
pub const VERSION: u8 = 0x05;
/// Method `X'00'` NO AUTHENTICATION REQUIRED (RFC 1928 §3), the only one offered.
pub const METHOD_NO_AUTH: u8 = 0x00;
/// Method `X'FF'` NO ACCEPTABLE METHODS (RFC 1928 §3).
pub const METHOD_NO_ACCEPTABLE: u8 = 0xFF;
/// ATYP `X'01'` IP V4 address (RFC 1928 §4).
pub const ATYP_IPV4: u8 = 0x01;
/// ATYP `X'03'` DOMAINNAME (RFC 1928 §4).
pub const ATYP_DOMAIN: u8 = 0x03;
/// ATYP `X'04'` IP V6 address (RFC 1928 §4).
pub const ATYP_IPV6: u8 = 0x04;

/// Why a client's bytes are not a SOCKS5 message this proxy serves.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Socks5Error {
    /// The greeting's version byte is not 5 (a SOCKS4 client, or not SOCKS at all).
    #[error("greeting version is {0}, SOCKS5 needs 5")]
    BadVersion(u8),
    /// The greeting lists no method.
    #[error("the greeting offers no authentication method")]
    NoMethods,
    /// The greeting does not offer "no authentication", the only method served.
    #[error("the client offers methods {0:?}, none of them \"no authentication\" (0)")]
    NoAcceptableMethod(Vec<u8>),
    /// The request's version byte is not 5.
    #[error("request version is {0}, SOCKS5 needs 5")]
    BadRequestVersion(u8),
    /// The command is not `CONNECT` (BIND, UDP ASSOCIATE, or unknown).
    #[error("command {0} is not supported; only CONNECT (1) is")]
    UnsupportedCommand(u8),
    /// The reserved byte after the command is not 0.
    #[error("the reserved byte is {0:#04x}, it must be 0")]
    ReservedNonZero(u8),
    /// ATYP is not 1 (IPv4), 3 (domain name) or 4 (IPv6).
    #[error("address type {0} is not supported")]
    BadAddressType(u8),
    /// The domain name is empty, not UTF-8, or not a valid DNS name.
    #[error("bad domain name: {0}")]
    BadDomainName(String),
    /// The destination port is 0.
    #[error("destination port 0")]
    PortZero,
}

impl Socks5Error {
    /// The reply a request failure answers with; `None` for greeting failures, which answer
    /// the method selection [`METHOD_NO_ACCEPTABLE`] instead (RFC 1928 §3).
    pub fn reply(&self) -> Option<Reply> {
        match self {
            Self::BadVersion(_) | Self::NoMethods | Self::NoAcceptableMethod(_) => None,
            Self::BadRequestVersion(_) | Self::ReservedNonZero(_) => Some(Reply::GeneralFailure),
            Self::UnsupportedCommand(_) => Some(Reply::CommandNotSupported),
            Self::BadAddressType(_) => Some(Reply::AddressTypeNotSupported),
            Self::BadDomainName(_) | Self::PortZero => Some(Reply::HostUnreachable),
        }
    }

    /// A short label for counters and logs.
    pub fn label(&self) -> &'static str {
        match self {
            Self::BadVersion(_) => "bad_version",
            Self::NoMethods | Self::NoAcceptableMethod(_) => "no_acceptable_method",
            Self::BadRequestVersion(_) => "bad_request_version",
            Self::UnsupportedCommand(_) => "unsupported_command",
            Self::ReservedNonZero(_) => "reserved_non_zero",
            Self::BadAddressType(_) => "bad_address_type",
            Self::BadDomainName(_) => "bad_domain_name",
            Self::PortZero => "port_zero",
        }
    }
}

/// The reply codes of RFC 1928 §6 (`REP`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Reply {
    /// `X'00'` succeeded.
    Succeeded = 0,
    /// `X'01'` general SOCKS server failure.
    GeneralFailure = 1,
    /// `X'02'` connection not allowed by ruleset.
    NotAllowed = 2,
    /// `X'03'` Network unreachable.
    NetworkUnreachable = 3,
    /// `X'04'` Host unreachable.
    HostUnreachable = 4,
    /// `X'05'` Connection refused.
    ConnectionRefused = 5,
    /// `X'06'` TTL expired.
    TtlExpired = 6,
    /// `X'07'` Command not supported.
    CommandNotSupported = 7,
    /// `X'08'` Address type not supported.
    AddressTypeNotSupported = 8,
}

impl Reply {
    /// The reply for a forwarder refusal: policy -> not allowed, unreachable -> connection
    /// refused, over a limit or shutting down -> general failure.
    pub fn for_refusal(why: Refusal) -> Self {
        match why {
            Refusal::Policy => Self::NotAllowed,
            Refusal::Unreachable => Self::ConnectionRefused,
            _ => Self::GeneralFailure,
        }
    }

    /// The code byte.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The reply message: `VER REP RSV ATYP BND.ADDR BND.PORT` (RFC 1928 §6).
    pub fn encode(self, bound: SocketAddr) -> Vec<u8> {
        let mut out = vec![VERSION, self.code(), 0];
        push_addr(&mut out, bound);
        out
    }
}

fn push_addr(out: &mut Vec<u8>, a: SocketAddr) {
    match a {
        SocketAddr::V4(a) => {
            out.push(ATYP_IPV4);
            out.extend_from_slice(&a.ip().octets());
        }
        SocketAddr::V6(a) => {
            out.push(ATYP_IPV6);
            out.extend_from_slice(&a.ip().octets());
        }
    }
    out.extend_from_slice(&a.port().to_be_bytes());
}

/// The method selection message the server sends: `VER METHOD` (RFC 1928 §3).
pub fn method_selection(method: u8) -> [u8; 2] {
    [VERSION, method]
}

/// A client's greeting (`VER NMETHODS METHODS`) that offers "no authentication".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Greeting {
    /// The methods offered, in the client's order (1..=255 of them, 0 among them).
    pub methods: Vec<u8>,
}

impl Greeting {
    /// The wire form.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![VERSION, self.methods.len().min(255) as u8];
        out.extend(self.methods.iter().take(255));
        out
    }
}

/// A request's command (`CMD`, RFC 1928 §4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Command {
    /// `X'01'` CONNECT, the one served.
    Connect = 1,
    /// `X'02'` BIND: parsed, answered "command not supported".
    Bind = 2,
    /// `X'03'` UDP ASSOCIATE: parsed, answered "command not supported".
    UdpAssociate = 3,
}

/// A request's destination (`ATYP DST.ADDR DST.PORT`). An IP address sent as a domain name
/// is read as the address.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum RequestTarget {
    /// ATYP 1 or 4 (or an IP literal in a domain field).
    Addr(SocketAddr),
    /// ATYP 3: a validated DNS name and a port.
    Domain(DnsName, u16),
}

impl RequestTarget {
    /// The [`Target`] it names.
    pub fn to_target(&self) -> Target {
        match self {
            Self::Addr(a) => Target::new(*a),
            // Always valid: a checked name and a non-zero port.
            Self::Domain(n, port) => {
                Target::name(n.as_str(), *port).unwrap_or_else(|_| Target::new(unspecified()))
            }
        }
    }
}

impl fmt::Display for RequestTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.to_target().fmt(f)
    }
}

fn unspecified() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))
}

/// A client's request (`VER CMD RSV ATYP DST.ADDR DST.PORT`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// What the client asks for.
    pub command: Command,
    /// Where to.
    pub target: RequestTarget,
}

impl Request {
    /// The wire form (a domain as ATYP 3, addresses as ATYP 1 or 4).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![VERSION, self.command as u8, 0];
        match &self.target {
            RequestTarget::Addr(a) => push_addr(&mut out, *a),
            RequestTarget::Domain(n, port) => {
                out.push(ATYP_DOMAIN);
                out.push(n.as_str().len() as u8);
                out.extend_from_slice(n.as_str().as_bytes());
                out.extend_from_slice(&port.to_be_bytes());
            }
        }
        out
    }
}

/// Parse a greeting from the start of `buf`: `Ok(None)` if more bytes are needed, else the
/// greeting and the bytes it took. Errors as soon as the bytes seen prove one.
pub fn parse_greeting(buf: &[u8]) -> Result<Option<(Greeting, usize)>, Socks5Error> {
    let Some(&ver) = buf.first() else {
        return Ok(None);
    };
    if ver != VERSION {
        return Err(Socks5Error::BadVersion(ver));
    }
    let Some(&n) = buf.get(1) else {
        return Ok(None);
    };
    if n == 0 {
        return Err(Socks5Error::NoMethods);
    }
    let end = 2 + usize::from(n);
    let Some(methods) = buf.get(2..end) else {
        return Ok(None);
    };
    if !methods.contains(&METHOD_NO_AUTH) {
        return Err(Socks5Error::NoAcceptableMethod(methods.to_vec()));
    }
    Ok(Some((
        Greeting {
            methods: methods.to_vec(),
        },
        end,
    )))
}

/// Parse a request from the start of `buf`: `Ok(None)` if more bytes are needed, else the
/// request and the bytes it took. Errors as soon as the bytes seen prove one.
pub fn parse_request(buf: &[u8]) -> Result<Option<(Request, usize)>, Socks5Error> {
    let Some(&ver) = buf.first() else {
        return Ok(None);
    };
    if ver != VERSION {
        return Err(Socks5Error::BadRequestVersion(ver));
    }
    let Some(&cmd) = buf.get(1) else {
        return Ok(None);
    };
    let command = match cmd {
        1 => Command::Connect,
        2 => Command::Bind,
        3 => Command::UdpAssociate,
        other => return Err(Socks5Error::UnsupportedCommand(other)),
    };
    let Some(&rsv) = buf.get(2) else {
        return Ok(None);
    };
    if rsv != 0 {
        return Err(Socks5Error::ReservedNonZero(rsv));
    }
    let Some(&atyp) = buf.get(3) else {
        return Ok(None);
    };
    let port_at = |at: usize| -> Result<Option<u16>, Socks5Error> {
        match buf.get(at..at + 2) {
            None => Ok(None),
            Some(&[0, 0]) => Err(Socks5Error::PortZero),
            Some(p) => Ok(Some(u16::from_be_bytes([p[0], p[1]]))),
        }
    };
    let (target, end) = match atyp {
        ATYP_IPV4 => {
            let Some(ip) = buf.get(4..8) else {
                return Ok(None);
            };
            let ip = Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3]);
            let Some(port) = port_at(8)? else {
                return Ok(None);
            };
            (RequestTarget::Addr(SocketAddrV4::new(ip, port).into()), 10)
        }
        ATYP_IPV6 => {
            let Some(ip) = buf.get(4..20) else {
                return Ok(None);
            };
            let mut octets = [0u8; 16];
            octets.copy_from_slice(ip);
            let Some(port) = port_at(20)? else {
                return Ok(None);
            };
            (
                RequestTarget::Addr(SocketAddrV6::new(Ipv6Addr::from(octets), port, 0, 0).into()),
                22,
            )
        }
        ATYP_DOMAIN => {
            let Some(&len) = buf.get(4) else {
                return Ok(None);
            };
            if len == 0 {
                return Err(Socks5Error::BadDomainName("it is empty".into()));
            }
            let name_end = 5 + usize::from(len);
            let Some(name) = buf.get(5..name_end) else {
                return Ok(None);
            };
            let name = std::str::from_utf8(name)
                .map_err(|_| Socks5Error::BadDomainName("it is not UTF-8".into()))?;
            let host = if let Ok(ip) = name.parse::<IpAddr>() {
                Err(ip)
            } else {
                Ok(DnsName::new(name).map_err(|e| match e {
                    TargetError::BadName { name, reason } => {
                        Socks5Error::BadDomainName(format!("{name:?}: {reason}"))
                    }
                    other => Socks5Error::BadDomainName(other.to_string()),
                })?)
            };
            let Some(port) = port_at(name_end)? else {
                return Ok(None);
            };
            let target = match host {
                Ok(n) => RequestTarget::Domain(n, port),
                Err(ip) => RequestTarget::Addr(SocketAddr::new(ip, port)),
            };
            (target, name_end + 2)
        }
        other => return Err(Socks5Error::BadAddressType(other)),
    };
    Ok(Some((Request { command, target }, end)))
}

/// Limits of a [`Socks5Acceptor`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Socks5Config {
    /// How long a client has for its greeting and request (and the proxy for resolving a
    /// name); past it the connection is closed. Default 10 s.
    pub handshake_timeout: Duration,
    /// Handshakes in progress at once; a connection beyond it is closed at once, so slow or
    /// idle clients cannot pile up. Default 1,024.
    pub max_handshakes: usize,
    /// Whether a domain name is resolved by the proxy, the target being its first address
    /// (a failed lookup answers "host unreachable"); off, the target is the name, for the
    /// forwarder or the far node to resolve. Default true.
    pub resolve_names: bool,
}

impl Default for Socks5Config {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            max_handshakes: 1024,
            resolve_names: true,
        }
    }
}

impl Socks5Config {
    /// Set [`Socks5Config::handshake_timeout`].
    pub fn with_handshake_timeout(mut self, t: Duration) -> Self {
        self.handshake_timeout = t;
        self
    }

    /// Set [`Socks5Config::max_handshakes`] (at least 1).
    pub fn with_max_handshakes(mut self, n: usize) -> Self {
        self.max_handshakes = n.max(1);
        self
    }

    /// Set [`Socks5Config::resolve_names`].
    pub fn with_resolve_names(mut self, resolve: bool) -> Self {
        self.resolve_names = resolve;
        self
    }
}

/// Handshake counters of a [`Socks5Acceptor`] since it was created.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Socks5Stats {
    /// TCP connections accepted.
    pub connections: u64,
    /// Handshakes finished and handed to the forwarder.
    pub completed: u64,
    /// Connections closed at once because `max_handshakes` were in progress.
    pub over_limit: u64,
    /// Handshakes that ran out of time.
    pub timed_out: u64,
    /// Clients that went away or failed mid-handshake.
    pub io_errors: u64,
    /// Domain names that did not resolve (answered "host unreachable").
    pub unresolved: u64,
    /// Malformed or refused messages, by [`Socks5Error::label`] (zero counts left out).
    pub bad_messages: Vec<(&'static str, u64)>,
}

const BAD_LABELS: [&str; 8] = [
    "bad_version",
    "no_acceptable_method",
    "bad_request_version",
    "unsupported_command",
    "reserved_non_zero",
    "bad_address_type",
    "bad_domain_name",
    "port_zero",
];

#[derive(Debug, Default)]
struct Counters {
    connections: AtomicU64,
    completed: AtomicU64,
    over_limit: AtomicU64,
    timed_out: AtomicU64,
    io_errors: AtomicU64,
    unresolved: AtomicU64,
    bad: [AtomicU64; 8],
}

impl Counters {
    fn snapshot(&self) -> Socks5Stats {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Socks5Stats {
            connections: get(&self.connections),
            completed: get(&self.completed),
            over_limit: get(&self.over_limit),
            timed_out: get(&self.timed_out),
            io_errors: get(&self.io_errors),
            unresolved: get(&self.unresolved),
            bad_messages: BAD_LABELS
                .iter()
                .zip(&self.bad)
                .map(|(l, n)| (*l, get(n)))
                .filter(|(_, n)| *n > 0)
                .collect(),
        }
    }

    fn bad(&self, e: &Socks5Error) {
        if let Some(i) = BAD_LABELS.iter().position(|l| *l == e.label()) {
            self.bad[i].fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A cloneable view of a [`Socks5Acceptor`]'s counters, to read after the acceptor moved into
/// [`Forwarder::run`](crate::Forwarder::run).
#[derive(Clone, Debug)]
pub struct Socks5StatsHandle(Arc<Counters>);

impl Socks5StatsHandle {
    /// The counters now.
    pub fn get(&self) -> Socks5Stats {
        self.0.snapshot()
    }
}

/// A local SOCKS5 listener as an [`Acceptor`]: each connection's handshake runs in its own
/// task under [`Socks5Config::handshake_timeout`]; finished ones queue for
/// [`Acceptor::accept`]. Peers are [`PeerIdentity::Local`] clients; the target is what the
/// request named (its first address, when names are resolved here).
#[derive(Debug)]
pub struct Socks5Acceptor {
    listener: Option<TcpListener>,
    local: io::Result<SocketAddr>,
    config: Socks5Config,
    counters: Arc<Counters>,
    ready: Option<mpsc::Receiver<Socks5Pending>>,
    tx: Option<mpsc::Sender<Socks5Pending>>,
    accept_loop: Option<tokio::task::JoinHandle<()>>,
}

/// Finished handshakes waiting for the forwarder: a small queue, so that a stalled forwarder
/// stops the accept loop instead of buffering clients.
const READY_QUEUE: usize = 64;

impl Socks5Acceptor {
    /// Serve SOCKS5 on `listener` with `config`. The accept loop starts on the first
    /// [`Acceptor::accept`].
    pub fn new(listener: TcpListener, config: Socks5Config) -> Self {
        let (tx, rx) = mpsc::channel(READY_QUEUE);
        Self {
            local: listener.local_addr(),
            listener: Some(listener),
            config,
            counters: Arc::default(),
            ready: Some(rx),
            tx: Some(tx),
            accept_loop: None,
        }
    }

    /// The address the listener is bound to (also the `BND.ADDR` of every reply).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match &self.local {
            Ok(a) => Ok(*a),
            Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
        }
    }

    /// The handshake counters now.
    pub fn stats(&self) -> Socks5Stats {
        self.counters.snapshot()
    }

    /// A handle to the counters that outlives moving the acceptor into a forwarder.
    pub fn stats_handle(&self) -> Socks5StatsHandle {
        Socks5StatsHandle(self.counters.clone())
    }

    fn start(&mut self) {
        let (Some(listener), Some(tx)) = (self.listener.take(), self.tx.take()) else {
            return;
        };
        let bound = self
            .local
            .as_ref()
            .map(|a| *a)
            .unwrap_or_else(|_| unspecified());
        let config = self.config.clone();
        let counters = self.counters.clone();
        self.accept_loop = Some(tokio::spawn(accept_loop(
            listener, bound, config, counters, tx,
        )));
    }
}

impl Drop for Socks5Acceptor {
    fn drop(&mut self) {
        if let Some(h) = &self.accept_loop {
            h.abort();
        }
    }
}

impl Acceptor for Socks5Acceptor {
    type Pending = Socks5Pending;

    async fn accept(&mut self) -> Result<Socks5Pending, TransportError> {
        self.start();
        let Some(ready) = &mut self.ready else {
            return Err(TransportError::Closed);
        };
        ready.recv().await.ok_or(TransportError::Closed)
    }
}

async fn accept_loop(
    listener: TcpListener,
    bound: SocketAddr,
    config: Socks5Config,
    counters: Arc<Counters>,
    tx: mpsc::Sender<Socks5Pending>,
) {
    let slots = Arc::new(Semaphore::new(config.max_handshakes));
    let mut backoff = Duration::ZERO;
    loop {
        let (stream, client) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    backoff = (backoff * 2).clamp(Duration::from_millis(5), Duration::from_secs(1));
                    tracing::warn!(error = %e, ?backoff, "socks5 accept failed; backing off");
                    tokio::time::sleep(backoff).await;
                    continue;
                }
            },
            _ = tx.closed() => return,
        };
        backoff = Duration::ZERO;
        counters.connections.fetch_add(1, Ordering::Relaxed);
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            counters.over_limit.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%client, limit = config.max_handshakes, "socks5: too many handshakes; closed");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (config, counters, tx) = (config.clone(), counters.clone(), tx.clone());
        tokio::spawn(async move {
            let timeout = config.handshake_timeout;
            let done = tokio::time::timeout(
                timeout,
                handshake(stream, client, bound, &config, &counters),
            )
            .await;
            drop(permit);
            match done {
                Ok(Some(pending)) => {
                    counters.completed.fetch_add(1, Ordering::Relaxed);
                    // A closed queue (the acceptor is gone) drops the client.
                    let _ = tx.send(pending).await;
                }
                Ok(None) => {}
                Err(_) => {
                    counters.timed_out.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%client, ?timeout, "socks5 handshake timed out");
                }
            }
        });
    }
}

/// Longest greeting (2 + 255 methods) or request (4 + 1 + 255 + 2) bytes: a client never
/// needs more buffered to finish either.
const MAX_MESSAGE: usize = 262;

/// [`parse_greeting`] or [`parse_request`].
type Parser<T> = fn(&[u8]) -> Result<Option<(T, usize)>, Socks5Error>;

/// Read until `parse` gives a message or an error; an I/O error when the client went away.
async fn read_message<T>(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    parse: Parser<T>,
) -> io::Result<Result<T, Socks5Error>> {
    loop {
        match parse(buf) {
            Ok(Some((msg, used))) => {
                buf.drain(..used);
                return Ok(Ok(msg));
            }
            Err(e) => return Ok(Err(e)),
            Ok(None) => {}
        }
        let mut chunk = [0u8; MAX_MESSAGE];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Greeting, method selection, request and (if configured) name resolution. `None` when the
/// client was answered with a failure and closed, or went away.
async fn handshake(
    mut stream: TcpStream,
    client: SocketAddr,
    bound: SocketAddr,
    config: &Socks5Config,
    counters: &Counters,
) -> Option<Socks5Pending> {
    let io_failed = |e: io::Error| -> Option<Socks5Pending> {
        counters.io_errors.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(%client, error = %e, "socks5 client failed mid-handshake");
        None
    };
    let mut buf = Vec::with_capacity(MAX_MESSAGE);
    match read_message(&mut stream, &mut buf, parse_greeting).await {
        Err(e) => return io_failed(e),
        Ok(Err(e)) => {
            counters.bad(&e);
            tracing::debug!(%client, error = %e, "socks5 greeting refused");
            let _ = stream
                .write_all(&method_selection(METHOD_NO_ACCEPTABLE))
                .await;
            return None;
        }
        Ok(Ok(_greeting)) => {}
    }
    if let Err(e) = stream.write_all(&method_selection(METHOD_NO_AUTH)).await {
        return io_failed(e);
    }
    let request = match read_message(&mut stream, &mut buf, parse_request).await {
        Err(e) => return io_failed(e),
        Ok(Err(e)) => {
            counters.bad(&e);
            tracing::debug!(%client, error = %e, "socks5 request refused");
            let reply = e.reply().unwrap_or(Reply::GeneralFailure);
            let _ = stream.write_all(&reply.encode(unspecified())).await;
            return None;
        }
        Ok(Ok(r)) => r,
    };
    if request.command != Command::Connect {
        let e = Socks5Error::UnsupportedCommand(request.command as u8);
        counters.bad(&e);
        tracing::debug!(%client, error = %e, "socks5 request refused");
        let _ = stream
            .write_all(&Reply::CommandNotSupported.encode(unspecified()))
            .await;
        return None;
    }
    let mut target = request.target.to_target();
    if config.resolve_names && target.socket_addr().is_none() {
        match target.resolve().await {
            Ok(addrs) if !addrs.is_empty() => target = Target::new(addrs[0]),
            _ => {
                counters.unresolved.fetch_add(1, Ordering::Relaxed);
                tracing::info!(%client, %target, "socks5: cannot resolve the target");
                let _ = stream
                    .write_all(&Reply::HostUnreachable.encode(unspecified()))
                    .await;
                return None;
            }
        }
    }
    Some(Socks5Pending {
        stream,
        peer: PeerIdentity::Local(client),
        target,
        bound,
        early: buf,
        refuse_timeout: config.handshake_timeout,
    })
}

/// A SOCKS5 client whose request is read and not answered yet.
#[derive(Debug)]
pub struct Socks5Pending {
    stream: TcpStream,
    peer: PeerIdentity,
    target: Target,
    bound: SocketAddr,
    /// Bytes the client sent after its request without waiting for the reply.
    early: Vec<u8>,
    refuse_timeout: Duration,
}

impl PendingInbound for Socks5Pending {
    type Stream = Socks5Stream;

    fn peer(&self) -> &PeerIdentity {
        &self.peer
    }

    fn target(&self) -> &Target {
        &self.target
    }

    fn peer_addr(&self) -> Option<std::net::SocketAddr> {
        match self.peer {
            PeerIdentity::Local(a) => Some(a),
            _ => None,
        }
    }

    /// The stream, which sends the success reply (`BND.ADDR` = the listener's address)
    /// before anything else, on the first read, write or flush.
    fn establish(self) -> Result<Socks5Stream, TransportError> {
        Ok(Socks5Stream {
            inner: self.stream,
            reply: Reply::Succeeded.encode(self.bound),
            reply_sent: 0,
            early: self.early,
            early_read: 0,
        })
    }

    /// Answers the matching [`Reply`] from a task of its own, then closes.
    fn refuse(self, why: Refusal) {
        let reply = Reply::for_refusal(why).encode(unspecified());
        let mut stream = self.stream;
        let limit = self.refuse_timeout;
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = tokio::time::timeout(limit, async {
                    stream.write_all(&reply).await?;
                    stream.shutdown().await
                })
                .await;
            });
        }
    }
}

/// An established SOCKS5 connection: the success reply goes out first (flushed from reads as
/// well as writes, since the client sends nothing before it), then the client's bytes flow.
#[derive(Debug)]
pub struct Socks5Stream {
    inner: TcpStream,
    reply: Vec<u8>,
    reply_sent: usize,
    early: Vec<u8>,
    early_read: usize,
}

impl Socks5Stream {
    fn poll_reply(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.reply_sent < self.reply.len() {
            let n = std::task::ready!(
                Pin::new(&mut self.inner).poll_write(cx, &self.reply[self.reply_sent..])
            )?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.reply_sent += n;
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for Socks5Stream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        std::task::ready!(self.poll_reply(cx))?;
        if self.early_read < self.early.len() {
            let this = &mut *self;
            let rest = &this.early[this.early_read..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.early_read += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Socks5Stream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        std::task::ready!(self.poll_reply(cx))?;
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.poll_reply(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.poll_reply(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domain_request(name: &[u8], port: u16) -> Vec<u8> {
        let mut r = vec![5, 1, 0, 3, name.len() as u8];
        r.extend_from_slice(name);
        r.extend_from_slice(&port.to_be_bytes());
        r
    }

    #[test]
    fn greetings() {
        assert_eq!(parse_greeting(&[]), Ok(None));
        assert_eq!(parse_greeting(&[5]), Ok(None));
        assert_eq!(parse_greeting(&[5, 2, 0]), Ok(None));
        let (g, n) = parse_greeting(&[5, 2, 2, 0, 9]).unwrap().unwrap();
        assert_eq!((g.methods.as_slice(), n), (&[2u8, 0][..], 4));
        assert_eq!(g.encode(), vec![5, 2, 2, 0]);
        assert_eq!(parse_greeting(&[4, 1, 0]), Err(Socks5Error::BadVersion(4)));
        assert_eq!(parse_greeting(&[5, 0]), Err(Socks5Error::NoMethods));
        let e = parse_greeting(&[5, 1, 2]).unwrap_err();
        assert_eq!(e, Socks5Error::NoAcceptableMethod(vec![2]));
        assert_eq!(e.reply(), None);
    }

    #[test]
    fn requests_of_each_address_type() {
        let v4 = [5, 1, 0, 1, 10, 0, 0, 1, 0, 80];
        let (r, n) = parse_request(&v4).unwrap().unwrap();
        assert_eq!(n, 10);
        assert_eq!(
            r.target,
            RequestTarget::Addr("10.0.0.1:80".parse().unwrap())
        );
        assert_eq!(r.encode(), v4);

        let mut v6 = vec![5, 1, 0, 4];
        v6.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        v6.extend_from_slice(&[0x1f, 0x90]);
        let (r, n) = parse_request(&v6).unwrap().unwrap();
        assert_eq!(n, 22);
        assert_eq!(r.target.to_target().to_string(), "[::1]:8080");
        assert_eq!(r.encode(), v6);

        let d = domain_request(b"Svc.NS.svc.cluster.local", 8080);
        let (r, n) = parse_request(&d).unwrap().unwrap();
        assert_eq!(n, d.len());
        assert_eq!(r.command, Command::Connect);
        assert_eq!(r.target.to_string(), "svc.ns.svc.cluster.local:8080");
        assert_eq!(parse_request(&r.encode()).unwrap().unwrap().0, r);

        // An IP literal in a domain field is the address.
        let (r, _) = parse_request(&domain_request(b"127.0.0.1", 9))
            .unwrap()
            .unwrap();
        assert_eq!(
            r.target,
            RequestTarget::Addr("127.0.0.1:9".parse().unwrap())
        );

        let bind = [5, 2, 0, 1, 10, 0, 0, 1, 0, 80];
        assert_eq!(
            parse_request(&bind).unwrap().unwrap().0.command,
            Command::Bind
        );
    }

    #[test]
    fn partial_requests_need_more() {
        let d = domain_request(b"example.com", 443);
        for end in 0..d.len() {
            assert_eq!(parse_request(&d[..end]), Ok(None), "{end} bytes");
        }
        let mut more = d.clone();
        more.extend_from_slice(b"GET /");
        assert_eq!(parse_request(&more).unwrap().unwrap().1, d.len());
    }

    #[test]
    fn every_request_error_and_its_reply() {
        use Socks5Error as E;
        let cases: &[(&[u8], Socks5Error, Reply)] = &[
            (
                &[4, 1, 0, 1],
                E::BadRequestVersion(4),
                Reply::GeneralFailure,
            ),
            (
                &[5, 9, 0, 1],
                E::UnsupportedCommand(9),
                Reply::CommandNotSupported,
            ),
            (&[5, 1, 1, 1], E::ReservedNonZero(1), Reply::GeneralFailure),
            (
                &[5, 1, 0, 2],
                E::BadAddressType(2),
                Reply::AddressTypeNotSupported,
            ),
            (
                &[5, 1, 0, 1, 1, 2, 3, 4, 0, 0],
                E::PortZero,
                Reply::HostUnreachable,
            ),
        ];
        for (bytes, want, reply) in cases {
            let e = parse_request(bytes).unwrap_err();
            assert_eq!(&e, want);
            assert_eq!(e.reply(), Some(*reply));
        }
        for bad in [&b""[..], b"\xff\xfe", b"-x.example", b"a..b", b"a_b"] {
            let e = parse_request(&domain_request(bad, 80)).unwrap_err();
            assert!(matches!(e, E::BadDomainName(_)), "{bad:?}: {e:?}");
            assert_eq!(e.reply(), Some(Reply::HostUnreachable));
        }
    }

    #[test]
    fn replies_encode() {
        assert_eq!(
            Reply::Succeeded.encode("127.0.0.1:1080".parse().unwrap()),
            vec![5, 0, 0, 1, 127, 0, 0, 1, 0x04, 0x38]
        );
        let v6 = Reply::NotAllowed.encode("[::1]:1".parse().unwrap());
        assert_eq!((v6.len(), v6[1], v6[3]), (22, 2, 4));
        assert_eq!(Reply::for_refusal(Refusal::Policy), Reply::NotAllowed);
        assert_eq!(
            Reply::for_refusal(Refusal::Unreachable),
            Reply::ConnectionRefused
        );
        assert_eq!(
            Reply::for_refusal(Refusal::Overloaded),
            Reply::GeneralFailure
        );
        assert_eq!(
            Reply::for_refusal(Refusal::ShuttingDown),
            Reply::GeneralFailure
        );
    }
}
