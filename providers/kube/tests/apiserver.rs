//! The kube provider against a real kube-apiserver (tests/peers/kube.sh start).
//!
//! Every test uses its own namespace or object names, so tests run in parallel and leave the
//! server reusable. Each one spells idempotency out as steps: apply, re-plan (NoOp), change one
//! field out of band, and only that field shows.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use common::{admin_client, kubeconfig, unique};
use fleetform_engine::provider::{
    Action, ApplyContext, ApplyRequest, Change, Health, ObserveRequest, Provider, ProviderError,
};
use fleetform_engine::resource::Desired;
use fleetform_kube::{ClusterConfig, KubeProvider, object_id};
use k8s_openapi::api::core::v1::{ConfigMap, Node};
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::discovery::ApiResource;
use serde_json::{Value, json};

const CLUSTER: &str = "acme";

fn provider_for(config: ClusterConfig) -> KubeProvider {
    KubeProvider::new(BTreeMap::from([(CLUSTER.to_string(), config)]))
}

fn desired(object: Value) -> Desired {
    desired_with(object, json!({}))
}

fn desired_with(object: Value, extra: Value) -> Desired {
    let mut spec = json!({"cluster": CLUSTER, "object": object});
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    Desired::new(object_id(CLUSTER, &spec["object"]), spec)
}

async fn plan(p: &KubeProvider, d: &Desired) -> Result<Change, ProviderError> {
    let req = ObserveRequest {
        id: &d.id,
        spec: &d.spec,
        desired: true,
        unchanged: false,
    };
    let observed = p.observe(std::slice::from_ref(&req)).await.remove(0)?;
    p.diff(d, observed.as_ref())
}

async fn apply(p: &KubeProvider, d: &Desired, change: &Change) -> Result<(), ProviderError> {
    let req = ApplyRequest {
        change,
        desired: Some(d),
        last_applied: Some(&d.spec),
        observed: None,
    };
    p.apply(&req, &ApplyContext::default()).await.map(|_| ())
}

async fn delete(p: &KubeProvider, d: &Desired) -> Result<(), ProviderError> {
    let change = Change::new(d.id.clone(), Action::Delete);
    let req = ApplyRequest {
        change: &change,
        desired: None,
        last_applied: Some(&d.spec),
        observed: None,
    };
    p.apply(&req, &ApplyContext::default()).await.map(|_| ())
}

/// Plans, applies, and checks that a second plan is a NoOp.
async fn converge(p: &KubeProvider, d: &Desired) {
    let change = plan(p, d)
        .await
        .unwrap_or_else(|e| panic!("plan {}: {e}", d.id));
    assert_ne!(
        change.action,
        Action::NoOp,
        "{}: fresh object planned as NoOp",
        d.id
    );
    apply(p, d, &change)
        .await
        .unwrap_or_else(|e| panic!("apply {}: {e}", d.id));
    let again = plan(p, d)
        .await
        .unwrap_or_else(|e| panic!("re-plan {}: {e}", d.id));
    assert_eq!(
        again.action,
        Action::NoOp,
        "{}: re-plan after apply is not a NoOp: {:#?}",
        d.id,
        again.fields
    );
}

fn namespace(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
}

fn cluster_policy(name: &str) -> Value {
    json!({
        "apiVersion": "nvidia.com/v1", "kind": "ClusterPolicy", "metadata": {"name": name},
        "spec": {
            "operator": {"defaultRuntime": "containerd"},
            "daemonsets": {"updateStrategy": "RollingUpdate"},
            "driver": {"enabled": true, "version": "580.95.05"},
            "toolkit": {"enabled": true},
            "devicePlugin": {"enabled": true},
            "dcgm": {}, "dcgmExporter": {}, "gfd": {}, "nodeStatusExporter": {},
            "migManager": {"enabled": true, "config": {"name": "custom-mig-parted-config", "default": "all-disabled"}},
            "mig": {"strategy": "mixed"}
        }
    })
}

