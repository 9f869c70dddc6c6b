//! Tenant sharding for `serve` replicas: which part of the fleet a resource belongs to, and
//! what a replica needs from whoever decides which parts it owns (the Lease coordinator in
//! `fleetform-state-kube`; the engine has no Kubernetes dependency).
//!
//! A fleet is split into `count` tenant shards plus one fleet shard. A resource belongs to the
//! shard of its tenant as its provider says (`Provider::tenant`: a Kubernetes object's cluster);
//! resources of no tenant (hosts, racks, NICo) and the management cluster's objects (which
//! every tenant shares) belong to the fleet shard. Each shard has a state store of its own, so
//! two shards never write the same head, and each store has its own lock and fencing token.
//!
//! A dependency on a resource of another shard is an external precondition: the shard waits
//! (retrying with backoff) until the other shard's state records that resource as applied
//! (its spec digest is this revision's, or that shard applied this revision), and the edge is
//! then left out of its own plan. See docs/state.md, "Tenant sharding".

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::Notify;

use crate::observe::Providers;
use crate::resource::{Desired, ResourceId};
use crate::sensitive::digest_bytes;
use crate::state::{State, StateStore};

/// A part of a sharded fleet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Shard {
    /// Resources of no tenant, and the management cluster's. Ordered first: tenant shards
    /// usually wait for it.
    Fleet,
    /// The tenants whose name hashes to this shard.
    Tenants(u32),
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Shard::Fleet => f.write_str("fleet"),
            Shard::Tenants(k) => write!(f, "{k}"),
        }
    }
}

/// The cluster name compile gives the management cluster: shared by every tenant, so its
/// objects belong to the fleet shard.
const MANAGEMENT_CLUSTER: &str = crate::compile::MANAGEMENT_CLUSTER;

/// What a sharded replica asks of its coordinator.
#[async_trait]
pub trait Shards: Send + Sync {
    /// How many tenant shards the fleet has (the fleet shard comes on top).
    fn count(&self) -> u32;
    /// The tenant shard `tenant` belongs to: stable across replicas and releases.
    fn shard_of(&self, tenant: &str) -> u32;
    /// The shards this replica owns now.
    fn owned(&self) -> BTreeSet<Shard>;
    /// The state store of `shard` (its own objects, lock and fencing token).
    fn store(&self, shard: Shard) -> Arc<dyn StateStore>;
    /// Notified whenever the owned shards change, so a new owner reconciles at once.
    fn changed(&self) -> Arc<Notify>;
    /// Gives up every shard (on shutdown) so others take them over without waiting for the
    /// leases to run out.
    async fn leave(&self);
}

/// The shard `id` belongs to.
pub fn shard_of(shards: &dyn Shards, providers: &Providers, id: &ResourceId) -> Shard {
    match providers.for_id(id).and_then(|p| p.tenant(id)) {
        None | Some("") | Some(MANAGEMENT_CLUSTER) => Shard::Fleet,
        Some(tenant) => Shard::Tenants(shards.shard_of(tenant)),
    }
}

/// Splits `desired` by shard.
pub fn partition<'d>(
    shards: &dyn Shards,
    providers: &Providers,
    desired: &'d [Desired],
) -> BTreeMap<Shard, Vec<&'d Desired>> {
    let mut parts: BTreeMap<Shard, Vec<&Desired>> = BTreeMap::new();
    for d in desired {
        parts
            .entry(shard_of(shards, providers, &d.id))
            .or_default()
            .push(d);
    }
    parts
}

/// A dependency of one shard on a resource another shard owns.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct External {
    /// The resource waited for.
    pub on: ResourceId,
    /// The shard that applies it.
    pub owner: Shard,
}

/// The resources of `part` (shard `shard`), with every dependency on another shard's
/// resource taken out, and those dependencies.
pub fn detach(
    shards: &dyn Shards,
    providers: &Providers,
    shard: Shard,
    part: &[&Desired],
) -> (Vec<Desired>, BTreeSet<External>) {
    let mut external = BTreeSet::new();
    let own = part
        .iter()
        .map(|d| {
            let mut d = (*d).clone();
            d.deps.retain(|dep| {
                let owner = shard_of(shards, providers, &dep.on);
                if owner == shard {
                    return true;
                }
                external.insert(External {
                    on: dep.on.clone(),
                    owner,
                });
                false
            });
            d
        })
        .collect();
    (own, external)
}

/// Whether `owner_state` (the state of the shard that owns `on`) records `on` as applied for
/// `revision`: present, not in flight, and either with the spec digest `desired` has now or
/// in a shard that finished `revision` (a spec the provider rewrote, e.g. a pinned image).
pub fn applied(
    owner_state: &State,
    on: &ResourceId,
    desired: Option<&Desired>,
    revision: &str,
) -> bool {
    let Some(entry) = owner_state.resources.get(on) else {
        return false;
    };
    if entry.pending {
        return false;
    }
    let same_spec = desired.is_some_and(|d| {
        entry.spec_digest.as_deref()
            == Some(digest_bytes(&serde_json::to_vec(&d.spec).unwrap_or_default()).as_str())
    });
    same_spec || owner_state.last_applied_revision.as_deref() == Some(revision)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::state::InventoryEntry;

    #[test]
    fn a_dependency_counts_as_applied_only_when_recorded_with_this_spec_or_this_revision() {
        let id = ResourceId::new("redfish", "host/r01/power");
        let d = Desired::new(id.clone(), serde_json::json!({"on": true}));
        let entry = InventoryEntry {
            spec: Some(d.spec.clone()),
            spec_digest: Some(digest_bytes(&serde_json::to_vec(&d.spec).unwrap())),
            sensitive: vec![],
            deps: vec![],
            prevent_destroy: false,
            pending: false,
            revision: None,
        };
        let mut state = State::default();
        assert!(!applied(&state, &id, Some(&d), "r2"), "absent");
        state.resources.insert(id.clone(), entry.clone());
        assert!(applied(&state, &id, Some(&d), "r2"));
        let old = Desired::new(id.clone(), serde_json::json!({"on": false}));
        assert!(!applied(&state, &id, Some(&old), "r2"), "another spec");
        state.last_applied_revision = Some("r2".into());
        assert!(
            applied(&state, &id, Some(&old), "r2"),
            "its shard finished r2"
        );
        state.resources.get_mut(&id).unwrap().pending = true;
        assert!(!applied(&state, &id, Some(&d), "r2"), "in flight");
    }
}
