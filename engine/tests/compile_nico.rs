//! NICo-managed hosts (issue 19): `Fleet.spec.nico` and `Host.spec.managedBy: nico` compile to
//! `nico:` resources with dependency edges that say why, and no `redfish:` resources for such
//! hosts; mistakes are diagnostics at the manifest line.
#![allow(clippy::unwrap_used)]

use fleetform_engine::secret::{SecretError, SecretRef, SecretResolver};
use fleetform_engine::{ResourceId, Sensitive, compile, load, validate};

struct TestSecrets;
impl SecretResolver for TestSecrets {
    fn resolve(&self, _r: &SecretRef) -> Result<Sensitive<String>, SecretError> {
        Ok(Sensitive::new("test-key".into()))
    }
}

fn files(edit: impl Fn(&str, String) -> String) -> Vec<load::SourceFile> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/every-field");
    load::read_dir(&root)
        .unwrap()
        .into_iter()
        .map(|f| {
            let text = edit(&f.path, String::from_utf8(f.bytes).unwrap());
            load::SourceFile {
                path: f.path,
                bytes: text.into_bytes(),
            }
        })
        .collect()
}

fn validated(
    edit: impl Fn(&str, String) -> String,
) -> Result<fleetform_engine::manifest::Fleet, Vec<fleetform_engine::diag::Diagnostic>> {
    let (docs, diags) = load::load(&files(edit));
    assert!(diags.is_empty(), "{diags:?}");
    validate::validate(&docs)
}

fn id(s: &str) -> ResourceId {
    ResourceId::parse(s).unwrap()
}

#[test]
fn a_nico_host_compiles_to_nico_resources_with_reasoned_edges_and_no_redfish() {
    let fleet = validated(|_, t| t).unwrap();
    let c = compile::compile(&fleet, &TestSecrets).unwrap();
    let nico: Vec<&str> = c
        .resources
        .iter()
        .filter(|d| d.id.provider() == "nico")
        .map(|d| d.id.as_str())
        .collect();
    assert_eq!(
        nico,
        [
            "nico:pdx-1/allocation/tenant-a-gb200",
            "nico:pdx-1/instance-type/gb200",
            "nico:pdx-1/instance-type/gb300",
            "nico:pdx-1/instance/n1",
            "nico:pdx-1/machine/fm100ht4v4mce2qstjnl8970nnj3ie6ecek4mtjn27pea4kre5gsa49jg0g",
            "nico:pdx-1/subnet/tenant-a-0",
            "nico:pdx-1/subnet/tenant-a-1",
            "nico:pdx-1/vpc/tenant-a",
            "nico:pdx-1/vpc/tenant-b",
        ]
    );
    // NICo owns n1's BMC: nothing talks to it; h1 keeps its redfish resources.
    assert!(
        !c.resources
            .iter()
            .any(|d| d.id.as_str().starts_with("redfish:host/n1/"))
    );
    assert!(
        c.resources
            .iter()
            .any(|d| d.id.as_str() == "redfish:host/h1/power")
    );

    let get = |s: &str| c.resources.iter().find(|d| d.id == id(s)).unwrap();
    let inst = get("nico:pdx-1/instance/n1");
    let deps: Vec<(&str, &str)> = inst
        .deps
        .iter()
        .map(|d| (d.on.as_str(), d.reason.as_str()))
        .collect();
    assert_eq!(
        deps,
        [
            (
                "nico:pdx-1/machine/fm100ht4v4mce2qstjnl8970nnj3ie6ecek4mtjn27pea4kre5gsa49jg0g",
                "an instance of type gb200 lands only on a machine of that type",
            ),
            (
                "nico:pdx-1/instance-type/gb200",
                "host n1 is an instance of type gb200"
            ),
            (
                "nico:pdx-1/allocation/tenant-a-gb200",
                "the tenant may run gb200 instances only once allocation tenant-a-gb200 reserves them"
            ),
            ("nico:pdx-1/vpc/tenant-a", "host n1 joins VPC tenant-a"),
            (
                "nico:pdx-1/subnet/tenant-a-0",
                "host n1's interface is on subnet tenant-a-0"
            ),
        ]
    );
    let machine =
        get("nico:pdx-1/machine/fm100ht4v4mce2qstjnl8970nnj3ie6ecek4mtjn27pea4kre5gsa49jg0g");
    assert_eq!(machine.deps[0].on, id("nico:pdx-1/instance-type/gb200"));
    assert_eq!(machine.spec["refs"]["/instanceTypeId"]["name"], "gb200");
    let alloc = get("nico:pdx-1/allocation/tenant-a-gb200");
    assert_eq!(alloc.deps[0].on, id("nico:pdx-1/instance-type/gb200"));
    assert_eq!(
        get("nico:pdx-1/subnet/tenant-a-0").deps[0].on,
        id("nico:pdx-1/vpc/tenant-a")
    );
    // The spec names other objects by name (resolved to ids when applying), the token by reference.
    assert_eq!(
        inst.spec["refs"]["/interfaces/0/subnetId"]["name"],
        "tenant-a-0"
    );
    assert_eq!(
        inst.spec["fields"]["machineId"],
        "fm100ht4v4mce2qstjnl8970nnj3ie6ecek4mtjn27pea4kre5gsa49jg0g"
    );
    assert_eq!(inst.spec["token"], serde_json::json!({"env": "NICO_TOKEN"}));
    let origin = inst.origin.as_ref().unwrap();
    assert_eq!(origin.file, "hosts.yaml");
}

#[test]
fn nico_mistakes_are_diagnostics_at_their_line() {
    // A subnet the VPC does not have.
    let diags = validated(|p, t| {
        if p == "hosts.yaml" {
            t.replace("subnet: tenant-a-0", "subnet: nope")
        } else {
            t
        }
    })
    .unwrap_err();
    let d = diags
        .iter()
        .find(|d| d.code == "unknown-reference")
        .unwrap();
    let span = d.span.as_ref().unwrap();
    assert_eq!(
        (span.file.as_str(), span.line),
        ("hosts.yaml", line_of("subnet: tenant-a-0"))
    );
    assert!(d.summary.contains("subnet `nope`"), "{}", d.summary);

    // `nico` without `managedBy: nico`: no BMC, and `nico` refused.
    let diags = validated(|p, t| {
        if p == "hosts.yaml" {
            t.replace("  managedBy: nico\n", "")
        } else {
            t
        }
    })
    .unwrap_err();
    let codes: Vec<&str> = diags.iter().map(|d| d.code.as_str()).collect();
    assert!(
        codes.contains(&"missing-bmc") && codes.contains(&"nico-without-managed-by"),
        "{codes:?}"
    );

    // A NICo host without the site.
    let diags = validated(|p, t| {
        if p == "fleet.yaml" {
            t.split("  nico:\n").next().unwrap().to_string()
        } else {
            t
        }
    })
    .unwrap_err();
    assert!(
        diags.iter().any(|d| d.code == "missing-nico-site"),
        "{diags:?}"
    );
}

fn line_of(needle: &str) -> u32 {
    let root =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/every-field/hosts.yaml");
    let text = std::fs::read_to_string(root).unwrap();
    text.lines().position(|l| l.contains(needle)).unwrap() as u32 + 1
}
