//! Node and proxy configuration: the TOML file (DESIGN.md, "The binary"), the flags that
//! override it, and their validation into settings the runtime uses. Every error names where
//! the value came from (the file, or the flags) and the key.

use std::fmt;
use std::fs;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, ValueEnum};
use fipstun_hbone::ExpectedPeer;
use fipstun_identity::bundle::TrustBundle;
use fipstun_identity::spiffe::SpiffeId;
use fipstun_identity::svid::Svid;
use fipstun_planes::workload::EndpointSocket;
use fipstun_transport::policy::{Action, Cidr, Destination, Policy, Principal, Rule};
use fipstun_transport::{FipsRequirement, ForwarderConfig, Target};
#[cfg(feature = "wireguard")]
use fipstun_wireguard::{IpPrefix, MTU_RANGE, WgConfig, WgPeer, WgPrivateKey, WgPublicKey};
use serde::Deserialize;

use crate::duration::parse_duration;

/// How long streams may finish after SIGTERM/SIGINT when `drain` is not set.
const DEFAULT_DRAIN: Duration = Duration::from_secs(10);
/// HBONE's standard port (ztunnel's), the default `hbone.listen`.
const DEFAULT_HBONE_LISTEN: &str = "0.0.0.0:15008";
/// WireGuard's conventional port, the default `wireguard.listen`.
#[cfg(feature = "wireguard")]
const DEFAULT_WG_LISTEN: &str = "0.0.0.0:51820";

/// A configuration error: where (file or flags), which key, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConfigError {
    /// The config file, or `command line`.
    pub(crate) origin: String,
    /// The key, in the file's dotted notation (`listener[0].node_id`); `None` for a file that
    /// does not parse at all.
    pub(crate) key: Option<String>,
    /// What is wrong.
    pub(crate) message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.key {
            Some(key) => write!(f, "{}: `{key}`: {}", self.origin, self.message),
            None => write!(f, "{}: {}", self.origin, self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Log output format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// The identity flags node and proxy share: `--identity-dir` or `--workload-api`.
#[derive(Args, Debug, Default)]
pub(crate) struct IdentityArgs {
    /// `identity.dir`: directory with svid.pem, svid-key.pem and bundle.pem.
    #[arg(long, value_name = "DIR")]
    pub(crate) identity_dir: Option<PathBuf>,
    /// `identity.workload_api`: take SVIDs from a SPIFFE Workload API (SPIRE agent) socket,
    /// `unix:///path`, instead of files.
    #[arg(long, value_name = "URI", conflicts_with = "identity_dir")]
    pub(crate) workload_api: Option<String>,
}

impl IdentityArgs {
    /// The `[identity]` these flags stand for, if any (flag paths are relative to the working
    /// directory).
    fn to_file(&self) -> Option<IdentityFile> {
        if let Some(uri) = &self.workload_api {
            return Some(IdentityFile {
                workload_api: Some(uri.clone()),
                ..IdentityFile::default()
            });
        }
        self.identity_dir.as_ref().map(|d| IdentityFile {
            dir: Some(std::env::current_dir().unwrap_or_default().join(d)),
            ..IdentityFile::default()
        })
    }
}

/// The observability flags node and proxy share (`access_log` and `[admin]` in the file).
#[derive(Args, Debug, Default)]
pub(crate) struct ObserveArgs {
    /// `access_log`: one `fipstun::access` event per stream: `on` (default), `off`, or
    /// `sample:N` (1 in N streams; refusals and errors always).
    #[arg(long, value_name = "on|off|sample:N")]
    pub(crate) access_log: Option<String>,
    /// `admin.ready`: serve `GET /healthz/ready` on this address (ztunnel: 15021).
    #[arg(long, value_name = "ADDR")]
    pub(crate) ready: Option<String>,
    /// `admin.admin`: serve `GET /config_dump` and `/healthz/ready` on this address
    /// (ztunnel: 127.0.0.1:15000; keep it on loopback).
    #[arg(long, value_name = "ADDR")]
    pub(crate) admin: Option<String>,
}

/// `fipstun node` flags. Each overrides the same key of `--config`; without a file they are
/// the whole configuration.
#[derive(Args, Debug, Default)]
pub(crate) struct NodeArgs {
    /// TOML configuration file (see DESIGN.md).
    #[arg(long)]
    pub(crate) config: Option<PathBuf>,
    /// `hbone.listen`: serve HBONE (mTLS + HTTP/2 CONNECT) on this address.
    #[arg(long, value_name = "ADDR")]
    pub(crate) hbone_listen: Option<String>,
    /// `hbone.allow` (repeatable): SPIFFE IDs allowed to connect; default: own trust domain.
    #[arg(long = "allow", value_name = "SPIFFE_ID")]
    pub(crate) allow: Vec<String>,
    /// `hbone.hostnames`: CONNECT targets by name: `reject` (default), `allow`, or DNS
    /// suffixes separated by commas (`svc.cluster.local,example.internal`). The node resolves
    /// a name, then its policy judges the address.
    #[arg(long, value_name = "POLICY")]
    pub(crate) hostnames: Option<String>,
    /// `wireguard.listen`: the UDP address of the `[wireguard]` section in the file.
    #[arg(long, value_name = "ADDR")]
    pub(crate) wireguard_listen: Option<String>,
    /// Where the SVID comes from.
    #[command(flatten)]
    pub(crate) identity: IdentityArgs,
    /// `allow_targets` (repeatable): shorthand for one `[[policy]]` allow rule from the
    /// `--allow` IDs (or any peer) to these destinations (`CIDR[:PORTS]`). Without any rule
    /// the node refuses every stream.
    #[arg(long = "allow-target", value_name = "CIDR[:PORTS]")]
    pub(crate) allow_targets: Vec<String>,
    /// `fips`: `required` (default: HBONE only, in the validated module) or `off` (needed to
    /// start the WireGuard backend).
    #[arg(long, value_name = "MODE")]
    pub(crate) fips: Option<String>,
    /// `metrics`: serve Prometheus metrics (GET /metrics) on this address.
    #[arg(long, value_name = "ADDR")]
    pub(crate) metrics: Option<String>,
    /// `drain`: how long streams may finish after SIGTERM, e.g. `10s`, `500ms`.
    #[arg(long, value_name = "DURATION")]
    pub(crate) drain: Option<String>,
    /// Log format (filter with RUST_LOG, default `info`).
    #[arg(long, value_enum, default_value = "text")]
    pub(crate) log_format: LogFormat,
    /// Access log and admin endpoints.
    #[command(flatten)]
    pub(crate) observe: ObserveArgs,
}

/// `fipstun proxy` flags. `--listen/--target/--via/--node/--node-id` describe one listener:
/// they override the file's only `[[listener]]` or add one when the file has none.
#[derive(Args, Debug, Default)]
pub(crate) struct ProxyArgs {
    /// TOML configuration file (see DESIGN.md).
    #[arg(long)]
    pub(crate) config: Option<PathBuf>,
    /// `listener.listen`: the local plaintext TCP address.
    #[arg(long, value_name = "ADDR")]
    pub(crate) listen: Option<String>,
    /// `listener.mode`: `fixed` (every connection to `--target`, the default), `redirect`
    /// (iptables-captured connections to their original destination, default listen
    /// 0.0.0.0:15001) or `socks5` (SOCKS5 CONNECT, default listen 127.0.0.1:15080). With
    /// `redirect` or `socks5`, `--node` and `--node-id` make one route for every destination.
    #[arg(long, value_name = "MODE")]
    pub(crate) mode: Option<String>,
    /// `listener.target`: where the node sends the stream (as the node sees it).
    #[arg(long, value_name = "ADDR")]
    pub(crate) target: Option<String>,
    /// `listener.via`: hbone, wireguard or plain.
    #[arg(long, value_name = "BACKEND")]
    pub(crate) via: Option<String>,
    /// `listener.node`: the HBONE node's address.
    #[arg(long, value_name = "ADDR")]
    pub(crate) node: Option<String>,
    /// `listener.node_id`: the SPIFFE ID the HBONE node must present.
    #[arg(long, value_name = "SPIFFE_ID")]
    pub(crate) node_id: Option<String>,
    /// Where the SVID comes from.
    #[command(flatten)]
    pub(crate) identity: IdentityArgs,
    /// `fips`: `required` (default: only `via = "hbone"`) or `off` (allows `wireguard` and
    /// `plain` listeners).
    #[arg(long, value_name = "MODE")]
    pub(crate) fips: Option<String>,
    /// `metrics`: serve Prometheus metrics (GET /metrics) on this address.
    #[arg(long, value_name = "ADDR")]
    pub(crate) metrics: Option<String>,
    /// `drain`: how long streams may finish after SIGTERM, e.g. `10s`, `500ms`.
    #[arg(long, value_name = "DURATION")]
    pub(crate) drain: Option<String>,
    /// Log format (filter with RUST_LOG, default `info`).
    #[arg(long, value_enum, default_value = "text")]
    pub(crate) log_format: LogFormat,
    /// Access log and admin endpoints.
    #[command(flatten)]
    pub(crate) observe: ObserveArgs,
}

// ---------------------------------------------------------------------------------------------
// The file as written. Values stay strings here so that validation can name the key.

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeFile {
    metrics: Option<String>,
    access_log: Option<String>,
    admin: Option<AdminFile>,
    drain: Option<String>,
    fips: Option<String>,
    allow_targets: Option<Vec<String>>,
    #[serde(default)]
    policy: Vec<Rule>,
    limits: Option<LimitsFile>,
    identity: Option<IdentityFile>,
    hbone: Option<HboneFile>,
    wireguard: Option<WireguardFile>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProxyFile {
    metrics: Option<String>,
    access_log: Option<String>,
    admin: Option<AdminFile>,
    drain: Option<String>,
    fips: Option<String>,
    identity: Option<IdentityFile>,
    wireguard: Option<WireguardFile>,
    limits: Option<LimitsFile>,
    #[serde(default)]
    listener: Vec<ListenerFile>,
    #[serde(default)]
    route: Vec<RouteFile>,
}

/// `[[route]]`: where a captured (redirect) or SOCKS5 stream to an address in `cidr` goes.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteFile {
    cidr: Option<String>,
    via: Option<String>,
    node: Option<String>,
    node_id: Option<String>,
    node_trust_domain: Option<String>,
}

/// `[admin]`: ztunnel's three endpoints, each its own optional listener.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AdminFile {
    ready: Option<String>,
    stats: Option<String>,
    admin: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct IdentityFile {
    dir: Option<PathBuf>,
    workload_api: Option<String>,
    istio_ca: Option<IstioCaFile>,
    /// The SPIFFE ID to ask the Istio CA for.
    id: Option<String>,
    /// The SVID lifetime to ask the Istio CA for (the CA may clamp it).
    ttl: Option<String>,
}

/// `[identity] istio_ca = { ... }`: an Istio CA API endpoint (istiod :15012, or `fipstun ca
/// serve`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct IstioCaFile {
    address: Option<String>,
    token_file: Option<PathBuf>,
    root_cert: Option<PathBuf>,
    server_name: Option<String>,
    server_id: Option<String>,
    cluster_id: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HboneFile {
    listen: Option<String>,
    #[serde(default)]
    allow: Vec<String>,
    max_connections: Option<u32>,
    max_handshakes: Option<u32>,
    handshake_timeout: Option<String>,
    max_connection_age: Option<String>,
    hostnames: Option<HostnamesFile>,
}

/// `[hbone] hostnames`: `"reject"` (the default: only `ip:port` targets, what ztunnel sends),
/// `"allow"` (any DNS name, resolved by the node before its policy judges the address), or a
/// list of DNS suffixes (`["svc.cluster.local"]`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum HostnamesFile {
    Word(String),
    Suffixes(Vec<String>),
}

/// `[limits]`: the forwarder's bounds, for node and proxy alike.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsFile {
    max_streams: Option<usize>,
    max_streams_per_peer: Option<usize>,
    dial_timeout: Option<String>,
    idle_timeout: Option<String>,
}

