//! Building the plan: the scope (targets and what they depend on), one diff per resource,
//! waves from the graph, deletes in reverse dependency order, and the digest.

use std::collections::{BTreeMap, BTreeSet};

use super::graph::{Graph, GraphError};
use super::{
    PLAN_FORMAT_VERSION, Plan, PlanProblem, PlannedChange, Reason, SkippedResource, Summary,
};
use crate::observe::{Observations, Providers, Target};
use crate::provider::{Action, Change, Disruption, FieldChange};
use crate::resource::{Dependency, Desired, ResourceId};
use crate::sensitive::{MASK, digest_bytes};
use crate::state::State;

/// Plan settings.
#[derive(Debug, Clone)]
pub struct PlanOptions {
    /// Limit to these resources and what they depend on (`--target`).
    pub targets: Vec<ResourceId>,
    /// Refuse to delete more than this share of the inventory at once.
    pub max_delete_fraction: f64,
    /// Override `max_delete_fraction` (`--allow-mass-delete`).
    pub allow_mass_delete: bool,
    /// Only consider resources in the inventory (drift).
    pub inventory_only: bool,
    /// Do not plan deletes (drift).
    pub no_prune: bool,
    /// Digest of inputs besides the manifest that decide what is applied (the chart packages
    /// releases were rendered from): a saved plan is refused once it moves.
    pub inputs_digest: Option<String>,
}

impl Default for PlanOptions {
    fn default() -> Self {
        Self {
            targets: Vec::new(),
            max_delete_fraction: 0.3,
            allow_mass_delete: false,
            inventory_only: false,
            no_prune: false,
            inputs_digest: None,
        }
    }
}

/// The resources a plan will consider: the selected desired ones and the
/// inventory entries that left the manifest.
#[derive(Debug, Clone)]
pub struct Scope<'a> {
    /// Selected desired resources.
    pub desired: Vec<&'a Desired>,
    /// Inventory entries to prune, with their last-applied spec.
    pub prune: Vec<(ResourceId, serde_json::Value)>,
    /// The graph of all desired resources.
    pub graph: Graph,
    /// Desired resources whose spec is exactly what was last applied successfully.
    pub unchanged: BTreeSet<ResourceId>,
}

/// The resources whose spec is exactly what fleetform last applied
/// successfully (the inventory's digest matches and no apply is pending).
pub fn unchanged(desired: &[&Desired], state: &State) -> BTreeSet<ResourceId> {
    desired
        .iter()
        .filter(|d| {
            state.resources.get(&d.id).is_some_and(|e| {
                !e.pending
                    && e.spec_digest.as_deref().is_some_and(|digest| {
                        digest
                            == crate::sensitive::digest_bytes(
                                &serde_json::to_vec(&d.spec).unwrap_or_default(),
                            )
                    })
            })
        })
        .map(|d| d.id.clone())
        .collect()
}

/// Selects what to observe. Fails on a graph error (cycle, dangling dependency).
pub fn scope<'a>(
    desired: &'a [Desired],
    state: &State,
    options: &PlanOptions,
) -> Result<Scope<'a>, GraphError> {
    let graph = Graph::build(desired)?;
    let selected: Option<BTreeSet<ResourceId>> =
        (!options.targets.is_empty()).then(|| graph.with_dependencies(&options.targets));
    let keep = |id: &ResourceId| {
        selected.as_ref().is_none_or(|s| s.contains(id))
            && (!options.inventory_only || state.resources.contains_key(id))
    };
    let chosen: Vec<&Desired> = desired.iter().filter(|d| keep(&d.id)).collect();
    let desired_ids: BTreeSet<&ResourceId> = desired.iter().map(|d| &d.id).collect();
    let prune = if options.no_prune {
        Vec::new()
    } else {
        state
            .resources
            .iter()
            .filter(|(id, _)| !desired_ids.contains(id))
            .filter(|(id, _)| options.targets.is_empty() || options.targets.contains(id))
            .filter_map(|(id, e)| e.spec.clone().map(|s| (id.clone(), s)))
            .collect()
    };
    let unchanged = unchanged(&chosen, state);
    Ok(Scope {
        desired: chosen,
        prune,
        graph,
        unchanged,
    })
}

impl Scope<'_> {
    /// What to hand to `observe`.
    pub fn targets(&self) -> Vec<Target<'_>> {
        let mut t: Vec<Target<'_>> = self
            .desired
            .iter()
            .map(|d| Target {
                id: &d.id,
                spec: &d.spec,
                desired: true,
                unchanged: self.unchanged.contains(&d.id),
            })
            .collect();
        t.extend(self.prune.iter().map(|(id, spec)| Target {
            id,
            spec,
            desired: false,
            unchanged: false,
        }));
        t
    }
}

