//! `fipstun status` as a user runs it.

use std::process::Command;

#[test]
fn status_json_reports_fips_mode_and_the_strict_lists() {
    let out = Command::new(env!("CARGO_BIN_EXE_fipstun"))
        .args(["status", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["fips_mode_active"], true);
    assert_eq!(v["provider_fips"], true);
    assert_eq!(
        v["self_test"]["known_answer_failure"],
        serde_json::Value::Null
    );
    assert_eq!(v["fips_branch"], 3);
    assert_eq!(
        v["strict"]["cipher_suites"],
        serde_json::json!(["TLS13_AES_256_GCM_SHA384", "TLS13_AES_128_GCM_SHA256"])
    );
    assert_eq!(
        v["strict"]["kx_groups"],
        serde_json::json!(["secp256r1", "secp384r1"])
    );
}

#[test]
fn status_table_says_fips_mode_active() {
    let out = Command::new(env!("CARGO_BIN_EXE_fipstun"))
        .arg("status")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("FIPS mode active  yes"), "{text}");
    assert!(text.contains("#5314"), "{text}");
}

#[test]
fn unknown_subcommand_fails_with_usage() {
    let out = Command::new(env!("CARGO_BIN_EXE_fipstun"))
        .arg("frobnicate")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Usage"));
}