// Parsed in every build, so that a binary without the `wireguard` feature refuses a
// `[wireguard]` section by naming the feature rather than as unknown keys.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(not(feature = "wireguard"), allow(dead_code))]
struct WireguardFile {
    listen: Option<String>,
    private_key: Option<PathBuf>,
    address: Option<String>,
    /// For testing only: session age after which this end re-keys (WireGuard's 120 s).
    rekey_after_time: Option<String>,
    mtu: Option<u16>,
    tcp_buffer_bytes: Option<u64>,
    udp_socket_buffer_bytes: Option<u64>,
    handshake_rate_limit: Option<u64>,
    connect_timeout: Option<String>,
    #[serde(default)]
    peer: Vec<PeerFile>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(not(feature = "wireguard"), allow(dead_code))]
struct PeerFile {
    public_key: String,
    #[serde(default)]
    allowed_ips: Vec<String>,
    endpoint: Option<String>,
    spiffe_id: Option<String>,
    persistent_keepalive: Option<u16>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListenerFile {
    mode: Option<String>,
    listen: Option<String>,
    target: Option<String>,
    via: Option<String>,
    node: Option<String>,
    node_id: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Validated settings.

/// `fips = "required" | "off"`: the default is required.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FipsMode {
    /// Only the HBONE backend, with all crypto in the validated AWS-LC module.
    Required,
    /// Non-FIPS backends (WireGuard, plain TCP) may run too; said explicitly.
    Off,
}

impl FipsMode {
    fn parse(ctx: &Ctx, s: Option<&str>) -> Result<Self, ConfigError> {
        match s {
            None | Some("required") => Ok(Self::Required),
            Some("off") => Ok(Self::Off),
            Some(other) => Err(ctx.err(
                "fips",
                format!("`{other}`: expected \"required\" (the default) or \"off\""),
            )),
        }
    }

    /// `required` or `off`, as in the config and the ready line.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Required => "required",
            Self::Off => "off",
        }
    }

    /// The transport layer's requirement.
    pub(crate) fn requirement(self) -> FipsRequirement {
        match self {
            Self::Required => FipsRequirement::Required,
            Self::Off => FipsRequirement::NotRequired,
        }
    }
}

/// `access_log = "on" | "off" | "sample:N"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AccessLog {
    /// One event per stream (the default).
    On,
    /// None.
    Off,
    /// One in N finished streams; refusals and errors always.
    Sample(u64),
}

impl AccessLog {
    fn parse(ctx: &Ctx, s: Option<&str>) -> Result<Self, ConfigError> {
        let bad = |s: &str| {
            ctx.err(
                "access_log",
                format!("`{s}`: expected \"on\" (the default), \"off\" or \"sample:N\" (N >= 1)"),
            )
        };
        match s.map(str::trim) {
            None | Some("on") => Ok(Self::On),
            Some("off") => Ok(Self::Off),
            Some(other) => match other
                .strip_prefix("sample:")
                .map(|n| n.trim().parse::<u64>())
            {
                Some(Ok(1)) => Ok(Self::On),
                Some(Ok(n)) if n > 1 => Ok(Self::Sample(n)),
                _ => Err(bad(other)),
            },
        }
    }

    /// As written in the config (`on`, `off`, `sample:N`).
    pub(crate) fn label(self) -> String {
        match self {
            Self::On => "on".into(),
            Self::Off => "off".into(),
            Self::Sample(n) => format!("sample:{n}"),
        }
    }
}

/// Access log and admin endpoints of a node or proxy. The `stats` listener is the
/// `metrics` key (`NodeConfig::metrics`, `ProxyConfig::metrics`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Observe {
    /// `access_log`.
    pub(crate) access_log: AccessLog,
    /// `admin.ready`: `GET /healthz/ready`.
    pub(crate) ready: Option<SocketAddr>,
    /// `admin.admin`: `GET /config_dump` and `/healthz/ready`.
    pub(crate) admin: Option<SocketAddr>,
}

/// `access_log`, `[admin]` and `metrics` with the flags laid over them: the observability
/// settings and the stats (metrics) address. `metrics` and `admin.stats` name the same
/// listener; set differently, they are an error (`--metrics` overrides both).
fn load_observe(
    ctx: &Ctx,
    metrics: Option<&str>,
    access_log: Option<&str>,
    admin: Option<&AdminFile>,
    args: &ObserveArgs,
    metrics_flag: bool,
) -> Result<(Option<SocketAddr>, Observe), ConfigError> {
    let admin_file = admin;
    let metrics = ctx.opt_addr("metrics", metrics)?;
    let stats = match admin_file.and_then(|a| a.stats.as_deref()) {
        Some(s) if !metrics_flag => ctx.opt_addr("admin.stats", Some(s))?,
        _ => None,
    };
    let stats = match (metrics, stats) {
        (Some(m), Some(s)) if m != s => {
            return Err(ctx.err(
                "admin.stats",
                format!("`{s}` and `metrics` = `{m}` name the same listener; set one of them"),
            ));
        }
        (m, s) => m.or(s),
    };
    let pick = |flag: &Option<String>, file: Option<&String>| flag.clone().or(file.cloned());
    let ready = pick(&args.ready, admin_file.and_then(|a| a.ready.as_ref()));
    let admin = pick(&args.admin, admin_file.and_then(|a| a.admin.as_ref()));
    let access_log = args.access_log.as_deref().or(access_log);
    Ok((
        stats,
        Observe {
            access_log: AccessLog::parse(ctx, access_log)?,
            ready: ctx.opt_addr("admin.ready", ready.as_deref())?,
            admin: ctx.opt_addr("admin.admin", admin.as_deref())?,
        },
    ))
}

/// What `fipstun node` runs.
#[derive(Debug)]
pub(crate) struct NodeConfig {
    /// Prometheus endpoint (`metrics`, or `admin.stats`).
    pub(crate) metrics: Option<SocketAddr>,
    /// Access log and the other admin endpoints.
    pub(crate) observe: Observe,
    /// Drain limit after SIGTERM/SIGINT.
    pub(crate) drain: Duration,
    /// Whether only the FIPS backend may run.
    pub(crate) fips: FipsMode,
    /// Who may reach what: `[[policy]]` plus the `allow_targets` shorthand; no rule = deny all.
    pub(crate) policy: Policy,
    /// `[limits]` of the forwarders.
    pub(crate) limits: ForwarderConfig,
    /// The SVID files (needed by HBONE).
    pub(crate) identity: Option<Identity>,
    /// The HBONE server.
    pub(crate) hbone: Option<HboneSettings>,
    /// The WireGuard node (accepting inbound).
    pub(crate) wireguard: Option<WgSettings>,
}

/// `[hbone]` of a node.
#[derive(Debug)]
pub(crate) struct HboneSettings {
    /// Where to listen.
    pub(crate) listen: SocketAddr,
    /// Who may connect; empty = anyone in the node's own trust domain.
    pub(crate) allow: Vec<SpiffeId>,
    /// Connection limits and lifetimes (`max_connections`, `max_handshakes`,
    /// `handshake_timeout`, `max_connection_age`; the library's defaults otherwise).
    pub(crate) server: fipstun_hbone::ServerConfig,
}

/// What a configuration asking for WireGuard gets from a binary built without it: the error
/// names the feature, so the fix is one rebuild away.
#[cfg(not(feature = "wireguard"))]
const NO_WIREGUARD: &str = "this fipstun binary was built without the `wireguard` feature \
     (cargo build -p fipstun-cli --no-default-features), so it has no WireGuard backend; \
     rebuild with `--features wireguard` (a default feature) or use via = \"hbone\"";

/// Without the `wireguard` feature no configuration holds WireGuard settings: loading one is
/// refused ([`NO_WIREGUARD`]), so this type has no values.
#[cfg(not(feature = "wireguard"))]
#[derive(Debug)]
pub(crate) enum WgSettings {}

/// `[wireguard]` of a node or proxy.
#[cfg(feature = "wireguard")]
#[derive(Debug)]
pub(crate) struct WgSettings {
    /// UDP address.
    pub(crate) listen: SocketAddr,
    /// Our static key, read from `private_key`.
    pub(crate) private_key: WgPrivateKey,
    /// Our tunnel-internal address.
    pub(crate) address: IpAddr,
    /// The peers.
    pub(crate) peers: Vec<WgPeer>,
    /// `rekey_after_time`: session age after which this end re-keys; WireGuard's
    /// REKEY_AFTER_TIME (120 s, whitepaper section 6.1) unless set, for testing, to less.
    pub(crate) rekey_after_time: Duration,
    /// `mtu`: the inner MTU (default 1420, as wireguard-go).
    pub(crate) mtu: u16,
    /// `tcp_buffer_bytes`: receive and send buffer of each tunnelled TCP connection (the
    /// window; default 1 MiB). Memory per busy stream is about twice this.
    pub(crate) tcp_buffer_bytes: usize,
    /// `udp_socket_buffer_bytes`: SO_RCVBUF/SO_SNDBUF asked of the kernel (default 8 MiB).
    pub(crate) udp_socket_buffer_bytes: usize,
    /// `handshake_rate_limit`: handshakes per second per source IP before cookie replies
    /// (default 100).
    pub(crate) handshake_rate_limit: u64,
    /// `connect_timeout`: how long opening a tunnelled stream may take (default 10 s).
    pub(crate) connect_timeout: Duration,
}

#[cfg(feature = "wireguard")]
impl WgSettings {
    /// The library configuration these settings describe (inbound off; the node turns it on).
    pub(crate) fn wg_config(&self, fips: FipsMode) -> WgConfig {
        let mut c = WgConfig::new(self.private_key.clone(), self.listen, self.address);
        c.peers = self.peers.clone();
        c.fips = fips.requirement();
        c.rekey_after_time = self.rekey_after_time;
        c.mtu = self.mtu;
        c.tcp_buffer_bytes = self.tcp_buffer_bytes;
        c.udp_socket_buffer_bytes = self.udp_socket_buffer_bytes;
        c.handshake_rate_limit = self.handshake_rate_limit;
        c.connect_timeout = self.connect_timeout;
        c
    }
}

/// Where a node or proxy gets its SVID.
#[derive(Debug)]
pub(crate) enum Identity {
    /// Files from `fipstun ca issue`, loaded and checked at start, re-read when replaced.
    Files(IdentityFiles),
    /// A SPIFFE Workload API endpoint (a SPIRE agent); SVIDs and bundles are streamed.
    WorkloadApi(EndpointSocket),
    /// The Istio CA API (istiod, or `fipstun ca serve`): CSRs signed on a rotation schedule.
    IstioCa(Box<IstioCaSettings>),
}

impl Identity {
    /// A short name of the source, for logs and the config dump.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Self::Files(_) => "files",
            Self::WorkloadApi(_) => "workload_api",
            Self::IstioCa(_) => "istio_ca",
        }
    }
}

