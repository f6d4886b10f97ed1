//! `fipstun ca init | issue`: the embedded CA to and from PEM files (`ca serve`, the Istio CA
//! API, is in `ca_server`).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use fipstun_identity::ca::{IssuerConfig, SvidIssuer};
use fipstun_identity::keys::KeyAlgorithm;
use fipstun_identity::spiffe::{SpiffeId, TrustDomain};

use crate::duration::parse_duration;
use crate::key_file::{self, Existing, PRIVATE_MODE, PUBLIC_MODE};

/// File names inside a CA directory.
pub(crate) const CA_CHAIN: &str = "ca.pem";
pub(crate) const CA_KEY: &str = "ca-key.pem";
/// File names inside an SVID directory: the library's, so what `ca issue` writes is what
/// `TlsIdentity::from_dir` and `[identity] dir` read.
pub(crate) use fipstun_identity::files::{
    BUNDLE_FILE as BUNDLE, SVID_CHAIN_FILE as SVID_CHAIN, SVID_KEY_FILE as SVID_KEY,
};

#[derive(Subcommand, Debug)]
pub(crate) enum CaCommand {
    /// Create a self-signed root CA for a trust domain.
    Init(InitArgs),
    /// Issue an X.509-SVID for a SPIFFE ID from a CA directory.
    Issue(IssueArgs),
    /// Serve the Istio CA API (istiod's `CreateCertificate`, port 15012) from a CA directory.
    Serve(crate::ca_server::ServeArgs),
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum Alg {
    /// ECDSA P-256 (default).
    P256,
    /// ECDSA P-384.
    P384,
}

impl From<Alg> for KeyAlgorithm {
    fn from(a: Alg) -> Self {
        match a {
            Alg::P256 => KeyAlgorithm::EcdsaP256,
            Alg::P384 => KeyAlgorithm::EcdsaP384,
        }
    }
}

#[derive(Args, Debug)]
pub(crate) struct InitArgs {
    /// The trust domain, e.g. `example.org`.
    #[arg(long)]
    trust_domain: String,
    /// Directory to write ca.pem, ca-key.pem (mode 0600) and bundle.pem into.
    #[arg(long)]
    out: PathBuf,
    /// Key algorithm of the CA.
    #[arg(long, value_enum, default_value = "p256")]
    key_algorithm: Alg,
    /// How long the root is valid, e.g. `365d`.
    #[arg(long, default_value = "365d", value_parser = parse_duration)]
    validity: Duration,
    /// Overwrite existing files.
    #[arg(long)]
    force: bool,
}

#[derive(Args, Debug)]
pub(crate) struct IssueArgs {
    /// The CA directory written by `fipstun ca init` (or holding ca.pem + ca-key.pem).
    #[arg(long)]
    ca: PathBuf,
    /// The SPIFFE ID to issue for (the CA signs only IDs in its trust domain).
    #[arg(long)]
    id: String,
    /// Directory to write svid.pem, svid-key.pem (mode 0600) and bundle.pem into.
    #[arg(long)]
    out: PathBuf,
    /// Requested lifetime, e.g. `1h`; clamped to 1 min .. 24 h.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    ttl: Duration,
    /// Key algorithm of the SVID.
    #[arg(long, value_enum, default_value = "p256")]
    key_algorithm: Alg,
    /// The CA's trust domain, for an external CA whose certificate does not name one.
    #[arg(long)]
    trust_domain: Option<String>,
    /// Overwrite existing files.
    #[arg(long)]
    force: bool,
}

pub(crate) fn run(cmd: CaCommand) -> Result<String, String> {
    match cmd {
        CaCommand::Init(a) => init(a),
        CaCommand::Issue(a) => issue(a),
        CaCommand::Serve(_) => Err("`ca serve` runs on its own runtime (main.rs)".into()),
    }
}

fn init(a: InitArgs) -> Result<String, String> {
    let td = TrustDomain::new(&a.trust_domain).map_err(|e| e.to_string())?;
    let ca = SvidIssuer::generate_root(
        td.clone(),
        a.key_algorithm.into(),
        a.validity,
        IssuerConfig::default(),
    )
    .map_err(|e| e.to_string())?;
    write_pem_dir(
        &a.out,
        [
            (CA_CHAIN, ca.ca_chain_pem()),
            (BUNDLE, ca.bundle().to_pem()),
        ],
        (CA_KEY, &ca.ca_key_pem()),
        a.force,
    )?;
    Ok(format!(
        "created a root CA for trust domain {td} in {}",
        a.out.display()
    ))
}

/// Load the CA in `dir` (ca.pem + ca-key.pem). Its trust domain is the one its certificate
/// names; `fallback` is used for external CAs whose certificate names none.
pub(crate) fn load_ca(dir: &Path, fallback: Option<TrustDomain>) -> Result<SvidIssuer, String> {
    load_ca_with(dir, fallback, IssuerConfig::default())
}

/// [`load_ca`] with the issuer's TTL bounds `config`.
pub(crate) fn load_ca_with(
    dir: &Path,
    fallback: Option<TrustDomain>,
    config: IssuerConfig,
) -> Result<SvidIssuer, String> {
    let read = |name: &str| {
        fs::read_to_string(dir.join(name)).map_err(|e| format!("{}: {e}", dir.join(name).display()))
    };
    let chain = read(CA_CHAIN)?;
    let key = zeroize::Zeroizing::new(read(CA_KEY)?);
    let td = match SvidIssuer::trust_domain_of_pem(&chain).map_err(|e| e.to_string())? {
        Some(td) => td,
        None => fallback.ok_or_else(|| {
            format!(
                "{} names no trust domain (no spiffe:// URI SAN); pass --trust-domain",
                dir.join(CA_CHAIN).display()
            )
        })?,
    };
    SvidIssuer::from_pem(td, &chain, &key, config).map_err(|e| e.to_string())
}

fn issue(a: IssueArgs) -> Result<String, String> {
    let id = SpiffeId::parse(&a.id).map_err(|e| e.to_string())?;
    let fallback = a
        .trust_domain
        .as_deref()
        .map(TrustDomain::new)
        .transpose()
        .map_err(|e| e.to_string())?;
    let ca = load_ca(&a.ca, fallback)?;
    let svid = ca
        .issue(&id, a.key_algorithm.into(), Some(a.ttl))
        .map_err(|e| e.to_string())?;
    write_pem_dir(
        &a.out,
        [
            (SVID_CHAIN, svid.chain_pem()),
            (BUNDLE, ca.bundle().to_pem()),
        ],
        (SVID_KEY, &svid.key().to_pem()),
        a.force,
    )?;
    let secs = svid
        .not_after()
        .duration_since(std::time::SystemTime::now())
        .map_or(0, |d| d.as_secs());
    Ok(format!(
        "issued an SVID for {id} valid for {secs} s in {}",
        a.out.display()
    ))
}

/// Create `dir` and write two public PEM files (mode 0644) and one private one (mode 0600),
/// each atomically through [`key_file::write`]. Every destination is checked before anything
/// is written, so a refusal (an existing file without `force`, a symbolic link) leaves the
/// directory as it was.
fn write_pem_dir(
    dir: &Path,
    public: [(&str, String); 2],
    (key_name, key_pem): (&str, &str),
    force: bool,
) -> Result<(), String> {
    fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let existing = if force {
        Existing::Replace
    } else {
        Existing::Keep
    };
    let names = public.iter().map(|(name, _)| *name).chain([key_name]);
    for name in names {
        key_file::check_destination(&dir.join(name), existing).map_err(|e| e.to_string())?;
    }
    // The key first: certificates never sit next to a key that failed to be written.
    key_file::write(
        &dir.join(key_name),
        key_pem.as_bytes(),
        PRIVATE_MODE,
        existing,
    )
    .map_err(|e| e.to_string())?;
    for (name, pem) in public {
        key_file::write(&dir.join(name), pem.as_bytes(), PUBLIC_MODE, existing)
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}
