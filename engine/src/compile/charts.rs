//! Operator chart releases: each operator the manifest pins (GPU, Network and NIM Operator,
//! the DRA driver, KAI, Grove, Kyverno, a tenant's CNI and CSI) becomes one Helm release per
//! cluster, at the pinned version, with values derived from the typed fields and the
//! `values` escape hatch merged over them.
//!
//! Compile only describes the release ([`ChartRelease`]); `fleetform-charts` fetches and
//! renders the chart with Helm's own engine and expands it into ordinary `kube:` resources
//! before planning, so drift, health gates, `--target` and prune treat them like any object.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::manifest::{ChartDefaults, ChartSource, GpuSharing, NodePool, Operators, Tenant};
use crate::resource::{Dependency, Origin, ResourceId};
use crate::secret::SecretRef;

/// One Helm release fleetform manages in one cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChartRelease {
    /// The cluster (a key of [`super::Compiled::clusters`]).
    pub cluster: String,
    /// Release name (`.Release.Name`), unique per cluster.
    pub name: String,
    /// Release namespace (`.Release.Namespace`); compile creates it.
    pub namespace: String,
    /// The chart's name in its repository.
    pub chart: String,
    /// The pinned chart version.
    pub version: String,
    /// Where the chart comes from; `None` means the chart's upstream repository.
    pub repository: Option<String>,
    /// Repository user.
    pub username: Option<String>,
    /// Repository password (a reference; resolved only when fetching).
    pub password: Option<SecretRef>,
    /// Skip TLS verification.
    pub insecure: bool,
    /// PEM bundle to trust, relative to the fleet directory.
    pub ca_bundle: Option<String>,
    /// The values handed to Helm: derived from the typed fields, then the manifest's `values`.
    pub values: Value,
    /// Wait for the release's workloads to be ready (health gates on Deployments etc.).
    pub wait: bool,
    /// What every object of the release waits for (its namespace, the pull secret, ...).
    pub after: Vec<Dependency>,
    /// Addresses the rendered release must contain because compiled resources wait for them
    /// (the GPU Operator's ClusterPolicy).
    pub provides: Vec<ResourceId>,
    /// Compiled resources that wait for the release to be ready (its CRDs, workloads and the
    /// addresses in `provides`), with the reason shown in the plan.
    pub dependents: Vec<Dependent>,
    /// The manifest field that pins the release.
    pub origin: Origin,
    /// Where each part of the manifest's `values` is written: (JSON pointer into the values,
    /// manifest line), so a value a chart rejects is reported at the line that sets it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub value_origins: Vec<(String, Origin)>,
    /// Releases of the same cluster whose copy wins when both ship a CRD: the chart that runs
    /// the CRD's controller. The GPU Operator v26.7 ships ComputeDomain's CRDs for its
    /// (disabled) GPUCluster stack, differently from the standalone DRA driver that serves
    /// them; this release's copy is then left out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub yields_crds_to: Vec<String>,
}

impl ChartRelease {
    /// `cluster/namespace/name`: how the plan and errors name the release.
    pub fn key(&self) -> String {
        format!("{}/{}/{}", self.cluster, self.namespace, self.name)
    }

    /// The manifest line for a pointer into the values: the deepest part of the manifest's
    /// `values` that holds it, else the line that pins the release (the value comes from a
    /// typed field or the chart's defaults).
    pub fn value_origin(&self, pointer: &str) -> &Origin {
        self.value_origins
            .iter()
            .filter(|(p, _)| {
                !p.is_empty()
                    && (pointer == p
                        || pointer
                            .strip_prefix(p.as_str())
                            .is_some_and(|rest| rest.starts_with('/')))
            })
            .max_by_key(|(p, _)| p.len())
            .map_or(&self.origin, |(_, o)| o)
    }
}

/// A compiled resource that waits for a release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dependent {
    /// The waiting resource.
    pub id: ResourceId,
    /// Why, e.g. "NIM workloads need the GPU Operator ready".
    pub reason: String,
}

/// Upstream repository of each chart fleetform knows, used when the manifest names none.
pub fn upstream_repository(chart: &str) -> Option<&'static str> {
    Some(match chart {
        "gpu-operator" | "network-operator" | "k8s-nim-operator" | "dra-driver-nvidia-gpu" => {
            "https://helm.ngc.nvidia.com/nvidia"
        }
        "kai-scheduler" => "oci://ghcr.io/nvidia/kai-scheduler",
        "grove-charts" => "oci://ghcr.io/ai-dynamo/grove",
        "kyverno" => "https://kyverno.github.io/kyverno",
        _ => return None,
    })
}

