//! The typed fleet manifest (`fleetform.dev/v1alpha1`), as `validate` returns it.
//!
//! A fleet is a directory of YAML documents, each `apiVersion`, `kind`,
//! `metadata {name, labels}`, `spec`. The kinds are [`Kind::Fleet`] (exactly one),
//! [`Kind::Rack`], [`Kind::Host`], [`Kind::Tenant`], [`Kind::NodePool`] and
//! [`Kind::NimService`] (`kind: NIMService`). docs/manifest.md is the reference for
//! people; `schemas/fleet.v1alpha1.json` is the same shape for editors and the
//! validator, and a test keeps the two in agreement.
//!
//! Every document keeps its [`Origin`] (the line of its `kind:`), and the span of
//! any field is reachable through [`Fleet::span`] with the document's [`DocId`] and
//! a JSON pointer, e.g. `fleet.span(host.doc, "/spec/bios/attributes/SriovGlobalEnable")`.
//!
//! Size: the types of every kind are still here (new ones go to `manifest/`); the split by kind
//! is part of issue 16, not done yet.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::diag::Span;
use crate::load::SpanMap;
use crate::resource::Origin;
use crate::secret::SecretRef;

mod charts;
pub use charts::{ChartDefaults, ChartSource};
mod nico;
pub use nico::{
    HostNico, ManagedBy, NicoAllocation, NicoInstanceType, NicoSite, NicoSubnet, NicoVpc,
};

/// The only `apiVersion` this model reads.
pub const API_VERSION: &str = "fleetform.dev/v1alpha1";

/// The document kinds of a fleet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Kind {
    /// The fleet-wide settings (exactly one).
    Fleet,
    /// A rack or NVL72 domain: a fault domain.
    Rack,
    /// A bare-metal host with its BMC.
    Host,
    /// A tenant and its Kubernetes cluster.
    Tenant,
    /// A group of hosts of one tenant.
    NodePool,
    /// A NIM inference service.
    #[serde(rename = "NIMService")]
    NimService,
}

impl Kind {
    /// All kinds, in the order documents are listed.
    pub const ALL: [Kind; 6] = [
        Kind::Fleet,
        Kind::Rack,
        Kind::Host,
        Kind::Tenant,
        Kind::NodePool,
        Kind::NimService,
    ];

    /// The `kind:` string.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Fleet => "Fleet",
            Kind::Rack => "Rack",
            Kind::Host => "Host",
            Kind::Tenant => "Tenant",
            Kind::NodePool => "NodePool",
            Kind::NimService => "NIMService",
        }
    }

    /// Parses a `kind:` string.
    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Index of a loaded document in [`Fleet::spans`] (the order `load` produced them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DocId(pub usize);

/// `metadata` of every document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Metadata {
    /// Unique per kind; DNS-label-like (`[a-z0-9]([-a-z0-9]*[a-z0-9])?`).
    pub name: String,
    /// Free labels, copied to what the document compiles into where that makes sense.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// One document of a given kind: its metadata, typed spec and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Doc<S> {
    /// `metadata`.
    pub metadata: Metadata,
    /// `spec`, typed.
    pub spec: S,
    /// The document's `kind:` line.
    pub origin: Origin,
    /// Which loaded document this is; pass it to [`Fleet::span`].
    pub doc: DocId,
}

impl<S> Doc<S> {
    /// `metadata.name`.
    pub fn name(&self) -> &str {
        &self.metadata.name
    }
}

impl<S: Serialize> Doc<S> {
    /// The document as JSON again (`apiVersion`, `kind`, `metadata`, `spec`), defaults filled in.
    pub fn to_json(&self, kind: Kind) -> serde_json::Value {
        serde_json::json!({
            "apiVersion": API_VERSION,
            "kind": kind.as_str(),
            "metadata": self.metadata,
            "spec": self.spec,
        })
    }
}

