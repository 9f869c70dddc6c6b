//! `NodePool.spec`: a tenant's GPU capacity, its members, sharing, taints, autoscaling,
//! firmware and rollout.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{GpuModel, is_false};

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
