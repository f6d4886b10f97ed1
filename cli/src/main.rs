//! The `fipstun` binary.
//!
//! - `fipstun status` prints the FIPS module status: which module is linked, whether it is in
//!   FIPS mode, its self-test results, and what the crypto policy negotiates (`--json` for
//!   machines). The exit status is non-zero when FIPS mode is not active.
//! - `fipstun ca init` creates a root CA for a trust domain; `fipstun ca issue` issues an
//!   X.509-SVID from it, as PEM files.
#![forbid(unsafe_code)]
#![allow(clippy::print_stdout)] // a CLI prints its answers

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use fipstun_identity::policy::fips_status;

mod ca;

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
}

fn main() -> ExitCode {
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
    }
}
