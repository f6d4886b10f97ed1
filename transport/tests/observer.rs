//! The forwarder's stream records through the public API, over the in-memory tunnel: one
//! record per stream, with byte counts each way, the dialled address and times; refusals by
//! policy and by a failed dial; the idle timeout as an error.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use fipstun_identity::spiffe::SpiffeId;
use fipstun_transport::conformance::Upstreams;
use fipstun_transport::memory::memory_tunnel;
use fipstun_transport::policy::{Policy, Rule};
use fipstun_transport::{
    Forwarder, ForwarderConfig, PeerIdentity, PlainTcp, Refusal, StreamObserver, StreamRecord,
    StreamResult, Target, Transport,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn web() -> PeerIdentity {
    PeerIdentity::Spiffe(SpiffeId::parse("spiffe://a.test/ns/prod/sa/web").unwrap())
}

/// Keeps every record, and wakes a waiter per record.
#[derive(Default)]
struct Records {
    seen: Mutex<Vec<StreamRecord>>,
    added: tokio::sync::Notify,
}

impl StreamObserver for Records {
    fn stream_ended(&self, record: &StreamRecord) {
        self.seen.lock().unwrap().push(record.clone());
        self.added.notify_waiters();
    }
}

impl Records {
    /// Wait until `n` records are in, at most 5 s.
    async fn wait_for(&self, n: usize) -> Vec<StreamRecord> {
        let wait = async {
            loop {
                let added = self.added.notified();
                if self.seen.lock().unwrap().len() >= n {
                    return;
                }
                added.await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), wait)
            .await
            .expect("records arrive");
        self.seen.lock().unwrap().clone()
    }
}

fn start(
    policy: Policy,
    config: ForwarderConfig,
) -> (fipstun_transport::memory::MemoryTransport, Arc<Records>) {
    let records = Arc::new(Records::default());
    let (client, acceptor) = memory_tunnel(web());
    let fwd = Forwarder::new(PlainTcp, policy, config.with_observer(records.clone()));
    tokio::spawn(async move { fwd.run(acceptor).await });
    (client, records)
}

#[tokio::test]
async fn a_finished_stream_reports_bytes_each_way_and_times() {
    let u = Upstreams::start().await.unwrap();
    let (client, records) = start(u.policy(), ForwarderConfig::default());
    let target = Target::new(u.echo);
    let mut s = client.connect(&target).await.unwrap();
    s.write_all(&[7u8; 1000]).await.unwrap();
    s.shutdown().await.unwrap();
    let mut back = Vec::new();
    s.read_to_end(&mut back).await.unwrap();
    assert_eq!(back.len(), 1000);
    drop(s);

    let r = records.wait_for(1).await;
    assert_eq!(r.len(), 1, "{r:?}");
    let r = &r[0];
    assert_eq!(r.result, StreamResult::Ok);
    assert_eq!(r.peer, web());
    assert_eq!(r.target, target);
    assert_eq!(
        r.dialled,
        Some(u.echo),
        "plain TCP reports the address it dialled"
    );
    // Sent: peer -> target; received: target -> peer.
    assert_eq!((r.bytes_sent, r.bytes_received), (1000, 1000));
    assert!(r.setup < Duration::from_secs(5));
    assert!(r.refusal_detail.is_none());
}

#[tokio::test]
async fn a_policy_refusal_is_reported_with_its_verdict() {
    let u = Upstreams::start().await.unwrap();
    let (client, records) = start(Policy::deny_all(), ForwarderConfig::default());
    assert!(client.connect(&Target::new(u.echo)).await.is_err());
    let r = records.wait_for(1).await;
    let r = &r[0];
    assert_eq!(r.result, StreamResult::Refused(Refusal::Policy));
    assert_eq!((r.bytes_sent, r.bytes_received), (0, 0));
    assert_eq!(r.duration, Duration::ZERO);
    assert_eq!(r.dialled, None);
    assert!(r.refusal_detail.is_some());
}

#[tokio::test]
async fn a_failed_dial_is_an_unreachable_refusal() {
    // A port nothing listens on: bind one and let it go.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed = l.local_addr().unwrap();
    drop(l);
    let policy = Policy::new(vec![Rule::allow(["*"], ["127.0.0.0/8"]).unwrap()]);
    let (client, records) = start(policy, ForwarderConfig::default());
    assert!(client.connect(&Target::new(closed)).await.is_err());
    let r = records.wait_for(1).await;
    assert_eq!(r[0].result, StreamResult::Refused(Refusal::Unreachable));
    assert!(
        r[0].refusal_detail
            .as_deref()
            .unwrap_or("")
            .contains("127.0.0.1")
    );
}

#[tokio::test]
async fn an_idle_stream_is_reported_as_an_error() {
    let u = Upstreams::start().await.unwrap();
    let config = ForwarderConfig::default().with_idle_timeout(Duration::from_millis(200));
    let (client, records) = start(u.policy(), config);
    let mut s = client.connect(&Target::new(u.echo)).await.unwrap();
    s.write_all(b"hi").await.unwrap();
    let mut b = [0u8; 2];
    s.read_exact(&mut b).await.unwrap();
    let r = records.wait_for(1).await;
    match &r[0].result {
        StreamResult::Error(e) => assert!(e.contains("idle"), "{e}"),
        other => panic!("expected an idle error, got {other:?}"),
    }
    assert_eq!((r[0].bytes_sent, r[0].bytes_received), (2, 2));
    assert!(r[0].duration >= Duration::from_millis(200));
}

#[test]
fn a_config_with_an_observer_is_still_clone_and_debug() {
    let c = ForwarderConfig::default().with_observer(Arc::new(Records::default()));
    let text = format!("{:?}", c.clone());
    assert!(text.contains("StreamObserver"), "{text}");
    // The trait's default knows no address.
    assert_eq!(PlainTcp.security().backend, "plain-tcp");
}
