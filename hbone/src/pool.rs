//! Connection-pool bookkeeping, without sockets: which connection a new stream goes to, who
//! dials when none has room (one dial per key at a time, the others wait for it), and when an
//! idle or broken connection leaves the pool.
//!
//! The lock is a plain mutex held only for map updates; dialing happens outside it.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::watch;

/// What the pool needs to know about a pooled connection.
pub(crate) trait Pooled: Send + Sync + 'static {
    /// Whether new streams may still be opened on it (no GOAWAY, no error).
    fn usable(&self) -> bool;
    /// How many concurrent streams it may carry now.
    fn stream_cap(&self) -> usize;
}

/// One pooled connection with its stream count.
pub(crate) struct Slot<C> {
    id: u64,
    conn: C,
    active: AtomicUsize,
    closed: AtomicBool,
    idle_since: Mutex<Option<Instant>>,
}

impl<C> Slot<C> {
    pub(crate) fn conn(&self) -> &C {
        &self.conn
    }

    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    pub(crate) fn active(&self) -> usize {
        self.active.load(Ordering::Acquire)
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

impl<C: Pooled> Slot<C> {
    fn try_acquire(&self) -> bool {
        if self.is_closed() || !self.conn.usable() {
            return false;
        }
        let cap = self.conn.stream_cap();
        let mut cur = self.active.load(Ordering::Acquire);
        loop {
            if cur >= cap {
                return false;
            }
            match self.active.compare_exchange_weak(
                cur,
                cur + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    *lock(&self.idle_since) = None;
                    return true;
                }
                Err(now) => cur = now,
            }
        }
    }
}

/// One stream's claim on a pooled connection; released on drop.
pub(crate) struct Lease<C> {
    slot: Arc<Slot<C>>,
}

impl<C> Lease<C> {
    pub(crate) fn slot(&self) -> &Arc<Slot<C>> {
        &self.slot
    }
}

impl<C> Drop for Lease<C> {
    fn drop(&mut self) {
        if self.slot.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            *lock(&self.slot.idle_since) = Some(Instant::now());
        }
    }
}

/// What [`Pool::evict_if_idle`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum IdleCheck {
    /// In use, or not idle for long enough.
    Busy,
    /// Idle for long enough: now out of the pool; the caller closes it.
    Evicted,
    /// Not in the pool any more (evicted after GOAWAY or an error).
    Gone,
}

/// The result of a dial others may be waiting on.
pub(crate) type DialOutcome<E> = Option<Result<(), E>>;

struct Entry<C, E> {
    conns: Vec<Arc<Slot<C>>>,
    dialing: Option<(u64, watch::Receiver<DialOutcome<E>>)>,
}

impl<C, E> Default for Entry<C, E> {
    fn default() -> Self {
        Self {
            conns: Vec::new(),
            dialing: None,
        }
    }
}

type Map<K, C, E> = Mutex<HashMap<K, Entry<C, E>>>;

/// The pool: per key, the open connections and the dial in flight.
pub(crate) struct Pool<K, C, E> {
    map: Arc<Map<K, C, E>>,
    next_id: AtomicU64,
}

