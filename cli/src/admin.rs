//! The admin endpoints of a node or proxy, in ztunnel's layout: three optional listeners,
//! `ready` (`GET /healthz/ready`), `stats` (`GET /metrics`) and `admin` (`GET /config_dump`
//! and `/healthz/ready`), served by a minimal HTTP/1.1 GET responder; and the readiness state
//! the node and proxy update as they start.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use fipstun_identity::bundle::TrustStore;
use fipstun_identity::tls::SvidSlot;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use fipstun_transport::ForwarderConfig;

use crate::config::{
    Identity, ListenerKind, NodeConfig, Observe, ProxyConfig, RouteNode, RouteVia, Via, WgSettings,
};
use crate::metrics::{CONTENT_TYPE, Metrics};

/// The largest request head read; a longer one is answered 431 and closed.
const MAX_REQUEST_HEAD: usize = 8 * 1024;
/// How long a client may take to send its request head.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether the process is ready to serve: its identity (if it has one configured) is in the
/// slot, every configured listener is bound, and start-up is over. Shared by the admin
/// listeners and the code that starts the node or proxy.
#[derive(Debug, Default)]
pub(crate) struct Readiness {
    state: Mutex<ReadyState>,
}

#[derive(Debug, Default)]
struct ReadyState {
    /// `None`: no identity configured; `Some(None)`: expected and not there yet.
    identity: Option<Option<(Arc<SvidSlot>, TrustStore)>>,
    /// Configured listeners (by their configured address) and whether each is bound.
    listeners: Vec<(SocketAddr, bool)>,
    /// Start-up finished (the ready line was printed).
    started: bool,
}

impl Readiness {
    /// Not ready until [`Readiness::started`]; with `identity`, not until
    /// [`Readiness::identity_loaded`]; and not while any of `listeners` is unbound.
    pub(crate) fn new(identity: bool, listeners: impl IntoIterator<Item = SocketAddr>) -> Self {
        Self {
            state: Mutex::new(ReadyState {
                identity: identity.then_some(None),
                listeners: listeners.into_iter().map(|a| (a, false)).collect(),
                started: false,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ReadyState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The identity source has delivered its first SVID into `slot`.
    pub(crate) fn identity_loaded(&self, slot: Arc<SvidSlot>, trust: TrustStore) {
        self.lock().identity = Some(Some((slot, trust)));
    }

    /// A listener configured at `configured` is bound (one per call: several listeners may
    /// share a configured address such as `127.0.0.1:0`).
    pub(crate) fn bound(&self, configured: SocketAddr) {
        let mut s = self.lock();
        match s
            .listeners
            .iter_mut()
            .find(|(a, bound)| *a == configured && !bound)
        {
            Some(l) => l.1 = true,
            None => s.listeners.push((configured, true)),
        }
    }

    /// Start-up is over.
    pub(crate) fn started(&self) {
        self.lock().started = true;
    }

    /// `Ok` when ready; otherwise the first reason it is not, in one line.
    pub(crate) fn check(&self) -> Result<(), String> {
        let s = self.lock();
        match &s.identity {
            Some(None) => return Err("no SVID yet".into()),
            Some(Some((slot, _))) if slot.current().is_none() => {
                return Err("no SVID yet".into());
            }
            _ => {}
        }
        if let Some((addr, _)) = s.listeners.iter().find(|(_, bound)| !bound) {
            return Err(format!("listener {addr} not bound"));
        }
        if !s.started {
            return Err("starting".into());
        }
        Ok(())
    }

    /// The current SVID as `/config_dump` shows it: SPIFFE ID, serial, notAfter and the trust
    /// domains of the bundles. Never the key.
    pub(crate) fn svid_summary(&self) -> serde_json::Value {
        let s = self.lock();
        let Some(Some((slot, trust))) = &s.identity else {
            return serde_json::Value::Null;
        };
        let Some(current) = slot.current() else {
            return serde_json::Value::Null;
        };
        let serial = current
            .certified
            .cert
            .first()
            .and_then(|leaf| leaf_serial_hex(leaf.as_ref()));
        let bundles = trust.current();
        let domains: Vec<String> = bundles.trust_domains().map(|d| d.to_string()).collect();
        serde_json::json!({
            "spiffe_id": current.id.to_string(),
            "serial": serial,
            "not_after": rfc3339(current.not_after),
            "trust_domains": domains,
        })
    }
}

/// A certificate's serial number in hex, if it parses.
fn leaf_serial_hex(der: &[u8]) -> Option<String> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    Some(
        cert.tbs_certificate
            .raw_serial()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
    )
}

/// `t` as RFC 3339 in UTC, to the second.
fn rfc3339(t: SystemTime) -> String {
    let t = time::OffsetDateTime::from(t).to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// What one admin listener serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// `GET /healthz/ready` (ztunnel's 15021).
    Ready,
    /// `GET /metrics` (ztunnel's 15020).
    Stats,
    /// `GET /config_dump` and `GET /healthz/ready` (ztunnel's 127.0.0.1:15000).
    Admin,
}

impl Endpoint {
    /// The name in the config and the ready line.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Ready => "ready",
            Self::Stats => "stats",
            Self::Admin => "admin",
        }
    }
}

/// What the admin listeners answer from.
pub(crate) struct Admin {
    /// Readiness and the live identity.
    pub(crate) readiness: Arc<Readiness>,
    /// The metrics registry.
    pub(crate) metrics: Arc<Metrics>,
    /// The effective configuration, without secrets (`/config_dump` adds the SVID).
    pub(crate) config: serde_json::Value,
}

/// Why a request head could not be read or parsed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum RequestError {
    /// The head is longer than [`MAX_REQUEST_HEAD`].
    #[error("request head longer than {MAX_REQUEST_HEAD} bytes")]
    TooLarge,
    /// The connection closed before the head ended.
    #[error("connection closed before the end of the request head")]
    Incomplete,
    /// The head did not arrive within [`READ_TIMEOUT`].
    #[error("no complete request head within {READ_TIMEOUT:?}")]
    Timeout,
    /// The request line is not `METHOD SP PATH SP HTTP/1.x`.
    #[error("malformed request line")]
    Malformed,
}

