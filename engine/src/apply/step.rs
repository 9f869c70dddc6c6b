//! One change: journal the intent, cordon and drain when disruptive, call the provider,
//! wait for health, journal the result.

use super::wait::{apply_with_retries, drain, maintain, wait_healthy};
use super::{ApplyEvent, ApplyOptions, Inputs};
use crate::plan::{PlannedChange, digested_spec};
use crate::provider::{Action, ApplyContext, ApplyRequest};
use crate::resource::{Desired, ResourceId, RolloutGroup};
use crate::sensitive::digest_bytes;
use crate::state::{InventoryEntry, JournalEntry, StateError, StateStore};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// A change carried out, with the journal entries that recorded its result.
pub(super) struct Step {
    pub(super) journal: Vec<JournalEntry>,
    pub(super) elapsed: Duration,
}

/// Why a change did not complete.
pub(super) enum Failure {
    /// The change failed; its dependents are skipped, the rest goes on.
    Resource(String),
    /// Its result could not be journaled: the apply stops (the intent is on disk).
    Journal(StateError),
}

#[allow(clippy::too_many_arguments)] // one change's inputs, each distinct
pub(super) async fn run_one<'a>(
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
pub(super) fn inventory_entry(
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
