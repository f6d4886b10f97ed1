//! HBONE behind the shared [`fipstun_transport`] traits: [`HboneTransport`] (outbound) and
//! [`HboneListener`] (inbound), so HBONE and WireGuard run the same workloads.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use fipstun_identity::policy::CryptoPolicy;
use fipstun_transport::{
    FipsRequirement, Inbound, PeerIdentity, SecurityInfo, Target, Transport, TransportError,
    TunnelListener,
};
use tokio::sync::Mutex;

use crate::client::{ExpectedPeer, HboneClient};
use crate::server::Incoming;
use crate::stream::HboneStream;
use crate::wire::Rejection;
use crate::{Error, HBONE_PORT};

/// Where to send streams for a target: the HBONE node (usually `<node ip>:15008`) and whom it
/// must prove to be.
#[derive(Clone, Debug)]
pub struct HboneRoute {
    /// The HBONE node serving the target.
    pub node: SocketAddr,
    /// The identities the node may present.
    pub expected: ExpectedPeer,
}

impl HboneRoute {
    /// A route to `node`, expecting `expected`.
    pub fn new(node: SocketAddr, expected: impl Into<ExpectedPeer>) -> Self {
        Self {
            node,
            expected: expected.into(),
        }
    }

    /// A route to the node at `ip` on the standard HBONE port 15008.
    pub fn standard_port(ip: IpAddr, expected: impl Into<ExpectedPeer>) -> Self {
        Self::new(SocketAddr::new(ip, HBONE_PORT), expected)
    }
}

/// The security every HBONE connection may have under `policy`: what
/// [`HboneTransport::security`] reports, available without building it. What one connection
/// actually negotiated is [`crate::HboneStream::negotiated`].
pub fn security_info(policy: &CryptoPolicy) -> SecurityInfo {
    let negotiable = policy.negotiable();
    SecurityInfo {
        backend: "hbone",
        protocol: format!(
            "{} mTLS + HTTP/2 CONNECT (HBONE)",
            negotiable.protocol_versions.join("/")
        ),
        cipher: negotiable.cipher_suites.join(" | "),
        fips: policy.provider().fips() && aws_lc_rs::try_fips_mode().is_ok(),
    }
}

/// [`security_info`] read off a server's rustls config (which may not come from a
/// [`CryptoPolicy`]).
pub(crate) fn security_of_server(tls: &rustls::ServerConfig) -> SecurityInfo {
    let suites = &tls.crypto_provider().cipher_suites;
    let mut versions: Vec<&str> = Vec::new();
    for s in suites {
        let v = match s.version().version {
            rustls::ProtocolVersion::TLSv1_3 => "TLSv1_3",
            rustls::ProtocolVersion::TLSv1_2 => "TLSv1_2",
            _ => "TLS",
        };
        if !versions.contains(&v) {
            versions.push(v);
        }
    }
    SecurityInfo {
        backend: "hbone",
        protocol: format!("{} mTLS + HTTP/2 CONNECT (HBONE)", versions.join("/")),
        cipher: suites
            .iter()
            .map(|s| format!("{:?}", s.suite()))
            .collect::<Vec<_>>()
            .join(" | "),
        fips: tls.fips() && aws_lc_rs::try_fips_mode().is_ok(),
    }
}

/// The HBONE client as a [`Transport`]: each target goes to the node its route names, over the
/// client's pooled mTLS connections.
///
/// ```no_run
/// # async fn demo(client: fipstun_hbone::HboneClient, node_id: fipstun_identity::spiffe::SpiffeId) -> Result<(), fipstun_transport::TransportError> {
/// use fipstun_hbone::{HboneRoute, HboneTransport};
/// use fipstun_transport::{FipsRequirement, Target, Transport};
///
/// let t = HboneTransport::new(client, FipsRequirement::Required)?
///     .with_default_route(HboneRoute::new("10.0.0.7:15008".parse().unwrap(), node_id));
/// let stream = t.connect(&Target::new("10.0.0.7:8080".parse().unwrap())).await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct HboneTransport {
    client: HboneClient,
    security: SecurityInfo,
    by_ip: HashMap<IpAddr, HboneRoute>,
    default: Option<HboneRoute>,
}

