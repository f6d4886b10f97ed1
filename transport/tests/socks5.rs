//! The SOCKS5 acceptor through the public API, with a small hand-written SOCKS5 client on
//! 127.0.0.1: Socks5Acceptor -> Forwarder(PlainTcp, a policy) -> an echo server; refusals by
//! policy, malformed greetings and requests, unsupported commands, and a slow client that must
//! not hold up another.

use std::net::SocketAddr;
use std::time::Duration;

use fipstun_transport::policy::Policy;
use fipstun_transport::socks5::{Socks5Acceptor, Socks5Config, Socks5StatsHandle};
use fipstun_transport::{Forwarder, ForwarderConfig, PlainTcp};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
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

/// A SOCKS5 proxy on 127.0.0.1 whose forwarder allows `policy`.
async fn proxy(policy: Policy, config: Socks5Config) -> (SocketAddr, Socks5StatsHandle) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let acceptor = Socks5Acceptor::new(listener, config);
    let addr = acceptor.local_addr().unwrap();
    let stats = acceptor.stats_handle();
    let fwd = Forwarder::new(PlainTcp, policy, ForwarderConfig::default());
    tokio::spawn(async move { fwd.run(acceptor).await });
    (addr, stats)
}

fn connect_request(target: SocketAddr) -> Vec<u8> {
    let SocketAddr::V4(v4) = target else {
        panic!("IPv4 only in these tests")
    };
    let mut r = vec![5, 1, 0, 1];
    r.extend_from_slice(&v4.ip().octets());
    r.extend_from_slice(&v4.port().to_be_bytes());
    r
}

fn domain_request(name: &str, port: u16) -> Vec<u8> {
    let mut r = vec![5, 1, 0, 3, name.len() as u8];
    r.extend_from_slice(name.as_bytes());
    r.extend_from_slice(&port.to_be_bytes());
    r
}

/// Greet (no auth), send `request`, and return the reply code and the stream.
async fn socks(proxy: SocketAddr, request: &[u8]) -> (u8, TcpStream) {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.write_all(&[5, 1, 0]).await.unwrap();
    let mut sel = [0u8; 2];
    s.read_exact(&mut sel).await.unwrap();
    assert_eq!(sel, [5, 0], "method selection");
    s.write_all(request).await.unwrap();
    let mut head = [0u8; 4];
    s.read_exact(&mut head).await.unwrap();
    assert_eq!(head[0], 5);
    let rest = match head[3] {
        1 => 4 + 2,
        4 => 16 + 2,
        other => panic!("reply ATYP {other}"),
    };
    let mut bound = vec![0u8; rest];
    s.read_exact(&mut bound).await.unwrap();
    (head[1], s)
}

async fn echoes(s: &mut TcpStream) {
    s.write_all(b"hello through socks").await.unwrap();
    let mut back = [0u8; 19];
    s.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"hello through socks");
}

/// Read until EOF or a reset; what came before it.
async fn until_closed(s: &mut TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut all)).await;
    all
}

#[tokio::test]
async fn connect_by_address_and_by_name_reaches_the_echo_server() {
    let echo = echo_server().await;
    let (addr, stats) = proxy(Policy::only_to([echo]), Socks5Config::default()).await;

    let (code, mut s) = socks(addr, &connect_request(echo)).await;
    assert_eq!(code, 0);
    echoes(&mut s).await;

    // By name: the proxy resolves it, the policy sees 127.0.0.1.
    let (code, mut s) = socks(addr, &domain_request("127.0.0.1", echo.port())).await;
    assert_eq!(code, 0);
    echoes(&mut s).await;
    let localhost = fipstun_transport::Target::parse(&format!("localhost:{}", echo.port()))
        .unwrap()
        .resolve()
        .await
        .unwrap();
    // Where `localhost` is 127.0.0.1 first (this machine's /etc/hosts), it reaches the echo.
    if localhost[0] == echo {
        let (code, mut s) = socks(addr, &domain_request("localhost", echo.port())).await;
        assert_eq!(code, 0);
        echoes(&mut s).await;
    }
    assert!(stats.get().completed >= 2, "{:?}", stats.get());
}

#[tokio::test]
async fn bytes_sent_with_the_request_are_not_lost() {
    let echo = echo_server().await;
    let (addr, _) = proxy(Policy::only_to([echo]), Socks5Config::default()).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    // Greeting, request and payload in one write, without waiting for any answer.
    let mut all = vec![5, 1, 0];
    all.extend(connect_request(echo));
    all.extend_from_slice(b"early");
    s.write_all(&all).await.unwrap();
    let mut answers = [0u8; 2 + 10 + 5];
    s.read_exact(&mut answers).await.unwrap();
    assert_eq!(&answers[..2], &[5, 0]);
    assert_eq!(answers[3], 0, "succeeded");
    assert_eq!(&answers[12..], b"early");
}

