//! The `gpu` provider over a directory of inventories (fixtures/gpu/).
#![allow(clippy::unwrap_used)]
#![cfg(feature = "provider")]

use std::path::PathBuf;
use std::sync::Arc;

use fleetform_contract::provider::{
    Action, ApplyContext, ApplyRequest, Health, ObserveRequest, Provider,
};
use fleetform_contract::resource::Desired;
use fleetform_gpu::{GpuProvider, PoolExpectation};

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/gpu")
}

fn h100_pool() -> PoolExpectation {
    PoolExpectation {
        pool: "h100-train".into(),
        gpu_model: "H100".into(),
        gpu_count: 8,
        mig: None,
        driver_version: Some("595.91.07".into()),
        nvlinks_per_gpu: Some(18),
    }
}

fn provider_with(files: &[(&str, &str)]) -> (tempfile::TempDir, GpuProvider) {
    let dir = tempfile::tempdir().unwrap();
    for (fixture, node) in files {
        std::fs::copy(
            fixture_dir().join(fixture),
            dir.path().join(format!("{node}.json")),
        )
        .unwrap();
    }
    let p = GpuProvider::new(Arc::new(fleetform_gpu::DirSource::new(dir.path())));
    (dir, p)
}

#[tokio::test]
async fn provider_plans_noop_for_a_matching_node_and_field_changes_for_drift() {
    let (dir, p) = provider_with(&[("h100-healthy.json", "r01-n01")]);
    let spec = serde_json::to_value(h100_pool()).unwrap();
    let id = GpuProvider::id("r01-n01");
    let desired = Desired::new(id.clone(), spec.clone());

    let obs = p
        .observe(&[ObserveRequest {
            id: &id,
            spec: &spec,
            desired: true,
            unchanged: false,
        }])
        .await;
    let obs = obs.into_iter().next().unwrap().unwrap().expect("observed");
    assert_eq!(obs.state["gpuCount"], 8);
    assert_eq!(p.diff(&desired, Some(&obs)).unwrap().action, Action::NoOp);

    // Out of band: the node now reports the wrong driver. Exactly that field changes.
    std::fs::copy(
        fixture_dir().join("h100-wrong-driver.json"),
        dir.path().join("r01-n01.json"),
    )
    .unwrap();
    let text = std::fs::read_to_string(dir.path().join("r01-n01.json"))
        .unwrap()
        .replace("r01-n07", "r01-n01");
    std::fs::write(dir.path().join("r01-n01.json"), text).unwrap();
    let obs = p
        .observe(&[ObserveRequest {
            id: &id,
            spec: &spec,
            desired: true,
            unchanged: false,
        }])
        .await;
    let obs = obs.into_iter().next().unwrap().unwrap().expect("observed");
    let change = p.diff(&desired, Some(&obs)).unwrap();
    assert_eq!(change.action, Action::Update);
    assert_eq!(change.fields.len(), 1);
    assert_eq!(change.fields[0].path, "/driverVersion");
    assert_eq!(
        change.fields[0].before,
        Some(serde_json::json!("580.95.05"))
    );
    assert_eq!(change.fields[0].after, Some(serde_json::json!("595.91.07")));
    assert_eq!(
        change.disruption,
        fleetform_contract::provider::Disruption::None
    );

    // Apply is refused, permanently.
    let err = p
        .apply(
            &ApplyRequest {
                change: &change,
                desired: Some(&desired),
                last_applied: None,
                observed: Some(&obs),
            },
            &ApplyContext::default(),
        )
        .await
        .unwrap_err();
    assert!(!err.is_transient());
    assert!(err.message.contains("GPU state is observed"), "{err}");
}

#[tokio::test]
async fn provider_reports_missing_nodes_and_health() {
    let (_dir, p) = provider_with(&[
        ("h100-ecc-uncorrectable.json", "r01-n04"),
        ("h100-remap-pending.json", "r01-n05"),
    ]);
    let spec = serde_json::to_value(h100_pool()).unwrap();
    let missing = GpuProvider::id("r09-n99");
    let obs = p
        .observe(&[ObserveRequest {
            id: &missing,
            spec: &spec,
            desired: true,
            unchanged: false,
        }])
        .await;
    assert!(obs[0].as_ref().unwrap().is_none());
    let change = p.diff(&Desired::new(missing, spec.clone()), None).unwrap();
    assert_eq!(change.action, Action::Create);

    match p.health(&GpuProvider::id("r01-n04"), &spec).await.unwrap() {
        Health::Failed(msg) => assert!(msg.contains("uncorrectable"), "{msg}"),
        other => panic!("expected failed, got {other:?}"),
    }
    assert!(matches!(
        p.health(&GpuProvider::id("r01-n05"), &spec).await.unwrap(),
        Health::Progressing(_)
    ));

    let bad = fleetform_contract::ResourceId::new("gpu", "rack/r01");
    let obs = p
        .observe(&[ObserveRequest {
            id: &bad,
            spec: &spec,
            desired: true,
            unchanged: false,
        }])
        .await;
    assert!(!obs[0].as_ref().unwrap_err().is_transient());
}