/// The `Fleet` document.
pub type FleetDoc = Doc<FleetSpec>;
/// A `Rack` document.
pub type Rack = Doc<RackSpec>;
/// A `Host` document.
pub type Host = Doc<HostSpec>;
/// A `Tenant` document.
pub type Tenant = Doc<TenantSpec>;
/// A `NodePool` document.
pub type NodePool = Doc<NodePoolSpec>;
/// A `NIMService` document.
pub type NimService = Doc<NimServiceSpec>;

/// A validated fleet: every document typed, references resolved, defaults filled.
/// Each list is sorted by name.
#[derive(Debug, Clone)]
pub struct Fleet {
    /// The single `Fleet` document.
    pub fleet: FleetDoc,
    /// Racks / NVL72 domains.
    pub racks: Vec<Rack>,
    /// Hosts.
    pub hosts: Vec<Host>,
    /// Tenants.
    pub tenants: Vec<Tenant>,
    /// Node pools.
    pub pools: Vec<NodePool>,
    /// NIM services.
    pub nims: Vec<NimService>,
    /// Resolved members of each pool (explicit `hosts`, or what `selector` picked),
    /// by pool name, host names sorted. Spares are not members.
    pub pool_members: BTreeMap<String, Vec<String>>,
    /// Effective operator settings per tenant (Fleet `operators` with the tenant's
    /// overrides merged in), by tenant name.
    pub tenant_operators: BTreeMap<String, Operators>,
    /// The loader's span maps, indexed by [`DocId`].
    pub spans: Vec<Arc<SpanMap>>,
}

impl Fleet {
    /// Where a field of a document is written: `pointer` is a JSON pointer into the
    /// document (`/spec/bmc/endpoint`, `/metadata/name`, `` for the whole document).
    /// Points at the value; see [`Fleet::key_span`] for the key.
    pub fn span(&self, doc: DocId, pointer: &str) -> Option<Span> {
        self.spans.get(doc.0)?.span(pointer)
    }

    /// Where the key of a mapping entry is written (falls back to the value).
    pub fn key_span(&self, doc: DocId, pointer: &str) -> Option<Span> {
        self.spans.get(doc.0)?.key_span(pointer)
    }

    /// The nearest span for a pointer: the pointer itself, else its closest written parent
    /// (a defaulted field points at the object that omitted it).
    pub fn nearest_span(&self, doc: DocId, pointer: &str) -> Option<Span> {
        self.spans.get(doc.0)?.nearest(pointer)
    }

    /// A host by name.
    pub fn host(&self, name: &str) -> Option<&Host> {
        find(&self.hosts, name)
    }

    /// A rack by name.
    pub fn rack(&self, name: &str) -> Option<&Rack> {
        find(&self.racks, name)
    }

    /// A tenant by name.
    pub fn tenant(&self, name: &str) -> Option<&Tenant> {
        find(&self.tenants, name)
    }

    /// A pool by name.
    pub fn pool(&self, name: &str) -> Option<&NodePool> {
        find(&self.pools, name)
    }

    /// The resolved member hosts of a pool (empty if unknown).
    pub fn members(&self, pool: &str) -> &[String] {
        self.pool_members.get(pool).map_or(&[], |v| v.as_slice())
    }

    /// The effective operators of a tenant (fleet defaults + overrides).
    pub fn operators_for(&self, tenant: &str) -> &Operators {
        self.tenant_operators
            .get(tenant)
            .unwrap_or(&self.fleet.spec.operators)
    }

    /// Every document back as JSON, in kind then name order (for round-trip tests and `fleetform show`).
    pub fn to_documents(&self) -> Vec<serde_json::Value> {
        let mut out = vec![self.fleet.to_json(Kind::Fleet)];
        out.extend(self.racks.iter().map(|d| d.to_json(Kind::Rack)));
        out.extend(self.hosts.iter().map(|d| d.to_json(Kind::Host)));
        out.extend(self.tenants.iter().map(|d| d.to_json(Kind::Tenant)));
        out.extend(self.pools.iter().map(|d| d.to_json(Kind::NodePool)));
        out.extend(self.nims.iter().map(|d| d.to_json(Kind::NimService)));
        out
    }
}

