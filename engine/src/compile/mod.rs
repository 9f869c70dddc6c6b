//! Compile: the validated fleet becomes concrete desired resources, each with
//! an address, a provider spec, dependencies with reasons, sensitive paths and
//! rollout groups. Pure apart from reading the secrets that pull secrets embed.
//!
//! The dependency rules (docs/concepts.md lists them with their reasons):
//! - per host: firmware, BIOS, secure boot and boot override before power
//!   (settings take effect at the next power-on);
//! - Node knobs of a pool's hosts wait for the hosts' power (the node must be up);
//! - per tenant cluster: namespace → pull secret → (Network Operator policy →)
//!   GPU Operator ClusterPolicy → Node MIG/sharing labels → NIMCache → NIMService;
//!   the image tag must resolve (ngc) before anything that pulls it;
//! - management cluster: tenant namespace → BareMetalHost per host;
//! - Cluster API for NCP-managed tenants (`compile/capi.rs`): templates → control plane /
//!   Metal3Cluster → Cluster → MachineDeployment per pool (also after the pool's
//!   BareMetalHosts); the tenant cluster's objects wait for its Cluster.
//! - add-ons (`compile/addons.rs` and one file per target): a KAI Queue waits for its parent
//!   queue; a DPUSet for its BFB, DPUFlavor and hosts' power, and the NicClusterPolicy for the
//!   DPUSets; namespaced objects for their namespace; a ResourceClaimTemplate for its DeviceClass.
//!
//! Files: this one holds the entry point and the shared plumbing (addresses, origins,
//! dependencies); hosts.rs, tenant.rs, pools.rs, nim.rs and operators.rs hold the four main
//! targets and the operator releases; image.rs the image grammar; the add-ons one file each.

mod addons;
mod capi;
mod charts;
mod dpf;
mod dra;
mod hosts;
mod image;
mod kai;
mod karpenter;
mod kyverno;
mod labels;
mod nico;
mod nim;
mod observability;
mod operands;
mod operators;
mod placement;
mod pools;
mod sharing_configs;
mod tenant;

pub use charts::{ChartRelease, Dependent, merge as merge_values, upstream_repository};
pub use image::{ImageRef, ImageRefError, NGC_HOST, fleet_image, is_digest, registry_host};

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::diag::Diagnostic;
use crate::manifest::{Fleet, NodePool};
use crate::resource::{Desired, Origin, ResourceId};
use crate::secret::SecretResolver;

/// The name fleetform gives the management cluster in addresses.
pub const MANAGEMENT_CLUSTER: &str = "mgmt";

/// Label put on every Kubernetes object fleetform creates, naming the fleet.
pub const FLEET_LABEL: &str = "app.kubernetes.io/managed-by";

/// How to reach one Kubernetes cluster named in addresses (part of the provider contract).
pub use fleetform_contract::registry::ClusterRef;

/// The output of compile.
#[derive(Debug, Clone)]
pub struct Compiled {
    /// Desired resources, sorted by address.
    pub resources: Vec<Desired>,
    /// Clusters the kube resources live in.
    pub clusters: BTreeMap<String, ClusterRef>,
    /// Helm chart releases, expanded into `kube:` resources before planning
    /// (`fleetform-charts`); sorted by cluster and name.
    pub releases: Vec<ChartRelease>,
}

/// Compiles a validated fleet. Secrets are read only to build pull secrets; a
/// secret that cannot be read is a diagnostic naming the manifest line.
pub fn compile(fleet: &Fleet, secrets: &dyn SecretResolver) -> Result<Compiled, Vec<Diagnostic>> {
    let mut cx = Cx {
        fleet,
        secrets,
        out: BTreeMap::new(),
        releases: BTreeMap::new(),
        diags: Vec::new(),
    };
    let mut clusters = BTreeMap::new();
    let mgmt = &fleet.fleet.spec.management_cluster;
    clusters.insert(
        MANAGEMENT_CLUSTER.to_string(),
        ClusterRef {
            kubeconfig: mgmt.kubeconfig.clone(),
            context: mgmt.context.clone(),
        },
    );

    let pool_of: BTreeMap<&str, &NodePool> = fleet
        .pools
        .iter()
        .flat_map(|p| fleet.members(p.name()).iter().map(move |h| (h.as_str(), p)))
        .collect();
    for host in &fleet.hosts {
        cx.host(host, pool_of.get(host.name()).copied());
    }
    cx.nico();
    for tenant in &fleet.tenants {
        clusters.insert(
            tenant.name().to_string(),
            ClusterRef {
                kubeconfig: tenant.spec.kubernetes.kubeconfig.clone(),
                context: None,
            },
        );
        cx.tenant(tenant);
    }
    cx.hand_over_release_waits();
    if cx.diags.is_empty() {
        Ok(Compiled {
            resources: cx.out.into_values().collect(),
            clusters,
            releases: cx.releases.into_values().collect(),
        })
    } else {
        crate::diag::sort(&mut cx.diags);
        Err(cx.diags)
    }
}