/// What a caller of [`Pool::checkout`] does next.
pub(crate) enum Checkout<K: Hash + Eq + Clone, C, E: Clone> {
    /// A stream slot on an open connection.
    Ready(Lease<C>),
    /// No connection has room and nobody is dialing: dial, then [`DialTicket::complete`].
    Dial(DialTicket<K, C, E>),
    /// Someone else is dialing: wait for it, then check out again.
    Wait(watch::Receiver<DialOutcome<E>>),
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere while holding the lock leaves plain bookkeeping; keep going.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl<K: Hash + Eq + Clone, C: Pooled, E: Clone> Pool<K, C, E> {
    pub(crate) fn new() -> Self {
        Self {
            map: Arc::new(Mutex::new(HashMap::new())),
            next_id: AtomicU64::new(1),
        }
    }

    /// Find room for one stream under `key`, or say who dials.
    pub(crate) fn checkout(&self, key: &K) -> Checkout<K, C, E> {
        let mut map = lock(&self.map);
        let entry = map.entry(key.clone()).or_default();
        entry.conns.retain(|s| {
            let keep = !s.is_closed() && s.conn.usable();
            if !keep {
                s.closed.store(true, Ordering::Release);
            }
            keep
        });
        // Fill the fullest connection first, so that idle ones can age out.
        let mut best: Option<&Arc<Slot<C>>> = None;
        for s in &entry.conns {
            if s.active() < s.conn.stream_cap() && best.is_none_or(|b| s.active() > b.active()) {
                best = Some(s);
            }
        }
        if let Some(s) = best
            .cloned()
            .into_iter()
            .chain(entry.conns.iter().cloned())
            .find(|s| s.try_acquire())
        {
            return Checkout::Ready(Lease { slot: s });
        }
        if let Some((_, rx)) = &entry.dialing {
            return Checkout::Wait(rx.clone());
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = watch::channel(None);
        entry.dialing = Some((id, rx));
        Checkout::Dial(DialTicket {
            map: self.map.clone(),
            key: key.clone(),
            id,
            tx: Some(tx),
        })
    }

    /// Take `slot` out of the pool (GOAWAY, error, keepalive timeout): no new streams go to it.
    pub(crate) fn evict(&self, key: &K, id: u64) {
        let mut map = lock(&self.map);
        if let Some(entry) = map.get_mut(key) {
            entry.conns.retain(|s| {
                if s.id == id {
                    s.closed.store(true, Ordering::Release);
                    false
                } else {
                    true
                }
            });
            if entry.conns.is_empty() && entry.dialing.is_none() {
                map.remove(key);
            }
        }
    }

    /// Evict the connection if it has carried no stream for at least `idle`.
    pub(crate) fn evict_if_idle(
        &self,
        key: &K,
        id: u64,
        idle: Duration,
        now: Instant,
    ) -> IdleCheck {
        let map = lock(&self.map);
        let Some(s) = map
            .get(key)
            .and_then(|e| e.conns.iter().find(|s| s.id == id))
        else {
            return IdleCheck::Gone;
        };
        // Streams acquire under the map lock, so no stream can start while we decide.
        let idle_since = *lock(&s.idle_since);
        let expired =
            s.active() == 0 && idle_since.is_some_and(|t| now.saturating_duration_since(t) >= idle);
        drop(map);
        if expired {
            self.evict(key, id);
            IdleCheck::Evicted
        } else {
            IdleCheck::Busy
        }
    }

    /// Number of open connections under `key`.
    #[cfg(test)]
    pub(crate) fn connections(&self, key: &K) -> usize {
        lock(&self.map).get(key).map_or(0, |e| e.conns.len())
    }

    /// Number of open connections under all keys.
    pub(crate) fn total_connections(&self) -> usize {
        lock(&self.map).values().map(|e| e.conns.len()).sum()
    }
}

/// The right (and duty) to dial for a key. Dropping it without [`DialTicket::complete`] or
/// [`DialTicket::fail`] (the dialing task was cancelled) lets a waiter dial instead.
pub(crate) struct DialTicket<K: Hash + Eq + Clone, C, E: Clone> {
    map: Arc<Map<K, C, E>>,
    key: K,
    id: u64,
    tx: Option<watch::Sender<DialOutcome<E>>>,
}

impl<K: Hash + Eq + Clone, C: Pooled, E: Clone> DialTicket<K, C, E> {
    /// The dial succeeded: add `conn` to the pool and take one stream slot on it for the dialer.
    pub(crate) fn complete(mut self, conn: C) -> Lease<C> {
        let slot = Arc::new(Slot {
            id: self.id,
            conn,
            active: AtomicUsize::new(1),
            closed: AtomicBool::new(false),
            idle_since: Mutex::new(None),
        });
        {
            let mut map = lock(&self.map);
            let entry = map.entry(self.key.clone()).or_default();
            entry.dialing = None;
            entry.conns.push(slot.clone());
        }
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(Some(Ok(())));
        }
        Lease { slot }
    }

    /// The dial failed: the waiters fail with `err` too instead of each dialing in turn.
    pub(crate) fn fail(mut self, err: E) {
        self.clear();
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(Some(Err(err)));
        }
    }

