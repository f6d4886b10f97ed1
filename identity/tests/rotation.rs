//! Rotation that never drops a connection: the identity manager on tokio's paused (virtual)
//! clock, with the embedded CA behind a switch that can take it down.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use fipstun_identity::bundle::{BundleSet, TrustStore};
use fipstun_identity::ca::{IssuerConfig, SvidIssuer};
use fipstun_identity::keys::KeyAlgorithm;
use fipstun_identity::manager::{
    BoxFuture, CaClient, CaClientError, Clock, IdentityManager, LocalCa, ManagerConfig, SignRequest,
};
use fipstun_identity::policy::CryptoPolicy;
use fipstun_identity::spiffe::{SpiffeId, TrustDomain};
use fipstun_identity::svid::{self, Usage};
use fipstun_identity::tls::{Authorizer, SpiffeVerifier, SvidSlot};
use rustls_pki_types::CertificateDer;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::time::sleep;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use x509_parser::prelude::{FromDer, X509Certificate};

const SEC: Duration = Duration::from_secs(1);

/// The embedded CA behind an on/off switch, recording when each request arrived.
struct SwitchedCa {
    inner: LocalCa,
    clock: Clock,
    down: AtomicBool,
    calls: Mutex<Vec<(SystemTime, SpiffeId)>>,
    refused: AtomicUsize,
}

impl SwitchedCa {
    fn new(issuer: Arc<SvidIssuer>, clock: Clock) -> Arc<Self> {
        Arc::new(Self {
            inner: LocalCa::new(issuer, clock.clone()),
            clock,
            down: AtomicBool::new(false),
            calls: Mutex::new(Vec::new()),
            refused: AtomicUsize::new(0),
        })
    }

    fn successes(&self) -> usize {
        self.calls.lock().unwrap().len()
    }
}

impl CaClient for SwitchedCa {
    fn sign(
        &self,
        request: SignRequest,
    ) -> BoxFuture<'_, Result<Vec<CertificateDer<'static>>, CaClientError>> {
        if self.down.load(Ordering::SeqCst) {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return Box::pin(async { Err(CaClientError::Unavailable("CA is down".into())) });
        }
        self.calls
            .lock()
            .unwrap()
            .push((self.clock.now(), request.id.clone()));
        self.inner.sign(request)
    }
}

fn td() -> TrustDomain {
    TrustDomain::new("mesh.test").unwrap()
}

fn root_at(clock: &Clock) -> Arc<SvidIssuer> {
    Arc::new(
        SvidIssuer::generate_root_at(
            td(),
            KeyAlgorithm::EcdsaP256,
            Duration::from_secs(30 * 86400),
            IssuerConfig::default(),
            clock.now(),
        )
        .unwrap(),
    )
}

fn config(ttl_secs: u64) -> ManagerConfig {
    ManagerConfig {
        ttl: Some(Duration::from_secs(ttl_secs)),
        jitter_seed: Some(0x5eed),
        ..ManagerConfig::default()
    }
}

