//! Property tests of the validator over generated, structured fleets (not bytes):
//! hosts of every model with any GPU count, MIG pools with any layout counts, NIMs
//! with any replicas, gpusPerReplica and profile, tenants with any quotas. Whatever
//! the values, validation returns (no overflow, no huge allocation), and a host
//! with more GPUs than its model ships with is always refused.
#![allow(clippy::unwrap_used)]

use fleetform_engine::catalog;
use fleetform_engine::load::{self, SourceFile};
use fleetform_engine::manifest::GpuModel;
use fleetform_engine::validate;
use proptest::prelude::*;
use serde_json::{Value, json};

/// Values that find overflow: the edges, small numbers and anything.
fn big() -> impl Strategy<Value = u32> {
    prop_oneof![
        Just(0u32),
        Just(1),
        Just(8),
        Just(u32::MAX),
        Just(u32::MAX / 2 + 1),
        0u32..16,
        any::<u32>(),
    ]
}

fn model() -> impl Strategy<Value = GpuModel> {
    proptest::sample::select(GpuModel::ALL.to_vec())
}

#[derive(Debug, Clone)]
struct HostGen {
    model: GpuModel,
    count: u32,
}

#[derive(Debug, Clone)]
enum SharingGen {
    None,
    Named(usize),
    All(usize, u32),
    PerGpu(Vec<(usize, u32)>),
    Dra,
}

#[derive(Debug, Clone)]
struct NimGen {
    replicas: u32,
    gpus: u32,
    profile: Option<usize>,
}

#[derive(Debug, Clone)]
struct FleetGen {
    hosts: Vec<HostGen>,
    sharing: SharingGen,
    mixed: bool,
    nims: Vec<NimGen>,
    quota: Option<u32>,
}

fn fleet_gen() -> impl Strategy<Value = FleetGen> {
    let host = (model(), prop_oneof![Just(4u32), Just(8), Just(10), big()])
        .prop_map(|(model, count)| HostGen { model, count });
    let sharing = prop_oneof![
        Just(SharingGen::None),
        (0usize..8).prop_map(SharingGen::Named),
        (0usize..8, big()).prop_map(|(p, c)| SharingGen::All(p, c)),
        proptest::collection::vec((0usize..8, big()), 0..10).prop_map(SharingGen::PerGpu),
        Just(SharingGen::Dra),
    ];
    let nim =
        (big(), big(), proptest::option::of(0usize..8)).prop_map(|(replicas, gpus, profile)| {
            NimGen {
                replicas,
                gpus,
                profile,
            }
        });
    (
        proptest::collection::vec(host, 1..4),
        sharing,
        any::<bool>(),
        proptest::collection::vec(nim, 0..4),
        proptest::option::of(big()),
    )
        .prop_map(|(hosts, sharing, mixed, nims, quota)| FleetGen {
            hosts,
            sharing,
            mixed,
            nims,
            quota,
        })
}

/// A profile name of the first host's model (or a made-up one past the list).
fn profile(model: GpuModel, i: usize) -> String {
    catalog::mig(model)
        .and_then(|g| g.profiles.get(i).map(|p| p.name.to_string()))
        .unwrap_or_else(|| format!("{}g.1gb", i + 1))
}

fn doc(kind: &str, name: &str, spec: Value) -> String {
    let d = json!({
        "apiVersion": "fleetform.dev/v1alpha1", "kind": kind,
        "metadata": { "name": name }, "spec": spec,
    });
    format!("---\n{d}\n")
}

