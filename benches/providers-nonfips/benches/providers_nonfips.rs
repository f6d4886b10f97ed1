//! The aws-lc-rs (non-FIPS) column of the crypto provider comparison: the ring-API workloads
//! of `benches/benches/providers/` against aws-lc-rs built without `fips`, filed under the same
//! criterion IDs (`providers/<primitive>/<input>/aws-lc-rs`). Measures only.
//!
//! `cargo bench --manifest-path benches/providers-nonfips/Cargo.toml` (`./x bench` runs it)

use criterion::{Criterion, criterion_group, criterion_main};

#[path = "../../benches/providers/aws_lc.rs"]
mod aws_lc;
#[path = "../../benches/providers/group.rs"]
mod group;
#[path = "../../benches/providers/workload.rs"]
mod workload;

use workload::{AWS_LC, rows};

fn providers(c: &mut Criterion) {
    aws_lc::require_module(&AWS_LC);
    let fixture = aws_lc::Fixture::new();
    let mut g = group::providers_group(c);
    for row in rows() {
        group::set_throughput(&mut g, &row);
        aws_lc::bench(&mut g, &row, &AWS_LC, &fixture);
    }
    g.finish();
}

criterion_group!(benches, providers);
criterion_main!(benches);
