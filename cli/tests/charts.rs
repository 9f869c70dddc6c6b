//! Operator charts end to end against a real kube-apiserver (tests/peers/kube.sh start): the
//! real charts from ../shared/fixtures/charts, rendered by Helm's own engine with the values
//! fleetform derives from the manifest, applied CRDs first with server-side apply, re-planned
//! clean, then upgraded (GPU Operator v26.3.3 -> v26.7.0) with the plan showing the release.
//! No controllers run: `charts.wait: false` keeps fleetform from waiting on readiness.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// The releases share cluster-scoped objects (CRDs, ClusterRoles) in the one test API server:
/// one test at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn kubeconfig() -> Option<PathBuf> {
    match std::env::var_os("FLEETFORM_TEST_KUBECONFIG") {
        Some(p) => Some(PathBuf::from(p)),
        None if std::env::var("FLEETFORM_REQUIRE_PEERS").as_deref() == Ok("1") => {
            panic!("FLEETFORM_TEST_KUBECONFIG is not set: run tests/peers/kube.sh start")
        }
        None => {
            eprintln!("skipped: kube not running (tests/peers/kube.sh start)");
            None
        }
    }
}

/// The upstream charts (never copied into the repository).
fn shared_charts() -> PathBuf {
    let base = std::env::var_os("FLEETFORM_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared"));
    let p = base.join("fixtures/charts");
    assert!(
        p.is_dir(),
        "{} is missing: ../shared must sit beside the checkout (or set FLEETFORM_SHARED_DIR)",
        p.display()
    );
    p
}

fn fleet(gpu_version: &str, tenant: &str, extra_operators: &str) -> String {
    format!(
        r#"apiVersion: fleetform.dev/v1alpha1
kind: Fleet
metadata: {{name: charts}}
spec:
  charts:
    repository: {repo}
    wait: false
  operators:
    gpuOperator:
      version: {gpu_version}
      driver: {{version: "580.95.05", kernelModuleType: open}}
      migStrategy: mixed
{extra_operators}
  managementCluster:
    kubeconfig: {{file: admin.kubeconfig}}
---
apiVersion: fleetform.dev/v1alpha1
kind: Tenant
metadata: {{name: {tenant}}}
spec:
  flavor: tenant-managed
  kubernetes:
    version: "1.34"
    kubeconfig: {{file: admin.kubeconfig}}
    podCidr: 10.65.0.0/16
    serviceCidr: 10.97.0.0/20
  nodeOs: {{byo: true}}
"#,
        repo = shared_charts().display()
    )
}

fn run(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fleetform"))
        .args(args)
        .arg("--fleet")
        .arg(dir.join("fleet"))
        .arg("--state")
        .arg(dir.join("state"))
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn setup(kc: &Path, yaml: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("fleet")).unwrap();
    std::fs::copy(kc, dir.path().join("fleet/admin.kubeconfig")).unwrap();
    std::fs::write(dir.path().join("fleet/fleet.yaml"), yaml).unwrap();
    dir
}

fn plan_json(dir: &Path) -> Value {
    let out = run(dir, &["plan", "--format", "json"]);
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)))
}

