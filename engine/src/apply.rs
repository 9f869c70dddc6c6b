//! Apply: carry out a plan. Changes start as soon as what they wait for has
//! succeeded (bounded concurrency); a failure skips its dependents and nothing
//! else; transient errors retry with backoff and jitter; health gates wait for
//! readiness; rollout groups bound how many hosts are disrupted at once; every
//! step is journaled before and after the provider call, so a crash at any
//! point resumes without duplicates and without forgetting anything created.
//!
//! Size: just over 1,000 lines since every wait listens for cancellation (issue 16 item 5);
//! the loop, the schedule, rollout admission and one step's execution are the planned split
//! (`apply/{loop,schedule,rollout,step}.rs`, issue 16 item 4), not done yet.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

// Tokio's clock, so that deadlines follow paused time in tests as the sleeps do.
use tokio::time::Instant;

use futures::stream::{FuturesUnordered, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

use crate::budget::{self, Budget};
use crate::observe::{Observations, Providers};
use crate::plan::{Plan, PlannedChange, digested_spec, error_chain};
use crate::provider::{
    Action, Applied, ApplyContext, ApplyRequest, Health, Provider, ProviderError,
};
use crate::resource::{Desired, ResourceId, RolloutGroup};
use crate::sensitive::digest_bytes;
use crate::state::{InventoryEntry, JournalEntry, State, StateError, StateStore, now_rfc3339};

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

/// Progress, as an event stream the TTY view, the JSON log and tests consume.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum ApplyEvent {
    /// A provider call started.
    Started {
        /// The resource.
        id: ResourceId,
        /// What is being done.
        action: Action,
    },
    /// A transient error; retrying after `delay_ms`.
    Retrying {
        /// The resource.
        id: ResourceId,
        /// The attempt that failed (1-based).
        attempt: u32,
        /// The error.
        error: String,
        /// Delay before the next attempt.
        delay_ms: u64,
    },
    /// Applied; waiting until the provider says it is healthy.
    WaitingHealthy {
        /// The resource.
        id: ResourceId,
        /// The provider's progress message.
        message: String,
    },
    /// Waiting for room in a rollout group.
    WaitingRollout {
        /// The resource.
        id: ResourceId,
        /// The pool.
        pool: String,
        /// Why: the nodes already down and the changes in flight against the limit.
        #[serde(default)]
        reason: String,
    },
    /// Done.
    Succeeded {
        /// The resource.
        id: ResourceId,
        /// What was done.
        action: Action,
        /// How long it took.
        elapsed_ms: u64,
    },
    /// Failed for good.
    Failed {
        /// The resource.
        id: ResourceId,
        /// The error chain.
        error: String,
    },
    /// Not attempted because something it waits for failed.
    Skipped {
        /// The resource.
        id: ResourceId,
        /// The root cause.
        root: ResourceId,
    },
    /// A node was cordoned (or released) around a disruptive change.
    Maintenance {
        /// The resource whose change disrupts the host.
        id: ResourceId,
        /// The node.
        node: ResourceId,
        /// True when cordoned, false when released.
        cordoned: bool,
    },
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

/// Runs the plan. `state` is updated as steps are journaled; on full success the
/// revision is recorded and the state compacted. `cancel` set to true stops new
/// work; calls in flight finish and are recorded.
pub async fn apply(
    plan: &Plan,
    inputs: &Inputs<'_>,
    state: &mut State,
    options: &ApplyOptions,
    _approved: DestroyApproved,
    events: Option<mpsc::UnboundedSender<ApplyEvent>>,
    mut cancel: watch::Receiver<bool>,
) -> Result<ApplyReport, ApplyError> {
    if !plan.problems.is_empty() {
        return Err(ApplyError::PlanHasProblems(plan.problems.len()));
    }
    let emit = |e: ApplyEvent| {
        if let Some(tx) = &events {
            let _ = tx.send(e);
        }
    };

    for id in &plan.forget {
        inputs
            .store
            .record(&JournalEntry::Removed { id: id.clone() })
            .await?;
        state.replay(&JournalEntry::Removed { id: id.clone() });
    }

    // Resources already in sync are recorded without calling the provider:
    // one whose apply was interrupted after the provider acted (still marked
    // pending), and one that matched the manifest before fleetform ever
    // changed it (a BIOS already set right). Both are managed from now on, so
    // drift watches them and a removal from the manifest prunes them.
    for c in plan.changes.iter().filter(|c| c.action == Action::NoOp) {
        let unconfirmed = state.resources.get(&c.id).is_none_or(|e| e.pending);
        if let (true, Some(d)) = (unconfirmed, inputs.desired.get(&c.id)) {
            let entry = InventoryEntry {
                spec: Some(digested_spec(&d.spec, &d.sensitive)),
                spec_digest: Some(digest_bytes(
                    &serde_json::to_vec(&d.spec).unwrap_or_default(),
                )),
                sensitive: d.sensitive.clone(),
                deps: d.deps.clone(),
                prevent_destroy: d.prevent_destroy,
                pending: false,
                revision: None,
            };
            let record = JournalEntry::Applied {
                id: c.id.clone(),
                entry,
            };
            inputs.store.record(&record).await?;
            state.replay(&record);
        }
    }

    let todo: BTreeMap<&ResourceId, &PlannedChange> =
        plan.actionable().map(|c| (&c.id, c)).collect();
    let mut schedule = Schedule::new(&todo, state);
    let mut report = ApplyReport::default();
    // Nodes already down count against the budgets: read them once now (only when some
    // change is bounded by a rollout group), and again while changes wait for them.
    let bounded = todo.values().any(|c| {
        c.disruptive
            && inputs
                .desired
                .get(&c.id)
                .is_some_and(|d| d.rollout.is_some())
    });
    let mut rollout = Budget::default();
    if bounded {
        let pools = budget::pools(inputs.desired.values().copied());
        let down = budget::read_down(&pools, inputs.providers).await;
        rollout = Budget::new(pools, down);
    }
    let mut budget_deadline: Option<Instant> = None;
    let mut last_read = Instant::now();
    let mut waiting_rollout_announced: BTreeSet<&ResourceId> = BTreeSet::new();
    let mut intended: BTreeSet<&ResourceId> = BTreeSet::new();
    let mut running = FuturesUnordered::new();

    loop {
        if !*cancel.borrow() {
            while running.len() < options.concurrency.max(1) {
                let Some(id) = schedule.next() else { break };
                let change = todo[id];
                let desired = inputs.desired.get(id).copied();
                let group = desired
                    .and_then(|d| d.rollout.as_ref())
                    .filter(|_| change.disruptive);
                if let Some(g) = group {
                    if let Err(reason) = rollout.admits(g) {
                        if waiting_rollout_announced.insert(id) {
                            emit(ApplyEvent::WaitingRollout {
                                id: id.clone(),
                                pool: g.pool.clone(),
                                reason,
                            });
                        }
                        schedule.park(id);
                        continue;
                    }
                    rollout.take(g);
                }
                // Record the intent first: if we crash after the provider acted, the inventory
                // still knows the resource may exist. Intents are recorded ahead for the next
                // changes too, with one sync: a recorded intent whose change never starts only
                // makes the next plan look at that resource again.
                if !intended.contains(id) {
                    let batch: Vec<&ResourceId> = std::iter::once(id)
                        .chain(schedule.upcoming().filter(|u| !intended.contains(u)))
                        .take(INTENT_BATCH)
                        .collect();
                    let intents: Vec<JournalEntry> = batch
                        .iter()
                        .filter_map(|b| {
                            let d = inputs.desired.get(b)?;
                            Some(JournalEntry::Intent {
                                id: (*b).clone(),
                                entry: inventory_entry(d, state.resources.get(*b), true),
                            })
                        })
                        .collect();
                    inputs.store.record_all(&intents).await?;
                    intended.extend(batch);
                }
                schedule.start(id);
                emit(ApplyEvent::Started {
                    id: id.clone(),
                    action: change.action,
                });
                running.push(run_one(
                    change,
                    desired,
                    inputs,
                    state.resources.get(id).cloned(),
                    options,
                    &emit,
                    group.cloned(),
                    cancel.clone(),
                ));
            }
        }
        if running.is_empty() && !*cancel.borrow() && schedule.has_parked() {
            // Nothing runs, so only nodes already down keep the parked changes out: wait
            // for them to come back (reading their state again), then give up with why.
            let deadline =
                *budget_deadline.get_or_insert_with(|| Instant::now() + options.budget_wait);
            if Instant::now() < deadline {
                tokio::select! {
                    () = tokio::time::sleep(options.health_poll) => {}
                    Ok(()) = cancel.changed() => {}
                }
                let down = budget::read_down(rollout.pools(), inputs.providers).await;
                rollout.set_down(down);
                last_read = Instant::now();
                schedule.unpark();
                continue;
            }
            for id in schedule.take_parked() {
                let why = inputs
                    .desired
                    .get(id)
                    .and_then(|d| d.rollout.as_ref())
                    .and_then(|g| rollout.admits(g).err())
                    .unwrap_or_else(|| "its rollout group never had room".into());
                let error = format!(
                    "not started: {why}; waited {:?} for those nodes to come back",
                    options.budget_wait
                );
                emit(ApplyEvent::Failed {
                    id: id.clone(),
                    error: error.clone(),
                });
                report
                    .outcomes
                    .insert(id.clone(), Outcome::Failed { error });
                for (skipped, root) in schedule.failed(id, true) {
                    emit(ApplyEvent::Skipped {
                        id: skipped.clone(),
                        root: root.clone(),
                    });
                    report
                        .outcomes
                        .insert(skipped.clone(), Outcome::SkippedUpstream { root });
                }
            }
            continue;
        }
        if running.is_empty() {
            break;
        }
        budget_deadline = None;
        tokio::select! {
            Some((id, result, group)) = running.next() => {
                if let Some(g) = &group {
                    rollout.release(g);
                    // A failed change leaves its node cordoned for maintenance: down from now.
                    if let (Err(Failure::Resource(_)), Some(node)) = (
                        &result,
                        inputs.desired.get(&id).and_then(|d| d.maintenance.as_ref()),
                    ) {
                        rollout.mark_down(node, "left cordoned by a failed change");
                    }
                    // Read the nodes again before the parked changes try (another may have
                    // gone down or come back), at most once per `health_poll`, so a pool of
                    // thousands does not list its nodes after every change. Hosts still in
                    // flight are not counted twice (see `Budget`).
                    if schedule.has_parked() && last_read.elapsed() >= options.health_poll {
                        rollout.set_down(budget::read_down(rollout.pools(), inputs.providers).await);
                        last_read = Instant::now();
                    }
                    schedule.unpark();
                }
                let id: &ResourceId = todo.get_key_value(&id).map(|(k, _)| *k).unwrap_or_else(|| unreachable_id(&todo));
                match result {
                    Ok(Step { journal, elapsed }) => {
                        // run_one made these durable; the in-memory state follows.
                        for entry in &journal {
                            state.replay(entry);
                        }
                        emit(ApplyEvent::Succeeded { id: id.clone(), action: todo[id].action, elapsed_ms: elapsed.as_millis() as u64 });
                        report.outcomes.insert(id.clone(), Outcome::Applied { action: todo[id].action });
                        schedule.succeeded(id);
                    }
                    Err(Failure::Journal(e)) => return Err(e.into()),
                    Err(Failure::Resource(error)) => {
                        emit(ApplyEvent::Failed { id: id.clone(), error: error.clone() });
                        report.outcomes.insert(id.clone(), Outcome::Failed { error });
                        // Once interrupted, what did not start is reported as not started.
                        for (skipped, root) in schedule.failed(id, !*cancel.borrow()) {
                            emit(ApplyEvent::Skipped { id: skipped.clone(), root: root.clone() });
                            report.outcomes.insert(skipped.clone(), Outcome::SkippedUpstream { root });
                        }
                    }
                }
            }
            // A dropped sender can never cancel: the branch is then disabled, not spun on.
            Ok(()) = cancel.changed() => {}
        }
    }

    for id in todo.keys() {
        report.outcomes.entry((*id).clone()).or_insert_with(|| {
            report.interrupted = true;
            Outcome::NotStarted
        });
    }
    // A change whose wait (retry delay, drain, health) a cancel cut short failed because of
    // the interruption: the run reads as interrupted, not as a failure to investigate.
    if *cancel.borrow()
        && report
            .outcomes
            .values()
            .any(|o| !matches!(o, Outcome::Applied { .. }))
    {
        report.interrupted = true;
    }
    if report.succeeded()
        && let Some(rev) = &plan.revision
    {
        let entry = JournalEntry::Revision {
            revision: rev.clone(),
            at: now_rfc3339(),
        };
        inputs.store.record(&entry).await?;
        state.replay(&entry);
    }
    inputs.store.compact(state).await?;
    Ok(report)
}

fn unreachable_id<'a>(todo: &BTreeMap<&'a ResourceId, &PlannedChange>) -> &'a ResourceId {
    // Only ids from `todo` are ever started, so this is never reached; fall back to the first.
    todo.keys()
        .next()
        .copied()
        .unwrap_or_else(|| Box::leak(Box::new(ResourceId::new("unknown", "unknown"))))
}

