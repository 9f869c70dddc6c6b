//! Health, drift and provider behaviour on the inventory fixtures
//! in fixtures/gpu/ (synthetic, see fixtures/gpu/make-fixtures.py).
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use fleetform_gpu::{
    DriftKind, GpuError, HealthState, Inventory, MigLayout, PoolExpectation, compare, node_health,
    render_text,
};

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/gpu")
}

fn load(name: &str) -> Inventory {
    let text = std::fs::read_to_string(fixture_dir().join(name)).expect("fixture exists");
    Inventory::from_json(&text).expect("fixture parses")
}

fn h100_pool(mig: Option<MigLayout>) -> PoolExpectation {
    PoolExpectation {
        pool: "h100-train".into(),
        gpu_model: "H100".into(),
        gpu_count: 8,
        mig,
        driver_version: Some("595.91.07".into()),
        nvlinks_per_gpu: Some(18),
    }
}

#[test]
fn healthy_h100_node_is_healthy_and_matches_its_pool() {
    let inv = load("h100-healthy.json");
    let v = node_health(&inv);
    assert_eq!(v.state, HealthState::Healthy, "{:?}", v.reasons);
    assert!(compare(&h100_pool(None), &inv).is_empty());
    assert!(
        compare(
            &h100_pool(Some(MigLayout::Named("all-disabled".into()))),
            &inv
        )
        .is_empty()
    );
}

#[test]
fn all_1g10gb_node_matches_an_all_1g10gb_pool() {
    let inv = load("h100-mig-all-1g.10gb.json");
    let drifts = compare(
        &h100_pool(Some(MigLayout::Named("all-1g.10gb".into()))),
        &inv,
    );
    assert!(drifts.is_empty(), "{drifts:#?}");
}

#[test]
fn gpu_with_mig_disabled_drifts_from_an_all_1g10gb_pool() {
    let inv = load("h100-mig-gpu2-disabled.json");
    let drifts = compare(
        &h100_pool(Some(MigLayout::Named("all-1g.10gb".into()))),
        &inv,
    );
    assert_eq!(drifts.len(), 1, "{drifts:#?}");
    let d = &drifts[0];
    assert_eq!(d.kind, DriftKind::Mig);
    assert_eq!(d.gpu, Some(2));
    assert_eq!(d.path, "/mig/gpus/2");
    assert_eq!(
        d.message,
        "pool h100-train expects all-1g.10gb on node r01-n03, GPU 2 has MIG disabled"
    );
    assert!(d.is_disruptive());
}

#[test]
fn uncorrectable_volatile_ecc_fails_the_node() {
    let inv = load("h100-ecc-uncorrectable.json");
    let v = node_health(&inv);
    assert_eq!(v.state, HealthState::Failed);
    assert!(
        v.reasons
            .iter()
            .any(|r| r == "GPU 5: 2 uncorrectable volatile ECC error(s)"),
        "{:?}",
        v.reasons
    );
    assert!(
        v.reasons.iter().any(|r| r == "GPU 5: XID 48"),
        "{:?}",
        v.reasons
    );
}

#[test]
fn pending_row_remap_degrades_the_node() {
    let inv = load("h100-remap-pending.json");
    let v = node_health(&inv);
    assert_eq!(v.state, HealthState::Degraded);
    assert_eq!(
        v.reasons,
        vec!["GPU 1: row remap pending, needs a GPU reset".to_string()]
    );
}

#[test]
fn missing_gpu_shows_as_count_drift() {
    let inv = load("h100-missing-gpu.json");
    let drifts = compare(&h100_pool(None), &inv);
    assert_eq!(drifts.len(), 1, "{drifts:#?}");
    assert_eq!(drifts[0].kind, DriftKind::Count);
    assert_eq!(
        drifts[0].message,
        "pool h100-train expects 8 GPUs on node r01-n06, NVML reports 7"
    );
}

#[test]
fn wrong_driver_shows_as_driver_drift() {
    let inv = load("h100-wrong-driver.json");
    let drifts = compare(&h100_pool(None), &inv);
    assert_eq!(drifts.len(), 1, "{drifts:#?}");
    assert_eq!(drifts[0].kind, DriftKind::Driver);
    assert_eq!(
        drifts[0].message,
        "pool h100-train expects driver 595.91.07 on node r01-n07, it runs 580.95.05"
    );
}

#[test]
fn wrong_model_is_a_model_drift_and_b200_does_not_match_gb200() {
    let mut inv = load("h100-healthy.json");
    inv.gpus[0].name = Some("NVIDIA GB200".into());
    let mut pool = h100_pool(None);
    pool.gpu_model = "B200".into();
    let drifts = compare(&pool, &inv);
    assert_eq!(
        drifts.iter().filter(|d| d.kind == DriftKind::Model).count(),
        8
    );
}

