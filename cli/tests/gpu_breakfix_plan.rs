//! `fleetform plan --gpu-inventory cluster` against a real kube-apiserver
//! (tests/peers/kube.sh start): reports published as ConfigMaps and the Nodes'
//! cordons are read back as observed state and become the planned cordon,
//! the spare proposal, or a budget finding. Hosts' BMCs are not reachable here,
//! so the plan also lists their redfish problems; only the kube and GPU parts
//! are checked.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::core::v1::{Namespace, Node};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

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

/// The upstream charts in ../shared (never copied into the repository).
fn shared_charts() -> std::path::PathBuf {
    std::env::var_os("FLEETFORM_SHARED_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared"))
        .join("fixtures/charts")
}

fn fleet_yaml(p: &str) -> String {
    let mut s = format!(
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
    kubeconfig: {{file: admin.kubeconfig}}
---
apiVersion: fleetform.dev/v1alpha1
kind: Tenant
metadata: {{name: acme}}
spec:
  flavor: tenant-managed
  kubernetes:
    version: "1.35"
    kubeconfig: {{file: admin.kubeconfig}}
    podCidr: 10.65.0.0/16
    serviceCidr: 10.97.0.0/20
  nodeOs: {{byo: true}}
---
apiVersion: fleetform.dev/v1alpha1
kind: Rack
metadata: {{name: {p}}}
spec: {{faultDomain: rack}}
---
apiVersion: fleetform.dev/v1alpha1
kind: NodePool
metadata: {{name: train}}
spec:
  tenant: acme
  hosts: [{p}-n01, {p}-n02]
  spares: [{p}-s01]
  rollout: {{maxUnavailable: 1}}
"#,
        charts = shared_charts().display()
    );
    for (h, spare) in [("n01", false), ("n02", false), ("s01", true)] {
        s.push_str(&format!(
            "---\napiVersion: fleetform.dev/v1alpha1\nkind: Host\nmetadata: {{name: {p}-{h}}}\nspec:\n  rack: {p}\n  bmc:\n    endpoint: http://127.0.0.1:9\n    systemId: {p}-{h}\n    credentials: {{username: admin, password: {{env: FLEETFORM_TEST_UNSET_BMC_PASSWORD}}}}\n  gpu: {{model: H100, count: 1}}\n{}",
            if spare { "  spare: true\n" } else { "" }
        ));
    }
    s
}

fn fleetform(args: &[&str], kc: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_fleetform"))
        .args(args)
        .arg("--kubeconfig")
        .arg(kc)
        .output()
        .unwrap()
}

fn plan_json(dir: &Path, max_age: &str) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_fleetform"))
        .args(["plan", "--format", "json", "--gpu-inventory", "cluster"])
        .args(["--gpu-inventory-max-age", max_age])
        .arg("--fleet")
        .arg(dir.join("fleet"))
        .arg("--state")
        .arg(dir.join("state"))
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn findings(plan: &Value) -> Vec<(String, String)> {
    plan["findings"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|f| {
            (
                f["node"].as_str().unwrap_or_default().to_string(),
                f["kind"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn published_reports_and_node_cordons_are_read_back_as_observed_state_by_plan() {
    let Some(kc) = kubeconfig() else { return };
    let client = admin_client(&kc).await;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let p = format!("bf{}x{nanos:x}", std::process::id());
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("fleet")).unwrap();
    std::fs::copy(&kc, dir.path().join("fleet/admin.kubeconfig")).unwrap();
    std::fs::write(dir.path().join("fleet/fleet.yaml"), fleet_yaml(&p)).unwrap();

    let nodes: Api<Node> = Api::all(client.clone());
    for h in ["n01", "n02", "s01"] {
        nodes
            .create(
                &PostParams::default(),
                &serde_json::from_value(
                    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": format!("{p}-{h}")}}),
                )
                .unwrap(),
            )
            .await
            .unwrap();
    }
    // The reporters' namespace; the test must not depend on another test having made it.
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let _ = namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "gpu-inventory"}}),
            )
            .unwrap(),
        )
        .await; // exists already when another test made it
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/gpu/");
    for (h, fixture) in [
        ("n01", "recorded-h100-80gb-hbm3.json"),
        ("n02", "recorded-h100-80gb-hbm3-ecc-failed.json"),
        ("s01", "recorded-h100-80gb-hbm3.json"),
    ] {
        let out = fleetform(
            &[
                "gpu",
                "inventory",
                "--from",
                &format!("{fixtures}{fixture}"),
                "--node",
                &format!("{p}-{h}"),
                "--publish",
            ],
            &kc,
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // The recorded reports are from 2026-11-27; a day-long max age keeps them fresh.
    let plan = plan_json(dir.path(), "100000000");
    let node = format!("kube:acme/v1/Node/{p}-n02");
    let change = plan["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == node.as_str())
        .unwrap_or_else(|| panic!("{plan:#}"));
    assert_eq!(change["reason"]["kind"], "break-fix");
    assert!(
        change["reason"]["detail"]
            .as_str()
            .unwrap()
            .contains("GPU 0: 3 uncorrectable volatile ECC"),
        "{change:#}"
    );
    let f = findings(&plan);
    assert!(f.contains(&(format!("{p}-n02"), "failed".into())), "{f:?}");
    assert!(
        f.contains(&(format!("{p}-n02"), "swap-proposed".into())),
        "{f:?}"
    );
    assert!(
        plan["problems"]
            .as_array()
            .unwrap()
            .iter()
            .all(|pr| pr["id"]
                .as_str()
                .unwrap_or_default()
                .starts_with("redfish:")),
        "only the unreachable BMCs are problems: {plan:#}"
    );

    // n01 is cordoned by someone else: maxUnavailable 1 is used up, n02 is reported instead.
    nodes
        .patch(
            &format!("{p}-n01"),
            &PatchParams::apply("ops-oncall"),
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": format!("{p}-n01")}, "spec": {"unschedulable": true}})),
        )
        .await
        .unwrap();
    let plan = plan_json(dir.path(), "100000000");
    assert!(
        findings(&plan).contains(&(format!("{p}-n02"), "budget-exhausted".into())),
        "{plan:#}"
    );
    assert!(
        plan["changes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["reason"]["kind"] != "break-fix"),
        "{plan:#}"
    );

    // With the default max age (15 min) the recorded reports (2026-11-27T02:59:13Z)
    // are stale: the members are unknown, never healthy, and nothing is cordoned.
    let plan = plan_json(dir.path(), "900");
    assert_eq!(
        findings(&plan),
        [
            (format!("{p}-n01"), "unknown".to_string()),
            (format!("{p}-n02"), "unknown".to_string())
        ]
    );
    assert!(
        plan["changes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["reason"]["kind"] != "break-fix")
    );

    for h in ["n01", "n02", "s01"] {
        nodes
            .delete(&format!("{p}-{h}"), &Default::default())
            .await
            .unwrap();
    }
}
