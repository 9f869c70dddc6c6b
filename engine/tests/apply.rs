//! Engine behaviour with the in-memory provider: what plan and apply promise.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use fleetform_engine::apply::{ApplyOptions, Outcome};
use fleetform_engine::observe::Providers;
use fleetform_engine::plan::{PlanOptions, Reason};
use fleetform_engine::reconcile::{ObserveOptions, Planned, make_plan, run_apply};
use fleetform_engine::state::{LocalStateStore, State, StateStore};
use fleetform_engine::testing::{MemoryProvider, Script};
use fleetform_engine::{Action, Desired, ResourceId, RolloutGroup};
use serde_json::json;

fn id(name: &str) -> ResourceId {
    ResourceId::new("test", name)
}

fn res(name: &str, deps: &[&str]) -> Desired {
    let mut d = Desired::new(id(name), json!({"name": name, "size": 1}));
    for dep in deps {
        d = d.depends_on(id(dep), format!("{name} needs {dep}"));
    }
    d
}

fn fast() -> ApplyOptions {
    ApplyOptions {
        base_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(5),
        health_poll: Duration::from_millis(1),
        health_timeout: Duration::from_secs(5),
        ..ApplyOptions::default()
    }
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
        let providers = Providers::new().with(provider.clone());
        let store = LocalStateStore::open(dir.path().join("state")).unwrap();
        Self {
            provider,
            providers,
            store,
            _dir: dir,
        }
    }

    async fn plan(&self, desired: &[Desired], options: &PlanOptions) -> Planned {
        let state = self.store.load().await.unwrap();
        make_plan(
            desired,
            &state,
            &self.providers,
            options,
            ObserveOptions::default(),
            Some("rev1".into()),
        )
        .await
        .unwrap()
    }

    async fn apply_with(
        &self,
        desired: &[Desired],
        plan_options: &PlanOptions,
        options: &ApplyOptions,
    ) -> (Planned, fleetform_engine::apply::ApplyReport, State) {
        let planned = self.plan(desired, plan_options).await;
        assert!(
            planned.plan.problems.is_empty(),
            "{:?}",
            planned.plan.problems
        );
        let mut state = self.store.load().await.unwrap();
        let (_tx, rx) = tokio::sync::watch::channel(false);
        let report = run_apply(
            &planned,
            desired,
            &mut state,
            &self.store,
            &self.providers,
            options,
            None,
            rx,
        )
        .await
        .unwrap();
        (planned, report, state)
    }

    async fn apply(&self, desired: &[Desired]) -> fleetform_engine::apply::ApplyReport {
        self.apply_with(desired, &PlanOptions::default(), &fast())
            .await
            .1
    }

    async fn assert_replan_empty(&self, desired: &[Desired]) {
        let p = self.plan(desired, &PlanOptions::default()).await.plan;
        assert!(
            !p.summary.has_changes(),
            "re-plan after apply must be empty: {:?}",
            p.summary
        );
    }
}

