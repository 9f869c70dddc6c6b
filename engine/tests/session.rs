//! The one orchestration path (`session`): what plan, apply, drift and heal promise
//! whoever calls them (the CLI and serve alike), with the in-memory provider.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use fleetform_engine::apply::ApplyOptions;
use fleetform_engine::breakfix::{Finding, FindingKind};
use fleetform_engine::observe::Providers;
use fleetform_engine::plan::PlanOptions;
use fleetform_engine::session::{
    ApplyRun, BoxError, HookObservation, ObserveHook, Outcome, Session, SessionError,
};
use fleetform_engine::state::{LocalStateStore, StateError};
use fleetform_engine::testing::MemoryProvider;
use fleetform_engine::{Desired, ResourceId};
use serde_json::json;

fn id(name: &str) -> ResourceId {
    ResourceId::new("test", name)
}

fn res(name: &str, size: u32) -> Desired {
    Desired::new(id(name), json!({"name": name, "size": size}))
}

fn run() -> ApplyRun {
    run_with(tokio::sync::watch::channel(false).1)
}

fn run_with(cancel: tokio::sync::watch::Receiver<bool>) -> ApplyRun {
    ApplyRun {
        options: ApplyOptions {
            base_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(5),
            health_poll: Duration::from_millis(1),
            ..ApplyOptions::default()
        },
        events: None,
        cancel,
    }
}

struct World {
    provider: Arc<MemoryProvider>,
    providers: Providers,
    dir: tempfile::TempDir,
}

impl World {
    fn new() -> Self {
        let provider = Arc::new(MemoryProvider::new());
        Self {
            providers: Providers::new().with(provider.clone()),
            provider,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// A state store on the shared directory: each call is another process's view.
    fn store(&self) -> LocalStateStore {
        LocalStateStore::open(self.dir.path().join("state")).unwrap()
    }

    fn session<'a>(&'a self, store: &'a LocalStateStore, desired: &'a [Desired]) -> Session<'a> {
        Session::new(
            store,
            &self.providers,
            desired,
            PlanOptions::default(),
            Some("rev1".into()),
        )
    }

    /// Applies `desired` through a session, as `fleetform apply` does.
    async fn apply(&self, desired: &[Desired]) -> Outcome {
        let store = self.store();
        let session = self.session(&store, desired);
        let locked = session.lock("apply").await.unwrap();
        let planned = locked.plan().await.unwrap();
        let done = locked.apply(planned, run()).await.unwrap();
        locked.release().await.unwrap();
        done.outcome
    }

    fn size_of(&self, name: &str) -> serde_json::Value {
        self.provider.world().objects[&id(name)]["size"].clone()
    }
}

#[tokio::test]
async fn an_apply_plans_under_the_lock_and_ends_clean_then_a_plan_finds_nothing() {
    let w = World::new();
    let desired = vec![res("a", 1), res("b", 1)];
    assert_eq!(w.apply(&desired).await, Outcome::Clean);
    let store = w.store();
    let plan = w.session(&store, &desired).plan().await.unwrap();
    assert_eq!(Outcome::of_plan(plan.plan()), Outcome::Clean);
    let changed = vec![res("a", 2), res("b", 1)];
    let plan = w.session(&store, &changed).plan().await.unwrap();
    assert_eq!(Outcome::of_plan(plan.plan()), Outcome::Changes);
}

#[tokio::test]
async fn a_second_session_cannot_lock_while_the_first_plans_and_applies() {
    let w = World::new();
    let desired = vec![res("a", 1)];
    let (first, second) = (w.store(), w.store());
    let s1 = w.session(&first, &desired);
    let locked = s1.lock("apply").await.unwrap();
    let planned = locked.plan().await.unwrap();
    let s2 = w.session(&second, &desired);
    match s2.lock("apply").await {
        Err(SessionError::State(StateError::Locked { .. })) => {}
        Err(e) => panic!("expected the first session's lock, got {e}"),
        Ok(_) => panic!("two sessions held the lock at once"),
    }
    assert_eq!(
        locked.apply(planned, run()).await.unwrap().outcome,
        Outcome::Clean
    );
    locked.release().await.unwrap();
    assert!(s2.lock("apply").await.is_ok());
}

