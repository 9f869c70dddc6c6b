//! What compile/addons.rs emits for `examples/dsx`: KAI queues, Kyverno policies, DPF objects,
//! ComputeDomains, Karpenter NodePools and observability settings, each ordering an edge with
//! a reason (the apiserver tests in providers/kube/tests/compiled_crds.rs check the objects
//! against the real CRDs).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use fleetform_engine::compile::{self, Compiled};
use fleetform_engine::resource::Desired;
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

fn get<'a>(c: &'a Compiled, id: &str) -> &'a Desired {
    c.resources
        .iter()
        .find(|d| d.id.as_str() == id)
        .unwrap_or_else(|| panic!("{id} not compiled"))
}

/// The GPU Operator chart's values of tenant `t`: what the chart renders the ClusterPolicy from.
fn gpu_values<'a>(c: &'a Compiled, t: &str) -> &'a fleetform_engine::compile::ChartRelease {
    c.releases
        .iter()
        .find(|r| r.cluster == t && r.name == "gpu-operator")
        .unwrap_or_else(|| panic!("tenant {t} has no GPU Operator release"))
}

fn object<'a>(c: &'a Compiled, id: &str) -> &'a Value {
    &get(c, id).spec["object"]
}

fn reason<'a>(d: &'a Desired, on: &str) -> &'a str {
    d.deps
        .iter()
        .find(|x| x.on.as_str() == on)
        .map(|x| x.reason.as_str())
        .unwrap_or_else(|| panic!("{} has no edge to {on}", d.id))
}

#[test]
fn kai_queues_go_to_every_tenant_cluster_and_wait_for_their_parent() {
    let c = dsx();
    for t in ["acme", "bravo", "charlie"] {
        let training = get(&c, &format!("kube:{t}/scheduling.run.ai/v2/Queue/training"));
        let spec = &training.spec["object"]["spec"];
        assert_eq!(spec["parentQueue"], "default");
        assert_eq!(spec["resources"]["gpu"]["quota"], 32.0);
        assert_eq!(spec["priority"], 100);
        assert!(
            reason(
                training,
                &format!("kube:{t}/scheduling.run.ai/v2/Queue/default")
            )
            .contains("child of queue default")
        );
        let default = object(&c, &format!("kube:{t}/scheduling.run.ai/v2/Queue/default"));
        assert_eq!(default["spec"]["resources"]["gpu"]["quota"], -1.0);
        assert!(default["spec"].get("parentQueue").is_none());
    }
}

#[test]
fn kyverno_policies_follow_the_failure_action_and_embed_the_key_contents() {
    let c = dsx();
    let lp = object(
        &c,
        "kube:acme/kyverno.io/v1/ClusterPolicy/fleetform-least-privilege",
    );
    let rule = &lp["spec"]["rules"][0];
    assert_eq!(rule["validate"]["failureAction"], "Enforce");
    assert_eq!(rule["validate"]["podSecurity"]["level"], "baseline");
    let excluded = rule["exclude"]["any"][0]["resources"]["namespaces"]
        .as_array()
        .unwrap();
    assert!(
        excluded.iter().any(|n| n == "gpu-operator"),
        "operators are exempt"
    );
    let si = object(
        &c,
        "kube:acme/kyverno.io/v1/ClusterPolicy/fleetform-signed-images",
    );
    let verify = &si["spec"]["rules"][0]["verifyImages"][0];
    assert_eq!(verify["imageReferences"][0], "nvcr.io/nim/*");
    assert_eq!(
        verify["attestors"][0]["entries"][0]["keys"]["publicKeys"], "test-secret",
        "the key file's contents, read through the resolver"
    );
}