#[tokio::test]
async fn apply_then_replan_is_noop() {
    let h = Harness::new();
    let fleet = vec![res("a", &[]), res("b", &["a"]), res("c", &["b"])];
    let p = h.plan(&fleet, &PlanOptions::default()).await.plan;
    assert_eq!(p.summary.create, 3);
    assert_eq!(
        p.changes.iter().map(|c| c.wave).collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
    assert!(h.apply(&fleet).await.succeeded());
    h.assert_replan_empty(&fleet).await;
    let state = h.store.load().await.unwrap();
    assert_eq!(state.resources.len(), 3);
    assert_eq!(state.last_applied_revision.as_deref(), Some("rev1"));
}

#[tokio::test]
async fn a_changed_field_is_planned_as_an_update_of_that_field_only() {
    let h = Harness::new();
    let mut fleet = vec![res("a", &[]), res("b", &[])];
    h.apply(&fleet).await;
    fleet[1].spec["size"] = json!(2);
    let p = h.plan(&fleet, &PlanOptions::default()).await.plan;
    assert_eq!(p.summary.update, 1);
    let b = p.changes.iter().find(|c| c.id == id("b")).unwrap();
    assert_eq!(b.reason, Reason::FieldsDiffer);
    assert_eq!(b.fields.len(), 1);
    assert_eq!(b.fields[0].path, "/size");
    h.apply(&fleet).await;
    h.assert_replan_empty(&fleet).await;
}

#[tokio::test]
async fn a_failure_skips_its_dependents_and_nothing_else() {
    let h = Harness::new();
    h.provider.script(
        &id("b"),
        Script {
            fail: Some("rejected".into()),
            ..Script::default()
        },
    );
    let fleet = vec![
        res("a", &[]),
        res("b", &["a"]),
        res("c", &["b"]),
        res("d", &["c"]),
        res("x", &[]),
        res("y", &["a"]),
    ];
    let report = h.apply(&fleet).await;
    assert!(matches!(report.outcomes[&id("b")], Outcome::Failed { .. }));
    assert_eq!(
        report.outcomes[&id("c")],
        Outcome::SkippedUpstream { root: id("b") }
    );
    assert_eq!(
        report.outcomes[&id("d")],
        Outcome::SkippedUpstream { root: id("b") }
    );
    for ok in ["a", "x", "y"] {
        assert!(
            matches!(report.outcomes[&id(ok)], Outcome::Applied { .. }),
            "{ok}"
        );
    }
    let roots = report.root_causes();
    assert_eq!(roots[&id("b")].1, vec![&id("c"), &id("d")]);
    // The revision is not recorded when anything failed.
    assert_eq!(h.store.load().await.unwrap().last_applied_revision, None);
}

#[tokio::test]
async fn transient_errors_are_retried_and_permanent_ones_are_not() {
    let h = Harness::new();
    h.provider.script(
        &id("flaky"),
        Script {
            transient_failures: 2,
            ..Script::default()
        },
    );
    h.provider.script(
        &id("broken"),
        Script {
            fail: Some("bad credentials".into()),
            ..Script::default()
        },
    );
    let report = h.apply(&[res("flaky", &[]), res("broken", &[])]).await;
    assert!(matches!(
        report.outcomes[&id("flaky")],
        Outcome::Applied { .. }
    ));
    let w = h.provider.world();
    assert_eq!(w.attempts[&id("flaky")], 3);
    assert_eq!(w.attempts[&id("broken")], 1);
}

#[tokio::test]
async fn transient_errors_give_up_after_the_attempt_limit() {
    let h = Harness::new();
    h.provider.script(
        &id("down"),
        Script {
            transient_failures: 100,
            ..Script::default()
        },
    );
    let opts = ApplyOptions {
        max_attempts: 3,
        ..fast()
    };
    let (_, report, _) = h
        .apply_with(&[res("down", &[])], &PlanOptions::default(), &opts)
        .await;
    let Outcome::Failed { error } = &report.outcomes[&id("down")] else {
        panic!()
    };
    assert!(error.contains("gave up after 3 attempts"), "{error}");
}

#[tokio::test]
async fn dependents_wait_for_health() {
    let h = Harness::new();
    h.provider.script(
        &id("operator"),
        Script {
            slow_health: 3,
            ..Script::default()
        },
    );
    let report = h
        .apply(&[res("operator", &[]), res("nim", &["operator"])])
        .await;
    assert!(report.succeeded());
    assert_eq!(h.provider.world().health_polls[&id("operator")], 4);
}

#[tokio::test]
async fn rollout_groups_bound_how_many_hosts_are_disrupted_at_once() {
    let h = Harness::new();
    let fleet: Vec<Desired> = (0..6)
        .map(|i| {
            let name = format!("host{i}");
            h.provider.script(
                &id(&name),
                Script {
                    latency_ms: 20,
                    ..Script::default()
                },
            );
            let mut d = res(&name, &[]);
            d.rollout = Some(RolloutGroup {
                pool: "acme/h100".into(),
                fault_domain: format!("rack{}", i % 2),
                host: name.clone(),
                max_unavailable: 2,
                max_unavailable_per_fault_domain: 1,
            });
            d
        })
        .collect();
    assert!(h.apply(&fleet).await.succeeded());
    let w = h.provider.world();
    assert!(
        w.max_concurrent_disruptive <= 2,
        "{}",
        w.max_concurrent_disruptive
    );
    assert!(w.max_concurrent_disruptive >= 1);
}

#[tokio::test]
async fn a_resource_removed_from_the_manifest_is_pruned_in_reverse_dependency_order() {
    let h = Harness::new();
    let fleet: Vec<Desired> = vec![
        res("keep1", &[]),
        res("keep2", &[]),
        res("keep3", &[]),
        res("base", &[]),
        res("top", &["base"]),
    ];
    h.apply(&fleet).await;
    let smaller = vec![fleet[0].clone(), fleet[1].clone(), fleet[2].clone()];
    let opts = PlanOptions {
        allow_mass_delete: true,
        ..PlanOptions::default()
    };
    let p = h.plan(&smaller, &opts).await.plan;
    let deletes: Vec<_> = p
        .changes
        .iter()
        .filter(|c| c.action == Action::Delete)
        .collect();
    assert_eq!(deletes.len(), 2);
    assert!(
        deletes
            .iter()
            .all(|c| c.reason == Reason::RemovedFromManifest && c.destructive)
    );
    let top = deletes.iter().find(|c| c.id == id("top")).unwrap();
    let base = deletes.iter().find(|c| c.id == id("base")).unwrap();
    assert!(top.wave < base.wave, "dependents are deleted first");
    let (_, report, state) = h
        .apply_with(
            &smaller,
            &opts,
            &ApplyOptions {
                allow_destroy: true,
                ..fast()
            },
        )
        .await;
    assert!(report.succeeded());
    assert_eq!(state.resources.len(), 3);
    assert!(!h.provider.world().objects.contains_key(&id("base")));
    h.assert_replan_empty(&smaller).await;
}

#[tokio::test]
async fn deletes_need_consent() {
    let h = Harness::new();
    h.apply(&[res("a", &[]), res("b", &[]), res("c", &[]), res("d", &[])])
        .await;
    let planned = h
        .plan(
            &[res("a", &[]), res("b", &[]), res("c", &[])],
            &PlanOptions::default(),
        )
        .await;
    let err = fast().approve(&planned.plan).unwrap_err();
    assert!(err.to_string().contains("--allow-destroy"), "{err}");
}

#[tokio::test]
async fn an_empty_manifest_never_prunes() {
    let h = Harness::new();
    h.apply(&[res("a", &[])]).await;
    let p = h
        .plan(
            &[],
            &PlanOptions {
                allow_mass_delete: true,
                ..PlanOptions::default()
            },
        )
        .await
        .plan;
    assert_eq!(p.problems.len(), 1);
    assert!(
        p.problems[0].message.contains("zero resources"),
        "{}",
        p.problems[0].message
    );
}

#[tokio::test]
async fn deleting_more_than_the_allowed_share_needs_allow_mass_delete() {
    let h = Harness::new();
    let fleet: Vec<Desired> = (0..10).map(|i| res(&format!("r{i}"), &[])).collect();
    h.apply(&fleet).await;
    let p = h.plan(&fleet[..5], &PlanOptions::default()).await.plan;
    assert!(
        p.problems
            .iter()
            .any(|x| x.message.contains("--allow-mass-delete")),
        "{:?}",
        p.problems
    );
    let p = h.plan(&fleet[..8], &PlanOptions::default()).await.plan;
    assert!(p.problems.is_empty());
}

#[tokio::test]
async fn prevent_destroy_refuses_delete() {
    let h = Harness::new();
    let mut keep = res("precious", &[]);
    keep.prevent_destroy = true;
    h.apply(&[keep, res("a", &[]), res("b", &[]), res("c", &[])])
        .await;
    let p = h
        .plan(
            &[res("a", &[]), res("b", &[]), res("c", &[])],
            &PlanOptions::default(),
        )
        .await
        .plan;
    assert!(
        p.problems
            .iter()
            .any(|x| x.message.contains("prevent-destroy")),
        "{:?}",
        p.problems
    );
}

#[tokio::test]
async fn a_failed_delete_stays_in_the_inventory_for_the_next_run() {
    let h = Harness::new();
    let fleet = vec![
        res("a", &[]),
        res("b", &[]),
        res("c", &[]),
        res("gone", &[]),
    ];
    h.apply(&fleet).await;
    h.provider.script(
        &id("gone"),
        Script {
            fail: Some("BMC refused".into()),
            ..Script::default()
        },
    );
    let (_, report, state) = h
        .apply_with(
            &fleet[..3],
            &PlanOptions::default(),
            &ApplyOptions {
                allow_destroy: true,
                ..fast()
            },
        )
        .await;
    assert!(matches!(
        report.outcomes[&id("gone")],
        Outcome::Failed { .. }
    ));
    assert!(state.resources.contains_key(&id("gone")));
    h.provider.script(&id("gone"), Script::default());
    let (_, report, state) = h
        .apply_with(
            &fleet[..3],
            &PlanOptions::default(),
            &ApplyOptions {
                allow_destroy: true,
                ..fast()
            },
        )
        .await;
    assert!(report.succeeded());
    assert!(!state.resources.contains_key(&id("gone")));
}

#[tokio::test]
async fn an_out_of_band_change_shows_as_drift_on_that_field() {
    let h = Harness::new();
    let fleet = vec![res("a", &[]), res("b", &[])];
    h.apply(&fleet).await;
    h.provider.tamper(&id("b"), |v| v["size"] = json!(99));
    let opts = PlanOptions {
        inventory_only: true,
        no_prune: true,
        ..PlanOptions::default()
    };
    let p = h.plan(&fleet, &opts).await.plan;
    let changed: Vec<_> = p.actionable().collect();
    assert_eq!(changed.len(), 1);
    assert_eq!(changed[0].fields[0].path, "/size");
    assert_eq!(changed[0].fields[0].before, Some(json!(99)));
}

#[tokio::test]
async fn sensitive_values_never_appear_in_the_plan_or_state() {
    let h = Harness::new();
    let mut secret = Desired::new(
        id("pull-secret"),
        json!({"data": {"key": "nvapi-CANARY-1234"}}),
    );
    secret.sensitive = vec!["/data/key".into()];
    let planned = h
        .plan(std::slice::from_ref(&secret), &PlanOptions::default())
        .await;
    let text = serde_json::to_string(&planned.plan).unwrap();
    assert!(!text.contains("CANARY"), "{text}");
    assert!(text.contains("(sensitive)"));
    h.apply(std::slice::from_ref(&secret)).await;
    // Rotation: a planned update shown only as (sensitive).
    secret.spec["data"]["key"] = json!("nvapi-CANARY-5678");
    let p = h
        .plan(std::slice::from_ref(&secret), &PlanOptions::default())
        .await
        .plan;
    assert_eq!(p.summary.update, 1);
    let text = serde_json::to_string(&p).unwrap();
    assert!(!text.contains("CANARY"), "{text}");
    let state_text = std::fs::read_to_string(h.store.dir().join("state.json")).unwrap();
    assert!(!state_text.contains("CANARY"), "{state_text}");
}

#[tokio::test]
async fn targets_limit_the_plan_to_them_and_their_dependencies() {
    let h = Harness::new();
    let fleet = vec![res("a", &[]), res("b", &["a"]), res("c", &[])];
    let p = h
        .plan(
            &fleet,
            &PlanOptions {
                targets: vec![id("b")],
                ..PlanOptions::default()
            },
        )
        .await
        .plan;
    let ids: Vec<_> = p.changes.iter().map(|c| c.id.clone()).collect();
    assert_eq!(ids, vec![id("a"), id("b")]);
}

#[tokio::test]
async fn an_unreachable_resource_and_its_dependents_are_skipped_and_the_rest_is_applied() {
    let h = Harness::new();
    h.provider.script(
        &id("bmc"),
        Script {
            observe_fails: true,
            ..Script::default()
        },
    );
    let mut d = res("bmc", &[]);
    d.origin = Some(fleetform_engine::Origin {
        file: "hosts.yaml".into(),
        line: 12,
        column: 3,
    });
    let desired = [
        d,
        res("node", &["bmc"]),
        res("pod", &["node"]),
        res("ok", &[]),
    ];
    let p = h.plan(&desired, &PlanOptions::default()).await.plan;
    assert!(p.problems.is_empty(), "{:?}", p.problems);
    let skipped: Vec<(&str, Option<&str>)> = p
        .skipped
        .iter()
        .map(|s| (s.id.path(), s.root.as_ref().map(|r| r.path())))
        .collect();
    assert_eq!(
        skipped,
        [("bmc", None), ("node", Some("bmc")), ("pod", Some("bmc"))]
    );
    assert_eq!(p.skipped[0].origin.as_ref().unwrap().line, 12);
    let planned: Vec<&str> = p.changes.iter().map(|c| c.id.path()).collect();
    assert_eq!(planned, ["ok"]);
    let text = fleetform_engine::report::plan_text(&p, false);
    assert!(text.contains("3 skipped"), "{text}");
    // Apply goes ahead with what could be observed.
    let (_, report, _) = h
        .apply_with(&desired, &PlanOptions::default(), &fast())
        .await;
    assert!(report.succeeded());
    assert_eq!(h.provider.world().objects.len(), 1);
}

#[tokio::test]
async fn plans_are_deterministic() {
    let h = Harness::new();
    let fleet: Vec<Desired> = (0..30)
        .map(|i| res(&format!("r{i:02}"), if i > 0 { &["r00"] } else { &[] }))
        .collect();
    let a = serde_json::to_string(&h.plan(&fleet, &PlanOptions::default()).await.plan).unwrap();
    let mut rev = fleet.clone();
    rev.reverse();
    let b = serde_json::to_string(&h.plan(&rev, &PlanOptions::default()).await.plan).unwrap();
    assert_eq!(a, b);
}

#[tokio::test]
async fn cancellation_stops_new_work_and_records_what_finished() {
    let h = Harness::new();
    let fleet: Vec<Desired> = (0..5)
        .map(|i| {
            let name = format!("s{i}");
            h.provider.script(
                &id(&name),
                Script {
                    latency_ms: 30,
                    ..Script::default()
                },
            );
            if i == 0 {
                res(&name, &[])
            } else {
                res(&name, &[&format!("s{}", i - 1)])
            }
        })
        .collect();
    let planned = h.plan(&fleet, &PlanOptions::default()).await;
    let mut state = h.store.load().await.unwrap();
    let (tx, rx) = tokio::sync::watch::channel(false);
    let canceller = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(45)).await;
        let _ = tx.send(true);
        tx
    });
    let report = run_apply(
        &planned,
        &fleet,
        &mut state,
        &h.store,
        &h.providers,
        &fast(),
        None,
        rx,
    )
    .await
    .unwrap();
    let _tx = canceller.await.unwrap();
    assert!(report.interrupted);
    assert!(report.outcomes.values().any(|o| *o == Outcome::NotStarted));
    let applied = report
        .outcomes
        .values()
        .filter(|o| matches!(o, Outcome::Applied { .. }))
        .count();
    assert_eq!(
        h.store
            .load()
            .await
            .unwrap()
            .resources
            .values()
            .filter(|e| !e.pending)
            .count(),
        applied
    );
    // Re-running converges.
    let (_, report, _) = h.apply_with(&fleet, &PlanOptions::default(), &fast()).await;
    assert!(report.succeeded());
    h.assert_replan_empty(&fleet).await;
}

