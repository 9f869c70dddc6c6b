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
//! The types are split by kind: fleet.rs (with registry.rs and operators.rs), rack.rs,
//! host.rs, tenant.rs, pool.rs, nim.rs, plus charts.rs and nico.rs; every type is
//! re-exported here, so its path is `fleetform_engine::manifest::X`.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::diag::Span;
use crate::load::SpanMap;
use crate::resource::Origin;

mod charts;
pub use charts::{ChartDefaults, ChartSource};
mod registry;
pub use registry::{Registries, Registry};
mod operators;
pub use operators::{
    Component, Dpf, DraDriver, Driver, GpuOperator, KernelModuleType, MigStrategy, NetworkOperator,
    NimOperator, OfedDriver, Operators, RdmaSharedDevicePlugin, Sriov,
};
mod fleet;
pub use fleet::{
    FailureAction, FleetSpec, Grove, Kai, KaiQueue, Kyverno, ManagementCluster, Observability,
    Otel, Policies, Prometheus, Prune, RolloutDefaults, Schedulers, SignedImages,
};
mod rack;
pub use rack::{FaultDomainKind, Location, RackSpec, is_label_value};
mod host;
pub use host::{
    Bios, Bmc, BmcCredentials, Boot, BootMode, BootTarget, DpuDevice, DpuMode, Gpu, GpuModel,
    HostSpec, Nic, NicType, PowerState,
};
mod tenant;
pub use tenant::{Addon, Flavor, Isolation, Kubernetes, NodeOs, Quotas, TenantNgc, TenantSpec};
mod pool;
pub use pool::{
    Autoscaling, DraSharing, FirmwareImage, FirmwareWant, GpuSharing, HostSelector, MigConfig,
    MigLayout, MigSharing, NodePoolSpec, PoolRollout, Replicas, Taint, TaintEffect, Topology,
};
mod nim;
pub use nim::{NimCache, NimServiceSpec};
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
fn one() -> u32 {
    1
}