/// A release before its source and dependencies are filled in.
pub(super) struct ReleaseSpec<'a> {
    pub name: &'a str,
    pub namespace: &'a str,
    pub chart: &'a str,
    pub version: &'a str,
    pub source: Option<&'a ChartSource>,
    pub typed: Value,
    pub user_values: Option<&'a Value>,
    pub origin: Origin,
    /// Where the parts of `user_values` are written (see [`ChartRelease::value_origins`]).
    pub value_origins: Vec<(String, Origin)>,
}

/// Builds a release from the fleet defaults and the operator's own `chart` and `values`.
pub(super) fn release(
    cluster: &str,
    defaults: &ChartDefaults,
    spec: ReleaseSpec<'_>,
) -> ChartRelease {
    let src = spec.source.cloned().unwrap_or_default();
    // Credentials go with the repository they were given for: an operator that names its own
    // repository does not inherit the fleet default's password.
    let own_repo = src.repository.is_some();
    let pick = |mine: Option<String>, fleet: Option<String>| {
        if own_repo { mine } else { mine.or(fleet) }
    };
    let mut values = spec.typed;
    if let Some(user) = spec.user_values {
        merge(&mut values, user);
    }
    ChartRelease {
        cluster: cluster.to_string(),
        name: spec.name.to_string(),
        namespace: spec.namespace.to_string(),
        chart: src.name.clone().unwrap_or_else(|| spec.chart.to_string()),
        version: spec.version.to_string(),
        repository: src
            .repository
            .clone()
            .or_else(|| defaults.repository.clone()),
        username: pick(src.username.clone(), defaults.username.clone()),
        password: if own_repo {
            src.password.clone()
        } else {
            src.password.clone().or_else(|| defaults.password.clone())
        },
        insecure: src.insecure || (!own_repo && defaults.insecure),
        ca_bundle: pick(src.ca_bundle.clone(), defaults.ca_bundle.clone()),
        values,
        wait: defaults.wait,
        after: Vec::new(),
        provides: Vec::new(),
        dependents: Vec::new(),
        origin: spec.origin,
        value_origins: spec.value_origins,
        yields_crds_to: Vec::new(),
    }
}

/// JSON merge of `patch` into `base`: objects merge key by key, anything else replaces.
pub fn merge(base: &mut Value, patch: &Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                merge(b.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (b, p) => *b = p.clone(),
    }
}

/// Values for the GPU Operator chart from the typed fields and the tenant's pools.
///
/// fleetform applies the chart's CRDs itself, so the chart's CRD-upgrade hook is turned off
/// (`operator.upgradeCRD`); the ClusterPolicy is the chart's own (`clusterPolicy.deployCR`),
/// so every operand gets the chart's default images unless the manifest pins one.
/// The driver rollout under the pools' disruption budget: the GPU Operator's upgrade
/// controller reloads the driver node by node (cordon, GPU pod deletion, reload, validation),
/// at most `budget` nodes at a time and never more unavailable; fleetform then waits on each
/// node's `nvidia.com/gpu-driver-upgrade-state` (the kube provider's ClusterPolicy health).
/// Without pools the chart's defaults stay. `values` may still override either number.
pub(super) fn with_driver_rollout(mut values: Value, budget: Option<u32>) -> Value {
    if let Some(n) = budget {
        values["driver"]["upgradePolicy"] = json!({
            "autoUpgrade": true,
            "maxParallelUpgrades": n.max(1),
            "maxUnavailable": n.max(1).to_string(),
        });
    }
    values
}

pub(super) fn gpu_operator_values(ops: &Operators, pull_secret: Option<&str>) -> Value {
    let g = &ops.gpu_operator;
    let component = |c: &crate::manifest::Component| {
        let mut v = json!({ "enabled": c.enabled });
        if let Some(t) = &c.version {
            v["version"] = json!(t);
        }
        if let Some(r) = &c.repository {
            v["repository"] = json!(r);
        }
        v
    };
    let mut driver = json!({
        "enabled": g.driver.enabled,
        "version": g.driver.version,
        "usePrecompiled": g.driver.use_precompiled,
        "kernelModuleType": g.driver.kernel_module_type,
        "rdma": { "enabled": g.driver.rdma },
    });
    if let Some(r) = &g.driver.repository {
        driver["repository"] = json!(r);
    }
    let mut v = json!({
        "operator": { "upgradeCRD": false, "cleanupCRD": false },
        "clusterPolicy": { "deployCR": true },
        "nfd": { "enabled": g.nfd },
        "mig": { "strategy": g.mig_strategy },
        "driver": driver,
        "toolkit": component(&g.toolkit),
        "devicePlugin": component(&g.device_plugin),
        "dcgmExporter": component(&g.dcgm_exporter),
        "migManager": component(&g.mig_manager),
    });
    if let Some(secret) = pull_secret {
        for operand in [
            "operator",
            "validator",
            "driver",
            "toolkit",
            "devicePlugin",
            "dcgmExporter",
            "gfd",
            "migManager",
        ] {
            v[operand]["imagePullSecrets"] = json!([secret]);
        }
    }
    v
}