#[tokio::test]
async fn apply_then_replan_is_noop_for_every_kind() {
    let Some(kc) = kubeconfig() else { return };
    let p = provider_for(ClusterConfig::new(&kc));
    let ns = unique("kinds");
    let objects = [
        namespace(&ns),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "mig-config", "namespace": ns,
            "labels": {"app.kubernetes.io/managed-by": "fleetform"}},
            "data": {"config.yaml": "version: v1\nmig-configs:\n  all-disabled:\n  - devices: all\n    mig-enabled: false\n"}}),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "ngc-api", "namespace": ns},
            "type": "Opaque", "stringData": {"NGC_API_KEY": "nvapi-test-not-a-secret"}, "data": {"extra": "ZXh0cmE="}}),
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "fleetform", "namespace": ns}}),
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": ns},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": "nginx:1.27", "ports": [{"containerPort": 80}],
                        "resources": {"limits": {"cpu": "500m", "memory": "1Gi"}}}]}}}}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "cm-edit", "namespace": ns},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "patch", "create"]}]}),
        cluster_policy(&unique("cluster-policy")),
        json!({"apiVersion": "apps.nvidia.com/v1alpha1", "kind": "NIMService", "metadata": {"name": "llm", "namespace": ns},
            "spec": {"authSecret": "ngc-api", "image": {"repository": "nvcr.io/nim/meta/llama-3.1-8b-instruct", "tag": "1.3.3",
                "pullSecrets": ["ngc-secret"]}, "storage": {"pvc": {"create": true, "size": "20Gi", "volumeAccessMode": "ReadWriteOnce"}},
                "replicas": 1, "resources": {"limits": {"nvidia.com/gpu": 1}}, "expose": {"service": {"type": "ClusterIP", "port": 8000}}}}),
        json!({"apiVersion": "scheduling.run.ai/v2", "kind": "Queue", "metadata": {"name": unique("team-a")},
            "spec": {"resources": {"gpu": {"quota": 8, "limit": -1, "overQuotaWeight": 1},
                "cpu": {"quota": -1, "limit": -1, "overQuotaWeight": 1}, "memory": {"quota": -1, "limit": -1, "overQuotaWeight": 1}}}}),
        json!({"apiVersion": "mellanox.com/v1alpha1", "kind": "NicClusterPolicy", "metadata": {"name": unique("nic-cluster-policy")},
            "spec": {"ofedDriver": {"image": "doca-driver", "repository": "nvcr.io/nvidia/mellanox",
                "version": "doca3.4.1-26.04-1.1.0.0-1", "upgradePolicy": {"autoUpgrade": true, "maxParallelUpgrades": 1}},
                "nvIpam": {"image": "nvidia-k8s-ipam", "repository": "nvcr.io/nvidia/mellanox", "version": "network-operator-v26.4.1",
                    "enableWebhook": false}}}),
        json!({"apiVersion": "karpenter.sh/v1", "kind": "NodePool", "metadata": {"name": unique("h100-train")},
            "spec": {"template": {"metadata": {"labels": {"nvidia.com/mig.config": "all-disabled"}},
                "spec": {"nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "gpu"},
                    "requirements": [{"key": "node.kubernetes.io/instance-type", "operator": "In", "values": ["p5.48xlarge"]}],
                    "taints": [{"key": "nvidia.com/gpu", "effect": "NoSchedule"}]}},
                "limits": {"nvidia.com/gpu": 64}, "disruption": {"consolidationPolicy": "WhenEmpty", "consolidateAfter": "10m"}}}),
        json!({"apiVersion": "resource.nvidia.com/v1beta1", "kind": "ComputeDomain", "metadata": {"name": "imex", "namespace": ns},
            "spec": {"numNodes": 0, "channel": {"resourceClaimTemplate": {"name": "imex-channel"}}}}),
        json!({"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": {"name": "llm", "namespace": ns},
            "spec": {"scaleTargetRef": {"name": "web"}, "minReplicaCount": 1, "maxReplicaCount": 4,
                "triggers": [{"type": "prometheus", "metadata": {"serverAddress": "http://prometheus:9090",
                    "query": "sum(rate(requests[1m]))", "threshold": "100"}}]}}),
        json!({"apiVersion": "metal3.io/v1alpha1", "kind": "BareMetalHost", "metadata": {"name": "r01-n01", "namespace": ns},
            "spec": {"online": true, "bootMACAddress": "52:54:00:00:00:01",
                "bmc": {"address": "redfish+https://10.0.0.1/redfish/v1/Systems/1", "credentialsName": "r01-n01-bmc"}}}),
    ];
    for object in objects {
        converge(&p, &desired(object)).await;
    }

    // Health: a Namespace is Active at once; a Deployment without a controller never rolls out;
    // a ClusterPolicy is ready only when the GPU operator says so.
    let d = desired(namespace(&ns));
    assert_eq!(p.health(&d.id, &d.spec).await.unwrap(), Health::Ready);
    let dep = desired(
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": ns}}),
    );
    assert!(matches!(
        p.health(&dep.id, &dep.spec).await.unwrap(),
        Health::Progressing(_)
    ));
    let crd = desired(
        json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "clusterpolicies.nvidia.com"}}),
    );
    assert_eq!(p.health(&crd.id, &crd.spec).await.unwrap(), Health::Ready);
}