impl HboneTransport {
    /// Wrap `client`. Fails if `requirement` is FIPS and the module or the client's crypto
    /// policy is not.
    pub fn new(client: HboneClient, requirement: FipsRequirement) -> Result<Self, TransportError> {
        let security = security_info(&client.identity().policy);
        requirement.check(&security)?;
        Ok(Self {
            client,
            security,
            by_ip: HashMap::new(),
            default: None,
        })
    }

    /// Send targets at `ip` (any port) through `route`.
    pub fn with_route(mut self, ip: IpAddr, route: HboneRoute) -> Self {
        self.by_ip.insert(ip, route);
        self
    }

    /// Send targets without a specific route through `route`.
    pub fn with_default_route(mut self, route: HboneRoute) -> Self {
        self.default = Some(route);
        self
    }

    /// The client underneath (metrics, pool).
    pub fn client(&self) -> &HboneClient {
        &self.client
    }

    /// A name target takes the default route: routes are keyed by IP.
    fn route(&self, target: &Target) -> Result<&HboneRoute, TransportError> {
        target
            .socket_addr()
            .and_then(|a| self.by_ip.get(&a.ip()))
            .or(self.default.as_ref())
            .ok_or_else(|| TransportError::NoRoute(target.clone()))
    }
}

/// The shared error, with the HBONE error (and any rustls error under it) as its source.
fn to_transport_error(target: &Target, e: Error) -> TransportError {
    match e.rejection() {
        Some(Rejection::Unreachable) => TransportError::Unreachable {
            target: target.clone(),
            reason: e.to_string(),
            source: Some(e.into()),
        },
        Some(_) => TransportError::Refused {
            target: target.clone(),
            reason: e.to_string(),
            source: Some(e.into()),
        },
        None => TransportError::tunnel(Some(target), e),
    }
}

impl Transport for HboneTransport {
    type Stream = HboneStream;

    async fn connect(&self, target: &Target) -> Result<HboneStream, TransportError> {
        let route = self.route(target)?;
        self.client
            .connect(target.clone(), route)
            .await
            .map_err(|e| to_transport_error(target, e))
    }

    fn security(&self) -> SecurityInfo {
        self.security.clone()
    }
}

/// The inbound side from an [`crate::HboneServer::with_delivery`] queue, as a
/// [`TunnelListener`]: authorized CONNECTs become [`Inbound`] streams.
///
/// The stream is accepted (200) when it is handed out, *before* the application dials the
/// target; a target that then turns out unreachable ends the stream without data instead of a
/// 503. Where the 503-before-200 contract matters (a ztunnel peer), run the server in its
/// forwarding mode ([`crate::HboneServer::new`]) instead.
#[derive(Debug)]
pub struct HboneListener {
    incoming: Mutex<Incoming>,
    security: SecurityInfo,
}

impl HboneListener {
    /// Serve the delivery queue `incoming` of [`crate::HboneServer::with_delivery`].
    pub fn new(incoming: Incoming) -> Self {
        Self {
            security: incoming.security().clone(),
            incoming: Mutex::new(incoming),
        }
    }
}

impl TunnelListener for HboneListener {
    type Stream = HboneStream;

    async fn accept(&self) -> Result<Inbound<HboneStream>, TransportError> {
        let pending = self
            .incoming
            .lock()
            .await
            .accept()
            .await
            .ok_or(TransportError::Closed)?;
        // The server resolved a host name its HostnamePolicy admitted: an address.
        let target = fipstun_transport::PendingInbound::target(&pending).clone();
        let peer = PeerIdentity::Spiffe(pending.peer_id().clone());
        let stream = pending
            .accept()
            .map_err(|e| TransportError::tunnel(None, e))?;
        Ok(Inbound {
            stream,
            peer,
            target,
        })
    }

    fn security(&self) -> SecurityInfo {
        self.security.clone()
    }
}