#[test]
fn fields_nvml_refused_are_absent_not_errors() {
    let inv = load("h100-pcie-sparse.json");
    assert!(inv.cuda_driver_version.is_none());
    let g = &inv.gpus[0];
    assert!(g.ecc.is_none() && g.mig.is_none() && g.nvlinks.is_none() && g.temperature_c.is_none());
    assert_eq!(node_health(&inv).state, HealthState::Healthy);
    let text = render_text(&inv);
    assert!(text.contains("H100 PCIe"), "{text}");
}

#[test]
fn nvlinks_down_on_one_gpu_degrade_the_node() {
    let mut inv = load("h100-healthy.json");
    if let Some(links) = inv.gpus[3].nvlinks.as_mut() {
        links[4].active = false;
        links[9].active = false;
    }
    let v = node_health(&inv);
    assert_eq!(v.state, HealthState::Degraded);
    assert_eq!(
        v.reasons,
        vec!["GPU 3: 16 of 18 NVLinks active (down: 4,9)".to_string()]
    );
    let drifts = compare(&h100_pool(None), &inv);
    assert_eq!(drifts.len(), 1);
    assert_eq!(drifts[0].kind, DriftKind::NvLink);
}

#[test]
fn json_round_trip_keeps_every_field() {
    for name in [
        "h100-healthy.json",
        "h100-mig-all-1g.10gb.json",
        "h100-ecc-uncorrectable.json",
        "h100-pcie-sparse.json",
    ] {
        let inv = load(name);
        let again = Inventory::from_json(&inv.to_json()).expect("round trip parses");
        assert_eq!(inv, again, "{name}");
        // And the file itself is exactly what we would write.
        let raw: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(fixture_dir().join(name)).unwrap())
                .unwrap();
        assert_eq!(raw, serde_json::to_value(&inv).unwrap(), "{name}");
    }
}

#[test]
fn other_document_kinds_are_refused() {
    let text = std::fs::read_to_string(fixture_dir().join("h100-healthy.json")).unwrap();
    let err = Inventory::from_json(&text.replace("GpuInventory", "NodeInventory")).unwrap_err();
    assert!(
        err.to_string()
            .contains("expected fleetform.dev/v1alpha1/GpuInventory"),
        "{err}"
    );
}

#[test]
fn text_rendering_shows_health_and_one_line_per_gpu() {
    let inv = load("h100-ecc-uncorrectable.json");
    let text = render_text(&inv);
    assert!(text.contains("node r01-n04"));
    assert!(text.contains("health failed"));
    assert!(text.contains("xid 48"));
    assert_eq!(
        text.lines()
            .filter(|l| l.contains("H100 80GB HBM3"))
            .count(),
        8,
        "{text}"
    );
}

#[test]
fn collect_without_nvml_is_unavailable_not_a_panic() {
    // This machine has no NVIDIA driver. On a GPU host the test only checks the call returns.
    match fleetform_gpu::collect() {
        Err(GpuError::NvmlUnavailable(msg)) => {
            assert!(msg.starts_with("NVML not available: "), "{msg}")
        }
        Err(other) => panic!("expected NvmlUnavailable, got {other}"),
        Ok(inv) => assert!(!inv.gpus.is_empty()),
    }
}

#[test]
fn text_rendering_of_a_mig_node_lists_its_mig_devices() {
    let text = render_text(&load("h100-mig-gpu2-disabled.json"));
    assert!(
        text.lines().all(|l| l == l.trim_end()),
        "no trailing spaces"
    );
    assert_eq!(
        text.lines()
            .filter(|l| l.ends_with("mig devices: 7 × 1g.10gb"))
            .count(),
        7,
        "{text}"
    );
    assert!(text.contains("health healthy"), "{text}");
}

/// Recorded on a real NVIDIA H100 80GB HBM3 through the device tool by
/// tests/device/nvml-check.sh (check log beside it): the real NVML shape must
/// parse, read as healthy, and match a one-GPU H100 pool with its driver.
#[test]
fn an_inventory_recorded_on_a_real_h100_is_healthy_and_matches_its_pool() {
    let inv = load("recorded-h100-80gb-hbm3.json");
    assert_eq!(inv.gpus.len(), 1);
    assert!(
        inv.gpus[0]
            .name
            .as_deref()
            .is_some_and(|n| n.contains("H100")),
        "{:?}",
        inv.gpus[0].name
    );
    assert_eq!(node_health(&inv).state, HealthState::Healthy);
    let pool = PoolExpectation {
        pool: "h100-recorded".into(),
        gpu_model: "H100".into(),
        gpu_count: 1,
        mig: None,
        driver_version: Some("580.159.04".into()),
        nvlinks_per_gpu: None,
    };
    assert!(
        compare(&pool, &inv).is_empty(),
        "{:?}",
        compare(&pool, &inv)
    );
    // Expecting 8 GPUs on this node is drift.
    assert!(
        !compare(
            &PoolExpectation {
                gpu_count: 8,
                ..pool
            },
            &inv
        )
        .is_empty()
    );
}