#[tokio::test]
async fn cluster_policy_is_ready_when_the_operator_reports_ready() {
    let Some(kc) = kubeconfig() else { return };
    let p = provider_for(ClusterConfig::new(&kc));
    let name = unique("cluster-policy");
    let d = desired(cluster_policy(&name));
    converge(&p, &d).await;
    assert!(matches!(
        p.health(&d.id, &d.spec).await.unwrap(),
        Health::Progressing(_)
    ));
    // Play the GPU operator: write status.state through the status subresource.
    let client = admin_client(&kc).await;
    let ar = ApiResource::from_gvk(&kube::core::GroupVersionKind::gvk(
        "nvidia.com",
        "v1",
        "ClusterPolicy",
    ));
    let api: Api<DynamicObject> = Api::all_with(client, &ar);
    let status = json!({"apiVersion": "nvidia.com/v1", "kind": "ClusterPolicy", "metadata": {"name": name},
        "status": {"state": "ready", "namespace": "gpu-operator"}});
    api.patch_status(
        &name,
        &PatchParams::apply("gpu-operator").force(),
        &Patch::Apply(&status),
    )
    .await
    .expect("status");
    assert_eq!(p.health(&d.id, &d.spec).await.unwrap(), Health::Ready);
    // The operator's status write is not drift.
    assert_eq!(plan(&p, &d).await.unwrap().action, Action::NoOp);

    // A driver rollout: the upgrade controller labels each GPU node with its state. Ready
    // means every labelled node is upgrade-done; a failed node fails the change, naming it.
    // (In this test, not one of its own: another test reading ClusterPolicy health would see
    // these nodes.)
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(admin_client(&kc).await);
    let node = unique("gpu-node");
    let label = |state: &str| {
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": node,
            "labels": {"nvidia.com/gpu-driver-upgrade-state": state}}})
    };
    let set = |state: &'static str| {
        let (nodes, node, body) = (nodes.clone(), node.clone(), label(state));
        async move {
            nodes
                .patch(
                    &node,
                    &PatchParams::apply("upgrade-controller").force(),
                    &Patch::Apply(&body),
                )
                .await
                .expect("label node");
        }
    };
    set("upgrade-required").await;
    let h = p.health(&d.id, &d.spec).await.unwrap();
    assert!(
        matches!(&h, Health::Progressing(m) if m.contains(&format!("{node} (upgrade-required)"))),
        "{h:?}"
    );
    set("upgrade-failed").await;
    let h = p.health(&d.id, &d.spec).await.unwrap();
    assert!(
        matches!(&h, Health::Failed(m) if m.contains(&node)),
        "{h:?}"
    );
    set("upgrade-done").await;
    let h = p.health(&d.id, &d.spec).await.unwrap();
    nodes
        .delete(&node, &Default::default())
        .await
        .expect("delete node");
    assert_eq!(h, Health::Ready);
}

#[tokio::test]
async fn a_field_changed_by_another_manager_is_drift_naming_that_manager() {
    let Some(kc) = kubeconfig() else { return };
    let p = provider_for(ClusterConfig::new(&kc));
    let ns = unique("drift");
    converge(&p, &desired(namespace(&ns))).await;
    let cm = |data: Value| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "plugin-config", "namespace": ns}, "data": data});
    let d = desired(cm(json!({"a": "1", "b": "2"})));
    converge(&p, &d).await;

    // Someone edits one field with their own field manager, taking it over.
    let api: Api<ConfigMap> = Api::namespaced(admin_client(&kc).await, &ns);
    let edit = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "plugin-config"}, "data": {"a": "edited"}});
    api.patch(
        "plugin-config",
        &PatchParams::apply("kubectl-edit").force(),
        &Patch::Apply(&edit),
    )
    .await
    .expect("edit");

    let change = plan(&p, &d).await.expect("plan");
    assert_eq!(change.action, Action::Update);
    assert_eq!(change.fields.len(), 1, "{:#?}", change.fields);
    let f = &change.fields[0];
    assert_eq!(f.path, "/data/a");
    assert_eq!(
        (f.before.clone(), f.after.clone()),
        (Some(json!("edited")), Some(json!("1")))
    );
    assert_eq!(f.changed_by.as_deref(), Some("kubectl-edit"));

    // Without force, fleetform does not take the field back: the conflict names the manager.
    let err = apply(&p, &d, &change).await.expect_err("conflict");
    assert!(!err.is_transient());
    assert!(
        err.message.contains("kubectl-edit") && err.message.contains(".data.a"),
        "{}",
        err.message
    );

    // With force it does, and the next plan is clean.
    let forced = desired_with(cm(json!({"a": "1", "b": "2"})), json!({"force": true}));
    apply(&p, &forced, &plan(&p, &forced).await.expect("plan"))
        .await
        .expect("forced apply");
    assert_eq!(plan(&p, &forced).await.expect("plan").action, Action::NoOp);

    // A field dropped from the manifest shows as a removal of a field fleetform owns.
    let smaller = desired(cm(json!({"a": "1"})));
    let change = plan(&p, &smaller).await.expect("plan");
    assert_eq!(change.action, Action::Update);
    assert_eq!(
        change
            .fields
            .iter()
            .map(|f| (f.path.as_str(), f.after.clone()))
            .collect::<Vec<_>>(),
        [("/data/b", None)]
    );
    converge_existing(&p, &smaller).await;
}

async fn converge_existing(p: &KubeProvider, d: &Desired) {
    let change = plan(p, d).await.expect("plan");
    apply(p, d, &change).await.expect("apply");
    assert_eq!(plan(p, d).await.expect("re-plan").action, Action::NoOp);
}

#[tokio::test]
async fn secret_values_never_appear_in_plans() {
    let Some(kc) = kubeconfig() else { return };
    let p = provider_for(ClusterConfig::new(&kc));
    let ns = unique("secret");
    converge(&p, &desired(namespace(&ns))).await;
    let secret = |key: &str| {
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "ngc", "namespace": ns},
            "stringData": {"NGC_API_KEY": key}})
    };
    converge(&p, &desired(secret("nvapi-first-canary"))).await;
    let d = desired(secret("nvapi-second-canary"));
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
        .expect("observe");
    let change = p.diff(&d, observed.as_ref()).expect("diff");
    assert_eq!(change.action, Action::Update);
    assert_eq!(change.fields.len(), 1);
    assert!(change.fields[0].sensitive);
    let rendered = format!(
        "{}{}",
        serde_json::to_string(&change).unwrap(),
        serde_json::to_string(&observed).unwrap()
    );
    for canary in [
        "nvapi-first-canary",
        "nvapi-second-canary",
        "bnZhcGktZmlyc3QtY2FuYXJ5",
        "bnZhcGktc2Vjb25kLWNhbmFyeQ",
    ] {
        assert!(
            !rendered.contains(canary),
            "secret {canary} leaked into the plan or observation"
        );
    }
}

