//! Transparent capture, as in ztunnel's slot, through the real binary in two network
//! namespaces this test makes (a client and a server, joined by a veth pair whose addresses
//! exist only there). In the client namespace, iptables' nat OUTPUT chain REDIRECTs TCP to the
//! server's address into `fipstun proxy` (mode = "redirect", port 15001), except the proxy's
//! own traffic (`-m owner ! --uid-owner 1337`: the proxy runs as uid 1337). curl and iperf3
//! know nothing of it: their connections go proxy -> HBONE (mTLS, same IP, port 15008) -> the
//! node in the server namespace -> the server. The server sees the node's address as the
//! client, which proves the path. The same commands are `examples/capture.sh` for users.
//!
//! Needs root and namespaces (CI has both); where `ip netns add` is refused outside CI, the test
//! says so loudly and returns.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{Daemon, Pki, s, write};

/// The proxy's uid: the one the iptables rule exempts (Istio uses 1337 for its proxies too).
const PROXY_UID: &str = "1337";

/// Namespaces, links and processes the test made; removed on drop, also when the test fails.
struct Lab {
    client: String,
    server: String,
    children: Vec<std::process::Child>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in [&self.client, &self.server] {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn run(args: &[&str]) -> Result<String, String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{args:?}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{args:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn in_ns(ns: &str, args: &[&str]) -> Result<String, String> {
    let mut v = vec!["ip", "netns", "exec", ns];
    v.extend_from_slice(args);
    run(&v)
}

/// A background process in `ns`, its stderr to `log`.
fn spawn_in(ns: &str, args: &[&str], log: &Path, cwd: &Path) -> std::process::Child {
    Command::new("ip")
        .args(["netns", "exec", ns])
        .args(args)
        .current_dir(cwd)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

fn wait_port(ns: &str, addr: &str) {
    let start = Instant::now();
    let (host, port) = addr.rsplit_once(':').unwrap();
    let probe = format!("import socket; socket.create_connection(('{host}', {port}), timeout=1)");
    while in_ns(ns, &["python3", "-c", &probe]).is_err() {
        assert!(start.elapsed() < Duration::from_secs(20), "{addr} never listened in {ns}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn curl_and_iperf3_are_captured_into_hbone_without_knowing() {
    let pid = std::process::id();
    let x = 1 + pid % 200;
    let (client_ip, server_ip) = (format!("10.77.{x}.1"), format!("10.77.{x}.2"));
    let mut lab = Lab {
        client: format!("fcapc{pid}"),
        server: format!("fcaps{pid}"),
        children: Vec::new(),
    };
    if let Err(e) = run(&["ip", "netns", "add", &lab.client]) {
        let denied = e.contains("Operation not permitted") || e.contains("Permission denied");
        assert!(
            denied && std::env::var_os("CI").is_none(),
            "cannot create a network namespace: {e}"
        );
        eprintln!(
            "\n!!!!!!!! SKIPPING the capture test: cannot create a network namespace: {e}\n\
             !!!!!!!! (needs root with CAP_SYS_ADMIN; CI has it)\n"
        );
        return;
    }
    run(&["ip", "netns", "add", &lab.server]).unwrap();
    let (vc, vs) = (format!("fcv{pid}c"), format!("fcv{pid}s"));
    run(&["ip", "link", "add", &vc, "netns", &lab.client, "type", "veth", "peer", "name", &vs, "netns", &lab.server]).unwrap();
    for (ns, dev, ip) in [(&lab.client, &vc, &client_ip), (&lab.server, &vs, &server_ip)] {
        in_ns(ns, &["ip", "addr", "add", &format!("{ip}/24"), "dev", dev]).unwrap();
        in_ns(ns, &["ip", "link", "set", dev, "up"]).unwrap();
        in_ns(ns, &["ip", "link", "set", "lo", "up"]).unwrap();
    }

    // Identities; the proxy's files belong to its uid.
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    run(&["chmod", "755", s(dir.path())]).unwrap();
    run(&["chown", "-R", &format!("{PROXY_UID}:{PROXY_UID}"), s(&pki.proxy)]).unwrap();

    // The server namespace: an HTTP server with a 4 MiB file, iperf3, and the node.
    let www = dir.path().join("www");
    std::fs::create_dir(&www).unwrap();
    let blob: Vec<u8> = (0..4 << 20).map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(www.join("blob"), &blob).unwrap();
    let http_log = dir.path().join("http.log");
    lab.children.push(spawn_in(
        &lab.server,
        &["python3", "-m", "http.server", "8080", "--bind", &server_ip],
        &http_log,
        &www,
    ));
    lab.children.push(spawn_in(
        &lab.server,
        &["iperf3", "-s", "-B", &server_ip, "-p", "5201"],
        &dir.path().join("iperf3.log"),
        dir.path(),
    ));
    let hbone = format!("{server_ip}:15008");
    let allow = format!("{server_ip}/32:8080,5201");
    let ns_exec = ["ip", "netns", "exec"];
    let node = Daemon::start_under(
        &[ns_exec[0], ns_exec[1], ns_exec[2], &lab.server],
        &["node", "--hbone-listen", &hbone, "--identity-dir", s(&pki.node), "--allow-target", &allow],
        &[],
    );
    wait_port(&lab.server, &format!("{server_ip}:8080"));
    wait_port(&lab.server, &format!("{server_ip}:5201"));

    // The client namespace: the proxy as uid 1337, then the capture rule that exempts it.
    let proxy_cfg = write(
        dir.path(),
        "proxy.toml",
        &format!(
            "[identity]\ndir = \"proxy\"\n\n[[listener]]\nmode = \"redirect\"\n\n\
             [[route]]\ncidr = \"10.77.{x}.0/24\"\nnode = \"same-ip\"\nnode_id = \"{}\"\n",
            pki.node_id
        ),
    );
    let proxy = Daemon::start_under(
        &[
            ns_exec[0], ns_exec[1], ns_exec[2], &lab.client, "setpriv", "--reuid", PROXY_UID,
            "--regid", PROXY_UID, "--clear-groups",
        ],
        &["proxy", "--config", s(&proxy_cfg)],
        &[],
    );
    assert!(proxy.ready.contains("listener=0.0.0.0:15001"), "{}", proxy.ready);
    in_ns(
        &lab.client,
        &[
            "iptables", "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-d", &format!("10.77.{x}.0/24"),
            "-m", "owner", "!", "--uid-owner", PROXY_UID, "-j", "REDIRECT", "--to-ports", "15001",
        ],
    )
    .unwrap();

    // curl: the file arrives whole, and the server saw the node (not the client) connect.
    let got = dir.path().join("got");
    let code = in_ns(
        &lab.client,
        &[
            "curl", "-sS", "--max-time", "30", "-o", s(&got), "-w", "%{http_code}",
            &format!("http://{server_ip}:8080/blob"),
        ],
    )
    .unwrap_or_else(|e| panic!("{e}\nproxy:\n{}\nnode:\n{}", proxy.stderr(), node.stderr()));
    assert_eq!(code.trim(), "200");
    assert!(std::fs::read(&got).unwrap() == blob, "the file arrived changed");
    let http = std::fs::read_to_string(&http_log).unwrap();
    assert!(
        http.contains(&format!("{server_ip} - -")) && !http.contains(&format!("{client_ip} - -")),
        "the server should see the node ({server_ip}) as its client:\n{http}"
    );

    // iperf3, 3 s: its control and data connections are both captured.
    let report = in_ns(
        &lab.client,
        &["iperf3", "-c", &server_ip, "-p", "5201", "-t", "3", "-J"],
    )
    .unwrap_or_else(|e| panic!("{e}\nproxy:\n{}", proxy.stderr()));
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    let received = report["end"]["sum_received"]["bytes"].as_f64().unwrap_or(0.0);
    let bits = report["end"]["sum_received"]["bits_per_second"].as_f64().unwrap_or(0.0);
    assert!(received > 1e6, "iperf3 moved {received} bytes: {report}");
    eprintln!("iperf3 through capture -> HBONE -> node: {:.2} Gbit/s", bits / 1e9);

    // Without the exemption the proxy's own HBONE dial would be captured back into it: a
    // connection whose original destination is the proxy's listener is refused, not looped.
    let looped = in_ns(
        &lab.client,
        &["curl", "-sS", "--max-time", "5", &format!("http://{client_ip}:15001/")],
    );
    assert!(looped.is_err(), "a stream to the capture port itself must be refused");
    assert!(
        proxy.stderr().contains("refus") || proxy.stderr().contains("loop"),
        "{}",
        proxy.stderr()
    );
    drop(proxy);
    drop(node);
}
