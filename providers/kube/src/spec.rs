//! The kube provider's desired spec, its addresses, and the labels it must never own.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The field manager fleetform applies with. Prune only deletes objects this manager owns fields of.
pub const FIELD_MANAGER: &str = "fleetform";

/// The shape of `Desired.spec` for every `kube:` resource.
///
/// ```yaml
/// cluster: acme              # a key of the provider's cluster map
/// object:                    # the full Kubernetes object, as `kubectl apply` would take it
///   apiVersion: nvidia.com/v1
///   kind: ClusterPolicy
///   metadata: {name: cluster-policy}
///   spec: {...}
/// force: false               # take fields other field managers own (SSA force); default false
/// adopt: false               # the object is not fleetform's: never create or delete it, only
///                            # apply the fields given (e.g. Node labels, taints, spec.unschedulable)
/// wait: true                 # wait for its readiness rule (Deployment available, CRD established,
///                            # ClusterPolicy ready) before dependents proceed
/// ```
///
/// The object is sent with server-side apply (field manager `fleetform`, `fieldValidation=Strict`).
/// `status` and server-owned metadata (`managedFields`, `resourceVersion`, `uid`, `generation`,
/// `creationTimestamp`) are never sent. A Secret's `stringData` is folded into `data` (base64) so
/// that drift on it can be seen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubeSpec {
    /// The cluster the object lives in (a key of [`crate::KubeProvider::new`]'s map).
    pub cluster: String,
    /// The full Kubernetes object.
    pub object: Value,
    /// Server-side apply with `force=true`: take over fields other managers own.
    #[serde(default)]
    pub force: bool,
    /// Apply only the given fields to an object fleetform does not create (a Node); a missing
    /// object is a permanent error, and a delete releases fleetform's fields instead of deleting.
    #[serde(default)]
    pub adopt: bool,
    /// Wait for the object to be ready (its kind's readiness rule) before dependents proceed
    /// (default true). False only where no controller will ever make it ready (a sandbox).
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub wait: bool,
    /// A change to a field that cannot change in place (a Job's template) deletes the object
    /// and creates it again as an update, without destroy consent: a Helm hook whose
    /// `helm.sh/hook-delete-policy` says `before-hook-creation`, which Helm itself recreates on
    /// every upgrade. Anything else is a Replace, which needs consent.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub recreate: bool,
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

/// How to reach one cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterConfig {
    /// The kubeconfig file.
    pub kubeconfig: PathBuf,
    /// The kubeconfig context; its current context when absent.
    #[serde(default)]
    pub context: Option<String>,
    /// Act as this user (`Impersonate-User`), e.g. `system:serviceaccount:tenant-acme:fleetform`,
    /// so the cluster's RBAC bounds what a tenant's manifest may change.
    #[serde(default)]
    pub impersonate: Option<String>,
}

impl ClusterConfig {
    /// A cluster reached through a kubeconfig file's current context, without impersonation.
    pub fn new(kubeconfig: impl Into<PathBuf>) -> Self {
        Self {
            kubeconfig: kubeconfig.into(),
            context: None,
            impersonate: None,
        }
    }

    /// The same cluster, acting as `user` (impersonation).
    pub fn impersonating(mut self, user: impl Into<String>) -> Self {
        self.impersonate = Some(user.into());
        self
    }
}

/// What an object is, read from its own fields.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectRef {
    /// `v1` or `group/version`.
    pub api_version: String,
    /// The kind, e.g. `ClusterPolicy`.
    pub kind: String,
    /// The namespace; `None` for cluster-scoped objects.
    pub namespace: Option<String>,
    /// `metadata.name`.
    pub name: String,
}

impl ObjectRef {
    /// Reads apiVersion, kind, metadata.namespace and metadata.name.
    pub fn of(object: &Value) -> Result<Self, String> {
        let s = |p: &str| {
            object
                .pointer(p)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        };
        let api_version = s("/apiVersion").ok_or("the object has no apiVersion")?;
        let kind = s("/kind").ok_or("the object has no kind")?;
        let name = s("/metadata/name").ok_or("the object has no metadata.name")?;
        Ok(Self {
            api_version: api_version.to_string(),
            kind: kind.to_string(),
            namespace: s("/metadata/namespace").map(str::to_string),
            name: name.to_string(),
        })
    }

    /// The API group (`""` for the core group).
    pub fn group(&self) -> &str {
        self.api_version.rsplit_once('/').map_or("", |(g, _)| g)
    }

    /// The version, e.g. `v1`.
    pub fn version(&self) -> &str {
        self.api_version
            .rsplit_once('/')
            .map_or(self.api_version.as_str(), |(_, v)| v)
    }

    /// `Kind name` or `Kind namespace/name`, for messages.
    pub fn describe(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{} {ns}/{}", self.kind, self.name),
            None => format!("{} {}", self.kind, self.name),
        }
    }
}

/// The address of an object in a cluster: the contract's one function for
/// Kubernetes addresses, which compile uses too (see its documentation for the form).
pub use fleetform_contract::address::kube_object_id as object_id;

