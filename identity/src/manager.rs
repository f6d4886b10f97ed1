//! The identity manager: "give me the current SVID for X". It fetches on first use, renews
//! before expiry with a new key each time, retries with backoff, bounds and prioritises CA
//! traffic, forgets identities nobody uses, and swaps each new SVID into the [`SvidSlot`] that
//! live rustls configs read. The timing decisions are [`RotationSchedule`]'s; this is the thin
//! tokio driver around it.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rustls_pki_types::CertificateDer;
use tokio::sync::{Notify, oneshot, watch};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::Error;
use crate::ca::SvidIssuer;
use crate::keys::{KeyAlgorithm, PrivateKey, csr_for};
use crate::rotation::{Action, RotationPolicy, RotationSchedule};
use crate::spiffe::SpiffeId;
use crate::svid::Svid;
use crate::tls::SvidSlot;

/// A boxed, sendable future, as [`CaClient`] returns.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A certificate signing request on behalf of an identity.
#[derive(Clone, Debug)]
pub struct SignRequest {
    /// PKCS#10 DER.
    pub csr: Vec<u8>,
    /// The identity the request is for (what the caller is authenticated as).
    pub id: SpiffeId,
    /// The TTL asked for; the CA clamps it.
    pub ttl: Option<Duration>,
}

/// Why a CA did not return an SVID, and whether trying again may help.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CaClientError {
    /// The CA could not be reached or is overloaded: retry with backoff.
    #[error("CA unavailable: {0}")]
    Unavailable(String),
    /// The CA refused the request: retrying the same request will not help soon.
    #[error("CA refused the request: {0}")]
    Refused(String),
    /// The CA answered with something that is not a usable SVID for this request.
    #[error("CA returned an unusable SVID: {0}")]
    BadResponse(String),
}

impl CaClientError {
    /// Whether a retry with backoff may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::BadResponse(_))
    }
}

/// Something that signs CSRs: the embedded CA in-process ([`LocalCa`]), or a remote CA.
pub trait CaClient: Send + Sync + 'static {
    /// Sign `request`; returns the chain (leaf first, root excluded).
    fn sign(
        &self,
        request: SignRequest,
    ) -> BoxFuture<'_, Result<Vec<CertificateDer<'static>>, CaClientError>>;
}

/// Wall-clock time as the manager and CA see it. [`Clock::system`] in production;
/// [`Clock::tokio`] follows tokio's (pausable) clock so tests run in virtual time.
#[derive(Clone)]
pub struct Clock(Arc<dyn Fn() -> SystemTime + Send + Sync>);

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Clock").field(&self.now()).finish()
    }
}

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Self(Arc::new(SystemTime::now))
    }

    /// The system time at creation, advanced by tokio's clock since: virtual under
    /// `tokio::time::pause()`. Call inside a tokio runtime.
    pub fn tokio() -> Self {
        let wall = SystemTime::now();
        let start = tokio::time::Instant::now();
        Self(Arc::new(move || wall + start.elapsed()))
    }

    /// Any clock.
    pub fn from_fn(f: impl Fn() -> SystemTime + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }

    /// Now.
    pub fn now(&self) -> SystemTime {
        (self.0)()
    }
}

/// The embedded CA as a [`CaClient`]. The issuer can be swapped (root rotation).
pub struct LocalCa {
    issuer: ArcSwap<SvidIssuer>,
    clock: Clock,
}

impl fmt::Debug for LocalCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalCa")
            .field("issuer", &self.issuer.load())
            .finish()
    }
}

impl LocalCa {
    /// Sign with `issuer`, stamping certificates with `clock`.
    pub fn new(issuer: Arc<SvidIssuer>, clock: Clock) -> Self {
        Self {
            issuer: ArcSwap::new(issuer),
            clock,
        }
    }

    /// Sign with `issuer` from now on.
    pub fn set_issuer(&self, issuer: Arc<SvidIssuer>) {
        self.issuer.store(issuer);
    }
}

impl CaClient for LocalCa {
    fn sign(
        &self,
        request: SignRequest,
    ) -> BoxFuture<'_, Result<Vec<CertificateDer<'static>>, CaClientError>> {
        let result = self
            .issuer
            .load()
            .sign_csr_at(&request.csr, &request.id, request.ttl, self.clock.now())
            .map_err(|e| match e {
                Error::Csr(e) => CaClientError::Refused(e.to_string()),
                other => CaClientError::Unavailable(other.to_string()),
            });
        Box::pin(async move { result })
    }
}

