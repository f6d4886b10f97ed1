//! The crypto provider comparison (issue 25): the primitives a FIPS tunnel spends its time in,
//! from the validated module fipstun links (aws-lc-rs with `fips`) against what a user would
//! otherwise use: ring and RustCrypto here, aws-lc-rs without `fips` from
//! `benches/providers-nonfips` (cargo unifies features, so one workspace cannot build aws-lc-rs
//! both ways). Every cell is `providers/<primitive>/<input>/<provider>`;
//! `cargo run -p fipstun-benches --bin bench-report` puts them in one table with the ratio of
//! each to the FIPS module. Measures only.
//!
//! `cargo bench -p fipstun-benches --bench providers` (`./x bench` runs both halves)

use criterion::{Criterion, criterion_group, criterion_main};

#[path = "providers/aws_lc.rs"]
mod aws_lc;
#[path = "providers/group.rs"]
mod group;
#[path = "providers/ring.rs"]
mod ring_provider;
#[path = "providers/rustcrypto.rs"]
mod rustcrypto;
#[path = "providers/workload.rs"]
mod workload;

use workload::{AWS_LC_FIPS, RING, RUSTCRYPTO, rows};

fn providers(c: &mut Criterion) {
    aws_lc::require_module(&AWS_LC_FIPS);
    let fips = aws_lc::Fixture::new();
    let ring = ring_provider::Fixture::new();
    let rustcrypto = rustcrypto::Fixture::new();
    let mut g = group::providers_group(c);
    // Row by row, so each row's cells are measured back to back on the same machine state.
    for row in rows() {
        group::set_throughput(&mut g, &row);
        aws_lc::bench(&mut g, &row, &AWS_LC_FIPS, &fips);
        ring_provider::bench(&mut g, &row, &RING, &ring);
        rustcrypto::bench(&mut g, &row, &RUSTCRYPTO, &rustcrypto);
    }
    g.finish();
}

criterion_group!(benches, providers);
criterion_main!(benches);