/// A host's BIOS resource in a rollout group, on a host whose cluster node is `node`.
fn bios_of(node: &str, value: &str) -> Desired {
    let mut d = Desired::new(id(&format!("bios/{node}")), json!({"mode": value}));
    d.rollout = Some(RolloutGroup {
        pool: "acme/h100".into(),
        fault_domain: "r01".into(),
        host: node.into(),
        max_unavailable: 1,
        max_unavailable_per_fault_domain: 1,
    });
    d.maintenance = Some(id(&format!("node/{node}")));
    d
}

#[tokio::test]
async fn a_disruptive_change_cordons_its_node_first_and_releases_it_when_healthy() {
    let h = Harness::new();
    let node = res("node/n1", &[]);
    h.apply(std::slice::from_ref(&node)).await;
    let fleet = vec![node.clone(), bios_of("n1", "performance")];
    let report = h.apply(&fleet).await;
    assert!(report.succeeded(), "{report:?}");
    let world = h.provider.world();
    assert_eq!(
        world.cordoned_during[&id("bios/n1")],
        vec![id("node/n1")],
        "the node was cordoned while its host's BIOS changed"
    );
    assert_eq!(
        world.drained_before[&id("bios/n1")],
        vec![id("node/n1")],
        "and drained before it"
    );
    assert!(
        world.cordoned.is_empty(),
        "released afterwards: {:?}",
        world.cordoned
    );
    h.assert_replan_empty(&fleet).await;
}

