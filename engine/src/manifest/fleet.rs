//! `Fleet.spec`: fleet-wide settings other than registries and operators (schedulers,
//! policies, observability, the management cluster, rollout and prune defaults).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{ChartDefaults, ChartSource, NicoSite, Operators, Registries, is_false, one};
use crate::secret::SecretRef;

/// `Fleet.spec`: fleet-wide settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FleetSpec {
    /// Image registries (NGC, or a mirror of it standing in at `ngc.endpoint`).
    #[serde(default)]
    pub registries: Registries,
    /// Where operator charts come from, and release settings.
    #[serde(default)]
    pub charts: ChartDefaults,
    /// Operator versions every tenant cluster runs unless it overrides them.
    pub operators: Operators,
    /// Gang / queue schedulers.
    #[serde(default)]
    pub schedulers: Schedulers,
    /// Admission policies.
    #[serde(default)]
    pub policies: Policies,
    /// Where metrics and traces go.
    #[serde(default)]
    pub observability: Observability,
    /// The cluster that hosts fleetform's own state and tenant control planes.
    pub management_cluster: ManagementCluster,
    /// Disruption budgets used when a pool sets none.
    #[serde(default)]
    pub rollout: RolloutDefaults,
    /// Guard rails for deletions.
    #[serde(default)]
    pub prune: Prune,
    /// The NICo site whose hosts say `managedBy: nico`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nico: Option<NicoSite>,
    /// Endpoints fleetform may call although the address policy refuses them (link-local,
    /// cloud metadata, unspecified, multicast): CIDRs (`169.254.10.0/24`) or host names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_endpoints: Vec<String>,
}

/// `schedulers`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Schedulers {
    /// KAI scheduler.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kai: Option<Kai>,
    /// Grove (PodCliqueSets, scheduled by KAI).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grove: Option<Grove>,
}

/// KAI scheduler.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Kai {
    /// Version, e.g. `v0.13.0`.
    pub version: String,
    /// Where the chart comes from (default: `Fleet.spec.charts`, then upstream).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chart: Option<ChartSource>,
    /// Chart values merged over the ones fleetform derives from the fields above (an escape
    /// hatch: a value set here wins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<serde_json::Value>,
    /// Queues created in every tenant cluster.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub queues: Vec<KaiQueue>,
}

/// A KAI `Queue`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KaiQueue {
    /// Queue name.
    pub name: String,
    /// Parent queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// GPU quota (fractional GPUs; -1 unlimited).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_quota: Option<f64>,
    /// GPU limit (-1 unlimited).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_limit: Option<f64>,
    /// Priority.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
}

/// Grove.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Grove {
    /// Version.
    pub version: String,
    /// Where the chart comes from (default: `Fleet.spec.charts`, then upstream).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chart: Option<ChartSource>,
    /// Chart values merged over the ones fleetform derives from the fields above (an escape
    /// hatch: a value set here wins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<serde_json::Value>,
}

/// `policies`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Policies {
    /// Kyverno.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kyverno: Option<Kyverno>,
    /// Require signed images.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed_images: Option<SignedImages>,
}

/// Kyverno.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Kyverno {
    /// Version, e.g. `v1.19.0`.
    pub version: String,
    /// Where the chart comes from (default: `Fleet.spec.charts`, then upstream).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chart: Option<ChartSource>,
    /// Chart values merged over the ones fleetform derives from the fields above (an escape
    /// hatch: a value set here wins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<serde_json::Value>,
    /// `Audit` (default) or `Enforce`.
    #[serde(default)]
    pub failure_action: FailureAction,
}

/// Kyverno `failureAction`.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub enum FailureAction {
    /// Report only.
    #[default]
    Audit,
    /// Refuse at admission.
    Enforce,
}

/// Signed OCI artifacts policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SignedImages {
    /// Image reference patterns that must be signed, e.g. `nvcr.io/nim/*`.
    pub images: Vec<String>,
    /// Public keys (paths relative to the fleet directory).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<String>,
}

/// `observability` (compile/observability.rs).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Observability {
    /// Scrape the DCGM exporter through a ServiceMonitor (ClusterPolicy `dcgmExporter.serviceMonitor`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<Prometheus>,
    /// Where NIMs send OpenTelemetry traces and metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub otel: Option<Otel>,
}

/// `observability.prometheus`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Prometheus {
    /// Scrape interval, e.g. `30s`; the operator's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// Labels the ServiceMonitor carries (what your Prometheus selects by).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// `observability.otel`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Otel {
    /// OTLP collector URL.
    pub endpoint: String,
    /// Plain-text connection to the collector.
    #[serde(default, skip_serializing_if = "is_false")]
    pub insecure: bool,
}

/// `managementCluster`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ManagementCluster {
    /// Where its kubeconfig is (a secret reference).
    pub kubeconfig: SecretRef,
    /// The kubeconfig context; its current context when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
}

/// `rollout` defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RolloutDefaults {
    /// Hosts of one pool disrupted at once (default 1).
    #[serde(default = "one")]
    pub max_unavailable: u32,
    /// Hosts of one fault domain disrupted at once (default 1).
    #[serde(default = "one")]
    pub max_unavailable_per_fault_domain: u32,
}

impl Default for RolloutDefaults {
    fn default() -> Self {
        Self {
            max_unavailable: 1,
            max_unavailable_per_fault_domain: 1,
        }
    }
}

/// `prune`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Prune {
    /// Refuse a plan that deletes more than this fraction of managed resources (default 0.3).
    #[serde(default = "max_delete_fraction")]
    pub max_delete_fraction: f64,
}

fn max_delete_fraction() -> f64 {
    0.3
}

impl Default for Prune {
    fn default() -> Self {
        Self {
            max_delete_fraction: 0.3,
        }
    }
}