#[tokio::test]
async fn a_heal_refuses_a_drift_that_moved_after_it_was_found() {
    let w = World::new();
    let desired = vec![res("a", 1), res("b", 1)];
    w.apply(&desired).await;
    w.provider.tamper(&id("a"), |o| o["size"] = json!(5));
    let store = w.store();
    let session = w.session(&store, &desired);
    let found = session.drift().await.unwrap();
    assert_eq!(Outcome::of_plan(found.plan()), Outcome::Changes);
    // Someone changes the object again between the report and the heal.
    w.provider.tamper(&id("a"), |o| o["size"] = json!(7));
    let attempts = w.provider.world().attempts.get(&id("a")).copied();
    match session.heal("drift --remediate", found.plan(), run()).await {
        Err(SessionError::Moved { .. }) => {}
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(w.size_of("a"), json!(7), "the moved object was overwritten");
    assert_eq!(w.provider.world().attempts.get(&id("a")).copied(), attempts);
    // The lock was released: a heal of the drift as it is now goes through.
    let found = session.drift().await.unwrap();
    let done = session.heal("drift --remediate", found.plan(), run()).await;
    assert_eq!(done.unwrap().outcome, Outcome::Clean);
    assert_eq!(w.size_of("a"), json!(1));
}

#[tokio::test]
async fn a_heal_refuses_when_another_session_healed_first_and_applies_nothing_twice() {
    let w = World::new();
    let desired = vec![res("a", 1)];
    w.apply(&desired).await;
    w.provider.tamper(&id("a"), |o| o["size"] = json!(5));
    let (first, second) = (w.store(), w.store());
    let s1 = w.session(&first, &desired);
    let s2 = w.session(&second, &desired);
    let found1 = s1.drift().await.unwrap();
    let found2 = s2.drift().await.unwrap();
    let healed = s2.heal("serve heal", found2.plan(), run()).await.unwrap();
    assert_eq!(healed.outcome, Outcome::Clean);
    let attempts = w.provider.world().attempts[&id("a")];
    assert!(matches!(
        s1.heal("drift --remediate", found1.plan(), run()).await,
        Err(SessionError::Moved { .. })
    ));
    assert_eq!(w.provider.world().attempts[&id("a")], attempts);
}

#[tokio::test]
async fn a_heal_fails_while_another_session_holds_the_lock_and_goes_through_after() {
    let w = World::new();
    let desired = vec![res("a", 1)];
    w.apply(&desired).await;
    w.provider.tamper(&id("a"), |o| o["size"] = json!(5));
    let (first, second) = (w.store(), w.store());
    let holder = w.session(&second, &desired);
    let held = holder.lock("apply").await.unwrap();
    let session = w.session(&first, &desired);
    let found = session.drift().await.unwrap();
    match session.heal("serve heal", found.plan(), run()).await {
        Err(SessionError::State(StateError::Locked { .. })) => {}
        other => panic!("expected the holder's lock, got {other:?}"),
    }
    assert_eq!(w.size_of("a"), json!(5));
    held.release().await.unwrap();
    let done = session
        .heal("serve heal", found.plan(), run())
        .await
        .unwrap();
    assert_eq!(done.outcome, Outcome::Clean);
    assert_eq!(w.size_of("a"), json!(1));
}

#[tokio::test]
async fn an_apply_cancelled_before_it_starts_is_interrupted_and_exits_130() {
    let w = World::new();
    let desired = vec![res("a", 1)];
    let store = w.store();
    let session = w.session(&store, &desired);
    let locked = session.lock("apply").await.unwrap();
    let planned = locked.plan().await.unwrap();
    let (tx, rx) = tokio::sync::watch::channel(false);
    tx.send(true).unwrap();
    let done = locked.apply(planned, run_with(rx)).await.unwrap();
    locked.release().await.unwrap();
    assert_eq!(done.outcome, Outcome::Interrupted);
    assert_eq!(done.outcome.exit_code(), 130);
    assert!(w.provider.world().objects.is_empty());
}

/// A hook standing in for the GPU inventory: counts its calls, reports one finding or fails.
struct Hook {
    calls: AtomicUsize,
    fail: bool,
}

#[async_trait]
impl ObserveHook for Hook {
    async fn observe(&self) -> Result<HookObservation, BoxError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.fail {
            return Err(Box::new(std::io::Error::other(
                "ConfigMap gpu-inventory/n1: timed out",
            )));
        }
        Ok(HookObservation {
            breakfix: None,
            findings: vec![Finding {
                node: "n1".into(),
                kind: FindingKind::GpuDrift,
                pool: Some("p".into()),
                message: "n1 has 4 GPUs, its pool expects 8".into(),
                suggestion: None,
                origin: None,
            }],
        })
    }
}

#[tokio::test]
async fn observe_hooks_run_before_every_plan_and_their_findings_reach_plan_and_drift() {
    let w = World::new();
    let desired = vec![res("a", 1)];
    let store = w.store();
    let hook = Arc::new(Hook {
        calls: AtomicUsize::new(0),
        fail: false,
    });
    let session = w
        .session(&store, &desired)
        .with_hooks([hook.clone() as Arc<dyn ObserveHook>]);
    let plan = session.plan().await.unwrap();
    assert_eq!(plan.plan().findings.len(), 1);
    let locked = session.lock("apply").await.unwrap();
    let planned = locked.plan().await.unwrap();
    assert_eq!(planned.plan().findings.len(), 1);
    locked.apply(planned, run()).await.unwrap();
    locked.release().await.unwrap();
    let found = session.drift().await.unwrap();
    assert_eq!(found.plan().findings[0].kind, FindingKind::GpuDrift);
    assert_eq!(hook.calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_failing_hook_stops_the_plan_and_keeps_its_cause() {
    let w = World::new();
    let desired = vec![res("a", 1)];
    let store = w.store();
    let hook = Arc::new(Hook {
        calls: AtomicUsize::new(0),
        fail: true,
    });
    let session = w
        .session(&store, &desired)
        .with_hooks([hook as Arc<dyn ObserveHook>]);
    let err = session.plan().await.unwrap_err();
    assert!(matches!(err, SessionError::Hook(_)));
    let cause = std::error::Error::source(&err).unwrap().to_string();
    assert!(cause.contains("timed out"), "{cause}");
}

#[test]
fn the_exit_status_is_decided_by_the_outcome() {
    use fleetform_engine::session::Incomplete;
    assert_eq!(Outcome::Clean.exit_code(), 0);
    assert_eq!(Outcome::Changes.exit_code(), 2);
    assert_eq!(Outcome::Incomplete(Incomplete::Failed).exit_code(), 1);
    assert_eq!(Outcome::Incomplete(Incomplete::Skipped(1)).exit_code(), 1);
    assert_eq!(Outcome::Incomplete(Incomplete::Problems(1)).exit_code(), 1);
    assert_eq!(Outcome::Interrupted.exit_code(), 130);
}