/// `[identity] istio_ca`, validated.
#[derive(Debug)]
pub(crate) struct IstioCaSettings {
    /// The SPIFFE ID asked for.
    pub(crate) id: SpiffeId,
    /// The SVID lifetime asked for (`None`: the CA's default).
    pub(crate) ttl: Option<Duration>,
    /// The client: address, server authentication, token.
    pub(crate) client: fipstun_planes::istio::IstioCaClientConfig,
    /// The trust bundle of `id`'s trust domain (`root_cert`): peers are verified against it.
    pub(crate) bundle: TrustBundle,
}

/// `[identity]`: exactly one of `dir`, `workload_api` and `istio_ca`.
fn identity_source(ctx: &Ctx, i: &IdentityFile) -> Result<Identity, ConfigError> {
    let set = [
        i.dir.is_some(),
        i.workload_api.is_some(),
        i.istio_ca.is_some(),
    ];
    if set.iter().filter(|s| **s).count() > 1 {
        return Err(ctx.err(
            "identity",
            "set one of dir, workload_api and istio_ca, not several",
        ));
    }
    if i.istio_ca.is_none() {
        for (key, present) in [
            ("identity.id", i.id.is_some()),
            ("identity.ttl", i.ttl.is_some()),
        ] {
            if present {
                return Err(ctx.err(key, "only used with istio_ca"));
            }
        }
    }
    match (&i.dir, &i.workload_api, &i.istio_ca) {
        (Some(dir), _, _) => Ok(Identity::Files(load_identity(ctx, &ctx.path(dir))?)),
        (_, Some(uri), _) => EndpointSocket::parse(uri)
            .map(Identity::WorkloadApi)
            .map_err(|e| ctx.err("identity.workload_api", e.to_string())),
        (_, _, Some(ca)) => istio_ca(ctx, i, ca).map(|s| Identity::IstioCa(Box::new(s))),
        (None, None, None) => Err(ctx.err(
            "identity",
            "needs dir = \"...\" (SVID files), workload_api = \"unix:///...\" (SPIRE) or \
             istio_ca = { address = \"...\", ... } (istiod)",
        )),
    }
}

/// No `[identity]` and no identity flag, but one is needed: the SPIFFE Workload API at
/// `SPIFFE_ENDPOINT_SOCKET`, as every SPIFFE workload looks for it, if that is set.
fn identity_from_env(ctx: &Ctx) -> Result<Option<Identity>, ConfigError> {
    match std::env::var(EndpointSocket::ENV) {
        Ok(v) => EndpointSocket::parse(&v)
            .map(|s| Some(Identity::WorkloadApi(s)))
            .map_err(|e| ctx.err(EndpointSocket::ENV, e.to_string())),
        Err(_) => Ok(None),
    }
}

fn istio_ca(ctx: &Ctx, i: &IdentityFile, ca: &IstioCaFile) -> Result<IstioCaSettings, ConfigError> {
    use fipstun_identity::tls::Authorizer;
    use fipstun_planes::istio::{BearerToken, IstioCaClientConfig, ServerAuth};
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;

    let id = i.id.as_deref().ok_or_else(|| {
        ctx.err(
            "identity.id",
            "istio_ca needs id = \"spiffe://...\": the SPIFFE ID to ask the CA for",
        )
    })?;
    let id = ctx.spiffe_id("identity.id", id)?;
    let ttl = i
        .ttl
        .as_deref()
        .map(|t| ctx.duration("identity.ttl", t))
        .transpose()?;
    let address = ca.address.as_deref().ok_or_else(|| {
        ctx.err(
            "identity.istio_ca.address",
            "needs address = \"host:port\" (istiod: istiod.istio-system.svc:15012)",
        )
    })?;
    if address
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse::<u16>().ok())
        .is_none()
    {
        return Err(ctx.err(
            "identity.istio_ca.address",
            format!("`{address}` is not host:port"),
        ));
    }
    let root_cert = ca.root_cert.as_deref().ok_or_else(|| {
        ctx.err(
            "identity.istio_ca.root_cert",
            "needs root_cert = \"PATH\": the mesh's root certificate (Istio's root-cert.pem), \
             which verifies the CA server and every peer",
        )
    })?;
    let root_path = ctx.path(root_cert);
    let pem = std::fs::read_to_string(&root_path).map_err(|e| {
        ctx.err(
            "identity.istio_ca.root_cert",
            format!("{}: {e}", root_path.display()),
        )
    })?;
    let roots = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            ctx.err(
                "identity.istio_ca.root_cert",
                format!("{}: {e}", root_path.display()),
            )
        })?;
    if roots.is_empty() {
        return Err(ctx.err(
            "identity.istio_ca.root_cert",
            format!("{}: no certificate in it", root_path.display()),
        ));
    }
    let bundle = TrustBundle::from_pem(id.trust_domain().clone(), &pem).map_err(|e| {
        ctx.err(
            "identity.istio_ca.root_cert",
            format!("{}: {e}", root_path.display()),
        )
    })?;
    let trust = fipstun_identity::bundle::TrustStore::new(
        fipstun_identity::bundle::BundleSet::new().with(bundle.clone()),
    );
    let server_auth = match &ca.server_id {
        Some(sid) => {
            let sid = ctx.spiffe_id("identity.istio_ca.server_id", sid)?;
            ServerAuth::Spiffe {
                trust: trust.clone(),
                authorizer: Authorizer::ids([sid]),
            }
        }
        None => ServerAuth::DnsName { roots },
    };
    let mut client = IstioCaClientConfig::new(address, server_auth);
    if let Some(name) = &ca.server_name {
        if ca.server_id.is_some() {
            return Err(ctx.err(
                "identity.istio_ca.server_name",
                "set server_name (istiod's DNS certificate) or server_id (an SVID), not both",
            ));
        }
        client.server_name = name.clone();
    } else if ca.server_id.is_some() {
        // Sent as SNI only: the SVID is verified by its SPIFFE ID.
        client.server_name = address
            .rsplit_once(':')
            .map(|(h, _)| h.trim_matches(['[', ']']).to_string())
            .unwrap_or_default();
        if client.server_name.parse::<IpAddr>().is_ok() || client.server_name.is_empty() {
            client.server_name = fipstun_planes::istio::ISTIOD_SERVER_NAME.into();
        }
    }
    client.token = match &ca.token_file {
        Some(f) => BearerToken::File(ctx.path(f)),
        None => BearerToken::None,
    };
    client.issued_trust = Some(trust);
    client.cluster_id = ca.cluster_id.clone();
    Ok(IstioCaSettings {
        id,
        ttl,
        client,
        bundle,
    })
}

/// An SVID, its key and the bundle of its trust domain, loaded from an `identity.dir`.
#[derive(Debug)]
pub(crate) struct IdentityFiles {
    /// The directory they came from.
    pub(crate) dir: PathBuf,
    /// The SVID with its key.
    pub(crate) svid: Svid,
    /// The roots of the SVID's trust domain.
    pub(crate) bundle: TrustBundle,
}

/// What `fipstun proxy` runs.
#[derive(Debug)]
pub(crate) struct ProxyConfig {
    /// Prometheus endpoint (`metrics`, or `admin.stats`).
    pub(crate) metrics: Option<SocketAddr>,
    /// Access log and the other admin endpoints.
    pub(crate) observe: Observe,
    /// Drain limit after SIGTERM/SIGINT.
    pub(crate) drain: Duration,
    /// Whether only FIPS backends may be used.
    pub(crate) fips: FipsMode,
    /// `[limits]` of each listener's forwarder.
    pub(crate) limits: ForwarderConfig,
    /// The SVID files (needed by HBONE listeners).
    pub(crate) identity: Option<Identity>,
    /// The WireGuard node shared by `via = "wireguard"` listeners.
    pub(crate) wireguard: Option<WgSettings>,
    /// The local listeners.
    pub(crate) listeners: Vec<ListenerSettings>,
    /// `[[route]]`s for redirect and SOCKS5 listeners.
    pub(crate) routes: Vec<RouteSettings>,
}

/// One `[[listener]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ListenerSettings {
    /// The local plaintext TCP address.
    pub(crate) listen: SocketAddr,
    /// What its connections ask for.
    pub(crate) kind: ListenerKind,
}

/// `mode` of a `[[listener]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ListenerKind {
    /// `mode = "fixed"` (the default): every connection goes to `target` through `via`.
    Fixed {
        /// The final destination, as the node sees it (an address, or a name the node
        /// resolves).
        target: Target,
        /// The backend.
        via: Via,
    },
    /// `mode = "redirect"`: connections captured by iptables (REDIRECT to this listener); the
    /// destination is the original one (`SO_ORIGINAL_DST`), routed by `[[route]]`.
    Redirect,
    /// `mode = "socks5"`: SOCKS5 CONNECT (RFC 1928, no authentication), routed by `[[route]]`.
    Socks5,
}

impl ListenerKind {
    /// The mode's name in the config and in metrics and logs.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            Self::Fixed { via, .. } => via.label(),
            Self::Redirect => "redirect",
            Self::Socks5 => "socks5",
        }
    }

    /// Whether streams are routed by `[[route]]`.
    pub(crate) fn is_routed(&self) -> bool {
        !matches!(self, Self::Fixed { .. })
    }
}

/// Where redirect listeners listen unless told: ztunnel's outbound capture port.
pub(crate) const REDIRECT_LISTEN: &str = "0.0.0.0:15001";
/// Where SOCKS5 listeners listen unless told: ztunnel's SOCKS5 port, loopback only.
pub(crate) const SOCKS5_LISTEN: &str = "127.0.0.1:15080";

/// One `[[route]]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RouteSettings {
    /// The destinations it covers (longest prefix wins).
    pub(crate) cidr: Cidr,
    /// How they are reached.
    pub(crate) via: RouteVia,
}

/// How a route's destinations are reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RouteVia {
    /// HBONE to a node that must prove to be `expected`.
    Hbone {
        /// Which node.
        node: RouteNode,
        /// The identities it may present.
        expected: ExpectedPeer,
    },
    /// The process's WireGuard node (its peers' allowed IPs route further).
    #[cfg(feature = "wireguard")]
    Wireguard,
    /// Direct TCP, no tunnel (a destination outside the mesh).
    Plain,
}

impl RouteVia {
    /// The backend's name.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            Self::Hbone { .. } => "hbone",
            #[cfg(feature = "wireguard")]
            Self::Wireguard => "wireguard",
            Self::Plain => "plain",
        }
    }
}

/// `node` of an HBONE route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RouteNode {
    /// One node for the whole range.
    Addr(SocketAddr),
    /// The destination's own IP at this port (`"same-ip"`: 15008), as ztunnel reaches a
    /// destination whose node captures its HBONE port.
    SameIp(u16),
}

/// How a listener's streams travel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Via {
    /// HBONE to `node`, which must present `node_id`.
    Hbone {
        /// The node's HBONE address.
        node: SocketAddr,
        /// Its SPIFFE ID.
        node_id: SpiffeId,
    },
    /// The process's WireGuard node.
    #[cfg(feature = "wireguard")]
    Wireguard,
    /// Direct TCP, no tunnel.
    Plain,
}

