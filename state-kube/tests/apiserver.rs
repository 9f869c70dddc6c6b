//! The Kubernetes state store against the real kube-apiserver of the tests
//! (`tests/peers/kube.sh start`, then `source target/peers/kube.env`). Skipped when it is not
//! running, a failure when FLEETFORM_REQUIRE_PEERS=1.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use fleetform_engine::resource::ResourceId;
use fleetform_engine::state::{
    InventoryEntry, JournalEntry, LocalStateStore, LockInfo, State, StateError, StateStore,
};
use fleetform_state_kube::{KubeStateStore, Location, Options, migrate};

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

/// A fleet name no other test (or earlier run) uses, in the `default` namespace.
fn fleet() -> Location {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    Location {
        namespace: "default".into(),
        fleet: format!(
            "t{}-{nanos:x}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ),
    }
}

fn store(client: &kube::Client, at: &Location, options: Options) -> KubeStateStore {
    KubeStateStore::new(client.clone(), at.clone(), options)
}

fn entry(n: usize) -> InventoryEntry {
    InventoryEntry {
        spec: Some(
            serde_json::json!({"name": format!("node-{n}"), "gpus": n % 8, "labels": {"zone": "a"}}),
        ),
        spec_digest: Some(format!("sha256:{n:064x}")),
        sensitive: vec![],
        deps: vec![],
        prevent_destroy: n.is_multiple_of(7),
        pending: false,
        revision: Some("0123abcd".into()),
    }
}

fn applied(n: usize) -> JournalEntry {
    JournalEntry::Applied {
        id: ResourceId::new("test", format!("r{n}")),
        entry: entry(n),
    }
}

#[tokio::test]
async fn two_stores_writing_at_once_exactly_one_wins_and_the_loser_overwrites_nothing() {
    let Some(c) = client().await else { return };
    let at = fleet();
    let a = store(&c, &at, Options::default());
    let b = store(&c, &at, Options::default());
    // Both start from the same (created) head.
    a.record(&applied(0)).await.unwrap();
    a.load().await.unwrap();
    b.load().await.unwrap();
    let (one, two) = (applied(1), applied(2));
    let (ra, rb) = tokio::join!(a.record(&one), b.record(&two));
    assert_eq!(ra.is_ok() as u8 + rb.is_ok() as u8, 1, "{ra:?} {rb:?}");
    let (winner, loser) = if ra.is_ok() { (1, rb) } else { (2, ra) };
    let err = loser.unwrap_err();
    assert!(matches!(err, StateError::Conflict { .. }), "{err}");
    assert!(err.to_string().contains("nothing was written"), "{err}");
    // The loser keeps failing until it loads again: it never overwrites the winner.
    let retried = if winner == 1 {
        b.record(&applied(3)).await
    } else {
        a.record(&applied(3)).await
    };
    assert!(retried.is_err());
    let state = store(&c, &at, Options::default()).load().await.unwrap();
    let ids: Vec<String> = state
        .resources
        .keys()
        .map(|k| k.as_str().to_string())
        .collect();
    assert_eq!(ids, vec!["test:r0".to_string(), format!("test:r{winner}")]);
}

#[tokio::test]
async fn a_second_lock_names_the_live_holder_and_force_unlock_needs_its_id() {
    let Some(c) = client().await else { return };
    let at = fleet();
    let a = store(&c, &at, Options::default());
    let b = store(&c, &at, Options::default());
    let ia = LockInfo::for_this_process("apply");
    a.lock(&ia).await.unwrap();
    let err = b
        .lock(&LockInfo::for_this_process("serve"))
        .await
        .unwrap_err();
    match &err {
        StateError::Locked { holder } => assert_eq!(**holder, ia),
        other => panic!("{other}"),
    }
    assert!(err.to_string().contains(&ia.id), "{err}");
    // Locking again renews: the holder keeps it.
    a.lock(&ia).await.unwrap();
    assert!(matches!(
        b.force_unlock("nope").await,
        Err(StateError::LockMismatch { .. })
    ));
    b.force_unlock(&ia.id).await.unwrap();
    let ib = LockInfo::for_this_process("serve");
    b.lock(&ib).await.unwrap();
    b.unlock(&ib).await.unwrap();
    a.unlock(&ia).await.unwrap();
}

#[tokio::test]
async fn a_leader_paused_past_its_lease_writes_nothing_after_another_took_over() {
    let Some(c) = client().await else { return };
    let at = fleet();
    // No background renewal: the "paused" leader simply stops renewing, as under SIGSTOP.
    let short = Options {
        lease_duration: Duration::from_secs(1),
        renew: false,
        ..Options::default()
    };
    let a = store(&c, &at, short.clone());
    let b = store(&c, &at, short);
    let ia = LockInfo::for_this_process("serve");
    a.lock(&ia).await.unwrap();
    a.record(&applied(1)).await.unwrap();
    // While A's lease is live, B is refused.
    assert!(matches!(
        b.lock(&LockInfo::for_this_process("serve")).await,
        Err(StateError::Locked { .. })
    ));
    tokio::time::sleep(Duration::from_millis(2300)).await;
    let ib = LockInfo::for_this_process("serve");
    b.lock(&ib).await.unwrap();
    b.record(&applied(2)).await.unwrap();

    // A resumes and tries every kind of write, also after re-reading the state.
    let mut accepted = 0;
    accepted += a.record(&applied(10)).await.is_ok() as u32;
    accepted += a.record_all(&[applied(11), applied(12)]).await.is_ok() as u32;
    let seen = a.load().await.unwrap();
    accepted += a.record(&applied(13)).await.is_ok() as u32;
    accepted += a.compact(&seen).await.is_ok() as u32;
    let err = a.record(&applied(14)).await.unwrap_err();
    assert!(
        err.to_string().contains(&ib.id),
        "the refusal names the new holder: {err}"
    );
    assert_eq!(accepted, 0, "stale-token writes accepted");
    // A asking for the lock again is told B has it.
    match a.lock(&ia).await {
        Err(StateError::Locked { holder }) => assert_eq!(holder.id, ib.id),
        other => panic!("{other:?}"),
    }
    let state = b.load().await.unwrap();
    let ids: Vec<&str> = state.resources.keys().map(ResourceId::as_str).collect();
    assert_eq!(ids, vec!["test:r1", "test:r2"]);
}

#[tokio::test]
async fn twenty_thousand_entries_round_trip_across_chunks_and_journal_segments() {
    let Some(c) = client().await else { return };
    let at = fleet();
    let s = store(&c, &at, Options::default());
    let mut state = State {
        last_applied_revision: Some("feedface".into()),
        last_applied_at: Some("2026-12-02T12:00:00Z".into()),
        ..State::default()
    };
    for n in 0..20_000 {
        state
            .resources
            .insert(ResourceId::new("test", format!("r{n}")), entry(n));
    }
    let t = Instant::now();
    s.compact(&state).await.unwrap();
    let compact_s = t.elapsed().as_secs_f64();
    let objects = s.objects().await.unwrap();
    assert!(objects.len() >= 3, "a head and several chunks: {objects:?}");
    let fresh = store(&c, &at, Options::default());
    let t = Instant::now();
    assert_eq!(fresh.load().await.unwrap(), state);
    let load_s = t.elapsed().as_secs_f64();

    // Journal steps past the head's budget move to segments and replay in order.
    let mut expected = state.clone();
    for batch in 0..10 {
        let steps: Vec<JournalEntry> = (0..100)
            .map(|i| {
                let n = 20_000 + batch * 100 + i;
                if i % 10 == 0 {
                    JournalEntry::Removed {
                        id: ResourceId::new("test", format!("r{}", batch * 100 + i)),
                    }
                } else {
                    applied(n)
                }
            })
            .collect();
        for step in &steps {
            expected.replay(step);
        }
        fresh.record_all(&steps).await.unwrap();
    }
    // One step at a time, as an apply records each resource's intent.
    let t = Instant::now();
    for n in 0..200 {
        let step = applied(30_000 + n);
        expected.replay(&step);
        fresh.record(&step).await.unwrap();
    }
    let record_ms = t.elapsed().as_secs_f64() * 1000.0 / 200.0;
    let segmented = s.objects().await.unwrap();
    assert!(segmented.iter().any(|n| n.contains("-j")), "{segmented:?}");
    assert_eq!(s.load().await.unwrap(), expected);

    // Compaction replaces every chunk and segment and deletes the old ones.
    fresh.compact(&expected).await.unwrap();
    let after = s.objects().await.unwrap();
    assert!(after.iter().all(|n| !n.contains("-j")), "{after:?}");
    let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(c.clone(), "default");
    for old in segmented.iter().skip(1) {
        assert!(
            secrets.get_opt(old).await.unwrap().is_none(),
            "{old} was not deleted"
        );
    }
    assert_eq!(s.load().await.unwrap(), expected);
    eprintln!(
        "20000 entries: compact {compact_s:.2} s, load {load_s:.2} s, {} objects; one record {record_ms:.1} ms",
        objects.len()
    );
}

#[tokio::test]
async fn migrate_local_to_kubernetes_and_back_keeps_the_inventory_byte_identical() {
    let Some(c) = client().await else { return };
    let at = fleet();
    let src = tempfile::tempdir().unwrap();
    let back = tempfile::tempdir().unwrap();
    let local = LocalStateStore::open(src.path()).unwrap();
    let mut state = State::default();
    for n in 0..500 {
        state
            .resources
            .insert(ResourceId::new("test", format!("r{n}")), entry(n));
    }
    state.last_applied_revision = Some("abc".into());
    local.compact(&state).await.unwrap();
    // Steps still in the journal move too.
    local.record(&applied(9_999)).await.unwrap();
    local
        .record(&JournalEntry::Intent {
            id: ResourceId::new("test", "r3"),
            entry: entry(33),
        })
        .await
        .unwrap();

    let info = LockInfo::for_this_process("state migrate");
    let kube = store(&c, &at, Options::default());
    assert_eq!(migrate(&local, &kube, &info).await.unwrap(), 501);
    let returned = LocalStateStore::open(back.path()).unwrap();
    assert_eq!(migrate(&kube, &returned, &info).await.unwrap(), 501);
    // Migrating onto a store that manages resources would drop them: refused.
    let err = migrate(&local, &kube, &info).await.unwrap_err();
    assert!(err.to_string().contains("already manages 501"), "{err}");

    let loaded = local.load().await.unwrap();
    local.compact(&loaded).await.unwrap();
    let original = std::fs::read(src.path().join("state.json")).unwrap();
    let round_tripped = std::fs::read(back.path().join("state.json")).unwrap();
    assert!(
        original == round_tripped,
        "state.json differs after local -> kubernetes -> local"
    );
    assert!(!back.path().join("lock.json").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn steps_recorded_at_once_share_head_writes_and_all_are_durable() {
    let Some(c) = client().await else { return };
    let at = fleet();
    let s = std::sync::Arc::new(store(&c, &at, Options::default()));
    let t = Instant::now();
    let writes = (0..200).map(|n| {
        let s = s.clone();
        tokio::spawn(async move { s.record(&applied(n)).await })
    });
    for w in futures::future::join_all(writes).await {
        w.unwrap().unwrap();
    }
    let elapsed = t.elapsed();
    let head_writes = s.journal_writes();
    assert!(
        head_writes < 100,
        "{head_writes} head writes for 200 concurrent steps"
    );
    let state = store(&c, &at, Options::default()).load().await.unwrap();
    assert_eq!(state.resources.len(), 200);
    eprintln!("200 concurrent steps: {elapsed:?}, {head_writes} head writes");
}

#[tokio::test]
async fn a_compaction_deletes_parts_no_head_names_once_they_are_old_enough_and_nothing_else() {
    let Some(c) = client().await else { return };
    let (at, other) = (fleet(), fleet());
    let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(c.clone(), "default");
    // Parts a writer left behind (created, never named by a head), and one of another fleet.
    let leftover = |fleet: &str, name: String| -> k8s_openapi::api::core::v1::Secret {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": {
                "fleetform.dev/fleet": fleet, "fleetform.dev/state-part": "chunk"}},
            "type": "fleetform.dev/state",
            "data": {"resources.json": "e30="}
        }))
        .unwrap()
    };
    let orphan = format!("fleetform-state-{}-dead-c0", at.fleet);
    let foreign = format!("fleetform-state-{}-dead-c0", other.fleet);
    let pp = kube::api::PostParams::default();
    secrets
        .create(&pp, &leftover(&at.fleet, orphan.clone()))
        .await
        .unwrap();
    secrets
        .create(&pp, &leftover(&other.fleet, foreign.clone()))
        .await
        .unwrap();

    let mut state = State::default();
    for n in 0..50 {
        state
            .resources
            .insert(ResourceId::new("test", format!("r{n}")), entry(n));
    }
    // Young: kept (a writer may be about to name it).
    store(&c, &at, Options::default())
        .compact(&state)
        .await
        .unwrap();
    assert!(secrets.get_opt(&orphan).await.unwrap().is_some());
    // Old enough: deleted; the state and the other fleet's object are untouched.
    let eager = Options {
        orphan_age: Duration::ZERO,
        ..Options::default()
    };
    store(&c, &at, eager.clone()).compact(&state).await.unwrap();
    assert!(secrets.get_opt(&orphan).await.unwrap().is_none());
    assert!(secrets.get_opt(&foreign).await.unwrap().is_some());
    assert_eq!(store(&c, &at, eager).load().await.unwrap(), state);
}
