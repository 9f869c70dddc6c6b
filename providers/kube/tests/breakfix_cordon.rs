//! Break/fix cordons through the kube provider against a real kube-apiserver
//! (tests/peers/kube.sh start): the Node change `engine::breakfix` plans is an
//! ordinary server-side apply of the adopted Node; releasing it uncordons only
//! what fleetform alone cordoned.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;

use common::{admin_client, kubeconfig, unique};
use fleetform_engine::breakfix::{BreakFix, CORDON_REASON_ANNOTATION, Cordon, node_id};
use fleetform_engine::provider::{
    Action, ApplyContext, ApplyRequest, Change, ObserveRequest, Provider,
};
use fleetform_engine::resource::Desired;
use fleetform_kube::{ClusterConfig, KubeProvider};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

const CLUSTER: &str = "acme";

async fn plan(p: &KubeProvider, d: &Desired) -> Change {
    let req = ObserveRequest {
        id: &d.id,
        spec: &d.spec,
        desired: true,
        unchanged: false,
    };
    let observed = p
        .observe(std::slice::from_ref(&req))
        .await
        .remove(0)
        .unwrap();
    p.diff(d, observed.as_ref()).unwrap()
}

async fn converge(p: &KubeProvider, d: &Desired) -> Change {
    let change = plan(p, d).await;
    let req = ApplyRequest {
        change: &change,
        desired: Some(d),
        last_applied: Some(&d.spec),
        observed: None,
    };
    p.apply(&req, &ApplyContext::default()).await.unwrap();
    assert_eq!(plan(p, d).await.action, Action::NoOp, "re-plan is empty");
    change
}

#[tokio::test]
async fn a_planned_cordon_cordons_the_node_and_a_healthy_report_uncordons_only_fleetforms_cordon() {
    let Some(kc) = kubeconfig() else { return };
    let p = KubeProvider::new(BTreeMap::from([(
        CLUSTER.to_string(),
        ClusterConfig::new(&kc),
    )]));
    let nodes: Api<Node> = Api::all(admin_client(&kc).await);
    let node = unique("gpu-failed");
    nodes
        .create(
            &PostParams {
                field_manager: Some("kubelet".into()),
                ..Default::default()
            },
            &serde_json::from_value(json!({"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": node, "labels": {"kubernetes.io/hostname": node}}}))
            .unwrap(),
        )
        .await
        .unwrap();

    // The adopted Node as compile makes it for a pool member.
    let id = node_id(CLUSTER, &node);
    let compiled = vec![Desired::new(
        id.clone(),
        json!({"cluster": CLUSTER, "adopt": true, "object": {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": node, "labels": {"fleetform.dev/pool": "train"}}}}),
    )];
    assert_eq!(
        id,
        fleetform_kube::object_id(CLUSTER, &compiled[0].spec["object"])
    );
    converge(&p, &compiled[0]).await;

    // A failed report: the plan's Node change sets the cordon and its reason.
    let reason = "cordon: node x failed: GPU 0: 3 uncorrectable volatile ECC errors";
    let bf = BreakFix {
        cordons: BTreeMap::from([(
            node.clone(),
            Cordon {
                id: id.clone(),
                pool: "train".into(),
                reason: reason.into(),
                held: false,
            },
        )]),
        ..BreakFix::default()
    };
    let cordoned = bf.desired(&compiled);
    let change = converge(&p, &cordoned[0]).await;
    assert_eq!(change.action, Action::Update);
    let mut paths: Vec<&str> = change.fields.iter().map(|f| f.path.as_str()).collect();
    paths.sort();
    // A Node without annotations shows the whole (new) annotations map.
    assert_eq!(paths.len(), 2, "{paths:?}");
    assert!(
        "/metadata/annotations/gpu.fleetform.dev~1cordon-reason".starts_with(paths[0]),
        "{paths:?}"
    );
    assert_eq!(paths[1], "/spec/unschedulable");
    let live = nodes.get(&node).await.unwrap();
    assert_eq!(live.spec.as_ref().and_then(|s| s.unschedulable), Some(true));
    assert_eq!(
        live.metadata
            .annotations
            .unwrap_or_default()
            .get(CORDON_REASON_ANNOTATION)
            .map(String::as_str),
        Some(reason)
    );

    // A fresh healthy report: fleetform drops its claim and the node is schedulable again.
    let change = converge(&p, &compiled[0]).await;
    assert_eq!(
        change.action,
        Action::Update,
        "the release is a planned change"
    );
    let live = nodes.get(&node).await.unwrap();
    assert_ne!(live.spec.as_ref().and_then(|s| s.unschedulable), Some(true));
    assert!(
        !live
            .metadata
            .annotations
            .unwrap_or_default()
            .contains_key(CORDON_REASON_ANNOTATION)
    );

    // An operator cordons it too; fleetform's release then leaves their cordon in place.
    converge(&p, &cordoned[0]).await;
    nodes
        .patch(
            &node,
            &PatchParams::apply("ops-oncall").force(),
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": node}, "spec": {"unschedulable": true}})),
        )
        .await
        .unwrap();
    converge(&p, &compiled[0]).await;
    let live = nodes.get(&node).await.unwrap();
    assert_eq!(
        live.spec.as_ref().and_then(|s| s.unschedulable),
        Some(true),
        "a cordon someone else owns stays"
    );

    nodes.delete(&node, &Default::default()).await.unwrap();
}
