//! Issue 20's guard: the work compile, graph and plan do must grow linearly with the fleet.
//!
//! Counts instead of timing, so it holds on a loaded machine and in a debug build: for the
//! synthetic fleet at 1,000 hosts / 100 tenants and at 2,000 hosts / 200 tenants, it counts
//! - allocations and bytes allocated (a counting global allocator), and
//! - address comparisons and reads (`fleetform_contract::work`: map lookups keyed by address,
//!   sorts, equality, `provider()`/`path()`/`as_str()`), which catches a scan that allocates
//!   nothing, like the one in commit e9e0358,
//!
//! in each of `compile`, `Graph::build` and `make_plan` (in-memory providers, everything
//! created), and asserts each count grows less than 2.4× when the fleet doubles. The counts are
//! deterministic (one-thread runtime); linear work with n·log n map lookups grows 1.99-2.22×.
//! The quadratic scan of e9e0358 (each tenant's Cluster API pass reading every compiled
//! resource), put back, made compile's address operations grow 2.76× and fails this test
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

/// What one stage did.
#[derive(Debug, Clone, Copy)]
struct Work {
    allocations: usize,
    bytes: usize,
    id_ops: u64,
}

/// Counts the work `f` does, on all threads.
fn counted<T>(f: impl FnOnce() -> T) -> (T, Work) {
    let region = Region::new(GLOBAL);
    let ops = work::id_ops();
    let out = f();
    let id_ops = work::id_ops() - ops;
    let stats = region.change();
    let w = Work {
        allocations: stats.allocations + stats.reallocations,
        bytes: stats.bytes_allocated,
        id_ops,
    };
    (out, w)
}

/// Resources compiled, and the work of compile, graph and plan.
fn measure(hosts: usize, tenants: usize) -> (usize, [Work; 3]) {
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

    let (compiled, w_compile) =
        counted(|| compile::compile(&fleet, &FixedSecrets).expect("compiles"));
    let (graph, w_graph) = counted(|| Graph::build(&compiled.resources).expect("acyclic"));
    let (planned, w_plan) = counted(|| {
        rt.block_on(make_plan(
            &compiled.resources,
            &State::default(),
            &providers,
            &PlanOptions::default(),
            ObserveOptions::default(),
            Some("guard".into()),
        ))
        .expect("plans")
    });
    assert_eq!(planned.plan.summary.create, compiled.resources.len());
    drop(graph);
    (compiled.resources.len(), [w_compile, w_graph, w_plan])
}

#[test]
fn compile_graph_plan_work_grows_linearly() {
    let (n_small, small) = measure(1_000, 100);
    let (n_large, large) = measure(2_000, 200);
    eprintln!(
        "resources {n_small} -> {n_large} ({:.3}x)",
        n_large as f64 / n_small as f64
    );
    let mut failures = Vec::new();
    for (i, stage) in ["compile", "graph", "plan"].into_iter().enumerate() {
        let (a, b) = (small[i], large[i]);
        for (what, x, y) in [
            ("allocations", a.allocations as f64, b.allocations as f64),
            ("bytes allocated", a.bytes as f64, b.bytes as f64),
            (
                "address comparisons and reads",
                a.id_ops as f64,
                b.id_ops as f64,
            ),
        ] {
            let r = y / x;
            eprintln!("{stage:8} {what:30} {x:>12} -> {y:>12}  {r:.3}x");
            if r >= MAX_RATIO {
                failures.push(format!("{stage}: {what} grew {r:.2}x"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "the fleet doubled and {}: a stage is no longer linear; see BENCHMARKS.md, \"Work guard\"",
        failures.join(", ")
    );
}
