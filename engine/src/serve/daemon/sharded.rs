//! The daemon's reconcile and drift check when tenants are sharded over replicas
//! ([`super::super::shards`]): the head is fetched and compiled once, then each shard this
//! replica owns is planned and applied on its own, with its own state store and lock, the
//! fleet shard first. A shard whose state already records the head is skipped.

use std::collections::BTreeMap;

use super::*;
use crate::serve::shards::{self, External};

impl Daemon {
    /// One reconcile of the shards this replica owns.
    pub(super) async fn try_reconcile_sharded(
        &mut self,
        shards: &dyn Shards,
        shutdown: &watch::Receiver<bool>,
    ) -> Result<Reconciled, Failure> {
        // History and signature checks run against what the fleet shard last applied: every
        // replica reads the same value, whichever shards it owns.
        let fleet = load(shards, Shard::Fleet).await?;
        let last_applied = fleet.last_applied_revision.filter(|r| is_commit(r));
        let fetched = self.fetch(last_applied).await?;
        let commit = fetched.revision.commit.clone();
        self.update_status(|s| s.head = Some(commit.clone()));
        let mut behind = Vec::new();
        for shard in shards.owned() {
            let state = load(shards, shard).await.map_err(|f| f.at(&commit))?;
            if state.last_applied_revision.as_deref() != Some(commit.as_str())
                || self.dirty_shards.contains(&shard)
            {
                behind.push(shard);
            }
        }
        if behind.is_empty() {
            return Ok(Reconciled::UpToDate { commit });
        }
        let prepared = self
            .prepare(fetched.files)
            .await
            .map_err(|f| f.at(&commit))?;
        let parts = shards::partition(shards, &prepared.providers, &prepared.desired);
        let by_id: BTreeMap<&ResourceId, &Desired> =
            prepared.desired.iter().map(|d| (&d.id, d)).collect();
        let mut summaries = Vec::new();
        let mut failed: Option<Failure> = None;
        for shard in behind {
            if *shutdown.borrow() {
                failed.get_or_insert_with(|| {
                    Failure::new("interrupted", Retry::Backoff, "shutting down").at(&commit)
                });
                break;
            }
            // Given up since the round started (another replica is preferred now).
            if !shards.owned().contains(&shard) {
                continue;
            }
            let part = parts.get(&shard).map_or(&[][..], Vec::as_slice);
            let (own, external) = shards::detach(shards, &prepared.providers, shard, part);
            let result = async {
                wait_for(shards, shard, &external, &by_id, &commit).await?;
                let store = shards.store(shard);
                let session = Session::new(
                    store.as_ref(),
                    &prepared.providers,
                    &own,
                    prepared.plan_options.clone(),
                    Some(commit.clone()),
                )
                .with_observe_options(self.observe_options)
                .with_hooks(prepared.hooks.iter().cloned());
                self.apply_session(&session, &commit, shutdown).await
            }
            .await;
            match result {
                Ok(summary) => {
                    tracing::info!(shard = %shard, resources = own.len(), summary = %summary, "shard applied");
                    self.dirty_shards.remove(&shard);
                    summaries.push(format!("shard {shard}: {summary}"));
                }
                Err(f) => {
                    let f = f.at(&commit);
                    tracing::warn!(shard = %shard, error = %f, "shard failed");
                    self.dirty_shards.insert(shard);
                    failed.get_or_insert(Failure {
                        message: format!("shard {shard}: {}", f.message),
                        ..f
                    });
                }
            }
        }
        match failed {
            Some(f) => Err(f),
            None => Ok(Reconciled::Applied {
                commit,
                summary: summaries.join("; "),
            }),
        }
    }

    /// Drift of the shards this replica owns, each against the revision its state last
    /// applied. Each replica checks only its own shards, so a drifted resource is reported
    /// (and healed) once, by its shard's owner.
    pub(super) async fn check_drift_sharded(
        &mut self,
        shards: &dyn Shards,
        shutdown: &watch::Receiver<bool>,
    ) -> Result<Option<DriftReport>, Failure> {
        let mut total: Option<DriftReport> = None;
        let mut prepared_at: BTreeMap<String, Prepared> = BTreeMap::new();
        for shard in shards.owned() {
            let state = load(shards, shard).await?;
            if state.resources.is_empty() {
                continue;
            }
            let Some(commit) = state.last_applied_revision.clone().filter(|r| is_commit(r)) else {
                continue;
            };
            if !prepared_at.contains_key(&commit) {
                let files = self.files_at(&commit).await?;
                let prepared = self.prepare(files).await.map_err(|f| f.at(&commit))?;
                prepared_at.insert(commit.clone(), prepared);
            }
            let Some(prepared) = prepared_at.get(&commit) else {
                continue;
            };
            let parts = shards::partition(shards, &prepared.providers, &prepared.desired);
            let part = parts.get(&shard).map_or(&[][..], Vec::as_slice);
            let (own, _) = shards::detach(shards, &prepared.providers, shard, part);
            let store = shards.store(shard);
            let session = Session::new(
                store.as_ref(),
                &prepared.providers,
                &own,
                prepared.plan_options.clone(),
                Some(commit.clone()),
            )
            .with_observe_options(self.observe_options)
            .with_hooks(prepared.hooks.iter().cloned());
            let report = self
                .drift_session(&session, prepared, &commit, shutdown)
                .await?;
            total = Some(match total {
                None => report,
                Some(mut t) => {
                    t.healed = (t.healed || t.drifted.is_empty())
                        && (report.healed || report.drifted.is_empty());
                    t.drifted.extend(report.drifted);
                    t.revision = report.revision;
                    t
                }
            });
        }
        Ok(total)
    }
}

async fn load(shards: &dyn Shards, shard: Shard) -> Result<State, Failure> {
    shards
        .store(shard)
        .load()
        .await
        .map_err(|e| Failure::caused("state", Retry::Backoff, e))
}

/// Refuses (for a retry with backoff) while a resource of another shard that `shard` depends
/// on is not yet recorded as applied for `commit` by the shard that owns it.
async fn wait_for(
    shards: &dyn Shards,
    shard: Shard,
    external: &std::collections::BTreeSet<External>,
    desired: &BTreeMap<&ResourceId, &Desired>,
    commit: &str,
) -> Result<(), Failure> {
    let mut states: BTreeMap<Shard, State> = BTreeMap::new();
    let mut missing = Vec::new();
    for e in external {
        let state = match states.entry(e.owner) {
            std::collections::btree_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::btree_map::Entry::Vacant(v) => v.insert(load(shards, e.owner).await?),
        };
        let applied = shards::applied(state, &e.on, desired.get(&e.on).copied(), commit);
        if !applied {
            missing.push(format!("{} (shard {})", e.on, e.owner));
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    let more = if missing.len() > 3 {
        format!(" and {} more", missing.len() - 3)
    } else {
        String::new()
    };
    missing.truncate(3);
    Err(Failure::new(
        "precondition",
        Retry::Backoff,
        format!(
            "shard {shard} waits for {}{more} to be applied by its shard first",
            missing.join(", ")
        ),
    ))
}
