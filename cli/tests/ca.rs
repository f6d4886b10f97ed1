//! `fipstun ca init | issue` as a user runs them.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::SystemTime;

use fipstun_identity::bundle::{BundleSet, TrustBundle};
use fipstun_identity::spiffe::{SpiffeId, TrustDomain};
use fipstun_identity::svid::{self, Usage};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

fn fipstun(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fipstun"))
        .args(args)
        .output()
        .unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn init_then_issue_writes_a_valid_svid() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, wl) = (dir.path().join("ca"), dir.path().join("web"));
    let out = fipstun(&[
        "ca",
        "init",
        "--trust-domain",
        "example.org",
        "--out",
        s(&ca),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key_mode = std::fs::metadata(ca.join("ca-key.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(key_mode & 0o777, 0o600, "the CA key is private");

    let id = "spiffe://example.org/ns/prod/sa/web";
    let out = fipstun(&[
        "ca",
        "issue",
        "--ca",
        s(&ca),
        "--id",
        id,
        "--out",
        s(&wl),
        "--ttl",
        "10m",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("valid for 59"));
    let key_mode = std::fs::metadata(wl.join("svid-key.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(key_mode & 0o777, 0o600);

    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(wl.join("svid.pem"))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let td = TrustDomain::new("example.org").unwrap();
    let bundle = TrustBundle::from_pem(
        td.clone(),
        &std::fs::read_to_string(wl.join("bundle.pem")).unwrap(),
    )
    .unwrap();
    let got = svid::validate(
        &chain,
        &BundleSet::new().with(bundle),
        SystemTime::now(),
        Usage::Client,
    )
    .unwrap();
    assert_eq!(got, SpiffeId::parse(id).unwrap());

    // Files are not overwritten by accident.
    let again = fipstun(&["ca", "issue", "--ca", s(&ca), "--id", id, "--out", s(&wl)]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists (use --force"));
    let forced = fipstun(&[
        "ca",
        "issue",
        "--ca",
        s(&ca),
        "--id",
        id,
        "--out",
        s(&wl),
        "--force",
    ]);
    assert!(forced.status.success());
}

#[test]
fn issue_refuses_bad_or_foreign_ids() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");
    assert!(
        fipstun(&[
            "ca",
            "init",
            "--trust-domain",
            "example.org",
            "--out",
            s(&ca)
        ])
        .status
        .success()
    );
    let bad = fipstun(&[
        "ca",
        "issue",
        "--ca",
        s(&ca),
        "--id",
        "spiffe://example.org/a//b",
        "--out",
        s(&dir.path().join("x")),
    ]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("invalid SPIFFE ID"));
    let foreign = fipstun(&[
        "ca",
        "issue",
        "--ca",
        s(&ca),
        "--id",
        "spiffe://other.org/a",
        "--out",
        s(&dir.path().join("y")),
    ]);
    assert!(
        !foreign.status.success(),
        "another trust domain's root must not sign"
    );
    let no_ca = fipstun(&[
        "ca",
        "issue",
        "--ca",
        s(&dir.path().join("nope")),
        "--id",
        "spiffe://example.org/a",
        "--out",
        s(&dir.path().join("z")),
    ]);
    assert!(!no_ca.status.success());
    assert!(String::from_utf8_lossy(&no_ca.stderr).contains("ca.pem"));
    let bad_td = fipstun(&[
        "ca",
        "init",
        "--trust-domain",
        "Example.org",
        "--out",
        s(&dir.path().join("c2")),
    ]);
    assert!(!bad_td.status.success());
}