fn find<'a, S>(list: &'a [Doc<S>], name: &str) -> Option<&'a Doc<S>> {
    list.binary_search_by(|d| d.metadata.name.as_str().cmp(name))
        .ok()
        .map(|i| &list[i])
}

fn is_false(b: &bool) -> bool {
    !*b
}
fn yes() -> bool {
    true
}

// ---------------------------------------------------------------- Fleet

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

/// `registries`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[derive(Default)]
pub struct Registries {
    /// NGC (`nvcr.io`); default `https://nvcr.io`.
    #[serde(default)]
    pub ngc: Registry,
    /// Apply image references pinned to the digest their tag resolved to at
    /// plan time (`repo:tag@sha256:...`), so a tag moving upstream changes a
    /// cluster only through a planned update.
    #[serde(default, skip_serializing_if = "is_false")]
    pub pin_digests: bool,
}

/// One registry endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Registry {
    /// `https://host[:port]`.
    pub endpoint: String,
    /// Skip TLS verification (test registries only).
    #[serde(default, skip_serializing_if = "is_false")]
    pub insecure: bool,
    /// PEM bundle to trust, a path relative to the fleet directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<String>,
    /// Registry user (NGC: `$oauthtoken`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Fleet-wide pull credential (e.g. the NGC API key for operator images).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<SecretRef>,
}

impl Default for Registry {
    fn default() -> Self {
        Self {
            endpoint: "https://nvcr.io".into(),
            insecure: false,
            ca_bundle: None,
            username: None,
            api_key: None,
        }
    }
}

/// Operator versions and their main knobs. In `Fleet` `gpuOperator` is required; a
/// `Tenant` may override any part (a JSON merge patch over the fleet's value).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Operators {
    /// NVIDIA GPU Operator (ClusterPolicy `cluster-policy`).
    pub gpu_operator: GpuOperator,
    /// NVIDIA Network Operator (NicClusterPolicy `nic-cluster-policy`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_operator: Option<NetworkOperator>,
    /// DOCA Platform Framework (DPU operator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dpf: Option<Dpf>,
    /// NIM Operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nim_operator: Option<NimOperator>,
    /// NVIDIA DRA driver for GPUs (needed by pools with `gpuSharing.dra`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dra_driver: Option<DraDriver>,
}

/// The NVIDIA DRA driver for GPUs (chart `dra-driver-nvidia-gpu`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DraDriver {
    /// Chart version, e.g. `0.4.0`.
    pub version: String,
    /// Where the chart comes from (default: `Fleet.spec.charts`, then upstream).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chart: Option<ChartSource>,
    /// Chart values merged over the ones fleetform derives from the fields above (an escape
    /// hatch: a value set here wins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<serde_json::Value>,
}

/// GPU Operator settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GpuOperator {
    /// Chart / operator version, e.g. `v26.7.0`.
    pub version: String,
    /// Where the chart comes from (default: `Fleet.spec.charts`, then upstream).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chart: Option<ChartSource>,
    /// Chart values merged over the ones fleetform derives from the fields above (an escape
    /// hatch: a value set here wins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<serde_json::Value>,
    /// The driver container.
    pub driver: Driver,
    /// `single` (default) or `mixed`.
    #[serde(default)]
    pub mig_strategy: MigStrategy,
    /// Container toolkit.
    #[serde(default)]
    pub toolkit: Component,
    /// Device plugin (must be off on nodes the DRA GPU plugin serves).
    #[serde(default)]
    pub device_plugin: Component,
    /// DCGM exporter.
    #[serde(default)]
    pub dcgm_exporter: Component,
    /// MIG manager.
    #[serde(default)]
    pub mig_manager: Component,
    /// Deploy Node Feature Discovery from this chart (default true). Exactly one NFD per cluster.
    #[serde(default = "yes")]
    pub nfd: bool,
}

/// One operand of an operator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Component {
    /// Deploy it (default true).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Image tag; the operator's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Image repository; the operator's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
}