/// A change carried out, with the journal entries that recorded its result.
struct Step {
    journal: Vec<JournalEntry>,
    elapsed: Duration,
}

/// Why a change did not complete.
enum Failure {
    /// The change failed; its dependents are skipped, the rest goes on.
    Resource(String),
    /// Its result could not be journaled: the apply stops (the intent is on disk).
    Journal(StateError),
}

/// Which changes may start. Each change waits for the changes among its dependencies
/// (unchanged ones are satisfied); deletes also wait for every non-delete change, and for the
/// deletes of their dependents. Kept as counts, so a finished change costs its dependents,
/// not a rescan of the whole plan.
struct Schedule<'a> {
    blockers: BTreeMap<&'a ResourceId, usize>,
    dependents: BTreeMap<&'a ResourceId, Vec<&'a ResourceId>>,
    /// Deletes in address order; they start once `non_deletes_left` is zero.
    deletes: Vec<&'a ResourceId>,
    non_deletes_left: usize,
    /// A non-delete failed or was skipped: no delete may start.
    deletes_blocked: bool,
    /// May start now, in address order.
    ready: BTreeSet<&'a ResourceId>,
    /// Ready, but their rollout group is full.
    parked: Vec<&'a ResourceId>,
    started: BTreeSet<&'a ResourceId>,
    /// Failed (root = itself) or skipped because of root.
    failed_root: BTreeMap<&'a ResourceId, ResourceId>,
}

