//! Every example compiles to GPU requests its nodes can satisfy, judged from the
//! compiled objects alone, by what the device plugin and the DRA driver advertise:
//! - a node with `nvidia.com/gpu.deploy.device-plugin=false` advertises no extended
//!   resource: a NIM there must claim devices (`draResources`) of a DeviceClass the
//!   tenant cluster has;
//! - a MIG node advertises `nvidia.com/gpu` under the ClusterPolicy's `single` strategy
//!   and `nvidia.com/mig-<profile>` under `mixed`;
//! - any other GPU node advertises `nvidia.com/gpu`.
//!
//! Every DeviceClass selects on the device type as well as the driver.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use fleetform_engine::secret::{SecretError, SecretRef, SecretResolver};
use fleetform_engine::{Sensitive, compile, load, validate};
use serde_json::Value;

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
    let mut files = load::read_dir(&root).unwrap();
    // The sandbox's endpoints are filled in by its script.
    for f in &mut files {
        let text = String::from_utf8(f.bytes.clone()).unwrap();
        f.bytes = text
            .replace("@REGISTRY_HOST@", "127.0.0.1:5000")
            .replace("@REGISTRY_URL@", "https://127.0.0.1:5000")
            .replace("@SUSHY_LIBVIRT_URL@", "http://127.0.0.1:8000")
            .replace("@SUSHY_FAKE_URL@", "http://127.0.0.1:8001")
            .replace("@SUSHY_USERNAME@", "admin")
            .replace("@REGISTRY_USER@", "fleetform")
            .replace("@CHARTS_DIR@", "../../../shared/fixtures/charts")
            .into_bytes();
    }
    let (docs, diags) = load::load(&files);
    assert!(diags.is_empty(), "{dir}: {diags:?}");
    let fleet = validate::validate(&docs).unwrap_or_else(|d| panic!("{dir}: {d:?}"));
    compile::compile(&fleet, &TestSecrets).unwrap()
}

fn objects<'a>(c: &'a compile::Compiled, cluster: &str, kind: &str) -> Vec<&'a Value> {
    c.resources
        .iter()
        .filter(|d| d.spec["cluster"] == cluster && d.spec["object"]["kind"] == kind)
        .map(|d| &d.spec["object"])
        .collect()
}

#[test]
fn every_example_nim_asks_for_what_its_nodes_advertise() {
    let mut nims = 0;
    for dir in ["examples/small", "examples/dsx", "examples/sandbox"] {
        let c = compiled(dir);
        for cluster in c.clusters.keys() {
            let strategy = objects(&c, cluster, "ClusterPolicy")
                .first()
                .and_then(|p| p.pointer("/spec/mig/strategy"))
                .and_then(Value::as_str)
                .unwrap_or("single")
                .to_string();
            let classes: Vec<&str> = objects(&c, cluster, "DeviceClass")
                .iter()
                .map(|d| d["metadata"]["name"].as_str().unwrap())
                .collect();
            for dc in objects(&c, cluster, "DeviceClass") {
                let cel = dc
                    .pointer("/spec/selectors/0/cel/expression")
                    .and_then(Value::as_str)
                    .unwrap();
                assert!(
                    cel.contains("device.driver ==") && cel.contains(".type =="),
                    "{cel}"
                );
            }
            let pool_labels: BTreeMap<String, Value> = objects(&c, cluster, "Node")
                .iter()
                .map(|n| {
                    (
                        n["metadata"]["labels"]["fleetform.dev/pool"]
                            .as_str()
                            .unwrap()
                            .to_string(),
                        n["metadata"]["labels"].clone(),
                    )
                })
                .collect();
            for svc in objects(&c, cluster, "NIMService") {
                let name = svc["metadata"]["name"].as_str().unwrap();
                let limits = svc
                    .pointer("/spec/resources/limits")
                    .and_then(Value::as_object)
                    .cloned()
                    .unwrap_or_default();
                // The NIM's pool, from the manifest through the labels of its nodes.
                let labels = pool_for(dir, name)
                    .and_then(|p| pool_labels.get(&p))
                    .cloned()
                    .unwrap_or(Value::Null);
                let dp_off = labels["nvidia.com/gpu.deploy.device-plugin"] == "false";
                let mig = labels.get("nvidia.com/mig.config").is_some();
                if dp_off {
                    assert!(limits.is_empty(), "{dir} {name}: {limits:?}");
                    let claims = svc.pointer("/spec/draResources").unwrap();
                    for d in claims[0]["claimCreationSpec"]["devices"]
                        .as_array()
                        .unwrap()
                    {
                        let class = d["deviceClassName"].as_str().unwrap();
                        assert!(classes.contains(&class), "{dir} {name}: {class}");
                    }
                } else {
                    assert_eq!(limits.len(), 1, "{dir} {name}: {limits:?}");
                    let resource = limits.keys().next().unwrap();
                    let ok = if mig && strategy == "mixed" {
                        resource.starts_with("nvidia.com/mig-")
                    } else {
                        resource == "nvidia.com/gpu"
                    };
                    assert!(ok, "{dir} {name}: {resource} on a {strategy} node");
                }
                nims += 1;
            }
        }
    }
    assert!(nims >= 4, "only {nims} NIMs checked");
}

/// The pool a NIM of an example names (read from the manifest's NIMService documents).
fn pool_for(dir: &str, nim: &str) -> Option<String> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(dir);
    let files = load::read_dir(&root).unwrap();
    let (docs, _) = load::load(&files);
    docs.iter()
        .find(|d| d.kind() == Some("NIMService") && d.value["metadata"]["name"] == nim)
        .and_then(|d| d.value["spec"]["pool"].as_str().map(str::to_string))
}