#[tokio::test]
async fn a_target_the_policy_denies_is_answered_not_allowed() {
    let echo = echo_server().await;
    let (addr, _) = proxy(Policy::deny_all(), Socks5Config::default()).await;
    let (code, mut s) = socks(addr, &connect_request(echo)).await;
    assert_eq!(code, 2, "connection not allowed by ruleset");
    assert!(until_closed(&mut s).await.is_empty());
}

#[tokio::test]
async fn an_unreachable_target_is_answered_connection_refused() {
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gone = closed.local_addr().unwrap();
    drop(closed);
    let (addr, _) = proxy(Policy::only_to([gone]), Socks5Config::default()).await;
    let (code, _) = socks(addr, &connect_request(gone)).await;
    assert_eq!(code, 5);
}

#[tokio::test]
async fn an_unresolvable_name_is_answered_host_unreachable() {
    let (addr, stats) = proxy(Policy::deny_all(), Socks5Config::default()).await;
    let (code, _) = socks(addr, &domain_request("nowhere.invalid", 80)).await;
    assert_eq!(code, 4);
    assert_eq!(stats.get().unresolved, 1);
}

#[tokio::test]
async fn a_bad_version_gets_no_acceptable_method() {
    let (addr, stats) = proxy(Policy::deny_all(), Socks5Config::default()).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&[4, 1, 0, 80, 127, 0, 0, 1, 0]).await.unwrap();
    assert_eq!(until_closed(&mut s).await, vec![5, 0xff]);
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&[5, 1, 2]).await.unwrap(); // only username/password
    assert_eq!(until_closed(&mut s).await, vec![5, 0xff]);
    let bad = stats.get().bad_messages;
    assert!(bad.contains(&("bad_version", 1)), "{bad:?}");
    assert!(bad.contains(&("no_acceptable_method", 1)), "{bad:?}");
}

#[tokio::test]
async fn bind_is_answered_command_not_supported() {
    let echo = echo_server().await;
    let (addr, stats) = proxy(Policy::only_to([echo]), Socks5Config::default()).await;
    let mut bind = connect_request(echo);
    bind[1] = 2;
    let (code, mut s) = socks(addr, &bind).await;
    assert_eq!(code, 7);
    assert!(until_closed(&mut s).await.is_empty());
    let mut bad_atyp = connect_request(echo);
    bad_atyp[3] = 9;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&[5, 1, 0]).await.unwrap();
    s.write_all(&bad_atyp).await.unwrap();
    let answer = until_closed(&mut s).await;
    assert_eq!(&answer[..4], &[5, 0, 5, 8], "{answer:?}");
    let bad = stats.get().bad_messages;
    assert!(bad.contains(&("unsupported_command", 1)), "{bad:?}");
    assert!(bad.contains(&("bad_address_type", 1)), "{bad:?}");
}

#[tokio::test]
async fn a_slow_client_does_not_block_another_and_times_out() {
    let echo = echo_server().await;
    let config = Socks5Config::default().with_handshake_timeout(Duration::from_millis(500));
    let (addr, stats) = proxy(Policy::only_to([echo]), config).await;
    // Connects, greets half-way, then says nothing.
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(&[5]).await.unwrap();
    let fast = tokio::time::timeout(Duration::from_millis(400), async {
        let (code, mut s) = socks(addr, &connect_request(echo)).await;
        assert_eq!(code, 0);
        echoes(&mut s).await;
    });
    fast.await.expect("a slow handshake held up another");
    assert!(until_closed(&mut slow).await.is_empty());
    // The handshake task counts the timeout just after it closed the connection.
    for _ in 0..100 {
        if stats.get().timed_out == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(stats.get().timed_out, 1);
}

#[tokio::test]
async fn handshakes_over_the_limit_are_closed_at_once() {
    let config = Socks5Config::default().with_max_handshakes(1);
    let (addr, stats) = proxy(Policy::deny_all(), config).await;
    let mut first = TcpStream::connect(addr).await.unwrap();
    first.write_all(&[5]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut second = TcpStream::connect(addr).await.unwrap();
    let _ = second.write_all(&[5, 1, 0]).await;
    assert!(until_closed(&mut second).await.is_empty());
    assert_eq!(stats.get().over_limit, 1);
}