#[tokio::test]
async fn the_operator_stack_installs_from_its_charts_crds_first_and_replans_clean() {
    let Some(kc) = kubeconfig() else { return };
    let _one = SERIAL.lock().await;
    let extra = "    networkOperator: {version: v26.4.1}\n    nimOperator: {version: v3.1.2}";
    let yaml = fleet("v26.7.0", "charts-stack", extra);
    let yaml = yaml.replace(
        "  managementCluster:",
        "  schedulers:\n    kai: {version: v0.13.0}\n  policies:\n    kyverno: {version: \"3.9.0\"}\n  managementCluster:",
    );
    let dir = setup(&kc, &yaml);

    let plan = plan_json(dir.path());
    let changes = plan["changes"].as_array().unwrap();
    let id_of = |c: &Value| c["id"].as_str().unwrap().to_string();
    // Every release is planned, from the real charts.
    let releases: Vec<String> = plan["releases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["release"].as_str().unwrap().to_string())
        .collect();
    for r in [
        "charts-stack/gpu-operator/gpu-operator",
        "charts-stack/nvidia-network-operator/network-operator",
        "charts-stack/nim-operator/nim-operator",
        "charts-stack/kai-scheduler/kai-scheduler",
        "charts-stack/kyverno/kyverno",
    ] {
        assert!(releases.contains(&r.to_string()), "{r} not in {releases:?}");
    }
    let cp = changes
        .iter()
        .find(|c| id_of(c).ends_with("/nvidia.com/v1/ClusterPolicy/cluster-policy"))
        .expect("the GPU Operator chart renders the ClusterPolicy");
    // CRDs come first: the ClusterPolicy waits for its CRD.
    assert!(
        cp["waits_for"].as_array().unwrap().iter().any(|d| d["on"]
            .as_str()
            .unwrap()
            .ends_with("CustomResourceDefinition/clusterpolicies.nvidia.com")),
        "{cp:#}"
    );
    // Hooks that would delete or test are not applied; CRD-upgrade hooks are off.
    assert!(
        !changes.iter().any(|c| id_of(c).contains("upgrade-crd")),
        "fleetform applies CRDs itself: the chart's CRD-upgrade hook must be off"
    );
    assert!(
        !changes.iter().any(|c| id_of(c).contains("/Pod/")),
        "test hooks are not applied"
    );

    let apply = run(dir.path(), &["apply"]);
    assert_eq!(apply.status.code(), Some(0), "{}", text(&apply));
    let replan = run(dir.path(), &["plan"]);
    assert_eq!(
        replan.status.code(),
        Some(0),
        "a re-plan right after the apply must be empty\n{}",
        text(&replan)
    );
    // The ClusterPolicy in the cluster is the chart's, rendered from the typed fields.
    let live = live_cluster_policy(&kc).await;
    assert_eq!(live["spec"]["mig"]["strategy"], "mixed", "{live:#}");
    assert_eq!(live["spec"]["driver"]["version"], "580.95.05");
    assert_eq!(live["spec"]["driver"]["kernelModuleType"], "open");
}

async fn live_cluster_policy(kc: &Path) -> Value {
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(kc).unwrap(),
        &Default::default(),
    )
    .await
    .unwrap();
    let client = kube::Client::try_from(config).unwrap();
    let ar = kube::discovery::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
        "nvidia.com",
        "v1",
        "ClusterPolicy",
    ));
    let api: kube::Api<kube::api::DynamicObject> = kube::Api::all_with(client, &ar);
    serde_json::to_value(api.get("cluster-policy").await.unwrap()).unwrap()
}