    /// The id the connection will have in the pool.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    fn clear(&self) {
        let mut map = lock(&self.map);
        if let Some(entry) = map.get_mut(&self.key) {
            if entry.dialing.as_ref().is_some_and(|(id, _)| *id == self.id) {
                entry.dialing = None;
            }
            if entry.conns.is_empty() && entry.dialing.is_none() {
                map.remove(&self.key);
            }
        }
    }
}

impl<K: Hash + Eq + Clone, C, E: Clone> Drop for DialTicket<K, C, E> {
    fn drop(&mut self) {
        if self.tx.is_some() {
            let mut map = lock(&self.map);
            if let Some(entry) = map.get_mut(&self.key)
                && entry.dialing.as_ref().is_some_and(|(id, _)| *id == self.id)
            {
                entry.dialing = None;
            }
            // Dropping the sender wakes the waiters; one of them dials next.
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fake {
        cap: usize,
        usable: Arc<AtomicBool>,
    }

    impl Pooled for Fake {
        fn usable(&self) -> bool {
            self.usable.load(Ordering::Relaxed)
        }
        fn stream_cap(&self) -> usize {
            self.cap
        }
    }

    type P = Pool<&'static str, Fake, String>;

    fn fake(cap: usize) -> (Fake, Arc<AtomicBool>) {
        let u = Arc::new(AtomicBool::new(true));
        (
            Fake {
                cap,
                usable: u.clone(),
            },
            u,
        )
    }

    #[test]
    fn one_dial_per_key_and_cap_respected() {
        let pool = P::new();
        let Checkout::Dial(ticket) = pool.checkout(&"a") else {
            panic!("first checkout must dial");
        };
        assert!(matches!(pool.checkout(&"a"), Checkout::Wait(_)));
        // Another key dials independently.
        assert!(matches!(pool.checkout(&"b"), Checkout::Dial(_)));
        let (c, _) = fake(3);
        let first = ticket.complete(c);
        let mut leases = vec![first];
        for _ in 0..2 {
            match pool.checkout(&"a") {
                Checkout::Ready(l) => leases.push(l),
                _ => panic!("room left"),
            }
        }
        assert!(
            matches!(pool.checkout(&"a"), Checkout::Dial(_)),
            "cap 3 reached"
        );
        assert_eq!(pool.connections(&"a"), 1);
        leases.pop();
        assert!(matches!(pool.checkout(&"a"), Checkout::Ready(_)));
    }

    #[test]
    fn waiters_see_failure_and_cancel_lets_them_dial() {
        let pool = P::new();
        let Checkout::Dial(t) = pool.checkout(&"a") else {
            panic!()
        };
        let Checkout::Wait(mut rx) = pool.checkout(&"a") else {
            panic!()
        };
        t.fail("refused".into());
        assert_eq!(
            rx.borrow_and_update().clone(),
            Some(Err("refused".to_string()))
        );
        let Checkout::Dial(t) = pool.checkout(&"a") else {
            panic!("failure clears dialing")
        };
        let Checkout::Wait(rx) = pool.checkout(&"a") else {
            panic!()
        };
        drop(t);
        assert!(rx.has_changed().is_err(), "sender gone");
        assert!(matches!(pool.checkout(&"a"), Checkout::Dial(_)));
    }

    #[test]
    fn evicts_unusable_and_idle() {
        let pool = P::new();
        let Checkout::Dial(t) = pool.checkout(&"a") else {
            panic!()
        };
        let (c, usable) = fake(10);
        let lease = t.complete(c);
        let id = lease.slot().id();
        let t0 = Instant::now();
        assert_eq!(
            pool.evict_if_idle(&"a", id, Duration::ZERO, t0),
            IdleCheck::Busy
        );
        drop(lease);
        let later = Instant::now() + Duration::from_secs(5);
        assert_eq!(
            pool.evict_if_idle(&"a", id, Duration::from_secs(60), later),
            IdleCheck::Busy
        );
        assert!(matches!(pool.checkout(&"a"), Checkout::Ready(_)));
        usable.store(false, Ordering::Relaxed);
        assert!(
            matches!(pool.checkout(&"a"), Checkout::Dial(_)),
            "GOAWAY'd conn evicted"
        );
        assert_eq!(pool.connections(&"a"), 0);
    }

    #[test]
    fn idle_connection_released_after_timeout() {
        let pool = P::new();
        let Checkout::Dial(t) = pool.checkout(&"a") else {
            panic!()
        };
        let lease = t.complete(fake(10).0);
        let id = lease.slot().id();
        drop(lease);
        let later = Instant::now() + Duration::from_secs(61);
        assert_eq!(
            pool.evict_if_idle(&"a", id, Duration::from_secs(60), later),
            IdleCheck::Evicted
        );
        assert_eq!(pool.total_connections(), 0);
        assert_eq!(
            pool.evict_if_idle(&"a", id, Duration::from_secs(60), later),
            IdleCheck::Gone
        );
    }
}

/// Random operation sequences against a model of what the pool must do. The pool is sans-IO
/// (connections are any [`Pooled`]), so no sockets and no runtime are needed.
#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    /// A connection whose peer can lower or raise SETTINGS_MAX_CONCURRENT_STREAMS and send
    /// GOAWAY at any time.
    struct Peer {
        local_cap: usize,
        peer_max: Arc<AtomicUsize>,
        usable: Arc<AtomicBool>,
    }

    impl Pooled for Peer {
        fn usable(&self) -> bool {
            self.usable.load(Ordering::Relaxed)
        }
        fn stream_cap(&self) -> usize {
            self.local_cap.min(self.peer_max.load(Ordering::Relaxed))
        }
    }

    type P = Pool<u8, Peer, String>;

    #[derive(Clone, Debug)]
    enum Op {
        Checkout(u8),
        /// A dial finishes; the peer's first SETTINGS allow `peer_max` streams.
        Complete {
            ticket: usize,
            local_cap: usize,
            peer_max: usize,
        },
        Fail(usize),
        /// The dialing task is cancelled (its ticket dropped).
        Cancel(usize),
        Release(usize),
        GoAway(usize),
        PeerSettings(usize, usize),
        /// The connection's driver saw an error or a keepalive timeout.
        Evict(usize),
        /// The driver's idle check, long after the last stream.
        IdleCheck(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            5 => (0..3u8).prop_map(Op::Checkout),
            2 => (any::<usize>(), 1..4usize, 1..5usize).prop_map(|(ticket, local_cap, peer_max)| {
                Op::Complete { ticket, local_cap, peer_max }
            }),
            1 => any::<usize>().prop_map(Op::Fail),
            1 => any::<usize>().prop_map(Op::Cancel),
            3 => any::<usize>().prop_map(Op::Release),
            1 => any::<usize>().prop_map(Op::GoAway),
            1 => (any::<usize>(), 0..5usize).prop_map(|(c, m)| Op::PeerSettings(c, m)),
            1 => any::<usize>().prop_map(Op::Evict),
            1 => any::<usize>().prop_map(Op::IdleCheck),
        ]
    }

    /// What the pool should know about one connection.
    struct ConnModel {
        key: u8,
        slot: Arc<Slot<Peer>>,
        local_cap: usize,
        peer_max: Arc<AtomicUsize>,
        usable: Arc<AtomicBool>,
        in_pool: bool,
        leases: usize,
    }

    impl ConnModel {
        fn cap(&self) -> usize {
            self.local_cap.min(self.peer_max.load(Ordering::Relaxed))
        }
        fn usable(&self) -> bool {
            self.usable.load(Ordering::Relaxed)
        }
    }

    #[derive(Default)]
    struct Model {
        conns: Vec<ConnModel>,
        /// (index into `conns`, the lease).
        leases: Vec<(usize, Lease<Peer>)>,
        tickets: Vec<(u8, DialTicket<u8, Peer, String>)>,
        /// (ticket id, the receiver a Wait handed out).
        waiters: Vec<(u64, watch::Receiver<DialOutcome<String>>)>,
        dialing: HashMap<u8, u64>,
    }

    impl Model {
        fn conn_of(&self, slot: &Arc<Slot<Peer>>) -> usize {
            self.conns
                .iter()
                .position(|c| Arc::ptr_eq(&c.slot, slot))
                .expect("the pool handed out a connection it never got")
        }

        fn waiters_of(&mut self, id: u64) -> Vec<watch::Receiver<DialOutcome<String>>> {
            let (of, rest) = std::mem::take(&mut self.waiters)
                .into_iter()
                .partition(|(t, _)| *t == id);
            self.waiters = rest;
            of.into_iter().map(|(_, rx)| rx).collect()
        }

        fn apply(&mut self, pool: &P, op: Op) {
            match op {
                Op::Checkout(key) => {
                    // The pool drops connections that cannot take streams any more here.
                    for c in self.conns.iter_mut().filter(|c| c.key == key) {
                        if c.in_pool && !c.usable() {
                            c.in_pool = false;
                        }
                    }
                    let room = self
                        .conns
                        .iter()
                        .any(|c| c.key == key && c.in_pool && c.leases < c.cap());
                    match pool.checkout(&key) {
                        Checkout::Ready(lease) => {
                            let i = self.conn_of(lease.slot());
                            let c = &mut self.conns[i];
                            assert_eq!(c.key, key, "a connection of another key");
                            assert!(c.in_pool, "an evicted connection was handed out");
                            assert!(c.usable(), "a GOAWAY'd connection was handed out");
                            assert!(
                                c.leases < c.cap(),
                                "stream {} on a connection allowing {}",
                                c.leases + 1,
                                c.cap()
                            );
                            c.leases += 1;
                            self.leases.push((i, lease));
                        }
                        Checkout::Dial(ticket) => {
                            assert!(!room, "dialing although a connection has room");
                            assert_eq!(
                                self.dialing.insert(key, ticket.id()),
                                None,
                                "a second dial in flight for one key"
                            );
                            self.tickets.push((key, ticket));
                        }
                        Checkout::Wait(rx) => {
                            assert!(!room, "waiting although a connection has room");
                            let id = *self.dialing.get(&key).expect("waiting on no dial");
                            self.waiters.push((id, rx));
                        }
                    }
                }
                Op::Complete {
                    ticket,
                    local_cap,
                    peer_max,
                } => {
                    if self.tickets.is_empty() {
                        return;
                    }
                    let (key, t) = self.tickets.swap_remove(ticket % self.tickets.len());
                    let id = t.id();
                    let peer_max = Arc::new(AtomicUsize::new(peer_max));
                    let usable = Arc::new(AtomicBool::new(true));
                    let lease = t.complete(Peer {
                        local_cap,
                        peer_max: peer_max.clone(),
                        usable: usable.clone(),
                    });
                    assert_eq!(lease.slot().id(), id);
                    assert_eq!(self.dialing.remove(&key), Some(id));
                    self.conns.push(ConnModel {
                        key,
                        slot: lease.slot().clone(),
                        local_cap,
                        peer_max,
                        usable,
                        in_pool: true,
                        leases: 1,
                    });
                    self.leases.push((self.conns.len() - 1, lease));
                    for rx in self.waiters_of(id) {
                        assert_eq!(*rx.borrow(), Some(Ok(())), "a waiter missed the dial");
                    }
                }
                Op::Fail(t) | Op::Cancel(t) if self.tickets.is_empty() => {
                    let _ = t;
                }
                Op::Fail(t) => {
                    let (key, t) = self.tickets.swap_remove(t % self.tickets.len());
                    let id = t.id();
                    t.fail("refused".into());
                    assert_eq!(self.dialing.remove(&key), Some(id));
                    for rx in self.waiters_of(id) {
                        assert_eq!(*rx.borrow(), Some(Err("refused".to_string())));
                    }
                }
                Op::Cancel(t) => {
                    let (key, t) = self.tickets.swap_remove(t % self.tickets.len());
                    let id = t.id();
                    drop(t);
                    assert_eq!(self.dialing.remove(&key), Some(id));
                    for rx in self.waiters_of(id) {
                        // The sender is gone: the waiter wakes and checks out again.
                        assert!(rx.has_changed().is_err());
                        assert_eq!(*rx.borrow(), None);
                    }
                }
                Op::Release(l) => {
                    if self.leases.is_empty() {
                        return;
                    }
                    let (i, lease) = self.leases.swap_remove(l % self.leases.len());
                    drop(lease);
                    self.conns[i].leases -= 1;
                }
                Op::GoAway(c) | Op::PeerSettings(c, _) | Op::Evict(c) | Op::IdleCheck(c)
                    if self.conns.is_empty() =>
                {
                    let _ = c;
                }
                Op::GoAway(c) => {
                    let n = self.conns.len();
                    self.conns[c % n].usable.store(false, Ordering::Relaxed);
                }
                Op::PeerSettings(c, max) => {
                    let n = self.conns.len();
                    self.conns[c % n].peer_max.store(max, Ordering::Relaxed);
                }
                Op::Evict(c) => {
                    let n = self.conns.len();
                    let c = &mut self.conns[c % n];
                    pool.evict(&c.key, c.slot.id());
                    c.in_pool = false;
                }
                Op::IdleCheck(c) => {
                    let n = self.conns.len();
                    let c = &mut self.conns[c % n];
                    let later = Instant::now() + Duration::from_secs(3600);
                    let got = pool.evict_if_idle(&c.key, c.slot.id(), Duration::ZERO, later);
                    let want = match (c.in_pool, c.leases) {
                        (false, _) => IdleCheck::Gone,
                        (true, 0) => IdleCheck::Evicted,
                        (true, _) => IdleCheck::Busy,
                    };
                    assert_eq!(got, want);
                    if want == IdleCheck::Evicted {
                        c.in_pool = false;
                    }
                }
            }
        }

        fn check(&self, pool: &P) {
            for c in &self.conns {
                assert_eq!(c.slot.active(), c.leases, "stream count drifted");
                assert_eq!(c.slot.is_closed(), !c.in_pool);
            }
            assert_eq!(
                pool.total_connections(),
                self.conns.iter().filter(|c| c.in_pool).count()
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn pool_bookkeeping_matches_the_model(ops in proptest::collection::vec(op(), 1..200)) {
            let pool = P::new();
            let mut model = Model::default();
            for op in ops {
                model.apply(&pool, op);
                model.check(&pool);
            }
            // Everything ends: streams close, dials are abandoned, idle connections age out.
            model.leases.clear();
            model.tickets.clear();
            for c in &mut model.conns {
                c.leases = 0;
            }
            model.check(&pool);
            let later = Instant::now() + Duration::from_secs(3600);
            for c in &model.conns {
                let r = pool.evict_if_idle(&c.key, c.slot.id(), Duration::ZERO, later);
                let want = if c.in_pool { IdleCheck::Evicted } else { IdleCheck::Gone };
                prop_assert_eq!(r, want);
            }
            prop_assert_eq!(pool.total_connections(), 0);
            // And no dial is left marked in flight: each key dials afresh.
            for key in 0..3u8 {
                prop_assert_eq!(pool.connections(&key), 0);
                prop_assert!(matches!(pool.checkout(&key), Checkout::Dial(_)));
            }
        }
    }
}
