//! The `fipstun` binary links the AWS-LC FIPS module and no other AWS-LC.
//!
//! rustls' and rcgen's `aws_lc_rs` features switch on aws-lc-rs's `aws-lc-sys` feature, so
//! cargo also compiles the non-FIPS `aws-lc-sys` (`cargo tree -i aws-lc-sys`). aws-lc-rs built
//! with `fips` calls only `aws-lc-fips-sys`, and the linker drops what nothing calls; this test
//! holds that true of the binary users run, by its symbols: the FIPS module's are prefixed
//! `aws_lc_fips_<version>_`, the non-FIPS library's `aws_lc_<version>_`.

use std::process::Command;

#[test]
fn the_binary_links_only_the_fips_module() {
    let out = Command::new("nm")
        .arg(env!("CARGO_BIN_EXE_fipstun"))
        .output()
        .expect("nm (binutils, installed with gcc) must be on PATH");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let symbols = String::from_utf8_lossy(&out.stdout);
    let names = || symbols.lines().filter_map(|l| l.split_whitespace().last());
    let fips = names().filter(|s| s.starts_with("aws_lc_fips_0_")).count();
    assert!(
        fips > 100,
        "only {fips} symbols of the FIPS module: is it linked?"
    );
    let other: Vec<&str> = names()
        .filter(|s| {
            s.strip_prefix("aws_lc_")
                .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
                || s.contains("11aws_lc_sys")
        })
        .take(5)
        .collect();
    assert!(
        other.is_empty(),
        "the binary links the non-FIPS aws-lc-sys: {other:?}"
    );
}
