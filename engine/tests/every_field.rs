//! Every manifest field does something (issue 15): a field that is accepted and then read by
//! nothing is worse than a missing one.
//!
//! `fixtures/every-field/` is a fleet that sets every property of `schemas/fleet.v1alpha1.json`
//! (the first test walks the schema and checks it). The second test changes each field in
//! turn (flips a boolean, bumps a number, picks another enum value, edits a string, adds a map
//! entry; the first change that still validates), compiles the fleet again and compares with
//! the unchanged fleet's compiled resources and clusters. A field whose change compiles to the
//! same output fails the test unless [`ALLOWED`] names it with the reason.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use fleetform_engine::load::{self, Document};
use fleetform_engine::secret::{SecretError, SecretRef, SecretResolver};
use fleetform_engine::{Sensitive, compile, validate};
use serde_json::{Value, json};

/// Fields no compiled output depends on, with the reason. Keep it short: a new entry needs a
/// reason a reviewer accepts, and an entry whose field starts doing something fails the test.
const ALLOWED: &[(&str, &str)] = &[
    (
        "Host:/spec/nico/vpc",
        "a host's subnet belongs to its VPC, so a VPC changed alone is refused (unknown-reference); the instance's VPC edge is pinned in compile/nico.rs's tests",
    ),
    (
        "Host:/spec/managedBy",
        "the fixture's NICo host has no bmc, so only `nico` validates (the missing-bmc rule); the redfish-vs-nico split is pinned in compile/nico.rs's tests",
    ),
    (
        "Fleet:/spec/operators/dpf/version",
        "the DPF operator chart is not installed yet (no chart to test it with): a known gap",
    ),
    // Read by other stages than compile.
    (
        "Fleet:/spec/prune/maxDeleteFraction",
        "read by plan: the prune guard",
    ),
    // Inherited only by releases whose own `chart` names no repository; every release of the
    // fixture names its own (the inheritance rule is pinned in compile/charts.rs's tests).
    (
        "Fleet:/spec/charts/repository",
        "inherited: every fixture release names its own",
    ),
    (
        "Fleet:/spec/charts/username",
        "inherited: every fixture release names its own",
    ),
    (
        "Fleet:/spec/charts/password",
        "inherited: every fixture release names its own",
    ),
    (
        "Fleet:/spec/charts/insecure",
        "inherited: every fixture release names its own",
    ),
    (
        "Fleet:/spec/charts/caBundle",
        "inherited: every fixture release names its own",
    ),
    (
        "NIMService:/spec/migProfile",
        "compiles to the NIM's nvidia.com/mig-<profile> request (compile_sharing.rs); the fixture pool's layout has one profile, so no other value validates",
    ),
    (
        "Fleet:/spec/operators/networkOperator/nfd",
        "network-operator chart value nfd.enabled; with gpuOperator.nfd set only `false` validates (one NFD per cluster)",
    ),
    // Validation-only: they constrain the fleet, they configure nothing.
    (
        "Tenant:/spec/quotas/hosts",
        "validation only: quota-exceeded",
    ),
    (
        "Tenant:/spec/quotas/nims",
        "validation only: quota-exceeded",
    ),
    ("Tenant:/spec/isolation", "validation only: dedicated-hosts"),
    (
        "NodePool:/spec/topology/railAligned",
        "validation only: rail-aligned",
    ),
    (
        "Host:/spec/nics/*/name",
        "validation only: rail-aligned compares members' NICs",
    ),
    (
        "Host:/spec/nics/*/type",
        "validation only: rail-aligned compares members' NICs",
    ),
    (
        "Host:/spec/nics/*/speed",
        "validation only: rail-aligned compares members' NICs",
    ),
    (
        "Host:/spec/nics/*/rail",
        "validation only: rail-aligned compares members' NICs",
    ),
    (
        "Host:/spec/spare",
        "validation only: spares are members of no pool (break/fix swaps them in)",
    ),
    (
        "NodePool:/spec/spares/*",
        "validation only here; read by break/fix (engine/src/plan/breakfix.rs)",
    ),
    ("NIMService:/spec/model", "validation only"),
    (
        "NIMService:/spec/tenant",
        "validation only: must be the pool's tenant (nim-tenant); the pool picks the cluster",
    ),
    (
        "Tenant:/spec/nodeOs/byo",
        "validation only: `true` is its one value; choosing it over `image` is what compiles",
    ),
    (
        "Tenant:/spec/nodeOs/os",
        "validation only: the compat gate's input (precompiled drivers, the Network Operator's OSes)",
    ),
    (
        "Tenant:/spec/nodeOs/kernel",
        "validation only: the compat gate's input (precompiled drivers per kernel line and flavour)",
    ),
    (
        "Rack:/spec/faultDomain",
        "validation only (compute-domains); read by break/fix (an nvl72 rack spares itself)",
    ),
    (
        "Fleet:/spec/operators/networkOperator/policyName",
        "validation only: the operator reconciles nic-cluster-policy and nothing else",
    ),
    (
        "Fleet:/spec/allowedEndpoints/*",
        "validation only: exceptions to the endpoint address policy (endpoint-address)",
    ),
];