#[test]
fn hosts_with_dpus_get_a_dpuset_after_their_bfb_flavor_and_power() {
    let c = dsx();
    let ns = "dpf-operator-system";
    let api = "provisioning.dpu.nvidia.com/v1alpha1";
    let bfb = object(&c, &format!("kube:acme/{api}/BFB/{ns}/bf-bundle-2.9.1"));
    assert_eq!(
        bfb["spec"]["url"],
        "http://127.0.0.1:8080/bfb/bf-bundle-2.9.1.bfb"
    );
    let set = get(
        &c,
        &format!("kube:acme/{api}/DPUSet/{ns}/acme-h100-train-bluefield-3"),
    );
    let spec = &set.spec["object"]["spec"];
    assert_eq!(
        spec["dpuTemplate"]["spec"]["bfb"]["name"],
        "bf-bundle-2.9.1"
    );
    assert_eq!(spec["dpuTemplate"]["spec"]["dpuFlavor"], "bluefield-3");
    let hosts = spec["nodeSelector"]["matchExpressions"][0]["values"]
        .as_array()
        .unwrap();
    assert_eq!(
        hosts.len(),
        4,
        "the pool's members, not its spare: {hosts:?}"
    );
    assert!(reason(set, &format!("kube:acme/{api}/BFB/{ns}/bf-bundle-2.9.1")).contains("flashed"));
    assert!(
        reason(set, &format!("kube:acme/{api}/DPUFlavor/{ns}/bluefield-3")).contains("DPUFlavor")
    );
    assert!(reason(set, "redfish:host/r01-n01/power").contains("powered on"));
    let nic = get(
        &c,
        "kube:acme/mellanox.com/v1alpha1/NicClusterPolicy/nic-cluster-policy",
    );
    assert!(reason(nic, &set.id.to_string()).contains("before host networking"));
    // Tenants whose pools have no DPU hosts get no DPF objects.
    assert!(
        !c.resources
            .iter()
            .any(|d| d.id.as_str().starts_with("kube:bravo/provisioning"))
    );
}

#[test]
fn nvl72_pools_get_a_compute_domain_and_a_claim_template_per_namespace() {
    let c = dsx();
    let cd = object(
        &c,
        "kube:charlie/resource.nvidia.com/v1beta1/ComputeDomain/default/charlie-gb200",
    );
    assert_eq!(cd["spec"]["numNodes"], 5);
    assert_eq!(
        cd["spec"]["channel"]["resourceClaimTemplate"]["name"],
        "charlie-gb200-channel"
    );
    let rct = get(
        &c,
        "kube:charlie/resource.k8s.io/v1/ResourceClaimTemplate/default/charlie-gb200-gpus",
    );
    let req = &rct.spec["object"]["spec"]["spec"]["devices"]["requests"][0]["exactly"];
    assert_eq!(req["deviceClassName"], "gpu.nvidia.com");
    assert_eq!(req["count"], 4, "every GPU of one GB200 tray");
    assert!(
        reason(
            rct,
            "kube:charlie/resource.k8s.io/v1/DeviceClass/gpu.nvidia.com"
        )
        .contains("allocated")
    );
}

#[test]
fn karpenter_pools_get_a_node_pool_bounded_by_max() {
    let c = dsx();
    let np = object(&c, "kube:bravo/karpenter.sh/v1/NodePool/bravo-h200-mig");
    assert_eq!(np["spec"]["limits"]["nodes"], "3");
    assert_eq!(
        np["spec"]["template"]["spec"]["nodeClassRef"]["kind"],
        "ClusterAPINodeClass"
    );
    assert_eq!(
        np["spec"]["template"]["spec"]["requirements"][0]["values"][0],
        "amd64"
    );
    assert_eq!(
        np["spec"]["template"]["metadata"]["labels"]["fleetform.dev/pool"],
        "bravo-h200-mig"
    );
}

