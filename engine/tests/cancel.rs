//! A cancel (SIGTERM to serve, Ctrl-C to apply) reaches every wait of an apply: a retry
//! delay, a health wait, a drain and a rollout budget wait each return at once instead of
//! running to their own deadline (minutes). In paused tokio time, so a wait that ignored the
//! cancel would show as minutes of virtual time without the test taking them.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use fleetform_engine::apply::{ApplyEvent, ApplyOptions, ApplyReport, Outcome};
use fleetform_engine::observe::Providers;
use fleetform_engine::plan::PlanOptions;
use fleetform_engine::reconcile::{ObserveOptions, make_plan, run_apply};
use fleetform_engine::state::{LocalStateStore, StateStore};
use fleetform_engine::testing::{MemoryProvider, Script};
use fleetform_engine::{Desired, ResourceId, RolloutGroup};
use serde_json::json;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// How long after the cancel an apply may take to return: the waits it cuts are minutes.
const PROMPT: Duration = Duration::from_secs(2);

fn id(name: &str) -> ResourceId {
    ResourceId::new("test", name)
}

/// Waits of minutes, as the CLI's defaults are.
fn slow() -> ApplyOptions {
    ApplyOptions {
        base_backoff: Duration::from_secs(60),
        max_backoff: Duration::from_secs(300),
        health_poll: Duration::from_secs(1),
        health_timeout: Duration::from_secs(600),
        drain_timeout: Duration::from_secs(900),
        budget_wait: Duration::from_secs(600),
        ..ApplyOptions::default()
    }
}

/// Host `n` of one pool with `max` unavailable: its node and its BIOS (disruptive).
fn member(n: &str, max: u32, bios: &str) -> [Desired; 2] {
    let node = Desired::new(id(&format!("node/{n}")), json!({"name": n}));
    let mut d = Desired::new(id(&format!("bios/{n}")), json!({"bios": {"mode": bios}}));
    d.rollout = Some(RolloutGroup {
        pool: "acme/h100".into(),
        fault_domain: "r01".into(),
        host: n.into(),
        max_unavailable: max,
        max_unavailable_per_fault_domain: max,
    });
    d.maintenance = Some(node.id.clone());
    [node, d]
}

struct Harness {
    provider: Arc<MemoryProvider>,
    providers: Providers,
    store: LocalStateStore,
    _dir: tempfile::TempDir,
}

impl Harness {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let provider = Arc::new(MemoryProvider::new());
        Self {
            providers: Providers::new().with(provider.clone()),
            provider,
            store: LocalStateStore::open(dir.path().join("state")).unwrap(),
            _dir: dir,
        }
    }

    /// Applies `desired`; when `cancel_on` matches an event, cancels right then. Returns the
    /// report, the events and the virtual time from the cancel to the apply's return.
    async fn apply(
        &self,
        desired: &[Desired],
        options: &ApplyOptions,
        cancel_on: impl Fn(&ApplyEvent) -> bool + Send + 'static,
    ) -> (ApplyReport, Vec<ApplyEvent>, Option<Duration>) {
        let mut state = self.store.load().await.unwrap();
        let planned = make_plan(
            desired,
            &state,
            &self.providers,
            &PlanOptions::default(),
            ObserveOptions::default(),
            Some("rev1".into()),
        )
        .await
        .unwrap();
        let (cancel_tx, cancel_rx) = watch::channel(false);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let watcher = tokio::spawn(async move {
            let (mut seen, mut at) = (Vec::new(), None);
            while let Some(e) = rx.recv().await {
                if at.is_none() && cancel_on(&e) {
                    at = Some(Instant::now());
                    cancel_tx.send(true).unwrap();
                }
                seen.push(e);
            }
            (seen, at)
        });
        let report = run_apply(
            &planned,
            desired,
            &mut state,
            &self.store,
            &self.providers,
            options,
            Some(tx),
            cancel_rx,
        )
        .await
        .unwrap();
        let returned = Instant::now();
        let (events, at) = watcher.await.unwrap();
        (report, events, at.map(|at| returned - at))
    }
}