impl Via {
    /// The backend's metrics label.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            Via::Hbone { .. } => "hbone",
            #[cfg(feature = "wireguard")]
            Via::Wireguard => "wireguard",
            Via::Plain => "plain",
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Loading.

/// Reads values and reports errors against one origin; relative paths in a file are taken
/// relative to the file's directory.
struct Ctx {
    origin: String,
    base: PathBuf,
}

impl Ctx {
    fn new(file: Option<&Path>) -> Self {
        match file {
            Some(f) => Self {
                origin: f.display().to_string(),
                base: f.parent().map(Path::to_path_buf).unwrap_or_default(),
            },
            None => Self {
                origin: "command line".into(),
                base: PathBuf::new(),
            },
        }
    }

    fn err(&self, key: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            origin: self.origin.clone(),
            key: Some(key.into()),
            message: message.into(),
        }
    }

    fn path(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base.join(p)
        }
    }

    fn addr(&self, key: &str, s: &str) -> Result<SocketAddr, ConfigError> {
        s.trim().parse().map_err(|_| {
            self.err(
                key,
                format!("`{s}` is not a socket address like 127.0.0.1:15008 or [::1]:15008"),
            )
        })
    }

    fn opt_addr(&self, key: &str, s: Option<&str>) -> Result<Option<SocketAddr>, ConfigError> {
        s.map(|s| self.addr(key, s)).transpose()
    }

    fn spiffe_id(&self, key: &str, s: &str) -> Result<SpiffeId, ConfigError> {
        SpiffeId::parse(s).map_err(|e| self.err(key, format!("`{s}` is not a SPIFFE ID: {e}")))
    }

    #[cfg(feature = "wireguard")]
    fn prefix(&self, key: &str, s: &str) -> Result<IpPrefix, ConfigError> {
        s.trim().parse().map_err(|_| {
            self.err(
                key,
                format!("`{s}` is not an IP prefix like 127.0.0.0/8, 10.0.0.1 or ::1/128"),
            )
        })
    }

    fn duration(&self, key: &str, s: &str) -> Result<Duration, ConfigError> {
        parse_duration(s).map_err(|e| self.err(key, e))
    }

    /// `[limits]` over the forwarder's defaults.
    fn limits(&self, l: Option<&LimitsFile>) -> Result<ForwarderConfig, ConfigError> {
        let mut c = ForwarderConfig::default();
        let Some(l) = l else { return Ok(c) };
        let (total, per_peer) = (
            l.max_streams.unwrap_or(c.max_streams),
            l.max_streams_per_peer.unwrap_or(c.max_streams_per_peer),
        );
        c = c.with_max_streams(total, per_peer);
        if let Some(t) = &l.dial_timeout {
            c = c.with_dial_timeout(self.duration("limits.dial_timeout", t)?);
        }
        if let Some(t) = &l.idle_timeout {
            c = c.with_idle_timeout(self.duration("limits.idle_timeout", t)?);
        }
        Ok(c)
    }

    fn drain(&self, s: Option<&str>) -> Result<Duration, ConfigError> {
        s.map_or(Ok(DEFAULT_DRAIN), |s| {
            parse_duration(s).map_err(|e| self.err("drain", e))
        })
    }
}

fn read_file<T: for<'de> Deserialize<'de> + Default>(
    path: Option<&Path>,
) -> Result<T, ConfigError> {
    let Some(path) = path else {
        return Ok(T::default());
    };
    let fail = |message: String| ConfigError {
        origin: path.display().to_string(),
        key: None,
        message,
    };
    let text = fs::read_to_string(path).map_err(|e| fail(format!("cannot read: {e}")))?;
    toml::from_str(&text).map_err(|e| fail(e.to_string().trim_end().to_string()))
}

/// [`load_identity`] again at run time (the files were replaced, e.g. by `fipstun ca issue
/// --force`); errors name the directory.
pub(crate) fn reload_identity(dir: &Path) -> Result<IdentityFiles, ConfigError> {
    let ctx = Ctx {
        origin: "identity reload".into(),
        base: PathBuf::new(),
    };
    load_identity(&ctx, dir)
}

/// Load the SVID, key and bundle from `dir` and check that the SVID is valid now and chains to
/// the bundle.
fn load_identity(ctx: &Ctx, dir: &Path) -> Result<IdentityFiles, ConfigError> {
    let files = fipstun_identity::files::IdentityFiles::load(dir)
        .map_err(|e| ctx.err("identity.dir", e.to_string()))?;
    Ok(IdentityFiles {
        dir: dir.to_path_buf(),
        svid: files.svid,
        bundle: files.bundle,
    })
}

#[cfg(not(feature = "wireguard"))]
fn load_wireguard(ctx: &Ctx, _: &WireguardFile) -> Result<WgSettings, ConfigError> {
    Err(ctx.err("wireguard", NO_WIREGUARD))
}

/// WireGuard's REKEY_AFTER_TIME (whitepaper section 6.1): the default session age at which
/// the initiator re-keys.
#[cfg(feature = "wireguard")]
pub(crate) const WG_REKEY_AFTER_TIME: Duration = Duration::from_secs(120);

#[cfg(feature = "wireguard")]
fn load_wireguard(ctx: &Ctx, w: &WireguardFile) -> Result<WgSettings, ConfigError> {
    let listen = ctx.addr(
        "wireguard.listen",
        w.listen.as_deref().unwrap_or(DEFAULT_WG_LISTEN),
    )?;
    let key_path = w.private_key.as_deref().ok_or_else(|| {
        ctx.err(
            "wireguard.private_key",
            "missing: the file holding the base64 private key (e.g. from `wg genkey`)",
        )
    })?;
    let key_path = ctx.path(key_path);
    let text = zeroize::Zeroizing::new(fs::read_to_string(&key_path).map_err(|e| {
        ctx.err(
            "wireguard.private_key",
            format!("{}: {e}", key_path.display()),
        )
    })?);
    let private_key: WgPrivateKey = text.trim().parse().map_err(|e| {
        ctx.err(
            "wireguard.private_key",
            format!("{}: {e}", key_path.display()),
        )
    })?;
    warn_if_readable_by_others(&key_path);
    let address = w
        .address
        .as_deref()
        .ok_or_else(|| {
            ctx.err(
                "wireguard.address",
                "missing: the tunnel-internal address, e.g. 10.99.0.1",
            )
        })
        .and_then(|a| {
            a.trim().parse::<IpAddr>().map_err(|_| {
                ctx.err(
                    "wireguard.address",
                    format!("`{a}` is not an IP address like 10.99.0.1"),
                )
            })
        })?;
    let mut peers = Vec::with_capacity(w.peer.len());
    for (i, p) in w.peer.iter().enumerate() {
        let k = |field: &str| format!("wireguard.peer[{i}].{field}");
        let public: WgPublicKey = p
            .public_key
            .trim()
            .parse()
            .map_err(|e| ctx.err(k("public_key"), format!("`{}`: {e}", p.public_key)))?;
        let mut peer = WgPeer::new(public);
        if p.allowed_ips.is_empty() {
            return Err(ctx.err(
                k("allowed_ips"),
                "empty: list the prefixes this peer may send from (node) or that route to it (proxy)",
            ));
        }
        for (j, ip) in p.allowed_ips.iter().enumerate() {
            peer = peer.with_allowed_ip(ctx.prefix(&format!("{}[{j}]", k("allowed_ips")), ip)?);
        }
        if let Some(e) = &p.endpoint {
            peer = peer.with_endpoint(ctx.addr(&k("endpoint"), e)?);
        }
        if let Some(id) = &p.spiffe_id {
            peer = peer.with_spiffe(ctx.spiffe_id(&k("spiffe_id"), id)?);
        }
        peer.persistent_keepalive_secs = p.persistent_keepalive;
        peers.push(peer);
    }
    if peers.is_empty() {
        return Err(ctx.err(
            "wireguard.peer",
            "no [[wireguard.peer]]: a WireGuard node without peers carries nothing",
        ));
    }
    let rekey_after_time = match &w.rekey_after_time {
        None => WG_REKEY_AFTER_TIME,
        Some(t) => {
            let d = crate::duration::parse_duration(t)
                .map_err(|e| ctx.err("wireguard.rekey_after_time", e))?;
            if d.is_zero() || d > WG_REKEY_AFTER_TIME {
                return Err(ctx.err(
                    "wireguard.rekey_after_time",
                    format!("`{t}`: must be above 0 and at most 120s (WireGuard's own value)"),
                ));
            }
            d
        }
    };
    let defaults = WgConfig::new(private_key.clone(), listen, address);
    let mtu = match w.mtu {
        None => defaults.mtu,
        Some(m) if MTU_RANGE.contains(&m) => m,
        Some(m) => {
            return Err(ctx.err(
                "wireguard.mtu",
                format!("{m}: must be in {MTU_RANGE:?} (IPv6's minimum link MTU and up)"),
            ));
        }
    };
    let bytes =
        |field: &str, v: Option<u64>, default: usize, range: std::ops::RangeInclusive<u64>| match v
        {
            None => Ok(default),
            Some(b) if range.contains(&b) => Ok(b as usize),
            Some(b) => Err(ctx.err(
                field,
                format!("{b}: must be {}..={} bytes", range.start(), range.end()),
            )),
        };
    let tcp_buffer_bytes = bytes(
        "wireguard.tcp_buffer_bytes",
        w.tcp_buffer_bytes,
        defaults.tcp_buffer_bytes,
        (16 << 10)..=(16 << 20),
    )?;
    let udp_socket_buffer_bytes = bytes(
        "wireguard.udp_socket_buffer_bytes",
        w.udp_socket_buffer_bytes,
        defaults.udp_socket_buffer_bytes,
        (64 << 10)..=(256 << 20),
    )?;
    let handshake_rate_limit = match w.handshake_rate_limit {
        None => defaults.handshake_rate_limit,
        Some(0) => {
            return Err(ctx.err(
                "wireguard.handshake_rate_limit",
                "0: must be at least 1 handshake per second per source IP",
            ));
        }
        Some(n) => n,
    };
    let connect_timeout = match &w.connect_timeout {
        None => defaults.connect_timeout,
        Some(t) => {
            let d = crate::duration::parse_duration(t)
                .map_err(|e| ctx.err("wireguard.connect_timeout", e))?;
            if d.is_zero() || d > Duration::from_secs(300) {
                return Err(ctx.err(
                    "wireguard.connect_timeout",
                    format!("`{t}`: must be above 0 and at most 300s"),
                ));
            }
            d
        }
    };
    Ok(WgSettings {
        listen,
        private_key,
        address,
        peers,
        rekey_after_time,
        mtu,
        tcp_buffer_bytes,
        udp_socket_buffer_bytes,
        handshake_rate_limit,
        connect_timeout,
    })
}

/// `rekey_after_time` is a testing knob: say so at start when it is not WireGuard's 120 s.
#[cfg(feature = "wireguard")]
pub(crate) fn warn_if_rekey_shortened(w: &WgSettings) {
    if w.rekey_after_time != WG_REKEY_AFTER_TIME {
        tracing::warn!(
            rekey_after_time = ?w.rekey_after_time,
            "wireguard.rekey_after_time is not WireGuard's 120 s: for testing re-keys only"
        );
    }
}

#[cfg(feature = "wireguard")]
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(
            file = %path.display(),
            mode = format!("{:o}", meta.permissions().mode() & 0o777),
            "the WireGuard private key is readable by other users; chmod 600 it"
        );
    }
}

