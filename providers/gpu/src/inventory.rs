//! The GPU inventory of one node: what NVML reported, as plain, versioned data.
//!
//! Every field NVML may refuse is an `Option` (or an empty list): `None` means
//! "not supported on this GPU or driver", never "zero". Errors other than
//! `NotSupported` are recorded per GPU in `errors` so that one bad query never
//! loses the whole inventory.

use serde::{Deserialize, Serialize};

/// `apiVersion` of the inventory document.
pub const API_VERSION: &str = "fleetform.dev/v1alpha1";
/// `kind` of the inventory document.
pub const KIND: &str = "GpuInventory";

/// Where a node's inventory lives in the cluster: a ConfigMap named after the
/// node in this namespace (see docs/providers/gpu.md for why not an annotation).
pub const CONFIGMAP_NAMESPACE: &str = "gpu-inventory";
/// The ConfigMap data key that holds the JSON document.
pub const CONFIGMAP_KEY: &str = "inventory.json";
/// Largest inventory document accepted (bytes). A ConfigMap holds at most
/// 1 MiB in total; an 8-GPU node with MIG and NVLink is about 10–30 KiB, so
/// anything near this limit is a broken reporter, not a big node.
pub const MAX_REPORT_BYTES: usize = 512 * 1024;

/// The GPU inventory of one node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Inventory {
    /// Always [`API_VERSION`].
    pub api_version: String,
    /// Always [`KIND`].
    pub kind: String,
    /// Kubernetes node name (or hostname when collected outside a cluster).
    pub node: String,
    /// When it was collected, RFC 3339 UTC (`2026-11-26T23:00:00Z`).
    pub collected_at: String,
    /// Kernel driver version, e.g. `595.91.07`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver_version: Option<String>,
    /// Highest CUDA version the driver supports, e.g. `13.1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cuda_driver_version: Option<String>,
    /// NVML library version, e.g. `13.595.91.07`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nvml_version: Option<String>,
    /// One entry per GPU NVML enumerates, by index.
    #[serde(default)]
    pub gpus: Vec<Gpu>,
    /// Node-level problems met while collecting (e.g. the event set could not be created).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

/// One physical GPU.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Gpu {
    /// NVML index (0-based, PCI order).
    pub index: u32,
    /// Product name, e.g. `NVIDIA H100 80GB HBM3`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `GPU-…` UUID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    /// PCI bus id, e.g. `00000000:18:00.0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pci_bus_id: Option<String>,
    /// PCI device+vendor id as mig-parted writes it in `device-filter`, e.g. `0x233010DE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pci_device_id: Option<String>,
    /// Total framebuffer memory, bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_total_bytes: Option<u64>,
    /// Used framebuffer memory, bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_used_bytes: Option<u64>,
    /// MIG mode and devices; `None` when the GPU does not support MIG.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mig: Option<MigState>,
    /// ECC mode and counters; `None` when ECC is not supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ecc: Option<Ecc>,
    /// Page retirement (pre-Ampere mechanism; absent on most A100+).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retired_pages: Option<RetiredPages>,
    /// Row remapping (Ampere and later).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remapped_rows: Option<RemappedRows>,
    /// Per-link NVLink state; `None` when the GPU has no NVLink (or NVML does not say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nvlinks: Option<Vec<NvLink>>,
    /// Power draw, milliwatts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power_draw_mw: Option<u32>,
    /// Enforced power limit, milliwatts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power_limit_mw: Option<u32>,
    /// GPU die temperature, °C.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature_c: Option<u32>,
    /// Temperature at which the GPU slows its clocks, °C.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature_slowdown_c: Option<u32>,
    /// Temperature at which the GPU shuts down, °C.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature_shutdown_c: Option<u32>,
    /// Active clock-throttle reasons, NVML's names in kebab case (e.g. `hw-thermal-slowdown`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throttle_reasons: Option<Vec<String>>,
    /// Critical XID events seen (during the collection window, or recorded by a node agent).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub xid_events: Vec<XidEvent>,
    /// Queries that failed for a reason other than "not supported", e.g. `memory: GpuLost`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

/// MIG state of one GPU.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MigState {
    /// MIG mode now.
    pub current_enabled: bool,
    /// MIG mode after the next GPU reset / reboot.
    pub pending_enabled: bool,
    /// MIG devices (GPU instances) present now.
    #[serde(default)]
    pub devices: Vec<MigDevice>,
}