impl<'a> Schedule<'a> {
    fn new(todo: &BTreeMap<&'a ResourceId, &'a PlannedChange>, state: &State) -> Self {
        let mut waits: BTreeMap<&'a ResourceId, BTreeSet<&'a ResourceId>> =
            todo.keys().map(|id| (*id, BTreeSet::new())).collect();
        for (id, c) in todo {
            if c.action == Action::Delete {
                // A delete waits for the deletes of what depends on it.
                let deps = state.resources.get(*id).map(|e| e.deps.as_slice());
                for dep in deps.unwrap_or_default() {
                    if let Some((other, oc)) = todo.get_key_value(&dep.on)
                        && oc.action == Action::Delete
                        && other != id
                    {
                        waits.entry(other).or_default().insert(id);
                    }
                }
            } else {
                let on = c.waits_for.iter().filter_map(|d| todo.get_key_value(&d.on));
                let w = waits.entry(id).or_default();
                w.extend(on.map(|(k, _)| *k).filter(|k| k != id));
            }
        }
        let mut dependents: BTreeMap<&'a ResourceId, Vec<&'a ResourceId>> = BTreeMap::new();
        for (id, w) in &waits {
            for on in w {
                dependents.entry(on).or_default().push(id);
            }
        }
        let deletes: Vec<&ResourceId> = todo
            .iter()
            .filter(|(_, c)| c.action == Action::Delete)
            .map(|(id, _)| *id)
            .collect();
        let mut schedule = Self {
            blockers: waits.iter().map(|(id, w)| (*id, w.len())).collect(),
            dependents,
            non_deletes_left: todo.len() - deletes.len(),
            deletes,
            deletes_blocked: false,
            ready: BTreeSet::new(),
            parked: Vec::new(),
            started: BTreeSet::new(),
            failed_root: BTreeMap::new(),
        };
        let ready: Vec<&ResourceId> = todo
            .keys()
            .copied()
            .filter(|id| schedule.may_start(id))
            .collect();
        schedule.ready.extend(ready);
        schedule
    }