#[tokio::test]
async fn prune_deletes_only_objects_fleetform_manages() {
    let Some(kc) = kubeconfig() else { return };
    let p = provider_for(ClusterConfig::new(&kc));
    let ns = unique("prune");
    converge(&p, &desired(namespace(&ns))).await;
    let cm = |name: &str| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": ns}, "data": {"k": "v"}});

    let ours = desired(cm("ours"));
    converge(&p, &ours).await;
    delete(&p, &ours).await.expect("delete ours");
    assert_eq!(
        plan(&p, &ours).await.expect("plan").action,
        Action::Create,
        "the object is gone"
    );
    delete(&p, &ours)
        .await
        .expect("deleting a missing object is a success");

    // Another tool's object of the same shape is refused.
    let api: Api<ConfigMap> = Api::namespaced(admin_client(&kc).await, &ns);
    api.patch(
        "theirs",
        &PatchParams::apply("helm"),
        &Patch::Apply(&cm("theirs")),
    )
    .await
    .expect("helm apply");
    let theirs = desired(cm("theirs"));
    let err = delete(&p, &theirs).await.expect_err("refused");
    assert!(!err.is_transient());
    assert!(
        err.message.contains("does not manage it") && err.message.contains("helm"),
        "{}",
        err.message
    );
    assert!(
        api.get_opt("theirs").await.expect("get").is_some(),
        "the object must survive"
    );
}

#[tokio::test]
async fn a_crd_schema_violation_fails_observe_with_the_servers_reason() {
    let Some(kc) = kubeconfig() else { return };
    let p = provider_for(ClusterConfig::new(&kc));
    let mut bad = cluster_policy(&unique("cluster-policy"));
    bad["spec"]["driver"]["enabled"] = json!("yes");
    let err = plan(&p, &desired(bad)).await.expect_err("invalid");
    assert!(!err.is_transient(), "{err:?}");
    assert!(
        err.message.contains("spec.driver.enabled") && err.message.contains("boolean"),
        "{}",
        err.message
    );

    // Strict field validation: an unknown field is an error, not silently pruned.
    let mut unknown = cluster_policy(&unique("cluster-policy"));
    unknown["spec"]["driver"]["enabeld"] = json!(true);
    let err = plan(&p, &desired(unknown))
        .await
        .expect_err("unknown field");
    assert!(!err.is_transient());
    assert!(
        err.message.contains("spec.driver.enabeld"),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn a_tenant_without_rbac_gets_a_clear_forbidden_error() {
    let Some(kc) = kubeconfig() else { return };
    let admin = provider_for(ClusterConfig::new(&kc));
    let ns = unique("tenant-acme");
    converge(&admin, &desired(namespace(&ns))).await;
    let sa = format!("system:serviceaccount:{ns}:fleetform");
    // The tenant's service account may edit ConfigMaps in its namespace, nothing else.
    converge(&admin, &desired(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "fleetform", "namespace": ns},
        "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "create", "patch", "delete"]}]}))).await;
    converge(
        &admin,
        &desired(
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "fleetform", "namespace": ns},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "fleetform"},
        "subjects": [{"kind": "ServiceAccount", "name": "fleetform", "namespace": ns}]}),
        ),
    )
    .await;

    let tenant = provider_for(ClusterConfig::new(&kc).impersonating(&sa));
    converge(
        &tenant,
        &desired(json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "allowed", "namespace": ns}, "data": {"k": "v"}})),
    )
    .await;
    let err = plan(&tenant, &desired(cluster_policy("cluster-policy")))
        .await
        .expect_err("forbidden");
    assert!(!err.is_transient());
    assert!(
        err.message.contains(&format!("service account {sa}"))
            && err
                .message
                .contains("ClusterPolicy cluster-policy in cluster acme (RBAC forbidden)"),
        "{}",
        err.message
    );

    // A tenant token without any binding.
    if let Some(tkc) = std::env::var_os("FLEETFORM_TEST_KUBE_TENANT_KUBECONFIG") {
        let tenant = provider_for(ClusterConfig::new(PathBuf::from(tkc)));
        let err = plan(&tenant, &desired(cluster_policy("cluster-policy")))
            .await
            .expect_err("forbidden");
        assert!(!err.is_transient());
        assert!(
            err.message.contains("user tenant-acme may not"),
            "{}",
            err.message
        );
    }
}

