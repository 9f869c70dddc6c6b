//! The desired spec of one NICo object, as compile emits it, and its address.

use std::collections::BTreeMap;

use fleetform_contract::secret::SecretRef;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The provider name and address prefix.
pub const PROVIDER: &str = fleetform_contract::address::NICO;

/// The address of a NICo object (the contract's, which compile uses too).
pub use fleetform_contract::address::nico_id;

/// Another NICo object named by kind and name; resolved to its `id` when applying.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectRef {
    /// Its kind (`instance-type`, `vpc`, `subnet`, ...).
    pub kind: String,
    /// Its name.
    pub name: String,
}

/// One NICo object fleetform wants.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NicoSpec {
    /// The REST API's base URL (`https://nico-rest-api.nico.svc.cluster.local`).
    pub endpoint: String,
    /// The org in `/v2/org/{org}/nico`.
    pub org: String,
    /// The site's name in fleetform (the address segment; the rate limit is per site).
    pub site: String,
    /// The JWT bearer token.
    pub token: SecretRef,
    /// The kind ([`crate::kinds::KINDS`]).
    pub kind: String,
    /// The object's name: its identity (NICo has no idempotency key).
    pub name: String,
    /// The object's fields, as in the spec's create request (camelCase). Only the fields
    /// named here are compared with the live object; the server owns the rest.
    #[serde(default)]
    pub fields: Map<String, Value>,
    /// References to other NICo objects by name: a JSON pointer into the request body
    /// (`/instanceTypeId`, `/interfaces/0/subnetId`) → the object whose `id` goes there.
    #[serde(default)]
    pub refs: BTreeMap<String, ObjectRef>,
    /// The fleet that owns the object: its ownership mark names it, so two fleets sharing a
    /// NICo org and site never adopt each other's objects. Absent: the mark of a fleet-less
    /// spec (`fleetform`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet: Option<String>,
}

impl NicoSpec {
    /// The ownership label's value: `fleetform.<fleet>`.
    pub fn owner_value(&self) -> String {
        match &self.fleet {
            Some(f) => format!("{}.{f}", crate::kinds::OWNER_VALUE),
            None => crate::kinds::OWNER_VALUE.to_string(),
        }
    }

    /// The mark ending the description of kinds without labels: `[managed by fleetform <fleet>]`.
    pub fn owner_mark(&self) -> String {
        match &self.fleet {
            Some(f) => format!(" [managed by fleetform {f}]"),
            None => crate::kinds::OWNER_MARK.to_string(),
        }
    }
}