    fn is_delete(&self, id: &ResourceId) -> bool {
        self.deletes.binary_search(&id).is_ok()
    }

    fn may_start(&self, id: &ResourceId) -> bool {
        self.blockers.get(id) == Some(&0)
            && !self.started.contains(id)
            && !self.failed_root.contains_key(id)
            && (!self.is_delete(id) || (self.non_deletes_left == 0 && !self.deletes_blocked))
    }

    /// The next change that may start, in address order.
    fn next(&mut self) -> Option<&'a ResourceId> {
        self.ready.pop_first()
    }

    /// The changes that may start after [`Schedule::next`], in the order it gives them.
    fn upcoming(&self) -> impl Iterator<Item = &'a ResourceId> + '_ {
        self.ready.iter().copied()
    }

    /// `id` may start, but not before a rollout slot frees up.
    fn park(&mut self, id: &'a ResourceId) {
        self.parked.push(id);
    }

    /// A rollout slot freed up: parked changes are tried again.
    fn unpark(&mut self) {
        self.ready.extend(self.parked.drain(..));
    }

    /// True when some change waits for room in its rollout group.
    fn has_parked(&self) -> bool {
        !self.parked.is_empty()
    }

    /// The parked changes, no longer parked (they are given up on).
    fn take_parked(&mut self) -> Vec<&'a ResourceId> {
        let mut out = std::mem::take(&mut self.parked);
        out.sort();
        out.dedup();
        out
    }

    fn start(&mut self, id: &'a ResourceId) {
        self.started.insert(id);
    }

    fn succeeded(&mut self, id: &'a ResourceId) {
        let mut check: Vec<&'a ResourceId> = Vec::new();
        if !self.is_delete(id) {
            self.non_deletes_left -= 1;
            if self.non_deletes_left == 0 {
                check.extend(self.deletes.iter().copied());
            }
        }
        for d in self.dependents.get(id).into_iter().flatten() {
            if let Some(n) = self.blockers.get_mut(d) {
                *n = n.saturating_sub(1);
            }
            check.push(d);
        }
        for d in check {
            if self.may_start(d) {
                self.ready.insert(d);
            }
        }
    }

    /// `id` failed. With `propagate`, everything that waits for it, transitively, is skipped
    /// and returned in address order with the root cause.
    fn failed(&mut self, id: &'a ResourceId, propagate: bool) -> Vec<(&'a ResourceId, ResourceId)> {
        self.failed_root.insert(id, id.clone());
        if !propagate {
            return Vec::new();
        }
        let mut skipped = BTreeSet::new();
        let mut stack = vec![id];
        while let Some(x) = stack.pop() {
            let mut next: Vec<&'a ResourceId> = self.dependents.get(x).cloned().unwrap_or_default();
            if !self.is_delete(x) && !self.deletes_blocked {
                self.deletes_blocked = true;
                next.extend(self.deletes.iter().copied());
            }
            for n in next {
                if self.started.contains(n) || self.failed_root.contains_key(n) {
                    continue;
                }
                self.failed_root.insert(n, id.clone());
                skipped.insert(n);
                stack.push(n);
            }
        }
        self.ready.retain(|r| !skipped.contains(r));
        self.parked.retain(|r| !skipped.contains(r));
        skipped.into_iter().map(|n| (n, id.clone())).collect()
    }
}

