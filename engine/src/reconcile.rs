//! The stages strung together: plan (scope → observe → diff) and apply with
//! locking and journaling, under the engine's one orchestration path (`session`), which
//! the CLI and `serve` go through; tests also call these stages directly.

use std::collections::BTreeMap;

use tokio::sync::{mpsc, watch};

use crate::apply::{self, ApplyError, ApplyEvent, ApplyOptions, ApplyReport, Inputs};
use crate::graph::GraphError;
use crate::observe::{self, Observations, Providers, Target};
use crate::pins::{self, Pinned};
use crate::plan::{self, Plan, PlanOptions, Scope};
use crate::provider::ProviderError;
use crate::resource::{Desired, ResourceId};
use crate::state::{State, StateStore};

/// Observe settings.
#[derive(Debug, Clone, Copy)]
pub struct ObserveOptions {
    /// Batches in flight at once across providers.
    pub concurrency: usize,
    /// Resources per provider call.
    pub batch: usize,
}

impl Default for ObserveOptions {
    fn default() -> Self {
        Self {
            concurrency: 8,
            batch: 64,
        }
    }
}

/// A plan and the observations it was made from (apply needs both).
#[derive(Debug)]
pub struct Planned {
    /// The plan.
    pub plan: Plan,
    /// What observe returned.
    pub observations: Observations,
    /// The digests pinned into desired specs (`registries.pinDigests`); apply
    /// pins the specs it is given the same way, so what is applied is what was planned.
    pub pinned: Pinned,
}

/// Plans `desired` against live state. With digest pinning, the pinned images
/// are observed first and the objects naming them are observed, diffed and
/// planned with their digests substituted ([`crate::pins`]).
pub async fn make_plan(
    desired: &[Desired],
    state: &State,
    providers: &Providers,
    options: &PlanOptions,
    observe_options: ObserveOptions,
    revision: Option<String>,
) -> Result<Planned, GraphError> {
    let scope = plan::scope(desired, state, options)?;
    let images = pins::images(&scope.desired);
    if images.is_empty() {
        let observations = observe_all(providers, &scope.targets(), observe_options).await;
        let mut plan = plan::build(&scope, state, &observations, providers, options, revision);
        crate::apply::rollout::annotate(&mut plan, &scope.desired, providers).await;
        return Ok(Planned {
            plan,
            observations,
            pinned: Pinned::default(),
        });
    }
    // Images first (even one outside a --target scope: its digest is needed).
    let first: Vec<Target<'_>> = desired
        .iter()
        .filter(|d| images.contains(&d.id))
        .map(|d| Target {
            id: &d.id,
            spec: &d.spec,
            desired: true,
            unchanged: false,
        })
        .collect();
    let mut observations = observe_all(providers, &first, observe_options).await;
    let (pinned, failed) = pins::resolve(&scope.desired, &observations);
    let resolved: BTreeMap<ResourceId, Desired> = scope
        .desired
        .iter()
        .filter_map(|d| pinned.apply(d))
        .map(|d| (d.id.clone(), d))
        .collect();
    let desired: Vec<&Desired> = scope
        .desired
        .iter()
        .map(|d| resolved.get(&d.id).unwrap_or(d))
        .collect();
    let scope = Scope {
        unchanged: plan::unchanged(&desired, state),
        desired,
        prune: scope.prune,
        graph: scope.graph,
    };
    // A resource whose pin failed is not observed: its error stands for its observation.
    let failed: BTreeMap<ResourceId, ProviderError> = failed.into_iter().collect();
    let rest: Vec<Target<'_>> = scope
        .targets()
        .into_iter()
        .filter(|t| !observations.contains_key(t.id) && !failed.contains_key(t.id))
        .collect();
    observations.extend(observe_all(providers, &rest, observe_options).await);
    observations.extend(failed.into_iter().map(|(id, e)| (id, Err(e))));
    let mut plan = plan::build(&scope, state, &observations, providers, options, revision);
    crate::apply::rollout::annotate(&mut plan, &scope.desired, providers).await;
    plan.digest = pinned.seal(&plan.digest);
    Ok(Planned {
        plan,
        observations,
        pinned,
    })
}

async fn observe_all(
    providers: &Providers,
    targets: &[Target<'_>],
    options: ObserveOptions,
) -> Observations {
    observe::observe(providers, targets, options.concurrency, options.batch).await
}

/// Applies a plan made by [`make_plan`], journaling into `store`. The caller holds the lock.
#[allow(clippy::too_many_arguments)] // each is a distinct input of the one apply entry point
pub async fn run_apply(
    planned: &Planned,
    desired: &[Desired],
    state: &mut State,
    store: &dyn StateStore,
    providers: &Providers,
    options: &ApplyOptions,
    events: Option<mpsc::UnboundedSender<ApplyEvent>>,
    cancel: watch::Receiver<bool>,
) -> Result<ApplyReport, ApplyError> {
    let approved = options.approve(&planned.plan)?;
    // The caller's specs pinned exactly as the plan pinned them.
    let pinned: Vec<Desired> = desired
        .iter()
        .filter_map(|d| planned.pinned.apply(d))
        .collect();
    let mut by_id: BTreeMap<&ResourceId, &Desired> = desired.iter().map(|d| (&d.id, d)).collect();
    by_id.extend(pinned.iter().map(|d| (&d.id, d)));
    let inputs = Inputs {
        desired: by_id,
        observations: &planned.observations,
        providers,
        store,
    };
    apply::apply(
        &planned.plan,
        &inputs,
        state,
        options,
        approved,
        events,
        cancel,
    )
    .await
}

/// The desired resources for healing the drift `plan` found: each provider
/// adjusts the spec of its drifted resources so that applying them takes the
/// drifted fields back ([`crate::provider::Provider::prepare_heal`]; the
/// Kubernetes provider forces field ownership). A heal is a deliberate
/// override; a normal apply reports such conflicts instead.
pub fn remediation(desired: &[Desired], plan: &Plan, providers: &Providers) -> Vec<Desired> {
    let drifted: std::collections::BTreeSet<&crate::resource::ResourceId> =
        plan.actionable().map(|c| &c.id).collect();
    let mut out = desired.to_vec();
    for d in out.iter_mut().filter(|d| drifted.contains(&d.id)) {
        if let Some(p) = providers.for_id(&d.id) {
            p.prepare_heal(&mut d.spec);
        }
    }
    out
}
