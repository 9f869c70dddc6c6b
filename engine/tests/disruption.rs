//! Disruption classes and rollout budgets that count nodes already down, with the in-memory
//! provider (its rule: a changed `podTemplate` restarts pods, `bios` reboots the host, `power`
//! power-cycles it; its nodes are down when scripted `node_down` or cordoned).
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use fleetform_engine::apply::{ApplyEvent, ApplyOptions, ApplyReport, Outcome};
use fleetform_engine::observe::Providers;
use fleetform_engine::plan::PlanOptions;
use fleetform_engine::provider::Disruption;
use fleetform_engine::reconcile::{ObserveOptions, Planned, make_plan, run_apply};
use fleetform_engine::report::{plan_markdown, plan_text};
use fleetform_engine::state::{LocalStateStore, StateStore};
use fleetform_engine::testing::{MemoryProvider, Script};
use fleetform_engine::{Desired, ResourceId, RolloutGroup};
use serde_json::json;
use tokio::sync::mpsc;

fn id(name: &str) -> ResourceId {
    ResourceId::new("test", name)
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

    async fn plan(&self, desired: &[Desired]) -> Planned {
        let state = self.store.load().await.unwrap();
        make_plan(
            desired,
            &state,
            &self.providers,
            &PlanOptions::default(),
            ObserveOptions::default(),
            Some("rev".into()),
        )
        .await
        .unwrap()
    }

    async fn apply(
        &self,
        desired: &[Desired],
        options: &ApplyOptions,
    ) -> (Planned, ApplyReport, Vec<ApplyEvent>) {
        let planned = self.plan(desired).await;
        let mut state = self.store.load().await.unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (_cancel_tx, cancel) = tokio::sync::watch::channel(false);
        let report = run_apply(
            &planned,
            desired,
            &mut state,
            &self.store,
            &self.providers,
            options,
            Some(tx),
            cancel,
        )
        .await
        .unwrap();
        let mut events = Vec::new();
        while let Ok(e) = rx.try_recv() {
            events.push(e);
        }
        (planned, report, events)
    }
}

fn fast() -> ApplyOptions {
    ApplyOptions {
        base_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(5),
        health_poll: Duration::from_millis(5),
        health_timeout: Duration::from_secs(5),
        budget_wait: Duration::from_millis(60),
        ..ApplyOptions::default()
    }
}

/// Host `n` of pool `acme/h100` (rack `rack`): its node object and its BIOS resource, in a
/// rollout group with `max` unavailable, cordoning its node while it changes.
fn member(n: &str, rack: &str, max: u32, bios: &str) -> [Desired; 2] {
    let node = Desired::new(id(&format!("node/{n}")), json!({"name": n}));
    let mut d = Desired::new(id(&format!("bios/{n}")), json!({"bios": {"mode": bios}}));
    d.rollout = Some(RolloutGroup {
        pool: "acme/h100".into(),
        fault_domain: rack.into(),
        host: n.into(),
        max_unavailable: max,
        max_unavailable_per_fault_domain: max,
    });
    d.maintenance = Some(node.id.clone());
    [node, d]
}

/// A pool of hosts `n1..=n{count}` in one rack, nodes created and BIOS at `old`.
async fn pool(h: &Harness, count: usize, max: u32) -> Vec<Desired> {
    let old: Vec<Desired> = (1..=count)
        .flat_map(|i| member(&format!("n{i}"), "r01", max, "old"))
        .collect();
    let (_, report, _) = h.apply(&old, &fast()).await;
    assert!(report.succeeded(), "{report:?}");
    (1..=count)
        .flat_map(|i| member(&format!("n{i}"), "r01", max, "new"))
        .collect()
}

/// `fleet` with host `n`'s BIOS left as it is (no change planned for it).
fn unchanged(mut fleet: Vec<Desired>, n: &str) -> Vec<Desired> {
    for d in fleet
        .iter_mut()
        .filter(|d| d.id == id(&format!("bios/{n}")))
    {
        d.spec = json!({"bios": {"mode": "old"}});
    }
    fleet
}

fn down(h: &Harness, node: &str, why: &str) {
    h.provider.script(
        &id(&format!("node/{node}")),
        Script {
            node_down: Some(why.into()),
            ..Script::default()
        },
    );
}

fn bios_attempts(h: &Harness) -> u32 {
    h.provider
        .world()
        .attempts
        .iter()
        .filter(|(k, _)| k.path().starts_with("bios/"))
        .map(|(_, n)| *n)
        .sum()
}

