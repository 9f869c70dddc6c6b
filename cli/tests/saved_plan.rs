//! A plan saved with `plan -o FILE` is applied only while it still describes the world: once
//! live state or the fleet's revision moved, `apply FILE` refuses and applies nothing
//! (RELIABILITY.md row 4). Against the real kube-apiserver (tests/peers/kube.sh start; skipped
//! when it is not running, a failure when FLEETFORM_REQUIRE_PEERS=1).
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, PostParams};

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

fn shared_charts() -> PathBuf {
    std::env::var_os("FLEETFORM_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared"))
        .join("fixtures/charts")
}

/// A fleet whose one tenant (the test apiserver) asks for namespace `ns`.
fn write_fleet(dir: &Path, kc: &Path, ns: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::copy(kc, dir.join("admin.kubeconfig")).unwrap();
    std::fs::write(
        dir.join("fleet.yaml"),
        format!(
            r#"apiVersion: fleetform.dev/v1alpha1
kind: Fleet
metadata: {{name: saved}}
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
  namespaces: [{ns}]
"#,
            charts = shared_charts().display()
        ),
    )
    .unwrap();
}

fn fleetform(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fleetform"))
        .args(args)
        .arg("--fleet")
        .arg(dir.join("fleet"))
        .arg("--state")
        .arg(dir.join("state"))
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test]
async fn a_saved_plan_is_refused_once_live_state_or_the_fleet_moved_and_applies_nothing() {
    let Some(kc) = kubeconfig() else { return };
    let dir = tempfile::tempdir().unwrap();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let ns = format!("saved-plan-{nanos:x}");
    let fleet = dir.path().join("fleet");
    write_fleet(&fleet, &kc, &ns);
    let plan_file = dir.path().join("plan.json");
    let plan_arg = plan_file.to_str().unwrap();

    // Live state moves after the plan: someone creates the namespace with a label of theirs.
    let out = fleetform(dir.path(), &["plan", "-o", plan_arg]);
    assert_eq!(out.status.code(), Some(2), "plan: {}", stderr(&out));
    let client = kube::Client::try_from(
        kube::Config::from_custom_kubeconfig(
            kube::config::Kubeconfig::read_from(&kc).unwrap(),
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .unwrap(),
    )
    .unwrap();
    let namespaces: Api<Namespace> = Api::all(client);
    let mut theirs = Namespace::default();
    theirs.metadata.name = Some(ns.clone());
    theirs.metadata.labels = Some([("owner".to_string(), "someone-else".to_string())].into());
    namespaces
        .create(&PostParams::default(), &theirs)
        .await
        .unwrap();
    let out = fleetform(dir.path(), &["apply", plan_arg]);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        stderr(&out).contains("live state changed since the plan was saved"),
        "{}",
        stderr(&out)
    );
    let live = namespaces.get(&ns).await.unwrap();
    assert!(
        live.metadata
            .managed_fields
            .unwrap_or_default()
            .iter()
            .all(|m| m.manager.as_deref() != Some("fleetform")),
        "the refused apply wrote nothing"
    );

    // The fleet moves after the plan: a saved plan of the old revision is refused too.
    let out = fleetform(dir.path(), &["plan", "-o", plan_arg]);
    assert!(out.status.code() == Some(2), "plan: {}", stderr(&out));
    write_fleet(&fleet, &kc, &format!("{ns}-renamed"));
    let out = fleetform(dir.path(), &["apply", plan_arg]);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        stderr(&out).contains("the saved plan was made from revision"),
        "{}",
        stderr(&out)
    );
    assert!(
        namespaces
            .get_opt(&format!("{ns}-renamed"))
            .await
            .unwrap()
            .is_none(),
        "nothing of the new revision was applied"
    );
    namespaces.delete(&ns, &Default::default()).await.unwrap();
}