#[allow(clippy::too_many_arguments)] // one change's inputs, each distinct
async fn run_one<'a>(
    change: &'a PlannedChange,
    desired: Option<&'a Desired>,
    inputs: &'a Inputs<'a>,
    previous: Option<InventoryEntry>,
    options: &'a ApplyOptions,
    emit: &'a (dyn Fn(ApplyEvent) + Sync),
    group: Option<RolloutGroup>,
    cancel: watch::Receiver<bool>,
) -> (ResourceId, Result<Step, Failure>, Option<RolloutGroup>) {
    let result =
        match run_one_inner(change, desired, inputs, previous, options, emit, &cancel).await {
            // Journaled here, not by the loop that collects results, so a slow store never holds
            // up the loop; the intent is durable, so the result may wait for the next sync.
            Ok(step) => record_results(inputs.store, &step.journal)
                .await
                .map(|()| step)
                .map_err(Failure::Journal),
            Err(e) => Err(Failure::Resource(e)),
        };
    (change.id.clone(), result, group)
}

async fn record_results(
    store: &dyn StateStore,
    entries: &[JournalEntry],
) -> Result<(), StateError> {
    for entry in entries {
        store.record_result(entry).await?;
    }
    Ok(())
}

/// What the inventory says of `d`: applied (`pending` false), or about to be (`pending`: the
/// provider may act, so a crash must not forget the resource; the spec stays the previous one
/// until the call succeeds).
fn inventory_entry(
    d: &Desired,
    previous: Option<&InventoryEntry>,
    pending: bool,
) -> InventoryEntry {
    InventoryEntry {
        spec: if pending {
            previous.and_then(|p| p.spec.clone())
        } else {
            Some(digested_spec(&d.spec, &d.sensitive))
        },
        spec_digest: Some(digest_bytes(
            &serde_json::to_vec(&d.spec).unwrap_or_default(),
        )),
        sensitive: d.sensitive.clone(),
        deps: d.deps.clone(),
        prevent_destroy: d.prevent_destroy,
        pending,
        revision: None,
    }
}