/// How the manager behaves.
#[derive(Clone, Debug)]
pub struct ManagerConfig {
    /// When to renew and how to back off.
    pub rotation: RotationPolicy,
    /// Key algorithm for every new key.
    pub key_algorithm: KeyAlgorithm,
    /// TTL asked of the CA (`None`: the CA's default).
    pub ttl: Option<Duration>,
    /// At most this many CA requests in flight; waiting handshakes go before renewals.
    pub max_concurrent_requests: usize,
    /// Forget an identity this long after its last use once no one holds its slot.
    pub forget_after: Duration,
    /// Seed for the jitter generator (tests); `None` seeds from the OS.
    pub jitter_seed: Option<u64>,
}

impl Default for ManagerConfig {
    fn default() -> Self {
        Self {
            rotation: RotationPolicy::default(),
            key_algorithm: KeyAlgorithm::EcdsaP256,
            ttl: None,
            max_concurrent_requests: 8,
            forget_after: Duration::from_secs(300),
            jitter_seed: None,
        }
    }
}

/// Counters for one identity.
#[derive(Clone, Debug, PartialEq)]
pub struct IdentityMetrics {
    /// The identity.
    pub id: SpiffeId,
    /// SVIDs installed.
    pub renewals: u64,
    /// Failed CA requests.
    pub failures: u64,
    /// Failures since the last success.
    pub consecutive_failures: u32,
    /// Seconds until the served SVID expires (`None`: nothing served).
    pub seconds_to_expiry: Option<f64>,
}

/// What a metrics system needs from the manager.
#[derive(Clone, Debug, PartialEq)]
pub struct ManagerMetrics {
    /// SVIDs installed, all identities.
    pub renewals: u64,
    /// Failed CA requests, all identities.
    pub failures: u64,
    /// Per identity, sorted by ID.
    pub identities: Vec<IdentityMetrics>,
}

struct Entry {
    slot: Arc<SvidSlot>,
    schedule: RotationSchedule,
    in_flight: bool,
    /// A caller is waiting for the first SVID: its request goes first.
    urgent: bool,
    last_used: SystemTime,
    renewals: u64,
    failures: u64,
    last_error: Option<CaClientError>,
    /// Bumped on every outcome; first-use waiters watch it.
    outcome: watch::Sender<u64>,
}

struct Inner {
    ca: Arc<dyn CaClient>,
    config: ManagerConfig,
    clock: Clock,
    entries: Mutex<HashMap<SpiffeId, Entry>>,
    wake: Notify,
    limiter: PriorityLimiter,
    rng: Mutex<StdRng>,
    renewals: AtomicU64,
    failures: AtomicU64,
}

/// Keeps the current SVID of every identity in use. Cloning shares the manager; the driver
/// task stops when the last clone is dropped.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use std::{sync::Arc, time::Duration};
/// use fipstun_identity::{ca::*, keys::KeyAlgorithm, manager::*, spiffe::*};
///
/// let td = TrustDomain::new("example.org")?;
/// let issuer = SvidIssuer::generate_root(td, KeyAlgorithm::EcdsaP256, Duration::from_secs(86400), IssuerConfig::default())?;
/// let ca = Arc::new(LocalCa::new(Arc::new(issuer), Clock::system()));
/// let manager = IdentityManager::start(ca, ManagerConfig::default(), Clock::system());
///
/// let web = SpiffeId::parse("spiffe://example.org/ns/prod/sa/web")?;
/// // Waits for the first SVID; later calls return at once. Build rustls configs once with the
/// // slot (fipstun_identity::tls::server_config): renewals swap the SVID inside it.
/// let slot = manager.fetch(&web).await?;
/// assert_eq!(slot.current().unwrap().id, web);
/// assert_eq!(manager.metrics().renewals, 1);
/// # Ok::<(), fipstun_identity::Error>(())
/// # }).unwrap();
/// ```
#[derive(Clone)]
pub struct IdentityManager {
    inner: Arc<Inner>,
    _driver: Arc<DriverGuard>,
}

struct DriverGuard(tokio::task::AbortHandle);

impl Drop for DriverGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl fmt::Debug for IdentityManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdentityManager")
            .field("identities", &self.inner.lock().len())
            .finish_non_exhaustive()
    }
}