/// Fields read by nothing yet: each one is a bug, listed so that this test catches the next
/// one. Fix a field by compiling it (or removing it from the schema), then drop it here.
/// Empty: the last ones (rack location, Rack/Fleet labels, registry mirrors, the fleet NGC
/// key, `sriov.numVfs`, tenant NGC org/team) were compiled or removed (issue 15).
const KNOWN_GAPS: &[&str] = &[];

/// Every secret reads as a value derived from its reference, so a changed reference is a
/// changed value (nothing is read from disk).
struct FixedSecrets;
impl SecretResolver for FixedSecrets {
    fn resolve(&self, r: &SecretRef) -> Result<Sensitive<String>, SecretError> {
        Ok(Sensitive::new(format!("test-secret for {r}")))
    }
}

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/every-field")
}

fn load_docs() -> Vec<Document> {
    let files = load::read_dir(&fixture()).unwrap_or_else(|d| panic!("{d:?}"));
    let (docs, diags) = load::load(&files);
    assert!(diags.is_empty(), "{diags:?}");
    docs
}

/// The kinds and the `$defs` entry of their `spec`.
const KINDS: [(&str, &str); 6] = [
    ("Fleet", "fleetSpec"),
    ("Rack", "rackSpec"),
    ("Host", "hostSpec"),
    ("Tenant", "tenantSpec"),
    ("NodePool", "nodePoolSpec"),
    ("NIMService", "nimServiceSpec"),
];

/// The schema's leaves: `Kind:/spec/...` (`*` for array items) with their schema node.
/// A secret reference and a tenant's `operators` override (the fleet's `operators`, merged)
/// are leaves; `oneOf` alternatives are all walked.
fn schema_leaves() -> BTreeMap<String, Value> {
    let schema: Value = serde_json::from_str(validate::SCHEMA_JSON).unwrap();
    let defs = schema["$defs"].clone();
    fn walk(defs: &Value, node: &Value, path: String, out: &mut BTreeMap<String, Value>) {
        let mut node = node;
        if let Some(r) = node.get("$ref").and_then(Value::as_str) {
            let name = r.rsplit('/').next().unwrap();
            if name == "secretRef" || name == "operatorsOverride" {
                out.insert(path, node.clone());
                return;
            }
            node = &defs[name];
        }
        let mut inner = false;
        if let Some(props) = node.get("properties").and_then(Value::as_object) {
            inner = true;
            for (k, v) in props {
                walk(defs, v, format!("{path}/{k}"), out);
            }
        }
        for alt in ["oneOf", "anyOf"] {
            for a in node
                .get(alt)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                inner = true;
                walk(defs, a, path.clone(), out);
            }
        }
        if node.get("type") == Some(&json!("array"))
            && let Some(items) = node.get("items")
        {
            inner = true;
            walk(defs, items, format!("{path}/*"), out);
        }
        if !inner {
            out.entry(path).or_insert_with(|| node.clone());
        }
    }
    let mut out = BTreeMap::new();
    for (kind, def) in KINDS {
        walk(&defs, &defs[def], format!("{kind}:/spec"), &mut out);
        out.insert(
            format!("{kind}:/metadata/labels"),
            json!({ "type": "object" }),
        );
    }
    out
}

