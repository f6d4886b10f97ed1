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

    // The library loads what `ca issue` wrote, as a proxy author would.
    let identity = fipstun_hbone::TlsIdentity::from_dir(&wl).unwrap();
    let current = identity.svid.current().expect("an SVID in the slot");
    assert_eq!(current.id, SpiffeId::parse(id).unwrap());

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

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o777
}

/// The names in `dir`, sorted: temporary files would show up here.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn ok(out: Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn init(ca: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "ca",
        "init",
        "--trust-domain",
        "example.org",
        "--out",
        s(ca),
    ];
    args.extend_from_slice(extra);
    fipstun(&args)
}

const WEB: &str = "spiffe://example.org/ns/prod/sa/web";

fn issue(ca: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["ca", "issue", "--ca", s(ca), "--id", WEB, "--out", s(out)];
    args.extend_from_slice(extra);
    fipstun(&args)
}

/// The SVID in `dir` validates against the bundle beside it and names WEB.
fn assert_loads(dir: &Path) {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(dir.join("svid.pem"))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let bundle = TrustBundle::from_pem(
        TrustDomain::new("example.org").unwrap(),
        &std::fs::read_to_string(dir.join("bundle.pem")).unwrap(),
    )
    .unwrap();
    let got = svid::validate(
        &chain,
        &BundleSet::new().with(bundle),
        SystemTime::now(),
        Usage::Client,
    )
    .unwrap();
    assert_eq!(got, SpiffeId::parse(WEB).unwrap());
    let key = std::fs::read_to_string(dir.join("svid-key.pem")).unwrap();
    assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"), "{key}");
}

#[test]
fn force_replaces_key_files_with_mode_0600() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, wl) = (dir.path().join("ca"), dir.path().join("web"));
    ok(init(&ca, &[]));
    ok(issue(&ca, &wl, &[]));
    let loosen = |p: &Path| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(mode(p), 0o644);
    };
    loosen(&wl.join("svid-key.pem"));
    loosen(&ca.join("ca-key.pem"));
    let old_key = std::fs::read(wl.join("svid-key.pem")).unwrap();

    ok(issue(&ca, &wl, &["--force"]));
    assert_eq!(mode(&wl.join("svid-key.pem")), 0o600);
    assert_ne!(std::fs::read(wl.join("svid-key.pem")).unwrap(), old_key);
    assert_eq!(mode(&wl.join("svid.pem")), 0o644);
    assert_eq!(mode(&wl.join("bundle.pem")), 0o644);
    assert_loads(&wl);
    assert_eq!(names(&wl), ["bundle.pem", "svid-key.pem", "svid.pem"]);

    ok(init(&ca, &["--force"]));
    assert_eq!(mode(&ca.join("ca-key.pem")), 0o600);
    assert_eq!(names(&ca), ["bundle.pem", "ca-key.pem", "ca.pem"]);
    // The new CA signs, and what it issued loads.
    ok(issue(&ca, &wl, &["--force"]));
    assert_loads(&wl);
    assert_eq!(names(&wl), ["bundle.pem", "svid-key.pem", "svid.pem"]);
}

#[test]
fn a_symlink_at_a_key_path_is_refused_and_its_target_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, wl) = (dir.path().join("ca"), dir.path().join("web"));
    ok(init(&ca, &[]));
    let outside = dir.path().join("outside.txt");
    std::fs::write(&outside, "not a key").unwrap();
    std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o644)).unwrap();

    std::fs::create_dir(&wl).unwrap();
    std::os::unix::fs::symlink(&outside, wl.join("svid-key.pem")).unwrap();
    for extra in [&[][..], &["--force"]] {
        let out = issue(&ca, &wl, extra);
        assert!(!out.status.success(), "{extra:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!(
                "{} is a symbolic link",
                wl.join("svid-key.pem").display()
            )),
            "{extra:?}: {stderr}"
        );
        assert_eq!(std::fs::read_to_string(&outside).unwrap(), "not a key");
        assert_eq!(mode(&outside), 0o644);
        // Nothing was written: the link is still the only entry.
        assert_eq!(names(&wl), ["svid-key.pem"]);
        assert!(
            std::fs::symlink_metadata(wl.join("svid-key.pem"))
                .unwrap()
                .is_symlink()
        );
    }

    // The CA's own key path as well.
    let ca2 = dir.path().join("ca2");
    std::fs::create_dir(&ca2).unwrap();
    std::os::unix::fs::symlink(&outside, ca2.join("ca-key.pem")).unwrap();
    let out = init(&ca2, &["--force"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is a symbolic link"));
    assert_eq!(std::fs::read_to_string(&outside).unwrap(), "not a key");
    assert_eq!(names(&ca2), ["ca-key.pem"]);
}