impl Default for Component {
    fn default() -> Self {
        Self {
            enabled: true,
            version: None,
            repository: None,
        }
    }
}

/// The GPU driver.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Driver {
    /// Driver version (image tag), e.g. `595.91.07`. Required even when `enabled: false`:
    /// it is the version expected on the hosts.
    pub version: String,
    /// Run the driver container (false = host-installed driver).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Use precompiled (signed) kernel modules; needed with Secure Boot.
    #[serde(default, skip_serializing_if = "is_false")]
    pub use_precompiled: bool,
    /// `auto` (default), `open` or `proprietary`.
    #[serde(default)]
    pub kernel_module_type: KernelModuleType,
    /// GPUDirect RDMA (nvidia-peermem / DMA-BUF).
    #[serde(default, skip_serializing_if = "is_false")]
    pub rdma: bool,
    /// Driver image repository; the operator's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
}

/// `driver.kernelModuleType`.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum KernelModuleType {
    /// Let the operator choose.
    #[default]
    Auto,
    /// Open GPU kernel modules.
    Open,
    /// Proprietary modules.
    Proprietary,
}

/// ClusterPolicy `mig.strategy`.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum MigStrategy {
    /// All MIG devices of a node share one profile, exposed as `nvidia.com/gpu`.
    #[default]
    Single,
    /// Each profile is its own resource `nvidia.com/mig-<profile>`.
    Mixed,
}

/// Network Operator settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkOperator {
    /// Operator version, e.g. `v26.4.1`.
    pub version: String,
    /// Where the chart comes from (default: `Fleet.spec.charts`, then upstream).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chart: Option<ChartSource>,
    /// Chart values merged over the ones fleetform derives from the fields above (an escape
    /// hatch: a value set here wins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<serde_json::Value>,
    /// NicClusterPolicy name; the operator only reconciles `nic-cluster-policy`.
    #[serde(default = "nic_cluster_policy")]
    pub policy_name: String,
    /// DOCA-OFED driver container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ofed_driver: Option<OfedDriver>,
    /// RDMA shared device plugin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rdma_shared_device_plugin: Option<RdmaSharedDevicePlugin>,
    /// SR-IOV.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sriov: Option<Sriov>,
    /// Deploy NFD from this chart (default false: the GPU Operator's NFD serves both).
    #[serde(default, skip_serializing_if = "is_false")]
    pub nfd: bool,
}

fn nic_cluster_policy() -> String {
    "nic-cluster-policy".into()
}

/// `ofedDriver`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OfedDriver {
    /// DOCA-OFED tag, e.g. `doca3.4.1-26.04-1.1.0.0-1`.
    pub version: String,
    /// Only use NVIDIA's precompiled DOCA-OFED containers (no build on the node). They are
    /// unsigned, so this is no way to Secure Boot (rule `secure-boot-driver`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub force_precompiled: bool,
}

/// `rdmaSharedDevicePlugin`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RdmaSharedDevicePlugin {
    /// Deploy it (default true).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Resource name, exposed as `rdma/<name>`.
    #[serde(default = "rdma_resource")]
    pub resource_name: String,
    /// Max pods per HCA.
    #[serde(default = "rdma_hca_max")]
    pub rdma_hca_max: u32,
}

fn rdma_resource() -> String {
    "rdma_shared_device_a".into()
}
fn rdma_hca_max() -> u32 {
    63
}

/// `sriov`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Sriov {
    /// Deploy SR-IOV (default true).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Virtual functions per physical port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_vfs: Option<u32>,
}

/// DOCA Platform Framework.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Dpf {
    /// DPF version.
    pub version: String,
    /// BlueField bootstream (DPU OS image) URL: the `BFB` every DPUSet flashes.
    pub bfb: String,
}

/// NIM Operator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NimOperator {
    /// Operator version, e.g. `v3.1.2`.
    pub version: String,
    /// Where the chart comes from (default: `Fleet.spec.charts`, then upstream).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chart: Option<ChartSource>,
    /// Chart values merged over the ones fleetform derives from the fields above (an escape
    /// hatch: a value set here wins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<serde_json::Value>,
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

