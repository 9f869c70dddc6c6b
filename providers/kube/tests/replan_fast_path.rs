//! Re-plans skip the server's dry-run only when that is provably safe, against
//! a real kube-apiserver (tests/peers/kube.sh start): the engine says the spec
//! is what fleetform last applied (`unchanged`, from the inventory's digest) and
//! every field fleetform sets is still present and owned by fleetform alone.
//! Anything else takes the dry-run.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use common::{admin_client, kubeconfig, unique};
use fleetform_engine::provider::{
    Action, ApplyContext, ApplyRequest, Change, ObserveRequest, Observed, Provider,
};
use fleetform_engine::resource::Desired;
use fleetform_kube::{ClusterConfig, KubeProvider, object_id};
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

fn config_map(name: &str, data: Value) -> Desired {
    let spec = json!({"cluster": "acme", "object": {"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "default"}, "data": data}});
    Desired::new(object_id("acme", &spec["object"]), spec)
}

async fn observe(p: &KubeProvider, d: &Desired, unchanged: bool) -> Option<Observed> {
    let req = ObserveRequest {
        id: &d.id,
        spec: &d.spec,
        desired: true,
        unchanged,
    };
    p.observe(std::slice::from_ref(&req))
        .await
        .remove(0)
        .unwrap()
}

fn skipped_dry_run(o: &Observed) -> bool {
    o.private
        .as_ref()
        .and_then(|p| p.get("mode"))
        .and_then(Value::as_str)
        == Some("unchanged")
}

async fn converge(p: &KubeProvider, d: &Desired) {
    let change: Change = p.diff(d, observe(p, d, false).await.as_ref()).unwrap();
    let req = ApplyRequest {
        change: &change,
        desired: Some(d),
        last_applied: Some(&d.spec),
        observed: None,
    };
    p.apply(&req, &ApplyContext::default()).await.unwrap();
}

fn setup() -> Option<(KubeProvider, PathBuf, String)> {
    let kc = kubeconfig()?;
    let p = KubeProvider::new(BTreeMap::from([(
        "acme".to_string(),
        ClusterConfig::new(kc.clone()),
    )]));
    Some((p, kc, unique("fast")))
}

async fn config_maps(kc: &std::path::Path) -> Api<ConfigMap> {
    Api::namespaced(admin_client(kc).await, "default")
}

#[tokio::test]
async fn an_object_untouched_since_its_apply_is_replanned_without_a_dry_run() {
    let Some((p, _, name)) = setup() else { return };
    let d = config_map(&name, json!({"a": "1", "b": "2"}));
    converge(&p, &d).await;
    let o = observe(&p, &d, true).await.unwrap();
    assert!(skipped_dry_run(&o), "{:#?}", o.private);
    assert_eq!(p.diff(&d, Some(&o)).unwrap().action, Action::NoOp);
}

#[tokio::test]
async fn a_field_another_manager_removed_is_still_drift() {
    let Some((p, kc, name)) = setup() else { return };
    let d = config_map(&name, json!({"a": "1", "b": "2"}));
    converge(&p, &d).await;
    // `kubectl edit` deleting a key: an update by another manager.
    config_maps(&kc)
        .await
        .patch(
            &name,
            &PatchParams {
                field_manager: Some("kubectl-edit".into()),
                ..Default::default()
            },
            &Patch::Merge(json!({"data": {"a": null}})),
        )
        .await
        .unwrap();
    let o = observe(&p, &d, true).await.unwrap();
    assert!(!skipped_dry_run(&o));
    let change = p.diff(&d, Some(&o)).unwrap();
    assert_eq!(change.action, Action::Update);
    let f: Vec<(&str, Option<Value>, Option<Value>)> = change
        .fields
        .iter()
        .map(|f| (f.path.as_str(), f.before.clone(), f.after.clone()))
        .collect();
    assert_eq!(f, [("/data/a", None, Some(json!("1")))]);
}

#[tokio::test]
async fn a_secret_and_an_atomic_list_skip_the_dry_run_when_untouched() {
    let Some((p, _, name)) = setup() else { return };
    let secret = {
        let spec = json!({"cluster": "acme", "object": {"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": "default"}, "type": "Opaque", "stringData": {"k": "v"}}});
        Desired::new(object_id("acme", &spec["object"]), spec)
    };
    converge(&p, &secret).await;
    let o = observe(&p, &secret, true).await.unwrap();
    assert!(skipped_dry_run(&o), "{:#?}", o.private);
    // Role rules are an atomic list: owned whole, so provably untouched.
    let role = {
        let spec = json!({"cluster": "acme", "object": {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": name, "namespace": "default"},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}]}});
        Desired::new(object_id("acme", &spec["object"]), spec)
    };
    converge(&p, &role).await;
    let o = observe(&p, &role, true).await.unwrap();
    assert!(skipped_dry_run(&o), "{:#?}", o.private);
    assert_eq!(p.diff(&role, Some(&o)).unwrap().action, Action::NoOp);
}

#[tokio::test]
async fn a_field_another_manager_changed_or_a_changed_manifest_takes_the_dry_run() {
    let Some((p, kc, name)) = setup() else { return };
    let d = config_map(&name, json!({"a": "1"}));
    converge(&p, &d).await;
    config_maps(&kc)
        .await
        .patch(
            &name,
            &PatchParams::apply("someone").force(),
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"a": "9"}})),
        )
        .await
        .unwrap();
    let o = observe(&p, &d, true).await.unwrap();
    assert!(!skipped_dry_run(&o));
    let change = p.diff(&d, Some(&o)).unwrap();
    assert_eq!(change.fields[0].changed_by.as_deref(), Some("someone"));

    let changed = config_map(&name, json!({"a": "2"}));
    let o = observe(&p, &changed, false).await.unwrap();
    assert!(
        !skipped_dry_run(&o),
        "a new manifest is checked by the server"
    );
    assert_eq!(p.diff(&changed, Some(&o)).unwrap().action, Action::Update);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_listed_group_is_settled_at_once_and_only_the_touched_object_is_dry_run() {
    let Some((p, kc, name)) = setup() else { return };
    // Enough objects of one kind in one namespace to be read with one LIST and settled on
    // several threads.
    let fleet: Vec<Desired> = (0..600)
        .map(|i| config_map(&format!("{name}-{i:03}"), json!({"i": i.to_string()})))
        .collect();
    let creates: Vec<Change> = fleet
        .iter()
        .map(|d| Change::new(d.id.clone(), Action::Create))
        .collect();
    let applies = fleet.iter().zip(&creates).map(|(d, change)| {
        let p = &p;
        async move {
            let req = ApplyRequest {
                change,
                desired: Some(d),
                last_applied: None,
                observed: None,
            };
            p.apply(&req, &ApplyContext::default()).await.unwrap();
        }
    });
    futures::stream::iter(applies)
        .buffer_unordered(16)
        .collect::<Vec<()>>()
        .await;
    // Someone edits one of them.
    let touched = format!("{name}-123");
    config_maps(&kc)
        .await
        .patch(
            &touched,
            &PatchParams::apply("someone").force(),
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": touched}, "data": {"i": "edited"}})),
        )
        .await
        .unwrap();

    let requests: Vec<ObserveRequest<'_>> = fleet
        .iter()
        .map(|d| ObserveRequest {
            id: &d.id,
            spec: &d.spec,
            desired: true,
            unchanged: true,
        })
        .collect();
    let observed = p.observe(&requests).await;
    assert_eq!(observed.len(), fleet.len());
    for (d, o) in fleet.iter().zip(observed) {
        let o = o.unwrap().unwrap();
        assert_eq!(o.id, d.id, "results keep the order of the requests");
        let change = p.diff(d, Some(&o)).unwrap();
        if d.id.path().ends_with(&touched) {
            assert!(!skipped_dry_run(&o), "the edited object is dry-run");
            assert_eq!(change.action, Action::Update);
            assert_eq!(change.fields[0].changed_by.as_deref(), Some("someone"));
        } else {
            assert!(skipped_dry_run(&o), "{}: {:#?}", d.id, o.private);
            assert_eq!(change.action, Action::NoOp);
        }
    }
}

fn deployment(name: &str) -> Desired {
    let spec = json!({"cluster": "acme", "object": {"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"selector": {"matchLabels": {"app": name}}, "template": {
            "metadata": {"labels": {"app": name}},
            // Zero values the server does not store (omitempty), as charts write them.
            "spec": {"hostNetwork": false, "imagePullSecrets": [], "containers": [
                {"name": "app", "image": "registry.example/app:1", "ports": [{"containerPort": 8080}],
                 "env": [{"name": "WATCH_NAMESPACE", "value": ""}]},
                {"name": "sidecar", "image": "registry.example/sidecar:1"}]}}}}});
    Desired::new(object_id("acme", &spec["object"]), spec)
}

