//! `fipstun scorecard`: the head-to-head run. Issues SVIDs with the embedded CA, starts real
//! `fipstun node` and `fipstun proxy` processes for each backend, drives the same workloads
//! through plain TCP (no mesh), two plain user-space relays (the tunnels' process hops without
//! their protocols), HBONE/FIPS and WireGuard, and writes the table, JSON and an SVG chart into
//! an output folder.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use fipstun_identity::policy::fips_status;
use fipstun_scorecard::{
    self as scorecard, BackendResult, Churn, Measurement, Process, Role, Scorecard, Sinks, Window,
    Workload, WorkloadResult, procfs::Pid,
};
use fipstun_transport::{PlainTcp, Transport};
#[cfg(feature = "wireguard")]
use fipstun_wireguard::WgPrivateKey;
use indicatif::{ProgressBar, ProgressStyle};

use crate::duration::parse_duration;

/// The backends `--backends` runs by default: every one this binary has.
#[cfg(feature = "wireguard")]
const DEFAULT_BACKENDS: &str = "plain,relay,hbone,wireguard";
#[cfg(not(feature = "wireguard"))]
const DEFAULT_BACKENDS: &str = "plain,relay,hbone";

/// The trust domain the scorecard's throw-away CA serves.
const TRUST_DOMAIN: &str = "scorecard.test";

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Backend {
    /// Plain loopback TCP, no tunnel: the no-mesh baseline.
    Plain,
    /// HTTP/2 CONNECT over FIPS mutual TLS.
    Hbone,
    /// The WireGuard-compatible backend (not FIPS).
    Wireguard,
    /// Plain TCP through two user-space relays (two `fipstun proxy` processes, no crypto):
    /// the same process hops as the tunnels, without their protocols.
    Relay,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Plain => "plain",
            Backend::Hbone => "hbone",
            Backend::Wireguard => "wireguard",
            Backend::Relay => "relay",
        }
    }
}

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct ScorecardArgs {
    /// Compare two runs instead of measuring.
    #[command(subcommand)]
    command: Option<ScorecardCommand>,
    /// Total budget: an eighth (at most 15 s) for the at-rest window, the rest split evenly
    /// over every (rep, backend, workload) run; each run spends a fifth of its share (at most
    /// 1 s) warming up.
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    duration: Duration,
    /// Repetitions of every backend x workload cell, run in interleaved rounds (every cell
    /// once, then again); figures are medians with their min-max range.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    reps: u32,
    /// Output folder (default: `scorecard-<UTC timestamp>` in the current directory).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Backends to run, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = DEFAULT_BACKENDS
    )]
    backends: Vec<Backend>,
    /// No progress bar (plain lines on stderr instead).
    #[arg(long)]
    no_progress: bool,
    /// HBONE fan-out: one proxy spreads the request/response load over this many nodes,
    /// each its own `fipstun node` with its own SVID (one run, after the rounds).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=256))]
    fanout: u32,
    /// Fan-out at K = 1, 4, 16 and 64 (one run each, instead of `--fanout`'s one K), to show
    /// how the cost grows with the number of peers.
    #[arg(long)]
    scale: bool,
    /// Held streams: for each count, a fresh proxy and node (or relay) per tunnel backend,
    /// that many streams opened through them and held idle; memory per stream and errors
    /// (after the fan-out; comma-separated; 0 = none).
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    streams: Vec<usize>,
}

#[derive(clap::Subcommand, Debug)]
pub(crate) enum ScorecardCommand {
    /// Each figure of two runs side by side (`scorecard.json` files): the change of the
    /// medians and whether it left the noise band (`~` = the min-max ranges overlap).
    Diff {
        /// The earlier run's scorecard.json.
        old: PathBuf,
        /// The later run's scorecard.json.
        new: PathBuf,
    },
    /// Internal: serve the echo and discard sinks in a process of their own (the held-streams
    /// phase, so that the streams' two ends do not share one process's open-file limit);
    /// prints a ready line with both addresses and serves until killed.
    #[command(hide = true)]
    Sink,
}

/// How long a child process may take to print its ready line.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How many lines of a child's log a start-up error quotes.
const LOG_TAIL_LINES: usize = 20;

/// A child `fipstun` process, killed when dropped.
struct Daemon {
    name: String,
    child: Child,
    /// `key=value` fields of its ready line.
    ready: Vec<(String, String)>,
}

impl Daemon {
    /// Start `fipstun <mode> --config <config>` and wait for its ready line; its stderr goes to
    /// `log`. An error names the process, its command line, its config file and the end of its
    /// log, so the cause is on the screen rather than in a file.
    fn start(name: &str, mode: &str, config: &Path, log: &Path) -> Result<Self, String> {
        Self::spawn(name, mode, Some(config), log)
    }

