//! The `fipstun` binary.
//!
//! - `fipstun status` prints the FIPS module status: which module is linked, whether it is in
//!   FIPS mode, its self-test results, and what the crypto policy negotiates (`--json` for
//!   machines). The exit status is non-zero when FIPS mode is not active.
//! - `fipstun ca init` creates a root CA for a trust domain; `fipstun ca issue` issues an
//!   X.509-SVID from it, as PEM files; `fipstun ca serve` serves it over the Istio CA API.
//! - `fipstun node` runs the inbound side of a tunnel (HBONE and/or WireGuard, forwarding to
//!   targets); `fipstun proxy` the outbound side (local TCP listeners through a backend). Both
//!   take `--config FILE` (TOML, see DESIGN.md) and flags, log with tracing (one access-log
//!   event per stream, target `fipstun::access`), serve ztunnel's admin endpoints when asked
//!   (`/healthz/ready`, Prometheus `/metrics`, `/config_dump`), print `fipstun <mode>: ready
//!   ...` on stderr once bound, and drain on SIGTERM.
//! - `fipstun scorecard` runs plain TCP, HBONE/FIPS and WireGuard under the same workloads
//!   (through real node and proxy processes) and writes a table, JSON and an SVG chart.
#![forbid(unsafe_code)]
#![allow(clippy::print_stdout)] // a CLI prints its answers

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use fipstun_identity::policy::fips_status;

mod admin;
mod ca;
mod ca_server;
mod config;
mod duration;
mod identity_source;
mod key_file;
mod metrics;
mod node;
mod proxy;
mod reload;
mod route;
mod scorecard;
mod signals;
mod streams;
mod svid_reload;

/// jemalloc instead of glibc malloc, as ztunnel ships: a tunnel frees and reallocates
/// frame-sized buffers all the time, and glibc's per-thread arenas hand that memory back to
/// the kernel (madvise) only to fault it in again. Measured in the scorecard's bulk rows
/// (DESIGN.md, HBONE: "Allocator").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// fipstun: FIPS mTLS/HBONE and WireGuard tunnels behind one trait, measured head to head.
#[derive(Parser, Debug)]
#[command(name = "fipstun", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the FIPS module status and the negotiable algorithms.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// The embedded CA: create one, issue SVIDs from it.
    #[command(subcommand)]
    Ca(ca::CaCommand),
    /// Inbound side: accept HBONE and/or WireGuard tunnels and forward streams to targets.
    Node(config::NodeArgs),
    /// Outbound side: local TCP listeners whose connections go through a tunnel to a node.
    Proxy(config::ProxyArgs),
    /// The head-to-head scorecard: plain TCP, HBONE/FIPS and WireGuard under the same load.
    Scorecard(scorecard::ScorecardArgs),
}

/// Raise this process's soft limit on open files to its hard limit, as wireguard-go's runtime
/// and most proxies do: a node or proxy holds a socket or two per stream, and the soft limit
/// many systems start with (1024) would refuse streams long before `[limits] max_streams`.
/// Children (the scorecard's nodes and proxies) inherit it. Best effort: a failure leaves the
/// limit as it was, and the first `accept` that hits it is logged as usual.
fn raise_open_files_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
    {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

fn main() -> ExitCode {
    raise_open_files_limit();
    let cli = Cli::parse();
    match cli.command {
        Command::Status { json } => {
            let status = fips_status();
            if json {
                match serde_json::to_string_pretty(&status) {
                    Ok(text) => println!("{text}"),
                    Err(e) => {
                        eprintln!("fipstun: cannot encode status as JSON: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            } else {
                println!("{status}");
            }
            if status.ok() {
                ExitCode::SUCCESS
            } else {
                eprintln!("fipstun: FIPS mode is NOT active or a self-check failed");
                ExitCode::FAILURE
            }
        }
        Command::Ca(ca::CaCommand::Serve(args)) => {
            init_logging(config::LogFormat::Text);
            serve(
                "ca serve",
                Ok::<_, config::ConfigError>(args),
                ca_server::run,
            )
        }
        Command::Ca(cmd) => match ca::run(cmd) {
            Ok(done) => {
                println!("{done}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("fipstun ca: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Scorecard(args) => match scorecard::run(args) {
            Ok(table) => {
                println!("{table}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("fipstun scorecard: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Node(args) => {
            init_logging(args.log_format);
            let config = config::NodeConfig::load(&args);
            serve("node", config, move |c| {
                node::run(c, move || config::NodeConfig::load(&args))
            })
        }
        Command::Proxy(args) => {
            init_logging(args.log_format);
            let config = config::ProxyConfig::load(&args);
            serve("proxy", config, move |c| {
                proxy::run(c, move || config::ProxyConfig::load(&args))
            })
        }
    }
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`).
fn init_logging(format: config::LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        config::LogFormat::Json => builder.json().init(),
        config::LogFormat::Text => builder.init(),
    }
}

/// Run a node or proxy on a tokio runtime; a bad config or a failed start is one line on
/// stderr and exit status 1.
fn serve<C, F, Fut>(mode: &str, config: Result<C, config::ConfigError>, run: F) -> ExitCode
where
    F: FnOnce(C) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let config = match config {
        Ok(c) => c,
        Err(e) => {
            eprintln!("fipstun {mode}: bad configuration: {e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("fipstun {mode}: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => {
            // Streams still open after the drain are dropped with the runtime.
            runtime.shutdown_timeout(std::time::Duration::from_millis(100));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("fipstun {mode}: {e}");
            ExitCode::FAILURE
        }
    }
}
