//! SOCKS5 through the real binary, as curl uses it: `fipstun proxy` in mode = "socks5" routes
//! each CONNECT by `[[route]]` through HBONE to a node, which forwards it to a loopback HTTP
//! server. IP and domain-name requests (the proxy resolves names), and refusals with SOCKS
//! reply codes.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::Command;
use std::time::Duration;

use support::{Daemon, Pki, s, write};

/// A loopback HTTP/1.1 server on both 127.0.0.1 and ::1 (one dual-stack socket) answering
/// every request with `body`.
fn http_server(body: &'static [u8]) -> u16 {
    let l = TcpListener::bind("[::]:0").expect("bind [::]:0");
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut c) = conn else { return };
            std::thread::spawn(move || {
                let mut r = BufReader::new(c.try_clone().unwrap());
                let mut line = String::new();
                while r.read_line(&mut line).is_ok_and(|n| n > 0) {
                    if line == "\r\n" {
                        break;
                    }
                    line.clear();
                }
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = c.write_all(head.as_bytes());
                let _ = c.write_all(body);
            });
        }
    });
    port
}

fn curl(args: &[&str]) -> (bool, String, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20"])
        .args(args)
        .output()
        .expect("run curl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const BODY: &[u8] = b"hello through SOCKS5, HBONE and the node\n";

fn setup(dir: &std::path::Path) -> (Pki, Daemon, Daemon, SocketAddr) {
    let pki = Pki::new(dir);
    let node = Daemon::start(&[
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
    let cfg = write(
        dir,
        "proxy.toml",
        &format!(
            "[identity]\ndir = \"proxy\"\n\n[[listener]]\nmode = \"socks5\"\nlisten = \"127.0.0.1:0\"\n\n\
             [[route]]\ncidr = \"127.0.0.1/32\"\nnode = \"{hbone}\"\nnode_id = \"{id}\"\n\n\
             [[route]]\ncidr = \"::1/128\"\nnode = \"{hbone}\"\nnode_id = \"{id}\"\n",
            hbone = node.addr("hbone"),
            id = pki.node_id
        ),
    );
    let proxy = Daemon::start(&["proxy", "--config", s(&cfg)]);
    let socks = proxy.addr("listener");
    (pki, node, proxy, socks)
}

#[test]
fn curl_socks5_reaches_the_server_through_hbone_by_ip_and_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let (_pki, node, proxy, socks) = setup(dir.path());
    let port = http_server(BODY);
    let socks = socks.to_string();

    let (ok, out, err) = curl(&["--socks5", &socks, &format!("http://127.0.0.1:{port}/")]);
    assert!(
        ok,
        "{err}\nproxy:\n{}\nnode:\n{}",
        proxy.stderr(),
        node.stderr()
    );
    assert_eq!(out.as_bytes(), BODY);
    // The name is sent to the proxy (ATYP 3), which resolves it.
    let (ok, out, err) = curl(&[
        "--socks5-hostname",
        &socks,
        &format!("http://localhost:{port}/"),
    ]);
    assert!(ok, "{err}\nproxy:\n{}", proxy.stderr());
    assert_eq!(out.as_bytes(), BODY);
    let (ok, out, err) = curl(&["--socks5", &socks, &format!("http://[::1]:{port}/")]);
    assert!(ok, "{err}\nproxy:\n{}", proxy.stderr());
    assert_eq!(out.as_bytes(), BODY);
}

#[test]
fn destinations_without_a_route_and_bad_names_get_socks_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (_pki, _node, proxy, socks) = setup(dir.path());
    let socks = socks.to_string();
    // No route covers 192.0.2.1 (TEST-NET-1): refused before anything is dialled.
    let (ok, _, err) = curl(&["--socks5", &socks, "http://192.0.2.1:80/"]);
    assert!(!ok);
    assert!(err.contains("SOCKS5"), "{err}");
    // A name that does not resolve: host unreachable.
    let (ok, _, err) = curl(&[
        "--socks5-hostname",
        &socks,
        "http://no-such-host.invalid:80/",
    ]);
    assert!(!ok);
    assert!(err.contains("SOCKS5"), "{err}");
    // The proxy is still serving (nothing panicked), and said why it refused.
    std::thread::sleep(Duration::from_millis(200));
    let (ok, _, err) = curl(&["--socks5", &socks, "http://192.0.2.1:80/"]);
    assert!(!ok && err.contains("SOCKS5"), "{err}");
    assert!(!proxy.stderr().contains("panicked"), "{}", proxy.stderr());
}