/// Label keys (and prefixes) that operators write on Nodes to drive their own state machines.
/// fleetform must never put them under its field ownership, or it would fight the operator
/// (domain.md §0 and §5). The knobs users set (`nvidia.com/mig.config`,
/// `nvidia.com/device-plugin.config`, `nvidia.com/gpu.workload.config`,
/// `nvidia.com/gpu.deploy.operands`, `nvidia.com/gpu-driver-upgrade.skip`) are not in this list.
const OPERATOR_OWNED_EXACT: &[&str] = &[
    "nvidia.com/mig.config.state",
    "nvidia.com/gpu-driver-upgrade-state",
    "nvidia.com/gpu.present",
    "nvidia.com/mig.capable",
    "nvidia.com/mig.strategy",
    "nvidia.com/gpu.product",
    "nvidia.com/gpu.count",
    "nvidia.com/gpu.memory",
    "nvidia.com/gpu.family",
    "nvidia.com/gpu.machine",
    "nvidia.com/gpu.replicas",
    "nvidia.com/gpu.sharing-strategy",
    "nvidia.com/gpu.clique",
    "nvidia.com/gpu.mode",
    "nvidia.com/gpu-operator.resource-allocation.mode",
    "network.nvidia.com/operator.mofed.wait",
];

/// Prefixes of operator-written label families.
const OPERATOR_OWNED_PREFIXES: &[&str] = &[
    // Per-operand scheduling switches the GPU operator (and mig-manager) flip.
    "nvidia.com/gpu.deploy.",
    // GFD hardware facts.
    "nvidia.com/gpu.compute.",
    "nvidia.com/cuda.",
    // Upgrade controller state for other drivers (`nvidia.com/<x>-driver-upgrade-state`).
    // Handled below by suffix.
    // Node Feature Discovery.
    "feature.node.kubernetes.io/",
];

/// Labels the user sets that look like operator families but are knobs (exceptions to the prefixes).
const USER_KNOBS: &[&str] = &["nvidia.com/gpu.deploy.operands"];

/// True when an operator (GPU operator, mig-manager, GFD, NFD, network operator, driver upgrade
/// controller) writes this Node label: fleetform must not own it (the validator reuses this).
pub fn is_operator_owned_label(key: &str) -> bool {
    if USER_KNOBS.contains(&key) {
        return false;
    }
    OPERATOR_OWNED_EXACT.contains(&key)
        || OPERATOR_OWNED_PREFIXES.iter().any(|p| key.starts_with(p))
        || (key.starts_with("nvidia.com/") && key.ends_with("-driver-upgrade-state"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn addresses_name_cluster_api_version_kind_namespace_and_name() {
        let cp = json!({"apiVersion": "nvidia.com/v1", "kind": "ClusterPolicy", "metadata": {"name": "cluster-policy"}});
        assert_eq!(
            object_id("acme", &cp).as_str(),
            "kube:acme/nvidia.com/v1/ClusterPolicy/cluster-policy"
        );
        let ns =
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "gpu-operator"}});
        assert_eq!(
            object_id("acme", &ns).as_str(),
            "kube:acme/v1/Namespace/gpu-operator"
        );
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "mig", "namespace": "gpu-operator"}});
        assert_eq!(
            object_id("acme", &cm).as_str(),
            "kube:acme/v1/ConfigMap/gpu-operator/mig"
        );
    }

    #[test]
    fn object_ref_splits_group_and_version() {
        let r = ObjectRef::of(&json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "a", "namespace": "n"}}))
            .unwrap();
        assert_eq!((r.group(), r.version()), ("apps", "v1"));
        let r =
            ObjectRef::of(&json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}}))
                .unwrap();
        assert_eq!(
            (r.group(), r.version(), r.namespace.as_deref()),
            ("", "v1", None)
        );
        assert!(
            ObjectRef::of(&json!({"kind": "Node"}))
                .unwrap_err()
                .contains("apiVersion")
        );
    }

    #[test]
    fn operator_written_labels_are_never_owned_but_user_knobs_are() {
        for owned in [
            "nvidia.com/gpu.deploy.driver",
            "nvidia.com/gpu.deploy.mig-manager",
            "nvidia.com/mig.config.state",
            "nvidia.com/gpu-driver-upgrade-state",
            "network.nvidia.com/operator.mofed.wait",
            "nvidia.com/gpu.product",
            "nvidia.com/cuda.driver-version.major",
            "feature.node.kubernetes.io/pci-10de.present",
        ] {
            assert!(
                is_operator_owned_label(owned),
                "{owned} must be operator-owned"
            );
        }
        for knob in [
            "nvidia.com/mig.config",
            "nvidia.com/device-plugin.config",
            "nvidia.com/gpu.workload.config",
            "nvidia.com/gpu.deploy.operands",
            "nvidia.com/gpu-driver-upgrade.skip",
            "kai.scheduler/queue",
            "topology.kubernetes.io/zone",
        ] {
            assert!(!is_operator_owned_label(knob), "{knob} is a user knob");
        }
    }

    #[test]
    fn spec_refuses_unknown_keys() {
        let err = serde_json::from_value::<KubeSpec>(
            json!({"cluster": "a", "object": {}, "forse": true}),
        )
        .unwrap_err();
        assert!(err.to_string().contains("forse"), "{err}");
    }
}