impl IdentityManager {
    /// Start the manager's driver on the current tokio runtime.
    pub fn start(ca: Arc<dyn CaClient>, config: ManagerConfig, clock: Clock) -> Self {
        let rng = match config.jitter_seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_os_rng(),
        };
        let inner = Arc::new(Inner {
            ca,
            limiter: PriorityLimiter::new(config.max_concurrent_requests.max(1)),
            config,
            clock,
            entries: Mutex::new(HashMap::new()),
            wake: Notify::new(),
            rng: Mutex::new(rng),
            renewals: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        });
        let driver = tokio::spawn(drive(Arc::downgrade(&inner)));
        Self {
            inner,
            _driver: Arc::new(DriverGuard(driver.abort_handle())),
        }
    }

    /// The slot for `id`, registering the identity if new (its first fetch starts at once).
    /// The slot may still be empty: handshakes using it fail closed until the SVID arrives.
    pub fn slot(&self, id: &SpiffeId) -> Arc<SvidSlot> {
        self.touch(id, false).0
    }

    /// The slot for `id` once it holds an SVID. Concurrent calls for the same identity share
    /// one CA request, and a first fetch goes ahead of background renewals.
    pub fn fetch(&self, id: &SpiffeId) -> impl Future<Output = Result<Arc<SvidSlot>, Error>> + '_ {
        let (slot, mut outcome) = self.touch(id, true);
        let id = id.clone();
        async move {
            loop {
                if slot.current().is_some() {
                    return Ok(slot);
                }
                if outcome.changed().await.is_err() {
                    return Err(Error::Ca(CaClientError::Unavailable(format!(
                        "{id} was forgotten while waiting"
                    ))));
                }
                let failed = self
                    .inner
                    .lock()
                    .get(&id)
                    .and_then(|e| e.last_error.clone());
                if let (None, Some(err)) = (slot.current(), failed) {
                    return Err(Error::Ca(err));
                }
            }
        }
    }

    fn touch(&self, id: &SpiffeId, urgent: bool) -> (Arc<SvidSlot>, watch::Receiver<u64>) {
        let now = self.inner.clock.now();
        let mut entries = self.inner.lock();
        let entry = entries.entry(id.clone()).or_insert_with(|| Entry {
            slot: Arc::new(SvidSlot::new()),
            schedule: RotationSchedule::new(self.inner.config.rotation, now),
            in_flight: false,
            urgent: false,
            last_used: now,
            renewals: 0,
            failures: 0,
            last_error: None,
            outcome: watch::channel(0).0,
        });
        entry.last_used = now;
        if urgent && entry.slot.current().is_none() {
            entry.urgent = true;
        }
        let out = (entry.slot.clone(), entry.outcome.subscribe());
        drop(entries);
        self.inner.wake.notify_one();
        out
    }

    /// Counters and time-to-expiry per identity.
    pub fn metrics(&self) -> ManagerMetrics {
        let now = self.inner.clock.now();
        let entries = self.inner.lock();
        let mut identities: Vec<_> = entries
            .iter()
            .map(|(id, e)| IdentityMetrics {
                id: id.clone(),
                renewals: e.renewals,
                failures: e.failures,
                consecutive_failures: e.schedule.failures(),
                seconds_to_expiry: e.slot.seconds_to_expiry(now),
            })
            .collect();
        identities.sort_by(|a, b| a.id.cmp(&b.id));
        ManagerMetrics {
            renewals: self.inner.renewals.load(Ordering::Relaxed),
            failures: self.inner.failures.load(Ordering::Relaxed),
            identities,
        }
    }

    /// The identities currently managed.
    pub fn identities(&self) -> Vec<SpiffeId> {
        self.inner.lock().keys().cloned().collect()
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, HashMap<SpiffeId, Entry>> {
        // A panic while holding the lock leaves consistent data (every update is one field
        // store), so recover instead of poisoning every later handshake.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn jitter(&self) -> f64 {
        self.rng
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .random::<f64>()
    }
}

/// The driver: wake at the earliest deadline (or when poked), start due renewals, expire
/// SVIDs past notAfter, forget unused identities.
async fn drive(weak: std::sync::Weak<Inner>) {
    loop {
        let Some(inner) = weak.upgrade() else { return };
        let next = step(&inner);
        let wake = async {
            inner.wake.notified().await;
        };
        match next {
            Some(wait) => {
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = wake => {}
                }
            }
            None => wake.await,
        }
    }
}

