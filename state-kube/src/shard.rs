//! Tenant sharding over `serve` replicas: tenants hash to a fixed number of shards; each shard
//! has a Lease (`fleetform-shard-<fleet>-<k>`), so at most one replica reconciles it; replicas
//! announce themselves with a member Lease, and each shard's preferred owner among the live
//! members is chosen by rendezvous (highest-random-weight) hashing. Adding or removing a replica
//! therefore moves only the shards whose preferred owner changes, and the shards of a replica
//! that dies are taken over once its Leases run out (within one lease duration).
//!
//! [`ShardSet`] runs a coordinator for `serve --shards N`: shards `0..N` are tenant shards and
//! shard `N` is the fleet shard (resources of no tenant); each has a state store of its own,
//! `kubernetes://<ns>/<fleet>-shard-<k>` (`<fleet>-shard-fleet`), with its own lock and fencing.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use fleetform_engine::serve::shards::{Shard, Shards};
use fleetform_engine::state::StateStore;
use tokio::sync::Notify;

use fleetform_engine::state::{LockInfo, StateError};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, ListParams};
use sha2::Digest;

use crate::{FLEET_LABEL, KubeStateStore, LeaseHandle, Location, Options, expired};

/// The label telling member Leases from shard Leases.
pub const ROLE_LABEL: &str = "fleetform.dev/lease-role";

/// The shard (of `shards`) a tenant belongs to: a stable hash of its name, the same on every
/// replica and release.
pub fn shard_of(tenant: &str, shards: u32) -> u32 {
    // shards is at least 1 here (Coordinator::new refuses 0); u64 % u32 fits a u32.
    (hash64(tenant.as_bytes()) % u64::from(shards.max(1))) as u32
}

fn hash64(bytes: &[u8]) -> u64 {
    let digest = sha2::Sha256::digest(bytes);
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// The member that should own `shard` among `members`: the highest hash of (member, shard).
/// Removing a member moves only its shards; adding one takes only the shards it now wins.
pub fn preferred_owner(shard: u32, members: &BTreeSet<String>) -> Option<&str> {
    members
        .iter()
        .max_by_key(|m| hash64(format!("{m}/{shard}").as_bytes()))
        .map(String::as_str)
}

/// One replica's view of the shards: keeps its member Lease alive and takes, keeps or gives up
/// shard Leases so that it owns exactly the shards it is the preferred live owner of.
pub struct Coordinator {
    leases: Api<Lease>,
    client: kube::Client,
    namespace: String,
    fleet: String,
    shards: u32,
    duration: Duration,
    me: LockInfo,
    member: LeaseHandle,
}

impl Coordinator {
    /// Replica `replica` (e.g. the pod name, a DNS label) of `fleet`'s `shards` shards.
    pub fn new(
        client: kube::Client,
        namespace: &str,
        fleet: &str,
        replica: &str,
        shards: u32,
        duration: Duration,
    ) -> Result<Self, String> {
        if !crate::is_dns_label(fleet) || fleet.len() > 40 {
            return Err(format!(
                "fleet {fleet:?}: expected a lowercase DNS label of at most 40 characters"
            ));
        }
        if shards == 0 || shards > 4096 {
            return Err(format!("shards: {shards} is not between 1 and 4096"));
        }
        if !crate::is_dns_label(replica) {
            return Err(format!(
                "replica {replica:?}: expected a lowercase DNS label (the pod name)"
            ));
        }
        let me = LockInfo {
            id: replica.into(),
            ..LockInfo::for_this_process(&format!("serve shard of {fleet}"))
        };
        let member = LeaseHandle::new(
            client.clone(),
            namespace,
            &format!("fleetform-member-{fleet}-{replica}"),
            duration,
        )
        .with_labels(labels(fleet, "member"));
        Ok(Self {
            leases: Api::namespaced(client.clone(), namespace),
            client,
            namespace: namespace.into(),
            fleet: fleet.into(),
            shards,
            duration,
            me,
            member,
        })
    }

    fn shard_lease(&self, shard: u32) -> LeaseHandle {
        LeaseHandle::new(
            self.client.clone(),
            &self.namespace,
            &format!("fleetform-shard-{}-{shard}", self.fleet),
            self.duration,
        )
        .with_labels(labels(&self.fleet, "shard"))
    }

    /// The live members (their member Lease renewed within its duration), this one included.
    pub async fn members(&self) -> Result<BTreeSet<String>, StateError> {
        let selector = format!("{FLEET_LABEL}={},{ROLE_LABEL}=member", self.fleet);
        let list = self
            .leases
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|e| StateError::Remote {
                object: format!("{}/leases?labelSelector={selector}", self.namespace),
                message: "cannot list the replicas' member leases".into(),
                source: Some(Box::new(e)),
            })?;
        Ok(list
            .items
            .into_iter()
            .filter_map(|l| {
                let spec = l.spec?;
                (!expired(&spec)).then_some(spec.holder_identity?)
            })
            .collect())
    }

    /// One round, to run about every third of the lease duration: renews membership, gives up
    /// shards another live replica should own, takes (or renews) the ones this replica should.
    /// Returns the shards this replica owns now. A shard whose preferred owner is this replica
    /// but whose Lease a live other still holds is not owned until that one gives it up or its
    /// Lease runs out: a shard never has two owners.
    pub async fn tick(&self) -> Result<BTreeSet<u32>, StateError> {
        self.member.acquire(&self.me).await?;
        let members = self.members().await?;
        let mut owned = BTreeSet::new();
        for shard in 0..self.shards {
            let lease = self.shard_lease(shard);
            if preferred_owner(shard, &members) == Some(self.me.id.as_str()) {
                match lease.acquire(&self.me).await {
                    Ok(_) => {
                        owned.insert(shard);
                    }
                    Err(StateError::Locked { .. }) => {}
                    Err(e) => return Err(e),
                }
            } else {
                lease.release(Some(&self.me.id), false).await?;
            }
        }
        Ok(owned)
    }

    /// Gives up every shard and the membership (on shutdown), so others take over at once
    /// instead of after the lease duration.
    pub async fn leave(&self) -> Result<(), StateError> {
        for shard in 0..self.shards {
            self.shard_lease(shard)
                .release(Some(&self.me.id), false)
                .await?;
        }
        self.member.release(Some(&self.me.id), false).await
    }
}

