//! HBONE CONNECT to a name through the real binary: a fixed listener whose target is
//! `localhost:PORT` sends the name in `:authority`; the node resolves it and its policy judges
//! the address it resolved to (allowed when a rule names loopback, refused otherwise).

mod support;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::time::Duration;

use support::{Daemon, Pki, s};

/// A reverse server on both 127.0.0.1 and ::1 (one dual-stack socket): whichever address
/// `localhost` resolves to first, it is there.
fn reverse_server_dual_stack() -> u16 {
    let l = TcpListener::bind("[::]:0").expect("bind [::]:0");
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { return };
            std::thread::spawn(move || {
                let mut got = Vec::new();
                if c.read_to_end(&mut got).is_ok() {
                    got.reverse();
                    let _ = c.write_all(&got);
                    let _ = c.shutdown(Shutdown::Write);
                }
            });
        }
    });
    port
}

fn exchange(addr: std::net::SocketAddr, data: &[u8]) -> Vec<u8> {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(data).unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let mut back = Vec::new();
    let _ = c.read_to_end(&mut back);
    back
}

fn proxy_to(pki: &Pki, node: &Daemon, target: &str) -> Daemon {
    let hbone = node.addr("hbone").to_string();
    Daemon::start(&[
        "proxy",
        "--listen",
        "127.0.0.1:0",
        "--target",
        target,
        "--via",
        "hbone",
        "--node",
        &hbone,
        "--node-id",
        pki.node_id,
        "--identity-dir",
        s(&pki.proxy),
    ])
}

#[test]
fn a_fixed_target_by_name_is_resolved_and_judged_by_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let port = reverse_server_dual_stack();
    let target = format!("localhost:{port}");

    // Names are refused unless the node admits them (`hbone.hostnames`, default "reject").
    let strict = Daemon::start(&[
        "node",
        "--hbone-listen",
        "127.0.0.1:0",
        "--identity-dir",
        s(&pki.node),
        "--allow-target",
        "127.0.0.1/32",
        "--allow-target",
        "::1/128",
    ]);
    let proxy = proxy_to(&pki, &strict, &target);
    assert!(exchange(proxy.addr("listener"), b"by name").is_empty());
    // The client may see the close before the proxy's log line has been written and read.
    proxy.wait_log("400 Bad Request", 1, Duration::from_secs(10));

    let open = Daemon::start(&[
        "node",
        "--hbone-listen",
        "127.0.0.1:0",
        "--identity-dir",
        s(&pki.node),
        "--allow-target",
        "127.0.0.1/32",
        "--allow-target",
        "::1/128",
        "--hostnames",
        "localhost",
    ]);
    let proxy = proxy_to(&pki, &open, &target);
    let back = exchange(proxy.addr("listener"), b"by name");
    assert_eq!(
        back,
        b"eman yb",
        "node:\n{}\nproxy:\n{}",
        open.stderr(),
        proxy.stderr()
    );
    // The node dialled (and logged) the address the name resolved to.
    open.wait_log("stream complete", 1, Duration::from_secs(10));
    assert!(
        open.stderr()
            .contains(&format!("dst.addr=127.0.0.1:{port}"))
            || open.stderr().contains(&format!("dst.addr=[::1]:{port}")),
        "the node logged the resolved address:\n{}",
        open.stderr()
    );

    // A node whose policy does not name loopback refuses the same name: it judged the address.
    let closed = Daemon::start(&[
        "node",
        "--hbone-listen",
        "127.0.0.1:0",
        "--identity-dir",
        s(&pki.node),
        "--allow-target",
        "10.0.0.0/8",
        "--hostnames",
        "allow",
    ]);
    let proxy = proxy_to(&pki, &closed, &target);
    assert!(exchange(proxy.addr("listener"), b"by name").is_empty());
    closed.wait_log("refused (policy)", 1, Duration::from_secs(10));
}