#[test]
fn observability_settings_reach_the_cluster_policy_and_every_nim() {
    let c = dsx();
    let values = &gpu_values(&c, "acme").values;
    let sm = &values["dcgmExporter"]["serviceMonitor"];
    assert_eq!(sm["enabled"], true);
    assert_eq!(sm["interval"], "30s");
    assert_eq!(sm["additionalLabels"]["release"], "prometheus");
    let nims: Vec<&Desired> = c
        .resources
        .iter()
        .filter(|d| d.spec["object"]["kind"] == "NIMService")
        .collect();
    assert!(!nims.is_empty());
    for n in nims {
        let env = n.spec["object"]["spec"]["env"].as_array().unwrap();
        assert!(
            env.iter()
                .any(|e| e["name"] == "OTEL_EXPORTER_OTLP_ENDPOINT"
                    && e["value"] == "http://127.0.0.1:4317"),
            "{}: {env:?}",
            n.id
        );
    }
}

#[test]
fn every_new_object_is_labelled_and_the_graph_stays_acyclic() {
    let c = dsx();
    for d in c.resources.iter().filter(|d| d.id.provider() == "kube") {
        let o = &d.spec["object"];
        if d.spec["adopt"] == true {
            continue;
        }
        assert_eq!(
            o["metadata"]["labels"][compile::FLEET_LABEL],
            "fleetform",
            "{} lacks the managed-by label",
            d.id
        );
    }
    fleetform_engine::graph::Graph::build(&c.resources).expect("acyclic");
}

/// Reads every secret except the cosign key, which is missing.
struct NoCosignKey;
impl SecretResolver for NoCosignKey {
    fn resolve(&self, r: &SecretRef) -> Result<Sensitive<String>, SecretError> {
        if r.to_string().ends_with("cosign.pub") {
            return Err(SecretError::Unsupported {
                reference: r.to_string(),
                why: "no such file".into(),
            });
        }
        FixedSecrets.resolve(r)
    }
}

#[test]
fn an_unreadable_signing_key_is_one_located_error_not_one_per_tenant() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/dsx");
    let files = load::read_dir(&dir).unwrap();
    let (docs, _) = load::load(&files);
    let fleet = validate::validate(&docs).unwrap();
    let diags = compile::compile(&fleet, &NoCosignKey).expect_err("the key cannot be read");
    assert_eq!(diags.len(), 1, "{diags:?}");
    let d = &diags[0];
    assert_eq!(d.code, "secret-unreadable");
    assert_eq!(
        d.field.as_deref(),
        Some("spec.policies.signedImages.keys[0]")
    );
    let span = d.span.as_ref().expect("located");
    assert_eq!(span.file, "fleet.yaml");
    let line = std::fs::read_to_string(dir.join("fleet.yaml"))
        .unwrap()
        .lines()
        .position(|l| l.contains("cosign.pub"))
        .unwrap()
        + 1;
    assert_eq!(span.line as usize, line);
}

#[test]
fn a_mig_layout_gets_a_mig_parted_config_the_cluster_policy_names() {
    let c = dsx();
    let cm = get(
        &c,
        "kube:charlie/v1/ConfigMap/gpu-operator/fleetform-mig-parted-config",
    );
    let doc: Value =
        serde_json::from_str(cm.spec["object"]["data"]["config.yaml"].as_str().unwrap()).unwrap();
    let layout = doc["mig-configs"]["fleetform-charlie-b200-mig"]
        .as_array()
        .unwrap();
    assert_eq!(layout[0]["devices"], serde_json::json!([0]));
    assert_eq!(layout[0]["mig-devices"]["3g.90gb"], 2);
    let last = layout.last().unwrap();
    assert_eq!(
        last["devices"],
        serde_json::json!([6, 7]),
        "GPUs past the list"
    );
    assert_eq!(last["mig-enabled"], false);
    assert!(doc["mig-configs"]["all-disabled"].is_array());
    let release = gpu_values(&c, "charlie");
    let config = &release.values["migManager"]["config"];
    assert_eq!(config["name"], "fleetform-mig-parted-config");
    assert!(
        release
            .after
            .iter()
            .any(|d| d.on == cm.id && d.reason.contains("reads migManager configs"))
    );
    // Named configs only: the operator's default config serves them.
    assert!(!c.resources.iter().any(
        |d| d.id.as_str() == "kube:bravo/v1/ConfigMap/gpu-operator/fleetform-mig-parted-config"
    ));
}