#[tokio::test]
async fn a_failed_disruptive_change_leaves_its_node_cordoned_and_the_next_success_releases_it() {
    let h = Harness::new();
    let node = res("node/n1", &[]);
    h.apply(std::slice::from_ref(&node)).await;
    let fleet = vec![node.clone(), bios_of("n1", "performance")];
    h.provider.script(
        &id("bios/n1"),
        Script {
            fail: Some("BIOS settings task failed".into()),
            ..Script::default()
        },
    );
    let report = h.apply(&fleet).await;
    let Some(Outcome::Failed { error }) = report.outcomes.get(&id("bios/n1")) else {
        panic!("{report:?}")
    };
    assert!(
        error.contains("test:node/n1 stays cordoned for maintenance"),
        "{error}"
    );
    assert!(h.provider.world().cordoned.contains_key(&id("node/n1")));

    h.provider.script(&id("bios/n1"), Script::default());
    assert!(h.apply(&fleet).await.succeeded());
    assert!(h.provider.world().cordoned.is_empty());
}

#[tokio::test]
async fn a_node_that_cannot_be_drained_is_not_rebooted_and_stays_cordoned() {
    let h = Harness::new();
    let node = res("node/n1", &[]);
    h.apply(std::slice::from_ref(&node)).await;
    let fleet = vec![node.clone(), bios_of("n1", "performance")];
    h.provider.script(
        &id("node/n1"),
        Script {
            drain_fails: Some(
                "pod train/worker-0: eviction refused by its disruption budget".into(),
            ),
            ..Script::default()
        },
    );
    let report = h.apply(&fleet).await;
    let Some(Outcome::Failed { error }) = report.outcomes.get(&id("bios/n1")) else {
        panic!("{report:?}")
    };
    assert!(error.contains("cannot drain test:node/n1"), "{error}");
    assert!(error.contains("disruption budget"), "{error}");
    assert!(error.contains("stays cordoned"), "{error}");
    let world = h.provider.world();
    assert!(
        !world.attempts.contains_key(&id("bios/n1")),
        "the BIOS was not touched"
    );
    assert!(world.cordoned.contains_key(&id("node/n1")));
}

