//! Accept HBONE and forward each stream the policy allows; everything else gets 403:
//!
//! `hbone-server --identity pki/node --listen 0.0.0.0:15008 --allow 'spiffe://td/ns/prod/*=10.0.0.0/8:80,443'`
#![allow(
    clippy::print_stdout,
    reason = "a command-line program: its ready line goes to stdout"
)]
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use fipstun_hbone::{AllowAll, HboneServer, ServerConfig, TlsIdentity};
use fipstun_identity::tls::Authorizer;
use fipstun_transport::policy::{Policy, Rule};
use fipstun_transport::{Forwarder, ForwarderConfig, PlainTcp};

#[derive(Parser)]
struct Args {
    /// Folder with svid.pem, svid-key.pem and bundle.pem.
    #[arg(long)]
    identity: PathBuf,
    /// Where to accept HBONE.
    #[arg(long, default_value = "127.0.0.1:15008")]
    listen: SocketAddr,
    /// An allow rule, `PEERS=DESTINATIONS` (`spiffe://td/*=10.0.0.0/8:443`); repeatable.
    /// Without any, nothing is allowed.
    #[arg(long)]
    allow: Vec<String>,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let mut rules = Vec::new();
    for rule in &args.allow {
        let (from, to) = rule
            .split_once('=')
            .ok_or("--allow takes PEERS=DESTINATIONS")?;
        rules.push(Rule::allow(from.split(','), [to])?);
    }
    let identity = TlsIdentity::from_dir(&args.identity)?;
    let own_domain = identity.svid.current().ok_or("no SVID")?.id.trust_domain();
    // TLS admits any SVID of our trust domain; the policy then judges each stream.
    let (server, incoming) = HboneServer::with_delivery(
        &identity,
        Authorizer::trust_domains([own_domain]),
        ServerConfig::default(),
        AllowAll,
        1024,
    )?;
    let forwarder = Forwarder::new(PlainTcp, Policy::new(rules), ForwarderConfig::default());
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    println!("listening on {}", listener.local_addr()?);
    tokio::spawn(async move { forwarder.run(incoming).await });
    server.serve(listener).await;
    Ok(())
}
