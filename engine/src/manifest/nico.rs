//! NICo-managed sites in the manifest: `Fleet.spec.nico` (the site, its instance types,
//! allocations and VPCs) and `Host.spec.managedBy: nico` with `Host.spec.nico` (the machine
//! and what runs on it) instead of a BMC.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::secret::SecretRef;

/// Who manages a host's hardware.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ManagedBy {
    /// fleetform, through the host's BMC (Redfish). The default.
    Fleetform,
    /// NVIDIA Infra Controller: fleetform declares the host through NICo's REST API and
    /// never talks to its BMC.
    Nico,
}

/// `Fleet.spec.nico`: the NICo site and the objects fleetform declares in it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NicoSite {
    /// The REST API's base URL, `https://nico-rest-api.nico.svc.cluster.local`.
    pub endpoint: String,
    /// The org in `/v2/org/{org}/nico`.
    pub org: String,
    /// The site's name in fleetform (the address segment `nico:<site>/...`).
    pub site: String,
    /// The site's NICo id (uuid).
    pub site_id: String,
    /// The tenant's NICo id (uuid) that allocations and instances belong to.
    pub tenant_id: String,
    /// The JWT bearer token, by reference only.
    pub token: SecretRef,
    /// Instance types (PROVIDER_ADMIN).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub instance_types: Vec<NicoInstanceType>,
    /// Allocations of instance types to the tenant (PROVIDER_ADMIN).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allocations: Vec<NicoAllocation>,
    /// VPCs and their subnets (TENANT_ADMIN).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vpcs: Vec<NicoVpc>,
}

/// An instance type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NicoInstanceType {
    /// Its name (unique in the site).
    pub name: String,
    /// Description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Labels (at most 9: fleetform's ownership label takes the tenth).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Machine capabilities, as the spec's `InstanceTypeCapabilityCreateRequest`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub machine_capabilities: Vec<Value>,
}

/// An allocation: `count` machines of an instance type reserved for the tenant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NicoAllocation {
    /// Its name.
    pub name: String,
    /// The instance type it reserves.
    pub instance_type: String,
    /// How many machines.
    pub count: u32,
}

/// A VPC and its subnets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NicoVpc {
    /// Its name.
    pub name: String,
    /// Labels (at most 9).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Subnets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subnets: Vec<NicoSubnet>,
}

/// A subnet of a VPC.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NicoSubnet {
    /// Its name.
    pub name: String,
    /// Prefix length.
    pub prefix_length: u8,
    /// The IPv4 block (uuid) it is carved from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4_block_id: Option<String>,
}

/// `Host.spec.nico`: the machine and the instance fleetform runs on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HostNico {
    /// NICo's machine id.
    pub machine_id: String,
    /// The instance type (a name under `Fleet.spec.nico.instanceTypes`).
    pub instance_type: String,
    /// The VPC (a name under `Fleet.spec.nico.vpcs`).
    pub vpc: String,
    /// The subnet of that VPC its interface is on.
    pub subnet: String,
    /// An operating system already in NICo, by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operating_system: Option<String>,
    /// Labels of the instance (at most 9).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}
