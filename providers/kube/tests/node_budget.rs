//! Rollout budgets that count Nodes already down, against a real kube-apiserver
//! (tests/peers/kube.sh start): the provider reads a Node's cordon and Ready condition as the
//! test set them, and an apply of MIG label changes (a node drain each, bounded by the pool's
//! maxUnavailable) refuses to take a second node while one is NotReady, then goes one at a
//! time once it is back.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::{admin_client, kubeconfig, unique};
use fleetform_engine::apply::{ApplyOptions, Outcome};
use fleetform_engine::observe::Providers;
use fleetform_engine::plan::PlanOptions;
use fleetform_engine::provider::{Disruption, NodeMaintenance};
use fleetform_engine::reconcile::{ObserveOptions, make_plan, run_apply};
use fleetform_engine::resource::{Desired, ResourceId, RolloutGroup};
use fleetform_engine::state::{LocalStateStore, StateStore};
use fleetform_kube::{ClusterConfig, KubeProvider};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

const MIG: &str = "nvidia.com/mig.config";

fn provider(kubeconfig: &std::path::Path) -> KubeProvider {
    KubeProvider::new(BTreeMap::from([(
        "acme".to_string(),
        ClusterConfig::new(kubeconfig.to_path_buf()),
    )]))
}

fn node_id(name: &str) -> ResourceId {
    ResourceId::new("kube", format!("acme/v1/Node/{name}"))
}

/// Creates a Node whose kubelet reports Ready (`ready`), as the status subresource holds it.
async fn new_node(api: &Api<Node>, prefix: &str, ready: bool) -> String {
    let name = unique(prefix);
    api.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name}}))
        .unwrap(),
    )
    .await
    .unwrap();
    set_ready(api, &name, ready).await;
    name
}

async fn set_ready(api: &Api<Node>, name: &str, ready: bool) {
    let status = json!({"status": {"conditions": [{
        "type": "Ready", "status": if ready { "True" } else { "False" },
        "reason": "Test", "lastHeartbeatTime": "2026-01-01T00:00:00Z",
        "lastTransitionTime": "2026-01-01T00:00:00Z"}]}});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
}

fn label(n: &Node) -> Option<String> {
    n.metadata.labels.as_ref()?.get(MIG).cloned()
}

/// The Node as compile makes it for a MIG pool member: the mig.config label (none: the
/// manifest sets nothing on it), in the pool's rollout group.
fn member(name: &str, config: Option<&str>, max: u32) -> Desired {
    let mut object = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}});
    if let Some(c) = config {
        object["metadata"]["labels"] = json!({ MIG: c });
    }
    let mut d = Desired::new(
        node_id(name),
        json!({"cluster": "acme", "object": object, "adopt": true}),
    );
    d.rollout = Some(RolloutGroup {
        pool: "acme/mig-pool".into(),
        fault_domain: "r01".into(),
        host: name.into(),
        max_unavailable: max,
        max_unavailable_per_fault_domain: max,
    });
    d
}

#[tokio::test]
async fn the_provider_reads_a_node_as_down_when_cordoned_or_not_ready() {
    let Some(kc) = kubeconfig() else { return };
    let api: Api<Node> = Api::all(admin_client(&kc).await);
    let p = provider(&kc);
    let ready = new_node(&api, "avail-ready", true).await;
    let not_ready = new_node(&api, "avail-notready", false).await;
    let cordoned = new_node(&api, "avail-cordoned", true).await;
    api.patch(
        &cordoned,
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"unschedulable": true}})),
    )
    .await
    .unwrap();
    let ids = [
        node_id(&ready),
        node_id(&not_ready),
        node_id(&cordoned),
        node_id(&unique("avail-absent")),
    ];
    let got: Vec<_> = p
        .availability(&ids)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert!(got[0].exists && got[0].down.is_empty(), "{:?}", got[0]);
    assert_eq!(got[1].down, vec!["NotReady"]);
    assert_eq!(got[2].down, vec!["cordoned"]);
    assert!(!got[3].exists && !got[3].is_down(), "{:?}", got[3]);
}

#[tokio::test]
async fn an_apply_refuses_past_the_budget_while_a_node_is_not_ready_and_proceeds_once_it_is_back() {
    let Some(kc) = kubeconfig() else { return };
    let api: Api<Node> = Api::all(admin_client(&kc).await);
    let n1 = new_node(&api, "budget-a", true).await;
    let n2 = new_node(&api, "budget-b", true).await;
    let n3 = new_node(&api, "budget-c", false).await;
    let providers = Providers::new().with(Arc::new(provider(&kc)));
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStateStore::open(dir.path().join("state")).unwrap();
    // n3 is a member with nothing to change; n1 and n2 are partitioned.
    let desired = vec![
        member(&n1, Some("all-1g.10gb"), 1),
        member(&n2, Some("all-1g.10gb"), 1),
        member(&n3, None, 1),
    ];
    let options = ApplyOptions {
        health_poll: Duration::from_millis(50),
        budget_wait: Duration::from_millis(300),
        ..ApplyOptions::default()
    };
    let run = async || {
        let mut state = store.load().await.unwrap();
        let planned = make_plan(
            &desired,
            &state,
            &providers,
            &PlanOptions::default(),
            ObserveOptions::default(),
            Some("budget".into()),
        )
        .await
        .unwrap();
        let (_tx, cancel) = tokio::sync::watch::channel(false);
        let report = run_apply(
            &planned, &desired, &mut state, &store, &providers, &options, None, cancel,
        )
        .await
        .unwrap();
        (planned, report)
    };

    let (planned, report) = run().await;
    let c = planned
        .plan
        .changes
        .iter()
        .find(|c| c.id == node_id(&n1))
        .unwrap();
    assert_eq!(
        c.disruption,
        Disruption::NodeDrain,
        "the MIG label drains the node"
    );
    let b = &planned.plan.budgets[0];
    assert_eq!(b.down, vec![format!("{n3} (NotReady)")]);
    assert_eq!(b.can_start_now, 0);
    for n in [&n1, &n2] {
        let Outcome::Failed { error } = &report.outcomes[&node_id(n)] else {
            panic!("{n}: {report:?}")
        };
        assert!(
            error.contains(&format!("1 node(s) already down: {n3} (NotReady)")),
            "{error}"
        );
        assert_eq!(
            label(&api.get(n).await.unwrap()),
            None,
            "{n} was not touched"
        );
    }

    // The node comes back: the changes go, one at a time (maxUnavailable 1).
    set_ready(&api, &n3, true).await;
    let (planned, report) = run().await;
    assert!(
        planned.plan.budgets.is_empty(),
        "{:?}",
        planned.plan.budgets
    );
    assert!(report.succeeded(), "{report:?}");
    for n in [&n1, &n2] {
        assert_eq!(
            label(&api.get(n).await.unwrap()).as_deref(),
            Some("all-1g.10gb")
        );
    }
}