fn id(path: &str) -> SpiffeId {
    SpiffeId::parse(&format!("spiffe://mesh.test/{path}")).unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_thousand_identities_never_expire_and_renewals_are_spread() {
    let clock = Clock::tokio();
    let ca = SwitchedCa::new(root_at(&clock), clock.clone());
    let manager = IdentityManager::start(ca.clone(), config(60), clock.clone());
    let ids: Vec<SpiffeId> = (0..1000).map(|i| id(&format!("w/{i}"))).collect();
    let slots: Vec<Arc<SvidSlot>> = ids.iter().map(|i| manager.slot(i)).collect();
    while slots.iter().any(|s| s.current().is_none()) {
        sleep(Duration::from_millis(10)).await;
    }
    let first_round = ca.successes();
    assert_eq!(
        first_round, 1000,
        "one CA request per identity on first use"
    );
    let start = clock.now();

    // Ten lifetimes, checked every virtual second: every slot always serves a valid SVID.
    for _ in 0..600 {
        sleep(SEC).await;
        let now = clock.now();
        for (slot, want) in slots.iter().zip(&ids) {
            let cur = slot.current().expect("an SVID is always served");
            assert_eq!(&cur.id, want);
            assert!(cur.not_after > now, "{want} served an expired SVID");
        }
    }

    // Spread: bucket renewal requests by virtual second. With refresh at 50% ± 20% of a 60 s
    // lifetime, a round of 1000 spreads over ~24 s (about 42 per second on average); we assert
    // no second holds more than 7% of a round (70 requests). Without jitter it would be 100%.
    let calls = ca.calls.lock().unwrap().clone();
    let mut per_second: BTreeMap<u64, usize> = BTreeMap::new();
    for (at, _) in &calls[first_round..] {
        *per_second
            .entry(at.duration_since(start).unwrap().as_secs())
            .or_default() += 1;
    }
    let (busiest_second, busiest) = per_second
        .iter()
        .max_by_key(|(_, n)| **n)
        .map(|(s, n)| (*s, *n))
        .unwrap();
    assert!(
        busiest <= 70,
        "second {busiest_second} held {busiest} renewals (> 7% of 1000)"
    );
    let metrics = manager.metrics();
    assert_eq!(metrics.identities.len(), 1000);
    assert_eq!(metrics.failures, 0);
    for m in &metrics.identities {
        // 600 s at a renewal every 18..42 s: at least 14 renewals plus the first fetch.
        assert!(
            m.renewals >= 15,
            "{} renewed only {} times",
            m.id,
            m.renewals
        );
        assert!(m.seconds_to_expiry.unwrap() > 0.0);
    }
    assert_eq!(metrics.renewals as usize, ca.successes());
}

#[tokio::test(start_paused = true)]
async fn concurrent_first_use_shares_one_request() {
    let clock = Clock::tokio();
    let ca = SwitchedCa::new(root_at(&clock), clock.clone());
    let manager = IdentityManager::start(ca.clone(), config(600), clock.clone());
    let me = id("ns/a/sa/b");
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (m, me) = (manager.clone(), me.clone());
        tasks.push(tokio::spawn(async move { m.fetch(&me).await.map(|_| ()) }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(ca.successes(), 1);
}

#[tokio::test(start_paused = true)]
async fn first_fetch_fails_closed_while_the_ca_is_down() {
    let clock = Clock::tokio();
    let ca = SwitchedCa::new(root_at(&clock), clock.clone());
    ca.down.store(true, Ordering::SeqCst);
    let manager = IdentityManager::start(ca.clone(), config(600), clock.clone());
    let me = id("x");
    let err = manager.fetch(&me).await.unwrap_err();
    assert!(
        matches!(
            err,
            fipstun_identity::Error::Ca(CaClientError::Unavailable(_))
        ),
        "{err:?}"
    );
    assert!(manager.slot(&me).current().is_none(), "nothing is served");
    ca.down.store(false, Ordering::SeqCst);
    // The background retry (backoff starts at 1 s) delivers it.
    let slot = manager.fetch(&me).await.unwrap();
    assert!(slot.current().is_some());
    assert!(manager.metrics().failures >= 1);
}

#[tokio::test(start_paused = true)]
async fn unused_identities_are_forgotten() {
    let clock = Clock::tokio();
    let ca = SwitchedCa::new(root_at(&clock), clock.clone());
    let mut cfg = config(60);
    cfg.forget_after = Duration::from_secs(120);
    let manager = IdentityManager::start(ca.clone(), cfg, clock.clone());
    let kept = manager.fetch(&id("kept")).await.unwrap();
    drop(manager.fetch(&id("dropped")).await.unwrap());
    let dropped_calls = || {
        ca.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, i)| *i == id("dropped"))
            .count()
    };
    sleep(Duration::from_secs(300)).await;
    assert_eq!(manager.identities(), vec![id("kept")]);
    let (dropped_then, all_then) = (dropped_calls(), ca.successes());
    sleep(Duration::from_secs(300)).await;
    assert_eq!(
        dropped_calls(),
        dropped_then,
        "a forgotten identity kept renewing"
    );
    assert!(ca.successes() > all_then, "the kept identity still renews");
    assert!(kept.current().is_some());
}

#[tokio::test(start_paused = true)]
async fn every_renewal_uses_a_new_key() {
    let clock = Clock::tokio();
    let ca = SwitchedCa::new(root_at(&clock), clock.clone());
    let manager = IdentityManager::start(ca.clone(), config(60), clock.clone());
    let slot = manager.fetch(&id("k")).await.unwrap();
    let mut keys = HashSet::new();
    let mut serials = HashSet::new();
    for _ in 0..300 {
        sleep(SEC).await;
        let cur = slot.current().unwrap();
        let leaf = &cur.certified.cert[0];
        let (_, cert) = X509Certificate::from_der(leaf).unwrap();
        serials.insert(cert.raw_serial().to_vec());
        keys.insert(cert.public_key().subject_public_key.data.to_vec());
    }
    assert!(serials.len() >= 7, "only {} SVIDs in 300 s", serials.len());
    assert_eq!(keys.len(), serials.len(), "a key was reused");
}

// ---- live TLS over the rotating slots ------------------------------------------------------

struct Tls {
    acceptor: TlsAcceptor,
    connector: TlsConnector,
}

/// Configs built once over the manager's slots; the verifiers use the virtual clock.
fn tls(clock: &Clock, trust: &TrustStore, server: Arc<SvidSlot>, client: Arc<SvidSlot>) -> Tls {
    let policy = CryptoPolicy::default();
    let verifier = |c: Clock| {
        Arc::new(
            SpiffeVerifier::new(trust.clone(), Authorizer::trust_domains([td()]))
                .with_clock(move || c.now()),
        )
    };
    let server_cfg = policy
        .server_config(verifier(clock.clone()), server)
        .unwrap();
    let client_cfg = policy
        .client_config(verifier(clock.clone()), client)
        .unwrap();
    Tls {
        acceptor: TlsAcceptor::from(Arc::new(server_cfg)),
        connector: TlsConnector::from(Arc::new(client_cfg)),
    }
}

type ClientStream = tokio_rustls::client::TlsStream<DuplexStream>;
type ServerStream = tokio_rustls::server::TlsStream<DuplexStream>;

async fn connect(tls: &Tls) -> Result<(ClientStream, ServerStream), std::io::Error> {
    let (a, b) = tokio::io::duplex(1 << 16);
    let name = "ignored".try_into().unwrap();
    let (c, s) = tokio::join!(tls.connector.connect(name, a), tls.acceptor.accept(b));
    Ok((c?, s?))
}

fn leaf_serial(certs: &[CertificateDer<'_>]) -> Vec<u8> {
    let (_, cert) = X509Certificate::from_der(&certs[0]).unwrap();
    cert.raw_serial().to_vec()
}

/// Send `chunk` bytes of a counting pattern through the pair, echoed back, and check them.
async fn exchange(c: &mut ClientStream, s: &mut ServerStream, round: u32) {
    let msg: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(31) ^ round) as u8)
        .collect();
    c.write_all(&msg).await.unwrap();
    c.flush().await.unwrap();
    let mut got = vec![0; msg.len()];
    s.read_exact(&mut got).await.unwrap();
    assert_eq!(got, msg, "server received corrupted bytes in round {round}");
    s.write_all(&got).await.unwrap();
    s.flush().await.unwrap();
    let mut back = vec![0; msg.len()];
    c.read_exact(&mut back).await.unwrap();
    assert_eq!(
        back, msg,
        "client received corrupted bytes in round {round}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_live_connection_survives_rotations_on_both_sides() {
    let clock = Clock::tokio();
    let issuer = root_at(&clock);
    let ca = SwitchedCa::new(issuer.clone(), clock.clone());
    let manager = IdentityManager::start(ca.clone(), config(60), clock.clone());
    let trust = TrustStore::new(BundleSet::new().with(issuer.bundle().clone()));
    let server_slot = manager.fetch(&id("server")).await.unwrap();
    let client_slot = manager.fetch(&id("client")).await.unwrap();
    let tls = tls(&clock, &trust, server_slot.clone(), client_slot.clone());

    let (mut c, mut s) = connect(&tls).await.unwrap();
    let mut server_serials = HashSet::new();
    let mut client_serials = HashSet::new();
    // 400 virtual seconds of traffic, a round every 250 ms; a fresh handshake every 10 s
    // shows which SVIDs are being presented now.
    for round in 0..1600u32 {
        exchange(&mut c, &mut s, round).await;
        if round % 40 == 0 {
            let (c2, s2) = connect(&tls)
                .await
                .expect("new handshake with the current SVIDs");
            server_serials.insert(leaf_serial(c2.get_ref().1.peer_certificates().unwrap()));
            client_serials.insert(leaf_serial(s2.get_ref().1.peer_certificates().unwrap()));
        }
        sleep(Duration::from_millis(250)).await;
    }
    let m = manager.metrics();
    for i in &m.identities {
        assert!(
            i.renewals >= 6,
            "{} rotated only {} times",
            i.id,
            i.renewals - 1
        );
    }
    assert!(
        server_serials.len() >= 6,
        "{} server SVIDs seen",
        server_serials.len()
    );
    assert!(
        client_serials.len() >= 6,
        "{} client SVIDs seen",
        client_serials.len()
    );
    // The first connection is still alive and intact after all of it.
    exchange(&mut c, &mut s, 9999).await;
}

#[tokio::test(start_paused = true)]
async fn ca_outage_keeps_old_svids_until_expiry_then_recovers_within_the_backoff_cap() {
    let clock = Clock::tokio();
    let issuer = root_at(&clock);
    let ca = SwitchedCa::new(issuer.clone(), clock.clone());
    // TTL 120 s: renewals are due 36..84 s after issue (nominal refresh interval 60 s).
    let manager = IdentityManager::start(ca.clone(), config(120), clock.clone());
    let trust = TrustStore::new(BundleSet::new().with(issuer.bundle().clone()));
    let server_slot = manager.fetch(&id("server")).await.unwrap();
    let client_slot = manager.fetch(&id("client")).await.unwrap();
    let expiry = server_slot
        .current()
        .unwrap()
        .not_after
        .min(client_slot.current().unwrap().not_after);
    let tls = tls(&clock, &trust, server_slot.clone(), client_slot.clone());
    let (mut c, mut s) = connect(&tls).await.unwrap();

    // 10 s into the SVIDs' life (before any renewal is due) the CA goes down for twice the
    // refresh interval (120 s), so they expire during the outage.
    sleep(Duration::from_secs(10)).await;
    ca.down.store(true, Ordering::SeqCst);
    let outage_start = clock.now();
    sleep(Duration::from_secs(100)).await;
    assert!(
        ca.refused.load(Ordering::SeqCst) > 0,
        "renewals were attempted"
    );
    assert!(manager.metrics().failures > 0);
    // Before expiry: new handshakes still succeed with the old SVIDs; the old connection works.
    connect(&tls).await.expect("handshake with the old SVIDs");
    exchange(&mut c, &mut s, 1).await;

    // Past expiry, still down: the manager stops serving the expired SVIDs (fail closed).
    sleep(expiry.duration_since(clock.now()).unwrap() + SEC).await;
    assert!(clock.now() < outage_start + Duration::from_secs(120));
    assert!(server_slot.current().is_none() && client_slot.current().is_none());
    assert!(connect(&tls).await.is_err(), "no handshake without an SVID");
    // The established connection is not torn down.
    exchange(&mut c, &mut s, 2).await;

    // The CA returns after 120 s; renewal must follow within the 150 s backoff cap.
    sleep(
        (outage_start + Duration::from_secs(120))
            .duration_since(clock.now())
            .unwrap(),
    )
    .await;
    ca.down.store(false, Ordering::SeqCst);
    let back = clock.now();
    while server_slot.current().is_none() || client_slot.current().is_none() {
        sleep(Duration::from_millis(100)).await;
        assert!(
            clock.now().duration_since(back).unwrap() <= Duration::from_secs(150),
            "not renewed within the backoff cap"
        );
    }
    connect(&tls).await.expect("handshake after recovery");
    exchange(&mut c, &mut s, 3).await;
}

#[tokio::test(start_paused = true)]
async fn root_rotation_with_overlap_keeps_old_and_new_root_peers_talking() {
    let clock = Clock::tokio();
    let old_root = root_at(&clock);
    let new_root = root_at(&clock);
    let ca = SwitchedCa::new(old_root.clone(), clock.clone());
    let manager = IdentityManager::start(ca.clone(), config(3600), clock.clone());
    let trust = TrustStore::new(BundleSet::new().with(old_root.bundle().clone()));

    let old_peer = manager.fetch(&id("old")).await.unwrap();
    // Rotation step 1: trust both roots; step 2: issue from the new root.
    trust.update(old_root.bundle().merged_with(new_root.bundle()).unwrap());
    ca.inner.set_issuer(new_root.clone());
    let new_peer = manager.fetch(&id("new")).await.unwrap();

    let chain = |slot: &SvidSlot| slot.current().unwrap().certified.cert.clone();
    let only = |root: &SvidIssuer| BundleSet::new().with(root.bundle().clone());
    let now = clock.now();
    assert!(svid::validate(&chain(&old_peer), &only(&old_root), now, Usage::Client).is_ok());
    assert!(svid::validate(&chain(&new_peer), &only(&new_root), now, Usage::Client).is_ok());
    assert!(svid::validate(&chain(&new_peer), &only(&old_root), now, Usage::Client).is_err());

    // Both directions work during the overlap.
    connect(&tls(&clock, &trust, old_peer.clone(), new_peer.clone()))
        .await
        .expect("new-root client -> old-root server");
    connect(&tls(&clock, &trust, new_peer.clone(), old_peer.clone()))
        .await
        .expect("old-root client -> new-root server");

    // Without the overlap the old-root peer would refuse the new one.
    let old_only = TrustStore::new(only(&old_root));
    assert!(
        connect(&tls(&clock, &old_only, old_peer.clone(), new_peer.clone()))
            .await
            .is_err()
    );

    // After its next renewal the old peer is on the new root too.
    sleep(Duration::from_secs(3600)).await;
    assert!(
        svid::validate(
            &chain(&old_peer),
            &only(&new_root),
            clock.now(),
            Usage::Client
        )
        .is_ok()
    );
    // Rotation step 3: once the old root's SVIDs have expired, drop the old root.
    let merged = trust.current().get(&td()).unwrap().clone();
    trust.update(merged.without_root(&old_root.bundle().roots()[0]).unwrap());
    assert_eq!(trust.current().get(&td()).unwrap().roots().len(), 1);
    connect(&tls(&clock, &trust, old_peer.clone(), new_peer.clone()))
        .await
        .expect("both on the new root");
    let last = merged.without_root(&merged.roots()[0]).unwrap();
    assert!(
        last.without_root(&merged.roots()[1]).is_err(),
        "a bundle is never empty"
    );
}
