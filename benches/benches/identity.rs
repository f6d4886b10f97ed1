//! Identity throughput: SVIDs issued per second by the embedded CA and SVID validations per
//! second, all crypto in the AWS-LC FIPS module. Measures only; asserts nothing about speed.
//!
//! `cargo bench -p fipstun-benches --bench identity`

use std::hint::black_box;
use std::time::{Duration, SystemTime};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fipstun_identity::bundle::BundleSet;
use fipstun_identity::ca::{IssuerConfig, SvidIssuer};
use fipstun_identity::keys::{KeyAlgorithm, PrivateKey, csr_for};
use fipstun_identity::spiffe::{SpiffeId, TrustDomain};
use fipstun_identity::svid::{self, Usage};

fn ca(alg: KeyAlgorithm) -> SvidIssuer {
    SvidIssuer::generate_root(
        TrustDomain::new("bench.test").unwrap(),
        alg,
        Duration::from_secs(86400),
        IssuerConfig::default(),
    )
    .unwrap()
}

fn issuance(c: &mut Criterion) {
    let id = SpiffeId::parse("spiffe://bench.test/ns/default/sa/web").unwrap();
    let mut g = c.benchmark_group("svid_issue");
    g.throughput(Throughput::Elements(1));
    for (name, alg) in [
        ("p256", KeyAlgorithm::EcdsaP256),
        ("p384", KeyAlgorithm::EcdsaP384),
    ] {
        let ca = ca(alg);
        let key = PrivateKey::generate(alg).unwrap();
        let csr = csr_for(&id, &key).unwrap();
        // What the CA does per request: parse + verify the CSR, bind the SAN, sign, encode.
        g.bench_function(format!("sign_csr/{name}"), |b| {
            b.iter(|| ca.sign_csr(black_box(&csr), &id, None).unwrap())
        });
        // What a workload's renewal costs end to end in-process: new key, CSR, sign.
        g.bench_function(format!("keygen_csr_sign/{name}"), |b| {
            b.iter(|| ca.issue(black_box(&id), alg, None).unwrap())
        });
    }
    g.finish();
}

fn validation(c: &mut Criterion) {
    let id = SpiffeId::parse("spiffe://bench.test/ns/default/sa/web").unwrap();
    let mut g = c.benchmark_group("svid_validate");
    g.throughput(Throughput::Elements(1));
    for (name, alg) in [
        ("p256", KeyAlgorithm::EcdsaP256),
        ("p384", KeyAlgorithm::EcdsaP384),
    ] {
        let ca = ca(alg);
        let svid = ca.issue(&id, alg, None).unwrap();
        let bundles = BundleSet::new().with(ca.bundle().clone());
        g.bench_function(name, |b| {
            b.iter(|| {
                svid::validate(
                    black_box(svid.chain()),
                    &bundles,
                    SystemTime::now(),
                    Usage::Client,
                )
                .unwrap()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, issuance, validation);
criterion_main!(benches);