#[tokio::test]
async fn each_change_is_classified_by_the_providers_rule_and_counted_per_class() {
    let h = Harness::new();
    let mut in_pool = Desired::new(id("label/n1"), json!({"team": "a"}));
    in_pool.rollout = member("n1", "r01", 1, "x")[1].rollout.clone();
    let old = vec![
        Desired::new(
            id("deploy"),
            json!({"podTemplate": {"image": "a"}, "replicas": 1}),
        ),
        Desired::new(id("bmc"), json!({"bios": {"mode": "a"}, "power": "On"})),
        Desired::new(id("config"), json!({"data": "a"})),
        Desired::new(id("same"), json!({"podTemplate": "a"})),
        in_pool,
    ];
    let (_, report, _) = h.apply(&old, &fast()).await;
    assert!(report.succeeded());
    let mut in_pool = Desired::new(id("label/n1"), json!({"team": "b"}));
    in_pool.rollout = member("n1", "r01", 1, "x")[1].rollout.clone();
    let new = vec![
        Desired::new(
            id("deploy"),
            json!({"podTemplate": {"image": "b"}, "replicas": 2}),
        ),
        Desired::new(id("bmc"), json!({"bios": {"mode": "b"}, "power": "Off"})),
        Desired::new(id("config"), json!({"data": "b"})),
        Desired::new(id("same"), json!({"podTemplate": "a"})),
        in_pool,
    ];
    let plan = h.plan(&new).await.plan;
    let class = |n: &str| {
        let c = plan.changes.iter().find(|c| c.id == id(n)).unwrap();
        (c.disruption, c.disruptive)
    };
    assert_eq!(class("deploy"), (Disruption::PodRestart, false));
    // The most severe of the fields it changes: power off beats the BIOS reboot.
    assert_eq!(class("bmc"), (Disruption::PowerCycle, true));
    assert_eq!(class("config"), (Disruption::None, false));
    assert_eq!(class("same"), (Disruption::None, false), "no-op");
    // The compiler put it in a rollout group: at least a drain whatever the provider says.
    assert_eq!(class("label/n1"), (Disruption::NodeDrain, true));
    let by = &plan.summary.by_disruption;
    assert_eq!(by.get(&Disruption::PowerCycle), Some(&1));
    assert_eq!(by.get(&Disruption::NodeDrain), Some(&1));
    assert_eq!(by.get(&Disruption::PodRestart), Some(&1));
    assert_eq!(
        by.get(&Disruption::None),
        Some(&1),
        "no-ops are not counted"
    );
    assert_eq!(plan.summary.disruptive, 2);
    let json: serde_json::Value = serde_json::to_value(&plan).unwrap();
    assert_eq!(json["summary"]["by_disruption"]["power-cycle"], 1);
    assert!(
        json["changes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["disruption"] == "pod-restart")
    );
}

#[tokio::test]
async fn text_and_markdown_group_changes_by_class_most_severe_first() {
    let h = Harness::new();
    let old = vec![
        Desired::new(id("deploy"), json!({"podTemplate": "a"})),
        Desired::new(id("bmc-a"), json!({"bios": "a"})),
        Desired::new(id("bmc-b"), json!({"power": "On"})),
    ];
    assert!(h.apply(&old, &fast()).await.1.succeeded());
    let new = vec![
        Desired::new(id("deploy"), json!({"podTemplate": "b"})),
        Desired::new(id("bmc-a"), json!({"bios": "b"})),
        Desired::new(id("bmc-b"), json!({"power": "Off"})),
    ];
    let plan = h.plan(&new).await.plan;
    let text = plan_text(&plan, false);
    let section = text
        .split("Disruption (most severe first):")
        .nth(1)
        .unwrap();
    let at = |s: &str| section.find(s).unwrap_or_else(|| panic!("{s} in {text}"));
    assert!(at("power-cycle (1; the host loses power)") < at("host-reboot (1;"));
    assert!(at("host-reboot (1;") < at("pod-restart (1;"));
    assert!(at("~ test:bmc-b") < at("~ test:bmc-a"));
    assert!(text.contains("(disruption: 1 power-cycle, 1 host-reboot, 1 pod-restart)"));
    assert!(text.contains("test:deploy  (differs from the manifest) [pod-restart]"));

    let md = plan_markdown(&plan, "Plan", &[]);
    let table = md.split("#### Disruption").nth(1).unwrap();
    let row = |s: &str| table.find(s).unwrap_or_else(|| panic!("{s} in {md}"));
    assert!(
        row("| **power-cycle** | the host loses power | 1 | `test:bmc-b` |")
            < row("| **host-reboot** |")
    );
    assert!(row("| **host-reboot** |") < row("| **pod-restart** |"));
    assert!(md.contains("(differs from the manifest) — host-reboot</summary>"));
}

#[tokio::test]
async fn one_not_ready_node_in_a_pool_of_max_unavailable_1_blocks_every_disruptive_change_and_says_why()
 {
    let h = Harness::new();
    let fleet = pool(&h, 3, 1).await;
    down(&h, "n3", "NotReady");
    // Only n1 and n2 change: n3 is down and has nothing to apply.
    let fleet = unchanged(fleet, "n3");
    let before = bios_attempts(&h);

    let planned = h.plan(&fleet).await;
    let [b] = planned.plan.budgets.as_slice() else {
        panic!("{:?}", planned.plan.budgets)
    };
    assert_eq!(b.pool, "acme/h100");
    assert_eq!(b.down, vec!["n3 (NotReady)"]);
    assert_eq!((b.disruptive_changes, b.can_start_now), (2, 0));
    let text = plan_text(&planned.plan, false);
    assert!(
        text.contains("budget: pool acme/h100: 1 of maxUnavailable 1 already down (n3 (NotReady)); 2 disruptive change(s): its disruptive changes wait until a node is back"),
        "{text}"
    );
    assert!(plan_markdown(&planned.plan, "Plan", &[]).contains("already down (n3 (NotReady))"));

    let (_, report, events) = h.apply(&fleet, &fast()).await;
    assert_eq!(
        bios_attempts(&h),
        before,
        "no disruptive change was applied"
    );
    for n in ["bios/n1", "bios/n2"] {
        let Outcome::Failed { error } = &report.outcomes[&id(n)] else {
            panic!("{n}: {:?}", report.outcomes[&id(n)])
        };
        assert!(
            error.contains("pool acme/h100: 1 node(s) already down: n3 (NotReady) and 0 change(s) in flight; maxUnavailable is 1"),
            "{error}"
        );
    }
    assert!(events.iter().any(|e| matches!(e,
        ApplyEvent::WaitingRollout { id: i, reason, .. } if *i == id("bios/n1") && reason.contains("n3 (NotReady)"))));
    assert!(
        h.provider.world().cordoned.is_empty(),
        "nothing was cordoned"
    );
}

#[tokio::test]
async fn with_max_unavailable_2_and_one_node_down_changes_go_one_at_a_time() {
    let h = Harness::new();
    let fleet = pool(&h, 4, 2).await;
    for i in 1..=3 {
        h.provider.script(
            &id(&format!("bios/n{i}")),
            Script {
                latency_ms: 20,
                ..Script::default()
            },
        );
    }
    down(&h, "n4", "cordoned");
    let fleet = unchanged(fleet, "n4");
    let planned = h.plan(&fleet).await;
    assert_eq!(planned.plan.budgets[0].can_start_now, 1);
    let (_, report, _) = h.apply(&fleet, &fast()).await;
    assert!(report.succeeded(), "{report:?}");
    assert_eq!(
        h.provider.world().max_concurrent_disruptive,
        1,
        "one slot of two is taken by the node already down"
    );
}

#[tokio::test]
async fn without_nodes_down_max_unavailable_2_runs_two_at_once() {
    // The control for the test above: the same pool, nothing down, two at a time.
    let h = Harness::new();
    let fleet = pool(&h, 4, 2).await;
    for i in 1..=4 {
        h.provider.script(
            &id(&format!("bios/n{i}")),
            Script {
                latency_ms: 20,
                ..Script::default()
            },
        );
    }
    let planned = h.plan(&fleet).await;
    assert!(
        planned.plan.budgets.is_empty(),
        "{:?}",
        planned.plan.budgets
    );
    let (_, report, _) = h.apply(&fleet, &fast()).await;
    assert!(report.succeeded(), "{report:?}");
    assert_eq!(h.provider.world().max_concurrent_disruptive, 2);
}

#[tokio::test]
async fn a_change_waits_for_a_node_that_comes_back_and_then_proceeds() {
    let h = Harness::new();
    let fleet = pool(&h, 2, 1).await;
    down(&h, "n2", "NotReady");
    let fleet = unchanged(fleet, "n2");
    let provider = h.provider.clone();
    let back = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(40)).await;
        provider.script(&id("node/n2"), Script::default());
    });
    let options = ApplyOptions {
        budget_wait: Duration::from_secs(5),
        ..fast()
    };
    let (_, report, _) = h.apply(&fleet, &options).await;
    back.await.unwrap();
    assert!(report.succeeded(), "{report:?}");
}

