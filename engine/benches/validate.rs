//! load + validate on synthetic fleets of 1k / 10k / 50k hosts (hosts/10 tenants).
//! `cargo bench -p fleetform-engine --bench validate`; figures in BENCHMARKS.md.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use fleetform_engine::{load, synth, validate};

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("load+validate");
    g.sample_size(10);
    for hosts in [1_000usize, 10_000, 50_000] {
        let files = synth::synthetic_fleet(hosts, hosts / 10);
        g.throughput(Throughput::Elements(hosts as u64));
        g.bench_with_input(BenchmarkId::new("hosts", hosts), &files, |b, files| {
            b.iter(|| {
                let (docs, diags) = load::load(files);
                assert!(diags.is_empty());
                let fleet = validate::validate(&docs);
                assert!(fleet.is_ok());
                fleet
            })
        });
    }
    g.finish();
    let mut g = c.benchmark_group("load");
    g.sample_size(10);
    let files = synth::synthetic_fleet(10_000, 1_000);
    g.bench_function("hosts/10000", |b| b.iter(|| load::load(&files)));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