#[tokio::test]
async fn a_host_without_a_node_yet_is_changed_without_a_cordon() {
    let h = Harness::new();
    let fleet = vec![bios_of("n2", "performance")];
    let report = h.apply(&fleet).await;
    assert!(report.succeeded(), "{report:?}");
    assert_eq!(
        h.provider.world().cordoned_during[&id("bios/n2")],
        Vec::<ResourceId>::new()
    );
}

#[tokio::test]
async fn a_resource_already_in_sync_at_its_first_apply_is_recorded_and_its_later_drift_found() {
    let h = Harness::new();
    let fleet = vec![res("bios", &[])];
    h.apply(&fleet).await;
    // Another state directory: fleetform meets a live object that already matches.
    let dir = tempfile::tempdir().unwrap();
    let fresh = Harness {
        provider: h.provider.clone(),
        providers: h.providers.clone(),
        store: LocalStateStore::open(dir.path()).unwrap(),
        _dir: dir,
    };
    let p = fresh.plan(&fleet, &PlanOptions::default()).await.plan;
    assert!(!p.summary.has_changes());
    assert!(fresh.apply(&fleet).await.succeeded());
    let state = fresh.store.load().await.unwrap();
    assert!(
        state.resources.contains_key(&id("bios")),
        "adopted into the inventory"
    );

    h.provider.tamper(&id("bios"), |o| o["size"] = json!(7));
    let drift = PlanOptions {
        inventory_only: true,
        no_prune: true,
        ..PlanOptions::default()
    };
    let p = fresh.plan(&fleet, &drift).await.plan;
    assert_eq!(p.summary.update, 1, "drift of an adopted resource is found");
}