/// One change: cordon and drain its node when disruptive, the provider call with retries,
/// the health wait, the release. A cancel ends every wait at once (a retry delay, the drain,
/// the health polls); a provider call already made finishes. A change stopped that way is a
/// failure: its intent stays pending in the journal, so the next plan observes it again.
async fn run_one_inner(
    change: &PlannedChange,
    desired: Option<&Desired>,
    inputs: &Inputs<'_>,
    previous: Option<InventoryEntry>,
    options: &ApplyOptions,
    emit: &(dyn Fn(ApplyEvent) + Sync),
    cancel: &watch::Receiver<bool>,
) -> Result<Step, String> {
    let start = Instant::now();
    let id = &change.id;
    let provider = inputs
        .providers
        .for_id(id)
        .ok_or_else(|| format!("no provider named `{}` is configured", id.provider()))?;
    let observed = inputs
        .observations
        .get(id)
        .and_then(|o| o.as_ref().ok())
        .and_then(|o| o.as_ref());
    let last_applied = previous.as_ref().and_then(|p| p.spec.clone());

    // The intent is already durable (the apply loop records it before starting the change).

    let provider_change = crate::provider::Change {
        id: id.clone(),
        action: change.action,
        fields: change.fields.clone(),
        requires_replace: match &change.reason {
            crate::plan::Reason::ImmutableField { paths } => paths.clone(),
            _ => Vec::new(),
        },
        // A plan saved before `disruption` existed says only `disruptive`.
        disruption: if change.disruptive {
            change
                .disruption
                .max(crate::provider::Disruption::NodeDrain)
        } else {
            change.disruption
        },
    };
    let request = ApplyRequest {
        change: &provider_change,
        desired,
        last_applied: last_applied.as_ref(),
        observed,
    };
    let cx = ApplyContext {
        timeout: options.call_timeout,
        dry_run: false,
    };
    // A disruptive change to a host that is a cluster node: cordon first, so nothing new is
    // scheduled on a host about to reboot, then drain it, so what runs there is evicted (and
    // its disruption budget respected) rather than killed by the reboot; release once the
    // change is applied and healthy. On failure the node stays cordoned.
    let maintenance = desired
        .and_then(|d| d.maintenance.as_ref())
        .filter(|_| change.disruptive && change.action != Action::Delete);
    if let Some(node) = maintenance {
        let reason = format!("fleetform: {} ({:?})", id, change.action);
        maintain(inputs, options, id, node, Some(&reason), cancel).await?;
        emit(ApplyEvent::Maintenance {
            id: id.clone(),
            node: node.clone(),
            cordoned: true,
        });
    }
    let left_cordoned = |e: String| match maintenance {
        Some(node) => format!(
            "{e} ({node} stays cordoned for maintenance; the next successful apply releases it)"
        ),
        None => e,
    };
    if let Some(node) = maintenance {
        drain(inputs, options, id, node, cancel)
            .await
            .map_err(left_cordoned)?;
    }
    let applied = apply_with_retries(provider.as_ref(), &request, &cx, id, options, emit, cancel)
        .await
        .map_err(left_cordoned)?;
    if change.action != Action::Delete {
        wait_healthy(provider.as_ref(), id, &applied, options, emit, cancel)
            .await
            .map_err(left_cordoned)?;
    }
    if let Some(node) = maintenance {
        maintain(inputs, options, id, node, None, cancel)
            .await
            .map_err(|e| format!("applied, but releasing the maintenance cordon failed: {e}"))?;
        emit(ApplyEvent::Maintenance {
            id: id.clone(),
            node: node.clone(),
            cordoned: false,
        });
    }

    let journal = match (
        change.action,
        desired.map(|d| inventory_entry(d, None, false)),
    ) {
        (Action::Delete, _) => vec![JournalEntry::Removed { id: id.clone() }],
        (_, Some(entry)) => vec![JournalEntry::Applied {
            id: id.clone(),
            entry,
        }],
        (_, None) => Vec::new(),
    };
    Ok(Step {
        journal,
        elapsed: start.elapsed(),
    })
}

