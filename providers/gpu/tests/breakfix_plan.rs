//! Break/fix as planned changes, end to end without peers: recorded H100
//! inventories → node conditions → `engine::breakfix` → plan and apply through
//! the engine's in-memory providers (standing in for kube, redfish).
#![cfg(feature = "fleet")]
// Tests: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;

use fleetform_engine::breakfix::{self, BreakFix, FindingKind, NodeCondition, NodeState};
use fleetform_engine::load::{self, SourceFile};
use fleetform_engine::manifest::Fleet;
use fleetform_engine::observe::Providers;
use fleetform_engine::plan::{Plan, PlanOptions, Reason};
use fleetform_engine::provider::Action;
use fleetform_engine::reconcile::{ObserveOptions, make_plan, run_apply};
use fleetform_engine::resource::Desired;
use fleetform_engine::secret::{SecretError, SecretRef, SecretResolver};
use fleetform_engine::state::{LocalStateStore, StateStore};
use fleetform_engine::testing::MemoryProvider;
use fleetform_engine::{Sensitive, compile, validate};
use fleetform_gpu::Inventory;
use fleetform_gpu::fleet::{DEFAULT_MAX_AGE_SECS, condition, drift_findings, expectations};

/// `collectedAt` of the recorded H100 fixture (2026-11-27T02:59:13Z), plus a minute.
const NOW: u64 = 1_795_748_353 + 60;

struct NoSecrets;
impl SecretResolver for NoSecrets {
    fn resolve(&self, r: &SecretRef) -> Result<Sensitive<String>, SecretError> {
        Err(SecretError::EnvMissing {
            reference: r.to_string(),
        })
    }
}

fn host(name: &str, rack: &str, spare: bool) -> String {
    format!(
        "---\napiVersion: fleetform.dev/v1alpha1\nkind: Host\nmetadata: {{name: {name}}}\nspec:\n  rack: {rack}\n  bmc:\n    endpoint: http://127.0.0.1:8000\n    systemId: {name}\n    credentials: {{username: admin, password: {{env: BMC_PASSWORD}}}}\n  gpu: {{model: H100, count: 1}}\n{}",
        if spare { "  spare: true\n" } else { "" }
    )
}

/// Racks r01, r02 (ordinary) and nvl-a (an NVL72 domain). Pool `train`
/// (r01-n01, r01-n02, r02-n01; spares r02-s01, r01-s01; at most 2 unavailable,
/// 1 per rack), pool `nvl` (nvl-a-n01, nvl-a-n02; spare r02-s02 in another
/// rack), pool `mig` (r02-n02, all-1g.10gb).
fn fleet() -> Fleet {
    parse(fleet_text())
}

fn fleet_text() -> String {
    let mut text = String::from(
        r#"apiVersion: fleetform.dev/v1alpha1
kind: Fleet
metadata: {name: bf}
spec:
  operators:
    gpuOperator:
      version: v26.7.0
      driver: {version: "580.159.04"}
  managementCluster:
    kubeconfig: {file: mgmt.kubeconfig}
---
apiVersion: fleetform.dev/v1alpha1
kind: Tenant
metadata: {name: acme}
spec:
  flavor: tenant-managed
  kubernetes:
    version: "1.35"
    kubeconfig: {file: acme.kubeconfig}
    podCidr: 10.65.0.0/16
    serviceCidr: 10.97.0.0/20
  nodeOs: {byo: true}
---
apiVersion: fleetform.dev/v1alpha1
kind: Rack
metadata: {name: r01}
spec: {faultDomain: rack}
---
apiVersion: fleetform.dev/v1alpha1
kind: Rack
metadata: {name: r02}
spec: {faultDomain: rack}
---
apiVersion: fleetform.dev/v1alpha1
kind: Rack
metadata: {name: nvl-a}
spec: {faultDomain: nvl72}
---
apiVersion: fleetform.dev/v1alpha1
kind: NodePool
metadata: {name: train}
spec:
  tenant: acme
  hosts: [r01-n01, r01-n02, r02-n01]
  spares: [r02-s01, r01-s01]
  rollout: {maxUnavailable: 2, maxUnavailablePerFaultDomain: 1}
---
apiVersion: fleetform.dev/v1alpha1
kind: NodePool
metadata: {name: nvl}
spec:
  tenant: acme
  hosts: [nvl-a-n01, nvl-a-n02]
  spares: [r02-s02]
---
apiVersion: fleetform.dev/v1alpha1
kind: NodePool
metadata: {name: mig}
spec:
  tenant: acme
  hosts: [r02-n02]
  gpuSharing:
    mig: {config: all-1g.10gb}
"#,
    );
    for (h, rack, spare) in [
        ("r01-n01", "r01", false),
        ("r01-n02", "r01", false),
        ("r01-s01", "r01", true),
        ("r02-n01", "r02", false),
        ("r02-n02", "r02", false),
        ("r02-s01", "r02", true),
        ("r02-s02", "r02", true),
        ("nvl-a-n01", "nvl-a", false),
        ("nvl-a-n02", "nvl-a", false),
    ] {
        text.push_str(&host(h, rack, spare));
    }
    text
}

