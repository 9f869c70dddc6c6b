//! Tenant sharding against the real kube-apiserver (tests/peers/kube.sh start; skipped when it
//! is not running, a failure when FLEETFORM_REQUIRE_PEERS=1): 60 tenants over 3 replicas,
//! every tenant owned by exactly one; a replica that stops has its tenants taken over once its
//! leases run out (the lease duration plus one round), and no other tenant moves.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use fleetform_state_kube::shard::{Coordinator, shard_of};

async fn client() -> Option<kube::Client> {
    let path = match std::env::var_os("FLEETFORM_TEST_KUBECONFIG") {
        Some(p) => std::path::PathBuf::from(p),
        None if std::env::var("FLEETFORM_REQUIRE_PEERS").as_deref() == Ok("1") => {
            panic!(
                "FLEETFORM_TEST_KUBECONFIG is not set: run tests/peers/kube.sh start and source target/peers/kube.env"
            )
        }
        None => {
            eprintln!("skipped: kube not running (tests/peers/kube.sh start)");
            return None;
        }
    };
    Some(
        fleetform_state_kube::client(Some(&path), None)
            .await
            .unwrap(),
    )
}

const SHARDS: u32 = 12;

/// Which replica owns each tenant; panics when a tenant has two owners.
fn owners(owned: &BTreeMap<&str, BTreeSet<u32>>) -> BTreeMap<String, String> {
    let mut by_tenant = BTreeMap::new();
    for t in 0..60 {
        let tenant = format!("tenant-{t}");
        let shard = shard_of(&tenant, SHARDS);
        let holders: Vec<&str> = owned
            .iter()
            .filter(|(_, s)| s.contains(&shard))
            .map(|(r, _)| *r)
            .collect();
        assert!(
            holders.len() <= 1,
            "{tenant} (shard {shard}) owned by {holders:?}"
        );
        if let Some(h) = holders.first() {
            by_tenant.insert(tenant, h.to_string());
        }
    }
    by_tenant
}

async fn round(replicas: &[(&'static str, &Coordinator)]) -> BTreeMap<&'static str, BTreeSet<u32>> {
    let mut owned = BTreeMap::new();
    for (name, c) in replicas {
        owned.insert(*name, c.tick().await.unwrap());
    }
    owned
}

#[tokio::test]
async fn sixty_tenants_over_three_replicas_each_owned_once_and_a_stopped_replica_is_replaced_once_its_leases_run_out()
 {
    let Some(c) = client().await else { return };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let fleet = format!("sh{}-{nanos:x}", std::process::id());
    let lease = Duration::from_secs(2);
    let make = |r: &str| Coordinator::new(c.clone(), "default", &fleet, r, SHARDS, lease).unwrap();
    let (a, b, z) = (make("serve-0"), make("serve-1"), make("serve-2"));
    let all = [("serve-0", &a), ("serve-1", &b), ("serve-2", &z)];

    // The first rounds only announce members; by the third every shard has its owner.
    let mut owned = BTreeMap::new();
    for _ in 0..3 {
        owned = round(&all).await;
        owners(&owned);
    }
    let before = owners(&owned);
    assert_eq!(before.len(), 60, "every tenant has an owner: {owned:?}");
    for (r, shards) in &owned {
        assert!(!shards.is_empty(), "{r} owns nothing: {owned:?}");
    }

    // serve-2 stops (killed: it neither renews nor releases).
    let started = Instant::now();
    let survivors = [("serve-0", &a), ("serve-1", &b)];
    let after = loop {
        let owned = round(&survivors).await;
        let now = owners(&owned);
        if now.len() == 60 {
            break now;
        }
        assert!(
            started.elapsed() < lease * 3,
            "not taken over after {:?}: {owned:?}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let takeover = started.elapsed();
    assert!(
        takeover <= lease + Duration::from_secs(2),
        "took {takeover:?}"
    );
    // Only serve-2's tenants moved.
    for (tenant, owner) in &before {
        if owner != "serve-2" {
            assert_eq!(&after[tenant], owner, "{tenant} moved without need");
        }
    }
    eprintln!("shard takeover after a replica stopped: {takeover:?} (lease {lease:?})");
    a.leave().await.unwrap();
    b.leave().await.unwrap();
}