#[tokio::test]
async fn an_unreachable_apiserver_is_a_transient_error() {
    let Some(kc) = kubeconfig() else { return };
    // The same kubeconfig, pointed at a closed port.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = closed.local_addr().expect("addr").port();
    drop(closed);
    let text = std::fs::read_to_string(&kc).expect("read kubeconfig");
    let dir = tempfile::tempdir().expect("tempdir");
    let moved = dir.path().join("kubeconfig");
    let server = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: "))
        .expect("server line")
        .to_string();
    std::fs::write(
        &moved,
        text.replace(&server, &format!("https://127.0.0.1:{port}")),
    )
    .expect("write");
    let p = provider_for(ClusterConfig::new(&moved));
    let err = plan(&p, &desired(namespace("anything")))
        .await
        .expect_err("unreachable");
    assert!(err.is_transient(), "{err}");
    assert!(
        err.message.contains("cannot reach cluster acme"),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn node_labels_and_cordon_are_applied_to_an_adopted_node() {
    let Some(kc) = kubeconfig() else { return };
    let p = provider_for(ClusterConfig::new(&kc));
    let node = unique("gpu-node");
    let nodes: Api<Node> = Api::all(admin_client(&kc).await);
    // The kubelet registers the node and the operators label it.
    let registered = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": node,
        "labels": {"kubernetes.io/hostname": node, "nvidia.com/gpu.present": "true", "nvidia.com/gpu.deploy.driver": "true"}}});
    nodes
        .create(
            &PostParams {
                field_manager: Some("kubelet".into()),
                ..Default::default()
            },
            &serde_json::from_value(registered).expect("node"),
        )
        .await
        .expect("register node");

    let adopted = |labels: Value, spec: Value| {
        desired_with(
            json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": node, "labels": labels}, "spec": spec}),
            json!({"adopt": true}),
        )
    };
    let d = adopted(
        json!({"nvidia.com/mig.config": "all-1g.10gb"}),
        json!({"unschedulable": true, "taints": [{"key": "fleetform.dev/maintenance", "value": "mig", "effect": "NoSchedule"}]}),
    );
    let change = plan(&p, &d).await.expect("plan");
    assert_eq!(
        change.action,
        Action::Update,
        "an adopted object is never created"
    );
    let mut paths: Vec<&str> = change.fields.iter().map(|f| f.path.as_str()).collect();
    paths.sort();
    // Node taints are an atomic list in Kubernetes' schema: the apiserver's TaintNodesByCondition
    // admission put `node.kubernetes.io/not-ready` there, and owning taints means owning the list.
    assert!(
        paths.contains(&"/metadata/labels/nvidia.com~1mig.config")
            && paths.contains(&"/spec/unschedulable"),
        "{paths:?}"
    );
    assert!(
        paths
            .iter()
            .all(|p| p.starts_with("/metadata/labels/nvidia.com~1mig.config")
                || p.starts_with("/spec/")),
        "{paths:?}"
    );
    apply(&p, &d, &change).await.expect("apply");
    assert_eq!(plan(&p, &d).await.expect("re-plan").action, Action::NoOp);

    let live = nodes.get(&node).await.expect("node");
    let labels = live.metadata.labels.unwrap_or_default();
    assert_eq!(
        labels.get("nvidia.com/mig.config").map(String::as_str),
        Some("all-1g.10gb")
    );
    assert_eq!(
        labels
            .get("nvidia.com/gpu.deploy.driver")
            .map(String::as_str),
        Some("true"),
        "operator label kept"
    );
    assert_eq!(live.spec.and_then(|s| s.unschedulable), Some(true));

    // The operator flips its own label: no drift for fleetform.
    let pause = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": node,
        "labels": {"nvidia.com/gpu.deploy.driver": "paused-for-mig-change"}}});
    nodes
        .patch(
            &node,
            &PatchParams::apply("nvidia-mig-manager").force(),
            &Patch::Apply(&pause),
        )
        .await
        .expect("operator label");
    assert_eq!(plan(&p, &d).await.expect("plan").action, Action::NoOp);

    // Operator-owned labels are refused in the manifest.
    let err = plan(
        &p,
        &adopted(json!({"nvidia.com/mig.config.state": "success"}), json!({})),
    )
    .await
    .expect_err("refused");
    assert!(
        err.message.contains("nvidia.com/mig.config.state"),
        "{}",
        err.message
    );

    // Releasing (prune of an adopted object) removes fleetform's fields, keeps the node.
    delete(&p, &d).await.expect("release");
    let live = nodes.get(&node).await.expect("node survives");
    assert!(
        !live
            .metadata
            .labels
            .unwrap_or_default()
            .contains_key("nvidia.com/mig.config")
    );
    assert_ne!(live.spec.and_then(|s| s.unschedulable), Some(true));

    // A node that does not exist is a permanent error.
    let missing = desired_with(
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": unique("no-such-node"),
        "labels": {"nvidia.com/mig.config": "all-disabled"}}}),
        json!({"adopt": true}),
    );
    let err = plan(&p, &missing).await.expect_err("missing node");
    assert!(!err.is_transient());
    assert!(
        err.message.contains("node no-such-node") && err.message.contains("not found"),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn an_immutable_field_change_plans_a_replace() {
    let Some(kc) = kubeconfig() else { return };
    let p = provider_for(ClusterConfig::new(&kc));
    let ns = unique("replace");
    converge(&p, &desired(namespace(&ns))).await;
    let deployment = |app: &str| {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "dcgm", "namespace": ns},
            "spec": {"selector": {"matchLabels": {"app": app}}, "template": {"metadata": {"labels": {"app": app}},
                "spec": {"containers": [{"name": "c", "image": "nvcr.io/nvidia/k8s/dcgm-exporter:4.2.3"}]}}}})
    };
    converge(&p, &desired(deployment("v1"))).await;
    let d = desired(deployment("v2"));
    let change = plan(&p, &d).await.expect("plan");
    assert_eq!(change.action, Action::Replace, "{change:#?}");
    assert!(
        change
            .requires_replace
            .iter()
            .any(|p| p == "/spec/selector"),
        "{:?}",
        change.requires_replace
    );
    tokio::time::timeout(Duration::from_secs(30), apply(&p, &d, &change))
        .await
        .expect("in time")
        .expect("replace");
    assert_eq!(plan(&p, &d).await.expect("re-plan").action, Action::NoOp);
}

