//! The capture acceptor's loop guard through the public API: a connection that was not
//! redirected (its original destination is the listener itself, or there is none) is refused
//! and never reaches the forwarder. The iptables capture itself is tested by the binary.
#![cfg(target_os = "linux")]

use std::time::Duration;

use fipstun_transport::policy::Policy;
use fipstun_transport::redirect::{RedirectAcceptor, original_dst};
use fipstun_transport::{Forwarder, ForwarderConfig, PlainTcp};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[tokio::test]
async fn a_connection_that_was_not_redirected_is_refused() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = RedirectAcceptor::new(listener);
    assert_eq!(acceptor.local_addr().unwrap(), addr);
    let stats = acceptor.stats_handle();
    // Even a policy allowing the listener's own address must not see the connection.
    let fwd = Forwarder::new(
        PlainTcp,
        Policy::only_to([addr]),
        ForwarderConfig::default(),
    );
    let run = {
        let fwd = fwd.clone();
        tokio::spawn(async move { fwd.run(acceptor).await })
    };

    let mut s = TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(b"hello").await;
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the connection was not closed");
    assert!(buf.is_empty());

    let st = stats.get();
    assert_eq!(st.redirected, 0, "{st:?}");
    assert_eq!(st.refused_loop + st.refused_no_original_dst, 1, "{st:?}");
    assert_eq!(fwd.stats().accepted, 0);
    run.abort();
}

#[tokio::test]
async fn original_dst_of_a_plain_connection_is_itself_or_an_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let client = TcpStream::connect(addr).await.unwrap();
    let (server, _) = listener.accept().await.unwrap();
    for s in [&client, &server] {
        if let Ok(dst) = original_dst(s) {
            // With conntrack loaded, an unredirected connection's entry names where it went.
            assert!(dst == addr || dst == s.local_addr().unwrap(), "{dst}");
        }
    }
}