#[tokio::test]
async fn the_node_a_failed_change_left_cordoned_does_not_block_its_own_retry() {
    let h = Harness::new();
    let fleet = pool(&h, 2, 1).await;
    let only_n1 = unchanged(fleet, "n2");
    h.provider.script(
        &id("bios/n1"),
        Script {
            fail: Some("BMC refused".into()),
            ..Script::default()
        },
    );
    let (_, report, _) = h.apply(&only_n1, &fast()).await;
    assert!(!report.succeeded());
    assert!(h.provider.world().cordoned.contains_key(&id("node/n1")));
    // n1 is down (cordoned by its own failed change): that is n1's slot, not another's.
    h.provider.script(&id("bios/n1"), Script::default());
    let (_, report, _) = h.apply(&only_n1, &fast()).await;
    assert!(report.succeeded(), "{report:?}");
    assert!(h.provider.world().cordoned.is_empty());
    // But it is down for n2's change while it stays cordoned: fail n1 again, then n2 waits.
    h.provider.script(
        &id("bios/n1"),
        Script {
            fail: Some("BMC refused".into()),
            ..Script::default()
        },
    );
    let next: Vec<Desired> = (1..=2)
        .flat_map(|i| member(&format!("n{i}"), "r01", 1, "newer"))
        .collect();
    let (_, report, _) = h.apply(&next, &fast()).await;
    let Outcome::Failed { error } = &report.outcomes[&id("bios/n2")] else {
        panic!("{report:?}")
    };
    assert!(
        error.contains("n1 (cordoned: fleetform: test:bios/n1"),
        "{error}"
    );
}