#[tokio::test]
async fn a_hook_helm_recreates_is_updated_by_delete_and_create_without_consent() {
    let Some(kc) = kubeconfig() else { return };
    let p = provider_for(ClusterConfig::new(&kc));
    let ns = unique("hook");
    converge(&p, &desired(namespace(&ns))).await;
    // A chart's pre-upgrade Job (Jobs' templates are immutable), as the charts expander marks
    // a hook whose delete policy is before-hook-creation.
    let job = |tag: &str| {
        desired_with(
            json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "upgrade-crd", "namespace": ns},
                "spec": {"template": {"spec": {"restartPolicy": "Never",
                    "containers": [{"name": "c", "image": format!("nvcr.io/nvidia/gpu-operator:{tag}")}]}}}}),
            json!({"recreate": true}),
        )
    };
    converge(&p, &job("v26.3.3")).await;
    let d = job("v26.7.0");
    let change = plan(&p, &d).await.expect("plan");
    assert_eq!(
        change.action,
        Action::Update,
        "not a Replace: no consent needed {change:#?}"
    );
    assert!(!change.requires_replace.is_empty(), "{change:#?}");
    tokio::time::timeout(Duration::from_secs(30), apply(&p, &d, &change))
        .await
        .expect("in time")
        .expect("recreate");
    assert_eq!(plan(&p, &d).await.expect("re-plan").action, Action::NoOp);
    // The same Job without the mark is a Replace, which needs consent.
    let mut plain = job("v26.8.0");
    plain.spec.as_object_mut().unwrap().remove("recreate");
    assert_eq!(
        plan(&p, &plain).await.expect("plan").action,
        Action::Replace
    );
}

#[tokio::test]
async fn observe_answers_in_request_order_and_one_failure_does_not_fail_the_rest() {
    let Some(kc) = kubeconfig() else { return };
    let p = provider_for(ClusterConfig::new(&kc)).with_concurrency(4);
    let ns = unique("many");
    converge(&p, &desired(namespace(&ns))).await;
    let ds: Vec<Desired> = (0..20)
        .map(|i| desired(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("cm-{i}"), "namespace": ns}})))
        .chain([desired(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": ns}, "bogus": 1}))])
        .collect();
    let reqs: Vec<ObserveRequest<'_>> = ds
        .iter()
        .map(|d| ObserveRequest {
            id: &d.id,
            spec: &d.spec,
            desired: true,
            unchanged: false,
        })
        .collect();
    let results = p.observe(&reqs).await;
    assert_eq!(results.len(), 21);
    for r in &results[..20] {
        assert!(matches!(r, Ok(None)), "{r:?}");
    }
    let err = results[20].as_ref().expect_err("unknown top-level field");
    assert!(err.message.contains("bogus"), "{}", err.message);
}

#[tokio::test]
async fn drift_against_the_last_applied_spec_needs_no_dry_run_and_names_an_update_manager() {
    let Some(kc) = kubeconfig() else { return };
    let p = provider_for(ClusterConfig::new(&kc));
    let ns = unique("lastapplied");
    converge(&p, &desired(namespace(&ns))).await;
    let d = desired(
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "dcgm-exporter", "namespace": ns},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "dcgm"}}, "template": {"metadata": {"labels": {"app": "dcgm"}},
            "spec": {"containers": [{"name": "exporter", "image": "nvcr.io/nvidia/k8s/dcgm-exporter:4.2.3"}]}}}}),
    );
    converge(&p, &d).await;

    // Observing with the last-applied spec (GET only) on a clean object: defaults are not drift.
    let req = ObserveRequest {
        id: &d.id,
        spec: &d.spec,
        desired: false,
        unchanged: false,
    };
    let observed = p
        .observe(std::slice::from_ref(&req))
        .await
        .remove(0)
        .expect("observe");
    assert_eq!(
        p.diff(&d, observed.as_ref()).expect("diff").action,
        Action::NoOp
    );

    // `kubectl scale`-like update (operation Update, not Apply) by another manager.
    let client = admin_client(&kc).await;
    let api: Api<k8s_openapi::api::apps::v1::Deployment> = Api::namespaced(client, &ns);
    let scale = PatchParams {
        field_manager: Some("kubectl-scale".into()),
        ..Default::default()
    };
    api.patch(
        "dcgm-exporter",
        &scale,
        &Patch::Merge(json!({"spec": {"replicas": 3}})),
    )
    .await
    .expect("scale");
    let observed = p
        .observe(std::slice::from_ref(&req))
        .await
        .remove(0)
        .expect("observe");
    let change = p.diff(&d, observed.as_ref()).expect("diff");
    assert_eq!(change.action, Action::Update);
    assert_eq!(change.fields.len(), 1, "{:#?}", change.fields);
    assert_eq!(change.fields[0].path, "/spec/replicas");
    assert_eq!(
        change.fields[0].changed_by.as_deref(),
        Some("kubectl-scale")
    );
}