fn render(g: &FleetGen) -> String {
    let model = g.hosts[0].model;
    let mut out = doc(
        "Fleet",
        "fx",
        json!({
            "operators": { "gpuOperator": { "version": "v26.7.0", "driver": { "version": "595.91.07" },
                "migStrategy": if g.mixed { "mixed" } else { "single" } } },
            "managementCluster": { "kubeconfig": { "file": "mgmt.kubeconfig" } },
        }),
    );
    out += &doc("Rack", "r01", json!({ "faultDomain": "nvl72" }));
    let mut names = Vec::new();
    for (n, h) in g.hosts.iter().enumerate() {
        let name = format!("h{n}");
        out += &doc(
            "Host",
            &name,
            json!({
                "rack": "r01",
                "bmc": { "endpoint": "http://127.0.0.1:8000", "systemId": name,
                    "credentials": { "username": "admin", "password": { "file": "bmc" } } },
                "gpu": { "model": model_str(h.model), "count": h.count },
            }),
        );
        names.push(name);
    }
    let mut tenant = json!({
        "flavor": "tenant-managed",
        "kubernetes": { "version": "1.34", "kubeconfig": { "file": "t1.kubeconfig" },
            "podCidr": "10.64.0.0/16", "serviceCidr": "10.96.0.0/20" },
        "nodeOs": { "byo": true },
    });
    if let Some(q) = g.quota {
        tenant["quotas"] = json!({ "gpus": q, "hosts": q, "nims": q });
    }
    out += &doc("Tenant", "t1", tenant);
    let sharing = match &g.sharing {
        SharingGen::None => Value::Null,
        SharingGen::Named(p) => {
            json!({ "mig": { "config": format!("all-{}", profile(model, *p)) } })
        }
        SharingGen::All(p, c) => {
            json!({ "mig": { "config": { "all": { profile(model, *p): c } } } })
        }
        SharingGen::PerGpu(v) => {
            let per: Vec<Value> = v
                .iter()
                .map(|(p, c)| json!({ profile(model, *p): c }))
                .collect();
            json!({ "mig": { "config": { "perGpu": per } } })
        }
        SharingGen::Dra => {
            json!({ "dra": { "deviceClasses": ["gpu.nvidia.com", "mig.nvidia.com"] } })
        }
    };
    let mut pool = json!({ "tenant": "t1", "hosts": names });
    if !sharing.is_null() {
        pool["gpuSharing"] = sharing;
    }
    out += &doc("NodePool", "p1", pool);
    for (n, nim) in g.nims.iter().enumerate() {
        let mut spec = json!({
            "tenant": "t1", "pool": "p1", "image": "nvcr.io/nim/meta/llama:1.8",
            "replicas": nim.replicas, "gpusPerReplica": nim.gpus,
        });
        if let Some(p) = nim.profile {
            spec["migProfile"] = json!(profile(model, p));
        }
        out += &doc("NIMService", &format!("n{n}"), spec);
    }
    out
}

fn model_str(m: GpuModel) -> &'static str {
    m.as_str()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn the_validator_never_panics_and_refuses_more_gpus_than_a_model_has(g in fleet_gen()) {
        let text = render(&g);
        let (docs, diags) = load::load(&[SourceFile { path: "fleet.yaml".into(), bytes: text.into_bytes() }]);
        prop_assert!(diags.is_empty(), "{diags:?}");
        let result = validate::validate(&docs);
        let over = g.hosts.iter().any(|h| h.count > catalog::max_gpus_per_host(h.model));
        if over {
            let d = result.as_ref().err();
            prop_assert!(
                d.is_some_and(|d| d.iter().any(|d| d.code == "gpu-count" || (d.code == "schema" && d.field.as_deref().is_some_and(|f| f.ends_with("gpu.count"))))),
                "a host over its model's GPU bound was not refused: {:?}", d
            );
        }
    }
}

#[test]
fn the_schema_bound_is_the_largest_model_bound() {
    let max = GpuModel::ALL
        .iter()
        .map(|m| catalog::max_gpus_per_host(*m))
        .max();
    assert_eq!(max, Some(catalog::MAX_GPUS_PER_HOST));
    let schema: Value = serde_json::from_str(validate::SCHEMA_JSON).unwrap();
    assert_eq!(
        schema
            .pointer("/$defs/hostSpec/properties/gpu/properties/count/maximum")
            .and_then(Value::as_u64),
        Some(u64::from(catalog::MAX_GPUS_PER_HOST))
    );
}
