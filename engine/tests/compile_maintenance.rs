//! Compile: which host changes cordon a cluster node while they are applied.
#![allow(clippy::unwrap_used)]

use fleetform_engine::secret::{SecretError, SecretRef, SecretResolver};
use fleetform_engine::{ResourceId, Sensitive, compile, load, validate};

/// The example's secret files are not in the repository: every key reads as a test value.
struct TestSecrets;
impl SecretResolver for TestSecrets {
    fn resolve(&self, _r: &SecretRef) -> Result<Sensitive<String>, SecretError> {
        Ok(Sensitive::new("test-key".into()))
    }
}

fn compiled(dir: &str) -> compile::Compiled {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(dir);
    let files = load::read_dir(&root).unwrap();
    let (docs, diags) = load::load(&files);
    assert!(diags.is_empty(), "{diags:?}");
    let fleet = validate::validate(&docs).unwrap();
    compile::compile(&fleet, &TestSecrets).unwrap()
}

#[test]
fn a_pool_members_disruptive_bmc_changes_cordon_its_node_in_the_tenant_cluster() {
    let c = compiled("examples/small");
    let bios = c
        .resources
        .iter()
        .find(|d| d.id == ResourceId::new("redfish", "host/r01-n01/bios"))
        .unwrap();
    assert!(bios.rollout.is_some());
    let node = bios.maintenance.as_ref().unwrap();
    assert_eq!(node.as_str(), "kube:acme/v1/Node/r01-n01");
    assert!(
        c.resources.iter().any(|d| &d.id == node),
        "the node it cordons is a compiled (adopted) resource"
    );
    // The reset that makes staged BIOS settings current is the power resource's: it is
    // rolled out and cordons the node too, and its spec says what the reset must apply.
    let power = c
        .resources
        .iter()
        .find(|d| d.id == ResourceId::new("redfish", "host/r01-n01/power"))
        .unwrap();
    assert_eq!(power.maintenance.as_ref(), Some(node));
    assert!(power.rollout.is_some());
    assert_eq!(
        power.spec["applyAtReset"]["bios"], bios.spec["attributes"],
        "{}",
        power.spec
    );
}

#[test]
fn secure_boot_is_managed_only_when_the_manifest_sets_it() {
    // examples/small leaves secureBoot unset: no secure-boot resource, nothing for the reset.
    let c = compiled("examples/small");
    assert!(
        !c.resources
            .iter()
            .any(|d| d.id.path().ends_with("/secure-boot")),
        "a secure-boot resource for a host that does not set secureBoot"
    );
    // fixtures/every-field sets `secureBoot: false`: managed, and part of the host's reset.
    let c = compiled("fixtures/every-field");
    let sb: Vec<_> = c
        .resources
        .iter()
        .filter(|d| d.id.path().ends_with("/secure-boot"))
        .collect();
    assert!(!sb.is_empty());
    let host = sb[0].id.path().split('/').nth(1).unwrap().to_string();
    let power = c
        .resources
        .iter()
        .find(|d| d.id == ResourceId::new("redfish", format!("host/{host}/power")))
        .unwrap();
    if power.spec["state"] == "On" {
        assert_eq!(
            power.spec["applyAtReset"]["secureBoot"], false,
            "{}",
            power.spec
        );
    }
}

#[test]
fn every_host_gets_a_read_only_gpu_inventory_from_its_manifest() {
    let c = compiled("examples/small");
    let inv = c
        .resources
        .iter()
        .find(|d| d.id == ResourceId::new("redfish", "host/r01-n01/inventory"))
        .unwrap();
    assert!(
        inv.spec["expect"]["gpuCount"].as_u64().unwrap() > 0,
        "{}",
        inv.spec
    );
    assert!(inv.spec["expect"]["gpuModel"].is_string(), "{}", inv.spec);
    // Not a setting: the power resource does not wait for it, nothing is cordoned for it.
    assert_eq!(inv.maintenance, None);
    let power = c
        .resources
        .iter()
        .find(|d| d.id == ResourceId::new("redfish", "host/r01-n01/power"))
        .unwrap();
    assert!(power.deps.iter().all(|d| d.on != inv.id));
}

#[test]
fn a_host_with_no_gpu_outside_pools_validates_and_expects_no_gpu_from_its_bmc() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/small");
    let mut files = load::read_dir(&root).unwrap();
    files.push(load::SourceFile {
        path: "cpu-host.yaml".into(),
        bytes: b"apiVersion: fleetform.dev/v1alpha1
kind: Host
metadata:
  name: svc-0
spec:
  rack: r01
  bmc:
    endpoint: http://127.0.0.1:8009
    credentials:
      username: admin
      password: {file: ../secrets/bmc-password}
  gpu: {model: L40, count: 0}
"
        .to_vec(),
    });
    let (docs, diags) = load::load(&files);
    assert!(diags.is_empty(), "{diags:?}");
    let fleet = validate::validate(&docs).unwrap();
    let c = compile::compile(&fleet, &TestSecrets).unwrap();
    let inv = c
        .resources
        .iter()
        .find(|d| d.id == ResourceId::new("redfish", "host/svc-0/inventory"))
        .unwrap();
    assert_eq!(inv.spec["expect"]["gpuCount"], 0);
    assert_eq!(inv.spec["expect"]["gpuModel"], "L40");
}