/// Builds the plan from a scope and what observe returned. Pure.
pub fn build(
    scope: &Scope<'_>,
    state: &State,
    observations: &Observations,
    providers: &Providers,
    options: &PlanOptions,
    revision: Option<String>,
) -> Plan {
    let mut problems = Vec::new();
    let mut skipped: BTreeMap<ResourceId, SkippedResource> = BTreeMap::new();
    let mut changes: BTreeMap<ResourceId, PlannedChange> = BTreeMap::new();
    let waves = scope.graph.waves();
    let wave_of: BTreeMap<&ResourceId, usize> = waves
        .iter()
        .enumerate()
        .flat_map(|(i, w)| w.iter().map(move |id| (id, i)))
        .collect();
    let last_wave = waves.len();

    // Permanent observe errors are decided once every change is known (see below).
    let mut refused: Vec<(&Desired, &crate::provider::ProviderError)> = Vec::new();
    for d in &scope.desired {
        let observed = match observations.get(&d.id) {
            Some(Ok(o)) => o.as_ref(),
            // Refused by the server: decided once every change is known (below).
            Some(Err(e)) if !e.is_transient() => {
                refused.push((d, e));
                continue;
            }
            // Cannot be observed now (unreachable): left out, the rest goes on.
            Some(Err(e)) => {
                skipped.insert(
                    d.id.clone(),
                    SkippedResource {
                        id: d.id.clone(),
                        reason: error_chain(e),
                        root: None,
                        origin: d.origin.clone(),
                    },
                );
                continue;
            }
            None => {
                problems.push(PlanProblem {
                    id: Some(d.id.clone()),
                    message: "was not observed".into(),
                    origin: d.origin.clone(),
                    transient: false,
                });
                continue;
            }
        };
        let Some(provider) = providers.for_id(&d.id) else {
            continue;
        };
        let change = match provider.diff(d, observed) {
            Ok(c) => c,
            Err(e) => {
                problems.push(PlanProblem {
                    id: Some(d.id.clone()),
                    message: error_chain(&e),
                    origin: d.origin.clone(),
                    transient: e.is_transient(),
                });
                continue;
            }
        };
        let pending = state.resources.get(&d.id).is_some_and(|e| e.pending);
        let mut pc = planned(change, d, wave_of.get(&d.id).copied().unwrap_or(0), pending);
        if pc.action.is_destructive() && protected(d.prevent_destroy, state, &d.id) {
            problems.push(PlanProblem {
                id: Some(d.id.clone()),
                message: format!(
                    "would be replaced ({}), but it has prevent-destroy set",
                    pc.reason.describe()
                ),
                origin: d.origin.clone(),
                transient: false,
            });
        }
        pc.waits_for = d.deps.clone();
        changes.insert(d.id.clone(), pc);
    }

    // A resource the server refused to check while something it waits for changes in this
    // plan (its CRD gains the fields it sets) is checked against that future state only by
    // applying it after the change; anything else the server refused is a problem now.
    for (d, e) in refused {
        let changing = d.deps.iter().find(|dep| {
            changes.get(&dep.on).is_some_and(|c| {
                matches!(c.action, Action::Create | Action::Update | Action::Replace)
            })
        });
        match changing {
            Some(dep) => {
                let mut pc = PlannedChange {
                    id: d.id.clone(),
                    action: Action::Update,
                    reason: Reason::AfterDependency {
                        on: dep.on.clone(),
                        detail: error_chain(e),
                    },
                    fields: Vec::new(),
                    spec: None,
                    destructive: false,
                    disruptive: false,
                    disruption: Disruption::None,
                    wave: wave_of.get(&d.id).copied().unwrap_or(0),
                    waits_for: d.deps.clone(),
                    origin: d.origin.clone(),
                };
                pc.spec = Some(digested_spec(&d.spec, &d.sensitive));
                changes.insert(d.id.clone(), pc);
            }
            None => problems.push(PlanProblem {
                id: Some(d.id.clone()),
                message: error_chain(e),
                origin: d.origin.clone(),
                transient: false,
            }),
        }
    }

    // What waits for a skipped resource is skipped too (until nothing more is).
    loop {
        let more: Vec<SkippedResource> = scope
            .desired
            .iter()
            .filter(|d| !skipped.contains_key(&d.id))
            .filter_map(|d| {
                let dep = d.deps.iter().find(|x| skipped.contains_key(&x.on))?;
                let root = skipped[&dep.on].root.clone().unwrap_or(dep.on.clone());
                Some(SkippedResource {
                    id: d.id.clone(),
                    reason: format!("waits for {}, which was skipped", dep.on),
                    root: Some(root),
                    origin: d.origin.clone(),
                })
            })
            .collect();
        if more.is_empty() {
            break;
        }
        for s in more {
            changes.remove(&s.id);
            skipped.insert(s.id.clone(), s);
        }
    }

    let mut forget = Vec::new();
    let mut deletes = Vec::new();
    for (id, _) in &scope.prune {
        match observations.get(id) {
            Some(Ok(Some(_))) => deletes.push(id.clone()),
            Some(Ok(None)) => forget.push(id.clone()),
            Some(Err(e)) => problems.push(PlanProblem {
                id: Some(id.clone()),
                message: error_chain(e),
                origin: None,
                transient: e.is_transient(),
            }),
            None => {}
        }
    }
    if !deletes.is_empty() {
        let inventory = state.resources.len().max(1);
        if scope.graph.is_empty() {
            problems.push(PlanProblem {
                id: None,
                message: format!(
                    "the manifest renders zero resources; refusing to delete all {} managed resources (an empty manifest is almost always a mistake: check the path and revision)",
                    deletes.len()
                ),
                origin: None,
                transient: false,
            });
        } else if !options.allow_mass_delete
            && deletes.len() as f64 > options.max_delete_fraction * inventory as f64
        {
            problems.push(PlanProblem {
                id: None,
                message: format!(
                    "would delete {} of {} managed resources, more than the allowed {:.0}%; pass --allow-mass-delete if this is intended",
                    deletes.len(),
                    inventory,
                    options.max_delete_fraction * 100.0
                ),
                origin: None,
                transient: false,
            });
        }
        // Deletes run after everything else, dependents before what they depended on.
        let waves = delete_waves(&deletes, state);
        for (i, wave) in waves.iter().enumerate() {
            for id in wave {
                let entry = &state.resources[id];
                if entry.prevent_destroy {
                    problems.push(PlanProblem {
                        id: Some(id.clone()),
                        message: "left the manifest, but it has prevent-destroy set: remove the flag first, then the resource".into(),
                        origin: None,
                        transient: false,
                    });
                }
                let disruption = providers
                    .for_id(id)
                    .map_or(Disruption::None, |p| p.delete_disruption(id));
                changes.insert(
                    id.clone(),
                    PlannedChange {
                        id: id.clone(),
                        action: Action::Delete,
                        reason: Reason::RemovedFromManifest,
                        fields: Vec::new(),
                        spec: None,
                        destructive: true,
                        disruptive: disruption.takes_node_down(),
                        disruption,
                        wave: last_wave + i,
                        waits_for: Vec::new(),
                        origin: None,
                    },
                );
            }
        }
    }

    let mut changes: Vec<PlannedChange> = changes.into_values().collect();
    changes.sort_by(|a, b| (a.wave, &a.id).cmp(&(b.wave, &b.id)));
    let mut summary = Summary::default();
    for c in &changes {
        match c.action {
            Action::Create => summary.create += 1,
            Action::Update => summary.update += 1,
            Action::Replace => summary.replace += 1,
            Action::Delete => summary.delete += 1,
            Action::NoOp => summary.no_op += 1,
        }
        summary.destructive += usize::from(c.destructive);
        if c.action != Action::NoOp {
            summary.disruptive += usize::from(c.disruptive);
            *summary.by_disruption.entry(c.disruption).or_default() += 1;
        }
    }
    problems.sort_by(|a, b| (&a.origin, &a.id, &a.message).cmp(&(&b.origin, &b.id, &b.message)));
    let digest = plan_digest(
        &revision,
        &changes,
        &forget,
        options.inputs_digest.as_deref(),
    );
    Plan {
        format_version: PLAN_FORMAT_VERSION,
        revision,
        changes,
        forget,
        summary,
        problems,
        skipped: skipped.into_values().collect(),
        findings: Vec::new(),
        releases: Vec::new(),
        budgets: Vec::new(),
        digest,
    }
}