/// One pass over the identities; returns how long until the next deadline.
fn step(inner: &Arc<Inner>) -> Option<Duration> {
    let now = inner.clock.now();
    let mut earliest: Option<SystemTime> = None;
    let mut start = Vec::new();
    {
        let mut entries = inner.lock();
        entries.retain(|_, e| {
            let unused = Arc::strong_count(&e.slot) == 1
                && !e.in_flight
                && now
                    .duration_since(e.last_used)
                    .is_ok_and(|idle| idle >= inner.config.forget_after);
            !unused
        });
        for (id, e) in entries.iter_mut() {
            loop {
                let (when, action) = e.schedule.next();
                if when > now {
                    if !(e.in_flight && action == Action::Renew) {
                        earliest = Some(earliest.map_or(when, |t| t.min(when)));
                    }
                    break;
                }
                match action {
                    Action::Expire => {
                        tracing::warn!(%id, "SVID expired before renewal; failing closed");
                        e.slot.clear();
                        e.schedule.on_expired();
                    }
                    Action::Renew => {
                        if !e.in_flight {
                            e.in_flight = true;
                            start.push((id.clone(), e.urgent));
                        }
                        break;
                    }
                }
            }
        }
        // The forget check must run again once an unheld identity's grace period ends.
        for e in entries.values() {
            if !e.in_flight && Arc::strong_count(&e.slot) == 1 {
                let at = e.last_used + inner.config.forget_after;
                if at > now {
                    earliest = Some(earliest.map_or(at, |t| t.min(at)));
                }
            }
        }
    }
    for (id, urgent) in start {
        tokio::spawn(renew(inner.clone(), id, urgent));
    }
    earliest.map(|t| t.duration_since(now).unwrap_or(Duration::ZERO))
}

async fn renew(inner: Arc<Inner>, id: SpiffeId, urgent: bool) {
    let _permit = inner.limiter.acquire(urgent).await;
    let result = request_svid(&inner, &id).await;
    let now = inner.clock.now();
    let jitter = inner.jitter();
    {
        let mut entries = inner.lock();
        let Some(e) = entries.get_mut(&id) else {
            return;
        };
        e.in_flight = false;
        match result {
            Ok(svid) => match e.slot.set(&svid) {
                Ok(()) => {
                    e.schedule
                        .on_issued(now, svid.not_before(), svid.not_after(), jitter);
                    e.urgent = false;
                    e.renewals += 1;
                    e.last_error = None;
                    inner.renewals.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%id, "SVID renewed");
                }
                Err(err) => fail(
                    &inner,
                    e,
                    &id,
                    CaClientError::BadResponse(err.to_string()),
                    now,
                    jitter,
                ),
            },
            Err(err) => fail(&inner, e, &id, err, now, jitter),
        }
        e.outcome.send_modify(|n| *n += 1);
    }
    inner.wake.notify_one();
}

fn fail(
    inner: &Inner,
    e: &mut Entry,
    id: &SpiffeId,
    err: CaClientError,
    now: SystemTime,
    jitter: f64,
) {
    let retry_at = e.schedule.on_failure(now, err.is_retryable(), jitter);
    tracing::warn!(%id, error = %err, retry_in = ?retry_at.duration_since(now).unwrap_or_default(), "SVID renewal failed");
    e.failures += 1;
    e.last_error = Some(err);
    inner.failures.fetch_add(1, Ordering::Relaxed);
}

/// New key, CSR, CA call, and a check that the answer is an SVID for this identity and key.
async fn request_svid(inner: &Inner, id: &SpiffeId) -> Result<Svid, CaClientError> {
    let key = PrivateKey::generate(inner.config.key_algorithm)
        .map_err(|e| CaClientError::Unavailable(e.to_string()))?;
    let csr = csr_for(id, &key).map_err(|e| CaClientError::Unavailable(e.to_string()))?;
    let chain = inner
        .ca
        .sign(SignRequest {
            csr,
            id: id.clone(),
            ttl: inner.config.ttl,
        })
        .await?;
    check_response(chain, key, id, inner.clock.now())
}

fn check_response(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKey,
    id: &SpiffeId,
    now: SystemTime,
) -> Result<Svid, CaClientError> {
    let bad = |m: String| CaClientError::BadResponse(m);
    let leaf = chain.first().ok_or_else(|| bad("empty chain".into()))?;
    let (_, cert) = X509Certificate::from_der(leaf).map_err(|e| bad(e.to_string()))?;
    let ours = key.public_key().map_err(|e| bad(e.to_string()))?;
    if cert.public_key().subject_public_key.data.as_ref() != ours.as_slice() {
        return Err(bad("the leaf does not certify the key we sent".into()));
    }
    let svid = Svid::new(chain, key).map_err(|e| bad(e.to_string()))?;
    if svid.id() != id {
        return Err(bad(format!("the leaf is for {}, not {id}", svid.id())));
    }
    if svid.not_after() <= now {
        return Err(bad("the leaf is already expired".into()));
    }
    Ok(svid)
}

