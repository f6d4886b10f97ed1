//! What each feature set links, checked against `cargo tree` (issue 21): the WireGuard crates
//! (and with them X25519, BLAKE2s and ChaCha20-Poly1305 from outside the FIPS module) are in
//! the build only when the `wireguard` feature asks for them; the benches are never linked by
//! the facade or the binary; the binary built without WireGuard compiles and refuses a
//! WireGuard configuration by naming the feature; and the crates of the crypto provider
//! comparison (issue 25: ring, RustCrypto's AES-GCM, P-256 and SHA-2) are the benches' alone,
//! with no RustCrypto AEAD in a production build beyond what the WireGuard backend brings.

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

/// The crates only the provider comparison (benches/benches/providers.rs) brings: ring, and
/// RustCrypto's AES-GCM (with its AES, CTR and GHASH/POLYVAL parts), P-256 (ECDSA, the curve
/// arithmetic) and SHA-2. x25519-dalek is compared too but is not listed: the WireGuard
/// backend links it (`WIREGUARD_ONLY`). aws-lc-rs without `fips` is not in this workspace at
/// all (benches/providers-nonfips is a workspace of its own).
const COMPARISON_ONLY: &[&str] = &[
    "ring",
    "aes-gcm",
    "aes",
    "ctr",
    "ghash",
    "polyval",
    "p256",
    "ecdsa",
    "elliptic-curve",
    "sha2",
];

/// RustCrypto's AEADs and the parts they are built of: none may be in a production build
/// except `WIREGUARD_AEAD`.
const RUSTCRYPTO_AEAD: &[&str] = &[
    "aead",
    "aes-gcm",
    "aes-gcm-siv",
    "aes-siv",
    "ccm",
    "eax",
    "ocb3",
    "chacha20poly1305",
    "xsalsa20poly1305",
    "aes",
    "ctr",
    "ghash",
    "polyval",
    "chacha20",
    "salsa20",
    "poly1305",
    "universal-hash",
    "cipher",
];

/// What the WireGuard backend brings of `RUSTCRYPTO_AEAD` today, all through gotatun's
/// transport-data AEAD: chacha20poly1305 0.10 and its parts (the `aead` traits, the ChaCha20
/// stream cipher and its `cipher` traits, Poly1305 and its `universal-hash` traits).
const WIREGUARD_AEAD: &[&str] = &[
    "aead",
    "chacha20poly1305",
    "chacha20",
    "poly1305",
    "universal-hash",
    "cipher",
];

/// Who may stand in the inverted tree of a `WIREGUARD_AEAD` crate: the other parts, gotatun,
/// the backend and the facade. Anything else would be a second way in.
const WIREGUARD_AEAD_PATH: &[&str] = &["gotatun", "fipstun-wireguard", "fipstun"];

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
    tree_of("normal", package, features)
}

/// The package names in the tree of `package` over the dependency kinds `edges` (cargo tree's
/// `-e`), built with `features` (`--invert NAME` among them inverts it).
fn tree_of(edges: &str, package: &str, features: &[&str]) -> Vec<String> {
    let out = cargo()
        .args(["tree", "--offline", "--locked", "-e", edges])
        .args(["--prefix", "none"])
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

/// The workspace's member packages.
fn members() -> Vec<String> {
    let out = cargo()
        .args([
            "tree",
            "--offline",
            "--locked",
            "--workspace",
            "--depth",
            "0",
        ])
        .args(["--prefix", "none", "--format", "{p}", "--manifest-path"])
        .arg(workspace_manifest())
        .output()
        .expect("run cargo tree");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
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

#[test]
fn production_builds_link_no_provider_comparison_crate() {
    for (package, features) in [
        ("fipstun", &[][..]),
        ("fipstun", &["--all-features"][..]),
        ("fipstun-cli", &[][..]),
        ("fipstun-cli", &["--no-default-features"][..]),
    ] {
        assert_eq!(
            present(&tree(package, features), COMPARISON_ONLY),
            Vec::<&str>::new(),
            "{package} {features:?} links crates of the provider comparison"
        );
    }
}

/// `cargo tree -e normal -p fipstun --all-features`: the RustCrypto AEAD crates in it are
/// exactly `WIREGUARD_AEAD`, each reached only through the WireGuard backend; without that
/// feature there are none.
#[test]
fn the_only_rustcrypto_aead_in_production_is_the_wireguard_backends() {
    let all = tree("fipstun", &["--all-features"]);
    assert_eq!(present(&all, RUSTCRYPTO_AEAD), WIREGUARD_AEAD);
    for name in WIREGUARD_AEAD {
        let dependents = tree("fipstun", &["--all-features", "--invert", name]);
        let stray: Vec<&String> = dependents
            .iter()
            .filter(|d| {
                !WIREGUARD_AEAD.contains(&d.as_str()) && !WIREGUARD_AEAD_PATH.contains(&d.as_str())
            })
            .collect();
        assert!(
            stray.is_empty(),
            "{name} reaches fipstun through {stray:?}, not only the WireGuard backend"
        );
        assert!(
            dependents.iter().any(|d| d == "fipstun-wireguard"),
            "{name}: {dependents:?}"
        );
    }
    for features in [
        &["--no-default-features", "--features", "hbone"][..],
        &[][..],
    ] {
        assert_eq!(
            present(&tree("fipstun", features), RUSTCRYPTO_AEAD),
            Vec::<&str>::new(),
            "fipstun {features:?}"
        );
    }
}

/// Every workspace crate but the benches, over normal, build and dev dependencies with all
/// features, is free of `COMPARISON_ONLY`; the benches have every crate of it they compare (the
/// other side, so that the check can fail).
#[test]
fn only_the_benches_bring_the_provider_comparison_crates() {
    let members = members();
    assert!(members.len() > 10, "{members:?}");
    for member in members.iter().filter(|m| *m != BENCHES) {
        assert_eq!(
            present(
                &tree_of("normal,build,dev", member, &["--all-features"]),
                COMPARISON_ONLY
            ),
            Vec::<&str>::new(),
            "{member} brings crates of the provider comparison"
        );
    }
    let benches = tree_of("normal,build,dev", BENCHES, &[]);
    for compared in ["ring", "aes-gcm", "p256", "sha2", "x25519-dalek"] {
        assert!(
            benches.iter().any(|n| n == compared),
            "{BENCHES} no longer has {compared}"
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
