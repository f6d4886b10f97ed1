//! An identity streamed from SPIRE's Workload API (or any SPIFFE Workload API), kept current
//! as the agent rotates it, and used for an HBONE client:
//!
//! `SPIFFE_ENDPOINT_SOCKET=unix:///run/spire/agent.sock spire-identity`
//! `spire-identity --socket unix:///run/spire/agent.sock`
#![allow(
    clippy::print_stdout,
    reason = "a command-line program: its ready line goes to stdout"
)]
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use fipstun_hbone::{ClientConfig, HboneClient, TlsIdentity};
use fipstun_identity::bundle::{BundleSet, TrustStore};
use fipstun_identity::policy::CryptoPolicy;
use fipstun_identity::tls::SvidSlot;
use fipstun_planes::workload::{EndpointSocket, WorkloadConfig, WorkloadX509Source};

#[derive(Parser)]
struct Args {
    /// The Workload API socket; defaults to $SPIFFE_ENDPOINT_SOCKET.
    #[arg(long)]
    socket: Option<String>,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let socket = match args.socket {
        Some(s) => EndpointSocket::parse(&s)?,
        None => EndpointSocket::from_env()?,
    };
    // The source writes each SVID and bundle update into the slot and the trust store that
    // every TLS config built from them reads: rotation needs nothing more.
    let (slot, trust) = (Arc::new(SvidSlot::new()), TrustStore::new(BundleSet::new()));
    let source =
        WorkloadX509Source::start_with(WorkloadConfig::new(socket), slot.clone(), trust.clone());
    let id = source.wait_for_svid(Duration::from_secs(30)).await?;
    let client = HboneClient::new(
        TlsIdentity::new(CryptoPolicy::default(), trust, slot.clone()),
        ClientConfig::default(),
    )?;
    let expiry = slot
        .seconds_to_expiry(std::time::SystemTime::now())
        .unwrap_or(0.0);
    println!("SVID {id}, expires in {expiry:.0} s; HBONE client ready: {client:?}");
    // A real proxy would now serve; keep `source` alive as long as the client is used.
    drop(source);
    Ok(())
}
