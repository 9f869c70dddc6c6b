//! examples/deploy/serve-replicated.yaml's RBAC is enough and no more: applied to a fresh
//! namespace of the real kube-apiserver (tests/peers/kube.sh start; skipped when it is not
//! running, a failure when FLEETFORM_REQUIRE_PEERS=1), the replicas' service account can lock,
//! record, compact and load; the CI account can load and nothing else; neither reaches another
//! namespace. Its serve config is valid.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use fleetform_engine::load::{SourceFile, load};
use fleetform_engine::resource::ResourceId;
use fleetform_engine::state::{
    InventoryEntry, JournalEntry, LockInfo, State, StateError, StateStore,
};
use fleetform_state_kube::{KubeStateStore, Location, Options};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, PostParams};
use serde_json::Value;

const EXAMPLE: &str = include_str!("../../examples/deploy/serve-replicated.yaml");

fn documents() -> Vec<Value> {
    let (docs, diags) = load(&[SourceFile {
        path: "examples/deploy/serve-replicated.yaml".into(),
        bytes: EXAMPLE.as_bytes().to_vec(),
    }]);
    assert!(diags.is_empty(), "{diags:?}");
    docs.into_iter().map(|d| d.value).collect()
}

#[test]
fn the_replicated_example_runs_three_replicas_on_kubernetes_state_with_a_valid_config() {
    let docs = documents();
    let deployment = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
    assert_eq!(deployment["spec"]["replicas"], 3);
    let args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap();
    let state = args
        .iter()
        .position(|a| a == "--state")
        .map(|i| args[i + 1].as_str().unwrap())
        .unwrap();
    let location = Location::parse(state).unwrap().unwrap();
    assert_eq!(location.namespace, deployment["metadata"]["namespace"]);
    let config = docs
        .iter()
        .find(|d| d["kind"] == "ConfigMap")
        .and_then(|d| d["data"]["serve.yaml"].as_str())
        .unwrap();
    fleetform_engine::serve::ServeConfig::parse("serve.yaml", config.as_bytes()).unwrap();
}

async fn client_as(user: Option<&str>) -> Option<kube::Client> {
    let path = match std::env::var_os("FLEETFORM_TEST_KUBECONFIG") {
        Some(p) => PathBuf::from(p),
        None if std::env::var("FLEETFORM_REQUIRE_PEERS").as_deref() == Ok("1") => {
            panic!(
                "FLEETFORM_TEST_KUBECONFIG is not set: run tests/peers/kube.sh start and source target/peers/kube.env"
            )
        }
        None => {
            eprintln!("skipped: kube not running (tests/peers/kube.sh start)");
            return None;
        }
    };
    let kc = kube::config::Kubeconfig::read_from(&path).unwrap();
    let mut config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    config.auth_info.impersonate = user.map(str::to_string);
    Some(kube::Client::try_from(config).unwrap())
}

fn forbidden(e: &StateError) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(kube::Error::Api(status)) = s.downcast_ref::<kube::Error>() {
            return status.is_forbidden();
        }
        source = s.source();
    }
    false
}

