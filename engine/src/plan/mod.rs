//! Plan: what applying the manifest would do, as plain, serialisable data with
//! a stable order. Every change says why.
//!
//! Takes the compiled desired resources, the observations and the state; gives a [`Plan`]:
//! ordered changes, each with its reason, the problems that stop an apply, findings.
//! Files: this one is the plan's data; build.rs builds it (scope, diff, waves, digest);
//! graph.rs orders resources; pins.rs resolves image pins; breakfix.rs turns GPU health into
//! cordons and findings. breakfix does not depend on the plan (the plan annotates itself).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::provider::{Action, Disruption, FieldChange};
use crate::resource::{Dependency, Origin, ResourceId};

pub mod breakfix;
mod build;
pub mod graph;
pub mod pins;

pub use build::{
    PlanOptions, Scope, build, classify, digested_spec, error_chain, is_sensitive_path, mask_field,
    masked_spec, scope, unchanged,
};

/// The version of the plan's JSON format (`fleetform plan --format json`, `-o plan.json`).
pub const PLAN_FORMAT_VERSION: u32 = 1;

/// Why a change is planned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Reason {
    /// The resource does not exist.
    NotFound,
    /// Fields differ from the manifest.
    FieldsDiffer,
    /// A field that cannot change in place differs.
    ImmutableField {
        /// The fields.
        paths: Vec<String>,
    },
    /// The resource left the manifest and fleetform manages it.
    RemovedFromManifest,
    /// An earlier apply was interrupted before it confirmed this resource.
    InterruptedApply,
    /// Live state matches.
    InSync,
    /// The server refused to check it against live state, and something it waits for changes
    /// in this same plan (a CRD gaining the fields it uses): it is applied after that change,
    /// and the server validates it then.
    AfterDependency {
        /// The dependency that changes first.
        on: ResourceId,
        /// What the server said when asked now.
        detail: String,
    },
    /// Break/fix: a GPU node is cordoned (or released) because of its GPU
    /// health report (see `breakfix`); `detail` names the GPUs and findings.
    BreakFix {
        /// E.g. `cordon: node r01-n03 failed: GPU 2: 3 uncorrectable volatile ECC errors`.
        detail: String,
    },
}

impl Reason {
    /// A short phrase for people.
    pub fn describe(&self) -> String {
        match self {
            Reason::NotFound => "does not exist".into(),
            Reason::FieldsDiffer => "differs from the manifest".into(),
            Reason::ImmutableField { paths } => {
                format!("{} cannot change in place", paths.join(", "))
            }
            Reason::RemovedFromManifest => "removed from the manifest".into(),
            Reason::InterruptedApply => "an earlier apply was interrupted".into(),
            Reason::InSync => "in sync".into(),
            Reason::BreakFix { detail } => detail.clone(),
            Reason::AfterDependency { on, .. } => {
                format!("checked by the server only after {on} changes")
            }
        }
    }
}

/// One resource's planned change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedChange {
    /// The resource.
    pub id: ResourceId,
    /// What will happen.
    pub action: Action,
    /// Why.
    pub reason: Reason,
    /// Field differences; sensitive values are `(sensitive)`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<FieldChange>,
    /// The desired spec for a create (sensitive values masked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<serde_json::Value>,
    /// Deletes or replaces something.
    pub destructive: bool,
    /// Takes a node out of service (a drain or worse): bounded by rollout groups, and its
    /// node is cordoned first. Derived from `disruption`; kept so older readers and plans
    /// saved before `disruption` existed read the same.
    pub disruptive: bool,
    /// What it does to running work, most severe of the provider's verdict and the rollout
    /// group the compiler put the resource in (see [`classify`]).
    #[serde(default)]
    pub disruption: Disruption,
    /// The wave it runs in (0-based).
    pub wave: usize,
    /// What it waits for, with reasons.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waits_for: Vec<Dependency>,
    /// The manifest line it comes from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
}

/// A problem that makes the plan unusable (exit 1), located where possible.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanProblem {
    /// The resource, when it is about one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<ResourceId>,
    /// What is wrong (the provider's message, never a secret).
    pub message: String,
    /// The manifest line to change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
    /// True when retrying later may succeed (e.g. a BMC was unreachable).
    #[serde(default)]
    pub transient: bool,
}

/// A resource left out of this plan because it, or something it waits for, could not be
/// observed now (a BMC that is down): everything else is planned and applied, and the run
/// exits 1 to say something was skipped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SkippedResource {
    /// The resource.
    pub id: ResourceId,
    /// Why: the observe error, or the resource it waits for that was skipped.
    pub reason: String,
    /// When it waits for a skipped resource: that one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<ResourceId>,
    /// The manifest line it comes from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
}

