//! Maintenance cordons around disruptive host changes, against a real
//! kube-apiserver (tests/peers/kube.sh start): the cordon is the provider's own
//! server-side apply claim (field manager `fleetform-maintenance`), so the
//! release never uncordons a Node that someone else cordoned too; and drains, which evict
//! through the eviction API as `kubectl drain` does.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{admin_client, kubeconfig, unique};
use fleetform_engine::provider::{Cordon, NodeMaintenance};
use fleetform_engine::resource::ResourceId;
use fleetform_kube::{ClusterConfig, KubeProvider, MAINTENANCE_ANNOTATION};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

async fn nodes(kubeconfig: &std::path::Path) -> Api<Node> {
    Api::all(admin_client(kubeconfig).await)
}

fn provider(kubeconfig: &std::path::Path) -> KubeProvider {
    KubeProvider::new(BTreeMap::from([(
        "acme".to_string(),
        ClusterConfig::new(kubeconfig.to_path_buf()),
    )]))
}

async fn new_node(api: &Api<Node>) -> String {
    let name = unique("maint");
    api.create(
        &PostParams::default(),
        &serde_json::from_value(
            json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}}),
        )
        .unwrap(),
    )
    .await
    .unwrap();
    name
}

fn unschedulable(n: &Node) -> bool {
    n.spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false)
}

#[tokio::test]
async fn a_node_is_cordoned_with_a_reason_and_released_by_its_own_field_manager() {
    let Some(kc) = kubeconfig() else { return };
    let api = nodes(&kc).await;
    let name = new_node(&api).await;
    let p = provider(&kc);
    let id = ResourceId::new("kube", format!("acme/v1/Node/{name}"));

    let done = p
        .cordon(&id, Some("fleetform: redfish:host/r01-n01/bios (Update)"))
        .await
        .unwrap();
    assert_eq!(done, Cordon::Done);
    let n = api.get(&name).await.unwrap();
    assert!(unschedulable(&n));
    assert_eq!(
        n.metadata.annotations.unwrap()[MAINTENANCE_ANNOTATION],
        "fleetform: redfish:host/r01-n01/bios (Update)"
    );
    let managers: Vec<String> = n
        .metadata
        .managed_fields
        .unwrap()
        .into_iter()
        .filter_map(|m| m.manager)
        .collect();
    assert!(
        managers.iter().any(|m| m == "fleetform-maintenance"),
        "{managers:?}"
    );

    p.cordon(&id, None).await.unwrap();
    let n = api.get(&name).await.unwrap();
    assert!(!unschedulable(&n), "released");
    assert!(
        !n.metadata
            .annotations
            .unwrap_or_default()
            .contains_key(MAINTENANCE_ANNOTATION)
    );
}

#[tokio::test]
async fn releasing_the_maintenance_cordon_keeps_a_cordon_someone_else_set() {
    let Some(kc) = kubeconfig() else { return };
    let api = nodes(&kc).await;
    let name = new_node(&api).await;
    let p = provider(&kc);
    let id = ResourceId::new("kube", format!("acme/v1/Node/{name}"));
    // A person ran `kubectl cordon` (its own field manager) before the BIOS change.
    api.patch(
        &name,
        &PatchParams::apply("kubectl-cordon"),
        &Patch::Apply(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}, "spec": {"unschedulable": true}})),
    )
    .await
    .unwrap();
    p.cordon(&id, Some("fleetform: bios")).await.unwrap();
    p.cordon(&id, None).await.unwrap();
    assert!(
        unschedulable(&api.get(&name).await.unwrap()),
        "still cordoned by the person"
    );
}

#[tokio::test]
async fn a_node_that_does_not_exist_yet_needs_no_cordon() {
    let Some(kc) = kubeconfig() else { return };
    let p = provider(&kc);
    let id = ResourceId::new("kube", "acme/v1/Node/not-provisioned-yet");
    assert_eq!(p.cordon(&id, Some("x")).await.unwrap(), Cordon::NoSuchNode);
}