    /// [`Daemon::start`] for any subcommand (`mode` may be several words) with or without a
    /// config file.
    fn spawn(name: &str, mode: &str, config: Option<&Path>, log: &Path) -> Result<Self, String> {
        let exe =
            std::env::current_exe().map_err(|e| format!("cannot find own executable: {e}"))?;
        let level = std::env::var("FIPSTUN_SCORECARD_LOG").unwrap_or("warn".into());
        let config_args = config
            .map(|c| format!(" --config {}", c.display()))
            .unwrap_or_default();
        let command_line = format!("RUST_LOG={level} {} {mode}{config_args}", exe.display());
        let mut command = Command::new(&exe);
        command.args(mode.split_whitespace());
        if let Some(c) = config {
            command.arg("--config").arg(c);
        }
        let mut child = command
            .env("RUST_LOG", &level)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start `{command_line}`: {e}"))?;
        let stderr = child.stderr.take().ok_or("no stderr pipe")?;
        let mut file = fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        let prefix = format!("fipstun {mode}: ready");
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let _ = writeln!(file, "{line}");
                if let Some(rest) = line.strip_prefix(&prefix) {
                    let _ = tx.send(rest.to_string());
                }
            }
        });
        let mut d = Daemon {
            name: name.to_string(),
            child,
            ready: Vec::new(),
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        let failure = loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(rest) => {
                    d.ready = rest
                        .split_whitespace()
                        .filter_map(|kv| kv.split_once('='))
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect();
                    return Ok(d);
                }
                Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() < deadline => {
                    if let Ok(Some(status)) = d.child.try_wait() {
                        break format!("exited ({status}) before it was ready");
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    break format!(
                        "did not print its ready line within {} s",
                        READY_TIMEOUT.as_secs()
                    );
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    break "closed its stderr before it was ready".to_string();
                }
            }
        };
        // Stop it and let the reader copy the rest of its stderr, so the tail is complete.
        let _ = d.child.kill();
        let _ = d.child.wait();
        let _ = reader.join();
        Err(start_failure(
            &format!("fipstun {mode} ({name})"),
            &failure,
            &command_line,
            config.unwrap_or(Path::new("(none)")),
            log,
        ))
    }

    fn addrs(&self, key: &str) -> Result<Vec<SocketAddr>, String> {
        self.ready
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| {
                v.parse().map_err(|e| {
                    format!("{}: bad {key} address `{v}` in ready line: {e}", self.name)
                })
            })
            .collect()
    }

    fn pid(&self) -> Pid {
        Pid::Other(self.child.id())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The error for a child process that did not become ready: what it was, why, how it was
/// started, the last lines of its log, and what to try next.
fn start_failure(what: &str, why: &str, command_line: &str, config: &Path, log: &Path) -> String {
    let tail = match fs::read_to_string(log) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            let from = lines.len().saturating_sub(LOG_TAIL_LINES);
            if lines.is_empty() {
                "  (the log is empty)".to_string()
            } else {
                lines[from..]
                    .iter()
                    .map(|l| format!("  | {l}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            }
        }
        Err(e) => format!("  (cannot read the log: {e})"),
    };
    format!(
        "{what} {why}\n  command: {command_line}\n  config:  {}\n  log:     {} (last {LOG_TAIL_LINES} lines below)\n{tail}\n\
         Try: run the command above by hand to see it fail in the foreground, or set \
         FIPSTUN_SCORECARD_LOG=debug for a more detailed log.",
        config.display(),
        log.display()
    )
}

/// Where a workload connects, and who pays for it.
struct Path2 {
    echo: SocketAddr,
    discard: SocketAddr,
    processes: Vec<Process>,
    _daemons: Vec<Daemon>,
    protocol: String,
    cipher: String,
    fips: bool,
    path: String,
}

/// The fan-out path: one proxy listener per node, all to the echo sink.
struct FanoutRig {
    listeners: Vec<SocketAddr>,
    processes: Vec<Process>,
    proxy: Pid,
    _daemons: Vec<Daemon>,
}

/// The peer counts `--scale` runs.
const SCALE_PEERS: [usize; 4] = [1, 4, 16, 64];

/// How often the WireGuard churn pair re-keys (`rekey_after_time` on both ends): every second,
/// as HBONE's SVID changes, so that even the default run's 1.5 s measured windows each see a
/// re-key (at 2 s, the re-key a run's first packet triggers falls in its warm-up and the next
/// after its end).
const WG_REKEY_EVERY: &str = "1s";

/// One fan-out point: K nodes and a fresh proxy, the cold start (one stream to each node,
/// all at once) with the proxy's memory before and after, then the request/response load
/// spread round-robin over the K listeners.
async fn fanout_point(
    setup: &Setup<'_>,
    k: usize,
    w: Workload,
    window: Window,
) -> Result<(scorecard::FanoutPoint, Measurement), String> {
    let rig = setup.fanout(k)?;
    let rss = |what: &str| {
        scorecard::procfs::rss(rig.proxy).map_err(|e| format!("fan-out proxy {what}: {e}"))
    };
    let before = rss("RSS before the cold start")?;
    let t0 = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for &a in &rig.listeners {
        set.spawn(async move {
            round_trip(a, Duration::from_secs(10))
                .await
                .map_err(|e| format!("fan-out cold start through {a}: {e}"))
        });
    }
    while let Some(r) = set.join_next().await {
        r.map_err(|e| format!("fan-out cold start: {e}"))??;
    }
    let setup_s = t0.elapsed().as_secs_f64();
    let after = rss("RSS after the cold start")?;
    let progress = Arc::new(AtomicU64::new(0));
    let m = scorecard::load::run_spread(w, &rig.listeners, window, &rig.processes, progress)
        .await
        .map_err(|e| format!("hbone fan-out K={k} {}: {e}", w.label()))?;
    let point = scorecard::FanoutPoint {
        peers: k,
        setup_s,
        proxy_rss_before_bytes: before,
        proxy_rss_after_bytes: after,
        result: WorkloadResult::from_runs(vec![m.clone()]).ok_or("fan-out: no measurement")?,
    };
    Ok((point, m))
}

/// A private key, mode 0600, replacing one a previous run left.
#[cfg(feature = "wireguard")]
fn write_secret(path: &Path, text: &str) -> Result<(), String> {
    crate::key_file::write(
        path,
        text.as_bytes(),
        crate::key_file::PRIVATE_MODE,
        crate::key_file::Existing::Replace,
    )
    .map_err(|e| e.to_string())
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

/// TOML basic string (paths and IDs never need more than quote and backslash escaping).
fn q(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Run this executable with `args` to completion; its stderr is the error.
fn fipstun(args: &[String]) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let o = Command::new(&exe)
        .args(args)
        .output()
        .map_err(|e| format!("fipstun {}: {e}", args.join(" ")))?;
    if o.status.success() {
        Ok(())
    } else {
        Err(format!(
            "fipstun {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr).trim()
        ))
    }
}

/// How often the churn run re-issues the node's SVID.
const CHURN_EVERY: Duration = Duration::from_secs(1);
/// Every this many SVID changes, the node's policy is also reloaded (SIGHUP).
const RELOAD_EVERY_NTH: u32 = 3;

/// Runs `fipstun <args>` now and then every `every` on its own thread until `stop` is set,
/// and every [`RELOAD_EVERY_NTH`] time also sends SIGHUP to `reload` (the node re-reads its
/// configuration and swaps its policy); the thread returns how many changes succeeded and how
/// many failed.
fn churn(
    args: Vec<String>,
    reload: Option<u32>,
    every: Duration,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<(u64, u64)> {
    std::thread::spawn(move || {
        let (mut ok, mut failed) = (0, 0);
        let start = Instant::now();
        let mut k = 0u32;
        while !stop.load(Ordering::Relaxed) {
            let mut outcome = fipstun(&args);
            if let Some(pid) = reload
                && k % RELOAD_EVERY_NTH == RELOAD_EVERY_NTH - 1
                && outcome.is_ok()
            {
                // kill(1): no unsafe code for a signal.
                outcome = match std::process::Command::new("kill")
                    .args(["-HUP", &pid.to_string()])
                    .status()
                {
                    Ok(s) if s.success() => Ok(()),
                    Ok(s) => Err(format!("kill -HUP {pid}: {s}")),
                    Err(e) => Err(format!("kill -HUP {pid}: {e}")),
                };
            }
            match outcome {
                Ok(()) => ok += 1,
                Err(e) => {
                    failed += 1;
                    tracing::warn!("churn: {e}");
                }
            }
            k += 1;
            while !stop.load(Ordering::Relaxed) && start.elapsed() < every * k {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        (ok, failed)
    })
}

fn app_process() -> Process {
    Process {
        name: "load+sinks".into(),
        pid: Pid::Current,
        role: Role::App,
    }
}

/// `fipstun scorecard sink`: the two sinks, a ready line naming them, then serve until killed.
fn serve_sinks() -> Result<String, String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    rt.block_on(async {
        let sinks = Sinks::start()
            .await
            .map_err(|e| format!("cannot start the sinks: {e}"))?;
        eprintln!(
            "fipstun scorecard sink: ready echo={} discard={}",
            sinks.echo, sinks.discard
        );
        std::future::pending::<()>().await;
        Ok(String::new())
    })
}

/// How long the held streams idle before the tunnel's memory is read.
const STREAMS_SETTLE: Duration = Duration::from_secs(1);

/// Make sure this process (and the nodes and proxies it starts, which inherit it) may hold
/// `needed` open files for `streams` held streams: raise the soft limit, and the hard one
/// where allowed (root); otherwise say what to do.
fn ensure_open_files(needed: u64, streams: usize) -> Result<(), String> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) =
        getrlimit(Resource::RLIMIT_NOFILE).map_err(|e| format!("getrlimit(NOFILE): {e}"))?;
    if soft >= needed {
        return Ok(());
    }
    let target = needed.max(hard);
    if setrlimit(Resource::RLIMIT_NOFILE, target, target).is_ok()
        || (hard >= needed && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok())
    {
        return Ok(());
    }
    Err(format!(
        "--streams {streams} needs about {needed} open files, and the limit is {soft} \
         (hard {hard}): raise it (`ulimit -n {needed}`, as root if the hard limit is lower) or \
         ask for fewer streams (`--streams 1000`)"
    ))
}

struct Setup<'a> {
    out: &'a Path,
    sinks: &'a Sinks,
    /// Appended to every node, relay and proxy config (the held-streams pairs raise
    /// `[limits]` with it); empty otherwise.
    extra: &'a str,
}

impl Setup<'_> {
    fn pki(&self) -> Result<(), String> {
        let pki = self.out.join("pki");
        let run = |args: &[&str]| -> Result<(), String> {
            let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
            fipstun(&args)
        };
        let ca = pki.join("ca");
        let ca = ca.to_str().ok_or("output path is not UTF-8")?;
        run(&[
            "ca",
            "init",
            "--trust-domain",
            TRUST_DOMAIN,
            "--out",
            ca,
            "--validity",
            "1d",
        ])?;
        for who in ["node", "proxy"] {
            let dir = pki.join(who);
            let id = format!("spiffe://{TRUST_DOMAIN}/{who}");
            run(&[
                "ca",
                "issue",
                "--ca",
                ca,
                "--id",
                &id,
                "--out",
                dir.to_str().ok_or("output path is not UTF-8")?,
                "--ttl",
                "1d",
            ])?;
        }
        Ok(())
    }

    /// `fipstun ca issue --force` arguments that re-issue the node's SVID (a new key and
    /// certificate) into the folder the node watches, as a CA rotating it would.
    fn reissue_node_svid_args(&self) -> Result<Vec<String>, String> {
        let pki = self.out.join("pki");
        let path = |p: PathBuf| {
            p.to_str()
                .map(str::to_string)
                .ok_or_else(|| "output path is not UTF-8".to_string())
        };
        Ok(vec![
            "ca".into(),
            "issue".into(),
            "--ca".into(),
            path(pki.join("ca"))?,
            "--id".into(),
            format!("spiffe://{TRUST_DOMAIN}/node"),
            "--out".into(),
            path(pki.join("node"))?,
            "--ttl".into(),
            "1d".into(),
            "--force".into(),
        ])
    }

    fn plain(&self) -> Path2 {
        Path2 {
            echo: self.sinks.echo,
            discard: self.sinks.discard,
            processes: vec![app_process()],
            _daemons: Vec::new(),
            protocol: "TCP".into(),
            cipher: "none".into(),
            fips: false,
            path: "load -> TCP -> sink (no mesh)".into(),
        }
    }

    fn listeners(&self, via: &str, extra: &str) -> String {
        listeners_to(
            &[self.sinks.echo.to_string(), self.sinks.discard.to_string()],
            via,
            extra,
        )
    }

    /// Two user-space TCP relays in a row and no crypto: a `fipstun proxy` whose plain
    /// listeners forward to a second `fipstun proxy`, whose plain listeners forward to the
    /// sinks. The same process hops as the tunnels, so its row shows what the two user-space
    /// hops cost before any mTLS, HTTP/2 or WireGuard is added.
    fn relay(&self, name: &str) -> Result<Path2, String> {
        // Plain listeners carry plaintext: not FIPS, so each relay says fips = "off".
        let far = format!("fips = \"off\"\n{}", self.listeners("plain", ""));
        let near = format!(
            "fips = \"off\"\n{}",
            listeners_to(&["@ECHO@".into(), "@DISCARD@".into()], "plain", "")
        );
        self.tunnel(
            name,
            ("proxy", "relay", far),
            near,
            PlainTcp.security(),
            "load -> TCP -> proxy -> TCP -> relay (a second proxy) -> TCP -> sink (no crypto)",
        )
    }

    /// Start the far process (`far` = subcommand, process name, config), then a `fipstun
    /// proxy` whose config names the far one's addresses (`@NODE@` for a node's tunnel
    /// listener, `@ECHO@`/`@DISCARD@` for a relay's two listeners).
    fn tunnel(
        &self,
        name: &str,
        far: (&str, &'static str, String),
        proxy_toml: String,
        security: fipstun_transport::SecurityInfo,
        path: &str,
    ) -> Result<Path2, String> {
        let (far_mode, far_name, far_toml) = far;
        let dir = self.out.join(name);
        fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let logs = self.out.join("logs");
        let far_config = dir.join(format!("{far_name}.toml"));
        write(&far_config, &format!("{far_toml}\n{}", self.extra))?;
        let far = Daemon::start(
            far_name,
            far_mode,
            &far_config,
            &logs.join(format!("{name}-{far_name}.log")),
        )?;
        let mut proxy_toml = proxy_toml;
        if proxy_toml.contains("@NODE@") {
            proxy_toml = proxy_toml.replace("@NODE@", &node_addr(&far, name)?.to_string());
        }
        if proxy_toml.contains("@ECHO@") {
            let [echo, discard] = two_listeners(&far)?;
            proxy_toml = proxy_toml
                .replace("@ECHO@", &echo.to_string())
                .replace("@DISCARD@", &discard.to_string());
        }
        write(
            &dir.join("proxy.toml"),
            &format!("{proxy_toml}\n{}", self.extra),
        )?;
        let proxy = Daemon::start(
            "proxy",
            "proxy",
            &dir.join("proxy.toml"),
            &logs.join(format!("{name}-proxy.log")),
        )?;
        let [echo, discard] = two_listeners(&proxy)?;
        Ok(Path2 {
            echo,
            discard,
            processes: vec![
                app_process(),
                Process {
                    name: "proxy".into(),
                    pid: proxy.pid(),
                    role: Role::Tunnel,
                },
                Process {
                    name: far_name.into(),
                    pid: far.pid(),
                    role: Role::Tunnel,
                },
            ],
            _daemons: vec![proxy, far],
            protocol: security.protocol,
            cipher: security.cipher,
            fips: security.fips,
            path: path.into(),
        })
    }

    fn hbone(&self, name: &str) -> Result<Path2, String> {
        let pki = self.out.join("pki");
        let dir = |who: &str| q(&pki.join(who).display().to_string());
        let node = format!(
            "allow_targets = [\"127.0.0.1/32\"]\n\n[identity]\ndir = {}\n\n[hbone]\nlisten = \"127.0.0.1:0\"\nallow = [\"spiffe://{TRUST_DOMAIN}/proxy\"]\n",
            dir("node")
        );
        let proxy = format!(
            "fips = \"required\"\n\n[identity]\ndir = {}\n{}",
            dir("proxy"),
            self.listeners(
                "hbone",
                &format!("node = \"@NODE@\"\nnode_id = \"spiffe://{TRUST_DOMAIN}/node\"\n")
            )
        );
        let security =
            fipstun_hbone::security_info(&fipstun_identity::policy::CryptoPolicy::default());
        self.tunnel(
            name,
            ("node", "node", node),
            proxy,
            security,
            "load -> TCP -> proxy -> HBONE (h2 over mTLS, TCP) -> node -> TCP -> sink",
        )
    }

    /// K HBONE nodes, each its own `fipstun node` with its own SVID (`spiffe://<td>/node-<i>`,
    /// issued on first use), and one fresh proxy with a listener per node (each a fixed
    /// target, the echo sink, via HBONE to its node), so the proxy pools K connections once
    /// traffic flows; nothing is sent here.
    fn fanout(&self, k: usize) -> Result<FanoutRig, String> {
        let pki = self.out.join("pki");
        let utf8 = |p: PathBuf| {
            p.to_str()
                .map(str::to_string)
                .ok_or_else(|| "output path is not UTF-8".to_string())
        };
        let ca = utf8(pki.join("ca"))?;
        let dir = self.out.join(format!("fanout-{k}"));
        fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let logs = self.out.join("logs");
        let mut nodes = Vec::with_capacity(k);
        for i in 0..k {
            let who = format!("node-{i}");
            let svid = pki.join(&who);
            if !svid.exists() {
                fipstun(&[
                    "ca".into(),
                    "issue".into(),
                    "--ca".into(),
                    ca.clone(),
                    "--id".into(),
                    format!("spiffe://{TRUST_DOMAIN}/{who}"),
                    "--out".into(),
                    utf8(svid.clone())?,
                    "--ttl".into(),
                    "1d".into(),
                ])?;
            }
            let config = dir.join(format!("{who}.toml"));
            write(
                &config,
                &format!(
                    "allow_targets = [\"127.0.0.1/32\"]\n\n[identity]\ndir = {}\n\n[hbone]\nlisten = \"127.0.0.1:0\"\nallow = [\"spiffe://{TRUST_DOMAIN}/proxy\"]\n",
                    q(&svid.display().to_string())
                ),
            )?;
            nodes.push(Daemon::start(
                &who,
                "node",
                &config,
                &logs.join(format!("fanout-{k}-{who}.log")),
            )?);
        }
        let mut proxy = format!(
            "fips = \"required\"\n\n[identity]\ndir = {}\n",
            q(&pki.join("proxy").display().to_string())
        );
        for (i, node) in nodes.iter().enumerate() {
            proxy.push_str(&format!(
                "\n[[listener]]\nlisten = \"127.0.0.1:0\"\ntarget = \"{}\"\nvia = \"hbone\"\nnode = \"{}\"\nnode_id = \"spiffe://{TRUST_DOMAIN}/node-{i}\"\n",
                self.sinks.echo,
                node_addr(node, "hbone")?
            ));
        }
        let config = dir.join("proxy.toml");
        write(&config, &proxy)?;
        let proxy = Daemon::start(
            "proxy",
            "proxy",
            &config,
            &logs.join(format!("fanout-{k}-proxy.log")),
        )?;
        let listeners = proxy.addrs("listener")?;
        if listeners.len() != k {
            return Err(format!(
                "the fan-out proxy reported {} listeners, expected {k}",
                listeners.len()
            ));
        }
        let mut processes = vec![
            app_process(),
            Process {
                name: "proxy".into(),
                pid: proxy.pid(),
                role: Role::Tunnel,
            },
        ];
        processes.extend(nodes.iter().map(|n| Process {
            name: n.name.clone(),
            pid: n.pid(),
            role: Role::Tunnel,
        }));
        let proxy_pid = proxy.pid();
        nodes.push(proxy);
        Ok(FanoutRig {
            listeners,
            processes,
            proxy: proxy_pid,
            _daemons: nodes,
        })
    }

    /// One HBONE stream to the node with the proxy's identity and the proxy's (default)
    /// policy, to the echo sink: the suite, group and protocol that handshake negotiated, as
    /// the report shows them. The proxy's own connections make the same choice (same
    /// policy, same node).
    async fn negotiated_with_node(&self, path: &Path2) -> Result<String, String> {
        use fipstun_hbone::{ClientConfig, HboneClient, HboneRoute, TlsIdentity};
        let node = path
            ._daemons
            .iter()
            .find(|d| d.name == "node")
            .ok_or("the HBONE path has no node")?;
        let node_id = format!("spiffe://{TRUST_DOMAIN}/node")
            .parse::<fipstun_identity::spiffe::SpiffeId>()
            .map_err(|e| e.to_string())?;
        let identity = TlsIdentity::from_dir(self.out.join("pki").join("proxy"))
            .map_err(|e| format!("proxy identity: {e}"))?;
        let client = HboneClient::new(identity, ClientConfig::default())
            .map_err(|e| format!("HBONE client: {e}"))?;
        let route = HboneRoute::new(node_addr(node, "hbone")?, node_id);
        let stream = client
            .connect(self.sinks.echo, &route)
            .await
            .map_err(|e| format!("HBONE probe stream to the node: {e}"))?;
        let negotiated = stream
            .negotiated()
            .ok_or("rustls did not report the negotiated parameters")?;
        Ok(negotiated.to_string())
    }

    #[cfg(not(feature = "wireguard"))]
    fn wireguard(&self, _name: &str, _rekey: Option<&str>) -> Result<Path2, String> {
        Err(
            "the wireguard backend: this fipstun binary was built without the `wireguard` \
             feature (--no-default-features); rebuild with `--features wireguard`"
                .into(),
        )
    }

    /// A WireGuard proxy and node in folder `name`; with `rekey` (a duration), both ends
    /// re-key that often (`rekey_after_time`) and serve `/metrics`, whose handshake counters
    /// tell how many re-keys happened.
    #[cfg(feature = "wireguard")]
    fn wireguard(&self, name: &str, rekey: Option<&str>) -> Result<Path2, String> {
        let dir = self.out.join(name);
        fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let (node_key, proxy_key) = (WgPrivateKey::generate(), WgPrivateKey::generate());
        write_secret(&dir.join("node.key"), &node_key.to_base64())?;
        write_secret(&dir.join("proxy.key"), &proxy_key.to_base64())?;
        let (metrics, rekey) = match rekey {
            Some(t) => (
                "metrics = \"127.0.0.1:0\"\n".to_string(),
                format!("rekey_after_time = \"{t}\"\n"),
            ),
            None => (String::new(), String::new()),
        };
        let node = format!(
            "{metrics}fips = \"off\"\nallow_targets = [\"127.0.0.1/32\"]\n\n[wireguard]\nlisten = \"127.0.0.1:0\"\nprivate_key = {}\naddress = \"10.99.0.1\"\n{rekey}\n[[wireguard.peer]]\npublic_key = \"{}\"\nallowed_ips = [\"10.99.0.2/32\"]\n",
            q(&dir.join("node.key").display().to_string()),
            proxy_key.public_key()
        );
        let proxy = format!(
            "{metrics}fips = \"off\"\n\n[wireguard]\nlisten = \"127.0.0.1:0\"\nprivate_key = {}\naddress = \"10.99.0.2\"\n{rekey}\n[[wireguard.peer]]\npublic_key = \"{}\"\nendpoint = \"@NODE@\"\nallowed_ips = [\"0.0.0.0/0\"]\npersistent_keepalive = 25\n{}",
            q(&dir.join("proxy.key").display().to_string()),
            node_key.public_key(),
            self.listeners("wireguard", "")
        );
        let s = fipstun_wireguard::security_info();
        self.tunnel(
            name,
            ("node", "node", node),
            proxy,
            s,
            "load -> TCP -> proxy -> userspace TCP in WireGuard (UDP) -> node -> TCP -> sink",
        )
    }
}

/// The echo and discard listener addresses a proxy reported, in config order.
fn two_listeners(proxy: &Daemon) -> Result<[SocketAddr; 2], String> {
    let l = proxy.addrs("listener")?;
    let [echo, discard] = l[..] else {
        return Err(format!(
            "{} reported {} listeners, expected 2",
            proxy.name,
            l.len()
        ));
    };
    Ok([echo, discard])
}

/// `[[listener]]` tables for the echo and discard targets, in that order.
fn listeners_to(targets: &[String; 2], via: &str, extra: &str) -> String {
    targets
        .iter()
        .map(|t| {
            format!(
                "\n[[listener]]\nlisten = \"127.0.0.1:0\"\ntarget = \"{t}\"\nvia = \"{via}\"\n{extra}"
            )
        })
        .collect()
}

fn node_addr(node: &Daemon, name: &str) -> Result<SocketAddr, String> {
    let key = if name.starts_with("hbone") {
        "hbone"
    } else {
        "wireguard"
    };
    node.addrs(key)?
        .into_iter()
        .next()
        .ok_or_else(|| format!("node did not report a {key} address"))
}

/// One round trip through the path, retried for a few seconds: the tunnel works before any
/// measurement starts (and the WireGuard handshake is done).
async fn check_path(p: &Path2) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = String::new();
    while Instant::now() < deadline {
        match round_trip(p.echo, Duration::from_secs(3)).await {
            Ok(()) => return Ok(()),
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(format!("no round trip through {} in 10 s: {last}", p.path))
}

/// Connect to `echo` (a proxy listener in front of the echo sink) and do one 4-byte round
/// trip, within `timeout`.
async fn round_trip(echo: SocketAddr, timeout: Duration) -> Result<(), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let r = async {
        let mut s = tokio::net::TcpStream::connect(echo).await?;
        s.write_all(b"ping").await?;
        let mut b = [0u8; 4];
        s.read_exact(&mut b).await?;
        Ok::<_, std::io::Error>(b == *b"ping")
    };
    match tokio::time::timeout(timeout, r).await {
        Ok(Ok(true)) => Ok(()),
        Ok(Ok(false)) => Err("echo answered different bytes".into()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out".into()),
    }
}

/// WireGuard handshakes initiated so far, summed over every process of `path` that serves
/// `/metrics` (the counter `fipstun_wireguard_handshakes_initiated_total`).
async fn wg_handshakes(path: &Path2) -> Result<u64, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const SERIES: &str = "fipstun_wireguard_handshakes_initiated_total";
    let mut total = 0;
    for d in &path._daemons {
        for addr in d.addrs("metrics")? {
            let body = async {
                let mut s = tokio::net::TcpStream::connect(addr).await?;
                s.write_all(
                    b"GET /metrics HTTP/1.1\r\nHost: scorecard\r\nConnection: close\r\n\r\n",
                )
                .await?;
                let mut text = String::new();
                s.read_to_string(&mut text).await?;
                Ok::<_, std::io::Error>(text)
            };
            let text = tokio::time::timeout(Duration::from_secs(3), body)
                .await
                .map_err(|_| format!("{} /metrics at {addr}: timed out", d.name))?
                .map_err(|e| format!("{} /metrics at {addr}: {e}", d.name))?;
            let n = text
                .lines()
                .find_map(|l| l.strip_prefix(SERIES)?.strip_prefix(' '))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .ok_or_else(|| format!("{} /metrics at {addr}: no {SERIES}", d.name))?;
            total += n as u64;
        }
    }
    Ok(total)
}

fn summary(rep: &str, backend: &str, m: &Measurement) -> String {
    let what = match m.workload {
        Workload::Bulk { .. } => format!("{:.2} Gbit/s", m.bytes_per_sec() * 8.0 / 1e9),
        _ => {
            let l = m.latency.unwrap_or_default();
            format!(
                "{:.0}/s, p50 {:.0} µs, p99 {:.0} µs",
                m.ops_per_sec(),
                l.p50_us,
                l.p99_us
            )
        }
    };
    format!(
        "{rep} {backend:<10} {:<13} {what}, {:.2} cores, {} errors",
        m.workload.label(),
        m.cores(),
        m.errors
    )
}

fn timestamp() -> (String, String) {
    let now = time::OffsetDateTime::now_utc();
    let folder = format!(
        "{:04}{:02}{:02}-{:02}{:02}{:02}",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    );
    let rfc = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    );
    (folder, rfc)
}

/// `fipstun scorecard diff OLD NEW`: both files read, every shared figure compared.
fn diff(old: &Path, new: &Path) -> Result<String, String> {
    let read = |p: &Path| {
        let text = fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
        Scorecard::from_json(&text).map_err(|e| format!("{}: {e}", p.display()))
    };
    let (o, n) = (read(old)?, read(new)?);
    Ok(scorecard::diff::render(&o, &n))
}

/// How the budget is spent: the at-rest window, and each run's warm-up and measured time
/// over `cells` runs per rep and `once` runs outside the rounds (fan-out).
fn plan(duration: Duration, reps: u32, cells: usize, once: usize) -> (Duration, Window) {
    let idle = (duration / 8).min(Duration::from_secs(15));
    let runs = (cells as u32 * reps + once as u32).max(1);
    let slot = (duration - idle) / runs;
    let warmup = (slot / 5).min(Duration::from_secs(1));
    (
        idle,
        Window {
            warmup,
            measure: slot - warmup,
        },
    )
}

/// Run the scorecard (or compare two runs); returns the text to print.
pub(crate) fn run(args: ScorecardArgs) -> Result<String, String> {
    match &args.command {
        Some(ScorecardCommand::Diff { old, new }) => return diff(old, new),
        Some(ScorecardCommand::Sink) => return serve_sinks(),
        None => {}
    }
    if args.backends.is_empty() {
        return Err("no backends chosen".into());
    }
    let (stamp, started) = timestamp();
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("scorecard-{stamp}")));
    // A folder that already holds a run keeps it: its CA and results are not overwritten.
    if out.join("pki").exists() || out.join("scorecard.json").exists() {
        return Err(format!(
            "{} already holds a scorecard run; choose another --out (or remove that folder)",
            out.display()
        ));
    }
    fs::create_dir_all(out.join("logs")).map_err(|e| format!("{}: {e}", out.display()))?;
    // Every path written into a child's config file is absolute: the binary reads relative
    // paths in a config file against the file's own folder, not against this process's.
    let out = std::path::absolute(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let status = fips_status();
    if !status.ok() {
        return Err("FIPS mode is not active; `fipstun status` tells why".into());
    }
    let workloads = scorecard::standard_workloads();
    let reps = args.reps.max(1);
    let cells = args.backends.len() * workloads.len();
    // HBONE runs the request/response load once more per rep while its node's SVID churns,
    // WireGuard while a second pair re-keys every few seconds.
    let hbone = args.backends.contains(&Backend::Hbone);
    let wg_churn = args.backends.contains(&Backend::Wireguard);
    let churn_cells = usize::from(hbone) + usize::from(wg_churn);
    // Fan-out: one run per peer count, after the rounds (HBONE only).
    let fanout_peers: Vec<usize> = match (hbone, args.scale) {
        (false, _) => Vec::new(),
        (true, true) => SCALE_PEERS.to_vec(),
        (true, false) => vec![args.fanout as usize],
    };
    let mut stream_counts: Vec<usize> = args.streams.iter().copied().filter(|&n| n > 0).collect();
    stream_counts.sort_unstable();
    stream_counts.dedup();
    let stream_backends: Vec<Backend> = args
        .backends
        .iter()
        .copied()
        .filter(|b| *b != Backend::Plain)
        .collect();
    if let (Some(&most), false) = (stream_counts.last(), stream_backends.is_empty()) {
        ensure_open_files(scorecard::streams::files_needed(most), most)?;
    }
    let (idle_window, window) = plan(args.duration, reps, cells + churn_cells, fanout_peers.len());
    let tunnels = args.backends.iter().any(|b| *b != Backend::Plain);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("scorecard-load")
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    let module = format!("{} ({})", status.module.name, status.module.certificate);
    let machine = scorecard::machine(started, env!("CARGO_PKG_VERSION").into(), module);

    let steps = (cells + churn_cells + usize::from(tunnels)) as u64 * u64::from(reps)
        + (stream_counts.len() * stream_backends.len()) as u64
        + fanout_peers.len() as u64;
    let bar = if args.no_progress {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(steps)
    };
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
            .map_err(|e| e.to_string())?
            .progress_chars("=> "),
    );
    let say = |line: String| {
        if bar.is_hidden() {
            eprintln!("{line}");
        } else {
            bar.println(line);
        }
    };
    say(format!(
        "scorecard: {reps} interleaved rounds of {} backend x workload runs, {:.2} s each \
         ({:.2} s warm-up){}{}; output folder {}",
        cells + churn_cells,
        (window.warmup + window.measure).as_secs_f64(),
        window.warmup.as_secs_f64(),
        if tunnels {
            format!(
                ", each round then at rest for {:.1} s",
                idle_window.as_secs_f64() / f64::from(reps)
            )
        } else {
            String::new()
        },
        if fanout_peers.is_empty() {
            String::new()
        } else {
            format!(
                ", then HBONE fan-out over K = {:?} nodes (one run each)",
                fanout_peers
            )
        },
        out.display()
    ));
    let (backends, fanout) = rt.block_on(async {
        let sinks = Sinks::start()
            .await
            .map_err(|e| format!("cannot start the sinks: {e}"))?;
        let setup = Setup {
            out: &out,
            sinks: &sinks,
            extra: "",
        };
        if args.backends.contains(&Backend::Hbone) {
            bar.set_message("issuing SVIDs");
            setup.pki()?;
        }
        // Every path is up for the whole run, so the rounds can interleave.
        let mut paths = Vec::new();
        for &b in &args.backends {
            bar.set_message(format!("{}: starting", b.name()));
            let path = match b {
                Backend::Plain => setup.plain(),
                Backend::Hbone => setup.hbone("hbone")?,
                Backend::Wireguard => setup.wireguard("wireguard", None)?,
                Backend::Relay => setup.relay("relay")?,
            };
            check_path(&path).await?;
            // What the proxy's connections to the node negotiate, not what the policy allows.
            let cipher = if b == Backend::Hbone {
                setup.negotiated_with_node(&path).await?
            } else {
                path.cipher.clone()
            };
            paths.push((b, path, cipher));
        }
        // A second WireGuard pair whose ends re-key every WG_REKEY_EVERY.
        let wg_churn_path = if wg_churn {
            bar.set_message("wireguard+churn: starting");
            let p = setup.wireguard("wireguard-churn", Some(WG_REKEY_EVERY))?;
            check_path(&p).await?;
            Some(p)
        } else {
            None
        };
        let (mut wg_churn_runs, mut wg_rekeys, mut wg_rekey_failures) =
            (Vec::new(), Vec::new(), 0);
        // runs[backend][workload]: one measurement per rep.
        let mut runs: Vec<Vec<Vec<Measurement>>> =
            vec![vec![Vec::new(); workloads.len()]; paths.len()];
        let (mut churn_runs, mut churn_changes, mut churn_failures) = (Vec::new(), Vec::new(), 0);
        // idle_rounds[rep][backend]: the at-rest window at the end of each round.
        let mut idle_rounds: Vec<Vec<scorecard::idle::Idle>> = Vec::new();
        for rep in 1..=reps {
            for (wi, w) in workloads.iter().enumerate() {
                for (bi, (b, path, _)) in paths.iter().enumerate() {
                    let m = measure_one(&bar, *b, path, *w, window).await?;
                    say(summary(&format!("[{rep}/{reps}]"), b.name(), &m));
                    bar.inc(1);
                    runs[bi][wi].push(m);
                }
            }
            if let (Some((b, path, _)), Some(w)) = (
                paths.iter().find(|(b, _, _)| *b == Backend::Hbone),
                workloads
                    .iter()
                    .find(|w| matches!(w, Workload::RequestResponse { .. })),
            ) {
                let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
                // The node is the path's tunnel process named "node".
                let node = path.processes.iter().find_map(|p| match p.pid {
                    Pid::Other(pid) if p.name == "node" => Some(pid),
                    _ => None,
                });
                let changer = churn(
                    setup.reissue_node_svid_args()?,
                    node,
                    CHURN_EVERY,
                    stop.clone(),
                );
                let m = measure_one(&bar, *b, path, *w, window).await;
                stop.store(true, Ordering::Relaxed);
                let (ok, failed) = changer
                    .join()
                    .map_err(|_| "the churn thread panicked".to_string())?;
                let m = m?;
                say(summary(
                    &format!("[{rep}/{reps}]"),
                    &format!("{}+churn", b.name()),
                    &m,
                ));
                bar.inc(1);
                churn_runs.push(m);
                churn_changes.push(ok);
                churn_failures += failed;
            }
            if let (Some(path), Some(w)) = (
                &wg_churn_path,
                workloads
                    .iter()
                    .find(|w| matches!(w, Workload::RequestResponse { .. })),
            ) {
                // Re-keys over the whole run, warm-up included (as HBONE's re-issues): the
                // run's first packet re-keys a session idle since the last round, and at 1 s
                // the next one falls in the measured window.
                let before = wg_handshakes(path).await;
                let m = measure_one(&bar, Backend::Wireguard, path, *w, window).await?;
                match (before, wg_handshakes(path).await) {
                    (Ok(b), Ok(a)) => wg_rekeys.push(a.saturating_sub(b)),
                    (Err(e), _) | (_, Err(e)) => {
                        tracing::warn!("wireguard churn: cannot count re-keys: {e}");
                        wg_rekeys.push(0);
                        wg_rekey_failures += 1;
                    }
                }
                say(summary(
                    &format!("[{rep}/{reps}]"),
                    "wireguard+churn",
                    &m,
                ));
                bar.inc(1);
                wg_churn_runs.push(m);
            }
            // Each round ends at rest for its share of the at-rest window, so the at-rest figures
            // carry a spread over the rounds like the loaded ones (one window would give one
            // process state: its RSS would have no spread at all).
            if tunnels {
                bar.set_message(format!(
                    "[{rep}/{reps}] at rest for {:.1} s",
                    idle_window.as_secs_f64() / f64::from(reps)
                ));
                // One round trip each: pools warm and WireGuard sessions fresh when the
                // window starts; then a second for closing connections to settle.
                for (_, path, _) in &paths {
                    check_path(path).await?;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                let groups: Vec<Vec<Process>> = paths
                    .iter()
                    .map(|(_, p, _)| {
                        p.processes
                            .iter()
                            .filter(|x| x.role == Role::Tunnel)
                            .cloned()
                            .collect()
                    })
                    .collect();
                idle_rounds.push(
                    scorecard::idle::measure(&groups, idle_window / reps).await?,
                );
                bar.inc(1);
            }
        }
        let idle = scorecard::idle::combine(&idle_rounds);
        drop(wg_churn_path);
        // Fan-out last: its K nodes start after the at-rest window, so they do not weigh on it.
        let mut fanout_points = Vec::new();
        let mut w_label = String::new();
        if let Some(w) = workloads
            .iter()
            .find(|w| matches!(w, Workload::RequestResponse { .. }))
        {
            w_label = w.label();
            for &k in &fanout_peers {
                bar.set_message(format!("hbone fan-out: starting {k} nodes"));
                let (point, m) = fanout_point(&setup, k, *w, window).await?;
                say(summary("fan-out", &format!("hbone K={k}"), &m));
                say(format!(
                    "fan-out   hbone K={k}: cold start {:.0} ms ({:.0} new connections/s), proxy +{:.0} KiB per peer",
                    point.setup_s * 1000.0,
                    point.setups_per_sec(),
                    point.proxy_rss_per_peer_bytes() / 1024.0
                ));
                bar.inc(1);
                fanout_points.push(point);
            }
        }
        // Held streams last, each backend on a fresh pair whose [limits] admit them all.
        let mut streams: Vec<(Backend, scorecard::Streams)> = Vec::new();
        if let Some(&most) = stream_counts.last() {
            let limits = format!(
                "\n[limits]\nmax_streams = {0}\nmax_streams_per_peer = {0}\n",
                most + 1024
            );
            // The streams' far ends live in a sink process of their own: with the near ends
            // here, one process would need two open files per stream.
            let sink = Daemon::spawn(
                "sink",
                "scorecard sink",
                None,
                &out.join("logs").join("streams-sink.log"),
            )?;
            let (Some(echo), Some(discard)) = (
                sink.addrs("echo")?.first().copied(),
                sink.addrs("discard")?.first().copied(),
            ) else {
                return Err("the sink process did not name its addresses".to_string());
            };
            let far_sinks = Sinks::elsewhere(echo, discard);
            let fresh = Setup {
                out: &out,
                sinks: &far_sinks,
                extra: &limits,
            };
            let soft_files = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
                .map(|(soft, _)| soft)
                .unwrap_or(0);
            for &b in &stream_backends {
                let name = format!("{}-streams", b.name());
                bar.set_message(format!("{name}: starting"));
                let path = match b {
                    Backend::Hbone => fresh.hbone(&name)?,
                    Backend::Wireguard => fresh.wireguard(&name, None)?,
                    Backend::Relay => fresh.relay(&name)?,
                    Backend::Plain => continue,
                };
                check_path(&path).await?;
                let mut points = Vec::new();
                for &n in &stream_counts {
                    // The relay's middle hop holds both sockets of every stream.
                    if b == Backend::Relay && 2 * n as u64 + 1024 > soft_files {
                        say(format!(
                            "streams   relay      {n}: skipped (its second proxy would hold two \
                             sockets per stream: {} open files, the limit is {soft_files})",
                            2 * n + 1024
                        ));
                        bar.inc(1);
                        continue;
                    }
                    bar.set_message(format!("{name}: holding {n} streams"));
                    let h = scorecard::streams::hold(
                        path.echo,
                        n,
                        &path.processes,
                        STREAMS_SETTLE,
                    )
                    .await?;
                    say(format!(
                        "streams   {:<10} {n} held: {} opened in {:.2} s, {} errors, tunnel RSS {:.1} -> {:.1} MiB ({:.1} KiB per stream)",
                        b.name(),
                        h.opened,
                        h.open_s,
                        h.errors,
                        h.rss_before_bytes() as f64 / 1048576.0,
                        h.rss_held_bytes() as f64 / 1048576.0,
                        h.rss_per_stream_bytes() / 1024.0
                    ));
                    bar.inc(1);
                    points.push(h);
                }
                streams.push((
                    b,
                    scorecard::Streams {
                        what: format!(
                            "a fresh {} pair ([limits] max_streams = {}); each stream opened \
                             with a 1-byte round trip ({} at a time), all held idle {:.0} s, \
                             then one more round trip each",
                            b.name(),
                            most + 1024,
                            scorecard::streams::OPEN_CONCURRENCY,
                            STREAMS_SETTLE.as_secs_f64()
                        ),
                        points,
                    },
                ));
            }
        }
        let mut results = Vec::new();
        for (bi, ((b, path, cipher), cells)) in paths.iter().zip(runs).enumerate() {
            let idle = idle.get(bi).filter(|_| *b != Backend::Plain).cloned();
            if let Some(i) = &idle {
                say(format!(
                    "at rest   {:<10} {:.2} CPU-s/min, {:.1} MiB",
                    b.name(),
                    i.tunnel_cpu_s_per_min.median,
                    i.tunnel_rss_bytes.median / (1024.0 * 1024.0)
                ));
            }
            results.push(BackendResult {
                name: b.name().into(),
                protocol: path.protocol.clone(),
                cipher: cipher.clone(),
                fips: path.fips,
                path: path.path.clone(),
                results: cells
                    .into_iter()
                    .filter_map(WorkloadResult::from_runs)
                    .collect(),
                idle,
                streams: streams
                    .iter()
                    .find(|(sb, _)| sb == b)
                    .map(|(_, s)| s.clone()),
                churn: match b {
                    Backend::Hbone => WorkloadResult::from_runs(std::mem::take(&mut churn_runs))
                        .map(|result| Churn {
                        what: format!(
                            "node SVID re-issued every {} s, reloaded at the node's 2 s poll; \
                             node policy reloaded (SIGHUP) every {} s",
                            CHURN_EVERY.as_secs(),
                            CHURN_EVERY.as_secs() * u64::from(RELOAD_EVERY_NTH)
                        ),
                        changes: churn_changes.clone(),
                        change_failures: churn_failures,
                        result,
                    }),
                    Backend::Wireguard => {
                        WorkloadResult::from_runs(std::mem::take(&mut wg_churn_runs)).map(
                            |result| Churn {
                                what: format!(
                                    "a second WireGuard pair re-keyed every {WG_REKEY_EVERY} \
                                     by rekey_after_time; changes = handshakes initiated"
                                ),
                                changes: wg_rekeys.clone(),
                                change_failures: wg_rekey_failures,
                                result,
                            },
                        )
                    }
                    _ => None,
                },
            });
        }
        let fanout = (!fanout_points.is_empty()).then(|| scorecard::Fanout {
            what: format!(
                "HBONE, one proxy -> K nodes (each its own process and SVID \
                 spiffe://{TRUST_DOMAIN}/node-<i>), {} spread round-robin over them",
                w_label
            ),
            points: fanout_points,
        });
        Ok::<_, String>((results, fanout))
    })?;
    bar.finish_and_clear();

    let card = Scorecard {
        schema_version: scorecard::SCHEMA_VERSION,
        machine,
        reps,
        warmup_s: window.warmup.as_secs_f64(),
        measure_s: window.measure.as_secs_f64(),
        backends,
        fanout,
    };
    let table = card.to_table();
    write(&out.join("scorecard.txt"), &table)?;
    write(&out.join("scorecard.json"), &card.to_json())?;
    write(&out.join("scorecard.svg"), &card.to_svg())?;
    let dead: Vec<String> = card
        .backends
        .iter()
        .flat_map(|b| b.results.iter().map(move |c| (b, c)))
        .filter(|(_, c)| c.runs.iter().any(|m| m.ops == 0 && m.bytes == 0))
        .map(|(b, c)| format!("{} {}", b.name, c.workload.label()))
        .collect();
    let mut text = format!(
        "{table}\nwritten: {0}/scorecard.txt, {0}/scorecard.json, {0}/scorecard.svg (logs in {0}/logs)",
        out.display()
    );
    if card.errors() > 0 {
        text.push_str(&format!(
            "\nwarning: {} operations failed (see the errors column and the logs)",
            card.errors()
        ));
    }
    if !dead.is_empty() {
        return Err(format!(
            "{text}\nnothing got through in a run of: {}",
            dead.join(", ")
        ));
    }
    Ok(text)
}