impl NodeConfig {
    /// The file (if any) with the flags laid over it, validated.
    pub(crate) fn load(args: &NodeArgs) -> Result<Self, ConfigError> {
        let mut file: NodeFile = read_file(args.config.as_deref())?;
        let ctx = Ctx::new(args.config.as_deref());
        // Flags override the file.
        if let Some(l) = &args.hbone_listen {
            file.hbone.get_or_insert_with(HboneFile::default).listen = Some(l.clone());
        }
        if !args.allow.is_empty() {
            file.hbone.get_or_insert_with(HboneFile::default).allow = args.allow.clone();
        }
        if let Some(h) = &args.hostnames {
            file.hbone.get_or_insert_with(HboneFile::default).hostnames = Some(match h.as_str() {
                "reject" | "allow" => HostnamesFile::Word(h.clone()),
                list => HostnamesFile::Suffixes(list.split(',').map(str::to_string).collect()),
            });
        }
        if let Some(l) = &args.wireguard_listen {
            let Some(w) = file.wireguard.as_mut() else {
                return Err(ctx.err(
                    "wireguard",
                    "--wireguard-listen needs a [wireguard] section (key, address, peers) in --config",
                ));
            };
            w.listen = Some(l.clone());
        }
        if let Some(identity) = args.identity.to_file() {
            file.identity = Some(identity);
        }
        if !args.allow_targets.is_empty() {
            file.allow_targets = Some(args.allow_targets.clone());
        }
        if args.fips.is_some() {
            file.fips = args.fips.clone();
        }
        if args.metrics.is_some() {
            file.metrics = args.metrics.clone();
        }
        if args.drain.is_some() {
            file.drain = args.drain.clone();
        }

        if file.hbone.is_none() && file.wireguard.is_none() {
            return Err(ctx.err(
                "hbone / wireguard",
                "configure at least one of [hbone] (or --hbone-listen) and [wireguard]",
            ));
        }
        let (metrics, observe) = load_observe(
            &ctx,
            file.metrics.as_deref(),
            file.access_log.as_deref(),
            file.admin.as_ref(),
            &args.observe,
            args.metrics.is_some(),
        )?;
        let drain = ctx.drain(file.drain.as_deref())?;
        let limits = ctx.limits(file.limits.as_ref())?;
        let fips = FipsMode::parse(&ctx, file.fips.as_deref())?;
        #[cfg(not(feature = "wireguard"))]
        if file.wireguard.is_some() {
            return Err(ctx.err("wireguard", NO_WIREGUARD));
        }
        if fips == FipsMode::Required && file.wireguard.is_some() {
            return Err(ctx.err(
                "wireguard",
                "WireGuard is not FIPS-approved (X25519, ChaCha20-Poly1305, BLAKE2s) and fips \
                 is \"required\" by default; set fips = \"off\" (or --fips off) to run it",
            ));
        }
        let allow_targets = file
            .allow_targets
            .clone()
            .unwrap_or_default()
            .iter()
            .enumerate()
            .map(|(i, s)| {
                s.trim()
                    .parse::<Destination>()
                    .map_err(|e| ctx.err(format!("allow_targets[{i}]"), e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let hbone = file
            .hbone
            .as_ref()
            .map(|h| {
                let listen = ctx.addr(
                    "hbone.listen",
                    h.listen.as_deref().unwrap_or(DEFAULT_HBONE_LISTEN),
                )?;
                let allow = h
                    .allow
                    .iter()
                    .enumerate()
                    .map(|(i, s)| ctx.spiffe_id(&format!("hbone.allow[{i}]"), s))
                    .collect::<Result<Vec<_>, _>>()?;
                let mut server = fipstun_hbone::ServerConfig::default();
                if let Some(n) = h.max_connections {
                    server = server.with_max_connections(n);
                }
                if let Some(n) = h.max_handshakes {
                    server = server.with_max_handshakes(n);
                }
                if let Some(t) = &h.handshake_timeout {
                    server =
                        server.with_handshake_timeout(ctx.duration("hbone.handshake_timeout", t)?);
                }
                if let Some(names) = &h.hostnames {
                    use fipstun_hbone::wire::HostnamePolicy;
                    let key = "hbone.hostnames";
                    let policy = match names {
                        HostnamesFile::Word(w) if w == "reject" => HostnamePolicy::Reject,
                        HostnamesFile::Word(w) if w == "allow" => HostnamePolicy::Allow,
                        HostnamesFile::Word(w) => {
                            return Err(ctx.err(
                                key,
                                format!(
                                    "`{w}`: expected \"reject\", \"allow\" or a list of DNS \
                                     suffixes like [\"svc.cluster.local\"]"
                                ),
                            ));
                        }
                        HostnamesFile::Suffixes(list) => {
                            let mut suffixes = Vec::with_capacity(list.len());
                            for (i, sfx) in list.iter().enumerate() {
                                let sfx = sfx.trim().trim_start_matches('.').to_ascii_lowercase();
                                fipstun_transport::Target::name(&sfx, 1).map_err(|e| {
                                    ctx.err(format!("{key}[{i}]"), format!("`{sfx}`: {e}"))
                                })?;
                                suffixes.push(sfx);
                            }
                            HostnamePolicy::AllowSuffixes(suffixes)
                        }
                    };
                    server = server.with_hostnames(policy);
                }
                if let Some(t) = &h.max_connection_age {
                    server = server
                        .with_max_connection_age(ctx.duration("hbone.max_connection_age", t)?);
                }
                Ok::<_, ConfigError>(HboneSettings {
                    listen,
                    allow,
                    server,
                })
            })
            .transpose()?;
        let identity = match &file.identity {
            Some(i) => Some(identity_source(&ctx, i)?),
            None if hbone.is_some()
                && let Some(env) = identity_from_env(&ctx)? =>
            {
                Some(env)
            }
            None if hbone.is_some() => {
                return Err(ctx.err(
                    "identity",
                    "[hbone] needs [identity] dir = \"...\" (or --identity-dir): the directory \
                     `fipstun ca issue` wrote svid.pem, svid-key.pem and bundle.pem into; or \
                     workload_api = \"unix:///...\" (or --workload-api, or SPIFFE_ENDPOINT_SOCKET); \
                     or istio_ca = { ... }",
                ));
            }
            None => None,
        };
        let wireguard = file
            .wireguard
            .as_ref()
            .map(|w| load_wireguard(&ctx, w))
            .transpose()?;
        let mut rules = file.policy.clone();
        if !allow_targets.is_empty() {
            // The shorthand: one allow rule from the `hbone.allow` IDs (any peer without them)
            // to the listed destinations.
            let from = hbone
                .as_ref()
                .map(|h| h.allow.iter().cloned().map(Principal::Exact).collect())
                .unwrap_or_default();
            rules.push(Rule {
                name: Some("allow_targets".into()),
                action: Action::Allow,
                from,
                to: allow_targets,
            });
        }
        Ok(Self {
            metrics,
            observe,
            drain,
            fips,
            policy: Policy::new(rules),
            limits,
            identity,
            hbone,
            wireguard,
        })
    }
}

impl ProxyConfig {
    /// The file (if any) with the flags laid over it, validated.
    pub(crate) fn load(args: &ProxyArgs) -> Result<Self, ConfigError> {
        let mut file: ProxyFile = read_file(args.config.as_deref())?;
        let ctx = Ctx::new(args.config.as_deref());
        let flags_listener = args.mode.is_some()
            || args.listen.is_some()
            || args.target.is_some()
            || args.via.is_some()
            || args.node.is_some()
            || args.node_id.is_some();
        if flags_listener {
            if file.listener.len() > 1 {
                return Err(ctx.err(
                    "listener",
                    format!(
                        "--mode/--listen/--target/--via/--node/--node-id override a single [[listener]], \
                         but the file has {}",
                        file.listener.len()
                    ),
                ));
            }
            if file.listener.is_empty() {
                file.listener.push(ListenerFile::default());
            }
            let l = &mut file.listener[0];
            let set = |slot: &mut Option<String>, v: &Option<String>| {
                if v.is_some() {
                    slot.clone_from(v);
                }
            };
            set(&mut l.mode, &args.mode);
            set(&mut l.listen, &args.listen);
            set(&mut l.target, &args.target);
            set(&mut l.via, &args.via);
            let routed = matches!(l.mode.as_deref(), Some("redirect" | "socks5"));
            if routed && (args.node.is_some() || args.node_id.is_some()) {
                // --node/--node-id with a routed mode: one HBONE route for every destination.
                for cidr in ["0.0.0.0/0", "::/0"] {
                    file.route.push(RouteFile {
                        cidr: Some(cidr.into()),
                        via: Some("hbone".into()),
                        node: args.node.clone(),
                        node_id: args.node_id.clone(),
                        node_trust_domain: None,
                    });
                }
            } else {
                set(&mut l.node, &args.node);
                set(&mut l.node_id, &args.node_id);
            }
        }
        if let Some(identity) = args.identity.to_file() {
            file.identity = Some(identity);
        }
        for (slot, v) in [
            (&mut file.fips, &args.fips),
            (&mut file.metrics, &args.metrics),
            (&mut file.drain, &args.drain),
        ] {
            if v.is_some() {
                slot.clone_from(v);
            }
        }

        let (metrics, observe) = load_observe(
            &ctx,
            file.metrics.as_deref(),
            file.access_log.as_deref(),
            file.admin.as_ref(),
            &args.observe,
            args.metrics.is_some(),
        )?;
        let drain = ctx.drain(file.drain.as_deref())?;
        let fips = FipsMode::parse(&ctx, file.fips.as_deref())?;
        if file.listener.is_empty() {
            return Err(ctx.err(
                "listener",
                "no [[listener]] (or --listen, --target and --via): nothing to proxy",
            ));
        }
        let mut listeners = Vec::with_capacity(file.listener.len());
        for (i, l) in file.listener.iter().enumerate() {
            let k = |field: &str| format!("listener[{i}].{field}");
            let need = |field: &str, v: &Option<String>| {
                v.clone()
                    .ok_or_else(|| ctx.err(k(field), format!("missing (or --{field})")))
            };
            let routed = |default_listen: &str| -> Result<SocketAddr, ConfigError> {
                for (field, v) in [
                    ("target", &l.target),
                    ("via", &l.via),
                    ("node", &l.node),
                    ("node_id", &l.node_id),
                ] {
                    if v.is_some() {
                        return Err(ctx.err(
                            k(field),
                            "only with mode = \"fixed\": a redirect or socks5 listener's \
                             streams go where [[route]] says",
                        ));
                    }
                }
                ctx.addr(&k("listen"), l.listen.as_deref().unwrap_or(default_listen))
            };
            let (listen, kind) = match l.mode.as_deref().unwrap_or("fixed") {
                "redirect" => (routed(REDIRECT_LISTEN)?, ListenerKind::Redirect),
                "socks5" => (routed(SOCKS5_LISTEN)?, ListenerKind::Socks5),
                "fixed" => {
                    let listen = ctx.addr(&k("listen"), &need("listen", &l.listen)?)?;
                    let target = need("target", &l.target)?;
                    let target = Target::parse(target.trim())
                        .map_err(|e| ctx.err(k("target"), format!("`{target}`: {e}")))?;
                    let via = self::via(&ctx, &k, l, fips, file.wireguard.is_some())?;
                    (listen, ListenerKind::Fixed { target, via })
                }
                other => {
                    return Err(ctx.err(
                        k("mode"),
                        format!("`{other}`: expected \"fixed\", \"redirect\" or \"socks5\""),
                    ));
                }
            };
            listeners.push(ListenerSettings { listen, kind });
        }
        let mut routes = Vec::with_capacity(file.route.len());
        for (i, r) in file.route.iter().enumerate() {
            routes.push(route(&ctx, i, r, fips, file.wireguard.is_some())?);
        }
        let routed = listeners.iter().any(|l| l.kind.is_routed());
        if routed && routes.is_empty() {
            return Err(ctx.err(
                "route",
                "a redirect or socks5 listener needs [[route]]s (cidr, node, node_id): \
                 destinations no route covers are refused",
            ));
        }
        if !routed && !routes.is_empty() {
            return Err(ctx.err(
                "route",
                "[[route]] is used by redirect and socks5 listeners only; this proxy has none",
            ));
        }
        let needs_identity = listeners.iter().any(|l| {
            matches!(
                l.kind,
                ListenerKind::Fixed {
                    via: Via::Hbone { .. },
                    ..
                }
            )
        }) || routes
            .iter()
            .any(|r| matches!(r.via, RouteVia::Hbone { .. }));
        let identity = match &file.identity {
            Some(i) => Some(identity_source(&ctx, i)?),
            None if needs_identity && let Some(env) = identity_from_env(&ctx)? => Some(env),
            None if needs_identity => {
                return Err(ctx.err(
                    "identity",
                    "via = \"hbone\" needs [identity] dir = \"...\" (or --identity-dir): the \
                     directory `fipstun ca issue` wrote svid.pem, svid-key.pem and bundle.pem into; \
                     or workload_api = \"unix:///...\" (or --workload-api, or SPIFFE_ENDPOINT_SOCKET); or \
                     istio_ca = { ... }",
                ));
            }
            None => None,
        };
        let wireguard = file
            .wireguard
            .as_ref()
            .map(|w| load_wireguard(&ctx, w))
            .transpose()?;
        let limits = ctx.limits(file.limits.as_ref())?;
        Ok(Self {
            metrics,
            observe,
            drain,
            fips,
            limits,
            identity,
            wireguard,
            listeners,
            routes,
        })
    }
}

/// `via`, `node` and `node_id` of a fixed listener.
fn via(
    ctx: &Ctx,
    k: &dyn Fn(&str) -> String,
    l: &ListenerFile,
    fips: FipsMode,
    has_wireguard: bool,
) -> Result<Via, ConfigError> {
    let need = |field: &str, v: &Option<String>| {
        v.clone()
            .ok_or_else(|| ctx.err(k(field), format!("missing (or --{field})")))
    };
    let via = match need("via", &l.via)?.as_str() {
        "hbone" => {
            let node = ctx.addr(&k("node"), &need("node", &l.node)?)?;
            let node_id = l.node_id.clone().ok_or_else(|| {
                ctx.err(
                    k("node_id"),
                    "missing (or --node-id): the SPIFFE ID the node must present",
                )
            })?;
            let node_id = ctx.spiffe_id(&k("node_id"), &node_id)?;
            Via::Hbone { node, node_id }
        }
        #[cfg(feature = "wireguard")]
        "wireguard" => Via::Wireguard,
        #[cfg(not(feature = "wireguard"))]
        "wireguard" => return Err(ctx.err(k("via"), NO_WIREGUARD)),
        "plain" => Via::Plain,
        other => {
            return Err(ctx.err(
                k("via"),
                format!("`{other}`: expected \"hbone\", \"wireguard\" or \"plain\""),
            ));
        }
    };
    if fips == FipsMode::Required && !matches!(via, Via::Hbone { .. }) {
        return Err(ctx.err(
            k("via"),
            format!(
                "`{}` is not FIPS-approved but fips = \"required\" (the default); use \
                 via = \"hbone\" or set fips = \"off\" (or --fips off)",
                via.label()
            ),
        ));
    }
    #[cfg(feature = "wireguard")]
    if via == Via::Wireguard && !has_wireguard {
        return Err(ctx.err(
            k("via"),
            "`wireguard` needs a [wireguard] section (key, address, peers)",
        ));
    }
    #[cfg(not(feature = "wireguard"))]
    let _ = has_wireguard;
    if !matches!(via, Via::Hbone { .. }) && (l.node.is_some() || l.node_id.is_some()) {
        return Err(ctx.err(
            k("node"),
            format!("only used with via = \"hbone\", not `{}`", via.label()),
        ));
    }
    Ok(via)
}

/// One `[[route]]`.
fn route(
    ctx: &Ctx,
    i: usize,
    r: &RouteFile,
    fips: FipsMode,
    has_wireguard: bool,
) -> Result<RouteSettings, ConfigError> {
    let k = |field: &str| format!("route[{i}].{field}");
    let cidr = r
        .cidr
        .as_deref()
        .ok_or_else(|| ctx.err(k("cidr"), "missing: the destinations, e.g. \"10.0.0.0/8\""))?;
    let cidr: Cidr = cidr
        .trim()
        .parse()
        .map_err(|e| ctx.err(k("cidr"), format!("`{cidr}`: {e}")))?;
    let via = match r.via.as_deref().unwrap_or("hbone") {
        "hbone" => {
            let node = match r.node.as_deref().map(str::trim) {
                Some("same-ip") => RouteNode::SameIp(fipstun_hbone::HBONE_PORT),
                Some(a) => RouteNode::Addr(ctx.addr(&k("node"), a)?),
                None => {
                    return Err(ctx.err(
                        k("node"),
                        "missing: the HBONE node, \"ADDR:15008\", or \"same-ip\" (the \
                         destination's own IP, port 15008, as ztunnel does)",
                    ));
                }
            };
            let expected = match (&r.node_id, &r.node_trust_domain) {
                (Some(id), None) => ExpectedPeer::ids([ctx.spiffe_id(&k("node_id"), id)?]),
                (None, Some(td)) => {
                    ExpectedPeer::trust_domains([fipstun_identity::spiffe::TrustDomain::new(td)
                        .map_err(|e| ctx.err(k("node_trust_domain"), format!("`{td}`: {e}")))?])
                }
                (Some(_), Some(_)) => {
                    return Err(ctx.err(k("node_id"), "set node_id or node_trust_domain, not both"));
                }
                (None, None) => {
                    return Err(ctx.err(
                        k("node_id"),
                        "missing: the SPIFFE ID the node must present (or node_trust_domain: \
                         any ID of that trust domain)",
                    ));
                }
            };
            RouteVia::Hbone { node, expected }
        }
        #[cfg(feature = "wireguard")]
        "wireguard" => RouteVia::Wireguard,
        #[cfg(not(feature = "wireguard"))]
        "wireguard" => return Err(ctx.err(k("via"), NO_WIREGUARD)),
        "plain" => RouteVia::Plain,
        other => {
            return Err(ctx.err(
                k("via"),
                format!("`{other}`: expected \"hbone\", \"wireguard\" or \"plain\""),
            ));
        }
    };
    if !matches!(via, RouteVia::Hbone { .. })
        && (r.node.is_some() || r.node_id.is_some() || r.node_trust_domain.is_some())
    {
        return Err(ctx.err(
            k("node"),
            format!("only used with via = \"hbone\", not `{}`", via.label()),
        ));
    }
    if fips == FipsMode::Required && !matches!(via, RouteVia::Hbone { .. }) {
        return Err(ctx.err(
            k("via"),
            format!(
                "`{}` is not FIPS-approved but fips = \"required\" (the default); use \
                 via = \"hbone\" or set fips = \"off\" (or --fips off)",
                via.label()
            ),
        ));
    }
    #[cfg(feature = "wireguard")]
    if via == RouteVia::Wireguard && !has_wireguard {
        return Err(ctx.err(
            k("via"),
            "`wireguard` needs a [wireguard] section (key, address, peers)",
        ));
    }
    #[cfg(not(feature = "wireguard"))]
    let _ = has_wireguard;
    Ok(RouteSettings { cidr, via })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node_file(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("node.toml");
        fs::write(&p, text).unwrap();
        (dir, p)
    }

    fn node_err(text: &str) -> ConfigError {
        let (_d, p) = node_file(text);
        NodeConfig::load(&NodeArgs {
            config: Some(p),
            ..NodeArgs::default()
        })
        .unwrap_err()
    }

    fn proxy_err(text: &str) -> ConfigError {
        let (_d, p) = node_file(text);
        ProxyConfig::load(&ProxyArgs {
            config: Some(p),
            ..ProxyArgs::default()
        })
        .unwrap_err()
    }

    #[test]
    fn node_errors_name_the_key() {
        let e = node_err("drain = \"10s\"\n");
        assert_eq!(e.key.as_deref(), Some("hbone / wireguard"));
        let e = node_err("[hbone]\nlisten = \"127.0.0.1:0\"\n");
        assert_eq!(e.key.as_deref(), Some("identity"));
        let e = node_err("allow_targets = [\"10.0.0.0/40\"]\n[hbone]\n");
        assert_eq!(e.key.as_deref(), Some("allow_targets[0]"));
        let e = node_err("[hbone]\nallow = [\"http://x\"]\n");
        assert_eq!(e.key.as_deref(), Some("hbone.allow[0]"));
        assert!(e.message.contains("is not a SPIFFE ID"), "{e}");
        let e = node_err("drain = \"soon\"\n[hbone]\n");
        assert_eq!(e.key.as_deref(), Some("drain"));
        let e = node_err("[hbone]\nlisten = \"nowhere\"\n");
        assert_eq!(e.key.as_deref(), Some("hbone.listen"));
        let e = node_err("[identity]\ndir = \"missing\"\n[hbone]\n");
        assert_eq!(e.key.as_deref(), Some("identity.dir"));
        assert!(e.message.contains("svid.pem"), "{e}");
        if cfg!(feature = "wireguard") {
            let e = node_err(
                "fips = \"off\"\n[wireguard]\nprivate_key = \"nope.key\"\naddress = \"10.9.0.1\"\n",
            );
            assert_eq!(e.key.as_deref(), Some("wireguard.private_key"));
            assert!(e.message.contains("nope.key"), "{e}");
        }
    }

    #[test]
    fn unknown_keys_are_refused_with_the_file_name() {
        let e = node_err("[hbone]\nlisten = \"127.0.0.1:0\"\nport = 1\n");
        assert!(e.key.is_none());
        assert!(e.origin.ends_with("node.toml"));
        assert!(e.message.contains("unknown field `port`"), "{e}");
    }

    #[test]
    fn proxy_errors_name_the_key() {
        let e = proxy_err("");
        assert_eq!(e.key.as_deref(), Some("listener"));
        let e = proxy_err(
            "fips = \"required\"\n[[listener]]\nlisten = \"127.0.0.1:0\"\ntarget = \"127.0.0.1:1\"\nvia = \"wireguard\"\n",
        );
        assert_eq!(e.key.as_deref(), Some("listener[0].via"));
        if cfg!(feature = "wireguard") {
            assert!(e.message.contains("not FIPS-approved"), "{e}");
        }
        let e = proxy_err(
            "[[listener]]\nlisten = \"127.0.0.1:0\"\ntarget = \"127.0.0.1:1\"\nvia = \"hbone\"\nnode = \"127.0.0.1:2\"\n",
        );
        assert_eq!(e.key.as_deref(), Some("listener[0].node_id"));
        let e = proxy_err(
            "[[listener]]\nlisten = \"127.0.0.1:0\"\ntarget = \"127.0.0.1:1\"\nvia = \"hbone\"\nnode = \"127.0.0.1:2\"\nnode_id = \"spiffe://a.test/n\"\n",
        );
        assert_eq!(e.key.as_deref(), Some("identity"));
        let e = proxy_err("fips = \"maybe\"\n");
        assert_eq!(e.key.as_deref(), Some("fips"));
        let e = proxy_err(
            "[[listener]]\nlisten = \"127.0.0.1:0\"\ntarget = \"127.0.0.1:1\"\nvia = \"carrier-pigeon\"\n",
        );
        assert_eq!(e.key.as_deref(), Some("listener[0].via"));
    }

    #[test]
    fn routed_listeners_and_routes() {
        let ok = |text: &str| {
            let (_d, p) = node_file(text);
            ProxyConfig::load(&ProxyArgs {
                config: Some(p),
                ..ProxyArgs::default()
            })
        };
        let cfg = ok(
            "fips = \"off\"\n[[listener]]\nmode = \"redirect\"\n[[listener]]\nmode = \"socks5\"\n\
                      [[route]]\ncidr = \"10.0.0.0/8\"\nvia = \"plain\"\n",
        )
        .unwrap();
        assert_eq!(cfg.listeners[0].listen, REDIRECT_LISTEN.parse().unwrap());
        assert_eq!(cfg.listeners[0].kind, ListenerKind::Redirect);
        assert_eq!(cfg.listeners[1].listen, SOCKS5_LISTEN.parse().unwrap());
        assert_eq!(cfg.routes[0].via, RouteVia::Plain);

        // A routed listener without routes, routes without one, a target on a routed one.
        let e = proxy_err("[[listener]]\nmode = \"socks5\"\n");
        assert_eq!(e.key.as_deref(), Some("route"));
        let e = proxy_err(
            "fips = \"off\"\n[[listener]]\nlisten = \"127.0.0.1:0\"\ntarget = \"127.0.0.1:1\"\nvia = \"plain\"\n\
             [[route]]\ncidr = \"10.0.0.0/8\"\nvia = \"plain\"\n",
        );
        assert_eq!(e.key.as_deref(), Some("route"));
        let e = proxy_err("[[listener]]\nmode = \"socks5\"\ntarget = \"127.0.0.1:1\"\n");
        assert_eq!(e.key.as_deref(), Some("listener[0].target"));
        let e = proxy_err("[[listener]]\nmode = \"tproxy\"\n");
        assert_eq!(e.key.as_deref(), Some("listener[0].mode"));
        // HBONE routes: node and an identity are required; plain ones need fips = "off".
        let e = proxy_err("[[listener]]\nmode = \"socks5\"\n[[route]]\ncidr = \"10.0.0.0/8\"\n");
        assert_eq!(e.key.as_deref(), Some("route[0].node"));
        let e = proxy_err(
            "[[listener]]\nmode = \"socks5\"\n[[route]]\ncidr = \"10.0.0.0/8\"\nnode = \"same-ip\"\n",
        );
        assert_eq!(e.key.as_deref(), Some("route[0].node_id"));
        let e = proxy_err("[[listener]]\nmode = \"socks5\"\n[[route]]\ncidr = \"10.0.0.0/33\"\n");
        assert_eq!(e.key.as_deref(), Some("route[0].cidr"));
        let e = proxy_err(
            "[[listener]]\nmode = \"socks5\"\n[[route]]\ncidr = \"10.0.0.0/8\"\nvia = \"plain\"\n",
        );
        assert_eq!(e.key.as_deref(), Some("route[0].via"));
        assert!(e.message.contains("not FIPS-approved"), "{e}");
        // A complete HBONE route, ztunnel's "same IP" form, any node of a trust domain.
        let e = proxy_err(
            "[[listener]]\nmode = \"redirect\"\n[[route]]\ncidr = \"10.0.0.0/8\"\nnode = \"same-ip\"\n\
             node_trust_domain = \"cluster.local\"\n",
        );
        // ... which needs an identity, and says so (not a route error).
        assert_eq!(e.key.as_deref(), Some("identity"));
    }

    #[test]
    fn mode_flags_with_node_make_one_route_for_everything() {
        let dir = tempfile::tempdir().unwrap();
        let pki = dir.path();
        let e = ProxyConfig::load(&ProxyArgs {
            mode: Some("socks5".into()),
            node: Some("127.0.0.1:15008".into()),
            node_id: Some("spiffe://a.test/node".into()),
            identity: IdentityArgs {
                identity_dir: Some(pki.join("missing")),
                ..IdentityArgs::default()
            },
            ..ProxyArgs::default()
        })
        .unwrap_err();
        // The routes were accepted; the missing identity files are what fails.
        assert_eq!(e.key.as_deref(), Some("identity.dir"), "{e}");
    }

    #[test]
    fn flags_override_the_file() {
        let (_d, p) = node_file(
            "[[listener]]\nlisten = \"127.0.0.1:1\"\ntarget = \"127.0.0.1:2\"\nvia = \"plain\"\n\
             drain = \"3s\"\n",
        );
        // `drain` after a table header belongs to the table: an unknown key there.
        let e = ProxyConfig::load(&ProxyArgs {
            config: Some(p),
            ..ProxyArgs::default()
        })
        .unwrap_err();
        assert!(e.message.contains("unknown field `drain`"), "{e}");

        let (_d, p) = node_file(
            "drain = \"3s\"\nfips = \"off\"\n[[listener]]\nlisten = \"127.0.0.1:1\"\ntarget = \"127.0.0.1:2\"\nvia = \"plain\"\n",
        );
        let cfg = ProxyConfig::load(&ProxyArgs {
            config: Some(p),
            target: Some("127.0.0.1:3".into()),
            drain: Some("250ms".into()),
            ..ProxyArgs::default()
        })
        .unwrap();
        assert_eq!(cfg.listeners[0].listen, "127.0.0.1:1".parse().unwrap());
        assert!(matches!(
            &cfg.listeners[0].kind,
            ListenerKind::Fixed { target, .. } if target.to_string() == "127.0.0.1:3"
        ));
        assert_eq!(cfg.drain, Duration::from_millis(250));

        let (_d, p) = node_file(
            "[[listener]]\nlisten = \"127.0.0.1:1\"\ntarget = \"127.0.0.1:2\"\nvia = \"plain\"\n\
             [[listener]]\nlisten = \"127.0.0.1:4\"\ntarget = \"127.0.0.1:2\"\nvia = \"plain\"\n",
        );
        let e = ProxyConfig::load(&ProxyArgs {
            config: Some(p),
            target: Some("127.0.0.1:3".into()),
            ..ProxyArgs::default()
        })
        .unwrap_err();
        assert_eq!(e.key.as_deref(), Some("listener"));
    }

    #[test]
    fn plain_proxy_from_flags_alone() {
        let cfg = ProxyConfig::load(&ProxyArgs {
            listen: Some("127.0.0.1:0".into()),
            target: Some("127.0.0.1:9".into()),
            via: Some("plain".into()),
            drain: Some("500ms".into()),
            fips: Some("off".into()),
            ..ProxyArgs::default()
        })
        .unwrap();
        assert_eq!(cfg.listeners.len(), 1);
        assert!(matches!(
            cfg.listeners[0].kind,
            ListenerKind::Fixed {
                via: Via::Plain,
                ..
            }
        ));
        assert_eq!(cfg.drain, Duration::from_millis(500));
        assert_eq!(cfg.fips, FipsMode::Off);
    }

    #[cfg(feature = "wireguard")]
    #[test]
    fn hbone_and_forwarder_limits_come_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("node.toml");
        let key = dir.path().join("wg.key");
        std::fs::write(&key, WgPrivateKey::generate().to_base64()).unwrap();
        let peer = WgPrivateKey::generate().public_key();
        std::fs::write(
            &p,
            format!(
                "fips = \"off\"\n[limits]\nmax_streams = 100\nmax_streams_per_peer = 10\n\
                 dial_timeout = \"2s\"\nidle_timeout = \"5m\"\n\
                 [wireguard]\nprivate_key = \"wg.key\"\naddress = \"10.99.0.1\"\n\
                 [[wireguard.peer]]\npublic_key = \"{peer}\"\nallowed_ips = [\"10.99.0.2/32\"]\n"
            ),
        )
        .unwrap();
        let cfg = NodeConfig::load(&NodeArgs {
            config: Some(p),
            ..NodeArgs::default()
        })
        .unwrap();
        assert_eq!(cfg.limits.max_streams, 100);
        assert_eq!(cfg.limits.max_streams_per_peer, 10);
        assert_eq!(cfg.limits.dial_timeout, Duration::from_secs(2));
        assert_eq!(cfg.limits.idle_timeout, Duration::from_secs(300));
        let e = node_err("[limits]\nidle_timeout = \"forever\"\n[hbone]\n");
        assert_eq!(e.key.as_deref(), Some("limits.idle_timeout"), "{e}");
        let e = node_err("[identity]\ndir = \".\"\n[hbone]\nhostnames = \"sometimes\"\n");
        assert_eq!(e.key.as_deref(), Some("hbone.hostnames"), "{e}");
        let e = node_err("[hbone]\nhostnames = [\"-bad-.example\"]\n");
        assert_eq!(e.key.as_deref(), Some("hbone.hostnames[0]"), "{e}");
        let e = node_err("[hbone]\nmax_connection_age = \"1 day\"\n");
        assert_eq!(e.key.as_deref(), Some("hbone.max_connection_age"), "{e}");
        let e = node_err("[hbone]\nhandshake_timeout = \"x\"\n");
        assert_eq!(e.key.as_deref(), Some("hbone.handshake_timeout"), "{e}");
    }

    #[cfg(feature = "wireguard")]
    #[test]
    fn wireguard_rekey_after_time_defaults_to_120s_and_may_only_shorten() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("wg.key");
        std::fs::write(&key, WgPrivateKey::generate().to_base64()).unwrap();
        let peer = WgPrivateKey::generate().public_key();
        let load = |rekey: &str| {
            let p = dir.path().join("node.toml");
            std::fs::write(
                &p,
                format!(
                    "fips = \"off\"\n[wireguard]\nprivate_key = \"wg.key\"\naddress = \"10.99.0.1\"\n\
                     {rekey}\n[[wireguard.peer]]\npublic_key = \"{peer}\"\nallowed_ips = [\"10.99.0.2/32\"]\n"
                ),
            )
            .unwrap();
            NodeConfig::load(&NodeArgs {
                config: Some(p),
                ..NodeArgs::default()
            })
        };
        let wg =
            |r: Result<NodeConfig, ConfigError>| r.unwrap().wireguard.unwrap().rekey_after_time;
        assert_eq!(wg(load("")), WG_REKEY_AFTER_TIME);
        assert_eq!(
            wg(load("rekey_after_time = \"3s\"")),
            Duration::from_secs(3)
        );
        for bad in ["\"0s\"", "\"5m\"", "\"soon\""] {
            let e = load(&format!("rekey_after_time = {bad}")).unwrap_err();
            assert_eq!(e.key.as_deref(), Some("wireguard.rekey_after_time"), "{e}");
        }
    }

    /// Every knob of the library's `WgConfig` is reachable from `[wireguard]`: absent, each is
    /// the library's default; set, it reaches the config the node binds; out of range, the
    /// error names the key.
    #[cfg(feature = "wireguard")]
    #[test]
    fn wireguard_tuning_keys_reach_the_library_config() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("wg.key");
        std::fs::write(&key, WgPrivateKey::generate().to_base64()).unwrap();
        let peer = WgPrivateKey::generate().public_key();
        let load = |extra: &str| {
            let p = dir.path().join("node.toml");
            std::fs::write(
                &p,
                format!(
                    "fips = \"off\"\n[wireguard]\nprivate_key = \"wg.key\"\naddress = \"10.99.0.1\"\n\
                     {extra}\n[[wireguard.peer]]\npublic_key = \"{peer}\"\nallowed_ips = [\"10.99.0.2/32\"]\n"
                ),
            )
            .unwrap();
            NodeConfig::load(&NodeArgs {
                config: Some(p),
                ..NodeArgs::default()
            })
        };
        let lib = |r: Result<NodeConfig, ConfigError>| {
            r.unwrap().wireguard.unwrap().wg_config(FipsMode::Off)
        };
        let d = lib(load(""));
        let base = WgConfig::new(
            WgPrivateKey::generate(),
            "0.0.0.0:51820".parse().unwrap(),
            "10.99.0.1".parse().unwrap(),
        );
        assert_eq!(d.mtu, base.mtu);
        assert_eq!(d.tcp_buffer_bytes, base.tcp_buffer_bytes);
        assert_eq!(d.udp_socket_buffer_bytes, base.udp_socket_buffer_bytes);
        assert_eq!(d.handshake_rate_limit, base.handshake_rate_limit);
        assert_eq!(d.connect_timeout, base.connect_timeout);
        assert_eq!(d.fips, FipsRequirement::NotRequired);
        let c = lib(load(
            "mtu = 1380\ntcp_buffer_bytes = 524288\nudp_socket_buffer_bytes = 1048576\n\
             handshake_rate_limit = 20\nconnect_timeout = \"3s\"",
        ));
        assert_eq!(c.mtu, 1380);
        assert_eq!(c.tcp_buffer_bytes, 512 << 10);
        assert_eq!(c.udp_socket_buffer_bytes, 1 << 20);
        assert_eq!(c.handshake_rate_limit, 20);
        assert_eq!(c.connect_timeout, Duration::from_secs(3));
        for (bad, key) in [
            ("mtu = 1000", "wireguard.mtu"),
            ("mtu = 9000", "wireguard.mtu"),
            ("tcp_buffer_bytes = 1024", "wireguard.tcp_buffer_bytes"),
            (
                "tcp_buffer_bytes = 1073741824",
                "wireguard.tcp_buffer_bytes",
            ),
            (
                "udp_socket_buffer_bytes = 0",
                "wireguard.udp_socket_buffer_bytes",
            ),
            ("handshake_rate_limit = 0", "wireguard.handshake_rate_limit"),
            ("connect_timeout = \"0s\"", "wireguard.connect_timeout"),
            ("connect_timeout = \"1h\"", "wireguard.connect_timeout"),
        ] {
            let e = load(bad).unwrap_err();
            assert_eq!(e.key.as_deref(), Some(key), "{bad}: {e}");
        }
    }

    /// Built without the `wireguard` feature, every way of asking for WireGuard is refused
    /// with an error that names the feature (fipstun/tests/features.rs runs this test in such
    /// a build).
    #[cfg(not(feature = "wireguard"))]
    #[test]
    fn wireguard_config_names_the_missing_feature() {
        let names_feature = |e: &ConfigError| {
            assert!(
                e.message.contains("`wireguard` feature") && e.message.contains("--features"),
                "{e}"
            );
        };
        for fips in ["off", "required"] {
            let e = node_err(&format!(
                "fips = \"{fips}\"\n[wireguard]\nprivate_key = \"k\"\naddress = \"10.0.0.1\"\n"
            ));
            assert_eq!(e.key.as_deref(), Some("wireguard"), "{e}");
            names_feature(&e);
        }
        let e = ProxyConfig::load(&ProxyArgs {
            listen: Some("127.0.0.1:0".into()),
            target: Some("127.0.0.1:9".into()),
            via: Some("wireguard".into()),
            fips: Some("off".into()),
            ..ProxyArgs::default()
        })
        .unwrap_err();
        assert_eq!(e.key.as_deref(), Some("listener[0].via"), "{e}");
        names_feature(&e);
        let (_d, p) = node_file(
            "fips = \"off\"\n[[listener]]\nlisten = \"127.0.0.1:0\"\ntarget = \"127.0.0.1:9\"\nvia = \"plain\"\n\
             [wireguard]\nprivate_key = \"k\"\naddress = \"10.0.0.1\"\n",
        );
        let e = ProxyConfig::load(&ProxyArgs {
            config: Some(p),
            ..ProxyArgs::default()
        })
        .unwrap_err();
        assert_eq!(e.key.as_deref(), Some("wireguard"), "{e}");
        names_feature(&e);
    }

    #[test]
    fn fips_is_required_unless_the_config_says_off() {
        let plain = ProxyArgs {
            listen: Some("127.0.0.1:0".into()),
            target: Some("127.0.0.1:9".into()),
            via: Some("plain".into()),
            ..ProxyArgs::default()
        };
        let e = ProxyConfig::load(&plain).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("listener[0].via"), "{e}");
        assert!(e.message.contains("fips = \"off\""), "{e}");
        let e = node_err("[wireguard]\nprivate_key = \"k\"\naddress = \"10.0.0.1\"\n");
        assert_eq!(e.key.as_deref(), Some("wireguard"), "{e}");
        let e = node_err("fips = \"optional\"\n[hbone]\n");
        assert_eq!(e.key.as_deref(), Some("fips"), "{e}");
    }

