//! `Tenant.spec`: a tenant cluster, its Kubernetes, node OS, add-ons and quotas.

use serde::{Deserialize, Serialize};

use super::{ChartSource, yes};
use crate::secret::SecretRef;

/// `Tenant.spec`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TenantSpec {
    /// Who runs which layers.
    pub flavor: Flavor,
    /// `shared` (default) or `dedicated-hosts` (no host shared with another tenant).
    #[serde(default)]
    pub isolation: Isolation,
    /// The tenant's Kubernetes cluster.
    pub kubernetes: Kubernetes,
    /// CNI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cni: Option<Addon>,
    /// CSI driver.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csi: Option<Addon>,
    /// Node OS: `{image: URL}` or `{byo: true}`.
    pub node_os: NodeOs,
    /// Quotas.
    #[serde(default)]
    pub quotas: Quotas,
    /// NGC access for the tenant's NIMs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ngc: Option<TenantNgc>,
    /// Overrides of the fleet's `operators` (any subset, same shape). The merged,
    /// typed result is in [`Fleet::tenant_operators`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operators: Option<serde_json::Value>,
    /// Namespaces created in the tenant cluster.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
}

/// Tenancy flavour: which layers the provider side owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Flavor {
    /// The cloud operator (NCP) runs everything up to the workloads.
    NcpManaged,
    /// An ISV runs the operators and NIMs on the provided cluster.
    IsvManaged,
    /// The tenant runs everything above the cluster.
    TenantManaged,
}

/// Host isolation.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Isolation {
    /// Hosts may serve several tenants.
    #[default]
    Shared,
    /// The tenant's hosts serve no one else.
    DedicatedHosts,
}

/// A tenant cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Kubernetes {
    /// `MAJOR.MINOR` or `MAJOR.MINOR.PATCH`, at least 1.34 (DRA GA). Quote it.
    pub version: String,
    /// HA control plane (default true).
    #[serde(default = "yes")]
    pub ha: bool,
    /// Where the tenant cluster's kubeconfig is.
    pub kubeconfig: SecretRef,
    /// Pod CIDR.
    pub pod_cidr: String,
    /// Service CIDR.
    pub service_cidr: String,
}

/// An add-on (CNI / CSI).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Addon {
    /// Name, e.g. `cilium`.
    pub name: String,
    /// Version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Where the chart comes from (default: `Fleet.spec.charts`, then upstream).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chart: Option<ChartSource>,
    /// Chart values merged over the ones fleetform derives from the fields above (an escape
    /// hatch: a value set here wins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<serde_json::Value>,
}

/// Node OS: exactly one of `image` and `byo` (the schema's `oneOf` enforces it), and what that
/// OS is, for the compatibility gate.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeOs {
    /// Provided image URL, installed through virtual media.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Bring your own OS (must be `true`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub byo: Option<bool>,
    /// The OS the nodes run, as NVIDIA's image tags write it (`ubuntu24.04`, `rhel9.4`,
    /// `rhcos4.17`, `sles15sp7`). Read by the compatibility gate (precompiled GPU and
    /// DOCA-OFED drivers, the Network Operator's validated OSes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
    /// The kernel release the nodes boot, as `uname -r` prints it (`6.8.0-49-generic`). Read by
    /// the compatibility gate (precompiled drivers exist per kernel line and flavour).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<String>,
}

impl NodeOs {
    /// The image URL, when fleetform provides the OS.
    pub fn image(&self) -> Option<&str> {
        self.image.as_deref()
    }
}

/// Tenant quotas.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Quotas {
    /// Whole GPUs across the tenant's pools.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpus: Option<u32>,
    /// Hosts across the tenant's pools.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosts: Option<u32>,
    /// NIM services.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nims: Option<u32>,
}

/// Tenant NGC access. The key carries its own org/team scope on NGC, so fleetform asks for
/// nothing else (an `org`/`team` here was accepted and read by nothing, and was removed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TenantNgc {
    /// API key, by reference only: the tenant's pull secrets and NIM `authSecret`.
    pub api_key: SecretRef,
}