#[tokio::test]
async fn a_dry_run_apply_changes_nothing() {
    let Some(kc) = kubeconfig() else { return };
    let p = provider_for(ClusterConfig::new(&kc));
    let ns = unique("dryrun");
    converge(&p, &desired(namespace(&ns))).await;
    let d = desired(
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": ns}, "data": {"k": "v"}}),
    );
    let change = plan(&p, &d).await.expect("plan");
    assert_eq!(change.action, Action::Create);
    let req = ApplyRequest {
        change: &change,
        desired: Some(&d),
        last_applied: None,
        observed: None,
    };
    let cx = ApplyContext {
        dry_run: true,
        ..Default::default()
    };
    p.apply(&req, &cx).await.expect("dry-run apply");
    assert_eq!(
        plan(&p, &d).await.expect("plan").action,
        Action::Create,
        "a dry run must not create the object"
    );
}

/// Every secret reads as the same test value (compile embeds the NGC key in pull secrets).
struct FixedSecrets;
impl fleetform_engine::secret::SecretResolver for FixedSecrets {
    fn resolve(
        &self,
        _r: &fleetform_engine::secret::SecretRef,
    ) -> Result<fleetform_engine::Sensitive<String>, fleetform_engine::secret::SecretError> {
        Ok(fleetform_engine::Sensitive::new("test-secret".into()))
    }
}

/// The management-cluster objects compiled from an example fleet, moved into namespace `ns`
/// (each run its own) and addressed to the test cluster, Namespace first.
fn management_objects(example: &str, ns: &str) -> Vec<Desired> {
    use fleetform_engine::{compile, load, validate};
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(example);
    let files = load::read_dir(&dir).unwrap_or_else(|d| panic!("{example}: {d:?}"));
    let (docs, diags) = load::load(&files);
    assert!(diags.is_empty(), "{example}: {diags:?}");
    let fleet = validate::validate(&docs).unwrap_or_else(|d| panic!("{example}: {d:?}"));
    let compiled = compile::compile(&fleet, &FixedSecrets).unwrap_or_else(|d| panic!("{d:?}"));
    let mut out: Vec<Desired> = compiled
        .resources
        .into_iter()
        .filter(|d| d.spec["cluster"] == compile::MANAGEMENT_CLUSTER)
        // One tenant's objects (the first NCP-managed one), so one namespace holds them.
        .filter(|d| {
            d.spec["object"]["metadata"]["namespace"] == "tenant-acme"
                || d.spec["object"]["metadata"]["name"] == "tenant-acme"
        })
        .map(|d| {
            let mut object = d.spec["object"].clone();
            if object["kind"] == "Namespace" {
                object["metadata"]["name"] = json!(ns);
            } else {
                object["metadata"]["namespace"] = json!(ns);
            }
            desired(object)
        })
        .collect();
    out.sort_by_key(|d| d.spec["object"]["kind"] != "Namespace");
    out
}

#[tokio::test]
async fn cluster_api_and_metal3_objects_compiled_from_the_examples_pass_the_real_crd_schemas() {
    let Some(kc) = kubeconfig() else { return };
    let p = provider_for(ClusterConfig::new(&kc));
    for example in ["small", "dsx"] {
        let ns = unique(&format!("capi-{example}"));
        let objects = management_objects(example, &ns);
        let kinds: std::collections::BTreeSet<&str> = objects
            .iter()
            .filter_map(|d| d.spec["object"]["kind"].as_str())
            .collect();
        for kind in [
            "Namespace",
            "BareMetalHost",
            "Cluster",
            "KubeadmControlPlane",
            "Metal3Cluster",
            "Metal3MachineTemplate",
            "MachineDeployment",
            "KubeadmConfigTemplate",
        ] {
            assert!(
                kinds.contains(kind),
                "{example}: no {kind} compiled: {kinds:?}"
            );
        }
        // Strict server-side apply: unknown fields, wrong types and CEL rules are refused by
        // the CRDs' own schemas; re-plan after apply is NoOp for each.
        for d in &objects {
            converge(&p, d).await;
        }
    }
}

/// Observes `ds` in one provider call (so groups of one kind are listed) and diffs each.
async fn plan_all(p: &KubeProvider, ds: &[Desired]) -> Vec<Change> {
    let reqs: Vec<ObserveRequest<'_>> = ds
        .iter()
        .map(|d| ObserveRequest {
            id: &d.id,
            spec: &d.spec,
            desired: true,
            unchanged: false,
        })
        .collect();
    let observed = p.observe(&reqs).await;
    ds.iter()
        .zip(observed)
        .map(|(d, o)| {
            let o = o.unwrap_or_else(|e| panic!("observe {}: {e}", d.id));
            p.diff(d, o.as_ref())
                .unwrap_or_else(|e| panic!("diff {}: {e}", d.id))
        })
        .collect()
}

