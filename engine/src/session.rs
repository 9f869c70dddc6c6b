//! One orchestration path for everything that plans or applies: `plan`, `apply`,
//! `drift [--remediate]` and every `serve` reconcile (a new head, a drift self-heal).
//!
//! Takes a store, the providers, the desired resources and the settings; gives an
//! [`Outcome`] (and the plan and apply report behind it). The order is fixed here,
//! once: lock → load state → observe hooks (GPU inventory: break/fix cordons and
//! findings) → plan → gates (problems, nothing to do, destroy consent, the prune guard
//! is in the plan itself) → apply → outcome. Whatever applies holds the state lock
//! from the state it planned against to the end of the apply; a heal, whose drift was
//! found without the lock, plans again under the lock and refuses when the fresh
//! plan's digest differs from the one the drift was reported from (someone changed
//! live state or the inventory in between). The exit status of a command is decided
//! from the outcome by [`Outcome::exit_code`] alone.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::{mpsc, watch};

use crate::apply::{ApplyError, ApplyEvent, ApplyOptions, ApplyReport};
use crate::breakfix::{BreakFix, Finding};
use crate::graph::GraphError;
use crate::observe::Providers;
use crate::plan::{Plan, PlanOptions};
use crate::reconcile::{ObserveOptions, Planned, make_plan, remediation, run_apply};
use crate::resource::Desired;
use crate::state::{LockInfo, State, StateError, StateStore};

/// Any error an [`ObserveHook`] reports, with its causes.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What an observe hook saw before planning.
#[derive(Debug, Clone, Default)]
pub struct HookObservation {
    /// Break/fix decisions (cordons to plan, cordons to release, findings), when GPU
    /// health was observed.
    pub breakfix: Option<BreakFix>,
    /// Findings that are not break/fix (pool-vs-inventory GPU drift).
    pub findings: Vec<Finding>,
}

/// Observed state outside the providers' resources that changes what is planned:
/// the GPU inventory reports (the `gpu` provider). The CLI and serve register the
/// same hooks, so break/fix behaves the same from both.
#[async_trait]
pub trait ObserveHook: Send + Sync {
    /// Reads what it observes now.
    async fn observe(&self) -> Result<HookObservation, BoxError>;
}

/// Why a session stopped before it had an outcome.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The state store failed (including: the lock is held by someone else).
    #[error(transparent)]
    State(#[from] StateError),
    /// The resources do not form a graph (a cycle, a missing dependency).
    #[error(transparent)]
    Plan(#[from] GraphError),
    /// An observe hook failed.
    #[error("observing GPU inventory failed")]
    Hook(#[source] BoxError),
    /// The apply could not start (destroy consent, the state store).
    #[error(transparent)]
    Apply(#[from] ApplyError),
    /// Live state or the inventory changed between the plan a decision was made on and
    /// the plan made under the lock.
    #[error(
        "live state changed since the plan was made ({now} now vs {then} then): plan again and review"
    )]
    Moved {
        /// The fresh plan's totals.
        now: String,
        /// The earlier plan's totals.
        then: String,
    },
}

/// Why a session ended without doing all it should.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Incomplete {
    /// The plan has problems; nothing was applied.
    Problems(usize),
    /// Resources could not be observed now and were left out; the rest went ahead.
    Skipped(usize),
    /// Some changes failed (their dependents were skipped).
    Failed,
}

/// How a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing to change (or everything applied).
    Clean,
    /// Changes present and not applied (a plan; a drift check without remediation).
    Changes,
    /// Not everything was planned or applied.
    Incomplete(Incomplete),
    /// A cancel signal stopped the apply; calls in flight were recorded.
    Interrupted,
}

impl Outcome {
    /// The process exit status for this outcome: 0 clean, 2 changes present, 1 error or
    /// incomplete, 130 interrupted. The one place the CLI's exit status is decided
    /// (an error before any outcome is 1 too).
    pub fn exit_code(&self) -> i32 {
        match self {
            Outcome::Clean => 0,
            Outcome::Changes => 2,
            Outcome::Incomplete(_) => 1,
            Outcome::Interrupted => 130,
        }
    }

    /// What a planned-only session (plan, drift) found: problems and skipped resources
    /// make it incomplete, else changes present or clean.
    pub fn of_plan(plan: &Plan) -> Self {
        if !plan.problems.is_empty() {
            Outcome::Incomplete(Incomplete::Problems(plan.problems.len()))
        } else if !plan.skipped.is_empty() {
            Outcome::Incomplete(Incomplete::Skipped(plan.skipped.len()))
        } else if plan.summary.has_changes() {
            Outcome::Changes
        } else {
            Outcome::Clean
        }
    }
}