#[tokio::test]
async fn a_node_whose_state_cannot_be_read_counts_as_down() {
    let h = Harness::new();
    let fleet = pool(&h, 2, 1).await;
    h.provider.script(
        &id("node/n2"),
        Script {
            availability_fails: true,
            ..Script::default()
        },
    );
    let fleet = unchanged(fleet, "n2");
    let (_, report, _) = h.apply(&fleet, &fast()).await;
    let Outcome::Failed { error } = &report.outcomes[&id("bios/n1")] else {
        panic!("{report:?}")
    };
    assert!(
        error.contains("n2 (state unknown: test:node/n2: node state unreadable)"),
        "{error}"
    );
}

#[tokio::test]
async fn a_node_down_in_another_rack_leaves_the_fault_domain_limit_alone() {
    // maxUnavailable 2 for the pool, 1 per rack: n3 (rack r02) down leaves one pool slot,
    // which n1 (rack r01) may take; n4 in r02 may not (its rack has n3 down).
    let h = Harness::new();
    let racks = [("n1", "r01"), ("n3", "r02"), ("n4", "r02")];
    let at = |v: &str| -> Vec<Desired> {
        racks
            .iter()
            .flat_map(|(n, r)| {
                let mut m = member(n, r, 2, v);
                if let Some(g) = m[1].rollout.as_mut() {
                    g.max_unavailable_per_fault_domain = 1;
                }
                m
            })
            .collect()
    };
    assert!(h.apply(&at("old"), &fast()).await.1.succeeded());
    down(&h, "n3", "NotReady");
    let mut fleet = at("new");
    for d in fleet.iter_mut().filter(|d| d.id == id("bios/n3")) {
        d.spec = json!({"bios": {"mode": "old"}});
    }
    let (_, report, _) = h.apply(&fleet, &fast()).await;
    assert!(matches!(
        report.outcomes[&id("bios/n1")],
        Outcome::Applied { .. }
    ));
    let Outcome::Failed { error } = &report.outcomes[&id("bios/n4")] else {
        panic!("{report:?}")
    };
    assert!(
        error.contains("fault domain r02: 1 node(s) already down: n3 (NotReady)"),
        "{error}"
    );
}

#[test]
fn a_plan_saved_before_disruption_existed_still_reads_and_stays_disruptive() {
    // A change as plan JSON format 1 wrote it before `disruption`: only `disruptive`.
    let old = json!({"id": "test:bios/n1", "action": "update", "reason": {"kind": "fields-differ"},
        "destructive": false, "disruptive": true, "wave": 0});
    let c: fleetform_engine::plan::PlannedChange = serde_json::from_value(old).unwrap();
    assert_eq!(c.disruption, Disruption::None, "unknown class");
    assert!(
        c.disruptive,
        "still bounded by its rollout group and cordoned"
    );
}