fn protected(flag: bool, state: &State, id: &ResourceId) -> bool {
    flag || state.resources.get(id).is_some_and(|e| e.prevent_destroy)
}

fn planned(change: Change, d: &Desired, wave: usize, pending: bool) -> PlannedChange {
    let disruption = classify(&change, d);
    let reason = match change.action {
        Action::Create => Reason::NotFound,
        Action::Update if pending => Reason::InterruptedApply,
        Action::Update => Reason::FieldsDiffer,
        Action::Replace => Reason::ImmutableField {
            paths: change.requires_replace.clone(),
        },
        Action::Delete => Reason::RemovedFromManifest,
        Action::NoOp => Reason::InSync,
    };
    let fields = change
        .fields
        .into_iter()
        .map(|f| mask_field(f, &d.sensitive))
        .collect();
    let spec = (change.action == Action::Create).then(|| masked_spec(&d.spec, &d.sensitive));
    PlannedChange {
        id: d.id.clone(),
        action: change.action,
        reason,
        fields,
        spec,
        destructive: change.action.is_destructive(),
        disruptive: disruption.takes_node_down(),
        disruption,
        wave,
        waits_for: Vec::new(),
        origin: d.origin.clone(),
    }
}

/// The disruption class of a planned change: the provider's verdict, raised to at least a
/// node drain when the compiler put the resource in a rollout group (it did so because
/// changing it takes the host's node out of service: a MIG layout, a BMC setting). `none`
/// for a change that does nothing.
pub fn classify(change: &Change, d: &Desired) -> Disruption {
    if change.action == Action::NoOp {
        return Disruption::None;
    }
    let floor = if d.rollout.is_some() {
        Disruption::NodeDrain
    } else {
        Disruption::None
    };
    change.disruption.max(floor)
}

