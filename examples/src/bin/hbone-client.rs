//! Tunnel stdin/stdout to TARGET through an HBONE node (as `nc` would, but over mTLS):
//!
//! `hbone-client --identity pki/web --node 10.0.0.7:15008 --node-id spiffe://td/node 10.0.0.7:80`
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use fipstun_hbone::{ClientConfig, HboneClient, HboneRoute, TlsIdentity};
use fipstun_identity::spiffe::SpiffeId;
use tokio::io::AsyncWriteExt;

#[derive(Parser)]
struct Args {
    /// Folder with svid.pem, svid-key.pem and bundle.pem (what `fipstun ca issue` writes).
    #[arg(long)]
    identity: PathBuf,
    /// The HBONE node, usually on port 15008.
    #[arg(long)]
    node: SocketAddr,
    /// The SPIFFE ID the node must prove in the handshake.
    #[arg(long)]
    node_id: SpiffeId,
    /// Where the node connects the stream.
    target: SocketAddr,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let client = HboneClient::new(
        TlsIdentity::from_dir(&args.identity)?,
        ClientConfig::default(),
    )?;
    let stream = client
        .connect(args.target, &HboneRoute::new(args.node, args.node_id))
        .await?;
    let (mut from_node, mut to_node) = tokio::io::split(stream);
    let (mut stdin, mut stdout) = (tokio::io::stdin(), tokio::io::stdout());
    let up = async {
        tokio::io::copy(&mut stdin, &mut to_node).await?;
        to_node.shutdown().await // END_STREAM: the target sees EOF
    };
    let down = tokio::io::copy(&mut from_node, &mut stdout);
    let (up, down) = tokio::join!(up, down);
    up?;
    down?;
    Ok(())
}
