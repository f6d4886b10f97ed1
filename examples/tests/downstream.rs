//! examples/downstream, a crate outside the workspace with its own manifest and lockfile,
//! builds and runs its HBONE round trip as a proxy author's crate would: without `./x`'s
//! environment, with only the `.cargo/config.toml` it tells users to copy, and naming no
//! rustls, h2, http or PKI-types crate in its manifest.

use std::path::{Path, PathBuf};
use std::process::Command;

fn downstream() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("downstream")
}

#[test]
fn the_manifest_names_no_foreign_tls_or_http_crate() {
    let manifest = std::fs::read_to_string(downstream().join("Cargo.toml")).unwrap();
    let manifest: toml::Table = manifest.parse().unwrap();
    let deps = manifest["dependencies"].as_table().unwrap();
    for name in deps.keys() {
        assert!(
            name.starts_with("fipstun-") || name == "tokio",
            "examples/downstream depends on {name}: a dependent should get it re-exported"
        );
    }
}

#[test]
fn the_cargo_config_pins_the_source_build_of_the_fips_module() {
    let config = std::fs::read_to_string(downstream().join(".cargo/config.toml")).unwrap();
    let config: toml::Table = config.parse().unwrap();
    assert_eq!(
        config["env"]["AWS_LC_FIPS_SYS_USE_SYSTEM"].as_str(),
        Some("0"),
        "without it aws-lc-fips-sys may link a system AWS-LC instead of the validated module"
    );
}

#[test]
fn the_downstream_crate_builds_and_runs_its_round_trip() {
    // One target directory for the workspace and this crate (CI time); the same one cargo
    // uses for the workspace when nothing says otherwise.
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"),
        PathBuf::from,
    );
    let out = Command::new(env!("CARGO"))
        .current_dir(downstream())
        .args(["run", "--locked", "--quiet"])
        .env("CARGO_TARGET_DIR", &target)
        // A dependent's shell does not have ./x's variables.
        .env_remove("AWS_LC_FIPS_SYS_USE_SYSTEM")
        .env_remove("RUSTFLAGS")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("round trip ok: 10 bytes"), "{stdout}");
    assert!(stdout.contains("fips=true"), "{stdout}");
    assert!(stdout.contains("TLS13_AES_256_GCM_SHA384"), "{stdout}");
}