/// A parsed request line.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Request<'a> {
    /// The method, as sent.
    pub(crate) method: &'a str,
    /// The path without the query.
    pub(crate) path: &'a str,
}

/// Parse the request line of a complete head (the bytes up to and including the blank line).
pub(crate) fn parse_request(head: &[u8]) -> Result<Request<'_>, RequestError> {
    let end = head
        .windows(2)
        .position(|w| w == b"\r\n")
        .ok_or(RequestError::Malformed)?;
    let line = std::str::from_utf8(&head[..end]).map_err(|_| RequestError::Malformed)?;
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(RequestError::Malformed);
    };
    let token = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphabetic());
    if !token(method) || !target.starts_with('/') || !version.starts_with("HTTP/1.") {
        return Err(RequestError::Malformed);
    }
    let path = target.split('?').next().unwrap_or(target);
    Ok(Request { method, path })
}

/// The response to `request` on an `endpoint` listener: status, content type, body.
fn route(endpoint: Endpoint, request: &Request<'_>, admin: &Admin) -> (u16, &'static str, String) {
    const TEXT: &str = "text/plain; charset=utf-8";
    let serves = |path: &str| {
        matches!(
            (endpoint, path),
            (Endpoint::Ready | Endpoint::Admin, "/healthz/ready")
                | (Endpoint::Stats, "/metrics")
                | (Endpoint::Admin, "/config_dump")
        )
    };
    if !serves(request.path) {
        return (404, TEXT, format!("not found: {}\n", request.path));
    }
    if request.method != "GET" {
        return (405, TEXT, "only GET\n".into());
    }
    match request.path {
        "/healthz/ready" => match admin.readiness.check() {
            Ok(()) => (200, TEXT, "ready\n".into()),
            Err(why) => (503, TEXT, format!("{why}\n")),
        },
        "/metrics" => (200, CONTENT_TYPE, admin.metrics.render()),
        _ => {
            let mut dump = admin.config.clone();
            if let Some(map) = dump.as_object_mut() {
                map.insert("svid".into(), admin.readiness.svid_summary());
            }
            let body = serde_json::to_string_pretty(&dump).unwrap_or_default();
            (200, "application/json", body + "\n")
        }
    }
}

/// Read one request head from `s`: bounded in size and time.
async fn read_head(s: &mut TcpStream) -> Result<Vec<u8>, RequestError> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    let read = async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s
                .read(&mut buf)
                .await
                .map_err(|_| RequestError::Incomplete)?;
            if n == 0 {
                return Err(RequestError::Incomplete);
            }
            if head.len() + n > MAX_REQUEST_HEAD {
                return Err(RequestError::TooLarge);
            }
            head.extend_from_slice(&buf[..n]);
        }
        Ok(())
    };
    tokio::time::timeout(READ_TIMEOUT, read)
        .await
        .map_err(|_| RequestError::Timeout)??;
    Ok(head)
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        _ => "Service Unavailable",
    }
}

