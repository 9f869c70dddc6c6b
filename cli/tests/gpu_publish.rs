//! `fleetform gpu inventory --publish` against a real kube-apiserver
//! (tests/peers/kube.sh start): the report lands in ConfigMap
//! gpu-inventory/<node>, written by its own field manager and owned by its Node.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Command;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node};
use kube::api::{Api, PostParams};
use serde_json::json;

/// The peer's admin kubeconfig; `None` (skipped) when it is not running, a
/// failure when FLEETFORM_REQUIRE_PEERS=1.
fn kubeconfig() -> Option<PathBuf> {
    match std::env::var_os("FLEETFORM_TEST_KUBECONFIG") {
        Some(p) => Some(PathBuf::from(p)),
        None if std::env::var("FLEETFORM_REQUIRE_PEERS").as_deref() == Ok("1") => {
            panic!(
                "FLEETFORM_TEST_KUBECONFIG is not set: run tests/peers/kube.sh start and source target/peers/kube.env"
            )
        }
        None => {
            eprintln!("skipped: kube not running (tests/peers/kube.sh start)");
            None
        }
    }
}

async fn admin_client(kubeconfig: &PathBuf) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    kube::Client::try_from(config).unwrap()
}

#[tokio::test]
async fn a_published_report_is_a_configmap_owned_by_its_node_and_written_by_its_own_field_manager()
{
    let Some(kc) = kubeconfig() else { return };
    let client = admin_client(&kc).await;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let node = format!("gpu-report-{}-{nanos:x}", std::process::id());
    let nodes: Api<Node> = Api::all(client.clone());
    let created = nodes
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": node}}),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let _ = namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "gpu-inventory"}}))
                .unwrap(),
        )
        .await; // exists already when another test made it

    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fixtures/gpu/recorded-h100-80gb-hbm3-ecc-failed.json"
    );
    let publish = || {
        Command::new(env!("CARGO_BIN_EXE_fleetform"))
            .args([
                "gpu",
                "inventory",
                "--format",
                "json",
                "--from",
                fixture,
                "--node",
                &node,
            ])
            .arg("--publish")
            .arg("--kubeconfig")
            .arg(&kc)
            .output()
            .unwrap()
    };
    for _ in 0..2 {
        let out = publish();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "gpu-inventory");
    let cm = cms.get(&node).await.unwrap();
    let text = cm.data.unwrap()["inventory.json"].clone();
    let inv = fleetform_gpu::Inventory::from_json(&text).unwrap();
    assert_eq!(inv.node, node);
    assert_eq!(
        fleetform_gpu::node_health(&inv).state,
        fleetform_gpu::HealthState::Failed
    );
    let managers: Vec<String> = cm
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| m.manager)
        .collect();
    assert_eq!(managers, ["fleetform-gpu-inventory"]);
    let owner = &cm.metadata.owner_references.unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("Node", node.as_str())
    );
    assert_eq!(Some(&owner.uid), created.metadata.uid.as_ref());

    // An unknown node is refused (the name must be the Kubernetes node name).
    let out = Command::new(env!("CARGO_BIN_EXE_fleetform"))
        .args([
            "gpu",
            "inventory",
            "--from",
            fixture,
            "--node",
            "no-such-node-x",
        ])
        .arg("--publish")
        .arg("--kubeconfig")
        .arg(&kc)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Node no-such-node-x not found"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    nodes.delete(&node, &Default::default()).await.unwrap();
}