/// JSON pointers in `v` matching `pattern` (segments, `*` = any array index).
fn find(v: &Value, segs: &[&str], at: String, out: &mut Vec<String>) {
    let Some((first, rest)) = segs.split_first() else {
        out.push(at);
        return;
    };
    match (v, *first) {
        (Value::Array(items), "*") => {
            for (i, x) in items.iter().enumerate() {
                find(x, rest, format!("{at}/{i}"), out);
            }
        }
        (Value::Object(m), k) => {
            if let Some(x) = m.get(k) {
                find(x, rest, format!("{at}/{k}"), out);
            }
        }
        _ => {}
    }
}

/// Where `leaf` is set in the fixture: (document index, pointer).
fn locations(docs: &[Document], leaf: &str) -> Vec<(usize, String)> {
    let (kind, pointer) = leaf.split_once(':').unwrap();
    let segs: Vec<&str> = pointer.trim_start_matches('/').split('/').collect();
    let mut out = Vec::new();
    for (i, d) in docs.iter().enumerate() {
        if d.kind() == Some(kind) {
            let mut found = Vec::new();
            find(&d.value, &segs, String::new(), &mut found);
            out.extend(found.into_iter().map(|p| (i, p)));
        }
    }
    out
}

/// Changed values to try for `v` (schema node `node`), most meaningful first.
fn candidates(leaf: &str, v: &Value, node: &Value) -> Vec<Option<Value>> {
    // Values whose generic change would not validate.
    let explicit: &[(&str, Value)] = &[
        (
            "Tenant:/spec/operators",
            json!({ "gpuOperator": { "driver": { "usePrecompiled": false } } }),
        ),
        ("NodePool:/spec/gpuSharing/mig/config", json!("all-2g.20gb")),
        (
            "NodePool:/spec/gpuSharing/mig/config/all",
            json!({ "1g.18gb": 6 }),
        ),
        (
            "NodePool:/spec/gpuSharing/mig/config/perGpu/*",
            json!({ "3g.40gb": 1 }),
        ),
        (
            "NodePool:/spec/gpuSharing/dra/deviceClasses/*",
            json!("mig.nvidia.com"),
        ),
        ("NIMService:/spec/migProfile", json!("2g.20gb")),
        ("NodePool:/spec/tenant", json!("t1")),
        ("NIMService:/spec/pool", json!("slices")),
        ("Tenant:/spec/kubernetes/version", json!("1.35")),
        ("Tenant:/spec/kubernetes/podCidr", json!("10.70.0.0/16")),
        ("Tenant:/spec/kubernetes/serviceCidr", json!("10.99.0.0/20")),
        // NICo names refer to the fixture's other instance type and subnet.
        ("Host:/spec/nico/instanceType", json!("gb300")),
        ("Host:/spec/nico/subnet", json!("tenant-a-1")),
        (
            "Fleet:/spec/nico/allocations/*/instanceType",
            json!("gb300"),
        ),
    ];
    let mut out: Vec<Option<Value>> = explicit
        .iter()
        .filter(|(p, _)| *p == leaf)
        .map(|(_, x)| Some(x.clone()))
        .collect();
    if node.get("$ref").and_then(Value::as_str) == Some("#/$defs/secretRef") {
        out.push(Some(json!({ "env": "EVERY_FIELD_CHANGED" })));
    }
    if let Some(values) = node.get("enum").and_then(Value::as_array) {
        out.extend(values.iter().filter(|x| *x != v).cloned().map(Some));
    }
    match v {
        Value::Bool(b) => out.push(Some(json!(!b))),
        Value::Number(n) if n.is_i64() || n.is_u64() => {
            let n = n.as_i64().unwrap_or(0);
            out.extend([Some(json!(n + 1)), Some(json!(n - 1))]);
        }
        Value::Number(n) => {
            let n = n.as_f64().unwrap_or(0.0);
            out.extend([Some(json!(n / 2.0)), Some(json!(n + 1.0))]);
        }
        Value::String(s) => {
            let mut bumped = s.clone();
            if let Some(c) = bumped.pop() {
                bumped.push(match c {
                    '0'..='8' => (c as u8 + 1) as char,
                    '9' => '0',
                    _ => 'x',
                });
            }
            out.extend([Some(json!(bumped)), Some(json!(format!("{s}-x")))]);
        }
        Value::Object(m) => {
            let mut added = m.clone();
            added.insert("every-field".into(), json!("x"));
            out.push(Some(Value::Object(added)));
            if let Some(k) = m.keys().next() {
                let mut fewer = m.clone();
                fewer.remove(&k.clone());
                out.push(Some(Value::Object(fewer)));
            }
        }
        _ => {}
    }
    out.push(None); // Remove it (optional fields only; validation says which).
    out
}

