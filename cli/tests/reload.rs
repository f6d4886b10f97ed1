//! SIGHUP reload through the real binary: the node's policy and the proxy's listeners change
//! for new streams while a stream that is already open runs on through the reload.

mod support;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use support::{Daemon, Pki, exchange, pattern, reverse_server, s, write};

/// A loopback echo server (each connection echoes until EOF).
fn echo_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { return };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                loop {
                    match c.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if c.write_all(&buf[..n]).is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    addr
}

fn round_trip(c: &mut TcpStream, data: &[u8]) {
    c.write_all(data).unwrap();
    let mut back = vec![0u8; data.len()];
    c.read_exact(&mut back).unwrap();
    assert_eq!(back, data);
}

fn node_toml(pki: &Pki, allow: &str) -> String {
    format!(
        "allow_targets = [\"{allow}\"]\n[identity]\ndir = \"{}\"\n[hbone]\nlisten = \"127.0.0.1:0\"\n",
        s(&pki.node)
    )
}

#[test]
fn sighup_swaps_the_node_policy_and_open_streams_survive() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let (echo, reverse) = (echo_server(), reverse_server(Duration::ZERO));
    // At first only the echo server may be reached.
    let cfg = write(
        dir.path(),
        "node.toml",
        &node_toml(&pki, &format!("{echo}")),
    );
    let node = Daemon::start(&["node", "--config", s(&cfg)]);
    let to = |target: SocketAddr| support::hbone_proxy(&pki, &node, target, &[]);
    let (p_echo, p_reverse) = (to(echo), to(reverse));

    // A stream to the echo server, open across the reload.
    let mut open = TcpStream::connect(p_echo.addr("listener")).unwrap();
    open.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    round_trip(&mut open, b"before");
    assert!(
        exchange(p_reverse.addr("listener"), b"abc").map_or(true, |b| b.is_empty()),
        "the reverse server is not allowed yet"
    );

    // The new policy allows only the reverse server.
    write(
        dir.path(),
        "node.toml",
        &node_toml(&pki, &format!("{reverse}")),
    );
    node.hangup();
    node.wait_log(
        "reloaded: new streams are judged by the new policy",
        1,
        Duration::from_secs(10),
    );
    assert_eq!(
        exchange(p_reverse.addr("listener"), b"abc").unwrap(),
        b"cba"
    );
    // New streams to the echo server are refused; the open one runs on.
    let mut fresh = TcpStream::connect(p_echo.addr("listener")).unwrap();
    fresh
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let _ = fresh.write_all(b"x");
    let mut b = [0u8; 1];
    assert!(
        matches!(fresh.read(&mut b), Ok(0) | Err(_)),
        "a new stream to echo is refused"
    );
    round_trip(&mut open, &pattern(100_000));

    // A bad file changes nothing.
    write(
        dir.path(),
        "node.toml",
        "allow_targets = [\"not a cidr\"]\n[hbone]\n",
    );
    node.hangup();
    node.wait_log(
        "reload: bad configuration, nothing changed",
        1,
        Duration::from_secs(10),
    );
    assert_eq!(
        exchange(p_reverse.addr("listener"), b"abc").unwrap(),
        b"cba"
    );
    round_trip(&mut open, b"after");
    open.shutdown(Shutdown::Write).unwrap();
}

#[test]
fn sighup_binds_new_proxy_listeners_and_stops_removed_ones() {
    let dir = tempfile::tempdir().unwrap();
    let echo = echo_server();
    let reverse = reverse_server(Duration::ZERO);
    let listener = |port: u16, target: SocketAddr| {
        format!(
            "[[listener]]\nlisten = \"127.0.0.1:{port}\"\ntarget = \"{target}\"\nvia = \"plain\"\n"
        )
    };
    // Fixed ports: a reload must keep or rebind the same addresses.
    let free = || {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let (a, b) = (free(), free());
    let cfg = write(
        dir.path(),
        "proxy.toml",
        &format!("fips = \"off\"\n{}", listener(a, echo)),
    );
    let proxy = Daemon::start(&["proxy", "--config", s(&cfg)]);
    let a_addr: SocketAddr = format!("127.0.0.1:{a}").parse().unwrap();
    let b_addr: SocketAddr = format!("127.0.0.1:{b}").parse().unwrap();
    let mut open = TcpStream::connect(a_addr).unwrap();
    open.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    round_trip(&mut open, b"before");
    assert!(TcpStream::connect(b_addr).is_err(), "b is not bound yet");

    // Add b.
    write(
        dir.path(),
        "proxy.toml",
        &format!(
            "fips = \"off\"\n{}{}",
            listener(a, echo),
            listener(b, reverse)
        ),
    );
    proxy.hangup();
    proxy.wait_log("reloaded", 1, Duration::from_secs(10));
    assert_eq!(exchange(b_addr, b"abc").unwrap(), b"cba");
    round_trip(&mut open, b"kept");

    // Remove a: it stops accepting, its open stream runs on.
    write(
        dir.path(),
        "proxy.toml",
        &format!("fips = \"off\"\n{}", listener(b, reverse)),
    );
    proxy.hangup();
    proxy.wait_log("reloaded", 2, Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(200));
    assert!(TcpStream::connect(a_addr).is_err(), "a is closed");
    round_trip(&mut open, &pattern(100_000));
    assert_eq!(exchange(b_addr, b"xyz").unwrap(), b"zyx");
    open.shutdown(Shutdown::Write).unwrap();
}