/// One MIG device.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MigDevice {
    /// NVML MIG device index on its parent.
    pub index: u32,
    /// Profile, e.g. `1g.10gb` (parsed from the MIG device name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// `MIG-…` UUID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    /// Placement (memory-slice start and size) when the reporter knows it.
    /// nvml-wrapper 0.13 does not wrap `nvmlDeviceGetGpuInstanceId`/placement
    /// queries, so `collect()` leaves it absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<MigPlacement>,
    /// Memory of the MIG device, bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_total_bytes: Option<u64>,
}

/// Where a GPU instance sits in the memory slices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigPlacement {
    /// First memory slice.
    pub start: u32,
    /// Number of memory slices.
    pub size: u32,
}

/// ECC state of one GPU.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ecc {
    /// ECC enabled now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_enabled: Option<bool>,
    /// ECC enabled after the next reboot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_enabled: Option<bool>,
    /// Counts since the last driver load.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volatile: Option<EccCounts>,
    /// Counts over the GPU's lifetime (infoROM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregate: Option<EccCounts>,
}

/// ECC error counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EccCounts {
    /// Corrected (single-bit) errors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corrected: Option<u64>,
    /// Uncorrected (double-bit) errors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uncorrected: Option<u64>,
}

/// Retired pages (dynamic page retirement).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RetiredPages {
    /// Pages waiting to be retired at the next reboot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<bool>,
    /// Pages retired for multiple single-bit errors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub single_bit: Option<u64>,
    /// Pages retired for a double-bit error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub double_bit: Option<u64>,
}

/// Row remapping state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RemappedRows {
    /// Rows remapped for correctable errors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correctable: Option<u64>,
    /// Rows remapped for uncorrectable errors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uncorrectable: Option<u64>,
    /// A remap waits for the next GPU reset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<bool>,
    /// A remap failed (no spare rows left).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<bool>,
}

/// One NVLink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NvLink {
    /// Link number.
    pub link: u32,
    /// Link is up.
    pub active: bool,
}

/// A critical XID event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct XidEvent {
    /// The XID number, e.g. 79.
    pub xid: u64,
    /// When it was seen, RFC 3339, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
}

/// Why an inventory document was refused.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    /// Not JSON, or not the inventory's shape.
    #[error("not a GPU inventory document")]
    Parse(#[source] serde_json::Error),
    /// Another document kind or version.
    #[error("unsupported inventory document {api_version}/{kind}: expected {API_VERSION}/{KIND}")]
    Version {
        /// What the document said.
        api_version: String,
        /// What the document said.
        kind: String,
    },
    /// Larger than [`MAX_REPORT_BYTES`].
    #[error("inventory document is {0} bytes, over the {MAX_REPORT_BYTES}-byte limit")]
    TooLarge(usize),
}

impl Inventory {
    /// An empty inventory for `node`, stamped now.
    pub fn new(node: impl Into<String>) -> Self {
        Self {
            api_version: API_VERSION.to_string(),
            kind: KIND.to_string(),
            node: node.into(),
            collected_at: crate::time::now_rfc3339(),
            driver_version: None,
            cuda_driver_version: None,
            nvml_version: None,
            gpus: Vec::new(),
            errors: Vec::new(),
        }
    }

    /// Parses a report (the ConfigMap's `inventory.json`, or a fixture file),
    /// checking size, `apiVersion` and `kind`.
    pub fn from_json(text: &str) -> Result<Self, InventoryError> {
        if text.len() > MAX_REPORT_BYTES {
            return Err(InventoryError::TooLarge(text.len()));
        }
        let inv: Inventory = serde_json::from_str(text).map_err(InventoryError::Parse)?;
        if inv.api_version != API_VERSION || inv.kind != KIND {
            return Err(InventoryError::Version {
                api_version: inv.api_version,
                kind: inv.kind,
            });
        }
        Ok(inv)
    }

    /// The report as pretty JSON.
    pub fn to_json(&self) -> String {
        // Serialising plain data with string keys cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

/// `NVIDIA H100 80GB HBM3 MIG 1g.10gb` → `1g.10gb`.
pub(crate) fn profile_from_mig_name(name: &str) -> Option<String> {
    let (_, tail) = name.rsplit_once("MIG ")?;
    let p = tail.trim();
    if p.contains('g') && p.contains('.') {
        Some(p.to_string())
    } else {
        None
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn mig_profile_is_parsed_from_the_mig_device_name() {
        assert_eq!(
            profile_from_mig_name("NVIDIA H100 80GB HBM3 MIG 1g.10gb").as_deref(),
            Some("1g.10gb")
        );
        assert_eq!(
            profile_from_mig_name("NVIDIA A100-SXM4-40GB MIG 1g.5gb+me").as_deref(),
            Some("1g.5gb+me")
        );
        assert_eq!(profile_from_mig_name("NVIDIA H100 80GB HBM3"), None);
    }
}