fn parse(text: String) -> Fleet {
    let files = [SourceFile {
        path: "fleet.yaml".into(),
        bytes: text.into_bytes(),
    }];
    let (docs, diags) = load::load(&files);
    assert!(diags.is_empty(), "{diags:?}");
    validate::validate(&docs).unwrap_or_else(|d| panic!("{d:#?}"))
}

fn fixture(name: &str, node: &str) -> Inventory {
    let path = format!("{}/../../fixtures/gpu/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap();
    let mut inv = Inventory::from_json(&text).unwrap();
    inv.node = node.into();
    inv
}

const HEALTHY: &str = "recorded-h100-80gb-hbm3.json";
const ECC_FAILED: &str = "recorded-h100-80gb-hbm3-ecc-failed.json";
const REMAP_PENDING: &str = "recorded-h100-80gb-hbm3-remap-pending.json";

/// Conditions for every member and spare from the healthy recording, with `overrides`.
fn conditions(fleet: &Fleet, overrides: &[(&str, &str)]) -> Vec<NodeCondition> {
    let over: BTreeMap<&str, &str> = overrides.iter().copied().collect();
    fleetform_gpu::fleet::gpu_nodes(fleet)
        .into_iter()
        .map(|n| {
            let inv = fixture(over.get(n.as_str()).copied().unwrap_or(HEALTHY), &n);
            condition(&n, Ok(Some(&inv)), NOW, DEFAULT_MAX_AGE_SECS)
        })
        .collect()
}

fn set_cordoned(conditions: &mut [NodeCondition], node: &str, reason: Option<&str>) {
    for c in conditions.iter_mut().filter(|c| c.node == node) {
        c.cordoned = true;
        c.cordon_reason = reason.map(str::to_string);
    }
}

struct World {
    desired: Vec<Desired>,
    kube: Arc<MemoryProvider>,
    providers: Providers,
    store: LocalStateStore,
    _dir: tempfile::TempDir,
}

/// The fleet compiled and applied with every node healthy: live state matches.
async fn applied(fleet: &Fleet) -> World {
    let compiled = compile::compile(fleet, &NoSecrets).unwrap();
    let kube = Arc::new(MemoryProvider::named("kube"));
    let providers = Providers::new()
        .with(kube.clone())
        .with(Arc::new(MemoryProvider::named("redfish")));
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStateStore::open(dir.path().join("state")).unwrap();
    let w = World {
        desired: compiled.resources,
        kube,
        providers,
        store,
        _dir: dir,
    };
    let bf = breakfix::assess(fleet, &conditions(fleet, &[]));
    w.apply(&bf).await;
    w
}

impl World {
    async fn plan(&self, bf: &BreakFix) -> (Plan, fleetform_engine::reconcile::Planned) {
        let state = self.store.load().await.unwrap();
        let desired = bf.desired(&self.desired);
        let planned = make_plan(
            &desired,
            &state,
            &self.providers,
            &PlanOptions::default(),
            ObserveOptions::default(),
            Some("rev".into()),
        )
        .await
        .unwrap();
        let mut plan = planned.plan.clone();
        plan.annotate_breakfix(bf);
        (plan, planned)
    }

    async fn apply(&self, bf: &BreakFix) {
        let (_, planned) = self.plan(bf).await;
        assert!(
            planned.plan.problems.is_empty(),
            "{:?}",
            planned.plan.problems
        );
        let mut state = self.store.load().await.unwrap();
        let (_tx, rx) = tokio::sync::watch::channel(false);
        let report = run_apply(
            &planned,
            &bf.desired(&self.desired),
            &mut state,
            &self.store,
            &self.providers,
            &fleetform_engine::apply::ApplyOptions {
                health_timeout: std::time::Duration::from_secs(5),
                ..Default::default()
            },
            None,
            rx,
        )
        .await
        .unwrap();
        assert!(report.succeeded(), "{report:?}");
    }
}

fn node(n: &str) -> fleetform_engine::ResourceId {
    breakfix::node_id("acme", n)
}

fn kinds(plan: &Plan, n: &str) -> Vec<FindingKind> {
    plan.findings
        .iter()
        .filter(|f| f.node == n)
        .map(|f| f.kind)
        .collect()
}

#[tokio::test]
async fn a_failed_node_becomes_a_planned_cordon_whose_reason_names_the_gpu_and_findings() {
    let fleet = fleet();
    let w = applied(&fleet).await;
    let bf = breakfix::assess(&fleet, &conditions(&fleet, &[("r01-n02", ECC_FAILED)]));
    let (plan, _) = w.plan(&bf).await;

    let changes: Vec<_> = plan.actionable().collect();
    assert_eq!(changes.len(), 1, "{changes:#?}");
    let c = changes[0];
    assert_eq!(c.id, node("r01-n02"));
    assert_eq!(c.action, Action::Update);
    let Reason::BreakFix { detail } = &c.reason else {
        panic!("{:?}", c.reason)
    };
    assert!(
        detail.starts_with("cordon: node r01-n02 failed: GPU 0"),
        "{detail}"
    );
    assert!(detail.contains("uncorrectable"), "{detail}");
    // The in-memory provider reports the smallest absent parent (`/object/spec`
    // on a Node without a spec); the kube provider reports leaves.
    let after = |path: &str| {
        c.fields.iter().find_map(|f| {
            let rest = path.strip_prefix(f.path.as_str())?;
            let after = f.after.as_ref()?;
            if rest.is_empty() {
                Some(after.clone())
            } else {
                after.pointer(rest).cloned()
            }
        })
    };
    assert_eq!(
        after("/object/spec/unschedulable"),
        Some(serde_json::json!(true)),
        "{:#?}",
        c.fields
    );
    let annotation = after("/object/metadata/annotations/gpu.fleetform.dev~1cordon-reason");
    assert_eq!(
        annotation.as_ref().and_then(|v| v.as_str()),
        Some(detail.as_str())
    );
    let text = fleetform_engine::report::plan_text(&plan, false);
    assert!(
        text.contains("cordon: node r01-n02 failed: GPU 0"),
        "{text}"
    );
}

#[tokio::test]
async fn a_spare_of_the_same_rack_is_proposed_as_a_manifest_edit_and_nothing_is_applied_to_it() {
    let fleet = fleet();
    let w = applied(&fleet).await;
    let bf = breakfix::assess(&fleet, &conditions(&fleet, &[("r01-n02", ECC_FAILED)]));
    let (plan, _) = w.plan(&bf).await;
    let swap = plan
        .findings
        .iter()
        .find(|f| f.kind == FindingKind::SwapProposed)
        .expect("a swap is proposed");
    assert_eq!(swap.node, "r01-n02");
    // r02-s01 is listed first, but r01-s01 shares the failed node's rack.
    assert!(
        swap.message
            .starts_with("spare r01-s01 (same rack r01) can stand in for failed node r01-n02"),
        "{}",
        swap.message
    );
    let edit = swap.suggestion.as_deref().unwrap_or_default();
    assert!(
        edit.contains("swap r01-n02 and r01-s01 between `hosts` and `spares`"),
        "{edit}"
    );
    assert!(swap.origin.is_some());
    assert!(
        plan.actionable()
            .all(|c| !c.id.as_str().contains("r01-s01"))
    );
}

#[tokio::test]
async fn a_failed_node_past_max_unavailable_is_reported_not_cordoned() {
    let fleet = fleet();
    let w = applied(&fleet).await;
    // Pool budget: r01-n01 and r02-n01 are cordoned already (2 of 2).
    let mut cs = conditions(&fleet, &[("r01-n02", ECC_FAILED)]);
    set_cordoned(&mut cs, "r01-n01", None);
    set_cordoned(&mut cs, "r02-n01", None);
    let bf = breakfix::assess(&fleet, &cs);
    assert!(bf.cordons.is_empty(), "{:?}", bf.cordons);
    let (plan, _) = w.plan(&bf).await;
    assert_eq!(plan.actionable().count(), 0);
    let f = plan
        .findings
        .iter()
        .find(|f| f.kind == FindingKind::BudgetExhausted)
        .expect("reported");
    assert!(f.message.contains("2 of at most 2"), "{}", f.message);
    assert!(!kinds(&plan, "r01-n02").contains(&FindingKind::SwapProposed));
}

#[test]
fn a_failed_node_past_its_fault_domain_budget_is_reported_while_another_rack_is_cordoned() {
    let fleet = fleet();
    let cs = conditions(
        &fleet,
        &[
            ("r01-n01", ECC_FAILED),
            ("r01-n02", ECC_FAILED),
            ("r02-n01", ECC_FAILED),
        ],
    );
    let bf = breakfix::assess(&fleet, &cs);
    let cordoned: Vec<&str> = bf.cordons.keys().map(String::as_str).collect();
    assert_eq!(cordoned, ["r01-n01", "r02-n01"]);
    let f = bf
        .findings
        .iter()
        .find(|f| f.kind == FindingKind::BudgetExhausted)
        .expect("reported");
    assert_eq!(f.node, "r01-n02");
    assert!(f.message.contains("fault domain r01"), "{}", f.message);
}

#[tokio::test]
async fn a_degraded_node_is_reported_and_nothing_is_planned() {
    let fleet = fleet();
    let w = applied(&fleet).await;
    let bf = breakfix::assess(&fleet, &conditions(&fleet, &[("r01-n02", REMAP_PENDING)]));
    let (plan, _) = w.plan(&bf).await;
    assert_eq!(plan.actionable().count(), 0);
    assert_eq!(kinds(&plan, "r01-n02"), [FindingKind::Degraded]);
    assert!(plan.findings[0].message.contains("not cordoned"));
}

#[tokio::test]
async fn a_stale_report_is_unknown_even_when_it_shows_a_failure_and_changes_nothing() {
    let fleet = fleet();
    let w = applied(&fleet).await;
    let inv = fixture(ECC_FAILED, "r01-n02");
    let c = condition("r01-n02", Ok(Some(&inv)), NOW + 3600, DEFAULT_MAX_AGE_SECS);
    assert_eq!(c.state, NodeState::Unknown);
    assert!(c.reasons[0].contains("stale"), "{:?}", c.reasons);
    // A stale *healthy* report is unknown too, never healthy.
    let healthy = fixture(HEALTHY, "r01-n01");
    let h = condition(
        "r01-n01",
        Ok(Some(&healthy)),
        NOW + 3600,
        DEFAULT_MAX_AGE_SECS,
    );
    assert_eq!(h.state, NodeState::Unknown);
    let missing = condition("r01-n01", Ok(None), NOW, DEFAULT_MAX_AGE_SECS);
    assert_eq!(missing.state, NodeState::Unknown);

    let mut cs = conditions(&fleet, &[]);
    cs.retain(|x| x.node != "r01-n02");
    cs.push(c);
    let bf = breakfix::assess(&fleet, &cs);
    let (plan, _) = w.plan(&bf).await;
    assert_eq!(plan.actionable().count(), 0);
    assert_eq!(kinds(&plan, "r01-n02"), [FindingKind::Unknown]);
}

#[tokio::test]
async fn applying_the_plan_cordons_the_node_and_a_replan_is_empty() {
    let fleet = fleet();
    let w = applied(&fleet).await;
    let cs = conditions(&fleet, &[("r01-n02", ECC_FAILED)]);
    let bf = breakfix::assess(&fleet, &cs);
    w.apply(&bf).await;
    let live = &w.kube.world().objects[&node("r01-n02")];
    assert_eq!(
        live.pointer("/object/spec/unschedulable"),
        Some(&serde_json::json!(true))
    );
    let reason = live
        .pointer("/object/metadata/annotations/gpu.fleetform.dev~1cordon-reason")
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_string();
    assert!(reason.contains("GPU 0"), "{reason}");

    // Next run: the node is cordoned by fleetform; the same report plans nothing.
    let mut cs = cs;
    set_cordoned(&mut cs, "r01-n02", Some(&reason));
    let again = breakfix::assess(&fleet, &cs);
    let (plan, _) = w.plan(&again).await;
    assert_eq!(plan.actionable().count(), 0, "{:#?}", plan.changes);

    // A degraded or unknown report holds fleetform's cordon (no uncordon on doubt).
    let mut doubt = conditions(&fleet, &[("r01-n02", REMAP_PENDING)]);
    set_cordoned(&mut doubt, "r01-n02", Some(&reason));
    let held = breakfix::assess(&fleet, &doubt);
    assert!(held.cordons["r01-n02"].held);
    assert!(held.released.is_empty());
    let (plan, _) = w.plan(&held).await;
    assert_eq!(plan.actionable().count(), 0);

    // A fresh healthy report releases fleetform's claim (server-side apply
    // then removes the field only if fleetform alone set it).
    let mut healed = conditions(&fleet, &[]);
    set_cordoned(&mut healed, "r01-n02", Some(&reason));
    let released = breakfix::assess(&fleet, &healed);
    assert!(released.cordons.is_empty());
    assert!(released.released.contains_key(&node("r01-n02")));
}

#[test]
fn an_nvl72_member_only_swaps_with_a_spare_of_its_own_nvlink_domain() {
    let fleet = fleet();
    let bf = breakfix::assess(&fleet, &conditions(&fleet, &[("nvl-a-n01", ECC_FAILED)]));
    assert!(bf.cordons.contains_key("nvl-a-n01"));
    let f = bf
        .findings
        .iter()
        .find(|f| f.node == "nvl-a-n01" && f.kind == FindingKind::NoSpare)
        .expect("the spare in rack r02 does not qualify");
    assert!(f.message.contains("nvl72"), "{}", f.message);
}

#[test]
fn a_failed_spare_is_skipped_for_the_next_one() {
    let fleet = fleet();
    let bf = breakfix::assess(
        &fleet,
        &conditions(&fleet, &[("r01-n02", ECC_FAILED), ("r01-s01", ECC_FAILED)]),
    );
    let swap = bf
        .findings
        .iter()
        .find(|f| f.kind == FindingKind::SwapProposed)
        .expect("a swap is proposed");
    assert!(
        swap.message.starts_with("spare r02-s01 (rack r02)"),
        "{}",
        swap.message
    );
}

#[test]
fn pool_expectations_from_the_manifest_match_the_recorded_h100_and_mig_drift_is_named() {
    let fleet = fleet();
    let exp = expectations(&fleet);
    assert_eq!(exp["r01-n01"].gpu_model, "H100");
    assert_eq!(exp["r01-n01"].driver_version.as_deref(), Some("580.159.04"));
    let invs: BTreeMap<String, Inventory> = ["r01-n01", "r02-n02"]
        .into_iter()
        .map(|n| (n.to_string(), fixture(HEALTHY, n)))
        .collect();
    let drift = drift_findings(&fleet, &invs);
    assert_eq!(drift.len(), 1, "{drift:#?}");
    assert_eq!(drift[0].kind, FindingKind::GpuDrift);
    assert_eq!(drift[0].node, "r02-n02");
    assert_eq!(
        drift[0].message,
        "pool mig expects all-1g.10gb on node r02-n02, GPU 0 has MIG disabled"
    );
}

#[tokio::test]
async fn a_failed_node_swapped_out_by_the_suggested_edit_stays_cordoned_as_a_spare_until_healthy() {
    let fleet = fleet();
    let w = applied(&fleet).await;
    let cs = conditions(&fleet, &[("r01-n02", ECC_FAILED)]);
    w.apply(&breakfix::assess(&fleet, &cs)).await;
    let reason = w.kube.world().objects[&node("r01-n02")]
        .pointer("/object/metadata/annotations/gpu.fleetform.dev~1cordon-reason")
        .and_then(|v| v.as_str())
        .unwrap()
        .to_string();

    // The suggested edit, committed: r01-s01 serves, r01-n02 is a spare.
    let swapped = parse(
        fleet_text()
            .replace(
                "hosts: [r01-n01, r01-n02, r02-n01]\n  spares: [r02-s01, r01-s01]",
                "hosts: [r01-n01, r01-s01, r02-n01]\n  spares: [r02-s01, r01-n02]",
            )
            .replace(
                "metadata: {name: r01-n02}\nspec:\n  rack: r01\n  bmc:\n    endpoint: http://127.0.0.1:8000\n    systemId: r01-n02\n    credentials: {username: admin, password: {env: BMC_PASSWORD}}\n  gpu: {model: H100, count: 1}\n",
                "metadata: {name: r01-n02}\nspec:\n  rack: r01\n  bmc:\n    endpoint: http://127.0.0.1:8000\n    systemId: r01-n02\n    credentials: {username: admin, password: {env: BMC_PASSWORD}}\n  gpu: {model: H100, count: 1}\n  spare: true\n",
            )
            .replace("  spare: true\n---\napiVersion: fleetform.dev/v1alpha1\nkind: Host\nmetadata: {name: r02-n01}", "---\napiVersion: fleetform.dev/v1alpha1\nkind: Host\nmetadata: {name: r02-n01}"),
    );
    assert_eq!(swapped.members("train"), ["r01-n01", "r01-s01", "r02-n01"]);
    let mut cs = conditions(&swapped, &[("r01-n02", ECC_FAILED)]);
    set_cordoned(&mut cs, "r01-n02", Some(&reason));
    let bf = breakfix::assess(&swapped, &cs);
    assert!(bf.cordons["r01-n02"].held);
    let compiled = compile::compile(&swapped, &NoSecrets).unwrap().resources;
    assert!(
        compiled.iter().all(|d| d.id != node("r01-n02")),
        "no longer a pool Node"
    );
    let desired = bf.desired(&compiled);
    let held = desired
        .iter()
        .find(|d| d.id == node("r01-n02"))
        .expect("kept");
    assert_eq!(held.spec["adopt"], true);
    assert_eq!(held.spec["object"]["spec"]["unschedulable"], true);
    assert!(
        held.spec["object"]["metadata"].get("labels").is_none(),
        "pool labels dropped"
    );

    // Repaired: a fresh healthy report releases the cordon (a planned, consented prune).
    let mut cs = conditions(&swapped, &[]);
    set_cordoned(&mut cs, "r01-n02", Some(&reason));
    let bf = breakfix::assess(&swapped, &cs);
    assert!(bf.cordons.is_empty());
    assert!(bf.released[&node("r01-n02")].starts_with("uncordon: spare r01-n02"));
}