#[tokio::test]
async fn a_gpu_operator_upgrade_is_one_release_line_with_its_new_crds_and_images() {
    let Some(kc) = kubeconfig() else { return };
    let _one = SERIAL.lock().await;
    let dir = setup(&kc, &fleet("v26.3.3", "charts-upgrade", ""));
    let apply = run(dir.path(), &["apply"]);
    assert_eq!(apply.status.code(), Some(0), "{}", text(&apply));

    std::fs::write(
        dir.path().join("fleet/fleet.yaml"),
        fleet("v26.7.0", "charts-upgrade", ""),
    )
    .unwrap();
    let plan = run(dir.path(), &["plan"]);
    assert_eq!(plan.status.code(), Some(2), "{}", text(&plan));
    let out = String::from_utf8_lossy(&plan.stdout);
    let line = out
        .lines()
        .find(|l| l.contains("release charts-upgrade/gpu-operator/gpu-operator"))
        .unwrap_or_else(|| panic!("no release line\n{out}"));
    assert!(line.contains("gpu-operator v26.7.0"), "{line}");
    assert!(
        line.contains("new images:") && line.contains("v26.7.0"),
        "{line}"
    );
    // v26.7.0 adds the gpuclusters CRD: it belongs to the release now.
    let json = plan_json(dir.path());
    let release = json["releases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["release"] == "charts-upgrade/gpu-operator/gpu-operator")
        .unwrap();
    assert_eq!(release["version"], "v26.7.0");
    assert!(
        json["changes"].as_array().unwrap().iter().any(|c| c["id"]
            .as_str()
            .unwrap()
            .ends_with("CustomResourceDefinition/gpuclusters.nvidia.com")),
        "{json:#}"
    );
    let apply = run(dir.path(), &["apply"]);
    assert_eq!(apply.status.code(), Some(0), "{}", text(&apply));
    let replan = run(dir.path(), &["plan"]);
    assert_eq!(replan.status.code(), Some(0), "{}", text(&replan));
}

#[tokio::test]
async fn a_chart_version_that_does_not_exist_fails_the_plan_naming_tenant_chart_and_version() {
    let Some(kc) = kubeconfig() else { return };
    let _one = SERIAL.lock().await;
    let dir = setup(&kc, &fleet("v99.0.0", "charts-missing", ""));
    let plan = run(dir.path(), &["plan"]);
    assert_eq!(plan.status.code(), Some(1), "{}", text(&plan));
    let err = String::from_utf8_lossy(&plan.stderr);
    assert!(
        err.contains("charts-missing/gpu-operator/gpu-operator")
            && err.contains("gpu-operator v99.0.0")
            && err.contains("fleet.yaml:"),
        "{err}"
    );
}

#[test]
fn a_value_the_charts_schema_rejects_fails_validate_at_the_line_that_sets_it() {
    // gpu-operator v26.7.0 ships node-feature-discovery (enabled by `nfd.enabled`) with a
    // values.schema.json that wants a boolean here.
    let yaml = fleet("v26.7.0", "charts-schema", "").replace(
        "      migStrategy: mixed\n",
        "      migStrategy: mixed\n      values:\n        node-feature-discovery:\n          checksumValuesOnly: \"yes\"\n",
    );
    let line = yaml
        .lines()
        .position(|l| l.contains("checksumValuesOnly"))
        .unwrap()
        + 1;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("admin.kubeconfig"), "").unwrap();
    std::fs::write(dir.path().join("fleet.yaml"), &yaml).unwrap();
    let validate = |dir: &Path| {
        Command::new(env!("CARGO_BIN_EXE_fleetform"))
            .arg("validate")
            .arg(dir)
            .output()
            .unwrap()
    };
    let out = validate(dir.path());
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let all = text(&out);
    assert!(
        all.contains(&format!("fleet.yaml:{line}:"))
            && all.contains("chart-values")
            && all.contains("/node-feature-discovery/checksumValuesOnly")
            && all.contains("gpu-operator v26.7.0"),
        "{all}"
    );
    // Turning the subchart off drops it, as Helm does: nothing left to reject.
    let off = yaml.replace(
        "      values:\n",
        "      values:\n        nfd: {enabled: false}\n",
    );
    std::fs::write(dir.path().join("fleet.yaml"), off).unwrap();
    let out = validate(dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

#[tokio::test]
async fn the_dra_driver_installs_beside_the_gpu_operator_and_owns_its_crds_and_device_classes() {
    let Some(kc) = kubeconfig() else { return };
    let _one = SERIAL.lock().await;
    // A tenant with a DRA pool. Its one host's BMC cannot be reached: the host and its Node
    // are skipped (exit 1), everything else, the charts included, is applied.
    let yaml = fleet(
        "v26.7.0",
        "charts-dra",
        "    draDriver: {version: \"0.4.0\"}",
    ) + r#"---
apiVersion: fleetform.dev/v1alpha1
kind: Rack
metadata: {name: r01}
spec: {faultDomain: rack}
---
apiVersion: fleetform.dev/v1alpha1
kind: Host
metadata: {name: dra-n01}
spec:
  rack: r01
  bmc:
    endpoint: http://127.0.0.1:9
    systemId: dra-n01
    credentials: {username: admin, password: {file: bmc-password}}
  gpu: {model: H100, count: 8}
  power: "On"
---
apiVersion: fleetform.dev/v1alpha1
kind: NodePool
metadata: {name: dra-pool}
spec:
  tenant: charts-dra
  hosts: [dra-n01]
  gpuSharing:
    dra: {deviceClasses: [gpu.nvidia.com]}
"#;
    let dir = setup(&kc, &yaml);
    std::fs::write(dir.path().join("fleet/bmc-password"), "unused").unwrap();
    let apply = run(dir.path(), &["apply"]);
    let out = text(&apply);
    assert_eq!(apply.status.code(), Some(1), "{out}");
    assert!(out.contains("skipped: redfish:host/dra-n01/power"), "{out}");

    let client = {
        let kc = kube::config::Kubeconfig::read_from(&kc).unwrap();
        let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .unwrap();
        kube::Client::try_from(config).unwrap()
    };
    let release_of = |gvk: (&str, &str, &str), name: &str| {
        let client = client.clone();
        let name = name.to_string();
        let (g, v, k) = (gvk.0.to_string(), gvk.1.to_string(), gvk.2.to_string());
        async move {
            let ar = kube::discovery::ApiResource::from_gvk(&kube::core::GroupVersionKind::gvk(
                &g, &v, &k,
            ));
            let api: kube::Api<kube::api::DynamicObject> = kube::Api::all_with(client, &ar);
            let o = api
                .get(&name)
                .await
                .unwrap_or_else(|e| panic!("{k} {name}: {e}"));
            o.metadata
                .labels
                .unwrap_or_default()
                .get("fleetform.dev/release")
                .cloned()
        }
    };
    // The driver's own chart serves ComputeDomain: its CRD, not the GPU Operator's copy for
    // its disabled GPUCluster stack; and the DeviceClasses the pool names are the chart's.
    let crd = ("apiextensions.k8s.io", "v1", "CustomResourceDefinition");
    let dra = Some("nvidia-dra-driver-gpu.nvidia-dra-driver-gpu".to_string());
    assert_eq!(
        release_of(crd, "computedomains.resource.nvidia.com").await,
        dra
    );
    assert_eq!(
        release_of(("resource.k8s.io", "v1", "DeviceClass"), "gpu.nvidia.com").await,
        dra
    );
    let plugin: kube::Api<k8s_openapi::api::apps::v1::DaemonSet> =
        kube::Api::namespaced(client.clone(), "nvidia-dra-driver-gpu");
    assert!(
        !plugin
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty(),
        "the DRA kubelet plugin DaemonSet is applied"
    );
    // Nothing left to do but the skipped host.
    let plan = plan_json(dir.path());
    let pending: Vec<&str> = plan["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["action"] != "no-op")
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        pending,
        Vec::<&str>::new(),
        "a re-plan after the apply is empty"
    );
}

#[tokio::test]
async fn apply_events_ndjson_puts_one_json_event_per_line_on_stdout_and_the_rest_on_stderr() {
    let Some(kc) = kubeconfig() else { return };
    let _one = SERIAL.lock().await;
    let yaml = fleet("v26.7.0", "charts-events", "");
    let dir = setup(&kc, &yaml);
    let first = run(dir.path(), &["apply"]);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first));
    // Another driver version changes the ClusterPolicy: at least one call, so events.
    let other = yaml.replace("580.95.05", "580.105.08");
    assert_ne!(other, yaml);
    std::fs::write(dir.path().join("fleet/fleet.yaml"), &other).unwrap();
    let apply = run(dir.path(), &["apply", "--events", "ndjson"]);
    // The cluster is shared with the other tests: put the first version back.
    std::fs::write(dir.path().join("fleet/fleet.yaml"), &yaml).unwrap();
    let back = run(dir.path(), &["apply"]);
    assert_eq!(back.status.code(), Some(0), "{}", text(&back));
    assert_eq!(apply.status.code(), Some(0), "{}", text(&apply));
    let stdout = String::from_utf8_lossy(&apply.stdout);
    let events: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: `{l}`\n{}", text(&apply))))
        .collect();
    let kind = |e: &Value| e["event"].as_str().unwrap().to_string();
    let started: Vec<&Value> = events.iter().filter(|e| kind(e) == "started").collect();
    let succeeded: Vec<&Value> = events.iter().filter(|e| kind(e) == "succeeded").collect();
    assert!(!started.is_empty(), "{}", text(&apply));
    assert_eq!(started.len(), succeeded.len(), "{}", text(&apply));
    for s in &started {
        assert!(
            succeeded.iter().any(|d| d["id"] == s["id"]),
            "{} started and never succeeded",
            s["id"]
        );
    }
    let stderr = String::from_utf8_lossy(&apply.stderr);
    assert!(stderr.contains("Applied revision"), "{}", text(&apply));
}

