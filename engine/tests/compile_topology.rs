//! Topology labels: where a host stands (its rack's `location`, Rack and Fleet labels) on the
//! Node compile emits for it, for `examples/dsx`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use fleetform_engine::compile::{self, Compiled};
use fleetform_engine::secret::{SecretError, SecretRef, SecretResolver};
use fleetform_engine::{Sensitive, load, validate};
use serde_json::Value;

/// Every secret (and every key file) reads as the same test value.
struct FixedSecrets;
impl SecretResolver for FixedSecrets {
    fn resolve(&self, _r: &SecretRef) -> Result<Sensitive<String>, SecretError> {
        Ok(Sensitive::new("test-secret".into()))
    }
}

fn dsx() -> Compiled {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/dsx");
    let files = load::read_dir(&dir).unwrap();
    let (docs, diags) = load::load(&files);
    assert!(diags.is_empty(), "{diags:?}");
    let fleet = validate::validate(&docs).unwrap_or_else(|d| panic!("{d:?}"));
    compile::compile(&fleet, &FixedSecrets).unwrap_or_else(|d| panic!("{d:?}"))
}

fn object<'a>(c: &'a Compiled, id: &str) -> &'a Value {
    &c.resources
        .iter()
        .find(|d| d.id.as_str() == id)
        .unwrap_or_else(|| panic!("{id} not compiled"))
        .spec["object"]
}

#[test]
fn a_rack_location_becomes_topology_labels_on_the_nodes_of_its_hosts() {
    let c = dsx();
    let node = object(&c, "kube:acme/v1/Node/r01-n01");
    let labels = &node["metadata"]["labels"];
    // examples/dsx/racks.yaml: r01 at {site: lab, room: hall-1, row: A, position: "01"}.
    assert_eq!(labels["fleetform.dev/site"], "lab");
    assert_eq!(labels["fleetform.dev/room"], "hall-1");
    assert_eq!(labels["fleetform.dev/row"], "A");
    assert_eq!(labels["fleetform.dev/rack-position"], "01");
    // The pool's own label is still there: topology labels sit under it.
    assert_eq!(labels["fleetform.dev/pool"], "acme-h100-train");
    let other = object(&c, "kube:charlie/v1/Node/r04-n01");
    assert_eq!(
        other["metadata"]["labels"]["fleetform.dev/rack-position"],
        "04"
    );
}
