//! `Host.spec`: one machine, its BMC, GPUs, NICs, DPUs, BIOS, power and boot.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{FirmwareWant, HostNico, ManagedBy, is_false, yes};
use crate::secret::SecretRef;

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