#[tokio::test]
async fn only_specs_identical_to_the_last_successful_apply_are_marked_unchanged_for_observe() {
    let h = Harness::new();
    let mut fleet = vec![res("a", &[]), res("b", &[])];
    h.apply(&fleet).await;
    fleet[1].spec["size"] = json!(2);
    let state = h.store.load().await.unwrap();
    let scope = fleetform_engine::plan::scope(&fleet, &state, &PlanOptions::default()).unwrap();
    let targets = scope.targets();
    let flag = |name: &str| {
        targets
            .iter()
            .find(|t| t.id == &id(name))
            .unwrap()
            .unchanged
    };
    assert!(
        flag("a"),
        "applied as is: the provider may skip its expensive checks"
    );
    assert!(!flag("b"), "changed since: it must be checked in full");
}

#[tokio::test]
async fn a_wide_fan_out_applies_every_dependent_once_after_its_root() {
    let h = Harness::new();
    let mut fleet = vec![res("root", &[])];
    fleet.extend((0..3000).map(|i| res(&format!("leaf-{i:04}"), &["root"])));
    let report = h.apply(&fleet).await;
    assert!(report.succeeded(), "{:?}", report.root_causes());
    assert_eq!(report.outcomes.len(), 3001);
    // Every result was journaled: a fresh load knows all of them.
    let state = h.store.load().await.unwrap();
    assert_eq!(state.resources.len(), 3001);
    h.assert_replan_empty(&fleet).await;
}

