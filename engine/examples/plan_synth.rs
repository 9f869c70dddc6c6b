//! Benchmark: load + validate + compile + graph + plan of a synthetic fleet,
//! with in-memory providers standing in for kube, redfish and ngc (every
//! resource observed, nothing there yet: the plan creates everything).
//!
//!   cargo run --release -p fleetform-engine --features testing --example plan_synth -- 10000 1000
//!   /usr/bin/time -v target/release/examples/plan_synth 10000 1000   # peak memory
use std::sync::Arc;
use std::time::Instant;

use fleetform_engine::observe::Providers;
use fleetform_engine::plan::PlanOptions;
use fleetform_engine::reconcile::{ObserveOptions, make_plan};
use fleetform_engine::secret::{SecretError, SecretRef, SecretResolver};
use fleetform_engine::state::State;
use fleetform_engine::testing::MemoryProvider;
use fleetform_engine::{Sensitive, compile, graph::Graph, load, synth, validate};

/// Every secret reads as the same test value (nothing is read from disk).
struct FixedSecrets;
impl SecretResolver for FixedSecrets {
    fn resolve(&self, _r: &SecretRef) -> Result<Sensitive<String>, SecretError> {
        Ok(Sensitive::new("bench-secret".into()))
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let (hosts, tenants) = (
        args.first().copied().unwrap_or(10_000),
        args.get(1).copied().unwrap_or(1_000),
    );
    let files = synth::synthetic_fleet(hosts, tenants);
    let t0 = Instant::now();
    let (docs, diags) = load::load(&files);
    assert!(diags.is_empty(), "{diags:?}");
    let fleet = validate::validate(&docs).expect("synthetic fleet is valid");
    let t_valid = t0.elapsed();
    let compiled = compile::compile(&fleet, &FixedSecrets).expect("compiles");
    let t_compile = t0.elapsed();
    let graph = Graph::build(&compiled.resources).expect("acyclic");
    let waves = graph.waves().len();
    let t_graph = t0.elapsed();
    let providers = Providers::new()
        .with(Arc::new(MemoryProvider::named("kube")))
        .with(Arc::new(MemoryProvider::named("redfish")))
        .with(Arc::new(MemoryProvider::named("ngc")));
    let planned = make_plan(
        &compiled.resources,
        &State::default(),
        &providers,
        &PlanOptions::default(),
        ObserveOptions::default(),
        Some("bench".into()),
    )
    .await
    .expect("plans");
    let t_plan = t0.elapsed();
    let peak = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or_else(|| "?".to_string(), |kib| format!("{} MiB", kib / 1024));
    println!(
        "{hosts} hosts / {tenants} tenants: {} resources, {waves} waves, {} creates",
        compiled.resources.len(),
        planned.plan.summary.create,
    );
    println!(
        "  load+validate {:.2} s | compile {:.2} s + graph {:.2} s + observe+plan {:.2} s = {:.2} s (target < 2 s) | peak RSS {peak} (target < 1 GiB)",
        t_valid.as_secs_f64(),
        (t_compile - t_valid).as_secs_f64(),
        (t_graph - t_compile).as_secs_f64(),
        (t_plan - t_graph).as_secs_f64(),
        (t_plan - t_valid).as_secs_f64(),
    );
}