fn set(doc: &mut Value, pointer: &str, to: Option<Value>) {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    let p = doc.pointer_mut(parent).unwrap();
    match (p, to) {
        (Value::Object(m), Some(v)) => {
            m.insert(key.into(), v);
        }
        (Value::Object(m), None) => {
            m.remove(key);
        }
        (Value::Array(a), Some(v)) => a[key.parse::<usize>().unwrap()] = v,
        (Value::Array(a), None) => {
            a.remove(key.parse::<usize>().unwrap());
        }
        _ => panic!("{pointer}: parent is not a container"),
    }
}

/// What compile produced, minus where each resource came from (line numbers).
fn compiled(docs: &[Document]) -> Result<String, String> {
    let fleet = validate::validate(docs).map_err(|d| format!("validate: {}", d[0].summary))?;
    let c = compile::compile(&fleet, &FixedSecrets)
        .map_err(|d| format!("compile: {}", d[0].summary))?;
    let resources: Vec<Value> = c
        .resources
        .into_iter()
        .map(|mut d| {
            d.origin = None;
            serde_json::to_value(d).unwrap()
        })
        .collect();
    let releases: Vec<Value> = c
        .releases
        .into_iter()
        .map(|r| {
            let mut v = serde_json::to_value(r).unwrap();
            v["origin"] = Value::Null;
            v
        })
        .collect();
    Ok(format!(
        "{}\n{}\n{:?}",
        Value::Array(resources),
        Value::Array(releases),
        c.clusters
    ))
}

#[test]
fn the_every_field_fleet_sets_every_schema_property() {
    let docs = load_docs();
    let missing: Vec<String> = schema_leaves()
        .into_keys()
        .filter(|leaf| locations(&docs, leaf).is_empty())
        .collect();
    assert!(
        missing.is_empty(),
        "fixtures/every-field does not set {} schema properties (add them):\n  {}",
        missing.len(),
        missing.join("\n  ")
    );
    compiled(&docs).expect("the every-field fleet validates and compiles");
}

#[test]
fn changing_any_field_changes_the_compiled_output_unless_allow_listed() {
    let docs = load_docs();
    let base = compiled(&docs).expect("the every-field fleet compiles");
    let leaves = schema_leaves();
    let mut allowed: BTreeMap<&str, &str> = ALLOWED.iter().copied().collect();
    allowed.extend(
        KNOWN_GAPS
            .iter()
            .map(|g| (*g, "read by nothing yet (known gap)")),
    );
    let mut failures = Vec::new();
    for stale in allowed.keys().filter(|k| !leaves.contains_key(**k)) {
        failures.push(format!("{stale}: allow-listed but not in the schema"));
    }
    for (leaf, node) in &leaves {
        let mut changed = false;
        let mut validated = false;
        let mut last_error = String::new();
        // Each place the fixture sets it, until one change shows.
        'places: for (doc, pointer) in locations(&docs, leaf) {
            let value = docs[doc].value.pointer(&pointer).unwrap().clone();
            for to in candidates(leaf, &value, node) {
                if to.as_ref() == Some(&value) {
                    continue;
                }
                let mut docs2 = docs.clone();
                set(&mut docs2[doc].value, &pointer, to);
                match compiled(&docs2) {
                    Ok(out) => {
                        validated = true;
                        if out != base {
                            changed = true;
                            break 'places;
                        }
                    }
                    Err(e) => last_error = e,
                }
            }
        }
        match (changed, allowed.get(leaf.as_str())) {
            (true, Some(_)) => failures.push(format!(
                "{leaf}: allow-listed, but changing it changes the compiled output: drop it from ALLOWED"
            )),
            (false, None) if validated => failures.push(format!(
                "{leaf}: accepted, but changing it changes nothing compile produces"
            )),
            (false, None) => failures.push(format!(
                "{leaf}: no change of it validates (last: {last_error}); add an explicit candidate"
            )),
            _ => {}
        }
    }
    assert!(
        failures.is_empty(),
        "{} fields:\n  {}",
        failures.len(),
        failures.join("\n  ")
    );
}
