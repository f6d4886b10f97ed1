//! The proxy's route table: where a captured (redirect) or SOCKS5 stream goes, by the longest
//! `[[route]]` prefix covering its destination — an HBONE node (fixed, or ztunnel's "same IP,
//! port 15008"), the WireGuard node, or direct TCP. The table is swapped whole on reload:
//! streams already established keep the backend they were dialled through.

use std::sync::{Arc, RwLock};

use fipstun_hbone::{HboneClient, HboneRoute, HboneTransport};
use fipstun_transport::policy::Cidr;
use fipstun_transport::{
    BoxStream, DynTransport, FipsRequirement, PlainTcp, SecurityInfo, Target, Transport,
    TransportError,
};

use crate::config::{RouteNode, RouteSettings, RouteVia};

/// One route, ready to dial.
struct Entry {
    cidr: Cidr,
    dialer: Arc<dyn DynTransport>,
}

/// The backends routes may use, built once per process.
#[derive(Clone, Default)]
pub(crate) struct Backends {
    /// The process's HBONE client (one pool for every HBONE route and listener).
    pub(crate) hbone: Option<HboneClient>,
    /// The process's WireGuard node.
    #[cfg(feature = "wireguard")]
    pub(crate) wireguard: Option<fipstun_wireguard::WgNode>,
}

/// Longest-prefix routing over several backends, itself a [`Transport`].
#[derive(Clone)]
pub(crate) struct Router {
    table: Arc<RwLock<Arc<Vec<Entry>>>>,
    fips: FipsRequirement,
}

impl Router {
    /// A router over `routes`.
    pub(crate) fn new(
        routes: &[RouteSettings],
        backends: &Backends,
        fips: FipsRequirement,
    ) -> Result<Self, String> {
        let table = build(routes, backends, fips)?;
        Ok(Self {
            table: Arc::new(RwLock::new(Arc::new(table))),
            fips,
        })
    }

    /// Replace the table (reload). On error the old table stays.
    pub(crate) fn replace(
        &self,
        routes: &[RouteSettings],
        backends: &Backends,
    ) -> Result<(), String> {
        let table = build(routes, backends, self.fips)?;
        *self.table.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(table);
        Ok(())
    }

    fn current(&self) -> Arc<Vec<Entry>> {
        self.table.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

fn build(
    routes: &[RouteSettings],
    backends: &Backends,
    fips: FipsRequirement,
) -> Result<Vec<Entry>, String> {
    let mut table = Vec::with_capacity(routes.len());
    for r in routes {
        let dialer: Arc<dyn DynTransport> = match &r.via {
            RouteVia::Hbone { node, expected } => {
                let client = backends
                    .hbone
                    .clone()
                    .ok_or("an HBONE route needs [identity]")?;
                let t = HboneTransport::new(client, fips)
                    .map_err(|e| format!("route {}: {e}", r.cidr))?;
                Arc::new(match node {
                    RouteNode::Addr(a) => {
                        t.with_cidr_route(r.cidr, HboneRoute::new(*a, expected.clone()))
                    }
                    RouteNode::SameIp(port) => t.with_cidr_same_ip(r.cidr, *port, expected.clone()),
                })
            }
            #[cfg(feature = "wireguard")]
            RouteVia::Wireguard => Arc::new(
                backends
                    .wireguard
                    .clone()
                    .ok_or("a WireGuard route needs [wireguard]")?,
            ),
            RouteVia::Plain => Arc::new(PlainTcp),
        };
        fips.check(&dialer.dyn_security())
            .map_err(|e| format!("route {}: {e}", r.cidr))?;
        table.push(Entry {
            cidr: r.cidr,
            dialer,
        });
    }
    // Longest prefix first; among equal prefixes the first configured wins (stable sort).
    table.sort_by_key(|e| std::cmp::Reverse(e.cidr.prefix_len()));
    Ok(table)
}

impl Transport for Router {
    type Stream = BoxStream;

    async fn connect(&self, target: &Target) -> Result<BoxStream, TransportError> {
        let table = self.current();
        let ip = target
            .socket_addr()
            .map(|a| a.ip())
            .ok_or_else(|| TransportError::NoRoute(target.clone()))?;
        let entry = table
            .iter()
            .find(|e| e.cidr.contains(ip))
            .ok_or_else(|| TransportError::NoRoute(target.clone()))?;
        entry.dialer.dyn_connect(target).await
    }

    fn security(&self) -> SecurityInfo {
        // What the weakest route gives: FIPS only if every route is.
        let table = self.current();
        let weakest = table
            .iter()
            .map(|e| e.dialer.dyn_security())
            .find(|s| !s.fips);
        weakest.unwrap_or_else(|| {
            table
                .first()
                .map(|e| e.dialer.dyn_security())
                .unwrap_or(SecurityInfo {
                    backend: "routed",
                    protocol: "no route".into(),
                    cipher: String::new(),
                    fips: true,
                })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(cidr: &str) -> RouteSettings {
        RouteSettings {
            cidr: cidr.parse().unwrap(),
            via: RouteVia::Plain,
        }
    }

    #[tokio::test]
    async fn longest_prefix_picks_the_route_and_no_route_is_refused() {
        let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = upstream.local_addr().unwrap();
        let router = Router::new(
            &[plain("10.0.0.0/8"), plain("127.0.0.1/32")],
            &Backends::default(),
            FipsRequirement::NotRequired,
        )
        .unwrap();
        assert!(router.connect(&Target::new(addr)).await.is_ok());
        let elsewhere = Target::new("192.0.2.1:80".parse().unwrap());
        assert!(matches!(
            router.connect(&elsewhere).await,
            Err(TransportError::NoRoute(_))
        ));
        // Reload: the old route is gone for new streams.
        router
            .replace(&[plain("10.0.0.0/8")], &Backends::default())
            .unwrap();
        assert!(matches!(
            router.connect(&Target::new(addr)).await,
            Err(TransportError::NoRoute(_))
        ));
    }

    #[test]
    fn fips_required_refuses_a_plain_route() {
        let err = Router::new(
            &[plain("10.0.0.0/8")],
            &Backends::default(),
            FipsRequirement::Required,
        )
        .err()
        .unwrap();
        assert!(err.contains("10.0.0.0/8"), "{err}");
    }
}
