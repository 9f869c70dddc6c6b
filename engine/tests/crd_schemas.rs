//! Compiled custom resources against the real CRDs' OpenAPI schemas, without an apiserver:
//! every object compiled from `examples/dsx` and `fixtures/every-field` whose kind a CRD in
//! `../shared/fixtures/crds` (the upstream files, read in place) defines is checked against
//! that CRD's schema for its version, made strict the way `fieldValidation=Strict` is (an
//! unknown field is an error unless the schema preserves unknown fields). CEL rules and
//! defaulting need the apiserver: providers/kube/tests/compiled_crds.rs applies the same
//! objects to a real one. Skipped when ../shared is not there.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use fleetform_engine::secret::{SecretError, SecretRef, SecretResolver};
use fleetform_engine::{Sensitive, compile, load, validate};
use serde_json::{Value, json};

struct FixedSecrets;
impl SecretResolver for FixedSecrets {
    fn resolve(&self, _r: &SecretRef) -> Result<Sensitive<String>, SecretError> {
        Ok(Sensitive::new("test-secret".into()))
    }
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The OpenAPI schema of a CRD version as a strict JSON Schema.
fn strict(node: &Value) -> Value {
    let Value::Object(m) = node else {
        return node.clone();
    };
    let mut out = serde_json::Map::new();
    for (k, v) in m {
        match k.as_str() {
            "properties" => {
                let props: serde_json::Map<String, Value> = v
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), strict(v)))
                    .collect();
                out.insert(k.clone(), Value::Object(props));
            }
            "items" | "additionalProperties" if v.is_object() => {
                out.insert(k.clone(), strict(v));
            }
            "allOf" | "anyOf" | "oneOf" => {
                out.insert(
                    k.clone(),
                    Value::Array(v.as_array().into_iter().flatten().map(strict).collect()),
                );
            }
            k if k.starts_with("x-kubernetes-") || k == "nullable" || k == "format" => {}
            _ => {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    if m.get("x-kubernetes-int-or-string") == Some(&json!(true)) {
        out.remove("type");
        out.insert(
            "anyOf".into(),
            json!([{ "type": "integer" }, { "type": "string" }]),
        );
    }
    if m.get("nullable") == Some(&json!(true))
        && let Some(t) = out.get("type").cloned()
    {
        out.insert("type".into(), json!([t, "null"]));
    }
    let preserve = m.get("x-kubernetes-preserve-unknown-fields") == Some(&json!(true));
    if out.contains_key("properties") && !out.contains_key("additionalProperties") && !preserve {
        out.insert("additionalProperties".into(), json!(false));
    }
    out.insert(
        "$schema".into(),
        json!("https://json-schema.org/draft/2020-12/schema"),
    );
    Value::Object(out)
}

/// `(apiVersion, kind)` → strict schema, for every CRD under `dir`.
fn crd_schemas(dir: &Path) -> BTreeMap<(String, String), Value> {
    let files = load::read_dir(dir).unwrap_or_else(|d| panic!("{d:?}"));
    let (docs, diags) = load::load(&files);
    assert!(diags.is_empty(), "{diags:?}");
    let mut out = BTreeMap::new();
    for d in docs
        .iter()
        .filter(|d| d.kind() == Some("CustomResourceDefinition"))
    {
        let spec = &d.value["spec"];
        let group = spec["group"].as_str().unwrap();
        let kind = spec["names"]["kind"].as_str().unwrap();
        for v in spec["versions"].as_array().unwrap() {
            let name = v["name"].as_str().unwrap();
            let mut schema = strict(&v["schema"]["openAPIV3Schema"]);
            // ObjectMeta is validated by the apiserver itself, not the CRD.
            schema["properties"]["metadata"] = json!({ "type": "object" });
            schema.as_object_mut().unwrap().remove("$schema");
            out.insert((format!("{group}/{name}"), kind.to_string()), schema);
        }
    }
    out
}

fn compiled(dir: &str) -> Vec<(String, Value)> {
    let files = load::read_dir(&repo().join(dir)).unwrap();
    let (docs, diags) = load::load(&files);
    assert!(diags.is_empty(), "{diags:?}");
    let fleet = validate::validate(&docs).unwrap_or_else(|d| panic!("{d:?}"));
    let c = compile::compile(&fleet, &FixedSecrets).unwrap_or_else(|d| panic!("{d:?}"));
    c.resources
        .into_iter()
        .filter(|d| d.id.provider() == "kube")
        .map(|d| (d.id.to_string(), d.spec["object"].clone()))
        .collect()
}

#[test]
fn compiled_custom_resources_match_the_real_crd_schemas() {
    let crds = repo().join("../shared/fixtures/crds");
    if !crds.exists() {
        eprintln!("skipped: {} not found", crds.display());
        return;
    }
    let schemas = crd_schemas(&crds);
    let mut failures = Vec::new();
    let mut checked = BTreeMap::<String, usize>::new();
    for dir in ["examples/dsx", "fixtures/every-field"] {
        for (id, object) in compiled(dir) {
            let key = (
                object["apiVersion"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                object["kind"].as_str().unwrap_or_default().to_string(),
            );
            let Some(schema) = schemas.get(&key) else {
                continue; // a built-in kind: the apiserver tests check those
            };
            *checked.entry(format!("{}/{}", key.0, key.1)).or_default() += 1;
            let validator = jsonschema::draft202012::new(schema).unwrap();
            for e in validator.iter_errors(&object) {
                failures.push(format!("{dir}: {id}: {} at {}", e, e.instance_path()));
            }
        }
    }
    for kind in [
        "scheduling.run.ai/v2/Queue",
        "kyverno.io/v1/ClusterPolicy",
        "provisioning.dpu.nvidia.com/v1alpha1/BFB",
        "provisioning.dpu.nvidia.com/v1alpha1/DPUFlavor",
        "provisioning.dpu.nvidia.com/v1alpha1/DPUSet",
        "resource.nvidia.com/v1beta1/ComputeDomain",
        "karpenter.sh/v1/NodePool",
        // The ClusterPolicy is the GPU Operator chart's (cli/tests/charts.rs applies it).
        "apps.nvidia.com/v1alpha1/NIMService",
        "sriovnetwork.openshift.io/v1/SriovNetworkNodePolicy",
    ] {
        assert!(checked.contains_key(kind), "no {kind} checked: {checked:?}");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // The check has teeth: an unknown field and a wrong type are both refused.
    let queue = &schemas[&("scheduling.run.ai/v2".to_string(), "Queue".to_string())];
    let v = jsonschema::draft202012::new(queue).unwrap();
    let ok = json!({ "apiVersion": "scheduling.run.ai/v2", "kind": "Queue", "metadata": { "name": "q" },
                     "spec": { "resources": { "gpu": { "quota": 1 } } } });
    assert!(v.is_valid(&ok));
    let mut unknown = ok.clone();
    unknown["spec"]["resources"]["gpu"]["quotaa"] = json!(1);
    assert!(!v.is_valid(&unknown), "unknown field accepted");
    let mut wrong = ok.clone();
    wrong["spec"]["priority"] = json!("high");
    assert!(!v.is_valid(&wrong), "wrong type accepted");
}