/// Values for the Network Operator chart. The NicClusterPolicy is compiled by fleetform
/// itself (`deployCR` stays off); the chart runs the operator, and its NFD only when asked.
pub(super) fn network_operator_values(net: &crate::manifest::NetworkOperator) -> Value {
    json!({
        "upgradeCRDs": false,
        "deployCR": false,
        "nfd": { "enabled": net.nfd },
        "sriovNetworkOperator": { "enabled": net.sriov.as_ref().is_some_and(|s| s.enabled) },
    })
}

/// Values for the NIM Operator chart (CRDs are applied by fleetform).
pub(super) fn nim_operator_values() -> Value {
    json!({ "operator": { "upgradeCRD": false } })
}

/// Values for the DRA driver chart, from the tenant's DRA pools. The GPU kubelet plugin is
/// only enabled when some pool offers GPU device classes; the chart refuses that next to the
/// device plugin unless told (`gpuResourcesEnabledOverride`), and compile keeps the device
/// plugin off DRA pools' nodes, which is what that override asks for.
pub(super) fn dra_driver_values(pools: &[&NodePool], host_driver: bool) -> Value {
    let mut gpus = false;
    let mut domains = false;
    for p in pools {
        if let Some(GpuSharing::Dra(d)) = &p.spec.gpu_sharing {
            gpus |= !d.device_classes.is_empty();
            domains |= d.compute_domains;
        }
    }
    let mut v = json!({
        "resources": { "gpus": { "enabled": gpus }, "computeDomains": { "enabled": domains } },
    });
    if gpus {
        v["gpuResourcesEnabledOverride"] = json!(true);
    }
    if !host_driver {
        // The GPU Operator's driver container installs under /run/nvidia/driver.
        v["nvidiaDriverRoot"] = json!("/run/nvidia/driver");
    }
    v
}

/// The tenant's CNI or CSI: a chart release only when the manifest names where its chart is.
pub(super) fn addon(
    tenant: &Tenant,
    defaults: &ChartDefaults,
    addon: &crate::manifest::Addon,
    origin: Origin,
    value_origins: Vec<(String, Origin)>,
) -> Option<ChartRelease> {
    let version = addon.version.as_deref()?;
    Some(release(
        tenant.name(),
        defaults,
        ReleaseSpec {
            name: &addon.name,
            namespace: "kube-system",
            chart: &addon.name,
            version,
            source: addon.chart.as_ref(),
            typed: json!({}),
            user_values: addon.values.as_ref(),
            origin,
            value_origins,
        },
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn values_merge_objects_key_by_key_and_replace_everything_else() {
        let mut base = json!({"driver": {"enabled": true, "version": "1"}, "list": [1, 2]});
        merge(
            &mut base,
            &json!({"driver": {"version": "2"}, "list": [3], "new": {"a": 1}}),
        );
        assert_eq!(
            base,
            json!({"driver": {"enabled": true, "version": "2"}, "list": [3], "new": {"a": 1}})
        );
    }

    #[test]
    fn an_operator_with_its_own_repository_does_not_inherit_the_fleet_password() {
        let defaults = ChartDefaults {
            repository: Some("oci://a/charts".into()),
            username: Some("u".into()),
            password: Some(SecretRef::Env("FLEET_PW".into())),
            ..Default::default()
        };
        let own = ChartSource {
            repository: Some("https://b/charts".into()),
            ..Default::default()
        };
        let spec = |source| ReleaseSpec {
            name: "x",
            namespace: "x",
            chart: "x",
            version: "1",
            source,
            typed: json!({}),
            user_values: None,
            origin: Origin {
                file: "f".into(),
                line: 1,
                column: 1,
            },
            value_origins: Vec::new(),
        };
        let r = release("t", &defaults, spec(Some(&own)));
        assert_eq!(r.repository.as_deref(), Some("https://b/charts"));
        assert_eq!(r.password, None);
        assert_eq!(r.username, None);
        let r = release("t", &defaults, spec(None));
        assert_eq!(r.repository.as_deref(), Some("oci://a/charts"));
        assert!(r.password.is_some());
    }
}