fn one() -> u32 {
    1
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

// ---------------------------------------------------------------- Rack

/// `Rack.spec`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RackSpec {
    /// `rack` (default) or `nvl72` (one NVLink domain: a fault takes the whole rack).
    #[serde(default)]
    pub fault_domain: FaultDomainKind,
    /// Where it stands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
}

/// The kind of fault domain a rack is.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum FaultDomainKind {
    /// An ordinary rack.
    #[default]
    Rack,
    /// A GB200/GB300 NVL72 NVLink domain.
    Nvl72,
}

/// A physical location. Each field becomes a Node label value (compile/labels.rs), so each
/// must be a Kubernetes label value; the schema's `pattern` says the same.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Location {
    /// Site / data centre.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "label_value"
    )]
    pub site: Option<String>,
    /// Room or hall.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "label_value"
    )]
    pub room: Option<String>,
    /// Row.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "label_value"
    )]
    pub row: Option<String>,
    /// Position in the row.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "label_value"
    )]
    pub position: Option<String>,
}

/// Whether `v` is a Kubernetes label value: at most 63 characters of `[A-Za-z0-9-_.]`,
/// starting and ending with an alphanumeric (or empty).
pub fn is_label_value(v: &str) -> bool {
    let b = v.as_bytes();
    let ok = |c: &u8| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.');
    v.len() <= 63
        && b.iter().all(ok)
        && b.first().is_none_or(u8::is_ascii_alphanumeric)
        && b.last().is_none_or(u8::is_ascii_alphanumeric)
}

fn label_value<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let v = String::deserialize(d)?;
    if is_label_value(&v) {
        Ok(Some(v))
    } else {
        Err(serde::de::Error::custom(format!(
            "`{v}` is not a Kubernetes label value (at most 63 of A-Z a-z 0-9 - _ ., alphanumeric at both ends)"
        )))
    }
}

// ---------------------------------------------------------------- Host

/// `Host.spec`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HostSpec {
    /// The rack it sits in.
    pub rack: String,
    /// Who manages its hardware (default: fleetform, through `bmc`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed_by: Option<ManagedBy>,
    /// Its BMC; none for a host NICo manages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bmc: Option<Bmc>,
    /// The NICo machine and instance of a host with `managedBy: nico`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nico: Option<HostNico>,
    /// Its GPUs.
    pub gpu: Gpu,
    /// Network rails.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nics: Vec<Nic>,
    /// DPUs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dpus: Vec<DpuDevice>,
    /// Firmware by Redfish inventory component, e.g. `BIOS: "1.4.2"` (checked), or
    /// `BIOS: {version: "1.4.2", image: <URI>}` (installed when it differs).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub firmware: BTreeMap<String, FirmwareWant>,
    /// BIOS settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bios: Option<Bios>,
    /// UEFI Secure Boot; unmanaged when absent (a BMC without SecureBoot then plans nothing
    /// for it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secure_boot: Option<bool>,
    /// Desired power state (default `On`).
    #[serde(default)]
    pub power: PowerState,
    /// Boot override.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot: Option<Boot>,
    /// A spare: in no pool's capacity until break/fix swaps it in.
    #[serde(default, skip_serializing_if = "is_false")]
    pub spare: bool,
}

/// A BMC.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Bmc {
    /// Redfish service URL, `https://10.0.0.5` or `http://127.0.0.1:8000`.
    pub endpoint: String,
    /// Login.
    pub credentials: BmcCredentials,
    /// Skip TLS verification.
    #[serde(default, skip_serializing_if = "is_false")]
    pub insecure: bool,
    /// PEM bundle to trust, relative to the fleet directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<String>,
    /// The Redfish `Systems/{id}` member; the only one when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_id: Option<String>,
}

/// BMC login.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BmcCredentials {
    /// User name (not a secret).
    pub username: String,
    /// Password, by reference only.
    pub password: SecretRef,
}

