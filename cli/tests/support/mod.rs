//! What the node/proxy tests share: a PKI made with `fipstun ca`, child processes that are
//! killed when dropped (even when a test fails), loopback upstream servers, and a metrics
//! scrape.
#![allow(dead_code)] // each test binary uses a different part

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a child may take to print its ready line (debug builds start slowly on a busy
/// machine).
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Run `fipstun args` to completion.
pub(crate) fn fipstun(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fipstun"))
        .args(args)
        .output()
        .expect("run fipstun")
}

/// A CA and two SVIDs (node and proxy) written by `fipstun ca init` and `fipstun ca issue`.
pub(crate) struct Pki {
    pub(crate) node: PathBuf,
    pub(crate) proxy: PathBuf,
    pub(crate) node_id: &'static str,
    pub(crate) proxy_id: &'static str,
}

impl Pki {
    pub(crate) fn new(dir: &Path) -> Self {
        let ca = dir.join("ca");
        let (node, proxy) = (dir.join("node"), dir.join("proxy"));
        let node_id = "spiffe://example.org/ns/default/sa/node";
        let proxy_id = "spiffe://example.org/ns/default/sa/proxy";
        let ok = |out: Output| {
            assert!(
                out.status.success(),
                "fipstun ca failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        ok(fipstun(&[
            "ca",
            "init",
            "--trust-domain",
            "example.org",
            "--out",
            s(&ca),
        ]));
        for (id, out) in [(node_id, &node), (proxy_id, &proxy)] {
            ok(fipstun(&[
                "ca",
                "issue",
                "--ca",
                s(&ca),
                "--id",
                id,
                "--out",
                s(out),
            ]));
            for f in ["svid.pem", "svid-key.pem", "bundle.pem"] {
                assert!(out.join(f).is_file(), "{f} written");
            }
        }
        Self {
            node,
            proxy,
            node_id,
            proxy_id,
        }
    }
}

pub(crate) fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// A running `fipstun node` or `fipstun proxy`. Killed on drop.
pub(crate) struct Daemon {
    child: Child,
    /// The `fipstun <mode>: ready ...` line (node, proxy, ca serve).
    pub(crate) ready: String,
    stderr: Arc<Mutex<String>>,
}

impl Daemon {
    /// Start `fipstun <args>` and wait for its ready line.
    pub(crate) fn start(args: &[&str]) -> Self {
        Self::start_with_env(args, &[])
    }

    /// [`Daemon::start`] with extra environment variables.
    pub(crate) fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::start_under(&[], args, env)
    }

    /// [`Daemon::start`] through `prefix` (e.g. `ip netns exec NS setpriv ...`: each of them
    /// execs, so the process killed on drop is fipstun itself).
    pub(crate) fn start_under(prefix: &[&str], args: &[&str], env: &[(&str, &str)]) -> Self {
        let bin = env!("CARGO_BIN_EXE_fipstun");
        let mut command = match prefix.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        let mut child = command
            .args(args)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn fipstun");
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let pipe = child.stderr.take().expect("stderr piped");
        let log = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                if line.starts_with("fipstun ") && line.contains(": ready ") {
                    let _ = tx.send(line.clone());
                }
                let mut log = log.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let mut d = Self {
            child,
            ready: String::new(),
            stderr,
        };
        match rx.recv_timeout(READY_TIMEOUT) {
            Ok(line) => d.ready = line,
            Err(_) => panic!(
                "fipstun {args:?} printed no ready line; stderr:\n{}",
                d.stderr()
            ),
        }
        d
    }

    /// The address after `key=` in the ready line.
    pub(crate) fn addr(&self, key: &str) -> SocketAddr {
        let prefix = format!("{key}=");
        self.ready
            .split_whitespace()
            .find_map(|w| w.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no {key}= in {:?}", self.ready))
            .parse()
            .expect("address")
    }

    /// Everything the child wrote to stderr so far.
    pub(crate) fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Send SIGTERM (through kill(1): no unsafe code here).
    pub(crate) fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Send SIGHUP (reload the configuration).
    pub(crate) fn hangup(&self) {
        let status = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -HUP failed");
    }

    /// Wait up to `limit` for `needle` to appear `count` times in stderr.
    pub(crate) fn wait_log(&self, needle: &str, count: usize, limit: Duration) {
        let start = Instant::now();
        while self.stderr().matches(needle).count() < count {
            assert!(
                start.elapsed() < limit,
                "no {count}x `{needle}` within {limit:?}:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Wait up to `limit` for the child to exit.
    pub(crate) fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback server that reads each connection to EOF (the client's half-close), waits
/// `delay`, answers with the bytes reversed, and closes. Proves content, order and that the
/// return direction still works after a half-close.
pub(crate) fn reverse_server(delay: Duration) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut c) = conn else { return };
            std::thread::spawn(move || {
                let mut got = Vec::new();
                if c.read_to_end(&mut got).is_err() {
                    return;
                }
                std::thread::sleep(delay);
                got.reverse();
                let _ = c.write_all(&got);
                let _ = c.shutdown(Shutdown::Write);
            });
        }
    });
    addr
}

/// Send `data` through `proxy`, half-close, and return everything that comes back.
pub(crate) fn exchange(proxy: SocketAddr, data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut c = TcpStream::connect(proxy)?;
    c.set_read_timeout(Some(Duration::from_secs(30)))?;
    c.write_all(data)?;
    c.shutdown(Shutdown::Write)?;
    let mut back = Vec::new();
    c.read_to_end(&mut back)?;
    Ok(back)
}

/// `n` bytes of a non-repeating-looking pattern.
pub(crate) fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 31 % 251) as u8).collect()
}

/// GET /metrics from `addr`: (content type, body).
pub(crate) fn scrape(addr: SocketAddr) -> (String, String) {
    let mut c = TcpStream::connect(addr).expect("connect metrics");
    c.write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n")
        .expect("send");
    let mut text = String::new();
    c.read_to_string(&mut text).expect("read");
    let (head, body) = text.split_once("\r\n\r\n").expect("HTTP response");
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    let ctype = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Type: "))
        .unwrap_or_default()
        .to_string();
    (ctype, body.to_string())
}

/// The value of the sample `name{labels}` (exact text before the space), if present.
pub(crate) fn try_sample(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.trim().parse().expect("number"))
}

/// The value of the sample `name{labels}` (exact text before the space) in a scrape.
pub(crate) fn sample(body: &str, series: &str) -> f64 {
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no sample {series} in:\n{body}"))
        .trim()
        .parse()
        .expect("number")
}

/// Write `text` to `dir/name` and return the path.
pub(crate) fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write config");
    p
}

/// `fipstun proxy` with one HBONE listener on 127.0.0.1:0 to `upstream` through `node`, using
/// `pki`'s proxy SVID and expecting its node ID, plus `extra` flags.
pub(crate) fn hbone_proxy(
    pki: &Pki,
    node: &Daemon,
    upstream: SocketAddr,
    extra: &[&str],
) -> Daemon {
    let (target, node_hbone) = (upstream.to_string(), node.addr("hbone").to_string());
    let mut args = vec![
        "proxy",
        "--listen",
        "127.0.0.1:0",
        "--target",
        &target,
        "--via",
        "hbone",
        "--node",
        &node_hbone,
        "--node-id",
        pki.node_id,
        "--identity-dir",
        s(&pki.proxy),
    ];
    args.extend_from_slice(extra);
    Daemon::start(&args)
}