async fn answer(mut s: TcpStream, endpoint: Endpoint, admin: &Admin) -> std::io::Result<()> {
    const TEXT: &str = "text/plain; charset=utf-8";
    let (status, content_type, body) = match read_head(&mut s).await {
        Ok(head) => match parse_request(&head) {
            Ok(request) => route(endpoint, &request, admin),
            Err(e) => (400, TEXT, format!("{e}\n")),
        },
        Err(RequestError::Incomplete) => return Ok(()),
        Err(e @ RequestError::TooLarge) => (431, TEXT, format!("{e}\n")),
        Err(e) => (408, TEXT, format!("{e}\n")),
    };
    let response = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        reason(status),
        body.len()
    );
    s.write_all(response.as_bytes()).await?;
    s.shutdown().await
}

/// Serve `endpoint` on `listener` until the task is dropped. One request per connection.
pub(crate) async fn serve(listener: TcpListener, endpoint: Endpoint, admin: Arc<Admin>) {
    loop {
        match listener.accept().await {
            Ok((s, remote)) => {
                let admin = admin.clone();
                tokio::spawn(async move {
                    if let Err(e) = answer(s, endpoint, &admin).await {
                        tracing::debug!(%remote, error = %e, endpoint = endpoint.label(), "admin request failed");
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, endpoint = endpoint.label(), "admin accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// The admin listeners a node or proxy asked for, bound.
pub(crate) struct Listeners {
    bound: Vec<(Endpoint, TcpListener)>,
}

impl Listeners {
    /// Bind every configured admin listener (before anything else, so readiness can be asked
    /// while the identity is still on its way). Warns when `admin` is not on loopback: it
    /// shows the configuration to whoever can reach it.
    pub(crate) async fn bind(
        ready: Option<SocketAddr>,
        stats: Option<SocketAddr>,
        admin: Option<SocketAddr>,
    ) -> Result<Self, String> {
        let mut bound = Vec::new();
        for (endpoint, addr) in [
            (Endpoint::Ready, ready),
            (Endpoint::Stats, stats),
            (Endpoint::Admin, admin),
        ] {
            let Some(addr) = addr else { continue };
            if endpoint == Endpoint::Admin && !addr.ip().is_loopback() {
                tracing::warn!(
                    %addr,
                    "the admin endpoint (/config_dump) is bound to a non-loopback address; \
                     anyone who can reach it sees this process's configuration"
                );
            }
            let l = TcpListener::bind(addr)
                .await
                .map_err(|e| format!("{}: cannot listen on {addr}: {e}", endpoint.label()))?;
            bound.push((endpoint, l));
        }
        Ok(Self { bound })
    }

    /// The bound addresses, in the order ready, stats, admin.
    pub(crate) fn addrs(&self) -> Vec<(Endpoint, SocketAddr)> {
        self.bound
            .iter()
            .filter_map(|(e, l)| l.local_addr().ok().map(|a| (*e, a)))
            .collect()
    }

    /// Serve them all from `admin`.
    pub(crate) fn serve(self, admin: Arc<Admin>) {
        for (endpoint, l) in self.bound {
            tokio::spawn(serve(l, endpoint, admin.clone()));
        }
    }
}

/// The ready line's words for the admin listeners: `ready=ADDR stats=ADDR metrics=ADDR
/// admin=ADDR` (`metrics=` is the stats listener under its older name).
pub(crate) fn ready_words(addrs: &[(Endpoint, SocketAddr)]) -> Vec<String> {
    let mut words = Vec::new();
    for (e, a) in addrs {
        words.push(format!("{}={a}", e.label()));
        if *e == Endpoint::Stats {
            words.push(format!("metrics={a}"));
        }
    }
    words
}

/// `/config_dump`'s view of an identity source: its kind and where it reads from; never key
/// material.
fn identity_dump(identity: Option<&Identity>) -> serde_json::Value {
    match identity {
        None => serde_json::Value::Null,
        Some(Identity::Files(f)) => serde_json::json!({
            "source": "files",
            "dir": f.dir.display().to_string(),
        }),
        Some(Identity::WorkloadApi(socket)) => serde_json::json!({
            "source": "workload_api",
            "socket": socket.path().display().to_string(),
        }),
        // The token file's path, never its content.
        Some(Identity::IstioCa(ca)) => serde_json::json!({
            "source": "istio_ca",
            "id": ca.id.to_string(),
            "address": ca.client.address,
            "server_name": ca.client.server_name,
            "token": format!("{:?}", ca.client.token),
        }),
    }
}

fn limits_dump(l: &ForwarderConfig) -> serde_json::Value {
    serde_json::json!({
        "max_streams": l.max_streams,
        "max_streams_per_peer": l.max_streams_per_peer,
        "dial_timeout": format!("{:?}", l.dial_timeout),
        "idle_timeout": format!("{:?}", l.idle_timeout),
    })
}

fn admin_dump(stats: Option<SocketAddr>, o: &Observe) -> serde_json::Value {
    let addr = |a: Option<SocketAddr>| a.map(|a| a.to_string());
    serde_json::json!({
        "access_log": o.access_log.label(),
        "ready": addr(o.ready),
        "stats": addr(stats),
        "admin": addr(o.admin),
    })
}

#[cfg(feature = "wireguard")]
fn wireguard_dump(w: Option<&WgSettings>) -> serde_json::Value {
    match w {
        None => serde_json::Value::Null,
        Some(w) => serde_json::json!({
            "listen": w.listen.to_string(),
            "address": w.address.to_string(),
            "peers": w.peers.len(),
        }),
    }
}

#[cfg(not(feature = "wireguard"))]
fn wireguard_dump(w: Option<&WgSettings>) -> serde_json::Value {
    match w {
        None => serde_json::Value::Null,
        Some(w) => match *w {},
    }
}

/// The effective configuration of a node, for `/config_dump` (the SVID is added per request).
pub(crate) fn node_dump(cfg: &NodeConfig) -> serde_json::Value {
    let hbone = cfg.hbone.as_ref().map(|h| {
        serde_json::json!({
            "listen": h.listen.to_string(),
            "allow": h.allow.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "max_connections": h.server.max_connections,
            "max_handshakes": h.server.max_handshakes,
            "handshake_timeout": format!("{:?}", h.server.handshake_timeout),
            "max_connection_age": format!("{:?}", h.server.max_connection_age),
        })
    });
    serde_json::json!({
        "mode": "node",
        "fips": cfg.fips.label(),
        "drain": format!("{:?}", cfg.drain),
        "admin": admin_dump(cfg.metrics, &cfg.observe),
        "identity": identity_dump(cfg.identity.as_ref()),
        "hbone": hbone,
        "wireguard": wireguard_dump(cfg.wireguard.as_ref()),
        "policy": cfg.policy.rules(),
        "limits": limits_dump(&cfg.limits),
    })
}

/// The effective configuration of a proxy, for `/config_dump`.
pub(crate) fn proxy_dump(cfg: &ProxyConfig) -> serde_json::Value {
    let listeners: Vec<serde_json::Value> = cfg
        .listeners
        .iter()
        .map(|l| {
            let mut v = serde_json::json!({
                "listen": l.listen.to_string(),
                "mode": match &l.kind {
                    ListenerKind::Fixed { .. } => "fixed",
                    ListenerKind::Redirect => "redirect",
                    ListenerKind::Socks5 => "socks5",
                },
            });
            if let (ListenerKind::Fixed { target, via }, Some(map)) = (&l.kind, v.as_object_mut()) {
                map.insert("target".into(), target.to_string().into());
                map.insert("via".into(), via.label().into());
                if let Via::Hbone { node, node_id } = via {
                    map.insert("node".into(), node.to_string().into());
                    map.insert("node_id".into(), node_id.to_string().into());
                }
            }
            v
        })
        .collect();
    let routes: Vec<serde_json::Value> = cfg
        .routes
        .iter()
        .map(|r| {
            let mut v = serde_json::json!({
                "cidr": r.cidr.to_string(),
                "via": r.via.label(),
            });
            if let (RouteVia::Hbone { node, expected }, Some(map)) = (&r.via, v.as_object_mut()) {
                let node = match node {
                    RouteNode::Addr(a) => a.to_string(),
                    RouteNode::SameIp(port) => format!("same-ip:{port}"),
                };
                map.insert("node".into(), node.into());
                map.insert("node_identity".into(), format!("{expected:?}").into());
            }
            v
        })
        .collect();
    serde_json::json!({
        "mode": "proxy",
        "fips": cfg.fips.label(),
        "drain": format!("{:?}", cfg.drain),
        "admin": admin_dump(cfg.metrics, &cfg.observe),
        "identity": identity_dump(cfg.identity.as_ref()),
        "wireguard": wireguard_dump(cfg.wireguard.as_ref()),
        "listeners": listeners,
        "routes": routes,
        "limits": limits_dump(&cfg.limits),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines_parse_and_junk_is_a_typed_error() {
        assert_eq!(
            parse_request(b"GET /healthz/ready?x=1 HTTP/1.1\r\nHost: x\r\n\r\n"),
            Ok(Request {
                method: "GET",
                path: "/healthz/ready"
            })
        );
        for junk in [
            &b""[..],
            b"\r\n\r\n",
            b"GET\r\n\r\n",
            b"GET / HTTP/1.1 extra\r\n\r\n",
            b"GET nopath HTTP/1.1\r\n\r\n",
            b"G\xffT / HTTP/1.1\r\n\r\n",
            b"GET / SPDY/3\r\n\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
            b"GET / HTTP/1.1",
        ] {
            assert_eq!(
                parse_request(junk),
                Err(RequestError::Malformed),
                "{junk:?}"
            );
        }
    }

    #[test]
    fn readiness_names_what_is_missing() {
        let addr: SocketAddr = "0.0.0.0:15001".parse().unwrap();
        let r = Readiness::new(true, [addr]);
        assert_eq!(r.check(), Err("no SVID yet".into()));
        r.identity_loaded(
            Arc::new(SvidSlot::new()),
            TrustStore::new(fipstun_identity::bundle::BundleSet::new()),
        );
        assert_eq!(r.check(), Err("no SVID yet".into()), "an empty slot");
        let r = Readiness::new(false, [addr, addr]);
        assert_eq!(r.check(), Err("listener 0.0.0.0:15001 not bound".into()));
        r.bound(addr);
        assert_eq!(
            r.check(),
            Err("listener 0.0.0.0:15001 not bound".into()),
            "two listeners at one configured address: one is still unbound"
        );
        r.bound(addr);
        assert_eq!(r.check(), Err("starting".into()));
        r.started();
        assert_eq!(r.check(), Ok(()));
        assert_eq!(r.svid_summary(), serde_json::Value::Null);
    }

    async fn get(addr: SocketAddr, raw: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(raw).await.unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).await;
        String::from_utf8_lossy(&out).into_owned()
    }

    #[tokio::test]
    async fn each_listener_serves_its_paths_only() {
        let readiness = Arc::new(Readiness::new(false, []));
        let admin = Arc::new(Admin {
            readiness: readiness.clone(),
            metrics: Arc::new(Metrics::new()),
            config: serde_json::json!({"mode": "node"}),
        });
        let local = Some("127.0.0.1:0".parse().unwrap());
        let listeners = Listeners::bind(local, local, local).await.unwrap();
        let addrs = listeners.addrs();
        listeners.serve(admin);
        let at = |e| addrs.iter().find(|(x, _)| *x == e).unwrap().1;
        let (ready, stats, admin) = (
            at(Endpoint::Ready),
            at(Endpoint::Stats),
            at(Endpoint::Admin),
        );

        let r = get(ready, b"GET /healthz/ready HTTP/1.1\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 503 "), "{r}");
        assert!(r.ends_with("starting\n"), "{r}");
        readiness.started();
        let r = get(ready, b"GET /healthz/ready HTTP/1.1\r\n\r\n").await;
        assert!(
            r.starts_with("HTTP/1.1 200 OK\r\n") && r.ends_with("ready\n"),
            "{r}"
        );
        assert!(
            get(ready, b"GET /metrics HTTP/1.1\r\n\r\n")
                .await
                .starts_with("HTTP/1.1 404")
        );
        assert!(
            get(ready, b"POST /healthz/ready HTTP/1.1\r\n\r\n")
                .await
                .starts_with("HTTP/1.1 405")
        );

        let r = get(stats, b"GET /metrics HTTP/1.1\r\n\r\n").await;
        assert!(
            r.starts_with("HTTP/1.1 200 OK\r\n") && r.contains(CONTENT_TYPE),
            "{r}"
        );
        assert!(r.ends_with("# EOF\n"), "{r}");
        assert!(
            get(stats, b"GET /config_dump HTTP/1.1\r\n\r\n")
                .await
                .starts_with("HTTP/1.1 404")
        );

        let r = get(admin, b"GET /config_dump HTTP/1.1\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(
            r.contains("\"mode\": \"node\"") && r.contains("\"svid\": null"),
            "{r}"
        );
        assert!(
            get(admin, b"GET /healthz/ready HTTP/1.1\r\n\r\n")
                .await
                .starts_with("HTTP/1.1 200")
        );

        // Junk, an oversized head and a silent client get typed answers, and the server
        // keeps serving.
        assert!(
            get(admin, b"\x16\x03\x01junk\r\n\r\n")
                .await
                .starts_with("HTTP/1.1 400")
        );
        let big = [b'a'; MAX_REQUEST_HEAD + 10];
        assert!(get(admin, &big).await.starts_with("HTTP/1.1 431"));
        assert!(
            get(admin, b"GET /config_dump HTTP/1.1\r\n\r\n")
                .await
                .starts_with("HTTP/1.1 200")
        );
    }
}
