//! Identity-manager throughput: how many SVID renewals per second the manager sustains against
//! the in-process CA (new key + CSR + CA check and sign + response check + slot swap each).
//! Measures only.
//!
//! `cargo bench -p fipstun-benches --bench rotation`

use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fipstun_identity::ca::{IssuerConfig, SvidIssuer};
use fipstun_identity::keys::KeyAlgorithm;
use fipstun_identity::manager::{Clock, IdentityManager, LocalCa, ManagerConfig};
use fipstun_identity::spiffe::{SpiffeId, TrustDomain};

const IDENTITIES: usize = 256;

fn renewals(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let issuer = Arc::new(
        SvidIssuer::generate_root(
            TrustDomain::new("bench.test").unwrap(),
            KeyAlgorithm::EcdsaP256,
            Duration::from_secs(86400),
            IssuerConfig::default(),
        )
        .unwrap(),
    );
    let ids: Vec<SpiffeId> = (0..IDENTITIES)
        .map(|i| SpiffeId::parse(&format!("spiffe://bench.test/w/{i}")).unwrap())
        .collect();
    let mut g = c.benchmark_group("manager");
    g.throughput(Throughput::Elements(IDENTITIES as u64));
    g.sample_size(20);
    // Every iteration is a fresh manager fetching every identity at once: each fetch is one
    // full renewal through the bounded (8 in flight) CA path.
    g.bench_function("renewals_p256", |b| {
        b.iter(|| {
            rt.block_on(async {
                let ca = Arc::new(LocalCa::new(issuer.clone(), Clock::system()));
                let m = IdentityManager::start(ca, ManagerConfig::default(), Clock::system());
                let tasks: Vec<_> = ids
                    .iter()
                    .cloned()
                    .map(|id| {
                        let m = m.clone();
                        tokio::spawn(async move { m.fetch(&id).await.map(|_| ()) })
                    })
                    .collect();
                for t in tasks {
                    t.await.unwrap().unwrap();
                }
            })
        })
    });
    g.finish();
}

criterion_group!(benches, renewals);
criterion_main!(benches);
