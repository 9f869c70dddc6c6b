//! Every Kubernetes object compile emits for `examples/dsx` and `fixtures/every-field` (a fleet
//! that sets every manifest field) is server-side applied with `fieldValidation=Strict` into
//! the real kube-apiserver (tests/peers/kube.sh start), which has the real CRDs of
//! `fixtures/crds` loaded: KAI, Kyverno, DOCA Platform, the DRA driver, Karpenter, the GPU,
//! Network and NIM operators, Cluster API and Metal3. Unknown fields, wrong types and CEL
//! rules are refused by the CRDs' own schemas; a re-plan after apply must be a NoOp.
//!
//! Every cluster of a fleet maps to this one apiserver, so each cluster's objects are renamed
//! apart: namespaced objects move to `<run>-<namespace>`, cluster-scoped ones get `<run>-`
//! in front of their name. Nodes are left out (they are adopted, never created); namespaces a
//! cluster has from the start (`default`) are created under their new names.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use common::{kubeconfig, unique};
use fleetform_engine::provider::{
    Action, ApplyContext, ApplyRequest, Change, ObserveRequest, Provider, ProviderError,
};
use fleetform_engine::resource::Desired;
use fleetform_kube::{ClusterConfig, KubeProvider, object_id};
use serde_json::json;

const CLUSTER: &str = "peer";

/// Every secret reads as the same test value (compile embeds keys and PEMs).
struct FixedSecrets;
impl fleetform_engine::secret::SecretResolver for FixedSecrets {
    fn resolve(
        &self,
        _r: &fleetform_engine::secret::SecretRef,
    ) -> Result<fleetform_engine::Sensitive<String>, fleetform_engine::secret::SecretError> {
        Ok(fleetform_engine::Sensitive::new("test-secret".into()))
    }
}

/// The kube objects compiled from the fleet directory `dir` (relative to the repo root),
/// renamed apart per cluster and addressed to the test apiserver, Namespaces first.
fn compiled_objects(dir: &str) -> Vec<Desired> {
    use fleetform_engine::{compile, load, validate};
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(dir);
    let files = load::read_dir(&path).unwrap_or_else(|d| panic!("{dir}: {d:?}"));
    let (docs, diags) = load::load(&files);
    assert!(diags.is_empty(), "{dir}: {diags:?}");
    let fleet = validate::validate(&docs).unwrap_or_else(|d| panic!("{dir}: {d:?}"));
    let compiled = compile::compile(&fleet, &FixedSecrets).unwrap_or_else(|d| panic!("{d:?}"));
    let mut runs: BTreeMap<String, String> = BTreeMap::new();
    let mut out: Vec<Desired> = compiled
        .resources
        .into_iter()
        .filter(|d| d.id.provider() == "kube" && d.spec["object"]["kind"] != "Node")
        .map(|d| {
            let cluster = d.spec["cluster"].as_str().unwrap_or_default().to_string();
            let run = runs
                .entry(cluster.clone())
                .or_insert_with(|| unique("cf"))
                .clone();
            let mut object = d.spec["object"].clone();
            let meta = &mut object["metadata"];
            if let Some(ns) = meta["namespace"].as_str() {
                meta["namespace"] = json!(format!("{run}-{ns}"));
            } else {
                let name = meta["name"].as_str().unwrap_or_default();
                meta["name"] = json!(format!("{run}-{name}"));
            }
            let spec = json!({ "cluster": CLUSTER, "object": object });
            let mut desired = Desired::new(object_id(CLUSTER, &spec["object"]), spec);
            desired.sensitive = d.sensitive;
            desired
        })
        .collect();
    // Namespaces a real cluster has without anyone creating them (`default`) exist here
    // only under their renamed names once created.
    let created: BTreeSet<String> = out
        .iter()
        .filter(|d| d.spec["object"]["kind"] == "Namespace")
        .filter_map(|d| {
            d.spec["object"]["metadata"]["name"]
                .as_str()
                .map(String::from)
        })
        .collect();
    let missing: BTreeSet<String> = out
        .iter()
        .filter_map(|d| d.spec["object"]["metadata"]["namespace"].as_str())
        .filter(|ns| !created.contains(*ns))
        .map(String::from)
        .collect();
    for ns in missing {
        let spec = json!({ "cluster": CLUSTER, "object": { "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": ns } } });
        out.push(Desired::new(object_id(CLUSTER, &spec["object"]), spec));
    }
    out.sort_by_key(|d| d.spec["object"]["kind"] != "Namespace");
    out
}

async fn plan(p: &KubeProvider, d: &Desired) -> Result<Change, ProviderError> {
    let req = ObserveRequest {
        id: &d.id,
        spec: &d.spec,
        desired: true,
        unchanged: false,
    };
    let observed = p.observe(std::slice::from_ref(&req)).await.remove(0)?;
    p.diff(d, observed.as_ref())
}

