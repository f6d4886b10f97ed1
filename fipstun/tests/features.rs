//! What each feature set links, checked against `cargo tree` (issue 21): the WireGuard crates
//! (and with them X25519, BLAKE2s and ChaCha20-Poly1305 from outside the FIPS module) are in
//! the build only when the `wireguard` feature asks for them; the benches are never linked by
//! the facade or the binary; and the binary built without WireGuard compiles and refuses a
//! WireGuard configuration by naming the feature.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The crates only the WireGuard backend brings, as `cargo tree -p fipstun-wireguard` shows
/// them against the HBONE build: the backend itself, its protocol engine (gotatun, the
/// maintained boringtun fork; boringtun itself is not used), the userspace TCP/IP stack, the
/// batched-UDP crate, and the handshake's primitives outside the FIPS module.
const WIREGUARD_ONLY: &[&str] = &[
    "fipstun-wireguard",
    "gotatun",
    "smoltcp",
    "quinn-udp",
    "x25519-dalek",
    "curve25519-dalek",
    "chacha20poly1305",
    "blake2",
];

const BENCHES: &str = "fipstun-benches";

fn workspace_manifest() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("fipstun/ lies in the workspace root")
        .join("Cargo.toml")
}

fn cargo() -> Command {
    let mut c = Command::new(env!("CARGO"));
    c.env("AWS_LC_FIPS_SYS_USE_SYSTEM", "0");
    c
}

/// The package names in the normal-dependency tree of `package` built with `features`.
fn tree(package: &str, features: &[&str]) -> Vec<String> {
    let out = cargo()
        .args([
            "tree",
            "--offline",
            "--locked",
            "-e",
            "normal",
            "--prefix",
            "none",
        ])
        .args(["--format", "{p}", "-p", package, "--manifest-path"])
        .arg(workspace_manifest())
        .args(features)
        .output()
        .expect("run cargo tree");
    assert!(
        out.status.success(),
        "cargo tree -p {package} {features:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    names.sort();
    names.dedup();
    names
}

fn present<'a>(names: &[String], wanted: &[&'a str]) -> Vec<&'a str> {
    wanted
        .iter()
        .copied()
        .filter(|w| names.iter().any(|n| n == w))
        .collect()
}

#[test]
fn hbone_alone_links_no_wireguard_crate() {
    let names = tree("fipstun", &["--no-default-features", "--features", "hbone"]);
    assert!(names.iter().any(|n| n == "fipstun-hbone"), "{names:?}");
    assert_eq!(
        present(&names, WIREGUARD_ONLY),
        Vec::<&str>::new(),
        "fipstun --no-default-features --features hbone links WireGuard crates"
    );
    // The default features are the same: hbone only.
    assert_eq!(
        present(&tree("fipstun", &[]), WIREGUARD_ONLY),
        Vec::<&str>::new()
    );
}

/// The other side of the check above, so that it can fail: with the feature, every crate the
/// list names is really there (a renamed or dropped dependency shows up here first).
#[test]
fn the_wireguard_feature_links_every_listed_crate() {
    let names = tree(
        "fipstun",
        &["--no-default-features", "--features", "wireguard"],
    );
    assert_eq!(present(&names, WIREGUARD_ONLY), WIREGUARD_ONLY);
}

#[test]
fn the_cli_without_default_features_links_no_wireguard_crate() {
    let names = tree("fipstun-cli", &["--no-default-features"]);
    assert!(names.iter().any(|n| n == "fipstun-hbone"), "{names:?}");
    assert_eq!(
        present(&names, WIREGUARD_ONLY),
        Vec::<&str>::new(),
        "fipstun-cli --no-default-features links WireGuard crates"
    );
    assert_eq!(
        present(&tree("fipstun-cli", &[]), WIREGUARD_ONLY),
        WIREGUARD_ONLY,
        "the default binary has the WireGuard backend"
    );
}

#[test]
fn neither_the_facade_nor_the_binary_links_the_benches() {
    for (package, features) in [
        ("fipstun", &["--all-features"][..]),
        ("fipstun", &[][..]),
        ("fipstun-cli", &[][..]),
    ] {
        let names = tree(package, features);
        assert!(
            !names.iter().any(|n| n == BENCHES),
            "{package} {features:?} links {BENCHES}"
        );
    }
}

/// `cargo build -p fipstun-cli --no-default-features` compiles, and that binary refuses every
/// WireGuard configuration by naming the feature: the cli's own unit test for it
/// (`config::tests::wireguard_config_names_the_missing_feature`, compiled only in such a build)
/// is built and run here.
#[test]
fn the_cli_without_wireguard_builds_and_names_the_feature() {
    let out = cargo()
        .args(["test", "--offline", "--locked", "-p", "fipstun-cli"])
        .args([
            "--no-default-features",
            "--bin",
            "fipstun",
            "--manifest-path",
        ])
        .arg(workspace_manifest())
        .args([
            "--",
            "--exact",
            "config::tests::wireguard_config_names_the_missing_feature",
        ])
        .output()
        .expect("run cargo test");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the cli without WireGuard does not build or its test fails:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("test result: ok. 1 passed"),
        "expected exactly the one no-WireGuard test to run:\n{stdout}"
    );
}