#[tokio::test]
async fn a_failed_root_skips_its_whole_fan_out_and_every_delete() {
    let h = Harness::new();
    let kept = [res("other", &[]), res("keep-1", &[]), res("keep-2", &[])];
    let mut before = vec![res("old", &[])];
    before.extend(kept.iter().cloned());
    h.apply(&before).await;
    h.provider.script(
        &id("root"),
        Script {
            fail: Some("rejected".into()),
            ..Script::default()
        },
    );
    let mut fleet = vec![res("root", &[])];
    fleet.extend(kept.iter().cloned());
    fleet.extend((0..500).map(|i| res(&format!("leaf-{i:03}"), &["root"])));
    let options = ApplyOptions {
        allow_destroy: true,
        ..fast()
    };
    let (_, report, _) = h
        .apply_with(&fleet, &PlanOptions::default(), &options)
        .await;
    assert!(matches!(
        report.outcomes[&id("root")],
        Outcome::Failed { .. }
    ));
    for i in 0..500 {
        assert_eq!(
            report.outcomes[&id(&format!("leaf-{i:03}"))],
            Outcome::SkippedUpstream { root: id("root") }
        );
    }
    // Deletes wait for every other change; one failed, so nothing is pruned.
    assert_eq!(
        report.outcomes[&id("old")],
        Outcome::SkippedUpstream { root: id("root") }
    );
    assert!(
        h.store
            .load()
            .await
            .unwrap()
            .resources
            .contains_key(&id("old"))
    );
}
