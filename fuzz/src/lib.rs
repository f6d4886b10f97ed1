//! Shared fixtures for the fuzz targets: one embedded CA, its bundle, and FIPS client/server
//! configs with SPIFFE verifiers, built once per process; and the WireGuard handshake written
//! out for `wireguard_handshake` ([`wireguard`]).

pub mod wireguard;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use fipstun_identity::bundle::{BundleSet, TrustStore};
use fipstun_identity::ca::{IssuerConfig, SvidIssuer};
use fipstun_identity::keys::KeyAlgorithm;
use fipstun_identity::policy::CryptoPolicy;
use fipstun_identity::spiffe::{SpiffeId, TrustDomain};
use fipstun_identity::tls::{Authorizer, SvidSlot, client_config, server_config};

/// Everything a target needs.
pub struct Fixture {
    /// The embedded CA for `fuzz.test`.
    pub ca: SvidIssuer,
    /// Its bundle.
    pub bundles: BundleSet,
    /// The identity CSRs are signed for.
    pub caller: SpiffeId,
    /// Our FIPS server config (client certs required, SPIFFE verifier).
    pub server: Arc<rustls::ServerConfig>,
    /// Our FIPS client config.
    pub client: Arc<rustls::ClientConfig>,
}

/// The process-wide fixture.
pub fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let td = TrustDomain::new("fuzz.test").unwrap();
        let ca = SvidIssuer::generate_root(
            td.clone(),
            KeyAlgorithm::EcdsaP256,
            Duration::from_secs(86400 * 365),
            IssuerConfig::default(),
        )
        .unwrap();
        let bundles = BundleSet::new().with(ca.bundle().clone());
        let trust = TrustStore::new(bundles.clone());
        let policy = CryptoPolicy::default();
        let slot = |id: &str| {
            let s = Arc::new(SvidSlot::new());
            let id = SpiffeId::parse(id).unwrap();
            s.set(&ca.issue(&id, KeyAlgorithm::EcdsaP256, None).unwrap())
                .unwrap();
            s
        };
        let authz = || Authorizer::trust_domains([td.clone()]);
        let server = server_config(
            &policy,
            trust.clone(),
            authz(),
            slot("spiffe://fuzz.test/server"),
        )
        .unwrap();
        let client =
            client_config(&policy, trust, authz(), slot("spiffe://fuzz.test/client")).unwrap();
        Fixture {
            caller: SpiffeId::parse("spiffe://fuzz.test/caller").unwrap(),
            ca,
            bundles,
            server: Arc::new(server),
            client: Arc::new(client),
        }
    })
}

/// Feed `data` to a fresh server connection as if it came off the wire.
pub fn feed_server(data: &[u8]) {
    let mut conn = rustls::ServerConnection::new(fixture().server.clone()).unwrap();
    feed(&mut conn, data);
}

/// Let a fresh client send its ClientHello, then feed `data` as the server's answer.
pub fn feed_client(data: &[u8]) {
    let name = "fuzz.test".try_into().unwrap();
    let mut conn = rustls::ClientConnection::new(fixture().client.clone(), name).unwrap();
    let mut sink = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut sink).unwrap();
    }
    feed(&mut conn, data);
}

fn feed<D>(conn: &mut rustls::ConnectionCommon<D>, mut data: &[u8]) {
    while !data.is_empty() {
        match conn.read_tls(&mut data) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if conn.process_new_packets().is_err() {
            return;
        }
        let mut sink = Vec::new();
        while conn.wants_write() {
            if conn.write_tls(&mut sink).is_err() {
                return;
            }
        }
    }
}
