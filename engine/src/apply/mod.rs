//! Apply: carry out a plan. Changes start as soon as what they wait for has
//! succeeded (bounded concurrency); a failure skips its dependents and nothing
//! else; transient errors retry with backoff and jitter; health gates wait for
//! readiness; rollout groups bound how many hosts are disrupted at once; every
//! step is journaled before and after the provider call, so a crash at any
//! point resumes without duplicates and without forgetting anything created.
//!
//! Takes a plan (with the desired resources, observations, providers and the state store),
//! gives an [`ApplyReport`] and a stream of [`ApplyEvent`]s; the state is journaled as it goes.
//!
//! Files: run.rs is the loop (start what may start, admit by rollout budget, record); schedule.rs
//! which changes may start; step.rs one change and its journal entries; wait.rs the waits of a
//! step (retries, drain, health), each listening for cancellation; events.rs the event stream.
//! rollout.rs admits disruptive changes by the pools' budgets, counting nodes already down.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::observe::{Observations, Providers};
use crate::plan::{Plan, PlannedChange};
use crate::provider::Action;
use crate::resource::{Desired, ResourceId};
use crate::state::{StateError, StateStore};

mod events;
pub mod rollout;
mod run;
mod schedule;
mod step;
mod wait;

pub use events::ApplyEvent;
pub use run::apply;

/// Intents recorded ahead with one sync: the next changes likely to start.
const INTENT_BATCH: usize = 64;

/// Apply settings.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// At most this many provider calls at once.
    pub concurrency: usize,
    /// Attempts per change for transient errors (1 = no retry).
    pub max_attempts: u32,
    /// First retry delay; doubles each attempt, with jitter.
    pub base_backoff: Duration,
    /// Longest retry delay, a provider's `Retry-After` included.
    pub max_backoff: Duration,
    /// Timeout of each provider call.
    pub call_timeout: Duration,
    /// How long a resource may take to become healthy.
    pub health_timeout: Duration,
    /// How often to poll health.
    pub health_poll: Duration,
    /// How long draining a node before a disruptive change to its host may take.
    pub drain_timeout: Duration,
    /// How long a disruptive change waits for nodes already down in its pool (cordoned,
    /// NotReady, under maintenance) to come back before it fails with the reason; their state
    /// is read again every `health_poll` meanwhile.
    pub budget_wait: Duration,
    /// Consent to destructive changes (`--allow-destroy`).
    pub allow_destroy: bool,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        Self {
            concurrency: 16,
            max_attempts: 5,
            base_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            call_timeout: Duration::from_secs(120),
            health_timeout: Duration::from_secs(600),
            health_poll: Duration::from_secs(2),
            drain_timeout: Duration::from_secs(900),
            budget_wait: Duration::from_secs(600),
            allow_destroy: false,
        }
    }
}

/// How one change ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum Outcome {
    /// Applied and healthy.
    Applied {
        /// What was done.
        action: Action,
    },
    /// Failed.
    Failed {
        /// The error chain.
        error: String,
    },
    /// Skipped because `root` failed.
    SkippedUpstream {
        /// The failed resource that caused it.
        root: ResourceId,
    },
    /// Not started because the apply was interrupted (Ctrl-C / SIGTERM).
    NotStarted,
}

/// The result of an apply.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ApplyReport {
    /// Per resource.
    pub outcomes: BTreeMap<ResourceId, Outcome>,
    /// True when a cancellation stopped it early.
    pub interrupted: bool,
}

impl ApplyReport {
    /// True when every change was applied.
    pub fn succeeded(&self) -> bool {
        !self.interrupted
            && self
                .outcomes
                .values()
                .all(|o| matches!(o, Outcome::Applied { .. }))
    }

    /// Failures grouped with the resources they caused to be skipped.
    pub fn root_causes(&self) -> BTreeMap<&ResourceId, (&str, Vec<&ResourceId>)> {
        let mut out: BTreeMap<&ResourceId, (&str, Vec<&ResourceId>)> = BTreeMap::new();
        for (id, o) in &self.outcomes {
            if let Outcome::Failed { error } = o {
                out.entry(id).or_insert((error.as_str(), Vec::new())).0 = error;
            }
        }
        for (id, o) in &self.outcomes {
            if let Outcome::SkippedUpstream { root } = o
                && let Some(e) = out.get_mut(root)
            {
                e.1.push(id);
            }
        }
        out
    }
}

/// Why an apply could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The plan has problems.
    #[error("the plan has {0} problem(s); fix them and plan again")]
    PlanHasProblems(usize),
    /// Destructive changes without consent.
    #[error(
        "the plan deletes or replaces {count} resource(s) ({first}...); re-run with --allow-destroy to consent"
    )]
    DestroyNotApproved {
        /// How many.
        count: usize,
        /// The first one.
        first: ResourceId,
    },
    /// The state store failed: the apply stopped to avoid losing track of resources.
    #[error("state store failed; the apply stopped so that nothing goes unrecorded")]
    State(#[from] StateError),
}

/// Proof that destructive changes were consented to.
#[derive(Debug, Clone, Copy)]
pub struct DestroyApproved(());

impl ApplyOptions {
    /// Checks consent for the plan's destructive changes.
    pub fn approve(&self, plan: &Plan) -> Result<DestroyApproved, ApplyError> {
        let destructive: Vec<&PlannedChange> =
            plan.actionable().filter(|c| c.destructive).collect();
        match destructive.first() {
            Some(first) if !self.allow_destroy => Err(ApplyError::DestroyNotApproved {
                count: destructive.len(),
                first: first.id.clone(),
            }),
            _ => Ok(DestroyApproved(())),
        }
    }
}

/// Everything the executor needs besides the plan.
pub struct Inputs<'a> {
    /// Desired resources by address.
    pub desired: BTreeMap<&'a ResourceId, &'a Desired>,
    /// What observe returned when the plan was made.
    pub observations: &'a Observations,
    /// Providers.
    pub providers: &'a Providers,
    /// The state store (journal).
    pub store: &'a dyn StateStore,
}