/// GPUs of a host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Gpu {
    /// Model.
    pub model: GpuModel,
    /// How many (e.g. 8 on HGX, 4 on a GB200 tray); at most
    /// [`crate::catalog::MAX_GPUS_PER_HOST`], as the schema says.
    #[serde(deserialize_with = "gpu_count")]
    pub count: u32,
    /// Check model and count against the GPU inventory the BMC reports (default true). Off
    /// only for hosts whose BMC cannot see their GPUs (an emulator).
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub verify: bool,
}

fn is_true(b: &bool) -> bool {
    *b
}

fn gpu_count<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let n = u32::deserialize(d)?;
    let max = crate::catalog::MAX_GPUS_PER_HOST;
    if n > max {
        return Err(serde::de::Error::custom(format!(
            "{n} GPUs is more than any host holds (at most {max})"
        )));
    }
    Ok(n)
}

/// GPU models the validator knows (MIG profiles and driver minimums in `catalog`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum GpuModel {
    /// A100 40GB.
    #[serde(rename = "A100-40GB")]
    A100_40GB,
    /// A100 80GB.
    #[serde(rename = "A100-80GB")]
    A100_80GB,
    /// A30 24GB.
    A30,
    /// H100 SXM 80GB.
    H100,
    /// H100 NVL 94GB.
    #[serde(rename = "H100-NVL")]
    H100Nvl,
    /// H200 141GB (SXM or NVL).
    H200,
    /// B200 180GB.
    B200,
    /// GB200 186GB (NVL72 trays).
    GB200,
    /// B300.
    B300,
    /// GB300.
    GB300,
    /// RTX PRO 6000 Blackwell 96GB.
    #[serde(rename = "RTX-PRO-6000")]
    RtxPro6000,
    /// L40S (no MIG).
    L40S,
    /// GH200 Grace Hopper superchip (96GB HBM3).
    GH200,
    /// L40 (no MIG).
    L40,
    /// A40 (no MIG).
    A40,
}

impl GpuModel {
    /// Every model, in declaration order.
    pub const ALL: [GpuModel; 15] = [
        GpuModel::A100_40GB,
        GpuModel::A100_80GB,
        GpuModel::A30,
        GpuModel::H100,
        GpuModel::H100Nvl,
        GpuModel::H200,
        GpuModel::B200,
        GpuModel::GB200,
        GpuModel::B300,
        GpuModel::GB300,
        GpuModel::RtxPro6000,
        GpuModel::L40S,
        GpuModel::GH200,
        GpuModel::L40,
        GpuModel::A40,
    ];

    /// The manifest spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            GpuModel::A100_40GB => "A100-40GB",
            GpuModel::A100_80GB => "A100-80GB",
            GpuModel::A30 => "A30",
            GpuModel::H100 => "H100",
            GpuModel::H100Nvl => "H100-NVL",
            GpuModel::H200 => "H200",
            GpuModel::B200 => "B200",
            GpuModel::GB200 => "GB200",
            GpuModel::B300 => "B300",
            GpuModel::GB300 => "GB300",
            GpuModel::RtxPro6000 => "RTX-PRO-6000",
            GpuModel::L40S => "L40S",
            GpuModel::GH200 => "GH200",
            GpuModel::L40 => "L40",
            GpuModel::A40 => "A40",
        }
    }
}

impl std::fmt::Display for GpuModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A NIC port / rail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Nic {
    /// Interface or rail name, e.g. `rail0`.
    pub name: String,
    /// `roce`, `infiniband` or `ethernet`.
    #[serde(rename = "type")]
    pub kind: NicType,
    /// Link speed, e.g. `400G`.
    pub speed: String,
    /// Rail index for rail-aligned topologies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rail: Option<u32>,
}

/// NIC type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NicType {
    /// RDMA over Converged Ethernet.
    Roce,
    /// InfiniBand.
    Infiniband,
    /// Plain Ethernet.
    Ethernet,
}