/// One run of one workload through one path, with a live rate on the progress bar.
async fn measure_one(
    bar: &ProgressBar,
    b: Backend,
    path: &Path2,
    w: Workload,
    window: Window,
) -> Result<Measurement, String> {
    let addr = match w {
        Workload::Bulk { .. } => path.discard,
        _ => path.echo,
    };
    let progress = Arc::new(AtomicU64::new(0));
    let ticker = {
        let (bar, progress, label) = (
            bar.clone(),
            progress.clone(),
            format!("{} {}", b.name(), w.label()),
        );
        let bulk = matches!(w, Workload::Bulk { .. });
        tokio::spawn(async move {
            let (mut last, mut at) = (0u64, Instant::now());
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let now = progress.load(Ordering::Relaxed);
                let rate = (now - last) as f64 / at.elapsed().as_secs_f64();
                (last, at) = (now, Instant::now());
                bar.set_message(if bulk {
                    format!("{label}: {:.2} Gbit/s", rate * 8.0 / 1e9)
                } else {
                    format!("{label}: {rate:.0}/s")
                });
            }
        })
    };
    let m = scorecard::load::run(w, addr, window, &path.processes, progress).await;
    ticker.abort();
    m.map_err(|e| format!("{} {}: {e}", b.name(), w.label()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_failure_names_the_process_and_quotes_the_log_tail() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("hbone-node.log");
        let lines: Vec<String> = (1..=30).map(|i| format!("log line {i}")).collect();
        fs::write(&log, lines.join("\n")).unwrap();
        let config = dir.path().join("node.toml");
        let msg = start_failure(
            "fipstun node (node)",
            "exited (exit status: 1) before it was ready",
            "fipstun node --config node.toml",
            &config,
            &log,
        );
        assert!(msg.starts_with("fipstun node (node) exited (exit status: 1)"));
        assert!(msg.contains("command: fipstun node --config node.toml"));
        assert!(msg.contains(&format!("config:  {}", config.display())));
        assert!(msg.contains(&log.display().to_string()));
        assert!(msg.contains("| log line 30") && msg.contains("| log line 11"));
        assert!(!msg.contains("| log line 10\n"), "only the last 20 lines");
        assert!(msg.contains("Try:"));
    }

    #[test]
    fn the_budget_covers_the_rest_window_and_every_run() {
        // The default: 120 s, 3 reps of 16 cells and the two churn runs, one fan-out run.
        let (idle, w) = plan(Duration::from_secs(120), 3, 18, 1);
        assert_eq!(idle, Duration::from_secs(15));
        let per_run = w.warmup + w.measure;
        assert_eq!(per_run, Duration::from_secs(105) / 55);
        assert_eq!(w.warmup, per_run / 5);
        assert!(idle + per_run * 55 <= Duration::from_secs(120));
        // A long budget keeps the rest window and the warm-up capped.
        let (idle, w) = plan(Duration::from_secs(3600), 1, 4, 0);
        assert_eq!(
            (idle, w.warmup),
            (Duration::from_secs(15), Duration::from_secs(1))
        );
    }

    #[test]
    fn start_failure_says_when_the_log_is_missing_or_empty() {
        let dir = tempfile::tempdir().unwrap();
        let (config, log) = (dir.path().join("c.toml"), dir.path().join("none.log"));
        assert!(start_failure("p", "why", "cmd", &config, &log).contains("cannot read the log"));
        fs::write(&log, "").unwrap();
        assert!(start_failure("p", "why", "cmd", &config, &log).contains("the log is empty"));
    }
}
