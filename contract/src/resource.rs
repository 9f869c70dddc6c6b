//! Resources: the unit fleetform plans and applies, and their addresses.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The stable, human-readable address of one managed resource, e.g.
/// `kube:acme/nvidia.com/v1/ClusterPolicy/cluster-policy` or
/// `redfish:host/r01-n03/bios`. The part before the first `:` names the
/// provider that owns it. Usable with `--target`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(
    not(feature = "work-counters"),
    derive(PartialEq, Eq, PartialOrd, Ord, Hash)
)]
#[serde(transparent)]
pub struct ResourceId(String);

// With `work-counters`, every comparison of two addresses is counted (see [`crate::work`]):
// the same order as the derived one, plus one relaxed atomic add.
#[cfg(feature = "work-counters")]
impl PartialEq for ResourceId {
    fn eq(&self, other: &Self) -> bool {
        crate::work::count_id_op();
        self.0 == other.0
    }
}
#[cfg(feature = "work-counters")]
impl Eq for ResourceId {}
#[cfg(feature = "work-counters")]
impl std::hash::Hash for ResourceId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}
#[cfg(feature = "work-counters")]
impl PartialOrd for ResourceId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
#[cfg(feature = "work-counters")]
impl Ord for ResourceId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        crate::work::count_id_op();
        self.0.cmp(&other.0)
    }
}

impl ResourceId {
    /// Builds an address from a provider name and a provider-specific path.
    pub fn new(provider: &str, path: impl AsRef<str>) -> Self {
        Self(format!("{provider}:{}", path.as_ref()))
    }

    /// Parses an address as typed by a person (`--target`), checking it has a provider prefix.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.split_once(':') {
            Some((p, rest)) if !p.is_empty() && !rest.is_empty() => Ok(Self(s.to_string())),
            _ => Err(format!(
                "`{s}` is not a resource address: expected PROVIDER:PATH, e.g. redfish:host/r01-n01/power"
            )),
        }
    }

    /// The provider that owns this resource (`kube`, `redfish`, `ngc`, `gpu`, ...).
    pub fn provider(&self) -> &str {
        #[cfg(feature = "work-counters")]
        crate::work::count_id_op();
        self.0.split_once(':').map_or("", |(p, _)| p)
    }

    /// The provider-specific part of the address, after `provider:`.
    pub fn path(&self) -> &str {
        #[cfg(feature = "work-counters")]
        crate::work::count_id_op();
        self.0.split_once(':').map_or(&self.0, |(_, p)| p)
    }

    /// The full address as a string.
    pub fn as_str(&self) -> &str {
        #[cfg(feature = "work-counters")]
        crate::work::count_id_op();
        &self.0
    }
}

impl fmt::Display for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where in the manifest a resource (or an edge) came from, so that every
/// later error can point at the line a person must change.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Origin {
    /// File path relative to the fleet directory.
    pub file: String,
    /// 1-based line.
    pub line: u32,
    /// 1-based column.
    pub column: u32,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// An ordering edge: `on` must be applied (and healthy) before the resource
/// that lists it. Every edge carries a reason a person can read.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Dependency {
    /// The resource that must come first.
    pub on: ResourceId,
    /// Why, e.g. "waits for CRD clusterpolicies.nvidia.com to be Established".
    pub reason: String,
    /// The manifest line that created this edge, when one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
}

/// Limits on how many hosts a disruptive change may take down at once.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RolloutGroup {
    /// The pool the host serves, e.g. `acme/h100-train`.
    pub pool: String,
    /// The fault domain (rack or NVL72 domain) the host sits in.
    pub fault_domain: String,
    /// The host this resource disrupts.
    pub host: String,
    /// At most this many hosts of the pool disrupted at once.
    pub max_unavailable: u32,
    /// At most this many hosts of one fault domain disrupted at once.
    pub max_unavailable_per_fault_domain: u32,
}

/// A field of a desired spec that carries an image reference to be pinned to
/// the digest an `ngc:image/...` resource resolves to (see `pins`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Pin {
    /// JSON pointer into the spec of a string field (a tag or a whole image
    /// reference); the plan appends `@<digest>` to it.
    pub path: String,
    /// The image resource whose observed `digest` is appended.
    pub image: ResourceId,
    /// The manifest line that names the image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
}

/// One resource as the manifest wants it: the output of `compile`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Desired {
    /// Its address.
    pub id: ResourceId,
    /// The provider-specific desired specification (each provider documents its shape).
    pub spec: serde_json::Value,
    /// What must be applied before it, and why.
    #[serde(default)]
    pub deps: Vec<Dependency>,
    /// JSON pointers into `spec` whose values are secret: never rendered, compared by hash.
    #[serde(default)]
    pub sensitive: Vec<String>,
    /// Refuse to delete or replace it.
    #[serde(default)]
    pub prevent_destroy: bool,
    /// Set when changing this resource disrupts a host (reboot, reprovision, MIG change).
    #[serde(default)]
    pub rollout: Option<RolloutGroup>,
    /// The manifest node it was compiled from.
    #[serde(default)]
    pub origin: Option<Origin>,
    /// A Kubernetes Node to cordon while a disruptive change to this resource
    /// is applied (the host reboots): no new pods land on it until the host
    /// is healthy again. See [`crate::provider::NodeMaintenance::cordon`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance: Option<ResourceId>,
    /// Image fields the plan pins to a digest before diffing (`registries.pinDigests`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pins: Vec<Pin>,
}

impl Desired {
    /// A desired resource with no dependencies or flags.
    pub fn new(id: ResourceId, spec: serde_json::Value) -> Self {
        Self {
            id,
            spec,
            deps: Vec::new(),
            sensitive: Vec::new(),
            prevent_destroy: false,
            rollout: None,
            origin: None,
            maintenance: None,
            pins: Vec::new(),
        }
    }

    /// Adds an ordering edge with its reason.
    pub fn depends_on(mut self, on: ResourceId, reason: impl Into<String>) -> Self {
        self.deps.push(Dependency {
            on,
            reason: reason.into(),
            origin: None,
        });
        self
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn address_splits_into_provider_and_path() {
        let id = ResourceId::parse("kube:acme/nvidia.com/v1/ClusterPolicy/cluster-policy").unwrap();
        assert_eq!(id.provider(), "kube");
        assert_eq!(id.path(), "acme/nvidia.com/v1/ClusterPolicy/cluster-policy");
    }

    #[test]
    fn address_without_provider_is_refused_with_an_example() {
        let err = ResourceId::parse("r01-n01").unwrap_err();
        assert!(err.contains("PROVIDER:PATH"), "{err}");
    }
}