fn error_of<'a>(report: &'a ApplyReport, name: &str) -> &'a str {
    match report.outcomes.get(&id(name)) {
        Some(Outcome::Failed { error }) => error,
        other => panic!("{name}: expected a failure, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_cancel_during_a_health_wait_returns_at_once_not_at_the_health_timeout() {
    let h = Harness::new();
    h.provider.script(
        &id("a"),
        Script {
            slow_health: u32::MAX,
            ..Script::default()
        },
    );
    let desired = vec![Desired::new(id("a"), json!({"size": 1}))];
    let (report, _, after) = h
        .apply(&desired, &slow(), |e| {
            matches!(e, ApplyEvent::WaitingHealthy { .. })
        })
        .await;
    let after = after.expect("the health wait started");
    assert!(after < PROMPT, "returned {after:?} after the cancel");
    assert!(report.interrupted, "{report:?}");
    assert!(
        error_of(&report, "a").contains("interrupted while waiting for it to be healthy"),
        "{report:?}"
    );
    // Not recorded as applied: the next plan observes it again.
    let state = h.store.load().await.unwrap();
    assert!(state.resources.get(&id("a")).is_none_or(|e| e.pending));
}

#[tokio::test(start_paused = true)]
async fn a_cancel_during_a_retry_delay_returns_at_once_and_does_not_retry() {
    let h = Harness::new();
    h.provider.script(
        &id("a"),
        Script {
            transient_failures: 10,
            ..Script::default()
        },
    );
    let desired = vec![Desired::new(id("a"), json!({"size": 1}))];
    let (report, _, after) = h
        .apply(&desired, &slow(), |e| {
            matches!(e, ApplyEvent::Retrying { .. })
        })
        .await;
    let after = after.expect("a retry was scheduled");
    assert!(after < PROMPT, "returned {after:?} after the cancel");
    assert!(report.interrupted);
    assert!(
        error_of(&report, "a").contains("interrupted before retry 2"),
        "{report:?}"
    );
    assert_eq!(h.provider.world().attempts[&id("a")], 1);
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_longer_than_the_max_backoff_waits_the_max_backoff() {
    let h = Harness::new();
    h.provider.script(
        &id("a"),
        Script {
            transient_failures: 1,
            retry_after_ms: Some(3_600_000),
            ..Script::default()
        },
    );
    let options = ApplyOptions {
        max_backoff: Duration::from_secs(5),
        health_poll: Duration::from_millis(10),
        ..slow()
    };
    let desired = vec![Desired::new(id("a"), json!({"size": 1}))];
    let started = Instant::now();
    let (report, events, _) = h.apply(&desired, &options, |_| false).await;
    assert!(report.succeeded(), "{report:?}");
    let delays: Vec<u64> = events
        .iter()
        .filter_map(|e| match e {
            ApplyEvent::Retrying { delay_ms, .. } => Some(*delay_ms),
            _ => None,
        })
        .collect();
    assert_eq!(delays, vec![5_000], "the hour asked for is capped");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn a_cancel_during_a_drain_returns_at_once_and_leaves_the_host_untouched_and_cordoned() {
    let h = Harness::new();
    let old: Vec<Desired> = member("n1", 1, "old").into_iter().collect();
    let (report, _, _) = h.apply(&old, &slow(), |_| false).await;
    assert!(report.succeeded(), "{report:?}");
    h.provider.script(
        &id("node/n1"),
        Script {
            drain_ms: 900_000,
            ..Script::default()
        },
    );
    let attempts = h.provider.world().attempts.get(&id("bios/n1")).copied();
    let new: Vec<Desired> = member("n1", 1, "new").into_iter().collect();
    let (report, _, after) = h
        .apply(&new, &slow(), |e| {
            matches!(e, ApplyEvent::Maintenance { cordoned: true, .. })
        })
        .await;
    let after = after.expect("the node was cordoned before its drain");
    assert!(after < PROMPT, "returned {after:?} after the cancel");
    assert!(report.interrupted);
    let error = error_of(&report, "bios/n1");
    assert!(error.contains("interrupted while draining"), "{error}");
    assert!(error.contains("stays cordoned"), "{error}");
    assert_eq!(
        h.provider.world().attempts.get(&id("bios/n1")).copied(),
        attempts,
        "the BIOS was not touched"
    );
    assert!(h.provider.world().cordoned.contains_key(&id("node/n1")));
}

#[tokio::test(start_paused = true)]
async fn a_cancel_during_a_rollout_budget_wait_returns_at_once_with_the_change_not_started() {
    let h = Harness::new();
    let old: Vec<Desired> = ["n1", "n2"]
        .iter()
        .flat_map(|n| member(n, 1, "old"))
        .collect();
    let (report, _, _) = h.apply(&old, &slow(), |_| false).await;
    assert!(report.succeeded(), "{report:?}");
    // n2 is down: with one unavailable allowed, n1's change waits for it.
    h.provider.script(
        &id("node/n2"),
        Script {
            node_down: Some("NotReady".into()),
            ..Script::default()
        },
    );
    let mut new: Vec<Desired> = member("n1", 1, "new").into_iter().collect();
    new.extend(member("n2", 1, "old"));
    let (report, _, after) = h
        .apply(&new, &slow(), |e| {
            matches!(e, ApplyEvent::WaitingRollout { .. })
        })
        .await;
    let after = after.expect("the change waited for room in its pool");
    assert!(after < PROMPT, "returned {after:?} after the cancel");
    assert!(report.interrupted);
    assert_eq!(
        report.outcomes.get(&id("bios/n1")),
        Some(&Outcome::NotStarted)
    );
}