async fn namespace(kc: &std::path::Path) -> String {
    let ns = unique("drain");
    let api: Api<Namespace> = Api::all(admin_client(kc).await);
    api.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap(),
    )
    .await
    .unwrap();
    ns
}

/// A pod bound to `node` (no scheduler needed); a grace period of 0 lets the apiserver remove
/// it on eviction without a kubelet.
async fn pod_on(api: &Api<Pod>, name: &str, node: &str, extra: serde_json::Value) {
    let mut pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"nodeName": node, "terminationGracePeriodSeconds": 0,
                 "containers": [{"name": "c", "image": "nvcr.io/nvidia/cuda:12.4.1-base"}]}
    });
    if let (Some(meta), Some(extra)) = (pod["metadata"].as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            meta.insert(k.clone(), v.clone());
        }
    }
    api.create(
        &PostParams::default(),
        &serde_json::from_value(pod).unwrap(),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn a_drain_evicts_workloads_but_leaves_daemonset_and_static_pods() {
    let Some(kc) = kubeconfig() else { return };
    let node = new_node(&nodes(&kc).await).await;
    let other = new_node(&nodes(&kc).await).await;
    let ns = namespace(&kc).await;
    let pods: Api<Pod> = Api::namespaced(admin_client(&kc).await, &ns);
    pod_on(&pods, "train-0", &node, json!({})).await;
    pod_on(&pods, "train-1", &node, json!({})).await;
    pod_on(
        &pods,
        "dcgm-exporter",
        &node,
        json!({"ownerReferences": [{"apiVersion": "apps/v1",
        "kind": "DaemonSet", "name": "dcgm-exporter", "uid": "00000000-0000-0000-0000-000000000001",
        "controller": true}]}),
    )
    .await;
    pod_on(
        &pods,
        "static",
        &node,
        json!({"annotations": {"kubernetes.io/config.mirror": "x"}}),
    )
    .await;
    pod_on(&pods, "elsewhere", &other, json!({})).await;

    let p = provider(&kc);
    let id = ResourceId::new("kube", format!("acme/v1/Node/{node}"));
    p.cordon(&id, Some("fleetform: bios")).await.unwrap();
    p.drain(&id, Duration::from_secs(30)).await.unwrap();

    let left: Vec<String> = pods
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    assert_eq!(left, ["dcgm-exporter", "elsewhere", "static"]);
}

#[tokio::test]
async fn a_drain_a_disruption_budget_refuses_fails_at_its_deadline_naming_the_pod() {
    let Some(kc) = kubeconfig() else { return };
    let node = new_node(&nodes(&kc).await).await;
    let ns = namespace(&kc).await;
    let client = admin_client(&kc).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    pod_on(
        &pods,
        "guarded",
        &node,
        json!({"labels": {"app": "guarded"}}),
    )
    .await;
    // Running and ready, as a kubelet would report it: a pending pod is evicted whatever its
    // budget says.
    pods.patch_status(
        "guarded",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Running",
            "conditions": [{"type": "Ready", "status": "True"}]}})),
    )
    .await
    .unwrap();
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client, &ns);
    pdbs.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "keep-one"},
            "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "guarded"}}}}))
        .unwrap(),
    )
    .await
    .unwrap();

    let p = provider(&kc);
    let id = ResourceId::new("kube", format!("acme/v1/Node/{node}"));
    let err = p.drain(&id, Duration::from_secs(3)).await.unwrap_err();
    let message = err.to_string();
    assert!(message.contains(&format!("{ns}/guarded")), "{message}");
    assert!(message.contains("eviction refused"), "{message}");
    assert!(message.contains("disruption budget"), "{message}");
    assert!(!err.is_transient());
    assert!(
        pods.get_opt("guarded").await.unwrap().is_some(),
        "not evicted"
    );
}

#[tokio::test]
async fn a_node_that_does_not_exist_has_nothing_to_drain() {
    let Some(kc) = kubeconfig() else { return };
    let p = provider(&kc);
    let id = ResourceId::new("kube", "acme/v1/Node/not-provisioned-yet");
    p.drain(&id, Duration::from_secs(5)).await.unwrap();
}