#[tokio::test]
async fn the_example_rbac_lets_replicas_write_and_ci_only_read_the_state_in_its_namespace() {
    let Some(admin) = client_as(None).await else {
        return;
    };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let ns = format!("ffrbac-{}-{nanos:x}", std::process::id());
    let namespace: Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": ns}})).unwrap();
    Api::<Namespace>::all(admin.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .unwrap();
    // The example's Roles and RoleBindings, moved to the test's namespace.
    for mut doc in documents() {
        if doc["kind"] != "Role" && doc["kind"] != "RoleBinding" {
            continue;
        }
        doc["metadata"]["namespace"] = ns.clone().into();
        if let Some(subjects) = doc["subjects"].as_array_mut() {
            for s in subjects {
                s["namespace"] = ns.clone().into();
            }
        }
        if doc["kind"] == "Role" {
            let role: Role = serde_json::from_value(doc).unwrap();
            Api::<Role>::namespaced(admin.clone(), &ns)
                .create(&PostParams::default(), &role)
                .await
                .unwrap();
        } else {
            let binding: RoleBinding = serde_json::from_value(doc).unwrap();
            Api::<RoleBinding>::namespaced(admin.clone(), &ns)
                .create(&PostParams::default(), &binding)
                .await
                .unwrap();
        }
    }
    let at = Location {
        namespace: ns.clone(),
        fleet: "prod".into(),
    };
    let replica = client_as(Some(&format!("system:serviceaccount:{ns}:fleetform")))
        .await
        .unwrap();
    let ci = client_as(Some(&format!("system:serviceaccount:{ns}:fleetform-ci")))
        .await
        .unwrap();

    // Orphans are collected at once here, so the check below sees whether the Role allows it.
    let writer = KubeStateStore::new(
        replica.clone(),
        at.clone(),
        Options {
            orphan_age: std::time::Duration::ZERO,
            ..Options::default()
        },
    );
    let info = LockInfo::for_this_process("serve");
    writer.lock(&info).await.unwrap();
    let id = ResourceId::new("test", "a");
    let entry = InventoryEntry {
        spec: Some(serde_json::json!({"v": 1})),
        spec_digest: None,
        sensitive: vec![],
        deps: vec![],
        prevent_destroy: false,
        pending: false,
        revision: None,
    };
    writer
        .record(&JournalEntry::Applied {
            id: id.clone(),
            entry: entry.clone(),
        })
        .await
        .unwrap();
    let state = writer.load().await.unwrap();
    writer.compact(&state).await.unwrap();
    writer
        .record(&JournalEntry::Removed { id: id.clone() })
        .await
        .unwrap();
    // A part a crashed writer left behind.
    let orphan: k8s_openapi::api::core::v1::Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "fleetform-state-prod-dead-c0", "labels": {
            "fleetform.dev/fleet": "prod", "fleetform.dev/state-part": "chunk"}},
        "type": "fleetform.dev/state",
    }))
    .unwrap();
    Api::<k8s_openapi::api::core::v1::Secret>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &orphan)
        .await
        .unwrap();
    writer.compact(&writer.load().await.unwrap()).await.unwrap();
    // Compaction could delete what the previous head named and the orphan: only the current
    // objects are left.
    let stored = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(admin.clone(), &ns)
        .list(&kube::api::ListParams::default().labels("fleetform.dev/fleet=prod"))
        .await
        .unwrap();
    let mut names: Vec<String> = stored
        .items
        .into_iter()
        .filter_map(|s| s.metadata.name)
        .collect();
    let mut current = writer.objects().await.unwrap();
    names.sort();
    current.sort();
    assert_eq!(names, current);
    writer
        .record(&JournalEntry::Applied {
            id: id.clone(),
            entry,
        })
        .await
        .unwrap();
    writer.unlock(&info).await.unwrap();

    let reader = KubeStateStore::new(ci.clone(), at.clone(), Options::default());
    assert_eq!(reader.load().await.unwrap().resources.len(), 1);
    let err = reader
        .record(&JournalEntry::Removed { id })
        .await
        .unwrap_err();
    assert!(forbidden(&err), "{err}");
    let err = reader
        .lock(&LockInfo::for_this_process("apply"))
        .await
        .unwrap_err();
    assert!(forbidden(&err), "{err}");
    let err = reader.compact(&State::default()).await.unwrap_err();
    assert!(forbidden(&err), "{err}");

    // Neither identity reaches state in another namespace.
    let elsewhere = Location {
        namespace: "default".into(),
        fleet: "prod".into(),
    };
    for client in [replica, ci] {
        let err = KubeStateStore::new(client, elsewhere.clone(), Options::default())
            .load()
            .await
            .unwrap_err();
        assert!(forbidden(&err), "{err}");
    }
}
