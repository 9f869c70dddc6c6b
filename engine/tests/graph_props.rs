//! Property tests of the graph walk: for random DAGs, apply order respects
//! every edge, any cycle is found, and one failure never skips an unrelated resource.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use fleetform_engine::apply::{ApplyOptions, Outcome};
use fleetform_engine::graph::{Graph, GraphError};
use fleetform_engine::observe::Providers;
use fleetform_engine::plan::PlanOptions;
use fleetform_engine::provider::{
    Applied, ApplyContext, ApplyRequest, Change, ObserveRequest, Observed, ProviderError,
};
use fleetform_engine::reconcile::{ObserveOptions, make_plan, run_apply};
use fleetform_engine::state::{LocalStateStore, StateStore};
use fleetform_engine::testing::{MemoryProvider, Script};
use fleetform_engine::{Desired, Provider, ResourceId};
use proptest::prelude::*;
use serde_json::json;

fn id(i: usize) -> ResourceId {
    ResourceId::new("test", format!("r{i:03}"))
}

/// Random DAG: node i may depend only on nodes < i.
fn dag() -> impl Strategy<Value = Vec<Vec<usize>>> {
    (2usize..25).prop_flat_map(|n| {
        (0..n)
            .map(|i| {
                proptest::collection::vec(0..i.max(1), 0..3.min(i + 1))
                    .prop_map(move |v| if i == 0 { vec![] } else { v })
            })
            .collect::<Vec<_>>()
    })
}

fn desired(deps: &[Vec<usize>]) -> Vec<Desired> {
    deps.iter()
        .enumerate()
        .map(|(i, ds)| {
            let mut d = Desired::new(id(i), json!({"i": i}));
            for &j in ds {
                if !d.deps.iter().any(|x| x.on == id(j)) {
                    d = d.depends_on(id(j), "edge");
                }
            }
            d
        })
        .collect()
}

/// Wraps the memory provider and records the order in which applies finish.
struct Recorder {
    inner: MemoryProvider,
    order: Mutex<Vec<ResourceId>>,
}

#[async_trait]
impl Provider for Recorder {
    fn name(&self) -> &'static str {
        "test"
    }
    async fn observe(
        &self,
        r: &[ObserveRequest<'_>],
    ) -> Vec<Result<Option<Observed>, ProviderError>> {
        self.inner.observe(r).await
    }
    fn diff(&self, d: &Desired, o: Option<&Observed>) -> Result<Change, ProviderError> {
        self.inner.diff(d, o)
    }
    async fn apply(
        &self,
        r: &ApplyRequest<'_>,
        cx: &ApplyContext,
    ) -> Result<Applied, ProviderError> {
        let res = self.inner.apply(r, cx).await;
        self.order.lock().unwrap().push(r.change.id.clone());
        res
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]

    #[test]
    fn apply_order_respects_every_edge_and_failures_skip_only_dependents(deps in dag(), fail_at in 0usize..25) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let fleet = desired(&deps);
            let fail = id(fail_at % fleet.len());
            let rec = Arc::new(Recorder { inner: MemoryProvider::new(), order: Mutex::new(Vec::new()) });
            rec.inner.script(&fail, Script { fail: Some("boom".into()), ..Script::default() });
            let providers = Providers::new().with(rec.clone());
            let dir = tempfile::tempdir().unwrap();
            let store = LocalStateStore::open(dir.path()).unwrap();
            let mut state = store.load().await.unwrap();
            let planned = make_plan(&fleet, &state, &providers, &PlanOptions::default(), ObserveOptions::default(), None).await.unwrap();
            let (_tx, rx) = tokio::sync::watch::channel(false);
            let opts = ApplyOptions { concurrency: 4, health_poll: Duration::from_millis(1), ..ApplyOptions::default() };
            let report = run_apply(&planned, &fleet, &mut state, &store, &providers, &opts, None, rx).await.unwrap();

            let order = rec.order.lock().unwrap().clone();
            let pos: BTreeMap<&ResourceId, usize> = order.iter().enumerate().map(|(i, id)| (id, i)).collect();
            let graph = Graph::build(&fleet).unwrap();
            let downstream = graph.transitive_dependents(&fail);
            for d in &fleet {
                for dep in &d.deps {
                    if let (Some(a), Some(b)) = (pos.get(&dep.on), pos.get(&d.id)) {
                        prop_assert!(a < b, "{} applied before its dependency {}", d.id, dep.on);
                    }
                }
                let outcome = &report.outcomes[&d.id];
                if d.id == fail {
                    prop_assert!(matches!(outcome, Outcome::Failed { .. }), "{} should have failed", d.id);
                } else if downstream.contains(&d.id) {
                    prop_assert_eq!(outcome, &Outcome::SkippedUpstream { root: fail.clone() });
                } else {
                    prop_assert!(matches!(outcome, Outcome::Applied { .. }), "{} unrelated but {:?}", d.id, outcome);
                }
            }
            Ok(())
        })?;
    }

    #[test]
    fn any_back_edge_makes_a_cycle_that_names_its_members(deps in dag(), a in 0usize..25, b in 0usize..25) {
        let mut fleet = desired(&deps);
        let n = fleet.len();
        let (lo, hi) = (a.min(b) % n, a.max(b) % n);
        // Find a path hi -> ... -> lo? Simplest guaranteed cycle: lo depends on hi and hi depends on lo.
        fleet[lo] = fleet[lo].clone().depends_on(id(hi), "back edge");
        if lo != hi {
            fleet[hi] = fleet[hi].clone().depends_on(id(lo), "forward edge");
        }
        match Graph::build(&fleet) {
            Err(GraphError::Cycle { cycles }) => {
                let named: Vec<&ResourceId> = cycles.iter().flatten().map(|e| &e.from).collect();
                prop_assert!(named.contains(&&id(lo)) && named.contains(&&id(hi)));
            }
            other => prop_assert!(false, "expected a cycle, got {:?}", other.map(|g| g.len())),
        }
    }

    #[test]
    fn waves_are_the_same_whatever_the_input_order(deps in dag(), seed in any::<u64>()) {
        let fleet = desired(&deps);
        let mut shuffled = fleet.clone();
        let len = shuffled.len();
        shuffled.rotate_left((seed as usize) % len);
        prop_assert_eq!(Graph::build(&fleet).unwrap().waves(), Graph::build(&shuffled).unwrap().waves());
    }
}