/// A plan with everything needed to apply it.
#[derive(Debug)]
pub struct SessionPlan {
    /// The plan and the observations it was made from.
    pub planned: Planned,
    /// The desired resources planned (with break/fix cordons in place).
    pub desired: Vec<Desired>,
    /// The state it was planned against.
    pub state: State,
}

impl SessionPlan {
    /// The plan.
    pub fn plan(&self) -> &Plan {
        &self.planned.plan
    }
}

/// What an apply did.
#[derive(Debug)]
pub struct Run {
    /// The plan applied.
    pub plan: Plan,
    /// The apply's report; `None` when the gates stopped it before any call.
    pub report: Option<ApplyReport>,
    /// How it ended.
    pub outcome: Outcome,
    /// The state after the apply.
    pub state: State,
}

/// How to apply: settings, progress events and the cancel signal.
pub struct ApplyRun {
    /// Concurrency, timeouts, destroy consent.
    pub options: ApplyOptions,
    /// Progress events, one per step.
    pub events: Option<mpsc::UnboundedSender<ApplyEvent>>,
    /// Turns true to stop: calls in flight finish and are recorded, nothing new starts.
    pub cancel: watch::Receiver<bool>,
}

/// One fleet revision against one state store and its providers.
pub struct Session<'a> {
    store: &'a dyn StateStore,
    providers: &'a Providers,
    desired: &'a [Desired],
    plan_options: PlanOptions,
    observe_options: ObserveOptions,
    revision: Option<String>,
    hooks: Vec<Arc<dyn ObserveHook>>,
}

impl<'a> Session<'a> {
    /// A session planning `desired` (one revision, `revision`) with `providers`,
    /// recording into `store`.
    pub fn new(
        store: &'a dyn StateStore,
        providers: &'a Providers,
        desired: &'a [Desired],
        plan_options: PlanOptions,
        revision: Option<String>,
    ) -> Self {
        Self {
            store,
            providers,
            desired,
            plan_options,
            observe_options: ObserveOptions::default(),
            revision,
            hooks: Vec::new(),
        }
    }

    /// Replaces the observe settings.
    pub fn with_observe_options(mut self, options: ObserveOptions) -> Self {
        self.observe_options = options;
        self
    }

    /// Adds observe hooks (GPU inventory), run before each plan.
    pub fn with_hooks(mut self, hooks: impl IntoIterator<Item = Arc<dyn ObserveHook>>) -> Self {
        self.hooks.extend(hooks);
        self
    }

    /// The revision planned.
    pub fn revision(&self) -> Option<&str> {
        self.revision.as_deref()
    }

    /// Plans against the current state without taking the lock (`plan`, PR plans):
    /// nothing is applied from it without planning again under the lock.
    pub async fn plan(&self) -> Result<SessionPlan, SessionError> {
        let state = self.store.load().await?;
        self.plan_with(state).await
    }

    /// Compares live state with the inventory (`drift`): only managed resources, no
    /// prune, and the desired specs without break/fix cordons (those are plan's
    /// business); GPU findings are reported. Without the lock; heal with [`Session::heal`].
    pub async fn drift(&self) -> Result<SessionPlan, SessionError> {
        let state = self.store.load().await?;
        let observed = self.observe_hooks().await?;
        let mut sp = self.plan_drift(state).await?;
        let mut findings = Vec::new();
        for o in observed {
            if let Some(bf) = o.breakfix {
                findings.extend(bf.findings);
            }
            findings.extend(o.findings);
        }
        findings.sort();
        sp.planned.plan.findings = findings;
        Ok(sp)
    }

    /// Takes the state lock for `operation` (shown to whoever finds it held).
    pub async fn lock(&self, operation: &str) -> Result<Locked<'_, 'a>, SessionError> {
        let info = LockInfo::for_this_process(operation);
        self.store.lock(&info).await?;
        Ok(Locked {
            session: self,
            info,
        })
    }

    /// Heals the drift `found` reported (`drift --remediate`, serve's self-heal): under
    /// the lock, plans the drift again and applies it only if the fresh plan's digest
    /// is `found`'s, with each drifted resource's spec prepared to take its fields back.
    pub async fn heal(
        &self,
        operation: &str,
        found: &Plan,
        run: ApplyRun,
    ) -> Result<Run, SessionError> {
        let locked = self.lock(operation).await?;
        let result = locked.heal(found, run).await;
        locked.release().await?;
        result
    }