/// Copies a directory tree (a chart from ../shared, to edit in a scratch repository).
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

#[tokio::test]
async fn an_object_whose_version_the_pinned_charts_crd_no_longer_serves_fails_the_plan_at_its_line()
{
    let Some(kc) = kubeconfig() else { return };
    let _one = SERIAL.lock().await;
    // A chart release that moved Queue from scheduling.run.ai/v2 to v9 (a scratch copy of
    // kai-scheduler v0.13.0 with its CRD edited), while the fleet's queues are v2 objects.
    let charts = tempfile::tempdir().unwrap();
    for c in ["gpu-operator-v26.7.0", "kai-scheduler-v0.13.0"] {
        copy_tree(&shared_charts().join(c), &charts.path().join(c));
    }
    let crd = charts
        .path()
        .join("kai-scheduler-v0.13.0/crds/scheduling.run.ai_queues.yaml");
    let body = std::fs::read_to_string(&crd).unwrap();
    assert!(body.contains("    name: v2\n"));
    std::fs::write(&crd, body.replace("    name: v2\n", "    name: v9\n")).unwrap();
    let yaml = fleet("v26.7.0", "charts-crd-version", "")
        .replace(
            &shared_charts().display().to_string(),
            &charts.path().display().to_string(),
        )
        .replace(
            "  managementCluster:",
            "  schedulers:\n    kai: {version: v0.13.0}\n  managementCluster:",
        );
    let dir = setup(&kc, &yaml);
    let plan = run(dir.path(), &["plan"]);
    let out = text(&plan);
    assert_eq!(plan.status.code(), Some(1), "{out}");
    assert!(
        out.contains("is scheduling.run.ai/v2")
            && out.contains("serves Queue only as scheduling.run.ai/v9"),
        "{out}"
    );
}
