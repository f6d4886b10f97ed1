//! `fipstun ca serve`: the embedded CA behind the Istio CA API (`CreateCertificate`, what
//! istiod serves on port 15012), so nodes and proxies configured with `[identity] istio_ca`
//! can be tried, and tested, without a cluster.
//!
//! Callers authenticate with a bearer token (each `--token ID=FILE` names the SPIFFE ID the
//! token in FILE may ask for; the token never appears on the command line) or, for renewals,
//! with the SVID they hold. The server presents an SVID of its own trust domain,
//! `spiffe://<td>/ns/istio-system/sa/istiod`, which clients verify with `server_id`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use fipstun_identity::bundle::{BundleSet, TrustStore};
use fipstun_identity::ca::IssuerConfig;
use fipstun_identity::keys::KeyAlgorithm;
use fipstun_identity::policy::CryptoPolicy;
use fipstun_identity::spiffe::SpiffeId;
use fipstun_identity::tls::{Authorizer, SvidSlot};
use fipstun_planes::istio::{EmbeddedIstioCa, IstioCaServer, TokenTable};
use tokio::net::TcpListener;

use crate::duration::parse_duration;
use crate::signals::termination;

/// The server's own SVID path under its trust domain (istiod's service account).
pub(crate) const SERVER_PATH: &str = "/ns/istio-system/sa/istiod";

/// Tokens longer than this are refused (Kubernetes service-account tokens are about 1 KiB).
const MAX_TOKEN_BYTES: u64 = 64 * 1024;

#[derive(Args, Debug)]
pub(crate) struct ServeArgs {
    /// The CA directory written by `fipstun ca init`.
    #[arg(long)]
    ca: PathBuf,
    /// Where to serve the Istio CA API.
    #[arg(long, default_value = "127.0.0.1:15012")]
    listen: String,
    /// `SPIFFE_ID=FILE`: the bearer token in FILE authenticates its holder as SPIFFE_ID.
    /// Repeatable. Holders of a valid SVID of this CA renew without a token.
    #[arg(long = "token", value_name = "ID=FILE")]
    tokens: Vec<String>,
    /// Lifetime of every SVID issued, e.g. `1h`; at least 10 s.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    ttl: Duration,
}

/// The issuer's bounds for `ttl`: every request gets `ttl`; notBefore is backdated by at most
/// 30 s and at most a quarter of the TTL, so that even short-lived SVIDs are renewed at about
/// half of their life, not at once.
fn issuer_config(ttl: Duration) -> IssuerConfig {
    IssuerConfig {
        min_ttl: ttl,
        max_ttl: ttl,
        default_ttl: ttl,
        backdate: (ttl / 4).min(Duration::from_secs(30)),
    }
}

/// Run until SIGTERM/SIGINT.
pub(crate) async fn run(a: ServeArgs) -> Result<(), String> {
    if a.ttl < Duration::from_secs(10) {
        return Err(format!("--ttl {:?} is shorter than 10 s", a.ttl));
    }
    let stop = termination().map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let issuer = Arc::new(crate::ca::load_ca_with(&a.ca, None, issuer_config(a.ttl))?);
    let td = issuer.trust_domain().clone();
    let mut tokens = TokenTable::new();
    for t in &a.tokens {
        let (id, file) = t
            .split_once('=')
            .ok_or_else(|| format!("--token {t:?}: expected SPIFFE_ID=FILE"))?;
        let id = SpiffeId::parse(id).map_err(|e| format!("--token {t:?}: {e}"))?;
        if id.trust_domain() != td {
            return Err(format!(
                "--token {t:?}: {id} is not in this CA's trust domain {td}"
            ));
        }
        let len = std::fs::metadata(file)
            .map_err(|e| format!("--token {t:?}: {file}: {e}"))?
            .len();
        if len > MAX_TOKEN_BYTES {
            return Err(format!("--token {t:?}: {file} is larger than 64 KiB"));
        }
        let token = std::fs::read_to_string(file).map_err(|e| format!("--token {t:?}: {e}"))?;
        let token = token.trim();
        if token.is_empty() {
            return Err(format!("--token {t:?}: {file} is empty"));
        }
        tokens.insert(token, id);
    }

    let server_id = SpiffeId::parse(&format!("spiffe://{td}{SERVER_PATH}"))
        .map_err(|e| format!("server ID: {e}"))?;
    let slot = Arc::new(SvidSlot::new());
    let issue_own = {
        let (issuer, slot, server_id) = (issuer.clone(), slot.clone(), server_id.clone());
        move || -> Result<(), String> {
            let svid = issuer
                .issue(&server_id, KeyAlgorithm::EcdsaP256, None)
                .map_err(|e| format!("the server's own SVID: {e}"))?;
            slot.set(&svid)
                .map_err(|e| format!("the server's own SVID: {e}"))
        }
    };
    issue_own()?;
    // The server's SVID lives as long as any other: renew it at half its life.
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(a.ttl / 2).await;
            if let Err(e) = issue_own() {
                tracing::error!("{e}");
            }
        }
    });

    let trust = TrustStore::new(BundleSet::new().with(issuer.bundle().clone()));
    let tls = IstioCaServer::tls_config(
        &CryptoPolicy::default(),
        trust,
        Authorizer::trust_domains([td.clone()]),
        slot,
    )
    .map_err(|e| e.to_string())?;
    let listener = TcpListener::bind(&a.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", a.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let service = EmbeddedIstioCa::new(issuer, tokens);
    eprintln!(
        "fipstun ca serve: ready listen={addr} server_id={server_id} ttl={}s",
        a.ttl.as_secs()
    );
    let shutdown = async move {
        let signal = stop.await;
        tracing::info!(signal, "stopping");
    };
    IstioCaServer::new(Arc::new(service))
        .serve(listener, Arc::new(tls), shutdown)
        .await
        .map_err(|e| e.to_string())
}
