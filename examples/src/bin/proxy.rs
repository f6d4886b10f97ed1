//! A local TCP listener whose connections go to one target through a backend picked by a flag
//! at run time, HBONE (FIPS) or WireGuard (not FIPS): the same code path for both, through
//! `Arc<dyn DynTransport>`.
//!
//! `proxy --listen 127.0.0.1:8080 --target 10.0.0.7:80 hbone --identity pki/web --node 10.0.0.7:15008 --node-id spiffe://td/node`
//! `proxy --listen 127.0.0.1:8080 --target 10.0.0.7:80 wireguard --key wg.key --peer <base64> --endpoint 10.0.0.7:51820 --address 10.99.0.2`
#![allow(
    clippy::print_stdout,
    reason = "a command-line program: its ready line goes to stdout"
)]
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use fipstun_hbone::{ClientConfig, HboneClient, HboneRoute, HboneTransport, TlsIdentity};
use fipstun_identity::spiffe::SpiffeId;
use fipstun_transport::policy::Policy;
use fipstun_transport::{
    DynTransport, FipsRequirement, Forwarder, ForwarderConfig, Target, TcpAcceptor, Transport,
};
use fipstun_wireguard::{WgConfig, WgNode, WgPeer, WgPrivateKey, WgPublicKey};

#[derive(Parser)]
struct Args {
    /// The local address applications connect to.
    #[arg(long)]
    listen: SocketAddr,
    /// Where every connection goes, through the tunnel.
    #[arg(long)]
    target: SocketAddr,
    #[command(subcommand)]
    backend: Backend,
}

#[derive(Subcommand)]
enum Backend {
    /// HTTP/2 CONNECT over FIPS mutual TLS to an HBONE node.
    Hbone {
        /// Folder with svid.pem, svid-key.pem and bundle.pem.
        #[arg(long)]
        identity: PathBuf,
        /// The HBONE node.
        #[arg(long)]
        node: SocketAddr,
        /// The SPIFFE ID it must prove.
        #[arg(long)]
        node_id: SpiffeId,
    },
    /// WireGuard to one peer (not FIPS-approved).
    Wireguard {
        /// File holding our base64 private key (`wg genkey`).
        #[arg(long)]
        key: PathBuf,
        /// The peer's base64 public key.
        #[arg(long)]
        peer: String,
        /// The peer's UDP endpoint.
        #[arg(long)]
        endpoint: SocketAddr,
        /// Our tunnel address.
        #[arg(long)]
        address: IpAddr,
    },
}

async fn backend(choice: Backend) -> Result<Arc<dyn DynTransport>, Box<dyn std::error::Error>> {
    Ok(match choice {
        Backend::Hbone {
            identity,
            node,
            node_id,
        } => {
            let client =
                HboneClient::new(TlsIdentity::from_dir(identity)?, ClientConfig::default())?;
            let route = HboneRoute::new(node, node_id);
            Arc::new(
                HboneTransport::new(client, FipsRequirement::Required)?.with_default_route(route),
            )
        }
        Backend::Wireguard {
            key,
            peer,
            endpoint,
            address,
        } => {
            let key: WgPrivateKey = std::fs::read_to_string(key)?.trim().parse()?;
            let peer = WgPeer::new(peer.parse::<WgPublicKey>()?)
                .with_endpoint(endpoint)
                .with_allowed_ip("0.0.0.0/0".parse()?);
            let any = SocketAddr::new(IpAddr::from([0, 0, 0, 0]), 0);
            Arc::new(WgNode::bind(WgConfig::new(key, any, address).with_peer(peer)).await?)
        }
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let transport = backend(args.backend).await?;
    let security = transport.security();
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    println!(
        "listening on {} via {} (fips={})",
        listener.local_addr()?,
        security.backend,
        security.fips
    );
    // Only the one target may be reached: the same deny-by-default policy a node applies.
    let forwarder = Forwarder::new(
        transport,
        Policy::only_to([args.target]),
        ForwarderConfig::default(),
    );
    forwarder
        .run(TcpAcceptor::new(listener, Target::new(args.target)))
        .await?;
    Ok(())
}
