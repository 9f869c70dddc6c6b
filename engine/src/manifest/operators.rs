//! `Fleet.spec.operators` (and a tenant's overrides of them): the GPU, Network, DPF and NIM
//! operators and the DRA driver, with their versions and settings.

use serde::{Deserialize, Serialize};

use super::{ChartSource, is_false, yes};

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