/// Drains a node cordoned for maintenance through its provider. Not retried: the provider
/// keeps trying until its own deadline, and a drain that did not finish is a decision for a
/// person (a budget that never allows the eviction, a pod that never stops).
async fn drain(
    inputs: &Inputs<'_>,
    options: &ApplyOptions,
    id: &ResourceId,
    node: &ResourceId,
    cancel: &watch::Receiver<bool>,
) -> Result<(), String> {
    let provider = inputs.providers.for_id(node).ok_or_else(|| {
        format!(
            "cannot drain {node} before changing {id}: no provider named `{}` is configured",
            node.provider()
        )
    })?;
    let maintenance = provider.maintenance().ok_or_else(|| {
        format!(
            "cannot drain {node} before changing {id}: provider `{}` cannot drain nodes",
            provider.name()
        )
    })?;
    // Dropping the drain stops its evictions: the node stays cordoned, nothing is changed.
    let drained = tokio::select! {
        r = maintenance.drain(node, options.drain_timeout) => r,
        () = cancelled(cancel) => {
            return Err(format!("interrupted while draining {node} before changing {id}; not changed"));
        }
    };
    drained.map_err(|e| {
        format!(
            "cannot drain {node} before changing {id}: {}",
            error_chain(&e)
        )
    })
}

/// Cordons (`reason`) or releases (`None`) a node through its provider,
/// retrying transient errors like any other call.
async fn maintain(
    inputs: &Inputs<'_>,
    options: &ApplyOptions,
    id: &ResourceId,
    node: &ResourceId,
    reason: Option<&str>,
    cancel: &watch::Receiver<bool>,
) -> Result<(), String> {
    let provider = inputs.providers.for_id(node).ok_or_else(|| {
        format!(
            "cannot cordon {node} before changing {id}: no provider named `{}` is configured",
            node.provider()
        )
    })?;
    let what = if reason.is_some() {
        "cordon"
    } else {
        "release"
    };
    let maintenance = provider.maintenance().ok_or_else(|| {
        format!(
            "cannot {what} {node}: provider `{}` cannot cordon nodes",
            provider.name()
        )
    })?;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let result = match tokio::time::timeout(
            options.call_timeout,
            maintenance.cordon(node, reason),
        )
        .await
        {
            Ok(r) => r,
            Err(_) => Err(ProviderError::transient(
                node,
                format!("no answer within {:?}", options.call_timeout),
            )),
        };
        match result {
            Ok(_) => return Ok(()),
            Err(e) if e.is_transient() && attempt < options.max_attempts => {
                if !pause(retry_delay(options, &e, attempt), cancel).await {
                    return Err(format!(
                        "cannot {what} {node}: interrupted before retrying: {}",
                        error_chain(&e)
                    ));
                }
            }
            Err(e) => {
                return Err(format!("cannot {what} {node}: {}", error_chain(&e)));
            }
        }
    }
}