/// The location of shard `shard`'s state for the fleet at `location`.
pub fn shard_location(location: &Location, shard: Shard) -> Location {
    Location {
        namespace: location.namespace.clone(),
        fleet: format!("{}-shard-{shard}", location.fleet),
    }
}

/// The shards of one `serve` replica: a [`Coordinator`] ticking in the background (every third
/// of the lease duration) and one [`KubeStateStore`] per shard. Dropping it stops the ticks
/// (the Leases then run out); [`Shards::leave`] gives them up at once.
pub struct ShardSet {
    count: u32,
    location: Location,
    client: kube::Client,
    options: Options,
    owned: Arc<Mutex<BTreeSet<u32>>>,
    changed: Arc<Notify>,
    stores: Mutex<BTreeMap<Shard, Arc<KubeStateStore>>>,
    coordinator: Arc<Coordinator>,
    ticker: tokio::task::JoinHandle<()>,
}

impl ShardSet {
    /// Joins the replicas of the fleet at `location` as `replica`, with `count` tenant shards,
    /// and takes the shards this replica should own (one round before returning).
    /// `options.lease_duration` is the duration of the shard Leases and of the shards' state locks.
    pub async fn start(
        client: kube::Client,
        location: &Location,
        replica: &str,
        count: u32,
        options: Options,
    ) -> Result<Self, StateError> {
        let invalid = |message: String| StateError::Remote {
            object: format!("{location}"),
            message,
            source: None,
        };
        if count == 0 || count > 1024 {
            return Err(invalid(format!(
                "shards: {count} is not between 1 and 1024"
            )));
        }
        let coordinator = Arc::new(
            Coordinator::new(
                client.clone(),
                &location.namespace,
                &location.fleet,
                replica,
                count + 1,
                options.lease_duration,
            )
            .map_err(invalid)?,
        );
        let owned = Arc::new(Mutex::new(coordinator.tick().await?));
        let changed = Arc::new(Notify::new());
        let ticker = tokio::spawn(tick(
            coordinator.clone(),
            owned.clone(),
            changed.clone(),
            options.lease_duration,
        ));
        Ok(Self {
            count,
            location: location.clone(),
            client,
            options,
            owned,
            changed,
            stores: Mutex::new(BTreeMap::new()),
            coordinator,
            ticker,
        })
    }
}