#[tokio::test]
async fn a_list_kept_element_by_element_skips_the_dry_run_when_untouched() {
    let Some((p, _, name)) = setup() else { return };
    // Containers are a list keyed by name: fleetform owns each element, not the list whole,
    // and the server fills in defaults inside each (imagePullPolicy, protocol, ...).
    let d = deployment(&name);
    converge(&p, &d).await;
    let o = observe(&p, &d, true).await.unwrap();
    assert!(skipped_dry_run(&o), "{:#?}", o.private);
    assert_eq!(p.diff(&d, Some(&o)).unwrap().action, Action::NoOp);
}

#[tokio::test]
async fn an_element_another_manager_removed_from_a_keyed_list_is_still_drift() {
    let Some((p, kc, name)) = setup() else { return };
    let d = deployment(&name);
    converge(&p, &d).await;
    // `kubectl edit` dropping the sidecar: an update that leaves no trace in anyone's
    // field set, since nobody owns a field that no longer exists.
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(admin_client(&kc).await, "default");
    deployments
        .patch(
            &name,
            &PatchParams {
                field_manager: Some("kubectl-edit".into()),
                ..Default::default()
            },
            &Patch::Strategic(json!({"spec": {"template": {"spec": {
                "$setElementOrder/containers": [{"name": "app"}],
                "containers": [{"name": "sidecar", "$patch": "delete"}]}}}})),
        )
        .await
        .unwrap();
    let o = observe(&p, &d, true).await.unwrap();
    assert!(
        !skipped_dry_run(&o),
        "a removed element must be shown by the server"
    );
    assert_eq!(p.diff(&d, Some(&o)).unwrap().action, Action::Update);
}

