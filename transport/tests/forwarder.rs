//! The one forwarder through the public API, over the in-memory tunnel: the conformance suite
//! with a policy, policy refusals before any dial, limits per listener and per peer, the dial
//! timeout, the idle timeout, accept errors that never end the loop, and shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use fipstun_identity::spiffe::SpiffeId;
use fipstun_transport::conformance::{self, Upstreams};
use fipstun_transport::memory::{MemoryAcceptor, MemoryPending, MemoryTransport, memory_tunnel};
use fipstun_transport::policy::{Policy, Rule};
use fipstun_transport::{
    Acceptor, Forwarder, ForwarderConfig, PeerIdentity, PlainTcp, Target, Transport, TransportError,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

fn web() -> PeerIdentity {
    PeerIdentity::Spiffe(SpiffeId::parse("spiffe://a.test/ns/prod/sa/web").unwrap())
}

fn start(
    policy: Policy,
    config: ForwarderConfig,
) -> (
    MemoryTransport,
    Forwarder<PlainTcp>,
    tokio::task::JoinHandle<()>,
) {
    let (client, acceptor) = memory_tunnel(web());
    let fwd = Forwarder::new(PlainTcp, policy, config);
    let run = {
        let fwd = fwd.clone();
        tokio::spawn(async move {
            let _ = fwd.run(acceptor).await;
        })
    };
    (client, fwd, run)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_conformance_suite_passes_through_the_forwarder() {
    let u = Upstreams::start().await.unwrap();
    let (client, fwd, _run) = start(u.policy(), ForwarderConfig::default());
    conformance::run_forwarded(Arc::new(client), &u)
        .await
        .unwrap();
    let s = fwd.stats();
    assert!(s.forwarded >= 100, "{s:?}");
    assert_eq!(s.refused_policy, 1, "the forbidden target: {s:?}");
    assert!(s.bytes_from_peer >= 256 << 20, "{s:?}");
}

#[tokio::test]
async fn no_rule_refuses_everything_before_dialing() {
    // A listener that counts connections: a refused stream must never reach it.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let dialled = Arc::new(AtomicUsize::new(0));
    let d = dialled.clone();
    tokio::spawn(async move {
        while listener.accept().await.is_ok() {
            d.fetch_add(1, Ordering::SeqCst);
        }
    });
    let (client, fwd, _run) = start(Policy::deny_all(), ForwarderConfig::default());
    let err = client.connect(&Target::new(addr)).await.unwrap_err();
    assert!(
        matches!(err, TransportError::Refused { ref reason, .. } if reason == "policy"),
        "{err:?}"
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        dialled.load(Ordering::SeqCst),
        0,
        "no SYN for a refused stream"
    );
    assert_eq!(fwd.stats().refused_policy, 1);
}

#[tokio::test]
async fn wide_rules_do_not_reach_loopback_but_naming_it_does() {
    let u = Upstreams::start().await.unwrap();
    let wide = Policy::new(vec![Rule::allow(["*"], ["0.0.0.0/0"]).unwrap()]);
    let (client, _fwd, _run) = start(wide, ForwarderConfig::default());
    assert!(client.connect(&Target::new(u.echo)).await.is_err());
    let named = Policy::new(vec![Rule::allow(["*"], ["127.0.0.0/8"]).unwrap()]);
    let (client, _fwd, _run) = start(named, ForwarderConfig::default());
    conformance::echo(&client, &u).await.unwrap();
}

#[tokio::test]
async fn rules_judge_the_peer_identity() {
    let u = Upstreams::start().await.unwrap();
    let only_db = Policy::new(vec![
        Rule::allow(["spiffe://a.test/ns/prod/sa/db"], ["127.0.0.0/8"]).unwrap(),
    ]);
    let (client, _fwd, _run) = start(only_db, ForwarderConfig::default());
    assert!(
        client.connect(&Target::new(u.echo)).await.is_err(),
        "web is not db"
    );
    client
        .set_peer(PeerIdentity::Spiffe(
            SpiffeId::parse("spiffe://a.test/ns/prod/sa/db").unwrap(),
        ))
        .await;
    conformance::echo(&client, &u).await.unwrap();
}

#[tokio::test]
async fn per_peer_limit_refuses_the_excess_and_frees_slots() {
    let u = Upstreams::start().await.unwrap();
    let config = ForwarderConfig::default().with_max_streams(100, 2);
    let (client, fwd, _run) = start(u.policy(), config);
    let a = client.connect(&Target::new(u.echo)).await.unwrap();
    let b = client.connect(&Target::new(u.echo)).await.unwrap();
    let err = client.connect(&Target::new(u.echo)).await.unwrap_err();
    assert!(
        matches!(err, TransportError::Refused { ref reason, .. } if reason == "overloaded"),
        "{err:?}"
    );
    // Another identity still gets in: the limit is per peer.
    client
        .set_peer(PeerIdentity::Spiffe(
            SpiffeId::parse("spiffe://a.test/ns/prod/sa/other").unwrap(),
        ))
        .await;
    let c = client.connect(&Target::new(u.echo)).await.unwrap();
    drop((a, b, c));
    client.set_peer(web()).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while fwd.stats().active > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    conformance::echo(&client, &u).await.unwrap();
    assert_eq!(fwd.stats().refused_overloaded, 1);
}

#[tokio::test]
async fn total_limit_refuses_every_peer() {
    let u = Upstreams::start().await.unwrap();
    let (client, _fwd, _run) = start(
        u.policy(),
        ForwarderConfig::default().with_max_streams(1, 1),
    );
    let _held = client.connect(&Target::new(u.echo)).await.unwrap();
    client
        .set_peer(PeerIdentity::Spiffe(
            SpiffeId::parse("spiffe://a.test/ns/prod/sa/other").unwrap(),
        ))
        .await;
    assert!(client.connect(&Target::new(u.echo)).await.is_err());
}

/// A dialer whose connect never completes (a target that drops SYNs).
struct Hang;

impl Transport for Hang {
    type Stream = tokio::net::TcpStream;
    async fn connect(&self, _t: &Target) -> Result<Self::Stream, TransportError> {
        std::future::pending().await
    }
    fn security(&self) -> fipstun_transport::SecurityInfo {
        PlainTcp.security()
    }
}

#[tokio::test]
async fn a_dial_that_hangs_is_refused_at_the_timeout() {
    let (client, acceptor) = memory_tunnel(web());
    let policy = Policy::new(vec![Rule::allow(["*"], ["127.0.0.0/8"]).unwrap()]);
    let fwd = Forwarder::new(
        Hang,
        policy,
        ForwarderConfig::default().with_dial_timeout(Duration::from_millis(200)),
    );
    let f = fwd.clone();
    tokio::spawn(async move { f.run(acceptor).await });
    let started = std::time::Instant::now();
    let target = Target::new("127.0.0.1:9".parse().unwrap());
    let err = client.connect(&target).await.unwrap_err();
    assert!(matches!(err, TransportError::Unreachable { .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(fwd.stats().refused_unreachable, 1);
}

#[tokio::test]
async fn an_idle_stream_is_closed() {
    let u = Upstreams::start().await.unwrap();
    let config = ForwarderConfig::default().with_idle_timeout(Duration::from_millis(300));
    let (client, fwd, _run) = start(u.policy(), config);
    let mut s = client.connect(&Target::new(u.echo)).await.unwrap();
    s.write_all(b"hi").await.unwrap();
    let mut b = [0u8; 2];
    s.read_exact(&mut b).await.unwrap();
    // Nothing more in either direction: the forwarder closes the stream.
    let mut rest = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest))
        .await
        .expect("closed within the idle timeout")
        .unwrap_or(0);
    assert_eq!(n, 0);
    assert_eq!(fwd.stats().idle_closed, 1);
}

/// An acceptor whose first accepts fail the way an exhausted fd table does.
struct Flaky {
    errors_left: usize,
    inner: MemoryAcceptor,
}

impl Acceptor for Flaky {
    type Pending = MemoryPending;
    async fn accept(&mut self) -> Result<MemoryPending, TransportError> {
        if self.errors_left > 0 {
            self.errors_left -= 1;
            return Err(TransportError::Io(std::io::Error::from_raw_os_error(24))); // EMFILE
        }
        self.inner.accept().await
    }
}

#[tokio::test]
async fn accept_errors_back_off_and_never_end_the_loop() {
    let u = Upstreams::start().await.unwrap();
    let (client, acceptor) = memory_tunnel(web());
    let fwd = Forwarder::new(PlainTcp, u.policy(), ForwarderConfig::default());
    let f = fwd.clone();
    let run = tokio::spawn(async move {
        f.run(Flaky {
            errors_left: 5,
            inner: acceptor,
        })
        .await
    });
    conformance::echo(&client, &u).await.unwrap();
    assert_eq!(fwd.stats().accept_errors, 5);
    assert!(!run.is_finished());
    // Shutdown ends the loop with Ok, and later streams are not served.
    fwd.shutdown();
    assert!(run.await.unwrap().is_ok());
}

#[tokio::test]
async fn a_closed_acceptor_ends_the_loop() {
    let (client, acceptor) = memory_tunnel(web());
    drop(client);
    let fwd = Forwarder::new(PlainTcp, Policy::deny_all(), ForwarderConfig::default());
    assert!(matches!(
        fwd.run(acceptor).await,
        Err(TransportError::Closed)
    ));
}

#[tokio::test]
async fn drain_waits_for_open_streams() {
    let u = Upstreams::start().await.unwrap();
    let (client, fwd, _run) = start(u.policy(), ForwarderConfig::default());
    let mut s = client.connect(&Target::new(u.echo)).await.unwrap();
    fwd.shutdown();
    assert!(
        !fwd.drained(Duration::from_millis(100)).await,
        "one stream is open"
    );
    // The open stream still works during the drain.
    s.write_all(b"x").await.unwrap();
    let mut b = [0u8; 1];
    s.read_exact(&mut b).await.unwrap();
    drop(s);
    assert!(fwd.drained(Duration::from_secs(5)).await);
}

#[tokio::test]
async fn tcp_acceptor_relays_to_its_fixed_target() {
    let u = Upstreams::start().await.unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let relay: SocketAddr = listener.local_addr().unwrap();
    let acceptor = fipstun_transport::TcpAcceptor::new(listener, Target::new(u.echo));
    let only_echo = Policy::new(vec![
        Rule::allow(["*"], [format!("127.0.0.1/32:{}", u.echo.port())]).unwrap(),
    ]);
    let fwd = Forwarder::new(PlainTcp, only_echo, ForwarderConfig::default());
    let f = fwd.clone();
    tokio::spawn(async move { f.run(acceptor).await });
    let mut s = tokio::net::TcpStream::connect(relay).await.unwrap();
    s.write_all(b"through the relay").await.unwrap();
    s.shutdown().await.unwrap();
    let mut back = Vec::new();
    s.read_to_end(&mut back).await.unwrap();
    assert_eq!(back, b"through the relay");
}

/// An echo server on the address `localhost` resolves to first (what the forwarder dials).
async fn echo_on_localhost() -> SocketAddr {
    let first = Target::parse("localhost:1")
        .unwrap()
        .resolve()
        .await
        .unwrap()[0];
    let listener = TcpListener::bind((first.ip(), 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_name_is_resolved_and_the_policy_judges_its_address() {
    let echo = echo_on_localhost().await;
    let by_name = Target::parse(&format!("localhost:{}", echo.port())).unwrap();

    // Allowed by a rule naming the loopback address the name resolves to.
    let (client, fwd, _run) = start(Policy::only_to([echo]), ForwarderConfig::default());
    let mut s = client.connect(&by_name).await.unwrap();
    s.write_all(b"ping").await.unwrap();
    let mut back = [0u8; 4];
    s.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"ping");
    assert_eq!(fwd.stats().forwarded, 1);

    // Loopback is protected: with a rule for another port only, the resolved address is denied.
    let other = SocketAddr::new(echo.ip(), echo.port().wrapping_add(1).max(1));
    let (client, fwd, _run) = start(Policy::only_to([other]), ForwarderConfig::default());
    assert!(client.connect(&by_name).await.is_err());
    assert_eq!(fwd.stats().refused_policy, 1);

    // A name that does not resolve is unreachable, never judged.
    let (client, fwd, _run) = start(Policy::only_to([echo]), ForwarderConfig::default());
    let nowhere = Target::parse("nowhere.invalid:80").unwrap();
    assert!(client.connect(&nowhere).await.is_err());
    let s = fwd.stats();
    assert_eq!((s.refused_unreachable, s.refused_policy), (1, 0), "{s:?}");
}

#[tokio::test]
async fn without_resolution_a_policy_denies_a_name() {
    let echo = echo_on_localhost().await;
    let by_name = Target::parse(&format!("localhost:{}", echo.port())).unwrap();
    let config = ForwarderConfig::default().with_resolve_names(false);
    let (client, fwd, _run) = start(Policy::only_to([echo]), config);
    assert!(client.connect(&by_name).await.is_err());
    assert_eq!(fwd.stats().refused_policy, 1);
    let verdict =
        fipstun_transport::Authorize::authorize(&Policy::only_to([echo]), &web(), &by_name);
    assert!(!verdict.is_allowed());
    assert!(verdict.to_string().contains("not resolved"), "{verdict}");
}

/// A dialer whose connect future is large (a 32 KiB buffer held across an await), as a
/// tunnel's dial with its handshakes is.
struct BulkyDialer;

impl Transport for BulkyDialer {
    type Stream = tokio::net::TcpStream;

    async fn connect(&self, target: &Target) -> Result<Self::Stream, TransportError> {
        let scratch = [7u8; 32 * 1024];
        tokio::task::yield_now().await;
        let addr = target.socket_addr().expect("an address");
        let s = tokio::net::TcpStream::connect(addr).await?;
        assert_eq!(std::hint::black_box(scratch)[0], 7);
        Ok(s)
    }

    fn security(&self) -> fipstun_transport::SecurityInfo {
        PlainTcp.security()
    }
}

#[tokio::test]
async fn a_held_stream_does_not_keep_the_dials_state() {
    // A task keeps room for its future's largest state until it ends: a forwarded stream's
    // task must not carry its dialer's connect future (boxed and freed once the stream is
    // up), or every idle stream costs the size of a dial.
    let (client, mut acceptor) = memory_tunnel(web());
    let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let connecting = tokio::spawn(async move { client.connect(&Target::new(addr)).await });
    let pending = acceptor.accept().await.unwrap();
    let fwd = Forwarder::new(BulkyDialer, Policy::deny_all(), ForwarderConfig::default());
    let handle = fwd.handle(pending);
    let size = std::mem::size_of_val(&handle);
    assert!(
        size < 8 * 1024,
        "the per-stream future is {size} bytes: the dial's 32 KiB state is inline"
    );
    drop(handle);
    connecting.abort();
}
