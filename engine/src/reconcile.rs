//! The stages strung together: plan (scope → observe → diff) and apply with
//! locking and journaling. The CLI, `serve` and tests all go through here.

use std::collections::BTreeMap;

use tokio::sync::{mpsc, watch};

use crate::apply::{self, ApplyError, ApplyEvent, ApplyOptions, ApplyReport, Inputs};
use crate::graph::GraphError;
use crate::observe::{self, Observations, Providers};
use crate::plan::{self, Plan, PlanOptions};
use crate::resource::Desired;
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
}

/// Plans `desired` against live state.
pub async fn make_plan(
    desired: &[Desired],
    state: &State,
    providers: &Providers,
    options: &PlanOptions,
    observe_options: ObserveOptions,
    revision: Option<String>,
) -> Result<Planned, GraphError> {
    let scope = plan::scope(desired, state, options)?;
    let observations = observe::observe(
        providers,
        &scope.targets(),
        observe_options.concurrency,
        observe_options.batch,
    )
    .await;
    let plan = plan::build(&scope, state, &observations, providers, options, revision);
    Ok(Planned { plan, observations })
}

/// Applies a plan made by [`make_plan`], journaling into `store`. The caller holds the lock.
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
    let inputs = Inputs {
        desired: desired
            .iter()
            .map(|d| (&d.id, d))
            .collect::<BTreeMap<_, _>>(),
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

/// The desired resources for healing the drift `plan` found: Kubernetes
/// objects that drifted are applied with force, taking the drifted fields back
/// from whichever field manager changed them (a heal is a deliberate override;
/// a normal apply reports such conflicts instead).
pub fn remediation(desired: &[Desired], plan: &Plan) -> Vec<Desired> {
    let drifted: std::collections::BTreeSet<&crate::resource::ResourceId> =
        plan.actionable().map(|c| &c.id).collect();
    let mut out = desired.to_vec();
    for d in out
        .iter_mut()
        .filter(|d| d.id.provider() == "kube" && drifted.contains(&d.id))
    {
        d.spec["force"] = serde_json::Value::Bool(true);
    }
    out
}