/// `apiserver_request_total` for one resource, by verb (the server's own count).
async fn requests_for(kc: &std::path::Path, resource: &str) -> BTreeMap<String, u64> {
    let text = admin_client(kc)
        .await
        .request_text(http::Request::get("/metrics").body(Vec::new()).unwrap())
        .await
        .unwrap();
    let mut out = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
    {
        let labels = &line[line.find('{').unwrap() + 1..line.find('}').unwrap()];
        let label = |name: &str| {
            labels
                .split(',')
                .find_map(|kv| kv.strip_prefix(&format!("{name}=\"")))
                .map(|v| v.trim_end_matches('"').to_string())
        };
        if label("resource").as_deref() == Some(resource) {
            let n: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
            *out.entry(label("verb").unwrap()).or_insert(0) += n as u64;
        }
    }
    out
}

#[tokio::test]
async fn a_kind_spread_over_namespaces_is_re_read_with_one_labelled_list() {
    let Some((p, kc, name)) = setup() else { return };
    // One LimitRange in each of six namespaces (a chart's objects are spread like this): too
    // few per namespace for a namespace LIST. No other test touches LimitRanges.
    let admin = admin_client(&kc).await;
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(admin);
    let mut fleet = Vec::new();
    for i in 0..6 {
        let ns = format!("{name}-{i}");
        namespaces
            .create(
                &Default::default(),
                &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap(),
            )
            .await
            .unwrap();
        let spec = json!({"cluster": "acme", "object": {"apiVersion": "v1", "kind": "LimitRange",
            "metadata": {"name": "limits", "namespace": ns,
                "labels": {"app.kubernetes.io/managed-by": "fleetform"}},
            "spec": {"limits": [{"type": "Container", "default": {"cpu": "500m"}}]}}});
        let d = Desired::new(object_id("acme", &spec["object"]), spec);
        converge(&p, &d).await;
        fleet.push(d);
    }
    let before = requests_for(&kc, "limitranges").await;
    let requests: Vec<ObserveRequest<'_>> = fleet
        .iter()
        .map(|d| ObserveRequest {
            id: &d.id,
            spec: &d.spec,
            desired: true,
            unchanged: true,
        })
        .collect();
    for o in p.observe(&requests).await {
        assert!(skipped_dry_run(&o.unwrap().unwrap()));
    }
    let after = requests_for(&kc, "limitranges").await;
    let delta: BTreeMap<&str, u64> = after
        .iter()
        .map(|(verb, n)| (verb.as_str(), n - before.get(verb).copied().unwrap_or(0)))
        .filter(|(_, n)| *n > 0)
        .collect();
    assert_eq!(
        delta,
        BTreeMap::from([("LIST", 1)]),
        "one LIST, no GET, no dry-run"
    );
}
