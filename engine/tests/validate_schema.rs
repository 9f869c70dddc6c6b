//! The JSON Schema (schemas/fleet.v1alpha1.json) and the Rust model agree:
//! every document of every example and fixture is accepted by both or refused by
//! both, and the typed examples serialise back to JSON the schema accepts and that
//! deserialises to the same model. No schemars: the schema is written by hand and
//! this test keeps it honest.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use fleetform_engine::load::{self, Document};
use fleetform_engine::manifest::*;
use fleetform_engine::{synth, validate};
use serde::de::DeserializeOwned;
use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("engine has a parent")
        .to_path_buf()
}

fn schema() -> jsonschema::Validator {
    let v: Value = serde_json::from_str(validate::SCHEMA_JSON).expect("schema is JSON");
    jsonschema::draft202012::new(&v).expect("schema compiles")
}

fn typed<T: DeserializeOwned>(v: &Value) -> Result<T, String> {
    serde_json::from_value(v.clone()).map_err(|e| e.to_string())
}

fn merge(target: &mut Value, patch: &Value) {
    if let Value::Object(p) = patch {
        if !target.is_object() {
            *target = Value::Object(Default::default());
        }
        if let Value::Object(t) = target {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
    } else {
        *target = patch.clone();
    }
}

/// Does the Rust model accept this document? `fleet_ops` is the fleet's raw
/// `operators`, for tenant overrides (which the model types after merging).
fn model_accepts(doc: &Value, fleet_ops: Option<&Value>) -> Result<(), String> {
    let obj = doc.as_object().ok_or("not a mapping")?;
    for k in obj.keys() {
        if !["apiVersion", "kind", "metadata", "spec"].contains(&k.as_str()) {
            return Err(format!("unknown top-level field {k}"));
        }
    }
    if doc.get("apiVersion").and_then(Value::as_str) != Some(API_VERSION) {
        return Err("apiVersion".into());
    }
    typed::<Metadata>(doc.get("metadata").unwrap_or(&Value::Null))?;
    let spec = doc.get("spec").cloned().unwrap_or(Value::Null);
    match Kind::parse(doc.get("kind").and_then(Value::as_str).unwrap_or("")) {
        Some(Kind::Fleet) => typed::<FleetSpec>(&spec).map(drop),
        Some(Kind::Rack) => typed::<RackSpec>(&spec).map(drop),
        Some(Kind::Host) => typed::<HostSpec>(&spec).map(drop),
        Some(Kind::Tenant) => {
            let t: TenantSpec = typed(&spec)?;
            if let (Some(patch), Some(base)) = (&t.operators, fleet_ops) {
                let mut merged = base.clone();
                merge(&mut merged, patch);
                typed::<Operators>(&merged)?;
            }
            Ok(())
        }
        Some(Kind::NodePool) => typed::<NodePoolSpec>(&spec).map(drop),
        Some(Kind::NimService) => typed::<NimServiceSpec>(&spec).map(drop),
        None => Err("unknown kind".into()),
    }
}

fn docs_of(dir: &Path) -> Vec<Document> {
    let Ok(files) = load::read_dir(dir) else {
        return vec![];
    };
    load::load(&files).0
}

#[test]
fn schema_and_model_accept_and_refuse_the_same_documents() {
    let validator = schema();
    let mut dirs: Vec<PathBuf> = vec![repo().join("examples/small"), repo().join("examples/dsx")];
    let mut fixtures: Vec<PathBuf> = std::fs::read_dir(repo().join("fixtures/invalid"))
        .expect("fixtures")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    fixtures.sort();
    dirs.extend(fixtures);
    let mut checked = 0;
    let mut refused = 0;
    let mut disagreements = Vec::new();
    for dir in &dirs {
        let docs = docs_of(dir);
        let fleet_ops = docs
            .iter()
            .find(|d| d.kind() == Some("Fleet"))
            .and_then(|d| d.value.pointer("/spec/operators").cloned());
        for d in &docs {
            let by_schema = validator.is_valid(&d.value);
            let by_model = model_accepts(&d.value, fleet_ops.as_ref());
            checked += 1;
            if !by_schema {
                refused += 1;
            }
            if by_schema != by_model.is_ok() {
                disagreements.push(format!(
                    "{}/{} document {}: schema {} but model {}",
                    dir.display(),
                    d.file,
                    d.index,
                    if by_schema { "accepts" } else { "refuses" },
                    match &by_model {
                        Ok(()) => "accepts".to_string(),
                        Err(e) => format!("refuses ({e})"),
                    }
                ));
            }
        }
    }
    assert!(checked > 300, "only {checked} documents checked");
    assert!(
        refused >= 10,
        "the fixtures should exercise refusals too ({refused})"
    );
    assert!(disagreements.is_empty(), "{}", disagreements.join("\n"));
}

fn round_trip(docs: &[Document], what: &str) {
    let validator = schema();
    let fleet = match validate::validate(docs) {
        Ok(f) => f,
        Err(d) => panic!("{what} does not validate: {d:?}"),
    };
    let again = fleet.to_documents();
    assert_eq!(again.len(), docs.len(), "{what}: every document comes back");
    for v in &again {
        let errors: Vec<String> = validator
            .iter_errors(v)
            .map(|e| format!("{}: {}", e.instance_path(), e))
            .collect();
        assert!(
            errors.is_empty(),
            "{what}: re-serialised {} `{}` fails the schema: {errors:?}",
            v["kind"],
            v["metadata"]["name"]
        );
        assert!(model_accepts(v, None).is_ok());
    }
    // And the typed model survives the trip unchanged.
    for h in &fleet.hosts {
        let back: HostSpec = typed(&h.to_json(Kind::Host)["spec"]).expect("host back");
        assert_eq!(back, h.spec, "{what}: host {}", h.name());
    }
    for p in &fleet.pools {
        let back: NodePoolSpec = typed(&p.to_json(Kind::NodePool)["spec"]).expect("pool back");
        assert_eq!(back, p.spec, "{what}: pool {}", p.name());
    }
    for t in &fleet.tenants {
        let back: TenantSpec = typed(&t.to_json(Kind::Tenant)["spec"]).expect("tenant back");
        assert_eq!(back, t.spec, "{what}: tenant {}", t.name());
    }
    let back: FleetSpec = typed(&fleet.fleet.to_json(Kind::Fleet)["spec"]).expect("fleet back");
    assert_eq!(back, fleet.fleet.spec, "{what}: fleet");
}

#[test]
fn examples_round_trip_through_the_model_and_still_match_the_schema() {
    for ex in ["examples/small", "examples/dsx"] {
        round_trip(&docs_of(&repo().join(ex)), ex);
    }
}

#[test]
fn synthetic_fleets_round_trip_too() {
    let files = synth::synthetic_fleet(200, 20);
    let (docs, diags) = load::load(&files);
    assert!(diags.is_empty());
    round_trip(&docs, "synthetic");
}

#[test]
fn spans_of_typed_documents_point_at_their_lines() {
    let docs = docs_of(&repo().join("examples/small"));
    let fleet = validate::validate(&docs).expect("valid");
    let host = fleet.host("r01-n01").expect("host");
    let s = fleet
        .span(host.doc, "/spec/bios/attributes/SriovGlobalEnable")
        .expect("span");
    assert_eq!(s.file, "hosts.yaml");
    let line = std::fs::read_to_string(repo().join("examples/small/hosts.yaml")).unwrap();
    let text = line.lines().nth(s.line as usize - 1).unwrap();
    assert!(text.contains("SriovGlobalEnable: Enabled"), "{text}");
    assert_eq!(&text[s.column as usize - 1..], "Enabled");
    assert_eq!(
        fleet
            .key_span(host.doc, "/spec/bios/attributes/SriovGlobalEnable")
            .unwrap()
            .column as usize,
        text.find("Sriov").unwrap() + 1
    );
    assert_eq!(
        host.origin.line,
        fleet.key_span(host.doc, "/kind").unwrap().line
    );
    assert_eq!(fleet.members("beta-inference"), ["r01-n03", "r01-n04"]);
    assert_eq!(fleet.operators_for("acme").gpu_operator.version, "v26.7.0");
}
