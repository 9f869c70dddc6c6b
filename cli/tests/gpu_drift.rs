//! `fleetform drift --gpu-inventory DIR`: pool expectations vs recorded GPU
//! reports, in text and JSON, with exit 2 on GPU drift (no peer, no GPU).
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

/// The upstream charts in ../shared (never copied into the repository).
fn shared_charts() -> std::path::PathBuf {
    std::env::var_os("FLEETFORM_SHARED_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared"))
        .join("fixtures/charts")
}

fn fleet(dir: &Path, sharing: &str) {
    std::fs::create_dir_all(dir.join("fleet")).unwrap();
    std::fs::write(
        dir.join("fleet/fleet.yaml"),
        format!(
            r#"apiVersion: fleetform.dev/v1alpha1
kind: Fleet
metadata: {{name: bf}}
spec:
  charts: {{repository: {charts}, wait: false}}
  operators:
    gpuOperator:
      version: v26.7.0
      driver: {{version: "580.159.04"}}
  managementCluster:
    kubeconfig: {{file: mgmt.kubeconfig}}
---
apiVersion: fleetform.dev/v1alpha1
kind: Tenant
metadata: {{name: acme}}
spec:
  flavor: tenant-managed
  kubernetes:
    version: "1.35"
    kubeconfig: {{file: acme.kubeconfig}}
    podCidr: 10.65.0.0/16
    serviceCidr: 10.97.0.0/20
  nodeOs: {{byo: true}}
---
apiVersion: fleetform.dev/v1alpha1
kind: Rack
metadata: {{name: r01}}
spec: {{faultDomain: rack}}
---
apiVersion: fleetform.dev/v1alpha1
kind: Host
metadata: {{name: r01-n01}}
spec:
  rack: r01
  bmc:
    endpoint: http://127.0.0.1:9
    credentials: {{username: admin, password: {{env: BMC_PASSWORD}}}}
  gpu: {{model: H100, count: 1}}
---
apiVersion: fleetform.dev/v1alpha1
kind: NodePool
metadata: {{name: infer}}
spec:
  tenant: acme
  hosts: [r01-n01]
{sharing}"#,
            charts = shared_charts().display()
        ),
    )
    .unwrap();
    for f in ["mgmt.kubeconfig", "acme.kubeconfig"] {
        std::fs::write(dir.join("fleet").join(f), "apiVersion: v1\nkind: Config\n").unwrap();
    }
    // The recorded H100 report, as node r01-n01's.
    std::fs::create_dir_all(dir.join("gpu")).unwrap();
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fixtures/gpu/recorded-h100-80gb-hbm3.json"
    ))
    .unwrap();
    let mut inv: serde_json::Value = serde_json::from_str(&text).unwrap();
    inv["node"] = "r01-n01".into();
    std::fs::write(dir.join("gpu/r01-n01.json"), inv.to_string()).unwrap();
}

fn drift(dir: &Path, format: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_fleetform"))
        .args([
            "drift",
            "--format",
            format,
            "--gpu-inventory-max-age",
            "100000000",
        ])
        .arg("--fleet")
        .arg(dir.join("fleet"))
        .arg("--state")
        .arg(dir.join("state"))
        .arg("--gpu-inventory")
        .arg(dir.join("gpu"))
        .output()
        .unwrap()
}

#[test]
fn a_mig_layout_the_node_does_not_have_is_gpu_drift_with_exit_2_in_text_and_json() {
    let dir = tempfile::tempdir().unwrap();
    fleet(
        dir.path(),
        "  gpuSharing:\n    mig: {config: all-1g.10gb}\n",
    );
    let out = drift(dir.path(), "text");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(
            "[gpu-drift] pool infer expects all-1g.10gb on node r01-n01, GPU 0 has MIG disabled"
        ),
        "{text}"
    );
    let out = drift(dir.path(), "json");
    assert_eq!(out.status.code(), Some(2));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["gpu"][0]["kind"], "gpu-drift");
    assert_eq!(json["gpu"][0]["node"], "r01-n01");
}

#[test]
fn a_node_that_matches_its_pool_is_no_drift_with_exit_0() {
    let dir = tempfile::tempdir().unwrap();
    fleet(dir.path(), "");
    let out = drift(dir.path(), "text");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
