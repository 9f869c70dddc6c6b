//! The apply loop: changes start as soon as what they wait for has succeeded, bounded by
//! the concurrency and the rollout budgets; every result is journaled.

use super::rollout::{self, Budget};
use super::schedule::Schedule;
use super::step::{Failure, Step, inventory_entry, run_one};
use super::{
    ApplyError, ApplyEvent, ApplyOptions, ApplyReport, DestroyApproved, INTENT_BATCH, Inputs,
    Outcome,
};
use crate::plan::{Plan, PlannedChange, digested_spec};
use crate::provider::Action;
use crate::resource::ResourceId;
use crate::sensitive::digest_bytes;
use crate::state::{InventoryEntry, JournalEntry, State, now_rfc3339};
use futures::stream::{FuturesUnordered, StreamExt};
use std::collections::{BTreeMap, BTreeSet};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

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
        let pools = rollout::pools(inputs.desired.values().copied());
        let down = rollout::read_down(&pools, inputs.providers).await;
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
                let down = rollout::read_down(rollout.pools(), inputs.providers).await;
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
                        rollout.set_down(rollout::read_down(rollout.pools(), inputs.providers).await);
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