/// A counting semaphore whose waiters are served urgent-first, FIFO within a class.
struct PriorityLimiter {
    state: Mutex<LimiterState>,
}

struct LimiterState {
    available: usize,
    urgent: VecDeque<oneshot::Sender<()>>,
    background: VecDeque<oneshot::Sender<()>>,
}

struct Permit<'a>(&'a PriorityLimiter);

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.0.release();
    }
}

impl PriorityLimiter {
    fn new(permits: usize) -> Self {
        Self {
            state: Mutex::new(LimiterState {
                available: permits,
                urgent: VecDeque::new(),
                background: VecDeque::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, LimiterState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn acquire(&self, urgent: bool) -> Permit<'_> {
        let rx = {
            let mut s = self.lock();
            if s.available > 0 {
                s.available -= 1;
                return Permit(self);
            }
            let (tx, rx) = oneshot::channel();
            if urgent {
                s.urgent.push_back(tx);
            } else {
                s.background.push_back(tx);
            }
            rx
        };
        match rx.await {
            Ok(()) => Permit(self),
            // The sender is only dropped by `release` after a failed hand-over, which cannot
            // happen while we still hold `rx`; take a fresh place in line to be safe.
            Err(_) => Box::pin(self.acquire(urgent)).await,
        }
    }

    fn release(&self) {
        let mut s = self.lock();
        loop {
            let next = s.urgent.pop_front().or_else(|| s.background.pop_front());
            match next {
                // Hand the permit straight to the next waiter; if it gave up, try the next.
                Some(tx) => {
                    if tx.send(()).is_ok() {
                        return;
                    }
                }
                None => {
                    s.available += 1;
                    return;
                }
            }
        }
    }

    #[cfg(test)]
    fn waiting(&self) -> (usize, usize) {
        let s = self.lock();
        (s.urgent.len(), s.background.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn limiter_serves_urgent_waiters_first() {
        let limiter = Arc::new(PriorityLimiter::new(1));
        let held = limiter.acquire(false).await;
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (name, urgent) in [("bg1", false), ("bg2", false), ("urgent", true)] {
            let (l, o) = (limiter.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let _p = l.acquire(urgent).await;
                o.lock().unwrap().push(name);
            }));
            // Let it queue before the next one.
            while limiter.waiting().0 + limiter.waiting().1 < tasks.len() {
                tokio::task::yield_now().await;
            }
        }
        drop(held);
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), vec!["urgent", "bg1", "bg2"]);
        // All permits are back.
        let _a = limiter.acquire(false).await;
        assert_eq!(limiter.lock().available, 0);
    }

    #[test]
    fn responses_for_another_key_or_identity_are_refused() {
        let td = crate::spiffe::TrustDomain::new("example.org").unwrap();
        let ca = SvidIssuer::generate_root(
            td,
            KeyAlgorithm::EcdsaP256,
            Duration::from_secs(3600),
            crate::ca::IssuerConfig::default(),
        )
        .unwrap();
        let me = SpiffeId::parse("spiffe://example.org/me").unwrap();
        let other = SpiffeId::parse("spiffe://example.org/other").unwrap();
        let now = SystemTime::now();

        let mine = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
        let chain = ca
            .sign_csr(&csr_for(&me, &mine).unwrap(), &me, None)
            .unwrap();
        let svid = check_response(chain.clone(), mine, &me, now).unwrap();
        assert_eq!(svid.id(), &me);

        let fresh = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
        assert!(matches!(
            check_response(chain, fresh, &me, now),
            Err(CaClientError::BadResponse(m)) if m.contains("key")
        ));

        let k = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
        let chain = ca
            .sign_csr(&csr_for(&other, &k).unwrap(), &other, None)
            .unwrap();
        assert!(matches!(
            check_response(chain, k, &me, now),
            Err(CaClientError::BadResponse(m)) if m.contains("not spiffe://example.org/me")
        ));

        let k = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
        assert!(matches!(
            check_response(Vec::new(), k, &me, now),
            Err(CaClientError::BadResponse(m)) if m == "empty chain"
        ));

        let k = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
        let chain = ca.sign_csr(&csr_for(&me, &k).unwrap(), &me, None).unwrap();
        assert!(matches!(
            check_response(chain, k, &me, now + Duration::from_secs(7200)),
            Err(CaClientError::BadResponse(m)) if m.contains("expired")
        ));
    }
}