/// True when `path` is, contains, or lies inside a sensitive pointer.
pub fn is_sensitive_path(path: &str, sensitive: &[String]) -> bool {
    let within = |outer: &str, inner: &str| {
        inner == outer || inner.starts_with(&format!("{outer}/")) || outer.is_empty()
    };
    sensitive.iter().any(|s| within(s, path) || within(path, s))
}

/// Masks a field change whose path touches a secret.
pub fn mask_field(mut f: FieldChange, sensitive: &[String]) -> FieldChange {
    if f.sensitive || is_sensitive_path(&f.path, sensitive) {
        let mask = |v: &Option<serde_json::Value>| {
            v.as_ref().map(|_| serde_json::Value::String(MASK.into()))
        };
        f.before = mask(&f.before);
        f.after = mask(&f.after);
        f.sensitive = true;
    }
    f
}

/// A copy of `spec` with every sensitive value replaced by `(sensitive)`.
pub fn masked_spec(spec: &serde_json::Value, sensitive: &[String]) -> serde_json::Value {
    let mut s = spec.clone();
    crate::sensitive::mask_paths(&mut s, sensitive);
    s
}

/// A copy of `spec` with every sensitive value replaced by its digest, for the state file.
pub fn digested_spec(spec: &serde_json::Value, sensitive: &[String]) -> serde_json::Value {
    let mut s = spec.clone();
    for p in sensitive {
        if let Some(v) = s.pointer_mut(p) {
            let bytes = serde_json::to_vec(v).unwrap_or_default();
            *v = serde_json::Value::String(format!("{MASK} {}", digest_bytes(&bytes)));
        }
    }
    s
}

fn delete_waves(deletes: &[ResourceId], state: &State) -> Vec<Vec<ResourceId>> {
    // Reverse the recorded dependencies among the resources being deleted.
    let set: BTreeSet<&ResourceId> = deletes.iter().collect();
    let mut reversed: BTreeMap<&ResourceId, Vec<Dependency>> =
        deletes.iter().map(|id| (id, Vec::new())).collect();
    for id in deletes {
        for dep in &state.resources[id].deps {
            if set.contains(&dep.on)
                && let Some(v) = reversed.get_mut(&dep.on)
            {
                v.push(Dependency {
                    on: id.clone(),
                    reason: format!("delete after its dependent {id}"),
                    origin: None,
                });
            }
        }
    }
    match Graph::from_edges(
        reversed
            .iter()
            .map(|(id, deps)| (*id, deps.as_slice(), None)),
    ) {
        Ok(g) => g.waves(),
        Err(_) => vec![deletes.to_vec()],
    }
}

fn plan_digest(
    revision: &Option<String>,
    changes: &[PlannedChange],
    forget: &[ResourceId],
    inputs: Option<&str>,
) -> String {
    let actionable: Vec<(&ResourceId, Action, &[FieldChange])> = changes
        .iter()
        .filter(|c| c.action != Action::NoOp)
        .map(|c| (&c.id, c.action, c.fields.as_slice()))
        .collect();
    let bytes = match inputs {
        None => serde_json::to_vec(&(revision, actionable, forget)),
        Some(i) => serde_json::to_vec(&(revision, actionable, forget, i)),
    }
    .unwrap_or_default();
    digest_bytes(&bytes)
}

/// An error and its causes on one line, each segment once.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let msg = s.to_string();
        if !parts.iter().any(|p| p.contains(&msg)) {
            parts.push(msg);
        }
        cur = s.source();
    }
    parts.join(": ")
}