async fn apply(p: &KubeProvider, d: &Desired, change: &Change) -> Result<(), ProviderError> {
    let req = ApplyRequest {
        change,
        desired: Some(d),
        last_applied: Some(&d.spec),
        observed: None,
    };
    p.apply(&req, &ApplyContext::default()).await.map(|_| ())
}

/// Plans, applies and re-plans `d`; the error names the object and the server's reason.
async fn converge(p: &KubeProvider, d: &Desired) -> Result<(), String> {
    let change = plan(p, d)
        .await
        .map_err(|e| format!("plan {}: {e}", d.id))?;
    apply(p, d, &change)
        .await
        .map_err(|e| format!("apply {}: {e}", d.id))?;
    let again = plan(p, d)
        .await
        .map_err(|e| format!("re-plan {}: {e}", d.id))?;
    if again.action != Action::NoOp {
        return Err(format!(
            "{}: re-plan after apply is {:?}: {:#?}",
            d.id, again.action, again.fields
        ));
    }
    Ok(())
}

async fn apply_all(dir: &str, must_have: &[&str]) {
    let Some(kc) = kubeconfig() else { return };
    let p = KubeProvider::new(BTreeMap::from([(
        CLUSTER.to_string(),
        ClusterConfig::new(&kc),
    )]));
    crds_loaded(&kc).await;
    let objects = compiled_objects(dir);
    let kinds: BTreeSet<String> = objects
        .iter()
        .map(|d| {
            format!(
                "{}/{}",
                d.spec["object"]["apiVersion"].as_str().unwrap_or_default(),
                d.spec["object"]["kind"].as_str().unwrap_or_default()
            )
        })
        .collect();
    for k in must_have {
        assert!(kinds.contains(*k), "{dir}: no {k} compiled: {kinds:?}");
    }
    let mut failures = Vec::new();
    for d in &objects {
        if let Err(e) = converge(&p, d).await {
            failures.push(e);
        }
    }
    assert!(
        failures.is_empty(),
        "{dir}: {} of {} objects failed:\n{}",
        failures.len(),
        objects.len(),
        failures.join("\n")
    );
}

/// CRDs the add-ons need; `tests/peers/kube.sh start` loads every CRD of fixtures/crds unless
/// `KUBE_PEER_CRDS` names a subset, which must include these.
const NEEDED_CRDS: [&str; 8] = [
    "queues.scheduling.run.ai",
    "clusterpolicies.kyverno.io",
    "bfbs.provisioning.dpu.nvidia.com",
    "dpuflavors.provisioning.dpu.nvidia.com",
    "dpusets.provisioning.dpu.nvidia.com",
    "computedomains.resource.nvidia.com",
    "nodepools.karpenter.sh",
    "sriovnetworknodepolicies.sriovnetwork.openshift.io",
];

/// Fails with the list of missing CRDs rather than one apply error per object.
async fn crds_loaded(kc: &std::path::Path) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let client = common::admin_client(kc).await;
    let api: kube::Api<CustomResourceDefinition> = kube::Api::all(client);
    let names: BTreeSet<String> = api
        .list(&Default::default())
        .await
        .expect("list CRDs")
        .items
        .into_iter()
        .filter_map(|c| c.metadata.name)
        .collect();
    let missing: Vec<&str> = NEEDED_CRDS
        .iter()
        .copied()
        .filter(|n| !names.contains(*n))
        .collect();
    assert!(
        missing.is_empty(),
        "the test apiserver lacks CRDs {missing:?}: restart tests/peers/kube.sh start with them in KUBE_PEER_CRDS (default: all of fixtures/crds)"
    );
}

/// The custom kinds compile adds (compile/addons.rs, and the SR-IOV policy of
/// `networkOperator.sriov.numVfs`); each must be among what a fleet compiles to.
/// (The ClusterPolicy is the GPU Operator chart's: cli/tests/charts.rs applies it.)
const ADDON_KINDS: [&str; 9] = [
    "scheduling.run.ai/v2/Queue",
    "kyverno.io/v1/ClusterPolicy",
    "provisioning.dpu.nvidia.com/v1alpha1/BFB",
    "provisioning.dpu.nvidia.com/v1alpha1/DPUFlavor",
    "provisioning.dpu.nvidia.com/v1alpha1/DPUSet",
    "resource.nvidia.com/v1beta1/ComputeDomain",
    "resource.k8s.io/v1/ResourceClaimTemplate",
    "karpenter.sh/v1/NodePool",
    "sriovnetwork.openshift.io/v1/SriovNetworkNodePolicy",
];

#[tokio::test]
async fn every_object_compiled_from_the_dsx_example_passes_the_real_crd_schemas() {
    apply_all("examples/dsx", &ADDON_KINDS).await;
}

#[tokio::test]
async fn every_object_compiled_from_the_every_field_fleet_passes_the_real_crd_schemas() {
    apply_all("fixtures/every-field", &ADDON_KINDS).await;
}