/// The provider call with retries of transient errors.
async fn apply_with_retries(
    provider: &dyn Provider,
    request: &ApplyRequest<'_>,
    cx: &ApplyContext,
    id: &ResourceId,
    options: &ApplyOptions,
    emit: &(dyn Fn(ApplyEvent) + Sync),
    cancel: &watch::Receiver<bool>,
) -> Result<Applied, String> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let result =
            match tokio::time::timeout(options.call_timeout, provider.apply(request, cx)).await {
                Ok(r) => r,
                Err(_) => Err(ProviderError::transient(
                    id,
                    format!("no answer within {:?}", options.call_timeout),
                )),
            };
        match result {
            Ok(a) => return Ok(a),
            Err(e) if e.is_transient() && attempt < options.max_attempts => {
                let delay = retry_delay(options, &e, attempt);
                emit(ApplyEvent::Retrying {
                    id: id.clone(),
                    attempt,
                    error: error_chain(&e),
                    delay_ms: delay.as_millis() as u64,
                });
                if !pause(delay, cancel).await {
                    return Err(format!(
                        "interrupted before retry {}: {}",
                        attempt + 1,
                        error_chain(&e)
                    ));
                }
            }
            Err(e) => {
                let suffix = if e.is_transient() {
                    format!(" (gave up after {attempt} attempts)")
                } else {
                    String::new()
                };
                return Err(format!("{}{suffix}", error_chain(&e)));
            }
        }
    }
}

/// Polls health until ready (not for deletes).
async fn wait_healthy(
    provider: &dyn Provider,
    id: &ResourceId,
    applied: &Applied,
    options: &ApplyOptions,
    emit: &(dyn Fn(ApplyEvent) + Sync),
    cancel: &watch::Receiver<bool>,
) -> Result<(), String> {
    let deadline = Instant::now() + options.health_timeout;
    let mut last_message = String::new();
    loop {
        // The same bound as the apply call: a health check that hangs is a transient error.
        let health =
            match tokio::time::timeout(options.call_timeout, provider.health(id, &applied.spec))
                .await
            {
                Ok(r) => r,
                Err(_) => Err(ProviderError::transient(
                    id,
                    format!("health: no answer within {:?}", options.call_timeout),
                )),
            };
        match health {
            Ok(Health::Ready) => return Ok(()),
            Ok(Health::Failed(m)) => return Err(format!("{id}: applied but unhealthy: {m}")),
            Ok(Health::Progressing(m)) => {
                if m != last_message {
                    emit(ApplyEvent::WaitingHealthy {
                        id: id.clone(),
                        message: m.clone(),
                    });
                    last_message = m;
                }
            }
            Err(e) if e.is_transient() => last_message = error_chain(&e),
            Err(e) => return Err(error_chain(&e)),
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "{id}: not healthy after {:?}: {last_message}",
                options.health_timeout
            ));
        }
        if !pause(options.health_poll, cancel).await {
            return Err(format!(
                "{id}: applied, but interrupted while waiting for it to be healthy: {last_message}"
            ));
        }
    }
}

/// The delay before retrying after `e`: the provider's `Retry-After` when it gave one, else
/// the backoff; either way at most `max_backoff`, so a server asking for an hour cannot
/// hold an apply (and a shutdown) that long.
fn retry_delay(options: &ApplyOptions, e: &ProviderError, attempt: u32) -> Duration {
    e.retry_after
        .map_or_else(|| backoff(options, attempt), |d| d.min(options.max_backoff))
}

/// Sleeps `delay` unless the cancel signal turns true first; `false` when it did.
async fn pause(delay: Duration, cancel: &watch::Receiver<bool>) -> bool {
    tokio::select! {
        () = tokio::time::sleep(delay) => true,
        () = cancelled(cancel) => false,
    }
}

/// Resolves once the cancel signal is true (at once if it already is). A dropped sender can
/// never cancel: then it never resolves.
async fn cancelled(cancel: &watch::Receiver<bool>) {
    let mut rx = cancel.clone();
    if rx.wait_for(|c| *c).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Exponential backoff with full jitter, capped.
fn backoff(options: &ApplyOptions, attempt: u32) -> Duration {
    let exp = options
        .base_backoff
        .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)));
    let cap = exp.min(options.max_backoff);
    let jitter: f64 = rand::random::<f64>() * 0.5 + 0.5;
    cap.mul_f64(jitter)
}