    #[cfg(feature = "wireguard")]
    #[test]
    fn policy_tables_and_the_allow_targets_shorthand() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("node.toml");
        let peer = WgPrivateKey::generate().public_key();
        std::fs::write(
            &p,
            format!("allow_targets = [\"127.0.0.0/8:8080\"]\n\
             [[policy]]\naction = \"deny\"\nto = [\"10.1.0.0/16\"]\n\
             [[policy]]\naction = \"allow\"\nfrom = [\"spiffe://example.org/ns/prod/*\"]\nto = [\"10.0.0.0/8:443\"]\n\
             [wireguard]\nprivate_key = \"wg.key\"\naddress = \"10.99.0.1\"\n\
             [[wireguard.peer]]\npublic_key = \"{peer}\"\nallowed_ips = [\"10.99.0.2/32\"]\n"),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("wg.key"),
            WgPrivateKey::generate().to_base64(),
        )
        .unwrap();
        let cfg = NodeConfig::load(&NodeArgs {
            config: Some(p.clone()),
            fips: Some("off".into()),
            ..NodeArgs::default()
        })
        .unwrap();
        assert_eq!(cfg.fips, FipsMode::Off);
        let rules = cfg.policy.rules();
        assert_eq!(rules.len(), 3);
        assert_eq!(rules[2].name.as_deref(), Some("allow_targets"));
        let prod = SpiffeId::parse("spiffe://example.org/ns/prod/sa/web").unwrap();
        let check = |t: &str| {
            cfg.policy
                .check(Some(&prod), t.parse().unwrap())
                .is_allowed()
        };
        assert!(check("127.0.0.1:8080"));
        assert!(!check("127.0.0.1:22"));
        assert!(check("10.2.3.4:443"));
        assert!(!check("10.1.2.3:443"), "deny wins");
        std::fs::write(
            &p,
            "[[policy]]\naction = \"allow\"\nto = [\"10.0.0.0/8:x\"]\n[hbone]\n",
        )
        .unwrap();
        let e = NodeConfig::load(&NodeArgs {
            config: Some(p),
            ..NodeArgs::default()
        })
        .unwrap_err();
        assert!(e.to_string().contains("10.0.0.0/8:x"), "{e}");
        let e = node_err("allow_targets = [\"10.0.0.0/8:0\"]\n[hbone]\n");
        assert_eq!(e.key.as_deref(), Some("allow_targets[0]"), "{e}");
    }

    /// A proxy with one plain listener and `extra` above it, loaded with `args`.
    fn proxy_with(
        extra: &str,
        args: ObserveArgs,
        metrics: Option<&str>,
    ) -> Result<ProxyConfig, ConfigError> {
        let text = format!(
            "fips = \"off\"\n{extra}\n[[listener]]\nlisten = \"127.0.0.1:0\"\ntarget = \"127.0.0.1:9\"\nvia = \"plain\"\n"
        );
        let (_d, p) = node_file(&text);
        ProxyConfig::load(&ProxyArgs {
            config: Some(p),
            observe: args,
            metrics: metrics.map(String::from),
            ..ProxyArgs::default()
        })
    }

    #[test]
    fn access_log_and_admin_keys_load_with_flags_over_the_file() {
        let c = proxy_with("", ObserveArgs::default(), None).unwrap();
        assert_eq!(c.observe.access_log, AccessLog::On, "on by default");
        assert_eq!(
            (c.observe.ready, c.observe.admin, c.metrics),
            (None, None, None),
            "no listener unless asked"
        );
        let c = proxy_with(
            "access_log = \"sample:10\"\n[admin]\nready = \"127.0.0.1:15021\"\nstats = \"127.0.0.1:15020\"\nadmin = \"127.0.0.1:15000\"",
            ObserveArgs::default(),
            None,
        )
        .unwrap();
        assert_eq!(c.observe.access_log, AccessLog::Sample(10));
        assert_eq!(
            c.metrics,
            Some("127.0.0.1:15020".parse().unwrap()),
            "stats is metrics"
        );
        assert_eq!(c.observe.ready, Some("127.0.0.1:15021".parse().unwrap()));
        assert_eq!(c.observe.admin, Some("127.0.0.1:15000".parse().unwrap()));
        let flags = ObserveArgs {
            access_log: Some("off".into()),
            ready: Some("127.0.0.1:1".into()),
            admin: None,
        };
        let c = proxy_with(
            "access_log = \"on\"\n[admin]\nready = \"127.0.0.1:2\"",
            flags,
            None,
        )
        .unwrap();
        assert_eq!(c.observe.access_log, AccessLog::Off);
        assert_eq!(c.observe.ready, Some("127.0.0.1:1".parse().unwrap()));
        // The same address twice is fine; two different ones for one listener are not,
        // unless --metrics overrides both.
        let same = "metrics = \"127.0.0.1:3\"\n[admin]\nstats = \"127.0.0.1:3\"";
        assert!(proxy_with(same, ObserveArgs::default(), None).is_ok());
        let differ = "metrics = \"127.0.0.1:3\"\n[admin]\nstats = \"127.0.0.1:4\"";
        let e = proxy_with(differ, ObserveArgs::default(), None).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("admin.stats"), "{e}");
        let c = proxy_with(differ, ObserveArgs::default(), Some("127.0.0.1:5")).unwrap();
        assert_eq!(c.metrics, Some("127.0.0.1:5".parse().unwrap()));
        for bad in ["sample:0", "sample:x", "sometimes", "sample:"] {
            let e = proxy_with(
                &format!("access_log = \"{bad}\""),
                ObserveArgs::default(),
                None,
            )
            .unwrap_err();
            assert_eq!(e.key.as_deref(), Some("access_log"), "{bad}: {e}");
        }
        let e =
            proxy_with("[admin]\nadmin = \"nowhere\"", ObserveArgs::default(), None).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("admin.admin"));
        let e = proxy_with(
            "[admin]\nmetrics = \"127.0.0.1:1\"",
            ObserveArgs::default(),
            None,
        )
        .unwrap_err();
        assert!(e.message.contains("unknown field"), "{e}");
    }
}