struct Cx<'a> {
    fleet: &'a Fleet,
    secrets: &'a dyn SecretResolver,
    out: BTreeMap<ResourceId, Desired>,
    /// Chart releases by (cluster, release name).
    releases: BTreeMap<(String, String), ChartRelease>,
    diags: Vec<Diagnostic>,
}

/// API of the sriov-network-operator's policies (shared/fixtures/crds/sriov-network-operator, v1.6.0).
pub const SRIOV_API: &str = "sriovnetwork.openshift.io/v1";
/// Name of the one SriovNetworkNodePolicy fleetform compiles per tenant.
pub const SRIOV_POLICY: &str = "fleetform-sriov";
/// Device-plugin resource of its VFs: pods ask for `openshift.io/sriov_rdma`.
pub const SRIOV_RESOURCE: &str = "sriov_rdma";

/// The address of a Kubernetes object: the contract's `address::kube_object_id`, which the kube provider uses too.
pub fn kube_id(cluster: &str, object: &Value) -> ResourceId {
    fleetform_contract::address::kube_object_id(cluster, object)
}

fn host_id(host: &str, aspect: &str) -> ResourceId {
    ResourceId::new("redfish", format!("host/{host}/{aspect}"))
}

impl Cx<'_> {
    fn origin(&self, doc: crate::manifest::DocId, pointer: &str, fallback: &Origin) -> Origin {
        self.fleet
            .nearest_span(doc, pointer)
            .map(|s| Origin {
                file: s.file,
                line: s.line,
                column: s.column,
            })
            .unwrap_or_else(|| fallback.clone())
    }

    fn add(&mut self, d: Desired) {
        self.out.insert(d.id.clone(), d);
    }

    fn kube(&mut self, cluster: &str, mut object: Value, origin: Origin) -> ResourceId {
        if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
            let labels = meta.entry("labels").or_insert_with(|| json!({}));
            if let Some(l) = labels.as_object_mut() {
                l.insert(FLEET_LABEL.into(), json!("fleetform"));
            }
        }
        let id = kube_id(cluster, &object);
        let mut d = Desired::new(id.clone(), json!({ "cluster": cluster, "object": object }));
        d.origin = Some(origin);
        self.add(d);
        id
    }

    fn dep(&mut self, id: &ResourceId, on: &ResourceId, reason: impl Into<String>) {
        if let Some(d) = self.out.get_mut(id)
            && !d.deps.iter().any(|x| &x.on == on)
        {
            d.deps.push(crate::resource::Dependency {
                on: on.clone(),
                reason: reason.into(),
                origin: None,
            });
        }
    }

    /// Where a field of the Fleet document is written.
    fn fleet_origin(&self, pointer: &str) -> Origin {
        let fleet = &self.fleet.fleet;
        self.origin(fleet.doc, pointer, &fleet.origin)
    }
}

/// An ordering edge with its reason.
fn dependency(on: &ResourceId, reason: impl Into<String>) -> crate::resource::Dependency {
    crate::resource::Dependency {
        on: on.clone(),
        reason: reason.into(),
        origin: None,
    }
}

fn namespace(name: &str) -> Value {
    json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": name } })
}

fn strip_nulls(mut v: Value) -> Value {
    if let Value::Object(m) = &mut v {
        m.retain(|_, x| !x.is_null());
        for x in m.values_mut() {
            *x = strip_nulls(x.take());
        }
    }
    v
}