/// A DPU.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DpuDevice {
    /// Model, e.g. `BlueField-3` (names the DPUFlavor its DPUSet uses).
    pub model: String,
    /// `dpu` (default: provisioned by DPF) or `nic` mode (left alone).
    #[serde(default)]
    pub mode: DpuMode,
}

/// DPU operating mode.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum DpuMode {
    /// DPU mode (Arm cores own the datapath).
    #[default]
    Dpu,
    /// NIC mode.
    Nic,
}

/// BIOS settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Bios {
    /// Vendor attribute names → values (strings, numbers or booleans).
    pub attributes: BTreeMap<String, serde_json::Value>,
}

/// Desired power state.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub enum PowerState {
    /// Powered on.
    #[default]
    On,
    /// Powered off.
    Off,
}

/// Boot override.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Boot {
    /// Redfish `BootSourceOverrideTarget`, e.g. `Pxe`, `Hdd`, `Cd`, `UefiHttp`.
    pub target: BootTarget,
    /// `UEFI` (default) or `Legacy`.
    #[serde(default)]
    pub mode: BootMode,
}

/// `BootSourceOverrideTarget` values fleetform sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum BootTarget {
    /// Boot normally.
    None,
    /// Network (PXE).
    Pxe,
    /// Local disk.
    Hdd,
    /// Virtual CD.
    Cd,
    /// USB.
    Usb,
    /// UEFI HTTP boot.
    UefiHttp,
    /// BIOS setup.
    BiosSetup,
}

/// Boot mode.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub enum BootMode {
    /// UEFI.
    #[default]
    #[serde(rename = "UEFI")]
    Uefi,
    /// Legacy BIOS.
    Legacy,
}

// ---------------------------------------------------------------- Tenant

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

// ---------------------------------------------------------------- NodePool

/// `NodePool.spec`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodePoolSpec {
    /// Owning tenant.
    pub tenant: String,
    /// Explicit members (or use `selector`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Pick members by rack / GPU model (or use `hosts`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<HostSelector>,
    /// MIG, MPS, time-slicing or DRA; whole GPUs when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_sharing: Option<GpuSharing>,
    /// Node labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Node taints.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub taints: Vec<Taint>,
    /// Autoscaling bounds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<Autoscaling>,
    /// Disruption budget (fleet `rollout` when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<PoolRollout>,
    /// Topology.
    #[serde(default)]
    pub topology: Topology,
    /// Hosts reserved as this pool's spares (must be `spare: true`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub spares: Vec<String>,
}

/// `selector`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HostSelector {
    /// Only hosts of this rack.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rack: Option<String>,
    /// Only hosts with this GPU model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_model: Option<GpuModel>,
    /// How many (picked in name order among non-spare hosts no other pool claims).
    pub count: u32,
}

/// GPU sharing of a pool: exactly one of the forms.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum GpuSharing {
    /// Multi-Instance GPU.
    Mig(MigSharing),
    /// CUDA MPS through the device plugin.
    Mps(Replicas),
    /// Time-slicing through the device plugin.
    TimeSlicing(Replicas),
    /// Dynamic Resource Allocation (needs Kubernetes >= 1.34).
    Dra(DraSharing),
}

/// `mig`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MigSharing {
    /// The layout.
    pub config: MigConfig,
}

/// A MIG layout: a named mig-parted config (`all-1g.10gb`, `all-balanced`,
/// `all-disabled`), the same layout on every GPU (`{all: {1g.10gb: 7}}`) or one
/// per GPU index (`{perGpu: [{3g.40gb: 2}, ...]}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MigConfig {
    /// A named config.
    Named(String),
    /// An explicit layout.
    Layout(MigLayout),
}

/// An explicit MIG layout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum MigLayout {
    /// The same profile counts on every GPU.
    All(BTreeMap<String, u32>),
    /// Profile counts per GPU index; GPUs past the list are MIG-disabled.
    PerGpu(Vec<BTreeMap<String, u32>>),
}

/// `replicas` for MPS / time-slicing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Replicas {
    /// Shares per GPU (>= 2).
    pub replicas: u32,
}

