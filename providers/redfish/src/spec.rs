//! The desired-spec shapes of the redfish provider's resources (documented in
//! docs/providers/redfish.md).

use std::collections::BTreeMap;
use std::path::PathBuf;

use fleetform_contract::secret::SecretRef;
use serde::{Deserialize, Serialize};

/// How to reach and authenticate to one BMC. Present in every spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BmcSpec {
    /// Base URL of the BMC, e.g. `https://10.0.0.5` (the service root is `<endpoint>/redfish/v1`).
    pub endpoint: String,
    /// The ComputerSystem to manage: its Id, Name or UUID. Optional when the BMC has one system.
    #[serde(default)]
    pub system: Option<String>,
    /// Who to log in as.
    pub credentials: Credentials,
    /// PEM bundle of CAs to trust for this BMC (instead of the system roots).
    #[serde(default)]
    pub ca_bundle: Option<PathBuf>,
    /// Skip TLS verification (logged loudly every time a client is built).
    #[serde(default)]
    pub insecure: bool,
}

/// BMC credentials: a user name and a reference to the password.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Credentials {
    /// The BMC account.
    pub username: String,
    /// Where the password is (`{env: ..}`, `{file: ..}`, `{secret: ..}`).
    pub password: SecretRef,
}

/// `redfish:host/<host>/power`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PowerSpec {
    pub bmc: BmcSpec,
    /// `On` or `Off`.
    pub state: PowerState,
    /// Settings of the host's other aspects that take effect at a reset: when any of them
    /// is not current yet, this resource plans the host's one reset (see docs: "Reboots").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apply_at_reset: Option<ResetSettings>,
}

/// What a reset of the host is expected to make current (copied from the host's
/// `bios` and `secure-boot` specs by the compiler).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResetSettings {
    /// BIOS attributes that must read these values after the reset.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub bios: BTreeMap<String, serde_json::Value>,
    /// `SecureBootEnable` (and `SecureBootCurrentBoot`, when the BMC reports it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secure_boot: Option<bool>,
    /// Host firmware components (as the firmware resource names them) that must read these
    /// versions after the reset: an installed image activates when the host restarts. The
    /// BMC's own firmware is not here (it activates with the BMC's reset, not the host's).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub firmware: BTreeMap<String, String>,
}

/// Desired power state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PowerState {
    On,
    Off,
}

/// `redfish:host/<host>/boot`: the boot source override.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BootSpec {
    pub bmc: BmcSpec,
    /// `BootSourceOverrideTarget`: `Pxe`, `Cd`, `Hdd`, `UefiHttp`, `BiosSetup`, `None`, ...
    pub target: String,
    /// `BootSourceOverrideEnabled`: `Once`, `Continuous` or `Disabled`.
    pub enabled: String,
    /// `BootSourceOverrideMode`: `UEFI` or `Legacy`; unmanaged when absent.
    #[serde(default)]
    pub mode: Option<String>,
}

/// `redfish:host/<host>/bios`: a subset of BIOS attributes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BiosSpec {
    pub bmc: BmcSpec,
    /// Only the attributes named here are managed.
    pub attributes: BTreeMap<String, serde_json::Value>,
}

/// `redfish:host/<host>/secure-boot`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecureBootSpec {
    pub bmc: BmcSpec,
    /// `SecureBootEnable`.
    pub enabled: bool,
}

/// `redfish:host/<host>/virtual-media`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VirtualMediaSpec {
    pub bmc: BmcSpec,
    /// Image URL to insert (`null` when ejected).
    #[serde(default)]
    pub image: Option<String>,
    /// Whether media is inserted.
    pub inserted: bool,
    /// VirtualMedia member Id (e.g. `Cd`, `USB1`); default: the first that takes CD/DVD.
    #[serde(default)]
    pub device: Option<String>,
}

/// `redfish:host/<host>/firmware`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FirmwareSpec {
    pub bmc: BmcSpec,
    /// Component -> version. `BIOS` is the System's `BiosVersion`, `BMC` the Manager's
    /// `FirmwareVersion`; any other name is a FirmwareInventory member (Id or Name).
    pub expected: BTreeMap<String, String>,
    /// How to get there for every component: `UpdateService.SimpleUpdate` with this image.
    #[serde(default)]
    pub update: Option<FirmwareUpdate>,
    /// How to get there per component (wins over `update`): the image that installs its
    /// expected version. A differing component with neither cannot be fixed by apply.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub updates: BTreeMap<String, FirmwareUpdate>,
}

/// A SimpleUpdate request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FirmwareUpdate {
    /// `ImageURI`.
    pub image: String,
    /// `TransferProtocol` (`HTTP`, `HTTPS`, `NFS`, ...), where the URI alone does not say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer_protocol: Option<String>,
    /// `Targets` (Redfish URIs or the words `system` / `manager`, resolved to this host's).
    #[serde(default)]
    pub targets: Vec<String>,
}

/// `redfish:host/<host>/inventory` (read-only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InventorySpec {
    pub bmc: BmcSpec,
    pub expect: InventoryExpect,
}

/// What the host should contain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InventoryExpect {
    /// Substring of every GPU's `Model` (case-insensitive), e.g. `H100`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_model: Option<String>,
    /// Number of `ProcessorType: GPU` processors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_count: Option<u64>,
}

/// Which aspect of a host an address names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Aspect {
    Power,
    Boot,
    Bios,
    SecureBoot,
    VirtualMedia,
    Firmware,
    Inventory,
}

impl Aspect {
    /// Parses the last segment of `host/<host>/<aspect>`.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "power" => Self::Power,
            "boot" => Self::Boot,
            "bios" => Self::Bios,
            "secure-boot" => Self::SecureBoot,
            "virtual-media" => Self::VirtualMedia,
            "firmware" => Self::Firmware,
            "inventory" => Self::Inventory,
            _ => return None,
        })
    }
}

/// Only the `bmc` part, for code that does not care about the aspect.
#[derive(Debug, Clone, Deserialize)]
pub struct AnyBmc {
    pub bmc: BmcSpec,
}