    async fn observe_hooks(&self) -> Result<Vec<HookObservation>, SessionError> {
        let mut out = Vec::with_capacity(self.hooks.len());
        for h in &self.hooks {
            out.push(h.observe().await.map_err(SessionError::Hook)?);
        }
        Ok(out)
    }

    async fn plan_with(&self, state: State) -> Result<SessionPlan, SessionError> {
        let observed = self.observe_hooks().await?;
        let mut desired = self.desired.to_vec();
        for o in &observed {
            if let Some(bf) = &o.breakfix {
                desired = bf.desired(&desired);
            }
        }
        let mut planned = make_plan(
            &desired,
            &state,
            self.providers,
            &self.plan_options,
            self.observe_options,
            self.revision.clone(),
        )
        .await?;
        for o in observed {
            if let Some(bf) = &o.breakfix {
                planned.plan.annotate_breakfix(bf);
            }
            planned.plan.findings.extend(o.findings);
        }
        planned.plan.findings.sort();
        Ok(SessionPlan {
            planned,
            desired,
            state,
        })
    }

    async fn plan_drift(&self, state: State) -> Result<SessionPlan, SessionError> {
        let options = PlanOptions {
            inventory_only: true,
            no_prune: true,
            ..self.plan_options.clone()
        };
        let planned = make_plan(
            self.desired,
            &state,
            self.providers,
            &options,
            self.observe_options,
            self.revision.clone(),
        )
        .await?;
        Ok(SessionPlan {
            planned,
            desired: self.desired.to_vec(),
            state,
        })
    }
}

/// A session holding the state lock; release it with [`Locked::release`].
pub struct Locked<'s, 'a> {
    session: &'s Session<'a>,
    info: LockInfo,
}

impl Locked<'_, '_> {
    /// Loads the state under the lock and plans against it.
    pub async fn plan(&self) -> Result<SessionPlan, SessionError> {
        let state = self.session.store.load().await?;
        self.session.plan_with(state).await
    }

    /// Applies a plan made under this lock, through the gates: a plan with problems is
    /// not applied; a plan with nothing to do only records the revision; destructive
    /// changes need consent (an error).
    pub async fn apply(&self, sp: SessionPlan, run: ApplyRun) -> Result<Run, SessionError> {
        let SessionPlan {
            planned,
            desired,
            mut state,
        } = sp;
        let plan = &planned.plan;
        if !plan.problems.is_empty() {
            let outcome = Outcome::Incomplete(Incomplete::Problems(plan.problems.len()));
            return Ok(Run {
                plan: planned.plan,
                report: None,
                outcome,
                state,
            });
        }
        let skipped = || -> Outcome {
            if plan.skipped.is_empty() {
                Outcome::Clean
            } else {
                Outcome::Incomplete(Incomplete::Skipped(plan.skipped.len()))
            }
        };
        if !plan.summary.has_changes() && plan.forget.is_empty() {
            let outcome = skipped();
            // Record the revision even when nothing changed, so drift compares with it.
            if state.last_applied_revision != plan.revision {
                run_apply(
                    &planned,
                    &desired,
                    &mut state,
                    self.session.store,
                    self.session.providers,
                    &ApplyOptions::default(),
                    None,
                    run.cancel,
                )
                .await?;
            }
            return Ok(Run {
                plan: planned.plan,
                report: None,
                outcome,
                state,
            });
        }
        let report = run_apply(
            &planned,
            &desired,
            &mut state,
            self.session.store,
            self.session.providers,
            &run.options,
            run.events,
            run.cancel,
        )
        .await?;
        let outcome = if report.interrupted {
            Outcome::Interrupted
        } else if !report.succeeded() {
            Outcome::Incomplete(Incomplete::Failed)
        } else {
            skipped()
        };
        Ok(Run {
            plan: planned.plan,
            report: Some(report),
            outcome,
            state,
        })
    }

    /// See [`Session::heal`].
    async fn heal(&self, found: &Plan, run: ApplyRun) -> Result<Run, SessionError> {
        let state = self.session.store.load().await?;
        let mut fresh = self.session.plan_drift(state).await?;
        if fresh.planned.plan.digest != found.digest {
            return Err(SessionError::Moved {
                now: crate::report::totals(&fresh.planned.plan),
                then: crate::report::totals(found),
            });
        }
        // Healing means taking drifted fields back from whoever changed them.
        fresh.desired = remediation(&fresh.desired, &fresh.planned.plan, self.session.providers);
        self.apply(fresh, run).await
    }

    /// Releases the lock.
    pub async fn release(self) -> Result<(), SessionError> {
        self.session.store.unlock(&self.info).await?;
        Ok(())
    }
}
