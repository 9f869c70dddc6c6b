//! Issue 20's guard: the work compile, graph and plan do must grow linearly with the fleet.
//!
//! Counts instead of timing, so it holds on a loaded machine and in a debug build: for the
//! synthetic fleet at 1,000 hosts / 100 tenants and at 2,000 hosts / 200 tenants, it counts
//! - allocations and bytes allocated (a counting global allocator), and
//! - address comparisons and reads (`fleetform_contract::work`: map lookups keyed by address,
//!   sorts, equality, `provider()`/`path()`/`as_str()`), which catches a scan that allocates
//!   nothing, like the one in commit e9e0358,
//!
//! during `compile` + `Graph::build` + `make_plan` (in-memory providers, everything
//! created), and asserts each grows less than 2.4× when the fleet doubles. Linear work
//! with n·log n map lookups grows about 2.1×; the quadratic scan of e9e0358 (each tenant's
//! Cluster pass reading every compiled resource) made address operations grow 2.8×
//! (BENCHMARKS.md, "Work guard").
//!
//! One test in this binary: the counters are process-wide.
use std::alloc::System;
use std::sync::Arc;

use fleetform_contract::work;
use fleetform_engine::observe::Providers;
use fleetform_engine::plan::PlanOptions;
use fleetform_engine::reconcile::{ObserveOptions, make_plan};
use fleetform_engine::secret::{SecretError, SecretRef, SecretResolver};
use fleetform_engine::state::State;
use fleetform_engine::testing::MemoryProvider;
use fleetform_engine::{Sensitive, compile, graph::Graph, load, synth, validate};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Growth allowed when the fleet doubles.
const MAX_RATIO: f64 = 2.4;

struct FixedSecrets;
impl SecretResolver for FixedSecrets {
    fn resolve(&self, _r: &SecretRef) -> Result<Sensitive<String>, SecretError> {
        Ok(Sensitive::new("guard-secret".into()))
    }
}

#[derive(Debug)]
struct Work {
    resources: usize,
    allocations: usize,
    bytes: usize,
    id_ops: u64,
}

fn measure(hosts: usize, tenants: usize) -> Work {
    let files = synth::synthetic_fleet(hosts, tenants);
    let (docs, diags) = load::load(&files);
    assert!(diags.is_empty(), "{diags:?}");
    let fleet = validate::validate(&docs).expect("synthetic fleet is valid");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let providers = Providers::new()
        .with(Arc::new(MemoryProvider::named("kube")))
        .with(Arc::new(MemoryProvider::named("redfish")))
        .with(Arc::new(MemoryProvider::named("ngc")));

    let region = Region::new(GLOBAL);
    let ops = work::id_ops();
    let compiled = compile::compile(&fleet, &FixedSecrets).expect("compiles");
    let graph = Graph::build(&compiled.resources).expect("acyclic");
    let planned = rt
        .block_on(make_plan(
            &compiled.resources,
            &State::default(),
            &providers,
            &PlanOptions::default(),
            ObserveOptions::default(),
            Some("guard".into()),
        ))
        .expect("plans");
    let id_ops = work::id_ops() - ops;
    let stats = region.change();
    assert_eq!(planned.plan.summary.create, compiled.resources.len());
    drop(graph);
    Work {
        resources: compiled.resources.len(),
        allocations: stats.allocations + stats.reallocations,
        bytes: stats.bytes_allocated,
        id_ops,
    }
}

#[test]
fn compile_graph_plan_work_grows_linearly() {
    let small = measure(1_000, 100);
    let large = measure(2_000, 200);
    let ratio = |a: f64, b: f64| b / a;
    let r_res = ratio(small.resources as f64, large.resources as f64);
    let r_alloc = ratio(small.allocations as f64, large.allocations as f64);
    let r_bytes = ratio(small.bytes as f64, large.bytes as f64);
    let r_ops = ratio(small.id_ops as f64, large.id_ops as f64);
    eprintln!("1,000 hosts: {small:?}\n2,000 hosts: {large:?}");
    eprintln!(
        "ratios 2,000/1,000: resources {r_res:.3}, allocations {r_alloc:.3}, bytes {r_bytes:.3}, address ops {r_ops:.3} (limit {MAX_RATIO})"
    );
    for (what, r) in [
        ("allocations", r_alloc),
        ("bytes allocated", r_bytes),
        ("address comparisons and reads", r_ops),
    ] {
        assert!(
            r < MAX_RATIO,
            "{what} grew {r:.2}× when the fleet doubled (resources {r_res:.2}×): \
             compile, graph or plan is no longer linear; see BENCHMARKS.md, \"Work guard\""
        );
    }
}