/// `dra`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DraSharing {
    /// DeviceClasses offered, e.g. `gpu.nvidia.com`, `mig.nvidia.com`.
    pub device_classes: Vec<String>,
    /// ComputeDomains (multi-node NVLink; NVL72 racks only).
    #[serde(default, skip_serializing_if = "is_false")]
    pub compute_domains: bool,
}

/// A node taint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Taint {
    /// Key.
    pub key: String,
    /// Value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Effect.
    pub effect: TaintEffect,
}

/// Taint effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum TaintEffect {
    /// NoSchedule.
    NoSchedule,
    /// PreferNoSchedule.
    PreferNoSchedule,
    /// NoExecute.
    NoExecute,
}

/// `autoscaling`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Autoscaling {
    /// Fewest nodes.
    pub min: u32,
    /// Most nodes.
    pub max: u32,
    /// Scale with Karpenter (Cluster API provider on bare metal).
    #[serde(default, skip_serializing_if = "is_false")]
    pub karpenter: bool,
}

/// One firmware component of a host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum FirmwareWant {
    /// The version expected: a host that runs another is reported (drift, plan), and apply
    /// cannot fix it.
    Version(String),
    /// The version and the image `UpdateService.SimpleUpdate` installs it from.
    Image(FirmwareImage),
}

impl FirmwareWant {
    /// The version wanted.
    pub fn version(&self) -> &str {
        match self {
            FirmwareWant::Version(v) => v,
            FirmwareWant::Image(i) => &i.version,
        }
    }
}

/// A firmware version with the image that installs it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FirmwareImage {
    /// The version the image installs (what the BMC reports once it runs).
    pub version: String,
    /// `ImageURI`: where the BMC fetches it (http, https, nfs, ...).
    pub image: String,
    /// `TransferProtocol`, where the URI alone does not say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer_protocol: Option<String>,
    /// `Targets`: Redfish URIs, or `system` / `manager`; by default the component's own
    /// FirmwareInventory member.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<String>,
}

/// A pool's disruption budget.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PoolRollout {
    /// Hosts of the pool disrupted at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<u32>,
    /// Hosts of one fault domain disrupted at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable_per_fault_domain: Option<u32>,
}

/// `topology`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Topology {
    /// Every member has the same NIC rails (for rail-aligned gang scheduling).
    #[serde(default, skip_serializing_if = "is_false")]
    pub rail_aligned: bool,
}

// ---------------------------------------------------------------- NIMService

/// `NIMService.spec`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NimServiceSpec {
    /// Owning tenant.
    pub tenant: String,
    /// Pool it runs on (the tenant's).
    pub pool: String,
    /// NIM image, e.g. `nvcr.io/nim/meta/llama-3.1-8b-instruct:1.8`.
    pub image: String,
    /// Model name, when the image serves several.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Replicas (default 1).
    #[serde(default = "one")]
    pub replicas: u32,
    /// Whole GPUs per replica (default 1); ignored when `migProfile` is set.
    #[serde(default = "one")]
    pub gpus_per_replica: u32,
    /// One MIG device of this profile per replica (MIG pools only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mig_profile: Option<String>,
    /// Namespace in the tenant cluster (default `nim`).
    #[serde(default = "nim_namespace")]
    pub namespace: String,
    /// Model cache (NIMCache PVC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<NimCache>,
}

fn nim_namespace() -> String {
    "nim".into()
}

/// NIMCache storage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NimCache {
    /// PVC size, e.g. `200Gi`.
    pub size: String,
    /// StorageClass; the cluster default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::is_label_value;

    #[test]
    fn label_values_follow_kubernetes_syntax() {
        for ok in ["", "A", "hall-1", "row_2.b", "01", &"x".repeat(63)] {
            assert!(is_label_value(ok), "{ok:?}");
        }
        for bad in ["Hall 1", "-a", "a-", ".a", "a/b", &"x".repeat(64)] {
            assert!(!is_label_value(bad), "{bad:?}");
        }
    }
}
