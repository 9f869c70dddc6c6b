//! Maintenance cordons around disruptive host changes, against a real
//! kube-apiserver (tests/peers/kube.sh start): the cordon is the provider's own
//! server-side apply claim (field manager `fleetform-maintenance`), so the
//! release never uncordons a Node that someone else cordoned too.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;

use common::{admin_client, kubeconfig, unique};
use fleetform_engine::provider::{Cordon, Provider};
use fleetform_engine::resource::ResourceId;
use fleetform_kube::{ClusterConfig, KubeProvider, MAINTENANCE_ANNOTATION};
use k8s_openapi::api::core::v1::Node;
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