/// Totals, for the first line of every rendering.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Creates.
    pub create: usize,
    /// In-place updates.
    pub update: usize,
    /// Replacements.
    pub replace: usize,
    /// Deletes.
    pub delete: usize,
    /// Unchanged.
    pub no_op: usize,
    /// Destructive changes (replace + delete).
    pub destructive: usize,
    /// Changes that take a node out of service (drain, reboot, power cycle).
    pub disruptive: usize,
    /// Changes per disruption class (only classes with changes; `none` included).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub by_disruption: BTreeMap<Disruption, usize>,
}

impl Summary {
    /// True when applying would change something.
    pub fn has_changes(&self) -> bool {
        self.create + self.update + self.replace + self.delete > 0
    }
}

/// A plan: data, not behaviour. Stable order: by wave, then address.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// Format version ([`PLAN_FORMAT_VERSION`]).
    pub format_version: u32,
    /// The fleet revision planned (commit id, or `local` for a directory).
    pub revision: Option<String>,
    /// Every resource considered, changed or not.
    pub changes: Vec<PlannedChange>,
    /// Inventory entries whose resource is already gone and left the manifest: forgotten on apply.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forget: Vec<ResourceId>,
    /// Totals.
    pub summary: Summary,
    /// Problems; a plan with problems cannot be applied.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<PlanProblem>,
    /// Resources not planned because they (or what they wait for) could not be observed now.
    /// They do not block the rest of the plan.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<SkippedResource>,
    /// What a person should know or decide that is not a change fleetform makes
    /// (GPU drift, degraded or unreported nodes, proposed spare swaps). Not in the digest.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub findings: Vec<breakfix::Finding>,
    /// Chart releases and what their rendered objects would do (filled in by the caller
    /// that expanded them; see [`ReleaseSummary`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub releases: Vec<ReleaseSummary>,
    /// Rollout pools whose disruptive changes meet nodes already down (cordoned, NotReady,
    /// under maintenance): how many, and whether the changes wait. Read live at plan time
    /// (see `apply::rollout::annotate`); not in the digest.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub budgets: Vec<PoolBudget>,
    /// Digest of what would be done; `apply` of a saved plan refuses it when the
    /// digest of a fresh plan differs (the revision or live state moved).
    pub digest: String,
}

/// One chart release in a plan: a version bump reads as one line per release, with the
/// count of rendered objects it creates, changes and removes, and the images it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseSummary {
    /// `cluster/namespace/name`.
    pub release: String,
    /// Chart name.
    pub chart: String,
    /// Pinned version.
    pub version: String,
    /// Digest of the chart package.
    pub digest: String,
    /// Objects created.
    pub create: usize,
    /// Objects changed in place or replaced.
    pub change: usize,
    /// Objects removed (rendered before, not any more).
    pub delete: usize,
    /// Images the release's objects run (after the change).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<String>,
    /// Images that change: new ones not run before.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub new_images: Vec<String>,
}

impl Plan {
    /// Puts the break/fix reasons on the plan's Node changes and adds the findings.
    /// The digest is unchanged: it covers actions and fields, not reasons.
    /// (Here rather than in `breakfix`, so that `breakfix` never depends on the plan.)
    pub fn annotate_breakfix(&mut self, bf: &breakfix::BreakFix) {
        let by_id: BTreeMap<&ResourceId, &breakfix::Cordon> =
            bf.cordons.values().map(|c| (&c.id, c)).collect();
        for c in self.changes.iter_mut().filter(|c| c.action != Action::NoOp) {
            if let Some(cordon) = by_id.get(&c.id) {
                c.reason = Reason::BreakFix {
                    detail: cordon.reason.clone(),
                };
            } else if let Some(detail) = bf.released.get(&c.id) {
                c.reason = Reason::BreakFix {
                    detail: detail.clone(),
                };
            }
        }
        self.findings.extend(bf.findings.iter().cloned());
        self.findings.sort();
    }

    /// Changes that do something, in order.
    pub fn actionable(&self) -> impl Iterator<Item = &PlannedChange> {
        self.changes.iter().filter(|c| c.action != Action::NoOp)
    }
}

/// What the plan says of one pool whose disruptive changes meet nodes already down.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolBudget {
    /// The pool, `tenant/pool`.
    pub pool: String,
    /// Its `maxUnavailable`.
    pub max_unavailable: u32,
    /// Nodes of the pool already down: `host (why)`.
    pub down: Vec<String>,
    /// Its disruptive changes in this plan.
    pub disruptive_changes: usize,
    /// How many of them can start at once now (0: they all wait for nodes to come back).
    pub can_start_now: u32,
}

impl PoolBudget {
    /// One line for people.
    pub fn describe(&self) -> String {
        let verdict = if self.can_start_now == 0 {
            "its disruptive changes wait until a node is back".to_string()
        } else {
            format!("at most {} at a time", self.can_start_now)
        };
        format!(
            "pool {}: {} of maxUnavailable {} already down ({}); {} disruptive change(s): {verdict}",
            self.pool,
            self.down.len(),
            self.max_unavailable,
            self.down.join(", "),
            self.disruptive_changes,
        )
    }
}