fn config_maps(ns: &str, n: usize) -> Vec<Desired> {
    (0..n)
        .map(|i| {
            desired(json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": format!("cm-{i:02}"), "namespace": ns}, "data": {"index": i.to_string()}}))
        })
        .collect()
}

#[tokio::test]
async fn objects_observed_through_one_list_per_kind_plan_exactly_like_one_get_each() {
    let Some(kc) = kubeconfig() else { return };
    let p = provider_for(ClusterConfig::new(&kc));
    let ns = unique("listed");
    converge(&p, &desired(namespace(&ns))).await;
    // Above the LIST threshold, plus one object of another kind (read with a GET).
    let mut ds = config_maps(&ns, fleetform_kube::LIST_THRESHOLD + 2);
    ds.push(desired(
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "one", "namespace": ns}}),
    ));
    for c in plan_all(&p, &ds).await {
        assert_eq!(c.action, Action::Create, "{}", c.id);
    }
    for d in &ds {
        let c = plan(&p, d).await.unwrap();
        apply(&p, d, &c).await.unwrap();
    }
    for c in plan_all(&p, &ds).await {
        assert_eq!(c.action, Action::NoOp, "{}: {:#?}", c.id, c.fields);
    }

    // One object edited out of band: exactly that one, with the field and the manager.
    let api: Api<ConfigMap> = Api::namespaced(admin_client(&kc).await, &ns);
    let edit = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm-03"}, "data": {"index": "edited"}});
    api.patch(
        "cm-03",
        &PatchParams::apply("kubectl-edit").force(),
        &Patch::Apply(&edit),
    )
    .await
    .unwrap();
    type FieldsOf = Vec<(String, Option<String>)>;
    let changed: Vec<(String, FieldsOf)> = plan_all(&p, &ds)
        .await
        .into_iter()
        .filter(|c| c.action != Action::NoOp)
        .map(|c| {
            let fields = c
                .fields
                .iter()
                .map(|f| (f.path.clone(), f.changed_by.clone()))
                .collect();
            (c.id.to_string(), fields)
        })
        .collect();
    assert_eq!(
        changed,
        [(
            ds[3].id.to_string(),
            vec![("/data/index".to_string(), Some("kubectl-edit".to_string()))]
        )]
    );
}

#[tokio::test]
async fn a_forbidden_list_falls_back_to_one_get_per_object() {
    let Some(kc) = kubeconfig() else { return };
    let admin = provider_for(ClusterConfig::new(&kc));
    let ns = unique("no-list");
    converge(&admin, &desired(namespace(&ns))).await;
    let sa = format!("system:serviceaccount:{ns}:fleetform");
    // get, create, patch: everything observe and apply use except list.
    converge(&admin, &desired(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "fleetform", "namespace": ns},
        "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "create", "patch"]}]}))).await;
    converge(
        &admin,
        &desired(
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "fleetform", "namespace": ns},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "fleetform"},
        "subjects": [{"kind": "ServiceAccount", "name": "fleetform", "namespace": ns}]}),
        ),
    )
    .await;
    let tenant = provider_for(ClusterConfig::new(&kc).impersonating(&sa));
    let ds = config_maps(&ns, fleetform_kube::LIST_THRESHOLD + 2);
    for d in &ds[..2] {
        converge(&tenant, d).await;
    }
    let actions: Vec<Action> = plan_all(&tenant, &ds)
        .await
        .iter()
        .map(|c| c.action)
        .collect();
    let mut want = vec![Action::NoOp; 2];
    want.extend(vec![Action::Create; ds.len() - 2]);
    assert_eq!(actions, want);
}

fn crd(group: &str, versions: &[&str]) -> Value {
    let versions: Vec<Value> = versions
        .iter()
        .enumerate()
        .map(|(i, v)| {
            json!({"name": v, "served": true, "storage": i == versions.len() - 1,
                   "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}})
        })
        .collect();
    json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("widgets.{group}")},
        "spec": {"group": group, "scope": "Namespaced",
                 "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
                 "versions": versions}
    })
}

#[tokio::test]
async fn a_crd_upgrade_that_drops_a_version_still_stored_in_etcd_is_refused_in_the_plan() {
    let Some(kc) = kubeconfig() else { return };
    let p = provider_for(ClusterConfig::new(kc));
    let group = format!("{}.fleetform.test", unique("crd"));
    converge(&p, &desired(crd(&group, &["v1"]))).await;
    // Objects are stored as v1 (status.storedVersions = [v1]); v2 alone would strand them.
    let err = plan(&p, &desired(crd(&group, &["v2"])))
        .await
        .expect_err("dropping a stored version must be refused");
    assert!(
        err.message.contains("storedVersions") && err.message.contains("refusing to upgrade CRD"),
        "{err}"
    );
    // Serving both (v2 the storage version) is a normal update.
    let both = plan(&p, &desired(crd(&group, &["v1", "v2"])))
        .await
        .unwrap();
    assert_eq!(both.action, Action::Update);
}