/// Renews membership and shard Leases every third of `duration`. A replica that cannot reach
/// the API server for a whole lease duration assumes it owns nothing (others may have taken
/// its shards); its shards' state locks and fencing keep it from writing meanwhile anyway.
async fn tick(
    coordinator: Arc<Coordinator>,
    owned: Arc<Mutex<BTreeSet<u32>>>,
    changed: Arc<Notify>,
    duration: Duration,
) {
    let mut last_ok = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(duration / 3).await;
        let now = match coordinator.tick().await {
            Ok(now) => {
                last_ok = tokio::time::Instant::now();
                now
            }
            Err(e) => {
                tracing::warn!(error = %e, "shard coordination round failed");
                if last_ok.elapsed() < duration {
                    continue;
                }
                BTreeSet::new()
            }
        };
        let mut current = owned
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if *current != now {
            tracing::info!(before = ?*current, now = ?now, "owned shards changed");
            *current = now;
            changed.notify_one();
        }
    }
}

impl Drop for ShardSet {
    fn drop(&mut self) {
        self.ticker.abort();
    }
}

#[async_trait]
impl Shards for ShardSet {
    fn count(&self) -> u32 {
        self.count
    }

    fn shard_of(&self, tenant: &str) -> u32 {
        shard_of(tenant, self.count)
    }

    fn owned(&self) -> BTreeSet<Shard> {
        let owned = self
            .owned
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        owned
            .iter()
            .map(|k| {
                if *k == self.count {
                    Shard::Fleet
                } else {
                    Shard::Tenants(*k)
                }
            })
            .collect()
    }

    fn store(&self, shard: Shard) -> Arc<dyn StateStore> {
        let mut stores = self
            .stores
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        stores
            .entry(shard)
            .or_insert_with(|| {
                Arc::new(KubeStateStore::new(
                    self.client.clone(),
                    shard_location(&self.location, shard),
                    self.options.clone(),
                ))
            })
            .clone()
    }

    fn changed(&self) -> Arc<Notify> {
        self.changed.clone()
    }

    async fn leave(&self) {
        self.ticker.abort();
        if let Err(e) = self.coordinator.leave().await {
            tracing::warn!(error = %e, "could not give up the shards; others take them once the leases run out");
        }
        self.owned
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
    }
}

fn labels(fleet: &str, role: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/managed-by".into(), "fleetform".into()),
        (FLEET_LABEL.into(), fleet.into()),
        (ROLE_LABEL.into(), role.into()),
    ])
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn members(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn removing_a_replica_moves_only_its_shards_and_adding_one_takes_only_what_it_wins() {
        let three = members(&["serve-0", "serve-1", "serve-2"]);
        let two = members(&["serve-0", "serve-1"]);
        let mut moved = 0;
        for shard in 0..64 {
            let before = preferred_owner(shard, &three).unwrap();
            let after = preferred_owner(shard, &two).unwrap();
            if before != "serve-2" {
                assert_eq!(before, after, "shard {shard} moved without need");
            } else {
                moved += 1;
            }
        }
        // Each replica should get a fair share of 64 shards (not all, not none).
        assert!((10..=35).contains(&moved), "serve-2 owned {moved} of 64");
        let four = members(&["serve-0", "serve-1", "serve-2", "serve-3"]);
        for shard in 0..64 {
            let before = preferred_owner(shard, &three).unwrap();
            let after = preferred_owner(shard, &four).unwrap();
            assert!(
                after == before || after == "serve-3",
                "shard {shard}: {before} -> {after}"
            );
        }
    }

    #[tokio::test]
    async fn a_fleet_or_replica_name_that_cannot_name_a_lease_is_refused() {
        let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
        let client = kube::Client::try_from(config).unwrap();
        let new = |fleet: &str, replica: &str, shards: u32| {
            Coordinator::new(
                client.clone(),
                "ns",
                fleet,
                replica,
                shards,
                Duration::from_secs(5),
            )
            .err()
        };
        assert_eq!(new("prod", "serve-0", 12), None);
        assert!(
            new("Prod", "serve-0", 12)
                .unwrap()
                .contains("fleet \"Prod\"")
        );
        assert!(
            new("prod", "serve_0", 12)
                .unwrap()
                .contains("replica \"serve_0\"")
        );
        assert!(new("prod", "serve-0", 0).unwrap().contains("shards: 0"));
    }

    #[test]
    fn a_tenant_always_lands_on_the_same_shard() {
        // Pinned: sha256("acme")'s first 8 bytes, big-endian, modulo 32 (computed with Python's
        // hashlib); a change would move every tenant on upgrade.
        assert_eq!(shard_of("acme", 32), 0);
        assert_eq!(
            shard_of("globex", 32) as u64,
            u64::from_be_bytes(sha2::Sha256::digest(b"globex")[..8].try_into().unwrap()) % 32
        );
        let spread: BTreeSet<u32> = (0..200).map(|t| shard_of(&format!("t{t}"), 8)).collect();
        assert_eq!(spread.len(), 8);
    }
}
